//! ws-edge at scale: one fan-out per edge whatever its sessions, resume from any
//! retained point with an exact timeline, snapshots when continuity cannot be proven,
//! slow clients closed with 4008, tokens closed at `exp`, and a drain that audits every
//! close before the edge stops.

use paytrack_tests::continuity::{chain, stream_seqs};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_nats::jetstream::{self, consumer};
use futures::{StreamExt, TryStreamExt};
use paytrack_shared::envelope::{self, Checkpoint, CheckpointKind, ENVELOPE_VERSION, SessionAudit, SessionEvent};
use paytrack_shared::status::Status;
use paytrack_shared::{MerchantId, PaymentId, TenantId, subjects};
use paytrack_tests::mesh::MeshOptions;
use paytrack_tests::ws::WsClient;
use paytrack_tests::{Mesh, eventually};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

async fn status_consumers(js: &jetstream::Context) -> anyhow::Result<usize> {
    let mut stream = js.get_stream(subjects::STREAM_STATUS).await?;
    Ok(stream.info().await?.state.consumer_count)
}

/// A checkpoint of `payment` published straight to PAYTRACK_STATUS (nothing but the
/// edge consumes checkpoint subjects); returns its sequence.
async fn checkpoint(
    js: &jetstream::Context,
    tenant: &TenantId,
    merchant: &str,
    payment: &str,
    version: u64,
) -> anyhow::Result<jetstream::context::PublishAckFuture> {
    let (merchant, payment) = (MerchantId::new(merchant)?, PaymentId::new(payment)?);
    let record = Checkpoint {
        v: ENVELOPE_VERSION,
        checkpoint: CheckpointKind::Persisted,
        tenant: tenant.clone(),
        merchant_id: merchant.clone(),
        payment_id: payment.clone(),
        version,
        status: Status::Pending,
        recorded_at: chrono::Utc::now(),
        trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
        is_final: false,
    };
    Ok(js
        .publish(
            subjects::checkpoint(tenant, &merchant, &payment),
            envelope::encode(&record),
        )
        .await?)
}

async fn subscribe(url: &str, token: &str, channel: &str) -> anyhow::Result<(WsClient, Value)> {
    let mut client = WsClient::connect(url, token).await?;
    client.send(json!({"type": "subscribe", "channel": channel})).await?;
    let subscribed = client.next_of("subscribed", WAIT).await?;
    Ok((client, subscribed))
}

/// This process's resident memory (the edge and the test clients together).
fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

fn open_files_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(u64::MAX)
}

/// Sessions that subscribe a wide channel of a fresh edge all at once share one read
/// of its position: one `STREAM.MSG.GET` of PAYTRACK_STATUS for `payments`, not one
/// per session (each such read scans the stream's subjects; thousands of them at
/// once kept nats-server saturated and every read timing out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_joining_a_wide_channel_at_once_read_its_position_once() -> anyhow::Result<()> {
    const SESSIONS: usize = 64;
    let mesh = Mesh::start_with(MeshOptions::quiet()).await?;
    let admin = mesh.nats.admin_client().await?;
    let mut reads = admin
        .subscribe(format!("$JS.API.STREAM.MSG.GET.{}", subjects::STREAM_STATUS))
        .await?;
    admin.flush().await?;
    let (url, operator) = (mesh.ws_url(), mesh.operator_token());
    let clients: Vec<WsClient> = futures::stream::iter(0..SESSIONS)
        .map(|_| {
            let (url, token) = (url.clone(), operator.clone());
            async move { WsClient::connect(&url, &token).await }
        })
        .buffer_unordered(SESSIONS)
        .try_collect()
        .await?;
    // Every session asks at once, then each waits for its answer.
    let mut clients = clients;
    for client in &mut clients {
        client.send(json!({"type": "subscribe", "channel": "payments"})).await?;
    }
    for client in &mut clients {
        let subscribed = client.next_of("subscribed", WAIT).await?;
        assert_eq!(subscribed["channel"], "payments", "{subscribed}");
    }
    admin.flush().await?;
    let mut payments_reads = 0;
    while let Ok(Some(request)) = tokio::time::timeout(Duration::from_millis(500), reads.next()).await {
        let body = String::from_utf8_lossy(&request.payload);
        if body.contains(&subjects::tenant_messages(&mesh.tenant)) {
            payments_reads += 1;
        }
    }
    assert!(
        (1..=3).contains(&payments_reads),
        "{SESSIONS} sessions joining `payments` read its position {payments_reads} times"
    );
    Ok(())
}

