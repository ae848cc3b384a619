//! Applying a transition: current state, timeline and the checkpoint it makes due,
//! in one database transaction; then the checkpoint is published from that outbox.
//!
//! A checkpoint is published only while its outbox row is unpublished, and marked
//! published with its sequence once JetStream acknowledges it. So a redelivered or
//! replayed transition (after a consumer reset, long after JetStream's
//! de-duplication window forgot the checkpoint's message id) publishes nothing. The
//! only window left, a crash between the publish and the mark, is covered by the
//! message id, since the drainer retries such rows within seconds.

use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage};
use chrono::Utc;
use paytrack_nats::{Delivery, HandleError};
use paytrack_shared::envelope::{self, Checkpoint, CheckpointKind, ENVELOPE_VERSION, Transition};
use paytrack_shared::telemetry::{self, TRACEPARENT};
use paytrack_shared::{msg_id, subjects};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::{db_error, sequence, transient_db};

/// Applies transitions to PostgreSQL and confirms them with checkpoints.
pub struct Applier {
    /// The projection.
    pub db: PgPool,
    /// For checkpoints.
    pub js: jetstream::Context,
}

/// One checkpoint made due by a projection transaction, as kept in `checkpoint_outbox`.
#[derive(Debug, sqlx::FromRow)]
struct OutboxRow {
    tenant: String,
    payment_id: String,
    version: i64,
    kind: String,
    subject: String,
    msg_id: String,
    payload: Vec<u8>,
    traceparent: Option<String>,
}

impl Applier {
    /// Applies one transition; safe to repeat, and a repeat publishes nothing.
    pub async fn apply(&self, delivery: Delivery<Transition>) -> Result<(), HandleError> {
        let t = &delivery.envelope;
        let (inserted, due) = self.persist(t, delivery.stream_seq).await?;
        let published = publish_if_due(&self.db, &self.js, &due).await?;
        metrics::counter!("paytrack_projector_transitions_total", "new" => if inserted { "true" } else { "false" })
            .increment(1);
        tracing::info!(
            status = %t.status,
            version = t.version,
            seq = delivery.stream_seq,
            inserted,
            checkpoint_published = published,
            "transition persisted"
        );
        Ok(())
    }

