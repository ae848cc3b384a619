//! The edge's fan-out: one ordered consumer per stream (PAYTRACK_STATUS and
//! PAYTRACK_PUSH, delivering what arrives after the edge started), an in-memory ring of
//! recent messages, and a map from channel to the local subscriptions that match each
//! message's subject. Each event is encoded once per channel (per `prev_seq`, which is
//! the same for every session that is current on the channel) and the same bytes are
//! queued to every session of that channel.
//!
//! JetStream consumers are a fixed cost: two per edge, whatever its sessions. A
//! subscribe reads JetStream only for what memory cannot answer (a channel's latest
//! position the first time this edge holds it, a payment's snapshot, a resume older
//! than the ring), through a semaphore, with a short-lived filtered consumer that is
//! deleted right after. A backlog larger than the session's queue can take at once is
//! sent as the client drains it (`backlog.rs`). A stream found recreated restarts its
//! feed under the new epoch (`incarnation.rs`).
//!
//! Everything that decides what a session sees (the ring, the channel map, each
//! subscription's `prev_seq`, the queueing of `subscribed`, events and heartbeats)
//! changes under one lock, so a session's queue always holds `subscribed` first, then
//! every event of its channel exactly once and in stream order, and a heartbeat never
//! names a position whose event is not queued before it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, stream::Stream};
use axum::extract::ws::Utf8Bytes;
use futures::StreamExt;
use paytrack_shared::envelope::Position;
use paytrack_shared::metrics::latency;
use paytrack_shared::{TenantId, subjects, telemetry};
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tracing::field;

mod backlog;
mod incarnation;

pub use backlog::Backlog;
use backlog::Replay;

use crate::channel::Channel;
use crate::history::{HistoryError, render, unavailable};
use crate::outbox::Outbox;
use crate::protocol::ServerMessage;

/// The two streams channels read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// PAYTRACK_STATUS: payment, merchant and tenant-wide channels.
    Status = 0,
    /// PAYTRACK_PUSH: user channels.
    Push = 1,
}

impl Feed {
    const ALL: [Feed; 2] = [Feed::Status, Feed::Push];

    fn of(channel: &Channel) -> Feed {
        match channel {
            Channel::User(_) => Feed::Push,
            _ => Feed::Status,
        }
    }

    fn stream(self) -> &'static str {
        match self {
            Feed::Status => subjects::STREAM_STATUS,
            Feed::Push => subjects::STREAM_PUSH,
        }
    }
}

/// One stream message as the edge keeps it: shared by the ring, the channels it
/// matches and any replay, and rendered once, when a session is first sent it. A
/// message no session holds a channel of is never rendered: an edge reads the whole
/// stream, and rendering every message for nobody was most of an idle edge's work.
pub struct Msg {
    seq: u64,
    subject: String,
    payload: bytes::Bytes,
    rendered: std::sync::OnceLock<Option<(String, Map<String, Value>)>>,
    headers: Option<HeaderMap>,
}

impl Msg {
    fn new(seq: u64, subject: &str, payload: bytes::Bytes, headers: Option<HeaderMap>) -> Arc<Msg> {
        Arc::new(Msg {
            seq,
            subject: subject.to_owned(),
            payload,
            rendered: std::sync::OnceLock::new(),
            headers,
        })
    }

    /// The event's kind and fields (None for a message that cannot be read).
    fn rendered(&self) -> Option<&(String, Map<String, Value>)> {
        self.rendered
            .get_or_init(|| render(&self.subject, &self.payload))
            .as_ref()
    }
}

/// The most recent messages of one stream. It holds every message with a sequence in
/// `(floor, head]`.
struct Ring {
    messages: VecDeque<Arc<Msg>>,
    floor: u64,
    head: u64,
    capacity: usize,
}

impl Ring {
    fn new(head: u64, capacity: usize) -> Ring {
        Ring {
            messages: VecDeque::new(),
            floor: head,
            head,
            capacity: capacity.max(1),
        }
    }

    /// Adds the newest message; returns the one it pushed out, if the ring was full.
    fn push(&mut self, message: Arc<Msg>) -> Option<Arc<Msg>> {
        self.head = message.seq;
        self.messages.push_back(message);
        let mut evicted = None;
        while self.messages.len() > self.capacity {
            if let Some(oldest) = self.messages.pop_front() {
                self.floor = oldest.seq;
                evicted = Some(oldest);
            }
        }
        evicted
    }

    /// The held message with sequence `seq`.
    fn get(&self, seq: u64) -> Option<&Arc<Msg>> {
        let at = self.messages.partition_point(|m| m.seq < seq);
        self.messages.get(at).filter(|m| m.seq == seq)
    }

    /// The held messages after `seq`, oldest first; only complete when `floor <= seq`.
    fn after(&self, seq: u64) -> impl Iterator<Item = &Arc<Msg>> {
        let start = self.messages.partition_point(|m| m.seq <= seq);
        self.messages.range(start..)
    }
}

/// The feed of a channel, from its name.
fn feed_of_name(name: &str) -> Feed {
    if name.starts_with("user:") {
        Feed::Push
    } else {
        Feed::Status
    }
}

/// The map key of a channel inside a tenant (and, for user channels, a device).
pub fn channel_key(tenant: &str, name: &str, device: Option<&str>) -> String {
    format!("{tenant} {name} {}", device.unwrap_or(""))
}

/// The keys of every channel a message of `feed` on `subject` belongs to.
fn keys_of(feed: Feed, subject: &str, user_devices: &HashMap<String, HashMap<String, usize>>) -> Vec<String> {
    let tokens: Vec<&str> = subject.split('.').collect();
    match (feed, tokens.as_slice()) {
        (Feed::Status, [_, _, tenant, merchant, payment]) => vec![
            channel_key(tenant, &format!("payment:{payment}"), None),
            channel_key(tenant, &format!("merchant:{merchant}"), None),
            channel_key(tenant, "payments", None),
        ],
        (Feed::Push, [_, _, tenant, user, device]) => {
            let name = format!("user:{user}");
            let mut keys = vec![channel_key(tenant, &name, None)];
            if *device == "all" {
                if let Some(devices) = user_devices.get(&channel_key(tenant, &name, None)) {
                    keys.extend(devices.keys().map(|d| channel_key(tenant, &name, Some(d))));
                }
            } else {
                keys.push(channel_key(tenant, &name, Some(device)));
            }
            keys
        }
        _ => Vec::new(),
    }
}

