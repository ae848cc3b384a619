//! Prometheus metrics: one recorder per process (all services of the all-in-one
//! binary share it), rendered at `/metrics` by every HTTP surface.
//!
//! Every metric is listed in [`catalog`] with its help text; durations (`_seconds`)
//! are histograms with the buckets of [`LATENCY_BUCKETS`].

pub mod catalog;
pub mod http;
pub mod latency;

use std::sync::OnceLock;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub use http::time_requests;

/// Bucket bounds (seconds) of every `_seconds` histogram: from a millisecond (a
/// request answered from memory) to a minute (a webhook's event behind a backlog).
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process's recorder on first use and returns its handle (None when
/// another recorder was installed first).
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let installed = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &LATENCY_BUCKETS)
                .and_then(|builder| builder.install_recorder());
            match installed {
                Ok(handle) => {
                    catalog::describe_all();
                    Some(handle)
                }
                Err(error) => {
                    tracing::warn!(%error, "metrics recorder not installed");
                    None
                }
            }
        })
        .as_ref()
}

/// Counts an alert of `kind` raised (published to PAYTRACK_ALERT), whichever service
/// raised it: `paytrack_alerts_raised_total{kind}`.
pub fn alert_raised(kind: &str) {
    metrics::counter!("paytrack_alerts_raised_total", "kind" => kind.to_owned()).increment(1);
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
