//! Payment commands, capabilities, routing, the push API and the OpenAPI document,
//! on the whole mesh (real NATS and PostgreSQL).

use std::time::Duration;

use anyhow::Context;
use futures::TryStreamExt;
use paytrack_shared::subjects;
use paytrack_tests::ws::WsClient;
use paytrack_tests::{Mesh, eventually};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

fn http() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?)
}

/// A mesh, a client for its API and an operator token of its tenant: where most
/// command tests start.
async fn start() -> anyhow::Result<(Mesh, reqwest::Client, String)> {
    let mesh = Mesh::start().await?;
    let client = http()?;
    let token = mesh.operator_token();
    Ok((mesh, client, token))
}

/// `POST {ingest}{path}` with a bearer credential, an optional Idempotency-Key and a
/// raw body; the status and the body as text.
async fn post(
    client: &reqwest::Client,
    mesh: &Mesh,
    path: &str,
    credential: &str,
    key: Option<&str>,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    let mut request = client
        .post(format!("{}{path}", mesh.ingest_url))
        .bearer_auth(credential)
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let response = request.send().await?;
    Ok((response.status().as_u16(), response.text().await?))
}

/// The body of a [`post`] answer as JSON, once its status is `want`.
fn expecting(want: u16, (status, text): (u16, String)) -> anyhow::Result<Value> {
    assert_eq!(status, want, "{text}");
    Ok(serde_json::from_str(&text)?)
}

/// `POST /v1/payments` under `key`, which must answer 201; the created payment.
async fn create(client: &reqwest::Client, mesh: &Mesh, token: &str, key: &str, body: &str) -> anyhow::Result<Value> {
    let (status, text) = post(client, mesh, "/v1/payments", token, Some(key), body).await?;
    anyhow::ensure!(status == 201, "{text}");
    Ok(serde_json::from_str(&text)?)
}

/// The id of a created payment.
fn payment_id(created: &Value) -> String {
    created["payment_id"].as_str().unwrap_or_default().to_owned()
}

/// Waits until the payment's view is readable, so the commands after it are
/// checked against its status.
async fn projected(mesh: &Mesh, token: &str, payment: &str) -> anyhow::Result<()> {
    mesh.eventually(WAIT, "the payment is projected", || async {
        let response = mesh.get(&format!("/v1/payments/{payment}"), token).await.ok()?;
        (response.status() == 200).then_some(())
    })
    .await
}

/// A mesh whose providers initiate payments at a [`sandbox_gateway`] that fails
/// once for `failing`, a client and an operator token as [`start`] gives; and the
/// requests the gateway saw.
async fn mesh_with_gateway(failing: &'static str) -> anyhow::Result<(Mesh, reqwest::Client, String, Seen)> {
    let (url, seen) = sandbox_gateway(failing).await?;
    mesh_with_gateways(&format!("stdwebhooks={url},stripe={url}"), seen).await
}

/// A mesh whose providers initiate payments at the gateways `provider_urls` names.
async fn mesh_with_gateways(provider_urls: &str, seen: Seen) -> anyhow::Result<(Mesh, reqwest::Client, String, Seen)> {
    let mesh = Mesh::start_with(paytrack_tests::mesh::MeshOptions {
        provider_urls: Some(provider_urls.to_owned()),
        ..Default::default()
    })
    .await?;
    let token = mesh.operator_token();
    Ok((mesh, http()?, token, seen))
}

fn create_body(merchant: &str, rail: &str, country: &str, amount: i64) -> String {
    json!({
        "merchant_id": merchant,
        "amount_minor": amount,
        "currency": "USD",
        "rail": rail,
        "country": country,
        "customer_ref": "cust_1",
        "metadata": {"order": "o-1"},
    })
    .to_string()
}

/// Makes PAYTRACK_IN refuse every message (a 16-byte message limit), so a create's
/// publish fails; returns the stream's configuration, which `update_stream` restores.
async fn refuse_inbound(mesh: &Mesh) -> anyhow::Result<async_nats::jetstream::stream::Config> {
    let mut stream = mesh.js.get_stream(subjects::STREAM_IN).await?;
    let original = stream.info().await?.config.clone();
    mesh.js
        .update_stream(async_nats::jetstream::stream::Config {
            max_message_size: 16,
            ..original.clone()
        })
        .await?;
    Ok(original)
}

/// Messages of PAYTRACK_IN on the subjects matching `filter`.
async fn inbound(mesh: &Mesh, filter: String) -> anyhow::Result<Vec<(String, usize)>> {
    let stream = mesh.js.get_stream(subjects::STREAM_IN).await?;
    let mut found = Vec::new();
    let mut subjects = stream.info_with_subjects(filter).await?;
    while let Some((subject, n)) = subjects.try_next().await? {
        found.push((subject, n));
    }
    Ok(found)
}

/// Messages of PAYTRACK_IN under the mesh tenant.
async fn tenant_inbound(mesh: &Mesh) -> anyhow::Result<Vec<(String, usize)>> {
    inbound(mesh, format!("paytrack.in.{}.>", mesh.tenant)).await
}

async fn inbound_count(mesh: &Mesh) -> anyhow::Result<usize> {
    Ok(tenant_inbound(mesh).await?.iter().map(|(_, n)| n).sum())
}

