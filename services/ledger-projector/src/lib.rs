//! ledger-projector: the PostgreSQL record of every payment.
//!
//! It applies PAYTRACK_STATUS's transitions in batches, one transaction each
//! ([`project`]): current state, timeline, the double-entry ledger ([`ledger`]) and
//! the `persisted` and `ledger_posted` checkpoints they make due (an outbox,
//! published after commit by [`outbox`], whose acknowledgements decide finality; a
//! success on a reversible rail turns final when its return window closes, which a
//! scan publishes as a third checkpoint).
//! Raw facts from `paytrack.in.>` (evidence) and what each fact did
//! (`paytrack.outcome.>`) are stored beside, so the timeline shows every fact. Every
//! write is keyed so a redelivered message changes nothing; [`rebuild`] replays the
//! streams into an empty database and ends with the same rows.
//!
//! Every consumer runs under a [`paytrack_nats::Supervisor`]: a message that cannot
//! be stored (or keeps failing) is parked on `paytrack.dead.<stream>.<consumer>` with
//! a `dead_letter` alert, and the consumer moves on.

mod alert_outbox;
mod alerts;
mod checkpoints;
mod divergence;
mod evidence;
mod history;
pub mod ledger;
mod outbox;
mod outcomes;
mod position;
pub mod project;
pub mod rebuild;
mod sessions;
mod tail_loss;
pub mod window;

use std::net::SocketAddr;

use paytrack_nats::{HandleError, RetryPolicy, ServiceStart, StartError, Supervisor};
use paytrack_shared::config::Settings;
use paytrack_shared::health::{ConsumerConfig, ConsumerService};
use paytrack_shared::subjects;
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

/// A batch size as the consumer wants it (a constant that is never zero).
fn batch_size(n: usize) -> std::num::NonZeroUsize {
    std::num::NonZeroUsize::new(n).unwrap_or(std::num::NonZeroUsize::MIN)
}

/// What the projector needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// NATS URL.
    pub nats_url: String,
    /// The projector's NATS user, if the server wants one.
    pub nats_credentials: Option<paytrack_nats::Credentials>,
    /// The stream layout to apply.
    pub layout: paytrack_nats::Layout,
    /// How long a JetStream request may take.
    pub nats_timeout: std::time::Duration,
    /// PostgreSQL URL.
    pub database_url: SecretString,
    /// Pool size.
    pub database_max_connections: u32,
    /// Optional health listener.
    pub admin_listen: Option<SocketAddr>,
    /// How failing messages are retried before they are parked.
    pub retry: RetryPolicy,
    /// This instance's name in `projector_progress` (the pod's host name).
    pub instance: String,
}

impl Config {
    /// The projector's part of the settings.
    pub fn from_settings(s: &Settings) -> Config {
        Config {
            nats_url: s.nats_url.clone(),
            nats_credentials: paytrack_nats::Role::Projector.credentials(s),
            layout: paytrack_nats::Layout::from_settings(s),
            nats_timeout: std::time::Duration::from_millis(s.nats_ack_timeout_ms),
            database_url: s.database_url.clone(),
            database_max_connections: s.database_max_connections,
            admin_listen: s.admin_listen,
            retry: RetryPolicy::from_settings(s),
            instance: std::env::var("HOSTNAME").unwrap_or_else(|_| "ledger-projector".to_owned()),
        }
    }
}

/// Why the projector could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    /// NATS or the stream layout.
    #[error(transparent)]
    Nats(#[from] paytrack_nats::LayoutError),
    /// The database or its migrations.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The migrations failed.
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The admin listener given could not be used.
    #[error("admin listener: {0}")]
    Admin(#[from] std::io::Error),
}

/// A database failure that may pass (connection, pool, server state): retry.
fn transient_db(error: sqlx::Error) -> HandleError {
    HandleError::transient("database", error)
}

/// A failure of a write: poison when PostgreSQL refuses the data itself (SQLSTATE
/// class 22, data exception, e.g. a NUL in TEXT; class 23, integrity constraint),
/// which no retry can change; otherwise transient.
fn db_error(error: sqlx::Error) -> HandleError {
    let code = error.as_database_error().and_then(|e| e.code()).unwrap_or_default();
    if code.starts_with("22") || code.starts_with("23") {
        HandleError::poison("the database refused the data", error)
    } else {
        transient_db(error)
    }
}

/// A stream sequence as a BIGINT.
fn sequence(seq: u64) -> Result<i64, HandleError> {
    i64::try_from(seq).map_err(|e| HandleError::poison("a stream sequence as BIGINT", e))
}

impl From<StartError> for ProjectorError {
    fn from(error: StartError) -> ProjectorError {
        match error {
            StartError::Nats(error) => ProjectorError::Nats(error),
            StartError::Admin(error) => ProjectorError::Admin(error),
            StartError::Postgres(error) => ProjectorError::Database(error),
        }
    }
}

/// A projector whose admin listener is bound and which does not run yet
/// ([`ConsumerService`]). PostgreSQL or NATS being down at start is not an error: the
/// migrations, the layout and the consumers are retried with backoff while `/readyz`
/// answers 503.
pub type LedgerProjector = ConsumerService<Config>;

impl ConsumerConfig for Config {
    type Error = ProjectorError;

    fn admin_listen(&self) -> Option<SocketAddr> {
        self.admin_listen
    }

    fn run_with_admin(
        self,
        admin: Option<std::net::TcpListener>,
        shutdown: CancellationToken,
    ) -> impl Future<Output = Result<(), ProjectorError>> + Send {
        run_with_admin(self, admin, shutdown)
    }
}

/// Binds and runs the projector until `shutdown` is cancelled ([`LedgerProjector`]).
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), ProjectorError> {
    LedgerProjector::bind(config).await?.run(shutdown).await
}