/// 3,000 sessions on distinct `payment:` channels and 500 on `payments` (of another
/// tenant) against one edge: every one is subscribed and gets its events, and the
/// edge's JetStream consumers are exactly those of an idle edge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_subscriptions_share_the_edges_two_consumers() -> anyhow::Result<()> {
    const PAYMENT_SESSIONS: usize = 3_000;
    const WIDE_SESSIONS: usize = 500;
    const WIDE_EVENTS: u64 = 5;
    // Two descriptors per session (client and server side) plus the mesh's own.
    let needed = 2 * (PAYMENT_SESSIONS + WIDE_SESSIONS) as u64 + 500;
    if open_files_limit() < needed {
        bail!("this test needs `ulimit -n` >= {needed}, it is {}", open_files_limit());
    }
    let mesh = Mesh::start_with(MeshOptions::quiet()).await?;
    // The idle edge's consumers: its STATUS feed, plus the projector's durable one.
    let idle = eventually(WAIT, "idle consumers", || async {
        status_consumers(&mesh.js).await.ok().filter(|n| *n >= 2)
    })
    .await?;

    let rss_before = resident_kib();
    let started = Instant::now();
    let url = mesh.ws_url();
    let operator = mesh.operator_token();
    let wide_tenant = TenantId::new(&format!("{}w", mesh.tenant))?;
    let wide_token = mesh.jwt.mint("operator-w", &wide_tenant, 600, None, None);
    let mut payment_clients: Vec<(usize, WsClient)> = futures::stream::iter(0..PAYMENT_SESSIONS)
        .map(|i| {
            let (url, token) = (url.clone(), operator.clone());
            async move {
                let (client, subscribed) = subscribe(&url, &token, &format!("payment:pay_f{i}")).await?;
                anyhow::ensure!(subscribed["channel"] == format!("payment:pay_f{i}"));
                Ok::<_, anyhow::Error>((i, client))
            }
        })
        .buffer_unordered(64)
        .try_collect()
        .await?;
    let mut wide_clients: Vec<WsClient> = futures::stream::iter(0..WIDE_SESSIONS)
        .map(|_| {
            let (url, token) = (url.clone(), wide_token.clone());
            async move { Ok::<_, anyhow::Error>(subscribe(&url, &token, "payments").await?.0) }
        })
        .buffer_unordered(64)
        .try_collect()
        .await?;
    let opened = started.elapsed();
    let per_session = (resident_kib().saturating_sub(rss_before)) / (PAYMENT_SESSIONS + WIDE_SESSIONS) as u64;
    assert_eq!(
        payment_clients.len() + wide_clients.len(),
        PAYMENT_SESSIONS + WIDE_SESSIONS
    );
    assert_eq!(
        status_consumers(&mesh.js).await?,
        idle,
        "subscriptions must not create consumers"
    );

    // One event per payment channel, a few on the other tenant's wide channel.
    let published = Instant::now();
    let mut acks = Vec::new();
    for i in 0..PAYMENT_SESSIONS {
        acks.push(checkpoint(&mesh.js, &mesh.tenant, "m_fan", &format!("pay_f{i}"), 1).await?);
    }
    for n in 0..WIDE_EVENTS {
        acks.push(checkpoint(&mesh.js, &wide_tenant, "m_w", &format!("pay_w{n}"), 1).await?);
    }
    for ack in acks {
        ack.await?;
    }
    futures::stream::iter(payment_clients.iter_mut())
        .map(|(i, client)| async move {
            let event = client.next_of("event", WAIT).await?;
            anyhow::ensure!(event["payment_id"] == format!("pay_f{i}"), "{event}");
            Ok(())
        })
        .buffer_unordered(256)
        .try_collect::<Vec<()>>()
        .await?;
    futures::stream::iter(wide_clients.iter_mut())
        .map(|client| async move {
            let mut events = Vec::new();
            for _ in 0..WIDE_EVENTS {
                events.push(client.next_of("event", WAIT).await?);
            }
            chain(0, &events);
            anyhow::ensure!(events.iter().all(|e| e["merchant_id"] == "m_w"));
            Ok(())
        })
        .buffer_unordered(256)
        .try_collect::<Vec<()>>()
        .await?;
    let delivered = published.elapsed();
    assert_eq!(status_consumers(&mesh.js).await?, idle);
    eprintln!(
        "fan-out: {} sessions subscribed in {opened:?} (~{per_session} KiB resident each, client and server side); {} events to all of them in {delivered:?}; {idle} STATUS consumers throughout",
        PAYMENT_SESSIONS + WIDE_SESSIONS,
        PAYMENT_SESSIONS as u64 + WIDE_EVENTS,
    );
    Ok(())
}

