//! One WebSocket session: its subscriptions, its bounded outbound queue, heartbeats
//! both ways, token expiry and refresh, and the audit of all of it.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::{SinkExt, StreamExt};
use paytrack_shared::auth::Claims;
use paytrack_shared::envelope::{Position, SessionEvent};
use paytrack_shared::telemetry;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, field};

use crate::app::EdgeState;
use crate::audit::Audit;
use crate::channel::{Channel, ChannelError};
use crate::history::render;
use crate::protocol::{ClientMessage, Event, ServerMessage, close};

/// Missed heartbeat intervals after which a silent client is closed.
const SILENCE_LIMIT: u32 = 3;

/// How a session ends: the first close reason wins.
#[derive(Default)]
struct Closer {
    token: CancellationToken,
    reason: Mutex<Option<(u16, String)>>,
}

impl Closer {
    fn close(&self, code: u16, reason: &str) {
        if let Ok(mut slot) = self.reason.lock() {
            slot.get_or_insert_with(|| (code, reason.to_owned()));
        }
        self.token.cancel();
    }

    fn reason(&self) -> (u16, String) {
        self.reason
            .lock()
            .ok()
            .and_then(|r| r.clone())
            .unwrap_or((1000, "closed".to_owned()))
    }
}

/// The position of each subscribed channel, tagged with the subscription's
/// generation so a replaced subscription's task can never write into its successor.
type Positions = BTreeMap<String, (u64, Position)>;

/// The session's outbound side, shared with its subscription tasks. Channel
/// positions change under the same lock that queues the message announcing them, so
/// a heartbeat never names a position whose event is not yet queued before it.
#[derive(Clone)]
struct Outbox {
    queue: mpsc::Sender<ServerMessage>,
    closer: Arc<Closer>,
    positions: Arc<Mutex<Positions>>,
}

impl Outbox {
    /// Starts (or restarts) a channel at `position` and queues its `subscribed`.
    fn start_channel(&self, channel: &str, generation: u64, position: Position, subscribed: ServerMessage) {
        if let Ok(mut positions) = self.positions.lock() {
            positions.insert(channel.to_owned(), (generation, position));
            self.send(subscribed);
        }
    }

    /// Forgets a channel.
    fn end_channel(&self, channel: &str) {
        if let Ok(mut positions) = self.positions.lock() {
            positions.remove(channel);
        }
    }

    /// Queues the channel's next event, built from its `prev_seq`. False when the
    /// subscription was replaced or the session is closing.
    fn send_event(&self, channel: &str, generation: u64, seq: u64, event: impl FnOnce(u64) -> Event) -> bool {
        let Ok(mut positions) = self.positions.lock() else {
            return false;
        };
        let Some((current, position)) = positions.get_mut(channel) else {
            return false;
        };
        if *current != generation {
            return false;
        }
        let prev_seq = std::mem::replace(&mut position.seq, seq);
        self.send(ServerMessage::Event(event(prev_seq)))
    }

    /// Queues a heartbeat naming every channel's latest queued position.
    fn send_heartbeat(&self) {
        if let Ok(positions) = self.positions.lock() {
            let positions = positions
                .iter()
                .map(|(name, (_, p))| (name.clone(), p.clone()))
                .collect();
            self.send(ServerMessage::Heartbeat { positions });
        }
    }

