//! The simulator's HTTP API: payment initiation (idempotent by its
//! `Idempotency-Key`), the status-query API, ground truth and behaviour, per sandbox
//! provider.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use paytrack_shared::problem::{Problem, ProblemType};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::gateway::{BehaviourUpdate, GatewayError, Gateways, Initiation, MovementRequest};
use crate::scenarios::{SCENARIOS, ScenarioRequest};

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let kind = match &self {
            GatewayError::UnknownProvider(_) | GatewayError::NotFound | GatewayError::UnknownScenario(_) => {
                ProblemType::NotFound
            }
            GatewayError::NoEndpoint(..) | GatewayError::Invalid(_) => ProblemType::InvalidRequest,
            GatewayError::Unavailable => ProblemType::Unavailable,
            GatewayError::OtherTenant(_) => ProblemType::Forbidden,
            GatewayError::IdempotencyKeyReused => ProblemType::IdempotencyKeyReused,
        };
        Problem::new(kind, self.to_string()).into_response()
    }
}

fn body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, GatewayError> {
    body.map(|Json(b)| b)
        .map_err(|rejection| GatewayError::Invalid(rejection.body_text()))
}

/// Every route of the simulator: `/v1/…` only with `Authorization: Bearer <token>`
/// (401 otherwise), `/healthz` open.
pub fn router(gateways: Gateways, token: SecretString) -> Router {
    let api = Router::new()
        .route("/v1/providers/{provider}/payments", post(initiate))
        .route("/v1/providers/{provider}/payments/{provider_ref}", get(query))
        .route(
            "/v1/providers/{provider}/payments/{provider_ref}/movements",
            post(movement),
        )
        .route("/v1/providers/{provider}/behaviour", get(describe).put(set_behaviour))
        .route("/v1/ground-truth", get(ground_truth))
        .route("/v1/scenarios", get(scenarios))
        .route("/v1/scenarios/{name}", post(play))
        .with_state(gateways)
        .route_layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                let allowed = presents(&request, &token);
                async move {
                    if allowed {
                        next.run(request).await
                    } else {
                        unauthorized()
                    }
                }
            },
        ));
    let router = api.route("/healthz", get(|| async { "ok" }));
    paytrack_shared::problem::problem_bodies(paytrack_shared::http::refuse_oversized_bodies(
        router,
        MAX_BODY_BYTES,
        |_| {},
    ))
}

/// The largest request body the API reads (initiations and behaviour updates are
/// a few hundred bytes); a larger declared one is answered 413 at once.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Whether `request` carries `Authorization: Bearer <token>` (compared in constant time).
fn presents(request: &axum::extract::Request, token: &SecretString) -> bool {
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    paytrack_shared::auth::bearer(header)
        .is_some_and(|given| bool::from(given.as_bytes().ct_eq(token.expose_secret().as_bytes())))
}

fn unauthorized() -> Response {
    Problem::new(ProblemType::Unauthorized, "a bearer token is required")
        .header(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"))
        .into_response()
}

/// The initiation's `Idempotency-Key`: 1 to 255 visible ASCII characters, if given.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, GatewayError> {
    let Some(raw) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    raw.to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()))
        .map(Some)
        .ok_or_else(|| GatewayError::Invalid("Idempotency-Key must be 1 to 255 visible ASCII characters".into()))
}

async fn initiate(
    State(g): State<Gateways>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    request: Result<Json<Initiation>, JsonRejection>,
) -> Result<impl IntoResponse, GatewayError> {
    let initiated = g.initiate_once(&provider, idempotency_key(&headers)?, body(request)?)?;
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

/// Every scenario with its story, providers and expected end at its default provider.
async fn scenarios() -> impl IntoResponse {
    let list: Vec<serde_json::Value> = SCENARIOS
        .iter()
        .map(|s| {
            json!({"name": s.name, "description": s.description, "providers": s.providers,
            "rail": s.rail, "currency": s.currency, "amount_minor": s.amount_minor, "payout": s.payout,
            "expect": s.expect(s.providers[0])})
        })
        .collect();
    Json(json!({ "scenarios": list }))
}

/// Starts a scenario's story: 202 with the payment and where it should end.
async fn play(
    State(g): State<Gateways>,
    Path(name): Path<String>,
    request: Result<Json<ScenarioRequest>, JsonRejection>,
) -> Result<impl IntoResponse, GatewayError> {
    let request = match request {
        Ok(Json(request)) => request,
        Err(JsonRejection::MissingJsonContentType(_)) => ScenarioRequest::default(),
        Err(rejection) => return Err(GatewayError::Invalid(rejection.body_text())),
    };
    let tenant = g.tenant().to_string();
    Ok((StatusCode::ACCEPTED, Json(g.play(&name, request, &tenant)?)))
}