async fn replays(mesh: &Mesh) -> anyhow::Result<u64> {
    let (_, edge) = mesh.scrape().await?;
    Ok(edge
        .lines()
        .find(|l| l.starts_with("paytrack_edge_replays_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or(0.0) as u64)
}

/// A client dropped in the middle of 1,000 events resumes with `since`, once from
/// JetStream (its position has left the edge's ring) while events keep coming, and
/// once from memory: each timeline equals the stream's exactly, no gap, no duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_mid_stream_sees_exactly_the_streams_events() -> anyhow::Result<()> {
    const EVENTS: u64 = 1_000;
    let mesh = Mesh::start_with(MeshOptions {
        edge_ring_messages: 64,
        ..MeshOptions::quiet()
    })
    .await?;
    let token = mesh.jwt.mint("u_res", &mesh.tenant, 600, None, None);
    let (mut first, subscribed) = subscribe(&mesh.ws_url(), &token, "user:u_res").await?;
    let start = subscribed["position"]["seq"].as_u64().unwrap_or_default();

    // Publish the channel's events interleaved with another user's, paced so the
    // resumes below happen while the stream is still growing.
    let js = mesh.js.clone();
    let tenant = mesh.tenant.clone();
    let publisher = tokio::spawn(async move {
        for n in 0..EVENTS {
            for user in ["u_res", "u_other"] {
                let subject = format!("paytrack.push.{tenant}.{user}.all");
                js.publish(subject, json!({"type": "note", "n": n}).to_string().into())
                    .await?
                    .await?;
            }
        }
        Ok::<_, anyhow::Error>(())
    });

    let mut timeline = Vec::new();
    for _ in 0..300 {
        timeline.push(first.next_of("event", WAIT).await?);
    }
    drop(first);
    let since = timeline[timeline.len() - 1]["position"].clone();
    let since_seq = since["seq"].as_u64().unwrap_or_default();
    // Let the stream move well past the ring before resuming.
    eventually(WAIT, "the stream to leave the ring behind", || async {
        let last = mesh
            .js
            .get_stream(subjects::STREAM_PUSH)
            .await
            .ok()?
            .info()
            .await
            .ok()?
            .state
            .last_sequence;
        (last > since_seq + 200).then_some(())
    })
    .await?;
    let replays_before = replays(&mesh).await?;
    let mut second = WsClient::connect(&mesh.ws_url(), &token).await?;
    second
        .send(json!({"type": "subscribe", "channel": "user:u_res", "since": since}))
        .await?;
    let resumed = second.next_of("subscribed", WAIT).await?;
    assert_eq!(resumed["recovered"], true);
    assert_eq!(resumed["position"], since);
    assert!(
        replays(&mesh).await? > replays_before,
        "an old position is read from JetStream"
    );
    while (timeline.len() as u64) < EVENTS - 100 {
        timeline.push(second.next_of("event", WAIT).await?);
    }
    // A second drop, resumed at once: its position is still in the ring.
    drop(second);
    let since = timeline[timeline.len() - 1]["position"].clone();
    let mut third = WsClient::connect(&mesh.ws_url(), &token).await?;
    third
        .send(json!({"type": "subscribe", "channel": "user:u_res", "since": since}))
        .await?;
    assert_eq!(third.next_of("subscribed", WAIT).await?["recovered"], true);
    while (timeline.len() as u64) < EVENTS {
        timeline.push(third.next_of("event", WAIT).await?);
    }
    publisher.await??;

    let seqs = chain(start, &timeline);
    let filter = format!("paytrack.push.{}.u_res.>", mesh.tenant);
    assert_eq!(seqs, stream_seqs(&mesh.js, subjects::STREAM_PUSH, &filter).await?);
    let ns: Vec<u64> = timeline.iter().filter_map(|e| e["n"].as_u64()).collect();
    assert_eq!(ns, (0..EVENTS).collect::<Vec<_>>());
    Ok(())
}

/// A `since` older than the stream's first retained message, or from another
/// incarnation of the stream, is answered `recovered: false` with the docs/contract.md §7
/// snapshot: the payment's state, or the REST list to reload for wide channels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unprovable_since_gets_recovered_false_and_a_snapshot() -> anyhow::Result<()> {
    let mesh = Mesh::start_with(MeshOptions {
        edge_ring_messages: 4,
        ..MeshOptions::quiet()
    })
    .await?;
    let token = mesh.operator_token();
    let (mut live, _) = subscribe(&mesh.ws_url(), &token, "payment:pay_old").await?;
    mesh.post_webhook("msg_old_1", &Mesh::webhook_body("pay_old", "pending", "m_old"))
        .await?;
    let first = live.next_of("event", WAIT).await?;
    mesh.post_webhook("msg_old_2", &Mesh::webhook_body("pay_old", "succeeded", "m_old"))
        .await?;
    mesh.wait_for_row("pay_old", 2).await?;
    // Push the payment's messages out of the edge's ring, then out of the stream.
    for n in 0..8 {
        checkpoint(&mesh.js, &mesh.tenant, "m_fill", &format!("pay_fill{n}"), 1)
            .await?
            .await?;
    }
    // The client last saw the message before the payment's first; that first message
    // is then purged, so nothing proves the client saw everything after `since`.
    let first_seq = first["position"]["seq"].as_u64().unwrap_or_default();
    let since = json!({"epoch": first["position"]["epoch"], "seq": first_seq - 1});
    let stream = mesh.js.get_stream(subjects::STREAM_STATUS).await?;
    stream.purge().sequence(first_seq + 1).await?;

    let mut client = WsClient::connect(&mesh.ws_url(), &token).await?;
    client
        .send(json!({"type": "subscribe", "channel": "payment:pay_old", "since": since}))
        .await?;
    let subscribed = client.next_of("subscribed", WAIT).await?;
    assert_eq!(subscribed["recovered"], false, "{subscribed}");
    assert_eq!(subscribed["snapshot"]["status"], "succeeded");
    assert_eq!(subscribed["snapshot"]["version"], 2);

    // Another epoch: nothing can be proven, wide channels are told to reload.
    for (channel, reload) in [
        ("payments", "/v1/payments"),
        ("merchant:m_old", "/v1/payments?merchant_id=m_old"),
    ] {
        client
            .send(json!({"type": "subscribe", "channel": channel, "since": {"epoch": "0", "seq": 1}}))
            .await?;
        let subscribed = client.next_of("subscribed", WAIT).await?;
        assert_eq!(subscribed["channel"], channel);
        assert_eq!(subscribed["recovered"], false);
        assert_eq!(subscribed["snapshot"]["reload"], reload);
    }
    Ok(())
}

/// Repeating a subscribe is idempotent (no new consumer, the session is told where it
/// stands), and the channels of one session are capped with a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_subscribes_are_idempotent_and_capped() -> anyhow::Result<()> {
    let mesh = Mesh::start_with(MeshOptions {
        edge_max_subscriptions: 3,
        ..MeshOptions::quiet()
    })
    .await?;
    let idle = eventually(WAIT, "idle consumers", || async {
        status_consumers(&mesh.js).await.ok().filter(|n| *n >= 2)
    })
    .await?;
    let token = mesh.scoped_token("u_rep", &["payment:pay_rep", "payments", "merchant:m1", "merchant:m2"]);
    let (mut client, first) = subscribe(&mesh.ws_url(), &token, "payment:pay_rep").await?;
    for _ in 0..1_000 {
        client
            .send(json!({"type": "subscribe", "channel": "payment:pay_rep"}))
            .await?;
    }
    for _ in 0..1_000 {
        let again = client.next_of("subscribed", WAIT).await?;
        assert_eq!(again["position"], first["position"]);
        assert_eq!(again["recovered"], true);
    }
    assert_eq!(status_consumers(&mesh.js).await?, idle);
    for channel in ["payments", "merchant:m1"] {
        client.send(json!({"type": "subscribe", "channel": channel})).await?;
        client.next_of("subscribed", WAIT).await?;
    }
    client
        .send(json!({"type": "subscribe", "channel": "merchant:m2"}))
        .await?;
    let error = client.next_of("error", WAIT).await?;
    assert_eq!(error["code"], 4000);
    assert!(
        error["message"]
            .as_str()
            .unwrap_or_default()
            .contains("subscription limit")
    );
    // The held subscription still works.
    checkpoint(&mesh.js, &mesh.tenant, "m1", "pay_rep", 1).await?.await?;
    let event = client.next_of("event", WAIT).await?;
    assert_eq!(event["payment_id"], "pay_rep");
    Ok(())
}

