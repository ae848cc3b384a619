//! The three webhook schemes against a real ingest and NATS: valid deliveries are
//! stored, forged, tampered, unsigned and stale ones are refused with 401 and leave
//! PAYTRACK_IN untouched, secret rotation works on both sides, events naming no
//! payment are parked until their provider reference is recorded, and a burst with
//! duplicates stores exactly the unique facts.

use std::time::Duration;

use futures::StreamExt;
use paytrack_nats::Role;
use paytrack_shared::{PaymentId, TenantId};
use paytrack_tests::standalone::StandaloneIngest;
use paytrack_tests::{NatsServer, hostile};

const STD_OLD: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const STD_NEW: &str = "whsec_QWxsIHlvdXIgYmFzZSBhcmUgYmVsb25nIHRvIHVz";
const RZP_OLD: &str = "rzp_old_webhook_secret";
const RZP_NEW: &str = "rzp_new_webhook_secret";
const STRIPE_OLD: &str = "whsec_stripe_old_secret";
const STRIPE_NEW: &str = "whsec_stripe_new_secret";

/// Every scheme's secret after the rotation.
const NEW_SECRETS: [(&str, &str); 3] = [("stdwebhooks", STD_NEW), ("razorpay", RZP_NEW), ("stripe", STRIPE_NEW)];

/// A signed delivery: its body and headers.
type Delivery = (String, Vec<(String, String)>);

