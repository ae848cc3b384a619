//! Whether the edge is current with its streams: each feed compared with its stream
//! every [`HEALTH_INTERVAL`], and the heartbeats that report it with each
//! subscription's position.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use paytrack_shared::envelope::Position;
use tokio_util::sync::CancellationToken;

use super::feed::Feed;
use super::hub::Hub;
use super::tenant_channel::TenantChannel;
use crate::protocol::ServerMessage;
use crate::send_queue::SendQueue;

/// Whether one feed is current with its stream, as the heartbeats report it.
#[derive(Default)]
pub(super) struct FeedHealth {
    /// Connected to JetStream, the stream reachable and the feed's consumer working.
    pub(super) live: AtomicBool,
    /// Since when the feed has been behind the stream's last message, in ms (0: caught up).
    pub(super) lag_ms: AtomicU64,
    /// Cleared when the feed's consumer reports an error, set again once it delivers
    /// or the feed is found caught up with the stream.
    pub(super) consumer_ok: AtomicBool,
    /// Set from the moment the stream is found recreated until the feed is open on
    /// the new incarnation: the edge claims no currency meanwhile.
    pub(super) reopening: AtomicBool,
}

/// How often the edge compares its feeds with the streams.
pub(super) const HEALTH_INTERVAL: Duration = Duration::from_millis(500);

impl Hub {
    /// Compares one feed with its stream every [`HEALTH_INTERVAL`]: the feed is live
    /// while NATS is connected, the stream answers and the feed's consumer works (or
    /// has every message the stream has); its lag is how long it has been behind the
    /// stream's last message.
    pub(super) async fn watch_health(
        self: Arc<Self>,
        feed: Feed,
        client: async_nats::Client,
        shutdown: CancellationToken,
    ) {
        let health = &self.health[feed as usize];
        let mut caught_up_at = std::time::Instant::now();
        let mut ticker = tokio::time::interval(HEALTH_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let connected = client.connection_state() == async_nats::connection::State::Connected;
            // The feed's head before the request: the stream's last sequence in the
            // answer is at least this, unless the stream was recreated.
            let before = self.resume_point(feed);
            let last = if connected {
                match tokio::time::timeout(self.timeout, self.streams[feed as usize].get_info()).await {
                    Ok(Ok(info)) => {
                        self.notice_recreation(feed, &info, before);
                        Some(info.state.last_sequence)
                    }
                    _ => None,
                }
            } else {
                None
            };
            let head = *self.heads[feed as usize].borrow();
            if last.is_some_and(|last| head >= last) {
                caught_up_at = std::time::Instant::now();
                health.consumer_ok.store(true, Ordering::Relaxed);
            }
            let live = last.is_some()
                && health.consumer_ok.load(Ordering::Relaxed)
                && !health.reopening.load(Ordering::Relaxed);
            let lag = caught_up_at.elapsed().as_millis() as u64;
            health.live.store(live, Ordering::Relaxed);
            health.lag_ms.store(lag, Ordering::Relaxed);
            metrics::gauge!("paytrack_edge_feed_live", "stream" => feed.stream()).set(if live { 1.0 } else { 0.0 });
            metrics::gauge!("paytrack_edge_feed_lag_seconds", "stream" => feed.stream()).set(lag as f64 / 1000.0);
        }
    }

    /// Whether every feed is live, and the largest lag of the edge's feeds in ms.
    pub fn currency(&self) -> (bool, u64) {
        let live = self.health.iter().all(|h| h.live.load(Ordering::Relaxed));
        let lag = self
            .health
            .iter()
            .map(|h| h.lag_ms.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0);
        (live, lag)
    }

    /// Queues a heartbeat naming the position each of `subs` (`(key, id)`)
    /// has reached, under the lock that queues events, so the heartbeat never runs
    /// ahead of them, with the edge's own currency (`live`, `lag_ms`). Returns the
    /// positions sent, which the session's next acks must catch up with.
    pub fn heartbeat<'a>(
        &self,
        out: &SendQueue,
        subs: impl Iterator<Item = (&'a TenantChannel, u64)>,
    ) -> BTreeMap<String, Position> {
        let (live, lag_ms) = self.currency();
        let inner = self.lock();
        let mut positions = BTreeMap::new();
        for (key, id) in subs {
            let channel = &key.channel;
            if let Some(sub) = inner.channels.get(key).and_then(|e| e.subs.get(&id))
                && sub.replay.is_none()
            {
                positions.insert(
                    channel.to_string(),
                    Position {
                        epoch: inner.epochs[Feed::of(channel) as usize].clone(),
                        seq: sub.last_seq,
                    },
                );
            }
        }
        out.send(&ServerMessage::Heartbeat {
            positions: positions.clone(),
            live,
            lag_ms,
        });
        positions
    }
}
