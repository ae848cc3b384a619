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

/// The session's outbound side, shared with its subscription tasks.
#[derive(Clone)]
struct Outbox {
    queue: mpsc::Sender<ServerMessage>,
    closer: Arc<Closer>,
}

impl Outbox {
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
    epoch: String,
    last_seq: Arc<AtomicU64>,
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
    state.metrics.opened();
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
    state.metrics.closed();
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
                let positions = subscriptions
                    .iter()
                    .map(|(name, s)| (name.clone(), Position { epoch: s.epoch.clone(), seq: s.last_seq.load(Ordering::SeqCst) }))
                    .collect::<BTreeMap<_, _>>();
                outbox.send(ServerMessage::Heartbeat { positions });
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
                        closer.close(close::BAD_REQUEST, &format!("protocol error: {error}"));
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
    let filters = channel.filters(&claims.tenant, claims.device.as_deref());
    let start = match state.history.start(&channel, filters, since.as_ref()).await {
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
    outbox.send(ServerMessage::Subscribed {
        channel: name.clone(),
        recovered: start.recovered,
        position: start.position.clone(),
        snapshot: start.snapshot,
    });
    let last_seq = Arc::new(AtomicU64::new(start.position.seq));
    let task = tokio::spawn(forward(
        start.feed,
        name.clone(),
        start.position.epoch.clone(),
        last_seq.clone(),
        outbox.clone(),
    ));
    subscriptions.insert(
        name,
        Subscription {
            epoch: start.position.epoch,
            last_seq,
            task,
        },
    );
}

/// Copies a channel's feed into the session's queue, chaining `prev_seq`.
async fn forward(
    mut feed: async_nats::jetstream::consumer::pull::Ordered,
    channel: String,
    epoch: String,
    last_seq: Arc<AtomicU64>,
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
        let prev_seq = last_seq.swap(seq, Ordering::SeqCst);
        let span = tracing::info_span!("deliver", trace_id = field::Empty, %channel, seq);
        if let Some(headers) = &message.headers {
            telemetry::continue_from(&span, &telemetry::NatsHeaders(headers));
        }
        telemetry::record_trace_id(&span);
        let _guard = span.enter();
        tracing::debug!(kind = %kind, prev_seq, "event queued");
        let event = Event {
            channel: channel.clone(),
            kind,
            position: Position {
                epoch: epoch.clone(),
                seq,
            },
            prev_seq,
            body,
        };
        if !outbox.send(ServerMessage::Event(event)) {
            return;
        }
    }
}

fn now_secs() -> u64 {
    chrono::Utc::now().timestamp().max(0) as u64
}
