//! The one mapping from failures to HTTP answers: `{"error": code, "message": ..}`
//! with the right status, never leaking internals.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Every error an ingest endpoint can answer with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not what the endpoint accepts.
    #[error("{0}")]
    Malformed(String),
    /// The body is larger than allowed.
    #[error("body larger than {0} bytes")]
    TooLarge(usize),
    /// The webhook signature or timestamp did not verify.
    #[error("{0}")]
    BadSignature(String),
    /// No or an invalid credential.
    #[error("{0}")]
    Unauthorized(String),
    /// The credential is valid but does not grant this resource (an end user's
    /// token reading a payment outside its channels).
    #[error("{0}")]
    Forbidden(String),
    /// No such resource for this caller (also: another tenant's resource).
    #[error("{0}")]
    NotFound(String),
    /// JetStream cannot take the fact now; the sender should retry.
    #[error("the event store is unavailable; retry later")]
    Unavailable,
    /// Something failed on our side; details are in the logs only.
    #[error("internal error")]
    Internal,
    /// A field of a command or push is missing or invalid (400 `invalid_request`).
    #[error("{0}")]
    Invalid(String),
    /// The command needs a feature the payment's country, rail and program lack.
    #[error("{feature} is not supported for this country, rail and program")]
    Unsupported {
        /// The feature asked for (`cancel`, `retry`, `create`, …).
        feature: String,
        /// The payment's country.
        country: String,
        /// The payment's rail.
        rail: String,
        /// The payment's program.
        program: Option<String>,
    },
    /// The `Idempotency-Key` was used before with another body.
    #[error("this Idempotency-Key was used with another request body")]
    IdempotencyKeyReused,
    /// A per-tenant quota is reached; the sender may retry later.
    #[error("{0}")]
    QuotaExceeded(String),
    /// The first request with this `Idempotency-Key` is still being processed.
    #[error("a request with this Idempotency-Key is still in progress; retry later")]
    IdempotencyInProgress,
}

impl ApiError {
    /// The error code answered (also the metrics label).
    pub fn code(&self) -> &'static str {
        self.status_and_code().1
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Malformed(_) => (StatusCode::BAD_REQUEST, "malformed_body"),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            ApiError::BadSignature(_) => (StatusCode::UNAUTHORIZED, "invalid_signature"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            ApiError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            ApiError::Unsupported { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "unsupported_feature"),
            ApiError::IdempotencyKeyReused => (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused"),
            ApiError::IdempotencyInProgress => (StatusCode::CONFLICT, "idempotency_key_in_progress"),
            ApiError::QuotaExceeded(_) => (StatusCode::TOO_MANY_REQUESTS, "quota_exceeded"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let body = match &self {
            ApiError::Unsupported {
                feature,
                country,
                rail,
                program,
            } => json!({
                "error": code,
                "message": self.to_string(),
                "feature": feature,
                "country": country,
                "rail": rail,
                "program": program,
            }),
            _ => json!({ "error": code, "message": self.to_string() }),
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        if status == StatusCode::UNAUTHORIZED && code == "unauthorized" {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        tracing::error!(error = %error, "database error");
        ApiError::Internal
    }
}

/// The error body every endpoint answers with, for the OpenAPI document.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A stable code, e.g. `invalid_request`, `unsupported_feature`.
    pub error: String,
    /// What went wrong, in words.
    pub message: String,
    /// For `unsupported_feature`: the feature asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feature: Option<String>,
    /// For `unsupported_feature`: the country.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// For `unsupported_feature`: the rail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rail: Option<String>,
    /// For `unsupported_feature`: the program (null when none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
}
