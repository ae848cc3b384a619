//! The whole mesh in-process on a real nats-server and a fresh PostgreSQL database.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream;
use base64::Engine;
use paytrack_shared::auth::JwtKeys;
use paytrack_shared::config::Settings;
use paytrack_shared::{TenantId, subjects};
use rand::RngCore;
use secrecy::SecretString;
use sqlx::PgPool;
use standardwebhooks::Webhook;
use tokio_util::sync::CancellationToken;

use crate::NatsServer;

/// Knobs a test may turn.
#[derive(Debug, Clone)]
pub struct MeshOptions {
    /// Edge heartbeat interval.
    pub heartbeat_ms: u64,
    /// Per-session queue bound.
    pub session_queue: usize,
    /// JetStream's de-duplication window of every stream, in seconds.
    pub duplicate_window_secs: u64,
    /// How many reconciler replicas run side by side (the Kubernetes base runs two);
    /// 0 for a test that drives its own `paytrack_reconciler::Reconciler`s.
    pub reconcilers: usize,
}

impl Default for MeshOptions {
    fn default() -> Self {
        MeshOptions {
            heartbeat_ms: 1_000,
            session_queue: 1_024,
            duplicate_window_secs: 86_400,
            reconcilers: 1,
        }
    }
}

/// A running mesh; dropping it stops the services and the nats-server.
pub struct Mesh {
    /// The nats-server (stop/restart it to test outages).
    pub nats: NatsServer,
    /// The projection's database.
    pub db: PgPool,
    /// The tenant webhooks and tokens are set up for.
    pub tenant: TenantId,
    /// e.g. `http://127.0.0.1:1234`.
    pub ingest_url: String,
    /// The edge's address.
    pub edge_addr: SocketAddr,
    /// Mints tokens the mesh accepts.
    pub jwt: JwtKeys,
    /// A backend API key of the tenant.
    pub api_key: String,
    /// A second tenant with its own webhook secret and API key, for isolation tests.
    pub other_tenant: TenantId,
    /// A backend API key of [`Mesh::other_tenant`].
    pub other_api_key: String,
    /// A JetStream client for assertions.
    pub js: jetstream::Context,
    webhook: Webhook,
    other_webhook: Webhook,
    http: reqwest::Client,
    shutdown: CancellationToken,
}

impl Mesh {
    /// Starts everything with default options.
    pub async fn start() -> anyhow::Result<Mesh> {
        Self::start_with(MeshOptions::default()).await
    }

