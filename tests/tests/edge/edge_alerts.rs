//! The `alerts` channel: a tenant's alerts (and their acknowledgements) delivered live
//! from PAYTRACK_ALERT over WebSocket and SSE, operators only, resumable by position.

use std::time::Duration;

use paytrack_tests::Mesh;
use paytrack_tests::sse::{Opened, SseClient};
use paytrack_tests::ws::WsClient;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

/// A late capture (failed, then succeeded) raises a `captured_after_failure` alert.
async fn raise_alert(mesh: &Mesh, payment: &str) -> anyhow::Result<()> {
    for (n, status) in ["failed", "succeeded"].into_iter().enumerate() {
        let body = Mesh::webhook_body(payment, status, "m_alerts");
        let response = mesh.post_webhook(&format!("{payment}-{n}"), &body).await?;
        anyhow::ensure!(
            response.status().is_success(),
            "webhook {status}: {}",
            response.status()
        );
    }
    Ok(())
}

/// The next event on `ws` that is an alert about `payment`.
async fn alert_about(ws: &mut WsClient, payment: &str) -> anyhow::Result<Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let event = ws.next_of("event", left).await?;
        if event["kind"] == "alert" && event["payment_id"] == payment {
            return Ok(event);
        }
    }
}

#[tokio::test]
async fn alerts_arrive_live_over_websocket_and_sse_and_resume_by_position() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let token = mesh.operator_token();
    let mut ws = WsClient::connect(&mesh.ws_url(), &token).await?;
    ws.next_of("welcome", WAIT).await?;
    ws.send(json!({"type": "subscribe", "channel": "alerts"})).await?;
    let subscribed = ws.next_of("subscribed", WAIT).await?;
    assert_eq!(subscribed["channel"], "alerts", "{subscribed}");

    let base = format!("http://{}", mesh.edge_addr);
    let mut sse = SseClient::connect(&base, "alerts", &token, None).await?;
    assert_eq!(sse.next_of("subscribed", WAIT).await?.data["channel"], "alerts");

    raise_alert(&mesh, "pay_alert_live").await?;
    let alert = alert_about(&mut ws, "pay_alert_live").await?;
    assert_eq!(alert["channel"], "alerts");
    assert_eq!(alert["kind"], "alert", "{alert}");
    assert_eq!(alert["alert_kind"], "captured_after_failure", "{alert}");
    assert!(alert["position"]["seq"].as_u64().is_some_and(|s| s > 0), "{alert}");

    let deadline = tokio::time::Instant::now() + WAIT;
    let over_sse = loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let event = sse.next(left).await?;
        if event.data["kind"] == "alert" && event.data["payment_id"] == "pay_alert_live" {
            break event;
        }
    };
    assert_eq!(over_sse.data["alert_kind"], "captured_after_failure");
    assert!(over_sse.id.is_some(), "an SSE alert carries its position as its id");

    // A resume from before the alert replays it, gap-free.
    let before = json!({"epoch": alert["position"]["epoch"], "seq": alert["prev_seq"]});
    let mut again = WsClient::connect(&mesh.ws_url(), &token).await?;
    again.next_of("welcome", WAIT).await?;
    again
        .send(json!({"type": "subscribe", "channel": "alerts", "since": before}))
        .await?;
    let resumed = again.next_of("subscribed", WAIT).await?;
    assert_eq!(resumed["recovered"], true, "{resumed}");
    let replayed = alert_about(&mut again, "pay_alert_live").await?;
    assert_eq!(replayed["position"], alert["position"]);
    Ok(())
}

#[tokio::test]
async fn the_alerts_channel_is_for_operators_only_and_another_tenant_sees_nothing() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    // A token limited to channels may not read the tenant's alerts.
    let scoped = mesh.scoped_token("user-1", &["user:user-1"]);
    let mut ws = WsClient::connect(&mesh.ws_url(), &scoped).await?;
    ws.next_of("welcome", WAIT).await?;
    ws.send(json!({"type": "subscribe", "channel": "alerts"})).await?;
    let refused = ws.next_of("error", WAIT).await?;
    assert_eq!(refused["code"], 4003, "{refused}");
    let base = format!("http://{}", mesh.edge_addr);
    match SseClient::open(&base, "alerts", Some(&scoped), None).await? {
        Opened::Refused(status, _) => assert_eq!(status, 403),
        Opened::Open(_) => anyhow::bail!("a scoped token opened the alerts channel over SSE"),
    }
    // Another tenant's operator does not see this tenant's alerts.
    let mut other = WsClient::connect(&mesh.ws_url(), &mesh.other_operator_token()).await?;
    other.next_of("welcome", WAIT).await?;
    other.send(json!({"type": "subscribe", "channel": "alerts"})).await?;
    other.next_of("subscribed", WAIT).await?;
    let mut mine = WsClient::connect(&mesh.ws_url(), &mesh.operator_token()).await?;
    mine.next_of("welcome", WAIT).await?;
    mine.send(json!({"type": "subscribe", "channel": "alerts"})).await?;
    mine.next_of("subscribed", WAIT).await?;
    raise_alert(&mesh, "pay_alert_private").await?;
    alert_about(&mut mine, "pay_alert_private").await?;
    // The other tenant's session got nothing but heartbeats meanwhile.
    match other.next_of("event", Duration::from_secs(2)).await {
        Ok(event) => anyhow::bail!("another tenant received {event}"),
        Err(_) => Ok(()),
    }
}
