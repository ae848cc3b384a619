//! A payment whose claim the broker lost while its history survived.
//!
//! The claims bucket (`PAYTRACK_CLAIMS`) names the merchant whose subject carries a
//! payment's history. It is a replicated stream like any other, so it can lose a
//! claim the status stream still has the history of. A later fact that names no
//! merchant (or another one) must continue that history, never start a second chain
//! on another subject.

use paytrack_shared::{Status, subjects};
use paytrack_tests::{Mesh, eventually, facts};

/// Generous bound for the mesh to react on a loaded machine.
const WAIT: std::time::Duration = std::time::Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fact_for_a_payment_whose_claim_was_lost_continues_its_history() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let payment = "pay_claim_lost";
    facts::publish(&mesh.js, &facts::create(&mesh.tenant, payment, "rtp", "stdwebhooks")?).await?;
    mesh.wait_for_row(payment, 1).await?;

    // The claim is lost; the reconcilers restart, so none remembers it.
    let claims = mesh.js.get_key_value(subjects::CLAIMS_BUCKET).await?;
    mesh.restart_reconcilers(async {
        claims.delete(format!("{}.{payment}", mesh.tenant)).await?;
        Ok(())
    })
    .await?;

    // A provider event that names no merchant.
    let mut pending = facts::first_pending(&mesh.tenant, payment)?;
    pending.merchant_id = None;
    facts::publish(&mesh.js, &pending).await?;

    let chain = eventually(WAIT, "the event decided", || async {
        let chain = facts::chain(&mesh.js, &mesh.tenant, payment).await.ok()?;
        chain.iter().any(|t| t.status == Status::Pending).then_some(chain)
    })
    .await?;
    let links: Vec<(u64, String)> = chain.iter().map(|t| (t.version, t.merchant_id.to_string())).collect();
    assert_eq!(
        links,
        vec![(1, "m_1".to_owned()), (2, "m_1".to_owned())],
        "one chain, on the merchant's subject"
    );
    Ok(())
}
