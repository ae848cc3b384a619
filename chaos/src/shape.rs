//! The production shape on loopback: the three-node cluster with the layout at R3,
//! durable PostgreSQL, every service as its own process with two replicas (two
//! edges), the simulator standing for the providers, and a balancer in front of the
//! ingest replicas as a Kubernetes Service would be.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use paytrack_nats::{Layout, Role};
use paytrack_shared::auth::JwtKeys;
use paytrack_shared::{TenantId, Token};
use secrecy::{ExposeSecret, SecretString};

use crate::cluster::{Cluster, SyncPolicy};
use crate::postgres::Postgres;
use crate::proxy::Link;
use crate::services::{Kind, Replica};

/// The tenant the load runs for.
pub const TENANT: &str = "chaos";

/// Every status-check interval and rail window of the status model is divided by
/// this, so a lost webhook is recovered by the sweep's status queries within a run
/// (card: first check after 10 s instead of 5 min).
pub const WINDOW_DIVISOR: u32 = 30;

/// How the shape is started.
#[derive(Debug, Clone, Copy)]
pub struct ShapeOptions {
    /// The nodes' sync policy.
    pub sync: SyncPolicy,
    /// Replicas of every stream and bucket.
    pub stream_replicas: usize,
    /// Whether the reconciler may ask the providers' status-query API. Off, a lost
    /// webhook is never recovered: the checker's own test (it must then count).
    pub status_queries: bool,
    /// Every status-check interval and rail window is divided by this:
    /// [`WINDOW_DIVISOR`] under faults, 1 (the shipped windows) for capacity figures.
    pub window_divisor: u32,
}

/// The running shape.
pub struct Shape {
    /// The three-node JetStream cluster.
    pub cluster: Cluster,
    /// The database.
    pub postgres: Postgres,
    /// Two replicas of each of ingest, reconciler, ledger-projector and ws-edge.
    pub replicas: Vec<Replica>,
    /// The providers' sandbox gateways.
    pub simulator: Replica,
    /// What clients and the simulator call ingest through.
    pub ingest: Link,
    /// The tenant's operator JWT keys.
    pub jwt: JwtKeys,
    /// The simulator's API token.
    pub simulator_token: SecretString,
    /// Where every process logs.
    pub logs: PathBuf,
    layout: Layout,
}

/// The providers the tenant has webhook secrets for.
pub const PROVIDERS: [&str; 3] = ["stdwebhooks", "razorpay", "stripe"];

/// The tenant's webhook secret for `provider` (fixed per provider, so a client that
/// posts webhooks itself, as the capacity bench does, signs them as the simulator does).
pub fn webhook_secret(provider: &str) -> String {
    use base64::Engine;
    let n = PROVIDERS.iter().position(|p| *p == provider).map_or(0, |i| i + 1) as u8;
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode([n; 24]))
}

fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(([127, 0, 0, 1], paytrack_tests::free_port_for_later()?).into())
}

