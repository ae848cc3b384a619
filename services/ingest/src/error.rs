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
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let mut response = (status, Json(json!({ "error": code, "message": self.to_string() }))).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
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
