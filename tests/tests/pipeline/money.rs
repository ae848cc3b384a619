//! Money that moves after success, end to end through the real ingest schemes
//! (signed Stripe and Razorpay webhooks in their own shapes), the reconciler, the
//! projector and the ledger: partial refunds, a late capture after a failure, and a
//! dispute that is lost. Every amount is read back from the REST view and the ledger.

use std::time::Duration;

use async_nats::jetstream;
use paytrack_tests::Mesh;
use paytrack_tests::mesh::{RAZORPAY_SECRET, STRIPE_SECRET};
use paytrack_tests::workload::rebuild_and_dump;
use paytrack_tests::ws::WsClient;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

/// The tables a rebuild must reproduce for a payment's money.
const LEDGER_TABLES: [&str; 4] = [
    "payment_timeline",
    "journal_entries",
    "ledger_postings",
    "ledger_accounts",
];

/// Posts a Stripe event (`id`, `type`, `data.object`), signed now; its HTTP status.
async fn stripe(mesh: &Mesh, id: &str, event_type: &str, created: i64, object: Value) -> anyhow::Result<u16> {
    let body = json!({"id": id, "object": "event", "api_version": "2022-11-15", "created": created,
        "type": event_type, "data": {"object": object}, "livemode": false})
    .to_string();
    let response = mesh.post_provider_webhook("stripe", id, &body).await?;
    Ok(response.status().as_u16())
}

/// Posts a Razorpay event (`event`, `payload`), signed; its HTTP status.
async fn razorpay(mesh: &Mesh, id: &str, event: &str, created: i64, payload: Value) -> anyhow::Result<u16> {
    let body = json!({"entity": "event", "account_id": "acc_test", "event": event,
        "contains": payload.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()),
        "payload": payload, "created_at": created})
    .to_string();
    let response = mesh.post_provider_webhook("razorpay", id, &body).await?;
    Ok(response.status().as_u16())
}

/// The payment's journal entry kinds in version order, and the sum of every leg.
async fn journal(mesh: &Mesh, payment: &str) -> anyhow::Result<(Vec<String>, i64, i64)> {
    let kinds: Vec<String> = sqlx::query_scalar(
        "SELECT entry_kind FROM journal_entries WHERE tenant = $1 AND payment_id = $2 ORDER BY version",
    )
    .bind(mesh.tenant.as_str())
    .bind(payment)
    .fetch_all(&mesh.db)
    .await?;
    let (sum, merchant): (Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT sum(amount_minor)::bigint, (-sum(amount_minor) FILTER (WHERE account LIKE 'merchant_payable:%'))::bigint
         FROM ledger_postings WHERE tenant = $1 AND payment_id = $2",
    )
    .bind(mesh.tenant.as_str())
    .bind(payment)
    .fetch_one(&mesh.db)
    .await?;
    Ok((kinds, sum.unwrap_or(0), merchant.unwrap_or(0)))
}

/// The kinds of the alerts raised for `payment`.
async fn alerts(mesh: &Mesh, payment: &str) -> anyhow::Result<Vec<String>> {
    Ok(
        sqlx::query_scalar("SELECT kind FROM alerts WHERE tenant = $1 AND payment_id = $2 ORDER BY alert_seq")
            .bind(mesh.tenant.as_str())
            .bind(payment)
            .fetch_all(&mesh.db)
            .await?,
    )
}

/// The payment's `ledger_minor`: what its postings owe the merchant.
async fn ledger_minor(mesh: &Mesh, payment: &str) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT ledger_minor FROM payments WHERE tenant = $1 AND payment_id = $2")
            .bind(mesh.tenant.as_str())
            .bind(payment)
            .fetch_one(&mesh.db)
            .await?,
    )
}

/// The payment's [`journal`] once it holds `entries` entries.
async fn journal_when(mesh: &Mesh, payment: &str, entries: usize) -> anyhow::Result<(Vec<String>, i64, i64)> {
    mesh.eventually(WAIT, &format!("{entries} journal entries"), || async {
        let posted = journal(mesh, payment).await.ok()?;
        (posted.0.len() == entries).then_some(posted)
    })
    .await
}

/// `base` with every field of the object `extra` set on it.
fn with(mut base: Value, extra: Value) -> Value {
    if let (Some(base), Value::Object(extra)) = (base.as_object_mut(), extra) {
        base.extend(extra);
    }
    base
}

/// Stripe's PaymentIntent of the payment for `amount` cents, succeeded.
fn intent(payment: &str, amount: i64) -> Value {
    json!({"id": format!("pi_{payment}"), "object": "payment_intent", "amount": amount,
        "currency": "usd", "status": "succeeded", "metadata": {"payment_id": payment, "merchant_id": "m_money"}})
}

/// A Stripe `refund` or `dispute` object of `amount` that names only the payment's
/// PaymentIntent.
fn movement(object: &str, id: &str, amount: i64, status: &str, payment: &str) -> Value {
    json!({"id": id, "object": object, "amount": amount, "currency": "usd", "status": status,
        "payment_intent": format!("pi_{payment}")})
}

/// A Razorpay webhook `payload` holding one `entity` (`payment` or `payout`) of the
/// payment in INR, created at `created`, with `fields` on top.
fn razorpay_entity(entity: &str, payment: &str, created: i64, fields: Value) -> Value {
    let base = json!({"entity": entity, "currency": "INR",
        "notes": {"payment_id": payment, "merchant_id": "m_money"}, "created_at": created});
    let mut payload = serde_json::Map::new();
    payload.insert(entity.to_owned(), json!({"entity": with(base, fields)}));
    Value::Object(payload)
}

