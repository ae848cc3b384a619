//! Section 10: Idle sessions: what sessions that receive nothing cost NATS. One edge
//! holds N subscribed sessions, all on `payments` or each on a `payment:` channel of
//! its own, and nothing is published for a while; meanwhile the mesh's own
//! nats-server's CPU, the JetStream API requests of the account, the messages
//! stored in every stream and bucket, and the consumers are counted. Whatever grows
//! with the number of channels rather than of sessions shows up as the difference
//! between the two rows of a size.

use std::time::Instant;

use futures::TryStreamExt;

use crate::ctx::Ctx;
use crate::report::{Report, num};
use crate::stats::progress;

/// The section's title in the table.
pub const SECTION: &str = crate::report::SECTIONS[9];

/// Which channels the sessions hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channels {
    /// Every session on `payments`.
    Shared,
    /// Each session on a `payment:` channel of its own.
    OwnPayment,
}

impl Channels {
    fn label(self) -> &'static str {
        match self {
            Channels::Shared => "all on `payments`",
            Channels::OwnPayment => "each on its own `payment:` channel",
        }
    }

    fn channel(self, size: usize, i: usize) -> String {
        match self {
            Channels::Shared => "payments".to_owned(),
            Channels::OwnPayment => format!("payment:idle{size}p{i}"),
        }
    }
}

/// What one idle window measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Idle {
    /// Cores the mesh's nats-server used.
    pub nats_cores: f64,
    /// Cores the edge process used.
    pub edge_cores: f64,
    /// JetStream API requests per second (the account's counter).
    pub api_per_second: f64,
    /// Messages stored per second, every stream and bucket together.
    pub stored_per_second: f64,
    /// Consumers on every stream and bucket at the end of the window.
    pub consumers: usize,
}

/// Adds the rows of one (size, channels) measurement.
pub fn tabulate(size: usize, channels: Channels, secs: u64, idle: &Idle, load: &str, report: &mut Report) {
    let label = format!("{size} idle sessions {}, {secs} s", channels.label());
    report.plain(
        SECTION,
        &label,
        "nats-server cores / edge cores while idle",
        format!("{:.3} / {:.3}", idle.nats_cores, idle.edge_cores),
        &format!("load avg {load}"),
    );
    report.plain(
        SECTION,
        &label,
        "JetStream API requests/s, messages stored/s, consumers",
        format!(
            "{} /s, {} /s, {}",
            num(idle.api_per_second),
            num(idle.stored_per_second),
            idle.consumers
        ),
        "a fixed cost per edge: not growing with channels",
    );
}

/// Every size, both channel shapes.
pub async fn run(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    let window = ctx.plan.idle_window;
    let nats = crate::cpu::own_children("nats-server");
    anyhow::ensure!(
        !nats.is_empty(),
        "the mesh's nats-server is not a child of this process"
    );
    for &size in &ctx.plan.fanout_sizes {
        for channels in [Channels::Shared, Channels::OwnPayment] {
            let edge = ctx.spawn_edge().await?;
            progress(&format!("idle: {size} sessions {}", channels.label()));
            let fleet = ctx
                .fleet_on(&edge, (0..size).map(|i| channels.channel(size, i)))
                .await?;
            ctx.drain().await?;
            let edge_pid: Vec<u32> = edge.pid().into_iter().collect();
            let before = (
                Instant::now(),
                crate::cpu::cpu_seconds(&nats),
                crate::cpu::cpu_seconds(&edge_pid),
                ctx.js_api_total().await?,
                stored(ctx).await?.0,
            );
            tokio::time::sleep(window).await;
            let (stored_after, consumers) = stored(ctx).await?;
            let seconds = before.0.elapsed().as_secs_f64();
            let idle = Idle {
                nats_cores: (crate::cpu::cpu_seconds(&nats) - before.1) / seconds,
                edge_cores: (crate::cpu::cpu_seconds(&edge_pid) - before.2) / seconds,
                api_per_second: ctx.js_api_total().await?.saturating_sub(before.3) as f64 / seconds,
                stored_per_second: stored_after.saturating_sub(before.4) as f64 / seconds,
                consumers,
            };
            tabulate(
                size,
                channels,
                window.as_secs(),
                &idle,
                &crate::sections::shape::load_average(),
                report,
            );
            drop(fleet);
            drop(edge);
            ctx.drain().await?;
        }
    }
    Ok(())
}

/// Messages ever stored (last sequence) over every stream and bucket, and their
/// consumers now.
async fn stored(ctx: &Ctx) -> anyhow::Result<(u64, usize)> {
    let infos: Vec<_> = ctx.mesh.js.streams().try_collect().await?;
    Ok((
        infos.iter().map(|i| i.state.last_sequence).sum(),
        infos.iter().map(|i| i.state.consumer_count).sum(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_name_the_channels_and_every_count() {
        let mut report = Report::default();
        let idle = Idle {
            nats_cores: 0.125,
            edge_cores: 0.05,
            api_per_second: 3.0,
            stored_per_second: 0.0,
            consumers: 7,
        };
        tabulate(15_000, Channels::OwnPayment, 30, &idle, "1.0 1.0 1.0", &mut report);
        assert_eq!(report.rows.len(), 2);
        assert!(report.rows[0].size.contains("own `payment:` channel"));
        assert_eq!(report.rows[0].value, "0.125 / 0.050");
        assert_eq!(report.rows[1].value, "3.00 /s, 0.00 /s, 7");
        assert_eq!(Channels::OwnPayment.channel(5, 3), "payment:idle5p3");
        assert_eq!(Channels::Shared.channel(5, 3), "payments");
    }
}
