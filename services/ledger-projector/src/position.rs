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

/// Every how many copies the newest projected transition is looked up in the stream.
const PROBE_EVERY: u32 = 25;

/// Copies the ack floor of `consumer` (on a stream of `epoch`) until `shutdown`. A
/// floor lower than the one recorded means the stream lost its tail: the transitions
/// it lost are reported (`tail_loss.rs`) and the position moves back to the floor.
pub async fn track(
    db: PgPool,
    js: async_nats::jetstream::Context,
    consumer: PullConsumer,
    stream: &'static str,
    epoch: String,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = recorded(&db, stream, &epoch).await;
    let (mut ticks, mut reported) = (0u32, None);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        ticks = ticks.wrapping_add(1);
        if ticks % PROBE_EVERY == 0 {
            probe(&db, &js, stream, &epoch, &mut reported).await;
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
        if let Some(before) = last
            && floor < before
        {
            match crate::tail_loss::check(&db, &js, stream, floor).await {
                Ok(lost) => tracing::error!(stream, floor, before, lost, "the stream's position moved back"),
                Err(error) => {
                    tracing::warn!(%error, stream, floor, before, "cannot check what the stream lost; trying again");
                    continue;
                }
            }
            if let Err(error) = move_back(&db, stream, &epoch, floor).await {
                tracing::warn!(%error, "cannot move the projection position back");
                continue;
            }
            last = Some(floor);
            continue;
        }
        match record(&db, stream, &epoch, floor).await {
            Ok(()) => last = Some(floor),
            Err(error) => tracing::debug!(%error, "cannot record the projection position"),
        }
    }
}

/// Looks up the newest projected transition in the stream; when the stream no longer
/// holds it (and it was not reported already), reports what the stream lost.
async fn probe(
    db: &PgPool,
    js: &async_nats::jetstream::Context,
    stream: &'static str,
    epoch: &str,
    reported: &mut Option<i64>,
) {
    match crate::tail_loss::newest_held(db, js, stream, epoch).await {
        Ok(Some((seq, false))) if *reported != Some(seq) => match crate::tail_loss::check(db, js, stream, 0).await {
            Ok(lost) => {
                tracing::error!(
                    stream,
                    newest = seq,
                    lost,
                    "the stream no longer holds the newest projected transition"
                );
                *reported = Some(seq);
            }
            Err(error) => tracing::warn!(%error, stream, "cannot check what the stream lost; trying again"),
        },
        Ok(_) => {}
        Err(error) => tracing::debug!(%error, stream, "cannot probe the stream's newest projected transition"),
    }
}

/// The position recorded for `stream` in `epoch`, if any.
async fn recorded(db: &PgPool, stream: &str, epoch: &str) -> Option<u64> {
    let seq: Option<i64> = sqlx::query_scalar("SELECT seq FROM projector_positions WHERE stream = $1 AND epoch = $2")
        .bind(stream)
        .bind(epoch)
        .fetch_optional(db)
        .await
        .ok()
        .flatten();
    seq.and_then(|s| u64::try_from(s).ok())
}

/// Sets the position of `stream` back to `seq`: the stream lost what was past it, and
/// will number new messages from there again.
async fn move_back(db: &PgPool, stream: &str, epoch: &str, seq: u64) -> Result<(), sqlx::Error> {
    write(
        db,
        "UPDATE projector_positions SET seq = $3, updated_at = now() WHERE stream = $1 AND epoch = $2",
        stream,
        epoch,
        seq,
    )
    .await
}

/// Records `seq` of `epoch` as the safe position of `stream` (never backwards within
/// an epoch; a new epoch replaces the old one).
pub async fn record(db: &PgPool, stream: &str, epoch: &str, seq: u64) -> Result<(), sqlx::Error> {
    write(
        db,
        "INSERT INTO projector_positions (stream, epoch, seq) VALUES ($1, $2, $3)
         ON CONFLICT (stream) DO UPDATE SET
           seq = CASE WHEN projector_positions.epoch = EXCLUDED.epoch
                      THEN GREATEST(projector_positions.seq, EXCLUDED.seq) ELSE EXCLUDED.seq END,
           epoch = EXCLUDED.epoch, updated_at = now()",
        stream,
        epoch,
        seq,
    )
    .await
}

/// Runs `sql`, a statement on `projector_positions` taking the stream, the epoch and
/// the sequence as `$1`..`$3` (a sequence past `i64` is stored as `i64::MAX`).
async fn write(db: &PgPool, sql: &'static str, stream: &str, epoch: &str, seq: u64) -> Result<(), sqlx::Error> {
    sqlx::query(sql)
        .bind(stream)
        .bind(epoch)
        .bind(i64::try_from(seq).unwrap_or(i64::MAX))
        .execute(db)
        .await?;
    Ok(())
}
