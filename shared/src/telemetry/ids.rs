//! Trace ids without OpenTelemetry spans, for when nothing is exported.
//!
//! Building every span as an OpenTelemetry span (a span builder, its attributes, its
//! timings and events) only pays off when a collector receives them. Without one,
//! what paytrack still needs is the W3C identity: each span's trace id (for log
//! lines, the persisted transition and the WebSocket event) and its span id (the
//! parent a `traceparent` header names). [`TraceIdLayer`] keeps just that, in the
//! span's registry extensions: a child inherits its parent's trace id, a root gets a
//! fresh one, and [`set_parent`] moves a span into an incoming trace.

use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
use tracing::Span;
use tracing::span::{Attributes, Id};
use tracing_subscriber::Registry;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::{LookupSpan, SpanData};

/// A span's W3C identity, kept in its registry extensions.
#[derive(Debug, Clone, Copy)]
struct Ids {
    trace_id: TraceId,
    span_id: SpanId,
}

/// The layer that gives every span a trace id and a span id, and nothing else.
pub struct TraceIdLayer {
    generator: RandomIdGenerator,
}

impl TraceIdLayer {
    /// A layer drawing fresh ids from the SDK's random generator (the same ids an
    /// OpenTelemetry tracer would draw).
    pub fn new() -> TraceIdLayer {
        TraceIdLayer {
            generator: RandomIdGenerator::default(),
        }
    }
}

impl Default for TraceIdLayer {
    fn default() -> Self {
        TraceIdLayer::new()
    }
}

impl<S> Layer<S> for TraceIdLayer
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let parent = if let Some(parent) = attrs.parent() {
            ctx.span(parent)
        } else if attrs.is_contextual() {
            ctx.lookup_current()
        } else {
            None
        };
        let inherited = parent.and_then(|p| p.extensions().get::<Ids>().map(|ids| ids.trace_id));
        let ids = Ids {
            trace_id: inherited.unwrap_or_else(|| self.generator.new_trace_id()),
            span_id: self.generator.new_span_id(),
        };
        span.extensions_mut().insert(ids);
    }
}

/// `span`'s identity as an OpenTelemetry span context (sampled, as the SDK's default
/// sampler marks them), or `None` when the span is disabled or the layer absent.
pub fn span_context(span: &Span) -> Option<SpanContext> {
    let ids = span
        .with_subscriber(|(id, dispatch)| {
            let data = dispatch.downcast_ref::<Registry>()?.span_data(id)?;
            data.extensions().get::<Ids>().copied()
        })
        .flatten()?;
    Some(SpanContext::new(
        ids.trace_id,
        ids.span_id,
        TraceFlags::SAMPLED,
        false,
        TraceState::default(),
    ))
}

/// Moves `span` into the trace `trace_id` (its own span id is kept). Spans opened
/// under it afterwards inherit that trace.
pub fn set_parent(span: &Span, trace_id: TraceId) {
    span.with_subscriber(|(id, dispatch)| {
        if let Some(data) = dispatch.downcast_ref::<Registry>().and_then(|r| r.span_data(id))
            && let Some(ids) = data.extensions_mut().get_mut::<Ids>()
        {
            ids.trace_id = trace_id;
        }
    });
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    /// One fact's spans as the services open them: a root with payment fields, the
    /// trace id recorded into it, and a child.
    fn one_fact(i: u64) {
        let root = tracing::info_span!(
            "reconcile",
            trace_id = tracing::field::Empty,
            tenant = "t1",
            payment_id = i
        );
        root.record("trace_id", "0af7651916cd43dd8448eb211c80319c");
        let _child = root.in_scope(|| tracing::info_span!("append", seq = i));
    }

    /// Per-span CPU of the OpenTelemetry layer (nothing exported) against this layer's,
    /// measured back to back in one process. Ignored: it measures, it checks nothing;
    /// `cargo test -p paytrack-shared --lib ids::tests -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement; run explicitly"]
    fn span_cost_with_and_without_opentelemetry() {
        const FACTS: u64 = 200_000;
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let otel = tracing::Dispatch::new(
            tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("measure"))),
        );
        let ids = tracing::Dispatch::new(tracing_subscriber::registry().with(TraceIdLayer::new()));
        let bare = tracing::Dispatch::new(tracing_subscriber::registry());
        let time = |dispatch: &tracing::Dispatch| {
            tracing::dispatcher::with_default(dispatch, || {
                let started = Instant::now();
                (0..FACTS).for_each(one_fact);
                started.elapsed().as_secs_f64() * 1e9 / FACTS as f64
            })
        };
        for round in 0..3 {
            let (o, i, b) = (time(&otel), time(&ids), time(&bare));
            eprintln!(
                "round {round}: ns per fact (2 spans): opentelemetry {o:.0}, trace ids {i:.0}, registry alone {b:.0}"
            );
        }
    }
}
