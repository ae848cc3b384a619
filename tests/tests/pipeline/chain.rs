//! One strict chain per payment: whatever the number of reconciler replicas and
//! whatever the facts say about the merchant, each payment's transitions are versions
//! 1..n, each once, on one subject, in the stream and in PostgreSQL; and recognising an
//! applied fact costs no JetStream consumer.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::consumer;
use futures::StreamExt;
use paytrack_shared::envelope::{self, Transition};
use paytrack_shared::subjects;
use paytrack_tests::mesh::MeshOptions;
use paytrack_tests::{Mesh, eventually};

const WAIT: Duration = Duration::from_secs(60);

/// A `stdwebhooks` body; `merchant: None` leaves the payment unattributed.
fn body(payment: &str, status: &str, merchant: Option<&str>) -> String {
    let mut data = serde_json::json!({
        "payment_id": payment,
        "provider_ref": format!("pr_{payment}"),
        "amount_minor": 1250,
        "currency": "USD",
    });
    if let Some(merchant) = merchant {
        data["merchant_id"] = merchant.into();
    }
    serde_json::json!({
        "type": format!("payment.{status}"),
        "timestamp": chrono::Utc::now().to_rfc3339(),
        "data": data,
    })
    .to_string()
}

/// Waits until the reconcilers' durable consumer has handled `facts` facts.
async fn wait_reconciled(mesh: &Mesh, facts: u64) -> anyhow::Result<()> {
    eventually(WAIT, "every fact reconciled", || async {
        let stream = mesh.js.get_stream(subjects::STREAM_IN).await.ok()?;
        let mut reconciler: consumer::PullConsumer =
            stream.get_consumer(paytrack_nats::CONSUMER_RECONCILER).await.ok()?;
        let info = reconciler.info().await.ok()?;
        (info.ack_floor.stream_sequence >= facts && info.num_ack_pending == 0 && info.num_pending == 0).then_some(())
    })
    .await
}

/// Every transition in PAYTRACK_STATUS, with its subject, in stream order.
async fn all_transitions(mesh: &Mesh) -> anyhow::Result<Vec<(String, Transition)>> {
    let mut stream = mesh.js.get_stream(subjects::STREAM_STATUS).await?;
    let last = stream.info().await?.state.last_sequence;
    let mut out = Vec::new();
    if last == 0 {
        return Ok(out);
    }
    let ordered = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: subjects::STATUS_ALL.to_owned(),
            ..Default::default()
        })
        .await?;
    let mut messages = ordered.messages().await?;
    while let Some(message) = tokio::time::timeout(WAIT, messages.next()).await?.transpose()? {
        let seq = message.info().map_err(|e| anyhow::anyhow!("{e}"))?.stream_sequence;
        out.push((message.subject.to_string(), envelope::decode(&message.payload)?));
        if message.info().map_err(|e| anyhow::anyhow!("{e}"))?.pending == 0 || seq >= last {
            break;
        }
    }
    Ok(out)
}

