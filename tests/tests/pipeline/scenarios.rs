//! The provider simulator's scenarios, each played through the real mesh (the
//! simulator wired as `make up` wires it: ingest initiates there, the reconciler's
//! status queries ask it): every story ends in the state it names, status and
//! amounts as the REST view shows them. `stuck_pending` is settled by the
//! stuck-payment sweep's status query alone (rail windows accelerated 1000 times).

use std::time::Duration;

use paytrack_simulator::scenarios::{SCENARIOS, Started};
use paytrack_tests::Mesh;
use paytrack_tests::mesh::MeshOptions;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(90);

async fn mesh() -> anyhow::Result<Mesh> {
    Mesh::start_with(MeshOptions {
        simulator: true,
        extra_settings: vec![
            ("reconciler_window_divisor", "1000".to_owned()),
            ("reconciler_sweep_interval_ms", "50".to_owned()),
        ],
        ..MeshOptions::default()
    })
    .await
}

/// Every scenario, at its default provider, ends in its expected status and amounts;
/// the late capture raises `captured_after_failure`; the storm's repeats change
/// nothing (two versions); the stuck payment is settled by a status-query fact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_ends_in_the_state_it_names() -> anyhow::Result<()> {
    let mesh = mesh().await?;
    let sim = mesh
        .simulator_url
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no simulator"))?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build()?;
    let listed: Value = http
        .get(format!("{sim}/v1/scenarios"))
        .bearer_auth(&mesh.simulator_token)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        listed["scenarios"].as_array().map(Vec::len),
        Some(SCENARIOS.len()),
        "{listed}"
    );
    for behaviour in ["stdwebhooks", "razorpay", "stripe"] {
        // Random outcomes and faults do not touch a story; only latency does.
        let response = http
            .put(format!("{sim}/v1/providers/{behaviour}/behaviour"))
            .bearer_auth(&mesh.simulator_token)
            .json(&json!({"latency_ms": 20, "success_pct": 0, "loss_pct": 100}))
            .send()
            .await?;
        anyhow::ensure!(response.status() == 200, "behaviour: {}", response.status());
    }
    let mut started = Vec::new();
    for scenario in &SCENARIOS {
        let response = http
            .post(format!("{sim}/v1/scenarios/{}", scenario.name))
            .bearer_auth(&mesh.simulator_token)
            .json(&json!({}))
            .send()
            .await?;
        anyhow::ensure!(
            response.status() == 202,
            "{}: {}",
            scenario.name,
            response.text().await?
        );
        started.push(response.json::<Started>().await?);
    }
    let token = mesh.operator_token();
    for s in &started {
        let view = mesh
            .eventually(WAIT, &format!("{} at {:?}", s.scenario, s.expect), || async {
                let view: Value = mesh
                    .get(&format!("/v1/payments/{}", s.payment_id), &token)
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                let amounts_match = s.expect.amounts.iter().all(|(k, v)| view["amounts"][k] == json!(v));
                (view["status"] == json!(s.expect.status) && amounts_match).then_some(view)
            })
            .await?;
        let timeline: Value = mesh
            .get(&format!("/v1/payments/{}/timeline", s.payment_id), &token)
            .await?
            .json()
            .await?;
        let items = timeline.as_array().cloned().unwrap_or_default();
        match s.scenario.as_str() {
            "stuck_pending" => assert!(
                items
                    .iter()
                    .any(|i| i["source"].as_str().is_some_and(|s| s.starts_with("status_query"))
                        && i["status"] == "succeeded"),
                "not settled by the status query: {timeline}"
            ),
            // Repeats inside the duplicate window are absorbed by JetStream; none moves it.
            "duplicate_storm" => assert_eq!(view["version"], 2, "{view}"),
            "late_capture_after_failure" => {
                mesh.eventually(WAIT, "the captured_after_failure alert", || async {
                    let alerts: Value = mesh
                        .get(&format!("/v1/alerts?payment_id={}", s.payment_id), &token)
                        .await
                        .ok()?
                        .json()
                        .await
                        .ok()?;
                    alerts["items"]
                        .as_array()?
                        .iter()
                        .any(|a| a["kind"] == "captured_after_failure")
                        .then_some(())
                })
                .await?;
            }
            _ => {}
        }
    }
    // An unknown scenario, and a provider that cannot play one, change nothing.
    let unknown = http
        .post(format!("{sim}/v1/scenarios/no_such_story"))
        .bearer_auth(&mesh.simulator_token)
        .json(&json!({}))
        .send()
        .await?;
    assert_eq!(unknown.status(), 404);
    let wrong = http
        .post(format!("{sim}/v1/scenarios/payout_returned"))
        .bearer_auth(&mesh.simulator_token)
        .json(&json!({"provider": "stripe"}))
        .send()
        .await?;
    assert_eq!(
        wrong.status(),
        400,
        "a scenario that cannot be played on this provider is an invalid request"
    );
    Ok(())
}
