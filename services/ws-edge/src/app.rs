//! The edge's router: the WebSocket upgrade (authenticated before any socket
//! exists), the operator console, health and metrics.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Path, Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use paytrack_shared::auth::{AuthError, JwtKeys, bearer};
use paytrack_shared::health::{self, Readiness};
use paytrack_shared::problem::{Problem, ProblemType};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

use crate::Config;
use crate::router::Hub;
use crate::session;

/// Largest client message, and frame, accepted on a socket. The frame limit matters
/// as much as the message limit: a frame is read (and its buffer reserved) whole
/// before the message limit is checked, so without it a client could make the edge
/// hold 16 MiB per connection.
const MAX_CLIENT_MESSAGE: usize = 64 * 1024;

/// The socket's read buffer reserved up front: none. Clients send little (acks,
/// pings, subscribes), so a frame's room is reserved when its header arrives and an
/// idle session holds no buffer (4 KiB here was most of an idle session's memory).
/// Writes are not buffered either (`write_buffer_size(0)`): each frame goes out as it
/// is written. A larger write buffer would let a burst go out in one write, but
/// tungstenite keeps the buffer's grown room for the socket's life: measured, the
/// sessions that had received broadcasts held about 1.4 KiB more each.
const READ_BUFFER: usize = 0;

/// What every session shares.
pub struct EdgeState {
    /// JetStream, for feeds and audit.
    pub js: async_nats::jetstream::Context,
    /// The edge's fan-out (its feeds, ring and channel map), set once the feeds are
    /// open; until then upgrades are refused with 503.
    pub hub: std::sync::OnceLock<Arc<Hub>>,
    /// Token verification.
    pub jwt: JwtKeys,
    /// Heartbeat interval.
    pub heartbeat_ms: u64,
    /// Per-session queue bound.
    pub session_queue: usize,
    /// Per-session queue bound in bytes.
    pub session_queue_bytes: usize,
    /// How long one socket write may take.
    pub write_timeout: std::time::Duration,
    /// Channels one session may hold.
    pub max_subscriptions: usize,
    /// Subscribe rate per session and subscribes per tenant.
    pub fairness: crate::fairness::Fairness,
    /// Every running session, so shutdown can wait for their close audit.
    pub sessions: tokio_util::task::TaskTracker,
    /// This edge's name.
    pub edge_id: String,
    /// Which sessions each user has open (set with the hub, once JetStream answers).
    pub presence: std::sync::OnceLock<Arc<crate::presence::Presence>>,
    /// Presence reads per tenant.
    pub presence_reads: crate::presence::ReadLimit,
    /// Bytes queued to every session and not yet written (`paytrack_edge_queued_bytes`).
    pub queued_bytes: Arc<std::sync::atomic::AtomicUsize>,
    /// Every WebSocket session's token deadline, on one timer.
    pub expiries: Arc<crate::expiry::Expiries>,
    /// Every WebSocket session's heartbeat, on one timer (which also closes them when
    /// the edge shuts down).
    pub heartbeats: Arc<crate::heartbeat::Heartbeats>,
    /// Cancelled when the edge shuts down.
    pub shutdown: CancellationToken,
    /// How long, once stopping, sessions wait for their clients to leave.
    pub drain: crate::drain::Drain,
}

impl EdgeState {
    /// State for `config`.
    pub fn new(config: &Config, js: async_nats::jetstream::Context, shutdown: CancellationToken) -> EdgeState {
        EdgeState {
            hub: std::sync::OnceLock::new(),
            js,
            jwt: config.jwt.clone(),
            heartbeat_ms: config.heartbeat_ms,
            session_queue: config.session_queue,
            session_queue_bytes: config.session_queue_bytes,
            write_timeout: config.write_timeout,
            max_subscriptions: config.max_subscriptions,
            fairness: crate::fairness::Fairness::new(
                config.subscribe_rate,
                config.tenant_subscribes.0,
                config.tenant_subscribes.1,
            ),
            sessions: tokio_util::task::TaskTracker::new(),
            edge_id: config.edge_id.clone(),
            queued_bytes: Arc::default(),
            presence: std::sync::OnceLock::new(),
            presence_reads: crate::presence::ReadLimit::default(),
            expiries: Arc::default(),
            heartbeats: Arc::new(crate::heartbeat::Heartbeats::new(std::time::Duration::from_millis(
                config.heartbeat_ms,
            ))),
            shutdown,
            drain: crate::drain::Drain::new(config.drain_timeout),
        }
    }
}

