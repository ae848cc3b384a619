//! PostgreSQL stopped under load: the projector holds its batch, reports not-ready,
//! waits, and catches up once the database is back, with nothing lost or doubled.
//!
//! Its own test binary, because stopping PostgreSQL stops it for every test of the
//! process.

use std::time::Duration;

use paytrack_tests::Mesh;
use paytrack_tests::workload::{WAIT, check_ledger, plans, publish, wait_projected, wait_some_projected};

/// How long the database stays down once the projector has noticed.
const OUTAGE: Duration = Duration::from_secs(8);

async fn projector_ready(mesh: &Mesh) -> Option<u16> {
    mesh.readiness()
        .await
        .into_iter()
        .find(|(name, _)| name.contains("projector"))
        .and_then(|(_, status)| status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_under_load_the_projector_waits_then_catches_up() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let plans = plans("pg", 300);
    let total: usize = plans.iter().map(|p| p.statuses.len()).sum();
    let publisher = publish(&mesh, &plans, Duration::from_millis(400));
    let outage = async {
        wait_some_projected(&mesh, 100).await?;
        paytrack_tests::pg::stop()?;
        let noticed = paytrack_tests::eventually(WAIT, "the projector reports not-ready", || async {
            (projector_ready(&mesh).await == Some(503)).then_some(())
        })
        .await;
        // Transitions keep arriving in JetStream meanwhile.
        tokio::time::sleep(if noticed.is_ok() { OUTAGE } else { Duration::ZERO }).await;
        paytrack_tests::pg::start()?;
        noticed
    };
    let (published, outage) = tokio::join!(publisher, outage);
    assert_eq!(published?, total);
    outage?;
    wait_projected(&mesh, &mesh.db, total).await?;
    paytrack_tests::eventually(WAIT, "the projector ready again", || async {
        (projector_ready(&mesh).await == Some(200)).then_some(())
    })
    .await?;
    check_ledger(&mesh.db, &mesh.tenant, &plans).await?;
    let applied: i64 = sqlx::query_scalar("SELECT COALESCE(sum(applied), 0)::bigint FROM projector_progress")
        .fetch_one(&mesh.db)
        .await?;
    assert_eq!(applied, total as i64, "every transition applied once");
    let dead = mesh.js.get_stream("PAYTRACK_DEAD").await?.info().await?.state.messages;
    assert_eq!(dead, 0, "nothing was parked for the outage");
    Ok(())
}
