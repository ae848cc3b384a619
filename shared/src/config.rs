//! Layered configuration: the commented defaults in `config.default.toml`, then
//! `PAYTRACK_*` environment variables; validated before any service starts.

use std::collections::HashMap;
use std::net::SocketAddr;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::ids::{TenantId, TokenError};

/// The defaults file, compiled in; it documents every key.
pub const DEFAULTS_TOML: &str = include_str!("../config.default.toml");

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value has the wrong type or shape.
    #[error("invalid configuration: {0}")]
    Invalid(#[from] Box<figment::Error>),
    /// A required secret is missing.
    #[error("PAYTRACK_{0} is required")]
    Missing(&'static str),
    /// A list setting has a malformed entry.
    #[error("PAYTRACK_{key}: malformed entry {entry:?}: {reason}")]
    BadEntry {
        /// The setting.
        key: &'static str,
        /// The offending entry (secrets are never echoed).
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Log output format.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Pretty,
}

/// Every setting of the mesh; each service takes the part it needs.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// NATS URL(s).
    pub nats_url: String,
    /// Replicas of each stream.
    pub nats_replicas: usize,
    /// How long the streams only paytrack writes (status, outcome, alert, session)
    /// remember a `Nats-Msg-Id`, in seconds.
    pub nats_duplicate_window_secs: u64,
    /// How long PAYTRACK_IN remembers a fact's `Nats-Msg-Id`, in seconds.
    pub nats_duplicate_window_in_secs: u64,
    /// How long PAYTRACK_PUSH remembers a push's `Nats-Msg-Id`, in seconds.
    pub nats_duplicate_window_push_secs: u64,
    /// Publish ack timeout.
    pub nats_ack_timeout_ms: u64,
    /// PostgreSQL URL (may hold a password).
    pub database_url: SecretString,
    /// Pool size.
    pub database_max_connections: u32,
    /// ingest's listen address.
    pub ingest_listen: SocketAddr,
    /// ws-edge's listen address.
    pub edge_listen: SocketAddr,
    /// Health listener of headless services.
    pub admin_listen: Option<SocketAddr>,
    /// This edge's name.
    pub edge_id: String,
    /// Heartbeat interval.
    pub heartbeat_ms: u64,
    /// Per-session queue bound.
    pub session_queue: usize,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// HS256 secret for JWTs.
    pub jwt_secret: Option<SecretString>,
    /// Expected `iss`.
    pub jwt_issuer: String,
    /// Expected `aud`.
    pub jwt_audience: String,
    /// `tenant/provider=secret,...`.
    pub webhook_secrets: SecretString,
    /// `tenant=key,...`.
    pub api_keys: SecretString,
    /// Log format.
    pub log_format: LogFormat,
    /// Tenant the built-in simulator posts for.
    pub simulator_tenant: Option<String>,
}

impl Settings {
    /// Reads defaults, then `PAYTRACK_*` variables.
    pub fn from_env() -> Result<Settings, ConfigError> {
        Self::from_figment(
            Figment::new()
                .merge(Toml::string(DEFAULTS_TOML))
                .merge(Env::prefixed("PAYTRACK_")),
        )
    }

    /// Reads defaults, then the given key/value overrides (tests use this instead of
    /// mutating the process environment).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, String)>) -> Result<Settings, ConfigError> {
        let mut figment = Figment::new().merge(Toml::string(DEFAULTS_TOML));
        for (key, value) in pairs {
            // Parsed the way environment values are, so "250" is a number.
            let value: figment::value::Value = value.parse().unwrap_or_else(|never| match never {});
            figment = figment.merge((key, value));
        }
        Self::from_figment(figment)
    }

    fn from_figment(figment: Figment) -> Result<Settings, ConfigError> {
        let settings: Settings = figment.extract().map_err(Box::new)?;
        crate::ids::validate_token(&settings.edge_id, "edge_id").map_err(|e| ConfigError::BadEntry {
            key: "EDGE_ID",
            entry: settings.edge_id.clone(),
            reason: e.to_string(),
        })?;
        Ok(settings)
    }

    /// The JWT secret, required by every service that authenticates callers.
    pub fn jwt_secret(&self) -> Result<&SecretString, ConfigError> {
        self.jwt_secret.as_ref().ok_or(ConfigError::Missing("JWT_SECRET"))
    }
}

/// Webhook secrets by tenant and provider.
#[derive(Clone, Default)]
pub struct WebhookSecrets(HashMap<(TenantId, String), SecretString>);

