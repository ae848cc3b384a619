//! The provider simulator against a real ingest and NATS: a payment initiated at
//! each sandbox provider gets the provider's signed webhooks into PAYTRACK_IN, the
//! ground truth and status-query API say what happened, and the behaviour settings
//! (success rate, availability, status API, duplicates, metadata) take effect.

use std::time::Duration;

use futures::TryStreamExt;
use paytrack_nats::Role;
use paytrack_shared::config::WebhookSecrets;
use paytrack_shared::{PaymentId, TenantId};
use paytrack_tests::standalone::StandaloneIngest;
use paytrack_tests::{NatsServer, eventually, ground_truth};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const SECRETS: &str = "acme/stdwebhooks=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw,\
                       acme/razorpay=rzp_sandbox_secret,acme/stripe=whsec_sandbox_stripe,\
                       globex/stdwebhooks=whsec_QWxsIHlvdXIgYmFzZSBhcmUgYmVsb25nIHRvIHVz";
/// The bearer token the simulator requires of every call.
const TOKEN: &str = "sim-test-token";

struct Stack {
    nats: NatsServer,
    sim: String,
    http: reqwest::Client,
    stop: CancellationToken,
}

async fn start() -> anyhow::Result<Stack> {
    start_with(None).await
}

async fn start_with(traffic_every: Option<Duration>) -> anyhow::Result<Stack> {
    let nats = NatsServer::start().await?;
    let ingest = StandaloneIngest::start(&nats, SECRETS, &[]).await?;
    let ingest_url = ingest.url.clone();
    // The simulator stops with ingest.
    let stop = ingest.shutdown_token();
    let sim = paytrack_simulator::Simulator::bind(paytrack_simulator::Config {
        listen: "127.0.0.1:0".parse()?,
        ingest_url: ingest_url.clone(),
        tenant: TenantId::new("acme")?,
        token: secrecy::SecretString::from(TOKEN.to_owned()),
        secrets: WebhookSecrets::parse(&secrecy::SecretString::from(SECRETS.to_owned()))?,
        traffic_every,
    })
    .await?;
    let sim_url = format!("http://{}", sim.local_addr()?);
    tokio::spawn(sim.run(stop.clone()));
    let token = secrecy::SecretString::from(TOKEN.to_owned());
    let http = reqwest::Client::builder()
        .default_headers(paytrack_shared::auth::gateway_headers(Some(&token)))
        .build()?;
    for provider in ["stdwebhooks", "razorpay", "stripe"] {
        let response = http
            .put(format!("{sim_url}/v1/providers/{provider}/behaviour"))
            .json(&json!({"latency_ms": 20, "success_pct": 100}))
            .send()
            .await?;
        anyhow::ensure!(response.status() == 200, "behaviour: {}", response.status());
    }
    Ok(Stack {
        nats,
        sim: sim_url,
        http,
        stop,
    })
}

impl Stack {
    async fn initiate(&self, provider: &str, payment: &str) -> anyhow::Result<(u16, Value)> {
        let response = self
            .http
            .post(format!("{}/v1/providers/{provider}/payments", self.sim))
            .json(&json!({"tenant": "acme", "payment_id": payment, "amount_minor": 1500,
                          "currency": "INR", "rail": "upi", "merchant_id": "m_1"}))
            .send()
            .await?;
        Ok((response.status().as_u16(), response.json().await.unwrap_or_default()))
    }

    async fn behave(&self, provider: &str, behaviour: Value) -> anyhow::Result<u16> {
        let response = self
            .http
            .put(format!("{}/v1/providers/{provider}/behaviour", self.sim))
            .json(&behaviour)
            .send()
            .await?;
        Ok(response.status().as_u16())
    }

    async fn truth(&self, payment: &str) -> Option<Value> {
        ground_truth::of_payment(&self.http, &self.sim, payment).await
    }

    /// Facts stored for `payment` in PAYTRACK_IN.
    async fn facts(&self, payment: &str) -> anyhow::Result<usize> {
        let js = async_nats::jetstream::new(self.nats.admin_client().await?);
        let stream = js.get_stream(paytrack_shared::subjects::STREAM_IN).await?;
        let subjects: Vec<(String, usize)> = stream
            .info_with_subjects(format!("paytrack.in.acme.{payment}"))
            .await?
            .try_collect()
            .await?;
        Ok(subjects.iter().map(|(_, n)| n).sum())
    }

