//! One telemetry set-up for every service, and W3C trace context carried in NATS
//! and HTTP headers.
//!
//! Spans are OpenTelemetry spans (via `tracing-opentelemetry`), so a trace started
//! by a webhook (or continued from its `traceparent`) keeps its id through
//! JetStream to the WebSocket event. Every span that handles a payment declares a
//! `trace_id` field, recorded with [`record_trace_id`], so each log line carries it.

use std::collections::HashMap;
use std::sync::OnceLock;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{LevelFilter, filter_fn};
use tracing_subscriber::layer::{Layer as _, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// The W3C header that carries trace context.
pub const TRACEPARENT: &str = "traceparent";

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Where log lines go.
pub enum LogSink {
    /// Standard output, in the configured format.
    Stdout(LogFormat),
    /// Nowhere: tests stay quiet unless `TEST_LOG` is set. Spans still get trace ids.
    Discard,
    /// JSON lines to a writer of the caller's (tests that assert on logs).
    JsonTo(tracing_subscriber::fmt::writer::BoxMakeWriter),
}

/// Installs the global subscriber once; later calls are no-ops, so tests may call
/// it freely. `RUST_LOG` filters the log lines (default `info`).
pub fn init(service: &'static str, sink: LogSink) {
    init_with_filter(service, sink, "info");
}

/// [`init`] with another default filter for when `RUST_LOG` is unset.
///
/// The filter is a per-layer filter of the log output only. The OpenTelemetry layer
/// has its own filter that keeps every span of paytrack's crates whatever the log
/// level: a span the log filter disables would otherwise have no trace context, and
/// the trace id persisted with a transition (and sent on the WebSocket) would be
/// zeros at `warn`.
pub fn init_with_filter(service: &'static str, sink: LogSink, default_filter: &str) {
    // Only the first call builds a subscriber. Building another one, even one that is
    // never installed, registers a dispatcher and recomputes every callsite's
    // interest, which leaves the installed per-layer filters with stale decisions.
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| install(service, sink, default_filter));
}

fn install(service: &'static str, sink: LogSink, default_filter: &str) {
    let provider = PROVIDER.get_or_init(|| SdkTracerProvider::builder().build());
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let tracer = provider.tracer(service);
    let otel = tracing_opentelemetry::layer().with_tracer(tracer);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    // A global gate lets through what the log filter may want (up to its most
    // verbose level) and every span of paytrack's crates, whatever its level: the
    // OpenTelemetry layer is not filtered further, the log output is (per layer).
    let verbosest = filter.max_level_hint().unwrap_or(LevelFilter::TRACE);
    let gate =
        filter_fn(move |meta| (meta.is_span() && meta.target().starts_with("paytrack")) || verbosest >= *meta.level());
    let registry = tracing_subscriber::registry().with(gate).with(otel);
    let _ = match sink {
        LogSink::Stdout(LogFormat::Json) => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_filter(filter),
            )
            .try_init(),
        LogSink::Stdout(LogFormat::Pretty) => registry
            .with(tracing_subscriber::fmt::layer().with_filter(filter))
            .try_init(),
        LogSink::Discard => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::sink)
                    .with_filter(filter),
            )
            .try_init(),
        LogSink::JsonTo(writer) => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(writer)
                    .with_filter(filter),
            )
            .try_init(),
    };
}

/// The quiet set-up for tests: logs only when `TEST_LOG` is set.
pub fn init_for_tests() {
    if std::env::var_os("TEST_LOG").is_some() {
        init("paytrack-test", LogSink::Stdout(LogFormat::Pretty));
    } else {
        init("paytrack-test", LogSink::Discard);
    }
}

/// The span's trace id as 32 hex digits.
pub fn trace_id(span: &Span) -> String {
    span.context().span().span_context().trace_id().to_string()
}

/// Records the span's trace id into its declared `trace_id` field and returns it.
pub fn record_trace_id(span: &Span) -> String {
    let id = trace_id(span);
    span.record("trace_id", id.as_str());
    id
}

/// Makes `span` a child of the trace in `headers`, if they carry one.
pub fn continue_from<E: Extractor>(span: &Span, headers: &E) {
    let parent = TraceContextPropagator::new().extract(headers);
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// Writes `span`'s trace context into NATS headers.
pub fn inject_nats(span: &Span, headers: &mut async_nats::HeaderMap) {
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    for (key, value) in carrier {
        headers.insert(key.as_str(), value.as_str());
    }
}

/// Reads trace context from NATS headers.
pub struct NatsHeaders<'a>(pub &'a async_nats::HeaderMap);

impl Extractor for NatsHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_ref()).collect()
    }
}

/// Reads trace context from HTTP headers.
pub struct HttpHeaders<'a>(pub &'a http::HeaderMap);

impl Extractor for HttpHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_span_continues_the_incoming_trace() {
        init_for_tests();
        let mut headers = http::HeaderMap::new();
        headers.insert(
            TRACEPARENT,
            http::HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        let span = tracing::info_span!("test", trace_id = tracing::field::Empty);
        continue_from(&span, &HttpHeaders(&headers));
        assert_eq!(record_trace_id(&span), "4bf92f3577b34da6a3ce929d0e0e4736");

        let mut nats = async_nats::HeaderMap::new();
        inject_nats(&span, &mut nats);
        let next = tracing::info_span!("next", trace_id = tracing::field::Empty);
        continue_from(&next, &NatsHeaders(&nats));
        assert_eq!(trace_id(&next), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn a_root_span_gets_a_fresh_trace() {
        init_for_tests();
        let a = tracing::info_span!("a");
        let b = tracing::info_span!("b");
        let (ta, tb) = (trace_id(&a), trace_id(&b));
        assert_eq!(ta.len(), 32);
        assert_ne!(ta, "0".repeat(32));
        assert_ne!(ta, tb);
    }
}
