//! What must hold when things go wrong: NATS outages, redelivered facts and moves the
//! status model forbids.

use std::time::Duration;

use async_nats::jetstream::message::PublishMessage;
use paytrack_shared::subjects;
use paytrack_tests::mesh::MeshOptions;
use paytrack_tests::{Mesh, NatsServer, eventually};

/// With nats-server down, ingest answers 503 (never 2xx); once it is back, the
/// provider's retry of the same delivery flows through to the projection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_outage_answers_503_and_the_retry_flows_through() -> anyhow::Result<()> {
    let mut mesh = Mesh::start().await?;
    // The mesh works before the outage.
    let before = mesh
        .post_webhook("msg_out_0", &Mesh::webhook_body("pay_before", "pending", "m_1"))
        .await?;
    assert_eq!(before.status(), 200);
    mesh.wait_for_row("pay_before", 1).await?;

    let ready = || async {
        reqwest::get(format!("{}/readyz", mesh.ingest_url))
            .await
            .map(|r| r.status().as_u16())
    };
    assert_eq!(ready().await?, 200);
    mesh.nats.stop();
    // Out of rotation while JetStream is unreachable.
    eventually(Duration::from_secs(60), "ingest to report not ready", || async {
        (ready().await.ok()? == 503).then_some(())
    })
    .await?;
    let body = Mesh::webhook_body("pay_outage", "succeeded", "m_1");
    let response = mesh.post_webhook("msg_out_1", &body).await?;
    assert_eq!(response.status(), 503, "{}", response.text().await?);

    mesh.nats.restart().await?;
    let accepted = eventually(Duration::from_secs(60), "ingest to accept the retry", || async {
        let response = mesh.post_webhook("msg_out_1", &body).await.ok()?;
        (response.status() == 200).then_some(())
    })
    .await;
    accepted?;
    assert_eq!(ready().await?, 200);
    let (status, version, ..) = mesh.wait_for_row("pay_outage", 1).await?;
    assert_eq!((status.as_str(), version), ("succeeded", 1));
    assert_eq!(mesh.transition_count("pay_outage").await?, 1);
    Ok(())
}

/// A fact delivered again after JetStream's de-duplication window (here: republished
/// under another message id) is recognised by the reconciler and not applied twice,
/// even where the status model alone would allow it (pending → held → pending).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_fact_is_applied_once() -> anyhow::Result<()> {
    let options = MeshOptions {
        duplicate_window_secs: 1,
        ..MeshOptions::default()
    };
    let mesh = Mesh::start_with(options).await?;
    mesh.post_webhook("msg_re_1", &Mesh::webhook_body("pay_re", "pending", "m_1"))
        .await?;
    mesh.post_webhook("msg_re_h", &Mesh::webhook_body("pay_re", "held", "m_1"))
        .await?;
    mesh.wait_for_row("pay_re", 2).await?;
    // Let JetStream forget the message ids, so only the reconciler can catch the repeat:
    // a probe id published after them (same window, another stream) is forgotten later.
    mesh.wait_for_duplicate_window().await?;

    let stream = mesh.js.get_stream(subjects::STREAM_IN).await?;
    let stored = stream.get_raw_message(1).await?;
    let subject = format!("paytrack.in.{}.pay_re", mesh.tenant);
    mesh.js
        .send_publish(
            subject,
            PublishMessage::build()
                .message_id("replayed-copy")
                .payload(stored.payload.clone()),
        )
        .await?
        .await?;
    // Barrier: a later fact for the same payment, handled after the copy.
    mesh.post_webhook("msg_re_2", &Mesh::webhook_body("pay_re", "succeeded", "m_1"))
        .await?;
    let (status, version, ..) = mesh.wait_for_row("pay_re", 3).await?;
    assert_eq!((status.as_str(), version), ("succeeded", 3));
    assert_eq!(mesh.transition_count("pay_re").await?, 3);
    Ok(())
}

