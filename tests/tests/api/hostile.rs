//! What an adversary (or a careless client) sends: end-user tokens reaching for other
//! payments, claims that would widen a filter, tokens not valid yet, headers that
//! overflowed the signature library, bodies PostgreSQL cannot store, half-sent
//! requests, oversized WebSocket frames, and settings that only failed per request.

use std::time::Duration;

use paytrack_shared::TenantId;
use paytrack_shared::config::Settings;
use paytrack_tests::ws::{Upgrade, WsClient};
use paytrack_tests::{Mesh, mesh::MeshOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(60);

/// Signs arbitrary claims with the mesh's secret.
fn forge(mesh: &Mesh, claims: serde_json::Value) -> anyhow::Result<String> {
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(mesh.jwt_secret.as_bytes()),
    )?)
}

fn claims(mesh: &Mesh, extra: serde_json::Value) -> serde_json::Value {
    let now = chrono::Utc::now().timestamp();
    let mut claims = serde_json::json!({
        "sub": "user-1", "tenant": mesh.tenant.as_str(), "exp": now + 600,
        "aud": "paytrack", "iss": "paytrack",
    });
    if let (Some(map), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
        map.extend(extra.clone());
    }
    claims
}

async fn status_and_error(mesh: &Mesh, path: &str, credential: &str) -> anyhow::Result<(u16, String)> {
    let response = mesh.get(path, credential).await?;
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    Ok((status, body["code"].as_str().unwrap_or_default().to_owned()))
}

/// A token with `channels` reads only the payments they name: `payment:<id>` that
/// payment, `merchant:<m>` that merchant's, `payments` all of the tenant's. Anything
/// else is 403 (also for a payment that does not exist); another tenant's payment is
/// still 404; operator tokens and API keys read everything of their tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_user_tokens_read_only_the_payments_their_channels_name() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    mesh.post_webhook("msg_eu_1", &Mesh::webhook_body("pay_mine", "pending", "m_1"))
        .await?;
    mesh.post_webhook("msg_eu_2", &Mesh::webhook_body("pay_secret", "pending", "m_2"))
        .await?;
    mesh.wait_for_row("pay_mine", 1).await?;
    mesh.wait_for_row("pay_secret", 1).await?;

    let mine = mesh.scoped_token("user-1", &["payment:pay_mine", "user:user-1"]);
    let merchant_2 = mesh.scoped_token("user-2", &["merchant:m_2"]);
    let everything = mesh.scoped_token("console", &["payments"]);
    let operator = mesh.operator_token();
    for suffix in ["", "/timeline", "/evidence"] {
        let path = |p: &str| format!("/v1/payments/{p}{suffix}");
        assert_eq!(
            status_and_error(&mesh, &path("pay_mine"), &mine).await?.0,
            200,
            "{suffix}"
        );
        assert_eq!(
            status_and_error(&mesh, &path("pay_secret"), &mine).await?,
            (403, "forbidden".to_owned()),
            "{suffix}"
        );
        // Not granted and not existing: the same 403, nothing learned.
        assert_eq!(status_and_error(&mesh, &path("pay_nowhere"), &mine).await?.0, 403);
        assert_eq!(status_and_error(&mesh, &path("pay_secret"), &merchant_2).await?.0, 200);
        assert_eq!(status_and_error(&mesh, &path("pay_mine"), &merchant_2).await?.0, 403);
        assert_eq!(status_and_error(&mesh, &path("pay_nowhere"), &merchant_2).await?.0, 403);
        for full in [&everything, &operator, &mesh.api_key] {
            assert_eq!(status_and_error(&mesh, &path("pay_secret"), full).await?.0, 200);
        }
    }
    // The evidence pack of the granted payment is its own.
    let evidence: serde_json::Value = mesh.get("/v1/payments/pay_mine/evidence", &mine).await?.json().await?;
    assert_eq!(evidence["payment"]["payment_id"], "pay_mine");

    // Another tenant's token granted the same payment id: 404, as for operators.
    let foreign = mesh.jwt.mint(
        "user-1",
        &TenantId::new("another-tenant")?,
        60,
        Some(vec!["payment:pay_mine".to_owned()]),
        None,
    );
    assert_eq!(
        status_and_error(&mesh, "/v1/payments/pay_mine", &foreign).await?,
        (404, "not_found".to_owned())
    );
    Ok(())
}