    /// Queues a message; a full queue means the client is too slow: close 4008.
    fn send(&self, message: ServerMessage) -> bool {
        match self.queue.try_send(message) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.closer.close(close::TOO_SLOW, "client too slow: queue overflowed");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

struct Subscription {
    task: JoinHandle<()>,
}

/// Runs a session over an upgraded socket until either side closes.
pub async fn run(socket: WebSocket, state: Arc<EdgeState>, claims: Claims) {
    let session_id = uuid::Uuid::now_v7().to_string();
    let span = tracing::info_span!("session", %session_id, tenant = %claims.tenant, sub = %claims.sub, transport = "websocket");
    let audit = Audit::new(
        state.js.clone(),
        &state.edge_id,
        &session_id,
        &claims.tenant,
        &claims.sub,
        "websocket",
    );
    metrics::gauge!("paytrack_edge_sessions_open", "transport" => "websocket").increment(1);
    metrics::counter!("paytrack_edge_sessions_opened_total", "transport" => "websocket").increment(1);
    let session_state = state.clone();
    async move {
        let state = session_state;
        audit
            .record(SessionEvent::Open {
                scope: claims.channels.clone(),
            })
            .await;
        tracing::info!("session opened");
        let (code, reason) = drive(socket, &state, claims, &session_id, &audit).await;
        metrics::counter!("paytrack_edge_sessions_closed_total", "code" => code.to_string()).increment(1);
        audit
            .record(SessionEvent::Close {
                code,
                reason: reason.clone(),
            })
            .await;
        tracing::info!(code, %reason, "session closed");
    }
    .instrument(span)
    .await;
    metrics::gauge!("paytrack_edge_sessions_open", "transport" => "websocket").decrement(1);
}

async fn drive(
    socket: WebSocket,
    state: &EdgeState,
    mut claims: Claims,
    session_id: &str,
    audit: &Audit,
) -> (u16, String) {
    let (mut sink, mut incoming) = socket.split();
    let (queue, mut outbound) = mpsc::channel::<ServerMessage>(state.session_queue.max(1));
    let closer = Arc::new(Closer::default());
    let outbox = Outbox {
        queue,
        closer: closer.clone(),
        positions: Arc::default(),
    };

    let writer_closer = closer.clone();
    let writer = tokio::spawn(async move {
        loop {
            tokio::select! {
                biased;
                _ = writer_closer.token.cancelled() => break,
                next = outbound.recv() => match next {
                    Some(message) => {
                        let text = serde_json::to_string(&message).unwrap_or_default();
                        if sink.send(Message::Text(text.into())).await.is_err() {
                            writer_closer.close(1006, "socket write failed");
                            break;
                        }
                    }
                    None => break,
                },
            }
        }
        let (code, reason) = writer_closer.reason();
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            })))
            .await;
        let _ = sink.close().await;
    });

    let heartbeat = Duration::from_millis(state.heartbeat_ms.max(1));
    outbox.send(ServerMessage::Welcome {
        session_id: session_id.to_owned(),
        heartbeat_ms: state.heartbeat_ms,
    });
    let mut subscriptions: HashMap<String, Subscription> = HashMap::new();
    let mut ticker = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
    let mut last_heard = Instant::now();

    loop {
        tokio::select! {
                    _ = closer.token.cancelled() => break,
                    _ = state.shutdown.cancelled() => {
                        closer.close(close::RESTARTING, "edge restarting");
                        break;
                    }
                    _ = ticker.tick() => {
                        if last_heard.elapsed() > heartbeat * SILENCE_LIMIT {
                            closer.close(close::BAD_REQUEST, "heartbeat missed");
                            break;
                        }
                        if claims.exp < now_secs() {
                            closer.close(close::UNAUTHORIZED, "token expired");
                            break;
                        }
        outbox.send_heartbeat();
                    }
                    frame = incoming.next() => {
                        let text = match frame {
                            Some(Ok(Message::Text(text))) => text,
                            Some(Ok(Message::Close(_))) | None => {
                                closer.close(1000, "client closed");
                                break;
                            }
                            Some(Ok(_)) => {
                                last_heard = Instant::now();
                                continue;
                            }
                            Some(Err(error)) => {
                                tracing::info!(%error, "websocket read failed");
                                if is_too_big(error) {
                                    closer.close(close::MESSAGE_TOO_BIG, "frame or message too big");
                                } else {
                                    closer.close(close::BAD_REQUEST, "protocol error");
                                }
                                break;
                            }
                        };
                        last_heard = Instant::now();
                        let message = match serde_json::from_str::<ClientMessage>(&text) {
                            Ok(message) => message,
                            Err(error) => {
                                outbox.send(ServerMessage::Error { code: close::BAD_REQUEST, message: format!("bad message: {error}") });
                                continue;
                            }
                        };
                        match message {
                            ClientMessage::Ping => { outbox.send(ServerMessage::Pong); }
                            ClientMessage::Subscribe { channel, since } => {
                                subscribe(state, &claims, &outbox, audit, &mut subscriptions, &channel, since).await;
                            }
                            ClientMessage::Unsubscribe { channel } => {
                                if let Some(s) = subscriptions.remove(&channel) {
                                    s.task.abort();
                                    outbox.end_channel(&channel);
                                }
                            }
                            ClientMessage::Refresh { token } => match state.jwt.verify(&token) {
                                Ok(fresh) if fresh.sub == claims.sub && fresh.tenant == claims.tenant && fresh.channels == claims.channels => {
                                    claims = fresh;
                                }
                                Ok(_) => {
                                    closer.close(close::FORBIDDEN, "refresh token is for another subject or scope");
                                    break;
                                }
                                Err(error) => {
                                    closer.close(close::UNAUTHORIZED, &format!("refresh refused: {error}"));
                                    break;
                                }
                            },
                        }
                    }
                }
    }
    for (_, subscription) in subscriptions.drain() {
        subscription.task.abort();
    }
    closer.token.cancel();
    let _ = writer.await;
    closer.reason()
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
    state: &EdgeState,
    claims: &Claims,
    outbox: &Outbox,
    audit: &Audit,
    subscriptions: &mut HashMap<String, Subscription>,
    raw: &str,
    since: Option<Position>,
) {
    let channel = match Channel::parse(raw).and_then(|c| c.authorize(claims).map(|_| c)) {
        Ok(channel) => channel,
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
            outbox.send(ServerMessage::Error {
                code,
                message: error.to_string(),
            });
            return;
        }
    };
    let name = channel.name();
    if let Some(previous) = subscriptions.remove(&name) {
        previous.task.abort();
    }
    let start = match state
        .history
        .start(&channel, &claims.tenant, claims.device.as_deref(), since.as_ref())
        .await
    {
        Ok(start) => start,
        Err(error) => {
            tracing::warn!(%error, channel = %name, "subscribe failed");
            outbox.send(ServerMessage::Error {
                code: 1011,
                message: "history temporarily unavailable; retry".into(),
            });
            return;
        }
    };
    audit
        .record(SessionEvent::Subscribe {
            channel: name.clone(),
            since,
            recovered: start.recovered,
            position: start.position.clone(),
        })
        .await;
    tracing::info!(channel = %name, recovered = start.recovered, seq = start.position.seq, "subscribed");
    let generation = NEXT_GENERATION.fetch_add(1, Ordering::Relaxed);
    let subscribed = ServerMessage::Subscribed {
        channel: name.clone(),
        recovered: start.recovered,
        position: start.position.clone(),
        snapshot: start.snapshot,
    };
    outbox.start_channel(&name, generation, start.position.clone(), subscribed);
    let task = tokio::spawn(forward(
        start.feed,
        name.clone(),
        start.position.epoch,
        generation,
        outbox.clone(),
    ));
    subscriptions.insert(name, Subscription { task });
}

