//! Who may see what: channels outside a token's rights, other tenants' payments,
//! missing or invalid credentials.

use std::time::Duration;

use paytrack_shared::TenantId;
use paytrack_tests::Mesh;
use paytrack_tests::ws::WsClient;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

/// A channel the token does not grant gets `error` 4003 and nothing else; an unknown
/// channel gets 4000; granted channels still work on the same session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_outside_the_token_are_refused() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let token = mesh.scoped_token("user-1", &["payment:pay_mine"]);
    let mut client = WsClient::connect(&mesh.ws_url(), &token).await?;

    for (channel, code) in [
        ("payment:pay_other", 4003),
        ("payments", 4003),
        ("user:user-2", 4003),
        ("ledger:x", 4000),
    ] {
        client.send(json!({"type": "subscribe", "channel": channel})).await?;
        let error = client.next_of("error", WAIT).await?;
        assert_eq!(error["code"], code, "{channel}");
    }
    client
        .send(json!({"type": "subscribe", "channel": "payment:pay_mine"}))
        .await?;
    let subscribed = client.next_of("subscribed", WAIT).await?;
    assert_eq!(subscribed["channel"], "payment:pay_mine");

    // An event of the forbidden payment never reaches this session: the next event is
    // the granted payment's.
    mesh.post_webhook("msg_acc_1", &Mesh::webhook_body("pay_other", "pending", "m_1"))
        .await?;
    mesh.wait_for_row("pay_other", 1).await?;
    mesh.post_webhook("msg_acc_2", &Mesh::webhook_body("pay_mine", "pending", "m_1"))
        .await?;
    let event = client.next_of("event", WAIT).await?;
    assert_eq!(event["payment_id"], "pay_mine");

    // An operator token may not read another user's push channel either.
    let mut operator = WsClient::connect(&mesh.ws_url(), &mesh.operator_token()).await?;
    operator
        .send(json!({"type": "subscribe", "channel": "user:someone-else"}))
        .await?;
    assert_eq!(operator.next_of("error", WAIT).await?["code"], 4003);
    Ok(())
}

/// The tenant comes from the credential: another tenant's payment is 404, and no or a
/// bad credential is 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_reads_stay_inside_the_credentials_tenant() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    mesh.post_webhook("msg_ten_1", &Mesh::webhook_body("pay_t", "pending", "m_1"))
        .await?;
    mesh.wait_for_row("pay_t", 1).await?;

    assert_eq!(
        mesh.get("/v1/payments/pay_t", &mesh.operator_token()).await?.status(),
        200
    );
    let foreign = mesh.jwt.mint("op", &TenantId::new("another-tenant")?, 60, None, None);
    let response = mesh.get("/v1/payments/pay_t", &foreign).await?;
    assert_eq!(response.status(), 404);
    assert_eq!(response.json::<serde_json::Value>().await?["code"], "not_found");
    assert_eq!(mesh.get("/v1/payments/pay_t/timeline", &foreign).await?.status(), 404);

    assert_eq!(mesh.get("/v1/payments/pay_t", "garbage").await?.status(), 401);
    let anonymous = reqwest::get(format!("{}/v1/payments/pay_t", mesh.ingest_url)).await?;
    assert_eq!(anonymous.status(), 401);
    assert_eq!(
        mesh.get("/v1/payments/pay_unknown", &mesh.operator_token())
            .await?
            .status(),
        404
    );
    Ok(())
}

/// An end user's evidence pack lists only that user's sessions: two users and an
/// operator watch one payment; each user sees one session, its own; the operator all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_end_users_evidence_lists_only_its_own_sessions() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let channel = "payment:pay_seen";
    let operator = mesh.operator_token();
    let (alice, bob) = (
        mesh.scoped_token("user-alice", &[channel]),
        mesh.scoped_token("user-bob", &[channel, "payments"]),
    );
    let mut clients = Vec::new();
    for token in [&operator, &alice, &bob] {
        let mut client = WsClient::connect(&mesh.ws_url(), token).await?;
        client.send(json!({"type": "subscribe", "channel": channel})).await?;
        client.next_of("subscribed", WAIT).await?;
        clients.push(client);
    }
    mesh.post_webhook("msg_seen_1", &Mesh::webhook_body("pay_seen", "pending", "m_1"))
        .await?;
    mesh.wait_for_row("pay_seen", 1).await?;
    let subjects_seen = |token: String| {
        let mesh = &mesh;
        async move {
            let response = mesh.get("/v1/payments/pay_seen/evidence", &token).await.ok()?;
            let pack: serde_json::Value = response.json().await.ok()?;
            let mut subjects: Vec<String> = pack["sessions"]
                .as_array()?
                .iter()
                .filter_map(|s| s["subject"].as_str().map(str::to_owned))
                .collect();
            subjects.sort();
            Some(subjects)
        }
    };
    mesh.eventually(WAIT, "every session in the operator's pack", || {
        let seen = subjects_seen(operator.clone());
        async move { seen.await.filter(|s| s.len() == 3) }
    })
    .await?;
    assert_eq!(subjects_seen(alice.clone()).await, Some(vec!["user-alice".to_owned()]));
    assert_eq!(subjects_seen(bob.clone()).await, Some(vec!["user-bob".to_owned()]));
    drop(clients);
    Ok(())
}
