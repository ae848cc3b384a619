//! A payment's rail, and so its finality, whatever order its facts arrive in: a create
//! that arrives after its payment's webhooks still gives the payment its terms, and a
//! payment known only from webhooks takes its rail from the provider's own event.

use std::time::Duration;

use paytrack_tests::{Mesh, facts};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

/// The payment as REST shows it once it is final, or the last view at the deadline.
async fn final_view(mesh: &Mesh, payment: &str) -> anyhow::Result<Value> {
    let found = mesh
        .view_when(payment, &format!("{payment} final"), |view| view["final"] == true)
        .await;
    match found {
        Ok(view) => Ok(view),
        Err(error) => {
            let last = mesh.payment_view(payment).await?;
            anyhow::bail!("{error}: {last}")
        }
    }
}

/// A create that arrives after its payment's webhooks (refused: the payment already
/// moved) still completes the payment's terms: it becomes final on the create's rail,
/// whether the create arrives between the webhooks or after the last one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_beaten_by_its_webhooks_still_gives_the_payment_its_rail() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let tenant = mesh.tenant.clone();
    // Between: pending, then the create, then the success.
    mesh.post_webhook("msg_between_1", &Mesh::webhook_body("pay_between", "pending", "m_1"))
        .await?;
    mesh.wait_for_row("pay_between", 1).await?;
    facts::publish(&mesh.js, &facts::create(&tenant, "pay_between", "card", "stdwebhooks")?).await?;
    mesh.wait_for_row("pay_between", 2).await?;
    mesh.post_webhook("msg_between_2", &Mesh::webhook_body("pay_between", "succeeded", "m_1"))
        .await?;
    let view = final_view(&mesh, "pay_between").await?;
    assert_eq!(
        (view["status"].as_str(), view["rail"].as_str()),
        (Some("succeeded"), Some("card"))
    );

    // Last: pending and success, then the create.
    mesh.post_webhook("msg_last_1", &Mesh::webhook_body("pay_last", "pending", "m_1"))
        .await?;
    mesh.wait_for_row("pay_last", 1).await?;
    mesh.post_webhook("msg_last_2", &Mesh::webhook_body("pay_last", "succeeded", "m_1"))
        .await?;
    mesh.wait_for_row("pay_last", 2).await?;
    facts::publish(&mesh.js, &facts::create(&tenant, "pay_last", "card", "stdwebhooks")?).await?;
    let view = final_view(&mesh, "pay_last").await?;
    assert_eq!(
        (view["status"].as_str(), view["rail"].as_str()),
        (Some("succeeded"), Some("card"))
    );
    // The terms changed, the status did not: one ledger capture, no second one.
    let token = mesh.operator_token();
    let ledger: Value = mesh.get("/v1/payments/pay_last/ledger", &token).await?.json().await?;
    let entries = ledger
        .as_array()
        .or_else(|| ledger["entries"].as_array())
        .cloned()
        .unwrap_or_default();
    assert_eq!(entries.len(), 1, "{ledger}");
    Ok(())
}

/// A payment known only from its provider's webhooks takes its rail from the event:
/// Razorpay's `method`, Stripe's `payment_method_types`, a Standard Webhooks event's
/// `data.rail`; each becomes final on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_known_only_from_webhooks_takes_its_rail_from_the_event() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let now = chrono::Utc::now().timestamp();

    let razorpay = json!({
        "entity": "event", "account_id": "acc_1", "event": "payment.captured", "contains": ["payment"],
        "payload": {"payment": {"entity": {"id": "pay_rzpRail0001", "entity": "payment", "amount": 50000,
            "currency": "INR", "status": "captured", "method": "upi",
            "notes": {"payment_id": "pay_rzp_rail", "merchant_id": "m_1"}, "created_at": now - 5}}},
        "created_at": now,
    })
    .to_string();
    let response = mesh.post_provider_webhook("razorpay", "evt_rail_1", &razorpay).await?;
    assert_eq!(response.status(), 200, "{}", response.text().await?);

    let stripe = json!({
        "id": "evt_stripe_rail", "object": "event", "created": now, "type": "payment_intent.succeeded",
        "data": {"object": {"id": "pi_rail", "object": "payment_intent", "amount": 2000, "currency": "usd",
            "payment_method_types": ["card"], "metadata": {"payment_id": "pay_stripe_rail", "merchant_id": "m_1"},
            "created": now - 5}},
    })
    .to_string();
    let response = mesh.post_provider_webhook("stripe", "evt_stripe_rail", &stripe).await?;
    assert_eq!(response.status(), 200, "{}", response.text().await?);

    let mut std_body: Value = serde_json::from_str(&Mesh::webhook_body("pay_std_rail", "succeeded", "m_1"))?;
    std_body["data"]["rail"] = json!("card");
    let response = mesh.post_webhook("msg_std_rail", &std_body.to_string()).await?;
    assert_eq!(response.status(), 200, "{}", response.text().await?);

    for (payment, rail) in [
        ("pay_rzp_rail", "upi"),
        ("pay_stripe_rail", "card"),
        ("pay_std_rail", "card"),
    ] {
        let view = final_view(&mesh, payment).await?;
        assert_eq!(view["rail"], rail, "{view}");
    }
    Ok(())
}

/// Wherever `final` is shown, a payment that is not final says why: not terminal, its
/// rail unknown; a final one says nothing. The REST view and the list agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_payment_that_is_not_final_says_why() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let token = mesh.operator_token();
    mesh.post_webhook("msg_why_1", &Mesh::webhook_body("pay_why_pending", "pending", "m_1"))
        .await?;
    mesh.post_webhook("msg_why_2", &Mesh::webhook_body("pay_why_norail", "succeeded", "m_1"))
        .await?;
    let mut on_card: Value = serde_json::from_str(&Mesh::webhook_body("pay_why_card", "succeeded", "m_1"))?;
    on_card["data"]["rail"] = json!("card");
    mesh.post_webhook("msg_why_3", &on_card.to_string()).await?;
    for (payment, why) in [
        ("pay_why_pending", json!("not_terminal")),
        ("pay_why_norail", json!("rail_unknown")),
        ("pay_why_card", Value::Null),
    ] {
        let view = mesh
            .view_when(payment, &format!("{payment}: {why}"), |view| {
                view.get("not_final_because") == Some(&why)
            })
            .await?;
        assert_eq!(view["final"], why.is_null(), "{view}");
    }
    let list: Value = mesh.get("/v1/payments", &token).await?.json().await?;
    let items = list["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 3, "{list}");
    for item in items {
        let why = item.get("not_final_because").cloned();
        assert!(why.is_some(), "the list says why too: {item}");
        assert_eq!(item["final"], why == Some(Value::Null), "{item}");
    }
    Ok(())
}

/// A WebSocket transition event says why it is not final too, in REST's words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_transition_says_why_it_is_not_final() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let mut client = paytrack_tests::ws::WsClient::connect(&mesh.ws_url(), &mesh.operator_token()).await?;
    client.send(json!({"type": "subscribe", "channel": "payments"})).await?;
    client.next_of("subscribed", WAIT).await?;
    mesh.post_webhook("msg_ws_why", &Mesh::webhook_body("pay_ws_why", "succeeded", "m_1"))
        .await?;
    let event = loop {
        let event = client.next_of("event", WAIT).await?;
        if event["kind"] == "transition" {
            break event;
        }
    };
    assert_eq!(event["final"], false, "{event}");
    assert_eq!(event["not_final_because"], "rail_unknown", "{event}");
    Ok(())
}
