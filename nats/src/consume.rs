//! The consumer loop every JetStream-reading service shares, so they all stop,
//! retry and finish in-flight work the same way.

use std::time::Duration;

use async_nats::jetstream::{self, consumer};

/// How long one pull request waits for messages.
const PULL_EXPIRES: Duration = Duration::from_secs(10);
/// Idle heartbeat of a pull: two missed ones mean the pull is gone.
const PULL_HEARTBEAT: Duration = Duration::from_secs(2);

/// Pulls from `consumer` until `shutdown` is cancelled, handing each message to
/// `handle`, which acknowledges it. On shutdown it stops pulling; a message already
/// handed over is finished first. Pull errors (e.g. a server restart) are logged and
/// pulling resumes, so a consumer loop outlives NATS outages.
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
                    Some(Ok(message)) => handle(message).await,
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
