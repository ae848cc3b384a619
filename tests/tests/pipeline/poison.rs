//! Poison: a message that cannot be stored or handled never stalls its consumer.
//! What can be stored faithfully is (raw bodies as bytes, NULs in JSON kept); what
//! cannot is parked on `paytrack.dead.<stream>.<consumer>` with a `dead_letter`
//! alert, after one delivery if it can never succeed, after the configured number if
//! it keeps failing; either way the consumer moves on, and one that keeps failing
//! shows in `/readyz` and `/metrics`.
//!
//! Subjects and header names are spelled out here on purpose: they are the contract.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream;
use paytrack_shared::envelope::{
    self, FactSource, InboundFact, ProviderEvent, RawEvidence, SessionAudit, SessionEvent,
};
use paytrack_shared::{PaymentId, TenantId};
use paytrack_tests::mesh::MeshOptions;
use paytrack_tests::ws::WsClient;
use paytrack_tests::{Mesh, eventually};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

fn quick_parking() -> MeshOptions {
    MeshOptions {
        consumer_max_deliveries: Some(3),
        consumer_retry_ms: Some(100),
        ..MeshOptions::default()
    }
}

/// An inbound fact as ingest would publish it, with the strings given.
fn fact(tenant: &TenantId, payment: &str, fact_id: &str, event_type: &str, event_id: &str, body: &str) -> InboundFact {
    InboundFact {
        v: 1,
        fact_id: fact_id.into(),
        tenant: tenant.clone(),
        payment_id: PaymentId::new(payment).expect("payment id"),
        merchant_id: None,
        received_at: chrono::Utc::now(),
        source: FactSource::Webhook(ProviderEvent {
            provider_ref: Some(format!("pr\u{0}{payment}")),
            amount_minor: Some(100),
            currency: Some("USD".into()),
            reason: Some("nul \u{0} inside".into()),
            ..ProviderEvent::new("stdwebhooks", event_id, event_type)
        }),
        raw: RawEvidence {
            headers: BTreeMap::from([("webhook-id".to_owned(), format!("id\u{0}{payment}"))]),
            body: body.to_owned(),
        },
    }
}

/// Every message of `stream` whose subject is `subject`, oldest first.
async fn messages_on(
    js: &jetstream::Context,
    stream: &str,
    subject: &str,
) -> Option<Vec<jetstream::message::StreamMessage>> {
    let mut handle = js.get_stream(stream).await.ok()?;
    let last = handle.info().await.ok()?.state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        if let Ok(message) = handle.get_raw_message(seq).await
            && message.subject.as_str() == subject
        {
            out.push(message);
        }
    }
    Some(out)
}

fn header<'a>(message: &'a jetstream::message::StreamMessage, name: &str) -> Option<&'a str> {
    message.headers.get(name).map(|v| v.as_str())
}

