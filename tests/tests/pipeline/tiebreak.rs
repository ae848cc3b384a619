//! The one tie-breaker, end to end: facts are ordered by the provider (sequence, else
//! time), never by arrival; stale and duplicate facts are recorded in the timeline
//! with the fact that superseded them; contradicting evidence moves the payment to
//! investigation_required with both facts, and only a resolve leaves it; per-rail
//! return windows decide whether a return applies.

use std::time::Duration;

use chrono::Utc;
use paytrack_shared::Status;
use paytrack_shared::envelope::CommandAction;
use paytrack_tests::{Mesh, eventually, facts};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

fn body_at(payment: &str, status: &str, at: chrono::DateTime<Utc>) -> String {
    serde_json::json!({
        "type": format!("payment.{status}"),
        "timestamp": at.to_rfc3339(),
        "data": {"payment_id": payment, "provider_ref": "pr_1", "amount_minor": 100, "currency": "USD", "merchant_id": "m_1"},
    })
    .to_string()
}

async fn timeline_facts(mesh: &Mesh, payment: &str, n: usize) -> anyhow::Result<Vec<Value>> {
    eventually(WAIT, "the facts in the timeline", || async {
        let (timeline, _) = mesh.timeline(payment).await.ok()?;
        let facts: Vec<Value> = timeline
            .as_array()?
            .iter()
            .filter(|e| e["kind"] == "fact")
            .cloned()
            .collect();
        (facts.len() >= n).then_some(facts)
    })
    .await
}

/// `held` at 12:00:02 arrives, then a delayed `pending` from 12:00:01: the pending is
/// stale (recorded, not applied, superseded by the held); a second `held` delivery
/// with its own id is a duplicate of the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_fact_and_a_duplicate_show_in_the_timeline_with_the_fact_that_superseded_them() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let pay = "pay_tb_1";
    let t = Utc::now();
    mesh.post_webhook("tb_held", &body_at(pay, "held", t + chrono::Duration::seconds(2)))
        .await?;
    mesh.wait_for_row(pay, 1).await?;
    mesh.post_webhook("tb_pending", &body_at(pay, "pending", t + chrono::Duration::seconds(1)))
        .await?;
    mesh.post_webhook("tb_held_again", &body_at(pay, "held", t + chrono::Duration::seconds(3)))
        .await?;
    let facts = timeline_facts(&mesh, pay, 2).await?;
    let (_, statuses) = mesh.timeline(pay).await?;
    assert_eq!(statuses, ["held"], "the delayed pending did not move the payment back");
    let by_id = |id: &str| {
        facts
            .iter()
            .find(|f| f["fact_id"] == id)
            .cloned()
            .unwrap_or(Value::Null)
    };
    let stale = by_id("wh:stdwebhooks:tb_pending");
    assert_eq!(stale["outcome"], "stale", "{facts:?}");
    assert_eq!(stale["superseded_by"], "wh:stdwebhooks:tb_held");
    let duplicate = by_id("wh:stdwebhooks:tb_held_again");
    assert_eq!(duplicate["outcome"], "duplicate", "{facts:?}");
    assert_eq!(duplicate["superseded_by"], "wh:stdwebhooks:tb_held");
    Ok(())
}

/// A provider sequence beats the provider's clock: seq 2 with an earlier timestamp
/// still wins over seq 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_sequence_orders_before_time() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let (tenant, pay) = (&mesh.tenant, "pay_tb_seq");
    let t = Utc::now();
    facts::publish(
        &mesh.js,
        &facts::event(tenant, pay, "s2", Status::Held, Some(2), t, None)?,
    )
    .await?;
    mesh.wait_for_row(pay, 1).await?;
    let later_clock = t + chrono::Duration::seconds(30);
    facts::publish(
        &mesh.js,
        &facts::event(tenant, pay, "s1", Status::Pending, Some(1), later_clock, None)?,
    )
    .await?;
    let facts = timeline_facts(&mesh, pay, 1).await?;
    assert_eq!(facts[0]["outcome"], "stale");
    assert_eq!(facts::chain(&mesh.js, tenant, pay).await?.len(), 1);
    Ok(())
}

