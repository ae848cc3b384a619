//! Evidence packs on the whole mesh: a payment with many large raw facts is served
//! in pages of bounded size, and every fact is reached by following the cursor.

use std::time::Duration;

use anyhow::Context;
use paytrack_tests::Mesh;
use serde_json::{Value, json};

/// Largest evidence response the test accepts: the page budget of raw bodies
/// (1 MiB) plus one body at most (ingest's 256 KiB limit), plus the rest of the pack.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024 + 256 * 1024 + 64 * 1024;

/// 30 signed 200 KB deliveries of one payment (6 MB of raw bodies): each evidence
/// response stays under the bound, and the pages together list every fact once, in
/// order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_evidence_pack_is_served_in_pages_within_a_memory_bound() -> anyhow::Result<()> {
    const FACTS: usize = 30;
    let mesh = Mesh::start().await?;
    let token = mesh.operator_token();
    let padding = "x".repeat(200_000);
    for n in 0..FACTS {
        let body = json!({
            "type": "payment.pending",
            "timestamp": chrono::Utc::now().to_rfc3339(),
            "data": {"payment_id": "pay_big", "provider_ref": "pr_big", "amount_minor": 1250,
                     "currency": "USD", "merchant_id": "m_1", "note": format!("{n}{padding}")},
        })
        .to_string();
        let response = mesh.post_webhook(&format!("msg_big_{n}"), &body).await?;
        anyhow::ensure!(response.status().is_success(), "{}", response.text().await?);
    }
    mesh.eventually(Duration::from_secs(60), "every fact stored", || async {
        let stored: i64 =
            sqlx::query_scalar("SELECT count(*) FROM inbound_facts WHERE tenant = $1 AND payment_id = 'pay_big'")
                .bind(mesh.tenant.as_str())
                .fetch_one(&mesh.db)
                .await
                .ok()?;
        (stored == FACTS as i64).then_some(())
    })
    .await?;

    let mut seen = Vec::new();
    let mut after: Option<i64> = None;
    let mut pages = 0;
    let mut largest = 0;
    loop {
        let path = match after {
            Some(seq) => format!("/v1/payments/pay_big/evidence?facts_after={seq}"),
            None => "/v1/payments/pay_big/evidence".to_owned(),
        };
        let response = mesh.get(&path, &token).await?;
        anyhow::ensure!(response.status().is_success(), "{path}: {}", response.status());
        let text = response.text().await?;
        largest = largest.max(text.len());
        assert!(
            text.len() <= MAX_RESPONSE_BYTES,
            "page {pages} is {} bytes, over {MAX_RESPONSE_BYTES}",
            text.len()
        );
        let pack: Value = serde_json::from_str(&text)?;
        let facts = pack["facts"].as_array().context("facts")?;
        assert!(!facts.is_empty() || pack["facts_next"].is_null(), "{path}");
        seen.extend(facts.iter().map(|f| f["inbound_seq"].as_i64().unwrap_or_default()));
        pages += 1;
        match pack["facts_next"].as_i64() {
            Some(next) => after = Some(next),
            None => break,
        }
        anyhow::ensure!(pages <= FACTS, "the cursor does not advance");
    }
    eprintln!("{FACTS} facts of 200 KB in {pages} evidence pages, the largest {largest} bytes");
    assert!(pages > 1, "6 MB of bodies in one page");
    assert_eq!(seen.len(), FACTS, "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "in order, once: {seen:?}");
    // A bad cursor is 400, not a 500.
    let response = mesh.get("/v1/payments/pay_big/evidence?facts_after=x", &token).await?;
    assert_eq!(response.status().as_u16(), 400);
    Ok(())
}