/// Two reconciler replicas race on first facts naming different merchants (or none)
/// for 40 payments: each payment's four facts are decided at the same moment, two by
/// each replica. Each payment still has exactly one strict chain, in the stream and in
/// PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_reconcilers_keep_one_chain_per_payment() -> anyhow::Result<()> {
    // The replicas are driven by the test, so that facts of one payment are decided
    // concurrently (a replica's consumer would otherwise take whole batches).
    let mesh = Mesh::start_with(MeshOptions {
        reconcilers: 0,
        ..MeshOptions::default()
    })
    .await?;
    let payments: Vec<String> = (0..40).map(|n| format!("pay_race_{n}")).collect();
    // Each payment gets four facts: three name different merchants, one none.
    let facts = [
        ("pending", Some("m_a")),
        ("held", Some("m_b")),
        ("succeeded", Some("m_c")),
        ("pending", None),
    ];
    let mesh_ref = &mesh;
    let posts = payments.iter().flat_map(|payment| {
        facts.iter().enumerate().map(move |(n, (status, merchant))| {
            let mesh = mesh_ref;
            async move {
                let response = mesh
                    .post_webhook(&format!("msg_{payment}_{n}"), &body(payment, status, *merchant))
                    .await?;
                anyhow::ensure!(response.status() == 200, "webhook answered {}", response.status());
                let accepted: serde_json::Value = response.json().await?;
                accepted["seq"].as_u64().context("seq")
            }
        })
    });
    let seqs: Vec<anyhow::Result<u64>> = futures::stream::iter(posts).buffered(16).collect().await;
    let seqs = seqs.into_iter().collect::<anyhow::Result<Vec<u64>>>()?;

    // Two replicas, each with its own connection, as two pods would have.
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let client = mesh.nats.connect_as(paytrack_nats::auth::Role::Reconciler).await?;
        replicas.push(paytrack_reconciler::Reconciler::new(async_nats::jetstream::new(client)).await?);
    }
    let inbound = mesh.js.get_stream(subjects::STREAM_IN).await?;
    let replicas = &replicas;
    let inbound = &inbound;
    let races = seqs.chunks(facts.len()).map(|chunk| async move {
        let decisions = chunk.iter().enumerate().map(|(n, seq)| async move {
            let stored = inbound.get_raw_message(*seq).await?;
            let fact: paytrack_shared::envelope::InboundFact = envelope::decode(&stored.payload)?;
            replicas[n % 2]
                .decide(&fact, *seq, &"0".repeat(32))
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))
        });
        futures::future::try_join_all(decisions).await
    });
    let decided: Vec<anyhow::Result<_>> = futures::stream::iter(races).buffer_unordered(8).collect().await;
    decided.into_iter().collect::<anyhow::Result<Vec<_>>>()?;

    // The stream: per payment one subject, versions 1..n, each following the last.
    let mut chains: BTreeMap<String, Vec<(String, Transition)>> = BTreeMap::new();
    for (subject, transition) in all_transitions(&mesh).await? {
        assert_eq!(transition.tenant, mesh.tenant);
        chains
            .entry(transition.payment_id.to_string())
            .or_default()
            .push((subject, transition));
    }
    assert_eq!(chains.len(), payments.len(), "every payment has a history");
    for (payment, chain) in &chains {
        let subject = &chain[0].0;
        let mut previous = None;
        for (n, (s, t)) in chain.iter().enumerate() {
            assert_eq!(s, subject, "{payment}: one subject for the whole history");
            assert_eq!(
                t.version,
                n as u64 + 1,
                "{payment}: versions 1..n, each once: {chain:?}"
            );
            assert_eq!(t.previous_status, previous, "{payment}: each version follows the last");
            assert_eq!(
                subject.split('.').nth(3),
                Some(t.merchant_id.as_str()),
                "{payment}: merchant"
            );
            previous = Some(t.status);
        }
    }

    // PostgreSQL: the timeline is the same chain, and the current row agrees.
    for (payment, chain) in &chains {
        let newest = &chain[chain.len() - 1].1;
        let version = i64::try_from(newest.version)?;
        mesh.wait_for_row(payment, version).await?;
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT version, status FROM payment_timeline WHERE tenant = $1 AND payment_id = $2 ORDER BY version",
        )
        .bind(mesh.tenant.as_str())
        .bind(payment)
        .fetch_all(&mesh.db)
        .await?;
        let expected: Vec<(i64, String)> = chain
            .iter()
            .map(|(_, t)| (t.version as i64, t.status.as_str().to_owned()))
            .collect();
        assert_eq!(rows, expected, "{payment}: timeline");
        let (status, row_version, merchant): (String, i64, String) =
            sqlx::query_as("SELECT status, version, merchant_id FROM payments WHERE tenant = $1 AND payment_id = $2")
                .bind(mesh.tenant.as_str())
                .bind(payment)
                .fetch_one(&mesh.db)
                .await
                .context("payments row")?;
        assert_eq!(
            (status.as_str(), row_version, merchant.as_str()),
            (newest.status.as_str(), version, newest.merchant_id.as_str()),
            "{payment}: current state"
        );
    }
    Ok(())
}

/// Consumers on PAYTRACK_STATUS that are not durable: what a history scan creates.
async fn ephemeral_status_consumers(mesh: &Mesh) -> anyhow::Result<usize> {
    use futures::TryStreamExt;
    let stream = mesh.js.get_stream(subjects::STREAM_STATUS).await?;
    let infos: Vec<consumer::Info> = stream.consumers().try_collect().await?;
    Ok(infos.iter().filter(|i| i.config.durable_name.is_none()).count())
}

