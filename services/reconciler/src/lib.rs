//! reconciler: the canonical status state machine and the single tie-breaker.
//!
//! It reads raw facts from `paytrack.in.>`, maps each to a canonical status with a
//! named rule, checks the move against the status model, and appends the transition
//! to `paytrack.status.<tenant>.<merchant>.<payment_id>` with
//! `Nats-Expected-Last-Subject-Sequence` checked against the payment's whole history
//! (`paytrack.status.<tenant>.*.<payment_id>`), so each payment's history is a strict
//! chain no matter how many reconcilers run. It is the only writer of
//! `paytrack.status.>`, and records what every fact did on `paytrack.outcome.>`.

mod alerts;
pub mod amounts;
mod claims;
mod decide;
mod direction;
pub mod judge;
mod mapping;
mod money_alerts;
pub mod movements;
pub mod sweep;

use std::net::SocketAddr;

use paytrack_nats::{ServiceStart, StartError};
use paytrack_shared::config::Settings;
use paytrack_shared::health::{ConsumerConfig, ConsumerService};
use paytrack_shared::subjects;
use tokio_util::sync::CancellationToken;

pub use crate::decide::{Decision, Reconciler};
pub use crate::mapping::{MappedStatus, MovementFact, map_fact, movement_of};

/// What the reconciler needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// NATS URL.
    pub nats_url: String,
    /// The reconciler's NATS user, if the server wants one.
    pub nats_credentials: Option<paytrack_nats::Credentials>,
    /// The stream layout to apply.
    pub layout: paytrack_nats::Layout,
    /// How long a JetStream request may take.
    pub nats_timeout: std::time::Duration,
    /// Optional health listener.
    pub admin_listen: Option<SocketAddr>,
    /// How a fact that keeps failing is retried, then parked on the dead-letter stream.
    pub retry: paytrack_nats::RetryPolicy,
    /// Stuck-payment sweeps.
    pub sweep: sweep::SweepConfig,
    /// Payments decided at once (see [`paytrack_nats::consume_in_lanes`]).
    pub lanes: std::num::NonZeroUsize,
    /// How long a payment claim is kept after its last write.
    pub claims_max_age: std::time::Duration,
}

impl Config {
    /// The reconciler's part of the settings.
    pub fn from_settings(s: &Settings) -> Config {
        Config {
            nats_url: s.nats_url.clone(),
            nats_credentials: paytrack_nats::Role::Reconciler.credentials(s),
            layout: paytrack_nats::Layout::from_settings(s),
            nats_timeout: std::time::Duration::from_millis(s.nats_ack_timeout_ms),
            admin_listen: s.admin_listen,
            retry: paytrack_nats::RetryPolicy::from_settings(s),
            sweep: sweep::SweepConfig {
                interval: std::time::Duration::from_millis(s.reconciler_sweep_interval_ms.max(10)),
                window_divisor: s.reconciler_window_divisor.max(1),
                trace_gap: std::time::Duration::from_millis(s.reconciler_trace_gap_ms),
                status_query_urls: sweep::SweepConfig::parse_urls(&s.reconciler_status_query_urls),
                query_timeout: std::time::Duration::from_millis(s.reconciler_status_query_timeout_ms),
                gateway_token: s.simulator_token.clone(),
                max_per_tenant: s.reconciler_sweep_max_per_tenant,
            },
            lanes: std::num::NonZeroUsize::new(s.reconciler_lanes).unwrap_or(std::num::NonZeroUsize::MIN),
            claims_max_age: std::time::Duration::from_secs(s.reconciler_claims_max_age_secs.max(1)),
        }
    }
}

