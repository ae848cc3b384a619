//! Copying raw facts into PostgreSQL so every status can be traced to the payload
//! that caused it, by SQL as well as from the stream.

use async_nats::jetstream;
use paytrack_shared::envelope::{self, InboundFact};
use sqlx::PgPool;
use sqlx::types::Json;

use paytrack_nats::HandleError;

use crate::transient_db;

/// Stores one fact; a repeat is a no-op.
pub async fn apply(db: &PgPool, message: &jetstream::Message) -> Result<(), HandleError> {
    let seq = message
        .info()
        .map(|i| i.stream_sequence)
        .map_err(|e| HandleError::Poison(e.to_string()))?;
    let fact: InboundFact = envelope::decode(&message.payload).map_err(|e| HandleError::Poison(e.to_string()))?;
    let seq = i64::try_from(seq).map_err(|_| HandleError::Poison("sequence out of range".into()))?;
    sqlx::query(
        "INSERT INTO inbound_facts (tenant, fact_id, payment_id, inbound_seq, source, raw_headers, raw_body, received_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (tenant, fact_id) DO NOTHING",
    )
    .bind(fact.tenant.as_str())
    .bind(&fact.fact_id)
    .bind(fact.payment_id.as_str())
    .bind(seq)
    .bind(Json(&fact.source))
    .bind(Json(&fact.raw.headers))
    .bind(&fact.raw.body)
    .bind(fact.received_at)
    .execute(db)
    .await
    .map_err(transient_db)?;
    tracing::debug!(tenant = %fact.tenant, payment_id = %fact.payment_id, fact_id = %fact.fact_id, "evidence stored");
    Ok(())
}
