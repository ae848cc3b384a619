//! The list's `position` (docs/contract.md §6): a point of PAYTRACK_STATUS up to which every
//! message is already in the projection.
//!
//! Each instance commits its batches in order, but several instances share one
//! durable consumer, so no single instance's progress is a safe point: instance A may
//! have committed sequence 900 while B still holds 850. The safe point is the low-water
//! mark of contiguously applied sequences over all instances, which JetStream already
//! keeps: the consumer's ack floor (every message at or below it is acknowledged, and
//! a message is acknowledged only after the transaction that applied it, or found it
//! already applied, committed; a deferred message is not acknowledged, so it holds the
//! floor). Every instance copies the floor into `projector_positions` a few times a
//! second; a copy only moves forward within an epoch, so it is always a safe (if
//! slightly old) point. Per-instance progress is kept beside it in
//! `projector_progress`, for operators.

use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// How often the floor is copied.
const EVERY: Duration = Duration::from_millis(200);

/// Copies the ack floor of `consumer` (on a stream of `epoch`) until `shutdown`.
pub async fn track(
    db: PgPool,
    consumer: PullConsumer,
    stream: &'static str,
    epoch: String,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let floor = match consumer.get_info().await {
            Ok(info) => info.ack_floor.stream_sequence,
            Err(error) => {
                tracing::debug!(%error, "cannot read the consumer's ack floor");
                continue;
            }
        };
        if last == Some(floor) {
            continue;
        }
        match record(&db, stream, &epoch, floor).await {
            Ok(()) => last = Some(floor),
            Err(error) => tracing::debug!(%error, "cannot record the projection position"),
        }
    }
}

/// Records `seq` of `epoch` as the safe position of `stream` (never backwards within
/// an epoch; a new epoch replaces the old one).
pub async fn record(db: &PgPool, stream: &str, epoch: &str, seq: u64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO projector_positions (stream, epoch, seq) VALUES ($1, $2, $3)
         ON CONFLICT (stream) DO UPDATE SET
           seq = CASE WHEN projector_positions.epoch = EXCLUDED.epoch
                      THEN GREATEST(projector_positions.seq, EXCLUDED.seq) ELSE EXCLUDED.seq END,
           epoch = EXCLUDED.epoch, updated_at = now()",
    )
    .bind(stream)
    .bind(epoch)
    .bind(i64::try_from(seq).unwrap_or(i64::MAX))
    .execute(db)
    .await?;
    Ok(())
}
