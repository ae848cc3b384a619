//! NATS refuses what a user may not do: each service publishes only its own
//! subjects (DESIGN §2), the read-only user publishes nothing, a connection without
//! credentials is refused. The server is a real nats-server started with the
//! configuration rendered from `paytrack_nats::auth` (the one in `nats/auth.conf`).
//!
//! A refused publish is observed as the server's permissions-violation error on the
//! publisher's connection; an allowed one as the message arriving at an admin
//! subscriber.

use std::time::Duration;

use anyhow::Context;
use async_nats::{Client, Event, ServerError};
use futures::StreamExt;
use paytrack_nats::Role;
use paytrack_tests::NatsServer;
use secrecy::ExposeSecret;
use tokio::sync::mpsc;

/// How long to wait for the server's answer to one operation on a loaded machine.
const ANSWER: Duration = Duration::from_secs(20);

/// A client of one role whose server errors can be awaited.
struct Probe {
    role: Role,
    client: Client,
    errors: mpsc::UnboundedReceiver<String>,
}

impl Probe {
    async fn connect(nats: &NatsServer, role: Role) -> anyhow::Result<Probe> {
        let (tx, errors) = mpsc::unbounded_channel();
        let password = nats.password(role);
        let client =
            async_nats::ConnectOptions::with_user_and_password(role.user().into(), password.expose_secret().into())
                .custom_inbox_prefix(role.inbox_prefix())
                .event_callback(move |event| {
                    let tx = tx.clone();
                    async move {
                        if let Event::ServerError(ServerError::Other(text)) = event {
                            let _ = tx.send(text);
                        }
                    }
                })
                .connect(nats.url())
                .await
                .with_context(|| format!("connect as {}", role.user()))?;
        Ok(Probe { role, client, errors })
    }

    /// Publishes to `subject` and waits for the server to refuse it.
    async fn publish_refused(&mut self, subject: &str) -> anyhow::Result<()> {
        self.client.publish(subject.to_owned(), "forged".into()).await?;
        self.client.flush().await?;
        self.violation(subject, "Publish").await
    }

    /// Subscribes to `subject` and waits for the server to refuse it.
    async fn subscribe_refused(&mut self, subject: &str) -> anyhow::Result<()> {
        let _subscription = self.client.subscribe(subject.to_owned()).await?;
        self.client.flush().await?;
        self.violation(subject, "Subscription").await
    }

    async fn violation(&mut self, subject: &str, what: &str) -> anyhow::Result<()> {
        let expected = format!("permissions violation for {what} to \"{subject}\"").to_lowercase();
        let deadline = tokio::time::Instant::now() + ANSWER;
        loop {
            let text = tokio::time::timeout_at(deadline, self.errors.recv())
                .await
                .with_context(|| format!("{} {what} to {subject} was not refused", self.role.user()))?
                .context("connection closed")?;
            if text.to_lowercase().contains(&expected) {
                return Ok(());
            }
        }
    }

    /// Publishes to `subject` and sees it arrive at `watcher`'s subscription to it.
    async fn publish_allowed(&mut self, watcher: &Client, subject: &str) -> anyhow::Result<()> {
        let mut seen = subscribed(watcher, subject).await?;
        self.client.publish(subject.to_owned(), "allowed".into()).await?;
        self.client.flush().await?;
        let message = tokio::time::timeout(ANSWER, seen.next())
            .await
            .with_context(|| format!("{} publish to {subject} never arrived", self.role.user()))?
            .context("subscription ended")?;
        assert_eq!(message.subject.as_str(), subject);
        assert_eq!(&message.payload[..], b"allowed");
        anyhow::ensure!(
            self.errors.try_recv().is_err(),
            "{} got a server error publishing to {subject}",
            self.role.user()
        );
        Ok(())
    }
}

/// A subscription the server has surely registered: `client` sees its own
/// sentinel message on it before it is returned. (`flush` only writes the socket.)
async fn subscribed(client: &Client, subject: &str) -> anyhow::Result<async_nats::Subscriber> {
    let mut subscription = client.subscribe(subject.to_owned()).await?;
    client.publish(subject.to_owned(), "sentinel".into()).await?;
    let sentinel = tokio::time::timeout(ANSWER, subscription.next())
        .await
        .context("sentinel never arrived")?
        .context("subscription ended")?;
    anyhow::ensure!(&sentinel.payload[..] == b"sentinel");
    Ok(subscription)
}