/// The view's amounts named `keys`, in that order.
fn amounts(view: &Value, keys: &[&str]) -> Value {
    keys.iter().map(|k| view["amounts"][k].clone()).collect()
}

fn charge(payment: &str, amount_refunded: i64, refunds: Value) -> Value {
    json!({"id": format!("ch_{payment}"), "object": "charge", "amount": 5000, "amount_captured": 5000,
        "amount_refunded": amount_refunded, "currency": "usd", "payment_intent": format!("pi_{payment}"),
        "metadata": {"payment_id": payment, "merchant_id": "m_money"}, "paid": true, "captured": true,
        "refunded": amount_refunded >= 5000, "refunds": {"object": "list", "data": refunds}})
}

fn refund(id: &str, amount: i64, status: &str, payment: &str) -> Value {
    with(
        movement("refund", id, amount, status, payment),
        json!({"charge": format!("ch_{payment}")}),
    )
}

async fn stripe_success(mesh: &Mesh, payment: &str, at: i64) -> anyhow::Result<()> {
    assert_eq!(
        stripe(
            mesh,
            &format!("evt_ok_{payment}"),
            "payment_intent.succeeded",
            at,
            intent(payment, 5000)
        )
        .await?,
        200
    );
    mesh.view_when(payment, "the payment succeeded", |v| v["status"] == "succeeded")
        .await?;
    Ok(())
}

/// A mesh on which `payment` succeeded on Stripe a minute ago; that time.
async fn mesh_after_stripe_success(payment: &str) -> anyhow::Result<(Mesh, i64)> {
    let mesh = Mesh::start().await?;
    let t = chrono::Utc::now().timestamp() - 60;
    stripe_success(&mesh, payment, t).await?;
    Ok((mesh, t))
}

/// Stripe partial refunds of 1,000 then 1,500 of a 5,000 payment: each
/// `charge.refunded` carries the cumulative `amount_refunded` and lists the refunds
/// by id. The payment stays `succeeded` (never `returned`), its net is 2,500, a
/// repeat of the first event changes nothing, and the ledger recognises 2,500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripe_partial_refunds_leave_the_net_and_never_return_the_payment() -> anyhow::Result<()> {
    let payment = "pay_refunds";
    let (mesh, t) = mesh_after_stripe_success(payment).await?;

    let first = charge(payment, 1000, json!([refund("re_1", 1000, "succeeded", payment)]));
    assert_eq!(
        stripe(&mesh, "evt_rf_1", "charge.refunded", t + 10, first.clone()).await?,
        200
    );
    mesh.view_when(payment, "the first refund", |v| v["amounts"]["refunded_minor"] == 1000)
        .await?;
    let second = charge(
        payment,
        2500,
        json!([
            refund("re_2", 1500, "succeeded", payment),
            refund("re_1", 1000, "succeeded", payment)
        ]),
    );
    assert_eq!(stripe(&mesh, "evt_rf_2", "charge.refunded", t + 20, second).await?, 200);
    // The first event delivered again (a new delivery of the same refund): nothing twice.
    assert_eq!(
        stripe(&mesh, "evt_rf_1_again", "charge.refunded", t + 10, first).await?,
        200
    );
    let view = mesh
        .view_when(payment, "both refunds", |v| v["amounts"]["refunded_minor"] == 2500)
        .await?;
    assert_eq!(view["status"], "succeeded", "{view}");
    assert_eq!(view["amounts"]["captured_minor"], 5000, "{view}");
    assert_eq!(view["amounts"]["net_minor"], 2500, "{view}");
    assert_eq!(view["amounts"]["refunded"], false, "{view}");
    assert_eq!(
        (&view["direction"], &view["payout_status"]),
        (&json!("payin"), &Value::Null),
        "{view}"
    );
    // Settle: the repeat is decided too, and it moved nothing.
    mesh.eventually(WAIT, "the repeat decided", || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM fact_outcomes WHERE tenant = $1 AND payment_id = $2")
            .bind(mesh.tenant.as_str())
            .bind(payment)
            .fetch_one(&mesh.db)
            .await
            .ok()?;
        (n >= 4).then_some(())
    })
    .await?;
    assert_eq!(ledger_minor(&mesh, payment).await?, 2500);
    let (kinds, sum, merchant) = journal(&mesh, payment).await?;
    assert_eq!(kinds, ["capture", "refund", "refund"]);
    assert_eq!((sum, merchant), (0, 2500));
    let (timeline, _) = mesh.timeline(payment).await?;
    let moved: Vec<&Value> = timeline
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["movements"].is_array())
        .collect();
    assert_eq!(moved.len(), 2, "each refund is its own timeline entry: {timeline}");
    assert_eq!(moved[1]["movements"][0]["id"], "re_2", "{timeline}");
    // The list and the live events carry the same amounts.
    let list: Value = mesh
        .get("/v1/payments?merchant_id=m_money", &mesh.operator_token())
        .await?
        .json()
        .await?;
    assert_eq!(list["items"][0]["amounts"]["net_minor"], 2500, "{list}");
    // Replayed from the start of the payment's channel.
    let mut ws = WsClient::connect(&mesh.ws_url(), &mesh.operator_token()).await?;
    let since = json!({"epoch": list["position"]["epoch"], "seq": 0});
    ws.send(json!({"type": "subscribe", "channel": format!("payment:{payment}"), "since": since}))
        .await?;
    ws.next_of("subscribed", WAIT).await?;
    loop {
        let event = ws.next_of("event", WAIT).await?;
        if event["kind"] == "transition" && event["amounts"]["refunded_minor"] == 2500 {
            assert_eq!(event["status"], "succeeded", "{event}");
            assert_eq!(event["amounts"]["net_minor"], 2500, "{event}");
            assert_eq!(event["movements"][0]["id"], "re_2", "{event}");
            break;
        }
    }
    Ok(())
}

