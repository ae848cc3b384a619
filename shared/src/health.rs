//! Liveness and readiness, shared by every service's HTTP surface.
//!
//! ingest and ws-edge mount [`routes`] on their own listener; the reconciler and the
//! projector, which have no HTTP surface of their own, serve them (and `/metrics`) on
//! an admin listener with [`serve_admin`].

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::PgPoolOptions;
use tokio_util::sync::CancellationToken;

/// Whether a service is ready for traffic: set once its streams or schema exist,
/// and, when it watches a NATS connection, only while that connection is up (a
/// service that cannot reach JetStream should be taken out of rotation), only while
/// PostgreSQL answers when it watches a database, and only while none of its
/// consumers keeps failing (a stalled consumer must be seen).
#[derive(Clone, Default)]
pub struct Readiness {
    started: Arc<AtomicBool>,
    nats: Option<async_nats::Client>,
    postgres: Option<sqlx::PgPool>,
    stalled: Arc<Mutex<BTreeSet<String>>>,
}

/// How long `/readyz` waits for PostgreSQL to answer; under the probes' timeout.
const POSTGRES_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

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
            postgres: None,
            stalled: Arc::default(),
        }
    }

    /// Readiness that also requires the database at `url` to answer a query. The
    /// check has a connection of its own (opened on first use), so a busy service
    /// pool never makes a healthy pod look unready.
    pub fn with_postgres(mut self, url: &SecretString) -> Result<Readiness, sqlx::Error> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(POSTGRES_PROBE_TIMEOUT)
            .connect_lazy(url.expose_secret())?;
        self.postgres = Some(pool);
        Ok(self)
    }

    /// [`Readiness::is_ready`], and PostgreSQL answering when it is watched.
    pub async fn check(&self) -> bool {
        if !self.is_ready() {
            return false;
        }
        let Some(pool) = &self.postgres else {
            return true;
        };
        let answered = tokio::time::timeout(POSTGRES_PROBE_TIMEOUT, sqlx::query("SELECT 1").execute(pool)).await;
        match answered {
            Ok(Ok(_)) => true,
            Ok(Err(error)) => {
                tracing::warn!(%error, "not ready: PostgreSQL does not answer");
                false
            }
            Err(_) => {
                tracing::warn!("not ready: PostgreSQL did not answer in time");
                false
            }
        }
    }

    /// Marks start-up complete (or not).
    pub fn set(&self, ready: bool) {
        self.started.store(ready, Ordering::SeqCst);
    }

    /// Marks `consumer` as stalled (it keeps failing) or as flowing again.
    pub fn set_consumer_stalled(&self, consumer: &str, stalled: bool) {
        let mut set = self.stalled.lock().unwrap_or_else(PoisonError::into_inner);
        if stalled {
            set.insert(consumer.to_owned());
        } else {
            set.remove(consumer);
        }
    }

    /// The consumers that keep failing now.
    pub fn stalled_consumers(&self) -> Vec<String> {
        let set = self.stalled.lock().unwrap_or_else(PoisonError::into_inner);
        set.iter().cloned().collect()
    }

    /// Whether the service is ready.
    pub fn is_ready(&self) -> bool {
        let connected = self
            .nats
            .as_ref()
            .is_none_or(|c| c.connection_state() == async_nats::connection::State::Connected);
        self.started.load(Ordering::SeqCst) && connected && self.stalled_consumers().is_empty()
    }
}

/// `GET /healthz` (the process answers) and `GET /readyz` (it can do its job).
pub fn routes<S: Clone + Send + Sync + 'static>(readiness: Readiness) -> Router<S> {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready).with_state(readiness))
}