impl Shape {
    /// Starts everything and waits until every replica is ready.
    pub async fn start(options: ShapeOptions) -> anyhow::Result<Shape> {
        let logs = tempfile::Builder::new()
            .prefix("paytrack-chaos-logs-")
            .tempdir()?
            .keep();
        let cluster = Cluster::start(options.sync).await.context("start the nats cluster")?;
        let settings =
            paytrack_shared::config::Settings::from_pairs([("nats_replicas", options.stream_replicas.to_string())])?;
        let layout = Layout::from_settings(&settings);
        cluster.lay_out(&layout).await.context("lay out the streams")?;
        let postgres = Postgres::start().await.context("start PostgreSQL")?;

        let secret = |prefix: &str| format!("{prefix}{}", uuid::Uuid::new_v4().simple());
        let jwt_secret = SecretString::from(secret("jwt"));
        let simulator_token = SecretString::from(secret("sim_"));
        let webhook_secrets = PROVIDERS
            .map(|p| format!("{TENANT}/{p}={}", webhook_secret(p)))
            .join(",");
        let simulator_addr = free_addr()?;
        let simulator_url = format!("http://{simulator_addr}");
        let providers = PROVIDERS.map(|p| format!("{p}={simulator_url}")).join(",");

        let mut common = BTreeMap::new();
        let set = |common: &mut BTreeMap<String, String>, k: &str, v: String| {
            common.insert(format!("PAYTRACK_{k}"), v);
        };
        set(&mut common, "NATS_URL", cluster.urls());
        set(&mut common, "NATS_REPLICAS", options.stream_replicas.to_string());
        for role in [Role::Ingest, Role::Reconciler, Role::Projector, Role::Edge] {
            common.insert(
                role.password_env().to_owned(),
                cluster.password(role).expose_secret().to_owned(),
            );
        }
        set(&mut common, "DATABASE_URL", postgres.url());
        set(&mut common, "JWT_SECRET", jwt_secret.expose_secret().to_owned());
        set(&mut common, "JWT_ISSUER", "paytrack".to_owned());
        set(&mut common, "JWT_AUDIENCE", "paytrack".to_owned());
        set(&mut common, "WEBHOOK_SECRETS", webhook_secrets);
        set(&mut common, "SIMULATOR_TENANT", TENANT.to_owned());
        set(
            &mut common,
            "SIMULATOR_TOKEN",
            simulator_token.expose_secret().to_owned(),
        );
        set(&mut common, "PROVIDER_URLS", providers.clone());
        if options.status_queries {
            set(&mut common, "RECONCILER_STATUS_QUERY_URLS", providers);
        }
        set(
            &mut common,
            "RECONCILER_WINDOW_DIVISOR",
            options.window_divisor.max(1).to_string(),
        );
        set(&mut common, "RECONCILER_SWEEP_INTERVAL_MS", "1000".to_owned());
        set(&mut common, "LOG_FORMAT", "json".to_owned());

        let mut replicas = Vec::new();
        for kind in Kind::REPLICATED {
            for index in 1..=2 {
                let addr = free_addr()?;
                let mut env = common.clone();
                let listen = match kind {
                    Kind::Ingest => "PAYTRACK_INGEST_LISTEN",
                    Kind::Edge => "PAYTRACK_EDGE_LISTEN",
                    _ => "PAYTRACK_ADMIN_LISTEN",
                };
                env.insert(listen.to_owned(), addr.to_string());
                env.insert("PAYTRACK_EDGE_ID".to_owned(), format!("edge-{index}"));
                replicas.push(Replica::new(kind, index, addr, env, &logs));
            }
        }
        let ingest_addrs: Vec<SocketAddr> = replicas
            .iter()
            .filter(|r| r.kind == Kind::Ingest)
            .map(|r| r.addr)
            .collect();
        let ingest = Link::start(ingest_addrs).await?;
        let mut simulator_env = common.clone();
        simulator_env.insert("PAYTRACK_SIMULATOR_LISTEN".to_owned(), simulator_addr.to_string());
        simulator_env.insert(
            "PAYTRACK_SIMULATOR_INGEST_URL".to_owned(),
            format!("http://{}", ingest.addr()),
        );
        simulator_env.insert("PAYTRACK_SIMULATOR_TRAFFIC_MS".to_owned(), "0".to_owned());
        // The simulator's health route is `/healthz`; its address is its API's.
        let simulator = Replica::new(Kind::Simulator, 1, simulator_addr, simulator_env, &logs);

        let jwt = JwtKeys::new(&jwt_secret, "paytrack", "paytrack");
        let mut shape = Shape {
            cluster,
            postgres,
            replicas,
            simulator,
            ingest,
            jwt,
            simulator_token,
            logs,
            layout,
        };
        shape.simulator.start()?;
        // The projector first: it applies the migrations the others read.
        for kind in [Kind::Projector, Kind::Reconciler, Kind::Ingest, Kind::Edge] {
            for replica in shape.replicas.iter_mut().filter(|r| r.kind == kind) {
                replica.start()?;
            }
            for replica in shape.replicas.iter_mut().filter(|r| r.kind == kind) {
                replica.wait_ready(Duration::from_secs(180)).await?;
            }
        }
        Ok(shape)
    }

    /// The layout the streams were applied with.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// An operator token of the tenant.
    pub fn operator_token(&self) -> String {
        let tenant = TenantId::parse(TENANT).unwrap_or_else(|_| unreachable!("a valid literal"));
        self.jwt.mint("chaos-operator", &tenant, 24 * 3600, None, None)
    }

    /// ingest's URL through the balancer.
    pub fn ingest_url(&self) -> String {
        format!("http://{}", self.ingest.addr())
    }

    /// The simulator's base URL.
    pub fn simulator_url(&self) -> String {
        format!("http://{}", self.simulator.addr)
    }

    /// The edges' base URLs.
    pub fn edge_urls(&self) -> Vec<String> {
        self.replicas
            .iter()
            .filter(|r| r.kind == Kind::Edge)
            .map(|r| format!("http://{}", r.addr))
            .collect()
    }

    /// The replica `index` (1 or 2) of `kind`.
    pub fn replica(&mut self, kind: Kind, index: usize) -> &mut Replica {
        self.replicas
            .iter_mut()
            .find(|r| r.kind == kind && r.index == index)
            .unwrap_or_else(|| unreachable!("two replicas of every replicated kind"))
    }

    /// Starts every replica that is not running (after a kill) and waits for them.
    pub async fn restart_stopped(&mut self) -> anyhow::Result<()> {
        for replica in &mut self.replicas {
            if !replica.is_running() {
                replica.start()?;
                replica.wait_ready(Duration::from_secs(180)).await?;
            }
        }
        Ok(())
    }
}
