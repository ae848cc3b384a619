//! The operator's commands as `make up` leaves them: against a stack the test harness
//! starts (the four services and the simulator, wired as `make up` wires them), with
//! `.dev/stack.env` rendered by stack-up.sh's own function and sourced by a shell,
//! then `paytrack …`. Outputs and exit codes are checked.

mod stack_env;

use std::time::Duration;

use paytrack_nats::Role;
use paytrack_tests::mesh::{MeshOptions, RAZORPAY_SECRET, STRIPE_SECRET};
use secrecy::ExposeSecret;
use serde_json::Value;
use stack_env::Stack;

const WAIT: Duration = Duration::from_secs(90);

/// Runs `paytrack args…` after `source stack.env`: (success, stdout + stderr, stdout).
async fn run(file: &tempfile::NamedTempFile, args: &[&str]) -> anyhow::Result<(bool, String, String)> {
    let output = stack_env::paytrack(file.path(), false, args).await?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    Ok((output.status.success(), stack_env::text(&output), stdout))
}

/// `trigger`, `payments list|get|timeline|evidence|ledger`, `alerts list`, `cancel`,
/// `resolve`, `tail` (to an event, and to an error frame), `webhook`, `mint-token`
/// and `rebuild`, each straight after `source .dev/stack.env`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_runs_after_sourcing_stack_env() -> anyhow::Result<()> {
    let mesh = paytrack_tests::Mesh::start_with(MeshOptions {
        simulator: true,
        extra_settings: vec![
            ("reconciler_window_divisor", "1000".to_owned()),
            ("reconciler_sweep_interval_ms", "50".to_owned()),
        ],
        ..MeshOptions::default()
    })
    .await?;
    let simulator = mesh.simulator_url.clone().unwrap_or_default();
    let (edge, token) = (format!("http://{}", mesh.edge_addr), mesh.operator_token());
    let (nats, admin, projector) = (
        mesh.nats.url(),
        mesh.nats.password(Role::Admin),
        mesh.nats.password(Role::Projector),
    );
    let stack = Stack {
        nats: &nats,
        database: "postgres://unused@127.0.0.1:1/unused",
        ingest: &mesh.ingest_url,
        edge: &edge,
        simulator: &simulator,
        tenant: mesh.tenant.as_str(),
        jwt_secret: &mesh.jwt_secret,
        token: &token,
        simulator_token: &mesh.simulator_token,
        webhook_secrets: [&mesh.stdwebhooks_secret, RAZORPAY_SECRET, STRIPE_SECRET],
        nats_passwords: [admin.expose_secret(), projector.expose_secret()],
    };
    let file = stack_env::render(&stack_env::inputs(&stack))?;

    let (ok, out, _) = run(&file, &["trigger", "--list"]).await?;
    assert!(
        ok && out.contains("stuck_pending") && out.contains("payout_returned"),
        "{out}"
    );
    let (ok, out, json) = run(&file, &["trigger", "stuck_pending", "--json"]).await?;
    assert!(ok, "{out}");
    let stuck: Value = serde_json::from_str(&json)?;
    let stuck = stuck["payment_id"].as_str().unwrap_or_default().to_owned();
    let (ok, out, _) = run(&file, &["trigger", "partial_refund"]).await?;
    assert!(
        ok && out.contains("partial_refund started: payment sc_partial_refund_"),
        "{out}"
    );
    assert!(out.contains("paytrack tail payment:sc_partial_refund_"), "{out}");
    let refunded = out
        .split_whitespace()
        .find(|w| w.starts_with("sc_partial_refund_"))
        .unwrap_or_default()
        .to_owned();

    // The stuck payment is settled by the sweep's status query at the simulator.
    mesh.eventually(WAIT, "the stuck payment settled", || async {
        let (ok, _, json) = run(&file, &["payments", "get", &stuck, "--json"]).await.ok()?;
        let view: Value = serde_json::from_str(&json).ok()?;
        (ok && view["status"] == "succeeded").then_some(())
    })
    .await?;
    let (ok, out, _) = run(&file, &["payments", "get", &stuck]).await?;
    assert!(ok && out.contains(&format!("{stuck}  succeeded")), "{out}");
    let (ok, out, _) = run(&file, &["payments", "timeline", &stuck]).await?;
    assert!(
        ok && out.contains("pending -> succeeded  rule status_query:succeeded"),
        "{out}"
    );
    let (ok, out, _) = run(&file, &["payments", "evidence", &stuck]).await?;
    assert!(ok && out.contains(&format!("evidence of {stuck}:")), "{out}");
    let (ok, out, json) = run(&file, &["payments", "list", "--limit", "200", "--json"]).await?;
    assert!(ok, "{out}");
    let list: Value = serde_json::from_str(&json)?;
    assert!(
        list["items"]
            .as_array()
            .is_some_and(|items| items.iter().any(|i| i["payment_id"] == stuck)),
        "{list}"
    );
    let (ok, out, _) = run(&file, &["payments", "list", "--status", "succeeded"]).await?;
    assert!(ok && out.contains(&stuck) && out.contains("PAYMENT"), "{out}");

    mesh.eventually(WAIT, "the refund in the ledger", || async {
        let (ok, out, _) = run(&file, &["payments", "ledger", &refunded]).await.ok()?;
        (ok && out.contains("refund")).then_some(())
    })
    .await?;
    let (ok, out, _) = run(&file, &["alerts", "list"]).await?;
    assert!(ok && out.contains("alert(s)"), "{out}");

    // Refusals print the answer's title and detail and exit non-zero.
    let (ok, out, _) = run(&file, &["payments", "get", "pay_nobody_made"]).await?;
    assert!(!ok && out.contains("HTTP 404"), "{out}");
    let (ok, out, _) = run(
        &file,
        &["resolve", &stuck, "--reason", "checked", "--status", "pending"],
    )
    .await?;
    assert!(!ok && out.contains("HTTP 4") && out.contains("status"), "{out}");
    // A cancel of a settled payment is recorded (the reconciler refuses it) or refused
    // at once; either way the answer says so.
    let (ok, out, _) = run(&file, &["cancel", &stuck]).await?;
    assert!(
        (ok && out.contains("paytrack payments timeline")) || (!ok && out.contains("HTTP 4")),
        "{out}"
    );

    // tail: a channel's event as a line; another user's channel is an error frame.
    // From the stream's start (the list's position names its epoch), so past events replay.
    let epoch = list["position"]["epoch"].as_str().unwrap_or_default().to_owned();
    let since = format!("{epoch}:0");
    let channel = format!("payment:{refunded}");
    let (ok, out, _) = run(&file, &["tail", &channel, "--since", &since, "--count", "1"]).await?;
    assert!(
        ok && out.contains(" subscribed ") && out.contains(" transition "),
        "{out}"
    );
    let (ok, out, json) = run(&file, &["tail", &channel, "--since", &since, "--count", "1", "--json"]).await?;
    let frames: Vec<Value> = json.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(ok && frames.iter().any(|f| f["type"] == "event"), "{out}");
    let refused = tokio::time::timeout(WAIT, run(&file, &["tail", "user:someone_else"])).await??;
    assert!(!refused.0 && refused.1.contains("4003"), "{}", refused.1);

    // webhook signs with PAYTRACK_WEBHOOK_SECRETS; mint-token uses PAYTRACK_JWT_SECRET.
    let (ok, out, _) = run(
        &file,
        &[
            "webhook",
            "--provider",
            "razorpay",
            "--payment-id",
            "pay_from_stack_env",
        ],
    )
    .await?;
    assert!(ok && out.contains("HTTP 200"), "{out}");
    let (ok, out, _) = run(&file, &["mint-token", "--sub", "ops-2"]).await?;
    assert!(ok, "{out}");
    let claims = mesh.jwt.verify(out.trim())?;
    assert_eq!(claims.tenant, mesh.tenant);

    // rebuild into a fresh database, as the projector's NATS user of stack.env.
    let fresh = paytrack_tests::pg::fresh_database().await?;
    let output = stack_env::paytrack_with(
        file.path(),
        false,
        &[format!("PAYTRACK_DATABASE_URL={fresh}")],
        &["rebuild"],
    )
    .await?;
    let out = stack_env::text(&output);
    assert!(
        output.status.success() && out.contains("rebuilt ") && out.contains("PAYTRACK_STATUS"),
        "{out}"
    );
    Ok(())
}