impl std::fmt::Debug for WebhookSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl WebhookSecrets {
    /// Parses `tenant/provider=secret,...`.
    pub fn parse(raw: &SecretString) -> Result<WebhookSecrets, ConfigError> {
        let mut map = HashMap::new();
        for entry in split_list(raw.expose_secret()) {
            let (key, secret) = entry
                .split_once('=')
                .ok_or_else(|| bad("WEBHOOK_SECRETS", entry, "expected tenant/provider=secret"))?;
            let (tenant, provider) = key
                .split_once('/')
                .ok_or_else(|| bad("WEBHOOK_SECRETS", key, "expected tenant/provider"))?;
            let tenant =
                TenantId::new(tenant.trim()).map_err(|e: TokenError| bad("WEBHOOK_SECRETS", key, &e.to_string()))?;
            map.insert(
                (tenant, provider.trim().to_owned()),
                SecretString::from(secret.trim().to_owned()),
            );
        }
        Ok(WebhookSecrets(map))
    }

    /// The secret of one tenant's provider endpoint.
    pub fn get(&self, tenant: &TenantId, provider: &str) -> Option<&SecretString> {
        self.0.get(&(tenant.clone(), provider.to_owned()))
    }
}

/// Backend API keys, each bound to one tenant.
#[derive(Clone, Default)]
pub struct ApiKeys(Vec<(TenantId, SecretString)>);

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.iter().map(|(t, _)| t)).finish()
    }
}

impl ApiKeys {
    /// Parses `tenant=key,...`.
    pub fn parse(raw: &SecretString) -> Result<ApiKeys, ConfigError> {
        let mut keys = Vec::new();
        for entry in split_list(raw.expose_secret()) {
            let (tenant, key) = entry
                .split_once('=')
                .ok_or_else(|| bad("API_KEYS", "<redacted>", "expected tenant=key"))?;
            let tenant = TenantId::new(tenant.trim()).map_err(|e| bad("API_KEYS", tenant, &e.to_string()))?;
            keys.push((tenant, SecretString::from(key.trim().to_owned())));
        }
        Ok(ApiKeys(keys))
    }

    /// The tenant a presented key belongs to; compares in constant time.
    pub fn tenant_of(&self, presented: &str) -> Option<TenantId> {
        let mut found = None;
        for (tenant, key) in &self.0 {
            let key = key.expose_secret().as_bytes();
            if key.len() == presented.len() && bool::from(key.ct_eq(presented.as_bytes())) {
                found = Some(tenant.clone());
            }
        }
        found
    }
}

fn split_list(raw: &str) -> impl Iterator<Item = &str> {
    raw.split(',').map(str::trim).filter(|e| !e.is_empty())
}

fn bad(key: &'static str, entry: &str, reason: &str) -> ConfigError {
    ConfigError::BadEntry {
        key,
        entry: entry.to_owned(),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_overrides_apply() {
        let s = Settings::from_pairs([
            ("nats_url", "nats://x:1".to_owned()),
            ("heartbeat_ms", "250".to_owned()),
        ])
        .unwrap();
        assert_eq!(s.nats_url, "nats://x:1");
        assert_eq!(s.heartbeat_ms, 250);
        assert_eq!(s.jwt_audience, "paytrack");
        assert!(matches!(s.jwt_secret(), Err(ConfigError::Missing("JWT_SECRET"))));
    }

    #[test]
    fn bad_edge_id_is_refused() {
        assert!(Settings::from_pairs([("edge_id", "a.b".to_owned())]).is_err());
    }

    #[test]
    fn webhook_secrets_by_tenant_and_provider() {
        let s = WebhookSecrets::parse(&SecretString::from(
            "acme/stdwebhooks=whsec_a, beta/stripe=sk".to_owned(),
        ))
        .unwrap();
        let acme = TenantId::new("acme").unwrap();
        assert_eq!(
            s.get(&acme, "stdwebhooks").map(|s| s.expose_secret().to_owned()),
            Some("whsec_a".into())
        );
        assert!(s.get(&acme, "stripe").is_none());
        assert!(WebhookSecrets::parse(&SecretString::from("nope".to_owned())).is_err());
        assert!(WebhookSecrets::parse(&SecretString::from("a.b/x=1".to_owned())).is_err());
    }

    #[test]
    fn api_keys_map_to_their_tenant() {
        let keys = ApiKeys::parse(&SecretString::from("acme=k1,beta=k2".to_owned())).unwrap();
        assert_eq!(keys.tenant_of("k2"), Some(TenantId::new("beta").unwrap()));
        assert_eq!(keys.tenant_of("k3"), None);
        assert_eq!(keys.tenant_of(""), None);
    }
}
