//! `paytrack rebuild`: replays the streams into the empty database at
//! PAYTRACK_DATABASE_URL. While it runs, a progress line on stderr says how much of
//! the projection exists so far; at the end a summary names what each stream gave.

use std::time::{Duration, Instant};

use paytrack_shared::config::Settings;
use serde_json::json;

use crate::cli::output::{Output, table};

/// How often progress is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// Runs the rebuild with progress, then prints the summary.
pub async fn run(settings: &Settings, out: Output) -> anyhow::Result<()> {
    let started = Instant::now();
    let rebuild = paytrack_ledger_projector::rebuild::rebuild_from_settings(settings);
    tokio::pin!(rebuild);
    let db = paytrack_shared::db::pool(&settings.database_url, 1)?;
    let mut ticker = tokio::time::interval(PROGRESS_EVERY);
    ticker.tick().await;
    let report = loop {
        tokio::select! {
            report = &mut rebuild => break report?,
            _ = ticker.tick() => eprintln!("rebuilding… {} ({:.0} s)", progress(&db).await, started.elapsed().as_secs_f64()),
        }
    };
    let streams: Vec<_> = report
        .messages
        .iter()
        .map(|(stream, n)| json!({"stream": stream, "messages": n}))
        .collect();
    let summary = json!({
        "streams": streams,
        "transitions": report.transitions,
        "skipped": report.skipped,
        "elapsed_secs": report.elapsed.as_secs_f64(),
    });
    out.emit(&summary, |_| {
        let rows: Vec<Vec<String>> = report
            .messages
            .iter()
            .map(|(stream, n)| vec![(*stream).to_owned(), n.to_string()])
            .collect();
        format!(
            "rebuilt {} transition(s) in {:.1} s; {} message(s) skipped (unreadable or refused)\n{}",
            report.transitions,
            report.elapsed.as_secs_f64(),
            report.skipped,
            table(&["STREAM", "MESSAGES"], &rows)
        )
    })
}

/// What the projection holds so far: payments, timeline entries, raw facts.
async fn progress(db: &sqlx::PgPool) -> String {
    let count = |table: &'static str| async move {
        sqlx::query_scalar::<_, i64>(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(db)
            .await
            .map_or_else(|_| "?".to_owned(), |n| n.to_string())
    };
    format!(
        "{} raw fact(s), {} timeline entrie(s), {} payment(s) so far",
        count("inbound_facts").await,
        count("payment_timeline").await,
        count("payments").await
    )
}
