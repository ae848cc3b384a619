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
mod history;
mod protocol;
mod session;

use std::net::SocketAddr;
use std::sync::Arc;

use paytrack_shared::auth::JwtKeys;
use paytrack_shared::config::{ConfigError, Settings};
use paytrack_shared::health::Readiness;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use crate::channel::{Channel, ChannelError};
pub use crate::protocol::{ClientMessage, Event, ServerMessage, close};

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
    /// Token verification.
    pub jwt: JwtKeys,
    /// Connection limits of the listener (header-read timeout).
    pub serve: paytrack_shared::http::ServeOptions,
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
            jwt: JwtKeys::new(s.jwt_secret()?, &s.jwt_issuer, &s.jwt_audience),
            serve: paytrack_shared::http::ServeOptions {
                header_read_timeout: std::time::Duration::from_millis(s.http_header_read_timeout_ms),
            },
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
}

/// A bound, not yet serving, edge.
pub struct WsEdge {
    listener: TcpListener,
    state: Arc<app::EdgeState>,
    readiness: Readiness,
    serve: paytrack_shared::http::ServeOptions,
    layout: paytrack_nats::Layout,
}

impl WsEdge {
    /// Starts connecting to NATS and binds the listener. Nothing here waits for
    /// NATS: [`WsEdge::run`] applies the stream layout, retrying, and `/readyz`
    /// answers 503 until it is applied.
    pub async fn bind(config: Config, shutdown: CancellationToken) -> Result<WsEdge, EdgeError> {
        let client =
            paytrack_nats::connect(&config.nats_url, "paytrack-ws-edge", config.nats_credentials.as_ref()).await?;
        let readiness = Readiness::watching(client.clone());
        let js = paytrack_nats::jetstream(client, config.nats_timeout);
        let listener = TcpListener::bind(config.listen).await?;
        let state = Arc::new(app::EdgeState::new(&config, js, shutdown));
        Ok(WsEdge {
            listener,
            state,
            readiness,
            serve: config.serve,
            layout: config.layout,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until the shutdown token given to [`WsEdge::bind`] is cancelled; open
    /// sessions are closed with 1012 (restarting) first.
    pub async fn run(self) -> Result<(), EdgeError> {
        let addr = self.local_addr()?;
        tracing::info!(%addr, "ws-edge listening");
        let shutdown = self.state.shutdown.clone();
        let (js, readiness, layout, stop) = (
            self.state.js.clone(),
            self.readiness.clone(),
            self.layout,
            shutdown.clone(),
        );
        tokio::spawn(async move {
            let applied = paytrack_nats::retry_until_ready("apply the stream layout", &stop, || {
                paytrack_nats::ensure_streams(&js, &layout)
            })
            .await;
            if applied.is_ok() {
                readiness.set(true);
                tracing::info!("ws-edge ready");
            }
        });
        let router = app::router(self.state, self.readiness);
        paytrack_shared::http::serve(self.listener, router, self.serve, shutdown).await?;
        tracing::info!("ws-edge stopped");
        Ok(())
    }
}

/// Runs ws-edge with `config` until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), EdgeError> {
    WsEdge::bind(config, shutdown).await?.run().await
}
