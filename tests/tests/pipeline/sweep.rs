//! Stuck-payment sweeps against a provider status-query API (a small HTTP server in
//! the test, answering like the simulator's `GET /v1/providers/{provider}/payments/{ref}`),
//! with the status model's rail windows accelerated by configuration, not sleeps.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::Utc;
use paytrack_shared::envelope::{self, Alert, FactSource};
use paytrack_shared::{Status, TenantId, subjects};
use paytrack_tests::mesh::MeshOptions;
use paytrack_tests::{Mesh, eventually, facts};

const WAIT: Duration = Duration::from_secs(30);

/// What the stub provider answers.
#[derive(Clone)]
enum Answer {
    /// 503 to every query.
    Down,
    /// 503 to this many queries, then this status.
    DownFor(usize, &'static str),
    /// This status, at this provider sequence.
    Status(&'static str, Option<u64>),
    /// This status, with the payment's terms as the simulator gives them: amount,
    /// currency and rail.
    StatusWithTerms(&'static str, i64, &'static str, &'static str),
}

#[derive(Clone)]
struct Provider {
    answer: Answer,
    queries: Arc<AtomicUsize>,
}

async fn status_query(State(p): State<Provider>, Path((provider, reference)): Path<(String, String)>) -> Response {
    let before = p.queries.fetch_add(1, Ordering::SeqCst);
    match p.answer {
        Answer::Down => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        Answer::DownFor(n, _) if before < n => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        Answer::DownFor(_, status) => axum::Json(serde_json::json!({
            "status": status,
            "provider": provider,
            "provider_ref": reference,
            "occurred_at": Utc::now().to_rfc3339(),
        }))
        .into_response(),
        Answer::Status(status, seq) => axum::Json(serde_json::json!({
            "status": status,
            "provider": provider,
            "provider_ref": reference,
            "occurred_at": Utc::now().to_rfc3339(),
            "provider_seq": seq,
        }))
        .into_response(),
        Answer::StatusWithTerms(status, amount_minor, currency, rail) => axum::Json(serde_json::json!({
            "status": status,
            "provider": provider,
            "provider_ref": reference,
            "occurred_at": Utc::now().to_rfc3339(),
            "amount_minor": amount_minor,
            "currency": currency,
            "rail": rail,
        }))
        .into_response(),
    }
}

/// Starts the stub; its base URL and its query counter.
async fn provider(answer: Answer) -> anyhow::Result<(String, Arc<AtomicUsize>)> {
    let queries = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new()
        .route("/v1/providers/{provider}/payments/{reference}", get(status_query))
        .with_state(Provider {
            answer,
            queries: queries.clone(),
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, queries))
}

/// A mesh whose rail windows are 1000 times shorter (UPI's 90 s is 90 ms), with two
/// reconciler replicas sweeping the same bucket (so a count of queries shows that no
/// check is made twice).
async fn mesh(url: &str, extra: &[(&'static str, &str)]) -> anyhow::Result<Mesh> {
    let mut settings = vec![
        ("reconciler_window_divisor", "1000".to_owned()),
        ("reconciler_sweep_interval_ms", "50".to_owned()),
        ("reconciler_status_query_urls", format!("stdwebhooks={url}")),
    ];
    settings.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    Mesh::start_with(MeshOptions {
        reconcilers: 2,
        extra_settings: settings,
        ..MeshOptions::default()
    })
    .await
}

async fn alert(mesh: &Mesh, tenant: &TenantId, kind: &str) -> anyhow::Result<Alert> {
    let stream = mesh.js.get_stream(subjects::STREAM_ALERT).await?;
    let subject = subjects::alert(Some(tenant), kind);
    eventually(WAIT, kind, || async {
        let message = stream.get_last_raw_message_by_subject(&subject).await.ok()?;
        envelope::decode::<Alert>(&message.payload).ok()
    })
    .await
}

async fn pending_payment(mesh: &Mesh, pay: &str, rail: &str) -> anyhow::Result<()> {
    let tenant = &mesh.tenant;
    facts::publish(&mesh.js, &facts::create(tenant, pay, rail, "stdwebhooks")?).await?;
    // The pending event follows the decided create, as a provider's would: two
    // reconciler replicas may otherwise decide the two facts in either order.
    eventually(WAIT, "the create decided", || async {
        let chain = facts::chain(&mesh.js, tenant, pay).await.ok()?;
        (!chain.is_empty()).then_some(())
    })
    .await?;
    facts::publish(&mesh.js, &facts::first_pending(tenant, pay)?).await?;
    Ok(())
}

/// The provider answers nothing for a while: after its rail's window and its three
/// checks, the UPI payment raises `unclear_pending` once, linking to its evidence.
/// The provider is still asked, ever less often, and its answer when it comes
/// settles the payment: a lost webhook never leaves a payment pending for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_whose_provider_stops_answering_raises_unclear_pending_and_is_still_asked() -> anyhow::Result<()> {
    let (url, queries) = provider(Answer::DownFor(5, "succeeded")).await?;
    let mesh = mesh(&url, &[]).await?;
    let pay = "pay_upi_silent";
    let alerts_before = mesh.stream_messages(subjects::STREAM_ALERT).await?;
    pending_payment(&mesh, pay, "upi").await?;
    let raised = alert(&mesh, &mesh.tenant, subjects::ALERT_UNCLEAR_PENDING).await?;
    assert_eq!(raised.payment_id.as_str(), pay);
    assert_eq!(raised.evidence, format!("/v1/payments/{pay}/evidence"));
    assert!(
        raised.detail.contains("after 3 status checks"),
        "UPI raises after its 3 checks: {}",
        raised.detail
    );
    // The answer that finally comes settles it; nothing was invented before it.
    let chain = eventually(WAIT, "the payment settled by a later check", || async {
        let chain = facts::chain(&mesh.js, &mesh.tenant, pay).await.ok()?;
        (chain.last().map(|t| t.status) == Some(Status::Succeeded)).then_some(chain)
    })
    .await?;
    let statuses: Vec<Status> = chain.iter().map(|t| t.status).collect();
    assert_eq!(statuses, [Status::Initiated, Status::Pending, Status::Succeeded]);
    assert_eq!(
        queries.load(Ordering::SeqCst),
        6,
        "five unanswered checks and the one answered, whatever the number of replicas"
    );
    // One alert for the payment, however many checks went unanswered.
    assert_eq!(mesh.stream_messages(subjects::STREAM_ALERT).await?, alerts_before + 1);
    Ok(())
}

/// The provider answers `succeeded`: the stuck payment is settled by a fact whose
/// source is the status query, kept as evidence like any fact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_payment_is_settled_by_the_status_query() -> anyhow::Result<()> {
    let (url, queries) = provider(Answer::Status("succeeded", Some(2))).await?;
    let mesh = mesh(&url, &[]).await?;
    let pay = "pay_rtp_stuck";
    pending_payment(&mesh, pay, "rtp").await?;
    let chain = eventually(WAIT, "the payment settled", || async {
        let chain = facts::chain(&mesh.js, &mesh.tenant, pay).await.ok()?;
        (chain.last()?.status == Status::Succeeded).then_some(chain)
    })
    .await?;
    let settled = chain.last().map(|t| t.cause.clone());
    assert_eq!(
        settled.as_ref().map(|c| c.source.as_str()),
        Some("status_query:stdwebhooks")
    );
    assert_eq!(settled.map(|c| c.rule), Some("status_query:succeeded".to_owned()));
    assert_eq!(queries.load(Ordering::SeqCst), 1, "settled at the first check");
    let evidence = eventually(WAIT, "the answer in the evidence", || async {
        let response = mesh
            .get(&format!("/v1/payments/{pay}/evidence"), &mesh.operator_token())
            .await
            .ok()?;
        let evidence: serde_json::Value = response.json().await.ok()?;
        let facts = evidence["facts"].as_array()?.clone();
        facts
            .into_iter()
            .find(|f| f["source"]["kind"] == "status_query" && f["outcome"] == "applied")
    })
    .await?;
    assert!(evidence["raw_body"].as_str().is_some_and(|b| b.contains("succeeded")));
    Ok(())
}

/// A payment whose history holds no terms (its create was never seen, or the broker
/// lost the history and it was begun again): the provider's status-query answer
/// names the amount, currency and rail, and the transition it settles carries them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_query_answer_completes_the_payments_terms() -> anyhow::Result<()> {
    let (url, _) = provider(Answer::StatusWithTerms("succeeded", 4321, "EUR", "rtp")).await?;
    let mesh = mesh(&url, &[]).await?;
    let pay = "pay_terms_from_query";
    let mut pending = facts::event(
        &mesh.tenant,
        pay,
        &format!("{pay}_p"),
        Status::Pending,
        None,
        Utc::now(),
        None,
    )?;
    if let FactSource::Webhook(event) = &mut pending.source {
        event.amount_minor = None;
        event.currency = None;
    }
    facts::publish(&mesh.js, &pending).await?;
    let settled = eventually(WAIT, "the payment settled", || async {
        let chain = facts::chain(&mesh.js, &mesh.tenant, pay).await.ok()?;
        chain.into_iter().find(|t| t.status == Status::Succeeded)
    })
    .await?;
    assert_eq!(settled.cause.rule, "status_query:succeeded");
    assert_eq!(
        (
            settled.terms.amount_minor,
            settled.terms.currency.as_deref(),
            settled.terms.rail.as_deref()
        ),
        (Some(4321), Some("EUR"), Some("rtp")),
        "the provider's answer completes the terms"
    );
    Ok(())
}

/// The webhooks said `held` (provider sequence 5); the status query answers an
/// older `pending` (sequence 1): recorded as stale, and `source_mismatch` raised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_query_disagreeing_with_the_webhooks_raises_source_mismatch() -> anyhow::Result<()> {
    let (url, _) = provider(Answer::Status("pending", Some(1))).await?;
    let mesh = mesh(&url, &[]).await?;
    let (tenant, pay) = (&mesh.tenant, "pay_mismatch");
    facts::publish(&mesh.js, &facts::create(tenant, pay, "rtp", "stdwebhooks")?).await?;
    facts::publish(
        &mesh.js,
        &facts::event(tenant, pay, "mm_held", Status::Held, Some(5), Utc::now(), None)?,
    )
    .await?;
    let raised = alert(&mesh, tenant, subjects::ALERT_SOURCE_MISMATCH).await?;
    assert_eq!(raised.payment_id.as_str(), pay);
    assert!(raised.detail.contains("stale"), "{}", raised.detail);
    let chain = facts::chain(&mesh.js, tenant, pay).await?;
    assert_eq!(chain.last().map(|t| t.status), Some(Status::Held));
    Ok(())
}

/// With the projector down, a transition's `persisted` checkpoint never follows:
/// `trace_gap` is raised for that version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_persisted_checkpoint_raises_trace_gap() -> anyhow::Result<()> {
    let (url, _) = provider(Answer::Down).await?;
    let mesh = mesh(&url, &[("reconciler_trace_gap_ms", "300")]).await?;
    let pay = "pay_gap";
    mesh.restart_projector(async {
        mesh.post_webhook("gap_1", &Mesh::webhook_body(pay, "succeeded", "m_1"))
            .await?;
        let raised = alert(&mesh, &mesh.tenant, subjects::ALERT_TRACE_GAP).await?;
        anyhow::ensure!(raised.payment_id.as_str() == pay, "{raised:?}");
        Ok(())
    })
    .await?;
    // Once persisted, the settled payment leaves the sweep and no new gap is raised.
    mesh.wait_for_row(pay, 1).await?;
    let at = mesh.stream_messages(subjects::STREAM_ALERT).await?;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(mesh.stream_messages(subjects::STREAM_ALERT).await?, at);
    Ok(())
}

