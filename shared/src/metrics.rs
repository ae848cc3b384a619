//! Prometheus metrics: one recorder per process (all services of the all-in-one
//! binary share it), rendered at `/metrics` by every HTTP surface.

use std::sync::OnceLock;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process's recorder on first use and returns its handle (None when
/// another recorder was installed first).
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(handle) => Some(handle),
            Err(error) => {
                tracing::warn!(%error, "metrics recorder not installed");
                None
            }
        })
        .as_ref()
}

/// `GET /metrics` in Prometheus text format.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    // Install now, so counters recorded before the first scrape are kept.
    let _ = handle();
    Router::new().route("/metrics", get(render))
}

async fn render() -> impl IntoResponse {
    let body = handle().map(PrometheusHandle::render).unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}
