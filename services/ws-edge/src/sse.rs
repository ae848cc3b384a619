//! The Server-Sent Events fallback (docs/contract.md §7): `GET /v1/sse?channel=<channel>` for
//! clients that cannot open a WebSocket. One session holds one channel, on the same
//! hub as the WebSocket (the same positions, the same encoded event bytes, the same
//! replay and hand-over), through the same bounded [`SendQueue`]; only the framing
//! differs. Each event carries `id: <epoch>:<seq>`, so a browser's automatic
//! reconnect sends `Last-Event-ID`, which resumes exactly as a WebSocket `since` does.
//!
//! Everything is decided before the stream starts: a bad token is 401, a channel
//! outside the token's rights 403, an unknown channel or a malformed `Last-Event-ID`
//! 400, a refused or failed subscribe 429 or 503, all with a JSON body. Once open the
//! stream carries `event: subscribed`, then the channel's events (the default event
//! type, so `EventSource.onmessage` sees them), `event: heartbeat`, and a last
//! `event: close` with the close code and reason when the edge ends the session.
//!
//! SSE has no way back from the client, so a session's acks are implicit: a heartbeat
//! counts as acked once the connection has taken it (hyper asks for the next frame
//! only when the previous ones are written), which keeps `sessions_current{transport
//! ="sse"}` a statement about delivery, not about queueing.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use paytrack_shared::auth::Claims;
use paytrack_shared::envelope::{Position, SessionEvent};
use paytrack_shared::problem::{Problem, ProblemType};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use crate::app::{EdgeState, authenticate, unauthorized};
use crate::audit::Audit;
use paytrack_shared::{ChannelKey, DeviceId};

use crate::channel::{ChannelError, subscribable};
use crate::currency::{Currency, Verdict};
use crate::protocol::close;
use crate::router::{Hub, Request, Subscribed};
use crate::send_queue::{Outgoing, SendQueue};

/// The transport's name in metrics, logs and audit.
pub(crate) const TRANSPORT: &str = "sse";

/// What the session tells the handler once its subscribe is done: the session id, or
/// the status and message to refuse the request with.
type Opened = Result<String, (StatusCode, String)>;

/// `GET /v1/sse?channel=<channel>`: authenticates, checks the channel, subscribes and
/// answers with the event stream, or with a JSON error before any stream exists.
pub async fn open(
    State(state): State<Arc<EdgeState>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let claims = match authenticate(&state, &query, &headers) {
        Ok(claims) => claims,
        Err(error) => return unauthorized(&error),
    };
    let Some(raw) = query.get("channel") else {
        return refuse(ProblemType::InvalidRequest, "the channel query parameter is required");
    };
    let (channel, device) = match subscribable(raw, &claims) {
        Ok(subscribed) => subscribed,
        Err(error @ ChannelError::Unknown(_)) => {
            return refuse(ProblemType::InvalidRequest, &error.to_string());
        }
        Err(error @ ChannelError::Forbidden(_)) => {
            tracing::info!(tenant = %claims.tenant, channel = %raw.chars().take(80).collect::<String>(), "sse channel forbidden");
            return refuse(ProblemType::Forbidden, &error.to_string());
        }
    };
    let since = match headers
        .get("last-event-id")
        .map(|v| v.to_str().ok().and_then(parse_event_id))
    {
        None => None,
        Some(Some(since)) => Some(since),
        Some(None) => {
            return refuse(ProblemType::InvalidRequest, "Last-Event-ID must be <epoch>:<seq>");
        }
    };
    let Some(hub) = state.hub.get().cloned() else {
        return crate::app::not_connected();
    };
    let (out, outgoing) = SendQueue::counted(
        state.session_queue,
        state.session_queue_bytes,
        state.queued_bytes.clone(),
    );
    let (opened_tx, opened_rx) = oneshot::channel();
    let (acks_tx, acks_rx) = watch::channel(BTreeMap::new());
    let session = Session {
        state: state.clone(),
        hub,
        claims,
        channel,
        device,
        since,
        out: out.clone(),
        acks: acks_rx,
    };
    state.sessions.spawn(session.run(opened_tx));
    match opened_rx.await {
        Ok(Ok(session_id)) => {
            let mut response = Sse::new(events(outgoing, out, acks_tx)).into_response();
            let headers = response.headers_mut();
            // Proxies must pass each event on at once.
            headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
            if let Ok(id) = HeaderValue::from_str(&session_id) {
                headers.insert("x-session-id", id);
            }
            response
        }
        Ok(Err((status, message))) => {
            let kind = if status == StatusCode::TOO_MANY_REQUESTS {
                ProblemType::RateLimited
            } else {
                ProblemType::Unavailable
            };
            refuse(kind, &message)
        }
        Err(_) => refuse(ProblemType::Unavailable, "the edge is shutting down"),
    }
}

