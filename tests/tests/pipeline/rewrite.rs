//! A payment's history begun again at version 1 after the broker lost it.
//!
//! When PAYTRACK_STATUS loses a payment's acknowledged transitions, the reconciler
//! finds nothing on the payment's subject and writes its next fact (often the sweep's
//! status-query answer) as a new version 1. Such a transition carries no create terms
//! (no amount, currency or rail): only the create command did. The projector adopts
//! the rewritten chain as the payment's next version (divergence.rs), and must keep
//! the terms it already holds, or the payment's amount becomes unknown.

use paytrack_shared::envelope::{self, FactSource, PaymentTerms, ProviderEvent, Transition};
use paytrack_shared::ids::{MerchantId, PaymentId};
use paytrack_shared::{Status, subjects};
use paytrack_tests::{Mesh, eventually, facts};

/// Generous bound for the mesh to react on a loaded machine.
const WAIT: std::time::Duration = std::time::Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adopted_chain_without_create_terms_keeps_the_projected_amount() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let payment = "pay_rewritten_from_status_query";
    let answered = mesh
        .post_webhook("rw_1", &Mesh::webhook_body(payment, "pending", "m_1"))
        .await?
        .status();
    anyhow::ensure!(answered == 200, "webhook answered {answered}");
    mesh.wait_for_row(payment, 1).await?;
    let held: (Option<i64>, Option<String>) =
        sqlx::query_as("SELECT amount_minor, currency FROM payments WHERE tenant = $1 AND payment_id = $2")
            .bind(mesh.tenant.as_str())
            .bind(payment)
            .fetch_one(&mesh.db)
            .await?;
    assert_eq!(
        held,
        (Some(1250), Some("USD".to_owned())),
        "the webhook's terms are projected"
    );

    // What the reconciler writes when the stream no longer holds the payment's chain:
    // a new version 1 from a status-query answer, without create terms.
    let subject = subjects::status(&mesh.tenant, &MerchantId::new("m_1")?, &PaymentId::new(payment)?);
    let status_stream = mesh.js.get_stream(subjects::STREAM_STATUS).await?;
    let first: Transition = envelope::decode(&status_stream.get_last_raw_message_by_subject(&subject).await?.payload)?;
    let fact_id = format!("sq:stdwebhooks:{payment}:1");
    let mut rewritten = first.clone();
    rewritten.version = 1;
    rewritten.status = Status::Succeeded;
    rewritten.previous_status = None;
    rewritten.recorded_at = chrono::Utc::now();
    rewritten.cause.fact_id = fact_id.as_str().into();
    rewritten.cause.source = "status_query".to_owned();
    rewritten.cause.provider_event_id = None;
    rewritten.cause.rule = "status_query:succeeded".to_owned();
    rewritten.applied_fact_ids = vec![fact_id.as_str().into()];
    rewritten.applied_fact_count = 1;
    rewritten.evidence_fact_ids = Vec::new();
    rewritten.terms = PaymentTerms::default();
    rewritten.amounts = None;
    mesh.js.publish(subject, envelope::encode(&rewritten)).await?.await?;

    // Adopted as the projection's next version, with the amount it already held.
    let (status, version, ..) = mesh.wait_for_row(payment, 2).await?;
    assert_eq!(
        (status.as_str(), version),
        ("succeeded", 2),
        "the rewritten chain is adopted"
    );
    let after: (Option<i64>, Option<String>) =
        sqlx::query_as("SELECT amount_minor, currency FROM payments WHERE tenant = $1 AND payment_id = $2")
            .bind(mesh.tenant.as_str())
            .bind(payment)
            .fetch_one(&mesh.db)
            .await?;
    assert_eq!(after, held, "adopting a chain without terms keeps the projected amount");
    assert_eq!(
        paytrack_tests::workload::unbalanced_entries(&mesh).await?,
        0,
        "every journal entry balances"
    );
    Ok(())
}

/// The chaos run's case end to end: the broker loses a payment's transitions (its
/// subject is emptied here; the claim stays), the sweep's status-query answer
/// arrives, the reconciler finds nothing on the payment's subject and begins the
/// history again at version 1, and the projector adopts it as the next version with
/// the payment's amount, currency and rail intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_lost_by_the_broker_and_begun_again_keeps_the_payments_terms() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let payment = "pay_lost_then_queried";
    facts::publish(&mesh.js, &facts::create(&mesh.tenant, payment, "rtp", "stdwebhooks")?).await?;
    let pending = facts::first_pending(&mesh.tenant, payment)?;
    facts::publish(&mesh.js, &pending).await?;
    mesh.wait_for_row(payment, 2).await?;
    let held = terms(&mesh, payment).await?;
    assert!(
        held.0.is_some() && held.1.is_some(),
        "the create's terms are projected: {held:?}"
    );

    // The broker loses the payment's transitions.
    let subject = subjects::status(&mesh.tenant, &MerchantId::new("m_1")?, &PaymentId::new(payment)?);
    mesh.js
        .get_stream(subjects::STREAM_STATUS)
        .await?
        .purge()
        .filter(subject.clone())
        .await?;
    assert!(facts::chain(&mesh.js, &mesh.tenant, payment).await?.is_empty());

    // The sweep's status-query answer, as recorded when the provider names no terms.
    let mut answer = facts::event(
        &mesh.tenant,
        payment,
        "check-0",
        Status::Succeeded,
        None,
        chrono::Utc::now(),
        None,
    )?;
    answer.fact_id = format!("sq:stdwebhooks:{payment}:0").as_str().into();
    if let FactSource::Webhook(event) = answer.source.clone() {
        answer.source = FactSource::StatusQuery(ProviderEvent {
            amount_minor: None,
            currency: None,
            event_type: "succeeded".to_owned(),
            ..event
        });
    }
    facts::publish(&mesh.js, &answer).await?;
    let begun_again = eventually(WAIT, "the history begun again", || async {
        facts::chain(&mesh.js, &mesh.tenant, payment)
            .await
            .ok()?
            .into_iter()
            .next()
    })
    .await?;
    assert_eq!(
        (begun_again.version, begun_again.status),
        (1, Status::Succeeded),
        "the reconciler begins the lost history again from the answer"
    );

    let (status, version, ..) = mesh.wait_for_row(payment, 3).await?;
    assert_eq!(
        (status.as_str(), version),
        ("succeeded", 3),
        "adopted as the next version"
    );
    assert_eq!(terms(&mesh, payment).await?, held, "the payment's terms are kept");
    Ok(())
}

/// The projected terms of `payment`: amount, currency, rail.
async fn terms(mesh: &Mesh, payment: &str) -> anyhow::Result<(Option<i64>, Option<String>, Option<String>)> {
    Ok(
        sqlx::query_as("SELECT amount_minor, currency, rail FROM payments WHERE tenant = $1 AND payment_id = $2")
            .bind(mesh.tenant.as_str())
            .bind(payment)
            .fetch_one(&mesh.db)
            .await?,
    )
}
