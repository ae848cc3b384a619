//! paytrack's provider simulator: sandbox gateways speaking the three webhook
//! schemes ingest verifies (Standard Webhooks, Razorpay, Stripe).
//!
//! A payment is initiated at a sandbox provider (`POST /v1/providers/{provider}/payments`,
//! which ingest's create command calls) and answered with the provider's reference;
//! the provider then decides its outcome and posts signed webhooks to ingest — late,
//! twice, out of order or never, as its behaviour says (`PUT
//! /v1/providers/{provider}/behaviour`). Its status-query API answers what really
//! happened (the reconciler's sweeps ask it), and `GET /v1/ground-truth` exports the
//! truth for tests and the bench. It acts for one tenant only (`simulator_tenant`)
//! and every call to its API must present `simulator_token`: it signs genuine
//! webhooks, so it is never open. It also invents payments for its tenant now and
//! then (`simulator_traffic_ms`), so a local stack shows life, and plays named
//! per-payment stories on request (`POST /v1/scenarios/{name}`, see [`scenarios`]).

mod api;
pub mod events;
pub mod gateway;
pub mod scenarios;
pub mod sign;

use std::net::SocketAddr;
use std::time::Duration;

use paytrack_shared::config::{ConfigError, Settings, WebhookSecrets};
use paytrack_shared::{TenantId, Token};
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use crate::gateway::{Behaviour, BehaviourUpdate, Gateways, Initiated, Initiation, Payment};

/// What the simulator needs to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where its HTTP API listens (port 0: any free port).
    pub listen: SocketAddr,
    /// ingest's base URL, where webhooks are posted.
    pub ingest_url: String,
    /// The one tenant it acts for: it initiates, and signs webhooks, for no other.
    pub tenant: TenantId,
    /// The bearer token every call to its API must present.
    pub token: SecretString,
    /// The tenant's webhook secrets (the sandbox signs with them; other tenants'
    /// are ignored).
    pub secrets: WebhookSecrets,
    /// Time between the payments it invents for light traffic; None: none.
    pub traffic_every: Option<Duration>,
}

impl Config {
    /// The simulator's part of the settings: `simulator_tenant` and
    /// `simulator_token` are required.
    pub fn from_settings(s: &Settings) -> Result<Config, ConfigError> {
        let tenant = s
            .simulator_tenant
            .as_deref()
            .ok_or(ConfigError::Missing("SIMULATOR_TENANT"))
            .and_then(|t| {
                TenantId::parse(t).map_err(|e| ConfigError::BadValue {
                    key: "SIMULATOR_TENANT",
                    reason: e.to_string(),
                })
            })?;
        let token = s
            .simulator_token
            .clone()
            .filter(|t| !t.expose_secret().trim().is_empty())
            .ok_or(ConfigError::Missing("SIMULATOR_TOKEN"))?;
        Ok(Config {
            listen: s.simulator_listen,
            ingest_url: s
                .simulator_ingest_url
                .clone()
                .unwrap_or_else(|| format!("http://{}", s.ingest_listen)),
            tenant,
            token,
            secrets: WebhookSecrets::parse(&s.webhook_secrets)?,
            traffic_every: (s.simulator_traffic_ms > 0).then(|| Duration::from_millis(s.simulator_traffic_ms.max(100))),
        })
    }
}

/// A bound, not yet serving, simulator: lets callers (tests) learn the port first.
pub struct Simulator {
    listener: TcpListener,
    gateways: Gateways,
    config: Config,
    /// The simulator's own stop token, held by its gateways from `bind` on and
    /// cancelled when the token given to [`Simulator::run`] is.
    stop: CancellationToken,
}

impl Simulator {
    /// Binds the listener.
    pub async fn bind(config: Config) -> std::io::Result<Simulator> {
        let listener = TcpListener::bind(config.listen).await?;
        let stop = CancellationToken::new();
        let gateways = Gateways::new(
            &config.ingest_url,
            config.tenant.clone(),
            config.secrets.clone(),
            stop.clone(),
        );
        Ok(Simulator {
            listener,
            gateways,
            config,
            stop,
        })
    }

    /// The address the API listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The gateways (for in-process callers).
    pub fn gateways(&self) -> Gateways {
        self.gateways.clone()
    }

    /// Serves until `shutdown` is cancelled; the gateways' pending deliveries stop
    /// with it.
    pub async fn run(self, shutdown: CancellationToken) -> std::io::Result<()> {
        tracing::info!(addr = %self.local_addr()?, ingest = %self.config.ingest_url, "simulator listening");
        let _following = paytrack_shared::shutdown::follow(shutdown, self.stop.clone());
        if let Some(every) = self.config.traffic_every {
            let (gateways, tenant, stop) = (self.gateways.clone(), self.config.tenant.clone(), self.stop.clone());
            tokio::spawn(async move { traffic(gateways, tenant, every, stop).await });
        }
        let stop = self.stop.clone();
        axum::serve(self.listener, api::router(self.gateways, self.config.token.clone()))
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await?;
        tracing::info!("simulator stopped");
        Ok(())
    }
}

/// Runs the simulator with `config` until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> std::io::Result<()> {
    Simulator::bind(config).await?.run(shutdown).await
}

/// Invents a payment every `every` at one of the tenant's sandbox providers.
async fn traffic(gateways: Gateways, tenant: TenantId, every: Duration, shutdown: CancellationToken) {
    let providers = gateways.providers_of(&tenant);
    if providers.is_empty() {
        tracing::warn!(tenant = %tenant, "no sandbox provider can sign for the traffic tenant; no traffic");
        return;
    }
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        n += 1;
        let (provider, merchant, amount) = {
            let mut rng = rand::rng();
            (
                providers[rng.random_range(0..providers.len())],
                format!("m_{}", rng.random_range(1..=3)),
                rng.random_range(100..50_000),
            )
        };
        let (currency, rail) = if provider == "razorpay" {
            ("INR", "upi")
        } else {
            ("USD", "card")
        };
        let request = Initiation {
            tenant: tenant.to_string(),
            payment_id: format!("sim_{}_{n}", chrono::Utc::now().timestamp()),
            amount_minor: amount,
            currency: currency.to_owned(),
            rail: rail.to_owned(),
            merchant_id: Some(merchant),
            payout: false,
        };
        if let Err(error) = gateways.initiate(provider, request) {
            tracing::debug!(%error, provider, "invented payment not initiated");
        }
    }
}