/// A thousand facts whose id PostgreSQL cannot hold, then ordinary webhooks: the
/// ordinary ones are stored and projected, a fact with NULs in its parsed strings,
/// headers and raw body is stored byte for byte, and each unstorable one is parked
/// with an alert. (Before: the evidence consumer retried them forever and, with
/// 1,000 in flight, delivered nothing else.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_bytes_neither_stall_nor_lose_later_facts() -> anyhow::Result<()> {
    let mesh = Mesh::start_with(quick_parking()).await?;
    let tenant = mesh.tenant.clone();

    // Stored faithfully: NUL in the parsed event, a header and the raw body.
    let nul_body = "{\"type\":\"payment.pending\",\"note\":\"a\u{0}b\"}";
    let faithful = fact(
        &tenant,
        "pay_nul",
        "wh:stdwebhooks:nul_1",
        "payment.pending",
        "evt\u{0}1",
        nul_body,
    );
    let subject = format!("paytrack.in.{tenant}.pay_nul");
    mesh.js
        .send_publish(
            subject,
            jetstream::message::PublishMessage::build()
                .message_id(faithful.fact_id.clone())
                .payload(envelope::encode(&faithful)),
        )
        .await?
        .await?;

    // Unstorable (a TEXT key cannot hold NUL), and unmapped so only evidence reads them.
    const FLOOD: usize = 1_000;
    let mut acks = Vec::with_capacity(FLOOD);
    for n in 0..FLOOD {
        let bad = fact(
            &tenant,
            "pay_badid",
            &format!("wh:stdwebhooks:bad\u{0}{n}"),
            "refund.created",
            "evt",
            "{}",
        );
        let message = jetstream::message::PublishMessage::build()
            .message_id(format!("bad_{n}"))
            .payload(envelope::encode(&bad));
        acks.push(
            mesh.js
                .send_publish(format!("paytrack.in.{tenant}.pay_badid"), message)
                .await?,
        );
    }
    for ack in acks {
        ack.await?;
    }

    for n in 0..3 {
        let response = mesh
            .post_webhook(
                &format!("msg_ok_{n}"),
                &Mesh::webhook_body(&format!("pay_ok_{n}"), "pending", "m1"),
            )
            .await?;
        assert!(response.status().is_success());
    }

    // The consumer is not stalled: the ordinary facts are stored and projected.
    eventually(Duration::from_secs(60), "ordinary evidence", || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM inbound_facts WHERE tenant = $1 AND payment_id LIKE 'pay_ok_%'",
        )
        .bind(tenant.as_str())
        .fetch_one(&mesh.db)
        .await
        .ok()
        .filter(|n| *n == 3)
    })
    .await?;
    for n in 0..3 {
        mesh.wait_for_row(&format!("pay_ok_{n}"), 1).await?;
    }

    // Stored byte for byte, NULs included.
    let (raw_body, source, headers): (Vec<u8>, String, String) = sqlx::query_as(
        "SELECT raw_body, source::text, raw_headers::text FROM inbound_facts WHERE tenant = $1 AND fact_id = $2",
    )
    .bind(tenant.as_str())
    .bind("wh:stdwebhooks:nul_1")
    .fetch_one(&mesh.db)
    .await?;
    assert_eq!(raw_body, nul_body.as_bytes());
    let source: serde_json::Value = serde_json::from_str(&source)?;
    assert_eq!(source["event_id"], "evt\u{0}1");
    let headers: serde_json::Value = serde_json::from_str(&headers)?;
    assert_eq!(headers["webhook-id"], "id\u{0}pay_nul");

    // Every unstorable fact is parked, once, with what it takes to replay it.
    let dead_subject = "paytrack.dead.PAYTRACK_IN.ledger-projector-evidence";
    let parked = eventually(Duration::from_secs(60), "parked facts", || async {
        messages_on(&mesh.js, "PAYTRACK_DEAD", dead_subject)
            .await
            .filter(|m| m.len() >= FLOOD)
    })
    .await?;
    assert_eq!(parked.len(), FLOOD, "each parked exactly once");
    let first = &parked[0];
    assert_eq!(
        header(first, "Paytrack-Dead-Subject"),
        Some(format!("paytrack.in.{tenant}.pay_badid").as_str())
    );
    assert_eq!(header(first, "Paytrack-Dead-Stream"), Some("PAYTRACK_IN"));
    assert_eq!(
        header(first, "Paytrack-Dead-Delivered"),
        Some("1"),
        "a data error is not retried"
    );
    assert!(header(first, "Paytrack-Dead-Error").is_some_and(|e| !e.is_empty()));
    let original: InboundFact = envelope::decode(&first.payload)?;
    assert!(original.fact_id.starts_with("wh:stdwebhooks:bad\u{0}"));

    let alerts = eventually(WAIT, "dead-letter alerts", || async {
        let alerts: Vec<serde_json::Value> = messages_on(
            &mesh.js,
            "PAYTRACK_ALERT",
            &format!("paytrack.alert.{tenant}.dead_letter"),
        )
        .await?
        .iter()
        .filter_map(|m| serde_json::from_slice(&m.payload).ok())
        .collect();
        (alerts
            .iter()
            .filter(|a| a["consumer"] == "ledger-projector-evidence")
            .count()
            >= FLOOD)
            .then_some(alerts)
    })
    .await?;
    let alert = alerts
        .iter()
        .find(|a| a["consumer"] == "ledger-projector-evidence")
        .expect("evidence alert");
    assert_eq!(alert["kind"], "dead_letter");
    assert_eq!(alert["tenant"], tenant.as_str());
    assert_eq!(alert["dead_subject"], dead_subject);

    // The NUL-carrying fact was applied; its transition names the provider event id,
    // which the timeline's TEXT cannot hold: parked for a person, with an alert.
    eventually(WAIT, "the unstorable transition parked, with an alert", || async {
        let parked = messages_on(
            &mesh.js,
            "PAYTRACK_DEAD",
            "paytrack.dead.PAYTRACK_STATUS.ledger-projector-status",
        )
        .await?
        .len();
        let alerted = messages_on(
            &mesh.js,
            "PAYTRACK_ALERT",
            &format!("paytrack.alert.{tenant}.dead_letter"),
        )
        .await?
        .iter()
        .filter_map(|m| serde_json::from_slice::<serde_json::Value>(&m.payload).ok())
        .filter(|a| a["consumer"] == "ledger-projector-status")
        .count();
        (parked == 1 && alerted == 1).then_some(())
    })
    .await?;
    Ok(())
}

