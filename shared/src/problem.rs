//! Error answers of every HTTP surface (ingest, ws-edge, the simulator): RFC 9457
//! `application/problem+json` bodies drawn from ONE table of problem types, so a
//! mistake is spelled the same way wherever it is made.
//!
//! A body is `{type, title, status, detail, code, …}`: `type` is
//! `https://paytrack.dev/problems/<code>`, `title` the type's fixed summary, `status`
//! the HTTP status, `detail` this occurrence in words, `code` the stable short code
//! clients branch on, and extension members where a type has more to say (e.g.
//! `unsupported_feature`'s `feature`, `country`, `rail`, `program`). docs/api.md
//! lists the table; [`ProblemType::ALL`] is the table.
//!
//! [`problem_bodies`] is the safety net every router gets: any error answer that is
//! not already a problem (an unknown route, a wrong method, a timeout, an extractor's
//! plain-text rejection, a readiness 503) is rewritten into one.

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Where problem type URIs live: a type is this plus its code.
pub const PROBLEM_TYPE_BASE: &str = "https://paytrack.dev/problems/";

/// Largest error body the safety net reads to keep as `detail`.
const MAX_REWRITTEN_DETAIL: usize = 1024;

/// Every kind of error answer paytrack gives, one per mistake. Serialized as its
/// code, so the OpenAPI documents list every code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProblemType {
    /// 400: a parameter, header, path segment or body is missing, malformed or out of
    /// range (one code for every such mistake).
    InvalidRequest,
    /// 401: a webhook's signature or timestamp did not verify.
    InvalidSignature,
    /// 401: no credential, or one that does not verify.
    Unauthorized,
    /// 403: the credential is valid but does not grant this.
    Forbidden,
    /// 404: no such route or resource for this caller (another tenant's included).
    NotFound,
    /// 405: the route exists, the method does not.
    MethodNotAllowed,
    /// 408: the request took longer than the server allows.
    RequestTimeout,
    /// 409: the payment's current status forbids the command.
    StateConflict,
    /// 409: the first request with this `Idempotency-Key` is still being processed.
    IdempotencyKeyInProgress,
    /// 413: the body is larger than allowed.
    BodyTooLarge,
    /// 422: the payment's country, rail and program lack the feature asked for.
    UnsupportedFeature,
    /// 422: the command's reason is missing or unusable.
    InvalidReason,
    /// 422: the `Idempotency-Key` was used before with another body.
    IdempotencyKeyReused,
    /// 429: a per-tenant quota of stored items is reached.
    QuotaExceeded,
    /// 429: too many requests in a short time; retry after `Retry-After`.
    RateLimited,
    /// 500: something failed on the server; details are in its logs only.
    Internal,
    /// 503: a dependency cannot take the request now; retry after `Retry-After`.
    Unavailable,
}

impl ProblemType {
    /// The whole table, in status order.
    pub const ALL: [ProblemType; 17] = [
        ProblemType::InvalidRequest,
        ProblemType::InvalidSignature,
        ProblemType::Unauthorized,
        ProblemType::Forbidden,
        ProblemType::NotFound,
        ProblemType::MethodNotAllowed,
        ProblemType::RequestTimeout,
        ProblemType::StateConflict,
        ProblemType::IdempotencyKeyInProgress,
        ProblemType::BodyTooLarge,
        ProblemType::UnsupportedFeature,
        ProblemType::InvalidReason,
        ProblemType::IdempotencyKeyReused,
        ProblemType::QuotaExceeded,
        ProblemType::RateLimited,
        ProblemType::Internal,
        ProblemType::Unavailable,
    ];

