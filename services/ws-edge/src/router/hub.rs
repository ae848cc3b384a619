//! The hub: the state every session's view is decided under (one lock), what a
//! subscribe asks for and returns, and the hub's start.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_nats::jetstream::{self, stream::Stream};
use paytrack_shared::envelope::Position;
use paytrack_shared::{DeviceId, TenantId};
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;

use super::backlog::{Backlog, Replay};
use super::channels::{Entry, IDLE_SWEEP_EVERY, IdleWindow, UserDevices, expire_idle};
use super::feed::{FEEDS, Feed, open_feed};
use super::health::FeedHealth;
use super::ring::Ring;
use super::tenant_channel::{ChannelMap, TenantChannel};
use crate::send_queue::SendQueue;
use crate::stream_event::{HistoryError, unavailable};
use paytrack_shared::ChannelKey;

/// One subscription of one session to one channel.
pub(super) struct Sub {
    pub(super) out: Arc<SendQueue>,
    /// The `seq` of the last event queued to it (its `prev_seq` chain).
    pub(super) last_seq: u64,
    /// While a JetStream replay runs: what arrived live meanwhile (boxed: one pointer in
    /// every subscription of the channel map, for what exists only during a replay).
    pub(super) replay: Option<Box<Replay>>,
}

/// What every session's view is decided from, changed only under the hub's one lock:
/// the rings, the streams' epochs, the channel map and the idle channels.
pub(super) struct Inner {
    pub(super) rings: [Ring; FEEDS],
    /// Each stream's epoch (its incarnation): every position the edge sends names it.
    pub(super) epochs: [String; FEEDS],
    /// Bumped when a stream is found recreated: what a feed opened on the old
    /// incarnation still delivers is dropped.
    pub(super) generations: [u64; FEEDS],
    pub(super) channels: ChannelMap<Entry>,
    /// The user channels' device-bound keys, so a push to `all` finds them.
    pub(super) user_devices: UserDevices,
    /// Channels no session holds, oldest first: (ticket, since when, key).
    pub(super) idle: VecDeque<(u64, std::time::Instant, TenantChannel)>,
    pub(super) next_ticket: u64,
    /// How long, and how many, idle channels are kept.
    pub(super) idle_window: IdleWindow,
}

impl Inner {
    /// The state of a hub that follows no channel yet: each stream's ring and epoch.
    pub(super) fn new(rings: [Ring; FEEDS], epochs: [String; FEEDS], idle_window: IdleWindow) -> Inner {
        Inner {
            rings,
            epochs,
            generations: [0; FEEDS],
            channels: ChannelMap::default(),
            user_devices: UserDevices::default(),
            idle: VecDeque::new(),
            next_ticket: 0,
            idle_window,
        }
    }
}

/// What a subscribe asks for.
pub struct Request {
    /// The channel.
    pub channel: ChannelKey,
    /// The token's tenant.
    pub tenant: TenantId,
    /// The token's device, for user channels.
    pub device: Option<DeviceId>,
    /// The client's last position.
    pub since: Option<Position>,
    /// The session's queue.
    pub out: Arc<SendQueue>,
    /// This subscription's id (unique per edge).
    pub id: u64,
    /// The session's current subscription to the same channel, replaced once this one
    /// is ready.
    pub replaces: Option<u64>,
}

impl Request {
    /// The channel's map key.
    pub fn key(&self) -> TenantChannel {
        TenantChannel::new(self.tenant.clone(), self.channel.clone(), self.device.clone())
    }
}

/// How a subscription started (for the audit).
pub struct Ready {
    /// Whether `since` was continued gap-free.
    pub recovered: bool,
    /// Where the channel continues from.
    pub position: Position,
}