/// An undecodable message is parked at once; one that fails on every delivery (a
/// forced database failure) is parked after the configured three, with an alert,
/// and the consumer goes on with the next fact. While it keeps failing, `/readyz`
/// says so, and `/metrics` counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_keeps_failing_is_parked_after_n_deliveries() -> anyhow::Result<()> {
    let mesh = Mesh::start_with(MeshOptions { ..quick_parking() }).await?;
    let tenant = mesh.tenant.clone();
    let admin = mesh.projector_admin;
    let http = reqwest::Client::new();
    let ready = |http: reqwest::Client| async move {
        http.get(format!("http://{admin}/readyz"))
            .send()
            .await
            .ok()
            .map(|r| r.status().as_u16())
    };
    eventually(WAIT, "projector ready", || async {
        ready(http.clone()).await.filter(|s| *s == 200)
    })
    .await?;

    mesh.js
        .publish(format!("paytrack.in.{tenant}.pay_garbage"), "not an envelope".into())
        .await?
        .await?;
    let dead_subject = "paytrack.dead.PAYTRACK_IN.ledger-projector-evidence";
    let garbage = eventually(WAIT, "undecodable message parked", || async {
        messages_on(&mesh.js, "PAYTRACK_DEAD", dead_subject)
            .await
            .filter(|m| !m.is_empty())
    })
    .await?;
    assert_eq!(header(&garbage[0], "Paytrack-Dead-Delivered"), Some("1"));
    assert_eq!(&garbage[0].payload[..], b"not an envelope");
    // The reconciler reads the same fact through the same prologue: it parks it too,
    // under its own consumer, instead of retrying it forever.
    let parked_by_reconciler = eventually(WAIT, "undecodable fact parked by the reconciler", || async {
        messages_on(&mesh.js, "PAYTRACK_DEAD", "paytrack.dead.PAYTRACK_IN.reconciler")
            .await
            .filter(|m| !m.is_empty())
    })
    .await?;
    assert_eq!(&parked_by_reconciler[0].payload[..], b"not an envelope");

    sqlx::raw_sql(
        "CREATE FUNCTION refuse_doomed() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF NEW.payment_id LIKE 'pay_doomed%' THEN RAISE EXCEPTION 'forced failure'; END IF;
           RETURN NEW;
         END $$;
         CREATE TRIGGER refuse_doomed BEFORE INSERT ON inbound_facts
           FOR EACH ROW EXECUTE FUNCTION refuse_doomed();",
    )
    .execute(&mesh.db)
    .await?;
    mesh.post_webhook("msg_doomed", &Mesh::webhook_body("pay_doomed", "pending", "m1"))
        .await?;
    eventually(WAIT, "readiness to drop while the consumer keeps failing", || async {
        ready(http.clone()).await.filter(|s| *s == 503)
    })
    .await?;
    let parked = eventually(WAIT, "failing message parked", || async {
        messages_on(&mesh.js, "PAYTRACK_DEAD", dead_subject)
            .await
            .filter(|m| m.len() >= 2)
    })
    .await?;
    assert_eq!(
        header(&parked[1], "Paytrack-Dead-Subject"),
        Some(format!("paytrack.in.{tenant}.pay_doomed").as_str())
    );
    assert_eq!(header(&parked[1], "Paytrack-Dead-Delivered"), Some("3"));
    assert!(header(&parked[1], "Paytrack-Dead-Error").is_some_and(|e| e.contains("forced failure")));
    eventually(WAIT, "alert for the parked fact", || async {
        messages_on(
            &mesh.js,
            "PAYTRACK_ALERT",
            &format!("paytrack.alert.{tenant}.dead_letter"),
        )
        .await
        .filter(|m| {
            m.iter().any(|a| {
                serde_json::from_slice::<serde_json::Value>(&a.payload)
                    .is_ok_and(|v| v["subject"] == format!("paytrack.in.{tenant}.pay_doomed"))
            })
        })
    })
    .await?;

    // The consumer moved on: the next fact is stored and the service is ready again.
    mesh.post_webhook("msg_after", &Mesh::webhook_body("pay_after", "pending", "m1"))
        .await?;
    eventually(WAIT, "the next fact stored", || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM inbound_facts WHERE tenant = $1 AND payment_id = 'pay_after'",
        )
        .bind(tenant.as_str())
        .fetch_one(&mesh.db)
        .await
        .ok()
        .filter(|n| *n == 1)
    })
    .await?;
    eventually(WAIT, "ready again", || async {
        ready(http.clone()).await.filter(|s| *s == 200)
    })
    .await?;

    let metrics = http.get(format!("http://{admin}/metrics")).send().await?.text().await?;
    for line in [
        "paytrack_consumer_parked_total{consumer=\"ledger-projector-evidence\"",
        "paytrack_consumer_failures_total{consumer=\"ledger-projector-evidence\"",
        "paytrack_consumer_consecutive_failures{consumer=\"ledger-projector-evidence\"}",
    ] {
        assert!(metrics.contains(line), "{line} missing from /metrics");
    }
    Ok(())
}

