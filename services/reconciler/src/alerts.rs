//! Raising an alert on `paytrack.alert.<tenant>.<kind>` (docs/contract.md §4), each linking
//! to its payment's evidence; the message id names the occurrence, so raising the
//! same alert again (another replica, a retry) adds nothing.

use async_nats::jetstream::{self, message::PublishMessage};
use chrono::Utc;
use paytrack_shared::envelope::{self, Alert, ENVELOPE_VERSION};
use paytrack_shared::{MerchantId, PaymentId, TenantId, msg_id, subjects, telemetry};

/// One alert to raise.
pub struct Raise<'a> {
    /// Tenant.
    pub tenant: &'a TenantId,
    /// The payment it is about.
    pub payment: &'a PaymentId,
    /// Its merchant, when known.
    pub merchant: Option<&'a MerchantId>,
    /// `unclear_pending`, `source_mismatch`, `trace_gap`, `sweep_quota`, `many_facts`.
    pub kind: &'a str,
    /// Which occurrence (e.g. the version or the fact it is about).
    pub discriminator: &'a str,
    /// What was observed.
    pub detail: String,
    /// The trace it belongs to.
    pub trace_id: &'a str,
}

/// Why an alert could not be recorded.
#[derive(Debug, thiserror::Error)]
#[error("publish the {kind} alert: {source}")]
pub struct AlertError {
    kind: String,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

/// Publishes the alert and waits for JetStream's ack.
pub async fn raise(js: &jetstream::Context, r: Raise<'_>) -> Result<(), AlertError> {
    let alert_id = msg_id::alert(r.tenant, r.payment, r.kind, r.discriminator);
    let alert = Alert {
        v: ENVELOPE_VERSION,
        alert_id: alert_id.clone(),
        kind: r.kind.to_owned(),
        tenant: r.tenant.clone(),
        payment_id: r.payment.clone(),
        merchant_id: r.merchant.cloned(),
        detail: r.detail,
        evidence: format!("/v1/payments/{}/evidence", r.payment),
        raised_at: Utc::now(),
        trace_id: r.trace_id.to_owned(),
    };
    let mut headers = async_nats::HeaderMap::new();
    telemetry::inject_nats(&tracing::Span::current(), &mut headers);
    let message = PublishMessage::build()
        .headers(headers)
        .message_id(alert_id)
        .payload(envelope::encode(&alert));
    let subject = subjects::alert(Some(r.tenant), r.kind);
    async { js.send_publish(subject, message).await?.await }
        .await
        .map(drop)
        .map_err(|e| AlertError {
            kind: r.kind.to_owned(),
            source: e.into(),
        })?;
    paytrack_shared::metrics::alert_raised(r.kind);
    Ok(())
}

/// Raises `many_facts` when `appended` is the first transition of its payment whose
/// applied-fact list dropped an id (more than
/// [`paytrack_shared::envelope::APPLIED_FACT_IDS_KEPT`] facts applied): a payment
/// flipping between statuses for ever, which an operator should look at. Once per
/// payment (its id names that version); a failure to raise is logged, never fails
/// the decision.
pub async fn many_facts_once(js: &jetstream::Context, appended: &paytrack_shared::envelope::Transition) {
    let first_over = paytrack_shared::envelope::APPLIED_FACT_IDS_KEPT as u64 + 1;
    if appended.applied_fact_count != first_over {
        return;
    }
    metrics::counter!("paytrack_reconciler_many_facts_total", "tenant" => appended.tenant.to_string()).increment(1);
    let detail = format!(
        "{first_over} facts applied (now {}); transitions carry only the newest {} fact ids",
        appended.status,
        paytrack_shared::envelope::APPLIED_FACT_IDS_KEPT
    );
    let raised = raise(
        js,
        Raise {
            tenant: &appended.tenant,
            payment: &appended.payment_id,
            merchant: Some(&appended.merchant_id),
            kind: paytrack_shared::subjects::ALERT_MANY_FACTS,
            discriminator: &appended.version.to_string(),
            detail,
            trace_id: &appended.trace_id,
        },
    )
    .await;
    if let Err(error) = raised {
        tracing::warn!(%error, tenant = %appended.tenant, payment_id = %appended.payment_id, "many_facts alert not raised");
    }
}
