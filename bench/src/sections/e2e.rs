//! Section 2: End to end: webhook → WebSocket `event` latency at fixed offered loads (open
//! loop), with N sessions subscribed (one `merchant:` channel each, so every
//! transition reaches exactly one session).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::client::Fleet;
use crate::ctx::Ctx;
use crate::report::{Plot, Report};
use crate::stats::{self, histogram, progress};

const SECTION: &str = "2. End to end";

/// p99 bound for "the highest load that keeps p99 under it".
const P99_BOUND_MS: f64 = 50.0;

/// Runs every (sessions, load) pair.
pub async fn run(ctx: &Arc<Ctx>, report: &mut Report) -> anyhow::Result<()> {
    let mut plot_series = Vec::new();
    for &sessions in &ctx.plan.e2e_sessions {
        progress(&format!("end to end: connecting {sessions} sessions"));
        let (edge, fleet) = ctx
            .edge_with_sessions((0..sessions).map(|i| format!("merchant:e{sessions}m{i}")))
            .await?;
        // The sessions' open and subscribe audit is stored before any load is offered.
        ctx.drain().await?;
        let mut points = Vec::new();
        let mut best: Option<u32> = None;
        for &load in &ctx.plan.e2e_loads {
            progress(&format!("end to end: {load}/s offered to {sessions} sessions"));
            let h = offer(ctx, &fleet, sessions, load, edge.pid()).await?;
            let label = format!("{sessions} sessions, {load}/s");
            let (p50, p99, p999) = (stats::ms(&h.0, 0.5), stats::ms(&h.0, 0.99), stats::ms(&h.0, 0.999));
            report.plain(
                SECTION,
                &label,
                "latency p50 / p99 / p999",
                format!(
                    "{} / {} / {} ms",
                    crate::report::num(p50),
                    crate::report::num(p99),
                    crate::report::num(p999)
                ),
                match load {
                    1_000 => "target p99 ≤ 10 ms at 1,000/s, sustained",
                    300 => "target p99 ≤ 5 ms at 300/s",
                    _ => "",
                },
            );
            report.plain(
                SECTION,
                &label,
                "CPU cores used, first webhook sent until the last event received",
                crate::cpu::describe(&h.3),
                "the machine's cores: where they went",
            );
            report.failures(SECTION, &label, "webhooks not accepted (error or non-2xx)", h.2, "0");
            report.failures(SECTION, &label, "events not received within 30 s", h.1, "0");
            if p99 < P99_BOUND_MS && h.1 == 0 && h.2 == 0 {
                best = Some(load);
            }
            points.push((f64::from(load), p99));
            ctx.drain().await?;
        }
        let highest = match best {
            Some(load) if Some(&load) == ctx.plan.e2e_loads.last() => format!("≥ {load}/s (highest offered)"),
            Some(load) => format!("{load}/s"),
            None => format!(
                "< {}/s (lowest offered)",
                ctx.plan.e2e_loads.first().copied().unwrap_or(0)
            ),
        };
        report.plain(
            SECTION,
            format!("{sessions} sessions"),
            "highest load with p99 < 50 ms",
            highest,
            "offered loads only",
        );
        plot_series.push((format!("{sessions} sessions: p99"), points));
    }
    report.plots.push(Plot {
        file: "e2e.png".into(),
        title: "End to end: webhook → WebSocket event p99".into(),
        x_label: "offered transitions/s".into(),
        y_label: "p99 ms".into(),
        series: plot_series,
    });
    Ok(())
}

/// What one offered load measured: latencies, events never received, webhooks
/// refused, and the cores each process group used meanwhile.
type Offered = (hdrhistogram::Histogram<u64>, usize, usize, Vec<(&'static str, f64)>);

/// Offers `load` transitions/s for the plan's step, open loop; returns the latency
/// histogram, how many events never arrived, how many webhooks were refused, and
/// where the CPU went (`edge_pid` is the edge under test).
async fn offer(
    ctx: &Arc<Ctx>,
    fleet: &Fleet,
    sessions: usize,
    load: u32,
    edge_pid: Option<u32>,
) -> anyhow::Result<Offered> {
    fleet.recorder.take();
    let cpu_before = crate::cpu::CpuSample::now(edge_pid);
    let total = (f64::from(load) * ctx.plan.e2e_step.as_secs_f64()).ceil() as usize;
    let sent: Arc<Mutex<HashMap<String, SystemTime>>> = Arc::default();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(load)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::with_capacity(total);
    let errors = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for k in 0..total {
        ticker.tick().await;
        let payment = format!("e{sessions}l{load}x{k}");
        let merchant = format!("e{sessions}m{}", (k * 7919) % sessions);
        let (ctx, sent, errors) = (ctx.clone(), sent.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            if let Ok(mut s) = sent.lock() {
                s.insert(format!("{payment}:pending"), SystemTime::now());
            }
            if ctx.post(&payment, "pending", &merchant).await.is_err() {
                errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while (fleet.recorder.received.load(std::sync::atomic::Ordering::Relaxed) as usize) < total
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu = cpu_before.cores_until(&crate::cpu::CpuSample::now(edge_pid));
    let receipts = fleet.recorder.take();
    let sent = sent.lock().map(|s| s.clone()).unwrap_or_default();
    let mut h = histogram();
    let mut seen = 0;
    for (key, at) in receipts {
        if let Some(t0) = sent.get(&key) {
            stats::record(&mut h, stats::between(*t0, at));
            seen += 1;
        }
    }
    let refused = errors.load(std::sync::atomic::Ordering::Relaxed);
    Ok((h, total.saturating_sub(seen), refused, cpu))
}