fn refuse(kind: ProblemType, message: &str) -> Response {
    Problem::new(kind, message).into_response()
}

/// `<epoch>:<seq>` (the `id` of every event) as a position; the epoch may itself hold
/// a colon, the sequence is after the last one.
fn parse_event_id(raw: &str) -> Option<Position> {
    let (epoch, seq) = raw.trim().rsplit_once(':')?;
    if epoch.is_empty() {
        return None;
    }
    Some(Position {
        epoch: epoch.to_owned(),
        seq: seq.parse().ok()?,
    })
}

/// The fields of a queued frame that decide its SSE framing.
#[derive(Deserialize)]
struct Head {
    #[serde(rename = "type")]
    kind: String,
    position: Option<Position>,
    positions: Option<BTreeMap<String, Position>>,
}

/// Closes the session when hyper drops the stream (the client went away).
struct ClientGone(Arc<SendQueue>);

impl Drop for ClientGone {
    fn drop(&mut self) {
        self.0.close(1000, "client closed");
    }
}

/// The session's queue as Server-Sent Events: each queued frame becomes one event,
/// released from the queue's bound as the connection takes it; when the session is
/// closed a last `close` event says why and the stream ends.
fn events(
    outgoing: Outgoing,
    out: Arc<SendQueue>,
    acks: watch::Sender<BTreeMap<String, Position>>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let state = Some((outgoing, ClientGone(out), acks));
    futures::stream::unfold(state, |state| async move {
        let (mut outgoing, gone, acks) = state?;
        let out = gone.0.clone();
        let Some(frame) = outgoing.recv().await else {
            let (code, reason) = out.close_reason();
            let data = json!({ "type": "close", "code": code, "reason": reason }).to_string();
            return Some((Ok(Event::default().event("close").data(data)), None));
        };
        outgoing.written(&out, frame.len());
        let event = match serde_json::from_str::<Head>(&frame) {
            Ok(head) => {
                let mut event = Event::default();
                match head.kind.as_str() {
                    "event" => {}
                    "heartbeat" => {
                        // Everything queued before this heartbeat is with the
                        // connection: the client's implicit ack.
                        acks.send_replace(head.positions.unwrap_or_default());
                        event = event.event("heartbeat");
                    }
                    other => event = event.event(other),
                }
                if let Some(position) = head.position {
                    event = event.id(format!("{}:{}", position.epoch, position.seq));
                }
                event
            }
            Err(_) => Event::default().event("message"),
        };
        Some((Ok(event.data(frame.as_str())), Some((outgoing, gone, acks))))
    })
}

/// One SSE session: a single subscription, its heartbeats, currency and audit.
struct Session {
    state: Arc<EdgeState>,
    hub: Arc<Hub>,
    claims: Claims,
    channel: ChannelKey,
    /// The device the token is bound to.
    device: Option<DeviceId>,
    since: Option<Position>,
    out: Arc<SendQueue>,
    acks: watch::Receiver<BTreeMap<String, Position>>,
}

impl Session {
    /// Runs the session until the client goes, the edge stops or the token expires;
    /// the close is audited before it returns.
    async fn run(self, opened: oneshot::Sender<Opened>) {
        let (state, claims) = (self.state.clone(), self.claims.clone());
        crate::session::lifecycle(&state, &claims, TRANSPORT, |session_id, audit| async move {
            tracing::info!(channel = %self.channel, "sse channel");
            self.drive(&session_id, &audit, opened).await
        })
        .await;
    }