    /// Waits until the truth says `status` with `sent` webhooks delivered, then
    /// checks PAYTRACK_IN holds `facts` facts of the payment.
    async fn settled(&self, payment: &str, status: &str, sent: u64, facts: usize) -> anyhow::Result<Value> {
        let what = format!("{payment} {status}, {sent} sent");
        let truth = eventually(Duration::from_secs(30), &what, || async {
            let truth = self.truth(payment).await?;
            (truth["status"] == status && truth["webhooks_sent"] == sent).then_some(truth)
        })
        .await?;
        // A 2xx to a webhook means it is stored: every delivery counted is in PAYTRACK_IN.
        assert_eq!(self.facts(payment).await?, facts, "{payment}");
        Ok(truth)
    }
}

/// Each provider: initiation answers its reference, both webhooks (pending, then
/// the outcome) become facts, the ground truth and the status API agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sandbox_provider_delivers_signed_webhooks() -> anyhow::Result<()> {
    let stack = start().await?;
    for (provider, prefix) in [("stdwebhooks", "sw_"), ("razorpay", "pay_"), ("stripe", "pi_")] {
        let payment = format!("pay_sim_{provider}");
        let (status, answer) = stack.initiate(provider, &payment).await?;
        assert_eq!(status, 201, "{answer}");
        let provider_ref = answer["provider_ref"].as_str().unwrap_or_default().to_owned();
        assert!(provider_ref.starts_with(prefix), "{answer}");
        stack.settled(&payment, "succeeded", 2, 2).await?;
        let queried: Value = stack
            .http
            .get(format!("{}/v1/providers/{provider}/payments/{provider_ref}", stack.sim))
            .send()
            .await?
            .json()
            .await?;
        assert_eq!(queried["status"], "succeeded");
        assert_eq!(queried["payment_id"], payment.as_str());
    }

    // Another tenant (the simulator acts for its own only), an unknown provider, a bad body.
    let response = stack
        .http
        .post(format!("{}/v1/providers/stripe/payments", stack.sim))
        .json(&json!({"tenant": "beta", "payment_id": "p1", "amount_minor": 1, "currency": "USD", "rail": "card"}))
        .send()
        .await?;
    assert_eq!(response.status(), 403);
    assert_eq!(stack.initiate("paypal", "p2").await?.0, 404);
    assert_eq!(stack.behave("stripe", json!({"loss_pct": 120})).await?, 400);
    stack.stop.cancel();
    Ok(())
}

/// The behaviour settings: a success rate of 0 fails payments (and the provider's
/// rolling success rate drops), availability 0 refuses initiations, a stopped
/// status API answers 503, and duplicates do not add facts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behaviour_changes_take_effect() -> anyhow::Result<()> {
    let stack = start().await?;
    stack.initiate("stripe", "pay_ok").await?;
    stack.settled("pay_ok", "succeeded", 2, 2).await?;

    assert_eq!(
        stack
            .behave("stripe", json!({"success_pct": 0, "duplicate_pct": 100}))
            .await?,
        200
    );
    let (_, answer) = stack.initiate("stripe", "pay_ko").await?;
    // Every webhook delivered twice, stored once.
    stack.settled("pay_ko", "failed", 4, 2).await?;
    let described: Value = stack
        .http
        .get(format!("{}/v1/providers/stripe/behaviour", stack.sim))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(described["stats"]["success_rate"], 0.5, "{described}");

    assert_eq!(stack.behave("stripe", json!({"status_api": false})).await?, 200);
    let provider_ref = answer["provider_ref"].as_str().unwrap_or_default();
    let response = stack
        .http
        .get(format!("{}/v1/providers/stripe/payments/{provider_ref}", stack.sim))
        .send()
        .await?;
    assert_eq!(response.status(), 503);

    assert_eq!(stack.behave("razorpay", json!({"availability_pct": 0})).await?, 200);
    assert_eq!(stack.initiate("razorpay", "pay_down").await?.0, 503);
    assert!(stack.truth("pay_down").await.is_none());
    stack.stop.cancel();
    Ok(())
}

/// Without metadata a provider's events name only its reference: they are parked
/// until the create command records the reference, then become the payment's facts
/// — whichever of the two happens first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_without_metadata_link_through_the_recorded_reference() -> anyhow::Result<()> {
    let stack = start().await?;
    let refs = paytrack_ingest::provider_refs::ProviderRefs::from_client(
        stack.nats.connect_as(Role::Ingest).await?,
        Duration::from_secs(5),
    );
    let tenant = TenantId::new("acme")?;
    for provider in ["razorpay", "stripe"] {
        assert_eq!(stack.behave(provider, json!({"send_metadata": false})).await?, 200);
        let payment = format!("pay_nometa_{provider}");
        let (status, answer) = stack.initiate(provider, &payment).await?;
        assert_eq!(status, 201);
        let provider_ref = answer["provider_ref"].as_str().unwrap_or_default().to_owned();
        // The webhooks arrive (and are parked) before the reference is recorded.
        eventually(Duration::from_secs(30), "both webhooks parked", || async {
            let parked = refs.parked(&tenant, provider, &provider_ref).await.ok()?;
            (parked.len() == 2).then_some(())
        })
        .await?;
        assert_eq!(stack.facts(&payment).await?, 0);
        refs.record(&tenant, provider, &provider_ref, &PaymentId::new(&payment)?)
            .await?;
        eventually(Duration::from_secs(30), "linked facts", || async {
            (stack.facts(&payment).await.ok()? == 2).then_some(())
        })
        .await?;
        stack.settled(&payment, "succeeded", 2, 2).await?;
    }
    stack.stop.cancel();
    Ok(())
}

