//! Every route of ingest, in one table that both the router and the OpenAPI test
//! read: a route added here is served, and the test fails until `/openapi.json`
//! documents it.

use axum::routing::{MethodRouter, get, post};

use crate::app::AppState;
use crate::{capabilities, commands, list, openapi, payments, push, webhooks};

/// A route: its method and its path (axum's `{param}` syntax, which is also
/// OpenAPI's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Lower-case HTTP method, as OpenAPI spells it.
    pub method: &'static str,
    /// The path template.
    pub path: &'static str,
}

const fn route(method: &'static str, path: &'static str) -> Route {
    Route { method, path }
}

/// ingest's own handlers.
pub(crate) fn table() -> Vec<(Route, MethodRouter<AppState>)> {
    vec![
        (
            route("post", "/v1/webhooks/{tenant}/{provider}"),
            post(webhooks::receive),
        ),
        (route("post", "/v1/payments"), post(commands::create_payment)),
        (route("get", "/v1/payments"), get(list::list_payments)),
        (route("get", "/v1/payments/{payment_id}"), get(payments::get_payment)),
        (
            route("post", "/v1/payments/{payment_id}/cancel"),
            post(commands::cancel_payment),
        ),
        (
            route("post", "/v1/payments/{payment_id}/retry"),
            post(commands::retry_payment),
        ),
        (
            route("post", "/v1/payments/{payment_id}/resolve"),
            post(commands::resolve_payment),
        ),
        (
            route("get", "/v1/payments/{payment_id}/timeline"),
            get(payments::get_timeline),
        ),
        (
            route("get", "/v1/payments/{payment_id}/evidence"),
            get(payments::get_evidence),
        ),
        (
            route("get", "/v1/payments/{payment_id}/ledger"),
            get(payments::get_ledger),
        ),
        (route("get", "/v1/status-model"), get(payments::status_model)),
        (route("get", "/v1/alerts"), get(crate::alerts::list)),
        (route("post", "/v1/alerts/{alert_id}/ack"), post(crate::alerts::ack)),
        (route("get", "/v1/capabilities"), get(capabilities::get_capabilities)),
        (route("post", "/v1/push"), post(push::push)),
        (route("get", "/openapi.json"), get(openapi::serve)),
    ]
}

/// Routes of the shared routers merged into ingest's (health, metrics).
const MERGED: [Route; 3] = [
    route("get", "/healthz"),
    route("get", "/readyz"),
    route("get", "/metrics"),
];

/// Every route ingest serves.
pub fn all() -> Vec<Route> {
    table().into_iter().map(|(r, _)| r).chain(MERGED).collect()
}
