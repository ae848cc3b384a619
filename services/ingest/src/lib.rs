//! ingest: paytrack's HTTP front door.
//!
//! It verifies signed provider webhooks and records each one as a raw fact on
//! `paytrack.in.<tenant>.<payment_id>` before answering 2xx, and it answers REST
//! reads from the PostgreSQL projection. It never decides a status: that is the
//! reconciler's job.

mod admissible;
mod alerts;
mod app;
mod auth;
mod capabilities;
mod commanded;
mod commands;
mod config;
mod error;
mod evidence_page;
mod idempotency;
mod initiate;
mod list;
mod openapi;
mod outcomes_feed;
mod params;
mod payment_state;
mod payments;
pub mod provider_refs;
mod publish;
mod push;
mod routes;
mod routing;
pub mod webhooks;

use std::net::SocketAddr;

use paytrack_shared::health::Readiness;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use crate::commands::create_fingerprint;
pub use crate::config::Config;
pub use crate::error::ApiError;
pub use crate::idempotency::Idempotency;
pub use crate::routes::{Route, all as routes};

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
    ack_timeout: std::time::Duration,
}

impl Ingest {
    /// Starts connecting to NATS and PostgreSQL and binds the listener. Nothing here
    /// waits for NATS: [`Ingest::run`] applies the stream layout, retrying, and
    /// `/readyz` answers 503 until it is applied.
    pub async fn bind(config: Config) -> Result<Ingest, IngestError> {
        let state = app::AppState::connect(&config).await?;
        // NATS only: webhooks need nothing else, and a database outage must not take every
        // ingest pod out of the Service (reads answer 503 problems meanwhile).
        let readiness = Readiness::watching(state.publisher.client().clone());
        let listener = TcpListener::bind(config.listen).await?;
        Ok(Ingest {
            listener,
            state,
            readiness,
            serve: config.serve,
            layout: config.layout,
            ack_timeout: config.ack_timeout,
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
        let refs = self.state.provider_refs.clone();
        let (readiness, layout, stop) = (self.readiness.clone(), self.layout, shutdown.clone());
        let (stores, health) = (self.state.stores.clone(), self.state.health.clone());
        let ack_timeout = self.ack_timeout;
        // A wrong layout stops the server: ingest refuses to run on it.
        let refusal = paytrack_nats::RefuseWrongLayout::new(&shutdown);
        let refuse = refusal.clone();
        tokio::spawn(async move {
            let (js_ref, refs, layout) = (&js, &refs, &layout);
            let verified = paytrack_nats::retry_until_laid_out("verify the stream layout", &stop, || async move {
                paytrack_nats::verify_layout(js_ref, layout).await?;
                let buckets = paytrack_nats::open_ingest_buckets(js_ref).await?;
                refs.open().await.map_err(|e| paytrack_nats::LayoutError::Read {
                    stream: paytrack_shared::subjects::STREAM_PROVIDER_REFS.to_owned(),
                    source: Box::new(e),
                })?;
                Ok(buckets)
            })
            .await;
            if let Err(paytrack_nats::NotStarted::WrongLayout(error)) = verified {
                refuse.refuse(error);
                return;
            }
            if let Ok(buckets) = verified {
                // A claim is presumed dead once its owner had time to route, initiate
                // (2 s) and publish (the ack timeout), twice over.
                let claim_timeout = (ack_timeout + std::time::Duration::from_secs(2)) * 2;
                let _ = stores.set(app::Stores {
                    idempotency: idempotency::Idempotency::new(buckets.idempotency, claim_timeout, claim_timeout),
                    commanded: commanded::CommandedPayments::new(buckets.commanded, js.clone()),
                });
                readiness.set(true);
                tracing::info!("ingest ready");
                outcomes_feed::run(js, health, stop).await;
            }
        });
        let router = app::router(self.state, self.readiness);
        paytrack_shared::http::serve(self.listener, router, self.serve, refusal.serving()).await?;
        refusal.outcome()?;
        tracing::info!("ingest stopped");
        Ok(())
    }
}

/// Runs ingest with `config` until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), IngestError> {
    Ingest::bind(config).await?.run(shutdown).await
}