/// 20 concurrent creates with one key make one payment and 20 identical answers;
/// the key with another body is 422; the payment opens as `initiated`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_with_one_key_make_one_payment() -> anyhow::Result<()> {
    let (mesh, client, token) = start().await?;
    let body = create_body("m_idem", "card", "US", 4200);
    let started = std::time::Instant::now();
    let answers = futures::future::try_join_all(
        (0..20).map(|_| post(&client, &mesh, "/v1/payments", &token, Some("order-42"), &body)),
    )
    .await?;
    eprintln!("20 concurrent creates with one key answered in {:?}", started.elapsed());
    let (status, first) = &answers[0];
    assert_eq!(*status, 201, "{first}");
    for (status, text) in &answers {
        assert_eq!(
            (*status, text),
            (201, first),
            "every answer is the first, byte for byte"
        );
    }
    let created: Value = serde_json::from_str(first)?;
    let payment = payment_id(&created);
    assert_eq!(created["status"], "initiated");
    assert_eq!(created["version"], 1);
    assert_eq!(created["routing"]["provider"], "stdwebhooks");
    assert!(created["capabilities"]["checked_at"].is_string(), "{created}");
    assert_eq!(created["capabilities"]["features"]["cancel"], true);

    // One payment, one fact.
    let facts = tenant_inbound(&mesh).await?;
    assert_eq!(facts, vec![(format!("paytrack.in.{}.{payment}", mesh.tenant), 1)]);
    // The same key later (and by an API key of the tenant) still replays.
    let (status, again) = post(&client, &mesh, "/v1/payments", &mesh.api_key, Some("order-42"), &body).await?;
    assert_eq!((status, &again), (201, first));

    // Another body with the key.
    let other = create_body("m_idem", "card", "US", 4300);
    let (status, text) = post(&client, &mesh, "/v1/payments", &token, Some("order-42"), &other).await?;
    assert_eq!(status, 422, "{text}");
    assert_eq!(serde_json::from_str::<Value>(&text)?["code"], "idempotency_key_reused");
    // The other tenant's key space is its own.
    let (status, text) = post(
        &client,
        &mesh,
        "/v1/payments",
        &mesh.other_api_key,
        Some("order-42"),
        &other,
    )
    .await?;
    assert_eq!(status, 201, "{text}");
    assert_ne!(
        serde_json::from_str::<Value>(&text)?["payment_id"].as_str(),
        Some(payment.as_str())
    );

    // No key, bad fields: 400, nothing stored.
    let before = inbound_count(&mesh).await?;
    let (status, _) = post(&client, &mesh, "/v1/payments", &token, None, &body).await?;
    assert_eq!(status, 400);
    for bad in [
        json!({"merchant_id": "m 1", "amount_minor": 1, "currency": "USD", "rail": "card", "country": "US"}),
        json!({"merchant_id": "m_1", "amount_minor": 0, "currency": "USD", "rail": "card", "country": "US"}),
        json!({"merchant_id": "m_1", "amount_minor": 1, "currency": "usd", "rail": "card", "country": "US"}),
        json!({"merchant_id": "m_1", "amount_minor": 1, "currency": "USD", "rail": "card", "country": "USA"}),
        json!({"merchant_id": "m_1", "amount_minor": 1, "currency": "USD", "rail": "card"}),
        json!({"merchant_id": "m_1", "amount_minor": 1, "currency": "USD", "rail": "card", "country": "US", "metadata": [1]}),
        json!({"merchant_id": "m_1", "amount_minor": 1, "currency": "USD", "rail": "card", "country": "US", "extra": 1}),
    ] {
        let (status, text) = post(&client, &mesh, "/v1/payments", &token, Some("k-bad"), &bad.to_string()).await?;
        assert_eq!(status, 400, "{bad}: {text}");
        assert_eq!(serde_json::from_str::<Value>(&text)?["code"], "invalid_request");
    }
    // An end user's token may not command.
    let user = mesh.scoped_token("u_1", &["payments"]);
    let (status, _) = post(&client, &mesh, "/v1/payments", &user, Some("k-user"), &body).await?;
    assert_eq!(status, 403);
    assert_eq!(inbound_count(&mesh).await?, before);

    // The reconciler opens the payment as initiated.
    let (status, version, ..) = mesh.wait_for_row(&payment, 1).await?;
    assert_eq!((status.as_str(), version), ("initiated", 1));
    Ok(())
}