/// An alert is listed for operators with its evidence link; acknowledging it records
/// who and why once (a repeat answers the first acknowledgement); an end user's
/// token may not read alerts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_are_listed_and_acknowledged_once_by_a_named_operator() -> anyhow::Result<()> {
    let (url, _) = provider(Answer::Down).await?;
    let mesh = mesh(&url, &[]).await?;
    let pay = "pay_upi_ack";
    pending_payment(&mesh, pay, "upi").await?;
    let raised = alert(&mesh, &mesh.tenant, subjects::ALERT_UNCLEAR_PENDING).await?;
    let token = mesh.operator_token();
    let listed = eventually(WAIT, "the alert listed", || async {
        let response = mesh.get("/v1/alerts?kind=unclear_pending", &token).await.ok()?;
        let list: serde_json::Value = response.json().await.ok()?;
        let items = list["items"].as_array()?.clone();
        items.into_iter().find(|a| a["alert_id"] == raised.alert_id.as_str())
    })
    .await?;
    assert_eq!(listed["payment_id"], pay);
    assert_eq!(listed["evidence"], format!("/v1/payments/{pay}/evidence"));
    assert_eq!(listed["acked_by"], serde_json::Value::Null);

    let http = reqwest::Client::new();
    let ack_url = format!("{}/v1/alerts/{}/ack", mesh.ingest_url, raised.alert_id);
    let ack = |note: &'static str| {
        http.post(&ack_url)
            .bearer_auth(&token)
            .json(&serde_json::json!({"note": note}))
            .send()
    };
    let first: serde_json::Value = ack("provider outage, checked by phone").await?.json().await?;
    let again: serde_json::Value = ack("second look").await?.json().await?;
    assert!(first["acked_by"].as_str().is_some_and(|a| !a.is_empty()), "{first}");
    assert_eq!(first["ack_note"], "provider outage, checked by phone");
    assert_eq!(again["acked_at"], first["acked_at"], "the first acknowledgement stands");
    assert_eq!(again["ack_note"], first["ack_note"]);
    let unacked: serde_json::Value = mesh.get("/v1/alerts?acknowledged=false", &token).await?.json().await?;
    assert!(
        unacked["items"]
            .as_array()
            .is_some_and(|items| items.iter().all(|a| a["alert_id"] != raised.alert_id.as_str()))
    );
    let missing = http
        .post(format!("{}/v1/alerts/nope/ack", mesh.ingest_url))
        .bearer_auth(&token)
        .send()
        .await?;
    assert_eq!(missing.status(), 404);
    let user = mesh.scoped_token("u_1", &[&format!("payment:{pay}")]);
    assert_eq!(mesh.get("/v1/alerts", &user).await?.status(), 403);
    Ok(())
}

