//! The whole mesh in-process on a real nats-server and a fresh PostgreSQL database.
//!
//! Each service connects as its own NATS user. The harness keeps every service's
//! task: [`Mesh::start`] returns once all four report ready on `/readyz`, and its
//! waits (and its drop) fail the test when a service task has ended on its own.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream;
use base64::Engine;
use futures::FutureExt;
use paytrack_shared::auth::JwtKeys;
use paytrack_shared::config::Settings;
use paytrack_shared::{TenantId, subjects};
use rand::RngCore;
use secrecy::SecretString;
use sqlx::PgPool;
use standardwebhooks::Webhook;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::NatsServer;

/// How long the mesh may take to become ready on a loaded machine.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The mesh tenant's Razorpay webhook secret.
pub const RAZORPAY_SECRET: &str = "rzp_mesh_webhook_secret";
/// The mesh tenant's Stripe endpoint secret.
pub const STRIPE_SECRET: &str = "whsec_mesh_stripe_secret";

/// A service's task, kept so that its end is noticed.
type ServiceTask = (&'static str, JoinHandle<anyhow::Result<()>>);

/// Knobs a test may turn.
#[derive(Debug, Clone)]
pub struct MeshOptions {
    /// Edge heartbeat interval.
    pub heartbeat_ms: u64,
    /// Per-session queue bound.
    pub session_queue: usize,
    /// JetStream's de-duplication window of every stream, in seconds.
    pub duplicate_window_secs: u64,
    /// How long ingest and the edge wait for a request's headers.
    pub http_header_read_timeout_ms: u64,
    /// Deliveries of a failing message before it is parked (None: the default).
    pub consumer_max_deliveries: Option<u32>,
    /// First redelivery delay of a failing message, in ms (None: the default).
    pub consumer_retry_ms: Option<u64>,
    /// Per-session queue bound in bytes.
    pub session_queue_bytes: usize,
    /// How long one socket write may take.
    pub session_write_timeout_ms: u64,
    /// Recent messages per stream the edge keeps for resumes.
    pub edge_ring_messages: usize,
    /// Channels one session may hold.
    pub edge_max_subscriptions: usize,
    /// How many reconciler replicas run side by side (the Kubernetes base runs two);
    /// 0 for a test that drives its own `paytrack_reconciler::Reconciler`s.
    pub reconcilers: usize,
    /// Further settings, applied last (e.g. the reconciler's sweep windows).
    pub extra_settings: Vec<(&'static str, String)>,
    /// ingest's `provider_urls` (sandbox gateways to initiate payments at).
    pub provider_urls: Option<String>,
    /// Also run the provider simulator for the mesh's tenant at every provider, wired
    /// as `make up` wires it: ingest initiates payments there (unless `provider_urls`
    /// says otherwise) and the reconciler's status queries ask it.
    pub simulator: bool,
}

impl MeshOptions {
    /// Heartbeats rare enough that silent test clients (thousands of them) are not
    /// closed for missing them.
    pub fn quiet() -> MeshOptions {
        MeshOptions {
            heartbeat_ms: 120_000,
            ..MeshOptions::default()
        }
    }
}

impl Default for MeshOptions {
    fn default() -> Self {
        MeshOptions {
            heartbeat_ms: 1_000,
            session_queue: 1_024,
            duplicate_window_secs: 86_400,
            http_header_read_timeout_ms: 10_000,
            consumer_max_deliveries: None,
            consumer_retry_ms: None,
            session_queue_bytes: 1 << 20,
            session_write_timeout_ms: 10_000,
            edge_ring_messages: 10_000,
            edge_max_subscriptions: 100,
            reconcilers: 1,
            extra_settings: Vec::new(),
            provider_urls: None,
            simulator: false,
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
    /// The edge's name (its `edge_id`, unique per mesh).
    pub edge_id: String,
    /// Mints tokens the mesh accepts.
    pub jwt: JwtKeys,
    /// A backend API key of the tenant.
    pub api_key: String,
    /// The HS256 secret tokens are signed with (to forge tokens with odd claims).
    pub jwt_secret: String,
    /// A second tenant with its own webhook secret and API key, for isolation tests.
    pub other_tenant: TenantId,
    /// A backend API key of [`Mesh::other_tenant`].
    pub other_api_key: String,
    /// A JetStream client for assertions, as the NATS admin user (may publish anything).
    pub js: jetstream::Context,
    /// Each reconciler replica's admin listener (`/readyz`, `/metrics`).
    pub reconciler_admins: Vec<SocketAddr>,
    /// The projector's admin listener (`/readyz`, `/metrics`); a restarted projector
    /// serves it again on the same address.
    pub projector_admin: SocketAddr,
    /// The provider simulator's base URL, with [`MeshOptions::simulator`].
    pub simulator_url: Option<String>,
    /// The bearer token the simulator requires, with [`MeshOptions::simulator`].
    pub simulator_token: String,
    /// The tenant's `stdwebhooks` secret (`whsec_…`).
    pub stdwebhooks_secret: String,
    tasks: Mutex<Vec<ServiceTask>>,
    /// Stops the running reconciler replicas (a child of `shutdown`).
    reconciler_stop: Mutex<CancellationToken>,
    settings: Settings,
    projector: Mutex<Option<RunningProjector>>,
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

    /// Starts nats-server, a fresh database and the four services, and waits until
    /// every service is ready.
    pub async fn start_with(options: MeshOptions) -> anyhow::Result<Mesh> {
        let nats = NatsServer::start().await?;
        let mesh = Self::launch(nats, options).await?;
        mesh.wait_ready().await?;
        Ok(mesh)
    }

    /// Starts a fresh database and the four services on `nats` (running or not) and
    /// returns without waiting for them to be ready.
    pub async fn launch(nats: NatsServer, options: MeshOptions) -> anyhow::Result<Mesh> {
        paytrack_shared::telemetry::init_for_tests();
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
        // Bound here and handed over, so no other server can take the port between.
        let admin_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let projector_admin = admin_listener.local_addr()?;
        // Unique per mesh, so per-edge metrics of tests running side by side stay apart.
        let edge_id = format!("edge-{}", &tenant.as_str()[1..]);
        let mut pairs = nats.settings_pairs();
        pairs.extend([
            ("nats_url", nats.url()),
            ("database_url", database_url.clone()),
            ("ingest_listen", "127.0.0.1:0".to_owned()),
            ("edge_listen", "127.0.0.1:0".to_owned()),
            ("nats_ack_timeout_ms", "2000".to_owned()),
            ("jwt_secret", jwt_secret.clone()),
            (
                "webhook_secrets",
                format!(
                    "{tenant}/stdwebhooks={whsec},{other_tenant}/stdwebhooks={other_whsec},\
                     {tenant}/razorpay={RAZORPAY_SECRET},{tenant}/stripe={STRIPE_SECRET}"
                ),
            ),
            ("api_keys", format!("{tenant}={api_key},{other_tenant}={other_api_key}")),
            ("heartbeat_ms", options.heartbeat_ms.to_string()),
            ("session_queue", options.session_queue.to_string()),
            ("edge_id", edge_id.clone()),
            ("nats_duplicate_window_secs", options.duplicate_window_secs.to_string()),
            (
                "http_header_read_timeout_ms",
                options.http_header_read_timeout_ms.to_string(),
            ),
            (
                "nats_duplicate_window_in_secs",
                options.duplicate_window_secs.to_string(),
            ),
            (
                "nats_duplicate_window_push_secs",
                options.duplicate_window_secs.to_string(),
            ),
            ("session_queue_bytes", options.session_queue_bytes.to_string()),
            ("session_write_timeout_ms", options.session_write_timeout_ms.to_string()),
            ("edge_ring_messages", options.edge_ring_messages.to_string()),
            ("edge_max_subscriptions", options.edge_max_subscriptions.to_string()),
        ]);
        if let Some(max) = options.consumer_max_deliveries {
            pairs.push(("consumer_max_deliveries", max.to_string()));
        }
        if let Some(ms) = options.consumer_retry_ms {
            pairs.push(("consumer_retry_ms", ms.to_string()));
        }
        let simulator_token = uuid::Uuid::new_v4().simple().to_string();
        let simulator_port = if options.simulator {
            let port = crate::free_port_for_later()?;
            let url = format!("http://127.0.0.1:{port}");
            let gateways = format!("stdwebhooks={url},razorpay={url},stripe={url}");
            pairs.push(("reconciler_status_query_urls", gateways.clone()));
            pairs.push(("simulator_token", simulator_token.clone()));
            if options.provider_urls.is_none() {
                pairs.push(("provider_urls", gateways));
            }
            Some(port)
        } else {
            None
        };
        pairs.extend(options.extra_settings.iter().map(|(k, v)| (*k, v.clone())));
        if let Some(urls) = &options.provider_urls {
            pairs.push(("provider_urls", urls.clone()));
        }
        let settings = Settings::from_pairs(pairs)?;
        // The layout step, as the admin: now, or once the server starts.
        nats.lay_out_for(&settings).await?;

        let db = PgPool::connect(&database_url).await?;
        paytrack_shared::db::MIGRATOR.run(&db).await?;

        let shutdown = CancellationToken::new();
        let ingest = paytrack_ingest::Ingest::bind(paytrack_ingest::Config::from_settings(&settings)?).await?;
        let ingest_url = format!("http://{}", ingest.local_addr()?);
        let edge = paytrack_ws_edge::WsEdge::bind(paytrack_ws_edge::Config::from_settings(&settings)?).await?;
        let edge_addr = edge.local_addr()?;
        let (token, edge_token) = (shutdown.clone(), shutdown.clone());
        let mut tasks: Vec<ServiceTask> = vec![
            ("ingest", tokio::spawn(async move { Ok(ingest.run(token).await?) })),
            ("ws-edge", tokio::spawn(async move { Ok(edge.run(edge_token).await?) })),
        ];
        // Every replica gets its own admin listener; readiness waits for all of them.
        let mut reconciler_admins = Vec::new();
        let reconciler_stop = shutdown.child_token();
        for _ in 0..options.reconcilers {
            // Bound here and handed over, so no other server can take the port between.
            let admin = std::net::TcpListener::bind("127.0.0.1:0")?;
            reconciler_admins.push(admin.local_addr()?);
            tasks.push(spawn_reconciler(&settings, admin, &reconciler_stop));
        }
        let projector = RunningProjector::spawn(&settings, admin_listener, &shutdown);
        let simulator_url = match simulator_port {
            Some(port) => {
                let simulator = paytrack_simulator::Simulator::bind(paytrack_simulator::Config {
                    listen: SocketAddr::from(([127, 0, 0, 1], port)),
                    ingest_url: ingest_url.clone(),
                    tenant: tenant.clone(),
                    token: SecretString::from(simulator_token.clone()),
                    secrets: paytrack_shared::config::WebhookSecrets::parse(&settings.webhook_secrets)?,
                    traffic_every: None,
                })
                .await?;
                let token = shutdown.clone();
                tasks.push((
                    "simulator",
                    tokio::spawn(async move { Ok(simulator.run(token).await?) }),
                ));
                Some(format!("http://127.0.0.1:{port}"))
            }
            None => None,
        };

        let client = nats.admin_client().await?;
        Ok(Mesh {
            nats,
            db,
            tenant,
            ingest_url,
            edge_addr,
            edge_id,
            jwt_secret: jwt_secret.clone(),
            jwt: JwtKeys::new(
                &SecretString::from(jwt_secret),
                &settings.jwt_issuer,
                &settings.jwt_audience,
            ),
            api_key,
            other_tenant,
            other_api_key,
            js: jetstream::new(client),
            reconciler_admins,
            projector_admin,
            simulator_url,
            simulator_token,
            stdwebhooks_secret: whsec.clone(),
            tasks: Mutex::new(tasks),
            reconciler_stop: Mutex::new(reconciler_stop),
            settings,
            projector: Mutex::new(Some(projector)),
            webhook: Webhook::new(&whsec)?,
            other_webhook: Webhook::new(&other_whsec)?,
            http: reqwest::Client::builder().timeout(Duration::from_secs(20)).build()?,
            shutdown,
        })
    }

    /// The settings pairs another service on the mesh's NATS needs: the users'
    /// passwords, the URL, and what the layout was applied with (replicas, duplicate
    /// windows, idempotency TTL), which every service verifies at start.
    pub fn nats_pairs(&self) -> Vec<(&'static str, String)> {
        let s = &self.settings;
        let mut pairs = self.nats.settings_pairs();
        pairs.extend([
            ("nats_url", self.nats.url()),
            ("nats_replicas", s.nats_replicas.to_string()),
            ("nats_duplicate_window_secs", s.nats_duplicate_window_secs.to_string()),
            (
                "nats_duplicate_window_in_secs",
                s.nats_duplicate_window_in_secs.to_string(),
            ),
            (
                "nats_duplicate_window_push_secs",
                s.nats_duplicate_window_push_secs.to_string(),
            ),
            ("idempotency_ttl_secs", s.idempotency_ttl_secs.to_string()),
        ]);
        pairs
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

    /// Posts `body` with `headers` to `tenant`'s webhook endpoint for `provider`.
    async fn post_to(
        &self,
        tenant: &TenantId,
        provider: &str,
        headers: &[(String, String)],
        body: &str,
    ) -> anyhow::Result<reqwest::Response> {
        let mut request = self
            .http
            .post(format!("{}/v1/webhooks/{tenant}/{provider}", self.ingest_url))
            .header("content-type", "application/json")
            .body(body.to_owned());
        for (k, v) in headers {
            request = request.header(k, v);
        }
        Ok(request.send().await?)
    }

    /// Posts `body` with `headers` to the tenant's stdwebhooks endpoint.
    pub async fn post_webhook_with(
        &self,
        headers: &[(String, String)],
        body: &str,
    ) -> anyhow::Result<reqwest::Response> {
        self.post_to(&self.tenant, "stdwebhooks", headers, body).await
    }

    /// Signs and posts a webhook.
    pub async fn post_webhook(&self, delivery_id: &str, body: &str) -> anyhow::Result<reqwest::Response> {
        let headers = self.sign(delivery_id, body)?;
        self.post_webhook_with(&headers, body).await
    }

    /// Signs `body` as `provider` signs its webhooks, now, with the tenant's secret
    /// for it ([`RAZORPAY_SECRET`], [`STRIPE_SECRET`]), and posts it to the tenant's
    /// endpoint for that provider: a provider's own event shape end to end.
    pub async fn post_provider_webhook(
        &self,
        provider: &str,
        event_id: &str,
        body: &str,
    ) -> anyhow::Result<reqwest::Response> {
        let headers = match provider {
            "stdwebhooks" => self.sign(event_id, body)?,
            "razorpay" => crate::hostile::sign(provider, RAZORPAY_SECRET, event_id, body)?,
            _ => crate::hostile::sign(provider, STRIPE_SECRET, event_id, body)?,
        };
        self.post_to(&self.tenant, provider, &headers, body).await
    }

    /// Signs a webhook with [`Mesh::other_tenant`]'s secret and posts it to that
    /// tenant's stdwebhooks endpoint.
    pub async fn post_other_webhook(&self, delivery_id: &str, body: &str) -> anyhow::Result<reqwest::Response> {
        let headers = Self::sign_with(&self.other_webhook, delivery_id, body)?;
        self.post_to(&self.other_tenant, "stdwebhooks", &headers, body).await
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

    /// A payment's REST view as an operator reads it.
    pub async fn payment_view(&self, payment: &str) -> anyhow::Result<serde_json::Value> {
        let path = format!("/v1/payments/{payment}");
        Ok(self.get(&path, &self.operator_token()).await?.json().await?)
    }

    /// A payment's REST view once `ready` holds for it; an error naming `what` when
    /// it does not within [`crate::workload::WAIT`].
    pub async fn view_when(
        &self,
        payment: &str,
        what: &str,
        ready: impl Fn(&serde_json::Value) -> bool,
    ) -> anyhow::Result<serde_json::Value> {
        let ready = &ready;
        self.eventually(crate::workload::WAIT, what, || async move {
            let view = self.payment_view(payment).await.ok()?;
            ready(&view).then_some(view)
        })
        .await
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

    /// Aborts one reconciler replica's task, as a killed process would stop: the
    /// message in hand is neither finished nor acknowledged. False when none runs.
    pub fn abort_reconciler(&self) -> anyhow::Result<bool> {
        let mut tasks = self
            .tasks
            .lock()
            .map_err(|_| anyhow::anyhow!("service tasks poisoned"))?;
        let Some(index) = tasks.iter().position(|(name, _)| *name == "reconciler") else {
            return Ok(false);
        };
        let (_, task) = tasks.swap_remove(index);
        task.abort();
        Ok(true)
    }

    /// Stops every reconciler replica (as SIGTERM to their processes would: the facts
    /// in hand are finished), runs `between`, then starts as many fresh replicas on
    /// the same settings and admin addresses: facts stored meanwhile wait in
    /// PAYTRACK_IN, as they would for a stopped deployment.
    pub async fn restart_reconcilers<F: std::future::Future<Output = anyhow::Result<()>>>(
        &self,
        between: F,
    ) -> anyhow::Result<()> {
        let stopped: Vec<ServiceTask> = {
            let mut tasks = self
                .tasks
                .lock()
                .map_err(|_| anyhow::anyhow!("service tasks poisoned"))?;
            let (replicas, others) = std::mem::take(&mut *tasks)
                .into_iter()
                .partition(|(name, _)| *name == "reconciler");
            *tasks = others;
            replicas
        };
        self.reconciler_stop
            .lock()
            .map_err(|_| anyhow::anyhow!("reconciler stop poisoned"))?
            .cancel();
        for (_, task) in stopped {
            task.await?.context("reconciler ended with an error")?;
        }
        between.await?;
        let stop = self.shutdown.child_token();
        let mut fresh = Vec::new();
        for addr in &self.reconciler_admins {
            // The stopped replica's listener is closed; its address is free again.
            let admin = crate::eventually(Duration::from_secs(60), "the admin port free", || async {
                std::net::TcpListener::bind(addr).ok()
            })
            .await?;
            fresh.push(spawn_reconciler(&self.settings, admin, &stop));
        }
        *self
            .reconciler_stop
            .lock()
            .map_err(|_| anyhow::anyhow!("reconciler stop poisoned"))? = stop;
        self.tasks
            .lock()
            .map_err(|_| anyhow::anyhow!("service tasks poisoned"))?
            .extend(fresh);
        Ok(())
    }

    /// Fails when a service task has ended while it should run (an error, a panic,
    /// or an early return), naming the service and why.
    pub fn check_services(&self) -> anyhow::Result<()> {
        self.check_projector()?;
        let mut tasks = self
            .tasks
            .lock()
            .map_err(|_| anyhow::anyhow!("service tasks poisoned"))?;
        // A finished task's result can be taken once: take it and forget the task.
        let Some(index) = tasks.iter().position(|(_, task)| task.is_finished()) else {
            return Ok(());
        };
        let (name, mut task) = tasks.swap_remove(index);
        drop(tasks);
        match (&mut task).now_or_never() {
            Some(Ok(Ok(()))) if self.shutdown.is_cancelled() => self.check_services(),
            Some(Ok(Ok(()))) => Err(anyhow::anyhow!("service {name} stopped before shutdown")),
            Some(Ok(Err(error))) => Err(error.context(format!("service {name} failed"))),
            Some(Err(join)) => Err(anyhow::anyhow!("service {name} panicked or was aborted: {join}")),
            None => self.check_services(),
        }
    }

    /// The projector's part of [`Mesh::check_services`]: it lives apart from the other
    /// tasks because tests may restart it.
    fn check_projector(&self) -> anyhow::Result<()> {
        let mut slot = self.projector.lock().map_err(|_| anyhow::anyhow!("projector lock"))?;
        let ended = slot
            .as_ref()
            .is_some_and(|p| p.task.is_finished() && !p.shutdown.is_cancelled());
        if !ended {
            return Ok(());
        }
        let Some(mut running) = slot.take() else {
            return Ok(());
        };
        match (&mut running.task).now_or_never() {
            Some(Ok(Ok(()))) => Err(anyhow::anyhow!("service ledger-projector stopped before shutdown")),
            Some(Ok(Err(error))) => Err(anyhow::Error::new(error).context("service ledger-projector failed")),
            Some(Err(join)) => Err(anyhow::anyhow!(
                "service ledger-projector panicked or was aborted: {join}"
            )),
            None => Ok(()),
        }
    }

    /// [`crate::eventually`] that also fails as soon as a service task has ended.
    pub async fn eventually<T, F, Fut>(&self, timeout: Duration, what: &str, mut f: F) -> anyhow::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        crate::eventually(timeout, what, || {
            let checked = self.check_services();
            let next = f();
            async move {
                match checked {
                    Err(error) => Some(Err(error)),
                    Ok(()) => next.await.map(Ok),
                }
            }
        })
        .await?
    }

    /// The `/readyz` answer of each service, by name (None: no answer).
    pub async fn readiness(&self) -> Vec<(&'static str, Option<u16>)> {
        let mut urls = vec![
            ("ingest", format!("{}/readyz", self.ingest_url)),
            ("ws-edge", format!("http://{}/readyz", self.edge_addr)),
            ("ledger-projector", format!("http://{}/readyz", self.projector_admin)),
        ];
        urls.extend(
            self.reconciler_admins
                .iter()
                .map(|admin| ("reconciler", format!("http://{admin}/readyz"))),
        );
        let mut answers = Vec::new();
        for (name, url) in urls {
            let status = self.http.get(url).send().await.ok().map(|r| r.status().as_u16());
            answers.push((name, status));
        }
        answers
    }

    /// Waits until every service answers 200 on `/readyz`; fails early if one ends.
    pub async fn wait_ready(&self) -> anyhow::Result<()> {
        self.eventually(READY_TIMEOUT, "every service ready", || async {
            let answers = self.readiness().await;
            answers.iter().all(|(_, s)| *s == Some(200)).then_some(())
        })
        .await
        .with_context(|| "services not ready")
    }

    /// Waits until the projection holds `payment` at `version` and returns its row
    /// `(status, version, status_seq, trace_id)`.
    pub async fn wait_for_row(&self, payment: &str, version: i64) -> anyhow::Result<(String, i64, i64, String)> {
        self.eventually(Duration::from_secs(60), "projection row", || async {
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

/// The projector of a mesh, which tests may stop and start alone.
struct RunningProjector {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), paytrack_ledger_projector::ProjectorError>>,
}

impl RunningProjector {
    fn spawn(settings: &Settings, admin: std::net::TcpListener, mesh_shutdown: &CancellationToken) -> RunningProjector {
        let shutdown = mesh_shutdown.child_token();
        let task = tokio::spawn(paytrack_ledger_projector::run_with_admin(
            paytrack_ledger_projector::Config::from_settings(settings),
            Some(admin),
            shutdown.clone(),
        ));
        RunningProjector { shutdown, task }
    }
}

impl Mesh {
    /// Takes the running projector out of the mesh, to stop it.
    fn take_projector(&self) -> anyhow::Result<Option<RunningProjector>> {
        Ok(self
            .projector
            .lock()
            .map_err(|_| anyhow::anyhow!("projector lock"))?
            .take())
    }

    /// Starts a fresh projector on the mesh's settings with its admin API on `admin`,
    /// in place of the one taken out.
    fn start_projector(&self, admin: std::net::TcpListener) -> anyhow::Result<()> {
        let fresh = RunningProjector::spawn(&self.settings, admin, &self.shutdown);
        *self.projector.lock().map_err(|_| anyhow::anyhow!("projector lock"))? = Some(fresh);
        Ok(())
    }

    /// Stops the projector alone (as SIGTERM to its process would), runs `between`,
    /// then starts a fresh projector on the same settings and admin address.
    pub async fn restart_projector<F: std::future::Future<Output = anyhow::Result<()>>>(
        &self,
        between: F,
    ) -> anyhow::Result<()> {
        let running = self.take_projector()?;
        if let Some(running) = running {
            running.shutdown.cancel();
            running.task.await?.context("projector ended with an error")?;
        }
        between.await?;
        // The old listener is closed; the address is free for the fresh projector.
        let admin = std::net::TcpListener::bind(self.projector_admin)?;
        self.start_projector(admin)
    }

    /// Kills the projector mid-work (its consumer loop is aborted where it stands, as
    /// `kill -9` would: no batch finished, no message handed back; its helpers are
    /// stopped), runs `between`, then starts a fresh projector as
    /// [`Mesh::restart_projector`] does.
    pub async fn kill_projector<F: std::future::Future<Output = anyhow::Result<()>>>(
        &self,
        between: F,
    ) -> anyhow::Result<()> {
        let running = self.take_projector()?;
        if let Some(running) = running {
            running.task.abort();
            running.shutdown.cancel();
            let _ = running.task.await;
        }
        between.await?;
        // The aborted projector's admin listener closes once its task sees the cancel.
        let admin = crate::eventually(Duration::from_secs(60), "the admin port free", || async {
            std::net::TcpListener::bind(self.projector_admin).ok()
        })
        .await?;
        self.start_projector(admin)
    }

    /// Starts another projector instance named `instance` on the mesh's settings (a
    /// second replica sharing the durable consumers); it stops with the returned token
    /// or the mesh.
    pub fn spawn_projector(
        &self,
        instance: &str,
    ) -> (
        CancellationToken,
        tokio::task::JoinHandle<Result<(), paytrack_ledger_projector::ProjectorError>>,
    ) {
        let shutdown = self.shutdown.child_token();
        let mut config = paytrack_ledger_projector::Config::from_settings(&self.settings);
        config.instance = instance.to_owned();
        config.admin_listen = None;
        let task = tokio::spawn(paytrack_ledger_projector::run(config, shutdown.clone()));
        (shutdown, task)
    }

    /// Waits until JetStream has forgotten the message ids published before this call
    /// (tests run every stream with [`MeshOptions::duplicate_window_secs`]): a probe
    /// id published now is accepted again once the window has passed. Observed, not
    /// slept.
    pub async fn wait_for_duplicate_window(&self) -> anyhow::Result<()> {
        let probe = format!("paytrack.alert.{}.window_probe", self.tenant);
        let id = format!("window-probe-{}", uuid::Uuid::new_v4().simple());
        let publish_probe = || async {
            let message = jetstream::message::PublishMessage::build()
                .message_id(id.as_str())
                .payload("probe".into());
            self.js.send_publish(probe.clone(), message).await.ok()?.await.ok()
        };
        publish_probe()
            .await
            .ok_or_else(|| anyhow::anyhow!("window probe not stored"))?;
        self.eventually(Duration::from_secs(60), "the duplicate window to pass", || async {
            publish_probe().await.filter(|ack| !ack.duplicate)
        })
        .await?;
        Ok(())
    }

    /// Cancels the services' shutdown token, as SIGTERM would.
    pub fn shut_down_services(&self) {
        self.shutdown.cancel();
    }

    /// Waits until the edge's `run` has returned (after [`Mesh::shut_down_services`]).
    pub async fn edge_stopped(&self) -> anyhow::Result<()> {
        let task = {
            let mut tasks = self
                .tasks
                .lock()
                .map_err(|_| anyhow::anyhow!("service tasks poisoned"))?;
            let index = tasks.iter().position(|(name, _)| *name == "ws-edge");
            index.map(|i| tasks.swap_remove(i).1)
        };
        if let Some(task) = task {
            task.await?.context("ws-edge failed")?;
        }
        Ok(())
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        // A service that died during the test fails it, even if its assertions passed.
        let ended = self.check_services();
        self.shutdown.cancel();
        if let Err(error) = ended
            && !std::thread::panicking()
        {
            panic!("{error:#}");
        }
    }
}

/// Another ws-edge on the mesh's NATS, with its own `edge_id`, port and shutdown: a
/// second edge for failover tests, stopped (as SIGTERM would) by [`ExtraEdge::stop`]
/// or its drop.
pub struct ExtraEdge {
    /// Its address.
    pub addr: SocketAddr,
    /// Its name in audit subjects and metrics.
    pub edge_id: String,
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl ExtraEdge {
    /// Its WebSocket URL.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    /// Signals it to stop, as SIGTERM would, without waiting: it starts draining.
    pub fn signal_stop(&self) {
        self.shutdown.cancel();
    }

    /// Whether its `run` has not returned yet.
    pub fn is_running(&self) -> bool {
        self.task.as_ref().is_some_and(|task| !task.is_finished())
    }

    /// Stops it as SIGTERM would (sessions get 1012, their close is audited) and waits
    /// until its `run` has returned.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await?.context("extra ws-edge failed")?;
        }
        Ok(())
    }
}

impl Drop for ExtraEdge {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Mesh {
    /// Starts another ws-edge named `edge_id` on the mesh's NATS and settings, on a
    /// free port, and waits until it is ready.
    pub async fn start_edge(&self, edge_id: &str) -> anyhow::Result<ExtraEdge> {
        self.start_edge_with(edge_id, |_| {}).await
    }

    /// [`Mesh::start_edge`] with `adjust` applied to its configuration first.
    pub async fn start_edge_with(
        &self,
        edge_id: &str,
        adjust: impl FnOnce(&mut paytrack_ws_edge::Config),
    ) -> anyhow::Result<ExtraEdge> {
        let mut config = paytrack_ws_edge::Config::from_settings(&self.settings)?;
        adjust(&mut config);
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.edge_id = edge_id.to_owned();
        let shutdown = self.shutdown.child_token();
        let edge = paytrack_ws_edge::WsEdge::bind(config).await?;
        let addr = edge.local_addr()?;
        let token = shutdown.clone();
        let task = tokio::spawn(async move { Ok(edge.run(token).await?) });
        let edge = ExtraEdge {
            addr,
            edge_id: edge_id.to_owned(),
            shutdown,
            task: Some(task),
        };
        let url = format!("http://{addr}/readyz");
        self.eventually(READY_TIMEOUT, "the extra edge ready", || async {
            let status = self.http.get(&url).send().await.ok()?.status();
            (status == 200).then_some(())
        })
        .await?;
        Ok(edge)
    }
}

/// A reconciler replica serving `/readyz` on `admin`, stopped by `stop`.
fn spawn_reconciler(settings: &Settings, admin: std::net::TcpListener, stop: &CancellationToken) -> ServiceTask {
    let config = paytrack_reconciler::Config::from_settings(settings);
    let token = stop.clone();
    (
        "reconciler",
        tokio::spawn(async move { Ok(paytrack_reconciler::run_with_admin(config, Some(admin), token).await?) }),
    )
}