/// The simulator signs genuine webhooks, so it is never open: every call to its API
/// without its token (or with another) is 401, and it initiates (and signs) for its
/// own tenant only, even when it holds another tenant's secret: 403, and nothing
/// reaches ingest. Its health check stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_requires_its_token_and_acts_only_for_its_tenant() -> anyhow::Result<()> {
    let stack = start().await?;
    let anonymous = reqwest::Client::new();
    let wrong = reqwest::Client::builder()
        .default_headers(paytrack_shared::auth::gateway_headers(Some(
            &secrecy::SecretString::from("not-the-token".to_owned()),
        )))
        .build()?;
    let initiation = json!({"tenant": "acme", "payment_id": "pay_anon", "amount_minor": 1500,
                            "currency": "INR", "rail": "upi"});
    for client in [&anonymous, &wrong] {
        let calls = [
            client
                .post(format!("{}/v1/providers/razorpay/payments", stack.sim))
                .json(&initiation),
            client.get(format!("{}/v1/providers/razorpay/payments/pay_x", stack.sim)),
            client.get(format!("{}/v1/providers/razorpay/behaviour", stack.sim)),
            client
                .put(format!("{}/v1/providers/razorpay/behaviour", stack.sim))
                .json(&json!({"success_pct": 0})),
            client.get(format!("{}/v1/ground-truth", stack.sim)),
        ];
        for call in calls {
            let response = call.send().await?;
            assert_eq!(response.status(), 401, "{}", response.url());
            let body: Value = response.json().await?;
            assert_eq!(body["code"], "unauthorized");
        }
    }
    assert!(
        stack.truth("pay_anon").await.is_none(),
        "nothing initiated without the token"
    );
    let health = anonymous.get(format!("{}/healthz", stack.sim)).send().await?;
    assert_eq!(health.status(), 200);

    let response = stack
        .http
        .post(format!("{}/v1/providers/stdwebhooks/payments", stack.sim))
        .json(
            &json!({"tenant": "globex", "payment_id": "pay_foreign", "amount_minor": 1500,
                      "currency": "USD", "rail": "card"}),
        )
        .send()
        .await?;
    assert_eq!(response.status(), 403);
    assert_eq!(response.json::<Value>().await?["code"], "forbidden");
    assert!(stack.truth("pay_foreign").await.is_none());
    // Its own tenant is served with the token.
    let (status, answer) = stack.initiate("stdwebhooks", "pay_own").await?;
    assert_eq!(status, 201, "{answer}");
    stack.settled("pay_own", "succeeded", 2, 2).await?;
    let js = async_nats::jetstream::new(stack.nats.admin_client().await?);
    let foreign: Vec<(String, usize)> = js
        .get_stream(paytrack_shared::subjects::STREAM_IN)
        .await?
        .info_with_subjects("paytrack.in.globex.>")
        .await?
        .try_collect()
        .await?;
    assert!(foreign.is_empty(), "{foreign:?}");
    stack.stop.cancel();
    Ok(())
}

/// With a traffic tenant the simulator invents payments on its own (what `make up`
/// shows on the dashboard): each gets its webhooks into PAYTRACK_IN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn light_traffic_invents_payments() -> anyhow::Result<()> {
    let stack = start_with(Some(Duration::from_millis(100))).await?;
    let invented = eventually(Duration::from_secs(30), "three invented payments settled", || async {
        let settled: Vec<String> = ground_truth::payments(&stack.http, &stack.sim)
            .await?
            .iter()
            .filter(|p| p["status"] != "pending" && p["webhooks_sent"] == 2)
            .filter_map(|p| p["payment_id"].as_str().map(str::to_owned))
            .collect();
        (settled.len() >= 3).then_some(settled)
    })
    .await?;
    for payment in &invented[..3] {
        assert!(payment.starts_with("sim_"), "{payment}");
        assert_eq!(stack.facts(payment).await?, 2, "{payment}");
    }
    stack.stop.cancel();
    Ok(())
}

