//! ingest's part of the settings.

use std::net::SocketAddr;
use std::time::Duration;

use paytrack_shared::auth::JwtKeys;
use paytrack_shared::config::{ApiKeys, ConfigError, DefaultRails, Settings, WebhookSecrets};
use paytrack_shared::http::ServeOptions;
use secrecy::SecretString;

/// What ingest needs to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where to listen (port 0: any free port).
    pub listen: SocketAddr,
    /// NATS URL.
    pub nats_url: String,
    /// ingest's NATS user, if the server wants one.
    pub nats_credentials: Option<paytrack_nats::Credentials>,
    /// The stream layout to apply.
    pub layout: paytrack_nats::Layout,
    /// How long to wait for JetStream's publish ack before answering 503.
    pub ack_timeout: Duration,
    /// PostgreSQL URL.
    pub database_url: SecretString,
    /// Pool size.
    pub database_max_connections: u32,
    /// Largest accepted body.
    pub max_body_bytes: usize,
    /// Webhook secrets per tenant and provider.
    pub webhook_secrets: WebhookSecrets,
    /// Backend API keys.
    pub api_keys: ApiKeys,
    /// Operator token verification.
    pub jwt: JwtKeys,
    /// Connection limits of the listener (header-read timeout).
    pub serve: ServeOptions,
    /// How long an `Idempotency-Key` is kept.
    pub idempotency_ttl: Duration,
    /// Sandbox gateway base URL per provider, for payment initiation.
    pub provider_urls: std::collections::BTreeMap<String, String>,
    /// The bearer token the sandbox gateways require (`simulator_token`).
    pub gateway_token: Option<secrecy::SecretString>,
    /// Each tenant's rail at a provider whose events name none.
    pub default_rails: DefaultRails,
    /// Most provider events one tenant may have parked (waiting for their payment).
    pub max_parked_per_tenant: usize,
}

impl Config {
    /// Takes ingest's settings, failing on missing or malformed secrets (a webhook
    /// secret its provider's scheme cannot use included).
    pub fn from_settings(s: &Settings) -> Result<Config, ConfigError> {
        let webhook_secrets = WebhookSecrets::parse(&s.webhook_secrets)?;
        // Every secret must be usable by its provider's scheme: checked here, at start.
        crate::webhooks::keys::Keys::from_secrets(&webhook_secrets)?;
        Ok(Config {
            listen: s.ingest_listen,
            nats_url: s.nats_url.clone(),
            nats_credentials: paytrack_nats::Role::Ingest.credentials(s),
            layout: paytrack_nats::Layout::from_settings(s),
            ack_timeout: Duration::from_millis(s.nats_ack_timeout_ms),
            database_url: s.database_url.clone(),
            database_max_connections: s.database_max_connections,
            max_body_bytes: s.max_body_bytes,
            webhook_secrets,
            api_keys: ApiKeys::parse(&s.api_keys)?.with_hashes(&s.api_key_hashes)?,
            jwt: s.jwt_keys()?,
            serve: ServeOptions {
                header_read_timeout: Duration::from_millis(s.http_header_read_timeout_ms),
            },
            idempotency_ttl: Duration::from_secs(s.idempotency_ttl_secs),
            provider_urls: parse_provider_urls(&s.provider_urls)?,
            gateway_token: s.simulator_token.clone(),
            default_rails: DefaultRails::parse(&s.provider_default_rails)?,
            max_parked_per_tenant: s.ingest_parked_events_max_per_tenant,
        })
    }
}

/// Parses `provider=base URL,...`; each provider a subject token, each URL http(s).
fn parse_provider_urls(raw: &str) -> Result<std::collections::BTreeMap<String, String>, ConfigError> {
    let bad = |entry: &str, reason: &str| ConfigError::BadEntry {
        key: "PROVIDER_URLS",
        entry: entry.to_owned(),
        reason: reason.to_owned(),
    };
    let mut urls = std::collections::BTreeMap::new();
    for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (provider, url) = entry
            .split_once('=')
            .ok_or_else(|| bad(entry, "expected provider=url"))?;
        let (provider, url) = (provider.trim(), url.trim().trim_end_matches('/'));
        paytrack_shared::ids::validate_token(provider, "provider").map_err(|e| bad(entry, &e.to_string()))?;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(bad(entry, "the URL must start with http:// or https://"));
        }
        urls.insert(provider.to_owned(), url.to_owned());
    }
    Ok(urls)
}