/// Razorpay reports `payment.failed`, then captures the payment (late
/// authorisation): the payment does not stay `failed` and final while the money is
/// captured. It succeeds by the model's late-capture rule, an alert asks an
/// operator to refund or accept it, and the ledger posts the capture.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn razorpay_failed_then_captured_succeeds_with_an_alert() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let payment = "pay_late";
    let t = chrono::Utc::now().timestamp() - 60;
    let entity = |status: &str| {
        razorpay_entity(
            "payment",
            payment,
            t,
            json!({"id": "pay_RzpLate1", "amount": 50000, "status": status, "method": "upi"}),
        )
    };
    assert_eq!(
        razorpay(&mesh, "evt_fail", "payment.failed", t, entity("failed")).await?,
        200
    );
    mesh.view_when(payment, "the failure", |v| v["status"] == "failed")
        .await?;
    assert_eq!(
        razorpay(&mesh, "evt_capture", "payment.captured", t + 120, entity("captured")).await?,
        200
    );
    let view = mesh
        .view_when(payment, "the late capture", |v| {
            v["status"] != "failed" && v["version"] == 2
        })
        .await?;
    assert_eq!(view["status"], "succeeded", "{view}");
    assert_eq!(view["amounts"]["captured_minor"], 50000, "{view}");
    let raised = mesh
        .eventually(WAIT, "the late-capture alert", || async {
            let kinds = alerts(&mesh, payment).await.ok()?;
            kinds.iter().any(|k| k == "captured_after_failure").then_some(kinds)
        })
        .await?;
    assert!(raised.contains(&"captured_after_failure".to_owned()), "{raised:?}");
    mesh.eventually(WAIT, "the capture posted", || async {
        let (kinds, sum, merchant) = journal(&mesh, payment).await.ok()?;
        (kinds == ["capture"] && sum == 0 && merchant == 50000).then_some(())
    })
    .await?;
    Ok(())
}

/// A Stripe dispute opened, its funds withdrawn (with Stripe's dispute fee), then
/// lost: an alert when it opens, the amount withheld, and each step posted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripe_dispute_opened_then_lost_withdraws_the_amount() -> anyhow::Result<()> {
    let payment = "pay_dispute";
    let (mesh, t) = mesh_after_stripe_success(payment).await?;
    let dispute = |status: &str, fee: i64| {
        with(
            movement("dispute", "dp_1", 5000, status, payment),
            json!({"reason": "fraudulent", "charge": format!("ch_{payment}"),
                "metadata": {"payment_id": payment, "merchant_id": "m_money"},
                "balance_transactions": if fee > 0 { json!([{"amount": -5000, "fee": fee}]) } else { json!([]) }}),
        )
    };
    assert_eq!(
        stripe(
            &mesh,
            "evt_dp_1",
            "charge.dispute.created",
            t + 10,
            dispute("needs_response", 0)
        )
        .await?,
        200
    );
    let opened = mesh
        .view_when(payment, "the dispute opened", |v| {
            v["amounts"]["disputed_minor"] == 5000
        })
        .await?;
    assert_eq!(opened["status"], "succeeded", "{opened}");
    assert_eq!(opened["amounts"]["net_minor"], 0, "{opened}");
    mesh.eventually(WAIT, "the dispute alert", || async {
        let kinds = alerts(&mesh, payment).await.ok()?;
        kinds.iter().any(|k| k == "dispute_opened").then_some(())
    })
    .await?;
    for (id, event_type, at, status) in [
        ("evt_dp_2", "charge.dispute.funds_withdrawn", t + 20, "needs_response"),
        ("evt_dp_3", "charge.dispute.closed", t + 30, "lost"),
    ] {
        let object = dispute(status, 1500);
        assert_eq!(stripe(&mesh, id, event_type, at, object).await?, 200, "{id}");
    }
    let lost = mesh
        .view_when(payment, "the dispute lost", |v| v["version"] == 4)
        .await?;
    assert_eq!(lost["amounts"]["disputed_minor"], 5000, "{lost}");
    assert_eq!(lost["amounts"]["net_minor"], 0, "{lost}");
    let (kinds, sum, merchant) = journal(&mesh, payment).await?;
    assert_eq!(
        kinds,
        ["capture", "dispute_withdrawal", "movement_fee"],
        "the loss itself moves nothing more"
    );
    assert_eq!((sum, merchant), (0, 0));
    let fees: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(amount_minor), 0)::bigint FROM ledger_postings
         WHERE tenant = $1 AND payment_id = $2 AND account LIKE 'provider_fees:%'",
    )
    .bind(mesh.tenant.as_str())
    .bind(payment)
    .fetch_one(&mesh.db)
    .await?;
    assert_eq!(fees, 1500, "the dispute fee is posted");
    Ok(())
}