/// Unsupported features answer 422 with the documented body and publish nothing;
/// resolve needs a reason (400) and an operator (403); another tenant's payment is
/// 404; supported commands are recorded as facts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_checked_against_capabilities_roles_and_tenants() -> anyhow::Result<()> {
    let (mesh, client, token) = start().await?;
    let rtp = payment_id(&create(&client, &mesh, &token, "rtp-1", &create_body("m_c", "rtp", "US", 100)).await?);
    let card = payment_id(&create(&client, &mesh, &token, "card-1", &create_body("m_c", "card", "US", 100)).await?);
    let before = inbound_count(&mesh).await?;

    for command in ["cancel", "retry"] {
        let path = format!("/v1/payments/{rtp}/{command}");
        let body = expecting(422, post(&client, &mesh, &path, &token, None, "").await?)?;
        assert_eq!(body["code"], "unsupported_feature");
        assert_eq!(body["feature"], command);
        assert_eq!(
            (body["country"].as_str(), body["rail"].as_str()),
            (Some("US"), Some("rtp"))
        );
        assert!(body.get("program").is_some_and(Value::is_null), "{body}");
    }
    let zz = create_body("m_c", "card", "ZZ", 100);
    let body = expecting(
        422,
        post(&client, &mesh, "/v1/payments", &token, Some("zz-1"), &zz).await?,
    )?;
    assert_eq!(
        (body["code"].as_str(), body["feature"].as_str()),
        (Some("unsupported_feature"), Some("create"))
    );

    // Resolve: reason required, operators only.
    let resolve = format!("/v1/payments/{card}/resolve");
    let no_reason = json!({"status": "failed"}).to_string();
    let body = expecting(422, post(&client, &mesh, &resolve, &token, None, &no_reason).await?)?;
    assert_eq!(body["code"], "invalid_reason");
    let (status, _) = post(
        &client,
        &mesh,
        &resolve,
        &token,
        None,
        &json!({"status": "failed", "reason": " "}).to_string(),
    )
    .await?;
    assert_eq!(status, 422);
    let (status, _) = post(
        &client,
        &mesh,
        &resolve,
        &mesh.api_key,
        None,
        &json!({"status": "failed", "reason": "r"}).to_string(),
    )
    .await?;
    assert_eq!(status, 403);
    // Another tenant's operator: 404 for every command.
    let other = mesh.other_operator_token();
    for command in ["cancel", "retry", "resolve"] {
        let body = match command {
            "resolve" => json!({"status": "failed", "reason": "not yours"}),
            _ => json!({"reason": "not yours"}),
        }
        .to_string();
        let (status, _) = post(
            &client,
            &mesh,
            &format!("/v1/payments/{card}/{command}"),
            &other,
            None,
            &body,
        )
        .await?;
        assert_eq!(status, 404, "{command}");
    }
    assert_eq!(
        inbound_count(&mesh).await?,
        before,
        "refused commands published nothing"
    );
    assert!(
        inbound(&mesh, format!("paytrack.in.{}.>", mesh.other_tenant))
            .await?
            .is_empty(),
        "nothing under the other tenant either"
    );

    // Supported commands are facts; a retry with the same key is a duplicate. The
    // payment is projected first, so each command is checked against its status.
    projected(&mesh, &token, &card).await?;
    let retry_path = format!("/v1/payments/{card}/retry");
    let retry = expecting(202, post(&client, &mesh, &retry_path, &mesh.api_key, None, "").await?)?;
    assert_eq!(
        retry["routing"]["provider"], "stdwebhooks",
        "a retry is routed: {retry}"
    );
    let cancel = format!("/v1/payments/{card}/cancel");
    let body = json!({"reason": "customer asked"}).to_string();
    let first = expecting(
        202,
        post(&client, &mesh, &cancel, &mesh.api_key, Some("c-1"), &body).await?,
    )?;
    assert_eq!(
        (first["command"].as_str(), first["duplicate"].as_bool()),
        (Some("cancel"), Some(false))
    );
    let (_, text) = post(&client, &mesh, &cancel, &mesh.api_key, Some("c-1"), &body).await?;
    let again: Value = serde_json::from_str(&text)?;
    assert_eq!(
        (again["seq"].clone(), again["duplicate"].as_bool()),
        (first["seq"].clone(), Some(true))
    );
    // Only investigation_required is resolved: refused before it is recorded.
    let confirmed = json!({"status": "failed", "reason": "bank confirmed"}).to_string();
    let body = expecting(409, post(&client, &mesh, &resolve, &token, None, &confirmed).await?)?;
    assert_eq!(body["code"], "state_conflict");
    assert_eq!(inbound_count(&mesh).await?, before + 2);
    // The reconciler applies the cancel.
    mesh.eventually(WAIT, "cancelled", || async {
        let (_, statuses) = mesh.timeline(&card).await.ok()?;
        statuses.iter().any(|s| s == "cancelled").then_some(())
    })
    .await?;
    Ok(())
}

/// Routing moves new payments away from a provider whose payments fail (reported by
/// its webhooks), and the create records why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_moves_traffic_away_from_a_failing_provider() -> anyhow::Result<()> {
    let (mesh, client, token) = start().await?;
    let mut failing = Vec::new();
    for i in 0..5 {
        let created = create(
            &client,
            &mesh,
            &token,
            &format!("r-{i}"),
            &create_body("m_r", "card", "US", 500),
        )
        .await?;
        assert_eq!(created["routing"]["provider"], "stdwebhooks", "{created}");
        failing.push(payment_id(&created));
    }
    for (i, payment) in failing.iter().enumerate() {
        let response = mesh
            .post_webhook(&format!("fail-{i}"), &Mesh::webhook_body(payment, "failed", "m_r"))
            .await?;
        assert_eq!(response.status(), 200);
    }
    let mut n = 0;
    let moved = eventually(WAIT, "a create routed away from stdwebhooks", || {
        n += 1;
        let key = format!("after-{n}");
        let (client, token, mesh) = (&client, &token, &mesh);
        async move {
            let created = create(client, mesh, token, &key, &create_body("m_r", "card", "US", 500))
                .await
                .ok()?;
            (created["routing"]["provider"] != "stdwebhooks").then_some(created)
        }
    })
    .await?;
    assert_eq!(moved["routing"]["provider"], "stripe", "{moved}");
    let reason = moved["routing"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("stdwebhooks (success 0% of 5)"), "{reason}");
    assert!(reason.contains("highest success rate"), "{reason}");
    // The decision is on the stored command, which is what the payment keeps.
    let payment = moved["payment_id"].as_str().unwrap_or_default();
    let stream = mesh.js.get_stream(subjects::STREAM_IN).await?;
    let fact = stream
        .get_last_raw_message_by_subject(&format!("paytrack.in.{}.{payment}", mesh.tenant))
        .await?;
    let fact: Value = serde_json::from_slice(&fact.payload)?;
    assert_eq!(fact["source"]["routing"]["provider"], "stripe", "{fact}");
    assert_eq!(fact["source"]["routing"]["reason"], reason);
    Ok(())
}