/// A request declaring a 10 GB body is answered 413 at once (it was held open,
/// unanswered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_10_gb_body_is_answered_413_at_once() -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stack = start().await?;
    let mut socket = tokio::net::TcpStream::connect(stack.sim.trim_start_matches("http://")).await?;
    let head = format!(
        "POST /v1/providers/stripe/payments HTTP/1.1\r\nHost: sim\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n{{"
    );
    socket.write_all(head.as_bytes()).await?;
    let mut answer = vec![0u8; 2048];
    let read = tokio::time::timeout(Duration::from_secs(10), socket.read(&mut answer)).await??;
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    stack.stop.cancel();
    Ok(())
}

/// An initiation retried with its `Idempotency-Key` is one payment at the provider:
/// the same reference is answered again and the ground truth holds one payment. The
/// key with other terms is 422; each provider keeps its own keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_initiation_retried_with_its_idempotency_key_is_one_payment_at_the_provider() -> anyhow::Result<()> {
    let stack = start().await?;
    let initiate = |provider: &'static str, amount: i64| {
        let stack = &stack;
        async move {
            let response = stack
                .http
                .post(format!("{}/v1/providers/{provider}/payments", stack.sim))
                .header("idempotency-key", "pay_idem_1")
                .json(
                    &json!({"tenant": "acme", "payment_id": "pay_idem_1", "amount_minor": amount,
                              "currency": "INR", "rail": "upi", "merchant_id": "m_1"}),
                )
                .send()
                .await?;
            anyhow::Ok((
                response.status().as_u16(),
                response.json::<Value>().await.unwrap_or_default(),
            ))
        }
    };
    let (status, first) = initiate("razorpay", 1500).await?;
    assert_eq!(status, 201, "{first}");
    for _ in 0..3 {
        let (status, again) = initiate("razorpay", 1500).await?;
        assert_eq!((status, &again), (201, &first), "a retry answers the same payment");
    }
    let (status, other) = initiate("razorpay", 1600).await?;
    assert_eq!(status, 422, "{other}");
    assert_eq!(other["code"], "idempotency_key_reused");
    let truth: Value = stack
        .http
        .get(format!("{}/v1/ground-truth", stack.sim))
        .send()
        .await?
        .json()
        .await?;
    let at_razorpay: Vec<&Value> = truth["payments"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter(|p| p["payment_id"] == "pay_idem_1" && p["provider"] == "razorpay")
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(at_razorpay.len(), 1, "one payment at the provider: {truth}");
    assert_eq!(at_razorpay[0]["provider_ref"], first["provider_ref"]);
    // Another provider's keys are its own.
    let (status, stripe) = initiate("stripe", 1500).await?;
    assert_eq!(status, 201, "{stripe}");
    assert_ne!(stripe["provider_ref"], first["provider_ref"]);
    stack.stop.cancel();
    Ok(())
}

/// Every sandbox provider's events name the payment's rail in the provider's own
/// words (Razorpay `method`, Stripe `payment_method_types`, `data.rail`), and the
/// stored facts carry it in paytrack's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sandbox_providers_events_name_the_rail() -> anyhow::Result<()> {
    let stack = start().await?;
    let js = async_nats::jetstream::new(stack.nats.admin_client().await?);
    let inbound = js.get_stream(paytrack_shared::subjects::STREAM_IN).await?;
    for (provider, rail, currency) in [
        ("stdwebhooks", "card", "USD"),
        ("razorpay", "upi", "INR"),
        ("stripe", "card", "USD"),
    ] {
        let payment = format!("pay_rail_{provider}");
        let response = stack
            .http
            .post(format!("{}/v1/providers/{provider}/payments", stack.sim))
            .json(&json!({"tenant": "acme", "payment_id": payment, "amount_minor": 1500,
                          "currency": currency, "rail": rail, "merchant_id": "m_1"}))
            .send()
            .await?;
        assert_eq!(response.status(), 201);
        stack.settled(&payment, "succeeded", 2, 2).await?;
        let message = inbound
            .get_last_raw_message_by_subject(&format!("paytrack.in.acme.{payment}"))
            .await?;
        let fact: paytrack_shared::envelope::InboundFact = paytrack_shared::envelope::decode(&message.payload)?;
        let paytrack_shared::envelope::FactSource::Webhook(event) = fact.source else {
            anyhow::bail!("{payment}: not a webhook fact");
        };
        assert_eq!(event.rail.as_deref(), Some(rail), "{provider}: {}", fact.raw.body);
    }
    stack.stop.cancel();
    Ok(())
}