async fn ready(State(readiness): State<Readiness>) -> (StatusCode, &'static str) {
    if readiness.check().await {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// The admin listener of a consumer service (`/readyz`, `/metrics`), bound before
/// the service runs: the reconciler and the projector have ingest's and ws-edge's
/// lifecycle (`bind`, `local_addr`, `run`) with this as their listener.
pub struct AdminListener(Option<std::net::TcpListener>);

impl AdminListener {
    /// Binds `listen` when one is configured (none: the service serves no admin routes).
    pub fn bind(listen: Option<SocketAddr>) -> std::io::Result<AdminListener> {
        listen.map(std::net::TcpListener::bind).transpose().map(AdminListener)
    }

    /// The bound address, when there is a listener.
    pub fn local_addr(&self) -> std::io::Result<Option<SocketAddr>> {
        self.0.as_ref().map(std::net::TcpListener::local_addr).transpose()
    }

    /// The bound listener, for [`spawn_admin`].
    pub fn into_inner(self) -> Option<std::net::TcpListener> {
        self.0
    }
}

/// A consumer service's configuration, which runs the service on an admin listener
/// already bound: what [`ConsumerService`] needs so that every consumer service
/// shares one lifecycle (`bind`, `local_addr`, `run`) instead of repeating it.
pub trait ConsumerConfig: Sized {
    /// Why the service could not start.
    type Error: From<std::io::Error>;

    /// Where the admin routes (`/readyz`, `/metrics`) listen, if anywhere.
    fn admin_listen(&self) -> Option<SocketAddr>;

    /// Runs the service until `shutdown` is cancelled, serving the admin routes on
    /// `admin` when given.
    fn run_with_admin(
        self,
        admin: Option<std::net::TcpListener>,
        shutdown: CancellationToken,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// A consumer service whose admin listener is bound and which does not run yet, so a
/// caller learns the address before anything runs.
pub struct ConsumerService<C> {
    config: C,
    admin: AdminListener,
}

impl<C: ConsumerConfig> ConsumerService<C> {
    /// Binds the admin listener the configuration names, if any. Nothing here waits
    /// for NATS or PostgreSQL.
    pub async fn bind(config: C) -> Result<ConsumerService<C>, C::Error> {
        let admin = AdminListener::bind(config.admin_listen())?;
        Ok(ConsumerService { config, admin })
    }

    /// The admin listener's address, when one is configured.
    pub fn local_addr(&self) -> std::io::Result<Option<SocketAddr>> {
        self.admin.local_addr()
    }

    /// Runs until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), C::Error> {
        // Boxed: the running service is a large future, kept off the caller's stack.
        Box::pin(self.config.run_with_admin(self.admin.into_inner(), shutdown)).await
    }
}

/// Starts the admin listener of a consumer service: on `bound` when the caller bound
/// it already (tests bind port 0 and read the address, with no window in which
/// another server could take the port), else on `listen` when one is configured.
pub fn spawn_admin(
    bound: Option<std::net::TcpListener>,
    listen: Option<SocketAddr>,
    readiness: &Readiness,
    shutdown: &CancellationToken,
) -> std::io::Result<Option<tokio::task::JoinHandle<std::io::Result<()>>>> {
    let (readiness, shutdown) = (readiness.clone(), shutdown.clone());
    Ok(match bound {
        Some(listener) => {
            listener.set_nonblocking(true)?;
            let listener = tokio::net::TcpListener::from_std(listener)?;
            Some(tokio::spawn(serve_admin_on(listener, readiness, shutdown)))
        }
        None => listen.map(|listen| tokio::spawn(serve_admin(listen, readiness, shutdown))),
    })
}

/// Serves [`routes`] on `listen` until `shutdown` is cancelled, through the same
/// [`crate::http::serve`] as every other listener (panic guard, header-read
/// timeout at its default: the admin listener is for probes and scrapes).
pub async fn serve_admin(listen: SocketAddr, readiness: Readiness, shutdown: CancellationToken) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    serve_admin_on(listener, readiness, shutdown).await
}

/// [`serve_admin`] on a listener already bound (tests bind port 0 and read it back).
pub async fn serve_admin_on(
    listener: tokio::net::TcpListener,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app: Router = routes(readiness).merge(crate::metrics::routes());
    crate::http::serve(listener, app, crate::http::ServeOptions::default(), shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stalled_consumer_makes_the_service_unready_until_it_flows() {
        let readiness = Readiness::default();
        readiness.set(true);
        assert!(readiness.is_ready());
        readiness.set_consumer_stalled("evidence", true);
        readiness.set_consumer_stalled("sessions", true);
        assert!(!readiness.is_ready());
        readiness.set_consumer_stalled("evidence", false);
        assert_eq!(readiness.stalled_consumers(), vec!["sessions".to_owned()]);
        readiness.set_consumer_stalled("sessions", false);
        assert!(readiness.is_ready());
    }
}