/// A push reaches the user's WebSocket `user:` subscriber with its position; a bad
/// key is 401 and a bad body 400. Every route is in `/openapi.json`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_reaches_a_user_subscriber_and_every_route_is_documented() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let client = http()?;
    let token = mesh.scoped_token("u_push", &["user:u_push"]);
    let mut ws = WsClient::connect(&mesh.ws_url(), &token).await?;
    ws.next_of("welcome", WAIT).await?;
    ws.send(json!({"type": "subscribe", "channel": "user:u_push"})).await?;
    ws.next_of("subscribed", WAIT).await?;

    let body = json!({"user": "u_push", "type": "order.ready", "data": {"order": "o-9"}}).to_string();
    let accepted = expecting(202, post(&client, &mesh, "/v1/push", &mesh.api_key, None, &body).await?)?;
    let event = ws.next_of("event", WAIT).await?;
    assert_eq!(event["kind"], "push");
    assert_eq!(event["channel"], "user:u_push");
    assert_eq!(event["push_type"], "order.ready");
    assert_eq!(event["data"], json!({"order": "o-9"}));
    assert_eq!(event["position"], accepted["position"], "{event} {accepted}");

    for (credential, body, want) in [
        ("pk_wrong", body.clone(), 401),
        (
            mesh.api_key.as_str(),
            json!({"user": "u push", "type": "t", "data": {}}).to_string(),
            400,
        ),
        (
            mesh.api_key.as_str(),
            json!({"user": "u_push", "data": {}}).to_string(),
            400,
        ),
        (
            mesh.api_key.as_str(),
            json!({"user": "u_push", "device": "all", "type": "t", "data": {}}).to_string(),
            400,
        ),
        (mesh.api_key.as_str(), "{".to_owned(), 400),
    ] {
        let (status, text) = post(&client, &mesh, "/v1/push", credential, None, &body).await?;
        assert_eq!(status, want, "{body}: {text}");
    }
    // A device push reaches that device only (here: not this token's, which has none).
    let stream = mesh.js.get_stream(subjects::STREAM_PUSH).await?;
    let device = json!({"user": "u_push", "device": "d1", "type": "t", "data": 1}).to_string();
    let (status, _) = post(&client, &mesh, "/v1/push", &mesh.api_key, None, &device).await?;
    assert_eq!(status, 202);
    let last = stream
        .get_last_raw_message_by_subject(&format!("paytrack.push.{}.u_push.d1", mesh.tenant))
        .await?;
    assert_eq!(serde_json::from_slice::<Value>(&last.payload)?["data"], 1);

    let doc: Value = client
        .get(format!("{}/openapi.json", mesh.ingest_url))
        .send()
        .await?
        .json()
        .await?;
    let routes = paytrack_ingest::routes();
    assert!(routes.len() >= 15);
    for route in routes {
        assert!(
            doc["paths"][route.path][route.method].is_object(),
            "{} {} is missing from /openapi.json",
            route.method,
            route.path
        );
    }
    for schema in [
        "CreatePaymentRequest",
        "PaymentCreated",
        "PushRequest",
        "PaymentView",
        "EvidencePack",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "{schema} is not documented"
        );
    }
    Ok(())
}

/// A claim whose owner died between claiming the key and answering (a pending claim
/// older than the claim timeout) is taken over with the payment id it recorded, so
/// the key still makes exactly one payment; a fresh claim of another body is 422.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_claim_is_taken_over_with_its_payment_id() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let client = http()?;
    let body = create_body("m_dead", "card", "US", 700);
    let fingerprint = paytrack_ingest::create_fingerprint(body.as_bytes()).context("a create body")?;
    let bucket = mesh.js.get_key_value(subjects::IDEMPOTENCY_BUCKET).await?;
    let key = paytrack_ingest::Idempotency::bucket_key(&mesh.tenant, "crashed-1");
    let claimed_at = chrono::Utc::now() - chrono::Duration::minutes(10);
    let pending = json!({
        "state": "pending", "body_hash": fingerprint, "payment_id": "pay_dead_owner", "claimed_at": claimed_at,
    });
    bucket.create(&key, pending.to_string().into()).await?;

    let token = mesh.operator_token();
    let (status, text) = post(&client, &mesh, "/v1/payments", &token, Some("crashed-1"), &body).await?;
    assert_eq!(status, 201, "{text}");
    let created: Value = serde_json::from_str(&text)?;
    assert_eq!(created["payment_id"], "pay_dead_owner");
    let (status, again) = post(&client, &mesh, "/v1/payments", &token, Some("crashed-1"), &body).await?;
    assert_eq!((status, &again), (201, &text));
    let facts = tenant_inbound(&mesh).await?;
    assert_eq!(facts, vec![(format!("paytrack.in.{}.pay_dead_owner", mesh.tenant), 1)]);
    let (status, ..) = mesh.wait_for_row("pay_dead_owner", 1).await?;
    assert_eq!(status, "initiated");
    Ok(())
}