    /// Writes timeline, current state and the due checkpoint; returns whether the
    /// timeline row is new, and the checkpoint's outbox row.
    async fn persist(&self, t: &Transition, seq: u64) -> Result<(bool, OutboxRow), HandleError> {
        let seq = sequence(seq)?;
        let version = i64::try_from(t.version).map_err(|e| HandleError::poison("a version as BIGINT", e))?;
        let inbound_seq =
            i64::try_from(t.cause.inbound_seq).map_err(|e| HandleError::poison("an inbound sequence as BIGINT", e))?;
        let due = checkpoint_due(t, version);
        let mut tx = self.db.begin().await.map_err(transient_db)?;
        let inserted = sqlx::query(
            "INSERT INTO payment_timeline
               (tenant, payment_id, version, status, previous_status, status_seq, fact_id, source,
                provider_event_id, rule, inbound_seq, trace_id, occurred_at, recorded_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
             ON CONFLICT (tenant, payment_id, version) DO NOTHING",
        )
        .bind(t.tenant.as_str())
        .bind(t.payment_id.as_str())
        .bind(version)
        .bind(t.status.as_str())
        .bind(t.previous_status.map(|s| s.as_str()))
        .bind(seq)
        .bind(&t.cause.fact_id)
        .bind(&t.cause.source)
        .bind(&t.cause.provider_event_id)
        .bind(&t.cause.rule)
        .bind(inbound_seq)
        .bind(&t.trace_id)
        .bind(t.occurred_at)
        .bind(t.recorded_at)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?
        .rows_affected()
            == 1;
        // Only a newer version moves current state, so replays and reordering of
        // redeliveries cannot move it backwards.
        sqlx::query(
            "INSERT INTO payments
               (tenant, payment_id, merchant_id, status, version, status_seq, final, trace_id, occurred_at)
             VALUES ($1, $2, $3, $4, $5, $6, FALSE, $7, $8)
             ON CONFLICT (tenant, payment_id) DO UPDATE SET
               status = EXCLUDED.status, version = EXCLUDED.version, status_seq = EXCLUDED.status_seq,
               trace_id = EXCLUDED.trace_id, occurred_at = EXCLUDED.occurred_at, updated_at = now()
             WHERE payments.version < EXCLUDED.version",
        )
        .bind(t.tenant.as_str())
        .bind(t.payment_id.as_str())
        .bind(t.merchant_id.as_str())
        .bind(t.status.as_str())
        .bind(version)
        .bind(seq)
        .bind(&t.trace_id)
        .bind(t.occurred_at)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        // The first projection of a version makes its checkpoint due; a replay finds
        // the row (published or not) and leaves it as it is.
        sqlx::query(
            "INSERT INTO checkpoint_outbox (tenant, payment_id, version, kind, subject, msg_id, payload, traceparent)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (tenant, payment_id, version, kind) DO NOTHING",
        )
        .bind(&due.tenant)
        .bind(&due.payment_id)
        .bind(due.version)
        .bind(&due.kind)
        .bind(&due.subject)
        .bind(&due.msg_id)
        .bind(&due.payload)
        .bind(&due.traceparent)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(transient_db)?;
        Ok((inserted, due))
    }
}

/// The `persisted` checkpoint of `t`, ready for the outbox, with the trace context of
/// the current span so that even a drained publish continues the transition's trace.
fn checkpoint_due(t: &Transition, version: i64) -> OutboxRow {
    let kind = CheckpointKind::Persisted;
    let checkpoint = Checkpoint {
        v: ENVELOPE_VERSION,
        checkpoint: kind,
        tenant: t.tenant.clone(),
        merchant_id: t.merchant_id.clone(),
        payment_id: t.payment_id.clone(),
        version: t.version,
        status: t.status,
        recorded_at: Utc::now(),
        trace_id: t.trace_id.clone(),
    };
    let mut carrier = async_nats::HeaderMap::new();
    telemetry::inject_nats(&tracing::Span::current(), &mut carrier);
    OutboxRow {
        tenant: t.tenant.to_string(),
        payment_id: t.payment_id.to_string(),
        version,
        kind: kind.as_str().to_owned(),
        subject: subjects::checkpoint(&t.tenant, &t.merchant_id, &t.payment_id),
        msg_id: msg_id::checkpoint(&t.tenant, &t.payment_id, t.version, kind.as_str()),
        payload: envelope::encode(&checkpoint).to_vec(),
        traceparent: carrier.get(TRACEPARENT).map(|v| v.as_str().to_owned()),
    }
}

/// Publishes the checkpoint of `due` unless its outbox row is already marked
/// published; returns whether it published.
async fn publish_if_due(db: &PgPool, js: &jetstream::Context, due: &OutboxRow) -> Result<bool, HandleError> {
    let row: Option<OutboxRow> = sqlx::query_as(
        "SELECT tenant, payment_id, version, kind, subject, msg_id, payload, traceparent FROM checkpoint_outbox
         WHERE tenant = $1 AND payment_id = $2 AND version = $3 AND kind = $4 AND published_at IS NULL",
    )
    .bind(&due.tenant)
    .bind(&due.payment_id)
    .bind(due.version)
    .bind(&due.kind)
    .fetch_optional(db)
    .await
    .map_err(transient_db)?;
    match row {
        Some(row) => publish(db, js, &row).await.map(|()| true),
        None => Ok(false),
    }
}

/// Publishes one outbox row (under its message id, so a publish repeated after a
/// crash before the mark is dropped by JetStream) and marks it published.
async fn publish(db: &PgPool, js: &jetstream::Context, row: &OutboxRow) -> Result<(), HandleError> {
    let mut headers = async_nats::HeaderMap::new();
    if let Some(traceparent) = &row.traceparent {
        headers.insert(TRACEPARENT, traceparent.as_str());
    }
    let message = PublishMessage::build()
        .headers(headers)
        .message_id(row.msg_id.as_str())
        .payload(row.payload.clone().into());
    let ack = async { js.send_publish(row.subject.clone(), message).await?.await }
        .await
        .map_err(|e| HandleError::transient("publish a checkpoint", e))?;
    sqlx::query(
        "UPDATE checkpoint_outbox SET published_seq = $5, published_at = now()
         WHERE tenant = $1 AND payment_id = $2 AND version = $3 AND kind = $4 AND published_at IS NULL",
    )
    .bind(&row.tenant)
    .bind(&row.payment_id)
    .bind(row.version)
    .bind(&row.kind)
    .bind(sequence(ack.sequence)?)
    .execute(db)
    .await
    .map_err(transient_db)?;
    Ok(())
}

/// How often the drainer looks for checkpoints left unpublished.
const DRAIN_EVERY: Duration = Duration::from_secs(5);

/// Publishes, until `shutdown`, every checkpoint whose row stayed unpublished for
/// longer than [`DRAIN_EVERY`] (a crash or a NATS outage after the commit), oldest
/// first.
pub async fn drain(db: PgPool, js: jetstream::Context, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(DRAIN_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let rows: Vec<OutboxRow> = match sqlx::query_as(
            "SELECT tenant, payment_id, version, kind, subject, msg_id, payload, traceparent FROM checkpoint_outbox
             WHERE published_at IS NULL AND created_at < now() - make_interval(secs => $1)
             ORDER BY created_at LIMIT 500",
        )
        .bind(DRAIN_EVERY.as_secs_f64())
        .fetch_all(&db)
        .await
        {
            Ok(rows) => rows,
            Err(error) => {
                tracing::warn!(%error, "cannot read the checkpoint outbox; retrying");
                continue;
            }
        };
        for row in rows {
            match publish(&db, &js, &row).await {
                Ok(()) => {
                    metrics::counter!("paytrack_projector_checkpoints_drained_total").increment(1);
                    tracing::info!(
                        tenant = %row.tenant,
                        payment_id = %row.payment_id,
                        version = row.version,
                        "unpublished checkpoint drained"
                    );
                }
                Err(error) => {
                    tracing::warn!(%error, tenant = %row.tenant, payment_id = %row.payment_id, "checkpoint not drained yet");
                    break;
                }
            }
        }
    }
}
