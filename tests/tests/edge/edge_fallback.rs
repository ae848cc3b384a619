//! ws-edge's other ways in and out: the Server-Sent Events fallback on the same core as
//! the WebSocket, a client moving to a second edge when its edge stops, and a `user:`
//! resume after PAYTRACK_PUSH's history aged out.

use paytrack_tests::continuity::{chain, stream_seqs};
use std::time::Duration;

use anyhow::Context;
use paytrack_shared::subjects;
use paytrack_tests::mesh::MeshOptions;
use paytrack_tests::sse::{Opened, SseClient};
use paytrack_tests::ws::WsClient;
use paytrack_tests::{Mesh, eventually};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

/// Publishes `count` pushes to `user` (interleaved with another user's) as the admin.
fn publish_pushes(mesh: &Mesh, user: &str, count: u64) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    let js = mesh.js.clone();
    let tenant = mesh.tenant.clone();
    let user = user.to_owned();
    tokio::spawn(async move {
        for n in 0..count {
            for to in [user.as_str(), "u_other"] {
                let subject = format!("paytrack.push.{tenant}.{to}.all");
                js.publish(subject, json!({"type": "note", "n": n}).to_string().into())
                    .await?
                    .await?;
            }
        }
        Ok(())
    })
}

fn edge_base(mesh: &Mesh) -> String {
    format!("http://{}", mesh.edge_addr)
}

/// An SSE client follows a channel while events are published; then an SSE resume
/// with `Last-Event-ID` from a mid position and a WebSocket resume with the same
/// `since` yield exactly the same events (seqs and bodies), which are the stream's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sse_resume_yields_exactly_what_a_websocket_resume_does() -> anyhow::Result<()> {
    const EVENTS: u64 = 200;
    const MID: usize = 79;
    let mesh = Mesh::start_with(MeshOptions {
        edge_ring_messages: 32,
        ..MeshOptions::quiet()
    })
    .await?;
    let token = mesh.jwt.mint("u_sse", &mesh.tenant, 600, None, None);
    let mut follower = SseClient::connect(&edge_base(&mesh), "user:u_sse", &token, None).await?;
    let subscribed = follower.next_of("subscribed", WAIT).await?;
    assert_eq!(subscribed.data["type"], "subscribed");
    assert_eq!(subscribed.data["channel"], "user:u_sse");
    let start = subscribed.data["position"]["seq"].as_u64().context("position")?;

    let publisher = publish_pushes(&mesh, "u_sse", EVENTS);
    let mut followed = Vec::new();
    let mut ids = Vec::new();
    while (followed.len() as u64) < EVENTS {
        let event = follower.next_of("message", WAIT).await?;
        ids.push(event.id.clone().context("every event has an id")?);
        followed.push(event.data);
    }
    publisher.await??;
    drop(follower);
    let seqs = chain(start, &followed);
    let filter = format!("paytrack.push.{}.u_sse.>", mesh.tenant);
    assert_eq!(seqs, stream_seqs(&mesh.js, subjects::STREAM_PUSH, &filter).await?);
    for (id, event) in ids.iter().zip(&followed) {
        assert_eq!(event["type"], "event");
        let position = &event["position"];
        assert_eq!(
            *id,
            format!("{}:{}", position["epoch"].as_str().unwrap_or_default(), position["seq"])
        );
    }

    // Resume both transports from the same mid position.
    let since = followed[MID]["position"].clone();
    let mut sse = SseClient::connect(&edge_base(&mesh), "user:u_sse", &token, Some(&ids[MID])).await?;
    let sse_subscribed = sse.next_of("subscribed", WAIT).await?;
    let mut ws = WsClient::connect(&mesh.ws_url(), &token).await?;
    ws.send(json!({"type": "subscribe", "channel": "user:u_sse", "since": since}))
        .await?;
    let ws_subscribed = ws.next_of("subscribed", WAIT).await?;
    assert_eq!(sse_subscribed.data, ws_subscribed);
    assert_eq!(ws_subscribed["recovered"], true);
    assert_eq!(ws_subscribed["position"], since);
    let rest = followed.len() - MID - 1;
    let mut from_sse = Vec::new();
    let mut from_ws = Vec::new();
    for _ in 0..rest {
        from_sse.push(sse.next_of("message", WAIT).await?.data);
        from_ws.push(ws.next_of("event", WAIT).await?);
    }
    assert_eq!(from_sse, from_ws, "the same events, byte for byte as JSON");
    assert_eq!(from_sse, followed[MID + 1..].to_vec());
    Ok(())
}