/// Initiation requests a sandbox gateway received: each body, with its
/// `Idempotency-Key` header (if any) as `"idempotency-key"`.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<Value>>>;

/// A sandbox gateway for the initiation tests: every provider answers a
/// provider_ref and keeps the requests, except that `failing` answers its first
/// request 500 (and keeps nothing).
async fn sandbox_gateway(failing: &'static str) -> anyhow::Result<(String, Seen)> {
    use axum::extract::{Path, State};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    type Gateway = (Seen, &'static str, Arc<AtomicBool>);
    async fn initiate(
        State((seen, failing, failed)): State<Gateway>,
        Path(provider): Path<String>,
        headers: axum::http::HeaderMap,
        axum::Json(mut body): axum::Json<Value>,
    ) -> Result<axum::Json<Value>, axum::http::StatusCode> {
        if provider == failing && !failed.swap(true, Ordering::SeqCst) {
            return Err(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
        }
        let reference = format!("pi_{}", body["payment_id"].as_str().unwrap_or_default());
        if let Some(key) = headers.get("idempotency-key").and_then(|k| k.to_str().ok()) {
            body["idempotency-key"] = json!(key);
        }
        seen.lock()
            .map_err(|_| axum::http::StatusCode::INTERNAL_SERVER_ERROR)?
            .push(body);
        Ok(axum::Json(json!({"provider_ref": reference})))
    }
    let seen = Seen::default();
    let app = axum::Router::new()
        .route("/v1/providers/{provider}/payments", axum::routing::post(initiate))
        .with_state((seen.clone(), failing, Arc::new(AtomicBool::new(false))));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, seen))
}

/// A create asks the routed provider's sandbox gateway to initiate the payment and
/// records the provider_ref it answers. A gateway that fails (500) fails the create
/// with 503 and marks its provider unavailable: the next create is routed to the
/// other candidate, saying why, while the failed create's retry under its key asks
/// the same provider again (a 500 may hide a payment it made) under the same
/// payment id, and nothing was stored for it before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initiation_records_the_provider_ref_and_a_failing_gateway_is_avoided() -> anyhow::Result<()> {
    let (mesh, client, token, seen) = mesh_with_gateway("stdwebhooks").await?;
    let body = create_body("m_i", "card", "US", 900);
    // stdwebhooks (first preference) fails to initiate: 503, nothing stored.
    let (status, text) = post(&client, &mesh, "/v1/payments", &token, Some("i-1"), &body).await?;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("stdwebhooks could not initiate the payment"), "{text}");
    let bucket = mesh.js.get_key_value(subjects::IDEMPOTENCY_BUCKET).await?;
    let key = paytrack_ingest::Idempotency::bucket_key(&mesh.tenant, "i-1");
    let claim: Value = serde_json::from_slice(&bucket.get(&key).await?.context("the claim is kept")?)?;
    assert_eq!(claim["routing"]["provider"], "stdwebhooks", "{claim}");
    let claimed = claim["payment_id"].as_str().context("payment_id")?.to_owned();
    assert!(inbound(&mesh, format!("paytrack.in.*.{claimed}")).await?.is_empty());

    let second = expecting(
        201,
        post(&client, &mesh, "/v1/payments", &token, Some("i-2"), &body).await?,
    )?;
    let payment = second["payment_id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(second["routing"]["provider"], "stripe", "{second}");
    assert_eq!(second["routing"]["provider_ref"], format!("pi_{payment}"));
    let reason = second["routing"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("stdwebhooks (0 outcomes, too few to judge, unavailable)"),
        "{reason}"
    );

    // The retry of the failed create asks stdwebhooks again, for the claimed payment.
    let retried = expecting(
        201,
        post(&client, &mesh, "/v1/payments", &token, Some("i-1"), &body).await?,
    )?;
    assert_eq!(retried["payment_id"], claimed.as_str());
    assert_eq!(retried["routing"]["provider"], "stdwebhooks", "{retried}");
    assert_eq!(retried["routing"]["provider_ref"], format!("pi_{claimed}"));
    let requests = seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone();
    let asked = |id: &str| {
        json!({
            "tenant": mesh.tenant.as_str(), "payment_id": id, "amount_minor": 900,
            "currency": "USD", "rail": "card", "idempotency-key": id,
        })
    };
    assert_eq!(requests, vec![asked(&payment), asked(&claimed)]);

    // The provider's event names only the recorded reference (no metadata): it is the
    // created payment's fact, and moves it.
    let t = chrono::Utc::now().timestamp();
    let event = json!({
        "id": format!("evt_{payment}"), "object": "event", "created": t, "type": "payment_intent.succeeded",
        "data": {"object": {"id": format!("pi_{payment}"), "object": "payment_intent", "amount": 900,
            "currency": "usd", "metadata": {}, "created": t}},
    })
    .to_string();
    let response = mesh
        .post_provider_webhook("stripe", &format!("evt_{payment}"), &event)
        .await?;
    assert_eq!(response.status(), 200, "{}", response.text().await?);
    mesh.view_when(&payment, "the linked event moved the payment", |current| {
        current["status"] == "succeeded" && current["version"] == 2
    })
    .await?;
    Ok(())
}

