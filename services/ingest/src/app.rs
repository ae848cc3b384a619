//! The router and the state every handler shares.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use paytrack_shared::auth::JwtKeys;
use paytrack_shared::config::{ApiKeys, WebhookSecrets};
use paytrack_shared::health::{self, Readiness};
use sqlx::PgPool;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::IngestError;
use crate::config::Config;
use crate::publish::FactPublisher;
use crate::{payments, webhooks};

/// Shared, cheaply cloned handler state.
#[derive(Clone)]
pub struct AppState {
    /// Writes raw facts to PAYTRACK_IN.
    pub publisher: FactPublisher,
    /// The projection, for reads.
    pub db: PgPool,
    /// Webhook secrets.
    pub webhook_secrets: Arc<WebhookSecrets>,
    /// Backend API keys.
    pub api_keys: Arc<ApiKeys>,
    /// Operator tokens.
    pub jwt: Arc<JwtKeys>,
    /// Largest body, for error messages.
    pub max_body_bytes: usize,
}

impl AppState {
    /// Starts connecting to NATS (in the background) and opens the pool (lazily);
    /// the stream layout is applied by [`crate::Ingest::run`].
    pub async fn connect(config: &Config) -> Result<AppState, IngestError> {
        let client =
            paytrack_nats::connect(&config.nats_url, "paytrack-ingest", config.nats_credentials.as_ref()).await?;
        let publisher = FactPublisher::new(client, config.ack_timeout);
        let db = paytrack_shared::db::pool(&config.database_url, config.database_max_connections)?;
        Ok(AppState {
            publisher,
            db,
            webhook_secrets: Arc::new(config.webhook_secrets.clone()),
            api_keys: Arc::new(config.api_keys.clone()),
            jwt: Arc::new(config.jwt.clone()),
            max_body_bytes: config.max_body_bytes,
        })
    }
}

/// Every route of ingest.
pub fn router(state: AppState, readiness: Readiness) -> Router {
    let max_body = state.max_body_bytes;
    Router::new()
        .route("/v1/webhooks/{tenant}/{provider}", post(webhooks::receive))
        .route("/v1/payments/{payment_id}", get(payments::get_payment))
        .route("/v1/payments/{payment_id}/timeline", get(payments::get_timeline))
        .route("/v1/payments/{payment_id}/evidence", get(payments::get_evidence))
        .route("/v1/status-model", get(payments::status_model))
        .route("/v1/alerts", get(crate::alerts::list))
        .route("/v1/alerts/{alert_id}/ack", post(crate::alerts::ack))
        .with_state(state)
        .merge(health::routes(readiness))
        .merge(paytrack_shared::metrics::routes())
        .layer(DefaultBodyLimit::max(max_body))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(30),
        ))
        .layer(TraceLayer::new_for_http().make_span_with(paytrack_shared::http::request_span))
}