/// [`run`], serving `/readyz` and `/metrics` on `admin` (already bound) instead of
/// `config.admin_listen`, so a test can bind port 0 and know the address.
pub async fn run_with_admin(
    config: Config,
    admin: Option<std::net::TcpListener>,
    shutdown: CancellationToken,
) -> Result<(), ProjectorError> {
    let ServiceStart { js, readiness, admin } = ServiceStart::begin(
        "paytrack-ledger-projector",
        &config.nats_url,
        config.nats_credentials.as_ref(),
        config.nats_timeout,
        (admin, config.admin_listen),
        Some(&config.database_url),
        &shutdown,
    )
    .await?;

    let db = paytrack_shared::db::pool(&config.database_url, config.database_max_connections)?;
    let started = async {
        paytrack_nats::retry_until_ready("apply the migrations", &shutdown, || {
            paytrack_shared::db::MIGRATOR.run(&db)
        })
        .await?;
        paytrack_nats::retry_until_laid_out("verify the layout and bind the consumers", &shutdown, || async {
            paytrack_nats::verify_layout(&js, &config.layout).await?;
            // PAYTRACK_STATUS's transitions. Created or updated, so the consumer of an
            // older layout (which also read the checkpoints back) is narrowed.
            let status_stream = paytrack_nats::get_stream(&js, subjects::STREAM_STATUS).await?;
            let status_epoch = paytrack_nats::epoch_of(status_stream.cached_info());
            let status = status_stream
                .create_consumer(history::consumer_config())
                .await
                .map_err(|e| paytrack_nats::LayoutError::Consumer {
                    stream: subjects::STREAM_STATUS.to_owned(),
                    consumer: paytrack_nats::CONSUMER_PROJECTOR_STATUS.to_owned(),
                    source: e.into(),
                })?;
            let session_epoch = paytrack_nats::epoch_of(
                paytrack_nats::get_stream(&js, subjects::STREAM_SESSION)
                    .await?
                    .cached_info(),
            );
            let sessions = paytrack_nats::ensure_consumer(
                &js,
                subjects::STREAM_SESSION,
                config
                    .retry
                    .durable_consumer(paytrack_nats::CONSUMER_PROJECTOR_SESSIONS, subjects::SESSION_ALL),
            )
            .await?;
            let evidence = paytrack_nats::ensure_consumer(
                &js,
                subjects::STREAM_IN,
                config
                    .retry
                    .durable_consumer(paytrack_nats::CONSUMER_PROJECTOR_EVIDENCE, subjects::IN_ALL),
            )
            .await?;
            let outcomes = paytrack_nats::ensure_consumer(
                &js,
                subjects::STREAM_OUTCOME,
                config
                    .retry
                    .durable_consumer(paytrack_nats::CONSUMER_PROJECTOR_OUTCOMES, subjects::OUTCOME_ALL),
            )
            .await?;
            // Every record of PAYTRACK_ALERT: created or updated, so the consumer of an
            // older layout (which read payment alerts only) reads dead letters and
            // acknowledgements too.
            let alerts = paytrack_nats::get_stream(&js, subjects::STREAM_ALERT)
                .await?
                .create_consumer(
                    config
                        .retry
                        .durable_consumer(paytrack_nats::CONSUMER_PROJECTOR_ALERTS, subjects::ALERT_ALL),
                )
                .await
                .map_err(|e| paytrack_nats::LayoutError::Consumer {
                    stream: subjects::STREAM_ALERT.to_owned(),
                    consumer: paytrack_nats::CONSUMER_PROJECTOR_ALERTS.to_owned(),
                    source: e.into(),
                })?;
            Ok::<_, paytrack_nats::LayoutError>((
                status,
                status_epoch,
                session_epoch,
                sessions,
                evidence,
                outcomes,
                alerts,
            ))
        })
        .await
    }
    .await;
    let (
        status_consumer,
        status_epoch,
        session_epoch,
        session_consumer,
        evidence_consumer,
        outcome_consumer,
        alert_consumer,
    ) = match started {
        Ok(started) => started,
        Err(not_started) => return Ok(admin.stopped_before_ready("ledger-projector", not_started).await?),
    };
    let mut durables = [
        status_consumer,
        evidence_consumer,
        session_consumer,
        outcome_consumer,
        alert_consumer,
    ];
    let watch = paytrack_nats::ConsumerWatch::start(&js, &readiness, &mut durables, &shutdown).await;
    let [
        status_consumer,
        evidence_consumer,
        session_consumer,
        outcome_consumer,
        alert_consumer,
    ] = durables;
    tracing::info!("ledger-projector consuming transitions and evidence");

    let supervisor =
        |stream: &str, consumer: &str| Supervisor::new(js.clone(), stream, consumer, config.retry, readiness.clone());
    let status_supervisor = supervisor(subjects::STREAM_STATUS, paytrack_nats::CONSUMER_PROJECTOR_STATUS);
    let evidence_supervisor = supervisor(subjects::STREAM_IN, paytrack_nats::CONSUMER_PROJECTOR_EVIDENCE);
    let session_supervisor = supervisor(subjects::STREAM_SESSION, paytrack_nats::CONSUMER_PROJECTOR_SESSIONS);
    let outcome_supervisor = supervisor(subjects::STREAM_OUTCOME, paytrack_nats::CONSUMER_PROJECTOR_OUTCOMES);
    let alert_supervisor = supervisor(subjects::STREAM_ALERT, paytrack_nats::CONSUMER_PROJECTOR_ALERTS);
    let drainer = tokio::spawn(outbox::drain(db.clone(), js.clone(), shutdown.clone()));
    let alert_drainer = tokio::spawn(alert_outbox::drain(db.clone(), js.clone(), shutdown.clone()));
    let windows = tokio::spawn(window::close_windows(db.clone(), js.clone(), shutdown.clone()));
    let tracker = tokio::spawn(position::track(
        db.clone(),
        js.clone(),
        status_consumer.clone(),
        subjects::STREAM_STATUS,
        status_epoch.clone(),
        shutdown.clone(),
    ));
    let live = history::Live {
        db: db.clone(),
        js: js.clone(),
        supervisor: status_supervisor,
        readiness: readiness.clone(),
        origin: project::Origin {
            epoch: status_epoch,
            instance: config.instance.clone(),
        },
        confirming: std::sync::Arc::new(tokio::sync::Semaphore::new(history::CONFIRMING)),
    };
    let status_loop = live.run(status_consumer, shutdown.clone());
    // Raw facts and outcomes are keyed inserts: each ready run of them is stored in
    // one transaction, so a backlog costs the database a bulk insert, not a commit
    // per fact.
    let evidence_loop = paytrack_nats::consume_delivery_batches(
        evidence_consumer,
        shutdown.clone(),
        evidence_supervisor,
        batch_size(evidence::BATCH),
        |batch| evidence::apply(&db, batch),
    );
    let session_loop = paytrack_nats::consume_delivery_batches(
        session_consumer,
        shutdown.clone(),
        session_supervisor,
        batch_size(sessions::BATCH),
        |batch| sessions::apply(&db, &session_epoch, batch),
    );
    let outcome_loop = paytrack_nats::consume_delivery_batches(
        outcome_consumer,
        shutdown.clone(),
        outcome_supervisor,
        batch_size(outcomes::BATCH),
        |batch| outcomes::apply(&db, batch),
    );
    let alert_loop = paytrack_nats::consume(alert_consumer, shutdown.clone(), |message| {
        let (db, supervisor) = (&db, &alert_supervisor);
        async move {
            let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
            let result = alerts::apply(db, &message, paytrack_nats::CONSUMER_PROJECTOR_ALERTS).await;
            supervisor.settle(&message, delivered, result).await;
        }
    });
    tokio::join!(
        status_loop,
        evidence_loop,
        session_loop,
        outcome_loop,
        alert_loop,
        watch.run()
    );
    let _ = drainer.await;
    let _ = alert_drainer.await;
    let _ = windows.await;
    let _ = tracker.await;

    admin.stopped().await;
    tracing::info!("ledger-projector stopped");
    Ok(())
}