/// A subscribe with a NUL in its channel is audited with the channel escaped, and a
/// forged audit record that PostgreSQL cannot hold is parked; the audit after both
/// is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_channel_does_not_stall_session_audit() -> anyhow::Result<()> {
    let mesh = Mesh::start_with(quick_parking()).await?;
    let tenant = mesh.tenant.clone();

    let forged = SessionAudit {
        v: 1,
        session_id: "forged".into(),
        tenant: tenant.clone(),
        subject: "someone".into(),
        edge_id: "edge-forged".into(),
        transport: "websocket".into(),
        at: chrono::Utc::now(),
        event: SessionEvent::Denied {
            channel: "payment:\u{0}".into(),
            code: 4000,
        },
    };
    mesh.js
        .publish(
            format!("paytrack.session.{tenant}.edge-forged"),
            envelope::encode(&forged),
        )
        .await?
        .await?;

    let mut client = WsClient::connect(&mesh.ws_url(), &mesh.operator_token()).await?;
    let welcome = client.next_of("welcome", WAIT).await?;
    let session_id = welcome["session_id"].as_str().unwrap_or_default().to_owned();
    client
        .send(json!({"type": "subscribe", "channel": "payment:pay\u{0}x"}))
        .await?;
    client.next_of("error", WAIT).await?;
    client
        .send(json!({"type": "subscribe", "channel": "payment:pay_fine"}))
        .await?;
    client.next_of("subscribed", WAIT).await?;

    let rows = eventually(WAIT, "the session's audit", || async {
        sqlx::query_as::<_, (String, Option<String>)>(
            "SELECT kind, channel FROM session_audit WHERE tenant = $1 AND session_id = $2 ORDER BY session_seq",
        )
        .bind(tenant.as_str())
        .bind(&session_id)
        .fetch_all(&mesh.db)
        .await
        .ok()
        .filter(|rows| rows.iter().any(|(kind, _)| kind == "subscribe"))
    })
    .await?;
    let denied = rows
        .iter()
        .find(|(kind, _)| kind == "denied")
        .expect("denied subscribe audited");
    assert_eq!(denied.1.as_deref(), Some("payment:pay\\u{0}x"), "escaped, not dropped");
    assert!(rows.contains(&("subscribe".to_owned(), Some("payment:pay_fine".to_owned()))));

    let parked = eventually(WAIT, "forged record parked", || async {
        messages_on(
            &mesh.js,
            "PAYTRACK_DEAD",
            "paytrack.dead.PAYTRACK_SESSION.ledger-projector-sessions",
        )
        .await
        .filter(|m| !m.is_empty())
    })
    .await?;
    assert_eq!(
        header(&parked[0], "Paytrack-Dead-Subject"),
        Some(format!("paytrack.session.{tenant}.edge-forged").as_str())
    );
    Ok(())
}

