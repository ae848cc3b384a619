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
    /// A value has the wrong type or shape (figment's message names the key).
    #[error("invalid configuration: {0}")]
    Invalid(#[from] Box<figment::Error>),
    /// A value parses but cannot be used (zero where a positive number is needed,
    /// an empty string where a name is needed).
    #[error("PAYTRACK_{key} ({}): {reason}", key.to_lowercase())]
    BadValue {
        /// The setting, as its environment variable is spelled without the prefix.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A required secret is missing.
    #[error("PAYTRACK_{0} is required")]
    Missing(&'static str),
    /// A list setting has a malformed entry.
    #[error("PAYTRACK_{key} ({}): malformed entry {entry:?}: {reason}", key.to_lowercase())]
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
    /// Password of ingest's NATS user `ingest` (no default).
    pub nats_ingest_password: Option<SecretString>,
    /// Password of the reconciler's NATS user `reconciler` (no default).
    pub nats_reconciler_password: Option<SecretString>,
    /// Password of the projector's NATS user `ledger-projector` (no default).
    pub nats_projector_password: Option<SecretString>,
    /// Password of ws-edge's NATS user `ws-edge` (no default).
    pub nats_edge_password: Option<SecretString>,
    /// Password of the NATS user `admin` (no default): only the layout step
    /// (`paytrack layout`) uses it; no service does.
    pub nats_admin_password: Option<SecretString>,
    /// Deliveries of a message that keeps failing before its consumer parks it.
    pub consumer_max_deliveries: u32,
    /// Delay before a failed message is delivered again; doubles up to 30 s.
    pub consumer_retry_ms: u64,
    /// How long a delivered message may stay unacknowledged before it is delivered
    /// again (a crashed replica's messages come back after it).
    pub consumer_ack_wait_ms: u64,
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
    /// Per-session queue bound in bytes: a session over it is closed with 4008.
    pub session_queue_bytes: usize,
    /// How long one socket write may take before the session is closed with 4008.
    pub session_write_timeout_ms: u64,
    /// Recent messages per stream the edge keeps in memory to serve resumes.
    pub edge_ring_messages: usize,
    /// How long the edge still follows a channel no session holds, so that its
    /// sessions resume from memory after a dropped connection.
    pub edge_idle_channel_secs: u64,
    /// At most this many channels no session holds are followed (the oldest go first).
    pub edge_idle_channels: usize,
    /// How long a session's presence outlives its last refresh (an edge that died).
    pub edge_presence_ttl_secs: u64,
    /// Channels one session may hold at once.
    pub edge_max_subscriptions: usize,
    /// JetStream reads (gets, replays) one edge runs at once for subscribes.
    pub edge_replay_concurrency: usize,
    /// New subscribes one session may start per second (also its burst).
    pub edge_subscribe_rate: u32,
    /// Subscribes of one tenant an edge runs at once (each may read JetStream).
    pub edge_tenant_subscribes: usize,
    /// Subscribes of one tenant waiting behind those; more are refused with 4029.
    pub edge_tenant_queue: usize,
    /// How long a stopping edge waits for its clients to leave after telling them to
    /// reconnect elsewhere (1012): an orchestrator's grace period must be longer.
    pub edge_drain_timeout_ms: u64,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// How long an HTTP client may take to send a request's headers (and the
    /// longest a kept-alive connection may idle), in milliseconds.
    pub http_header_read_timeout_ms: u64,
    /// HS256 secret for JWTs.
    pub jwt_secret: Option<SecretString>,
    /// A JWKS file whose RS256/EdDSA keys (selected by `kid`) verify tokens besides
    /// the HS256 secret; read and validated at start.
    #[serde(default)]
    pub jwt_jwks_path: Option<std::path::PathBuf>,
    /// A JWKS URL (the identity provider's), fetched by ws-edge at start and every
    /// `jwt_jwks_refresh_secs`; replaces the file's keys once fetched.
    #[serde(default)]
    pub jwt_jwks_url: Option<String>,
    /// How often the JWKS URL is fetched again, in seconds.
    pub jwt_jwks_refresh_secs: u64,
    /// Expected `iss`.
    pub jwt_issuer: String,
    /// Expected `aud`.
    pub jwt_audience: String,
    /// `tenant/provider=secret,...`.
    pub webhook_secrets: SecretString,
    /// `tenant=key,...`.
    pub api_keys: SecretString,
    /// `tenant=<hex SHA-256 of a key>,...`: backend API keys given by their hashes
    /// only, so the settings need not hold the keys themselves.
    #[serde(default = "empty_secret")]
    pub api_key_hashes: SecretString,
    /// How long an `Idempotency-Key` of `POST /v1/payments` (and the first response it
    /// replays) is kept, in seconds.
    #[serde(default = "default_idempotency_ttl_secs")]
    pub idempotency_ttl_secs: u64,
    /// `provider=base URL,...`: the sandbox gateway (provider simulator) ingest asks to
    /// initiate each payment routed to that provider. Unset: no initiation call.
    #[serde(default)]
    pub provider_urls: String,
    /// `tenant/provider=rail,...`: the rail of a tenant's payments at a provider whose
    /// events name none (a tenant that only takes UPI through Razorpay, say), so a
    /// payment known only from webhooks can still turn final on its rail.
    #[serde(default)]
    pub provider_default_rails: String,
    /// Log format.
    pub log_format: LogFormat,
    /// An OpenTelemetry collector's OTLP/HTTP base URL (e.g. `http://collector:4318`):
    /// spans are exported there. Unset: the standard `OTEL_EXPORTER_OTLP_*` variables
    /// decide, and without them nothing is exported.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// Tenant the built-in simulator posts for.
    pub simulator_tenant: Option<String>,
    /// How often the reconciler scans its stuck-payment table, in ms.
    pub reconciler_sweep_interval_ms: u64,
    /// Divides every rail window and status-check interval of the status model
    /// (1 in production; a test accelerates time with e.g. 1000).
    pub reconciler_window_divisor: u32,
    /// How long a transition may wait for its `persisted` checkpoint before a
    /// `trace_gap` alert, in ms.
    pub reconciler_trace_gap_ms: u64,
    /// Base URL of each provider's status-query API: `provider=url,...`; the query is
    /// `GET {url}/v1/providers/{provider}/payments/{provider_ref}`.
    pub reconciler_status_query_urls: String,
    /// How long one status query may take, in ms.
    pub reconciler_status_query_timeout_ms: u64,
    /// Most provider events of one tenant parked at once (events naming a provider
    /// reference not recorded yet); past it a webhook is answered 429.
    pub ingest_parked_events_max_per_tenant: usize,
    /// How long a payment claim (which merchant's subject holds its history) is
    /// kept after its last write, in seconds; a claim in use is refreshed.
    pub reconciler_claims_max_age_secs: u64,
    /// Most payments of one tenant the sweep tracks at once (payments that never
    /// settle stay tracked); past it a new payment is not swept and a `sweep_quota`
    /// alert is raised.
    pub reconciler_sweep_max_per_tenant: usize,
    /// How many payments one reconciler replica decides at once (each payment's
    /// facts still one after another, in delivery order).
    pub reconciler_lanes: usize,
    /// Where the provider simulator's HTTP API listens.
    pub simulator_listen: SocketAddr,
    /// ingest's base URL as the simulator posts webhooks to it (default: from
    /// `ingest_listen`).
    pub simulator_ingest_url: Option<String>,
    /// Milliseconds between the payments the simulator invents for light traffic
    /// (with `simulator_tenant`; 0: none).
    pub simulator_traffic_ms: u64,
    /// The bearer token the provider simulator requires of every call to its API
    /// (it signs genuine webhooks, so it is never open). ingest (initiation) and the
    /// reconciler (status queries) present it to the gateways they are given.
    pub simulator_token: Option<SecretString>,
}

fn empty_secret() -> SecretString {
    SecretString::from(String::new())
}

fn default_idempotency_ttl_secs() -> u64 {
    86_400
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
        settings.validate()?;
        Ok(settings)
    }

    /// Refuses settings that would only fail later, per request: every secret list
    /// parses (and every `stdwebhooks` secret decodes), every number that must be
    /// positive is, every name that must be set is. The error names the key.
    fn validate(&self) -> Result<(), ConfigError> {
        WebhookSecrets::parse(&self.webhook_secrets)?;
        ApiKeys::parse(&self.api_keys)?.with_hashes(&self.api_key_hashes)?;
        DefaultRails::parse(&self.provider_default_rails)?;
        let positive = [
            ("IDEMPOTENCY_TTL_SECS", self.idempotency_ttl_secs),
            ("NATS_REPLICAS", self.nats_replicas as u64),
            ("NATS_DUPLICATE_WINDOW_SECS", self.nats_duplicate_window_secs),
            ("NATS_ACK_TIMEOUT_MS", self.nats_ack_timeout_ms),
            ("DATABASE_MAX_CONNECTIONS", u64::from(self.database_max_connections)),
            ("HEARTBEAT_MS", self.heartbeat_ms),
            ("SESSION_QUEUE", self.session_queue as u64),
            ("EDGE_SUBSCRIBE_RATE", u64::from(self.edge_subscribe_rate)),
            ("EDGE_TENANT_SUBSCRIBES", self.edge_tenant_subscribes as u64),
            ("JWT_JWKS_REFRESH_SECS", self.jwt_jwks_refresh_secs),
            ("MAX_BODY_BYTES", self.max_body_bytes as u64),
            ("HTTP_HEADER_READ_TIMEOUT_MS", self.http_header_read_timeout_ms),
            ("EDGE_PRESENCE_TTL_SECS", self.edge_presence_ttl_secs),
            ("EDGE_DRAIN_TIMEOUT_MS", self.edge_drain_timeout_ms),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(bad_value(key, "must be greater than 0"));
            }
        }
        self.validate_idempotency_ttl()?;
        let named = [
            ("NATS_URL", self.nats_url.as_str()),
            ("JWT_ISSUER", self.jwt_issuer.as_str()),
            ("JWT_AUDIENCE", self.jwt_audience.as_str()),
        ];
        for (key, value) in named {
            if value.trim().is_empty() {
                return Err(bad_value(key, "must not be empty"));
            }
        }
        if self.database_url.expose_secret().trim().is_empty() {
            return Err(bad_value("DATABASE_URL", "must not be empty"));
        }
        if self
            .jwt_secret
            .as_ref()
            .is_some_and(|s| s.expose_secret().trim().is_empty())
        {
            return Err(bad_value("JWT_SECRET", "must not be empty when set"));
        }
        Ok(())
    }

    /// An `Idempotency-Key` must outlive the duplicate window of the stream its
    /// command is stored in: a key forgotten while the stream still remembers its
    /// `Nats-Msg-Id` would let a later request be answered 2xx and then be dropped.
    fn validate_idempotency_ttl(&self) -> Result<(), ConfigError> {
        let windows = [
            ("NATS_DUPLICATE_WINDOW_IN_SECS", self.nats_duplicate_window_in_secs),
            ("NATS_DUPLICATE_WINDOW_PUSH_SECS", self.nats_duplicate_window_push_secs),
        ];
        for (key, window) in windows {
            if self.idempotency_ttl_secs < window {
                return Err(bad_value(
                    "IDEMPOTENCY_TTL_SECS",
                    &format!(
                        "{} is shorter than PAYTRACK_{key} ({window}): a key must outlive its stream's duplicate window",
                        self.idempotency_ttl_secs
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The token keys: the HS256 secret and/or the JWKS of `jwt_jwks_path`, at least
    /// one of them. A JWKS that cannot be read or used refuses to start, naming the key.
    pub fn jwt_keys(&self) -> Result<crate::auth::JwtKeys, ConfigError> {
        let keys = match (&self.jwt_secret, &self.jwt_jwks_path) {
            (Some(secret), _) => crate::auth::JwtKeys::new(secret, &self.jwt_issuer, &self.jwt_audience),
            (None, Some(_)) => crate::auth::JwtKeys::without_secret(&self.jwt_issuer, &self.jwt_audience),
            (None, None) if self.jwt_jwks_url.is_some() => {
                crate::auth::JwtKeys::without_secret(&self.jwt_issuer, &self.jwt_audience)
            }
            (None, None) => return Err(ConfigError::Missing("JWT_SECRET")),
        };
        let Some(path) = &self.jwt_jwks_path else {
            return Ok(keys);
        };
        let document = std::fs::read_to_string(path)
            .map_err(|e| bad_value("JWT_JWKS_PATH", &format!("{}: {e}", path.display())))?;
        keys.with_jwks(&document)
            .map_err(|e| bad_value("JWT_JWKS_PATH", &format!("{}: {e}", path.display())))
    }

    /// The JWT secret, required by every service that authenticates callers.
    pub fn jwt_secret(&self) -> Result<&SecretString, ConfigError> {
        self.jwt_secret.as_ref().ok_or(ConfigError::Missing("JWT_SECRET"))
    }
}

/// Webhook secrets by tenant and provider: one, or two while a secret is rotated
/// (the old and the new one both verify until the old one is removed).
#[derive(Clone, Default)]
pub struct WebhookSecrets(HashMap<(TenantId, String), Vec<SecretString>>);

/// Most secrets one tenant's provider endpoint may hold at once: the current one and
/// the one replacing it.
pub const MAX_ACTIVE_WEBHOOK_SECRETS: usize = 2;

impl std::fmt::Debug for WebhookSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl WebhookSecrets {
    /// Parses `tenant/provider=secret,...`; the same `tenant/provider` may be listed
    /// twice during a rotation, never more. A `stdwebhooks` secret must decode the
    /// way the Standard Webhooks library decodes it (`whsec_` + base64), or be an
    /// ed25519 public key (`whpk_` + base64 of 32 bytes) for `v1a` signatures, so a
    /// bad one stops the service at start instead of failing every delivery with 500.
    pub fn parse(raw: &SecretString) -> Result<WebhookSecrets, ConfigError> {
        const KEY: &str = "WEBHOOK_SECRETS";
        let mut map = HashMap::new();
        for entry in split_list(raw.expose_secret()) {
            // An entry without `=` may be a bare secret: never echo it.
            let (key, secret) = entry
                .split_once('=')
                .ok_or_else(|| bad(KEY, "<redacted>", "expected tenant/provider=secret"))?;
            let (tenant, provider) = key
                .split_once('/')
                .ok_or_else(|| bad(KEY, key, "expected tenant/provider"))?;
            let tenant = TenantId::new(tenant.trim()).map_err(|e: TokenError| bad(KEY, key, &e.to_string()))?;
            let provider = provider.trim();
            crate::ids::validate_token(provider, "provider").map_err(|e| bad(KEY, key, &e.to_string()))?;
            let secret = secret.trim();
            if secret.is_empty() {
                return Err(bad(KEY, key, "the secret is empty"));
            }
            if provider == STDWEBHOOKS && decode_whsec(secret).is_none() && decode_whpk(secret).is_none() {
                return Err(bad(
                    KEY,
                    key,
                    "a stdwebhooks secret must be whsec_ followed by non-empty base64, \
                     or whpk_ followed by the base64 of a 32-byte ed25519 public key",
                ));
            }
            let active: &mut Vec<SecretString> = map.entry((tenant, provider.to_owned())).or_default();
            if active.iter().any(|s| s.expose_secret() == secret) {
                return Err(bad(KEY, key, "the same secret is listed twice"));
            }
            if active.len() == MAX_ACTIVE_WEBHOOK_SECRETS {
                return Err(bad(
                    KEY,
                    key,
                    "listed more than twice (at most the old and the new secret during a rotation)",
                ));
            }
            active.push(SecretString::from(secret.to_owned()));
        }
        Ok(WebhookSecrets(map))
    }

    /// The first secret listed for one tenant's provider endpoint (the one senders
    /// such as the simulator sign with).
    pub fn get(&self, tenant: &TenantId, provider: &str) -> Option<&SecretString> {
        self.all(tenant, provider).first()
    }

    /// Every active secret of one tenant's provider endpoint, in the order listed
    /// (empty when the endpoint has none): a delivery verifies with any of them.
    pub fn all(&self, tenant: &TenantId, provider: &str) -> &[SecretString] {
        self.0
            .get(&(tenant.clone(), provider.to_owned()))
            .map_or(&[], Vec::as_slice)
    }

    /// Every `(tenant, provider)` that has secrets, so each can be checked at start.
    pub fn endpoints(&self) -> impl Iterator<Item = (&TenantId, &str, &[SecretString])> {
        self.0
            .iter()
            .map(|((tenant, provider), secrets)| (tenant, provider.as_str(), secrets.as_slice()))
    }
}

/// Backend API keys, each bound to one tenant, held only as SHA-256 hashes: a key
/// given in clear (`api_keys`) is hashed when the settings are read, and
/// `api_key_hashes` gives keys by their hashes alone.
#[derive(Clone, Default)]
pub struct ApiKeys(Vec<(TenantId, [u8; 32])>);

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.iter().map(|(t, _)| t)).finish()
    }
}

/// The SHA-256 of a presented key.
fn key_hash(key: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(key.as_bytes()).into()
}

impl ApiKeys {
    /// Parses `tenant=key,...`; a key must be non-empty and belong to one tenant.
    pub fn parse(raw: &SecretString) -> Result<ApiKeys, ConfigError> {
        let mut keys = ApiKeys::default();
        for entry in split_list(raw.expose_secret()) {
            let (tenant, key) = entry
                .split_once('=')
                .ok_or_else(|| bad("API_KEYS", "<redacted>", "expected tenant=key"))?;
            let tenant = TenantId::new(tenant.trim()).map_err(|e| bad("API_KEYS", tenant, &e.to_string()))?;
            let key = key.trim();
            if key.is_empty() {
                return Err(bad("API_KEYS", tenant.as_str(), "the key is empty"));
            }
            keys.add("API_KEYS", tenant, key_hash(key))?;
        }
        Ok(keys)
    }

    /// Adds the keys of `tenant=<64 hex digits>,...` (their SHA-256 hashes).
    pub fn with_hashes(mut self, raw: &SecretString) -> Result<ApiKeys, ConfigError> {
        const KEY: &str = "API_KEY_HASHES";
        for entry in split_list(raw.expose_secret()) {
            let (tenant, hash) = entry
                .split_once('=')
                .ok_or_else(|| bad(KEY, "<redacted>", "expected tenant=sha256hex"))?;
            let tenant = TenantId::new(tenant.trim()).map_err(|e| bad(KEY, tenant, &e.to_string()))?;
            let mut bytes = [0u8; 32];
            hex::decode_to_slice(hash.trim(), &mut bytes)
                .map_err(|_| bad(KEY, tenant.as_str(), "expected 64 hex digits (a SHA-256)"))?;
            self.add(KEY, tenant, bytes)?;
        }
        Ok(self)
    }

    fn add(&mut self, key: &'static str, tenant: TenantId, hash: [u8; 32]) -> Result<(), ConfigError> {
        if self.0.iter().any(|(_, h)| *h == hash) {
            return Err(bad(key, tenant.as_str(), "the same key is listed twice"));
        }
        self.0.push((tenant, hash));
        Ok(())
    }

    /// The tenant a presented key belongs to; compares hashes in constant time.
    pub fn tenant_of(&self, presented: &str) -> Option<TenantId> {
        let presented = key_hash(presented);
        let mut found = None;
        for (tenant, hash) in &self.0 {
            if bool::from(hash.ct_eq(&presented)) {
                found = Some(tenant.clone());
            }
        }
        found
    }

    /// A short, non-secret id of a key for audit trails: the first 12 hex digits of
    /// its SHA-256.
    pub fn key_id(presented: &str) -> String {
        hex::encode(&key_hash(presented)[..6])
    }
}

/// The provider whose secrets are Standard Webhooks `whsec_` secrets.
const STDWEBHOOKS: &str = "stdwebhooks";

/// The key bytes of a Standard Webhooks secret, as its library reads them
/// (`whsec_` prefix optional, then standard base64); None when it cannot be used.
fn decode_whsec(secret: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
        .filter(|key| !key.is_empty())
}

/// The key of a Standard Webhooks ed25519 public key (`whpk_` + standard base64 of
/// 32 bytes); None when it is not one.
fn decode_whpk(secret: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let encoded = secret.strip_prefix("whpk_")?;
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
        .filter(|key| key.len() == 32)
}

/// The rail of each tenant's payments at a provider whose events name none
/// (`provider_default_rails`).
#[derive(Debug, Clone, Default)]
pub struct DefaultRails(HashMap<(TenantId, String), String>);

impl DefaultRails {
    /// Parses `tenant/provider=rail,...`; each part a token, each pair once.
    pub fn parse(raw: &str) -> Result<DefaultRails, ConfigError> {
        let bad = |entry: &str, reason: &str| ConfigError::BadEntry {
            key: "PROVIDER_DEFAULT_RAILS",
            entry: entry.to_owned(),
            reason: reason.to_owned(),
        };
        let mut rails = HashMap::new();
        for entry in split_list(raw) {
            let (endpoint, rail) = entry
                .split_once('=')
                .ok_or_else(|| bad(entry, "expected tenant/provider=rail"))?;
            let (tenant, provider) = endpoint
                .trim()
                .split_once('/')
                .ok_or_else(|| bad(entry, "expected tenant/provider=rail"))?;
            let tenant = TenantId::new(tenant.trim()).map_err(|e| bad(entry, &e.to_string()))?;
            let (provider, rail) = (provider.trim(), rail.trim());
            crate::ids::validate_token(provider, "provider").map_err(|e| bad(entry, &e.to_string()))?;
            crate::ids::validate_token(rail, "rail").map_err(|e| bad(entry, &e.to_string()))?;
            if rails.insert((tenant, provider.to_owned()), rail.to_owned()).is_some() {
                return Err(bad(entry, "listed twice"));
            }
        }
        Ok(DefaultRails(rails))
    }

    /// The tenant's default rail at `provider`, if one is set.
    pub fn get(&self, tenant: &TenantId, provider: &str) -> Option<&str> {
        self.0.get(&(tenant.clone(), provider.to_owned())).map(String::as_str)
    }
}

fn bad_value(key: &'static str, reason: &str) -> ConfigError {
    ConfigError::BadValue {
        key,
        reason: reason.to_owned(),
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
    fn a_jwks_path_is_read_and_a_bad_one_refuses_naming_the_key() {
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/jwt");
        let s = Settings::from_pairs([("jwt_jwks_path", format!("{fixtures}/jwks.json"))]).unwrap();
        assert_eq!(s.jwt_keys().unwrap().kids(), vec!["ed-1", "rsa-1", "rsa-2"]);
        let dir = tempfile_dir();
        let bad = dir.join("jwks.json");
        std::fs::write(&bad, r#"{"keys":[{"kty":"RSA","kid":"k9","n":"AQAB","e":"AQAB"}]}"#).unwrap();
        let s = Settings::from_pairs([("jwt_jwks_path", bad.display().to_string())]).unwrap();
        let error = s.jwt_keys().unwrap_err().to_string();
        assert!(
            error.contains("PAYTRACK_JWT_JWKS_PATH") && error.contains("k9"),
            "{error}"
        );
        let s = Settings::from_pairs([("jwt_jwks_path", "/nonexistent/jwks.json".to_owned())]).unwrap();
        assert!(s.jwt_keys().is_err());
        assert!(matches!(
            Settings::from_pairs([]).unwrap().jwt_keys(),
            Err(ConfigError::Missing("JWT_SECRET"))
        ));
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("paytrack-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn bad_edge_id_is_refused() {
        assert!(Settings::from_pairs([("edge_id", "a.b".to_owned())]).is_err());
    }

    #[test]
    fn webhook_secrets_by_tenant_and_provider() {
        let s = WebhookSecrets::parse(&SecretString::from(
            "acme/stdwebhooks=whsec_YWNtZQ==, beta/stripe=sk".to_owned(),
        ))
        .unwrap();
        let acme = TenantId::new("acme").unwrap();
        assert_eq!(
            s.get(&acme, "stdwebhooks").map(|s| s.expose_secret().to_owned()),
            Some("whsec_YWNtZQ==".into())
        );
        assert!(s.get(&acme, "stripe").is_none());
        assert!(s.all(&acme, "stripe").is_empty());
        let rotating = WebhookSecrets::parse(&SecretString::from(
            "acme/razorpay=old, acme/razorpay=new, acme/stdwebhooks=whpk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
                .to_owned(),
        ))
        .unwrap();
        let both: Vec<_> = rotating
            .all(&acme, "razorpay")
            .iter()
            .map(|s| s.expose_secret().to_owned())
            .collect();
        assert_eq!(both, ["old", "new"]);
        assert_eq!(rotating.all(&acme, "stdwebhooks").len(), 1);
        assert!(WebhookSecrets::parse(&SecretString::from("nope".to_owned())).is_err());
        assert!(WebhookSecrets::parse(&SecretString::from("a.b/x=1".to_owned())).is_err());
    }

    /// Each unusable setting is refused at start, and the error names its key.
    #[test]
    fn bad_settings_are_refused_naming_the_key() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "webhook_secrets",
                "acme/stdwebhooks=whsec_!!not-base64!!",
                "PAYTRACK_WEBHOOK_SECRETS",
            ),
            ("webhook_secrets", "acme/stdwebhooks=whsec_", "PAYTRACK_WEBHOOK_SECRETS"),
            ("webhook_secrets", "acme/stdwebhooks=", "PAYTRACK_WEBHOOK_SECRETS"),
            ("webhook_secrets", "acme/std.webhooks=x", "PAYTRACK_WEBHOOK_SECRETS"),
            (
                "webhook_secrets",
                "a.b/stdwebhooks=whsec_AAAA",
                "PAYTRACK_WEBHOOK_SECRETS",
            ),
            ("webhook_secrets", "justasecret", "PAYTRACK_WEBHOOK_SECRETS"),
            (
                "webhook_secrets",
                "acme/x=1,acme/x=2,acme/x=3",
                "PAYTRACK_WEBHOOK_SECRETS",
            ),
            ("webhook_secrets", "acme/x=1,acme/x=1", "PAYTRACK_WEBHOOK_SECRETS"),
            (
                "webhook_secrets",
                "acme/stdwebhooks=whpk_AAAA",
                "PAYTRACK_WEBHOOK_SECRETS",
            ),
            ("api_keys", "acme", "PAYTRACK_API_KEYS"),
            ("api_keys", "acme=", "PAYTRACK_API_KEYS"),
            ("api_keys", "acme=k,beta=k", "PAYTRACK_API_KEYS"),
            ("api_keys", "a b=k", "PAYTRACK_API_KEYS"),
            ("api_key_hashes", "acme=abc", "PAYTRACK_API_KEY_HASHES"),
            ("idempotency_ttl_secs", "0", "PAYTRACK_IDEMPOTENCY_TTL_SECS"),
            ("heartbeat_ms", "0", "PAYTRACK_HEARTBEAT_MS"),
            ("session_queue", "0", "PAYTRACK_SESSION_QUEUE"),
            ("max_body_bytes", "0", "PAYTRACK_MAX_BODY_BYTES"),
            ("nats_ack_timeout_ms", "0", "PAYTRACK_NATS_ACK_TIMEOUT_MS"),
            ("nats_replicas", "0", "PAYTRACK_NATS_REPLICAS"),
            ("database_max_connections", "0", "PAYTRACK_DATABASE_MAX_CONNECTIONS"),
            (
                "http_header_read_timeout_ms",
                "0",
                "PAYTRACK_HTTP_HEADER_READ_TIMEOUT_MS",
            ),
            ("nats_url", " ", "PAYTRACK_NATS_URL"),
            ("jwt_audience", "", "PAYTRACK_JWT_AUDIENCE"),
            ("jwt_secret", " ", "PAYTRACK_JWT_SECRET"),
            ("edge_id", "a.b", "PAYTRACK_EDGE_ID"),
            (
                "provider_default_rails",
                "acme/razorpay=",
                "PAYTRACK_PROVIDER_DEFAULT_RAILS",
            ),
            (
                "provider_default_rails",
                "razorpay=upi",
                "PAYTRACK_PROVIDER_DEFAULT_RAILS",
            ),
            (
                "provider_default_rails",
                "acme/razorpay=upi,acme/razorpay=card",
                "PAYTRACK_PROVIDER_DEFAULT_RAILS",
            ),
        ];
        for (key, value, named) in cases {
            let error = Settings::from_pairs([(*key, (*value).to_owned())])
                .err()
                .unwrap_or_else(|| panic!("{key}={value:?} was accepted"));
            let message = error.to_string();
            assert!(message.contains(named), "{key}={value:?}: {message}");
            if *key == "webhook_secrets" {
                assert!(!message.contains("!!not-base64!!"), "a secret was echoed: {message}");
            }
        }
        // Listen addresses are typed: figment's error names the key.
        let error = Settings::from_pairs([("ingest_listen", "nowhere".to_owned())]).unwrap_err();
        assert!(error.to_string().contains("ingest_listen"), "{error}");
    }

    /// A key that expires while PAYTRACK_IN (or PAYTRACK_PUSH) still remembers its
    /// fact's `Nats-Msg-Id` would let a later request be answered 2xx and then be
    /// dropped as a duplicate: such settings are refused at start.
    #[test]
    fn an_idempotency_ttl_shorter_than_a_duplicate_window_is_refused() {
        let with = |ttl: u64, inbound: u64, push: u64| {
            Settings::from_pairs([
                ("idempotency_ttl_secs", ttl.to_string()),
                ("nats_duplicate_window_in_secs", inbound.to_string()),
                ("nats_duplicate_window_push_secs", push.to_string()),
            ])
        };
        for (ttl, inbound, push, named) in [
            (3599, 3600, 600, "PAYTRACK_NATS_DUPLICATE_WINDOW_IN_SECS"),
            (599, 60, 600, "PAYTRACK_NATS_DUPLICATE_WINDOW_PUSH_SECS"),
        ] {
            let error = with(ttl, inbound, push)
                .err()
                .unwrap_or_else(|| panic!("ttl {ttl} with windows {inbound}/{push} was accepted"));
            let message = error.to_string();
            assert!(
                message.contains("PAYTRACK_IDEMPOTENCY_TTL_SECS") && message.contains(named),
                "{message}"
            );
        }
        assert!(with(3600, 3600, 600).is_ok());
        assert!(Settings::from_pairs([]).is_ok(), "the defaults agree");
    }

    #[test]
    fn usable_secrets_are_accepted() {
        let s = Settings::from_pairs([
            (
                "webhook_secrets",
                "acme/stdwebhooks=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw, acme/razorpay=rzp-secret".to_owned(),
            ),
            ("api_keys", "acme=k1,beta=k2".to_owned()),
        ]);
        assert!(s.is_ok(), "{s:?}");
    }

    #[test]
    fn api_keys_map_to_their_tenant() {
        let keys = ApiKeys::parse(&SecretString::from("acme=k1,beta=k2".to_owned())).unwrap();
        assert_eq!(keys.tenant_of("k2"), Some(TenantId::new("beta").unwrap()));
        assert_eq!(keys.tenant_of("k3"), None);
        assert_eq!(keys.tenant_of(""), None);
    }

    #[test]
    fn api_keys_are_held_as_hashes_and_may_be_given_by_hash() {
        let hash = hex::encode(key_hash("pk_by_hash"));
        let keys = ApiKeys::parse(&SecretString::from("acme=pk_clear".to_owned()))
            .unwrap()
            .with_hashes(&SecretString::from(format!("beta={hash}")))
            .unwrap();
        assert_eq!(keys.tenant_of("pk_clear").unwrap().as_str(), "acme");
        assert_eq!(keys.tenant_of("pk_by_hash").unwrap().as_str(), "beta");
        assert!(keys.tenant_of(&hash).is_none(), "the hash itself is no key");
        assert!(keys.tenant_of("pk_other").is_none());
        assert!(!format!("{keys:?}").contains("pk_clear"));
        // The same key in clear and by hash is listed twice.
        let clear_hash = hex::encode(key_hash("pk_clear"));
        assert!(
            ApiKeys::parse(&SecretString::from("acme=pk_clear".to_owned()))
                .unwrap()
                .with_hashes(&SecretString::from(format!("beta={clear_hash}")))
                .is_err()
        );
    }
}
