//! The simulator's HTTP API: payment initiation, the status-query API, ground truth
//! and behaviour, per sandbox provider.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::gateway::{BehaviourUpdate, GatewayError, Gateways, Initiation, MovementRequest};

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            GatewayError::UnknownProvider(_) | GatewayError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            GatewayError::NoEndpoint(..) | GatewayError::Invalid(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request")
            }
            GatewayError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        };
        (status, Json(json!({ "error": code, "message": self.to_string() }))).into_response()
    }
}

fn body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, GatewayError> {
    body.map(|Json(b)| b)
        .map_err(|rejection| GatewayError::Invalid(rejection.body_text()))
}

/// Every route of the simulator.
pub fn router(gateways: Gateways) -> Router {
    Router::new()
        .route("/v1/providers/{provider}/payments", post(initiate))
        .route("/v1/providers/{provider}/payments/{provider_ref}", get(query))
        .route(
            "/v1/providers/{provider}/payments/{provider_ref}/movements",
            post(movement),
        )
        .route("/v1/providers/{provider}/behaviour", get(describe).put(set_behaviour))
        .route("/v1/ground-truth", get(ground_truth))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(gateways)
}

async fn initiate(
    State(g): State<Gateways>,
    Path(provider): Path<String>,
    request: Result<Json<Initiation>, JsonRejection>,
) -> Result<impl IntoResponse, GatewayError> {
    let initiated = g.initiate(&provider, body(request)?)?;
    Ok((StatusCode::CREATED, Json(initiated)))
}

async fn query(
    State(g): State<Gateways>,
    Path((provider, provider_ref)): Path<(String, String)>,
) -> Result<impl IntoResponse, GatewayError> {
    Ok(Json(g.query(&provider, &provider_ref)?))
}

/// Moves a payment's money after its outcome (refund part or the rest, a refund that
/// fails, a dispute won or lost, a late capture).
async fn movement(
    State(g): State<Gateways>,
    Path((provider, provider_ref)): Path<(String, String)>,
    request: Result<Json<MovementRequest>, JsonRejection>,
) -> Result<impl IntoResponse, GatewayError> {
    Ok(Json(g.movement(&provider, &provider_ref, &body(request)?)?))
}

async fn ground_truth(State(g): State<Gateways>) -> impl IntoResponse {
    Json(json!({ "payments": g.ground_truth() }))
}

async fn describe(State(g): State<Gateways>, Path(provider): Path<String>) -> Result<impl IntoResponse, GatewayError> {
    let (behaviour, stats) = g.describe(&provider)?;
    Ok(Json(json!({ "behaviour": behaviour, "stats": stats })))
}

async fn set_behaviour(
    State(g): State<Gateways>,
    Path(provider): Path<String>,
    update: Result<Json<BehaviourUpdate>, JsonRejection>,
) -> Result<impl IntoResponse, GatewayError> {
    let behaviour = g.set_behaviour(&provider, &body(update)?)?;
    tracing::info!(provider, ?behaviour, "sandbox behaviour changed");
    Ok(Json(behaviour))
}
