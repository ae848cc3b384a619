//! Where the stack is and who the operator is: the options every operator command
//! shares, each with its `PAYTRACK_*` variable (the names `.dev/stack.env` exports).
//! Values of variables are never shown in `--help`: some are credentials.

use anyhow::Context;
use paytrack_shared::auth::JwtKeys;
use paytrack_shared::config::Settings;
use paytrack_shared::{TenantId, Token};
use secrecy::SecretString;

use crate::cli::api::{Api, shown};

/// The connection options, accepted after any command.
#[derive(clap::Args, Debug, Clone)]
pub struct Connection {
    /// ingest's base URL (default: http:// and PAYTRACK_INGEST_LISTEN).
    #[arg(long, global = true, env = "PAYTRACK_INGEST_URL", hide_env_values = true)]
    pub ingest_url: Option<String>,
    /// ws-edge's base URL (default: http:// and PAYTRACK_EDGE_LISTEN).
    #[arg(long, global = true, env = "PAYTRACK_EDGE_URL", hide_env_values = true)]
    pub edge_url: Option<String>,
    /// The provider simulator's base URL (default: http:// and PAYTRACK_SIMULATOR_LISTEN).
    #[arg(long, global = true, env = "PAYTRACK_SIMULATOR_URL", hide_env_values = true)]
    pub simulator_url: Option<String>,
    /// The operator's tenant (a token is minted for it when no token is given).
    #[arg(long, global = true, env = "PAYTRACK_TENANT", hide_env_values = true)]
    pub tenant: Option<String>,
    /// The bearer token to present (default: one minted with PAYTRACK_JWT_SECRET).
    #[arg(long, global = true, env = "PAYTRACK_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// The tenant used when none is given.
const DEFAULT_TENANT: &str = "dev";

impl Connection {
    /// The tenant: given, else `dev`.
    pub fn tenant(&self) -> anyhow::Result<TenantId> {
        let raw = self.tenant.as_deref().unwrap_or(DEFAULT_TENANT);
        TenantId::parse(raw).context("PAYTRACK_TENANT (--tenant) is not a tenant id")
    }

    /// The bearer token: given, else minted for the tenant with the settings' JWT
    /// secret, valid for ten minutes.
    pub fn token(&self, settings: &Settings) -> anyhow::Result<SecretString> {
        if let Some(token) = self.token.as_ref().filter(|t| !t.trim().is_empty()) {
            return Ok(SecretString::from(token.trim().to_owned()));
        }
        let secret = settings
            .jwt_secret
            .as_ref()
            .context("no token: set PAYTRACK_TOKEN (or --token), or PAYTRACK_JWT_SECRET to mint one")?;
        let keys = JwtKeys::new(secret, &settings.jwt_issuer, &settings.jwt_audience);
        Ok(SecretString::from(keys.mint(
            "paytrack-cli",
            &self.tenant()?,
            600,
            None,
            None,
        )))
    }

    /// ingest's base URL.
    pub fn ingest_url(&self, settings: &Settings) -> String {
        base(self.ingest_url.as_deref(), settings.ingest_listen)
    }

    /// ingest's API, called with the operator's token.
    pub fn ingest(&self, settings: &Settings) -> anyhow::Result<Api> {
        Api::new("ingest", &self.ingest_url(settings), self.token(settings)?)
    }

    /// ws-edge's WebSocket URL (`ws://…/v1/ws`).
    pub fn ws_url(&self, settings: &Settings) -> String {
        let edge = base(self.edge_url.as_deref(), settings.edge_listen);
        format!(
            "{}/v1/ws",
            edge.replacen("https://", "wss://", 1).replacen("http://", "ws://", 1)
        )
    }

    /// The simulator's API, called with PAYTRACK_SIMULATOR_TOKEN.
    pub fn simulator(&self, settings: &Settings) -> anyhow::Result<Api> {
        let url = base(self.simulator_url.as_deref(), settings.simulator_listen);
        let token = settings
            .simulator_token
            .clone()
            .context("PAYTRACK_SIMULATOR_TOKEN is required to drive the simulator")?;
        Api::new("the simulator", &url, token).with_context(|| format!("simulator at {}", shown(&url)))
    }
}

/// A given base URL without its trailing `/`, else `http://` and the listen address.
fn base(given: Option<&str>, listen: std::net::SocketAddr) -> String {
    given
        .map(|u| u.trim().trim_end_matches('/').to_owned())
        .unwrap_or_else(|| format!("http://{listen}"))
}