/// A `device` claim goes into a JetStream filter (`paytrack.push.<t>.<u>.<device>`):
/// one that is not a subject token (`>`, `*`, dots) is refused when the token is
/// verified, 401 at the WebSocket upgrade and over REST; a sane one still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_claim_that_could_widen_a_filter_is_refused() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    for device in [">", "*", "d.>", ""] {
        let token = mesh.jwt.mint(
            "user-1",
            &mesh.tenant,
            600,
            Some(vec!["user:user-1".into()]),
            Some(device.into()),
        );
        match WsClient::try_connect(&mesh.ws_url(), Some(&token)).await? {
            Upgrade::Refused(status) => assert_eq!(status, 401, "{device:?}"),
            Upgrade::Open(_) => anyhow::bail!("device {device:?} was accepted at the upgrade"),
        }
        assert_eq!(status_and_error(&mesh, "/v1/payments/pay_x", &token).await?.0, 401);
    }
    let sane = mesh.jwt.mint(
        "user-1",
        &mesh.tenant,
        600,
        Some(vec!["user:user-1".into()]),
        Some("phone-1".into()),
    );
    WsClient::connect(&mesh.ws_url(), &sane).await?;
    Ok(())
}

/// A `sub` claim names a user in subjects, filters, presence keys and the actor of
/// every command: one that is not an id (empty, dotted, spaced, a control character,
/// too long) is refused when the token is verified, 401 with a problem body over REST
/// and at the WebSocket upgrade, and the refused command publishes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sub_claim_that_is_no_user_id_is_refused_and_changes_nothing() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let client = reqwest::Client::builder().timeout(WAIT).build()?;
    let body = serde_json::json!({
        "merchant_id": "m_sub", "amount_minor": 100, "currency": "USD", "rail": "card", "country": "US",
    })
    .to_string();
    let long = "u".repeat(65);
    for (i, sub) in ["", "op.1", "op 1", "op\u{7}", long.as_str()].into_iter().enumerate() {
        let token = mesh.jwt.mint(sub, &mesh.tenant, 600, None, None);
        let response = client
            .post(format!("{}/v1/payments", mesh.ingest_url))
            .bearer_auth(&token)
            .header("idempotency-key", format!("sub-{i}"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await?;
        assert_eq!(response.status(), 401, "{sub:?}");
        let problem: serde_json::Value = response.json().await?;
        assert_eq!(problem["code"], "unauthorized", "{sub:?}: {problem}");
        assert!(
            problem["detail"].as_str().unwrap_or_default().contains("sub"),
            "{sub:?}: {problem}"
        );
        assert!(matches!(
            WsClient::try_connect(&mesh.ws_url(), Some(&token)).await?,
            Upgrade::Refused(401)
        ));
    }
    assert_eq!(mesh.stream_messages(paytrack_shared::subjects::STREAM_IN).await?, 0);
    Ok(())
}

/// A token whose `nbf` is an hour away is not valid yet: 401 at the upgrade and over
/// REST.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_not_valid_before_an_hour_from_now_is_refused() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let later = chrono::Utc::now().timestamp() + 3600;
    let token = forge(
        &mesh,
        claims(&mesh, serde_json::json!({ "nbf": later, "exp": later + 600 })),
    )?;
    assert!(matches!(
        WsClient::try_connect(&mesh.ws_url(), Some(&token)).await?,
        Upgrade::Refused(401)
    ));
    assert_eq!(status_and_error(&mesh, "/v1/payments/pay_x", &token).await?.0, 401);
    Ok(())
}

/// `webhook-timestamp: -9223372036854775808` overflowed inside the signature library
/// and dropped the connection without an answer; now it is a 401 like any other
/// unusable timestamp, and the server keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_i64_min_webhook_timestamp_is_answered_401() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let body = Mesh::webhook_body("pay_min", "pending", "m_1");
    for timestamp in ["-9223372036854775808", "9223372036854775807", "-1"] {
        let mut headers = mesh.sign("msg_min", &body)?;
        for (name, value) in headers.iter_mut() {
            if name == "webhook-timestamp" {
                *value = timestamp.to_owned();
            }
        }
        let response = mesh.post_webhook_with(&headers, &body).await?;
        assert_eq!(response.status(), 401, "{timestamp}");
        let answer: serde_json::Value = response.json().await?;
        assert_eq!(answer["code"], "invalid_signature");
    }
    assert_eq!(mesh.post_webhook("msg_min", &body).await?.status(), 200);
    Ok(())
}

