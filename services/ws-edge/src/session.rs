//! One WebSocket session: its subscriptions (held by the edge's router, not by
//! JetStream), its byte-bounded outbound queue and timed writes, heartbeats both ways,
//! token expiry at `exp` and refresh, and the audit of all of it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::{SinkExt, StreamExt};
use paytrack_shared::auth::Claims;
use paytrack_shared::envelope::{Position, SessionEvent};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;
use tracing::Instrument;

use crate::app::EdgeState;
use crate::audit::Audit;

use crate::channel::{ChannelError, subscribable};
use crate::currency::{Currency, Verdict};
use crate::protocol::{ClientMessage, ServerMessage, close};
use crate::router::{Hub, Ready, Request, Subscribed, TenantChannel};
use crate::send_queue::{Next, Outgoing, SendQueue};
use crate::stream_event::HistoryError;

/// Missed heartbeat intervals after which a silent client is closed.
const SILENCE_LIMIT: u32 = 3;

/// How long the close frame may take to leave; a client that does not read gets none.
const CLOSE_WRITE: Duration = Duration::from_secs(1);

/// Tells subscriptions apart across the edge, so a replaced one is never confused
/// with its successor.
static NEXT_SUBSCRIPTION: AtomicU64 = AtomicU64::new(1);

/// A subscription the router holds for this session.
struct Held {
    key: TenantChannel,
    id: u64,
}

/// A session's few channels, each with its `T`, in a vector sized to what it holds (a
/// map would allocate room for several entries in every session).
struct ByChannel<T>(Vec<(String, T)>);

impl<T> Default for ByChannel<T> {
    fn default() -> Self {
        ByChannel(Vec::new())
    }
}

impl<T> ByChannel<T> {
    fn get(&self, name: &str) -> Option<&T> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    fn insert(&mut self, name: String, value: T) {
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => {
                self.0.reserve_exact(1);
                self.0.push((name, value));
            }
        }
    }

    fn remove(&mut self, name: &str) -> Option<T> {
        let at = self.0.iter().position(|(n, _)| n == name)?;
        let (_, value) = self.0.swap_remove(at);
        if self.0.is_empty() {
            self.0 = Vec::new();
        }
        Some(value)
    }

    fn values(&self) -> impl Iterator<Item = &T> {
        self.0.iter().map(|(_, t)| t)
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn drain(&mut self) -> impl Iterator<Item = (String, T)> + '_ {
        self.0.drain(..)
    }
}

/// A subscribe still replaying.
struct Starting {
    /// The channel, held once it is ready.
    key: TenantChannel,
    id: u64,
    /// The subscribe's task (None while one answered from memory is recorded).
    task: Option<AbortHandle>,
}

/// What a finished subscribe task reports.
struct Started {
    name: String,
    id: u64,
    since: Option<Position>,
    result: Result<Ready, HistoryError>,
}

/// Runs a session over an upgraded socket until either side closes; the close is
/// audited before it returns.
pub fn run(
    socket: WebSocket,
    state: Arc<EdgeState>,
    hub: Arc<Hub>,
    mut claims: Box<Claims>,
) -> impl std::future::Future<Output = ()> {
    // Split before the session's future exists, so that it holds the two halves (the
    // socket itself moves to the heap once) rather than a copy of the socket per
    // nested future. `drive` borrows the halves and the claims: passed by value, the
    // session's future would hold them twice (once here, once in `drive`'s future).
    let mut halves = socket.split();
    async move {
        let opened = Opened::open(&state, &claims, "websocket").await;
        let (code, reason) = drive(&mut halves, &state, &hub, &mut claims, &opened.audit)
            .instrument(opened.span.clone())
            .await;
        opened.close(code, reason).await;
    }
}

/// The two halves of a session's socket.
type Halves = (
    futures::stream::SplitSink<WebSocket, Message>,
    futures::stream::SplitStream<WebSocket>,
);