/// The close code a session's audit recorded, once the projector stored it.
async fn audited_close(mesh: &Mesh, session_id: &str) -> anyhow::Result<i64> {
    eventually(WAIT, "close audit", || async {
        let detail: Value = sqlx::query_scalar(
            "SELECT detail FROM session_audit WHERE tenant = $1 AND session_id = $2 AND kind = 'close'",
        )
        .bind(mesh.tenant.as_str())
        .bind(session_id)
        .fetch_optional(&mesh.db)
        .await
        .ok()??;
        detail["code"].as_i64()
    })
    .await
}

/// A client that never reads is closed with 4008 within seconds, while another
/// session of the same channel keeps getting every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_closed_with_4008_and_others_keep_up() -> anyhow::Result<()> {
    const CHUNK: u64 = 8;
    let mesh = Mesh::start_with(MeshOptions {
        session_queue_bytes: 1024 * 1024,
        session_write_timeout_ms: 2_000,
        ..MeshOptions::quiet()
    })
    .await?;
    let token = mesh.jwt.mint("u_slow", &mesh.tenant, 600, None, None);
    let mut slow = WsClient::connect(&mesh.ws_url(), &token).await?;
    let welcome = slow.next_of("welcome", WAIT).await?;
    let slow_session = welcome["session_id"].as_str().unwrap_or_default().to_owned();
    slow.send(json!({"type": "subscribe", "channel": "user:u_slow"}))
        .await?;
    let (mut reader, _) = subscribe(&mesh.ws_url(), &token, "user:u_slow").await?;
    let (done_tx, mut done_rx) = tokio::sync::watch::channel(0u64);
    let reading = tokio::spawn(async move {
        let mut events: Vec<Value> = Vec::new();
        while !events.last().is_some_and(|e| e["last"] == true) {
            events.push(reader.next_of("event", WAIT).await?);
            let _ = done_tx.send(events.len() as u64);
        }
        Ok::<_, anyhow::Error>(events)
    });

    let baseline = queued_bytes(&mesh).await?;
    let mut most_queued = baseline;
    let started = Instant::now();
    let filler = "x".repeat(32 * 1024);
    let subject = format!("paytrack.push.{}.u_slow.all", mesh.tenant);
    let mut sent = 0u64;
    let closed_after = loop {
        for _ in 0..CHUNK {
            let body = json!({"type": "bulk", "n": sent, "filler": filler});
            mesh.js.publish(subject.clone(), body.to_string().into()).await?.await?;
            sent += 1;
        }
        // The reader keeps up while the slow session is being closed.
        let target = sent;
        if tokio::time::timeout(WAIT, done_rx.wait_for(|n| *n >= target))
            .await?
            .is_err()
        {
            reading.await??;
            bail!("the reader stopped");
        }
        let closed: Option<Value> = sqlx::query_scalar(
            "SELECT detail FROM session_audit WHERE tenant = $1 AND session_id = $2 AND kind = 'close'",
        )
        .bind(mesh.tenant.as_str())
        .bind(&slow_session)
        .fetch_optional(&mesh.db)
        .await?;
        most_queued = most_queued.max(queued_bytes(&mesh).await?);
        if let Some(detail) = closed {
            assert_eq!(detail["code"], 4008, "{detail}");
            break started.elapsed();
        }
        if sent > 4_000 {
            bail!("the slow session was never closed");
        }
    };
    let body = json!({"type": "bulk", "n": sent, "last": true});
    mesh.js.publish(subject, body.to_string().into()).await?.await?;
    let events = reading.await??;
    chain(events[0]["prev_seq"].as_u64().unwrap_or_default(), &events);
    assert_eq!(events.len() as u64, sent + 1);
    assert_eq!(audited_close(&mesh, &slow_session).await?, 4008);
    // What the edge held for the slow client is freed with its session.
    assert!(
        most_queued > baseline,
        "the edge's queued bytes never showed the slow client"
    );
    let settled = mesh
        .eventually(WAIT, "the edge's queued bytes back at their baseline", || async {
            queued_bytes(&mesh).await.ok().filter(|q| *q <= baseline)
        })
        .await?;
    eprintln!(
        "slow client: closed with 4008 {closed_after:?} after the burst began ({sent} events of 32 KiB); \
         edge queued bytes {baseline} -> {most_queued} -> {settled}"
    );
    drop(slow);
    Ok(())
}

