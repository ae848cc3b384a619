//! Rebuilding the projection from the streams into an empty database.
//!
//! The streams are the truth (docs/contract.md §1); the database is a projection of them. A
//! rebuild reads PAYTRACK_IN, PAYTRACK_OUTCOME, PAYTRACK_SESSION, PAYTRACK_ALERT
//! (alerts of every kind and operators' acknowledgements) and PAYTRACK_STATUS
//! from their first message to the last one present when it started, with ephemeral
//! ordered consumers, through the same code the live consumers use, so it ends with
//! the same rows (checkpoints are read back from PAYTRACK_STATUS, not published
//! again; a checkpoint a crash left unpublished stays due, and the live drainer
//! publishes it).

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use paytrack_nats::Delivery;
use paytrack_shared::subjects;
use sqlx::PgPool;

use crate::project::{self, Item, Origin};

/// Why a rebuild stopped.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    /// The target database already holds a projection.
    #[error("the target database is not empty ({0} payments); rebuild into an empty one")]
    NotEmpty(i64),
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The migrations failed.
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stream could not be read.
    #[error("stream {stream}: {message}")]
    Stream {
        /// Which.
        stream: &'static str,
        /// What failed.
        message: String,
    },
    /// A batch could not be applied.
    #[error(transparent)]
    Batch(#[from] project::BatchError),
    /// NATS could not be reached.
    #[error(transparent)]
    Nats(#[from] paytrack_nats::LayoutError),
}

/// [`rebuild`] with the projector's settings: its NATS user, into `database_url`
/// (which must be empty). The entry of `paytrack rebuild` and `paytrack-rebuild`.
pub async fn rebuild_from_settings(
    settings: &paytrack_shared::config::Settings,
) -> Result<RebuildReport, RebuildError> {
    let config = crate::Config::from_settings(settings);
    let client = paytrack_nats::connect(&config.nats_url, "paytrack-rebuild", config.nats_credentials.as_ref()).await?;
    let js = paytrack_nats::jetstream(client, config.nats_timeout);
    let db = paytrack_shared::db::pool(&config.database_url, config.database_max_connections)?;
    rebuild(&js, &db).await
}

/// What a rebuild did.
#[derive(Debug, Clone, Default)]
pub struct RebuildReport {
    /// Messages replayed per stream.
    pub messages: Vec<(&'static str, u64)>,
    /// Transitions applied.
    pub transitions: u64,
    /// Messages skipped (unreadable, or refused: the live consumer parks those).
    pub skipped: u64,
    /// How long it took.
    pub elapsed: Duration,
}

/// Replays every stream into `db`, which must be empty (migrations are applied).
pub async fn rebuild(js: &jetstream::Context, db: &PgPool) -> Result<RebuildReport, RebuildError> {
    let started = Instant::now();
    paytrack_shared::db::MIGRATOR.run(db).await?;
    let existing: i64 = sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(db)
        .await?;
    if existing > 0 {
        return Err(RebuildError::NotEmpty(existing));
    }
    let mut report = RebuildReport::default();
    let n = replay(js, subjects::STREAM_IN, |m| async move {
        if let Ok(d) = Delivery::open(&m, "rebuild") {
            crate::evidence::apply(db, vec![d]).await.is_ok()
        } else {
            false
        }
    })
    .await?;
    report.messages.push((subjects::STREAM_IN, n.0));
    report.skipped += n.1;
    let n = replay(js, subjects::STREAM_OUTCOME, |m| async move {
        if let Ok(d) = Delivery::open(&m, "rebuild") {
            crate::outcomes::apply(db, vec![d]).await.is_ok()
        } else {
            false
        }
    })
    .await?;
    report.messages.push((subjects::STREAM_OUTCOME, n.0));
    report.skipped += n.1;
    let (session_epoch, _) = stream_state(js, subjects::STREAM_SESSION).await?;
    let session_epoch = &session_epoch;
    let n = replay(js, subjects::STREAM_SESSION, |m| async move {
        if let Ok(d) = Delivery::open(&m, "rebuild") {
            crate::sessions::apply(db, session_epoch, vec![d]).await.is_ok()
        } else {
            false
        }
    })
    .await?;
    report.messages.push((subjects::STREAM_SESSION, n.0));
    report.skipped += n.1;
    let n = replay(js, subjects::STREAM_ALERT, |m| async move {
        crate::alerts::apply(db, &m, "rebuild").await.is_ok()
    })
    .await?;
    report.messages.push((subjects::STREAM_ALERT, n.0));
    report.skipped += n.1;
    let (status, transitions, skipped) = replay_status(js, db).await?;
    report.messages.push((subjects::STREAM_STATUS, status));
    report.transitions = transitions;
    report.skipped += skipped;
    report.elapsed = started.elapsed();
    tracing::info!(?report, "rebuild finished");
    Ok(report)
}

async fn stream_state(js: &jetstream::Context, stream: &'static str) -> Result<(String, u64), RebuildError> {
    let mut handle = js.get_stream(stream).await.map_err(|e| RebuildError::Stream {
        stream,
        message: e.to_string(),
    })?;
    let info = handle.info().await.map_err(|e| RebuildError::Stream {
        stream,
        message: e.to_string(),
    })?;
    Ok((paytrack_nats::epoch_of(info), info.state.last_sequence))
}

/// The messages of `stream` up to its last sequence at the start, in order, in chunks.
async fn ordered(
    js: &jetstream::Context,
    stream: &'static str,
) -> Result<(u64, Option<consumer::pull::Ordered>), RebuildError> {
    let (_, last) = stream_state(js, stream).await?;
    if last == 0 {
        return Ok((0, None));
    }
    let handle = js.get_stream(stream).await.map_err(|e| RebuildError::Stream {
        stream,
        message: e.to_string(),
    })?;
    let consumer = handle
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| RebuildError::Stream {
            stream,
            message: e.to_string(),
        })?;
    let messages = consumer.messages().await.map_err(|e| RebuildError::Stream {
        stream,
        message: e.to_string(),
    })?;
    Ok((last, Some(messages)))
}

/// Replays `stream` one message at a time through `apply` (true: stored); returns
/// (messages, skipped).
async fn replay<F, Fut>(js: &jetstream::Context, stream: &'static str, apply: F) -> Result<(u64, u64), RebuildError>
where
    F: Fn(jetstream::Message) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let (last, Some(mut messages)) = ordered(js, stream).await? else {
        return Ok((0, 0));
    };
    let (mut count, mut skipped) = (0u64, 0u64);
    while let Some(next) = messages.next().await {
        let message = next.map_err(|e| RebuildError::Stream {
            stream,
            message: e.to_string(),
        })?;
        let seq = message.info().map(|i| i.stream_sequence).unwrap_or(last);
        count += 1;
        if !apply(message).await {
            skipped += 1;
        }
        if seq >= last {
            break;
        }
    }
    Ok((count, skipped))
}

/// Replays PAYTRACK_STATUS in batches; returns (messages, transitions, skipped).
async fn replay_status(js: &jetstream::Context, db: &PgPool) -> Result<(u64, u64, u64), RebuildError> {
    let (epoch, _) = stream_state(js, subjects::STREAM_STATUS).await?;
    let (last, Some(messages)) = ordered(js, subjects::STREAM_STATUS).await? else {
        return Ok((0, 0, 0));
    };
    let origin = Origin {
        epoch: epoch.clone(),
        instance: "rebuild".to_owned(),
    };
    let mut chunks = messages.ready_chunks(crate::history::BATCH);
    let (mut count, mut transitions, mut skipped, mut done) = (0u64, 0u64, 0u64, false);
    while let Some(chunk) = chunks.next().await {
        let mut items = Vec::with_capacity(chunk.len());
        for next in chunk {
            let message = next.map_err(|e| RebuildError::Stream {
                stream: subjects::STREAM_STATUS,
                message: e.to_string(),
            })?;
            let seq = message.info().map(|i| i.stream_sequence).unwrap_or(last);
            if seq > last {
                done = true;
                break;
            }
            count += 1;
            match Item::decode(&message.subject, &message.payload) {
                Ok(item) => items.push((seq, item)),
                Err(_) => skipped += 1,
            }
            if seq == last {
                done = true;
                break;
            }
        }
        if !items.is_empty() {
            let result = project::apply_batch(db, &origin, &items).await?;
            transitions += result.applied.iter().filter(|a| **a == project::Applied::New).count() as u64;
            skipped += result
                .applied
                .iter()
                .filter(|a| **a == project::Applied::Deferred)
                .count() as u64;
        }
        if done {
            break;
        }
    }
    crate::position::record(db, subjects::STREAM_STATUS, &epoch, last).await?;
    Ok((count, transitions, skipped))
}
