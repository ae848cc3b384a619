//! Consumers whose work per message is one keyed, idempotent write (the projector's
//! raw facts and fact outcomes) handle what is ready as ONE batch: one database
//! transaction for hundreds of messages instead of one per message, so a backlog is
//! worked off at the rate of a bulk insert and leaves the database to the status
//! projection.
//!
//! Every message is still settled on its own, by the same [`Supervisor`] rules as
//! [`crate::consume_deliveries_in_lanes`]: a batch that succeeds acknowledges each message; a
//! transient failure (the database is down) hands each back for a later retry, and a
//! message delivered again is handled on its own; a batch the store refuses is
//! handled again one message at a time. So only the message that fails is parked,
//! and the rest are stored.

use std::num::NonZeroUsize;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::consume::{HandleError, guarded};
use crate::delivery::{Delivery, Supervisor, Traced};
use paytrack_shared::envelope::Versioned;

/// How long one pull request waits for messages.
const PULL_EXPIRES: Duration = Duration::from_secs(10);
/// Idle heartbeat of a pull: two missed ones mean the pull is gone.
const PULL_HEARTBEAT: Duration = Duration::from_secs(2);
/// Pause after a pull that could not be made.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Pulls from `consumer` until `shutdown` is cancelled and hands every ready run of
/// messages (at most `max_batch`), opened, to `handle` as one batch; see the module
/// documentation for how each message is then settled. Messages that cannot be
/// opened are parked at once and never reach `handle`.
///
/// Order: a batch is handled after the previous one is settled, and messages keep
/// their delivery order inside it, so a handler that writes "first one stands"
/// (`ON CONFLICT DO NOTHING`) keeps the first delivered.
pub async fn consume_delivery_batches<T, F, Fut>(
    consumer: consumer::PullConsumer,
    shutdown: CancellationToken,
    supervisor: Supervisor,
    max_batch: NonZeroUsize,
    handle: F,
) where
    T: DeserializeOwned + Versioned + Traced,
    F: Fn(Vec<Delivery<T>>) -> Fut,
    Fut: std::future::Future<Output = Result<(), HandleError>>,
{
    let (supervisor, handle) = (&supervisor, &handle);
    pull_batches(consumer, &shutdown, max_batch, Duration::ZERO, |received| {
        handle_batch(supervisor, received, handle)
    })
    .await;
}

