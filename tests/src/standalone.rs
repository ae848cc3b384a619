//! Ingest alone on a test's own NATS (no PostgreSQL, no other service): what the
//! webhook-scheme, simulator and command-line tests post to.

use std::time::Duration;

use paytrack_shared::config::Settings;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::NatsServer;

/// Ingest running in this process on a test's NATS, and how to stop it.
#[derive(Debug)]
pub struct StandaloneIngest {
    /// Its HTTP base URL, e.g. `http://127.0.0.1:1234`.
    pub url: String,
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl StandaloneIngest {
    /// Settings for ingest alone on `nats`, verifying the webhook `secrets`, with
    /// `extra` settings on top (they win over these).
    pub fn settings(nats: &NatsServer, secrets: &str, extra: &[(&'static str, &str)]) -> anyhow::Result<Settings> {
        let mut pairs = nats.settings_pairs();
        pairs.extend([
            ("nats_url", nats.url()),
            // Never connected to: webhooks read no table.
            ("database_url", "postgres://unused@127.0.0.1:1/unused".to_owned()),
            ("ingest_listen", "127.0.0.1:0".to_owned()),
            ("jwt_secret", "test-secret".to_owned()),
            ("webhook_secrets", secrets.to_owned()),
        ]);
        pairs.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        Ok(Settings::from_pairs(pairs)?)
    }

    /// Lays `nats` out and starts ingest on it with [`StandaloneIngest::settings`];
    /// returns once its `/readyz` answers.
    pub async fn start(
        nats: &NatsServer,
        secrets: &str,
        extra: &[(&'static str, &str)],
    ) -> anyhow::Result<StandaloneIngest> {
        paytrack_shared::telemetry::init_for_tests();
        let settings = Self::settings(nats, secrets, extra)?;
        nats.lay_out_for(&settings).await?;
        let ingest = paytrack_ingest::Ingest::bind(paytrack_ingest::Config::from_settings(&settings)?).await?;
        let url = format!("http://{}", ingest.local_addr()?);
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move { Ok(ingest.run(token).await?) });
        let http = reqwest::Client::new();
        crate::eventually(Duration::from_secs(60), "ingest ready", || async {
            let response = http.get(format!("{url}/readyz")).send().await.ok()?;
            response.status().is_success().then_some(())
        })
        .await?;
        Ok(StandaloneIngest { url, stop, task })
    }

    /// The token that stops this ingest, for what should stop with it.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Stops ingest and waits for it to end; its error, if it failed.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.await??;
        Ok(())
    }
}
