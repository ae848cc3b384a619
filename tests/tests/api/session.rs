//! Session lifecycle: heartbeats prove liveness both ways, and a token's expiry ends
//! the session with the contract's close codes.

use std::time::Duration;

use paytrack_tests::Mesh;
use paytrack_tests::mesh::MeshOptions;
use paytrack_tests::ws::WsClient;
use serde_json::json;

fn fast_heartbeats() -> MeshOptions {
    MeshOptions {
        heartbeat_ms: 200,
        ..MeshOptions::default()
    }
}

/// A client that answers heartbeats stays; one that goes silent is closed with 4000.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_closed_and_a_pinging_one_stays() -> anyhow::Result<()> {
    let mesh = Mesh::start_with(fast_heartbeats()).await?;
    let mut pinging = WsClient::connect(&mesh.ws_url(), &mesh.operator_token()).await?;
    let mut silent = WsClient::connect(&mesh.ws_url(), &mesh.operator_token()).await?;
    let welcome = pinging.next_of("welcome", Duration::from_secs(5)).await?;
    assert_eq!(welcome["heartbeat_ms"], 200);

    // Keep one client talking, a ping per 150 ms, until the silent one is closed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let code = loop {
        pinging.send(json!({"type": "ping"})).await?;
        pinging.next_of("pong", Duration::from_secs(5)).await?;
        if let Ok(code) = silent.closed(Duration::from_millis(150)).await {
            break code;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the silent client was never closed"
        );
    };
    assert_eq!(code, 4000);
    pinging.send(json!({"type": "ping"})).await?;
    pinging.next_of("pong", Duration::from_secs(5)).await?;
    Ok(())
}

/// A token that expires during the session closes it with 4001.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_closes_the_session_with_4001() -> anyhow::Result<()> {
    let mesh = Mesh::start_with(fast_heartbeats()).await?;
    let token = mesh.jwt.mint("short-lived", &mesh.tenant, 1, None, None);
    let mut client = WsClient::connect(&mesh.ws_url(), &token).await?;
    // Keep the session alive with a ping per 100 ms until the edge closes it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let code = loop {
        if client.send(json!({"type": "ping"})).await.is_err() {
            break client.closed(Duration::from_secs(5)).await?;
        }
        if let Ok(code) = client.closed(Duration::from_millis(100)).await {
            break code;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the session outlived its token");
    };
    assert_eq!(code, 4001);
    Ok(())
}

/// Shutting the edge down closes open sessions with 1012 so clients reconnect
/// elsewhere, instead of leaving them to time out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_sessions_with_1012() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let mut client = WsClient::connect(&mesh.ws_url(), &mesh.operator_token()).await?;
    client.next_of("welcome", Duration::from_secs(5)).await?;
    mesh.shut_down_services();
    assert_eq!(client.closed(Duration::from_secs(5)).await?, 1012);
    Ok(())
}

/// Every session is audited and stored: open, each subscribe with its outcome, denied
/// channels, and the close with its code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_audited_in_postgres() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let token = mesh.scoped_token("user-audit", &["payment:pay_aud"]);
    let mut client = WsClient::connect(&mesh.ws_url(), &token).await?;
    let welcome = client.next_of("welcome", Duration::from_secs(5)).await?;
    let session_id = welcome["session_id"].as_str().unwrap_or_default().to_owned();
    client
        .send(json!({"type": "subscribe", "channel": "payment:pay_aud"}))
        .await?;
    client.next_of("subscribed", Duration::from_secs(5)).await?;
    client.send(json!({"type": "subscribe", "channel": "payments"})).await?;
    client.next_of("error", Duration::from_secs(5)).await?;
    drop(client);

    let rows = paytrack_tests::eventually(Duration::from_secs(20), "four audit rows", || async {
        let rows: Vec<(String, Option<String>, serde_json::Value)> = sqlx::query_as(
            "SELECT kind, channel, detail FROM session_audit WHERE tenant = $1 AND session_id = $2 ORDER BY session_seq",
        )
        .bind(mesh.tenant.as_str())
        .bind(&session_id)
        .fetch_all(&mesh.db)
        .await
        .ok()?;
        (rows.len() == 4).then_some(rows)
    })
    .await?;
    let kinds: Vec<_> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(kinds, ["open", "subscribe", "denied", "close"]);
    assert_eq!(rows[0].2["scope"], json!(["payment:pay_aud"]));
    assert_eq!(rows[1].1.as_deref(), Some("payment:pay_aud"));
    assert_eq!(rows[1].2["recovered"], false);
    assert_eq!(rows[2].2["code"], 4003);
    assert_eq!(rows[3].2["kind"], "close");
    Ok(())
}
