//! Storing session audit records so that what each screen was sent is queryable
//! (and, per payment channel, part of the payment's evidence).
//!
//! ws-edge escapes control characters before it publishes; a record that still
//! holds something PostgreSQL cannot store (a forged one) is poison and is parked.

use paytrack_nats::{Delivery, HandleError};
use paytrack_shared::envelope::{SessionAudit, SessionEvent};
use sqlx::PgPool;
use sqlx::types::Json;

use crate::{db_error, sequence};

/// Stores one audit record read from PAYTRACK_SESSION of `epoch`; a repeat is a
/// no-op, and a recreated stream (new epoch) never collides with old records.
pub async fn apply(db: &PgPool, epoch: &str, delivery: Delivery<SessionAudit>) -> Result<(), HandleError> {
    let seq = sequence(delivery.stream_seq)?;
    let record = &delivery.envelope;
    let (kind, channel) = match &record.event {
        SessionEvent::Open { .. } => ("open", None),
        SessionEvent::Subscribe { channel, .. } => ("subscribe", Some(channel.as_str())),
        SessionEvent::Denied { channel, .. } => ("denied", Some(channel.as_str())),
        SessionEvent::Stale { .. } => ("stale", None),
        SessionEvent::Close { .. } => ("close", None),
    };
    sqlx::query(
        "INSERT INTO session_audit (session_seq, tenant, session_id, subject, edge_id, transport, kind, channel, detail, at,
           session_epoch)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (session_epoch, session_seq) DO NOTHING",
    )
    .bind(seq)
    .bind(record.tenant.as_str())
    .bind(&record.session_id)
    .bind(&record.subject)
    .bind(&record.edge_id)
    .bind(&record.transport)
    .bind(kind)
    .bind(channel)
    .bind(Json(&record.event))
    .bind(record.at)
    .bind(epoch)
    .execute(db)
    .await
    .map_err(db_error)?;
    Ok(())
}
