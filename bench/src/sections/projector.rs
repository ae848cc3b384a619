//! Section 5: Projector: how fast the ledger projector catches up on N transitions preloaded
//! in PAYTRACK_STATUS while it was stopped (with their raw facts and outcomes, which
//! it stores at the same time, as after any outage), against raw batched inserts of
//! the same rows (every projection table's rows of those payments) into PostgreSQL.

use std::time::{Duration, Instant};

use crate::ctx::Ctx;
use crate::report::{Plot, Report};
use crate::stats::progress;

const SECTION: &str = "5. Projector";

/// Transitions per batch of the ceiling (the projector's most per transaction).
const BATCH: usize = 1_000;

/// Runs every size.
pub async fn run(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    let (mut projected, mut raw) = (Vec::new(), Vec::new());
    for &size in &ctx.plan.projector_sizes {
        let prefix = format!("p{size}x");
        progress(&format!(
            "projector: preloading {size} transitions with the projector stopped"
        ));
        let before = ctx.status_messages().await?;
        let applied_before = ctx.projector_applied().await?;
        ctx.mesh
            .restart_projector(async {
                ctx.post_many(size, 32, |i| {
                    (
                        format!("{prefix}{i}"),
                        if i % 2 == 0 { "succeeded" } else { "pending" },
                        format!("pm{}", i % 100),
                    )
                })
                .await?;
                ctx.mesh
                    .eventually(
                        Duration::from_secs(600),
                        "the reconciler to write every transition",
                        || async {
                            let now = ctx.status_messages().await.ok()?;
                            (now >= before + size as u64).then_some(())
                        },
                    )
                    .await?;
                Ok(())
            })
            .await?;
        progress(&format!("projector: catching up on {size} transitions"));
        // Timed from the restart (start-up included) until the projector has committed
        // every transition with its postings and JetStream has acknowledged both
        // checkpoints of each; read from the projector's own progress counters, so the
        // wait costs the database two small queries every 50 ms.
        paytrack_tests::pg::reset_statements(&ctx.mesh.db).await;
        let cpu_before = crate::cpu::CpuSample::now(None);
        let started = Instant::now();
        let pattern = format!("{prefix}%");
        ctx.mesh
            .eventually(Duration::from_secs(600), "the projector to catch up", || async {
                let applied = ctx.projector_applied().await.ok()?;
                if applied < applied_before + size as i64 {
                    return None;
                }
                let unconfirmed: i64 =
                    sqlx::query_scalar("SELECT count(*) FROM checkpoints WHERE published_at IS NULL")
                        .fetch_one(&ctx.mesh.db)
                        .await
                        .ok()?;
                (unconfirmed == 0).then_some(())
            })
            .await?;
        let rate = size as f64 / started.elapsed().as_secs_f64();
        let cpu = cpu_before.cores_until(&crate::cpu::CpuSample::now(None));
        // With PAYTRACK_PG_STATEMENTS=1, where PostgreSQL spent the catch-up.
        for line in paytrack_tests::pg::top_statements(&ctx.mesh.db, 15).await {
            progress(&format!("projector: {line}"));
        }
        progress(&format!(
            "projector: raw batched inserts of the same rows ({size} transitions)"
        ));
        let raw_rate = size as f64 / raw_inserts(ctx, &pattern).await?.as_secs_f64();
        report.measured(
            SECTION,
            format!("{size} transitions"),
            "transitions/s committed (half of them post a capture)",
            rate,
            raw_rate,
            "raw batched INSERTs of the same rows",
            "/s",
        );
        report.plain(
            SECTION,
            format!("{size} transitions"),
            "CPU cores used during the catch-up",
            crate::cpu::describe(&cpu),
            "the machine's cores: where they went",
        );
        projected.push((size as f64, rate));
        raw.push((size as f64, raw_rate));
        ctx.drain().await?;
    }
    report.plots.push(Plot {
        file: "projector.png".into(),
        title: "Projector: transitions/s vs raw batched inserts".into(),
        x_label: "transitions preloaded".into(),
        y_label: "transitions per second".into(),
        series: vec![
            ("projector catch-up".into(), projected),
            ("raw batched INSERT".into(), raw),
        ],
    });
    Ok(())
}

/// Copies the projection rows of payments matching `pattern` into empty look-alike
/// tables, as the projector writes them: one transaction per batch of [`BATCH`]
/// transitions' worth of rows, one multi-row INSERT per table in it (the rows bound as
/// one array of the table's row type). Returns the time spent inserting.
async fn raw_inserts(ctx: &Ctx, pattern: &str) -> anyhow::Result<Duration> {
    let db = &ctx.mesh.db;
    // Every table keyed by tenant and payment (payments, timeline, and whatever the
    // projector writes besides, such as ledger postings), so the ceiling inserts the
    // same rows the projector committed.
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.columns \
         WHERE table_schema = current_schema() AND column_name IN ('tenant', 'payment_id') \
         AND table_name NOT LIKE 'bench_copy_%' \
         GROUP BY table_name HAVING count(*) = 2 ORDER BY table_name",
    )
    .fetch_all(db)
    .await?;
    // Per table: its copy's name and its rows (as row literals), in batches of the
    // payments of `BATCH` transitions.
    let mut copies: Vec<(String, Vec<Vec<String>>)> = Vec::new();
    let payments: Vec<String> = sqlx::query_scalar(
        "SELECT payment_id FROM payments WHERE tenant = $1 AND payment_id LIKE $2 ORDER BY payment_id",
    )
    .bind(ctx.mesh.tenant.as_str())
    .bind(pattern)
    .fetch_all(db)
    .await?;
    let per_batch = BATCH.max(1);
    for table in &tables {
        let copy = format!("bench_copy_{table}");
        sqlx::query(&format!(
            "CREATE TABLE IF NOT EXISTS {copy} (LIKE {table} INCLUDING ALL)"
        ))
        .execute(db)
        .await?;
        sqlx::query(&format!("TRUNCATE {copy}")).execute(db).await?;
        let mut batches = Vec::new();
        for ids in payments.chunks(per_batch) {
            let rows: Vec<String> = sqlx::query_scalar(&format!(
                "SELECT t::text FROM {table} t WHERE tenant = $1 AND payment_id = ANY($2)"
            ))
            .bind(ctx.mesh.tenant.as_str())
            .bind(ids)
            .fetch_all(db)
            .await?;
            batches.push(rows);
        }
        copies.push((copy, batches));
    }
    let batches = copies.iter().map(|(_, b)| b.len()).max().unwrap_or(0);
    let started = Instant::now();
    for i in 0..batches {
        let mut tx = db.begin().await?;
        for (copy, rows) in &copies {
            let Some(rows) = rows.get(i).filter(|r| !r.is_empty()) else {
                continue;
            };
            sqlx::query(&format!(
                "INSERT INTO {copy} OVERRIDING SYSTEM VALUE SELECT * FROM unnest($1::text[]::{copy}[])"
            ))
            .bind(rows)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
    }
    Ok(started.elapsed())
}