/// A gateway that cannot even be connected to never saw the payment: the create
/// answers 503, and its retry under the same key is routed afresh, to the provider
/// that answers, under the same payment id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_whose_gateway_is_unreachable_is_retried_at_another_provider() -> anyhow::Result<()> {
    let (url, seen) = sandbox_gateway("none").await?;
    let closed = format!("http://127.0.0.1:{}", paytrack_tests::free_port_for_later()?);
    let (mesh, client, token, seen) = mesh_with_gateways(&format!("stdwebhooks={closed},stripe={url}"), seen).await?;
    let body = create_body("m_unreachable", "card", "US", 500);
    let (status, text) = post(&client, &mesh, "/v1/payments", &token, Some("u-1"), &body).await?;
    assert_eq!(status, 503, "{text}");
    let bucket = mesh.js.get_key_value(subjects::IDEMPOTENCY_BUCKET).await?;
    let key = paytrack_ingest::Idempotency::bucket_key(&mesh.tenant, "u-1");
    let claim: Value = serde_json::from_slice(&bucket.get(&key).await?.context("the claim is kept")?)?;
    assert!(claim["routing"].is_null(), "no provider kept: {claim}");
    let created = expecting(
        201,
        post(&client, &mesh, "/v1/payments", &token, Some("u-1"), &body).await?,
    )?;
    assert_eq!(created["payment_id"], claim["payment_id"]);
    assert_eq!(created["routing"]["provider"], "stripe", "{created}");
    let requests = seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone();
    assert_eq!(requests.len(), 1, "{requests:?}");
    Ok(())
}

/// The provider a create chose is in its idempotency claim before that provider is
/// asked: an ingest that died while asking leaves it behind, and the retry that takes
/// the claim over asks the same provider, never a second one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_names_its_provider_in_its_claim_before_asking_it() -> anyhow::Result<()> {
    use axum::extract::State;
    use tokio::sync::{mpsc, oneshot};
    type Arrivals = mpsc::Sender<oneshot::Sender<()>>;
    // A gateway that reports each request and answers only once released.
    async fn initiate(State(arrivals): State<Arrivals>, axum::Json(body): axum::Json<Value>) -> axum::Json<Value> {
        let (release, released) = oneshot::channel();
        let _ = arrivals.send(release).await;
        let _ = released.await;
        axum::Json(json!({"provider_ref": format!("pi_{}", body["payment_id"].as_str().unwrap_or_default())}))
    }
    let (arrived, mut arrivals) = mpsc::channel(4);
    let app = axum::Router::new()
        .route("/v1/providers/{provider}/payments", axum::routing::post(initiate))
        .with_state(arrived);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    let (mesh, client, token, _) =
        mesh_with_gateways(&format!("stdwebhooks={url},stripe={url}"), Seen::default()).await?;
    let body = create_body("m_noted", "card", "US", 300);
    let request = {
        let (client, mesh, token, body) = (client.clone(), mesh.ingest_url.clone(), token.clone(), body.clone());
        tokio::spawn(async move {
            client
                .post(format!("{mesh}/v1/payments"))
                .bearer_auth(token)
                .header("idempotency-key", "noted-1")
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
        })
    };
    let release = tokio::time::timeout(WAIT, arrivals.recv())
        .await?
        .context("the gateway was asked")?;
    let bucket = mesh.js.get_key_value(subjects::IDEMPOTENCY_BUCKET).await?;
    let key = paytrack_ingest::Idempotency::bucket_key(&mesh.tenant, "noted-1");
    let claim: Value = serde_json::from_slice(&bucket.get(&key).await?.context("the claim")?)?;
    assert_eq!(claim["state"], "pending", "{claim}");
    assert_eq!(
        claim["routing"]["provider"], "stdwebhooks",
        "chosen before asking: {claim}"
    );
    let _ = release.send(());
    let response = request.await??;
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await?;
    assert_eq!(created["routing"]["provider"], "stdwebhooks", "{created}");
    assert_eq!(created["payment_id"], claim["payment_id"]);
    Ok(())
}

/// A create whose fact JetStream refuses answers 503 and leaves its claim to the
/// caller's retry, which makes the payment under the same id (had the refused publish
/// been stored after all, its `Nats-Msg-Id` would de-duplicate the retry's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_whose_publish_fails_is_retried_under_the_same_payment_id() -> anyhow::Result<()> {
    let (mesh, client, token) = start().await?;
    let body = create_body("m_retry", "card", "US", 800);
    // PAYTRACK_IN refuses every message for a while.
    let original = refuse_inbound(&mesh).await?;
    let (status, text) = post(&client, &mesh, "/v1/payments", &token, Some("flaky-1"), &body).await?;
    assert_eq!(status, 503, "{text}");
    let bucket = mesh.js.get_key_value(subjects::IDEMPOTENCY_BUCKET).await?;
    let key = paytrack_ingest::Idempotency::bucket_key(&mesh.tenant, "flaky-1");
    let claim: Value = serde_json::from_slice(&bucket.get(&key).await?.context("the claim is kept")?)?;
    assert_eq!(claim["state"], "pending", "{claim}");
    let claimed = claim["payment_id"].as_str().unwrap_or_default().to_owned();

    mesh.js.update_stream(original).await?;
    let created = expecting(
        201,
        post(&client, &mesh, "/v1/payments", &token, Some("flaky-1"), &body).await?,
    )?;
    assert_eq!(created["payment_id"], claimed.as_str());
    let facts = tenant_inbound(&mesh).await?;
    assert_eq!(facts, vec![(format!("paytrack.in.{}.{claimed}", mesh.tenant), 1)]);
    Ok(())
}

