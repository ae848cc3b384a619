//! Section 9: Long lives: one edge process opens and closes the same number of
//! sessions several times over (each cycle on channels of its own, dropped without a
//! close handshake as vanishing clients are), and its resident memory after each
//! close tells retention from a leak: memory the allocator keeps after the first
//! cycle and reuses plateaus; a leak grows by about the same amount every cycle.
//! The edge's own gauges of live sessions and channels after each close say whether
//! it still holds anything of the closed sessions.

use std::time::Duration;

use anyhow::Context;

use crate::ctx::Ctx;
use crate::report::{Report, num};
use crate::stats::progress;

/// The section's title in the table.
pub const SECTION: &str = crate::report::SECTIONS[8];

/// The edge's idle-channel window in this section (`edge_idle_channel_secs`, 120 by
/// default): a channel no session holds is followed this long for resumes, and each
/// cycle's channels are new, so with the default the cycles' idle channels (bounded
/// by `edge_idle_channels`) would be what grows. Kept short here, the memory after a
/// close is what the closed sessions left behind otherwise.
pub const IDLE_CHANNEL_SECS: u64 = 1;

/// How long after the edge counts no session open its memory is read: the idle
/// window, the edge's sweep of idle channels (every 5 s), and a moment for anything
/// else it frees after a session ends (its feeds' interest, presence).
pub const SETTLE: Duration = Duration::from_secs(IDLE_CHANNEL_SECS + 5 + 2);

/// Growth per cycle after the first, as a share of what the first cycle's sessions
/// took while open, below which the memory after close is a plateau (retention).
pub const PLATEAU_SHARE: f64 = 0.05;

/// One open/close cycle.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cycle {
    /// Resident bytes with every session of the cycle subscribed.
    pub open_rss: u64,
    /// Resident bytes once every session has closed.
    pub closed_rss: u64,
    /// Sessions the edge still counts as open after the close.
    pub sessions_left: f64,
    /// Channels the edge still holds after the close.
    pub channels_left: f64,
}

/// What the cycles say about memory after close.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    /// Least-squares growth of the after-close memory per cycle, cycles 2.. (bytes).
    pub growth_per_cycle: f64,
    /// What the first cycle's sessions took while open (bytes over the baseline).
    pub first_open: f64,
    /// True when the growth per cycle stays under [`PLATEAU_SHARE`] of `first_open`
    /// and the edge holds no session or channel after a close.
    pub plateau: bool,
}

/// Judges `cycles` measured from `baseline` (resident bytes before any session).
pub fn judge(baseline: u64, cycles: &[Cycle]) -> Verdict {
    let first_open = cycles
        .first()
        .map_or(0.0, |c| c.open_rss.saturating_sub(baseline) as f64);
    // The first cycle warms the allocator's arenas up: the trend runs over the rest.
    let later: Vec<(f64, f64)> = cycles
        .iter()
        .enumerate()
        .skip(1)
        .map(|(i, c)| (i as f64, c.closed_rss as f64))
        .collect();
    let growth_per_cycle = slope(&later);
    let held = cycles.iter().any(|c| c.sessions_left > 0.0 || c.channels_left > 0.0);
    Verdict {
        growth_per_cycle,
        first_open,
        plateau: !held && growth_per_cycle < PLATEAU_SHARE * first_open.max(1.0),
    }
}

/// Least-squares slope of `points` (0 for fewer than two).
fn slope(points: &[(f64, f64)]) -> f64 {
    if points.len() < 2 {
        return 0.0;
    }
    let n = points.len() as f64;
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let num: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    let den: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    if den == 0.0 { 0.0 } else { num / den }
}

/// Adds the rows: memory open and after close per cycle, what the edge still holds,
/// and the verdict.
pub fn tabulate(sessions: usize, baseline: u64, cycles: &[Cycle], report: &mut Report) {
    let mib = |b: f64| b / (1024.0 * 1024.0);
    for (i, c) in cycles.iter().enumerate() {
        let size = format!("{sessions} sessions, cycle {} of {}", i + 1, cycles.len());
        report.plain(
            SECTION,
            &size,
            "edge resident MiB: all open / after all closed",
            format!("{} / {}", num(mib(c.open_rss as f64)), num(mib(c.closed_rss as f64))),
            &format!("before any session: {} MiB", num(mib(baseline as f64))),
        );
        report.plain(
            SECTION,
            &size,
            "sessions / channels the edge still holds after the close",
            format!("{} / {}", c.sessions_left, c.channels_left),
            "0 / 0",
        );
    }
    let v = judge(baseline, cycles);
    report.plain(
        SECTION,
        format!("{sessions} sessions, {} cycles", cycles.len()),
        "after-close growth per cycle (cycles 2..)",
        format!(
            "{} MiB/cycle: {}",
            num(mib(v.growth_per_cycle)),
            if v.plateau {
                "plateau (memory retained and reused, not a leak)"
            } else {
                "GROWS (a leak)"
            }
        ),
        &format!(
            "< {}% of the first cycle's open growth ({} MiB)",
            PLATEAU_SHARE * 100.0,
            num(mib(v.first_open))
        ),
    );
}