    /// The stable short code (`body.code`, the last segment of `type`).
    pub fn code(self) -> &'static str {
        match self {
            ProblemType::InvalidRequest => "invalid_request",
            ProblemType::InvalidSignature => "invalid_signature",
            ProblemType::Unauthorized => "unauthorized",
            ProblemType::Forbidden => "forbidden",
            ProblemType::NotFound => "not_found",
            ProblemType::MethodNotAllowed => "method_not_allowed",
            ProblemType::RequestTimeout => "request_timeout",
            ProblemType::StateConflict => "state_conflict",
            ProblemType::IdempotencyKeyInProgress => "idempotency_key_in_progress",
            ProblemType::BodyTooLarge => "body_too_large",
            ProblemType::UnsupportedFeature => "unsupported_feature",
            ProblemType::InvalidReason => "invalid_reason",
            ProblemType::IdempotencyKeyReused => "idempotency_key_reused",
            ProblemType::QuotaExceeded => "quota_exceeded",
            ProblemType::RateLimited => "rate_limited",
            ProblemType::Internal => "internal",
            ProblemType::Unavailable => "unavailable",
        }
    }

    /// The HTTP status every occurrence of this type answers with.
    pub fn status(self) -> StatusCode {
        match self {
            ProblemType::InvalidRequest => StatusCode::BAD_REQUEST,
            ProblemType::InvalidSignature | ProblemType::Unauthorized => StatusCode::UNAUTHORIZED,
            ProblemType::Forbidden => StatusCode::FORBIDDEN,
            ProblemType::NotFound => StatusCode::NOT_FOUND,
            ProblemType::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProblemType::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ProblemType::StateConflict | ProblemType::IdempotencyKeyInProgress => StatusCode::CONFLICT,
            ProblemType::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProblemType::UnsupportedFeature | ProblemType::InvalidReason | ProblemType::IdempotencyKeyReused => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ProblemType::QuotaExceeded | ProblemType::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ProblemType::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ProblemType::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The type's fixed, human-readable summary (`body.title`).
    pub fn title(self) -> &'static str {
        match self {
            ProblemType::InvalidRequest => "The request is malformed or a value is out of range",
            ProblemType::InvalidSignature => "The webhook signature or timestamp did not verify",
            ProblemType::Unauthorized => "A valid credential is required",
            ProblemType::Forbidden => "The credential does not grant this",
            ProblemType::NotFound => "No such resource",
            ProblemType::MethodNotAllowed => "The resource does not support this method",
            ProblemType::RequestTimeout => "The request took too long",
            ProblemType::StateConflict => "The payment's current status forbids this command",
            ProblemType::IdempotencyKeyInProgress => "A request with this Idempotency-Key is still in progress",
            ProblemType::BodyTooLarge => "The body is too large",
            ProblemType::UnsupportedFeature => "The payment's country, rail and program lack this feature",
            ProblemType::InvalidReason => "The command's reason is missing or unusable",
            ProblemType::IdempotencyKeyReused => "This Idempotency-Key was used with another request",
            ProblemType::QuotaExceeded => "A quota of the tenant is reached",
            ProblemType::RateLimited => "Too many requests",
            ProblemType::Internal => "Internal error",
            ProblemType::Unavailable => "Temporarily unavailable",
        }
    }

    /// The type URI (`body.type`).
    pub fn uri(self) -> String {
        format!("{PROBLEM_TYPE_BASE}{}", self.code())
    }

    /// The type of a bare error answer with `status`, for [`problem_bodies`].
    pub fn for_status(status: StatusCode) -> ProblemType {
        match status {
            StatusCode::UNAUTHORIZED => ProblemType::Unauthorized,
            StatusCode::FORBIDDEN => ProblemType::Forbidden,
            StatusCode::NOT_FOUND => ProblemType::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => ProblemType::MethodNotAllowed,
            StatusCode::REQUEST_TIMEOUT => ProblemType::RequestTimeout,
            StatusCode::PAYLOAD_TOO_LARGE => ProblemType::BodyTooLarge,
            StatusCode::TOO_MANY_REQUESTS => ProblemType::RateLimited,
            StatusCode::SERVICE_UNAVAILABLE => ProblemType::Unavailable,
            s if s.is_server_error() => ProblemType::Internal,
            _ => ProblemType::InvalidRequest,
        }
    }
}