/// The pull loop of every batching consumer: pulls from `consumer` until `shutdown`
/// is cancelled and hands each run of ready messages (at most `max_batch`) to
/// `handle`, one run after the other. A run ends where the runtime's cooperative
/// budget does, not only where the ready messages do, so with a non-zero `gather` it
/// waits that long for more before it is handed over. Pull errors (a server
/// restart) are logged and pulling resumes.
pub async fn pull_batches<F, Fut>(
    consumer: consumer::PullConsumer,
    shutdown: &CancellationToken,
    max_batch: NonZeroUsize,
    gather: Duration,
    mut handle: F,
) where
    F: FnMut(Vec<jetstream::Message>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let max_batch = max_batch.get();
    while !shutdown.is_cancelled() {
        let pull = consumer
            .stream()
            .max_messages_per_batch(max_batch)
            .expires(PULL_EXPIRES)
            .heartbeat(PULL_HEARTBEAT)
            .messages()
            .await;
        let messages = match pull {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!(%error, "cannot pull; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(RETRY_PAUSE) => continue,
                }
            }
        };
        let mut chunks = messages.ready_chunks(max_batch);
        loop {
            let mut chunk = tokio::select! {
                _ = shutdown.cancelled() => return,
                next = chunks.next() => match next {
                    Some(chunk) => chunk,
                    None => break,
                },
            };
            let mut ended = false;
            while !gather.is_zero() && chunk.len() < max_batch {
                match tokio::time::timeout(gather, chunks.next()).await {
                    Ok(Some(more)) => chunk.extend(more),
                    Ok(None) => {
                        ended = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            let mut received = Vec::with_capacity(chunk.len());
            for next in chunk {
                match next {
                    Ok(message) => received.push(message),
                    Err(error) => tracing::warn!(%error, "pull error"),
                }
            }
            // The handler settles its messages; a panic leaves them to be redelivered
            // after the ack wait instead of ending the loop.
            if let Err(panicked) = crate::consume::catch_panic(async { handle(received).await }).await {
                tracing::error!(error = %panicked, "a batch handler panicked; the loop goes on");
            }
            if ended {
                break;
            }
        }
    }
}

/// Opens, handles and settles one batch. A message delivered before (its batch
/// failed, or the consumer crashed) is handled on its own: a failure it causes then
/// costs only its own retries, never those of the messages it arrived with.
async fn handle_batch<T, F, Fut>(supervisor: &Supervisor, messages: Vec<jetstream::Message>, handle: &F)
where
    T: DeserializeOwned + Versioned + Traced,
    F: Fn(Vec<Delivery<T>>) -> Fut,
    Fut: std::future::Future<Output = Result<(), HandleError>>,
{
    let (opened, messages) = open_all::<T>(supervisor, messages).await;
    let mut fresh = Vec::with_capacity(opened.len());
    let mut fresh_messages = Vec::with_capacity(messages.len());
    for (delivery, (message, delivered)) in opened.into_iter().zip(messages) {
        if delivered > 1 {
            let result = guarded(async move { handle(vec![delivery]).await }).await;
            supervisor.settle(&message, delivered, result).await;
        } else {
            fresh.push(delivery);
            fresh_messages.push((message, delivered));
        }
    }
    if fresh_messages.is_empty() {
        return;
    }
    let size = fresh_messages.len();
    match guarded(async move { handle(fresh).await }).await {
        Ok(()) => {
            for (message, delivered) in &fresh_messages {
                supervisor.settle(message, *delivered, Ok(())).await;
            }
            tracing::debug!(consumer = %supervisor.consumer, size, "batch stored");
        }
        Err(HandleError::Poison { what, source }) if size > 1 => {
            tracing::warn!(
                consumer = %supervisor.consumer,
                size,
                %what,
                error = %source,
                "batch refused; handling its messages one by one"
            );
            for (message, delivered) in &fresh_messages {
                let result = match Delivery::<T>::open(message, &supervisor.consumer) {
                    Ok(delivery) => guarded(async move { handle(vec![delivery]).await }).await,
                    Err(error) => Err(HandleError::poison("open the message", error)),
                };
                supervisor.settle(message, *delivered, result).await;
            }
        }
        Err(error) => {
            // Transient (the database is unavailable), or a lone message refused:
            // each message gets the verdict it would have had on its own.
            let reason = error.to_string();
            let poison = matches!(error, HandleError::Poison { .. });
            for (message, delivered) in &fresh_messages {
                let again = if poison {
                    HandleError::poison("store the batch", reason.clone())
                } else {
                    HandleError::transient("store the batch", reason.clone())
                };
                supervisor.settle(message, *delivered, Err(again)).await;
            }
        }
    }
}

/// Opens every message; one that cannot be opened is parked now. Returns the opened
/// deliveries and, in the same order, their messages with their delivery counts.
async fn open_all<T>(
    supervisor: &Supervisor,
    messages: Vec<jetstream::Message>,
) -> (Vec<Delivery<T>>, Vec<(jetstream::Message, i64)>)
where
    T: DeserializeOwned + Versioned + Traced,
{
    let mut opened = Vec::with_capacity(messages.len());
    let mut kept = Vec::with_capacity(messages.len());
    for message in messages {
        let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
        match Delivery::<T>::open(&message, &supervisor.consumer) {
            Ok(delivery) => {
                opened.push(delivery);
                kept.push((message, delivered));
            }
            Err(error) => {
                supervisor
                    .settle(&message, delivered, Err(HandleError::poison("open the message", error)))
                    .await;
            }
        }
    }
    (opened, kept)
}