/// `paytrack_edge_queued_bytes` of this mesh's edge (0 before it is first reported).
async fn queued_bytes(mesh: &Mesh) -> anyhow::Result<u64> {
    let (_, edge) = mesh.scrape().await?;
    let prefix = format!("paytrack_edge_queued_bytes{{edge=\"{}\"}} ", mesh.edge_id);
    Ok(edge
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64))
}

/// A token is closed with 4001 at its `exp`, not at the next heartbeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_token_is_closed_within_a_second_of_exp() -> anyhow::Result<()> {
    let mesh = Mesh::start_with(MeshOptions {
        heartbeat_ms: 10_000,
        ..MeshOptions::default()
    })
    .await?;
    let token = mesh.jwt.mint("short-lived", &mesh.tenant, 2, None, None);
    let exp = mesh.jwt.verify(&token)?.exp;
    let mut client = WsClient::connect(&mesh.ws_url(), &token).await?;
    client.next_of("welcome", WAIT).await?;
    let code = client.closed(Duration::from_secs(30)).await?;
    let closed_ms = chrono::Utc::now().timestamp_millis() as u64;
    let late = closed_ms.saturating_sub(exp * 1000);
    assert_eq!(code, 4001);
    assert!(closed_ms + 50 >= exp * 1000, "closed before exp");
    assert!(late < 1_500, "closed {late} ms after exp");
    eprintln!("token expiry: closed {late} ms after exp");
    Ok(())
}