/// A clean inbound fact of `tenant` about `payment`.
fn plain_fact(tenant: &TenantId, payment: &str) -> InboundFact {
    let mut f = fact(
        tenant,
        payment,
        &format!("wh:stdwebhooks:{payment}"),
        "payment.pending",
        payment,
        "{}",
    );
    if let FactSource::Webhook(event) = &mut f.source {
        event.provider_ref = Some(format!("pr_{payment}"));
        event.reason = None;
    }
    f.raw.headers.clear();
    f
}

/// A handler that panics on one message (a test-only stand-in for any bug a
/// crafted message could reach) does not end its consumer, through either shared
/// consume function (one at a time, and in batches): the message is parked on the
/// dead-letter subject with a `dead_letter` alert for its tenant, and the messages of
/// another tenant after it are handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_panics_parks_its_message_and_the_consumer_goes_on() -> anyhow::Result<()> {
    use std::sync::{Arc, Mutex};

    use paytrack_nats::{Delivery, HandleError, RetryPolicy, Supervisor};

    paytrack_shared::telemetry::init_for_tests();
    let nats = paytrack_tests::NatsServer::start().await?;
    let client = nats.admin_client().await?;
    let js = jetstream::new(client.clone());
    let layout = paytrack_nats::Layout {
        replicas: 1,
        windows: paytrack_nats::DuplicateWindows {
            inbound: Duration::from_secs(60),
            push: Duration::from_secs(60),
            internal: Duration::from_secs(60),
        },
        idempotency_ttl: Duration::from_secs(86_400),
        claims_max_age: Duration::from_secs(86_400),
    };
    paytrack_nats::apply_layout(&js, &layout).await?;
    let victim = TenantId::new("t_victim")?;
    let bystander = TenantId::new("t_bystander")?;
    let mut published = vec![plain_fact(&victim, "pay_boom")];
    published.extend((0..4).map(|n| plain_fact(&bystander, &format!("pay_fine_{n}"))));
    for f in &published {
        js.send_publish(
            format!("paytrack.in.{}.{}", f.tenant, f.payment_id),
            jetstream::message::PublishMessage::build()
                .message_id(f.fact_id.clone())
                .payload(envelope::encode(f)),
        )
        .await?
        .await?;
    }

    let shutdown = tokio_util::sync::CancellationToken::new();
    let retry = RetryPolicy {
        max_deliveries: 3,
        first_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(500),
        ack_wait: Duration::from_secs(30),
    };
    let handled: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let seen = handled.clone();
    let record = move |consumer: &'static str, f: &InboundFact| {
        if f.payment_id.as_str() == "pay_boom" {
            panic!("a crafted message reached a bug");
        }
        if let Ok(mut seen) = seen.lock() {
            seen.push((consumer.to_owned(), f.payment_id.to_string()));
        }
    };
    let one_by_one = "panic-test-single";
    let batched = "panic-test-batch";
    let mut loops = Vec::new();
    for name in [one_by_one, batched] {
        let consumer = paytrack_nats::ensure_consumer(
            &js,
            "PAYTRACK_IN",
            paytrack_nats::durable_consumer(name, "paytrack.in.>"),
        )
        .await?;
        let supervisor = Supervisor::new(
            js.clone(),
            "PAYTRACK_IN",
            name,
            retry,
            paytrack_shared::health::Readiness::watching(client.clone()),
        );
        let (shutdown, record) = (shutdown.clone(), record.clone());
        loops.push(tokio::spawn(async move {
            if name == one_by_one {
                let one = std::num::NonZeroUsize::MIN;
                paytrack_nats::consume_deliveries_in_lanes(
                    consumer,
                    shutdown,
                    supervisor,
                    one,
                    |d: Delivery<InboundFact>| {
                        record(one_by_one, &d.envelope);
                        async { Ok::<(), HandleError>(()) }
                    },
                )
                .await;
            } else {
                let max = std::num::NonZeroUsize::new(16).expect("non-zero");
                paytrack_nats::consume_delivery_batches(consumer, shutdown, supervisor, max, |batch| {
                    let batch: Vec<Delivery<InboundFact>> = batch;
                    for d in &batch {
                        record(batched, &d.envelope);
                    }
                    async { Ok::<(), HandleError>(()) }
                })
                .await;
            }
        }));
    }

    for name in [one_by_one, batched] {
        eventually(WAIT, "the other tenant's messages handled", || async {
            let handled = handled.lock().ok()?;
            (handled.iter().filter(|(c, _)| c == name).count() >= 4).then_some(())
        })
        .await?;
        let dead_subject = format!("paytrack.dead.PAYTRACK_IN.{name}");
        let parked = eventually(WAIT, "the panicking message parked", || async {
            messages_on(&js, "PAYTRACK_DEAD", &dead_subject)
                .await
                .filter(|m| !m.is_empty())
        })
        .await?;
        assert_eq!(parked.len(), 1, "{name}: only the panicking message is parked");
        assert_eq!(
            header(&parked[0], "Paytrack-Dead-Subject"),
            Some("paytrack.in.t_victim.pay_boom")
        );
        assert!(
            header(&parked[0], "Paytrack-Dead-Error").is_some_and(|e| e.contains("panicked")),
            "{name}: the error names the panic"
        );
        eventually(WAIT, "a dead-letter alert for the victim tenant", || async {
            messages_on(&js, "PAYTRACK_ALERT", "paytrack.alert.t_victim.dead_letter")
                .await?
                .iter()
                .filter_map(|m| serde_json::from_slice::<serde_json::Value>(&m.payload).ok())
                .any(|a| a["consumer"] == name)
                .then_some(())
        })
        .await?;
    }
    // Both loops are still running, and stop on shutdown.
    assert!(loops.iter().all(|l| !l.is_finished()), "a consumer loop ended");
    shutdown.cancel();
    for l in loops {
        tokio::time::timeout(WAIT, l).await??;
    }
    Ok(())
}

