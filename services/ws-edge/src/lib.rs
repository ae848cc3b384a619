//! ws-edge: live sessions over WebSocket.
//!
//! It authenticates a JWT at the upgrade, maps channels to server-side JetStream
//! filters inside the token's tenant, proves continuity with positions
//! (`epoch`, `seq`, `prev_seq`), resumes gap-free or says it cannot and sends a
//! snapshot, and audits every session. It knows nothing about payments beyond the
//! envelope it renders; backend event history is the truth, the socket only shows it.

mod app;
mod audit;
mod channel;
mod currency;
mod drain;
mod expiry;
mod fairness;
mod heartbeat;
mod jwks;
mod openapi;
mod presence;
mod protocol;
mod router;
mod send_queue;
mod session;
mod sse;
mod stream_event;

use std::net::SocketAddr;
use std::sync::Arc;

use paytrack_shared::auth::JwtKeys;
use paytrack_shared::config::{ConfigError, Settings};
use paytrack_shared::health::Readiness;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use crate::channel::ChannelError;
pub use crate::protocol::{ClientMessage, EventFrame, ServerMessage, close};
pub use paytrack_shared::ChannelKey;

/// What ws-edge needs to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where to listen (port 0: any free port).
    pub listen: SocketAddr,
    /// NATS URL.
    pub nats_url: String,
    /// The edge's NATS user, if the server wants one.
    pub nats_credentials: Option<paytrack_nats::Credentials>,
    /// The stream layout to apply.
    pub layout: paytrack_nats::Layout,
    /// How long a JetStream request may take.
    pub nats_timeout: std::time::Duration,
    /// This edge's name in audit subjects.
    pub edge_id: String,
    /// Heartbeat interval in milliseconds.
    pub heartbeat_ms: u64,
    /// Per-session queue bound.
    pub session_queue: usize,
    /// Per-session queue bound in bytes.
    pub session_queue_bytes: usize,
    /// How long one socket write may take before the session is closed with 4008.
    pub write_timeout: std::time::Duration,
    /// Recent messages per stream kept in memory for resumes.
    pub ring_messages: usize,
    /// How long, and how many, channels no session holds stay followed.
    pub idle_channels: router::IdleWindow,
    /// How long a session's presence outlives its last refresh.
    pub presence_ttl: std::time::Duration,
    /// Channels one session may hold.
    pub max_subscriptions: usize,
    /// JetStream reads one edge runs at once for subscribes.
    pub replay_concurrency: usize,
    /// New subscribes per second per session.
    pub subscribe_rate: u32,
    /// Subscribes per tenant at once, and waiting behind them.
    pub tenant_subscribes: (usize, usize),
    /// Token verification.
    pub jwt: JwtKeys,
    /// A JWKS URL fetched at start and refreshed at this interval.
    pub jwks_url: Option<(String, std::time::Duration)>,
    /// Connection limits of the listener (header-read timeout).
    pub serve: paytrack_shared::http::ServeOptions,
    /// How long a stopping edge waits for its clients to leave.
    pub drain_timeout: std::time::Duration,
}