/// Facts for a payment with several versions are reconciled without creating a
/// single JetStream consumer, and a fact repeated after the de-duplication window
/// is still recognised from the newest transition alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recognising_an_applied_fact_creates_no_consumer() -> anyhow::Result<()> {
    let mesh = Mesh::start_with(MeshOptions {
        duplicate_window_secs: 1,
        ..MeshOptions::default()
    })
    .await?;
    // The edge's fan-out holds one ordered consumer on the stream at rest: the
    // baseline. Nothing else may appear.
    let baseline = ephemeral_status_consumers(&mesh).await?;
    // Sample the consumers all along, not only at the end.
    let watching = tokio_util::sync::CancellationToken::new();
    let most = {
        let (js, stop) = (mesh.js.clone(), watching.clone());
        tokio::spawn(async move {
            let mut most = 0;
            while !stop.is_cancelled() {
                if let Ok(stream) = js.get_stream(subjects::STREAM_STATUS).await {
                    use futures::TryStreamExt;
                    if let Ok(infos) = stream.consumers().try_collect::<Vec<consumer::Info>>().await {
                        most = most.max(infos.iter().filter(|i| i.config.durable_name.is_none()).count());
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            most
        })
    };

    for (n, status) in ["pending", "held"].into_iter().enumerate() {
        mesh.post_webhook(&format!("msg_multi_{n}"), &body("pay_multi", status, Some("m_1")))
            .await?;
    }
    mesh.wait_for_row("pay_multi", 2).await?;
    // Let JetStream forget the message ids (the window is 1 s), so only the
    // reconciler can recognise the repeat: the first fact, stored again.
    mesh.wait_for_duplicate_window().await?;
    let inbound = mesh.js.get_stream(subjects::STREAM_IN).await?;
    let first = inbound.get_raw_message(1).await?;
    mesh.js
        .send_publish(
            format!("paytrack.in.{}.pay_multi", mesh.tenant),
            async_nats::jetstream::message::PublishMessage::build()
                .message_id("stored-again")
                .payload(first.payload.clone()),
        )
        .await?
        .await?;
    mesh.post_webhook("msg_multi_3", &body("pay_multi", "succeeded", Some("m_1")))
        .await?;
    wait_reconciled(&mesh, 4).await?;
    let (status, version, ..) = mesh.wait_for_row("pay_multi", 3).await?;
    assert_eq!(
        (status.as_str(), version),
        ("succeeded", 3),
        "the repeat was not applied"
    );
    assert_eq!(mesh.transition_count("pay_multi").await?, 3);
    let now = ephemeral_status_consumers(&mesh).await?;
    watching.cancel();
    let most = most.await?;
    assert_eq!(
        (now, most),
        (baseline, baseline),
        "no consumer was created on PAYTRACK_STATUS beyond the edge's feed"
    );

    // (Reading the history for this check is the test's own consumer.)
    let newest = all_transitions(&mesh).await?.pop().context("a transition")?.1;
    assert_eq!(
        newest.applied_fact_ids,
        [
            "wh:stdwebhooks:msg_multi_0",
            "wh:stdwebhooks:msg_multi_1",
            "wh:stdwebhooks:msg_multi_3"
        ]
    );
    Ok(())
}

/// One replica decides many payments at once (its lanes), yet each payment's facts
/// are decided in the order they were stored: a create followed at once by its
/// cancel always ends `initiated → cancelled`. A cancel decided before its create
/// (or beside it, against the empty history) is refused, so a lane per fact instead
/// of per payment fails this.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lanes_decide_payments_at_once_and_each_payment_in_order() -> anyhow::Result<()> {
    use paytrack_shared::envelope::CommandAction;
    use paytrack_tests::facts;
    const PAYMENTS: usize = 150;
    let mesh = Mesh::start_with(MeshOptions {
        extra_settings: vec![("reconciler_lanes", "16".to_owned())],
        ..MeshOptions::default()
    })
    .await?;
    let tenant = mesh.tenant.clone();
    let mut stored = 0;
    for n in 0..PAYMENTS {
        let pay = format!("pay_lane_{n}");
        facts::publish(&mesh.js, &facts::create(&tenant, &pay, "card", "stdwebhooks")?).await?;
        let cancel = CommandAction::Cancel {
            reason: Some("changed mind".into()),
        };
        facts::publish(&mesh.js, &facts::command(&tenant, &pay, "cancel-1", cancel)?).await?;
        stored += 2;
    }
    wait_reconciled(&mesh, stored).await?;
    for n in 0..PAYMENTS {
        let pay = format!("pay_lane_{n}");
        let chain: Vec<_> = facts::chain(&mesh.js, &tenant, &pay)
            .await?
            .iter()
            .map(|t| (t.version, t.status.as_str().to_owned()))
            .collect();
        assert_eq!(
            chain,
            vec![(1, "initiated".to_owned()), (2, "cancelled".to_owned())],
            "{pay}: its create, then its cancel"
        );
    }
    Ok(())
}

/// A history written before payment claims existed (so with no claim) is claimed for
/// its merchant when a reconciler first opens the claims bucket: a later fact that
/// names another merchant continues that history on its subject as version 2, and
/// never starts a second one. A new payment is claimed for the merchant its first
/// fact names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_older_than_the_claims_is_claimed_and_continued() -> anyhow::Result<()> {
    use paytrack_shared::Status::Pending;
    let mesh = Mesh::start_with(MeshOptions {
        reconcilers: 0,
        ..MeshOptions::default()
    })
    .await?;
    let legacy = paytrack_tests::workload::Plan {
        payment: "pay_legacy".to_owned(),
        merchant: "m_old".to_owned(),
        rail: "card",
        amount: 500,
        statuses: vec![Pending],
        ledger_minor: 0,
        entries: vec![],
    };
    paytrack_tests::workload::publish_transitions(
        &mesh,
        &[paytrack_tests::workload::transition(&mesh.tenant, &legacy, 1)?],
    )
    .await?;

    let mut seqs = Vec::new();
    for (n, (payment, status, merchant)) in [("pay_legacy", "succeeded", "m_new"), ("pay_fresh", "pending", "m_new")]
        .into_iter()
        .enumerate()
    {
        let response = mesh
            .post_webhook(&format!("msg_claim_{n}"), &body(payment, status, Some(merchant)))
            .await?;
        anyhow::ensure!(response.status() == 200, "webhook answered {}", response.status());
        let accepted: serde_json::Value = response.json().await?;
        seqs.push(accepted["seq"].as_u64().context("seq")?);
    }
    // The first reconciler to open the bucket claims the old history.
    let client = mesh.nats.connect_as(paytrack_nats::auth::Role::Reconciler).await?;
    let reconciler = paytrack_reconciler::Reconciler::new(async_nats::jetstream::new(client)).await?;
    let inbound = mesh.js.get_stream(subjects::STREAM_IN).await?;
    for seq in &seqs {
        let stored = inbound.get_raw_message(*seq).await?;
        let fact: paytrack_shared::envelope::InboundFact = envelope::decode(&stored.payload)?;
        reconciler
            .decide(&fact, *seq, &"0".repeat(32))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }

    let status = mesh.js.get_stream(subjects::STREAM_STATUS).await?;
    let last = |merchant: &'static str, payment: &'static str| {
        let status = status.clone();
        let subject = format!("paytrack.status.{}.{merchant}.{payment}", mesh.tenant);
        async move {
            match status.get_last_raw_message_by_subject(&subject).await {
                Ok(m) => anyhow::Ok(Some(envelope::decode::<Transition>(&m.payload)?)),
                Err(_) => Ok(None),
            }
        }
    };
    let continued = last("m_old", "pay_legacy").await?.context("pay_legacy on m_old")?;
    assert_eq!(
        (continued.version, continued.status.as_str()),
        (2, "succeeded"),
        "{continued:?}"
    );
    assert!(
        last("m_new", "pay_legacy").await?.is_none(),
        "pay_legacy started a second history on m_new"
    );
    let fresh = last("m_new", "pay_fresh").await?.context("pay_fresh on m_new")?;
    assert_eq!(fresh.version, 1, "{fresh:?}");
    let claims = mesh.js.get_key_value(subjects::CLAIMS_BUCKET).await?;
    for (payment, merchant) in [("pay_legacy", "m_old"), ("pay_fresh", "m_new")] {
        let claim = claims
            .get(format!("{}.{payment}", mesh.tenant))
            .await?
            .context("claim")?;
        assert_eq!(std::str::from_utf8(&claim)?, merchant, "{payment}");
    }
    Ok(())
}