/// One payment through every movement (a refund that fails and gives the money
/// back, one still pending, a dispute won): its amounts, its amount at risk and its
/// ledger agree, and a rebuild from the streams into an empty database reproduces
/// every amount, movement, journal entry and posting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_amount_and_posting_survives_a_rebuild() -> anyhow::Result<()> {
    let payment = "pay_rebuild";
    let (mesh, t) = mesh_after_stripe_success(payment).await?;
    let charged = charge(payment, 1000, json!([refund("re_1", 1000, "succeeded", payment)]));
    let dispute = |status: &str| {
        with(
            movement("dispute", "dp_9", 4500, status, payment),
            json!({"metadata": {"payment_id": payment}}),
        )
    };
    let steps = [
        ("evt_rb_1", "charge.refunded", charged),
        ("evt_rb_2", "refund.failed", refund("re_1", 1000, "failed", payment)),
        ("evt_rb_3", "refund.created", refund("re_2", 500, "pending", payment)),
        ("evt_rb_4", "charge.dispute.created", dispute("needs_response")),
        ("evt_rb_5", "charge.dispute.funds_reinstated", dispute("won")),
    ];
    for (n, (id, event_type, object)) in steps.into_iter().enumerate() {
        assert_eq!(
            stripe(&mesh, id, event_type, t + 10 * (n as i64 + 1), object).await?,
            200
        );
        // One at a time: each movement is its own version.
        mesh.view_when(payment, event_type, |v| v["version"] == n + 2).await?;
    }
    let view = mesh.view_when(payment, "every movement", |v| v["version"] == 6).await?;
    assert_eq!(
        amounts(
            &view,
            &["captured_minor", "refunded_minor", "disputed_minor", "net_minor"]
        ),
        json!([5000, 500, 0, 4500]),
        "{view}"
    );
    assert_eq!(view["at_risk_minor"], 4500, "{view}");
    assert!(view["at_risk_until"].is_string(), "{view}");
    let (kinds, sum, merchant) = journal(&mesh, payment).await?;
    assert_eq!(
        kinds,
        [
            "capture",
            "refund",
            "refund_reversal",
            "refund",
            "dispute_withdrawal",
            "dispute_reinstatement"
        ]
    );
    assert_eq!((sum, merchant), (0, 4500));

    let rebuilt = rebuild_and_dump(&mesh).await?;
    rebuilt.assert_same(&LEDGER_TABLES);
    let (live, replayed) = (&rebuilt.live, &rebuilt.replayed);
    let money = |rows: &Vec<Value>| -> Vec<Value> {
        rows.iter()
            .map(|r| json!([r["amounts"], r["ledger_minor"], r["captured_at"], r["at_risk_until"]]))
            .collect()
    };
    assert_eq!(money(&live["payments"]), money(&replayed["payments"]));
    assert_eq!(live["payments"][0]["amounts"]["net_minor"], 4500);
    Ok(())
}

/// What the provider did to one payment of the random run, and the events it sent.
struct Planned {
    payment: String,
    net: i64,
    refunded: i64,
    disputed: i64,
    events: Vec<(String, &'static str, Value)>,
}

/// A payment of `amount` with up to three refunds (some failing) and maybe a
/// dispute (won or lost), as Stripe reports them; refunds and disputes name only
/// the PaymentIntent, so they wait (parked) when they beat the capture.
fn planned(n: usize, rng: &mut impl rand::Rng) -> Planned {
    let payment = format!("pay_r{n}");
    let amount: i64 = rng.random_range(1_000..20_000);
    let mut events = vec![(
        format!("evt_{payment}_ok"),
        "payment_intent.succeeded",
        with(
            intent(&payment, amount),
            json!({"metadata": {"payment_id": payment, "merchant_id": format!("m_r{}", n % 3)}}),
        ),
    )];
    let mut refunded = 0;
    for r in 0..rng.random_range(0..4) {
        let id = format!("re_{payment}_{r}");
        let part: i64 = rng.random_range(1..=amount / 4);
        let fails = rng.random_bool(0.3);
        let object = |status: &str| movement("refund", &id, part, status, &payment);
        events.push((format!("evt_{id}_c"), "refund.created", object("pending")));
        if fails {
            events.push((format!("evt_{id}_f"), "refund.failed", object("failed")));
        } else {
            events.push((format!("evt_{id}_s"), "refund.updated", object("succeeded")));
            refunded += part;
        }
    }
    let mut disputed = 0;
    if rng.random_bool(0.5) {
        let part = amount - refunded;
        let lost = rng.random_bool(0.5);
        let id = format!("dp_{payment}");
        let object = |status: &str| movement("dispute", &id, part, status, &payment);
        events.push((
            format!("evt_{id}_o"),
            "charge.dispute.created",
            object("needs_response"),
        ));
        events.push((
            format!("evt_{id}_c"),
            "charge.dispute.closed",
            object(if lost { "lost" } else { "won" }),
        ));
        if lost {
            disputed = part;
        }
    }
    Planned {
        payment,
        net: amount - refunded - disputed,
        refunded,
        disputed,
        events,
    }
}

/// Random movements of many payments, delivered shuffled, duplicated and partly
/// lost (the lost ones come back at the end, as the provider's retries do): every
/// payment ends with the provider's amounts, its `ledger_minor` is its net, and the
/// tenant's ledger balances with its merchants owed exactly the sum of the nets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_movements_of_many_payments_settle_to_the_truth() -> anyhow::Result<()> {
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};
    let mesh = Mesh::start().await?;
    let seed: u64 = rand::rng().random();
    eprintln!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let plans: Vec<Planned> = (0..12).map(|n| planned(n, &mut rng)).collect();
    let mut deliveries: Vec<&(String, &'static str, Value)> = plans.iter().flat_map(|p| &p.events).collect();
    let mut later = Vec::new();
    for d in deliveries.clone() {
        if rng.random_bool(0.3) {
            deliveries.push(d);
        }
    }
    deliveries.shuffle(&mut rng);
    deliveries.retain(|d| {
        let lost = rng.random_bool(0.15);
        if lost {
            later.push(*d);
        }
        !lost
    });
    deliveries.extend(later);
    let t = chrono::Utc::now().timestamp() - 600;
    for (n, (id, event_type, object)) in deliveries.iter().enumerate() {
        // The same event delivered twice is one delivery id (Stripe retries it).
        let status = stripe(&mesh, id, event_type, t + n as i64, object.clone()).await?;
        assert!(status == 200 || status == 202, "{id}: {status}");
    }
    for p in &plans {
        let view = mesh
            .view_when(&p.payment, &format!("{}'s amounts", p.payment), |v| {
                v["amounts"]["net_minor"] == p.net
                    && v["amounts"]["refunded_minor"] == p.refunded
                    && v["amounts"]["disputed_minor"] == p.disputed
            })
            .await?;
        assert_eq!(view["status"], "succeeded", "{view}");
    }
    let nets: i64 = plans.iter().map(|p| p.net).sum();
    mesh.eventually(WAIT, "the ledger follows", || async {
        let (mismatched, total, merchants): (i64, Option<i64>, Option<i64>) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM payments p WHERE p.tenant = $1
                      AND p.ledger_minor <> (p.amounts->>'net_minor')::bigint),
                    (SELECT sum(amount_minor)::bigint FROM ledger_postings WHERE tenant = $1),
                    (SELECT -sum(amount_minor)::bigint FROM ledger_postings
                      WHERE tenant = $1 AND account LIKE 'merchant_payable:%')",
        )
        .bind(mesh.tenant.as_str())
        .fetch_one(&mesh.db)
        .await
        .ok()?;
        (mismatched == 0 && total == Some(0) && merchants == Some(nets)).then_some(())
    })
    .await?;
    for p in &plans {
        let (_, sum, merchant) = journal(&mesh, &p.payment).await?;
        assert_eq!((sum, merchant), (0, p.net), "{}", p.payment);
    }
    Ok(())
}

