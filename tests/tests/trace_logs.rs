//! The trace id of a webhook's `traceparent` is on every log line of its journey:
//! ingest, reconciler, projector and the edge's delivery.
//!
//! Its own test binary, because it installs the process-wide log subscriber.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use paytrack_shared::telemetry::{self, LogSink};
use paytrack_tests::Mesh;
use paytrack_tests::ws::WsClient;
use serde_json::{Value, json};
use tracing_subscriber::fmt::writer::BoxMakeWriter;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut inner) = self.0.lock() {
            inner.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_log_line_of_a_webhooks_journey_carries_its_trace_id() -> anyhow::Result<()> {
    let capture = Capture::default();
    let writer = capture.clone();
    telemetry::init_with_filter(
        "paytrack-test",
        LogSink::JsonTo(BoxMakeWriter::new(move || writer.clone())),
        "info,paytrack_ingest=debug,paytrack_reconciler=debug,paytrack_ws_edge=debug,paytrack_ledger_projector=debug",
    );
    let mesh = Mesh::start().await?;
    let mut client = WsClient::connect(&mesh.ws_url(), &mesh.operator_token()).await?;
    client
        .send(json!({"type": "subscribe", "channel": "payment:pay_trace"}))
        .await?;
    client.next_of("subscribed", Duration::from_secs(60)).await?;

    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let body = Mesh::webhook_body("pay_trace", "pending", "m_1");
    let mut headers = mesh.sign("msg_trace_1", &body)?;
    headers.push(("traceparent".into(), format!("00-{trace_id}-b7ad6b7169203331-01")));
    assert_eq!(mesh.post_webhook_with(&headers, &body).await?.status(), 200);
    client.next_of("event", Duration::from_secs(20)).await?;
    client.next_of("event", Duration::from_secs(20)).await?;
    mesh.wait_for_row("pay_trace", 1).await?;

    // The projector logs "transition persisted" (at debug) after publishing the checkpoint the
    // client already saw: wait for the last line of the journey, then read them all.
    let captured = || {
        let bytes = capture.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    paytrack_tests::eventually(Duration::from_secs(20), "the projector's log line", || async {
        captured().contains("transition persisted").then_some(())
    })
    .await?;
    let text = captured();
    let lines: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let of_payment: Vec<&Value> = lines
        .iter()
        .filter(|l| l["span"]["payment_id"] == "pay_trace" || l["span"]["channel"] == "payment:pay_trace")
        .collect();
    for line in &of_payment {
        assert_eq!(
            line["span"]["trace_id"], trace_id,
            "log line without the trace id: {line}"
        );
    }
    for message in [
        "webhook stored",
        "transition appended",
        "transition persisted",
        "event queued",
    ] {
        let line = of_payment.iter().find(|l| l["fields"]["message"] == message);
        let Some(line) = line else {
            panic!("no {message:?} line for the payment; lines: {of_payment:#?}");
        };
        // One line per message handled: at debug, so the default level writes per-batch
        // summaries instead of a line per transition.
        assert_eq!(line["level"], "DEBUG", "a per-transition line above debug: {line}");
    }
    Ok(())
}
