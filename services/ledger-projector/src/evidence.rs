//! Copying raw facts into PostgreSQL so every status can be traced to the payload
//! that caused it, by SQL as well as from the stream.
//!
//! The copy is faithful whatever the fact holds: the body is stored as bytes and the
//! parsed event and headers as JSON text (which, unlike JSONB, keeps `\u0000`). A
//! fact whose keys PostgreSQL cannot hold (a NUL in its id) is poison: the consumer
//! parks it on the dead-letter subject and moves on.

use paytrack_nats::{Delivery, HandleError};
use paytrack_shared::envelope::{CommandAction, FactSource, InboundFact};
use sqlx::PgPool;

use crate::{db_error, sequence};

/// Stores one fact; a repeat is a no-op.
pub async fn apply(db: &PgPool, delivery: Delivery<InboundFact>) -> Result<(), HandleError> {
    let fact = &delivery.envelope;
    let seq = sequence(delivery.stream_seq)?;
    sqlx::query(
        "INSERT INTO inbound_facts (tenant, fact_id, payment_id, inbound_seq, source, raw_headers, raw_body, received_at)
         VALUES ($1, $2, $3, $4, $5::json, $6::json, $7, $8)
         ON CONFLICT (tenant, fact_id) DO NOTHING",
    )
    .bind(fact.tenant.as_str())
    .bind(&fact.fact_id)
    .bind(fact.payment_id.as_str())
    .bind(seq)
    .bind(json_text(&fact.source)?)
    .bind(json_text(&fact.raw.headers)?)
    .bind(fact.raw.body.as_bytes())
    .bind(fact.received_at)
    .execute(db)
    .await
    .map_err(db_error)?;
    if let FactSource::Command(command) = &fact.source
        && let CommandAction::Create(create) = &command.action
    {
        // The routing decision and capability snapshot the payment was created on;
        // the first create of a payment stands.
        sqlx::query(
            "INSERT INTO payment_decisions (tenant, payment_id, fact_id, routing, capabilities, program, customer_ref, received_at)
             VALUES ($1, $2, $3, $4::json, $5::json, $6, $7, $8)
             ON CONFLICT (tenant, payment_id) DO NOTHING",
        )
        .bind(fact.tenant.as_str())
        .bind(fact.payment_id.as_str())
        .bind(&fact.fact_id)
        .bind(create.routing.as_ref().map(json_text).transpose()?)
        .bind(create.capabilities.as_ref().map(json_text).transpose()?)
        .bind(&create.program)
        .bind(&create.customer_ref)
        .bind(fact.received_at)
        .execute(db)
        .await
        .map_err(db_error)?;
    }
    tracing::debug!(fact_id = %fact.fact_id, "evidence stored");
    Ok(())
}

/// JSON text of a value, for `::json` parameters: bound as text, so PostgreSQL's
/// JSONB input (which refuses `\u0000`) never sees it.
fn json_text<T: serde::Serialize>(value: &T) -> Result<String, HandleError> {
    serde_json::to_string(value).map_err(|e| HandleError::poison("encode evidence as JSON", e))
}
