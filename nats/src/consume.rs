//! The consumer loop every JetStream-reading service shares, so they all stop,
//! retry and finish in-flight work the same way.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::FutureExt;

/// How long one pull request waits for messages.
const PULL_EXPIRES: Duration = Duration::from_secs(10);
/// Idle heartbeat of a pull: two missed ones mean the pull is gone.
const PULL_HEARTBEAT: Duration = Duration::from_secs(2);

/// Pulls from `consumer` until `shutdown` is cancelled, handing each message to
/// `handle`, which acknowledges it. On shutdown it stops pulling; a message already
/// handed over is finished first. Pull errors (e.g. a server restart) are logged and
/// pulling resumes, so a consumer loop outlives NATS outages. A `handle` that panics
/// is logged and counted and the loop goes on (the message, unacknowledged, comes
/// back after the ack wait); [`crate::consume_deliveries_in_lanes`] and the batch consumers
/// turn such a panic into a parked message instead.
pub async fn consume<F, Fut>(
    consumer: consumer::PullConsumer,
    shutdown: tokio_util::sync::CancellationToken,
    mut handle: F,
) where
    F: FnMut(jetstream::Message) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use futures::StreamExt;
    let retry_pause = Duration::from_millis(500);
    while !shutdown.is_cancelled() {
        // Short pulls with heartbeats: after a server restart the lost pull is
        // noticed within a few seconds instead of the defaults' half minute.
        let pull = consumer
            .stream()
            .expires(PULL_EXPIRES)
            .heartbeat(PULL_HEARTBEAT)
            .messages();
        let mut messages = match pull.await {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!(%error, "cannot pull; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(retry_pause) => continue,
                }
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                next = messages.next() => match next {
                    Some(Ok(message)) => {
                        if let Err(panicked) = catch_panic(async { handle(message).await }).await {
                            tracing::error!(error = %panicked, "a message handler panicked; the loop goes on");
                        }
                    }
                    Some(Err(error)) => {
                        tracing::warn!(%error, "pull error");
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(retry_pause) => {}
                        }
                    }
                    None => break,
                },
            }
        }
    }
}

/// A handler that panicked, with what the panic said: a message that makes code
/// panic is data no redelivery will change, so it is poison like any other.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the handler panicked: {0}")]
pub struct Panicked(pub String);

/// Runs `work`, catching a panic inside it: one message that trips a bug must not
/// end the loop that serves every tenant. The panic is counted
/// (`paytrack_consumer_panics_total`) and returned as [`Panicked`].
pub async fn catch_panic<F: std::future::Future>(work: F) -> Result<F::Output, Panicked> {
    AssertUnwindSafe(work).catch_unwind().await.map_err(|panic| {
        let detail = panic_message(panic.as_ref());
        metrics::counter!("paytrack_consumer_panics_total").increment(1);
        Panicked(detail)
    })
}

/// Runs a message handler, turning a panic into [`HandleError::Poison`], so the
/// supervisor parks the message (with an alert) and the consumer goes on. Pass the
/// handler's call inside an `async` block, so a panic before its first await is
/// caught too.
pub async fn guarded<F>(work: F) -> Result<(), HandleError>
where
    F: std::future::Future<Output = Result<(), HandleError>>,
{
    catch_panic(work)
        .await
        .unwrap_or_else(|panicked| Err(HandleError::poison("handle the message", panicked)))
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic payload".to_owned())
}

/// The underlying error a [`HandleError`] carries, kept typed so logs and dead
/// letters can name the whole chain of causes.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a message could not be handled now, which decides how it is acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// The message can never be handled (unreadable, or data the store refuses);
    /// redelivery would not help.
    #[error("{what}: {source}")]
    Poison {
        /// What was being done.
        what: &'static str,
        /// Why it failed.
        #[source]
        source: Cause,
    },
    /// A dependency failed or another writer raced us; try again later.
    #[error("{what}: {source}")]
    Transient {
        /// What was being done.
        what: &'static str,
        /// Why it failed.
        #[source]
        source: Cause,
    },
}

impl HandleError {
    /// A failure no redelivery can change.
    pub fn poison(what: &'static str, source: impl Into<Cause>) -> HandleError {
        HandleError::Poison {
            what,
            source: source.into(),
        }
    }

    /// A failure worth retrying.
    pub fn transient(what: &'static str, source: impl Into<Cause>) -> HandleError {
        HandleError::Transient {
            what,
            source: source.into(),
        }
    }
}
