//! Section 4: Reconnect storm: every session dropped at once while transitions flow, then
//! all resume with `since`. Measures the time until every session is current (it has
//! `subscribed` again and every transition acknowledged by ingest before the resume
//! began), gaps and duplicates from `prev_seq` (must be zero), and JetStream API
//! requests per resume (the account's request counter, less its rate before the storm).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::ctx::Ctx;
use crate::report::{Plot, Report, num};
use crate::stats::progress;

const SECTION: &str = "4. Reconnect storm";

/// Runs every (sessions, outage) storm.
pub async fn run(ctx: &Arc<Ctx>, report: &mut Report) -> anyhow::Result<()> {
    let mut by_sessions = Vec::new();
    let mut by_missed = Vec::new();
    let storms = ctx.plan.storms.clone();
    for (round, (sessions, outage)) in storms.into_iter().enumerate() {
        progress(&format!("reconnect storm: {sessions} sessions, outage {outage:?}"));
        let s = storm(ctx, round, sessions, outage).await?;
        let label = format!("{sessions} sessions, {} events missed", s.missed);
        report.plain(
            SECTION,
            &label,
            "time until all current",
            format!("{} s", num(s.secs)),
            if sessions >= 10_000 {
                "target ≤ 1.5 s at 10k sessions"
            } else {
                ""
            },
        );
        report.plain(
            SECTION,
            &label,
            "gaps / duplicates / unrecovered",
            format!("{} / {} / {}", s.gaps, s.duplicates, s.unrecovered),
            "must be 0 / 0 / 0",
        );
        report.plain(
            SECTION,
            &label,
            "JetStream API requests per resume",
            num(s.api_per_resume),
            "0 when served from the edge's ring",
        );
        if outage == ctx.plan.storms.first().map(|s| s.1).unwrap_or_default() {
            by_sessions.push((sessions as f64, s.secs));
        }
        if sessions == ctx.plan.storms.last().map(|s| s.0).unwrap_or(0) {
            by_missed.push((s.missed as f64, s.secs));
        }
        ctx.drain().await?;
    }
    report.plots.push(Plot {
        file: "storm.png".into(),
        title: "Reconnect storm: time until every session is current".into(),
        x_label: "events missed (largest storm)".into(),
        y_label: "seconds".into(),
        series: vec![("largest storm, by events missed".into(), by_missed)],
    });
    report.plots.push(Plot {
        file: "storm_sessions.png".into(),
        title: "Reconnect storm: time until current, by sessions".into(),
        x_label: "sessions dropped at once (shortest outage)".into(),
        y_label: "seconds".into(),
        series: vec![("by sessions".into(), by_sessions)],
    });
    Ok(())
}

struct Storm {
    secs: f64,
    missed: usize,
    gaps: u64,
    duplicates: u64,
    unrecovered: u64,
    api_per_resume: f64,
}

async fn storm(ctx: &Arc<Ctx>, round: usize, sessions: usize, outage: Duration) -> anyhow::Result<Storm> {
    let (_edge, mut fleet) = ctx
        .edge_with_sessions((0..sessions).map(|i| format!("merchant:s{round}m{i}")))
        .await?;

    // Transitions flow through the whole storm; each acknowledged one is remembered.
    let acked: Arc<Mutex<Vec<(String, SystemTime)>>> = Arc::default();
    let flowing = Arc::new(AtomicBool::new(true));
    let flow = {
        let (ctx, acked, flowing) = (ctx.clone(), acked.clone(), flowing.clone());
        let rate = ctx.plan.storm_rate;
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
            let mut k = 0usize;
            while flowing.load(Ordering::Relaxed) {
                ticker.tick().await;
                let payment = format!("s{round}x{k}");
                let merchant = format!("s{round}m{}", (k * 7919) % sessions);
                let (ctx, acked) = (ctx.clone(), acked.clone());
                tokio::spawn(async move {
                    if let Ok(at) = ctx.post(&payment, "pending", &merchant).await
                        && let Ok(mut a) = acked.lock()
                    {
                        a.push((format!("{payment}:pending"), at));
                    }
                });
                k += 1;
            }
        })
    };
    // The account's request rate with transitions flowing and no storm.
    let api_before = ctx.js_api_total().await?;
    let baseline_started = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline_rate =
        (ctx.js_api_total().await?.saturating_sub(api_before + 1)) as f64 / baseline_started.elapsed().as_secs_f64();

    progress(&format!("reconnect storm: dropping {sessions} sessions"));
    let dropped_at = SystemTime::now();
    fleet.drop_all().await;
    tokio::time::sleep(outage).await;
    let api_start = ctx.js_api_total().await?;
    let resumed_at = SystemTime::now();
    let started = Instant::now();
    let due: HashSet<String> = acked
        .lock()
        .map(|a| {
            a.iter()
                .filter(|(_, at)| *at <= resumed_at)
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default();
    let missed = acked
        .lock()
        .map(|a| {
            a.iter()
                .filter(|(_, at)| *at >= dropped_at && *at <= resumed_at)
                .count()
        })
        .unwrap_or(0);
    fleet.resume_all();
    let mut received: HashSet<String> = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        received.extend(fleet.recorder.take().into_iter().map(|(k, _)| k));
        if fleet.subscribed() == sessions && due.iter().all(|k| received.contains(k)) {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "storm: sessions not current within 120 s");
        anyhow::ensure!(
            fleet.failures() == 0,
            "storm: {} sessions failed to resume",
            fleet.failures()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let api_end = ctx.js_api_total().await?;
    flowing.store(false, Ordering::Relaxed);
    let _ = flow.await;
    let storm_requests = api_end.saturating_sub(api_start + 1) as f64 - baseline_rate * secs;
    Ok(Storm {
        secs,
        missed,
        gaps: fleet.sum(|s| s.gaps),
        duplicates: fleet.sum(|s| s.duplicates),
        unrecovered: fleet.sum(|s| s.unrecovered),
        api_per_resume: storm_requests.max(0.0) / sessions as f64,
    })
}
