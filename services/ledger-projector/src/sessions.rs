//! Storing session audit records so that what each screen was sent is queryable
//! (and, per payment channel, part of the payment's evidence).

use async_nats::jetstream;
use paytrack_nats::HandleError;
use paytrack_shared::envelope::{self, SessionAudit, SessionEvent};
use sqlx::PgPool;
use sqlx::types::Json;

use crate::transient_db;

/// Stores one audit record; a repeat is a no-op.
pub async fn apply(db: &PgPool, message: &jetstream::Message) -> Result<(), HandleError> {
    let seq = message
        .info()
        .map(|i| i.stream_sequence)
        .map_err(|e| HandleError::Poison(e.to_string()))?;
    let seq = i64::try_from(seq).map_err(|_| HandleError::Poison("sequence out of range".into()))?;
    let record: SessionAudit = envelope::decode(&message.payload).map_err(|e| HandleError::Poison(e.to_string()))?;
    let (kind, channel) = match &record.event {
        SessionEvent::Open { .. } => ("open", None),
        SessionEvent::Subscribe { channel, .. } => ("subscribe", Some(channel.as_str())),
        SessionEvent::Denied { channel, .. } => ("denied", Some(channel.as_str())),
        SessionEvent::Close { .. } => ("close", None),
    };
    sqlx::query(
        "INSERT INTO session_audit (session_seq, tenant, session_id, subject, edge_id, transport, kind, channel, detail, at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (session_seq) DO NOTHING",
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
    .execute(db)
    .await
    .map_err(transient_db)?;
    Ok(())
}
