//! Storing what each fact did, so a payment's timeline and evidence show every fact
//! it received: the applied ones beside the duplicates, the refused and the unmapped.
//!
//! Outcomes arrive in batches ([`paytrack_nats::consume_delivery_batches`]), each
//! stored by one multi-row insert in one transaction.

use chrono::{DateTime, Utc};
use paytrack_nats::{Delivery, HandleError};
use paytrack_shared::envelope::FactOutcome;
use sqlx::PgPool;

use crate::{db_error, sequence};

/// Most outcomes stored in one transaction.
pub const BATCH: usize = 500;

/// The rows of `fact_outcomes`, one vector per column.
#[derive(Default)]
struct Rows {
    tenant: Vec<String>,
    payment_id: Vec<String>,
    inbound_seq: Vec<i64>,
    fact_id: Vec<String>,
    outcome: Vec<&'static str>,
    reason: Vec<Option<String>>,
    rule: Vec<Option<String>>,
    event_type: Vec<Option<String>>,
    version: Vec<Option<i64>>,
    current_version: Vec<Option<i64>>,
    trace_id: Vec<String>,
    outcome_seq: Vec<i64>,
    decided_at: Vec<DateTime<Utc>>,
    superseded_by: Vec<Option<String>>,
}

/// Stores a batch of outcomes in one transaction; a repeat is a no-op (the first
/// outcome of a fact stands).
pub async fn apply(db: &PgPool, deliveries: Vec<Delivery<FactOutcome>>) -> Result<(), HandleError> {
    let int = |v: u64, what: &'static str| i64::try_from(v).map_err(|e| HandleError::poison(what, e));
    let mut r = Rows::default();
    for delivery in &deliveries {
        let o = &delivery.envelope;
        r.tenant.push(o.tenant.to_string());
        r.payment_id.push(o.payment_id.to_string());
        r.inbound_seq.push(int(o.inbound_seq, "inbound sequence")?);
        r.fact_id.push(text(&o.fact_id));
        r.outcome.push(o.outcome.as_str());
        r.reason.push(o.reason.as_deref().map(text));
        r.rule.push(o.rule.as_deref().map(text));
        r.event_type.push(o.event_type.as_deref().map(text));
        r.version.push(o.version.map(|v| int(v, "version")).transpose()?);
        r.current_version
            .push(o.current_version.map(|v| int(v, "version")).transpose()?);
        r.trace_id.push(o.trace_id.clone());
        r.outcome_seq.push(sequence(delivery.stream_seq)?);
        r.decided_at.push(o.decided_at);
        r.superseded_by.push(o.superseded_by.as_deref().map(text));
    }
    sqlx::query(
        "INSERT INTO fact_outcomes
           (tenant, payment_id, inbound_seq, fact_id, outcome, reason, rule, event_type, version,
            current_version, trace_id, outcome_seq, decided_at, superseded_by)
         SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[],
           $8::text[], $9::bigint[], $10::bigint[], $11::text[], $12::bigint[], $13::timestamptz[], $14::text[])
         ON CONFLICT (tenant, payment_id, inbound_seq) DO NOTHING",
    )
    .bind(&r.tenant)
    .bind(&r.payment_id)
    .bind(&r.inbound_seq)
    .bind(&r.fact_id)
    .bind(&r.outcome)
    .bind(&r.reason)
    .bind(&r.rule)
    .bind(&r.event_type)
    .bind(&r.version)
    .bind(&r.current_version)
    .bind(&r.trace_id)
    .bind(&r.outcome_seq)
    .bind(&r.decided_at)
    .bind(&r.superseded_by)
    .execute(db)
    .await
    .map_err(db_error)?;
    for delivery in &deliveries {
        let o = &delivery.envelope;
        delivery.span.in_scope(|| {
            tracing::debug!(fact_id = %o.fact_id, outcome = o.outcome.as_str(), "fact outcome stored");
        });
    }
    Ok(())
}

/// PostgreSQL text cannot hold NUL; provider-supplied strings (an event type) are
/// stored with it replaced rather than refused forever.
fn text(s: &str) -> String {
    s.replace('\0', "\u{FFFD}")
}
