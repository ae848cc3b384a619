//! Applying a transition: current state and timeline in one database transaction,
//! then the `persisted` checkpoint.

use async_nats::jetstream::{self, message::PublishMessage};
use chrono::Utc;
use paytrack_shared::envelope::{self, Checkpoint, CheckpointKind, ENVELOPE_VERSION, Transition};
use paytrack_shared::telemetry::{self, NatsHeaders};
use paytrack_shared::{msg_id, subjects};
use sqlx::PgPool;
use tracing::{Instrument, field};

use paytrack_nats::HandleError;

use crate::transient_db;

/// Applies transitions to PostgreSQL and confirms them with checkpoints.
pub struct Applier {
    /// The projection.
    pub db: PgPool,
    /// For checkpoints.
    pub js: jetstream::Context,
}

impl Applier {
    /// Applies one transition message; safe to repeat.
    pub async fn apply(&self, message: &jetstream::Message) -> Result<(), HandleError> {
        let seq = message
            .info()
            .map(|i| i.stream_sequence)
            .map_err(|e| HandleError::Poison(e.to_string()))?;
        let transition: Transition =
            envelope::decode(&message.payload).map_err(|e| HandleError::Poison(e.to_string()))?;
        let span = tracing::info_span!(
            "project",
            trace_id = field::Empty,
            tenant = %transition.tenant,
            payment_id = %transition.payment_id,
            version = transition.version,
        );
        if let Some(headers) = &message.headers {
            telemetry::continue_from(&span, &NatsHeaders(headers));
        }
        telemetry::record_trace_id(&span);
        async move {
            let inserted = self.persist(&transition, seq).await?;
            self.checkpoint(&transition).await?;
            metrics::counter!("paytrack_projector_transitions_total", "new" => if inserted { "true" } else { "false" })
                .increment(1);
            tracing::info!(status = %transition.status, seq, inserted, "transition persisted");
            Ok(())
        }
        .instrument(span)
        .await
    }

    /// Writes timeline and current state; returns whether the timeline row is new.
    async fn persist(&self, t: &Transition, seq: u64) -> Result<bool, HandleError> {
        let seq = i64::try_from(seq).map_err(|_| HandleError::Poison("sequence out of range".into()))?;
        let version = i64::try_from(t.version).map_err(|_| HandleError::Poison("version out of range".into()))?;
        let inbound_seq = i64::try_from(t.cause.inbound_seq)
            .map_err(|_| HandleError::Poison("inbound sequence out of range".into()))?;
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
        .map_err(transient_db)?
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
        .map_err(transient_db)?;
        tx.commit().await.map_err(transient_db)?;
        Ok(inserted)
    }

    /// Publishes the `persisted` checkpoint (de-duplicated by its message id).
    async fn checkpoint(&self, t: &Transition) -> Result<(), HandleError> {
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
        let mut headers = async_nats::HeaderMap::new();
        telemetry::inject_nats(&tracing::Span::current(), &mut headers);
        let message = PublishMessage::build()
            .headers(headers)
            .message_id(msg_id::checkpoint(&t.tenant, &t.payment_id, t.version, kind.as_str()))
            .payload(envelope::encode(&checkpoint));
        let subject = subjects::checkpoint(&t.tenant, &t.merchant_id, &t.payment_id);
        async { self.js.send_publish(subject, message).await?.await }
            .await
            .map(|_| ())
            .map_err(|e| HandleError::Transient(format!("checkpoint publish failed: {e}")))
    }
}