/// Whether `subject` is in the channel of `key` (used to pick a channel's messages
/// from the ring). Allocates nothing: a resume may test many ring messages.
fn matches(feed: Feed, subject: &str, key: &str) -> bool {
    let mut parts = key.splitn(3, ' ');
    let (Some(key_tenant), Some(name), Some(key_device)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let mut tokens = subject.split('.');
    let (Some(_), Some(_), Some(tenant), Some(middle), Some(last), None) = (
        tokens.next(),
        tokens.next(),
        tokens.next(),
        tokens.next(),
        tokens.next(),
        tokens.next(),
    ) else {
        return false;
    };
    if tenant != key_tenant {
        return false;
    }
    match feed {
        Feed::Status => {
            key_device.is_empty()
                && (name == "payments"
                    || name.strip_prefix("payment:") == Some(last)
                    || name.strip_prefix("merchant:") == Some(middle))
        }
        Feed::Push => {
            name.strip_prefix("user:") == Some(middle) && (key_device.is_empty() || last == "all" || last == key_device)
        }
    }
}

/// One subscription of one session to one channel.
struct Sub {
    out: Arc<Outbox>,
    /// The `seq` of the last event queued to it (its `prev_seq` chain).
    last_seq: u64,
    /// While a JetStream replay runs: what arrived live meanwhile (boxed: one pointer in
    /// every subscription of the channel map, for what exists only during a replay).
    replay: Option<Box<Replay>>,
}

/// How long a channel no session holds is still followed, so that clients that
/// reconnect (a dropped edge connection, a reconnect storm) resume from memory.
const IDLE_FOR: Duration = Duration::from_secs(120);

/// At most this many channels no session holds are followed (the oldest go first).
const IDLE_CHANNELS: usize = 65_536;

/// A channel some local session holds, or held until recently (idle).
struct Entry {
    name: String,
    /// The channel's newest message on the edge's feed, once known.
    latest: Option<u64>,
    /// The channel's newest message at or below the ring's floor, once known (kept as
    /// the ring evicts the channel's messages): a `since` at or after it is continued
    /// from the ring even when it is older than the ring, since the channel has
    /// nothing between the two.
    below_floor: Option<u64>,
    subs: HashMap<u64, Sub>,
    /// Set while no session holds the channel: its ticket in [`Inner::idle`].
    idle: Option<u64>,
    /// The sequences of the channel's messages the ring holds after `indexed_after`,
    /// oldest first, so a resume picks its missed messages without scanning the ring.
    recent: VecDeque<u64>,
    /// Every message of the channel the ring holds after this is in `recent`.
    indexed_after: u64,
}

impl Entry {
    /// The channel's newest message at or below `floor`, when known.
    fn below(&self, floor: u64) -> Option<u64> {
        self.below_floor.or(self.latest.filter(|latest| *latest <= floor))
    }

    /// Whether the ring (holding everything after `floor`) holds every message of the
    /// channel after `after`.
    fn in_ring_after(&self, floor: u64, after: u64) -> bool {
        floor <= after || self.below(floor).is_some_and(|below| below <= after)
    }
}

struct Inner {
    rings: [Ring; 2],
    /// Each stream's epoch (its incarnation): every position the edge sends names it.
    epochs: [String; 2],
    /// Bumped when a stream is found recreated: what a feed opened on the old
    /// incarnation still delivers is dropped.
    generations: [u64; 2],
    channels: HashMap<String, Entry>,
    /// `tenant user:<id>` → device → subscriptions, so a push to `all` finds the
    /// device-bound channels.
    user_devices: HashMap<String, HashMap<String, usize>>,
    /// Channels no session holds, oldest first: (ticket, since when, key).
    idle: VecDeque<(u64, std::time::Instant, String)>,
    next_ticket: u64,
}

/// An event as it goes on the wire, borrowing the message's rendered fields. The
/// envelope's own fields win over a body field of the same name (a push may carry its
/// own `type`), so the frame never holds a key twice.
struct WireEvent<'a> {
    channel: &'a str,
    kind: &'a str,
    position: Position,
    prev_seq: u64,
    body: &'a Map<String, Value>,
}

const ENVELOPE_FIELDS: [&str; 5] = ["type", "channel", "kind", "position", "prev_seq"];

impl Serialize for WireEvent<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("type", "event")?;
        map.serialize_entry("channel", self.channel)?;
        map.serialize_entry("kind", self.kind)?;
        map.serialize_entry("position", &self.position)?;
        map.serialize_entry("prev_seq", &self.prev_seq)?;
        for (key, value) in self.body {
            if !ENVELOPE_FIELDS.contains(&key.as_str()) {
                map.serialize_entry(key, value)?;
            }
        }
        map.end()
    }
}

fn encode_event(channel: &str, epoch: &str, message: &Msg, prev_seq: u64) -> Option<Utf8Bytes> {
    let (kind, body) = message.rendered()?;
    let event = WireEvent {
        channel,
        kind,
        position: Position {
            epoch: epoch.to_owned(),
            seq: message.seq,
        },
        prev_seq,
        body,
    };
    serde_json::to_string(&event).ok().map(Utf8Bytes::from)
}

/// Queues `message` to `sub` (skipping what it already has), chaining its `prev_seq`.
fn deliver_one(sub: &mut Sub, channel: &str, epoch: &str, message: &Msg) {
    if message.seq <= sub.last_seq || message.rendered().is_none() {
        return;
    }
    if let Some(frame) = encode_event(channel, epoch, message, sub.last_seq) {
        sub.last_seq = message.seq;
        sub.out.push(frame);
    }
}

