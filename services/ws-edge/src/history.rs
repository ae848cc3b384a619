//! Reading a channel's history from JetStream: its current position, whether a
//! client's `since` can be continued gap-free, and the feed of events after it.
//!
//! Each subscription is an ordered consumer filtered server-side to the channel, so a
//! resume costs only the events the client missed.

use async_nats::jetstream::{self, consumer, stream::Stream};
use paytrack_shared::envelope::{self, Checkpoint, CheckpointKind, Position, Transition};
use paytrack_shared::{StatusModel, TenantId, subjects};
use serde_json::{Map, Value, json};

use crate::channel::Channel;

/// Why a channel's history cannot be read now.
#[derive(Debug, thiserror::Error)]
#[error("history unavailable: {0}")]
pub struct HistoryError(String);

fn unavailable(e: impl std::fmt::Display) -> HistoryError {
    HistoryError(e.to_string())
}

/// Where a subscription starts.
pub struct Start {
    /// Whether the client's `since` was continued gap-free.
    pub recovered: bool,
    /// Where the channel continues from.
    pub position: Position,
    /// The channel's current state, when continuity was not proven.
    pub snapshot: Option<Value>,
    /// The events after `position`.
    pub feed: consumer::pull::Ordered,
}

/// Reads channel histories.
#[derive(Clone)]
pub struct History {
    js: jetstream::Context,
}

impl History {
    /// A reader over `js`.
    pub fn new(js: jetstream::Context) -> History {
        History { js }
    }

    /// Decides where `channel` continues from and opens its feed.
    pub async fn start(
        &self,
        channel: &Channel,
        tenant: &TenantId,
        device: Option<&str>,
        since: Option<&Position>,
    ) -> Result<Start, HistoryError> {
        let filters = channel.filters(tenant, device);
        let stream_name = channel.stream();
        let stream = self.js.get_stream(stream_name).await.map_err(unavailable)?;
        let info = stream.cached_info();
        let epoch = paytrack_nats::epoch_of(info);
        let (first_seq, last_seq) = (info.state.first_sequence, info.state.last_sequence);
        let latest = self.latest_seq(&stream, &filters).await?;

        // Continuity holds when the stream is the same incarnation, the position is
        // not in the future, and nothing of the channel after it has aged out.
        let resumable =
            since.filter(|s| s.epoch == epoch && s.seq <= last_seq && (s.seq + 1 >= first_seq || s.seq >= latest));
        let (recovered, from) = match resumable {
            Some(s) => (true, s.seq),
            None => (false, latest),
        };
        let snapshot = if recovered {
            None
        } else {
            self.snapshot(&stream, channel.snapshot_filter(tenant)).await?
        };
        let config = consumer::pull::OrderedConfig {
            filter_subjects: filters,
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: from + 1,
            },
            ..Default::default()
        };
        let feed = stream
            .create_consumer(config)
            .await
            .map_err(unavailable)?
            .messages()
            .await
            .map_err(unavailable)?;
        Ok(Start {
            recovered,
            position: Position { epoch, seq: from },
            snapshot,
            feed,
        })
    }

    /// The sequence of the channel's newest message (0 when it has none).
    async fn latest_seq(&self, stream: &Stream, filters: &[String]) -> Result<u64, HistoryError> {
        let mut latest = 0;
        for filter in filters {
            if let Some(message) = paytrack_nats::last_message(stream, filter).await.map_err(unavailable)? {
                latest = latest.max(message.sequence);
            }
        }
        Ok(latest)
    }

    /// The newest transition under `filter`, rendered as the channel's snapshot.
    async fn snapshot(&self, stream: &Stream, filter: Option<String>) -> Result<Option<Value>, HistoryError> {
        let Some(filter) = filter else {
            return Ok(None);
        };
        let last = paytrack_nats::last_message(stream, &filter)
            .await
            .map_err(unavailable)?;
        Ok(last.and_then(|m| render(&m.subject, &m.payload).map(|(_, body)| Value::Object(body))))
    }
}

/// Turns a stream message into an event's `kind` and fields. Unknown or unreadable
/// messages yield None and are skipped (they are still counted in `prev_seq`).
pub fn render(subject: &str, payload: &[u8]) -> Option<(String, Map<String, Value>)> {
    let (kind, value) = match subjects::status_stream_kind(subject) {
        Some("transition") => {
            let t: Transition = envelope::decode(payload).ok()?;
            let value = json!({
                "payment_id": t.payment_id,
                "merchant_id": t.merchant_id,
                "version": t.version,
                "status": t.status,
                "previous_status": t.previous_status,
                "final": false,
                "occurred_at": t.occurred_at,
                "trace_id": t.trace_id,
            });
            ("transition", value)
        }
        Some("checkpoint") => {
            let c: Checkpoint = envelope::decode(payload).ok()?;
            let is_final =
                c.checkpoint == CheckpointKind::LedgerPosted && StatusModel::get().is_terminal(c.status, None);
            let value = json!({
                "payment_id": c.payment_id,
                "merchant_id": c.merchant_id,
                "version": c.version,
                "status": c.status,
                "checkpoint": c.checkpoint,
                "final": is_final,
                "occurred_at": c.recorded_at,
                "trace_id": c.trace_id,
            });
            ("checkpoint", value)
        }
        _ => ("push", serde_json::from_slice::<Value>(payload).ok()?),
    };
    match value {
        Value::Object(map) => Some((kind.to_owned(), map)),
        other => {
            let mut map = Map::new();
            map.insert("data".into(), other);
            Some((kind.to_owned(), map))
        }
    }
}
