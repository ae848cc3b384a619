//! Storing what each fact did, so a payment's timeline and evidence show every fact
//! it received: the applied ones beside the duplicates, the refused and the unmapped.

use paytrack_nats::{Delivery, HandleError};
use paytrack_shared::envelope::FactOutcome;
use sqlx::PgPool;

use crate::{db_error, sequence};

/// Stores one outcome; a repeat is a no-op (the first outcome of a fact stands).
pub async fn apply(db: &PgPool, delivery: Delivery<FactOutcome>) -> Result<(), HandleError> {
    let seq = sequence(delivery.stream_seq)?;
    let o = &delivery.envelope;
    let int = |v: u64, what: &'static str| i64::try_from(v).map_err(|e| HandleError::poison(what, e));
    let inbound_seq = int(o.inbound_seq, "inbound sequence")?;
    let version = o.version.map(|v| int(v, "version")).transpose()?;
    let current_version = o.current_version.map(|v| int(v, "version")).transpose()?;
    sqlx::query(
        "INSERT INTO fact_outcomes
           (tenant, payment_id, inbound_seq, fact_id, outcome, reason, rule, event_type, version,
            current_version, trace_id, outcome_seq, decided_at, superseded_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
         ON CONFLICT (tenant, payment_id, inbound_seq) DO NOTHING",
    )
    .bind(o.tenant.as_str())
    .bind(o.payment_id.as_str())
    .bind(inbound_seq)
    .bind(text(&o.fact_id))
    .bind(o.outcome.as_str())
    .bind(o.reason.as_deref().map(text))
    .bind(o.rule.as_deref().map(text))
    .bind(o.event_type.as_deref().map(text))
    .bind(version)
    .bind(current_version)
    .bind(&o.trace_id)
    .bind(seq)
    .bind(o.decided_at)
    .bind(o.superseded_by.as_deref().map(text))
    .execute(db)
    .await
    .map_err(db_error)?;
    tracing::debug!(
        tenant = %o.tenant,
        payment_id = %o.payment_id,
        fact_id = %o.fact_id,
        outcome = o.outcome.as_str(),
        "fact outcome stored"
    );
    Ok(())
}

/// PostgreSQL text cannot hold NUL; provider-supplied strings (an event type) are
/// stored with it replaced rather than refused forever.
fn text(s: &str) -> String {
    s.replace('\0', "\u{FFFD}")
}