/// The generic Standard Webhooks scheme reports refunds and disputes too
/// (`payment.refund.<state>`, `payment.dispute.<state>` with `data.movement`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generic_refund_and_dispute_events_move_the_amounts() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let payment = "pay_generic";
    let succeeded = Mesh::webhook_body(payment, "succeeded", "m_money");
    assert_eq!(mesh.post_webhook("msg_gen_ok", &succeeded).await?.status(), 200);
    let movement = |kind: &str, state: &str, id: &str, amount: i64| {
        let mut body: Value = serde_json::from_str(&Mesh::webhook_body(payment, "succeeded", "m_money"))?;
        body["type"] = json!(format!("payment.{kind}.{state}"));
        body["data"]["movement"] = json!({"id": id, "amount_minor": amount});
        anyhow::Ok(body.to_string())
    };
    let steps = [
        ("msg_gen_1", movement("refund", "succeeded", "rf_1", 250)?),
        ("msg_gen_2", movement("dispute", "opened", "dp_1", 400)?),
        ("msg_gen_3", movement("dispute", "won", "dp_1", 400)?),
    ];
    for (n, (id, body)) in steps.iter().enumerate() {
        assert_eq!(mesh.post_webhook(id, body).await?.status(), 200);
        mesh.view_when(payment, id, |v| v["version"] == n + 2).await?;
    }
    let view = mesh.view_when(payment, "every movement", |v| v["version"] == 4).await?;
    assert_eq!(view["status"], "succeeded", "{view}");
    assert_eq!(view["amounts"]["refunded_minor"], 250, "{view}");
    assert_eq!(view["amounts"]["disputed_minor"], 0, "{view}");
    assert_eq!(view["amounts"]["net_minor"], 1000, "{view}");
    let (kinds, sum, merchant) = journal(&mesh, payment).await?;
    assert_eq!(
        kinds,
        ["capture", "refund", "dispute_withdrawal", "dispute_reinstatement"]
    );
    assert_eq!((sum, merchant), (0, 1000));
    Ok(())
}

