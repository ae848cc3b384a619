//! A webhook's journey is one exported trace: ingest, the reconciler, the projector
//! and the edge's WebSocket delivery each send spans of it to an OTLP collector (a
//! receiver in this test process), and every span's parent is a span of the trace.
//!
//! Its own test binary, because it installs the process-wide subscriber with export.

use std::collections::HashSet;
use std::time::Duration;

use paytrack_shared::telemetry::{self, LogSink, TraceExport};
use paytrack_tests::Mesh;
use paytrack_tests::otlp::{OtlpReceiver, ReceivedSpan};
use paytrack_tests::ws::WsClient;
use serde_json::{Value, json};

/// The services whose spans the trace must hold, by the crate that records them.
const SERVICES: [(&str, &str); 4] = [
    ("ingest", "paytrack_ingest"),
    ("reconciler", "paytrack_reconciler"),
    ("projector", "paytrack_ledger_projector"),
    ("edge", "paytrack_ws_edge"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_runs_from_a_webhook_to_the_websocket_frame() -> anyhow::Result<()> {
    let receiver = OtlpReceiver::start().await?;
    telemetry::init_with(
        "paytrack-test",
        LogSink::Discard,
        "info",
        &TraceExport::to_collector(&receiver.url),
    )?;
    assert!(telemetry::exports_traces());
    let mesh = Mesh::start().await?;
    let mut client = WsClient::connect(&mesh.ws_url(), &mesh.operator_token()).await?;
    client
        .send(json!({"type": "subscribe", "channel": "payment:pay_otlp"}))
        .await?;
    client.next_of("subscribed", Duration::from_secs(60)).await?;

    // No traceparent: ingest starts the trace.
    let body = Mesh::webhook_body("pay_otlp", "pending", "m_1");
    assert_eq!(mesh.post_webhook("msg_otlp_1", &body).await?.status(), 200);
    let frame = client.next_of("event", Duration::from_secs(60)).await?;
    let trace_id = find_trace_id(&frame).ok_or_else(|| anyhow::anyhow!("no trace_id in the frame {frame}"))?;
    assert_eq!(trace_id.len(), 32, "{trace_id}");
    // The projector's checkpoint follows the transition on the channel.
    client.next_of("event", Duration::from_secs(60)).await?;

    let spans = mesh
        .eventually(Duration::from_secs(90), "the whole trace at the receiver", || async {
            let spans = receiver.trace(&trace_id);
            (SERVICES.iter().all(|(_, krate)| by(&spans, krate).is_some())
                && connected(&spans)
                && spans.iter().filter(|s| s.name == "deliver").count() >= 2)
                .then_some(spans)
        })
        .await
        .map_err(|error| {
            let got: Vec<_> = receiver
                .trace(&trace_id)
                .into_iter()
                .map(|s| (s.target().to_owned(), s.name, s.span_id, s.parent_span_id))
                .collect();
            error.context(format!("spans of {trace_id} received: {got:#?}"))
        })?;

    // One root (ingest's request), and the webhook's span under it.
    let roots: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.parent_span_id.is_empty()).collect();
    assert_eq!(roots.len(), 1, "one root span: {roots:#?}");
    assert!(roots[0].target().starts_with("paytrack_"), "{:?}", roots[0]);
    assert!(
        spans
            .iter()
            .any(|s| s.name == "webhook" && s.target().starts_with("paytrack_ingest"))
    );
    // The reconciler's decision, the projector's projection, the edge's delivery.
    assert!(spans.iter().any(|s| s.name == "reconcile"));
    assert!(spans.iter().any(|s| s.name == "project"));
    assert!(spans.iter().any(|s| s.name == "checkpoint"));
    // The edge delivers the transition as a child of the reconciler's span, and the
    // checkpoint as a child of the projector's.
    let span_of = |id: &str| spans.iter().find(|s| s.span_id == id);
    let delivered_under: HashSet<&str> = spans
        .iter()
        .filter(|s| s.name == "deliver")
        .filter_map(|s| span_of(&s.parent_span_id))
        .map(|parent| parent.name.as_str())
        .collect();
    assert!(delivered_under.contains("checkpoint"), "{delivered_under:?}");
    assert!(
        delivered_under.iter().any(|name| *name != "checkpoint"),
        "{delivered_under:?}"
    );
    assert!(spans.iter().all(|s| s.service == "paytrack-test"), "service.name");
    Ok(())
}

/// The first span recorded by `krate`.
fn by<'a>(spans: &'a [ReceivedSpan], krate: &str) -> Option<&'a ReceivedSpan> {
    spans
        .iter()
        .find(|s| s.target() == krate || s.target().starts_with(&format!("{krate}::")))
}

/// Whether every span's parent is a span of the trace (one tree, no dangling parent).
fn connected(spans: &[ReceivedSpan]) -> bool {
    let ids: HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    spans
        .iter()
        .all(|s| s.parent_span_id.is_empty() || ids.contains(s.parent_span_id.as_str()))
}

/// The first `trace_id` string anywhere in `value`.
fn find_trace_id(value: &Value) -> Option<String> {
    match value {
        Value::Object(map) => map
            .get("trace_id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| map.values().find_map(find_trace_id)),
        Value::Array(items) => items.iter().find_map(find_trace_id),
        _ => None,
    }
}