/// A signed webhook whose strings hold a NUL (which PostgreSQL cannot store) or a
/// control character in a kept field is refused with 400 at the edge, and nothing
/// reaches PAYTRACK_IN. The inputs are the hostile table's NUL and control cases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_holding_nul_or_control_characters_are_refused_400() -> anyhow::Result<()> {
    use paytrack_tests::hostile::{self, Context, Fields};
    let mesh = Mesh::start().await?;
    let context = Context {
        other_tenants_payment: "pay_other".to_owned(),
    };
    let cases: Vec<_> = hostile::table()
        .into_iter()
        .filter(|c| c.name.contains("NUL") || c.name.contains("control"))
        .collect();
    assert!(cases.len() >= 4, "the table holds the NUL and control cases");
    for (i, case) in cases.iter().enumerate() {
        let fields = Fields::normal(&format!("msg_nul_{i}"), "pay_nul");
        let (id, body) = hostile::event("stdwebhooks", &[case], fields, &context);
        let response = mesh.post_webhook(&id, &body).await?;
        assert_eq!(response.status(), 400, "{}", case.name);
        assert_eq!(response.json::<serde_json::Value>().await?["code"], "invalid_request");
    }
    assert_eq!(mesh.stream_messages(paytrack_shared::subjects::STREAM_IN).await?, 0);
    Ok(())
}

/// The property test of `verify_and_parse`, smaller, through the real HTTP handler:
/// arbitrary header values and bodies are answered with a 4xx, never a dropped
/// connection or a 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_webhooks_over_http_get_a_4xx() -> anyhow::Result<()> {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    let mesh = Mesh::start().await?;
    let handle = tokio::runtime::Handle::current();
    let value = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        any::<i64>().prop_map(|n| n.to_string().into_bytes()),
        Just(i64::MIN.to_string().into_bytes()),
    ];
    let case = (
        value.clone(),
        value.clone(),
        value,
        proptest::collection::vec(any::<u8>(), 0..256),
    );
    let mut runner = TestRunner::new(Config {
        cases: 48,
        failure_persistence: None,
        ..Config::default()
    });
    let result = tokio::task::block_in_place(|| {
        runner.run(&case, |(id, ts, sig, body)| {
            let outcome = handle.block_on(async {
                let mut request = reqwest::Client::new()
                    .post(format!("{}/v1/webhooks/{}/stdwebhooks", mesh.ingest_url, mesh.tenant))
                    .body(body);
                for (name, raw) in [
                    ("webhook-id", id),
                    ("webhook-timestamp", ts),
                    ("webhook-signature", sig),
                ] {
                    if let Ok(v) = reqwest::header::HeaderValue::from_bytes(&raw) {
                        request = request.header(name, v);
                    }
                }
                request.send().await.map(|r| r.status().as_u16())
            });
            match outcome {
                Ok(status) => prop_assert!((400..500).contains(&status), "answered {}", status),
                Err(error) => prop_assert!(false, "no answer: {}", error),
            }
            Ok(())
        })
    });
    result.map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// A client that sends half its headers is disconnected once the header-read timeout
/// passes, on ingest and on the edge (it held the connection forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_request_is_closed_after_the_header_timeout() -> anyhow::Result<()> {
    let timeout = Duration::from_millis(500);
    let mesh = Mesh::start_with(MeshOptions {
        http_header_read_timeout_ms: timeout.as_millis() as u64,
        ..MeshOptions::default()
    })
    .await?;
    let ingest = mesh.ingest_url.trim_start_matches("http://").to_owned();
    for addr in [ingest, mesh.edge_addr.to_string()] {
        let mut client = tokio::net::TcpStream::connect(&addr).await?;
        client
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await?;
        let mut rest = Vec::new();
        // Observed close: read_to_end returns (EOF or reset). The outer bound only
        // turns a hang into a failure.
        let closed = tokio::time::timeout(WAIT, client.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "{addr} kept a half-sent request open for {WAIT:?}");
    }
    Ok(())
}