/// The provider simulator drives every movement per payment at each sandbox
/// provider, in the provider's own webhook shapes: refund part then the rest, a
/// refund that fails, a dispute won, a dispute lost, and a capture after a failure.
/// Every payment's amounts then equal the simulator's ground truth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_drives_every_movement_per_payment() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let tenant = mesh.tenant.clone();
    let sim = Sim::start(&mesh, &["stripe", "razorpay"]).await?;
    let scenarios: [(&str, Vec<Value>); 5] = [
        (
            "refunds",
            vec![
                json!({"action": "refund", "amount_minor": 600}),
                json!({"action": "refund"}),
            ],
        ),
        (
            "refund_fails",
            vec![json!({"action": "refund", "amount_minor": 500, "fails": true})],
        ),
        ("dispute_won", vec![json!({"action": "dispute", "won": true})]),
        ("dispute_lost", vec![json!({"action": "dispute", "won": false})]),
        ("late_capture", vec![json!({"action": "late_capture"})]),
    ];
    let mut driven = Vec::new();
    for provider in ["stripe", "razorpay"] {
        for (name, actions) in &scenarios {
            let payment = format!("pay_{provider}_{name}");
            sim.behave(provider, if *name == "late_capture" { 0 } else { 100 })
                .await?;
            let provider_ref = sim
                .initiate(
                    provider,
                    json!({"tenant": tenant.as_str(), "payment_id": payment, "amount_minor": 1500,
                        "currency": "USD", "rail": "card", "merchant_id": "m_sim"}),
                )
                .await?;
            // The outcome first, in paytrack too: movements follow it.
            mesh.view_when(&payment, "the outcome", |v| {
                v["status"] == "succeeded" || v["status"] == "failed"
            })
            .await?;
            for action in actions {
                sim.movement(provider, &provider_ref, action).await?;
            }
            driven.push(payment);
        }
    }
    let model = paytrack_shared::StatusModel::get();
    for payment in &driven {
        let truth = paytrack_tests::ground_truth::of_payment(&sim.http, &sim.url, payment)
            .await
            .unwrap_or_default();
        // A capture after a failure is what the model's late-capture row of the
        // provider and rail says (the simulator's events name the rail, card).
        let provider = truth["provider"].as_str().unwrap_or_default();
        let status = match model.late_capture(provider, Some("card")).map(|l| l.to) {
            Some(to) if payment.ends_with("late_capture") => json!(to),
            _ => truth["status"].clone(),
        };
        let net = match status.as_str() {
            Some("succeeded") => {
                1500 - truth["refunded_minor"].as_i64().unwrap_or(0) - truth["disputed_minor"].as_i64().unwrap_or(0)
            }
            _ => 0,
        };
        let view = mesh
            .view_when(payment, &format!("{payment} at the truth"), |v| {
                v["status"] == status
                    && v["amounts"]["net_minor"] == net
                    && v["amounts"]["refunded_minor"] == truth["refunded_minor"]
                    && v["amounts"]["disputed_minor"] == truth["disputed_minor"]
                    && v["version"].as_i64().unwrap_or(0) >= 2
            })
            .await?;
        if payment.ends_with("refunds") {
            assert_eq!(view["amounts"]["refunded"], true, "{view}");
        }
        if payment.ends_with("late_capture") {
            assert_ne!(view["status"], "failed", "{view}");
            let kinds = alerts(&mesh, payment).await?;
            assert!(kinds.iter().any(|k| k == "captured_after_failure"), "{kinds:?}");
        }
    }
    Ok(())
}

/// A deployment whose projector stored alerts before the money alerts existed: its
/// durable alert consumer still has the old filters when the new projector starts.
/// The projector brings the consumer's filters up to date, so a dispute's alert is
/// stored and listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgraded_projector_stores_the_new_alert_kinds() -> anyhow::Result<()> {
    use paytrack_shared::subjects;
    let nats = paytrack_tests::NatsServer::start().await?;
    let admin = jetstream::new(nats.admin_client().await?);
    let layout = paytrack_nats::Layout {
        replicas: 1,
        windows: paytrack_nats::DuplicateWindows {
            inbound: Duration::from_secs(120),
            push: Duration::from_secs(120),
            internal: Duration::from_secs(120),
        },
        idempotency_ttl: Duration::from_secs(86_400),
        claims_max_age: Duration::from_secs(86_400),
    };
    paytrack_nats::apply_layout(&admin, &layout).await?;
    let mut old = paytrack_nats::durable_consumer(paytrack_nats::CONSUMER_PROJECTOR_ALERTS, subjects::ALERT_ALL);
    old.filter_subject = String::new();
    old.filter_subjects = [
        subjects::ALERT_UNCLEAR_PENDING,
        subjects::ALERT_SOURCE_MISMATCH,
        subjects::ALERT_TRACE_GAP,
    ]
    .iter()
    .map(|kind| format!("paytrack.alert.*.{kind}"))
    .collect();
    admin
        .get_stream(subjects::STREAM_ALERT)
        .await?
        .create_consumer(old)
        .await?;
    let mesh = Mesh::launch(nats, paytrack_tests::mesh::MeshOptions::default()).await?;
    mesh.wait_ready().await?;
    let payment = "pay_upgraded";
    let t = chrono::Utc::now().timestamp() - 60;
    stripe_success(&mesh, payment, t).await?;
    let dispute = movement("dispute", "dp_up", 5000, "needs_response", payment);
    assert_eq!(
        stripe(&mesh, "evt_up_dp", "charge.dispute.created", t + 10, dispute).await?,
        200
    );
    mesh.eventually(WAIT, "the dispute alert stored", || async {
        let kinds = alerts(&mesh, payment).await.ok()?;
        kinds.iter().any(|k| k == "dispute_opened").then_some(())
    })
    .await?;
    Ok(())
}

/// A partial capture: Stripe's PaymentIntent received 3,000 of 5,000 authorised. The
/// payment captured 3,000, and the ledger recognises 3,000, not the amount.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_capture_captures_what_the_provider_received() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let payment = "pay_partial";
    let t = chrono::Utc::now().timestamp() - 60;
    let intent = with(
        intent(payment, 5000),
        json!({"amount_capturable": 0, "amount_received": 3000}),
    );
    assert_eq!(
        stripe(&mesh, "evt_partial", "payment_intent.succeeded", t, intent).await?,
        200
    );
    let view = mesh
        .view_when(payment, "the capture", |v| v["status"] == "succeeded")
        .await?;
    assert_eq!(
        amounts(&view, &["authorised_minor", "captured_minor", "net_minor"]),
        json!([5000, 3000, 3000]),
        "{view}"
    );
    let (kinds, sum, merchant) = journal(&mesh, payment).await?;
    assert_eq!((kinds, sum, merchant), (vec!["capture".to_owned()], 0, 3000));
    Ok(())
}

