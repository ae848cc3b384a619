//! Storing session audit records so that what each screen was sent is queryable
//! (and, per payment channel, part of the payment's evidence).
//!
//! ws-edge escapes control characters before it publishes; a record that still
//! holds something PostgreSQL cannot store (a forged one) is poison and is parked
//! (a batch the database refuses is stored again one record at a time, so only that
//! record is parked).

use chrono::{DateTime, Utc};
use paytrack_nats::{Delivery, HandleError};
use paytrack_shared::envelope::{SessionAudit, SessionEvent};
use sqlx::PgPool;

use crate::{db_error, sequence};

/// Most audit records stored in one transaction.
pub const BATCH: usize = 500;

/// The rows of `session_audit`, one vector per column.
#[derive(Default)]
struct Rows {
    seq: Vec<i64>,
    tenant: Vec<String>,
    session_id: Vec<String>,
    subject: Vec<String>,
    edge_id: Vec<String>,
    transport: Vec<String>,
    kind: Vec<&'static str>,
    channel: Vec<Option<String>>,
    detail: Vec<String>,
    at: Vec<DateTime<Utc>>,
}

/// Stores a batch of audit records read from PAYTRACK_SESSION of `epoch` in one
/// transaction (a reconnect storm writes three records per session); a repeat is a
/// no-op, and a recreated stream (new epoch) never collides with old records.
pub async fn apply(db: &PgPool, epoch: &str, deliveries: Vec<Delivery<SessionAudit>>) -> Result<(), HandleError> {
    let mut rows = Rows::default();
    for delivery in &deliveries {
        let record = &delivery.envelope;
        let (kind, channel) = match &record.event {
            SessionEvent::Open { .. } => ("open", None),
            SessionEvent::Subscribe { channel, .. } => ("subscribe", Some(channel.clone())),
            SessionEvent::Denied { channel, .. } => ("denied", Some(channel.clone())),
            SessionEvent::Stale { .. } => ("stale", None),
            SessionEvent::Close { .. } => ("close", None),
        };
        rows.seq.push(sequence(delivery.stream_seq)?);
        rows.tenant.push(record.tenant.to_string());
        rows.session_id.push(record.session_id.clone());
        rows.subject.push(record.subject.clone());
        rows.edge_id.push(record.edge_id.clone());
        rows.transport.push(record.transport.clone());
        rows.kind.push(kind);
        rows.channel.push(channel);
        rows.detail
            .push(serde_json::to_string(&record.event).map_err(|e| HandleError::poison("encode the audit detail", e))?);
        rows.at.push(record.at);
    }
    sqlx::query(
        "INSERT INTO session_audit (session_seq, tenant, session_id, subject, edge_id, transport, kind, channel, detail, at,
           session_epoch)
         SELECT s, t, id, sub, e, tr, k, c, d::jsonb, at, $11
         FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
           $9::text[], $10::timestamptz[]) AS u(s, t, id, sub, e, tr, k, c, d, at)
         ON CONFLICT (session_epoch, session_seq) DO NOTHING",
    )
    .bind(&rows.seq)
    .bind(&rows.tenant)
    .bind(&rows.session_id)
    .bind(&rows.subject)
    .bind(&rows.edge_id)
    .bind(&rows.transport)
    .bind(&rows.kind)
    .bind(&rows.channel)
    .bind(&rows.detail)
    .bind(&rows.at)
    .bind(epoch)
    .execute(db)
    .await
    .map_err(db_error)?;
    Ok(())
}