/// One error answer: a type, what happened this time, and any extension members.
#[derive(Debug, Clone)]
pub struct Problem {
    kind: ProblemType,
    status: StatusCode,
    detail: String,
    extensions: Map<String, Value>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Problem {
    /// A problem of `kind`, `detail` saying what happened.
    pub fn new(kind: ProblemType, detail: impl Into<String>) -> Problem {
        Problem {
            kind,
            status: kind.status(),
            detail: detail.into(),
            extensions: Map::new(),
            headers: Vec::new(),
        }
    }

    /// Adds the extension member `name` (never one of the standard members).
    pub fn with(mut self, name: &str, value: impl Into<Value>) -> Problem {
        if !matches!(name, "type" | "title" | "status" | "detail" | "code") {
            self.extensions.insert(name.to_owned(), value.into());
        }
        self
    }

    /// Adds a response header (`Retry-After`, `WWW-Authenticate`, …).
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Problem {
        self.headers.push((name, value));
        self
    }

    /// The problem's type.
    pub fn kind(&self) -> ProblemType {
        self.kind
    }

    /// The body, as sent.
    pub fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert("type".into(), Value::String(self.kind.uri()));
        body.insert("title".into(), Value::String(self.kind.title().to_owned()));
        body.insert("status".into(), Value::from(self.status.as_u16()));
        body.insert("detail".into(), Value::String(self.detail.clone()));
        body.insert("code".into(), Value::String(self.kind.code().to_owned()));
        body.extend(self.extensions.clone());
        Value::Object(body)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = self.body().to_string();
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        response
    }
}

/// The problem body's shape, for OpenAPI documents. Extension members not listed
/// here may be added by a type; clients ignore what they do not know.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProblemBody {
    /// `https://paytrack.dev/problems/<code>`.
    #[serde(rename = "type")]
    pub type_: String,
    /// The type's fixed summary.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong this time, in words.
    pub detail: String,
    /// The stable short code.
    pub code: ProblemType,
    /// `unsupported_feature`: the feature asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature: Option<String>,
    /// `unsupported_feature`: the payment's country.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// `unsupported_feature`: the payment's rail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rail: Option<String>,
    /// `unsupported_feature`: the payment's program (null when none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    /// `state_conflict`: the command refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// `state_conflict`: the payment's status the command was checked against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_status: Option<String>,
    /// `invalid_request`: the query parameter at fault, when one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameter: Option<String>,
}

/// Documents every error response (status 400 and up) of `openapi` as
/// [`PROBLEM_JSON`] with the `ProblemBody` schema, whatever content type its
/// annotation gave, so each service's document says what it answers.
pub fn document_problems(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, RefOr};
    for item in openapi.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ];
        for operation in operations.into_iter().flatten() {
            for (status, response) in operation.responses.responses.iter_mut() {
                if status.parse::<u16>().is_ok_and(|s| s >= 400)
                    && let RefOr::T(response) = response
                {
                    response.content.clear();
                    response.content.insert(
                        PROBLEM_JSON.to_owned(),
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("ProblemBody")))
                            .build(),
                    );
                }
            }
        }
    }
}

/// Wraps `router` so that every error answer (status 400 and up) is a problem body:
/// answers already of type [`PROBLEM_JSON`] pass unchanged; any other (axum's
/// 404 and 405, a timeout's empty 408, an extractor's plain-text rejection, a bare
/// 503) is rewritten, keeping its headers, with its text as `detail`. Its status is
/// kept, except that a 4xx no type names (an extractor's 415 or 422) becomes the
/// 400 `invalid_request` it is.
pub fn problem_bodies(router: axum::Router) -> axum::Router {
    router.layer(axum::middleware::from_fn(
        |request: axum::extract::Request, next: axum::middleware::Next| async move {
            let response = next.run(request).await;
            if response.status().as_u16() < 400 || is_problem(&response) {
                return response;
            }
            rewrite(response).await
        },
    ))
}