const STATUS: &str = "paytrack.status.dev.m_1.pay_forged";
const CHECKPOINT: &str = "paytrack.checkpoint.dev.m_1.pay_forged";
const INBOUND: &str = "paytrack.in.dev.pay_forged";
const PUSH: &str = "paytrack.push.dev.u_1.all";
const SESSION: &str = "paytrack.session.dev.edge-1";
const OUTCOME: &str = "paytrack.outcome.dev.pay_forged";
const ALERT: &str = "paytrack.alert.dev.unclear_pending";
const DEAD: &str = "paytrack.dead.dev.x";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_publishes_only_its_own_subjects() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let admin = nats.admin_client().await?;

    let mut ingest = Probe::connect(&nats, Role::Ingest).await?;
    for subject in [INBOUND, PUSH] {
        ingest.publish_allowed(&admin, subject).await?;
    }
    for subject in [STATUS, CHECKPOINT, SESSION, OUTCOME, ALERT] {
        ingest.publish_refused(subject).await?;
    }
    // Its own KV buckets (idempotency keys, commanded payments), not the edge's presence.
    for subject in ["$KV.PAYTRACK_IDEMPOTENCY.dev.k", "$KV.PAYTRACK_COMMANDED.dev.pay_1"] {
        ingest.publish_allowed(&admin, subject).await?;
    }
    ingest.publish_refused("$KV.PAYTRACK_PRESENCE.dev.u.d.s").await?;

    let mut reconciler = Probe::connect(&nats, Role::Reconciler).await?;
    // INBOUND: the sweep records a provider's status-query answer as a fact.
    for subject in [OUTCOME, STATUS, ALERT, INBOUND] {
        reconciler.publish_allowed(&admin, subject).await?;
    }
    for subject in [CHECKPOINT, PUSH, SESSION] {
        reconciler.publish_refused(subject).await?;
    }

    let mut projector = Probe::connect(&nats, Role::Projector).await?;
    for subject in [CHECKPOINT, ALERT, DEAD] {
        projector.publish_allowed(&admin, subject).await?;
    }
    for subject in [STATUS, INBOUND, PUSH, SESSION] {
        projector.publish_refused(subject).await?;
    }

    let mut edge = Probe::connect(&nats, Role::Edge).await?;
    edge.publish_allowed(&admin, SESSION).await?;
    for subject in [STATUS, CHECKPOINT, INBOUND, PUSH, ALERT] {
        edge.publish_refused(subject).await?;
    }
    // Reading is through its own ordered consumers only: never another service's durable.
    edge.publish_refused("$JS.API.CONSUMER.DELETE.PAYTRACK_STATUS.ledger-projector-status")
        .await?;
    edge.publish_refused("$JS.API.CONSUMER.MSG.NEXT.PAYTRACK_STATUS.ledger-projector-status")
        .await?;
    edge.subscribe_refused("paytrack.status.>").await?;
    // Replies to other users are not its to read.
    edge.subscribe_refused("_INBOX.ingest.>").await?;

    let mut reader = Probe::connect(&nats, Role::Reader).await?;
    for subject in [STATUS, CHECKPOINT, INBOUND, PUSH, SESSION, OUTCOME, ALERT, DEAD] {
        reader.publish_refused(subject).await?;
    }
    reader.publish_refused("$JS.API.STREAM.DELETE.PAYTRACK_STATUS").await?;
    reader.publish_refused("$JS.API.STREAM.UPDATE.PAYTRACK_STATUS").await?;
    // It watches the documented subjects, not raw facts or session audit.
    let mut watched = reader.client.subscribe("paytrack.status.>").await?;
    // The reader cannot publish a sentinel: publish until its subscription is counted.
    let deadline = tokio::time::Instant::now() + ANSWER;
    let seen = loop {
        reconciler.client.publish(STATUS, "t".into()).await?;
        if let Ok(next) = tokio::time::timeout(Duration::from_millis(200), watched.next()).await {
            break next.context("subscription ended")?;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the reader never saw a transition"
        );
    };
    assert_eq!(seen.subject.as_str(), STATUS);
    reader.subscribe_refused("paytrack.in.>").await?;
    reader.subscribe_refused("paytrack.session.>").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_valid_credentials_is_refused() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let anonymous = async_nats::connect(nats.url()).await;
    assert!(anonymous.is_err(), "a connection without a user was accepted");
    let wrong = async_nats::ConnectOptions::with_user_and_password("reconciler".into(), "pguess".into())
        .connect(nats.url())
        .await;
    assert!(wrong.is_err(), "a wrong password was accepted");
    // The right one is accepted.
    let right = Probe::connect(&nats, Role::Reconciler).await?;
    right.client.flush().await?;
    Ok(())
}