    async fn drive(mut self, session_id: &str, audit: &Audit, opened: oneshot::Sender<Opened>) -> (u16, String) {
        let state = self.state.clone();
        let name = self.channel.to_string();
        let limiter = state.fairness.session_limiter();
        let admission = match state.fairness.admit(&limiter, &self.claims.tenant) {
            Ok(admission) => admission,
            Err(refused) => {
                let _ = opened.send(Err((StatusCode::TOO_MANY_REQUESTS, refused.to_string())));
                return (close::RATE_LIMITED, refused.to_string());
            }
        };
        let id = crate::session::next_subscription_id();
        let request = Request {
            channel: self.channel.clone(),
            tenant: self.claims.tenant.clone(),
            device: self.device.clone(),
            since: self.since.clone(),
            out: self.out.clone(),
            id,
            replaces: None,
        };
        let key = request.key();
        let hub = self.hub.clone();
        let subscribed = tokio::select! {
            result = async {
                match admission.enter().await {
                    Some(slot) => hub.subscribe(request).await.map(|subscribed| (subscribed, slot)),
                    None => Err(crate::stream_event::unavailable("edge shutting down")),
                }
            } => result,
            _ = state.shutdown.cancelled() => Err(crate::stream_event::unavailable("edge shutting down")),
        };
        // The tenant's slot is held until the backlog is sent, so that one tenant's
        // replays take at most its share of the edge's replay slots.
        let (ready, backlog, slot) = match subscribed {
            Ok((Subscribed { ready, backlog }, slot)) => (ready, backlog, slot),
            Err(error) => {
                tracing::warn!(%error, channel = %name, "subscribe failed");
                self.hub.detach(&key, id);
                let message = "history temporarily unavailable; retry".to_owned();
                let _ = opened.send(Err((StatusCode::SERVICE_UNAVAILABLE, message.clone())));
                return (1011, message);
            }
        };
        tracing::info!(channel = %name, recovered = ready.recovered, seq = ready.position.seq, "subscribed");
        audit
            .record(SessionEvent::Subscribe {
                channel: name.clone(),
                since: self.since.clone(),
                recovered: ready.recovered,
                position: ready.position,
            })
            .await;
        if opened.send(Ok(session_id.to_owned())).is_err() {
            self.hub.detach(&key, id);
            return (1000, "client closed before the stream opened".to_owned());
        }

        let heartbeat = Duration::from_millis(state.heartbeat_ms.max(1));
        let mut ticker = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
        let mut currency = Currency::new(TRANSPORT);
        let token_expiry = tokio::time::sleep_until(crate::session::expiry(self.claims.exp));
        tokio::pin!(token_expiry);
        let out = self.out.clone();
        // The backlog of a resume is sent as the connection takes it, beside the
        // heartbeats; if it cannot be read, the session closes so that the client
        // resumes again from its `Last-Event-ID`.
        let replaying = backlog.is_some();
        let replay = async {
            let replayed = match backlog {
                Some(backlog) => self.hub.replay(backlog).await,
                None => Ok(()),
            };
            drop(slot);
            replayed
        };
        tokio::pin!(replay);
        let mut replaying = replaying;
        loop {
            tokio::select! {
                biased;
                _ = state.shutdown.cancelled() => {
                    out.close(close::RESTARTING, "edge restarting");
                    break;
                }
                _ = out.closed() => break,
                replayed = &mut replay, if replaying => {
                    replaying = false;
                    if let Err(error) = replayed {
                        tracing::warn!(%error, channel = %name, "replay failed");
                        out.close(1011, "history temporarily unavailable; retry");
                        break;
                    }
                }
                _ = &mut token_expiry => {
                    out.close(close::UNAUTHORIZED, "token expired");
                    break;
                }
                _ = ticker.tick() => {
                    currency.ack(self.acks.borrow_and_update().clone());
                    if let Verdict::Stale(positions) = currency.tick(|channel| channel == name) {
                        metrics::counter!("paytrack_edge_sessions_stale_total", "transport" => TRANSPORT).increment(1);
                        tracing::info!(?positions, "session stale: heartbeats not taken by the connection");
                        let audit = audit.clone();
                        let event = SessionEvent::Stale { positions, acked: currency.acked().clone() };
                        tokio::spawn(async move { audit.record(event).await });
                    }
                    let sent = self.hub.heartbeat(&out, std::iter::once((&key, id)));
                    currency.sent(sent);
                }
            }
        }
        self.hub.detach(&key, id);
        // Nothing more is queued once the session ends (a reason set before stands).
        out.close(1000, "closed");
        out.close_reason()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_positions() {
        let p = parse_event_id("01J:abc:42").unwrap();
        assert_eq!((p.epoch.as_str(), p.seq), ("01J:abc", 42));
        assert!(parse_event_id(":4").is_none());
        assert!(parse_event_id("e:x").is_none());
        assert!(parse_event_id("e").is_none());
    }
}