/// What every session does whatever its transport: its span, the open/closed
/// metrics, the open and close audit and its presence, around `drive`, which runs
/// the transport and answers the close code and reason.
pub async fn lifecycle<F, Fut>(state: &Arc<EdgeState>, claims: &Claims, transport: &'static str, drive: F)
where
    F: FnOnce(String, Audit) -> Fut,
    Fut: std::future::Future<Output = (u16, String)>,
{
    let opened = Opened::open(state, claims, transport).await;
    let span = opened.span.clone();
    let (code, reason) = drive(opened.audit.session_id().to_owned(), opened.audit.clone())
        .instrument(span)
        .await;
    opened.close(code, reason).await;
}

/// An open session's span, audit (which holds its id and transport) and presence,
/// until [`Opened::close`].
struct Opened {
    span: tracing::Span,
    audit: Audit,
    presence: Option<(Arc<crate::presence::Presence>, Arc<str>)>,
}

impl Opened {
    /// Opens a session: counted, audited and present.
    async fn open(state: &Arc<EdgeState>, claims: &Claims, transport: &'static str) -> Opened {
        let session_id = uuid::Uuid::now_v7().to_string();
        // The session's span is log context only (a trace is per event, the `deliver`
        // span): its target is outside `paytrack*`, so it exists only when the log
        // filter wants it, rather than for the trace layer in every session for its
        // whole life.
        let span = tracing::info_span!(target: "ws_edge::session", "session", %session_id, tenant = %claims.tenant, sub = %claims.sub, transport);
        let audit = Audit::new(state, session_id, &claims.tenant, claims.sub.as_str(), transport);
        metrics::gauge!("paytrack_edge_sessions_open", "transport" => transport).increment(1);
        metrics::counter!("paytrack_edge_sessions_opened_total", "transport" => transport).increment(1);
        audit
            .record(SessionEvent::Open {
                scope: claims.channels.clone(),
            })
            .instrument(span.clone())
            .await;
        span.in_scope(|| tracing::info!("session opened"));
        let presence = state.presence.get().and_then(|p| {
            p.track(claims, audit.session_id(), transport)
                .map(|key| (p.clone(), key))
        });
        Opened { span, audit, presence }
    }

    /// Closes a session with `code` and `reason`: no longer present, audited, counted.
    async fn close(self, code: u16, reason: String) {
        if let Some((presence, key)) = self.presence {
            presence.leave(key);
        }
        metrics::counter!("paytrack_edge_sessions_closed_total", "code" => code.to_string()).increment(1);
        self.audit
            .record(SessionEvent::Close {
                code,
                reason: reason.clone(),
            })
            .instrument(self.span.clone())
            .await;
        self.span.in_scope(|| tracing::info!(code, %reason, "session closed"));
        metrics::gauge!("paytrack_edge_sessions_open", "transport" => self.audit.transport()).decrement(1);
    }
}

/// A new subscription id, unique across the edge's transports.
pub fn next_subscription_id() -> u64 {
    NEXT_SUBSCRIPTION.fetch_add(1, Ordering::Relaxed)
}

/// When the token's `exp` (unix seconds) is reached, as an instant.
pub fn expiry(exp: u64) -> Instant {
    let now_ms = chrono::Utc::now().timestamp_millis().max(0) as u64;
    let remaining = exp.saturating_mul(1000).saturating_sub(now_ms);
    Instant::now() + Duration::from_millis(remaining)
}

async fn drive(
    (sink, incoming): &mut Halves,
    state: &Arc<EdgeState>,
    hub: &Arc<Hub>,
    claims: &mut Claims,
    audit: &Audit,
) -> (u16, String) {
    let (out, mut outgoing) = crate::send_queue::SendQueue::counted(
        state.session_queue,
        state.session_queue_bytes,
        state.queued_bytes.clone(),
    );
    // The token is closed at its `exp` by the edge's one expiry timer (4001). The
    // edge's one heartbeat wheel marks the heartbeat due every interval, and closes
    // the session with 1012 when the edge shuts down.
    let mut expiry_key = state.expiries.watch(expiry(claims.exp), &out);
    let wheel_key = state.heartbeats.join(&out);

    out.send(&ServerMessage::Welcome {
        session_id: audit.session_id().to_owned(),
        heartbeat_ms: state.heartbeat_ms,
    });
    let mut held: ByChannel<Held> = ByChannel::default();
    let mut starting: ByChannel<Starting> = ByChannel::default();
    // Created by the first subscribe that reads JetStream, dropped once none runs.
    let mut tasks: Option<JoinSet<Started>> = None;
    let mut currency = Currency::new("websocket");
    let limiter = state.fairness.session_limiter();
    let mut last_heard = Instant::now();

    // Checked before every wait: a close wins over anything the client sends.
    while !out.is_closed() {
        tokio::select! {
            // Biased so a finished subscribe is recorded before the next client frame
            // is read: the audit keeps the session's order.
            biased;
            Some(done) = async { tasks.as_mut()?.join_next().await }, if tasks.as_ref().is_some_and(|t| !t.is_empty()) => {
                if tasks.as_ref().is_some_and(JoinSet::is_empty) {
                    tasks = None;
                }
                let Ok(done) = done else { continue };
                Box::pin(started(state, audit, &out, &mut held, &mut starting, done)).await;
            }
            frame = incoming.next() => {
                let text = match frame {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_))) | None => {
                        out.close(1000, "client closed");
                        break;
                    }
                    Some(Ok(_)) => {
                        last_heard = Instant::now();
                        continue;
                    }
                    Some(Err(error)) => {
                        tracing::info!(%error, "websocket read failed");
                        let reason = format!("protocol error: {error}");
                        if is_too_big(error) {
                            out.close(close::MESSAGE_TOO_BIG, "frame or message too big");
                        } else {
                            out.close(close::BAD_REQUEST, &reason);
                        }
                        break;
                    }
                };
                last_heard = Instant::now();
                let message = match serde_json::from_str::<ClientMessage>(&text) {
                    Ok(message) => message,
                    Err(error) => {
                        out.send(&ServerMessage::Error { code: close::BAD_REQUEST, message: format!("bad message: {error}") });
                        continue;
                    }
                };
                match message {
                    ClientMessage::Ping => { out.send(&ServerMessage::Pong); }
                    ClientMessage::Ack { positions } => currency.ack(positions),
                    ClientMessage::Subscribe { channel, since } => {
                        let held_ids = Subscriptions { held: &mut held, starting: &mut starting, tasks: &mut tasks, limiter: &limiter };
                        Box::pin(subscribe(state, claims, &out, audit, held_ids, &channel, since)).await;
                    }
                    ClientMessage::Unsubscribe { channel } => {
                        if let Some(s) = starting.remove(&channel) {
                            if let Some(task) = s.task {
                                task.abort();
                            }
                            hub.detach(&s.key, s.id);
                        }
                        if let Some(h) = held.remove(&channel) {
                            hub.detach(&h.key, h.id);
                        }
                    }
                    ClientMessage::Refresh { token } => match state.jwt.verify(&token) {
                        Ok(fresh) if fresh.sub == claims.sub && fresh.tenant == claims.tenant && fresh.channels == claims.channels && fresh.device == claims.device => {
                            expiry_key = state.expiries.rewatch(expiry_key, expiry(fresh.exp), &out);
                            *claims = fresh;
                        }
                        Ok(_) => {
                            out.close(close::FORBIDDEN, "refresh token is for another subject or scope");
                            break;
                        }
                        Err(error) => {
                            out.close(close::UNAUTHORIZED, &format!("refresh refused: {error}"));
                            break;
                        }
                    },
                }
            }
            next = outgoing.next() => match next {
                Next::Closed => break,
                Next::Heartbeat => {
                    if !heartbeat(state, hub, &out, audit, &held, &mut currency, last_heard) {
                        break;
                    }
                }
                // The session writes its own frames (no writer task): this one and
                // whatever else is queued now, within the write timeout; a close
                // decided meanwhile ends the write. Boxed: the write's state (its
                // timer among it) takes room only while it runs.
                Next::Frame(frame) => {
                    let write = tokio::time::timeout(state.write_timeout, write_queued(sink, &mut outgoing, &out, frame));
                    let written = Box::pin(async {
                        tokio::select! {
                            biased;
                            written = write => Some(written),
                            _ = out.closed() => None,
                        }
                    })
                    .await;
                    match written {
                        None => break,
                        Some(Ok(Ok(()))) => {}
                        Some(Ok(Err(_))) => {
                            out.close(1006, "socket write failed");
                            break;
                        }
                        Some(Err(_)) => {
                            out.close(close::TOO_SLOW, "client too slow: write timed out");
                            break;
                        }
                    }
                }
            },
        }
    }
    state.heartbeats.leave(wheel_key);
    state.expiries.unwatch(expiry_key);
    if let Some(tasks) = tasks.as_mut() {
        tasks.abort_all();
    }
    for (_, s) in starting.drain() {
        hub.detach(&s.key, s.id);
    }
    for (_, h) in held.drain() {
        hub.detach(&h.key, h.id);
    }
    // Nothing more is queued once the session ends (a reason set before stands).
    out.close(1000, "closed");
    let (code, reason) = out.close_reason();
    // Boxed: the close frame's write and its timer exist only while the session ends.
    Box::pin(say_goodbye(sink, code, reason.clone())).await;
    if code == close::RESTARTING && state.shutdown.is_cancelled() {
        // The edge is stopping: stay until the client has read its 1012 (drain.rs).
        let departure = state.drain.await_departure(incoming).await;
        tracing::debug!(?departure, "client left the draining edge");
    }
    (code, reason)
}