/// Tells subscriptions apart, so a replaced one can never write into its successor.
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

/// Copies a channel's feed into the session's queue, chaining `prev_seq`.
async fn forward(
    mut feed: async_nats::jetstream::consumer::pull::Ordered,
    channel: String,
    epoch: String,
    generation: u64,
    outbox: Outbox,
) {
    while let Some(next) = feed.next().await {
        let message = match next {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(%error, %channel, "feed error; the ordered consumer recovers");
                continue;
            }
        };
        let Ok(info) = message.info() else { continue };
        let seq = info.stream_sequence;
        // An unreadable message is skipped without entering the chain, so the next
        // event's prev_seq still names the last event the client was sent.
        let Some((kind, body)) = render(&message.subject, &message.payload) else {
            tracing::warn!(%channel, seq, "unreadable message skipped");
            continue;
        };
        let span = tracing::info_span!("deliver", trace_id = field::Empty, %channel, seq);
        if let Some(headers) = &message.headers {
            telemetry::continue_from(&span, &telemetry::NatsHeaders(headers));
        }
        telemetry::record_trace_id(&span);
        let _guard = span.enter();
        let queued = outbox.send_event(&channel, generation, seq, |prev_seq| {
            tracing::debug!(kind = %kind, prev_seq, "event queued");
            Event {
                channel: channel.clone(),
                kind,
                position: Position {
                    epoch: epoch.clone(),
                    seq,
                },
                prev_seq,
                body,
            }
        });
        if !queued {
            return;
        }
    }
}