/// A test's own NATS with ingest on it verifying `secrets` (and `extra` settings),
/// and the admin's JetStream context that reads what ingest stored.
async fn start(
    secrets: &str,
    extra: &[(&'static str, &str)],
) -> anyhow::Result<(NatsServer, async_nats::jetstream::Context, StandaloneIngest)> {
    let nats = NatsServer::start().await?;
    let js = async_nats::jetstream::new(nats.admin_client().await?);
    let ingest = start_ingest(&nats, secrets, extra).await?;
    Ok((nats, js, ingest))
}

/// Ingest on `nats` verifying `secrets`, with `extra` settings and a 5 s ack wait.
async fn start_ingest(
    nats: &NatsServer,
    secrets: &str,
    extra: &[(&'static str, &str)],
) -> anyhow::Result<StandaloneIngest> {
    let mut extra = extra.to_vec();
    extra.push(("nats_ack_timeout_ms", "5000"));
    StandaloneIngest::start(nats, secrets, &extra).await
}

/// The provider-reference index as ingest's NATS user sees it.
async fn provider_refs(nats: &NatsServer) -> anyhow::Result<paytrack_ingest::provider_refs::ProviderRefs> {
    Ok(paytrack_ingest::provider_refs::ProviderRefs::from_client(
        nats.connect_as(Role::Ingest).await?,
        Duration::from_secs(5),
    ))
}

/// The last fact PAYTRACK_IN stored for `payment` of tenant `acme`.
async fn stored_fact(js: &async_nats::jetstream::Context, payment: &str) -> anyhow::Result<serde_json::Value> {
    let stored = js
        .get_stream(paytrack_shared::subjects::STREAM_IN)
        .await?
        .get_last_raw_message_by_subject(&format!("paytrack.in.acme.{payment}"))
        .await?;
    Ok(serde_json::from_slice(&stored.payload)?)
}

fn endpoint_secrets(tenant: &TenantId, which: &[(&str, &str)]) -> String {
    which
        .iter()
        .map(|(provider, secret)| format!("{tenant}/{provider}={secret}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// One signed delivery: the body and its headers, signed with `secret` at `ts`.
fn delivery(provider: &str, secret: &str, id: &str, payment: Option<&str>, ts: i64) -> Delivery {
    let body = match provider {
        "stdwebhooks" => serde_json::json!({
            "type": "payment.succeeded",
            "timestamp": "2026-11-23T10:00:00Z",
            "data": {"payment_id": payment.unwrap_or("pay_std"), "provider_ref": format!("sw_{id}"),
                     "amount_minor": 1250, "currency": "USD", "merchant_id": "m_1"},
        }),
        "razorpay" => {
            let notes = match payment {
                Some(p) => serde_json::json!({"payment_id": p, "merchant_id": "m_1"}),
                None => serde_json::json!([]),
            };
            serde_json::json!({
                "entity": "event", "account_id": "acc_test", "event": "payment.captured",
                "contains": ["payment"],
                "payload": {"payment": {"entity": {"id": format!("pay_{id}"), "entity": "payment",
                    "amount": 50000, "currency": "INR", "status": "captured", "notes": notes,
                    "card": {"number": "4111111111111111"}, "created_at": ts - 5}}},
                "created_at": ts,
            })
        }
        _ => {
            let metadata = match payment {
                Some(p) => serde_json::json!({"payment_id": p}),
                None => serde_json::json!({}),
            };
            serde_json::json!({
                "id": id, "object": "event", "created": ts, "type": "payment_intent.succeeded",
                "data": {"object": {"id": format!("pi_{id}"), "object": "payment_intent", "amount": 2000,
                    "currency": "usd", "metadata": metadata, "created": ts - 5}},
            })
        }
    }
    .to_string();
    let headers = hostile::sign_at(provider, secret, id, &body, ts).expect("every scheme signs with its test secret");
    (body, headers)
}

/// Posts a signed delivery to `tenant`'s `provider` endpoint; the status and the
/// JSON answer.
async fn post(
    http: &reqwest::Client,
    ingest: &str,
    tenant: &TenantId,
    provider: &str,
    (body, headers): &Delivery,
) -> anyhow::Result<(u16, serde_json::Value)> {
    hostile::post(http, ingest, tenant.as_str(), provider, headers, body.clone()).await
}

async fn inbound_messages(js: &async_nats::jetstream::Context) -> anyhow::Result<u64> {
    Ok(js
        .get_stream(paytrack_shared::subjects::STREAM_IN)
        .await?
        .info()
        .await?
        .state
        .messages)
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn id(prefix: &str) -> String {
    format!("{prefix}{}", &uuid::Uuid::new_v4().simple().to_string()[..16])
}

/// Per scheme: valid → 200 and one fact; wrong secret, tampered body, missing
/// signature header, stale timestamp → 401 and nothing stored. During a rotation
/// both secrets verify; after it (ingest restarted with the new one only) the old
/// one is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_scheme_verifies_refuses_and_rotates() -> anyhow::Result<()> {
    let tenant = TenantId::new("acme")?;
    let rotating = endpoint_secrets(
        &tenant,
        &[
            ("stdwebhooks", STD_OLD),
            ("stdwebhooks", STD_NEW),
            ("razorpay", RZP_OLD),
            ("razorpay", RZP_NEW),
            ("stripe", STRIPE_OLD),
            ("stripe", STRIPE_NEW),
        ],
    );
    let (nats, js, ingest) = start(&rotating, &[]).await?;
    let http = reqwest::Client::new();
    let schemes = [
        ("stdwebhooks", STD_OLD, STD_NEW),
        ("razorpay", RZP_OLD, RZP_NEW),
        ("stripe", STRIPE_OLD, STRIPE_NEW),
    ];

    for (provider, old, new) in schemes {
        let before = inbound_messages(&js).await?;
        // During the rotation both secrets verify.
        for secret in [old, new] {
            let sent = delivery(provider, secret, &id("d"), Some("pay_1"), now());
            let (status, answer) = post(&http, &ingest.url, &tenant, provider, &sent).await?;
            assert_eq!(status, 200, "{provider}: {answer}");
            assert_eq!(answer["duplicate"], false, "{provider}");
        }
        assert_eq!(inbound_messages(&js).await?, before + 2, "{provider}");

        let wrong = delivery(
            provider,
            "whsec_QW5vdGhlciBzZWNyZXQgZW50aXJlbHk=",
            &id("d"),
            Some("pay_1"),
            now(),
        );
        let mut tampered = delivery(provider, new, &id("d"), Some("pay_1"), now());
        tampered.0 = tampered.0.replacen("pay_1", "pay_2", 1);
        let mut unsigned = delivery(provider, new, &id("d"), Some("pay_1"), now());
        unsigned
            .1
            .retain(|(k, _)| !["webhook-signature", "x-razorpay-signature", "stripe-signature"].contains(&k.as_str()));
        let mut refused = vec![
            ("wrong secret", wrong),
            ("tampered body", tampered),
            ("missing header", unsigned),
        ];
        // Razorpay signs no timestamp: staleness is a Standard Webhooks and Stripe check.
        if provider != "razorpay" {
            refused.push((
                "stale timestamp",
                delivery(provider, new, &id("d"), Some("pay_1"), now() - 301),
            ));
        }
        for (what, sent) in refused {
            let (status, answer) = post(&http, &ingest.url, &tenant, provider, &sent).await?;
            assert_eq!(status, 401, "{provider} {what}: {answer}");
            assert_eq!(answer["code"], "invalid_signature", "{provider} {what}");
        }
        assert_eq!(
            inbound_messages(&js).await?,
            before + 2,
            "{provider}: a refused delivery stored something"
        );
    }

    // The card number in the Razorpay body is masked in the stored evidence.
    let sent = delivery("razorpay", RZP_NEW, &id("card"), Some("pay_card"), now());
    assert_eq!(post(&http, &ingest.url, &tenant, "razorpay", &sent).await?.0, 200);
    let fact = stored_fact(&js, "pay_card").await?;
    let body = fact["raw"]["body"].as_str().unwrap_or_default();
    assert!(body.contains(r#""number":"************1111""#), "{body}");
    assert_eq!(body.len(), sent.0.len(), "masking keeps every other byte");
    assert_eq!(fact["raw"]["headers"]["paytrack-masked-card-numbers"], "1");
    assert_eq!(fact["source"]["status"], "succeeded");
    assert_eq!(fact["source"]["event_type"], "payment.captured");

    // After the rotation: ingest restarted with the new secrets only.
    ingest.stop().await?;
    let ingest = start_ingest(&nats, &endpoint_secrets(&tenant, &NEW_SECRETS), &[]).await?;
    for (provider, old, new) in schemes {
        let before = inbound_messages(&js).await?;
        let (status, _) = post(
            &http,
            &ingest.url,
            &tenant,
            provider,
            &delivery(provider, old, &id("d"), Some("pay_1"), now()),
        )
        .await?;
        assert_eq!(
            status, 401,
            "{provider}: the old secret still verifies after the rotation"
        );
        let (status, _) = post(
            &http,
            &ingest.url,
            &tenant,
            provider,
            &delivery(provider, new, &id("d"), Some("pay_1"), now()),
        )
        .await?;
        assert_eq!(status, 200, "{provider}");
        assert_eq!(inbound_messages(&js).await?, before + 1, "{provider}");
    }
    ingest.stop().await?;
    Ok(())
}

/// A secret a scheme cannot use stops ingest at start, naming the endpoint.
#[tokio::test]
async fn unusable_secrets_stop_the_start() -> anyhow::Result<()> {
    let nats = NatsServer::stopped()?;
    for secrets in [
        "acme/stripe=sk_live_123456789",
        "acme/paypal=some-secret",
        "acme/stdwebhooks=whpk_AAAA",
    ] {
        let error = match StandaloneIngest::settings(&nats, secrets, &[])
            .and_then(|s| Ok(paytrack_ingest::Config::from_settings(&s)?))
        {
            Ok(_) => anyhow::bail!("{secrets} was accepted"),
            Err(error) => error.to_string(),
        };
        assert!(
            error.contains("WEBHOOK_SECRETS") || error.contains("webhook_secrets"),
            "{error}"
        );
    }
    Ok(())
}

/// An event that names no payment and whose provider reference is not recorded yet
/// is kept (202, parked), not published; recording the reference publishes it to
/// the right payment, and a later event of that reference links at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_for_unknown_payments_are_parked_then_linked() -> anyhow::Result<()> {
    let tenant = TenantId::new("acme")?;
    let secrets = endpoint_secrets(&tenant, &[("razorpay", RZP_NEW), ("stripe", STRIPE_NEW)]);
    let (nats, js, ingest) = start(&secrets, &[]).await?;
    let http = reqwest::Client::new();
    let refs = provider_refs(&nats).await?;

    let before = inbound_messages(&js).await?;
    let event = id("e");
    let sent = delivery("stripe", STRIPE_NEW, &event, None, now());
    let (status, answer) = post(&http, &ingest.url, &tenant, "stripe", &sent).await?;
    assert_eq!((status, &answer["parked"]), (202, &serde_json::json!(true)), "{answer}");
    assert_eq!(inbound_messages(&js).await?, before, "a parked event is not a fact yet");
    let provider_ref = format!("pi_{event}");
    assert_eq!(refs.parked(&tenant, "stripe", &provider_ref).await?.len(), 1);

    let payment = PaymentId::new("pay_linked")?;
    assert_eq!(refs.record(&tenant, "stripe", &provider_ref, &payment).await?, 1);
    assert_eq!(inbound_messages(&js).await?, before + 1);
    let fact = stored_fact(&js, "pay_linked").await?;
    assert_eq!(fact["fact_id"], format!("wh:stripe:{event}"));
    assert!(refs.parked(&tenant, "stripe", &provider_ref).await?.is_empty());
    assert_eq!(
        refs.lookup(&tenant, "stripe", &provider_ref).await?,
        Some(payment.clone())
    );

    // The same delivery again now links directly, and is the same fact.
    let (status, answer) = post(&http, &ingest.url, &tenant, "stripe", &sent).await?;
    assert_eq!(
        (status, &answer["duplicate"]),
        (200, &serde_json::json!(true)),
        "{answer}"
    );
    // Another tenant's identical reference is not linked by this record.
    let other = TenantId::new("beta")?;
    assert_eq!(refs.lookup(&other, "stripe", &provider_ref).await?, None);
    ingest.stop().await?;
    Ok(())
}

/// 5,000 deliveries across the three schemes, 20% of them repeats of earlier ones,
/// sent concurrently: every one is answered 200 and PAYTRACK_IN holds exactly the
/// 4,000 unique facts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_with_duplicates_stores_exactly_the_unique_facts() -> anyhow::Result<()> {
    const TOTAL: usize = 5_000;
    const UNIQUE: usize = 4_000;
    let tenant = TenantId::new("acme")?;
    let (_nats, js, ingest) = start(&endpoint_secrets(&tenant, &NEW_SECRETS), &[]).await?;
    let before = inbound_messages(&js).await?;

    let providers = ["stdwebhooks", "razorpay", "stripe"];
    // One signing time for all: a Razorpay retry repeats the very body it signed.
    let at = now();
    let mut deliveries: Vec<(&str, Delivery)> = (0..UNIQUE)
        .map(|i| {
            let provider = providers[i % 3];
            let secret = [STD_NEW, RZP_NEW, STRIPE_NEW][i % 3];
            let payment = format!("pay_{}", i % 500);
            (
                provider,
                delivery(provider, secret, &format!("burst_{i}"), Some(&payment), at),
            )
        })
        .collect();
    // Every fifth delivery is a repeat of an earlier one (re-signed, as a provider's
    // retry is), interleaved so repeats race their originals.
    for i in 0..(TOTAL - UNIQUE) {
        let original = (i * 7919) % UNIQUE;
        let provider = providers[original % 3];
        let secret = [STD_NEW, RZP_NEW, STRIPE_NEW][original % 3];
        let payment = format!("pay_{}", original % 500);
        let repeat = (
            provider,
            delivery(provider, secret, &format!("burst_{original}"), Some(&payment), at),
        );
        deliveries.insert((i * 5 + 4).min(deliveries.len()), repeat);
    }
    assert_eq!(deliveries.len(), TOTAL);

    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
    let started = std::time::Instant::now();
    let answers: Vec<anyhow::Result<(u16, serde_json::Value)>> = futures::stream::iter(deliveries.iter())
        .map(|(provider, sent)| post(&http, &ingest.url, &tenant, provider, sent))
        .buffer_unordered(48)
        .collect()
        .await;
    let elapsed = started.elapsed();
    let mut duplicates = 0;
    for answer in answers {
        let (status, body) = answer?;
        assert_eq!(status, 200, "{body}");
        if body["duplicate"] == true {
            duplicates += 1;
        }
    }
    eprintln!(
        "burst: {TOTAL} deliveries in {elapsed:?} ({:.0}/s), {duplicates} answered duplicate",
        TOTAL as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(inbound_messages(&js).await? - before, UNIQUE as u64);
    assert_eq!(duplicates, TOTAL - UNIQUE);
    ingest.stop().await?;
    Ok(())
}

/// Razorpay and Stripe events in their own shapes become canonical transitions
/// through the whole mesh, each by the rule named after its native event type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_events_become_transitions_by_their_own_rules() -> anyhow::Result<()> {
    use paytrack_tests::mesh::{RAZORPAY_SECRET, STRIPE_SECRET};
    let mesh = paytrack_tests::Mesh::start().await?;
    let http = reqwest::Client::new();
    for (provider, secret, payment, rule) in [
        ("razorpay", RAZORPAY_SECRET, "pay_rzp_e2e", "razorpay:payment.captured"),
        (
            "stripe",
            STRIPE_SECRET,
            "pay_stripe_e2e",
            "stripe:payment_intent.succeeded",
        ),
    ] {
        let sent = delivery(provider, secret, &id("evt_"), Some(payment), now());
        let (status, answer) = post(&http, &mesh.ingest_url, &mesh.tenant, provider, &sent).await?;
        assert_eq!(status, 200, "{provider}: {answer}");
        let (status, ..) = mesh.wait_for_row(payment, 1).await?;
        assert_eq!(status, "succeeded", "{provider}");
        let (timeline, _) = mesh.timeline(payment).await?;
        assert_eq!(timeline[0]["rule"], rule, "{timeline}");
    }
    Ok(())
}

/// Every scheme against the one table of hostile inputs: each case the table marks
/// refused (times outside 2000 .. a day ahead, ids too long, NULs, repeated keys,
/// JSON too deep) is answered 400 and stores nothing; the rest are answered 2xx or
/// 4xx, never 5xx. (Before: Stripe's `created` and Razorpay's `created_at` were
/// taken up to chrono's last date, a 100k provider reference answered 503, and a
/// repeated `payment_id` was taken, the last one winning.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scheme_answers_the_hostile_table_with_a_4xx_and_stores_nothing() -> anyhow::Result<()> {
    use paytrack_tests::hostile::{Context, Fields};
    let tenant = TenantId::new("t_hostile")?;
    let (_nats, js, ingest) = start(&endpoint_secrets(&tenant, &NEW_SECRETS), &[]).await?;
    let http = reqwest::Client::new();
    let context = Context {
        other_tenants_payment: "pay_of_another_tenant".to_owned(),
    };
    let mut wrong = Vec::new();
    for (provider, secret) in NEW_SECRETS {
        for case in hostile::table() {
            let before = inbound_messages(&js).await?;
            let fields = Fields::normal(&id("evt_"), &format!("pay_{}", &id("h")[1..]));
            let (event_id, body) = hostile::event(provider, &[&case], fields, &context);
            let headers = hostile::sign(provider, secret, &event_id, &body)?;
            let (status, answer) = hostile::post(&http, &ingest.url, tenant.as_str(), provider, &headers, body).await?;
            let stored = inbound_messages(&js).await? - before;
            let fine = if case.refused {
                status == 400 && answer["code"] == "invalid_request" && stored == 0
            } else {
                (200..500).contains(&status)
            };
            if !fine {
                wrong.push(format!(
                    "{provider} / {}: {status} {answer} (stored {stored})",
                    case.name
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "answered wrongly:\n{}", wrong.join("\n"));
    ingest.stop().await
}

/// A captured delivery replayed with fresh unsigned ids is the same delivery: each
/// scheme names a delivery by what its provider signs. Razorpay signs only the body
/// (not `x-razorpay-event-id`): 300 replays with fresh event ids store nothing new.
/// Standard Webhooks signs its `webhook-id`: a fresh one is 401. Stripe's id is in
/// the signed body: a replay is a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_signed_body_is_the_same_delivery_whatever_its_unsigned_headers() -> anyhow::Result<()> {
    let tenant = TenantId::new("acme")?;
    let (_nats, js, ingest) = start(&endpoint_secrets(&tenant, &NEW_SECRETS), &[]).await?;
    let http = reqwest::Client::new();
    let before = inbound_messages(&js).await?;
    let with_header = |(body, headers): &Delivery, name: &str, value: String| -> Delivery {
        let mut headers: Vec<(String, String)> = headers.iter().filter(|(k, _)| k != name).cloned().collect();
        headers.push((name.to_owned(), value));
        (body.clone(), headers)
    };

    let captured = delivery("razorpay", RZP_NEW, "evt_captured", Some("pay_replayed"), now());
    let (status, first) = post(&http, &ingest.url, &tenant, "razorpay", &captured).await?;
    assert_eq!(
        (status, &first["duplicate"]),
        (200, &serde_json::json!(false)),
        "{first}"
    );
    for n in 0..300 {
        let replay = with_header(&captured, "x-razorpay-event-id", format!("evt_fresh_{n}"));
        let (status, answer) = post(&http, &ingest.url, &tenant, "razorpay", &replay).await?;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["duplicate"], true, "replay {n}: {answer}");
        assert_eq!(answer["fact_id"], first["fact_id"]);
    }

    let captured = delivery("stdwebhooks", STD_NEW, "msg_captured", Some("pay_replayed"), now());
    let (status, answer) = post(&http, &ingest.url, &tenant, "stdwebhooks", &captured).await?;
    assert_eq!(status, 200, "{answer}");
    let replay = with_header(&captured, "webhook-id", "msg_fresh".to_owned());
    let (status, answer) = post(&http, &ingest.url, &tenant, "stdwebhooks", &replay).await?;
    assert_eq!(status, 401, "the webhook-id is signed: {answer}");
    let (_, answer) = post(&http, &ingest.url, &tenant, "stdwebhooks", &captured).await?;
    assert_eq!(answer["duplicate"], true, "{answer}");

    let captured = delivery("stripe", STRIPE_NEW, "evt_stripe_captured", Some("pay_replayed"), now());
    let (status, answer) = post(&http, &ingest.url, &tenant, "stripe", &captured).await?;
    assert_eq!(status, 200, "{answer}");
    let (_, answer) = post(&http, &ingest.url, &tenant, "stripe", &captured).await?;
    assert_eq!(answer["duplicate"], true, "{answer}");

    assert_eq!(inbound_messages(&js).await? - before, 3, "one fact per signed delivery");
    ingest.stop().await?;
    Ok(())
}

/// The fact an event names no rail in takes the tenant's default rail for that
/// provider (`provider_default_rails`); an event naming one keeps its own, and a
/// provider without a default leaves it unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_default_rail_fills_the_rail_an_event_does_not_name() -> anyhow::Result<()> {
    let tenant = TenantId::new("acme")?;
    let secrets = endpoint_secrets(&tenant, &[("razorpay", RZP_NEW), ("stripe", STRIPE_NEW)]);
    let (_nats, js, ingest) = start(&secrets, &[("provider_default_rails", "acme/razorpay=upi")]).await?;
    let url = ingest.url.clone();
    let http = reqwest::Client::new();
    let stream = js.get_stream(paytrack_shared::subjects::STREAM_IN).await?;
    let rail_of = |payment: &'static str| {
        let stream = &stream;
        async move {
            let message = stream
                .get_last_raw_message_by_subject(&format!("paytrack.in.acme.{payment}"))
                .await?;
            let fact: paytrack_shared::envelope::InboundFact = paytrack_shared::envelope::decode(&message.payload)?;
            match fact.source {
                paytrack_shared::envelope::FactSource::Webhook(event) => anyhow::Ok(event.rail),
                other => anyhow::bail!("not a webhook: {other:?}"),
            }
        }
    };

    let plain = delivery("razorpay", RZP_NEW, &id("d"), Some("pay_default"), now());
    assert_eq!(post(&http, &url, &tenant, "razorpay", &plain).await?.0, 200);
    assert_eq!(rail_of("pay_default").await?.as_deref(), Some("upi"));
    let (body, _) = delivery("razorpay", RZP_NEW, &id("d"), Some("pay_own"), now());
    let mut value: serde_json::Value = serde_json::from_str(&body)?;
    value["payload"]["payment"]["entity"]["method"] = serde_json::json!("card");
    let body = value.to_string();
    let mut headers = hostile::sign("razorpay", RZP_NEW, "evt_own", &body)?;
    headers.retain(|(name, _)| name != "x-razorpay-event-id");
    let own = (body, headers);
    let (status, answer) = post(&http, &url, &tenant, "razorpay", &own).await?;
    // A Razorpay delivery's event id header is still required (kept as evidence).
    assert_eq!(status, 400, "{answer}");
    let own = (own.0, {
        let mut headers = own.1;
        headers.push(("x-razorpay-event-id".to_owned(), "evt_own".to_owned()));
        headers
    });
    assert_eq!(post(&http, &url, &tenant, "razorpay", &own).await?.0, 200);
    assert_eq!(rail_of("pay_own").await?.as_deref(), Some("card"));
    let stripe = delivery("stripe", STRIPE_NEW, &id("evt_"), Some("pay_nodefault"), now());
    assert_eq!(post(&http, &url, &tenant, "stripe", &stripe).await?.0, 200);
    assert_eq!(rail_of("pay_nodefault").await?, None);

    // A default naming no rail, or another tenant's provider badly, refuses to start.
    for bad in [
        "acme/razorpay=",
        "acme/razorpay=up i",
        "razorpay=upi",
        "acme/razorpay=upi,acme/razorpay=card",
    ] {
        let refused = paytrack_shared::config::Settings::from_pairs([("provider_default_rails", bad.to_owned())]);
        assert!(refused.is_err(), "{bad} was accepted");
    }
    ingest.stop().await?;
    Ok(())
}

/// A tenant cannot park provider events without bound: with a quota of 3 parked
/// events per tenant, a fourth is answered 429 (the provider retries later) and
/// parks nothing, a repeat of a parked delivery is still accepted, another tenant
/// parks on, and once a reference is recorded (its events drained) the tenant may
/// park again. `/metrics` shows the tenant's parked count and the refusals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_events_are_bounded_per_tenant() -> anyhow::Result<()> {
    let tenant = TenantId::new("acme")?;
    let other = TenantId::new("beta")?;
    let secrets = format!(
        "{},{}",
        endpoint_secrets(&tenant, &[("stripe", STRIPE_NEW)]),
        endpoint_secrets(&other, &[("stripe", STRIPE_NEW)])
    );
    let (nats, _js, ingest) = start(&secrets, &[("ingest_parked_events_max_per_tenant", "3")]).await?;
    let http = reqwest::Client::new();
    let events: Vec<String> = (0..4).map(|_| id("q")).collect();
    let sent: Vec<Delivery> = events
        .iter()
        .map(|e| delivery("stripe", STRIPE_NEW, e, None, now()))
        .collect();
    for d in &sent[..3] {
        let (status, answer) = post(&http, &ingest.url, &tenant, "stripe", d).await?;
        assert_eq!((status, &answer["parked"]), (202, &serde_json::json!(true)), "{answer}");
    }
    let (status, answer) = post(&http, &ingest.url, &tenant, "stripe", &sent[3]).await?;
    assert_eq!(status, 429, "{answer}");
    assert_eq!(answer["code"], "quota_exceeded", "{answer}");
    let refs = provider_refs(&nats).await?;
    assert!(
        refs.parked(&tenant, "stripe", &format!("pi_{}", events[3]))
            .await?
            .is_empty(),
        "the refused event is not parked"
    );
    let (status, _) = post(&http, &ingest.url, &tenant, "stripe", &sent[0]).await?;
    assert_eq!(status, 202, "a repeat of a parked delivery is still accepted");
    let (status, _) = post(&http, &ingest.url, &other, "stripe", &sent[3]).await?;
    assert_eq!(status, 202, "another tenant's quota is its own");

    let metrics = http.get(format!("{}/metrics", ingest.url)).send().await?.text().await?;
    assert!(
        metrics.contains("paytrack_ingest_parked_refused_total{tenant=\"acme\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("paytrack_ingest_parked_events{tenant=\"acme\"} 3"),
        "{metrics}"
    );

    let payment = PaymentId::new("pay_quota_linked")?;
    assert_eq!(
        refs.record(&tenant, "stripe", &format!("pi_{}", events[0]), &payment)
            .await?,
        1
    );
    paytrack_tests::eventually(Duration::from_secs(20), "room to park again", || async {
        let (status, _) = post(&http, &ingest.url, &tenant, "stripe", &sent[3]).await.ok()?;
        (status == 202).then_some(())
    })
    .await?;
    ingest.stop().await?;
    Ok(())
}
