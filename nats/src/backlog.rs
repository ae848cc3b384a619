//! Each durable consumer's backlog as gauges, polled from the server's consumer info:
//! a service watches the durables it reads, so a growing backlog (a slow or stuck
//! consumer) shows per durable at `/metrics` before anyone notices late statuses.
//!
//! - `paytrack_consumer_pending_messages{stream,consumer}`: messages stored and not
//!   yet delivered to the consumer (`num_pending`);
//! - `paytrack_consumer_ack_pending_messages{stream,consumer}`: delivered and not yet
//!   acknowledged (`num_ack_pending`);
//! - `paytrack_consumer_paused`: 1 while the consumer is paused on the server.
//!
//! A failed poll keeps the last values (and is logged at debug); the server's own
//! outage shows in readiness, not here.

use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use tokio_util::sync::CancellationToken;

/// How often each durable's info is asked for.
pub const POLL_INTERVAL: Duration = Duration::from_secs(5);

/// Polls `consumers`' info every [`POLL_INTERVAL`] until `shutdown`, setting the
/// backlog gauges of each.
pub async fn watch(consumers: Vec<PullConsumer>, shutdown: CancellationToken) {
    watch_every(consumers, POLL_INTERVAL, shutdown).await;
}

/// [`watch`] with another interval.
pub async fn watch_every(mut consumers: Vec<PullConsumer>, interval: Duration, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        for consumer in &mut consumers {
            match consumer.info().await {
                Ok(info) => {
                    let labels = [("stream", info.stream_name.clone()), ("consumer", info.name.clone())];
                    metrics::gauge!("paytrack_consumer_pending_messages", &labels).set(info.num_pending as f64);
                    metrics::gauge!("paytrack_consumer_ack_pending_messages", &labels).set(info.num_ack_pending as f64);
                    metrics::gauge!("paytrack_consumer_paused", &labels).set(if info.paused { 1.0 } else { 0.0 });
                }
                Err(error) => {
                    tracing::debug!(%error, "consumer info unavailable; backlog gauges kept");
                }
            }
        }
    }
}
