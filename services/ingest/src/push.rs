//! `POST /v1/push`: backends deliver a user-targeted event into PAYTRACK_PUSH at
//! `paytrack.push.<tenant>.<user>.<device or all>`, where ws-edge's `user:<id>`
//! channels read it. The push layer knows nothing about payments.
//!
//! The stored message is the JSON object clients receive: ws-edge forwards it and adds
//! only `type` (`event`), `channel`, `kind` (`push`), `position` and `prev_seq`, so
//! the backend's event type travels as `push_type` (an object's own `type` would be
//! replaced by the envelope's).

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use chrono::Utc;
use paytrack_shared::auth::{AuthError, bearer};
use paytrack_shared::envelope::{Position, PushMessage};
use paytrack_shared::{DeviceId, UserId, msg_id, subjects, telemetry};
use serde::{Deserialize, Serialize};

use crate::app::AppState;
use crate::error::ApiError;
use crate::idempotency::Idempotency;
use paytrack_shared::problem::ProblemBody;

/// Longest `type`.
const MAX_TYPE_LEN: usize = 64;

/// The body of `POST /v1/push` (docs/contract.md §6).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PushRequest {
    /// The user (`[A-Za-z0-9_-]{1,64}`), as the `sub` of their token.
    pub user: String,
    /// One device (its token's `device` claim); absent: all of the user's devices.
    #[serde(default)]
    pub device: Option<String>,
    /// The event's type, e.g. `order.ready` (1 to 64 characters).
    #[serde(rename = "type")]
    pub push_type: String,
    /// The event's data, any JSON.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// The 202 of `POST /v1/push`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PushAccepted {
    /// The push's id (the `Idempotency-Key` when given).
    pub push_id: String,
    /// Where it is in PAYTRACK_PUSH: `{epoch, seq}`, as a `user:` channel reports it.
    #[schema(value_type = Object)]
    pub position: Position,
    /// True when a push with this id had been stored before.
    pub duplicate: bool,
}

/// PAYTRACK_PUSH's epoch, read once and read again when a sequence goes backwards
/// (the stream was recreated).
#[derive(Clone, Default)]
pub struct PushEpoch(Arc<Mutex<Option<(String, u64)>>>);

impl PushEpoch {
    async fn of(&self, js: &async_nats::jetstream::Context, seq: u64) -> Result<String, ApiError> {
        {
            let mut known = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((epoch, last)) = known.as_mut()
                && seq >= *last
            {
                *last = seq;
                return Ok(epoch.clone());
            }
        }
        let mut stream = js.get_stream(subjects::STREAM_PUSH).await.map_err(|error| {
            tracing::warn!(%error, "PAYTRACK_PUSH info unavailable");
            ApiError::Unavailable
        })?;
        let info = stream.info().await.map_err(|error| {
            tracing::warn!(%error, "PAYTRACK_PUSH info unavailable");
            ApiError::Unavailable
        })?;
        let epoch = paytrack_nats::epoch_of(info);
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some((epoch.clone(), seq));
        Ok(epoch)
    }
}

/// `POST /v1/push`.
#[utoipa::path(post, path = "/v1/push", tag = "push",
    request_body = PushRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "The push's id: a retry with it is stored once")),
    responses(
        (status = 202, description = "Stored in PAYTRACK_PUSH", body = PushAccepted),
        (status = 400, description = "A missing or invalid field", body = ProblemBody),
        (status = 401, description = "No valid backend API key", body = ProblemBody),
        (status = 413, body = ProblemBody),
        (status = 422, description = "idempotency_key_reused: the key was used with another body", body = ProblemBody),
        (status = 503, description = "The event store cannot take it; retry", body = ProblemBody)),
    security(("api_key" = [])))]
pub async fn push(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<PushAccepted>), ApiError> {
    let result = handle(&state, &headers, body).await;
    let outcome = match &result {
        Ok((_, Json(accepted))) if accepted.duplicate => "duplicate",
        Ok(_) => "stored",
        Err(error) => error.code(),
    };
    metrics::counter!("paytrack_ingest_pushes_total", "outcome" => outcome).increment(1);
    result
}

async fn handle(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<PushAccepted>), ApiError> {
    let header = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    let key = bearer(header).ok_or_else(|| ApiError::Unauthorized(AuthError::Missing.to_string()))?;
    let tenant = state
        .api_keys
        .tenant_of(key)
        .ok_or_else(|| ApiError::Unauthorized("not a backend API key".into()))?;
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge(state.max_body_bytes),
        _ => ApiError::Malformed(rejection.body_text()),
    })?;
    let request: PushRequest =
        serde_json::from_slice(&body).map_err(|e| ApiError::Invalid(format!("invalid request body: {e}")))?;
    let user = UserId::new(&request.user).map_err(|e| ApiError::Invalid(e.to_string()))?;
    let device = request
        .device
        .as_deref()
        .map(DeviceId::new)
        .transpose()
        .map_err(|e| ApiError::Invalid(e.to_string()))?;
    if device
        .as_ref()
        .is_some_and(|d| d.as_str() == subjects::PUSH_ALL_DEVICES)
    {
        return Err(ApiError::Invalid(
            "device \"all\" is reserved: omit device to reach every device".into(),
        ));
    }
    if request.push_type.is_empty()
        || request.push_type.len() > MAX_TYPE_LEN
        || request.push_type.chars().any(char::is_control)
    {
        return Err(ApiError::Invalid(format!(
            "type must be 1 to {MAX_TYPE_LEN} characters without control characters"
        )));
    }
    if request.data.to_string().contains("\\u0000") {
        return Err(ApiError::Invalid("data must not contain NUL characters".into()));
    }
    let push_id = match headers.get("idempotency-key") {
        Some(_) => crate::idempotency::validate_key(headers.get("idempotency-key"))?,
        None => uuid::Uuid::new_v4().simple().to_string(),
    };
    if headers.get("idempotency-key").is_some() {
        // The key is this push's: another body (or user, or device) with it is 422.
        let stores = state.stores.get().ok_or(ApiError::Unavailable)?;
        let bucket_key = Idempotency::scoped_bucket_key(&tenant, &["push"], &push_id);
        let identity = serde_json::json!([request.user, request.device, request.push_type, request.data]);
        let body_hash = crate::idempotency::sha256_hex(identity.to_string().as_bytes());
        stores.idempotency.bind(&bucket_key, &body_hash).await?;
    }
    let subject = subjects::push(&tenant, &user, device.as_ref());
    let message = PushMessage {
        push_id: push_id.clone(),
        user: user.clone(),
        device: device.clone(),
        push_type: request.push_type.clone(),
        data: request.data.clone(),
        pushed_at: Utc::now(),
    };
    let payload = bytes::Bytes::from(serde_json::to_vec(&message).map_err(|_| ApiError::Internal)?);
    let mut nats_headers = async_nats::HeaderMap::new();
    telemetry::inject_nats(&tracing::Span::current(), &mut nats_headers);
    let stored = state
        .publisher
        .publish(
            subject,
            nats_headers,
            msg_id::push(&tenant, user.as_str(), &push_id),
            payload,
        )
        .await?;
    let epoch = state.push_epoch.of(state.publisher.jetstream(), stored.seq).await?;
    let device = device.as_ref().map_or(subjects::PUSH_ALL_DEVICES, DeviceId::as_str);
    tracing::info!(tenant = %tenant, user = %user, device, seq = stored.seq, "push stored");
    Ok((
        StatusCode::ACCEPTED,
        Json(PushAccepted {
            push_id,
            position: Position { epoch, seq: stored.seq },
            duplicate: stored.duplicate,
        }),
    ))
}