/// A create retried after a 503 keeps the provider its first attempt chose and the
/// reference that provider answered: the provider is asked once, so it makes one
/// payment of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_retried_after_a_503_keeps_the_provider_it_first_asked() -> anyhow::Result<()> {
    let (mesh, client, token, seen) = mesh_with_gateway("none").await?;
    let body = create_body("m_twice", "card", "US", 700);
    let original = refuse_inbound(&mesh).await?;
    let (status, text) = post(&client, &mesh, "/v1/payments", &token, Some("twice-1"), &body).await?;
    assert_eq!(status, 503, "{text}");
    mesh.js.update_stream(original).await?;
    let created = expecting(
        201,
        post(&client, &mesh, "/v1/payments", &token, Some("twice-1"), &body).await?,
    )?;
    let requests = seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone();
    assert_eq!(requests.len(), 1, "asked once: {requests:?}");
    assert_eq!(requests[0]["idempotency-key"], created["payment_id"], "{}", requests[0]);
    let payment = created["payment_id"].as_str().context("payment_id")?;
    assert_eq!(created["routing"]["provider_ref"], format!("pi_{payment}"), "{created}");
    Ok(())
}

/// A claim abandoned after its provider was chosen is taken over with that provider,
/// even where the routing rules would choose another (another replica's health, or
/// a provider marked unavailable since): one payment is never made at two providers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_claim_is_taken_over_with_the_provider_it_chose() -> anyhow::Result<()> {
    let (mesh, client, token, seen) = mesh_with_gateway("none").await?;
    // card in the US routes to stdwebhooks first; the abandoned attempt chose stripe.
    let body = create_body("m_sticky", "card", "US", 900);
    let fingerprint = paytrack_ingest::create_fingerprint(body.as_bytes()).context("a create body")?;
    let bucket = mesh.js.get_key_value(subjects::IDEMPOTENCY_BUCKET).await?;
    let key = paytrack_ingest::Idempotency::bucket_key(&mesh.tenant, "sticky-1");
    let pending = json!({
        "state": "pending", "body_hash": fingerprint, "payment_id": "pay_sticky",
        "claimed_at": chrono::DateTime::<chrono::Utc>::UNIX_EPOCH,
        "routing": {"provider": "stripe", "provider_ref": "pi_first_attempt", "reason": "chosen by the first attempt"},
    });
    bucket.create(&key, pending.to_string().into()).await?;
    let created = expecting(
        201,
        post(&client, &mesh, "/v1/payments", &token, Some("sticky-1"), &body).await?,
    )?;
    assert_eq!(created["payment_id"], "pay_sticky");
    assert_eq!(created["routing"]["provider"], "stripe", "{created}");
    assert_eq!(created["routing"]["provider_ref"], "pi_first_attempt", "{created}");
    let requests = seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone();
    assert!(requests.is_empty(), "no provider asked again: {requests:?}");
    Ok(())
}

