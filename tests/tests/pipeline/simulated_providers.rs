//! The acceptance run against the provider simulator: many payments initiated at the
//! sandbox providers, whose webhooks arrive duplicated, reordered and partly lost;
//! two reconciler replicas decide them (and again with one killed midway), and the
//! sweeps ask the simulator's status-query API about what stays unsettled. After the
//! sweeps every payment's status equals the simulator's ground truth, every history
//! is a chain the model allows, and no fact was applied twice.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use anyhow::Context;
use paytrack_reconciler::judge;
use paytrack_shared::StatusModel;
use paytrack_shared::config::WebhookSecrets;
use paytrack_tests::mesh::{MeshOptions, RAZORPAY_SECRET, STRIPE_SECRET};
use paytrack_tests::workload::wait_statuses;
use paytrack_tests::{Mesh, eventually, facts, ground_truth};
use serde_json::{Value, json};

const PAYMENTS: usize = 30;
/// The bearer token the simulator requires (the reconcilers present it too).
const SIMULATOR_TOKEN: &str = "sim-acceptance-token";
const PROVIDERS: [&str; 2] = ["stripe", "razorpay"];

async fn run(kill_midway: bool) -> anyhow::Result<()> {
    // The simulator's port is reserved first: the reconcilers are configured with it.
    let port = paytrack_tests::free_port_for_later()?;
    let sim = format!("http://127.0.0.1:{port}");
    let mesh = Mesh::start_with(MeshOptions {
        reconcilers: 2,
        extra_settings: vec![
            ("reconciler_window_divisor", "100000".to_owned()),
            ("reconciler_sweep_interval_ms", "100".to_owned()),
            ("reconciler_status_query_urls", format!("stripe={sim},razorpay={sim}")),
            ("simulator_token", SIMULATOR_TOKEN.to_owned()),
        ],
        ..MeshOptions::default()
    })
    .await?;
    mesh.wait_ready().await?;
    let tenant = mesh.tenant.clone();
    let secrets = format!("{tenant}/stripe={STRIPE_SECRET},{tenant}/razorpay={RAZORPAY_SECRET}");
    let simulator = paytrack_simulator::Simulator::bind(paytrack_simulator::Config {
        listen: format!("127.0.0.1:{port}").parse()?,
        ingest_url: mesh.ingest_url.clone(),
        tenant: tenant.clone(),
        token: secrecy::SecretString::from(SIMULATOR_TOKEN.to_owned()),
        secrets: WebhookSecrets::parse(&secrecy::SecretString::from(secrets))?,
        traffic_every: None,
    })
    .await?;
    // Stopped with the test's runtime.
    tokio::spawn(simulator.run(tokio_util::sync::CancellationToken::new()));
    let token = secrecy::SecretString::from(SIMULATOR_TOKEN.to_owned());
    let http = reqwest::Client::builder()
        .default_headers(paytrack_shared::auth::gateway_headers(Some(&token)))
        .build()?;
    for provider in PROVIDERS {
        let behaviour = json!({"latency_ms": 30, "success_pct": 60, "duplicate_pct": 30,
                               "reorder_pct": 40, "loss_pct": 30, "availability_pct": 100,
                               "status_api": true, "send_metadata": true});
        let response = http
            .put(format!("{sim}/v1/providers/{provider}/behaviour"))
            .json(&behaviour)
            .send()
            .await?;
        anyhow::ensure!(response.status() == 200, "behaviour: {}", response.text().await?);
    }

    let mut payments = Vec::new();
    for n in 0..PAYMENTS {
        let payment = format!("pay_sim_{n}");
        let provider = PROVIDERS[n % PROVIDERS.len()];
        let response = http
            .post(format!("{sim}/v1/providers/{provider}/payments"))
            .json(
                &json!({"tenant": tenant.as_str(), "payment_id": payment, "amount_minor": 1500,
                          "currency": "USD", "rail": "rtp", "merchant_id": "m_1"}),
            )
            .send()
            .await?;
        anyhow::ensure!(response.status() == 201, "initiate: {}", response.text().await?);
        let initiated: Value = response.json().await?;
        let provider_ref = initiated["provider_ref"].as_str().context("provider_ref")?;
        facts::publish(
            &mesh.js,
            &facts::create_with_ref(&tenant, &payment, "rtp", provider, provider_ref)?,
        )
        .await?;
        payments.push(payment);
        if kill_midway && n == PAYMENTS / 2 {
            anyhow::ensure!(mesh.abort_reconciler()?, "a reconciler to kill");
        }
    }

    // Ground truth, once the simulator has decided every payment.
    let (truth, lost) = eventually(Duration::from_secs(30), "every outcome decided", || async {
        let payments = ground_truth::payments(&http, &sim).await?;
        let truth: BTreeMap<String, String> = payments
            .iter()
            .filter_map(|p| Some((p["payment_id"].as_str()?.to_owned(), p["status"].as_str()?.to_owned())))
            .collect();
        let lost: u64 = payments.iter().filter_map(|p| p["webhooks_lost"].as_u64()).sum();
        (truth.len() == PAYMENTS && truth.values().all(|s| s != "pending")).then_some((truth, lost))
    })
    .await?;
    // Some webhooks were lost: only the sweeps' status queries can settle those payments.
    anyhow::ensure!(lost > 0, "the simulator lost no webhook; the run proves nothing");
    let wait = if kill_midway { 90 } else { 45 };
    wait_statuses(&mesh, &truth, Duration::from_secs(wait)).await?;

    let model = StatusModel::get();
    for payment in &payments {
        let chain = facts::chain(&mesh.js, &tenant, payment).await?;
        let mut causes = HashSet::new();
        let mut previous = None;
        for t in &chain {
            judge::valid_step(model, previous, t).map_err(|e| anyhow::anyhow!("{payment}: {e}: {chain:?}"))?;
            anyhow::ensure!(
                causes.insert(t.cause.fact_id.clone()),
                "{payment}: {} applied twice",
                t.cause.fact_id
            );
            previous = Some(t);
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_providers_settle_to_ground_truth_with_two_reconcilers() -> anyhow::Result<()> {
    run(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_providers_settle_to_ground_truth_with_one_reconciler_killed() -> anyhow::Result<()> {
    run(true).await
}
