//! Liveness and readiness, shared by every service's HTTP surface.
//!
//! ingest and ws-edge mount [`routes`] on their own listener; the reconciler and the
//! projector, which have no HTTP surface of their own, serve them (and `/metrics`) on
//! an admin listener with [`serve_admin`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

/// Whether a service is ready for traffic: set once its streams or schema exist,
/// and, when it watches a NATS connection, only while that connection is up (a
/// service that cannot reach JetStream should be taken out of rotation).
#[derive(Clone, Default)]
pub struct Readiness {
    started: Arc<AtomicBool>,
    nats: Option<async_nats::Client>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness").field("ready", &self.is_ready()).finish()
    }
}

impl Readiness {
    /// Readiness that also requires `client` to be connected.
    pub fn watching(client: async_nats::Client) -> Readiness {
        Readiness {
            started: Arc::default(),
            nats: Some(client),
        }
    }

    /// Marks start-up complete (or not).
    pub fn set(&self, ready: bool) {
        self.started.store(ready, Ordering::SeqCst);
    }

    /// Whether the service is ready.
    pub fn is_ready(&self) -> bool {
        let connected = self
            .nats
            .as_ref()
            .is_none_or(|c| c.connection_state() == async_nats::connection::State::Connected);
        self.started.load(Ordering::SeqCst) && connected
    }
}

/// `GET /healthz` (the process answers) and `GET /readyz` (it can do its job).
pub fn routes<S: Clone + Send + Sync + 'static>(readiness: Readiness) -> Router<S> {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready).with_state(readiness))
}

async fn ready(State(readiness): State<Readiness>) -> (StatusCode, &'static str) {
    if readiness.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// Serves [`routes`] on `listen` until `shutdown` is cancelled, through the same
/// [`crate::http::serve`] as every other listener (panic guard, header-read
/// timeout at its default: the admin listener is for probes and scrapes).
pub async fn serve_admin(listen: SocketAddr, readiness: Readiness, shutdown: CancellationToken) -> std::io::Result<()> {
    let options = crate::http::ServeOptions::default();
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let app: Router = routes(readiness).merge(crate::metrics::routes());
    crate::http::serve(listener, app, options, shutdown).await
}