impl Config {
    /// ws-edge's part of the settings.
    pub fn from_settings(s: &Settings) -> Result<Config, ConfigError> {
        Ok(Config {
            listen: s.edge_listen,
            nats_url: s.nats_url.clone(),
            nats_credentials: paytrack_nats::Role::Edge.credentials(s),
            layout: paytrack_nats::Layout::from_settings(s),
            nats_timeout: std::time::Duration::from_millis(s.nats_ack_timeout_ms),
            edge_id: s.edge_id.clone(),
            heartbeat_ms: s.heartbeat_ms,
            session_queue: s.session_queue,
            session_queue_bytes: s.session_queue_bytes,
            write_timeout: std::time::Duration::from_millis(s.session_write_timeout_ms),
            ring_messages: s.edge_ring_messages,
            idle_channels: router::IdleWindow {
                keep_for: std::time::Duration::from_secs(s.edge_idle_channel_secs),
                at_most: s.edge_idle_channels,
            },
            presence_ttl: std::time::Duration::from_secs(s.edge_presence_ttl_secs),
            max_subscriptions: s.edge_max_subscriptions,
            replay_concurrency: s.edge_replay_concurrency,
            subscribe_rate: s.edge_subscribe_rate,
            tenant_subscribes: (s.edge_tenant_subscribes, s.edge_tenant_queue),
            jwt: s.jwt_keys()?,
            jwks_url: s
                .jwt_jwks_url
                .clone()
                .map(|url| (url, std::time::Duration::from_secs(s.jwt_jwks_refresh_secs))),
            serve: paytrack_shared::http::ServeOptions {
                header_read_timeout: std::time::Duration::from_millis(s.http_header_read_timeout_ms),
            },
            drain_timeout: std::time::Duration::from_millis(s.edge_drain_timeout_ms),
        })
    }
}

