//! A resume's backlog, sent as the client drains its queue: the missed messages of a
//! channel, from the ring or a page of JetStream at a time, each queued only once the
//! session's queue is at most half full, while the subscription buffers a bounded
//! number of live messages; then the hand-over to the live feed. What a replay holds
//! is bounded (one page, [`MAX_BUFFERED`] live messages, a consumer) whatever the gap,
//! and the replays running at once are bounded by the hub's replay slots, so any gap
//! the stream retains resumes without overflowing the session's queue (4008) or the
//! edge's memory.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer;
use futures::StreamExt;

use super::channels::detach_locked;
use super::feed::{Feed, deliver_one};
use super::frame::encode_event;
use super::hub::{Hub, Inner};
use super::replay::missed_in_ring;
use super::ring::Msg;
use super::tenant_channel::TenantChannel;
use crate::send_queue::SendQueue;
use crate::stream_event::{HistoryError, unavailable};

/// The live messages a subscription buffers while its replay runs.
#[derive(Default)]
pub(super) struct Replay {
    pending: Vec<Arc<Msg>>,
    /// The payload bytes of `pending`.
    bytes: usize,
    /// Whether more live messages arrived during the replay than are buffered.
    overflowed: bool,
}

impl Replay {
    /// Buffers a live message, up to [`MAX_BUFFERED`]; beyond it the replay reads
    /// them from the stream instead.
    pub(super) fn buffer(&mut self, message: &Arc<Msg>) {
        if self.pending.len() < MAX_BUFFERED {
            self.pending.push(message.clone());
            self.bytes += message.payload.len();
            metrics::gauge!("paytrack_edge_replay_buffered_messages").increment(1);
        } else {
            self.overflowed = true;
        }
    }

    /// Forgets what is buffered (it is read from the stream instead) and returns it.
    pub(super) fn take(&mut self) -> Vec<Arc<Msg>> {
        metrics::gauge!("paytrack_edge_replay_buffered_messages").decrement(self.pending.len() as f64);
        self.bytes = 0;
        self.overflowed = false;
        std::mem::take(&mut self.pending)
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        self.take();
    }
}

/// Live messages one subscription buffers while its replay runs. A replay holds at
/// most this many message pointers (the messages are shared with the ring) and one
/// [`REPLAY_PAGE`]: when live traffic outruns it, it drops the buffer and reads the
/// same messages from the stream, paced by the client.
pub(super) const MAX_BUFFERED: usize = 1_024;

/// Messages a replay reads from JetStream at once; each is queued to the session only
/// once its queue is at most half full, so a replay is sent as fast as the client
/// takes it, whatever the gap.
const REPLAY_PAGE: usize = 256;

/// How long a replay's consumer outlives a pause in its reads (a client that takes
/// nothing is closed by its write timeout first).
const REPLAY_CONSUMER_IDLE: Duration = Duration::from_secs(60);

/// A subscription whose `subscribed` is queued and whose missed messages are still to
/// be sent: [`Hub::replay`] sends them as the client drains its queue, then hands the
/// subscription over to the live feed.
pub struct Backlog {
    pub(super) feed: Feed,
    pub(super) key: TenantChannel,
    pub(super) name: String,
    pub(super) id: u64,
    pub(super) out: Arc<SendQueue>,
    pub(super) epoch: String,
    pub(super) filters: Vec<String>,
    /// The `seq` of the last event queued (the `prev_seq` of the next).
    pub(super) last_seq: u64,
    /// The channel's newest message known so far.
    pub(super) latest: u64,
    /// Everything of the channel up to here is queued.
    pub(super) cursor: u64,
    /// The current round replays up to here (the ring's head when it started); what
    /// arrives live after it is buffered or read in the next round.
    pub(super) through: u64,
    /// The replay slot taken before `subscribed` (None: one is waited for).
    pub(super) slot: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// Counts a replay running while it lives (`paytrack_edge_replays_running`).
struct Running;

impl Running {
    fn start() -> Running {
        metrics::gauge!("paytrack_edge_replays_running").increment(1);
        Running
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        metrics::gauge!("paytrack_edge_replays_running").decrement(1);
    }
}

impl Hub {
    /// Sends a subscription's backlog as the client drains its queue, then hands it
    /// over to the live feed: each round replays the channel up to where the ring's
    /// head was when it started (from the ring when it still holds that part, else
    /// from JetStream a page at a time), while live messages are buffered; the
    /// buffered ones are queued at the handover when the session can take them at
    /// once, or else dropped and read from the stream by the next round. On error (the
    /// session closed, JetStream unreadable) the subscription is ended.
    pub async fn replay(&self, mut backlog: Backlog) -> Result<(), HistoryError> {
        let result = self.run_backlog(&mut backlog).await;
        if result.is_err() {
            detach_locked(&mut self.lock(), &backlog.key, backlog.id);
        }
        result
    }

