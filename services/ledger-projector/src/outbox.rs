//! Publishing the checkpoints a batch made due, from the outbox, after its commit.
//!
//! A batch's checkpoints are all sent at once and their acknowledgements awaited
//! together (one connection keeps their order, so `persisted` precedes
//! `ledger_posted`); then, in one transaction, the acknowledged rows are marked
//! published at the sequence JetStream stored them at, and the payments whose current
//! version now has both checkpoints stored (the `ledger_posted` one saying final) turn
//! `final`. JetStream's acknowledgement is the proof the checkpoint is in the stream,
//! so the projector does not read its own checkpoints back (its consumer takes
//! transitions only) and an outbox row is written once after its insert. A checkpoint
//! is published only while its outbox row is unpublished, so a replayed transition
//! publishes nothing; the window between a publish and its mark is covered by the
//! message id (a republished checkpoint is acknowledged with its first sequence), and
//! a drainer publishes rows a crash or a NATS outage left behind.

use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage};
use paytrack_shared::telemetry::TRACEPARENT;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::project::{CheckpointSeqs, OutboxRow};

/// Checkpoints sent to JetStream (in order, on one connection), their acks pending.
pub struct Sent(Vec<(OutboxRow, jetstream::context::PublishAckFuture)>);

/// Publishes `rows` concurrently and marks those JetStream acknowledged; returns how
/// many were published. Failures are left to the drainer.
pub async fn publish_all(db: &PgPool, js: &jetstream::Context, rows: Vec<OutboxRow>) -> usize {
    confirm(db, send_all(js, rows).await).await
}

/// Sends `rows` in order without waiting for their acks (a row that cannot be sent,
/// and every one after it, is left to the drainer).
pub async fn send_all(js: &jetstream::Context, rows: Vec<OutboxRow>) -> Sent {
    let mut pending = Vec::with_capacity(rows.len());
    for row in rows {
        let mut headers = async_nats::HeaderMap::new();
        if let Some(traceparent) = &row.traceparent {
            headers.insert(TRACEPARENT, traceparent.as_str());
        }
        let message = PublishMessage::build()
            .headers(headers)
            .message_id(row.msg_id.as_str())
            .payload(row.payload.clone().into());
        match js.send_publish(row.subject.clone(), message).await {
            Ok(ack) => pending.push((row, ack)),
            Err(error) => {
                tracing::warn!(%error, tenant = %row.tenant, payment_id = %row.payment_id, "checkpoint not sent; the drainer retries");
                break;
            }
        }
    }
    Sent(pending)
}

/// Awaits the acks of `sent` together and marks the acknowledged rows published in
/// one statement; returns how many were.
pub async fn confirm(db: &PgPool, sent: Sent) -> usize {
    mark(db, acked(sent).await).await
}

/// Checkpoints JetStream acknowledged, with their sequences, not yet marked.
pub struct Acked(CheckpointSeqs);

/// Awaits the acks of `sent` together (a checkpoint not acknowledged is left to the
/// drainer).
pub async fn acked(sent: Sent) -> Acked {
    let pending = sent.0;
    let acks = futures::future::join_all(pending.into_iter().map(|(row, ack)| async move { (row, ack.await) })).await;
    let mut marks = CheckpointSeqs::default();
    for (row, ack) in acks {
        match ack {
            Ok(ack) => marks.push(
                &row.tenant,
                &row.payment_id,
                row.version,
                &row.kind,
                i64::try_from(ack.sequence).unwrap_or(i64::MAX),
            ),
            Err(error) => {
                tracing::warn!(%error, tenant = %row.tenant, payment_id = %row.payment_id, "checkpoint not acknowledged; the drainer retries");
            }
        }
    }
    Acked(marks)
}

/// Marks the acknowledged checkpoints stored (published, at their sequence) and
/// decides finality for their payments, in one transaction; returns how many were
/// acknowledged. Should the database fail, the rows stay unpublished and the drainer
/// republishes them under their ids (acknowledged again with their first sequence).
pub async fn mark(db: &PgPool, acked: Acked) -> usize {
    let marks = acked.0;
    let published = marks.tenant.len();
    if published == 0 {
        return 0;
    }
    if let Err(error) = mark_and_decide(db, &marks).await {
        tracing::warn!(%error, "published checkpoints not marked; the drainer republishes them under their ids");
    }
    metrics::counter!("paytrack_projector_checkpoints_published_total").increment(published as u64);
    published
}

async fn mark_and_decide(db: &PgPool, marks: &CheckpointSeqs) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    crate::project::confirm_stored(&mut tx, marks).await?;
    let payments: std::collections::BTreeSet<(&str, &str)> = marks
        .tenant
        .iter()
        .zip(&marks.payment_id)
        .map(|(t, p)| (t.as_str(), p.as_str()))
        .collect();
    let (tenants, payments): (Vec<&str>, Vec<&str>) = payments.into_iter().unzip();
    crate::project::decide_final(&mut tx, &tenants, &payments).await?;
    tx.commit().await
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
            "SELECT tenant, payment_id, version, kind, subject, msg_id, payload, traceparent, is_final FROM checkpoint_outbox
             WHERE published_at IS NULL AND created_at < now() - make_interval(secs => $1)
             ORDER BY created_at, tenant, payment_id, version, kind DESC LIMIT 1000",
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
        if rows.is_empty() {
            continue;
        }
        let due = rows.len();
        let drained = publish_all(&db, &js, rows).await;
        metrics::counter!("paytrack_projector_checkpoints_drained_total").increment(drained as u64);
        tracing::info!(drained, due, "unpublished checkpoints drained");
    }
}
