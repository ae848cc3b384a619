//! The one mapping from failures to HTTP answers: RFC 9457 problem bodies of the
//! shared problem types (`paytrack_shared::problem`), never leaking internals.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use paytrack_shared::problem::{Problem, ProblemType};

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
    /// The routed provider could not be asked to initiate a new payment; the caller
    /// retries with the same `Idempotency-Key` (503, like [`ApiError::Unavailable`]).
    #[error(transparent)]
    ProviderUnavailable(#[from] crate::initiate::InitiationFailed),
    /// Something failed on our side; details are in the logs only.
    #[error("internal error")]
    Internal,
    /// A field of a command or push is missing or invalid (400 `invalid_request`).
    #[error("{0}")]
    Invalid(String),
    /// A query parameter is unknown, malformed or out of range (400
    /// `invalid_request`, naming the parameter).
    #[error("{parameter}: {message}")]
    InvalidParameter {
        /// The parameter at fault.
        parameter: String,
        /// What is wrong with it.
        message: String,
    },
    /// The payment's current status forbids the command (409 `state_conflict`).
    #[error("{command} is not possible while the payment is {status}: {reason}")]
    StateConflict {
        /// The command refused.
        command: String,
        /// The payment's status it was checked against.
        status: String,
        /// Why, in words.
        reason: String,
    },
    /// The command's reason is missing or unusable (422 `invalid_reason`).
    #[error("{0}")]
    InvalidReason(String),
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
        self.kind().code()
    }

    /// The problem type answered.
    pub fn kind(&self) -> ProblemType {
        match self {
            ApiError::Malformed(_) | ApiError::Invalid(_) | ApiError::InvalidParameter { .. } => {
                ProblemType::InvalidRequest
            }
            ApiError::TooLarge(_) => ProblemType::BodyTooLarge,
            ApiError::BadSignature(_) => ProblemType::InvalidSignature,
            ApiError::Unauthorized(_) => ProblemType::Unauthorized,
            ApiError::Forbidden(_) => ProblemType::Forbidden,
            ApiError::NotFound(_) => ProblemType::NotFound,
            ApiError::Unavailable | ApiError::ProviderUnavailable(_) => ProblemType::Unavailable,
            ApiError::Internal => ProblemType::Internal,
            ApiError::Unsupported { .. } => ProblemType::UnsupportedFeature,
            ApiError::StateConflict { .. } => ProblemType::StateConflict,
            ApiError::InvalidReason(_) => ProblemType::InvalidReason,
            ApiError::IdempotencyKeyReused => ProblemType::IdempotencyKeyReused,
            ApiError::IdempotencyInProgress => ProblemType::IdempotencyKeyInProgress,
            ApiError::QuotaExceeded(_) => ProblemType::QuotaExceeded,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = self.kind();
        let mut problem = Problem::new(kind, self.to_string());
        match &self {
            ApiError::Unsupported {
                feature,
                country,
                rail,
                program,
            } => {
                problem = problem
                    .with("feature", feature.as_str())
                    .with("country", country.as_str())
                    .with("rail", rail.as_str())
                    .with("program", program.clone());
            }
            ApiError::StateConflict { command, status, .. } => {
                problem = problem
                    .with("command", command.as_str())
                    .with("payment_status", status.as_str());
            }
            ApiError::InvalidParameter { parameter, .. } => {
                problem = problem.with("parameter", parameter.as_str());
            }
            _ => {}
        }
        if matches!(kind, ProblemType::Unavailable | ProblemType::QuotaExceeded) {
            problem = problem.header(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        if kind == ProblemType::Unauthorized {
            problem = problem.header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        problem.into_response()
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        tracing::error!(error = %error, "database error");
        ApiError::Internal
    }
}
