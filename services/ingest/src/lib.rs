//! ingest: paytrack's HTTP front door.
//!
//! It verifies signed provider webhooks and records each one as a raw fact on
//! `paytrack.in.<tenant>.<payment_id>` before answering 2xx, and it answers REST
//! reads from the PostgreSQL projection. It never decides a status: that is the
//! reconciler's job.

mod alerts;
mod app;
mod auth;
mod config;
mod error;
mod payments;
mod publish;
mod webhooks;

use std::net::SocketAddr;

use paytrack_shared::health::Readiness;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use crate::config::Config;
pub use crate::error::ApiError;

/// Why ingest could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The listener could not be bound or failed.
    #[error("http server: {0}")]
    Io(#[from] std::io::Error),
    /// NATS could not be reached or the layout could not be applied.
    #[error(transparent)]
    Nats(#[from] paytrack_nats::LayoutError),
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] paytrack_shared::config::ConfigError),
    /// The database pool could not be created.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// A bound, not yet serving, ingest: lets callers (tests) learn the port first.
pub struct Ingest {
    listener: TcpListener,
    state: app::AppState,
    readiness: Readiness,
    serve: paytrack_shared::http::ServeOptions,
    layout: paytrack_nats::Layout,
}

impl Ingest {
    /// Starts connecting to NATS and PostgreSQL and binds the listener. Nothing here
    /// waits for NATS: [`Ingest::run`] applies the stream layout, retrying, and
    /// `/readyz` answers 503 until it is applied.
    pub async fn bind(config: Config) -> Result<Ingest, IngestError> {
        let state = app::AppState::connect(&config).await?;
        let readiness = Readiness::watching(state.publisher.client().clone());
        let listener = TcpListener::bind(config.listen).await?;
        Ok(Ingest {
            listener,
            state,
            readiness,
            serve: config.serve,
            layout: config.layout,
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` is cancelled, then finishes in-flight requests.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), IngestError> {
        let addr = self.local_addr()?;
        tracing::info!(%addr, "ingest listening");
        let js = self.state.publisher.jetstream().clone();
        let (readiness, layout, stop) = (self.readiness.clone(), self.layout, shutdown.clone());
        tokio::spawn(async move {
            let applied = paytrack_nats::retry_until_ready("apply the stream layout", &stop, || {
                paytrack_nats::ensure_streams(&js, &layout)
            })
            .await;
            if applied.is_ok() {
                readiness.set(true);
                tracing::info!("ingest ready");
            }
        });
        let router = app::router(self.state, self.readiness);
        paytrack_shared::http::serve(self.listener, router, self.serve, shutdown).await?;
        tracing::info!("ingest stopped");
        Ok(())
    }
}

/// Runs ingest with `config` until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), IngestError> {
    Ingest::bind(config).await?.run(shutdown).await
}