fn now_secs() -> u64 {
    chrono::Utc::now().timestamp().max(0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox(capacity: usize) -> (Outbox, mpsc::Receiver<ServerMessage>) {
        let (queue, rx) = mpsc::channel(capacity);
        let outbox = Outbox {
            queue,
            closer: Arc::new(Closer::default()),
            positions: Arc::default(),
        };
        (outbox, rx)
    }

    fn position(seq: u64) -> Position {
        Position { epoch: "e".into(), seq }
    }

    fn event(channel: &str, seq: u64) -> impl FnOnce(u64) -> Event {
        let channel = channel.to_owned();
        move |prev_seq| Event {
            channel,
            kind: "transition".into(),
            position: position(seq),
            prev_seq,
            body: serde_json::Map::new(),
        }
    }

    #[test]
    fn a_full_queue_closes_the_session_with_4008_instead_of_dropping_events() {
        let (outbox, _rx) = outbox(1);
        outbox.start_channel("payments", 1, position(0), ServerMessage::Pong);
        assert!(!outbox.send_event("payments", 1, 5, event("payments", 5)));
        assert!(outbox.closer.token.is_cancelled());
        assert_eq!(outbox.closer.reason().0, close::TOO_SLOW);
    }

    #[test]
    fn events_chain_prev_seq_and_heartbeats_follow_queued_events() {
        let (outbox, mut rx) = outbox(16);
        outbox.start_channel("payments", 7, position(3), ServerMessage::Pong);
        assert!(outbox.send_event("payments", 7, 5, event("payments", 5)));
        assert!(outbox.send_event("payments", 7, 9, event("payments", 9)));
        outbox.send_heartbeat();
        let mut received = Vec::new();
        while let Ok(message) = rx.try_recv() {
            received.push(message);
        }
        let prevs: Vec<_> = received
            .iter()
            .filter_map(|m| match m {
                ServerMessage::Event(e) => Some((e.prev_seq, e.position.seq)),
                _ => None,
            })
            .collect();
        assert_eq!(prevs, vec![(3, 5), (5, 9)]);
        match received.last() {
            Some(ServerMessage::Heartbeat { positions }) => assert_eq!(positions["payments"].seq, 9),
            other => panic!("expected a heartbeat last, got {other:?}"),
        }
    }

    #[test]
    fn a_replaced_subscription_cannot_write_into_its_successor() {
        let (outbox, _rx) = outbox(16);
        outbox.start_channel("payment:p", 1, position(0), ServerMessage::Pong);
        outbox.start_channel("payment:p", 2, position(10), ServerMessage::Pong);
        assert!(!outbox.send_event("payment:p", 1, 11, event("payment:p", 11)));
        assert!(outbox.send_event("payment:p", 2, 12, event("payment:p", 12)));
    }
}
