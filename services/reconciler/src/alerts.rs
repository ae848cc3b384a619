//! Raising an alert on `paytrack.alert.<tenant>.<kind>` (DESIGN.md §4), each linking
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
    /// `unclear_pending`, `source_mismatch`, `trace_gap`.
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
    metrics::counter!("paytrack_reconciler_alerts_total", "kind" => r.kind.to_owned()).increment(1);
    Ok(())
}
