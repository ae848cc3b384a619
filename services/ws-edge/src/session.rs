//! One WebSocket session: its subscriptions (held by the edge's router, not by
//! JetStream), its byte-bounded outbound queue and timed writes, heartbeats both ways,
//! token expiry at `exp` and refresh, and the audit of all of it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::{SinkExt, StreamExt};
use paytrack_shared::auth::Claims;
use paytrack_shared::envelope::{Position, SessionEvent};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;
use tracing::Instrument;

use crate::app::EdgeState;
use crate::audit::Audit;
use crate::channel::{Channel, ChannelError};
use crate::currency::{Currency, Verdict};
use crate::history::HistoryError;
use crate::outbox::Outbox;
use crate::protocol::{ClientMessage, ServerMessage, close};
use crate::router::{Hub, Ready, Request};

/// Missed heartbeat intervals after which a silent client is closed.
const SILENCE_LIMIT: u32 = 3;

/// How long the close frame may take to leave; a client that does not read gets none.
const CLOSE_WRITE: Duration = Duration::from_secs(1);

/// Tells subscriptions apart across the edge, so a replaced one is never confused
/// with its successor.
static NEXT_SUBSCRIPTION: AtomicU64 = AtomicU64::new(1);

/// A subscription the router holds for this session.
struct Held {
    key: String,
    id: u64,
    channel: Channel,
}

/// A subscribe still replaying.
struct Starting {
    key: String,
    id: u64,
    task: AbortHandle,
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
pub async fn run(socket: WebSocket, state: Arc<EdgeState>, hub: Arc<Hub>, claims: Claims) {
    let driver = claims.clone();
    let edge = state.clone();
    lifecycle(&state, &claims, "websocket", |session_id, audit| async move {
        drive(socket, &edge, &hub, driver, &session_id, &audit).await
    })
    .await;
}

/// What every session does whatever its transport: its span, the open/closed
/// metrics, the open and close audit and its presence, around `drive`, which runs
/// the transport and answers the close code and reason.
pub async fn lifecycle<F, Fut>(state: &Arc<EdgeState>, claims: &Claims, transport: &'static str, drive: F)
where
    F: FnOnce(String, Audit) -> Fut,
    Fut: std::future::Future<Output = (u16, String)>,
{
    let session_id = uuid::Uuid::now_v7().to_string();
    let span = tracing::info_span!("session", %session_id, tenant = %claims.tenant, sub = %claims.sub, transport);
    let audit = Audit::new(
        state.js.clone(),
        &state.edge_id,
        &session_id,
        &claims.tenant,
        &claims.sub,
        transport,
    );
    metrics::gauge!("paytrack_edge_sessions_open", "transport" => transport).increment(1);
    metrics::counter!("paytrack_edge_sessions_opened_total", "transport" => transport).increment(1);
    async move {
        audit
            .record(SessionEvent::Open {
                scope: claims.channels.clone(),
            })
            .await;
        tracing::info!("session opened");
        let present = tokio_util::sync::CancellationToken::new();
        if let Some(presence) = state.presence.get() {
            presence.track(claims, &session_id, transport, present.clone());
        }
        let (code, reason) = drive(session_id, audit.clone()).await;
        present.cancel();
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
    metrics::gauge!("paytrack_edge_sessions_open", "transport" => transport).decrement(1);
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
    socket: WebSocket,
    state: &Arc<EdgeState>,
    hub: &Arc<Hub>,
    mut claims: Claims,
    session_id: &str,
    audit: &Audit,
) -> (u16, String) {
    let (mut sink, mut incoming) = socket.split();
    let (out, mut outgoing) = crate::outbox::Outbox::counted(
        state.session_queue,
        state.session_queue_bytes,
        state.queued_bytes.clone(),
    );
    let out = Arc::new(out);

    let writer_out = out.clone();
    let write_timeout = state.write_timeout;
    let writer = tokio::spawn(async move {
        let out = writer_out;
        loop {
            tokio::select! {
                biased;
                _ = out.closer.token.cancelled() => break,
                next = outgoing.recv() => match next {
                    Some(frame) => {
                        let len = frame.len();
                        match tokio::time::timeout(write_timeout, sink.send(Message::Text(frame))).await {
                            Ok(Ok(())) => outgoing.written(&out, len),
                            Ok(Err(_)) => {
                                out.closer.close(1006, "socket write failed");
                                break;
                            }
                            Err(_) => {
                                out.closer.close(close::TOO_SLOW, "client too slow: write timed out");
                                break;
                            }
                        }
                    }
                    None => break,
                },
            }
        }
        let (code, reason) = out.closer.reason();
        let frame = Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }));
        let _ = tokio::time::timeout(CLOSE_WRITE, async {
            let _ = sink.send(frame).await;
            let _ = sink.close().await;
        })
        .await;
    });

    let heartbeat = Duration::from_millis(state.heartbeat_ms.max(1));
    out.send(&ServerMessage::Welcome {
        session_id: session_id.to_owned(),
        heartbeat_ms: state.heartbeat_ms,
    });
    let mut held: HashMap<String, Held> = HashMap::new();
    let mut starting: HashMap<String, Starting> = HashMap::new();
    let mut tasks: JoinSet<Started> = JoinSet::new();
    let mut ticker = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
    let mut currency = Currency::new("websocket");
    let limiter = state.fairness.session_limiter();
    let mut last_heard = Instant::now();
    let token_expiry = tokio::time::sleep_until(expiry(claims.exp));
    tokio::pin!(token_expiry);

