//! The mesh a run measures, and what every section needs from it: signed webhooks,
//! separate edge processes, JetStream counters.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use futures::TryStreamExt;
use paytrack_tests::Mesh;
use paytrack_tests::mesh::MeshOptions;

use crate::client::{Fleet, Target};
use crate::plan::Plan;
use crate::servers::{self, ServerProcess};

/// A running mesh with the run's sizes.
pub struct Ctx {
    /// The mesh (nats-server, PostgreSQL, the four services in-process).
    pub mesh: Mesh,
    /// The sizes of this run.
    pub plan: Plan,
    /// An operator token valid for the whole run.
    pub token: String,
    /// The edge's heartbeat interval: the shipped default, so clients answer
    /// heartbeats as real ones do.
    pub heartbeat_ms: u64,
    /// Where paytrack's log lines go (every in-process service and each edge process).
    pub log_dir: PathBuf,
    /// Payments whose webhook ingest acknowledged with a 2xx: each must reach the
    /// projection (a missing one is a lost ack).
    acked: Mutex<HashSet<String>>,
    edges: AtomicU32,
}

impl Ctx {
    /// Starts the mesh as `make up` runs it: PostgreSQL durable, paytrack logging at
    /// its default level (`info`) to files under `log_dir`, and the default heartbeat,
    /// which the bench's clients answer.
    pub async fn start(plan: Plan, log_dir: PathBuf) -> anyhow::Result<Ctx> {
        paytrack_tests::pg::durable()?;
        std::fs::create_dir_all(&log_dir)?;
        let log = std::fs::File::create(log_dir.join("mesh.log")).context("create the log file")?;
        paytrack_shared::telemetry::init(
            "paytrack",
            paytrack_shared::telemetry::LogSink::JsonTo(tracing_subscriber::fmt::writer::BoxMakeWriter::new(
                std::sync::Arc::new(log),
            )),
        );
        let heartbeat_ms = paytrack_shared::config::Settings::from_pairs([])?.heartbeat_ms;
        let mesh = Mesh::start_with(MeshOptions {
            edge_max_subscriptions: 100,
            heartbeat_ms,
            ..MeshOptions::default()
        })
        .await?;
        let token = mesh.jwt.mint("bench-operator", &mesh.tenant, 6 * 3600, None, None);
        Ok(Ctx {
            mesh,
            plan,
            token,
            heartbeat_ms,
            log_dir,
            acked: Mutex::default(),
            edges: AtomicU32::new(0),
        })
    }

    /// The PostgreSQL settings that decide durability, as the server reports them
    /// (`fsync=on, synchronous_commit=on, full_page_writes=on`).
    pub async fn pg_durability(&self) -> anyhow::Result<String> {
        let mut settings = Vec::new();
        for name in ["fsync", "synchronous_commit", "full_page_writes"] {
            let value: String = sqlx::query_scalar(&format!("SHOW {name}"))
                .fetch_one(&self.mesh.db)
                .await?;
            settings.push(format!("{name}={value}"));
        }
        Ok(settings.join(", "))
    }