/// The fan-out of one edge.
pub struct Hub {
    pub(super) inner: Mutex<Inner>,
    pub(super) health: [FeedHealth; FEEDS],
    pub(super) streams: [Stream; FEEDS],
    /// Wakes a feed to reopen on its stream's new incarnation.
    pub(super) reopen: [tokio::sync::Notify; FEEDS],
    pub(super) heads: [watch::Sender<u64>; FEEDS],
    /// Short JetStream reads of subscribes (a latest position, a snapshot, the
    /// stream's first sequence).
    pub(super) permits: Semaphore,
    /// The latest-position reads of channels in flight, each shared by every
    /// subscribe of its channel that starts meanwhile (see `Hub::shared_latest`).
    pub(super) latest_reads: Mutex<std::collections::HashMap<TenantChannel, LatestRead>>,
    /// Replays running at once, each holding a consumer and at most a page and
    /// [`MAX_BUFFERED`] live messages: the bound on what replays hold in memory.
    pub(super) replays: Arc<Semaphore>,
    pub(super) timeout: Duration,
}

/// One latest-position read of a channel: `(latest, known)`, the channel having no
/// message in `(latest, known]`.
pub(super) type LatestRead = Arc<tokio::sync::OnceCell<(u64, u64)>>;

/// A started subscription: `subscribed` is queued, and any backlog still has to go
/// through [`Hub::replay`].
pub struct Subscribed {
    /// How it started (for the audit).
    pub ready: Ready,
    /// The missed messages still to send, when there were more than the session's
    /// queue could take at once.
    pub backlog: Option<Backlog>,
}

impl Hub {
    /// Opens one ordered consumer per stream, starting after each stream's current last
    /// message, and returns the hub they feed. The consumers stop at `shutdown`.
    pub async fn start(
        js: &jetstream::Context,
        ring_messages: usize,
        idle_window: IdleWindow,
        concurrency: usize,
        timeout: Duration,
        shutdown: CancellationToken,
    ) -> Result<Arc<Hub>, HistoryError> {
        let mut streams = Vec::new();
        let mut epochs = Vec::new();
        let mut heads = Vec::new();
        for feed in Feed::ALL {
            let mut stream = js.get_stream(feed.stream()).await.map_err(unavailable)?;
            let info = stream.info().await.map_err(unavailable)?;
            epochs.push(paytrack_nats::epoch_of(info));
            heads.push(info.state.last_sequence);
            streams.push(stream);
        }
        let epochs = <[String; FEEDS]>::try_from(epochs).map_err(|_| unavailable("epochs"))?;
        let inner = Inner::new(
            Feed::ALL.map(|feed| Ring::new(heads[feed as usize], ring_messages)),
            epochs,
            idle_window,
        );
        let streams = <[Stream; FEEDS]>::try_from(streams).map_err(|_| unavailable("streams"))?;
        let hub = Arc::new(Hub {
            inner: Mutex::new(inner),
            streams,
            reopen: Default::default(),
            heads: Feed::ALL.map(|feed| watch::Sender::new(heads[feed as usize])),
            permits: Semaphore::new(concurrency.max(1)),
            latest_reads: Mutex::default(),
            replays: Arc::new(Semaphore::new(concurrency.max(1))),
            timeout,
            health: Default::default(),
        });
        metrics::gauge!("paytrack_edge_replay_slots").set(concurrency.max(1) as f64);
        for feed in Feed::ALL {
            hub.health[feed as usize].consumer_ok.store(true, Ordering::Relaxed);
            tokio::spawn(hub.clone().watch_health(feed, js.client(), shutdown.clone()));
        }
        tokio::spawn(forget_idle_channels(Arc::downgrade(&hub), shutdown.clone()));
        for feed in Feed::ALL {
            let from = heads[feed as usize] + 1;
            // Opened before the edge serves, so its consumers exist from the start.
            let messages = open_feed(&hub.streams[feed as usize], from).await?;
            tokio::spawn(hub.clone().feed(feed, (from, 0), messages, shutdown.clone()));
        }
        Ok(hub)
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every change is a
        // single insert or push), so a poisoned lock is still used.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Forgets idle channels past their window every [`IDLE_SWEEP_EVERY`], so an edge no
/// session detaches from any more still gives their memory back; ends with the hub or
/// at `shutdown`.
async fn forget_idle_channels(hub: std::sync::Weak<Hub>, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(IDLE_SWEEP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        let Some(hub) = hub.upgrade() else { return };
        expire_idle(&mut hub.lock(), std::time::Instant::now());
    }
}