fn is_problem(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(PROBLEM_JSON))
}

async fn rewrite(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let kind = ProblemType::for_status(parts.status);
    let text = match axum::body::to_bytes(body, MAX_REWRITTEN_DETAIL).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_owned(),
        Err(_) => String::new(),
    };
    let detail = match parts.status {
        StatusCode::NOT_FOUND => "no such route".to_owned(),
        StatusCode::METHOD_NOT_ALLOWED => "this route does not accept this method".to_owned(),
        _ if text.is_empty() || text.starts_with('{') => kind.title().to_owned(),
        _ => text,
    };
    let mut problem = Problem::new(kind, detail);
    // Another 4xx of an extractor (415, a JSON body of the wrong shape's 422) is the
    // same mistake as any malformed request: 400 `invalid_request`.
    if kind != ProblemType::InvalidRequest {
        problem.status = parts.status;
    }
    parts.status = problem.status;
    let body = problem.body().to_string();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    Response::from_parts(parts, Body::from(body))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use axum::Router;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    #[test]
    fn every_type_has_its_own_code_and_a_uri_ending_in_it() {
        let codes: HashSet<_> = ProblemType::ALL.iter().map(|t| t.code()).collect();
        assert_eq!(codes.len(), ProblemType::ALL.len());
        for kind in ProblemType::ALL {
            assert!(kind.uri().ends_with(&format!("/problems/{}", kind.code())));
            assert!(kind.status().as_u16() >= 400);
            let serialized = serde_json::to_value(kind).unwrap();
            assert_eq!(serialized, kind.code(), "serde spells the code");
        }
    }

    #[test]
    fn a_body_carries_the_standard_members_and_its_extensions() {
        let body = Problem::new(ProblemType::UnsupportedFeature, "cancel is not supported")
            .with("feature", "cancel")
            .with("status", "ignored")
            .body();
        assert_eq!(body["type"], "https://paytrack.dev/problems/unsupported_feature");
        assert_eq!(body["status"], 422);
        assert_eq!(body["code"], "unsupported_feature");
        assert_eq!(body["feature"], "cancel");
        assert_eq!(body["detail"], "cancel is not supported");
    }

    async fn answer(router: Router, request: http::Request<Body>) -> (StatusCode, String, Value) {
        let response = problem_bodies(router).oneshot(request).await.unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (
            status,
            content_type,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    #[tokio::test]
    async fn unknown_routes_wrong_methods_and_bare_errors_become_problems() {
        let router = Router::new()
            .route("/ok", get(|| async { "ok" }))
            .route(
                "/bare",
                get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "not ready") }),
            )
            .route(
                "/shape",
                get(|| async { (StatusCode::UNPROCESSABLE_ENTITY, "expected struct") }),
            );
        let get_ = |uri: &str| http::Request::get(uri).body(Body::empty()).unwrap();
        let (status, content_type, body) = answer(router.clone(), get_("/nowhere")).await;
        assert_eq!((status, content_type.as_str()), (StatusCode::NOT_FOUND, PROBLEM_JSON));
        assert_eq!(body["code"], "not_found");
        let post = http::Request::post("/ok").body(Body::empty()).unwrap();
        let (status, _, body) = answer(router.clone(), post).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed"))
        );
        assert_eq!(body["status"], 405);
        let (status, _, body) = answer(router.clone(), get_("/shape")).await;
        assert_eq!((status, body["status"].as_u64()), (StatusCode::BAD_REQUEST, Some(400)));
        assert_eq!(body["code"], "invalid_request");
        let (status, _, body) = answer(router.clone(), get_("/bare")).await;
        assert_eq!(
            (status, body["detail"].as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("not ready"))
        );
        let (status, _, body) = answer(router, get_("/ok")).await;
        assert_eq!((status, body), (StatusCode::OK, Value::Null));
    }
}
