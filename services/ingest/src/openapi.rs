//! `/openapi.json`: the OpenAPI 3.1 document of ingest, generated (utoipa) from the
//! handlers' `#[utoipa::path]` annotations and their request and response types.
//! Routes whose handlers are not annotated themselves (the REST reads, with their
//! response types; webhooks, whose bodies are each provider's; health and metrics)
//! are described by the annotated stubs below.
//! `tests/tests/api/commands.rs` fails when a route of [`crate::routes::all`] is missing.

use std::sync::OnceLock;

use axum::Json;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi};

use paytrack_shared::problem::{ProblemBody, ProblemType};

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(title = "paytrack ingest", description = "Commands, signed webhooks, REST reads and the push API (docs/contract.md §6)."),
    paths(
        crate::commands::create_payment,
        crate::commands::cancel_payment,
        crate::commands::retry_payment,
        crate::commands::resolve_payment,
        crate::capabilities::get_capabilities,
        crate::push::push,
        crate::alerts::list,
        crate::alerts::ack,
        webhook,
        get_payment,
        get_timeline,
        get_evidence,
        list_payments,
        get_ledger,
        status_model,
        openapi_json,
        healthz,
        readyz,
        metrics,
    ),
    components(schemas(ProblemBody, ProblemType)),
    modifiers(&Security, &CommandRefusals, &Problems),
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        paytrack_shared::openapi::add_bearer(openapi, "An operator JWT, or a backend API key", None);
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "Bearer <backend API key>",
            ))),
        );
    }
}

/// The refusals every payment command (cancel, retry, resolve) shares, documented once:
/// each command's annotation names only what is its own (its 202, 409 and 422, and a
/// 400 or 403 it words differently), and these fill in the rest. Bodies are problems
/// ([`Problems`] runs after).
struct CommandRefusals;

impl CommandRefusals {
    const PATHS: [&'static str; 3] = [
        "/v1/payments/{payment_id}/cancel",
        "/v1/payments/{payment_id}/retry",
        "/v1/payments/{payment_id}/resolve",
    ];
    const RESPONSES: [(&'static str, &'static str); 5] = [
        ("400", "invalid_request"),
        ("401", "unauthorized"),
        ("403", "forbidden"),
        ("404", "not_found: no such payment in the caller's tenant"),
        ("503", "unavailable"),
    ];
}

impl Modify for CommandRefusals {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for path in Self::PATHS {
            let Some(operation) = openapi.paths.paths.get_mut(path).and_then(|item| item.post.as_mut()) else {
                continue;
            };
            for (status, description) in Self::RESPONSES {
                operation
                    .responses
                    .responses
                    .entry(status.to_owned())
                    .or_insert_with(|| utoipa::openapi::Response::new(description).into());
            }
        }
    }
}

/// Every error answer (status 400 and up) is documented as
/// `application/problem+json` with the [`ProblemBody`] schema, whatever the
/// annotation's default content type.
struct Problems;

impl Modify for Problems {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        paytrack_shared::problem::document_problems(openapi);
    }
}

/// `GET /openapi.json`.
pub async fn serve() -> Json<&'static utoipa::openapi::OpenApi> {
    static DOC: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    Json(DOC.get_or_init(ApiDoc::openapi))
}

/// A signed provider webhook; 2xx only once the fact is in JetStream.
#[utoipa::path(post, path = "/v1/webhooks/{tenant}/{provider}", tag = "webhooks",
    params(("tenant" = String, Path), ("provider" = String, Path, description = "stdwebhooks, razorpay, stripe")),
    request_body(content = Object, description = "The provider's own event shape, signed with its scheme"),
    responses((status = 200, description = "Stored (or already stored)", body = Object),
        (status = 400, body = ProblemBody), (status = 401, description = "Bad signature or timestamp", body = ProblemBody),
        (status = 404, body = ProblemBody), (status = 413, body = ProblemBody), (status = 503, body = ProblemBody)))]
#[allow(dead_code)]
fn webhook() {}

/// A payment's current state.
#[utoipa::path(get, path = "/v1/payments/{payment_id}", tag = "reads",
    params(("payment_id" = String, Path)),
    responses((status = 200, description = "The payment's current state", body = crate::payments::PaymentView),
        (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody)),
    security(("bearer" = [])))]
#[allow(dead_code)]
fn get_payment() {}

/// A payment's timeline: transitions and the facts that changed nothing.
#[utoipa::path(get, path = "/v1/payments/{payment_id}/timeline", tag = "reads",
    params(("payment_id" = String, Path)),
    responses((status = 200, body = Vec<crate::payments::TimelineItem>), (status = 401, body = ProblemBody),
        (status = 403, body = ProblemBody), (status = 404, body = ProblemBody)),
    security(("bearer" = [])))]
#[allow(dead_code)]
fn get_timeline() {}

