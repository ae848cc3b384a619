//! Publishing the checkpoints a batch made due, from the outbox, after its commit.
//!
//! A batch's checkpoints are all sent at once and their acknowledgements awaited
//! together (one connection keeps their order, so `persisted` precedes
//! `ledger_posted`); then one statement records the acknowledged ones stored, at the
//! sequence JetStream stored them at, and turns `final` the payments whose current
//! version now has both checkpoints stored (the `ledger_posted` one saying final).
//! JetStream's acknowledgement is the proof the checkpoint is in the stream, so the
//! projector does not read its own checkpoints back (its consumer takes transitions
//! only). A version's checkpoints are published only while its `checkpoints` row
//! lacks them, so a replayed transition publishes nothing; the window between a
//! publish and its record is covered by the message id (a republished checkpoint is
//! acknowledged with its first sequence), and a drainer publishes what a crash or a
//! NATS outage left unpublished.

use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage};
use paytrack_shared::telemetry::TRACEPARENT;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::checkpoints::{self, Due, Stored};
use paytrack_shared::envelope::CheckpointKind;

/// A checkpoint sent to JetStream: whose it is, and its ack, pending.
struct Pending {
    tenant: String,
    payment_id: String,
    version: i64,
    kind: CheckpointKind,
    ack: jetstream::context::PublishAckFuture,
}

/// Checkpoints sent to JetStream (in order, on one connection), their acks pending.
pub struct Sent(Vec<Pending>);

/// Publishes what `due` lacks and confirms what JetStream acknowledged; returns how
/// many were acknowledged. Failures are left to the drainer.
pub async fn publish_all(db: &PgPool, js: &jetstream::Context, due: Vec<Due>) -> usize {
    confirm(db, send_all(js, due).await).await
}

/// Sends the checkpoints `due` lacks, in order, without waiting for their acks (a
/// checkpoint that cannot be sent, and every one after it, is left to the drainer).
pub async fn send_all(js: &jetstream::Context, due: Vec<Due>) -> Sent {
    let mut pending = Vec::with_capacity(2 * due.len());
    'versions: for d in due {
        let version = i64::try_from(d.version).unwrap_or(i64::MAX);
        for m in d.unstored() {
            let mut headers = async_nats::HeaderMap::new();
            if let Some(traceparent) = &m.traceparent {
                headers.insert(TRACEPARENT, traceparent.as_str());
            }
            let message = PublishMessage::build()
                .headers(headers)
                .message_id(m.msg_id.as_str())
                .payload(m.payload.into());
            match js.send_publish(m.subject, message).await {
                Ok(ack) => pending.push(Pending {
                    tenant: d.tenant.to_string(),
                    payment_id: d.payment_id.to_string(),
                    version,
                    kind: m.kind,
                    ack,
                }),
                Err(error) => {
                    tracing::warn!(%error, tenant = %d.tenant, payment_id = %d.payment_id, "checkpoint not sent; the drainer retries");
                    break 'versions;
                }
            }
        }
    }
    Sent(pending)
}

/// Awaits the acks of `sent` together, then records the acknowledged checkpoints
/// stored and decides finality for their payments in one statement; returns how
/// many were acknowledged. Should the database fail, the rows stay unpublished and
/// the drainer republishes them under their ids (acknowledged again with their
/// first sequence).
pub async fn confirm(db: &PgPool, sent: Sent) -> usize {
    let acks = futures::future::join_all(sent.0.into_iter().map(|p| async move {
        let ack = p.ack.await;
        (p.tenant, p.payment_id, p.version, p.kind, ack)
    }))
    .await;
    let mut stored = Stored::default();
    for (tenant, payment_id, version, kind, ack) in acks {
        match ack {
            Ok(ack) => stored.push(
                &tenant,
                &payment_id,
                version,
                kind,
                i64::try_from(ack.sequence).unwrap_or(i64::MAX),
            ),
            Err(error) => {
                tracing::warn!(%error, %tenant, %payment_id, "checkpoint not acknowledged; the drainer retries");
            }
        }
    }
    let published = stored.len();
    if published == 0 {
        return 0;
    }
    let confirmed = async {
        let mut tx = db.begin().await?;
        checkpoints::confirm_stored(&mut tx, &stored).await?;
        tx.commit().await
    };
    if let Err(error) = confirmed.await {
        tracing::warn!(%error, "published checkpoints not recorded; the drainer republishes them under their ids");
    }
    metrics::counter!("paytrack_projector_checkpoints_published_total").increment(published as u64);
    published
}

/// How often the drainer looks for checkpoints left unpublished.
const DRAIN_EVERY: Duration = Duration::from_secs(5);

/// Publishes, until `shutdown`, every checkpoint whose row stayed unpublished for
/// longer than [`DRAIN_EVERY`] (a crash or a NATS outage after the commit), oldest
/// first.
pub async fn drain(db: PgPool, js: jetstream::Context, shutdown: CancellationToken) {
    let read = || checkpoints::unpublished(&db, DRAIN_EVERY.as_secs_f64(), 1000);
    publish_owed_every(
        &db,
        &js,
        &shutdown,
        DRAIN_EVERY,
        "unpublished checkpoints",
        read,
        |drained, due| {
            metrics::counter!("paytrack_projector_checkpoints_drained_total").increment(drained as u64);
            tracing::info!(drained, due, "unpublished checkpoints drained");
        },
    )
    .await;
}

/// Every `period` until `shutdown`: reads the checkpoints `read` says are owed and,
/// when there are any, publishes them ([`publish_all`]) and hands `report` how many
/// were acknowledged and how many were owed. A read that fails is logged (naming
/// `what`) and tried again the next period. The outbox drainer and the return-window
/// scan are both this loop.
pub async fn publish_owed_every<R, Fut>(
    db: &PgPool,
    js: &jetstream::Context,
    shutdown: &CancellationToken,
    period: Duration,
    what: &'static str,
    read: R,
    report: impl Fn(usize, usize),
) where
    R: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Vec<Due>, sqlx::Error>>,
{
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let owed = match read().await {
            Ok(owed) => owed,
            Err(error) => {
                tracing::warn!(%error, what, "cannot read the checkpoints owed; retrying");
                continue;
            }
        };
        if owed.is_empty() {
            continue;
        }
        let due = owed.len();
        let published = publish_all(db, js, owed).await;
        report(published, due);
    }
}