    async fn run_backlog(&self, b: &mut Backlog) -> Result<(), HistoryError> {
        let _slot = match b.slot.take() {
            Some(slot) => slot,
            None => self.replays.clone().acquire_owned().await.map_err(unavailable)?,
        };
        let _running = Running::start();
        metrics::counter!("paytrack_edge_replays_total").increment(1);
        let mut first = true;
        loop {
            let from_ring = {
                let mut inner = self.lock();
                let Inner { rings, channels, .. } = &mut *inner;
                let ring = &rings[b.feed as usize];
                let entry = channels
                    .get_mut(&b.key)
                    .ok_or_else(|| unavailable("subscription ended during its replay"))?;
                let sub = entry
                    .subs
                    .get_mut(&b.id)
                    .ok_or_else(|| unavailable("subscription ended during its replay"))?;
                let replay = sub
                    .replay
                    .as_mut()
                    .ok_or_else(|| unavailable("subscription ended during its replay"))?;
                if !first {
                    if !replay.overflowed && b.out.fits(replay.pending.len(), replay.bytes) {
                        let pending = replay.take();
                        sub.replay = None;
                        sub.last_seq = b.last_seq;
                        for message in &pending {
                            b.latest = b.latest.max(message.seq);
                            deliver_one(sub, &b.name, &b.epoch, message);
                        }
                        if entry.latest.is_none() {
                            entry.latest = Some(b.latest.max(b.last_seq));
                        }
                        return Ok(());
                    }
                    // Live traffic outran the replay or the client: read it from the
                    // stream in the next round rather than hold it.
                    replay.take();
                    metrics::counter!("paytrack_edge_replay_rounds_total").increment(1);
                    b.cursor = b.through;
                    b.through = ring.head;
                }
                first = false;
                entry.in_ring_after(ring.floor, b.cursor).then(|| {
                    let through = b.through;
                    let mut missed = missed_in_ring(ring, b.feed, &b.key, entry, b.cursor);
                    missed.retain(|m| m.seq <= through);
                    missed
                })
            };
            match from_ring {
                Some(missed) => {
                    for message in &missed {
                        self.queue_replayed(b, message).await?;
                    }
                }
                None => self.replay_from_stream(b).await?,
            }
        }
    }

    /// Queues one replayed message once the session's queue is at most half full,
    /// chaining its `prev_seq`.
    async fn queue_replayed(&self, b: &mut Backlog, message: &Msg) -> Result<(), HistoryError> {
        if message.seq <= b.last_seq {
            return Ok(());
        }
        b.latest = b.latest.max(message.seq);
        if !b.out.drained().await {
            return Err(unavailable("session closed during its replay"));
        }
        if let Some(frame) = encode_event(&b.name, &b.epoch, message, b.last_seq) {
            b.last_seq = message.seq;
            if !b.out.push(frame) {
                return Err(unavailable("session closed during its replay"));
            }
            metrics::counter!("paytrack_edge_replayed_messages_total").increment(1);
        }
        Ok(())
    }

    /// Queues the channel's messages in `(cursor, through]` read from JetStream a page
    /// at a time, with a short-lived filtered consumer deleted right after.
    async fn replay_from_stream(&self, b: &mut Backlog) -> Result<(), HistoryError> {
        if b.through <= b.cursor {
            return Ok(());
        }
        let stream = &self.streams[b.feed as usize];
        let consumer = stream
            .create_consumer(consumer::pull::Config {
                filter_subjects: b.filters.clone(),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: b.cursor + 1,
                },
                ack_policy: consumer::AckPolicy::None,
                inactive_threshold: REPLAY_CONSUMER_IDLE,
                memory_storage: true,
                ..Default::default()
            })
            .await
            .map_err(unavailable)?;
        let name = consumer.cached_info().name.clone();
        let pending = consumer.cached_info().num_pending;
        let result = self.read_pages(&consumer, pending, b).await;
        if let Err(error) = stream.delete_consumer(&name).await {
            tracing::debug!(%error, "replay consumer not deleted; it expires by itself");
        }
        result?;
        b.cursor = b.through;
        Ok(())
    }

    async fn read_pages(
        &self,
        consumer: &consumer::PullConsumer,
        mut pending: u64,
        b: &mut Backlog,
    ) -> Result<(), HistoryError> {
        while pending > 0 {
            let mut page = consumer
                .batch()
                .max_messages(pending.min(REPLAY_PAGE as u64) as usize)
                .expires(self.timeout)
                .messages()
                .await
                .map_err(unavailable)?;
            let mut got = 0;
            while let Some(message) = page.next().await {
                let message = message.map_err(unavailable)?;
                got += 1;
                let info = message.info().map_err(unavailable)?;
                let seq = info.stream_sequence;
                pending = info.pending;
                if seq > b.through {
                    return Ok(());
                }
                let message = Msg::new(seq, &message.subject, message.payload.clone(), message.headers.clone());
                self.queue_replayed(b, &message).await?;
                if seq == b.through || pending == 0 {
                    return Ok(());
                }
            }
            if got == 0 {
                return Err(unavailable("replay stalled"));
            }
        }
        Ok(())
    }
}
