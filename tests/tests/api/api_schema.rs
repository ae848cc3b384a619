//! schemathesis against the `/openapi.json` of ingest and of the edge, on the whole
//! mesh (real NATS and PostgreSQL): no answer is a 5xx, and every answer's status,
//! content type and body are the ones its document declares. schemathesis is pinned
//! and installed under `.dev/schemathesis` by `scripts/install-schemathesis.sh`
//! (`make test` runs it); `PAYTRACK_SCHEMATHESIS` names another `st` binary.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use paytrack_tests::{Mesh, workspace_root};

/// Test cases per operation and phase: enough to cross every parameter's edges,
/// few enough that the suite stays fast.
const MAX_EXAMPLES: &str = "20";

/// The checks: no 5xx, and statuses, content types and bodies as documented.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance";

/// The longest one run may take before the test gives up on it.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);

fn schemathesis() -> anyhow::Result<PathBuf> {
    let st = std::env::var_os("PAYTRACK_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".dev/schemathesis/bin/st"));
    anyhow::ensure!(
        st.exists(),
        "schemathesis not found at {}: run scripts/install-schemathesis.sh",
        st.display()
    );
    Ok(st)
}

/// Runs `st run` on `schema` with `token` as the bearer credential and `extra`
/// arguments; the exit status and the report.
async fn run(schema: &str, token: &str, extra: &[&str]) -> anyhow::Result<(bool, String)> {
    // schemathesis keeps its caches in its working directory: a throwaway one.
    let workdir = tempfile::tempdir()?;
    let mut command = tokio::process::Command::new(schemathesis()?);
    command
        .current_dir(workdir.path())
        .args(["run", schema, "--checks", CHECKS, "--max-examples", MAX_EXAMPLES])
        .args(["--seed", "31", "--workers", "1", "--request-timeout", "20"])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--suppress-health-check", "all", "--output-truncate", "false"])
        .args(extra)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(RUN_TIMEOUT, command.output())
        .await
        .context("schemathesis took too long")??;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok((output.status.success(), report))
}

/// The last `lines` lines of `report`, for an assertion message.
fn tail(report: &str, lines: usize) -> String {
    let all: Vec<&str> = report.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// ingest's document: every operation, as an operator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_answers_as_its_openapi_document_says() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let schema = format!("{}/openapi.json", mesh.ingest_url);
    let (passed, report) = run(&schema, &mesh.operator_token(), &[]).await?;
    assert!(passed, "schemathesis found failures on ingest:\n{}", tail(&report, 200));
    mesh.check_services()?;
    Ok(())
}

/// The edge's document: every operation as an operator, except SSE, whose 200 is a
/// stream that does not end; SSE as a user whose token grants no channel, so every
/// answer is one of its refusals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_answers_as_its_openapi_document_says() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let schema = format!("http://{}/openapi.json", mesh.edge_addr);
    let (passed, report) = run(&schema, &mesh.operator_token(), &["--exclude-path", "/v1/sse"]).await?;
    assert!(
        passed,
        "schemathesis found failures on the edge:\n{}",
        tail(&report, 200)
    );
    let no_channel = mesh.scoped_token("u_schema", &[]);
    let (passed, report) = run(&schema, &no_channel, &["--include-path", "/v1/sse"]).await?;
    assert!(
        passed,
        "schemathesis found failures on the edge's SSE:\n{}",
        tail(&report, 200)
    );
    mesh.check_services()?;
    Ok(())
}
