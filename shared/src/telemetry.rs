//! One telemetry set-up for every service, and W3C trace context carried in NATS
//! and HTTP headers.
//!
//! A trace started by a webhook (or continued from its `traceparent`) keeps its id
//! through JetStream to the WebSocket event. Every span that handles a payment
//! declares a `trace_id` field, recorded with [`record_trace_id`], so each log line
//! carries it. When a collector is configured, spans are OpenTelemetry spans (via
//! `tracing-opentelemetry`) and are exported; when none is, spans only get their W3C
//! ids (`ids::TraceIdLayer`), because building OpenTelemetry spans that go nowhere
//! cost about a tenth of the busiest process's CPU.

mod export;
mod ids;
mod tally;

use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanBuilder, SpanContext, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{LevelFilter, filter_fn};
use tracing_subscriber::layer::{Layer as _, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogFormat, Settings};

pub use export::{ExportError, TraceExport};
pub use tally::{Summary, Tally};

/// The W3C header that carries trace context.
pub const TRACEPARENT: &str = "traceparent";

/// The exporting provider; unset when nothing is exported.
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();
/// The name spans are recorded under (the service's, or `paytrack` in one process).
static SERVICE: OnceLock<&'static str> = OnceLock::new();
/// Whether the installed provider exports spans (set once, at install).
static EXPORTING: AtomicBool = AtomicBool::new(false);

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
/// The filter is a per-layer filter of the log output only. The span layer (the
/// OpenTelemetry one, or the trace-id one when nothing is exported) keeps every span
/// of paytrack's crates whatever the log level: a span the log filter disables would
/// otherwise have no trace context, and the trace id persisted with a transition (and
/// sent on the WebSocket) would be zeros at `warn`.
pub fn init_with_filter(service: &'static str, sink: LogSink, default_filter: &str) {
    // No export: building the provider cannot fail.
    let _ = init_with(service, sink, default_filter, &TraceExport::default());
}

/// A service binary's set-up: logs to stdout in the settings' format, spans exported
/// over OTLP when the settings or the standard `OTEL_*` variables name a collector
/// (see [`TraceExport::resolve`]). Call [`shutdown`] before the process exits, so the
/// last spans are sent.
pub fn init_service(service: &'static str, settings: &Settings) -> Result<(), ExportError> {
    let export = TraceExport::resolve(settings.otlp_endpoint.as_deref());
    init_with(service, LogSink::Stdout(settings.log_format), "info", &export)
}

/// [`init_with_filter`] with spans exported as `export` says. Fails (and installs
/// nothing) when the exporter cannot be built; later calls are no-ops.
pub fn init_with(
    service: &'static str,
    sink: LogSink,
    default_filter: &str,
    export: &TraceExport,
) -> Result<(), ExportError> {
    // Only the first call builds a subscriber. Building another one, even one that is
    // never installed, registers a dispatcher and recomputes every callsite's
    // interest, which leaves the installed per-layer filters with stale decisions.
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    if INSTALLED.is_completed() {
        return Ok(());
    }
    let provider = export.provider(service)?;
    INSTALLED.call_once(|| {
        EXPORTING.store(export.is_on(), Ordering::Relaxed);
        install(service, provider, sink, default_filter);
    });
    Ok(())
}

/// Whether spans leave the process (an OTLP collector is configured). Code that
/// would record a span per message only for export asks this first.
pub fn exports_traces() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Sends the spans still buffered and stops the exporter; call once, as the process
/// ends.
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get()
        && let Err(error) = provider.shutdown()
    {
        tracing::warn!(%error, "spans not flushed at shutdown");
    }
}

/// Records a finished span whose own context is `traceparent` (a W3C header value
/// made elsewhere, such as a checkpoint's, derived from its version so that a
/// re-publication carries the same one), as a child of `parent`. Messages that carry
/// such a header then have a real parent span in the exported trace. Nothing is
/// recorded when `traceparent` is malformed.
pub fn record_span_as(name: &'static str, traceparent: &str, parent: &Span, attributes: &[(&'static str, &str)]) {
    let Some(provider) = PROVIDER.get() else {
        return;
    };
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), traceparent.to_owned())]);
    let own = TraceContextPropagator::new().extract(&carrier);
    let own = own.span().span_context().clone();
    if !own.is_valid() {
        return;
    }
    let tracer = provider.tracer(SERVICE.get().copied().unwrap_or("paytrack"));
    let builder = SpanBuilder::from_name(name)
        .with_trace_id(own.trace_id())
        .with_span_id(own.span_id())
        .with_attributes(
            attributes
                .iter()
                .map(|(key, value)| opentelemetry::KeyValue::new(*key, (*value).to_owned())),
        );
    let mut span = tracer.build_with_context(builder, &parent.context());
    opentelemetry::trace::Span::end(&mut span);
}

