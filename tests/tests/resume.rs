//! Positions and resume: a client proves continuity from `prev_seq` alone, resumes
//! gap-free when the history holds its position, and gets a snapshot when it cannot.

use std::time::Duration;

use anyhow::Context;

use paytrack_tests::Mesh;
use paytrack_tests::mesh::MeshOptions;
use paytrack_tests::sse::SseClient;
use paytrack_tests::workload;
use paytrack_tests::ws::WsClient;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

async fn events(client: &mut WsClient, n: usize) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(client.next_of("event", WAIT).await?);
    }
    Ok(out)
}

fn assert_chain(start: u64, events: &[Value]) {
    let mut last = start;
    for event in events {
        assert_eq!(event["prev_seq"], last, "gap before {event}");
        let seq = event["position"]["seq"].as_u64().unwrap_or_default();
        assert!(seq > last, "positions must increase");
        last = seq;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_is_gap_free_and_an_unknown_epoch_gets_a_snapshot() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let mut live = WsClient::connect(&mesh.ws_url(), &mesh.operator_token()).await?;
    live.send(json!({"type": "subscribe", "channel": "merchant:m_res"}))
        .await?;
    let subscribed = live.next_of("subscribed", WAIT).await?;
    let epoch = subscribed["position"]["epoch"].clone();

    // Another merchant's traffic interleaves in the stream but not in the channel.
    for (n, (payment, status)) in [
        ("pay_a", "pending"),
        ("pay_x", "pending"),
        ("pay_b", "pending"),
        ("pay_a", "succeeded"),
    ]
    .iter()
    .enumerate()
    {
        let merchant = if *payment == "pay_x" { "m_other" } else { "m_res" };
        mesh.post_webhook(&format!("msg_res_{n}"), &Mesh::webhook_body(payment, status, merchant))
            .await?;
    }
    // 3 transitions + 6 checkpoints (persisted, ledger_posted) of merchant m_res.
    let seen = events(&mut live, 9).await?;
    assert_chain(0, &seen);
    assert!(seen.iter().all(|e| e["merchant_id"] == "m_res"));
    let last_seq = seen[8]["position"]["seq"].clone();
    let pay_a_last = seen
        .iter()
        .rfind(|e| e["payment_id"] == "pay_a")
        .map(|e| e["position"]["seq"].clone())
        .unwrap_or_default();

    // Resume after the second event: exactly the seven after it, chained.
    let mut resumed = WsClient::connect(&mesh.ws_url(), &mesh.operator_token()).await?;
    let since = seen[1]["position"].clone();
    resumed
        .send(json!({"type": "subscribe", "channel": "merchant:m_res", "since": since}))
        .await?;
    let subscribed = resumed.next_of("subscribed", WAIT).await?;
    assert_eq!(subscribed["recovered"], true);
    assert_eq!(subscribed["position"], since);
    let replayed = events(&mut resumed, 7).await?;
    assert_chain(since["seq"].as_u64().unwrap_or_default(), &replayed);
    assert_eq!(replayed[6]["position"]["seq"], last_seq);
    assert_eq!(&replayed[..], &seen[2..]);

    // The heartbeat names the channel's latest position: the client is current.
    let heartbeat = resumed.next_of("heartbeat", WAIT).await?;
    assert_eq!(heartbeat["positions"]["merchant:m_res"]["seq"], last_seq);

    // A position from another incarnation of the stream cannot be continued.
    let mut stale = WsClient::connect(&mesh.ws_url(), &mesh.operator_token()).await?;
    stale
        .send(json!({"type": "subscribe", "channel": "payment:pay_a", "since": {"epoch": "0", "seq": 1}}))
        .await?;
    let subscribed = stale.next_of("subscribed", WAIT).await?;
    assert_eq!(subscribed["recovered"], false);
    assert_eq!(subscribed["position"]["epoch"], epoch);
    assert_eq!(subscribed["snapshot"]["status"], "succeeded");
    assert_eq!(subscribed["snapshot"]["version"], 2);
    // Its position is the payment's latest message (the v2 ledger_posted checkpoint).
    assert_eq!(subscribed["position"]["seq"], pay_a_last);
    Ok(())
}

/// Publishes `n` pending transitions of `merchant` (one payment each, named from
/// `prefix`) straight into PAYTRACK_STATUS as the admin, shaped as the reconciler's,
/// with up to 1,000 acknowledgements outstanding; returns their sequences in order.
async fn publish_transitions(
    js: &async_nats::jetstream::Context,
    tenant: &paytrack_shared::TenantId,
    merchant: &str,
    prefix: &str,
    n: usize,
    pause: Duration,
) -> anyhow::Result<Vec<u64>> {
    use async_nats::jetstream::message::PublishMessage;
    use paytrack_shared::envelope;
    let mut seqs = Vec::with_capacity(n);
    let mut acks = std::collections::VecDeque::new();
    for i in 0..n {
        let plan = workload::Plan {
            payment: format!("{prefix}{i}"),
            merchant: merchant.to_owned(),
            rail: "card",
            amount: 100,
            statuses: vec![paytrack_shared::Status::Pending],
            ledger_minor: 0,
            entries: vec![],
        };
        let t = workload::transition(tenant, &plan, 1)?;
        let subject = paytrack_shared::subjects::status(&t.tenant, &t.merchant_id, &t.payment_id);
        acks.push_back(
            js.send_publish(subject, PublishMessage::build().payload(envelope::encode(&t)))
                .await?,
        );
        // A paced publisher waits for each ack; a bulk one keeps 500 to 1,000 in flight.
        let keep = if pause.is_zero() { 500 } else { 0 };
        if acks.len() >= 1_000 || !pause.is_zero() {
            while acks.len() > keep {
                if let Some(ack) = acks.pop_front() {
                    seqs.push(ack.await?.sequence);
                }
            }
        }
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    for ack in acks {
        seqs.push(ack.await?.sequence);
    }
    Ok(seqs)
}

/// The position a fresh subscription to `channel` starts from (what a client that
/// then went away last saw).
async fn position_now(mesh: &Mesh, channel: &str) -> anyhow::Result<Value> {
    let mut client = WsClient::connect(&mesh.ws_url(), &mesh.operator_token()).await?;
    client.send(json!({"type": "subscribe", "channel": channel})).await?;
    Ok(client.next_of("subscribed", WAIT).await?["position"].clone())
}

/// The value of a metric in Prometheus text (None when absent).
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
}

/// Mid-replay, `/metrics` shows the replays running within their slots and the live
/// messages they buffer within their bound (1,024 each). `still_running` says the
/// replay cannot have finished yet: true only when more is left to send than the
/// session queue and the socket buffers can hold (a short replay may be done already).
async fn check_replay_bounds(mesh: &Mesh, still_running: bool) -> anyhow::Result<()> {
    let (_, edge) = mesh.scrape().await?;
    let slots = metric(&edge, "paytrack_edge_replay_slots").context("replay slots not in /metrics")?;
    let running = metric(&edge, "paytrack_edge_replays_running").context("running replays not in /metrics")?;
    let buffered =
        metric(&edge, "paytrack_edge_replay_buffered_messages").context("buffered replay messages not in /metrics")?;
    assert!(running <= slots, "{running} replays running, {slots} slots");
    assert!(
        !still_running || running >= 1.0,
        "no replay running mid-replay ({slots} slots)"
    );
    assert!(
        buffered <= 1_024.0 * running,
        "{buffered} live messages buffered by {running} replays"
    );
    Ok(())
}

/// A WebSocket client that missed `missed` events of a merchant resumes: `subscribed`
/// with `recovered: true`, then every missed event and every event published live
/// while the replay runs (`live`), each exactly once, chained by `prev_seq`, through
/// the session's 1,024-frame queue (no 4008).
async fn a_websocket_resume_after(missed: usize, live: usize) -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let channel = "merchant:m_gap";
    let since = position_now(&mesh, channel).await?;
    // The projector is stopped while the stream fills, so that it does not add
    // checkpoints (and PostgreSQL work) for every transition.
    mesh.restart_projector(async {
        let started = std::time::Instant::now();
        let mut published = publish_transitions(&mesh.js, &mesh.tenant, "m_gap", "pg", missed, Duration::ZERO).await?;
        eprintln!("{missed} transitions published in {:?}", started.elapsed());
        let started = std::time::Instant::now();
        let mut client = WsClient::connect(&mesh.ws_url(), &mesh.operator_token()).await?;
        client
            .send(json!({"type": "subscribe", "channel": channel, "since": since}))
            .await?;
        let subscribed = client.next_of("subscribed", WAIT).await?;
        assert_eq!(subscribed["recovered"], true, "{subscribed}");
        assert_eq!(subscribed["position"], since);
        let during = {
            let (js, tenant) = (mesh.js.clone(), mesh.tenant.clone());
            tokio::spawn(async move {
                publish_transitions(&js, &tenant, "m_gap", "pl", live, Duration::from_millis(1)).await
            })
        };
        let mut seen = Vec::with_capacity(missed + live);
        let mut last = since["seq"].as_u64().unwrap_or_default();
        while seen.len() < missed + live {
            let event = match client.next_or_close(WAIT).await? {
                Ok(event) if event["type"] == "event" => event,
                Ok(heartbeat) if heartbeat["type"] == "heartbeat" => {
                    // As every client does (a silent one is closed).
                    client
                        .send(json!({"type": "ack", "positions": heartbeat["positions"]}))
                        .await?;
                    continue;
                }
                Ok(other) => anyhow::bail!("after {} events: {other}", seen.len()),
                Err(code) => anyhow::bail!("closed with {code} after {} of {} events", seen.len(), missed + live),
            };
            assert_eq!(event["prev_seq"], last, "gap or duplicate before {event}");
            last = event["position"]["seq"].as_u64().unwrap_or_default();
            seen.push(last);
            if seen.len() == missed / 2 {
                // Past 10,000 frames (several MiB) the rest cannot all sit in buffers.
                check_replay_bounds(&mesh, missed / 2 > 10_000).await?;
            }
        }
        eprintln!(
            "{missed} missed and {live} live events received in {:?} after the resume",
            started.elapsed()
        );
        published.extend(during.await??);
        published.sort_unstable();
        assert_eq!(seen, published, "every missed and live event exactly once, in order");
        if live > 1_024 {
            let (_, edge) = mesh.scrape().await?;
            let rounds = metric(&edge, "paytrack_edge_replay_rounds_total").unwrap_or_default();
            assert!(rounds >= 1.0, "the replay never read live events from the stream");
        }
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_missed_1500_events_resumes_over_websocket() -> anyhow::Result<()> {
    a_websocket_resume_after(1_500, 50).await
}

/// 3,000 live events during the replay outrun its buffer of 1,024: the replay reads
/// them from the stream in another round instead (counted in `/metrics`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_missed_100000_events_resumes_over_websocket() -> anyhow::Result<()> {
    a_websocket_resume_after(100_000, 3_000).await
}

/// The SSE fallback shares the replay: `Last-Event-ID` 1,500 events back resumes with
/// every missed event, chained, and the stream stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_missed_1500_events_resumes_over_sse() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let channel = "merchant:m_gap";
    let since = position_now(&mesh, channel).await?;
    mesh.restart_projector(async {
        let published = publish_transitions(&mesh.js, &mesh.tenant, "m_gap", "ps", 1_500, Duration::ZERO).await?;
        let last_event_id = format!("{}:{}", since["epoch"].as_str().unwrap_or_default(), since["seq"]);
        let base = format!("http://{}", mesh.edge_addr);
        let mut client = SseClient::connect(&base, channel, &mesh.operator_token(), Some(&last_event_id)).await?;
        let subscribed = client.next_of("subscribed", WAIT).await?;
        assert_eq!(subscribed.data["recovered"], true, "{:?}", subscribed.data);
        let mut seen = Vec::new();
        let mut last = since["seq"].as_u64().unwrap_or_default();
        while seen.len() < published.len() {
            let event = client.next(WAIT).await?;
            match event.event.as_str() {
                "message" => {}
                "heartbeat" => continue,
                other => anyhow::bail!("after {} events: {other} {}", seen.len(), event.data),
            }
            assert_eq!(event.data["prev_seq"], last, "gap or duplicate before {}", event.data);
            last = event.data["position"]["seq"].as_u64().unwrap_or_default();
            seen.push(last);
        }
        assert_eq!(seen, published);
        Ok(())
    })
    .await
}

/// When every replay slot is taken (one here) for longer than the edge waits for one,
/// the edge will not replay now: the resume is answered `recovered: false` with the
/// reload (never a 4008), and the session then gets live events from the position it
/// was given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_the_edge_will_not_replay_now_gets_a_reload_not_4008() -> anyhow::Result<()> {
    let mesh = Mesh::start_with(MeshOptions {
        extra_settings: vec![("edge_replay_concurrency", "1".to_owned())],
        ..MeshOptions::default()
    })
    .await?;
    let channel = "merchant:m_gap";
    let since = position_now(&mesh, channel).await?;
    mesh.restart_projector(async {
        publish_transitions(&mesh.js, &mesh.tenant, "m_gap", "ph", 30_000, Duration::ZERO).await?;
        // This client takes the only slot and reads nothing (more than the socket's
        // buffers hold), so its replay keeps the slot.
        let mut hog = WsClient::connect(&mesh.ws_url(), &mesh.operator_token()).await?;
        hog.send(json!({"type": "subscribe", "channel": channel, "since": since}))
            .await?;
        assert_eq!(hog.next_of("subscribed", WAIT).await?["recovered"], true);

        let mut client = WsClient::connect(&mesh.ws_url(), &mesh.operator_token()).await?;
        client
            .send(json!({"type": "subscribe", "channel": channel, "since": since}))
            .await?;
        let subscribed = match client.next_or_close(WAIT).await? {
            Ok(message) if message["type"] == "welcome" => client.next_of("subscribed", WAIT).await?,
            Ok(message) => message,
            Err(code) => anyhow::bail!("closed with {code} instead of subscribed"),
        };
        assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
        assert_eq!(subscribed["recovered"], false, "{subscribed}");
        assert_eq!(
            subscribed["snapshot"]["reload"], "/v1/payments?merchant_id=m_gap",
            "{subscribed}"
        );
        let position = subscribed["position"]["seq"].clone();
        publish_transitions(&mesh.js, &mesh.tenant, "m_gap", "pn", 1, Duration::ZERO).await?;
        let event = client.next_of("event", WAIT).await?;
        assert_eq!(event["prev_seq"], position, "{event}");
        let (_, edge) = mesh.scrape().await?;
        assert!(metric(&edge, "paytrack_edge_replays_refused_total").unwrap_or_default() >= 1.0);
        drop(hog);
        Ok(())
    })
    .await
}