/// What a subscribe asks for.
pub struct Request {
    /// The channel.
    pub channel: Channel,
    /// The token's tenant.
    pub tenant: TenantId,
    /// The token's device, for user channels.
    pub device: Option<String>,
    /// The client's last position.
    pub since: Option<Position>,
    /// The session's queue.
    pub out: Arc<Outbox>,
    /// This subscription's id (unique per edge).
    pub id: u64,
    /// The session's current subscription to the same channel, replaced once this one
    /// is ready.
    pub replaces: Option<u64>,
}

impl Request {
    /// The channel's map key.
    pub fn key(&self) -> String {
        let device = match self.channel {
            Channel::User(_) => self.device.as_deref(),
            _ => None,
        };
        channel_key(self.tenant.as_str(), &self.channel.name(), device)
    }
}

/// How a subscription started (for the audit).
pub struct Ready {
    /// Whether `since` was continued gap-free.
    pub recovered: bool,
    /// Where the channel continues from.
    pub position: Position,
}

/// Whether one feed is current with its stream, as the heartbeats report it.
#[derive(Default)]
struct FeedHealth {
    /// Connected to JetStream, the stream reachable and the feed's consumer working.
    live: AtomicBool,
    /// Since when the feed has been behind the stream's last message, in ms (0: caught up).
    lag_ms: AtomicU64,
    /// Cleared when the feed's consumer reports an error, set again once it delivers
    /// or the feed is found caught up with the stream.
    consumer_ok: AtomicBool,
    /// Set from the moment the stream is found recreated until the feed is open on
    /// the new incarnation: the edge claims no currency meanwhile.
    reopening: AtomicBool,
}

/// How often the edge compares its feeds with the streams.
const HEALTH_INTERVAL: Duration = Duration::from_millis(500);