/// Frames written together at most (a burst queued while the session waited).
const BATCH_FRAMES: usize = 64;

/// Bytes written together at most, unless one frame is larger.
const BATCH_BYTES: usize = 64 * 1024;

/// Writes `first` and the frames queued behind it (up to [`BATCH_FRAMES`] and
/// [`BATCH_BYTES`]) in one wake-up of the session, so a burst (an event and the
/// checkpoints right behind it) does not go back through the session's select for
/// each frame; releases their share of the queue's bound once written. Each frame is
/// written to the socket as it is fed (no write buffer, `app.rs`).
async fn write_queued(
    sink: &mut futures::stream::SplitSink<WebSocket, Message>,
    outgoing: &mut Outgoing,
    out: &SendQueue,
    first: Utf8Bytes,
) -> Result<(), axum::Error> {
    let (mut frames, mut bytes) = (1, first.len());
    sink.feed(Message::Text(first)).await?;
    while frames < BATCH_FRAMES && bytes < BATCH_BYTES {
        let Some(frame) = outgoing.try_frame() else { break };
        frames += 1;
        bytes += frame.len();
        sink.feed(Message::Text(frame)).await?;
    }
    sink.flush().await?;
    outgoing.written_batch(out, frames, bytes);
    Ok(())
}

/// Sends the close frame, for at most [`CLOSE_WRITE`] (a client that does not read
/// gets none).
async fn say_goodbye(sink: &mut futures::stream::SplitSink<WebSocket, Message>, code: u16, reason: String) {
    let frame = Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }));
    let _ = tokio::time::timeout(CLOSE_WRITE, async {
        let _ = sink.send(frame).await;
        let _ = sink.close().await;
    })
    .await;
}