/// One tenant's replays hold at most its share of the edge's replay slots (its
/// subscribes in progress, one here, of two slots): with two of its clients resuming
/// large gaps and reading nothing, another tenant's resume still gets a slot and is
/// recovered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenants_replays_leave_a_replay_slot_to_another_tenant() -> anyhow::Result<()> {
    // The clients that read nothing keep their sessions (and their replay slot) for
    // as long as the test needs, however slow the machine: no heartbeat they miss and
    // no write stalled behind them closes them. Otherwise the first one's session
    // could end (its slot freed) before the check that the second waits behind it.
    let mesh = Mesh::start_with(MeshOptions {
        session_write_timeout_ms: 600_000,
        extra_settings: vec![
            ("edge_replay_concurrency", "2".to_owned()),
            ("edge_tenant_subscribes", "1".to_owned()),
        ],
        ..MeshOptions::quiet()
    })
    .await?;
    let channel = "merchant:m_gap";
    let since = position_now(&mesh, channel).await?;
    let other_token = mesh.jwt.mint("operator-2", &mesh.other_tenant, 600, None, None);
    let other_since = {
        let mut client = WsClient::connect(&mesh.ws_url(), &other_token).await?;
        client.send(json!({"type": "subscribe", "channel": channel})).await?;
        client.next_of("subscribed", WAIT).await?["position"].clone()
    };
    mesh.restart_projector(async {
        publish_transitions(&mesh.js, &mesh.tenant, "m_gap", "ph", 30_000, Duration::ZERO).await?;
        publish_transitions(&mesh.js, &mesh.other_tenant, "m_gap", "po", 20, Duration::ZERO).await?;
        // One after the other, so which of the two holds the tenant's slot is known.
        let mut hogs = Vec::new();
        for _ in 0..2 {
            let mut hog = WsClient::connect(&mesh.ws_url(), &mesh.operator_token()).await?;
            hog.send(json!({"type": "subscribe", "channel": channel, "since": since}))
                .await?;
            if hogs.is_empty() {
                assert_eq!(hog.next_of("subscribed", WAIT).await?["recovered"], true);
            }
            hogs.push(hog);
        }
        // The second waits behind the first for its tenant's slot (were it to take
        // the edge's second replay slot instead, its `subscribed` would come now).
        let second = tokio::time::timeout(Duration::from_secs(3), hogs[1].next_of("subscribed", WAIT)).await;
        assert!(
            second.is_err(),
            "the tenant's second replay started beside its first: {second:?}"
        );
        let mut other = WsClient::connect(&mesh.ws_url(), &other_token).await?;
        other
            .send(json!({"type": "subscribe", "channel": channel, "since": other_since}))
            .await?;
        let subscribed = other.next_of("subscribed", WAIT).await?;
        assert_eq!(subscribed["recovered"], true, "{subscribed}");
        for _ in 0..20 {
            other.next_of("event", WAIT).await?;
        }
        drop(hogs);
        Ok(())
    })
    .await
}