/// The fan-out of one edge.
pub struct Hub {
    inner: Mutex<Inner>,
    health: [FeedHealth; 2],
    streams: [Stream; 2],
    /// Wakes a feed to reopen on its stream's new incarnation.
    reopen: [tokio::sync::Notify; 2],
    heads: [watch::Sender<u64>; 2],
    /// Short JetStream reads of subscribes (a latest position, a snapshot, the
    /// stream's first sequence).
    permits: Semaphore,
    /// Replays running at once, each holding a consumer and at most a page and
    /// [`MAX_BUFFERED`] live messages: the bound on what replays hold in memory.
    replays: Arc<Semaphore>,
    timeout: Duration,
}

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
        let [status_epoch, push_epoch] = <[String; 2]>::try_from(epochs).map_err(|_| unavailable("epochs"))?;
        let inner = Inner {
            rings: [Ring::new(heads[0], ring_messages), Ring::new(heads[1], ring_messages)],
            epochs: [status_epoch, push_epoch],
            generations: [0; 2],
            channels: HashMap::new(),
            user_devices: HashMap::new(),
            idle: VecDeque::new(),
            next_ticket: 0,
        };
        let [status, push] = <[Stream; 2]>::try_from(streams).map_err(|_| unavailable("streams"))?;
        let hub = Arc::new(Hub {
            inner: Mutex::new(inner),
            streams: [status, push],
            reopen: Default::default(),
            heads: [watch::Sender::new(heads[0]), watch::Sender::new(heads[1])],
            permits: Semaphore::new(concurrency.max(1)),
            replays: Arc::new(Semaphore::new(concurrency.max(1))),
            timeout,
            health: Default::default(),
        });
        metrics::gauge!("paytrack_edge_replay_slots").set(concurrency.max(1) as f64);
        for feed in Feed::ALL {
            hub.health[feed as usize].consumer_ok.store(true, Ordering::Relaxed);
            tokio::spawn(hub.clone().watch_health(feed, js.client(), shutdown.clone()));
        }
        for feed in Feed::ALL {
            let from = heads[feed as usize] + 1;
            // Opened before the edge serves, so its consumers exist from the start.
            let messages = open_feed(&hub.streams[feed as usize], from).await?;
            tokio::spawn(hub.clone().feed(feed, (from, 0), messages, shutdown.clone()));
        }
        Ok(hub)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every change is a
        // single insert or push), so a poisoned lock is still used.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads one stream from `from` on (`(from, generation)`), for as long as the edge
    /// runs. The ordered consumer recovers from lost messages and reconnects by
    /// itself; if it ends it is recreated after the last sequence seen, once the
    /// stream is checked to be the same incarnation. When the stream is found
    /// recreated ([`Hub::restart_feed`]) it reopens at the new incarnation's start.
    async fn feed(
        self: Arc<Self>,
        feed: Feed,
        (mut from, mut generation): (u64, u64),
        first: consumer::pull::Ordered,
        shutdown: CancellationToken,
    ) {
        let stream = self.streams[feed as usize].clone();
        let mut first = Some(first);
        while !shutdown.is_cancelled() {
            let opened = match first.take() {
                Some(messages) => Ok(messages),
                None => {
                    // The stream may have been recreated while the feed was away.
                    let before = self.resume_point(feed);
                    match tokio::time::timeout(self.timeout, stream.get_info()).await {
                        Ok(Ok(info)) => self.notice_recreation(feed, &info, before),
                        _ => false,
                    };
                    (from, generation) = self.resume_point(feed);
                    open_feed(&stream, from).await
                }
            };
            let mut messages = match opened {
                Ok(messages) => messages,
                Err(error) => {
                    self.health[feed as usize].consumer_ok.store(false, Ordering::Relaxed);
                    tracing::warn!(%error, stream = feed.stream(), "edge feed not open; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            tracing::info!(stream = feed.stream(), from, "edge feed open");
            if self.lock().generations[feed as usize] == generation {
                self.health[feed as usize].reopening.store(false, Ordering::Relaxed);
            }
            loop {
                let next = tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => return,
                    _ = self.reopen[feed as usize].notified() => {
                        tracing::info!(stream = feed.stream(), "edge feed reopens on the recreated stream");
                        break;
                    }
                    next = messages.next() => next,
                };
                match next {
                    Some(Ok(message)) => {
                        let Ok(info) = message.info() else { continue };
                        let seq = info.stream_sequence;
                        let message = Msg::new(seq, &message.subject, message.payload.clone(), message.headers.clone());
                        if !self.ingest(feed, generation, message) {
                            // Of the old incarnation: reopen on the new one.
                            break;
                        }
                        self.health[feed as usize].consumer_ok.store(true, Ordering::Relaxed);
                        from = seq + 1;
                    }
                    Some(Err(error)) => {
                        self.health[feed as usize].consumer_ok.store(false, Ordering::Relaxed);
                        tracing::warn!(%error, stream = feed.stream(), "edge feed error; the ordered consumer recovers");
                    }
                    None => {
                        self.health[feed as usize].consumer_ok.store(false, Ordering::Relaxed);
                        break;
                    }
                }
            }
        }
    }

    /// Compares one feed with its stream every [`HEALTH_INTERVAL`]: the feed is live
    /// while NATS is connected, the stream answers and the feed's consumer works (or
    /// has every message the stream has); its lag is how long it has been behind the
    /// stream's last message.
    async fn watch_health(self: Arc<Self>, feed: Feed, client: async_nats::Client, shutdown: CancellationToken) {
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

    /// Adds a message to the ring and queues it to every session of every channel it
    /// belongs to; false (and nothing done) when it comes from a feed opened on an
    /// incarnation of the stream that has since been found recreated.
    fn ingest(&self, feed: Feed, generation: u64, message: Arc<Msg>) -> bool {
        let mut guard = self.lock();
        if guard.generations[feed as usize] != generation {
            return false;
        }
        ingest_locked(&mut guard, feed, &message);
        drop(guard);
        self.heads[feed as usize].send_replace(message.seq);
        metrics::counter!("paytrack_edge_feed_messages_total", "stream" => feed.stream()).increment(1);
        true
    }

    /// Starts a subscription without reading JetStream, when memory can answer it: the
    /// channel is followed by this edge (held by a session, or idle since recently) and
    /// either `since` is continued from the ring or, for a wide or user channel, the
    /// snapshot needs no read. Otherwise None: [`Hub::subscribe`] reads what is missing.
    pub fn subscribe_from_memory(&self, request: &Request) -> Option<Ready> {
        let feed = Feed::of(&request.channel);
        let key = request.key();
        let mut guard = self.lock();
        let inner = &mut *guard;
        let epoch = &inner.epochs[feed as usize].clone();
        let ring = &inner.rings[feed as usize];
        let (head, floor) = (ring.head, ring.floor);
        let (latest, in_ring) = inner.channels.get(&key).and_then(|entry| {
            let latest = entry.latest?;
            Some((latest, |after: u64| entry.in_ring_after(floor, after)))
        })?;
        let since = request.since.as_ref().filter(|s| s.epoch == *epoch && s.seq <= head);
        let resume = match since {
            Some(since) if latest <= since.seq && (latest > 0 || since.seq == 0) => Some((since.seq, head)),
            Some(since) if in_ring(since.seq) => Some((since.seq, if latest <= since.seq { head } else { since.seq })),
            // Whether the stream still holds it takes a read.
            Some(_) => return None,
            None => None,
        };
        let snapshot = match (&resume, static_snapshot(&request.channel)) {
            (Some(_), _) => None,
            (None, Some(snapshot)) => Some(snapshot),
            // A payment's state takes a read.
            (None, None) => return None,
        };
        let recovered = resume.is_some();
        let (position, after) = resume.unwrap_or((latest, head));
        // None when the session cannot take the missed messages at once: a paged replay.
        go_live_from_ring(
            inner, feed, epoch, &key, request, latest, recovered, position, after, snapshot,
        )
    }

    /// Starts a subscription: decides where it continues from and queues `subscribed`.
    /// What it missed is queued at once when memory holds it and the session can take
    /// it (it is then live); otherwise the returned [`Backlog`] goes through
    /// [`Hub::replay`], which sends it as the client drains its queue and hands it over
    /// to the live feed without a gap or a duplicate. `subscribed` and the missed
    /// messages are queued before any live event. On error nothing changed: a
    /// subscription it would replace keeps working.
    pub async fn subscribe(&self, request: Request) -> Result<Subscribed, HistoryError> {
        if let Some(ready) = self.subscribe_from_memory(&request) {
            return Ok(Subscribed { ready, backlog: None });
        }
        let feed = Feed::of(&request.channel);
        let epoch = self.lock().epochs[feed as usize].clone();
        let key = request.key();
        let name = request.channel.name();
        let filters = request.channel.filters(&request.tenant, request.device.as_deref());
        let stream = &self.streams[feed as usize];

        // What is known of the channel: its newest message `latest`, and `known`:
        // the channel has no message in (latest, known].
        let head_before = *self.heads[feed as usize].borrow();
        let held = {
            let inner = self.lock();
            let ring = &inner.rings[feed as usize];
            inner.channels.get(&key).and_then(|e| {
                let latest = e.latest?;
                Some((latest, ring.head, e.below(ring.floor)))
            })
        };
        let (latest, known, below) = match held {
            Some(held) => held,
            None => {
                let latest = {
                    let _permit = self.permits.acquire().await.map_err(unavailable)?;
                    latest_seq(stream, &filters).await?
                };
                // The feed must have passed the channel's newest message before the
                // memory can be trusted after it.
                let mut heads = self.heads[feed as usize].subscribe();
                tokio::time::timeout(self.timeout, heads.wait_for(|h| *h >= latest))
                    .await
                    .map_err(|_| unavailable("edge feed behind the stream"))?
                    .map_err(unavailable)?;
                (latest, head_before.max(latest), None)
            }
        };

        // Continuity holds when the position is of this stream's incarnation, not in
        // the future, and every message of the channel after it is still readable.
        let since = request.since.as_ref().filter(|s| s.epoch == epoch && s.seq <= known);
        let mut resume: Option<(u64, u64)> = None; // (position, replay after)
        if let Some(since) = since {
            if latest <= since.seq && (latest > 0 || since.seq == 0) {
                resume = Some((since.seq, known));
            } else if below.is_some_and(|b| b <= since.seq)
                || self.ring_floor(feed) <= since.seq
                || since.seq + 1 >= self.first_seq(feed).await?
            {
                // Either the ring holds everything of the channel after it, or the
                // stream does.
                let after = if latest <= since.seq { known } else { since.seq };
                resume = Some((since.seq, after));
            }
        }
        // A resume with something to replay takes one of the edge's replay slots
        // before `subscribed`; when none frees up within the edge's timeout, the edge
        // will not replay it now and answers it as one whose continuity is not proven
        // (the snapshot or reload), rather than let it queue up.
        let mut slot = None;
        if let Some((_, after)) = resume
            && after < *self.heads[feed as usize].borrow()
        {
            match tokio::time::timeout(self.timeout, self.replays.clone().acquire_owned()).await {
                Ok(Ok(permit)) => slot = Some(permit),
                _ => {
                    metrics::counter!("paytrack_edge_replays_refused_total").increment(1);
                    tracing::info!(channel = %name, "no replay slot free: answered with a snapshot");
                    resume = None;
                }
            }
        }
        let recovered = resume.is_some();
        let (position, after) = resume.unwrap_or((latest, known));
        let snapshot = if recovered {
            None
        } else {
            self.snapshot(&request, stream).await?
        };
        let subscribed = |position: u64| ServerMessage::Subscribed {
            channel: name.clone(),
            recovered,
            position: Position {
                epoch: epoch.clone(),
                seq: position,
            },
            snapshot: snapshot.clone(),
        };

        // From memory at once, when the ring still holds everything after `after` and
        // the session can take it; otherwise a paged replay, registered now (live
        // messages are buffered from here), `subscribed` queued first.
        let mut inner = self.lock();
        let inner = &mut *inner;
        if inner.epochs[feed as usize] != epoch {
            return Err(unavailable("stream recreated during the subscribe"));
        }
        let ring = &inner.rings[feed as usize];
        let (head, floor) = (ring.head, ring.floor);
        let in_ring = match inner.channels.get(&key) {
            Some(entry) => entry.in_ring_after(floor, after),
            None => floor <= after,
        };
        if in_ring
            && let Some(ready) = go_live_from_ring(
                inner,
                feed,
                &epoch,
                &key,
                &request,
                latest,
                recovered,
                position,
                after,
                snapshot.clone(),
            )
        {
            return Ok(Subscribed { ready, backlog: None });
        }
        let entry = attach(inner, &key, &name, &request);
        entry.subs.insert(
            request.id,
            Sub {
                out: request.out.clone(),
                last_seq: position,
                replay: Some(Box::default()),
            },
        );
        if let Some(old) = request.replaces {
            entry.subs.remove(&old);
        }
        request.out.send(&subscribed(position));
        Ok(Subscribed {
            ready: Ready {
                recovered,
                position: Position {
                    epoch: epoch.clone(),
                    seq: position,
                },
            },
            backlog: Some(Backlog {
                feed,
                key,
                name,
                id: request.id,
                out: request.out.clone(),
                epoch,
                filters,
                last_seq: position,
                latest,
                cursor: after,
                through: head,
                slot,
            }),
        })
    }

    /// Queues `subscribed` again for a channel the session already holds, at the
    /// position it has reached (a repeated subscribe without `since` is idempotent).
    pub fn resubscribed(&self, request: &Request, id: u64) -> Option<Position> {
        let key = request.key();
        let inner = self.lock();
        let epoch = inner.epochs[Feed::of(&request.channel) as usize].clone();
        let sub = inner.channels.get(&key)?.subs.get(&id)?;
        if sub.replay.is_some() {
            return None;
        }
        let position = Position {
            epoch,
            seq: sub.last_seq,
        };
        request.out.send(&ServerMessage::Subscribed {
            channel: request.channel.name(),
            recovered: true,
            position: position.clone(),
            snapshot: None,
        });
        Some(position)
    }

    /// Ends a subscription.
    pub fn detach(&self, key: &str, id: u64) {
        detach_locked(&mut self.lock(), key, id);
    }

    /// Queues a heartbeat naming the position each of `subs` (`(key, id, channel)`)
    /// has reached, under the lock that queues events, so the heartbeat never runs
    /// ahead of them, with the edge's own currency (`live`, `lag_ms`). Returns the
    /// positions sent, which the session's next acks must catch up with.
    pub fn heartbeat<'a>(
        &self,
        out: &Outbox,
        subs: impl Iterator<Item = (&'a str, u64, &'a Channel)>,
    ) -> BTreeMap<String, Position> {
        let (live, lag_ms) = self.currency();
        let inner = self.lock();
        let mut positions = BTreeMap::new();
        for (key, id, channel) in subs {
            if let Some(sub) = inner.channels.get(key).and_then(|e| e.subs.get(&id))
                && sub.replay.is_none()
            {
                positions.insert(
                    channel.name(),
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

    fn ring_floor(&self, feed: Feed) -> u64 {
        self.lock().rings[feed as usize].floor
    }

    async fn first_seq(&self, feed: Feed) -> Result<u64, HistoryError> {
        let _permit = self.permits.acquire().await.map_err(unavailable)?;
        let info = self.streams[feed as usize].get_info().await.map_err(unavailable)?;
        Ok(info.state.first_sequence)
    }

    /// The snapshot of docs/contract.md §7 for a subscription whose continuity is not proven:
    /// the payment's state, `{"reload": <REST list>}` for the wide channels, and
    /// `{"missed": true}` for `user:` channels.
    async fn snapshot(&self, request: &Request, stream: &Stream) -> Result<Option<Value>, HistoryError> {
        match &request.channel {
            Channel::Payment(id) => {
                let _permit = self.permits.acquire().await.map_err(unavailable)?;
                let filter = subjects::status_of_payment(&request.tenant, id);
                let last = paytrack_nats::last_message(stream, &filter)
                    .await
                    .map_err(unavailable)?;
                Ok(last.and_then(|m| render(&m.subject, &m.payload).map(|(_, body)| Value::Object(body))))
            }
            other => Ok(static_snapshot(other)),
        }
    }
}

/// [`Hub::ingest`] under the hub's lock: queues `message` to the channels it belongs
/// to, indexes it on their entries, adds it to the ring and records, on the entries of
/// the message the ring evicts, that it is now their newest at the floor.
fn ingest_locked(inner: &mut Inner, feed: Feed, message: &Arc<Msg>) {
    let keys = keys_of(feed, &message.subject, &inner.user_devices);
    let epoch = &inner.epochs[feed as usize];
    let mut queued = 0;
    for key in keys {
        if let Some(entry) = inner.channels.get_mut(&key) {
            queued += dispatch(entry, epoch, message);
        }
    }
    if queued > 0
        && let Some(headers) = &message.headers
    {
        latency::observe_stamped(latency::FRAME_QUEUED, headers);
    }
    if let Some(evicted) = inner.rings[feed as usize].push(message.clone()) {
        for key in keys_of(feed, &evicted.subject, &inner.user_devices) {
            if let Some(entry) = inner.channels.get_mut(&key) {
                entry.below_floor = Some(evicted.seq);
                if entry.recent.front() == Some(&evicted.seq) {
                    entry.recent.pop_front();
                    if entry.recent.is_empty() {
                        entry.recent = VecDeque::new();
                    }
                }
            }
        }
    }
}

/// An ordered consumer over the whole stream from `from` on.
async fn open_feed(stream: &Stream, from: u64) -> Result<consumer::pull::Ordered, HistoryError> {
    let config = consumer::pull::OrderedConfig {
        deliver_policy: consumer::DeliverPolicy::ByStartSequence { start_sequence: from },
        ..Default::default()
    };
    let consumer = stream.create_consumer(config).await.map_err(unavailable)?;
    consumer.messages().await.map_err(unavailable)
}

/// The newest message of the channel's filters (0 when it has none).
async fn latest_seq(stream: &Stream, filters: &[String]) -> Result<u64, HistoryError> {
    let mut latest = 0;
    for filter in filters {
        if let Some(message) = paytrack_nats::last_message(stream, filter).await.map_err(unavailable)? {
            latest = latest.max(message.sequence);
        }
    }
    Ok(latest)
}

/// The channel's entry, created (and indexed) when this edge did not follow it, or
/// taken back from the idle channels.
fn attach<'a>(inner: &'a mut Inner, key: &str, name: &str, request: &Request) -> &'a mut Entry {
    let head = inner.rings[Feed::of(&request.channel) as usize].head;
    attach_in(&mut inner.channels, &mut inner.user_devices, head, key, name, request)
}

/// [`attach`] on the hub's fields (`head`: the ring's head, where the entry's index
/// starts).
fn attach_in<'a>(
    channels: &'a mut HashMap<String, Entry>,
    user_devices: &mut HashMap<String, HashMap<String, usize>>,
    head: u64,
    key: &str,
    name: &str,
    request: &Request,
) -> &'a mut Entry {
    if !channels.contains_key(key) {
        if let (Channel::User(_), Some(device)) = (&request.channel, &request.device) {
            let user = channel_key(request.tenant.as_str(), name, None);
            *user_devices.entry(user).or_default().entry(device.clone()).or_default() += 1;
        }
        metrics::gauge!("paytrack_edge_channels").increment(1);
    }
    let entry = channels.entry(key.to_owned()).or_insert_with(|| Entry {
        name: name.to_owned(),
        latest: None,
        below_floor: None,
        subs: HashMap::new(),
        idle: None,
        recent: VecDeque::new(),
        indexed_after: head,
    });
    if entry.idle.take().is_some() {
        metrics::gauge!("paytrack_edge_channels").increment(1);
    }
    entry
}

/// The snapshot of a subscription whose continuity is not proven when it needs no
/// read: the REST list to reload for the wide channels, `missed` for user channels
/// (None for a payment, whose state is read from the stream).
fn static_snapshot(channel: &Channel) -> Option<Value> {
    match channel {
        Channel::Payment(_) => None,
        Channel::Merchant(id) => Some(json!({ "reload": format!("/v1/payments?merchant_id={id}") })),
        Channel::Payments => Some(json!({ "reload": "/v1/payments" })),
        // Pushes are notifications, not state: there is nothing to reload. The
        // snapshot says explicitly that pushes between the client's `since` and
        // `position` were missed (aged out of PAYTRACK_PUSH, or another epoch).
        Channel::User(_) => Some(json!({ "missed": true })),
    }
}

/// The channel's messages the ring holds after `after`, oldest first, from the entry's
/// index (the ring is scanned only for what the index does not cover yet, once).
fn missed_in_ring(ring: &Ring, feed: Feed, key: &str, entry: &mut Entry, after: u64) -> Vec<Arc<Msg>> {
    if after < entry.indexed_after {
        let upto = entry.indexed_after;
        let older: VecDeque<u64> = ring
            .after(after)
            .take_while(|m| m.seq <= upto)
            .filter(|m| matches(feed, &m.subject, key))
            .map(|m| m.seq)
            .collect();
        if !older.is_empty() {
            let newer = std::mem::replace(&mut entry.recent, older);
            entry.recent.extend(newer);
        }
        entry.indexed_after = after;
    }
    let start = entry.recent.partition_point(|seq| *seq <= after);
    entry
        .recent
        .range(start..)
        .filter_map(|seq| ring.get(*seq))
        .cloned()
        .collect()
}

/// Registers a subscription whose missed messages (those of the channel after
/// `after`) are all in the ring: queues `subscribed`, then them, and goes live, in one
/// step under the hub's lock. None (and nothing changed) when the session's queue
/// cannot take them at once: they go through a paged replay instead.
#[allow(clippy::too_many_arguments)]
fn go_live_from_ring(
    inner: &mut Inner,
    feed: Feed,
    epoch: &str,
    key: &str,
    request: &Request,
    latest: u64,
    recovered: bool,
    position: u64,
    after: u64,
    snapshot: Option<Value>,
) -> Option<Ready> {
    let name = request.channel.name();
    let Inner {
        rings,
        channels,
        user_devices,
        ..
    } = inner;
    let ring = &rings[feed as usize];
    let floor = ring.floor;
    let entry = attach_in(channels, user_devices, ring.head, key, &name, request);
    let missed = missed_in_ring(ring, feed, key, entry, after);
    let bytes = missed.iter().map(|m| m.payload.len()).sum();
    if !request.out.fits(missed.len() + 1, bytes) {
        // Taken back: idle again (or forgotten) as it was before.
        if entry.subs.is_empty() {
            detach_locked(inner, key, request.id);
        }
        return None;
    }
    if entry.latest.is_none() {
        entry.latest = Some(missed.last().map_or(latest, |m| m.seq.max(latest)));
    }
    if entry.below_floor.is_none() && latest <= floor && floor <= after {
        // Nothing of the channel lies in (latest, after], so none in (latest, floor].
        entry.below_floor = Some(latest);
    }
    let position = Position {
        epoch: epoch.to_owned(),
        seq: position,
    };
    request.out.send(&ServerMessage::Subscribed {
        channel: name.clone(),
        recovered,
        position: position.clone(),
        snapshot,
    });
    let mut sub = Sub {
        out: request.out.clone(),
        last_seq: position.seq,
        replay: None,
    };
    for message in &missed {
        deliver_one(&mut sub, &name, epoch, message);
    }
    if let Some(old) = request.replaces {
        entry.subs.remove(&old);
    }
    entry.subs.insert(request.id, sub);
    Some(Ready { recovered, position })
}

fn detach_locked(inner: &mut Inner, key: &str, id: u64) {
    let Some(entry) = inner.channels.get_mut(key) else {
        return;
    };
    entry.subs.remove(&id);
    if !entry.subs.is_empty() || entry.idle.is_some() {
        return;
    }
    metrics::gauge!("paytrack_edge_channels").decrement(1);
    if entry.latest.is_none() {
        remove_entry(inner, key);
        return;
    }
    // Still followed for a while, so that its sessions resume from memory.
    entry.subs.shrink_to_fit();
    let ticket = inner.next_ticket;
    inner.next_ticket += 1;
    entry.idle = Some(ticket);
    let now = std::time::Instant::now();
    inner.idle.push_back((ticket, now, key.to_owned()));
    while let Some((ticket, since, _)) = inner.idle.front() {
        if inner.idle.len() <= IDLE_CHANNELS && now.duration_since(*since) < IDLE_FOR {
            break;
        }
        let ticket = *ticket;
        if let Some((_, _, key)) = inner.idle.pop_front()
            && inner.channels.get(&key).is_some_and(|e| e.idle == Some(ticket))
        {
            remove_entry(inner, &key);
        }
    }
}

/// Forgets a channel (and its device index).
fn remove_entry(inner: &mut Inner, key: &str) {
    inner.channels.remove(key);
    // A device-bound user channel's key is `tenant user:<id> device`.
    let mut parts = key.splitn(3, ' ');
    if let (Some(tenant), Some(name), Some(device)) = (parts.next(), parts.next(), parts.next())
        && !device.is_empty()
    {
        let user = channel_key(tenant, name, None);
        if let Some(devices) = inner.user_devices.get_mut(&user) {
            if let Some(count) = devices.get_mut(device) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    devices.remove(device);
                }
            }
            if devices.is_empty() {
                inner.user_devices.remove(&user);
            }
        }
    }
}