/// A due heartbeat: closes a client silent for [`SILENCE_LIMIT`] intervals (false),
/// audits a session stale, and queues the heartbeat with each subscription's position.
fn heartbeat(
    state: &EdgeState,
    hub: &Hub,
    out: &SendQueue,
    audit: &Audit,
    held: &ByChannel<Held>,
    currency: &mut Currency,
    last_heard: Instant,
) -> bool {
    let interval = Duration::from_millis(state.heartbeat_ms.max(1));
    if last_heard.elapsed() > interval * SILENCE_LIMIT {
        out.close(close::BAD_REQUEST, "heartbeat missed");
        return false;
    }
    if let Verdict::Stale(positions) = currency.tick(|channel| held.contains_key(channel)) {
        metrics::counter!("paytrack_edge_sessions_stale_total", "transport" => "websocket").increment(1);
        tracing::info!(?positions, acked = ?currency.acked(), "session stale: acks behind for two heartbeats");
        // Not awaited: while JetStream is away the publish waits for its timeout, and
        // the session must keep reading its client meanwhile.
        let audit = audit.clone();
        let event = SessionEvent::Stale {
            positions,
            acked: currency.acked().clone(),
        };
        tokio::spawn(async move { audit.record(event).await });
    }
    let sent = hub.heartbeat(out, held.values().map(|h| (&h.key, h.id)));
    currency.sent(sent);
    true
}

