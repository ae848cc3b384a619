//! The router and the state every handler shares.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use paytrack_shared::auth::JwtKeys;
use paytrack_shared::config::{ApiKeys, WebhookSecrets};
use paytrack_shared::health::{self, Readiness};
use sqlx::PgPool;
use tower_http::cors::{Any, CorsLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::IngestError;
use crate::commanded::CommandedPayments;
use crate::config::Config;
use crate::idempotency::Idempotency;
use crate::initiate::Initiator;
use crate::provider_refs::ProviderRefs;
use crate::publish::FactPublisher;
use crate::push::PushEpoch;
use crate::routing::ProviderHealth;
use crate::webhooks;

/// The KV buckets, opened once the layout is applied (commands answer 503 before).
pub struct Stores {
    /// Idempotency keys of creates.
    pub idempotency: Idempotency,
    /// Payments created through the API.
    pub commanded: CommandedPayments,
}

/// Shared, cheaply cloned handler state.
#[derive(Clone)]
pub struct AppState {
    /// Writes raw facts to PAYTRACK_IN.
    pub publisher: FactPublisher,
    /// The projection, for reads.
    pub db: PgPool,
    /// Webhook secrets.
    pub webhook_secrets: Arc<WebhookSecrets>,
    /// Webhook verification keys, decoded from the secrets at start.
    pub webhook_keys: Arc<webhooks::keys::Keys>,
    /// Provider reference → payment, and events parked until it is known.
    pub provider_refs: ProviderRefs,
    /// Backend API keys.
    pub api_keys: Arc<ApiKeys>,
    /// Operator tokens.
    pub jwt: Arc<JwtKeys>,
    /// Largest body, for error messages.
    pub max_body_bytes: usize,
    /// The KV buckets, set once applied.
    pub stores: Arc<tokio::sync::OnceCell<Stores>>,
    /// Providers' success rates and availability, for routing.
    pub health: ProviderHealth,
    /// Sandbox gateways to initiate payments at.
    pub initiator: Initiator,
    /// PAYTRACK_PUSH's epoch, for push positions.
    pub push_epoch: PushEpoch,
    /// Each tenant's rail at a provider whose events name none.
    pub default_rails: Arc<paytrack_shared::config::DefaultRails>,
    /// Webhook outcomes since the last `webhooks received` summary line (per
    /// webhook at debug).
    pub webhook_tally: Arc<paytrack_shared::telemetry::Tally>,
}

impl AppState {
    /// Starts connecting to NATS (in the background) and opens the pool (lazily);
    /// the stream layout is applied by [`crate::Ingest::run`].
    pub async fn connect(config: &Config) -> Result<AppState, IngestError> {
        let client =
            paytrack_nats::connect(&config.nats_url, "paytrack-ingest", config.nats_credentials.as_ref()).await?;
        let publisher = FactPublisher::new(client, config.ack_timeout);
        let provider_refs =
            ProviderRefs::new(publisher.clone()).with_max_parked_per_tenant(config.max_parked_per_tenant);
        let db = paytrack_shared::db::pool(&config.database_url, config.database_max_connections)?;
        Ok(AppState {
            publisher,
            db,
            webhook_secrets: Arc::new(config.webhook_secrets.clone()),
            webhook_keys: Arc::new(webhooks::keys::Keys::from_secrets(&config.webhook_secrets)?),
            provider_refs,
            api_keys: Arc::new(config.api_keys.clone()),
            jwt: Arc::new(config.jwt.clone()),
            max_body_bytes: config.max_body_bytes,
            stores: Arc::default(),
            health: ProviderHealth::default(),
            initiator: Initiator::new(config.provider_urls.clone(), config.gateway_token.as_ref()),
            push_epoch: PushEpoch::default(),
            default_rails: Arc::new(config.default_rails.clone()),
            webhook_tally: Arc::new(paytrack_shared::telemetry::Tally::new(
                crate::webhooks::OUTCOME_LABELS,
                std::time::Duration::from_secs(10),
            )),
        })
    }
}

/// Every route of ingest.
pub fn router(state: AppState, readiness: Readiness) -> Router {
    let max_body = state.max_body_bytes;
    let mut router = Router::new();
    for (route, handler) in crate::routes::table() {
        router = router.route(route.path, handler);
    }
    let router = router
        .with_state(state)
        .merge(health::routes(readiness))
        .merge(paytrack_shared::metrics::routes())
        .layer(DefaultBodyLimit::max(max_body));
    let router = paytrack_shared::http::refuse_oversized_bodies(router, max_body, webhooks::count_too_large).layer(
        TimeoutLayer::with_status_code(axum::http::StatusCode::REQUEST_TIMEOUT, Duration::from_secs(30)),
    );
    // Outside the timeout, so its bare 408 (and axum's 404 and 405) become problems.
    paytrack_shared::metrics::time_requests(paytrack_shared::problem::problem_bodies(router), "ingest")
        .layer(cross_origin())
        .layer(TraceLayer::new_for_http().make_span_with(paytrack_shared::http::request_span))
}

/// Lets a page on another origin (the operator console, served by the edge) call the
/// API with its bearer token. Credentials are never cookies, so answering any origin
/// grants a page nothing the token itself does not: without the token every call is
/// still 401.
fn cross_origin() -> CorsLayer {
    use axum::http::{Method, header};
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            header::HeaderName::from_static("idempotency-key"),
        ])
        .expose_headers([header::RETRY_AFTER])
        .max_age(Duration::from_secs(600))
}
