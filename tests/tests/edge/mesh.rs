//! End-to-end tests of the walking skeleton: a signed webhook travels through real
//! JetStream and PostgreSQL to a WebSocket event, a projection row and a REST answer.

use std::time::Duration;

use paytrack_shared::subjects;
use paytrack_tests::Mesh;
use paytrack_tests::ws::{Upgrade, WsClient};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

async fn subscribe(client: &mut WsClient, channel: &str, since: Option<Value>) -> anyhow::Result<Value> {
    let mut message = json!({ "type": "subscribe", "channel": channel });
    if let Some(since) = since {
        message["since"] = since;
    }
    client.send(message).await?;
    client.next_of("subscribed", WAIT).await
}

/// The acceptance path: webhook → WebSocket event, PostgreSQL row and REST answer,
/// which agree on status and version; the trace id of the webhook's `traceparent`
/// survives the whole journey.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_webhook_reaches_websocket_postgres_and_rest() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let mut client = WsClient::connect(&mesh.ws_url(), &mesh.operator_token()).await?;
    let subscribed = subscribe(&mut client, "payment:pay_e2e", None).await?;
    assert_eq!(subscribed["recovered"], false);
    assert_eq!(subscribed["position"]["seq"], 0, "a new channel starts at 0");

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let body = Mesh::webhook_body("pay_e2e", "pending", "m_1");
    let mut headers = mesh.sign("msg_e2e_1", &body)?;
    headers.push(("traceparent".into(), format!("00-{trace_id}-00f067aa0ba902b7-01")));
    let response = mesh.post_webhook_with(&headers, &body).await?;
    assert_eq!(response.status(), 200, "{}", response.text().await?);

    let event = client.next_of("event", WAIT).await?;
    assert_eq!(event["channel"], "payment:pay_e2e");
    assert_eq!(event["kind"], "transition");
    assert_eq!(event["status"], "pending");
    assert_eq!(event["version"], 1);
    assert_eq!(event["merchant_id"], "m_1");
    assert_eq!(event["prev_seq"], 0);
    assert_eq!(event["trace_id"], trace_id);
    assert_eq!(event["position"]["epoch"], subscribed["position"]["epoch"]);
    let seq = event["position"]["seq"].as_u64().unwrap_or_default();
    assert!(seq > 0);

    // The projector confirms the record with a checkpoint on the same channel.
    let checkpoint = client.next_of("event", WAIT).await?;
    assert_eq!(checkpoint["kind"], "checkpoint");
    assert_eq!(checkpoint["checkpoint"], "persisted");
    assert_eq!(checkpoint["version"], 1);
    assert_eq!(checkpoint["prev_seq"], seq);
    // Then the ledger is posted (nothing moves for `pending`); not final.
    let posted = client.next_of("event", WAIT).await?;
    assert_eq!(posted["checkpoint"], "ledger_posted");
    assert_eq!(posted["final"], false);
    assert_eq!(posted["prev_seq"], checkpoint["position"]["seq"]);

    let (status, version, status_seq, row_trace) = mesh.wait_for_row("pay_e2e", 1).await?;
    assert_eq!((status.as_str(), version, status_seq as u64), ("pending", 1, seq));
    assert_eq!(row_trace, trace_id);

    let rest: Value = mesh
        .get("/v1/payments/pay_e2e", &mesh.operator_token())
        .await?
        .json()
        .await?;
    assert_eq!(rest["status"], event["status"]);
    assert_eq!(rest["version"], event["version"]);
    assert_eq!(rest["seq"], seq);
    assert_eq!(rest["final"], false);

    // A second webhook moves it on; all three agree again.
    let response = mesh
        .post_webhook("msg_e2e_2", &Mesh::webhook_body("pay_e2e", "succeeded", "m_1"))
        .await?;
    assert_eq!(response.status(), 200);
    let event2 = client.next_of("event", WAIT).await?;
    assert_eq!(
        (event2["kind"].as_str(), event2["status"].as_str()),
        (Some("transition"), Some("succeeded"))
    );
    assert_eq!(event2["version"], 2);
    assert_eq!(event2["prev_seq"], posted["position"]["seq"]);
    let (status, version, ..) = mesh.wait_for_row("pay_e2e", 2).await?;
    assert_eq!((status.as_str(), version), ("succeeded", 2));
    let rest: Value = mesh.get("/v1/payments/pay_e2e", &mesh.api_key).await?.json().await?;
    assert_eq!(
        (rest["status"].as_str(), rest["version"].as_i64()),
        (Some("succeeded"), Some(2))
    );

    let (timeline, statuses) = mesh.timeline("pay_e2e").await?;
    assert_eq!(statuses, ["pending", "succeeded"]);
    assert_eq!(timeline[0]["rule"], "stdwebhooks:payment.pending");
    assert_eq!(timeline[0]["trace_id"], trace_id);

    // The evidence pack traces the status to the raw payload, its rule and the
    // session that watched it.
    let evidence = paytrack_tests::eventually(WAIT, "both facts and the session in the evidence", || async {
        let evidence: Value = mesh
            .get("/v1/payments/pay_e2e/evidence", &mesh.operator_token())
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let complete = evidence["facts"].as_array().map(Vec::len) == Some(2)
            && evidence["sessions"].as_array().is_some_and(|s| !s.is_empty());
        complete.then_some(evidence)
    })
    .await?;
    assert_eq!(evidence["payment"]["version"], 2);
    assert_eq!(evidence["timeline"].as_array().map(Vec::len), Some(2));
    let facts = &evidence["facts"];
    assert_eq!(facts[0]["fact_id"], timeline[0]["fact_id"]);
    assert_eq!(facts[0]["raw_body"], body, "the raw payload is kept byte for byte");
    assert_eq!(facts[0]["raw_headers"]["webhook-id"], "msg_e2e_1");
    let sessions = &evidence["sessions"];
    assert_eq!(sessions[0]["subject"], "operator-1");
    assert_eq!(sessions[0]["detail"]["position"]["seq"], 0);

    // Metrics: webhooks by outcome, reconciler decisions, open sessions.
    let (ingest_metrics, edge_metrics) = mesh.scrape().await?;
    assert!(
        ingest_metrics.contains(r#"paytrack_ingest_webhooks_total{outcome="stored"}"#),
        "{ingest_metrics}"
    );
    assert!(ingest_metrics.contains(r#"paytrack_reconciler_facts_total{decision="applied"}"#));
    assert!(
        edge_metrics.contains(r#"paytrack_edge_sessions_open{transport="websocket"}"#),
        "{edge_metrics}"
    );

    // The status model every surface uses is served as data.
    let model: Value = reqwest::get(format!("{}/v1/status-model", mesh.ingest_url))
        .await?
        .json()
        .await?;
    let succeeded = model["statuses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["status"] == "succeeded");
    assert_eq!(
        succeeded.map(|s| s["allowed_from"].clone()),
        Some(json!(["initiated", "pending", "held"]))
    );
    assert_eq!(reqwest::get(format!("{}/readyz", mesh.ingest_url)).await?.status(), 200);
    Ok(())
}

/// Posting the very same delivery twice stores it once and applies it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_webhook_twice_yields_one_transition() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let body = Mesh::webhook_body("pay_dup", "pending", "m_1");
    let headers = mesh.sign("msg_dup_1", &body)?;
    let first: Value = mesh.post_webhook_with(&headers, &body).await?.json().await?;
    let second: Value = mesh.post_webhook_with(&headers, &body).await?.json().await?;
    assert_eq!(first["duplicate"], false);
    assert_eq!(second["duplicate"], true);
    assert_eq!(first["seq"], second["seq"]);

    // A later fact for the same payment is a barrier: the reconciler handles facts in
    // order, so once it is applied any duplicate would have been applied before it.
    mesh.post_webhook("msg_dup_2", &Mesh::webhook_body("pay_dup", "succeeded", "m_1"))
        .await?;
    let (status, version, ..) = mesh.wait_for_row("pay_dup", 2).await?;
    assert_eq!((status.as_str(), version), ("succeeded", 2));
    assert_eq!(mesh.transition_count("pay_dup").await?, 2);
    assert_eq!(mesh.stream_messages(subjects::STREAM_IN).await?, 2);
    let rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM payment_timeline WHERE tenant = $1 AND payment_id = 'pay_dup'")
            .bind(mesh.tenant.as_str())
            .fetch_one(&mesh.db)
            .await?;
    assert_eq!(rows, 2);
    Ok(())
}

/// A bad signature is 401 and nothing reaches JetStream; so is every other bad
/// delivery, each with its own clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_deliveries_are_refused_and_store_nothing() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let body = Mesh::webhook_body("pay_bad", "succeeded", "m_1");

    let mut forged = mesh.sign("msg_bad_1", &body)?;
    forged[2].1 = "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into();
    let response = mesh.post_webhook_with(&forged, &body).await?;
    assert_eq!(response.status(), 401);
    let error: Value = response.json().await?;
    assert_eq!(error["code"], "invalid_signature");

    let signed_for_other_body = mesh.sign("msg_bad_2", &body)?;
    let tampered = body.replace("1250", "99999");
    assert_eq!(
        mesh.post_webhook_with(&signed_for_other_body, &tampered)
            .await?
            .status(),
        401
    );

    let mut stale = mesh.sign("msg_bad_3", &body)?;
    stale[1].1 = (chrono::Utc::now().timestamp() - 3600).to_string();
    assert_eq!(mesh.post_webhook_with(&stale, &body).await?.status(), 401);

    assert_eq!(mesh.post_webhook_with(&[], &body).await?.status(), 401);

    let malformed = r#"{"type":"payment.succeeded","data":{}}"#;
    let response = mesh.post_webhook("msg_bad_4", malformed).await?;
    assert_eq!(response.status(), 400);
    assert_eq!(response.json::<Value>().await?["code"], "invalid_request");

    let bad_payment = Mesh::webhook_body("pay.with.dots", "succeeded", "m_1");
    assert_eq!(mesh.post_webhook("msg_bad_5", &bad_payment).await?.status(), 400);

    let oversized = format!(r#"{{"pad":"{}"}}"#, "x".repeat(300 * 1024));
    let response = mesh.post_webhook("msg_bad_6", &oversized).await?;
    assert_eq!(response.status(), 413);

    let other_tenant = reqwest::Client::new()
        .post(format!("{}/v1/webhooks/nobody/stdwebhooks", mesh.ingest_url))
        .body(body.clone())
        .send()
        .await?;
    assert_eq!(other_tenant.status(), 404);

    assert_eq!(
        mesh.stream_messages(subjects::STREAM_IN).await?,
        0,
        "nothing may reach JetStream"
    );
    let (metrics, _) = mesh.scrape().await?;
    for outcome in ["invalid_signature", "invalid_request", "body_too_large", "not_found"] {
        let line = format!(r#"paytrack_ingest_webhooks_total{{outcome="{outcome}"}}"#);
        assert!(metrics.contains(&line), "{line} missing");
    }
    Ok(())
}

/// An upgrade without a valid token is refused with HTTP 401 before any socket exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_without_a_valid_token_is_401() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let other_keys = paytrack_shared::auth::JwtKeys::new(&"another-secret".to_owned().into(), "paytrack", "paytrack");
    let expired = {
        use jsonwebtoken::{EncodingKey, Header};
        let claims =
            json!({"sub": "op", "tenant": mesh.tenant.as_str(), "exp": 1_000, "aud": "paytrack", "iss": "paytrack"});
        jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(b"x"))?
    };
    let cases: [(&str, Option<String>); 4] = [
        ("no token", None),
        ("garbage", Some("not-a-jwt".into())),
        (
            "foreign signature",
            Some(other_keys.mint("op", &mesh.tenant, 60, None, None)),
        ),
        ("expired", Some(expired)),
    ];
    for (what, token) in cases {
        match WsClient::try_connect(&mesh.ws_url(), token.as_deref()).await? {
            Upgrade::Refused(status) => assert_eq!(status, 401, "{what}"),
            Upgrade::Open(_) => panic!("{what}: upgrade was accepted"),
        }
    }
    // The same endpoint accepts a valid token, both as a header and as `?token=`.
    assert!(matches!(
        WsClient::try_connect(&mesh.ws_url(), Some(&mesh.operator_token())).await?,
        Upgrade::Open(_)
    ));
    let query_url = format!("{}?token={}", mesh.ws_url(), mesh.operator_token());
    assert!(matches!(
        WsClient::try_connect(&query_url, None).await?,
        Upgrade::Open(_)
    ));
    Ok(())
}