/// A 1 MiB WebSocket frame is refused from its header (close 1009) without the edge
/// waiting for, or reserving room for, its payload: the client sends the header and
/// 1 KiB only, and the close still comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_websocket_frame_closes_the_session_1009() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let mut client = WsClient::connect(&mesh.ws_url(), &mesh.operator_token()).await?;
    let len: u64 = 1 << 20;
    let mut frame = vec![0x82, 0x80 | 127];
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]);
    frame.extend_from_slice(&[0u8; 1024]);
    client.send_raw(&frame).await?;
    assert_eq!(client.closed(WAIT).await?, 1009);
    Ok(())
}

/// A malformed `whsec_` secret was found per request as a 500; now the settings are
/// refused when read, naming the key, so no service starts with them.
#[test]
fn a_malformed_webhook_secret_stops_start_up_naming_the_key() {
    let error = Settings::from_pairs([
        ("jwt_secret", "s3cret".to_owned()),
        ("webhook_secrets", "acme/stdwebhooks=whsec_not*base64".to_owned()),
    ])
    .expect_err("a malformed whsec_ secret was accepted");
    let message = error.to_string();
    assert!(message.contains("PAYTRACK_WEBHOOK_SECRETS"), "{message}");
    assert!(message.contains("webhook_secrets"), "{message}");
    assert!(!message.contains("not*base64"), "the secret was echoed: {message}");
}

/// The property test of the whole mesh: every scheme's signed events, bent by one or
/// two cases of the hostile table at once (extreme times and amounts, ids, NULs,
/// nesting, repeated keys), are answered 2xx or 4xx, never 5xx or no answer; what is
/// stored flows through the reconciler and the projector, and afterwards every
/// service still runs and an ordinary payment of each scheme is still projected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mesh_answers_every_schemes_hostile_events_and_keeps_processing() -> anyhow::Result<()> {
    use paytrack_tests::hostile::{self, Context, Fields, SCHEMES};
    use paytrack_tests::mesh::{RAZORPAY_SECRET, STRIPE_SECRET};
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    let mesh = Mesh::start().await?;
    let handle = tokio::runtime::Handle::current();
    let table = hostile::table();
    // Another tenant's payment, whose id the table's events reach for.
    let theirs = "pay_of_the_other_tenant";
    let response = mesh
        .post_other_webhook("msg_theirs", &Mesh::webhook_body(theirs, "pending", "m_1"))
        .await?;
    assert_eq!(response.status(), 200);
    let their_row = || async {
        sqlx::query_as::<_, (String, i64)>("SELECT status, version FROM payments WHERE tenant = $1 AND payment_id = $2")
            .bind(mesh.other_tenant.as_str())
            .bind(theirs)
            .fetch_optional(&mesh.db)
            .await
    };
    mesh.eventually(
        Duration::from_secs(30),
        "the other tenant's payment projected",
        || async { their_row().await.ok().flatten() },
    )
    .await?;
    let context = Context {
        other_tenants_payment: theirs.to_owned(),
    };
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let serial = std::sync::atomic::AtomicU64::new(0);
    let send = |provider: &'static str, cases: &[&hostile::Case]| {
        let n = serial.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let fields = Fields::normal(&format!("evt_prop_{n}"), &format!("pay_prop_{n}"));
        let (event_id, body) = hostile::event(provider, cases, fields, &context);
        let (mesh, http) = (&mesh, &http);
        async move {
            let headers = match provider {
                "stdwebhooks" => mesh.sign(&event_id, &body)?,
                "razorpay" => hostile::sign(provider, RAZORPAY_SECRET, &event_id, &body)?,
                _ => hostile::sign(provider, STRIPE_SECRET, &event_id, &body)?,
            };
            hostile::post(http, &mesh.ingest_url, mesh.tenant.as_str(), provider, &headers, body).await
        }
    };
    let case = (0..SCHEMES.len(), 0..table.len(), 0..table.len());
    let mut runner = TestRunner::new(Config {
        cases: 36,
        failure_persistence: None,
        ..Config::default()
    });
    let result = tokio::task::block_in_place(|| {
        runner.run(&case, |(scheme, a, b)| {
            let cases = [&table[a], &table[b]];
            let provider = SCHEMES[scheme];
            match handle.block_on(send(provider, &cases)) {
                Ok((status, answer)) => prop_assert!(
                    (200..500).contains(&status),
                    "{} with {:?} + {:?}: {} {}",
                    provider,
                    table[a].name,
                    table[b].name,
                    status,
                    answer
                ),
                Err(error) => prop_assert!(
                    false,
                    "{} with {:?} + {:?}: no answer: {}",
                    provider,
                    table[a].name,
                    table[b].name,
                    error
                ),
            }
            Ok(())
        })
    });
    result.map_err(|e| anyhow::anyhow!("{e}"))?;

    // Every service survived, and an ordinary payment of each scheme is projected.
    for provider in SCHEMES {
        let payment = format!("pay_after_{provider}");
        let fields = Fields::normal(&format!("evt_after_{provider}"), &payment);
        let body = hostile::body(provider, &fields);
        let headers = match provider {
            "stdwebhooks" => mesh.sign(&fields.event_id, &body)?,
            "razorpay" => hostile::sign(provider, RAZORPAY_SECRET, &fields.event_id, &body)?,
            _ => hostile::sign(provider, STRIPE_SECRET, &fields.event_id, &body)?,
        };
        let (status, answer) =
            hostile::post(&http, &mesh.ingest_url, mesh.tenant.as_str(), provider, &headers, body).await?;
        assert_eq!(status, 200, "{provider}: {answer}");
        mesh.wait_for_row(&payment, 1).await?;
    }
    mesh.check_services()?;
    // The events that named the other tenant's payment changed nothing of theirs.
    assert_eq!(their_row().await?, Some(("pending".to_owned(), 1)));
    Ok(())
}