/// A payout paid then returned, with its postings: Razorpay's `payout.queued`,
/// `payout.processed` and `payout.reversed` through the real ingest scheme. The REST
/// view shows each status and the paid and returned amounts; the paid entry debits
/// the merchant and credits the payout clearing account, the reversal posts the
/// opposite, every entry balances, `ledger_minor` ends at 0, and a rebuild from the
/// streams reproduces all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payout_paid_then_returned_with_its_postings() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let payment = "po_returned";
    let t = chrono::Utc::now().timestamp() - 60;
    let entity = |status: &str, utr: Value, failure: Value| {
        razorpay_entity(
            "payout",
            payment,
            t,
            json!({"id": "pout_RzpBack1", "fund_account_id": "fa_1", "amount": 120000, "status": status,
                "mode": "IMPS", "purpose": "payout", "reference_id": payment, "utr": utr, "failure_reason": failure}),
        )
    };
    let steps = [
        ("evt_po_1", "payout.queued", entity("queued", Value::Null, Value::Null)),
        (
            "evt_po_2",
            "payout.processed",
            entity("processed", json!("UTR0001"), Value::Null),
        ),
        (
            "evt_po_3",
            "payout.reversed",
            entity("reversed", json!("UTR0001"), json!("beneficiary bank rejected")),
        ),
    ];
    // The canonical status, and the payout's own words for it.
    let statuses = [("pending", "pending"), ("succeeded", "paid"), ("returned", "returned")];
    for (n, (id, event, payload)) in steps.into_iter().enumerate() {
        assert_eq!(
            razorpay(&mesh, id, event, t + 10 * n as i64, payload).await?,
            200,
            "{event}"
        );
        let (status, payout_status) = statuses[n];
        mesh.view_when(payment, event, |v| {
            v["status"] == status && v["payout_status"] == payout_status && v["direction"] == "payout"
        })
        .await?;
    }
    let view = mesh
        .view_when(payment, "the reversal", |v| v["status"] == "returned")
        .await?;
    let listed = mesh
        .get("/v1/payments?limit=200", &mesh.operator_token())
        .await?
        .json::<Value>()
        .await?;
    let item = listed["items"]
        .as_array()
        .and_then(|items| items.iter().find(|i| i["payment_id"] == payment))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (&item["direction"], &item["payout_status"]),
        (&json!("payout"), &json!("returned")),
        "{listed}"
    );
    assert_eq!(
        amounts(&view, &["paid_minor", "returned_minor", "net_minor"]),
        json!([120000, 120000, 0]),
        "{view}"
    );
    let (kinds, sum, merchant) = journal_when(&mesh, payment, 2).await?;
    assert_eq!(kinds, ["payout", "payout_return"]);
    assert_eq!((sum, merchant), (0, 0));
    let legs: Vec<(String, i64)> = sqlx::query_as(
        "SELECT account, amount_minor FROM ledger_postings WHERE tenant = $1 AND payment_id = $2 ORDER BY version, account",
    )
    .bind(mesh.tenant.as_str())
    .bind(payment)
    .fetch_all(&mesh.db)
    .await?;
    let want: Vec<(String, i64)> = [
        ("merchant_payable:m_money", 120000),
        ("payout_clearing:razorpay", -120000),
        ("merchant_payable:m_money", -120000),
        ("payout_clearing:razorpay", 120000),
    ]
    .into_iter()
    .map(|(a, m)| (a.to_owned(), m))
    .collect();
    assert_eq!(legs, want);
    assert_eq!(ledger_minor(&mesh, payment).await?, 0);

    let rebuilt = rebuild_and_dump(&mesh).await?;
    rebuilt.assert_same(&LEDGER_TABLES);
    rebuilt.assert_same(&["payments"]);
    Ok(())
}

/// The simulator's Razorpay sandbox pays a payout and then returns it, sending its
/// signed `payout.*` webhooks: paytrack shows the payout paid, then returned, and
/// its ledger posts both and comes back to 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_pays_and_returns_a_razorpay_payout() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let tenant = mesh.tenant.clone();
    let sim = Sim::start(&mesh, &["razorpay"]).await?;
    sim.behave("razorpay", 100).await?;
    let payment = "po_sim_returned";
    let provider_ref = sim
        .initiate(
            "razorpay",
            json!({"tenant": tenant.as_str(), "payment_id": payment, "amount_minor": 75000,
                "currency": "INR", "rail": "imps", "merchant_id": "m_sim", "payout": true}),
        )
        .await?;
    assert!(provider_ref.starts_with("pout_"), "{provider_ref}");
    mesh.view_when(payment, "the payout paid", |v| v["status"] == "succeeded")
        .await?;
    sim.movement("razorpay", &provider_ref, &json!({"action": "payout_return"}))
        .await?;
    let view = mesh
        .view_when(payment, "the payout returned", |v| v["status"] == "returned")
        .await?;
    assert_eq!(
        amounts(&view, &["paid_minor", "returned_minor", "net_minor"]),
        json!([75000, 75000, 0]),
        "{view}"
    );
    assert_eq!(view["rail"], "imps", "{view}");
    let (kinds, sum, merchant) = journal_when(&mesh, payment, 2).await?;
    assert_eq!(kinds, ["payout", "payout_return"]);
    assert_eq!((sum, merchant), (0, 0));
    // A payment cannot be returned as a payout, nor can another provider pay one.
    let refused = sim
        .post_initiate(
            "stripe",
            json!({"tenant": tenant.as_str(), "payment_id": "po_sim_stripe", "amount_minor": 100,
                "currency": "USD", "rail": "card", "payout": true}),
        )
        .await?;
    assert!(refused.status().is_client_error(), "{}", refused.status());
    Ok(())
}