    loop {
        tokio::select! {
            // Biased so a finished subscribe is recorded before the next client frame
            // is read: the audit keeps the session's order.
            biased;
            _ = out.closer.token.cancelled() => break,
            _ = state.shutdown.cancelled() => {
                out.closer.close(close::RESTARTING, "edge restarting");
                break;
            }
            _ = &mut token_expiry => {
                out.closer.close(close::UNAUTHORIZED, "token expired");
                break;
            }
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                let Ok(done) = done else { continue };
                started(state, audit, &out, &mut held, &mut starting, done).await;
            }
            _ = ticker.tick() => {
                if last_heard.elapsed() > heartbeat * SILENCE_LIMIT {
                    out.closer.close(close::BAD_REQUEST, "heartbeat missed");
                    break;
                }
                if let Verdict::Stale(positions) = currency.tick(|channel| held.contains_key(channel)) {
                    metrics::counter!("paytrack_edge_sessions_stale_total", "transport" => "websocket").increment(1);
                    tracing::info!(?positions, acked = ?currency.acked(), "session stale: acks behind for two heartbeats");
                    // Not awaited: while JetStream is away the publish waits for its
                    // timeout, and the session must keep reading its client meanwhile.
                    let audit = audit.clone();
                    let event = SessionEvent::Stale { positions, acked: currency.acked().clone() };
                    tokio::spawn(async move { audit.record(event).await });
                }
                let sent = hub.heartbeat(&out, held.values().map(|h| (h.key.as_str(), h.id, &h.channel)));
                currency.sent(sent);
            }
            frame = incoming.next() => {
                let text = match frame {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_))) | None => {
                        out.closer.close(1000, "client closed");
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
                            out.closer.close(close::MESSAGE_TOO_BIG, "frame or message too big");
                        } else {
                            out.closer.close(close::BAD_REQUEST, &reason);
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
                        let held_ids = Subscriptions { held: &held, starting: &mut starting, tasks: &mut tasks, limiter: &limiter };
                        subscribe(state, &claims, &out, audit, held_ids, &channel, since).await;
                    }
                    ClientMessage::Unsubscribe { channel } => {
                        if let Some(s) = starting.remove(&channel) {
                            s.task.abort();
                            hub.detach(&s.key, s.id);
                        }
                        if let Some(h) = held.remove(&channel) {
                            hub.detach(&h.key, h.id);
                        }
                    }
                    ClientMessage::Refresh { token } => match state.jwt.verify(&token) {
                        Ok(fresh) if fresh.sub == claims.sub && fresh.tenant == claims.tenant && fresh.channels == claims.channels && fresh.device == claims.device => {
                            token_expiry.as_mut().reset(expiry(fresh.exp));
                            claims = fresh;
                        }
                        Ok(_) => {
                            out.closer.close(close::FORBIDDEN, "refresh token is for another subject or scope");
                            break;
                        }
                        Err(error) => {
                            out.closer.close(close::UNAUTHORIZED, &format!("refresh refused: {error}"));
                            break;
                        }
                    },
                }
            }
        }
    }
    tasks.abort_all();
    for (_, s) in starting.drain() {
        hub.detach(&s.key, s.id);
    }
    for (_, h) in held.drain() {
        hub.detach(&h.key, h.id);
    }
    out.closer.token.cancel();
    let _ = writer.await;
    out.closer.reason()
}

/// The session's subscription bookkeeping a subscribe changes.
struct Subscriptions<'a> {
    held: &'a HashMap<String, Held>,
    starting: &'a mut HashMap<String, Starting>,
    tasks: &'a mut JoinSet<Started>,
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
    out: &Arc<Outbox>,
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
            out.send(&ServerMessage::Error {
                code,
                message: error.to_string(),
            });
            return;
        }
    };
    let name = channel.name();
    let id = next_subscription_id();
    let request = Request {
        channel,
        tenant: claims.tenant.clone(),
        device: claims.device.clone(),
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
    // Fairness: the session's subscribe rate, then a place in its tenant's queue.
    let admission = match state.fairness.admit(subs.limiter, &claims.tenant) {
        Ok(admission) => admission,
        Err(refused) => {
            tracing::info!(%refused, channel = %name, "subscribe refused");
            out.send(&ServerMessage::Error {
                code: close::RATE_LIMITED,
                message: refused.to_string(),
            });
            return;
        }
    };
    let key = request.key();
    let hub = hub.clone();
    let since = request.since.clone();
    let task_name = name.clone();
    let task = subs.tasks.spawn(async move {
        let result = match admission.enter().await {
            Some(_slot) => hub.subscribe(request).await,
            None => Err(crate::history::unavailable("edge shutting down")),
        };
        Started {
            name: task_name,
            id,
            since,
            result,
        }
    });
    subs.starting.insert(name, Starting { key, id, task });
}

/// Records a subscribe's outcome once its task is done.
async fn started(
    state: &Arc<EdgeState>,
    audit: &Audit,
    out: &Outbox,
    held: &mut HashMap<String, Held>,
    starting: &mut HashMap<String, Starting>,
    done: Started,
) {
    let Some(start) = starting.remove(&done.name).filter(|s| s.id == done.id) else {
        return;
    };
    match done.result {
        Ok(ready) => {
            let channel = match Channel::parse(&done.name) {
                Ok(channel) => channel,
                Err(_) => return,
            };
            held.insert(
                done.name.clone(),
                Held {
                    key: start.key,
                    id: done.id,
                    channel,
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
