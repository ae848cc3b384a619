//! Feeds [`ProviderHealth`] with what actually happened: one ordered consumer per
//! ingest process (a fixed cost, whatever the traffic) reads every transition of
//! PAYTRACK_STATUS from [`MAX_AGE`] ago on, and counts each terminal `succeeded` or
//! `failed` against the provider its `terms.provider` names. A restart rebuilds the
//! window from the stream.

use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use paytrack_shared::envelope::{self, Transition};
use paytrack_shared::{Status, subjects};
use tokio_util::sync::CancellationToken;

use crate::routing::{MAX_AGE, ProviderHealth};

/// Reads terminal transitions into `health` until `shutdown`, starting over (from the
/// window's start) after any error.
pub async fn run(js: jetstream::Context, health: ProviderHealth, shutdown: CancellationToken) {
    let mut delay = Duration::from_millis(200);
    loop {
        let read = follow(&js, &health);
        let error = tokio::select! {
            _ = shutdown.cancelled() => return,
            error = read => error,
        };
        tracing::warn!(%error, "provider outcome feed interrupted; starting again");
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

async fn follow(js: &jetstream::Context, health: &ProviderHealth) -> async_nats::Error {
    let start = time::OffsetDateTime::now_utc() - MAX_AGE;
    let stream = match js.get_stream(subjects::STREAM_STATUS).await {
        Ok(stream) => stream,
        Err(e) => return e.into(),
    };
    let consumer = match stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: subjects::STATUS_ALL.to_owned(),
            deliver_policy: consumer::DeliverPolicy::ByStartTime { start_time: start },
            ..Default::default()
        })
        .await
    {
        Ok(consumer) => consumer,
        Err(e) => return e.into(),
    };
    let mut messages = match consumer.messages().await {
        Ok(messages) => messages,
        Err(e) => return e.into(),
    };
    while let Some(message) = messages.next().await {
        let message = match message {
            Ok(message) => message,
            Err(e) => return e.into(),
        };
        let Ok(transition) = envelope::decode::<Transition>(&message.payload) else {
            continue;
        };
        let succeeded = match transition.status {
            Status::Succeeded => true,
            Status::Failed => false,
            _ => continue,
        };
        if let Some(provider) = &transition.terms.provider {
            tracing::debug!(provider, succeeded, payment_id = %transition.payment_id, "provider outcome");
            health.record_outcome(provider, succeeded);
        }
    }
    "the ordered consumer ended".into()
}
