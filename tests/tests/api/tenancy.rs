//! Tenants are kept apart in JetStream's de-duplication: two tenants with the same
//! webhook delivery id or the same payment id both have their facts, transitions and
//! checkpoints stored.

use std::time::Duration;

use futures::TryStreamExt;
use paytrack_shared::{PaymentId, TenantId, subjects};
use paytrack_tests::{Mesh, eventually};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// Messages of PAYTRACK_STATUS whose subject matches `filter`.
async fn count(mesh: &Mesh, filter: String) -> anyhow::Result<u64> {
    let stream = mesh.js.get_stream(subjects::STREAM_STATUS).await?;
    let mut subjects = stream.info_with_subjects(filter).await?;
    let mut total = 0;
    while let Some((_, n)) = subjects.try_next().await? {
        total += n as u64;
    }
    Ok(total)
}

/// Waits until `tenant`'s `payment` has `n` transitions and their `2n` checkpoints
/// (`persisted` and `ledger_posted` each).
async fn wait_for_history(mesh: &Mesh, tenant: &TenantId, payment: &str, n: u64) -> anyhow::Result<()> {
    let payment = PaymentId::new(payment)?;
    let transitions = subjects::status_of_payment(tenant, &payment);
    let checkpoints = format!("paytrack.checkpoint.{tenant}.*.{payment}");
    eventually(WAIT, "transitions and checkpoints of both tenants", || async {
        let t = count(mesh, transitions.clone()).await.ok()?;
        let c = count(mesh, checkpoints.clone()).await.ok()?;
        (t == n && c == 2 * n).then_some(())
    })
    .await
}

/// Tenant B's webhook reusing tenant A's `webhook-id` is B's own fact, not A's
/// duplicate; with the same payment id, both tenants' transitions and `persisted`
/// checkpoints are stored, and each tenant reads its own payment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tenants_with_colliding_ids_keep_all_their_messages() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let (a, b) = (mesh.tenant.clone(), mesh.other_tenant.clone());

    // Same delivery id, same payment id.
    let first_a: Value = mesh
        .post_webhook("msg_1", &Mesh::webhook_body("pay_same", "pending", "m_a"))
        .await?
        .json()
        .await?;
    let response = mesh
        .post_other_webhook("msg_1", &Mesh::webhook_body("pay_same", "held", "m_b"))
        .await?;
    assert_eq!(response.status(), 200);
    let first_b: Value = response.json().await?;
    assert_eq!(
        first_b["duplicate"], false,
        "B's delivery is not A's duplicate: {first_b}"
    );
    assert_ne!(first_b["seq"], first_a["seq"]);
    // A repeat of B's own delivery is B's duplicate.
    let repeat_b: Value = mesh
        .post_other_webhook("msg_1", &Mesh::webhook_body("pay_same", "held", "m_b"))
        .await?
        .json()
        .await?;
    assert_eq!(
        (repeat_b["duplicate"].as_bool(), &repeat_b["seq"]),
        (Some(true), &first_b["seq"])
    );

    // Different delivery ids, same payment id: second versions and their checkpoints.
    mesh.post_webhook("msg_a2", &Mesh::webhook_body("pay_same", "succeeded", "m_a"))
        .await?;
    mesh.post_other_webhook("msg_b2", &Mesh::webhook_body("pay_same", "succeeded", "m_b"))
        .await?;

    wait_for_history(&mesh, &a, "pay_same", 2).await?;
    wait_for_history(&mesh, &b, "pay_same", 2).await?;

    for (tenant, statuses) in [(&a, ["pending", "succeeded"]), (&b, ["held", "succeeded"])] {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT status FROM payment_timeline WHERE tenant = $1 AND payment_id = 'pay_same' ORDER BY version",
        )
        .bind(tenant.as_str())
        .fetch_all(&mesh.db)
        .await?;
        assert_eq!(rows, statuses, "{tenant}'s timeline");
    }
    let facts = eventually(WAIT, "both tenants' raw facts", || async {
        let n: Vec<(String, String)> = sqlx::query_as(
            "SELECT tenant, fact_id FROM inbound_facts WHERE payment_id = 'pay_same' ORDER BY tenant, fact_id",
        )
        .fetch_all(&mesh.db)
        .await
        .ok()?;
        (n.len() == 4).then_some(n)
    })
    .await?;
    assert!(facts.contains(&(b.to_string(), "wh:stdwebhooks:msg_1".to_owned())));
    assert!(facts.contains(&(a.to_string(), "wh:stdwebhooks:msg_1".to_owned())));

    let view_b: Value = mesh
        .get("/v1/payments/pay_same", &mesh.other_operator_token())
        .await?
        .json()
        .await?;
    assert_eq!(
        (view_b["merchant_id"].as_str(), view_b["version"].as_i64()),
        (Some("m_b"), Some(2))
    );
    let view_a: Value = mesh
        .get("/v1/payments/pay_same", &mesh.other_api_key)
        .await?
        .json()
        .await?;
    assert_eq!(view_a["merchant_id"], "m_b", "an API key reads its own tenant only");
    Ok(())
}