/// The SSE fallback follows the WebSocket's token and channel rules before any stream
/// exists, heartbeats as `event: heartbeat`, and its session is audited and counted
/// as transport `sse`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_refuses_like_the_websocket_and_is_its_own_transport() -> anyhow::Result<()> {
    let mesh = Mesh::start_with(MeshOptions {
        heartbeat_ms: 300,
        ..MeshOptions::default()
    })
    .await?;
    let base = edge_base(&mesh);
    let refused = |opened: Opened| match opened {
        Opened::Refused(status, body) => (status, body["code"].as_str().unwrap_or_default().to_owned()),
        Opened::Open(_) => (200, String::new()),
    };
    // A token whose signature does not verify.
    let bad = format!("{}x", mesh.operator_token());
    assert_eq!(refused(SseClient::open(&base, "payments", None, None).await?).0, 401);
    assert_eq!(
        refused(SseClient::open(&base, "payments", Some("not-a-jwt"), None).await?).0,
        401
    );
    assert_eq!(
        refused(SseClient::open(&base, "payments", Some(&bad), None).await?).0,
        401
    );
    let scoped = mesh.scoped_token("u1", &["payment:pay_mine"]);
    assert_eq!(
        refused(SseClient::open(&base, "payments", Some(&scoped), None).await?),
        (403, "forbidden".to_owned())
    );
    let operator = mesh.operator_token();
    assert_eq!(
        refused(SseClient::open(&base, "nonsense:x", Some(&operator), None).await?).0,
        400
    );
    assert_eq!(
        refused(SseClient::open(&base, "payments", Some(&operator), Some("garbage")).await?).0,
        400
    );

    let url = format!("{base}/v1/sse?token={operator}&channel=payments");
    let response = reqwest::get(&url).await?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"].to_str()?, "text/event-stream");
    let session_id = response.headers()["x-session-id"].to_str()?.to_owned();
    drop(response);
    let mut client = SseClient::connect(&base, "payments", &operator, None).await?;
    let subscribed = client.next(WAIT).await?;
    assert_eq!(subscribed.event, "subscribed");
    let position = &subscribed.data["position"];
    assert_eq!(
        subscribed.id.as_deref(),
        Some(format!("{}:{}", position["epoch"].as_str().unwrap_or_default(), position["seq"]).as_str())
    );
    let heartbeat = client.next(WAIT).await?;
    assert_eq!(heartbeat.event, "heartbeat");
    assert_eq!(heartbeat.data["positions"]["payments"], *position);
    assert_eq!(heartbeat.data["live"], true);
    let (_, metrics) = mesh.scrape().await?;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("paytrack_edge_sessions_open{transport=\"sse\"") && !l.ends_with(" 0")),
        "sse sessions are counted apart: {metrics}"
    );

    // The first session (dropped at once) is audited as an SSE session, closed.
    eventually(WAIT, "the SSE session's audit", || async {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT transport, kind FROM session_audit WHERE tenant = $1 AND session_id = $2 ORDER BY session_seq",
        )
        .bind(mesh.tenant.as_str())
        .bind(&session_id)
        .fetch_all(&mesh.db)
        .await
        .ok()?;
        let kinds: Vec<&str> = rows.iter().map(|(_, k)| k.as_str()).collect();
        (rows.iter().all(|(t, _)| t == "sse") && kinds == ["open", "subscribe", "close"]).then_some(())
    })
    .await?;
    Ok(())
}