/// On shutdown every session gets 1012 and its close is in the audit stream before
/// the edge's `run` returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_audits_every_sessions_close_before_run_returns() -> anyhow::Result<()> {
    const SESSIONS: usize = 200;
    let mesh = Mesh::start_with(MeshOptions::quiet()).await?;
    let url = mesh.ws_url();
    let token = mesh.operator_token();
    let mut clients: Vec<(String, WsClient)> = futures::stream::iter(0..SESSIONS)
        .map(|i| {
            let (url, token) = (url.clone(), token.clone());
            async move {
                let mut client = WsClient::connect(&url, &token).await?;
                let welcome = client.next_of("welcome", WAIT).await?;
                client
                    .send(json!({"type": "subscribe", "channel": format!("payment:pay_d{i}")}))
                    .await?;
                client.next_of("subscribed", WAIT).await?;
                Ok::<_, anyhow::Error>((welcome["session_id"].as_str().unwrap_or_default().to_owned(), client))
            }
        })
        .buffer_unordered(32)
        .try_collect()
        .await?;
    mesh.shut_down_services();
    tokio::time::timeout(WAIT, mesh.edge_stopped()).await??;

    // Read the audit stream as it is now that the edge has stopped.
    let filter = format!("paytrack.session.{}.>", mesh.tenant);
    let stream = mesh.js.get_stream(subjects::STREAM_SESSION).await?;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: filter,
            ..Default::default()
        })
        .await?;
    let mut pending = consumer.cached_info().num_pending;
    let mut messages = consumer.messages().await?;
    let mut closes: HashMap<String, u16> = HashMap::new();
    while pending > 0 {
        let message = tokio::time::timeout(WAIT, messages.next())
            .await?
            .context("stream ended")??;
        pending = message.info().map_err(|e| anyhow::anyhow!("{e}"))?.pending;
        let record: SessionAudit = envelope::decode(&message.payload)?;
        if let SessionEvent::Close { code, .. } = record.event {
            closes.insert(record.session_id, code);
        }
    }
    let ids: HashSet<&String> = clients.iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), SESSIONS);
    for id in ids {
        assert_eq!(closes.get(id), Some(&1012), "no close audit for {id}");
    }
    for (_, client) in &mut clients {
        assert_eq!(client.closed(WAIT).await?, 1012);
    }
    Ok(())
}

