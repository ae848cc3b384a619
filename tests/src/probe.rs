//! A NATS connection of one user whose server errors can be awaited, so a test sees
//! the server refuse (or let through) a publish, a subscription or a JetStream API
//! request: the permission tests of the services' users and of the readers share it.

use std::time::Duration;

use anyhow::Context;
use async_nats::{Client, Event, ServerError};
use futures::StreamExt;
use paytrack_nats::Role;
use paytrack_shared::{TenantId, readers};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::mpsc;

use crate::NatsServer;

/// How long to wait for the server's answer to one operation on a loaded machine.
pub const ANSWER: Duration = Duration::from_secs(20);

/// A client of one user whose server errors can be awaited.
pub struct Probe {
    /// The NATS user it connected as, named in failures.
    pub user: String,
    /// The connection, for what a test does beyond the checks here.
    pub client: Client,
    errors: mpsc::UnboundedReceiver<String>,
}

impl Probe {
    /// Connects as a service's (or the admin's, or the all-tenant reader's) user.
    pub async fn as_role(nats: &NatsServer, role: Role) -> anyhow::Result<Probe> {
        Probe::connect(nats, role.user().to_owned(), &nats.password(role), role.inbox_prefix()).await
    }

    /// Connects as `tenant`'s reader, as a program following docs/readers.md does.
    pub async fn as_tenant_reader(nats: &NatsServer, tenant: &str) -> anyhow::Result<Probe> {
        let tenant_id = TenantId::new(tenant)?;
        let password = nats.tenant_reader_password(tenant);
        let (user, inbox) = (
            readers::tenant_reader_user(&tenant_id),
            readers::tenant_reader_inbox(&tenant_id),
        );
        Probe::connect(nats, user, &password, inbox).await
    }

    async fn connect(nats: &NatsServer, user: String, password: &SecretString, inbox: String) -> anyhow::Result<Probe> {
        let (tx, errors) = mpsc::unbounded_channel();
        let client = async_nats::ConnectOptions::with_user_and_password(user.clone(), password.expose_secret().into())
            .custom_inbox_prefix(inbox)
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
            .with_context(|| format!("connect as {user}"))?;
        Ok(Probe { user, client, errors })
    }

    /// Publishes to `subject` and waits for the server to refuse it.
    pub async fn publish_refused(&mut self, subject: &str) -> anyhow::Result<()> {
        self.client.publish(subject.to_owned(), "forged".into()).await?;
        self.client.flush().await?;
        self.violation(subject, "Publish").await
    }

    /// Subscribes to `subject` and waits for the server to refuse it.
    pub async fn subscribe_refused(&mut self, subject: &str) -> anyhow::Result<()> {
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
                .with_context(|| format!("{} {what} to {subject} was not refused", self.user))?
                .context("connection closed")?;
            if text.to_lowercase().contains(&expected) {
                return Ok(());
            }
        }
    }

    /// Publishes to `subject` and sees it arrive at `watcher`'s subscription to it.
    pub async fn publish_allowed(&mut self, watcher: &Client, subject: &str) -> anyhow::Result<()> {
        let mut seen = subscribed(watcher, subject).await?;
        self.client.publish(subject.to_owned(), "allowed".into()).await?;
        self.client.flush().await?;
        let message = tokio::time::timeout(ANSWER, seen.next())
            .await
            .with_context(|| format!("{} publish to {subject} never arrived", self.user))?
            .context("subscription ended")?;
        anyhow::ensure!(message.subject.as_str() == subject, "arrived on {}", message.subject);
        anyhow::ensure!(&message.payload[..] == b"allowed", "arrived altered");
        anyhow::ensure!(
            self.errors.try_recv().is_err(),
            "{} got a server error publishing to {subject}",
            self.user
        );
        Ok(())
    }

    /// Sends a JetStream API request and waits for the server to refuse it for
    /// permissions; any answer at all means it was let through.
    pub async fn request_refused(&mut self, subject: &str, body: &serde_json::Value) -> anyhow::Result<()> {
        match self.request(subject, body).await? {
            None => Ok(()),
            Some(answer) => anyhow::bail!("{} may send {subject}: answered {answer}", self.user),
        }
    }

    /// Sends a JetStream API request and waits for a refusal: JetStream's error
    /// answer (returned), or None when the permissions refused it first. A success
    /// is an error.
    pub async fn request_failed(
        &mut self,
        subject: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<Option<serde_json::Value>> {
        match self.request(subject, body).await? {
            Some(answer) if answer.get("error").is_none() => {
                anyhow::bail!("{} {subject} succeeded: {answer}", self.user)
            }
            refusal => Ok(refusal),
        }
    }

    /// The answer to a request, or None when the server refused it for permissions.
    pub async fn request(
        &mut self,
        subject: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<Option<serde_json::Value>> {
        let inbox = self.client.new_inbox();
        let mut answers = self.client.subscribe(inbox.clone()).await?;
        self.client
            .publish_with_reply(subject.to_owned(), inbox, serde_json::to_vec(body)?.into())
            .await?;
        self.client.flush().await?;
        let expected = format!("permissions violation for publish to \"{subject}\"").to_lowercase();
        let deadline = tokio::time::Instant::now() + ANSWER;
        loop {
            tokio::select! {
                error = tokio::time::timeout_at(deadline, self.errors.recv()) => {
                    let text = error
                        .with_context(|| format!("{} {subject}: neither refused nor answered", self.user))?
                        .context("connection closed")?;
                    if text.to_lowercase().contains(&expected) {
                        return Ok(None);
                    }
                }
                answer = answers.next() => {
                    let answer = answer.context("inbox subscription ended")?;
                    return Ok(Some(serde_json::from_slice(&answer.payload).unwrap_or_default()));
                }
            }
        }
    }
}

/// A subscription the server has surely registered: `client` sees its own
/// sentinel message on it before it is returned. (`flush` only writes the socket.)
pub async fn subscribed(client: &Client, subject: &str) -> anyhow::Result<async_nats::Subscriber> {
    let mut subscription = client.subscribe(subject.to_owned()).await?;
    client.publish(subject.to_owned(), "sentinel".into()).await?;
    let sentinel = tokio::time::timeout(ANSWER, subscription.next())
        .await
        .context("sentinel never arrived")?
        .context("subscription ended")?;
    anyhow::ensure!(&sentinel.payload[..] == b"sentinel");
    Ok(subscription)
}