/// Queues `message` to every subscription of `entry`: encoded once per `prev_seq`
/// (once, when every session is current on the channel), the same bytes to each.
/// Returns to how many subscriptions it was queued.
fn dispatch(entry: &mut Entry, epoch: &str, message: &Arc<Msg>) -> usize {
    entry.recent.push_back(message.seq);
    if entry.latest.is_some() {
        entry.latest = Some(message.seq);
    }
    if entry.subs.is_empty() {
        return 0;
    }
    if message.rendered().is_none() {
        tracing::warn!(channel = %entry.name, seq = message.seq, "unreadable message skipped");
        return 0;
    }
    let span = tracing::info_span!("deliver", trace_id = field::Empty, channel = %entry.name, seq = message.seq);
    if let Some(headers) = &message.headers {
        telemetry::continue_from(&span, &telemetry::NatsHeaders(headers));
    }
    telemetry::record_trace_id(&span);
    let _guard = span.enter();
    let mut encoded: Vec<(u64, Utf8Bytes)> = Vec::with_capacity(1);
    let mut queued = 0usize;
    for sub in entry.subs.values_mut() {
        if message.seq <= sub.last_seq {
            continue;
        }
        if let Some(replay) = &mut sub.replay {
            replay.buffer(message);
            continue;
        }
        let prev_seq = sub.last_seq;
        let frame = match encoded.iter().find(|(p, _)| *p == prev_seq) {
            Some((_, frame)) => frame.clone(),
            None => {
                let Some(frame) = encode_event(&entry.name, epoch, message, prev_seq) else {
                    continue;
                };
                encoded.push((prev_seq, frame.clone()));
                frame
            }
        };
        sub.last_seq = message.seq;
        sub.out.push(frame);
        queued += 1;
    }
    if queued > 0 {
        tracing::debug!(sessions = queued, encodings = encoded.len(), "event queued");
    }
    queued
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    fn msg(seq: u64, subject: &str) -> Arc<Msg> {
        let payload = json!({"type": "note", "kind": "x", "n": seq}).to_string();
        Msg::new(seq, subject, payload.into(), None)
    }

    #[test]
    fn subjects_map_to_their_channels() {
        let none = HashMap::new();
        assert_eq!(
            keys_of(Feed::Status, "paytrack.status.acme.m1.p1", &none),
            vec!["acme payment:p1 ", "acme merchant:m1 ", "acme payments "]
        );
        let mut devices = HashMap::new();
        devices.insert(
            channel_key("acme", "user:u1", None),
            HashMap::from([("d1".to_owned(), 1)]),
        );
        assert_eq!(
            keys_of(Feed::Push, "paytrack.push.acme.u1.all", &devices),
            vec!["acme user:u1 ", "acme user:u1 d1"]
        );
        assert_eq!(
            keys_of(Feed::Push, "paytrack.push.acme.u1.d2", &devices),
            vec!["acme user:u1 ", "acme user:u1 d2"]
        );
        assert!(matches(Feed::Push, "paytrack.push.acme.u1.all", "acme user:u1 d9"));
        assert!(!matches(Feed::Push, "paytrack.push.acme.u1.d1", "acme user:u1 d9"));
        assert!(!matches(Feed::Status, "paytrack.status.other.m1.p1", "acme payments "));
    }

    #[test]
    fn the_ring_is_bounded_and_knows_what_it_covers() {
        let mut ring = Ring::new(10, 3);
        for seq in 11..=15 {
            ring.push(msg(seq, "paytrack.push.a.u.all"));
        }
        assert_eq!((ring.floor, ring.head), (12, 15));
        assert_eq!(ring.after(13).map(|m| m.seq).collect::<Vec<_>>(), vec![14, 15]);
    }

    #[test]
    fn one_encoding_per_prev_seq_is_shared_by_every_session_and_chains() {
        let mut entry = Entry {
            name: "user:u".into(),
            latest: Some(0),
            below_floor: None,
            subs: HashMap::new(),
            idle: None,
            recent: VecDeque::new(),
            indexed_after: 0,
        };
        let mut receivers = Vec::new();
        for id in 0..3 {
            let (out, rx) = Outbox::new(16, 1 << 20);
            receivers.push((out, rx));
            entry.subs.insert(
                id,
                Sub {
                    out: receivers[id as usize].0.clone(),
                    last_seq: 4,
                    replay: None,
                },
            );
        }
        dispatch(&mut entry, "e", &msg(5, "paytrack.push.a.u.all"));
        dispatch(&mut entry, "e", &msg(9, "paytrack.push.a.u.all"));
        // A message the session already has (a replay overlapping the feed) is skipped.
        dispatch(&mut entry, "e", &msg(9, "paytrack.push.a.u.all"));
        assert_eq!(entry.latest, Some(9));
        let mut frames = Vec::new();
        for (_, rx) in &mut receivers {
            let mut mine = Vec::new();
            while let Some(Some(frame)) = rx.recv().now_or_never() {
                mine.push(frame);
            }
            frames.push(mine);
        }
        assert!(frames.iter().all(|f| f.len() == 2 && *f == frames[0]));
        let first: Value = serde_json::from_str(&frames[0][0]).unwrap();
        let second: Value = serde_json::from_str(&frames[0][1]).unwrap();
        assert_eq!(
            (first["prev_seq"].clone(), first["position"]["seq"].clone()),
            (json!(4), json!(5))
        );
        assert_eq!(second["prev_seq"], 5);
        assert_eq!(second["type"], "event");
        assert_eq!(second["kind"], "push");
        assert_eq!(frames[0][1].matches("\"type\"").count(), 1);
        assert_eq!(second["n"], 9);
    }

    #[test]
    fn a_message_is_rendered_only_once_a_session_is_sent_it() {
        let (out, mut rx) = Outbox::new(16, 1 << 20);
        let mut entry = Entry {
            name: "merchant:m1".into(),
            latest: Some(0),
            below_floor: None,
            subs: HashMap::new(),
            idle: None,
            recent: VecDeque::new(),
            indexed_after: 0,
        };
        let nobody = msg(3, "paytrack.push.a.u.all");
        dispatch(&mut entry, "e", &nobody);
        assert!(
            nobody.rendered.get().is_none(),
            "rendered with no session to send it to"
        );
        entry.subs.insert(
            1,
            Sub {
                out,
                last_seq: 3,
                replay: None,
            },
        );
        let held = msg(4, "paytrack.push.a.u.all");
        dispatch(&mut entry, "e", &held);
        assert!(held.rendered.get().is_some_and(Option::is_some));
        let frame: Value = serde_json::from_str(&rx.recv().now_or_never().flatten().unwrap()).unwrap();
        assert_eq!((frame["n"].clone(), frame["prev_seq"].clone()), (json!(4), json!(3)));
    }

    #[test]
    fn an_idle_channel_answers_a_since_older_than_the_ring_from_its_index() {
        let key = channel_key("a", "merchant:m1", None);
        let mut inner = Inner {
            rings: [Ring::new(10, 4), Ring::new(0, 4)],
            epochs: ["e".to_owned(), "e".to_owned()],
            generations: [0; 2],
            channels: HashMap::new(),
            user_devices: HashMap::new(),
            idle: VecDeque::new(),
            next_ticket: 0,
        };
        // Followed since seq 10, when it had no message (latest 0), now idle.
        inner.channels.insert(
            key.clone(),
            Entry {
                name: "merchant:m1".into(),
                latest: Some(0),
                below_floor: None,
                subs: HashMap::new(),
                idle: Some(0),
                recent: VecDeque::new(),
                indexed_after: 10,
            },
        );
        for seq in 11..=17 {
            let merchant = if seq == 12 || seq == 16 { "m1" } else { "m2" };
            ingest_locked(
                &mut inner,
                Feed::Status,
                &msg(seq, &format!("paytrack.status.a.{merchant}.p{seq}")),
            );
        }
        let ring = &inner.rings[0];
        assert_eq!((ring.floor, ring.head), (13, 17));
        let entry = inner.channels.get_mut(&key).unwrap();
        // 12 left the ring: the channel's newest at the floor; 16 is indexed.
        assert_eq!((entry.latest, entry.below_floor), (Some(16), Some(12)));
        assert_eq!(entry.recent, VecDeque::from([16]));
        // A since at or after 12 is continued from the ring; one before it is not.
        assert!(entry.in_ring_after(ring.floor, 12));
        assert!(!entry.in_ring_after(ring.floor, 11));
        let missed: Vec<u64> = missed_in_ring(ring, Feed::Status, &key, entry, 12)
            .iter()
            .map(|m| m.seq)
            .collect();
        assert_eq!(missed, vec![16]);
        assert!(missed_in_ring(ring, Feed::Status, &key, entry, 16).is_empty());
    }
}
