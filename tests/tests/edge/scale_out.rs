//! Scale-out and crashes: many payments whose provider events arrive shuffled,
//! repeated and partly lost, decided by two reconciler replicas (and again with one
//! of them killed midway); after the sweeps every payment's status is the
//! provider's ground truth, every history a chain the model allows, and no fact is
//! applied twice.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::Utc;
use paytrack_reconciler::judge;
use paytrack_shared::envelope::InboundFact;
use paytrack_shared::{Status, StatusModel, subjects};
use paytrack_tests::mesh::MeshOptions;
use paytrack_tests::workload::wait_statuses;
use paytrack_tests::{Mesh, eventually, facts};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};

const PAYMENTS: usize = 40;
const RAILS: [&str; 4] = ["rtp", "card", "upi", "ach_debit"];

/// The provider's ground truth: per provider reference, its final status and sequence.
type Truth = Arc<BTreeMap<String, (Status, u64)>>;

async fn status_query(State(truth): State<Truth>, Path((_, reference)): Path<(String, String)>) -> Response {
    match truth.get(&reference) {
        Some((status, seq)) => axum::Json(serde_json::json!({
            "status": status.as_str(),
            "provider_ref": reference,
            "occurred_at": Utc::now().to_rfc3339(),
            "provider_seq": seq,
        }))
        .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// A path the provider really took: pending, maybe a hold and back, then a final
/// status.
fn path(rng: &mut StdRng) -> Vec<Status> {
    let mut p = vec![Status::Pending];
    if rng.random_bool(0.4) {
        p.extend([Status::Held, Status::Pending]);
    }
    p.push(
        *[Status::Succeeded, Status::Failed, Status::Cancelled]
            .choose(rng)
            .unwrap_or(&Status::Succeeded),
    );
    p
}

async fn run(kill_midway: bool) -> anyhow::Result<()> {
    let seed: u64 = std::env::var("PAYTRACK_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("seed {seed} (PAYTRACK_TEST_SEED reruns it)");
    let mut rng = StdRng::seed_from_u64(seed);

    let mut truth = BTreeMap::new();
    let mut paths = Vec::new();
    for n in 0..PAYMENTS {
        let pay = format!("pay_so_{n}");
        let p = path(&mut rng);
        let rail = RAILS[n % RAILS.len()];
        truth.insert(format!("pr_{pay}"), (p[p.len() - 1], p.len() as u64));
        paths.push((pay, rail, p));
    }
    let truth: Truth = Arc::new(truth);
    let app = axum::Router::new()
        .route("/v1/providers/{provider}/payments/{reference}", get(status_query))
        .with_state(truth.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mesh = Mesh::start_with(MeshOptions {
        reconcilers: 2,
        extra_settings: vec![
            // ach_debit's 3-day window is 2.6 s, every other rail's well under.
            ("reconciler_window_divisor", "100000".to_owned()),
            ("reconciler_sweep_interval_ms", "100".to_owned()),
            ("reconciler_status_query_urls", format!("stdwebhooks={url}")),
            // A killed replica's unacknowledged messages come back after 5 s.
            ("consumer_ack_wait_ms", "5000".to_owned()),
        ],
        ..MeshOptions::default()
    })
    .await?;
    let tenant = mesh.tenant.clone();

    // Each payment: its create command, then its events shuffled, some repeated,
    // some lost; all payments interleaved.
    let t0 = Utc::now();
    let mut deliveries: Vec<InboundFact> = Vec::new();
    for (pay, rail, p) in &paths {
        deliveries.push(facts::create(&tenant, pay, rail, "stdwebhooks")?);
        let mut events = Vec::new();
        for (i, status) in p.iter().enumerate() {
            let seq = i as u64 + 1;
            let at = t0 + chrono::Duration::milliseconds(seq as i64 * 10);
            let event = facts::event(&tenant, pay, &format!("{pay}_e{seq}"), *status, Some(seq), at, None)?;
            if rng.random_bool(0.25) {
                continue; // lost
            }
            if rng.random_bool(0.3) {
                events.push(event.clone()); // repeated
            }
            events.push(event);
        }
        events.shuffle(&mut rng);
        deliveries.extend(events);
    }
    // Interleave payments without reordering a payment's create after its events
    // would matter: events may beat the create, as webhooks can.
    deliveries.shuffle(&mut rng);
    let half = deliveries.len() / 2;
    for fact in &deliveries[..half] {
        facts::publish(&mesh.js, fact).await?;
    }
    if kill_midway {
        anyhow::ensure!(mesh.abort_reconciler()?, "a reconciler to kill");
    }
    for fact in &deliveries[half..] {
        facts::publish(&mesh.js, fact).await?;
    }

    // After the sweeps: every payment at its ground truth (the killed replica's
    // unacknowledged messages come back after the consumers' 5 s ack wait).
    let expected: BTreeMap<String, String> = paths
        .iter()
        .map(|(pay, _, p)| (pay.clone(), p[p.len() - 1].as_str().to_owned()))
        .collect();
    let wait = if kill_midway { 90 } else { 45 };
    wait_statuses(&mesh, &expected, Duration::from_secs(wait)).await?;

    // Every history a chain the model allows, each fact applied once.
    let model = StatusModel::get();
    for (pay, _, _) in &paths {
        let chain = facts::chain(&mesh.js, &tenant, pay).await?;
        let mut causes = HashSet::new();
        let mut previous = None;
        for t in &chain {
            judge::valid_step(model, previous, t).map_err(|e| anyhow::anyhow!("{pay}: {e}: {chain:?}"))?;
            anyhow::ensure!(
                causes.insert(t.cause.fact_id.clone()),
                "{pay}: {} applied twice",
                t.cause.fact_id
            );
            previous = Some(t);
        }
        let last = chain.last().context("a history")?;
        anyhow::ensure!(last.status.as_str() == expected[pay], "{pay}: stream and truth");
    }
    // Every fact published has an outcome (none lost with the killed replica). The
    // ground truth can be reached before the killed replica's duplicates and stale
    // facts come back (after the ack wait), so this waits as long as that did.
    let inbound = mesh.stream_messages(subjects::STREAM_IN).await?;
    eventually(Duration::from_secs(wait), "an outcome per fact", || async {
        let outcomes = mesh.stream_messages(subjects::STREAM_OUTCOME).await.ok()?;
        (outcomes == inbound).then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_reconcilers_settle_shuffled_repeated_and_lost_facts_to_ground_truth() -> anyhow::Result<()> {
    run(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_reconciler_killed_midway_the_other_still_settles_everything() -> anyhow::Result<()> {
    run(true).await
}

/// A replica that crashed after appending but before acknowledging: the fact comes
/// back to another replica, which recognises it as applied (outcome `applied`,
/// `redelivered`) and appends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_append_redelivers_without_a_second_transition() -> anyhow::Result<()> {
    let mesh = Mesh::start_with(MeshOptions {
        reconcilers: 0,
        ..MeshOptions::default()
    })
    .await?;
    let (tenant, pay) = (&mesh.tenant, "pay_crash");
    let fact = facts::event(tenant, pay, "c1", Status::Pending, Some(1), Utc::now(), None)?;
    let seq = facts::publish(&mesh.js, &fact).await?;
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let client = mesh.nats.connect_as(paytrack_nats::auth::Role::Reconciler).await?;
        replicas.push(paytrack_reconciler::Reconciler::new(async_nats::jetstream::new(client)).await?);
    }
    let trace = "0".repeat(32);
    let first = replicas[0]
        .decide(&fact, seq, &trace)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // ... the first replica dies here, its ack never sent; the redelivery goes to the other.
    let again = replicas[1]
        .decide(&fact, seq, &trace)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    assert!(matches!(
        first,
        paytrack_reconciler::Decision::Applied { redelivered: false, .. }
    ));
    assert!(matches!(
        again,
        paytrack_reconciler::Decision::Applied { redelivered: true, .. }
    ));
    assert_eq!(facts::chain(&mesh.js, tenant, pay).await?.len(), 1);
    Ok(())
}

/// How long a delivered message may stay unacknowledged before JetStream delivers it
/// again is a setting (`consumer_ack_wait_ms`), applied to every durable consumer the
/// reconciler and the projector create: a test that kills a replica waits for the
/// redelivery it configured, not a fixed 30 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_durable_consumer_takes_the_configured_ack_wait() -> anyhow::Result<()> {
    let mesh = Mesh::start_with(MeshOptions {
        extra_settings: vec![("consumer_ack_wait_ms", "3000".to_owned())],
        ..MeshOptions::default()
    })
    .await?;
    for (stream, consumer) in [
        (subjects::STREAM_IN, paytrack_nats::CONSUMER_RECONCILER),
        (subjects::STREAM_IN, paytrack_nats::CONSUMER_PROJECTOR_EVIDENCE),
        (subjects::STREAM_SESSION, paytrack_nats::CONSUMER_PROJECTOR_SESSIONS),
        (subjects::STREAM_OUTCOME, paytrack_nats::CONSUMER_PROJECTOR_OUTCOMES),
        (subjects::STREAM_ALERT, paytrack_nats::CONSUMER_PROJECTOR_ALERTS),
    ] {
        let info = mesh.js.get_stream(stream).await?.consumer_info(consumer).await?;
        assert_eq!(info.config.ack_wait, Duration::from_secs(3), "{stream}/{consumer}");
    }
    Ok(())
}
