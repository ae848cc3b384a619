//! With the log filter at `warn`, a webhook's trace id (from its `traceparent`) is
//! still persisted with its transition and carried on the WebSocket event: the log
//! filter decides which lines are written, never which spans carry trace context.
//!
//! Its own test binary, because it installs the process-wide subscriber.

use std::time::Duration;

use paytrack_shared::telemetry::{self, LogSink};
use paytrack_tests::Mesh;
use paytrack_tests::ws::WsClient;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_ids_survive_a_warn_log_filter() -> anyhow::Result<()> {
    // SAFETY of the test's premise: RUST_LOG would override the filter under test.
    anyhow::ensure!(std::env::var_os("RUST_LOG").is_none(), "unset RUST_LOG for this test");
    telemetry::init_with_filter("paytrack-test", LogSink::Discard, "warn");
    let mesh = Mesh::start().await?;
    let mut client = WsClient::connect(&mesh.ws_url(), &mesh.operator_token()).await?;
    client
        .send(json!({"type": "subscribe", "channel": "payment:pay_warn"}))
        .await?;
    client.next_of("subscribed", Duration::from_secs(60)).await?;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let body = Mesh::webhook_body("pay_warn", "pending", "m_1");
    let mut headers = mesh.sign("msg_warn_1", &body)?;
    headers.push(("traceparent".into(), format!("00-{trace_id}-00f067aa0ba902b7-01")));
    assert_eq!(mesh.post_webhook_with(&headers, &body).await?.status(), 200);

    let event = client.next_of("event", Duration::from_secs(60)).await?;
    assert_eq!(event["kind"], "transition", "{event}");
    assert_eq!(event["trace_id"], trace_id, "{event}");
    let (.., persisted) = mesh.wait_for_row("pay_warn", 1).await?;
    assert_eq!(persisted, trace_id);
    Ok(())
}
