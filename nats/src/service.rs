//! How a consumer service (the reconciler, the projector) starts: its NATS connection
//! as its own user (made in the background, so NATS being down is not an error), its
//! readiness, and its admin listener (`/readyz`, `/metrics`). One helper, so both
//! start the same way.

use std::net::SocketAddr;
use std::time::Duration;

use paytrack_shared::health::Readiness;
use tokio_util::sync::CancellationToken;

use crate::{Credentials, LayoutError};

/// Why a consumer service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The NATS connection could not be set up.
    #[error(transparent)]
    Nats(#[from] LayoutError),
    /// The admin listener could not be used.
    #[error("admin listener: {0}")]
    Admin(#[from] std::io::Error),
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
    /// `admin` (already bound) or else on `listen`, until `shutdown`.
    pub async fn begin(
        client: &str,
        url: &str,
        credentials: Option<&Credentials>,
        timeout: Duration,
        (admin, listen): (Option<std::net::TcpListener>, Option<SocketAddr>),
        shutdown: &CancellationToken,
    ) -> Result<ServiceStart, StartError> {
        let connection = crate::connect(url, client, credentials).await?;
        let readiness = Readiness::watching(connection.clone());
        let admin = paytrack_shared::health::spawn_admin(admin, listen, &readiness, shutdown)?;
        Ok(ServiceStart {
            js: crate::jetstream(connection, timeout),
            readiness,
            admin: AdminTask(admin),
        })
    }
}