/// On ach_debit a return (R01) inside its two banking days follows the success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ach_debit_return_inside_the_window_is_returned() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let (tenant, pay) = (&mesh.tenant, "pay_ach_1");
    let t = Utc::now();
    facts::publish(&mesh.js, &facts::create(tenant, pay, "ach_debit", "stdwebhooks")?).await?;
    facts::publish(
        &mesh.js,
        &facts::event(tenant, pay, "a1", Status::Succeeded, Some(1), t, None)?,
    )
    .await?;
    let returned_at = t + chrono::Duration::hours(1);
    facts::publish(
        &mesh.js,
        &facts::event(tenant, pay, "a2", Status::Returned, Some(2), returned_at, Some("R01"))?,
    )
    .await?;
    mesh.wait_for_row(pay, 3).await?;
    let chain = facts::chain(&mesh.js, tenant, pay).await?;
    let statuses: Vec<Status> = chain.iter().map(|t| t.status).collect();
    assert_eq!(statuses, [Status::Initiated, Status::Succeeded, Status::Returned]);
    assert_eq!(
        chain[2].terms.rail.as_deref(),
        Some("ach_debit"),
        "the rail is carried forward"
    );
    Ok(())
}

/// On rtp a failure after the success contradicts it: investigation_required with
/// both facts; later provider evidence does not leave it; a resolve does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rtp_failure_after_success_needs_investigation_and_only_a_resolve_leaves_it() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let (tenant, pay) = (&mesh.tenant, "pay_rtp_1");
    let t = Utc::now();
    facts::publish(&mesh.js, &facts::create(tenant, pay, "rtp", "stdwebhooks")?).await?;
    facts::publish(
        &mesh.js,
        &facts::event(tenant, pay, "r1", Status::Succeeded, Some(1), t, None)?,
    )
    .await?;
    mesh.wait_for_row(pay, 2).await?;
    let failed_at = t + chrono::Duration::seconds(5);
    facts::publish(
        &mesh.js,
        &facts::event(tenant, pay, "r2", Status::Failed, Some(2), failed_at, None)?,
    )
    .await?;
    mesh.wait_for_row(pay, 3).await?;
    let chain = facts::chain(&mesh.js, tenant, pay).await?;
    let investigation = &chain[2];
    assert_eq!(investigation.status, Status::InvestigationRequired);
    assert_eq!(
        investigation.evidence_fact_ids,
        ["wh:stdwebhooks:r1", "wh:stdwebhooks:r2"],
        "both facts attached"
    );
    let conflict = timeline_facts(&mesh, pay, 1).await?;
    assert_eq!(conflict[0]["outcome"], "conflict");
    assert_eq!(conflict[0]["superseded_by"], "wh:stdwebhooks:r1");

    // Newer evidence is recorded, not applied: only the resolve leaves.
    let later = t + chrono::Duration::seconds(9);
    facts::publish(
        &mesh.js,
        &facts::event(tenant, pay, "r3", Status::Succeeded, Some(3), later, None)?,
    )
    .await?;
    let refused = timeline_facts(&mesh, pay, 2).await?;
    assert!(
        refused
            .iter()
            .any(|f| f["fact_id"] == "wh:stdwebhooks:r3" && f["outcome"] == "refused")
    );
    let resolve = CommandAction::Resolve {
        status: Status::Succeeded,
        reason: "the bank confirmed the credit".into(),
    };
    facts::publish(&mesh.js, &facts::command(tenant, pay, "k1", resolve)?).await?;
    mesh.wait_for_row(pay, 4).await?;
    let chain = facts::chain(&mesh.js, tenant, pay).await?;
    assert_eq!(chain.len(), 4);
    assert_eq!(chain[3].status, Status::Succeeded);
    assert_eq!(chain[3].cause.rule, "command:resolve");
    Ok(())
}

/// `GET /v1/status-model` serves the per-rail data the reconciler enforces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_model_serves_rail_finality_and_windows() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let model: Value = mesh
        .get("/v1/status-model", &mesh.operator_token())
        .await?
        .json()
        .await?;
    assert_eq!(model["rails"]["upi"]["status_checks"]["first_after_secs"], 90);
    assert_eq!(model["rails"]["upi"]["status_checks"]["max_checks"], 3);
    assert_eq!(model["rails"]["rtp"]["irrevocable"], true);
    assert_eq!(model["rails"]["ach_debit"]["irrevocable"], false);
    let windows = model["rails"]["ach_debit"]["return_windows"].clone();
    assert_eq!(windows[0]["codes"], serde_json::json!(["R01", "R02", "R03", "R04"]));
    assert_eq!(windows[0]["banking_days"], 2);
    assert_eq!(windows[1]["calendar_days"], 60);
    Ok(())
}
