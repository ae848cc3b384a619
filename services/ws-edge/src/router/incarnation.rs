//! A stream's incarnation: when PAYTRACK_STATUS or PAYTRACK_PUSH is deleted and
//! recreated, its sequences restart and every position of the old epoch names
//! messages that no longer exist. The edge notices it (a new epoch, or the stream's
//! last sequence behind the feed's head) on every health check and whenever a feed
//! reopens, and then stops claiming currency, closes the sessions of the stream's
//! channels with 1012 (so that their resume is answered under the new epoch, with a
//! snapshot or reload), and restarts the feed, its ring and its channels on the new
//! stream, rather than waiting, deaf, at the old sequence.

use std::sync::atomic::Ordering;

use async_nats::jetstream::stream;

use super::feed::Feed;
use super::hub::Hub;
use super::ring::Ring;
use super::tenant_channel::TenantChannel;

impl Hub {
    /// Where a feed (re)opens: after the ring's head, in the current generation.
    pub(super) fn resume_point(&self, feed: Feed) -> (u64, u64) {
        let inner = self.lock();
        (inner.rings[feed as usize].head + 1, inner.generations[feed as usize])
    }

    /// Compares `info` with what the edge holds of the feed's stream: a new epoch, or
    /// a last sequence behind the feed's position before `info` was asked for
    /// (`before`, from [`Hub::resume_point`]: sequences going backwards), means the
    /// stream was recreated, and the feed is restarted on it. True when it was.
    pub(super) fn notice_recreation(&self, feed: Feed, info: &stream::Info, before: (u64, u64)) -> bool {
        let epoch = paytrack_nats::epoch_of(info);
        let (from, generation) = before;
        let recreated = {
            let inner = self.lock();
            inner.epochs[feed as usize] != epoch
                || (inner.generations[feed as usize] == generation && info.state.last_sequence + 1 < from)
        };
        if recreated {
            self.restart_feed(feed, epoch, info.state.first_sequence.saturating_sub(1));
        }
        recreated
    }

    /// Follows a recreated stream: the feed claims no currency until it is open on the
    /// new incarnation; every session holding one of its channels is closed with 1012
    /// (its positions are of the old epoch, so its resume is answered `recovered:
    /// false` with the snapshot or reload); the ring and the channels of the feed
    /// start again empty, under the new epoch, after `head`; and the feed reopens
    /// there.
    fn restart_feed(&self, feed: Feed, epoch: String, head: u64) {
        let health = &self.health[feed as usize];
        health.reopening.store(true, Ordering::Relaxed);
        health.live.store(false, Ordering::Relaxed);
        let mut guard = self.lock();
        let inner = &mut *guard;
        tracing::warn!(stream = feed.stream(), old = %inner.epochs[feed as usize], new = %epoch, "stream recreated: sessions told to resume");
        metrics::counter!("paytrack_edge_stream_recreated_total", "stream" => feed.stream()).increment(1);
        inner.epochs[feed as usize] = epoch;
        inner.generations[feed as usize] += 1;
        let capacity = inner.rings[feed as usize].capacity;
        inner.rings[feed as usize] = Ring::new(head, capacity);
        let keys: Vec<TenantChannel> = inner
            .channels
            .keys()
            .filter(|key| Feed::of(&key.channel) == feed)
            .cloned()
            .collect();
        for key in keys {
            let Some(entry) = inner.channels.remove(&key) else {
                continue;
            };
            for sub in entry.subs.values() {
                sub.out.close(
                    crate::protocol::close::RESTARTING,
                    "stream recreated: resume (positions of the old epoch are answered with a snapshot)",
                );
            }
            if entry.idle.is_none() {
                metrics::gauge!("paytrack_edge_channels").decrement(1);
            }
        }
        if feed == Feed::Push {
            inner.user_devices.clear();
        }
        drop(guard);
        self.heads[feed as usize].send_replace(head);
        self.reopen[feed as usize].notify_one();
    }
}