/// The session's subscription bookkeeping a subscribe changes.
struct Subscriptions<'a> {
    held: &'a mut ByChannel<Held>,
    starting: &'a mut ByChannel<Starting>,
    tasks: &'a mut Option<JoinSet<Started>>,
    limiter: &'a governor::DefaultDirectRateLimiter,
}

/// Whether a read failed because the client sent a frame or message over the limits
/// set at the upgrade (the frame is refused from its header, before its payload is
/// read).
fn is_too_big(error: axum::Error) -> bool {
    error
        .into_inner()
        .downcast_ref::<tungstenite::Error>()
        .is_some_and(|e| matches!(e, tungstenite::Error::Capacity(_)))
}

async fn subscribe(
    state: &Arc<EdgeState>,
    claims: &Claims,
    out: &Arc<SendQueue>,
    audit: &Audit,
    subs: Subscriptions<'_>,
    raw: &str,
    since: Option<Position>,
) {
    // A session exists only once the hub is set (the upgrade checks), so this holds.
    let Some(hub) = state.hub.get() else {
        out.send(&ServerMessage::Error {
            code: close::RESTARTING,
            message: "the edge is not connected to JetStream yet".to_owned(),
        });
        return;
    };
    let (channel, device) = match subscribable(raw, claims) {
        Ok(subscribed) => subscribed,
        Err(error) => {
            let code = match error {
                ChannelError::Unknown(_) => close::BAD_REQUEST,
                ChannelError::Forbidden(_) => close::FORBIDDEN,
            };
            audit
                .record(SessionEvent::Denied {
                    channel: raw.chars().take(80).collect(),
                    code,
                })
                .await;
            out.send(&ServerMessage::Error {
                code,
                message: error.to_string(),
            });
            return;
        }
    };
    let name = channel.to_string();
    let id = next_subscription_id();
    let request = Request {
        channel,
        tenant: claims.tenant.clone(),
        device,
        since,
        out: out.clone(),
        id,
        replaces: subs.held.get(&name).map(|h| h.id),
    };
    if subs.starting.contains_key(&name) {
        out.send(&ServerMessage::Error {
            code: close::BAD_REQUEST,
            message: format!("a subscribe to {name} is in progress; wait for its subscribed"),
        });
        return;
    }
    // Subscribing to a channel already held is idempotent: without `since` the session
    // is told where it stands; with `since` a new subscription replaces the held one
    // only once it is ready.
    if let (Some(current), None) = (subs.held.get(&name), &request.since)
        && hub.resubscribed(&request, current.id).is_some()
    {
        return;
    }
    if !subs.held.contains_key(&name) && subs.held.len() + subs.starting.len() >= state.max_subscriptions {
        out.send(&ServerMessage::Error {
            code: close::BAD_REQUEST,
            message: format!(
                "subscription limit reached: at most {} channels per session",
                state.max_subscriptions
            ),
        });
        return;
    }
    // Fairness: the session's subscribe rate, then, for a subscribe that may read
    // JetStream, a place in its tenant's queue.
    let refused = |refused: crate::fairness::Refused| {
        tracing::info!(%refused, channel = %name, "subscribe refused");
        out.send(&ServerMessage::Error {
            code: close::RATE_LIMITED,
            message: refused.to_string(),
        });
    };
    if let Err(error) = state.fairness.check_rate(subs.limiter) {
        refused(error);
        return;
    }
    let key = request.key();
    let since = request.since.clone();
    // What memory answers (a resume from the ring, a wide channel this edge follows)
    // is answered here, without a task or a JetStream read.
    if let Some(ready) = hub.subscribe_from_memory(&request) {
        subs.starting.insert(name.clone(), Starting { key, id, task: None });
        let done = Started {
            name,
            id,
            since,
            result: Ok(ready),
        };
        started(state, audit, out, subs.held, subs.starting, done).await;
        return;
    }
    let admission = match state.fairness.queue(&claims.tenant) {
        Ok(admission) => admission,
        Err(error) => {
            refused(error);
            return;
        }
    };
    let hub = hub.clone();
    let task_name = name.clone();
    let task = subs.tasks.get_or_insert_with(JoinSet::new).spawn(async move {
        // The tenant's slot is held until a backlog is sent too, so that one
        // tenant's replays take at most its share of the edge's replay slots.
        let result = match admission.enter().await {
            Some(_slot) => match hub.subscribe(request).await {
                Ok(Subscribed {
                    ready,
                    backlog: Some(backlog),
                }) => hub.replay(backlog).await.map(|()| ready),
                Ok(Subscribed { ready, backlog: None }) => Ok(ready),
                Err(error) => Err(error),
            },
            None => Err(crate::stream_event::unavailable("edge shutting down")),
        };
        Started {
            name: task_name,
            id,
            since,
            result,
        }
    });
    subs.starting.insert(
        name,
        Starting {
            key,
            id,
            task: Some(task),
        },
    );
}

