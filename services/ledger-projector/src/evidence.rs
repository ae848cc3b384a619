//! Copying raw facts into PostgreSQL so every status can be traced to the payload
//! that caused it, by SQL as well as from the stream.
//!
//! The copy is faithful whatever the fact holds: the body is stored as bytes and the
//! parsed event and headers as JSON text (which, unlike JSONB, keeps `\u0000`). A
//! fact whose keys PostgreSQL cannot hold (a NUL in its id) is poison: the consumer
//! parks it on the dead-letter subject and moves on.
//!
//! Facts arrive in batches ([`paytrack_nats::consume_delivery_batches`]): one
//! transaction stores a batch with one multi-row insert per table, so a backlog is
//! copied at the rate of a bulk insert.

use chrono::{DateTime, Utc};
use paytrack_nats::{Delivery, HandleError};
use paytrack_shared::envelope::{CommandAction, FactSource, InboundFact};
use sqlx::PgPool;

use crate::{db_error, sequence};

/// Most facts stored in one transaction.
pub const BATCH: usize = 500;

/// The rows of `inbound_facts`, one vector per column.
#[derive(Default)]
struct Facts {
    tenant: Vec<String>,
    fact_id: Vec<String>,
    payment_id: Vec<String>,
    inbound_seq: Vec<i64>,
    source: Vec<String>,
    raw_headers: Vec<String>,
    raw_body: Vec<Vec<u8>>,
    received_at: Vec<DateTime<Utc>>,
}

/// The rows of `payment_decisions` (create commands only).
#[derive(Default)]
struct Decisions {
    tenant: Vec<String>,
    payment_id: Vec<String>,
    fact_id: Vec<String>,
    routing: Vec<Option<String>>,
    capabilities: Vec<Option<String>>,
    program: Vec<Option<String>>,
    customer_ref: Vec<Option<String>>,
    received_at: Vec<DateTime<Utc>>,
}

/// Stores a batch of facts in one transaction; a repeat is a no-op (the first copy
/// of a fact stands, and the first create of a payment keeps its decision).
pub async fn apply(db: &PgPool, deliveries: Vec<Delivery<InboundFact>>) -> Result<(), HandleError> {
    let mut facts = Facts::default();
    let mut decisions = Decisions::default();
    for delivery in &deliveries {
        let fact = &delivery.envelope;
        facts.tenant.push(fact.tenant.to_string());
        facts.fact_id.push(fact.fact_id.to_string());
        facts.payment_id.push(fact.payment_id.to_string());
        facts.inbound_seq.push(sequence(delivery.stream_seq)?);
        facts.source.push(json_text(&fact.source)?);
        facts.raw_headers.push(json_text(&fact.raw.headers)?);
        facts.raw_body.push(fact.raw.body.as_bytes().to_vec());
        facts.received_at.push(fact.received_at);
        if let FactSource::Command(command) = &fact.source
            && let CommandAction::Create(create) = &command.action
        {
            // The routing decision and capability snapshot the payment was created on.
            decisions.tenant.push(fact.tenant.to_string());
            decisions.payment_id.push(fact.payment_id.to_string());
            decisions.fact_id.push(fact.fact_id.to_string());
            decisions
                .routing
                .push(create.routing.as_ref().map(json_text).transpose()?);
            decisions
                .capabilities
                .push(create.capabilities.as_ref().map(json_text).transpose()?);
            decisions.program.push(create.program.clone());
            decisions.customer_ref.push(create.customer_ref.clone());
            decisions.received_at.push(fact.received_at);
        }
    }
    let mut tx = db.begin().await.map_err(db_error)?;
    sqlx::query(
        "INSERT INTO inbound_facts (tenant, fact_id, payment_id, inbound_seq, source, raw_headers, raw_body, received_at)
         SELECT t, f, p, s, src::json, h::json, b, r
         FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[], $7::bytea[],
           $8::timestamptz[]) AS u(t, f, p, s, src, h, b, r)
         ON CONFLICT (tenant, fact_id) DO NOTHING",
    )
    .bind(&facts.tenant)
    .bind(&facts.fact_id)
    .bind(&facts.payment_id)
    .bind(&facts.inbound_seq)
    .bind(&facts.source)
    .bind(&facts.raw_headers)
    .bind(&facts.raw_body)
    .bind(&facts.received_at)
    .execute(&mut *tx)
    .await
    .map_err(db_error)?;
    if !decisions.tenant.is_empty() {
        sqlx::query(
            "INSERT INTO payment_decisions (tenant, payment_id, fact_id, routing, capabilities, program, customer_ref, received_at)
             SELECT t, p, f, r::json, c::json, pr, cr, at
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
               $8::timestamptz[]) AS u(t, p, f, r, c, pr, cr, at)
             ON CONFLICT (tenant, payment_id) DO NOTHING",
        )
        .bind(&decisions.tenant)
        .bind(&decisions.payment_id)
        .bind(&decisions.fact_id)
        .bind(&decisions.routing)
        .bind(&decisions.capabilities)
        .bind(&decisions.program)
        .bind(&decisions.customer_ref)
        .bind(&decisions.received_at)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
    }
    tx.commit().await.map_err(db_error)?;
    for delivery in &deliveries {
        delivery
            .span
            .in_scope(|| tracing::debug!(fact_id = %delivery.envelope.fact_id, "evidence stored"));
    }
    Ok(())
}

/// JSON text of a value, for `::json` parameters: bound as text, so PostgreSQL's
/// JSONB input (which refuses `\u0000`) never sees it.
fn json_text<T: serde::Serialize>(value: &T) -> Result<String, HandleError> {
    serde_json::to_string(value).map_err(|e| HandleError::poison("encode evidence as JSON", e))
}
