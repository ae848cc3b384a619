//! Storing payment alerts (`unclear_pending`, `source_mismatch`, `trace_gap`, and the
//! money's: `dispute_opened`, `captured_after_failure`, `refund_failed`,
//! `investigation_required`) so
//! operators can list and acknowledge them (`GET /v1/alerts`). Dead-letter alerts
//! have their own envelope and are not read here (the consumer filters by kind).

use paytrack_nats::{Delivery, HandleError};
use paytrack_shared::envelope::Alert;
use paytrack_shared::subjects;
use sqlx::PgPool;

use crate::{db_error, sequence};

/// The subjects of the alerts stored: every payment alert kind, any tenant.
pub fn filter_subjects() -> Vec<String> {
    [
        subjects::ALERT_UNCLEAR_PENDING,
        subjects::ALERT_SOURCE_MISMATCH,
        subjects::ALERT_TRACE_GAP,
        subjects::ALERT_DISPUTE_OPENED,
        subjects::ALERT_CAPTURED_AFTER_FAILURE,
        subjects::ALERT_REFUND_FAILED,
        subjects::ALERT_INVESTIGATION_REQUIRED,
    ]
    .iter()
    .map(|kind| format!("paytrack.alert.*.{kind}"))
    .collect()
}

/// Stores one alert; a repeat is a no-op (keyed by its id).
pub async fn apply(db: &PgPool, delivery: Delivery<Alert>) -> Result<(), HandleError> {
    let seq = sequence(delivery.stream_seq)?;
    let a = &delivery.envelope;
    let clean = |s: &str| s.replace('\0', "\u{FFFD}");
    sqlx::query(
        "INSERT INTO alerts
           (tenant, alert_id, kind, payment_id, merchant_id, detail, evidence, raised_at, trace_id, alert_seq)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (tenant, alert_id) DO NOTHING",
    )
    .bind(a.tenant.as_str())
    .bind(clean(&a.alert_id))
    .bind(clean(&a.kind))
    .bind(a.payment_id.as_str())
    .bind(a.merchant_id.as_ref().map(|m| m.as_str().to_owned()))
    .bind(clean(&a.detail))
    .bind(clean(&a.evidence))
    .bind(a.raised_at)
    .bind(&a.trace_id)
    .bind(seq)
    .execute(db)
    .await
    .map_err(db_error)?;
    tracing::info!(tenant = %a.tenant, payment_id = %a.payment_id, kind = %a.kind, "alert stored");
    Ok(())
}
