//! What each service's `/metrics` shows after real traffic: every metric has help
//! text and a unit in its name and is catalogued; HTTP latency per route and the
//! webhook-to-event latency are histograms with buckets; a paused consumer's backlog
//! shows; sessions open and current are counted; an alert raised is counted by kind.
//!
//! Its own test binary: the recorder is process-wide, and these counts would mix
//! with other tests'.

use std::time::Duration;

use paytrack_shared::metrics::catalog;
use paytrack_shared::subjects;
use paytrack_tests::Mesh;
use paytrack_tests::mesh::MeshOptions;
use paytrack_tests::prom::Scrape;
use paytrack_tests::ws::WsClient;
use serde_json::{Value, json};

/// Scrapes `url` (a service's `/metrics`).
async fn scrape(http: &reqwest::Client, url: &str) -> anyhow::Result<Scrape> {
    let response = http.get(url).send().await?;
    anyhow::ensure!(response.status() == 200, "{url}: {}", response.status());
    Scrape::parse(&response.text().await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_exports_documented_metrics_after_traffic() -> anyhow::Result<()> {
    // Rare heartbeats: the test's client answers none, and its session must stay open.
    let mesh = Mesh::start_with(MeshOptions::quiet()).await?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build()?;
    let urls = [
        ("ingest", format!("{}/metrics", mesh.ingest_url)),
        ("ws-edge", format!("http://{}/metrics", mesh.edge_addr)),
        ("reconciler", format!("http://{}/metrics", mesh.reconciler_admins[0])),
        ("ledger-projector", format!("http://{}/metrics", mesh.projector_admin)),
    ];
    let ingest_metrics = &urls[0].1;
    let projector_metrics = &urls[3].1;

    // Traffic: a WebSocket session subscribed to a payment, a webhook for it, its frame.
    let mut client = WsClient::connect(&mesh.ws_url(), &mesh.operator_token()).await?;
    client
        .send(json!({"type": "subscribe", "channel": "payment:pay_metrics"}))
        .await?;
    client.next_of("subscribed", Duration::from_secs(60)).await?;
    let body = Mesh::webhook_body("pay_metrics", "pending", "m_1");
    assert_eq!(mesh.post_webhook("msg_metrics_1", &body).await?.status(), 200);
    client.next_of("event", Duration::from_secs(60)).await?;
    // Sessions: the WebSocket is open, and current (nothing sent it is unacknowledged
    // past a heartbeat).
    let edge = scrape(&http, &urls[1].1).await?;
    let websocket = [("transport", "websocket")];
    let open = edge.sum("paytrack_edge_sessions_open", &websocket);
    let current = edge.sum("paytrack_edge_sessions_current", &websocket);
    assert!(open.is_some_and(|n| n >= 1.0), "open {open:?}");
    assert!(
        current.is_some_and(|n| n >= 1.0 && Some(n) <= open),
        "current {current:?} of {open:?}"
    );
    let read = http
        .get(format!("{}/v1/payments/pay_metrics", mesh.ingest_url))
        .bearer_auth(&mesh.api_key)
        .send()
        .await?;
    assert!(read.status().is_success() || read.status() == 404, "{}", read.status());

    // A paused consumer's backlog grows: pause the projector's, append, watch it.
    let pause = format!(
        "CONSUMER.PAUSE.{}.{}",
        subjects::STREAM_STATUS,
        paytrack_nats::CONSUMER_PROJECTOR_STATUS
    );
    let paused: Value = mesh
        .js
        .request(pause.clone(), &json!({"pause_until": "2999-01-01T00:00:00Z"}))
        .await?;
    assert_eq!(paused["paused"], true, "{paused}");
    let body = Mesh::webhook_body("pay_metrics_2", "pending", "m_1");
    assert_eq!(mesh.post_webhook("msg_metrics_2", &body).await?.status(), 200);
    let backlog_labels = [
        ("stream", subjects::STREAM_STATUS),
        ("consumer", paytrack_nats::CONSUMER_PROJECTOR_STATUS),
    ];
    mesh.eventually(Duration::from_secs(60), "a backlog on the paused consumer", || async {
        let scrape = scrape(&http, projector_metrics).await.ok()?;
        let pending = scrape.sum("paytrack_consumer_pending_messages", &backlog_labels)?;
        let flagged = scrape.sum("paytrack_consumer_paused", &backlog_labels)?;
        (pending > 0.0 && flagged == 1.0).then_some(())
    })
    .await?;
    let _resumed: Value = mesh.js.request(pause, &json!({})).await?;
    mesh.eventually(
        Duration::from_secs(60),
        "the backlog drained after resuming",
        || async {
            let scrape = scrape(&http, projector_metrics).await.ok()?;
            let pending = scrape.sum("paytrack_consumer_pending_messages", &backlog_labels)?;
            let flagged = scrape.sum("paytrack_consumer_paused", &backlog_labels)?;
            (pending == 0.0 && flagged == 0.0).then_some(())
        },
    )
    .await?;

    // An alert raised is counted by kind: an unreadable fact is parked (dead_letter).
    let dead_letters = |scrape: &Scrape| {
        scrape
            .sum("paytrack_alerts_raised_total", &[("kind", "dead_letter")])
            .unwrap_or(0.0)
    };
    let before = dead_letters(&scrape(&http, ingest_metrics).await?);
    mesh.js
        .publish(
            format!("paytrack.in.{}.pay_unreadable", mesh.tenant),
            "not an envelope".into(),
        )
        .await?
        .await?;
    mesh.eventually(Duration::from_secs(60), "the dead_letter alert counted", || async {
        let scrape = scrape(&http, ingest_metrics).await.ok()?;
        (dead_letters(&scrape) > before).then_some(())
    })
    .await?;

    // The projector's batches and the edge's frame: wait until both are observed.
    mesh.eventually(Duration::from_secs(60), "the latency histograms", || async {
        let scrape = scrape(&http, ingest_metrics).await.ok()?;
        let frames = scrape.sum("paytrack_webhook_to_event_seconds_count", &[("stage", "frame_queued")])?;
        let batches = scrape.sum("paytrack_projector_batch_seconds_count", &[])?;
        (frames >= 1.0 && batches >= 1.0).then_some(())
    })
    .await?;

    for (service, url) in &urls {
        let scrape = scrape(&http, url).await?;
        // Every metric: documented, with help text and a unit in its name.
        for (name, kind) in &scrape.types {
            let help = scrape.help.get(name).map(String::as_str).unwrap_or_default();
            assert!(!help.is_empty(), "{service}: {name} has no HELP");
            let listed = catalog::find(name).ok_or_else(|| anyhow::anyhow!("{service}: {name} is not catalogued"))?;
            assert_eq!(listed.help, help, "{service}: {name}");
            match kind.as_str() {
                "counter" => assert!(name.ends_with("_total"), "{service}: {name}"),
                "histogram" => assert!(name.ends_with("_seconds") || name.ends_with("_bytes"), "{name}"),
                "gauge" => {}
                other => panic!("{service}: {name} is a {other}; durations are histograms"),
            }
        }
        // The HTTP and end-to-end histograms, with buckets and plausible counts.
        for stage in ["transition_published", "frame_queued"] {
            let labels = [("stage", stage)];
            let count = scrape.sum("paytrack_webhook_to_event_seconds_count", &labels);
            assert!(count.is_some_and(|c| c >= 1.0), "{service}: {stage} count {count:?}");
            let inf = scrape.sum(
                "paytrack_webhook_to_event_seconds_bucket",
                &[("stage", stage), ("le", "+Inf")],
            );
            assert_eq!(inf, count, "{service}: {stage}");
            let within_a_minute = scrape
                .sum(
                    "paytrack_webhook_to_event_seconds_bucket",
                    &[("stage", stage), ("le", "60")],
                )
                .unwrap_or(0.0);
            assert!(within_a_minute >= 1.0, "{service}: {stage} took over a minute");
        }
        let webhook_route = [
            ("service", "ingest"),
            ("route", "/v1/webhooks/{tenant}/{provider}"),
            ("method", "POST"),
            ("status", "200"),
        ];
        let webhooks = scrape.sum("paytrack_http_request_duration_seconds_count", &webhook_route);
        assert!(webhooks.is_some_and(|n| n >= 2.0), "{service}: {webhooks:?}");
        assert!(
            scrape
                .find("paytrack_http_request_duration_seconds_bucket", &webhook_route)
                .count()
                > 2,
            "{service}: webhook latency buckets"
        );
        let by_id = scrape.sum(
            "paytrack_http_request_duration_seconds_count",
            &[("service", "ingest"), ("route", "/v1/payments/{payment_id}")],
        );
        assert!(by_id.is_some_and(|n| n >= 1.0), "{service}: route templates");
        let upgrades = scrape.sum(
            "paytrack_http_request_duration_seconds_count",
            &[("service", "ws-edge"), ("route", "/v1/ws")],
        );
        assert!(upgrades.is_some_and(|n| n >= 1.0), "{service}: {upgrades:?}");
        assert!(
            scrape
                .sum("paytrack_projector_batch_seconds_bucket", &[("le", "+Inf")])
                .is_some(),
            "{service}: projector batch histogram"
        );
        for gauge in ["paytrack_edge_sessions_open", "paytrack_edge_sessions_current"] {
            assert!(scrape.sum(gauge, &websocket).is_some(), "{service}: {gauge}");
        }
        // Every durable of the reconciler and the projector reports its backlog.
        for consumer in [
            paytrack_nats::CONSUMER_RECONCILER,
            paytrack_nats::CONSUMER_PROJECTOR_STATUS,
            paytrack_nats::CONSUMER_PROJECTOR_EVIDENCE,
            paytrack_nats::CONSUMER_PROJECTOR_SESSIONS,
            paytrack_nats::CONSUMER_PROJECTOR_OUTCOMES,
            paytrack_nats::CONSUMER_PROJECTOR_ALERTS,
        ] {
            assert!(
                scrape
                    .sum("paytrack_consumer_pending_messages", &[("consumer", consumer)])
                    .is_some(),
                "{service}: no backlog of {consumer}"
            );
        }
    }
    drop(client);
    Ok(())
}
