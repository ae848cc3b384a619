//! Positions and resume: a client proves continuity from `prev_seq` alone, resumes
//! gap-free when the history holds its position, and gets a snapshot when it cannot.

use std::time::Duration;

use paytrack_tests::Mesh;
use paytrack_tests::ws::WsClient;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

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
