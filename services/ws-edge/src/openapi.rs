//! `/openapi.json`: the OpenAPI 3.1 document of the edge's HTTP surface (the
//! WebSocket upgrade and its refusals, SSE, presence, the operator console, health
//! and metrics), generated (utoipa) from the annotated stubs below. The WebSocket and SSE
//! protocols themselves are in docs/contract.md §7; this document says what each
//! route answers over HTTP, errors (problem bodies) included.

use std::sync::OnceLock;

use axum::Json;
use chrono::{DateTime, Utc};
use paytrack_shared::problem::{ProblemBody, ProblemType};
use utoipa::{Modify, OpenApi, ToSchema};

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(title = "paytrack ws-edge", description = "Live sessions over WebSocket and SSE, presence and the operator console (docs/contract.md §7, docs/console.md)."),
    paths(websocket, sse, presence, console, console_payment, console_script, openapi_json, healthz, readyz, metrics),
    components(schemas(ProblemBody, ProblemType, PresenceAnswer, PresenceSession)),
    modifiers(&Security),
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        paytrack_shared::openapi::add_bearer(
            openapi,
            "A session token (operator or end user); browsers may pass it as ?token=",
            Some("JWT"),
        );
        paytrack_shared::problem::document_problems(openapi);
    }
}

/// `GET /openapi.json`.
pub async fn serve() -> Json<&'static utoipa::openapi::OpenApi> {
    static DOC: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    Json(DOC.get_or_init(ApiDoc::openapi))
}

/// The answer of `GET /v1/presence/{user}`.
#[derive(ToSchema)]
#[allow(dead_code)]
struct PresenceAnswer {
    /// The user asked about.
    user: String,
    /// The sessions the user has open now, on any edge.
    sessions: Vec<PresenceSession>,
}

/// One open session of a user.
#[derive(ToSchema)]
#[allow(dead_code)]
struct PresenceSession {
    /// The device (`_` for a token without a `device` claim).
    device: String,
    /// The session.
    session_id: String,
    /// The edge holding it.
    edge_id: String,
    /// `websocket` or `sse`.
    transport: String,
    /// When the session opened.
    since: DateTime<Utc>,
    /// When the edge holding it last said it is alive.
    seen_at: DateTime<Utc>,
}

/// The WebSocket upgrade: authenticated before any socket exists.
#[utoipa::path(get, path = "/v1/ws", tag = "sessions",
    params(("token" = Option<String>, Query, description = "The session token, for browsers that cannot set Authorization")),
    responses(
        (status = 101, description = "Switching protocols: the session starts with `welcome`"),
        (status = 400, description = "invalid_request: not a WebSocket upgrade", body = ProblemBody),
        (status = 401, description = "unauthorized: no valid token", body = ProblemBody),
        (status = 503, description = "unavailable: the edge is not connected to JetStream yet", body = ProblemBody)),
    security(("bearer" = [])))]
#[allow(dead_code)]
fn websocket() {}

/// A channel over Server-Sent Events; `Last-Event-ID` resumes as `since` does.
#[utoipa::path(get, path = "/v1/sse", tag = "sessions",
    params(("channel" = String, Query, description = "payment:<id>, merchant:<id>, payments or user:<id>"),
        ("token" = Option<String>, Query, description = "The session token, for browsers that cannot set Authorization"),
        ("Last-Event-ID" = Option<String>, Header, description = "<epoch>:<seq> of the last event seen")),
    responses(
        (status = 200, description = "The event stream: `subscribed`, then events, then `close`", content_type = "text/event-stream", body = String),
        (status = 400, description = "invalid_request: no or an unknown channel, or a malformed Last-Event-ID", body = ProblemBody),
        (status = 401, description = "unauthorized: no valid token", body = ProblemBody),
        (status = 403, description = "forbidden: the token may not read this channel", body = ProblemBody),
        (status = 429, description = "rate_limited: a subscribe cap is reached", body = ProblemBody),
        (status = 503, description = "unavailable: the edge is not connected to JetStream yet, or shutting down", body = ProblemBody)),
    security(("bearer" = [])))]
#[allow(dead_code)]
fn sse() {}

/// The sessions a user has open now, on any edge.
#[utoipa::path(get, path = "/v1/presence/{user}", tag = "presence",
    params(("user" = String, Path, description = "A user id ([A-Za-z0-9_-]{1,64})"),
        ("token" = Option<String>, Query, description = "The session token, for browsers that cannot set Authorization")),
    responses(
        (status = 200, body = PresenceAnswer),
        (status = 400, description = "invalid_request: the user id is not a subject token", body = ProblemBody),
        (status = 401, description = "unauthorized: no valid token", body = ProblemBody),
        (status = 403, description = "forbidden: an end user's token asking for another user", body = ProblemBody),
        (status = 429, description = "rate_limited: too many presence reads for the tenant", body = ProblemBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "unavailable: the edge is not connected to JetStream yet", body = ProblemBody)),
    security(("bearer" = [])))]
#[allow(dead_code)]
fn presence() {}

/// The operator console: the payments list.
#[utoipa::path(get, path = "/", tag = "console",
    responses((status = 200, description = "The console's page (it routes by the address)", content_type = "text/html", body = String)))]
#[allow(dead_code)]
fn console() {}

/// The operator console: one payment's page, deep-linkable.
#[utoipa::path(get, path = "/payments/{id}", tag = "console",
    params(("id" = String, Path, description = "The payment (the page reads it from the API)")),
    responses((status = 200, description = "The console's page (it routes by the address)", content_type = "text/html", body = String)))]
#[allow(dead_code)]
fn console_payment() {}

/// The console's script (bundled from clients/console with the client library).
#[utoipa::path(get, path = "/assets/console.js", tag = "console",
    responses((status = 200, description = "The script", content_type = "text/javascript", body = String)))]
#[allow(dead_code)]
fn console_script() {}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "reference", responses((status = 200, body = Object)))]
#[allow(dead_code)]
fn openapi_json() {}

/// Liveness.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, content_type = "text/plain", body = String)))]
#[allow(dead_code)]
fn healthz() {}

/// Readiness: 503 until the edge's feeds are open.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, content_type = "text/plain", body = String), (status = 503, description = "unavailable", body = ProblemBody)))]
#[allow(dead_code)]
fn readyz() {}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, content_type = "text/plain", body = String)))]
#[allow(dead_code)]
fn metrics() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_answer_is_documented_as_a_problem() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for path in [
            "/v1/ws",
            "/v1/sse",
            "/v1/presence/{user}",
            "/",
            "/healthz",
            "/readyz",
            "/metrics",
        ] {
            assert!(paths.contains_key(path), "{path}");
        }
        let unauthorized = &paths["/v1/sse"]["get"]["responses"]["401"]["content"];
        assert!(unauthorized.get("application/problem+json").is_some(), "{unauthorized}");
        let codes = &doc["components"]["schemas"]["ProblemType"]["enum"];
        assert!(
            codes.as_array().is_some_and(|c| c.contains(&"rate_limited".into())),
            "{codes}"
        );
    }
}