/// The date that killed the projector: a signed success of an ach_debit payment
/// dated one day before chrono's last date (ingest now refuses such a time; this
/// fact is put on PAYTRACK_IN directly, as a stored one would be redelivered). Its
/// return window closes beyond time: the projector records it (never final by
/// time) instead of panicking on every restart, a return of it is judged without
/// a panic, and the next payment is projected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_success_dated_at_the_end_of_time_neither_panics_nor_stalls() -> anyhow::Result<()> {
    use paytrack_shared::Status;
    use paytrack_tests::facts;

    let mesh = Mesh::start_with(quick_parking()).await?;
    let tenant = mesh.tenant.clone();
    let end = chrono::DateTime::<chrono::Utc>::MAX_UTC
        .checked_sub_days(chrono::Days::new(1))
        .ok_or_else(|| anyhow::anyhow!("representable"))?;
    facts::publish(
        &mesh.js,
        &facts::create(&tenant, "pay_eot", "ach_debit", "stdwebhooks")?,
    )
    .await?;
    facts::publish(
        &mesh.js,
        &facts::event(&tenant, "pay_eot", "eot_1", Status::Succeeded, Some(1), end, None)?,
    )
    .await?;
    let (status, ..) = mesh.wait_for_row("pay_eot", 2).await?;
    assert_eq!(status, "succeeded");
    facts::publish(
        &mesh.js,
        &facts::event(&tenant, "pay_eot", "eot_2", Status::Returned, Some(2), end, Some("R01"))?,
    )
    .await?;
    let (status, ..) = mesh.wait_for_row("pay_eot", 3).await?;
    assert_eq!(status, "returned", "a window that closes beyond time is open");

    facts::publish(&mesh.js, &facts::create(&tenant, "pay_next", "card", "stdwebhooks")?).await?;
    mesh.wait_for_row("pay_next", 1).await?;
    mesh.check_services()?;
    Ok(())
}