/// Command fact ids cannot be spelled by a key: a create whose key reads like a
/// cancel's fact id and that cancel are two facts. Every keyed command (cancel, retry,
/// push) reused with another body answers 422 and stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_commands_never_collide_and_a_key_reused_with_another_body_is_422() -> anyhow::Result<()> {
    let (mesh, client, token) = start().await?;
    let created =
        |value: Value| -> anyhow::Result<String> { Ok(value["payment_id"].as_str().context("payment_id")?.to_owned()) };
    let first = create_body("m_k", "card", "US", 100);
    let payment = created(expecting(
        201,
        post(&client, &mesh, "/v1/payments", &token, Some("first"), &first).await?,
    )?)?;
    // A create keyed like the cancel's fact id of the first payment.
    let (key, second) = (format!("{payment}:cancel:K"), create_body("m_k", "card", "US", 200));
    let other = created(expecting(
        201,
        post(&client, &mesh, "/v1/payments", &token, Some(&key), &second).await?,
    )?)?;
    // Projected first, so each command below is checked against its status: the
    // retry (of an initiated payment) before the cancel.
    for id in [&payment, &other] {
        projected(&mesh, &token, id).await?;
    }
    let retry = format!("/v1/payments/{payment}/retry");
    let (status, text) = post(&client, &mesh, &retry, &mesh.api_key, Some("R"), "").await?;
    assert_eq!(status, 202, "{text}");
    let cancel = format!("/v1/payments/{payment}/cancel");
    let first_reason = json!({"reason": "customer asked"}).to_string();
    let accepted = expecting(
        202,
        post(&client, &mesh, &cancel, &mesh.api_key, Some("K"), &first_reason).await?,
    )?;
    assert_eq!(
        accepted["duplicate"], false,
        "the cancel is a fact of its own: {accepted}"
    );
    let before = inbound_count(&mesh).await?;
    let in_tenant = format!("paytrack.in.{}.>", mesh.tenant);
    assert_eq!(
        inbound(&mesh, in_tenant.clone())
            .await?
            .into_iter()
            .collect::<std::collections::BTreeMap<_, _>>(),
        [
            (format!("paytrack.in.{}.{payment}", mesh.tenant), 3),
            (format!("paytrack.in.{}.{other}", mesh.tenant), 1),
        ]
        .into_iter()
        .collect()
    );

    // The same key again: the same body is a duplicate, another body is 422.
    let (status, text) = post(&client, &mesh, &cancel, &mesh.api_key, Some("K"), &first_reason).await?;
    assert_eq!(status, 202, "{text}");
    assert_eq!(serde_json::from_str::<Value>(&text)?["duplicate"], true, "{text}");
    let (status, text) = post(&client, &mesh, &retry, &mesh.api_key, Some("R"), "").await?;
    assert_eq!(status, 202, "{text}");
    assert_eq!(serde_json::from_str::<Value>(&text)?["duplicate"], true, "{text}");
    let push = json!({"user": "u_k", "type": "order.ready", "data": {"n": 1}}).to_string();
    let (status, text) = post(&client, &mesh, "/v1/push", &mesh.api_key, Some("P"), &push).await?;
    assert_eq!(status, 202, "{text}");
    let pushes = mesh.stream_messages(subjects::STREAM_PUSH).await?;
    for (path, key, body) in [
        (cancel.as_str(), "K", json!({"reason": "another reason"}).to_string()),
        (cancel.as_str(), "K", String::new()),
        (retry.as_str(), "R", json!({"reason": "again"}).to_string()),
        (
            "/v1/push",
            "P",
            json!({"user": "u_k", "type": "order.ready", "data": {"n": 2}}).to_string(),
        ),
        (
            "/v1/push",
            "P",
            json!({"user": "u_other", "type": "order.ready", "data": {"n": 1}}).to_string(),
        ),
    ] {
        let (status, text) = post(&client, &mesh, path, &mesh.api_key, Some(key), &body).await?;
        assert_eq!(status, 422, "{path} {key} {body}: {text}");
        assert_eq!(serde_json::from_str::<Value>(&text)?["code"], "idempotency_key_reused");
    }
    // The operator's resolve with a key reused with another status: 422 too (the
    // first is refused by the payment's status, but the key names its body).
    let resolve = format!("/v1/payments/{other}/resolve");
    let resolved = json!({"status": "failed", "reason": "bank confirmed"}).to_string();
    let (status, text) = post(&client, &mesh, &resolve, &token, Some("S"), &resolved).await?;
    assert_eq!(status, 409, "{text}");
    let changed = json!({"status": "succeeded", "reason": "bank confirmed"}).to_string();
    let (status, text) = post(&client, &mesh, &resolve, &token, Some("S"), &changed).await?;
    assert_eq!(status, 422, "{text}");
    assert_eq!(inbound_count(&mesh).await?, before, "refused bodies stored nothing");
    assert_eq!(mesh.stream_messages(subjects::STREAM_PUSH).await?, pushes);
    Ok(())
}

/// A key reused after its TTL makes a second payment whose fact (and raw evidence)
/// is its own: the create's fact id names its payment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_reused_after_its_ttl_makes_a_payment_with_its_own_evidence() -> anyhow::Result<()> {
    let (mesh, client, token) = start().await?;
    let first_body = create_body("m_ttl", "card", "US", 100);
    let first = expecting(
        201,
        post(&client, &mesh, "/v1/payments", &token, Some("reused"), &first_body).await?,
    )?;
    // The key's TTL runs out: the bucket forgets it.
    let bucket = mesh.js.get_key_value(subjects::IDEMPOTENCY_BUCKET).await?;
    let keys: Vec<String> = bucket.keys().await?.try_collect().await?;
    assert!(!keys.is_empty());
    for key in keys {
        bucket.purge(key).await?;
    }
    let second_body = create_body("m_ttl", "card", "US", 300);
    let second = expecting(
        201,
        post(&client, &mesh, "/v1/payments", &token, Some("reused"), &second_body).await?,
    )?;
    let payment = second["payment_id"].as_str().context("payment_id")?.to_owned();
    assert_ne!(first["payment_id"], second["payment_id"]);
    assert_ne!(first["fact_id"], second["fact_id"], "every fact id names its payment");
    let (status, version, ..) = mesh.wait_for_row(&payment, 1).await?;
    assert_eq!((status.as_str(), version), ("initiated", 1));
    let evidence: Value = mesh
        .eventually(WAIT, "the second create's evidence", || async {
            let response = mesh
                .get(&format!("/v1/payments/{payment}/evidence"), &token)
                .await
                .ok()?;
            let pack: Value = response.json().await.ok()?;
            (!pack["facts"].as_array()?.is_empty()).then_some(pack)
        })
        .await?;
    let facts = evidence["facts"].as_array().context("facts")?;
    assert_eq!(facts.len(), 1, "{evidence}");
    assert_eq!(facts[0]["raw_body"], second_body.as_str());
    assert_eq!(facts[0]["fact_id"], second["fact_id"]);
    Ok(())
}
