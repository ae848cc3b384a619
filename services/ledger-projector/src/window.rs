//! The return-window scan: a success on a reversible rail (ach_debit) is posted but
//! not final, because the money can still come back; once the last of its rail's
//! return windows has closed with the payment still at that version, the projector
//! publishes a `return_window_closed` checkpoint (final: true) and, on its
//! acknowledgement, records the version final. Clients see it like any checkpoint,
//! on the payment's channels, so a screen turns the payment final when the stream
//! says so and never before.
//!
//! Two instances may scan at once: the checkpoint's message id
//! (`<tenant>:<payment>:<version>:return_window_closed`) makes the second publish a
//! duplicate acknowledged with the first one's sequence, and the record keeps the
//! first sequence.

use std::time::Duration;

use async_nats::jetstream;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::{checkpoints, outbox};

/// How often the scan looks for closed windows. Windows last days; a scan is one
/// index range read, so a short period costs little and keeps the delay small.
const SCAN_EVERY: Duration = Duration::from_secs(2);

/// Most versions turned final per scan (the rest wait for the next one).
const PER_SCAN: i64 = 1_000;

/// The versions one scan found with their window closed, not yet published.
pub struct Closed(Vec<checkpoints::Due>);

impl Closed {
    /// How many versions.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the scan found none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The first half of a scan: the versions whose window has closed now (at most
/// [`PER_SCAN`]). Public with [`publish`] so a test can interleave two replicas'
/// scans: both read the same versions before either publishes.
pub async fn closed_now(db: &PgPool) -> Result<Closed, sqlx::Error> {
    let due = checkpoints::windows_closed(db, PER_SCAN).await?;
    for d in &due {
        tracing::info!(
            tenant = %d.tenant,
            payment_id = %d.payment_id,
            trace_id = %d.trace_id,
            version = d.version,
            "return window closed; the success is final"
        );
    }
    Ok(Closed(due))
}

/// The second half of a scan: publishes each version's `return_window_closed`
/// checkpoint and records those JetStream acknowledged; returns how many were.
pub async fn publish(db: &PgPool, js: &jetstream::Context, closed: Closed) -> usize {
    outbox::publish_all(db, js, closed.0).await
}

/// Publishes, until `shutdown`, the `return_window_closed` checkpoint of every
/// version whose window has closed, and records those JetStream acknowledged.
pub async fn close_windows(db: PgPool, js: jetstream::Context, shutdown: CancellationToken) {
    let read = || async { closed_now(&db).await.map(|closed| closed.0) };
    outbox::publish_owed_every(
        &db,
        &js,
        &shutdown,
        SCAN_EVERY,
        "closed return windows",
        read,
        |published, owed| {
            metrics::counter!("paytrack_projector_return_windows_closed_total").increment(published as u64);
            if published < owed {
                tracing::warn!(
                    published,
                    owed,
                    "some return-window checkpoints were not acknowledged; the next scan retries"
                );
            }
        },
    )
    .await;
}