/// A client following a channel on edge A moves to edge B when A stops (its session
/// gets 1012) and resumes there with `since` = the last position it saw, while events
/// keep flowing: its timeline equals the stream's exactly, no gap, no duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_moves_to_a_second_edge_when_its_edge_stops_and_misses_nothing() -> anyhow::Result<()> {
    const EVENTS: u64 = 600;
    let mesh = Mesh::start_with(MeshOptions::quiet()).await?;
    let a = mesh.start_edge(&format!("{}-a", mesh.edge_id)).await?;
    let b = mesh.start_edge(&format!("{}-b", mesh.edge_id)).await?;
    let token = mesh.jwt.mint("u_fo", &mesh.tenant, 600, None, None);
    let mut client = WsClient::connect(&a.ws_url(), &token).await?;
    client
        .send(json!({"type": "subscribe", "channel": "user:u_fo"}))
        .await?;
    let start = client.next_of("subscribed", WAIT).await?["position"]["seq"]
        .as_u64()
        .context("position")?;

    // Paced, so edge A stops and the client resumes while the stream still grows.
    let js = mesh.js.clone();
    let tenant = mesh.tenant.clone();
    let publisher = tokio::spawn(async move {
        for n in 0..EVENTS {
            for to in ["u_fo", "u_other"] {
                let subject = format!("paytrack.push.{tenant}.{to}.all");
                js.publish(subject, json!({"type": "note", "n": n}).to_string().into())
                    .await?
                    .await?;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok::<_, anyhow::Error>(())
    });

    let mut timeline = Vec::new();
    while timeline.len() < 150 {
        timeline.push(client.next_of("event", WAIT).await?);
    }
    let stopping = tokio::spawn(a.stop());
    let code = loop {
        match client.next_or_close(WAIT).await? {
            Ok(message) if message["type"] == "event" => timeline.push(message),
            Ok(_) => {}
            Err(code) => break code,
        }
    };
    assert_eq!(code, 1012, "a stopping edge tells its sessions to reconnect elsewhere");
    stopping.await??;

    let since = timeline.last().context("events before the stop")?["position"].clone();
    let mut moved = WsClient::connect(&b.ws_url(), &token).await?;
    moved
        .send(json!({"type": "subscribe", "channel": "user:u_fo", "since": since}))
        .await?;
    let resumed = moved.next_of("subscribed", WAIT).await?;
    assert_eq!(resumed["recovered"], true);
    assert_eq!(resumed["position"], since);
    while (timeline.len() as u64) < EVENTS {
        timeline.push(moved.next_of("event", WAIT).await?);
    }
    publisher.await??;

    let seqs = chain(start, &timeline);
    let filter = format!("paytrack.push.{}.u_fo.>", mesh.tenant);
    assert_eq!(seqs, stream_seqs(&mesh.js, subjects::STREAM_PUSH, &filter).await?);
    let ns: Vec<u64> = timeline.iter().filter_map(|e| e["n"].as_u64()).collect();
    assert_eq!(ns, (0..EVENTS).collect::<Vec<_>>());
    Ok(())
}

/// A `user:` resume whose `since` is older than PAYTRACK_PUSH's first retained message
/// (the pushes after it were purged) is answered `recovered: false` with the explicit
/// push snapshot `{"missed": true}` (pushes have no state to reload), on both
/// transports; the channel continues from its latest position. A `since` still
/// retained resumes gap-free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_resume_after_push_history_aged_out_is_not_recovered() -> anyhow::Result<()> {
    let mesh = Mesh::start_with(MeshOptions {
        edge_ring_messages: 4,
        ..MeshOptions::quiet()
    })
    .await?;
    let token = mesh.jwt.mint("u_old", &mesh.tenant, 600, None, None);
    let mut fresh = WsClient::connect(&mesh.ws_url(), &token).await?;
    fresh
        .send(json!({"type": "subscribe", "channel": "user:u_old"}))
        .await?;
    let epoch = fresh.next_of("subscribed", WAIT).await?["position"]["epoch"].clone();
    drop(fresh);
    publish_pushes(&mesh, "u_old", 20).await??;
    let filter = format!("paytrack.push.{}.u_old.>", mesh.tenant);
    let seqs = stream_seqs(&mesh.js, subjects::STREAM_PUSH, &filter).await?;
    assert_eq!(seqs.len(), 20);
    // History ages out: everything before the user's 11th push is gone.
    mesh.js
        .get_stream(subjects::STREAM_PUSH)
        .await?
        .purge()
        .sequence(seqs[10])
        .await?;

    let since = json!({"epoch": epoch, "seq": seqs[2]});
    let mut ws = WsClient::connect(&mesh.ws_url(), &token).await?;
    ws.send(json!({"type": "subscribe", "channel": "user:u_old", "since": since}))
        .await?;
    let subscribed = ws.next_of("subscribed", WAIT).await?;
    assert_eq!(subscribed["recovered"], false, "{subscribed}");
    assert_eq!(subscribed["snapshot"], json!({"missed": true}));
    assert_eq!(subscribed["position"]["seq"], seqs[19]);
    let id = format!("{}:{}", epoch.as_str().unwrap_or_default(), seqs[2]);
    let mut sse = SseClient::connect(&edge_base(&mesh), "user:u_old", &token, Some(&id)).await?;
    assert_eq!(sse.next_of("subscribed", WAIT).await?.data, subscribed);
    // The channel continues from its latest position.
    publish_pushes(&mesh, "u_old", 1).await??;
    let next = ws.next_of("event", WAIT).await?;
    assert_eq!(next["prev_seq"], seqs[19]);
    assert_eq!(sse.next_of("message", WAIT).await?.data, next);

    // Still retained: gap-free, from JetStream (the ring holds 4 messages).
    let since = json!({"epoch": epoch, "seq": seqs[12]});
    let mut kept = WsClient::connect(&mesh.ws_url(), &token).await?;
    kept.send(json!({"type": "subscribe", "channel": "user:u_old", "since": since}))
        .await?;
    assert_eq!(kept.next_of("subscribed", WAIT).await?["recovered"], true);
    let mut resumed = Vec::new();
    for _ in 13..20 {
        resumed.push(kept.next_of("event", WAIT).await?);
    }
    assert_eq!(chain(seqs[12], &resumed), seqs[13..].to_vec());
    Ok(())
}