/// A fact the status model refuses (pending after succeeded) is kept as evidence but
/// changes nothing; a later valid fact still applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_transition_is_kept_but_not_applied() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    mesh.post_webhook("msg_inv_1", &Mesh::webhook_body("pay_inv", "succeeded", "m_1"))
        .await?;
    mesh.wait_for_row("pay_inv", 1).await?;
    let late = mesh
        .post_webhook("msg_inv_2", &Mesh::webhook_body("pay_inv", "pending", "m_1"))
        .await?;
    assert_eq!(late.status(), 200, "a stale fact is still received and kept");
    mesh.post_webhook("msg_inv_3", &Mesh::webhook_body("pay_inv", "returned", "m_1"))
        .await?;

    let (status, version, ..) = mesh.wait_for_row("pay_inv", 2).await?;
    assert_eq!((status.as_str(), version), ("returned", 2));
    assert_eq!(mesh.transition_count("pay_inv").await?, 2);
    let (_, statuses) = mesh.timeline("pay_inv").await?;
    assert_eq!(statuses, ["succeeded", "returned"]);
    let evidence = eventually(Duration::from_secs(60), "all three facts as evidence", || async {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM inbound_facts WHERE tenant = $1 AND payment_id = 'pay_inv'")
                .bind(mesh.tenant.as_str())
                .fetch_one(&mesh.db)
                .await
                .ok()?;
        (n == 3).then_some(n)
    })
    .await?;
    assert_eq!(evidence, 3);
    Ok(())
}

/// A fact acknowledged with 2xx survives nats-server being killed right after: once
/// it is back, the fact is still in PAYTRACK_IN and flows to the projection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_fact_survives_a_nats_crash() -> anyhow::Result<()> {
    let mut mesh = Mesh::start().await?;
    let burst: Vec<String> = (0..20).map(|n| format!("pay_crash_{n}")).collect();
    for (n, payment) in burst.iter().enumerate() {
        let body = Mesh::webhook_body(payment, "succeeded", "m_1");
        let response = mesh.post_webhook(&format!("msg_crash_{n}"), &body).await?;
        assert_eq!(response.status(), 200);
    }
    mesh.nats.stop(); // SIGKILL, no graceful flush
    mesh.nats.restart().await?;
    let stored = eventually(Duration::from_secs(60), "JetStream back with the facts", || async {
        mesh.stream_messages(subjects::STREAM_IN).await.ok()
    })
    .await?;
    assert_eq!(stored, 20);
    for payment in &burst {
        let (status, version, ..) = mesh.wait_for_row(payment, 1).await?;
        assert_eq!((status.as_str(), version), ("succeeded", 1));
    }
    Ok(())
}

/// Services started while nats-server is down keep retrying (not ready, never
/// exiting); once it is up, every service becomes ready and a webhook flows through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_started_before_nats_become_ready_once_it_is_up() -> anyhow::Result<()> {
    let nats = NatsServer::stopped()?;
    let mut mesh = Mesh::launch(nats, MeshOptions::default()).await?;
    // Every service answers, none is ready, none has given up.
    mesh.eventually(Duration::from_secs(60), "every service to answer 503", || async {
        let answers = mesh.readiness().await;
        answers.iter().all(|(_, status)| *status == Some(503)).then_some(())
    })
    .await?;
    let refused = mesh
        .post_webhook("msg_early_0", &Mesh::webhook_body("pay_early", "pending", "m_1"))
        .await?;
    assert_eq!(refused.status(), 503);
    mesh.check_services()?;

    mesh.nats.restart().await?;
    mesh.wait_ready().await?;
    let body = Mesh::webhook_body("pay_early", "succeeded", "m_1");
    let accepted = mesh.post_webhook("msg_early_1", &body).await?;
    assert_eq!(accepted.status(), 200, "{}", accepted.text().await?);
    let (status, version, ..) = mesh.wait_for_row("pay_early", 1).await?;
    assert_eq!((status.as_str(), version), ("succeeded", 1));
    Ok(())
}