/// Records a subscribe's outcome once its task is done.
async fn started(
    state: &Arc<EdgeState>,
    audit: &Audit,
    out: &SendQueue,
    held: &mut ByChannel<Held>,
    starting: &mut ByChannel<Starting>,
    done: Started,
) {
    let Some(start) = starting.remove(&done.name).filter(|s| s.id == done.id) else {
        return;
    };
    match done.result {
        Ok(ready) => {
            held.insert(
                done.name.clone(),
                Held {
                    key: start.key,
                    id: done.id,
                },
            );
            tracing::info!(channel = %done.name, recovered = ready.recovered, seq = ready.position.seq, "subscribed");
            audit
                .record(SessionEvent::Subscribe {
                    channel: done.name,
                    since: done.since,
                    recovered: ready.recovered,
                    position: ready.position,
                })
                .await;
        }
        Err(error) => {
            tracing::warn!(%error, channel = %done.name, "subscribe failed");
            let _ = state;
            out.send(&ServerMessage::Error {
                code: 1011,
                message: "history temporarily unavailable; retry".into(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_at_exp_not_at_a_heartbeat() {
        let now = chrono::Utc::now().timestamp_millis() as u64;
        let exp = now / 1000 + 2;
        let at = expiry(exp);
        let expected = Duration::from_millis(exp * 1000 - now);
        let got = at.saturating_duration_since(Instant::now());
        assert!(
            got <= expected && got + Duration::from_millis(200) >= expected,
            "{got:?} vs {expected:?}"
        );
        assert!(expiry(1) <= Instant::now());
    }
}
