//! How a consumer service (the reconciler, the projector) starts: its NATS connection
//! as its own user (made in the background, so NATS being down is not an error), its
//! readiness, and its admin listener (`/readyz`, `/metrics`). One helper, so both
//! start the same way.

use std::net::SocketAddr;
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use paytrack_shared::health::Readiness;
use tokio_util::sync::CancellationToken;

use crate::{Credentials, LayoutError, NotStarted};

/// Why a consumer service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The NATS connection could not be set up.
    #[error(transparent)]
    Nats(#[from] LayoutError),
    /// The admin listener could not be used.
    #[error("admin listener: {0}")]
    Admin(#[from] std::io::Error),
    /// The readiness check's PostgreSQL URL is not usable.
    #[error("readiness check of PostgreSQL: {0}")]
    Postgres(#[from] sqlx::Error),
}

/// The admin listener's task: it ends once the service's shutdown token is cancelled.
pub struct AdminTask(Option<tokio::task::JoinHandle<std::io::Result<()>>>);

impl AdminTask {
    /// Waits until the admin listener has stopped (after shutdown).
    pub async fn stopped(self) {
        if let Some(task) = self.0 {
            let _ = task.await;
        }
    }

    /// Ends `service` when it stopped before it was ready: waits until the admin
    /// listener has stopped, then answers `Ok` for a shutdown and the layout error for
    /// a layout it refuses to run on.
    pub async fn stopped_before_ready(self, service: &str, not_started: NotStarted) -> Result<(), LayoutError> {
        tracing::info!(service, "stopped before it was ready");
        self.stopped().await;
        match not_started {
            NotStarted::WrongLayout(wrong) => Err(wrong),
            NotStarted::Stopped(_) => Ok(()),
        }
    }
}

/// What watches a consumer service's durable consumers while they consume: their
/// positions checked again every interval ([`crate::overrun::watch`]) and their
/// backlog gauged ([`crate::backlog::watch`]), until shutdown.
pub struct ConsumerWatch {
    js: async_nats::jetstream::Context,
    consumers: Vec<PullConsumer>,
    shutdown: CancellationToken,
}

impl ConsumerWatch {
    /// Checks `consumers`' positions once before they consume (one found past its
    /// stream's end, after a power loss cut the stream back, would skip what is
    /// stored at the sequences handed out again: it is rewound), then marks
    /// `readiness` ready. The watch it returns runs next to the consumers.
    pub async fn start(
        js: &async_nats::jetstream::Context,
        readiness: &Readiness,
        consumers: &mut [PullConsumer],
        shutdown: &CancellationToken,
    ) -> ConsumerWatch {
        crate::overrun::check_all(js, consumers.iter_mut()).await;
        readiness.set(true);
        ConsumerWatch {
            js: js.clone(),
            consumers: consumers.to_vec(),
            shutdown: shutdown.clone(),
        }
    }

    /// Watches until shutdown.
    pub async fn run(self) {
        let backlog = crate::backlog::watch(self.consumers.clone(), self.shutdown.clone());
        let overrun = crate::overrun::watch(self.js, self.consumers, self.shutdown);
        tokio::join!(backlog, overrun);
    }
}

/// A started consumer service: what it consumes with, and what reports on it.
pub struct ServiceStart {
    /// JetStream over the service's own connection.
    pub js: async_nats::jetstream::Context,
    /// Whether `/readyz` answers 200: false until the service says its consumers run,
    /// and while the connection is down.
    pub readiness: Readiness,
    /// The admin listener.
    pub admin: AdminTask,
}

impl ServiceStart {
    /// Connects to `url` as `client` with `credentials` and serves the admin routes on
    /// `admin` (already bound) or else on `listen`, until `shutdown`. With `postgres`,
    /// readiness also requires that database to answer.
    #[allow(clippy::too_many_arguments)]
    pub async fn begin(
        client: &str,
        url: &str,
        credentials: Option<&Credentials>,
        timeout: Duration,
        (admin, listen): (Option<std::net::TcpListener>, Option<SocketAddr>),
        postgres: Option<&secrecy::SecretString>,
        shutdown: &CancellationToken,
    ) -> Result<ServiceStart, StartError> {
        let connection = crate::connect(url, client, credentials).await?;
        let mut readiness = Readiness::watching(connection.clone());
        if let Some(url) = postgres {
            readiness = readiness.with_postgres(url)?;
        }
        let admin = paytrack_shared::health::spawn_admin(admin, listen, &readiness, shutdown)?;
        Ok(ServiceStart {
            js: crate::jetstream(connection, timeout),
            readiness,
            admin: AdminTask(admin),
        })
    }
}
