//! A provider simulator for local demos: it posts Standard Webhooks-signed
//! `payment.pending` then `payment.succeeded` / `payment.failed` events to ingest,
//! sometimes delivering a webhook twice, as real providers do.

use std::time::Duration;

use anyhow::Context;
use paytrack_shared::config::{Settings, WebhookSecrets};
use paytrack_shared::{TenantId, Token};
use rand::Rng;
use secrecy::ExposeSecret;
use standardwebhooks::Webhook;
use tokio_util::sync::CancellationToken;

/// Posts simulated webhooks for one tenant.
pub struct Simulator {
    url: String,
    ready_url: String,
    webhook: Webhook,
    http: reqwest::Client,
}

impl Simulator {
    /// A simulator for `PAYTRACK_SIMULATOR_TENANT`, signing with its stdwebhooks secret.
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Simulator> {
        let tenant = settings
            .simulator_tenant
            .as_deref()
            .context("PAYTRACK_SIMULATOR_TENANT is required with --simulate")?;
        let tenant = TenantId::parse(tenant)?;
        let secrets = WebhookSecrets::parse(&settings.webhook_secrets)?;
        let secret = secrets
            .get(&tenant, "stdwebhooks")
            .context("no stdwebhooks secret for the simulator tenant")?;
        let webhook = Webhook::new(secret.expose_secret()).context("stdwebhooks secret")?;
        Ok(Simulator {
            url: format!("http://{}/v1/webhooks/{tenant}/stdwebhooks", settings.ingest_listen),
            ready_url: format!("http://{}/readyz", settings.ingest_listen),
            webhook,
            http: reqwest::Client::new(),
        })
    }

    /// Posts a payment's life every few seconds until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        // Ingest starts in the same process; post only once it answers.
        while !self
            .http
            .get(&self.ready_url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
        tracing::info!(url = %self.url, "simulator posting webhooks");
        let mut n: u64 = 0;
        while !shutdown.is_cancelled() {
            n += 1;
            let payment = format!("sim_{}_{n}", chrono::Utc::now().timestamp());
            let (merchant, outcome, duplicate) = {
                let mut rng = rand::rng();
                let merchant = format!("m_{}", rng.random_range(1..=3));
                let outcome = if rng.random_bool(0.8) { "succeeded" } else { "failed" };
                (merchant, outcome, rng.random_bool(0.2))
            };
            self.post(&payment, &merchant, "pending", false).await;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(1500)) => {}
            }
            self.post(&payment, &merchant, outcome, duplicate).await;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(3000)) => {}
            }
        }
    }

    async fn post(&self, payment: &str, merchant: &str, status: &str, twice: bool) {
        let body = serde_json::json!({
            "type": format!("payment.{status}"),
            "timestamp": chrono::Utc::now().to_rfc3339(),
            "data": {
                "payment_id": payment,
                "provider_ref": format!("prov_{payment}"),
                "amount_minor": 1250,
                "currency": "USD",
                "merchant_id": merchant,
            }
        })
        .to_string();
        let id = format!("msg_{payment}_{status}");
        let ts = chrono::Utc::now().timestamp();
        let Ok(signature) = self.webhook.sign(&id, ts, body.as_bytes()) else {
            return;
        };
        for _ in 0..if twice { 2 } else { 1 } {
            let sent = self
                .http
                .post(&self.url)
                .header("content-type", "application/json")
                .header("webhook-id", &id)
                .header("webhook-timestamp", ts.to_string())
                .header("webhook-signature", &signature)
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(response) => tracing::debug!(status = %response.status(), %payment, "simulated webhook"),
                Err(error) => tracing::warn!(%error, "simulated webhook not delivered"),
            }
        }
    }
}
