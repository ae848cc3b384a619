//! `/readyz` tells Kubernetes whether a pod can do its job: 503 while its NATS
//! connection is down and, for the ledger-projector, whose job is writing PostgreSQL,
//! while PostgreSQL does not answer; 200 again once it is back. Ingest stays ready
//! without PostgreSQL: webhooks need only NATS. Checked with the mesh idle, so nothing but readiness itself notices.
//!
//! Its own test binary, because stopping PostgreSQL stops it for every test of the
//! process.

use std::time::Duration;

use paytrack_tests::{Mesh, eventually};

/// Generous bound for a probe's answer to change on a loaded machine.
const WAIT: Duration = Duration::from_secs(60);

/// The `/readyz` status of each service named in `names` (None: no answer).
async fn statuses(mesh: &Mesh, names: &[&str]) -> Vec<(&'static str, Option<u16>)> {
    mesh.readiness()
        .await
        .into_iter()
        .filter(|(name, _)| names.contains(name))
        .collect()
}

/// Waits until every service in `names` answers `status`.
async fn wait_for(mesh: &Mesh, names: &[&str], status: u16, what: &str) -> anyhow::Result<()> {
    eventually(WAIT, what, || async {
        let now = statuses(mesh, names).await;
        let all_answered = names.iter().all(|name| now.iter().any(|(n, _)| n == name));
        (all_answered && now.iter().all(|(_, s)| *s == Some(status))).then_some(())
    })
    .await
}

const DATABASE_USERS: [&str; 1] = ["ledger-projector"];
const NATS_USERS: [&str; 4] = ["ingest", "ledger-projector", "reconciler", "ws-edge"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_postgres_and_nats() -> anyhow::Result<()> {
    let mut mesh = Mesh::start().await?;
    mesh.wait_ready().await?;

    paytrack_tests::pg::stop()?;
    let unready = wait_for(&mesh, &DATABASE_USERS, 503, "the projector unready without PostgreSQL").await;
    let ingest = statuses(&mesh, &["ingest"]).await;
    paytrack_tests::pg::start()?;
    unready?;
    assert_eq!(
        ingest,
        vec![("ingest", Some(200))],
        "ingest takes webhooks without PostgreSQL"
    );
    wait_for(&mesh, &NATS_USERS, 200, "every service ready with PostgreSQL back").await?;

    mesh.nats.stop();
    let unready = wait_for(&mesh, &NATS_USERS, 503, "every service unready without NATS").await;
    mesh.nats.restart().await?;
    unready?;
    wait_for(&mesh, &NATS_USERS, 200, "every service ready with NATS back").await?;
    Ok(())
}
