//! A durable consumer whose position is past its stream's end, noticed and repaired.
//!
//! A power loss (or a damaged block) can cut a stream back to an older last sequence
//! while a consumer's state keeps the position it had reached. The stream then hands
//! out those sequence numbers again, and a consumer that kept its position would skip
//! every new message stored there: facts never decided, never projected. Nothing in
//! nats-server repairs that, so each service checks its durables at start-up and
//! every [`CHECK_INTERVAL`]: consumer info, then stream info (in that order, so a
//! healthy consumer can never look ahead of a stream that only grows). A consumer
//! that delivered or acknowledged past the stream's last sequence is logged (warn,
//! both numbers), counted (`paytrack_consumer_rewinds_total{stream,consumer}`),
//! reported (a `consumer_rewound` alert on PAYTRACK_ALERT) and reset to deliver from
//! [`restart_at`]: the stream's last sequence plus one, less [`REWIND_MARGIN`]
//! messages. The margin covers messages stored between the broker's restart and the
//! check; redelivering messages the consumer had already handled is safe because
//! every consumer is idempotent (expected-sequence checks, fact ids, keyed inserts).

use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer, message::PublishMessage};
use chrono::Utc;
use paytrack_shared::envelope::{self, ConsumerRewound, ENVELOPE_VERSION};
use paytrack_shared::subjects;
use tokio_util::sync::CancellationToken;

/// How often each durable's position is compared with its stream's end.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Messages before the stream's end delivered again after a rewind: what a busy
/// service stores between a broker's restart and the next check, with room to spare.
pub const REWIND_MARGIN: u64 = 1_000;

/// Why a consumer's position could not be checked or repaired.
#[derive(Debug, thiserror::Error)]
pub enum OverrunError {
    /// The consumer's or the stream's info could not be read.
    #[error("read the position of {consumer} on {stream}: {source}")]
    Info {
        /// The stream.
        stream: String,
        /// The consumer.
        consumer: String,
        /// Why.
        #[source]
        source: async_nats::Error,
    },
    /// The consumer could not be reset.
    #[error("rewind {consumer} on {stream} to {restart_at}: {source}")]
    Reset {
        /// The stream.
        stream: String,
        /// The consumer.
        consumer: String,
        /// Where it was to deliver from.
        restart_at: u64,
        /// Why.
        #[source]
        source: async_nats::Error,
    },
}

/// The first sequence a consumer found past a stream holding `first..=last` delivers
/// again: `last + 1 - REWIND_MARGIN`, never before the stream's first message.
pub fn restart_at(first: u64, last: u64) -> u64 {
    last.saturating_add(1).saturating_sub(REWIND_MARGIN).max(first).max(1)
}

/// Checks `consumer` once and rewinds it if it is past its stream's end; returns the
/// rewind made, if any. The alert is best effort: a failed publish is logged, the
/// rewind stands.
pub async fn check(
    js: &jetstream::Context,
    consumer: &mut PullConsumer,
) -> Result<Option<ConsumerRewound>, OverrunError> {
    let (stream, name) = {
        let cached = consumer.cached_info();
        (cached.stream_name.clone(), cached.name.clone())
    };
    let info_error = |source: async_nats::Error| OverrunError::Info {
        stream: stream.clone(),
        consumer: name.clone(),
        source,
    };
    // Consumer first, stream second: the stream only grows in between.
    let position = consumer.info().await.map_err(|e| info_error(e.into()))?.clone();
    let state = js
        .get_stream(&stream)
        .await
        .map_err(|e| info_error(e.into()))?
        .cached_info()
        .state
        .clone();
    let (delivered, ack_floor) = (position.delivered.stream_sequence, position.ack_floor.stream_sequence);
    if delivered <= state.last_sequence && ack_floor <= state.last_sequence {
        return Ok(None);
    }
    let rewind = ConsumerRewound {
        v: ENVELOPE_VERSION,
        kind: subjects::ALERT_CONSUMER_REWOUND.to_owned(),
        stream: stream.clone(),
        consumer: name.clone(),
        delivered,
        ack_floor,
        stream_last: state.last_sequence,
        restart_at: restart_at(state.first_sequence, state.last_sequence),
        rewound_at: Utc::now(),
    };
    tracing::warn!(
        stream = %rewind.stream,
        consumer = %rewind.consumer,
        delivered,
        ack_floor,
        stream_last = rewind.stream_last,
        restart_at = rewind.restart_at,
        "consumer is past its stream's end; rewinding it"
    );
    consumer
        .reset(Some(rewind.restart_at))
        .await
        .map_err(|e| OverrunError::Reset {
            stream: stream.clone(),
            consumer: name.clone(),
            restart_at: rewind.restart_at,
            source: e.into(),
        })?;
    metrics::counter!("paytrack_consumer_rewinds_total", "stream" => stream.clone(), "consumer" => name.clone())
        .increment(1);
    if let Err(error) = raise_alert(js, &rewind).await {
        tracing::error!(%error, stream = %rewind.stream, consumer = %rewind.consumer, "cannot raise the consumer_rewound alert");
    }
    Ok(Some(rewind))
}

/// Publishes `rewind` as the `consumer_rewound` alert, de-duplicated by its id.
async fn raise_alert(js: &jetstream::Context, rewind: &ConsumerRewound) -> Result<(), async_nats::Error> {
    let id = paytrack_shared::msg_id::consumer_rewound(
        &rewind.stream,
        &rewind.consumer,
        rewind.delivered,
        rewind.stream_last,
    );
    let message = PublishMessage::build().payload(envelope::encode(rewind)).message_id(id);
    js.send_publish(subjects::alert(None, subjects::ALERT_CONSUMER_REWOUND), message)
        .await?
        .await?;
    paytrack_shared::metrics::alert_raised(subjects::ALERT_CONSUMER_REWOUND);
    Ok(())
}

/// Checks every consumer of `consumers` once (at start-up, before consuming); a
/// failed check is logged and left to [`watch`].
pub async fn check_all<'a>(js: &jetstream::Context, consumers: impl IntoIterator<Item = &'a mut PullConsumer>) {
    for consumer in consumers {
        if let Err(error) = check(js, consumer).await {
            tracing::warn!(%error, "consumer position not checked; checking again shortly");
        }
    }
}

/// Checks `consumers` every [`CHECK_INTERVAL`] until `shutdown` (the first check
/// after one interval: [`check_all`] does the start-up one).
pub async fn watch(js: jetstream::Context, mut consumers: Vec<PullConsumer>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(CHECK_INTERVAL) => {}
        }
        for consumer in &mut consumers {
            if let Err(error) = check(&js, consumer).await {
                tracing::debug!(%error, "consumer position not checked; checking again shortly");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rewind_redelivers_a_margin_before_the_stream_end() {
        assert_eq!(restart_at(1, 5_000), 5_001 - REWIND_MARGIN);
        // Never before the stream's first message, never sequence 0.
        assert_eq!(restart_at(1, 10), 1);
        assert_eq!(restart_at(400, 500), 400);
        assert_eq!(restart_at(0, 0), 1);
    }
}