/// A payout event that names a payment's id (a payout of that payment's money,
/// linked by its notes) is refused: the payment keeps its history, its direction and
/// its postings, and the refusal is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payout_event_naming_a_payment_is_refused() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let payment = "pay_not_a_payout";
    let t = chrono::Utc::now().timestamp() - 60;
    let captured = razorpay_entity(
        "payment",
        payment,
        t,
        json!({"id": "pay_RzpIn1", "amount": 40000, "status": "captured", "method": "upi"}),
    );
    assert_eq!(razorpay(&mesh, "evt_in_1", "payment.captured", t, captured).await?, 200);
    mesh.view_when(payment, "the capture", |v| v["status"] == "succeeded")
        .await?;
    let payout = razorpay_entity(
        "payout",
        payment,
        t,
        json!({"id": "pout_RzpOut1", "amount": 40000, "status": "reversed", "mode": "UPI", "reference_id": payment}),
    );
    assert_eq!(
        razorpay(&mesh, "evt_out_1", "payout.reversed", t + 10, payout).await?,
        200
    );
    let reason: String = mesh
        .eventually(WAIT, "the payout event decided", || async {
            sqlx::query_scalar(
                "SELECT reason FROM fact_outcomes WHERE tenant = $1 AND payment_id = $2 AND event_type = 'payout.reversed'
                   AND outcome = 'refused'",
            )
            .bind(mesh.tenant.as_str())
            .bind(payment)
            .fetch_optional(&mesh.db)
            .await
            .ok()?
        })
        .await?;
    assert!(reason.contains("payout"), "{reason}");
    let view = mesh
        .view_when(payment, "the payment as it was", |v| v["version"] == 1)
        .await?;
    assert_eq!(
        (&view["status"], &view["amounts"]["net_minor"]),
        (&json!("succeeded"), &json!(40000))
    );
    assert!(view["amounts"].get("paid_minor").is_none(), "{view}");
    let (kinds, sum, merchant) = journal(&mesh, payment).await?;
    assert_eq!((kinds, sum, merchant), (vec!["capture".to_owned()], 0, 40000));
    Ok(())
}

/// The provider simulator a test drives, and a client that presents its token.
struct Sim {
    url: String,
    http: reqwest::Client,
}

impl Sim {
    /// Starts the provider simulator for the mesh's tenant at `providers` (signing
    /// with this file's secrets, inventing no traffic).
    async fn start(mesh: &Mesh, providers: &[&str]) -> anyhow::Result<Sim> {
        use paytrack_shared::config::WebhookSecrets;
        let port = paytrack_tests::free_port_for_later()?;
        let tenant = &mesh.tenant;
        let token = secrecy::SecretString::from("sim-money-token".to_owned());
        let secrets: Vec<String> = providers
            .iter()
            .map(|provider| {
                let secret = if *provider == "stripe" {
                    STRIPE_SECRET
                } else {
                    RAZORPAY_SECRET
                };
                format!("{tenant}/{provider}={secret}")
            })
            .collect();
        let simulator = paytrack_simulator::Simulator::bind(paytrack_simulator::Config {
            listen: format!("127.0.0.1:{port}").parse()?,
            ingest_url: mesh.ingest_url.clone(),
            tenant: tenant.clone(),
            token: token.clone(),
            secrets: WebhookSecrets::parse(&secrecy::SecretString::from(secrets.join(",")))?,
            traffic_every: None,
        })
        .await?;
        tokio::spawn(simulator.run(tokio_util::sync::CancellationToken::new()));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .default_headers(paytrack_shared::auth::gateway_headers(Some(&token)))
            .build()?;
        Ok(Sim {
            url: format!("http://127.0.0.1:{port}"),
            http,
        })
    }

    /// Makes `provider` answer quickly, succeed `success_pct` of payments and send
    /// a fifth of its webhooks twice.
    async fn behave(&self, provider: &str, success_pct: u32) -> anyhow::Result<()> {
        let response = self
            .http
            .put(format!("{}/v1/providers/{provider}/behaviour", self.url))
            .json(&json!({"latency_ms": 20, "success_pct": success_pct, "duplicate_pct": 20}))
            .send()
            .await?;
        anyhow::ensure!(response.status() == 200, "behaviour: {}", response.status());
        Ok(())
    }

    /// Asks `provider` to initiate the payment `body` describes; its answer as it is.
    async fn post_initiate(&self, provider: &str, body: Value) -> anyhow::Result<reqwest::Response> {
        Ok(self
            .http
            .post(format!("{}/v1/providers/{provider}/payments", self.url))
            .json(&body)
            .send()
            .await?)
    }

    /// Initiates the payment `body` describes at `provider`; the provider's reference.
    async fn initiate(&self, provider: &str, body: Value) -> anyhow::Result<String> {
        let response = self.post_initiate(provider, body).await?;
        anyhow::ensure!(response.status() == 201, "initiate: {}", response.text().await?);
        let initiated: Value = response.json().await?;
        Ok(initiated["provider_ref"].as_str().unwrap_or_default().to_owned())
    }

    /// Has `provider` move money of the payment it knows as `provider_ref`
    /// (a refund, a dispute, a late capture, a payout's return).
    async fn movement(&self, provider: &str, provider_ref: &str, action: &Value) -> anyhow::Result<()> {
        let response = self
            .http
            .post(format!(
                "{}/v1/providers/{provider}/payments/{provider_ref}/movements",
                self.url
            ))
            .json(action)
            .send()
            .await?;
        let status = response.status();
        anyhow::ensure!(
            status == 200,
            "{action} {provider_ref}: {status} {}",
            response.text().await?
        );
        Ok(())
    }
}