/// A NUL (or an over-long value) in a query parameter or a path segment is the
/// caller's mistake: 4xx, never a 500 from PostgreSQL ("invalid byte sequence").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_in_a_query_parameter_or_path_segment_is_a_4xx() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let operator = mesh.operator_token();
    let long = "p".repeat(1_000);
    for path in [
        "/v1/alerts?payment_id=%00".to_owned(),
        "/v1/alerts?kind=%00".to_owned(),
        "/v1/alerts?payment_id=pay%00x&kind=unclear_pending".to_owned(),
        "/v1/payments?cursor=%00".to_owned(),
        "/v1/payments?cursor=pay%00x".to_owned(),
        format!("/v1/payments?cursor={long}"),
        format!("/v1/alerts?payment_id={long}"),
    ] {
        let (status, error) = status_and_error(&mesh, &path, &operator).await?;
        assert_eq!(
            (status, error.as_str()),
            (400, "invalid_request"),
            "{}",
            &path[..path.len().min(60)]
        );
    }
    for alert in ["%00", "a%00b", &long] {
        let response = reqwest::Client::new()
            .post(format!("{}/v1/alerts/{alert}/ack", mesh.ingest_url))
            .bearer_auth(&operator)
            .json(&serde_json::json!({}))
            .send()
            .await?;
        assert_eq!(response.status(), 404, "{}", &alert[..alert.len().min(20)]);
    }
    // Sane values still work.
    assert_eq!(
        status_and_error(&mesh, "/v1/alerts?kind=dead_letter&payment_id=pay_1", &operator)
            .await?
            .0,
        200
    );
    assert_eq!(
        status_and_error(&mesh, "/v1/payments?limit=5&status=pending", &operator)
            .await?
            .0,
        200
    );
    Ok(())
}

/// A request declaring a body larger than allowed (10 GB) and sending one byte is
/// answered 413 at once, on the webhook and the command endpoints; before, it got no
/// answer at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_10_gb_body_is_answered_413_at_once() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let addr = mesh.ingest_url.trim_start_matches("http://").to_owned();
    for path in [
        format!("/v1/webhooks/{}/stdwebhooks", mesh.tenant),
        "/v1/payments".to_owned(),
    ] {
        let mut socket = tokio::net::TcpStream::connect(&addr).await?;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: ingest\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n{{",
            mesh.api_key
        );
        socket.write_all(head.as_bytes()).await?;
        let mut answer = vec![0u8; 4096];
        let read = tokio::time::timeout(WAIT, socket.read(&mut answer))
            .await
            .map_err(|_| anyhow::anyhow!("{path}: no answer within {WAIT:?}"))??;
        let answer = String::from_utf8_lossy(&answer[..read]);
        assert!(answer.starts_with("HTTP/1.1 413"), "{path}: {answer}");
        assert!(answer.contains("body_too_large"), "{path}: {answer}");
    }
    Ok(())
}
