//! Every fact has a visible outcome: an event type no rule maps is answered 2xx (a
//! provider sends many types) and then shows in the payment's timeline and evidence
//! as unmapped; a fact the model refuses shows as refused.

use std::time::Duration;

use paytrack_shared::subjects;
use paytrack_tests::{Mesh, eventually};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

fn mystery(payment: &str) -> String {
    serde_json::json!({
        "type": "payment.mystery",
        "timestamp": chrono::Utc::now().to_rfc3339(),
        "data": {"payment_id": payment, "provider_ref": "pr_1", "amount_minor": 100, "currency": "USD"},
    })
    .to_string()
}

async fn get_json(mesh: &Mesh, path: &str) -> Option<Value> {
    let response = mesh.get(path, &mesh.operator_token()).await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.json().await.ok()
}

/// Entries of a timeline that are facts which changed nothing.
fn facts_of(timeline: &Value) -> Vec<&Value> {
    timeline
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["kind"] == "fact")
        .collect()
}

/// A payment whose only fact is of an unknown type is still listed: its timeline and
/// evidence show the fact as unmapped, with its event type and raw payload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmapped_event_is_listed_in_timeline_and_evidence() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let response = mesh.post_webhook("msg_mystery_1", &mystery("pay_mystery")).await?;
    assert!(response.status().is_success(), "{}", response.status());

    let timeline = eventually(WAIT, "the unmapped fact in the timeline", || async {
        let timeline = get_json(&mesh, "/v1/payments/pay_mystery/timeline").await?;
        (!facts_of(&timeline).is_empty()).then_some(timeline)
    })
    .await?;
    let entries = timeline.as_array().cloned().unwrap_or_default();
    assert_eq!(entries.len(), 1, "{timeline}");
    assert_eq!(entries[0]["kind"], "fact");
    assert_eq!(entries[0]["outcome"], "unmapped");
    assert_eq!(entries[0]["event_type"], "payment.mystery");
    assert_eq!(entries[0]["fact_id"], "wh:stdwebhooks:msg_mystery_1");

    let evidence = eventually(WAIT, "the unmapped fact in the evidence", || async {
        let evidence = get_json(&mesh, "/v1/payments/pay_mystery/evidence").await?;
        (evidence["facts"][0]["outcome"] == "unmapped").then_some(evidence)
    })
    .await?;
    assert_eq!(evidence["payment"], Value::Null, "nothing moved the payment");
    assert_eq!(evidence["timeline"][0]["outcome"], "unmapped");
    assert!(
        evidence["facts"][0]["raw_body"]
            .as_str()
            .is_some_and(|b| b.contains("payment.mystery"))
    );
    assert_eq!(mesh.stream_messages(subjects::STREAM_OUTCOME).await?, 1);
    Ok(())
}

/// Between transitions, the timeline shows the facts that changed nothing where they
/// were decided: an unmapped one and one the status model refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn facts_that_changed_nothing_sit_between_the_transitions() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let pay = "pay_mixed";
    mesh.post_webhook("msg_mx_1", &Mesh::webhook_body(pay, "pending", "m_1"))
        .await?;
    mesh.wait_for_row(pay, 1).await?;
    mesh.post_webhook("msg_mx_2", &mystery(pay)).await?;
    mesh.post_webhook("msg_mx_3", &Mesh::webhook_body(pay, "succeeded", "m_1"))
        .await?;
    mesh.wait_for_row(pay, 2).await?;
    mesh.post_webhook("msg_mx_4", &Mesh::webhook_body(pay, "pending", "m_1"))
        .await?;

    let timeline = eventually(WAIT, "both non-applied facts in the timeline", || async {
        let timeline = get_json(&mesh, &format!("/v1/payments/{pay}/timeline")).await?;
        (facts_of(&timeline).len() == 2).then_some(timeline)
    })
    .await?;
    let shape: Vec<(String, String)> = timeline
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let what = e["status"].as_str().or(e["outcome"].as_str()).unwrap_or_default();
            (e["kind"].as_str().unwrap_or_default().to_owned(), what.to_owned())
        })
        .collect();
    let expected = [
        ("transition", "pending"),
        ("fact", "unmapped"),
        ("transition", "succeeded"),
        ("fact", "refused"),
    ]
    .map(|(k, w)| (k.to_owned(), w.to_owned()));
    assert_eq!(shape, expected, "{timeline}");
    let refused = facts_of(&timeline)[1];
    assert_eq!(refused["current_version"], 2);
    assert_eq!(refused["rule"], "stdwebhooks:payment.pending");
    assert!(refused["reason"].as_str().is_some_and(|r| r.contains("succeeded")));
    Ok(())
}
