//! ledger-projector: the PostgreSQL record of every payment.
//!
//! It applies transitions from `paytrack.status.>` (current state and timeline) and
//! raw facts from `paytrack.in.>` (evidence) exactly once: every write is keyed so a
//! redelivered message changes nothing. After a transition is committed it publishes
//! the `persisted` checkpoint into PAYTRACK_STATUS, on the payment's own subject
//! tree, so clients see the record catch up in the same ordered history. What each
//! fact did (`paytrack.outcome.>`) is stored beside, so the timeline shows every fact.

mod evidence;
mod outcomes;
mod sessions;
mod transitions;

use std::net::SocketAddr;
use std::time::Duration;

use paytrack_nats::HandleError;
use paytrack_shared::config::Settings;
use paytrack_shared::health::Readiness;
use paytrack_shared::subjects;
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

/// What the projector needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// NATS URL.
    pub nats_url: String,
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
}

impl Config {
    /// The projector's part of the settings.
    pub fn from_settings(s: &Settings) -> Config {
        Config {
            nats_url: s.nats_url.clone(),
            layout: paytrack_nats::Layout::from_settings(s),
            nats_timeout: std::time::Duration::from_millis(s.nats_ack_timeout_ms),
            database_url: s.database_url.clone(),
            database_max_connections: s.database_max_connections,
            admin_listen: s.admin_listen,
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
}

/// A database failure is worth retrying.
fn transient_db(error: sqlx::Error) -> HandleError {
    HandleError::Transient(format!("database: {error}"))
}

/// Delay before a message that hit a transient failure is redelivered.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// Runs the projector until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), ProjectorError> {
    let readiness = Readiness::default();
    let admin = config.admin_listen.map(|listen| {
        tokio::spawn(paytrack_shared::health::serve_admin(
            listen,
            readiness.clone(),
            shutdown.clone(),
        ))
    });

    let db = paytrack_shared::db::pool(&config.database_url, config.database_max_connections)?;
    paytrack_shared::db::MIGRATOR.run(&db).await?;
    let client = paytrack_nats::connect(&config.nats_url, "paytrack-ledger-projector").await?;
    let js = paytrack_nats::jetstream(client, config.nats_timeout);
    paytrack_nats::ensure_streams(&js, &config.layout).await?;
    let status_consumer = paytrack_nats::ensure_consumer(
        &js,
        subjects::STREAM_STATUS,
        paytrack_nats::durable_consumer(paytrack_nats::CONSUMER_PROJECTOR_STATUS, subjects::STATUS_ALL),
    )
    .await?;
    let session_consumer = paytrack_nats::ensure_consumer(
        &js,
        subjects::STREAM_SESSION,
        paytrack_nats::durable_consumer(paytrack_nats::CONSUMER_PROJECTOR_SESSIONS, subjects::SESSION_ALL),
    )
    .await?;
    let evidence_consumer = paytrack_nats::ensure_consumer(
        &js,
        subjects::STREAM_IN,
        paytrack_nats::durable_consumer(paytrack_nats::CONSUMER_PROJECTOR_EVIDENCE, subjects::IN_ALL),
    )
    .await?;
    let outcome_consumer = paytrack_nats::ensure_consumer(
        &js,
        subjects::STREAM_OUTCOME,
        paytrack_nats::durable_consumer(paytrack_nats::CONSUMER_PROJECTOR_OUTCOMES, subjects::OUTCOME_ALL),
    )
    .await?;
    readiness.set(true);
    tracing::info!("ledger-projector consuming transitions and evidence");

    let transitions = transitions::Applier { db: db.clone(), js };
    let status_loop = paytrack_nats::consume(status_consumer, shutdown.clone(), |message| {
        let transitions = &transitions;
        async move { paytrack_nats::settle(&message, transitions.apply(&message).await, RETRY_DELAY).await }
    });
    let evidence_loop = paytrack_nats::consume(evidence_consumer, shutdown.clone(), |message| {
        let db = &db;
        async move { paytrack_nats::settle(&message, evidence::apply(db, &message).await, RETRY_DELAY).await }
    });
    let session_loop = paytrack_nats::consume(session_consumer, shutdown.clone(), |message| {
        let db = &db;
        async move { paytrack_nats::settle(&message, sessions::apply(db, &message).await, RETRY_DELAY).await }
    });
    let outcome_loop = paytrack_nats::consume(outcome_consumer, shutdown.clone(), |message| {
        let db = &db;
        async move { paytrack_nats::settle(&message, outcomes::apply(db, &message).await, RETRY_DELAY).await }
    });
    tokio::join!(status_loop, evidence_loop, session_loop, outcome_loop);

    if let Some(admin) = admin {
        let _ = admin.await;
    }
    tracing::info!("ledger-projector stopped");
    Ok(())
}