    /// Starts nats-server, a fresh database and the four services.
    pub async fn start_with(options: MeshOptions) -> anyhow::Result<Mesh> {
        paytrack_shared::telemetry::init_for_tests();
        let nats = NatsServer::start().await?;
        let database_url = crate::pg::fresh_database().await?;
        let new_tenant = || TenantId::new(&format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]));
        let new_whsec = || {
            let mut key = [0u8; 24];
            rand::rng().fill_bytes(&mut key);
            format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(key))
        };
        let new_api_key = || format!("pk_test_{}", uuid::Uuid::new_v4().simple());
        let (tenant, whsec, api_key) = (new_tenant()?, new_whsec(), new_api_key());
        let (other_tenant, other_whsec, other_api_key) = (new_tenant()?, new_whsec(), new_api_key());
        let jwt_secret = uuid::Uuid::new_v4().to_string();
        let settings = Settings::from_pairs([
            ("nats_url", nats.url()),
            ("database_url", database_url.clone()),
            ("ingest_listen", "127.0.0.1:0".to_owned()),
            ("edge_listen", "127.0.0.1:0".to_owned()),
            ("nats_ack_timeout_ms", "2000".to_owned()),
            ("jwt_secret", jwt_secret.clone()),
            (
                "webhook_secrets",
                format!("{tenant}/stdwebhooks={whsec},{other_tenant}/stdwebhooks={other_whsec}"),
            ),
            ("api_keys", format!("{tenant}={api_key},{other_tenant}={other_api_key}")),
            ("heartbeat_ms", options.heartbeat_ms.to_string()),
            ("session_queue", options.session_queue.to_string()),
            ("edge_id", "edge-test".to_owned()),
            ("nats_duplicate_window_secs", options.duplicate_window_secs.to_string()),
            (
                "nats_duplicate_window_in_secs",
                options.duplicate_window_secs.to_string(),
            ),
            (
                "nats_duplicate_window_push_secs",
                options.duplicate_window_secs.to_string(),
            ),
        ])?;

        let db = PgPool::connect(&database_url).await?;
        paytrack_shared::db::MIGRATOR.run(&db).await?;

        let shutdown = CancellationToken::new();
        let ingest = paytrack_ingest::Ingest::bind(paytrack_ingest::Config::from_settings(&settings)?).await?;
        let ingest_url = format!("http://{}", ingest.local_addr()?);
        let edge =
            paytrack_ws_edge::WsEdge::bind(paytrack_ws_edge::Config::from_settings(&settings)?, shutdown.clone())
                .await?;
        let edge_addr = edge.local_addr()?;
        tokio::spawn(ingest.run(shutdown.clone()));
        tokio::spawn(edge.run());
        for replica in 0..options.reconcilers {
            let run = paytrack_reconciler::run(paytrack_reconciler::Config::from_settings(&settings), shutdown.clone());
            tokio::spawn(async move {
                if let Err(error) = run.await {
                    tracing::error!(replica, %error, "reconciler ended with an error");
                    eprintln!("reconciler {replica} ended with an error: {error}");
                }
            });
        }
        tokio::spawn(paytrack_ledger_projector::run(
            paytrack_ledger_projector::Config::from_settings(&settings),
            shutdown.clone(),
        ));

        let client = async_nats::connect(nats.url()).await?;
        Ok(Mesh {
            nats,
            db,
            tenant,
            ingest_url,
            edge_addr,
            jwt: JwtKeys::new(
                &SecretString::from(jwt_secret),
                &settings.jwt_issuer,
                &settings.jwt_audience,
            ),
            api_key,
            other_tenant,
            other_api_key,
            js: jetstream::new(client),
            webhook: Webhook::new(&whsec)?,
            other_webhook: Webhook::new(&other_whsec)?,
            http: reqwest::Client::builder().timeout(Duration::from_secs(20)).build()?,
            shutdown,
        })
    }

    /// An operator token of the mesh's tenant.
    pub fn operator_token(&self) -> String {
        self.jwt.mint("operator-1", &self.tenant, 600, None, None)
    }

    /// A token limited to `channels`.
    pub fn scoped_token(&self, sub: &str, channels: &[&str]) -> String {
        let channels = channels.iter().map(|c| (*c).to_owned()).collect();
        self.jwt.mint(sub, &self.tenant, 600, Some(channels), None)
    }

    /// The WebSocket URL.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.edge_addr)
    }

    /// A `stdwebhooks` event body.
    pub fn webhook_body(payment: &str, status: &str, merchant: &str) -> String {
        serde_json::json!({
            "type": format!("payment.{status}"),
            "timestamp": chrono::Utc::now().to_rfc3339(),
            "data": {
                "payment_id": payment,
                "provider_ref": format!("pr_{payment}"),
                "amount_minor": 1250,
                "currency": "USD",
                "merchant_id": merchant,
            }
        })
        .to_string()
    }

    /// Standard Webhooks headers for `body`, signed now with the tenant's secret.
    pub fn sign(&self, delivery_id: &str, body: &str) -> anyhow::Result<Vec<(String, String)>> {
        Self::sign_with(&self.webhook, delivery_id, body)
    }

    fn sign_with(webhook: &Webhook, delivery_id: &str, body: &str) -> anyhow::Result<Vec<(String, String)>> {
        let ts = chrono::Utc::now().timestamp();
        let signature = webhook.sign(delivery_id, ts, body.as_bytes())?;
        Ok(vec![
            ("webhook-id".into(), delivery_id.into()),
            ("webhook-timestamp".into(), ts.to_string()),
            ("webhook-signature".into(), signature),
        ])
    }

    /// Posts `body` with `headers` to the tenant's stdwebhooks endpoint.
    pub async fn post_webhook_with(
        &self,
        headers: &[(String, String)],
        body: &str,
    ) -> anyhow::Result<reqwest::Response> {
        let mut request = self
            .http
            .post(format!("{}/v1/webhooks/{}/stdwebhooks", self.ingest_url, self.tenant))
            .header("content-type", "application/json")
            .body(body.to_owned());
        for (k, v) in headers {
            request = request.header(k, v);
        }
        Ok(request.send().await?)
    }

    /// Signs and posts a webhook.
    pub async fn post_webhook(&self, delivery_id: &str, body: &str) -> anyhow::Result<reqwest::Response> {
        let headers = self.sign(delivery_id, body)?;
        self.post_webhook_with(&headers, body).await
    }

    /// Signs a webhook with [`Mesh::other_tenant`]'s secret and posts it to that
    /// tenant's stdwebhooks endpoint.
    pub async fn post_other_webhook(&self, delivery_id: &str, body: &str) -> anyhow::Result<reqwest::Response> {
        let headers = Self::sign_with(&self.other_webhook, delivery_id, body)?;
        let mut request = self
            .http
            .post(format!(
                "{}/v1/webhooks/{}/stdwebhooks",
                self.ingest_url, self.other_tenant
            ))
            .header("content-type", "application/json")
            .body(body.to_owned());
        for (k, v) in &headers {
            request = request.header(k, v);
        }
        Ok(request.send().await?)
    }

    /// An operator token of [`Mesh::other_tenant`].
    pub fn other_operator_token(&self) -> String {
        self.jwt.mint("operator-2", &self.other_tenant, 600, None, None)
    }

    /// `GET {ingest}{path}` with a bearer credential.
    pub async fn get(&self, path: &str, credential: &str) -> anyhow::Result<reqwest::Response> {
        Ok(self
            .http
            .get(format!("{}{path}", self.ingest_url))
            .bearer_auth(credential)
            .send()
            .await?)
    }

    /// A payment's timeline as an operator reads it, and its statuses oldest first.
    pub async fn timeline(&self, payment: &str) -> anyhow::Result<(serde_json::Value, Vec<String>)> {
        let path = format!("/v1/payments/{payment}/timeline");
        let timeline: serde_json::Value = self.get(&path, &self.operator_token()).await?.json().await?;
        let statuses = timeline
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["status"].as_str().map(str::to_owned))
            .collect();
        Ok((timeline, statuses))
    }

    /// The Prometheus text of ingest's and the edge's `/metrics`.
    pub async fn scrape(&self) -> anyhow::Result<(String, String)> {
        let ingest = self
            .http
            .get(format!("{}/metrics", self.ingest_url))
            .send()
            .await?
            .text()
            .await?;
        let edge = self
            .http
            .get(format!("http://{}/metrics", self.edge_addr))
            .send()
            .await?
            .text()
            .await?;
        Ok((ingest, edge))
    }

    /// Messages in a stream now.
    pub async fn stream_messages(&self, stream: &str) -> anyhow::Result<u64> {
        let mut handle = self.js.get_stream(stream).await?;
        Ok(handle.info().await?.state.messages)
    }

    /// Transitions recorded for `payment` in PAYTRACK_STATUS.
    pub async fn transition_count(&self, payment: &str) -> anyhow::Result<usize> {
        let filter = subjects::status_of_payment(&self.tenant, &paytrack_shared::PaymentId::new(payment)?);
        let stream = self.js.get_stream(subjects::STREAM_STATUS).await?;
        let mut subjects = stream.info_with_subjects(filter).await?;
        let mut total = 0;
        use futures::TryStreamExt;
        while let Some((_, count)) = subjects.try_next().await? {
            total += count;
        }
        Ok(total)
    }

    /// Waits until the projection holds `payment` at `version` and returns its row
    /// `(status, version, status_seq, trace_id)`.
    pub async fn wait_for_row(&self, payment: &str, version: i64) -> anyhow::Result<(String, i64, i64, String)> {
        crate::eventually(Duration::from_secs(20), "projection row", || async {
            sqlx::query_as::<_, (String, i64, i64, String)>(
                "SELECT status, version, status_seq, trace_id FROM payments WHERE tenant = $1 AND payment_id = $2",
            )
            .bind(self.tenant.as_str())
            .bind(payment)
            .fetch_optional(&self.db)
            .await
            .ok()
            .flatten()
            .filter(|row| row.1 >= version)
        })
        .await
        .context("payment row")
    }
}

impl Mesh {
    /// Cancels the services' shutdown token, as SIGTERM would.
    pub fn shut_down_services(&self) {
        self.shutdown.cancel();
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