/// Every route of the edge; every error answer is a problem body.
pub fn router(state: Arc<EdgeState>, readiness: Readiness) -> Router {
    let router = Router::new()
        .route("/v1/ws", get(upgrade))
        .route("/v1/presence/{user}", get(presence_of))
        .route("/v1/sse", get(crate::sse::open))
        .route("/", get(console_page))
        .route("/payments/{id}", get(console_page))
        .route("/assets/console.js", get(console_script))
        .route("/openapi.json", get(crate::openapi::serve))
        .with_state(state)
        .merge(health::routes(readiness))
        .merge(paytrack_shared::metrics::routes());
    paytrack_shared::metrics::time_requests(paytrack_shared::problem::problem_bodies(router), "ws-edge")
        .layer(TraceLayer::new_for_http().make_span_with(paytrack_shared::http::request_span))
}

async fn upgrade(
    State(state): State<Arc<EdgeState>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    // Boxed: the claims (152 bytes) are captured by the upgrade's callback, which the
    // session's task keeps for its whole life, and held by the session itself; inline,
    // every session's task would carry them twice.
    let claims = match authenticate(&state, &query, &headers) {
        Ok(mut claims) => {
            // The audience and issuer were checked by the verification and nothing in
            // a session reads them again (a refresh compares subject, tenant, scope
            // and device): the session does not keep their two strings.
            claims.aud = String::new();
            claims.iss = String::new();
            Box::new(claims)
        }
        Err(error) => return unauthorized(&error),
    };
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => return Problem::new(ProblemType::InvalidRequest, rejection.body_text()).into_response(),
    };
    let Some(hub) = state.hub.get().cloned() else {
        return not_connected();
    };
    upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| {
            let sessions = state.sessions.clone();
            sessions.track_future(session::run(socket, state, hub, claims))
        })
}

/// `GET /v1/presence/{user}`: the sessions `user` has open now, on any edge, from the
/// edge's view of the presence bucket. An operator token of the tenant may ask for any
/// user; a user's token for itself only. A tenant reading faster than its limit gets
/// 429 with a Retry-After.
async fn presence_of(
    State(state): State<Arc<EdgeState>>,
    Path(user): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let claims = match authenticate(&state, &query, &headers) {
        Ok(claims) => claims,
        Err(e) => return unauthorized(&e),
    };
    if paytrack_shared::ids::validate_token(&user, "user").is_err() {
        return Problem::new(ProblemType::InvalidRequest, "a user id is a subject token").into_response();
    }
    if claims.channels.is_some() && claims.sub != user.as_str() {
        return Problem::new(ProblemType::Forbidden, "this token may ask for its own presence only").into_response();
    }
    if let Err(wait) = state.presence_reads.check(&claims.tenant) {
        let retry_after = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        tracing::info!(tenant = %claims.tenant, "presence reads limited");
        return Problem::new(
            ProblemType::RateLimited,
            "too many presence reads for this tenant; retry later",
        )
        .header(header::RETRY_AFTER, HeaderValue::from(retry_after.max(1)))
        .into_response();
    }
    let Some(presence) = state.presence.get() else {
        return not_connected();
    };
    match presence.of(&claims.tenant, &user).await {
        Ok(sessions) => axum::Json(json!({ "user": user, "sessions": sessions })).into_response(),
        Err(error) => {
            tracing::warn!(tenant = %claims.tenant, %error, "presence not read");
            Problem::new(ProblemType::Unavailable, "presence could not be read; retry later")
                .header(header::RETRY_AFTER, HeaderValue::from_static("1"))
                .into_response()
        }
    }
}

/// The token's claims (from the `Authorization` header, else the `token` query
/// parameter); every transport checks it before any stream exists.
pub fn authenticate(
    state: &EdgeState,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<paytrack_shared::auth::Claims, AuthError> {
    let header_token = bearer(headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()));
    let token = header_token.or_else(|| query.get("token").map(String::as_str));
    token.ok_or(AuthError::Missing).and_then(|t| state.jwt.verify(t))
}

/// The 401 every transport answers a missing or invalid token with.
pub fn unauthorized(error: &AuthError) -> Response {
    tracing::info!(%error, "session refused");
    Problem::new(ProblemType::Unauthorized, error.to_string())
        .header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
        .into_response()
}

/// The 503 every transport answers while the edge's feeds are not open yet.
pub fn not_connected() -> Response {
    Problem::new(ProblemType::Unavailable, "the edge is not connected to JetStream yet")
        .header(header::RETRY_AFTER, HeaderValue::from_static("1"))
        .into_response()
}

/// The operator console's page, for the list (`/`) and for a payment's deep link
/// (`/payments/{id}`): one shell, the script routes by the address.
async fn console_page() -> Html<&'static str> {
    Html(include_str!("../assets/console.html"))
}

/// The console's script, bundled from `clients/console` with the TypeScript client
/// library (`npm run build:console` in `clients/typescript`; committed, so the edge
/// builds without node).
async fn console_script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("../assets/console.js"),
    )
        .into_response()
}
