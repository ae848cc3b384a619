//! The consumer loop every JetStream-reading service shares, so they all stop,
//! retry and finish in-flight work the same way.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer};

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

/// Why a message could not be handled now, which decides how it is acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// The message can never be handled (unreadable); redelivery would not help.
    #[error("{0}")]
    Poison(String),
    /// A dependency failed or another writer raced us; try again later.
    #[error("{0}")]
    Transient(String),
}

/// Acknowledges `message` by how handling it went: done (ack), poison (terminate its
/// delivery, logged as an error) or transient (redeliver after `retry_delay`).
pub async fn settle(message: &jetstream::Message, result: Result<(), HandleError>, retry_delay: Duration) {
    let ack = match result {
        Ok(()) => AckKind::Ack,
        Err(HandleError::Poison(reason)) => {
            tracing::error!(%reason, "unreadable message; terminating its delivery");
            AckKind::Term
        }
        Err(HandleError::Transient(reason)) => {
            tracing::warn!(%reason, "transient failure; the message will be redelivered");
            AckKind::Nak(Some(retry_delay))
        }
    };
    if let Err(error) = message.ack_with(ack).await {
        tracing::warn!(%error, "ack failed; the message will be redelivered and handled idempotently");
    }
}