/// Operators see parked messages: an undecodable fact is parked by the projector's
/// evidence consumer and by the reconciler, and each `dead_letter` alert is listed by
/// `GET /v1/alerts` (no payment, the parked copy's subject as its evidence), can be
/// filtered by kind, and acknowledged like any alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_message_is_listed_with_its_dead_letter_alert() -> anyhow::Result<()> {
    let mesh = Mesh::start_with(quick_parking()).await?;
    let tenant = mesh.tenant.clone();
    mesh.js
        .publish(format!("paytrack.in.{tenant}.pay_poison"), "not an envelope".into())
        .await?
        .await?;
    let token = mesh.operator_token();
    let listed = eventually(Duration::from_secs(60), "both dead_letter alerts listed", || async {
        let response = mesh.get("/v1/alerts?kind=dead_letter", &token).await.ok()?;
        let list: serde_json::Value = response.json().await.ok()?;
        let items = list["items"].as_array()?.clone();
        (items.len() >= 2).then_some(items)
    })
    .await?;
    let evidence = listed
        .iter()
        .find(|a| a["evidence"] == "paytrack.dead.PAYTRACK_IN.ledger-projector-evidence")
        .unwrap_or_else(|| panic!("the evidence consumer's parked message: {listed:?}"));
    assert_eq!(evidence["kind"], "dead_letter");
    assert_eq!(evidence["payment_id"], serde_json::Value::Null);
    let detail = evidence["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(&format!("paytrack.in.{tenant}.pay_poison")),
        "the detail names the original subject: {detail}"
    );
    assert!(
        listed
            .iter()
            .any(|a| a["evidence"] == "paytrack.dead.PAYTRACK_IN.reconciler"),
        "the reconciler's parked copy is listed too: {listed:?}"
    );
    let all: serde_json::Value = mesh.get("/v1/alerts", &token).await?.json().await?;
    assert!(
        all["items"]
            .as_array()
            .is_some_and(|items| items.iter().any(|a| a["kind"] == "dead_letter")),
        "every kind is listed without a filter: {all}"
    );

    let ack = reqwest::Client::new()
        .post(format!(
            "{}/v1/alerts/{}/ack",
            mesh.ingest_url,
            evidence["alert_id"].as_str().unwrap_or_default()
        ))
        .bearer_auth(&token)
        .json(&json!({"note": "replayed by hand"}))
        .send()
        .await?;
    assert_eq!(ack.status(), 200);
    let acked: serde_json::Value = ack.json().await?;
    assert_eq!(acked["ack_note"], "replayed by hand");
    assert!(acked["acked_by"].as_str().is_some_and(|a| !a.is_empty()), "{acked}");
    // Another tenant's operator sees none of them.
    let other: serde_json::Value = mesh
        .get("/v1/alerts?kind=dead_letter", &mesh.other_operator_token())
        .await?
        .json()
        .await?;
    assert_eq!(other["items"], json!([]), "{other}");
    Ok(())
}