/// Why ws-edge could not start.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// The listener.
    #[error("http server: {0}")]
    Io(#[from] std::io::Error),
    /// NATS or the stream layout.
    #[error(transparent)]
    Nats(#[from] paytrack_nats::LayoutError),
    /// The edge's feeds could not be opened.
    #[error("edge feed: {0}")]
    Feed(#[from] stream_event::HistoryError),
    /// The JWKS URL could not be fetched or holds a key that cannot be used.
    #[error("JWKS: {0}")]
    Jwks(String),
}

/// A bound, not yet serving, edge.
pub struct WsEdge {
    listener: TcpListener,
    state: Arc<app::EdgeState>,
    readiness: Readiness,
    serve: paytrack_shared::http::ServeOptions,
    layout: paytrack_nats::Layout,
    presence_ttl: std::time::Duration,
    feeds: FeedSettings,
    /// The JWKS to refresh (its URL and how often), once serving.
    jwks: Option<(paytrack_shared::auth::JwtKeys, String, std::time::Duration)>,
}

/// How the edge's fan-out is sized, kept until its feeds can be opened.
#[derive(Debug, Clone, Copy)]
struct FeedSettings {
    ring_messages: usize,
    idle_channels: router::IdleWindow,
    replay_concurrency: usize,
    timeout: std::time::Duration,
}

impl WsEdge {
    /// Starts connecting to NATS and binds the listener. Nothing here waits for
    /// NATS: [`WsEdge::run`] applies the stream layout, retrying, and `/readyz`
    /// answers 503 until it is applied.
    pub async fn bind(config: Config) -> Result<WsEdge, EdgeError> {
        let client =
            paytrack_nats::connect(&config.nats_url, "paytrack-ws-edge", config.nats_credentials.as_ref()).await?;
        let readiness = Readiness::watching(client.clone());
        let js = paytrack_nats::jetstream(client, config.nats_timeout);
        let listener = TcpListener::bind(config.listen).await?;
        let mut jwks = None;
        if let Some((url, every)) = &config.jwks_url {
            let count = jwks::fetch(&config.jwt, url).await.map_err(EdgeError::Jwks)?;
            tracing::info!(%url, keys = count, "JWKS fetched");
            jwks = Some((config.jwt.clone(), url.clone(), *every));
        }
        // The edge's own stop token, held by its sessions and loops from here on;
        // [`WsEdge::run`] cancels it when the caller's token is cancelled.
        let state = Arc::new(app::EdgeState::new(&config, js, CancellationToken::new()));
        Ok(WsEdge {
            listener,
            state,
            readiness,
            serve: config.serve,
            layout: config.layout,
            presence_ttl: config.presence_ttl,
            jwks,
            feeds: FeedSettings {
                ring_messages: config.ring_messages,
                idle_channels: config.idle_channels,
                replay_concurrency: config.replay_concurrency,
                timeout: config.nats_timeout,
            },
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` is cancelled; open sessions are closed with 1012
    /// (restarting) and their close is audited before it returns.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), EdgeError> {
        let addr = self.local_addr()?;
        tracing::info!(%addr, "ws-edge listening");
        let _following = paytrack_shared::shutdown::follow(shutdown, self.state.shutdown.clone());
        let shutdown = self.state.shutdown.clone();
        if let Some((keys, url, every)) = self.jwks.clone() {
            tokio::spawn(jwks::refresh(keys, url, every, shutdown.clone()));
        }
        let presence_ttl = self.presence_ttl;
        let (state, readiness, layout, feeds, stop) = (
            self.state.clone(),
            self.readiness.clone(),
            self.layout,
            self.feeds,
            shutdown.clone(),
        );
        // NATS or the layout may not be there yet at start: verify the layout and open
        // the feeds with backoff; until then `/readyz` is 503 and upgrades are refused
        // with 503. A wrong layout stops the server: the edge refuses to run on it.
        let refusal = paytrack_nats::RefuseWrongLayout::new(&shutdown);
        let refuse = refusal.clone();
        tokio::spawn(async move {
            let js = state.js.clone();
            let verified = paytrack_nats::retry_until_laid_out("verify the stream layout", &stop, || {
                paytrack_nats::verify_layout(&js, &layout)
            })
            .await;
            match verified {
                Ok(()) => {}
                Err(paytrack_nats::NotStarted::WrongLayout(error)) => return refuse.refuse(error),
                Err(paytrack_nats::NotStarted::Stopped(_)) => return,
            }
            let opened = paytrack_nats::retry_until_ready("open the edge's feeds", &stop, || async {
                router::Hub::start(
                    &js,
                    feeds.ring_messages,
                    feeds.idle_channels,
                    feeds.replay_concurrency,
                    feeds.timeout,
                    stop.clone(),
                )
                .await
                .map_err(|e| e.to_string())
            })
            .await;
            let Ok(hub) = opened else { return };
            let presence = paytrack_nats::retry_until_ready("open the presence bucket", &stop, || {
                presence::Presence::open(&js, presence_ttl, &state.edge_id, feeds.timeout)
            })
            .await;
            let Ok(presence) = presence else { return };
            let _ = state.presence.set(presence);
            let _ = state.hub.set(hub);
            readiness.set(true);
            tracing::info!("ws-edge ready");
        });
        tokio::spawn(report_queued_bytes(self.state.clone(), shutdown.clone()));
        tokio::spawn(self.state.expiries.clone().run(shutdown.clone()));
        tokio::spawn(self.state.heartbeats.clone().run(shutdown.clone()));
        let sessions = self.state.sessions.clone();
        let drain_state = self.state.clone();
        let router = app::router(self.state, self.readiness);
        paytrack_shared::http::serve(self.listener, router, self.serve, refusal.serving()).await?;
        refusal.outcome()?;
        let drain_deadline = drain_state.drain.deadline();
        drop(drain_state);
        // Upgraded sockets outlive the HTTP server: wait for every session's 1012, its
        // client's departure and its close audit (`drain.rs`).
        sessions.close();
        if tokio::time::timeout_at(drain_deadline, sessions.wait()).await.is_err() {
            tracing::warn!(open = sessions.len(), "sessions still open after the drain timeout");
        }
        tracing::info!("ws-edge stopped");
        Ok(())
    }
}

/// Runs ws-edge with `config` until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), EdgeError> {
    WsEdge::bind(config).await?.run(shutdown).await
}

/// How often the edge publishes what it holds for clients that have not read yet.
const QUEUED_BYTES_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Keeps `paytrack_edge_queued_bytes{edge}` current: the bytes queued to sessions and
/// not yet written, which returns to its baseline when a slow client is closed.
async fn report_queued_bytes(state: Arc<app::EdgeState>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(QUEUED_BYTES_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                let queued = state.queued_bytes.load(std::sync::atomic::Ordering::Acquire);
                metrics::gauge!("paytrack_edge_queued_bytes", "edge" => state.edge_id.clone()).set(queued as f64);
            }
        }
    }
}