fn install(service: &'static str, provider: SdkTracerProvider, sink: LogSink, default_filter: &str) {
    let _ = SERVICE.set(service);
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    // Exactly one of the two span layers: OpenTelemetry spans when they are exported,
    // bare trace ids when they are not.
    let (otel, ids) = if exports_traces() {
        let provider = PROVIDER.get_or_init(|| provider);
        (
            Some(tracing_opentelemetry::layer().with_tracer(provider.tracer(service))),
            None,
        )
    } else {
        (None, Some(ids::TraceIdLayer::new()))
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    // A global gate lets through what the log filter may want (up to its most
    // verbose level) and every span of paytrack's crates, whatever its level: the
    // span layer is not filtered further, the log output is (per layer).
    let verbosest = filter.max_level_hint().unwrap_or(LevelFilter::TRACE);
    let gate =
        filter_fn(move |meta| (meta.is_span() && meta.target().starts_with("paytrack")) || verbosest >= *meta.level());
    let registry = tracing_subscriber::registry().with(gate).with(otel).with(ids);
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

/// The span's trace id as 32 hex digits (zeros when no subscriber tracks spans).
pub fn trace_id(span: &Span) -> String {
    span_context(span).trace_id().to_string()
}

/// The span's W3C identity, from whichever span layer is installed.
fn span_context(span: &Span) -> SpanContext {
    if exports_traces() {
        span.context().span().span_context().clone()
    } else {
        ids::span_context(span).unwrap_or_else(SpanContext::empty_context)
    }
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
    let incoming = parent.span().span_context().clone();
    if !incoming.is_valid() {
        return;
    }
    if exports_traces() {
        let _ = span.set_parent(parent);
    } else {
        ids::set_parent(span, incoming.trace_id());
    }
}

/// Writes `span`'s trace context into NATS headers.
pub fn inject_nats(span: &Span, headers: &mut async_nats::HeaderMap) {
    let mut carrier = HashMap::new();
    let context = if exports_traces() {
        span.context()
    } else {
        opentelemetry::Context::new().with_remote_span_context(span_context(span))
    };
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
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

    /// Whether the installed subscriber built `span` as an OpenTelemetry span.
    fn is_opentelemetry_span(span: &Span) -> bool {
        use tracing_subscriber::registry::{LookupSpan as _, SpanData as _};
        span.with_subscriber(|(id, dispatch)| {
            dispatch
                .downcast_ref::<tracing_subscriber::Registry>()
                .and_then(|r| r.span_data(id))
                .is_some_and(|d| d.extensions().get::<tracing_opentelemetry::OtelData>().is_some())
        })
        .unwrap_or(false)
    }

    #[test]
    fn no_opentelemetry_span_is_built_when_nothing_is_exported() {
        init_for_tests();
        assert!(!exports_traces());
        let span = tracing::info_span!("fact", trace_id = tracing::field::Empty);
        assert_eq!(record_trace_id(&span).len(), 32);
        assert!(!is_opentelemetry_span(&span));
    }

    #[test]
    fn a_span_inherits_its_parents_trace_and_gets_its_own_span_id() {
        init_for_tests();
        let parent = tracing::info_span!("parent");
        let explicit = tracing::info_span!(parent: &parent, "explicit");
        let contextual = parent.in_scope(|| tracing::info_span!("contextual"));
        assert_eq!(trace_id(&explicit), trace_id(&parent));
        assert_eq!(trace_id(&contextual), trace_id(&parent));

        let mut headers = async_nats::HeaderMap::new();
        inject_nats(&explicit, &mut headers);
        let mut other = async_nats::HeaderMap::new();
        inject_nats(&contextual, &mut other);
        let traceparent = |h: &async_nats::HeaderMap| h.get(TRACEPARENT).map(|v| v.as_str().to_owned());
        let (a, b) = (
            traceparent(&headers).unwrap_or_default(),
            traceparent(&other).unwrap_or_default(),
        );
        assert!(a.starts_with(&format!("00-{}-", trace_id(&parent))), "{a}");
        assert!(a.ends_with("-01"), "{a}");
        assert_ne!(a, b, "each span has its own span id");
    }

    #[test]
    fn a_malformed_traceparent_leaves_the_span_in_its_own_trace() {
        init_for_tests();
        let mut headers = http::HeaderMap::new();
        headers.insert(TRACEPARENT, http::HeaderValue::from_static("00-zz-00f067aa0ba902b7-01"));
        let span = tracing::info_span!("test");
        let before = trace_id(&span);
        continue_from(&span, &HttpHeaders(&headers));
        assert_eq!(trace_id(&span), before);
        assert_ne!(before, "0".repeat(32));
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
