//! The operator console in a real browser: headless Chromium (driven by
//! `clients/typescript/test/browser/console.browser.mjs` with playwright-core) against
//! this mesh, with a proxy in front of the edge that can refuse WebSocket upgrades and
//! be pointed at a new edge after one is killed. Also runs the client library's own
//! node tests (which check that the committed console bundle is built from its
//! sources). Screenshots are saved under `target/console-artifacts/`.
//!
//! Needs node, npm and Chromium: `scripts/install-console-tools.sh` installs the npm
//! packages (pinned by `clients/typescript/package-lock.json`) and
//! `scripts/install-browser.sh` Chromium; `make test` runs both.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use base64::Engine;
use paytrack_tests::Mesh;
use paytrack_tests::mesh::ExtraEdge;
use paytrack_tests::workload;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

/// The repository's root.
fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The client library's folder.
fn library() -> PathBuf {
    repo().join("clients/typescript")
}

/// Fails with what to run when the npm packages are missing.
fn require_node_modules() -> anyhow::Result<()> {
    anyhow::ensure!(
        library().join("node_modules/playwright-core").is_dir(),
        "clients/typescript/node_modules is missing: run scripts/install-console-tools.sh"
    );
    Ok(())
}

/// Where screenshots go.
fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"));
    target.join("console-artifacts")
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default()
}

/// Publishes about `n` transitions of other payments (as the reconciler, so volume
/// costs no webhook round trips) and waits until the projection holds them; returns
/// how many were published.
async fn bulk(mesh: &Mesh, n: usize) -> anyhow::Result<usize> {
    let count = |db: sqlx::PgPool, tenant: String| async move {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM payment_timeline WHERE tenant = $1")
            .bind(tenant)
            .fetch_one(&db)
            .await
            .ok()
    };
    let before = count(mesh.db.clone(), mesh.tenant.to_string()).await.unwrap_or(0);
    // Each plan is three or four transitions, 3.5 on average.
    let plans = workload::plans("pay_bulk", n * 2 / 7 + 1);
    let published = workload::publish(mesh, &plans, Duration::ZERO).await?;
    let want = before + i64::try_from(published)?;
    mesh.eventually(Duration::from_secs(300), "the bulk transitions projected", || {
        let (db, tenant) = (mesh.db.clone(), mesh.tenant.to_string());
        async move { count(db, tenant).await.filter(|c| *c >= want) }
    })
    .await?;
    Ok(published)
}

/// The library's unit tests (resume after a drop, cannot recover -> reload, SSE
/// fallback, ...) and the check that the committed console bundle is current.
#[tokio::test]
async fn client_library_node_tests() -> anyhow::Result<()> {
    require_node_modules()?;
    let output = Command::new("npm")
        .arg("test")
        .current_dir(library())
        .output()
        .await
        .context("npm test")?;
    let out = String::from_utf8_lossy(&output.stdout);
    println!("{out}{}", String::from_utf8_lossy(&output.stderr));
    anyhow::ensure!(output.status.success(), "the client library's tests failed");
    for name in ["resume after a drop", "cannot recover", "fallback to SSE"] {
        anyhow::ensure!(
            out.lines().any(|l| l.starts_with("ok ") && l.contains(name)),
            "no passing test named {name:?}"
        );
    }
    Ok(())
}

/// Every acceptance scenario of the console, in one browser against one mesh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_a_browser() -> anyhow::Result<()> {
    require_node_modules()?;
    let mesh = Mesh::start().await?;
    let mut edges = 0;
    let mut edge: Option<ExtraEdge> = Some(mesh.start_edge("edge-console-0").await?);
    let edge_url = |e: &ExtraEdge| format!("http://{}", e.addr);
    let mut child = Command::new("node")
        .arg("test/browser/console.browser.mjs")
        .current_dir(library())
        .env("INGEST_URL", &mesh.ingest_url)
        .env("EDGE_URL", edge_url(edge.as_ref().context("edge")?))
        .env("TOKEN", mesh.operator_token())
        .env("ARTIFACTS", artifacts())
        .env("SCENARIOS", std::env::var("CONSOLE_SCENARIOS").unwrap_or_default())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("node (is it installed?)")?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let mut passed = Vec::new();
    let mut failed = Vec::new();
    let run = async {
        while let Some(line) = lines.next_line().await? {
            let (verb, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
            let answer = match verb {
                "webhook" => {
                    let (delivery, body) = rest.split_once(' ').context("webhook line")?;
                    let body = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(body)?)?;
                    let response = mesh.post_webhook(delivery, &body).await?;
                    Some(format!("ok {} {}", response.status().as_u16(), now_ms()))
                }
                "kill-edge" => {
                    if let Some(e) = edge.take() {
                        e.stop().await?;
                    }
                    Some("ok".to_owned())
                }
                "start-edge" => {
                    edges += 1;
                    let e = mesh.start_edge(&format!("edge-console-{edges}")).await?;
                    let url = edge_url(&e);
                    edge = Some(e);
                    Some(format!("ok {url}"))
                }
                "bulk" => {
                    let n: usize = rest.trim().parse().context("bulk count")?;
                    Some(format!("ok {}", bulk(&mesh, n).await?))
                }
                "pass" => {
                    println!("PASS {rest}");
                    passed.push(rest.to_owned());
                    None
                }
                "fail" => {
                    println!("FAIL {rest}");
                    failed.push(rest.to_owned());
                    None
                }
                "done" => break,
                _ => {
                    println!("{line}");
                    None
                }
            };
            if let Some(answer) = answer {
                stdin.write_all(format!("{answer}\n").as_bytes()).await?;
            }
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(900), run)
        .await
        .context("the browser scenarios took over 15 minutes")??;
    let status = child.wait().await?;
    println!("screenshots in {}", artifacts().display());
    anyhow::ensure!(failed.is_empty(), "scenarios failed: {failed:#?}");
    anyhow::ensure!(status.success(), "the browser driver failed ({status})");
    anyhow::ensure!(!passed.is_empty(), "no scenario ran");
    Ok(())
}