/// A scan reads memory, not JetStream: with 1,000 payments tracked and none due,
/// two replicas scanning every 100 ms make no request on the sweep bucket or the
/// status stream (a scan that read each entry, or looked for each checkpoint, would
/// make at least 1,000 per scan).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_cost_no_request_for_payments_that_need_nothing() -> anyhow::Result<()> {
    use futures::StreamExt;
    const TRACKED: u64 = 1_000;
    let mesh = Mesh::start_with(MeshOptions {
        reconcilers: 2,
        extra_settings: vec![("reconciler_sweep_interval_ms", "100".to_owned())],
        ..MeshOptions::default()
    })
    .await?;
    let tenant = mesh.tenant.clone();
    let facts: Vec<_> = (0..TRACKED)
        .map(|n| facts::create(&tenant, &format!("pay_idle_{n}"), "card", "stdwebhooks"))
        .collect::<anyhow::Result<_>>()?;
    let js = &mesh.js;
    let stored: Vec<anyhow::Result<u64>> = futures::stream::iter(facts.iter().map(|f| facts::publish(js, f)))
        .buffer_unordered(32)
        .collect()
        .await;
    stored.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    let bucket = subjects::STREAM_SWEEP;
    eventually(WAIT, "every payment tracked", || async {
        let mut stream = mesh.js.get_stream(bucket).await.ok()?;
        (stream.info().await.ok()?.state.messages >= TRACKED).then_some(())
    })
    .await?;
    // Every fact decided: no more reads from deciding.
    eventually(WAIT, "every fact decided", || async {
        (mesh.stream_messages(subjects::STREAM_OUTCOME).await.ok()? >= TRACKED).then_some(())
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let admin = mesh.nats.admin_client().await?;
    let mut requests = admin.subscribe("$JS.API.>").await?;
    let window = tokio::time::sleep(Duration::from_secs(2));
    tokio::pin!(window);
    let mut reads = Vec::new();
    loop {
        tokio::select! {
            () = &mut window => break,
            Some(message) = requests.next() => {
                let subject = message.subject.to_string();
                // The consumers' position checks (stream and consumer info, every 5 s
                // per consumer) are a fixed cost, not a scan's.
                let position_check = subject.contains(".INFO.");
                if !position_check && (subject.contains(bucket) || subject.contains(subjects::STREAM_STATUS)) {
                    reads.push(subject);
                }
            }
        }
    }
    assert!(
        reads.len() < 20,
        "about 40 scans of 1,000 idle payments made {} requests, e.g. {:?}",
        reads.len(),
        reads.iter().take(3).collect::<Vec<_>>()
    );
    Ok(())
}

/// A settled payment whose checkpoints are all stored leaves the sweep, and no
/// `trace_gap` is raised for it, even when the sweep looks only after `ledger_posted`
/// (which the projector publishes right after `persisted`) is the subject's newest
/// checkpoint. Ten payments, scans every 50 ms, a 1 s gap waited out twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settled_and_persisted_payment_leaves_the_sweep_without_an_alert() -> anyhow::Result<()> {
    let (url, _) = provider(Answer::Down).await?;
    let mesh = mesh(&url, &[("reconciler_trace_gap_ms", "1000")]).await?;
    let payments: Vec<String> = (0..10).map(|n| format!("pay_done_{n}")).collect();
    for (n, pay) in payments.iter().enumerate() {
        let response = mesh
            .post_webhook(&format!("done_{n}"), &Mesh::webhook_body(pay, "succeeded", "m_1"))
            .await?;
        anyhow::ensure!(response.status() == 200, "webhook answered {}", response.status());
    }
    for pay in &payments {
        mesh.wait_for_row(pay, 1).await?;
    }
    let bucket = mesh.js.get_key_value(subjects::SWEEP_BUCKET).await?;
    let tenant = mesh.tenant.clone();
    let bucket = &bucket;
    let payments = &payments;
    eventually(WAIT, "every settled payment gone from the sweep", || async {
        for pay in payments {
            if bucket.get(format!("{tenant}.{pay}")).await.ok()?.is_some() {
                return None;
            }
        }
        Some(())
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert_eq!(
        mesh.stream_messages(subjects::STREAM_ALERT).await?,
        0,
        "an alert was raised for a payment whose checkpoints are stored"
    );
    Ok(())
}

/// The keys of the sweep bucket that belong to `tenant`.
async fn tracked_keys(mesh: &Mesh, tenant: &TenantId) -> anyhow::Result<Vec<String>> {
    use futures::TryStreamExt;
    let store = mesh.js.get_key_value(subjects::SWEEP_BUCKET).await?;
    let keys: Vec<String> = store.keys().await?.try_collect().await?;
    Ok(keys
        .into_iter()
        .filter(|k| k.starts_with(&format!("{tenant}.")))
        .collect())
}

/// A tenant whose payments never settle cannot grow the sweep without bound: with a
/// quota of 3 tracked payments per tenant, a fourth and fifth are not tracked, a
/// `sweep_quota` alert says so, and `/metrics` shows the tenant's count; the other
/// tenant's payments are still tracked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_tracks_at_most_its_quota_of_payments_per_tenant() -> anyhow::Result<()> {
    let (url, _) = provider(Answer::Down).await?;
    let mesh = mesh(&url, &[("reconciler_sweep_max_per_tenant", "3")]).await?;
    let tenant = mesh.tenant.clone();
    for n in 0..3 {
        pending_payment(&mesh, &format!("pay_quota_{n}"), "upi").await?;
    }
    eventually(WAIT, "three payments tracked, seen by every replica", || async {
        if tracked_keys(&mesh, &tenant).await.ok()?.len() != 3 {
            return None;
        }
        for admin in &mesh.reconciler_admins {
            let metrics = reqwest::get(format!("http://{admin}/metrics"))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            let line = format!("paytrack_sweep_tracked_by_tenant{{tenant=\"{tenant}\"}} 3");
            if !metrics.contains(&line) {
                return None;
            }
        }
        Some(())
    })
    .await?;
    for n in 3..5 {
        pending_payment(&mesh, &format!("pay_quota_{n}"), "upi").await?;
    }
    let raised = alert(&mesh, &tenant, "sweep_quota").await?;
    assert!(
        raised.detail.contains('3'),
        "the alert names the quota: {}",
        raised.detail
    );
    // Both over-quota payments were decided (their transitions exist), not tracked.
    for n in 3..5 {
        mesh.wait_for_row(&format!("pay_quota_{n}"), 2).await?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let keys = tracked_keys(&mesh, &tenant).await?;
    assert_eq!(keys.len(), 3, "{keys:?}");
    let other = mesh.other_tenant.clone();
    facts::publish(
        &mesh.js,
        &facts::create(&other, "pay_other_quota", "upi", "stdwebhooks")?,
    )
    .await?;
    eventually(WAIT, "the other tenant's payment tracked", || async {
        (tracked_keys(&mesh, &other).await.ok()?.len() == 1).then_some(())
    })
    .await?;
    Ok(())
}