/// Why the reconciler could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReconcilerError {
    /// NATS or the stream layout.
    #[error(transparent)]
    Nats(#[from] paytrack_nats::LayoutError),
    /// The admin listener.
    #[error("admin listener: {0}")]
    Io(#[from] std::io::Error),
}

impl From<StartError> for ReconcilerError {
    fn from(error: StartError) -> ReconcilerError {
        match error {
            StartError::Nats(error) => ReconcilerError::Nats(error),
            StartError::Admin(error) => ReconcilerError::Io(error),
            // The reconciler's readiness watches no database.
            StartError::Postgres(error) => ReconcilerError::Io(std::io::Error::other(error)),
        }
    }
}

/// A reconciler whose admin listener is bound and which does not run yet
/// ([`ConsumerService`]). NATS being down at start is not an error: the layout and
/// the consumer are retried with backoff while `/readyz` answers 503.
pub type ReconcilerService = ConsumerService<Config>;

impl ConsumerConfig for Config {
    type Error = ReconcilerError;

    fn admin_listen(&self) -> Option<SocketAddr> {
        self.admin_listen
    }

    fn run_with_admin(
        self,
        admin: Option<std::net::TcpListener>,
        shutdown: CancellationToken,
    ) -> impl Future<Output = Result<(), ReconcilerError>> + Send {
        run_with_admin(self, admin, shutdown)
    }
}

/// Binds and runs the reconciler until `shutdown` is cancelled ([`ReconcilerService`]).
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), ReconcilerError> {
    ReconcilerService::bind(config).await?.run(shutdown).await
}

/// [`run`], serving `/readyz` and `/metrics` on `admin` (already bound) instead of
/// `config.admin_listen`, so a test can bind port 0 and know the address without a
/// window in which another server could take the port.
pub async fn run_with_admin(
    config: Config,
    admin: Option<std::net::TcpListener>,
    shutdown: CancellationToken,
) -> Result<(), ReconcilerError> {
    let ServiceStart { js, readiness, admin } = ServiceStart::begin(
        "paytrack-reconciler",
        &config.nats_url,
        config.nats_credentials.as_ref(),
        config.nats_timeout,
        (admin, config.admin_listen),
        None,
        &shutdown,
    )
    .await?;
    let started = paytrack_nats::retry_until_laid_out("verify the layout and bind the consumer", &shutdown, || async {
        paytrack_nats::verify_layout(&js, &config.layout).await?;
        let consumer = paytrack_nats::ensure_consumer(
            &js,
            subjects::STREAM_IN,
            config
                .retry
                .durable_consumer(paytrack_nats::CONSUMER_RECONCILER, subjects::IN_ALL),
        )
        .await?;
        let sweeps =
            sweep::Sweeps::open(&js, config.sweep.clone())
                .await
                .map_err(|e| paytrack_nats::LayoutError::Read {
                    stream: subjects::STREAM_SWEEP.to_owned(),
                    source: Box::new(e),
                })?;
        let reconciler = Reconciler::with_claims_max_age(js.clone(), config.claims_max_age)
            .await?
            .with_sweeps(sweeps.clone());
        Ok::<_, paytrack_nats::LayoutError>((consumer, reconciler, sweeps))
    })
    .await;
    let (mut consumer, reconciler, sweeps) = match started {
        Ok(started) => started,
        Err(not_started) => return Ok(admin.stopped_before_ready("reconciler", not_started).await?),
    };
    let watch =
        paytrack_nats::ConsumerWatch::start(&js, &readiness, std::slice::from_mut(&mut consumer), &shutdown).await;
    tracing::info!("reconciler consuming {}", subjects::IN_ALL);

    let supervisor = paytrack_nats::Supervisor::new(
        js.clone(),
        subjects::STREAM_IN,
        paytrack_nats::CONSUMER_RECONCILER,
        config.retry,
        readiness.clone(),
    );
    // The sweeper runs inside this future, not as a detached task: whatever ends
    // the reconciler (shutdown, or its task being aborted like a killed process)
    // ends its sweeps too.
    let sweeper = sweeps.run(shutdown.clone());
    let consumer =
        paytrack_nats::consume_deliveries_in_lanes(consumer, shutdown, supervisor, config.lanes, |delivery| {
            let reconciler = &reconciler;
            async move { reconciler.handle(delivery).await.map(drop) }
        });
    tokio::join!(consumer, sweeper, watch.run());

    admin.stopped().await;
    tracing::info!("reconciler stopped");
    Ok(())
}