    /// Bytes of log written so far by paytrack (every file under the log directory).
    pub fn log_bytes(&self) -> u64 {
        std::fs::read_dir(&self.log_dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Remembers that ingest acknowledged a webhook of `payment`.
    pub fn acked(&self, payment: &str) {
        if let Ok(mut acked) = self.acked.lock() {
            acked.insert(payment.to_owned());
        }
    }

    /// Acknowledged payments the projection does not hold once the mesh has drained
    /// (waiting up to `within` for the last ones): lost acks.
    pub async fn lost_acks(&self, within: Duration) -> anyhow::Result<(usize, usize)> {
        lost_acks(&self.mesh.db, self.mesh.tenant.as_str(), &self.acked, within).await
    }

    /// Journal entries whose legs do not sum to zero in some currency (the database's
    /// trigger refuses them at commit: any here is a defect).
    pub async fn unbalanced_entries(&self) -> anyhow::Result<i64> {
        unbalanced_entries(&self.mesh.db).await
    }

    /// A fresh edge process and a fleet of sessions on it, one per channel of
    /// `channels`, each subscribed: where every section that measures sessions on
    /// one edge starts. The edge stops when the returned process is dropped.
    pub async fn edge_with_sessions(
        &self,
        channels: impl IntoIterator<Item = String>,
    ) -> anyhow::Result<(ServerProcess, Fleet)> {
        let edge = self.spawn_edge().await?;
        let fleet = self.fleet_on(&edge, channels).await?;
        Ok((edge, fleet))
    }

    /// A fleet of sessions on `edge`, one per channel of `channels`, each
    /// subscribed: for sections that open sessions on an edge they already hold.
    pub async fn fleet_on(
        &self,
        edge: &ServerProcess,
        channels: impl IntoIterator<Item = String>,
    ) -> anyhow::Result<Fleet> {
        let mut fleet = Fleet::new(
            Target {
                addr: edge.addr,
                token: Some(self.token.clone()),
                nats: false,
            },
            self.plan.connect_concurrency,
        );
        fleet.add(channels);
        fleet.wait_subscribed(Duration::from_secs(300)).await?;
        Ok(fleet)
    }

    /// Starts a ws-edge in its own process on the mesh's NATS and waits until it is ready.
    pub async fn spawn_edge(&self) -> anyhow::Result<ServerProcess> {
        self.spawn_edge_with(&[]).await
    }

    /// [`Ctx::spawn_edge`] with settings of its own (`PAYTRACK_` names without the
    /// prefix), each of which the section's results must state.
    pub async fn spawn_edge_with(&self, settings: &[(&str, &str)]) -> anyhow::Result<ServerProcess> {
        let n = self.edges.fetch_add(1, Ordering::SeqCst);
        let mut env: Vec<(String, String)> = self
            .mesh
            .nats
            .settings_pairs()
            .into_iter()
            .filter(|(k, _)| *k == "nats_edge_password")
            .map(|(k, v)| (format!("PAYTRACK_{}", k.to_uppercase()), v))
            .collect();
        let window = "86400".to_owned();
        env.extend(
            [
                ("NATS_URL", self.mesh.nats.url()),
                ("JWT_SECRET", self.mesh.jwt_secret.clone()),
                ("EDGE_LISTEN", "127.0.0.1:0".into()),
                ("EDGE_ID", format!("bench-edge-{n}")),
                ("HEARTBEAT_MS", self.heartbeat_ms.to_string()),
                ("NATS_ACK_TIMEOUT_MS", "5000".into()),
                ("NATS_DUPLICATE_WINDOW_SECS", window.clone()),
                ("NATS_DUPLICATE_WINDOW_IN_SECS", window.clone()),
                ("NATS_DUPLICATE_WINDOW_PUSH_SECS", window),
                // One tenant holds every bench session: its subscribe queue must fit a
                // whole reconnect storm (the per-tenant concurrency cap stays as shipped).
                ("EDGE_TENANT_QUEUE", "1000000".into()),
                ("LOG_FORMAT", "json".into()),
            ]
            .into_iter()
            .map(|(k, v)| (format!("PAYTRACK_{k}"), v)),
        );
        env.extend(settings.iter().map(|(k, v)| (format!("PAYTRACK_{k}"), (*v).to_owned())));
        // RUST_LOG unset: the edge logs at its default level, to its own file.
        let log = self.log_dir.join(format!("edge-{n}.log"));
        let edge = servers::spawn_self("edge", &env, Some(log)).await?;
        servers::wait_ready(&reqwest::Client::new(), edge.addr).await?;
        Ok(edge)
    }

    /// A `stdwebhooks` body for `payment` of `merchant` at `status`.
    pub fn body(payment: &str, status: &str, merchant: &str) -> String {
        Mesh::webhook_body(payment, status, merchant)
    }

    /// The subject of `payment`'s transitions, for a payment of `merchant` in the
    /// mesh's tenant.
    pub fn status_subject(&self, merchant: &str, payment: &str) -> anyhow::Result<String> {
        Ok(paytrack_shared::subjects::status(
            &self.mesh.tenant,
            &paytrack_shared::MerchantId::new(merchant)?,
            &paytrack_shared::PaymentId::new(payment)?,
        ))
    }

    /// Signs and posts a webhook; returns when ingest answered 2xx (durable), with that time.
    pub async fn post(&self, payment: &str, status: &str, merchant: &str) -> anyhow::Result<SystemTime> {
        let body = Self::body(payment, status, merchant);
        let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
        let response = self.mesh.post_webhook(&id, &body).await?;
        if !response.status().is_success() {
            bail!("webhook for {payment} answered {}", response.status());
        }
        let at = SystemTime::now();
        self.acked(payment);
        Ok(at)
    }

    /// Posts many webhooks with `concurrency` in flight; `item(i)` names payment, status, merchant.
    pub async fn post_many(
        &self,
        count: usize,
        concurrency: usize,
        item: impl Fn(usize) -> (String, &'static str, String),
    ) -> anyhow::Result<()> {
        use futures::StreamExt;
        let mut results = futures::stream::iter((0..count).map(|i| {
            let (p, s, m) = item(i);
            async move { self.post(&p, s, &m).await }
        }))
        .buffer_unordered(concurrency);
        while let Some(r) = results.next().await {
            r?;
        }
        Ok(())
    }

    /// Messages in PAYTRACK_STATUS now.
    pub async fn status_messages(&self) -> anyhow::Result<u64> {
        self.mesh
            .stream_messages(paytrack_shared::subjects::STREAM_STATUS)
            .await
    }

    /// Transitions the projector has committed so far, summed over its instances and
    /// stream incarnations (its own progress counters).
    pub async fn projector_applied(&self) -> anyhow::Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT COALESCE(sum(applied), 0)::bigint FROM projector_progress")
                .fetch_one(&self.mesh.db)
                .await?,
        )
    }

    /// Waits until every durable consumer of the main streams has nothing pending, so
    /// one section's backlog does not slow the next.
    pub async fn drain(&self) -> anyhow::Result<()> {
        // The session audit too: connecting thousands of sessions leaves a backlog of
        // opens and subscribes for the projector that would weigh on the next figure.
        let streams = [
            paytrack_shared::subjects::STREAM_IN,
            paytrack_shared::subjects::STREAM_STATUS,
            paytrack_shared::subjects::STREAM_OUTCOME,
            paytrack_shared::subjects::STREAM_SESSION,
        ];
        self.mesh
            .eventually(Duration::from_secs(300), "the mesh to drain", || {
                consumers_idle(&self.mesh.js, streams)
            })
            .await
    }

    /// JetStream API requests the account has served so far (all services share it).
    pub async fn js_api_total(&self) -> anyhow::Result<u64> {
        let account = self.mesh.js.query_account().await.context("jetstream account info")?;
        Ok(account.requests.total)
    }
}

/// `Some` once no durable consumer of `streams` has anything pending or awaiting
/// an ack (a stream that cannot be read counts as idle): the condition both the
/// mesh and a shape wait on before a figure is taken.
pub async fn consumers_idle(js: &async_nats::jetstream::Context, streams: [&str; 4]) -> Option<()> {
    for name in streams {
        let Ok(stream) = js.get_stream(name).await else {
            continue;
        };
        let infos: Vec<_> = stream.consumers().try_collect().await.ok()?;
        let busy = infos
            .iter()
            .filter(|c| c.config.durable_name.is_some())
            .any(|c| c.num_pending > 0 || c.num_ack_pending > 0);
        if busy {
            return None;
        }
    }
    Some(())
}

/// Of the payments in `acked` (acknowledged to a sender for `tenant`), how many the
/// projection in `db` does not hold, waiting up to `within` for the last ones, and
/// how many were acknowledged: the lost-ack figure of the mesh and of a shape.
pub async fn lost_acks(
    db: &sqlx::PgPool,
    tenant: &str,
    acked: &Mutex<HashSet<String>>,
    within: Duration,
) -> anyhow::Result<(usize, usize)> {
    let acked: Vec<String> = acked.lock().map(|a| a.iter().cloned().collect()).unwrap_or_default();
    let count_missing = || async {
        let held: i64 = sqlx::query_scalar("SELECT count(*) FROM payments WHERE tenant = $1 AND payment_id = ANY($2)")
            .bind(tenant)
            .bind(&acked)
            .fetch_one(db)
            .await?;
        Ok::<_, anyhow::Error>(acked.len().saturating_sub(usize::try_from(held).unwrap_or(0)))
    };
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let missing = count_missing().await?;
        if missing == 0 || tokio::time::Instant::now() > deadline {
            return Ok((missing, acked.len()));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Journal entries in `db` whose legs do not sum to zero in some currency (the
/// database's trigger refuses them at commit: any here is a defect).
pub async fn unbalanced_entries(db: &sqlx::PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT 1 FROM ledger_postings \
         GROUP BY tenant, payment_id, version, currency HAVING sum(amount_minor) <> 0) unbalanced",
    )
    .fetch_one(db)
    .await?)
}