/// The edge's single feed survives nats-server restarting: a session subscribed before
/// the outage gets the events published after it, chained without a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_resumes_after_nats_restarts() -> anyhow::Result<()> {
    let mut mesh = Mesh::start_with(MeshOptions::quiet()).await?;
    let token = mesh.jwt.mint("u_out", &mesh.tenant, 600, None, None);
    let (mut client, subscribed) = subscribe(&mesh.ws_url(), &token, "user:u_out").await?;
    let start = subscribed["position"]["seq"].as_u64().unwrap_or_default();
    let subject = format!("paytrack.push.{}.u_out.all", mesh.tenant);
    mesh.js
        .publish(subject.clone(), json!({"type": "note", "n": 0}).to_string().into())
        .await?
        .await?;
    let mut events = vec![client.next_of("event", WAIT).await?];

    mesh.nats.stop();
    mesh.nats.restart().await?;
    for n in 1..=3 {
        let ack = eventually(WAIT, "publish after the restart", || async {
            let ack = mesh
                .js
                .publish(subject.clone(), json!({"type": "note", "n": n}).to_string().into())
                .await
                .ok()?;
            ack.await.ok()
        })
        .await?;
        assert!(ack.sequence > 0);
    }
    for _ in 1..=3 {
        events.push(client.next_of("event", WAIT).await?);
    }
    chain(start, &events);
    let ns: Vec<u64> = events.iter().filter_map(|e| e["n"].as_u64()).collect();
    assert_eq!(ns, vec![0, 1, 2, 3]);
    Ok(())
}
