//! A rough measure of the projector's throughput: transitions are published while the
//! projector is stopped, then it is started and timed until every transition and both
//! of its checkpoints are in PostgreSQL (postings included). Ignored by default (it
//! measures, it does not check); run it with
//! `cargo test -p paytrack-tests --test pipeline ledger_bench:: -- --ignored --nocapture`
//! (add `--release` for figures worth comparing; with `PAYTRACK_PG_STATEMENTS=1` it
//! also prints the statements PostgreSQL spent the most time in).

use std::time::{Duration, Instant};

use paytrack_tests::Mesh;
use paytrack_tests::workload::{check_ledger, plans, publish, wait_projected};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run explicitly"]
async fn projector_throughput_with_postings() -> anyhow::Result<()> {
    let payments: usize = std::env::var("PAYTRACK_BENCH_PAYMENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000);
    let mesh = Mesh::start().await?;
    let plans = plans("pb", payments);
    let total: usize = plans.iter().map(|p| p.statuses.len()).sum();
    let mut started = Instant::now();
    mesh.restart_projector(async {
        publish(&mesh, &plans, Duration::ZERO).await?;
        started = Instant::now();
        Ok(())
    })
    .await?;
    wait_projected(&mesh, &mesh.db, total).await?;
    let elapsed = started.elapsed();
    eprintln!(
        "projected {total} transitions ({} with postings) and read back {} checkpoints in {:.2} s: {:.0} transitions/s",
        plans.iter().map(|p| p.entries.len()).sum::<usize>(),
        2 * total,
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    check_ledger(&mesh.db, &mesh.tenant, &plans).await?;
    for line in paytrack_tests::pg::top_statements(&mesh.db, 15).await {
        eprintln!("{line}");
    }
    Ok(())
}