/// A payment's evidence pack.
#[utoipa::path(get, path = "/v1/payments/{payment_id}/evidence", tag = "reads",
    params(("payment_id" = String, Path),
           ("facts_after" = Option<i64>, Query, description = "The previous page's facts_next")),
    responses((status = 200, description = "payment, timeline, a page of facts (raw), sessions", body = crate::payments::EvidencePack),
        (status = 400, description = "facts_after is not a sequence", body = ProblemBody),
        (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody)),
    security(("bearer" = [])))]
#[allow(dead_code)]
fn get_evidence() {}

/// The tenant's payments, filtered, newest first by default, paged by an opaque
/// cursor, with the position to subscribe from. Unknown parameters, malformed values,
/// bad cursors (or a cursor of another order) and limits out of range are 400.
#[utoipa::path(get, path = "/v1/payments", tag = "reads",
    params(
        ("status" = Option<Vec<String>>, Query, explode = true, description = "Canonical statuses; repeat it or give a comma list"),
        ("merchant" = Option<String>, Query, description = "A merchant id"),
        ("provider" = Option<String>, Query, description = "The provider the payment was routed to"),
        ("rail" = Option<String>, Query, description = "card, ach_debit, rtp, upi, …"),
        ("direction" = Option<String>, Query, description = "payin or payout"),
        ("amount_min" = Option<i64>, Query, minimum = 0, description = "Amount at least, in minor units"),
        ("amount_max" = Option<i64>, Query, minimum = 0, description = "Amount at most, in minor units"),
        ("currency" = Option<String>, Query, description = "ISO 4217, upper case"),
        ("created_after" = Option<String>, Query, format = DateTime, description = "RFC 3339; created strictly after"),
        ("created_before" = Option<String>, Query, format = DateTime, description = "RFC 3339; created strictly before"),
        ("updated_after" = Option<String>, Query, format = DateTime, description = "RFC 3339; last changed strictly after"),
        ("updated_before" = Option<String>, Query, format = DateTime, description = "RFC 3339; last changed strictly before"),
        ("q" = Option<String>, Query, description = "An exact payment id, provider reference or trace id"),
        ("order" = Option<String>, Query, description = "-created_at (default), created_at, -updated_at or updated_at"),
        ("cursor" = Option<String>, Query, description = "The previous page's next_cursor, with the same order"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 200, description = "Page size, 1 to 200 (default 50)")),
    responses((status = 200, body = crate::list::ListPage),
        (status = 400, description = "invalid_request: an unknown parameter, a malformed value, a bad cursor or a limit out of range (`parameter` names it)", body = ProblemBody),
        (status = 401, description = "unauthorized", body = ProblemBody), (status = 403, description = "forbidden", body = ProblemBody)),
    security(("bearer" = [])))]
#[allow(dead_code)]
fn list_payments() {}

/// A payment's journal entries and postings.
#[utoipa::path(get, path = "/v1/payments/{payment_id}/ledger", tag = "reads",
    params(("payment_id" = String, Path)),
    responses((status = 200, body = crate::payments::LedgerView), (status = 401, body = ProblemBody),
        (status = 403, body = ProblemBody), (status = 404, body = ProblemBody)),
    security(("bearer" = [])))]
#[allow(dead_code)]
fn get_ledger() {}

/// The canonical status model as data.
#[utoipa::path(get, path = "/v1/status-model", tag = "reference", responses((status = 200, body = Object)))]
#[allow(dead_code)]
fn status_model() {}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "reference", responses((status = 200, body = Object)))]
#[allow(dead_code)]
fn openapi_json() {}

/// Liveness.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200)))]
#[allow(dead_code)]
fn healthz() {}

/// Readiness: 503 until NATS is reachable and the layout is applied.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses((status = 200), (status = 503)))]
#[allow(dead_code)]
fn readyz() {}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, content_type = "text/plain")))]
#[allow(dead_code)]
fn metrics() {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast twin of the end-to-end check: every route of the table is documented.
    #[test]
    fn every_route_is_documented() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        for route in crate::routes::all() {
            assert!(
                doc["paths"][route.path][route.method].is_object(),
                "{} {} is missing",
                route.method,
                route.path
            );
        }
        if std::env::var_os("PAYTRACK_PRINT_OPENAPI").is_some() {
            println!("{}", serde_json::to_string_pretty(&doc).unwrap());
        }
    }

    /// Every problem code is listed, and every error answer is documented as a
    /// problem body.
    #[test]
    fn every_error_is_a_documented_problem() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let codes = doc["components"]["schemas"]["ProblemType"]["enum"].clone();
        for kind in ProblemType::ALL {
            assert!(
                codes.as_array().is_some_and(|c| c.contains(&kind.code().into())),
                "{} is not listed: {codes}",
                kind.code()
            );
        }
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                for (status, response) in operation["responses"].as_object().unwrap() {
                    if status.parse::<u16>().is_ok_and(|s| s >= 400) {
                        let content = &response["content"];
                        assert!(
                            content.get(paytrack_shared::problem::PROBLEM_JSON).is_some()
                                && content.as_object().is_some_and(|c| c.len() == 1),
                            "{method} {path} {status}: {content}"
                        );
                    }
                }
            }
        }
    }
}