/// Opens and closes the plan's sessions on one edge, cycle after cycle.
pub async fn run(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    let (sessions, count) = (ctx.plan.long_lives_sessions, ctx.plan.long_lives_cycles);
    let idle_secs = IDLE_CHANNEL_SECS.to_string();
    let mut edge = ctx
        .spawn_edge_with(&[("EDGE_IDLE_CHANNEL_SECS", idle_secs.as_str())])
        .await?;
    let http = reqwest::Client::new();
    let metrics_url = format!("http://{}/metrics", edge.addr);
    let baseline = edge.rss_bytes()?;
    let mut cycles = Vec::new();
    for cycle in 0..count {
        progress(&format!(
            "long lives: cycle {} of {count}, opening {sessions} sessions",
            cycle + 1
        ));
        let mut fleet = ctx
            .fleet_on(&edge, (0..sessions).map(|i| format!("merchant:ll{cycle}m{i}")))
            .await?;
        let open_rss = edge.rss_bytes()?;
        fleet.drop_all().await;
        drop(fleet);
        // The edge sees every socket end; wait until it counts none open.
        let (sessions_left, channels_left) =
            paytrack_tests::eventually(Duration::from_secs(120), "the edge to let every session go", || async {
                let held = held(&http, &metrics_url).await.ok()?;
                (held.0 == 0.0).then_some(held)
            })
            .await?;
        tokio::time::sleep(SETTLE).await;
        edge.check_alive()?;
        cycles.push(Cycle {
            open_rss,
            closed_rss: edge.rss_bytes()?,
            sessions_left,
            channels_left,
        });
        ctx.drain().await?;
    }
    tabulate(sessions, baseline, &cycles, report);
    Ok(())
}

/// Sessions open and channels held, as the edge's `/metrics` counts them.
async fn held(http: &reqwest::Client, url: &str) -> anyhow::Result<(f64, f64)> {
    let text = http.get(url).send().await?.error_for_status()?.text().await?;
    let scrape = paytrack_tests::prom::Scrape::parse(&text).context("the edge's /metrics")?;
    Ok((
        scrape.sum("paytrack_edge_sessions_open", &[]).unwrap_or(0.0),
        scrape.sum("paytrack_edge_channels", &[]).unwrap_or(0.0),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn cycle(open: u64, closed: u64) -> Cycle {
        Cycle {
            open_rss: open * MIB,
            closed_rss: closed * MIB,
            sessions_left: 0.0,
            channels_left: 0.0,
        }
    }

    /// Memory kept after the first close and reused after is retention.
    #[test]
    fn a_plateau_after_the_first_cycle_is_retention() {
        let cycles = [cycle(218, 275), cycle(280, 276), cycle(281, 276), cycle(280, 277)];
        let v = judge(100 * MIB, &cycles);
        assert!(v.plateau, "{v:?}");
        let mut report = Report::default();
        tabulate(15_000, 100 * MIB, &cycles, &mut report);
        let verdict = report.rows.last().map(|r| r.value.clone()).unwrap_or_default();
        assert!(verdict.contains("plateau"), "{verdict}");
        assert_eq!(report.rows.len(), 2 * cycles.len() + 1);
    }

    /// The same growth every cycle is a leak, and so is a session or channel the edge
    /// still holds after every client has gone.
    #[test]
    fn steady_growth_or_held_channels_are_a_leak() {
        let growing = [cycle(218, 240), cycle(260, 255), cycle(275, 270), cycle(290, 285)];
        let v = judge(100 * MIB, &growing);
        assert!(!v.plateau, "{v:?}");
        assert!((v.growth_per_cycle / MIB as f64 - 15.0).abs() < 0.01, "{v:?}");
        let mut held = [cycle(218, 275), cycle(280, 276)];
        held[1].channels_left = 3.0;
        assert!(!judge(100 * MIB, &held).plateau);
        let mut report = Report::default();
        tabulate(15_000, 100 * MIB, &growing, &mut report);
        let verdict = report.rows.last().map(|r| r.value.clone()).unwrap_or_default();
        assert!(verdict.contains("GROWS"), "{verdict}");
    }
}
