//! `paytrack-chaos`: the production shape under faults (`faults`), and the cost of
//! each durability choice (`throughput`). `make chaos` runs both.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use paytrack_chaos::cluster::SyncPolicy;
use paytrack_chaos::faults::Fault;
use paytrack_chaos::run::{self, Suite};
use paytrack_chaos::services::Kind;
use paytrack_chaos::{report, throughput};

#[derive(Parser)]
#[command(name = "paytrack-chaos", about = "paytrack's production shape under faults")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every fault alone, both power losses, then a seeded random schedule; write
    /// the fault table; fail when a row under the recommended sync policy is not clean.
    Faults {
        /// The random schedule's seed.
        #[arg(long, env = "SEED", default_value_t = 1)]
        seed: u64,
        /// How long the random schedule runs: `90s`, `30m`, `1h`.
        #[arg(long, env = "DURATION", default_value = "5m")]
        duration: String,
        /// The short form CI runs: three faults alone and a two-minute schedule.
        #[arg(long)]
        short: bool,
        /// Where the table is written.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Run only these faults alone (repeatable; e.g. `partition`, `kill-reconciler`,
        /// `power-loss`), no schedule.
        #[arg(long = "fault")]
        only: Vec<String>,
        /// With `--fault`: run the chosen faults under nats-server's default sync (an
        /// fsync every two minutes) instead of `sync_interval: always`.
        #[arg(long, requires = "only")]
        default_sync: bool,
        /// Run without the providers' status-query API, so lost webhooks are never
        /// recovered: a run that must fail, to show the checker counts.
        #[arg(long)]
        without_status_queries: bool,
    },
    /// Measure acknowledged publishes per second at R1 and R3, default sync and
    /// `sync_interval: always`; write the figures.
    Throughput {
        /// Messages per measurement.
        #[arg(long, default_value_t = 20000)]
        messages: usize,
        /// Where the figures are written.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// `90s`, `30m`, `2h` or a bare number of seconds.
fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = number.parse().with_context(|| format!("not a duration: {text:?}"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        other => anyhow::bail!("unknown unit {other:?} in {text:?} (s, m or h)"),
    };
    Ok(Duration::from_secs(secs))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("paytrack_chaos=info")),
        )
        .init();
    match Cli::parse().command {
        Command::Faults {
            seed,
            duration,
            short,
            out,
            without_status_queries,
            default_sync,
            only,
        } => {
            let status_queries = !without_status_queries;
            let only: Vec<Fault> = only
                .iter()
                .map(|name| Fault::named(name).with_context(|| format!("unknown fault {name:?}")))
                .collect::<anyhow::Result<_>>()?;
            let duration = parse_duration(&duration)?;
            let suites = if !only.is_empty() {
                vec![Suite {
                    sync: if default_sync {
                        SyncPolicy::Default
                    } else {
                        SyncPolicy::Always
                    },
                    faults: only,
                    seed,
                    schedule: Duration::ZERO,
                    status_queries,
                }]
            } else if short {
                vec![Suite {
                    sync: SyncPolicy::Always,
                    faults: vec![
                        Fault::KillReplica(Kind::Reconciler, 1),
                        Fault::KillReplica(Kind::Edge, 1),
                        Fault::KillStreamLeader,
                    ],
                    seed,
                    schedule: Duration::from_secs(120),
                    status_queries,
                }]
            } else {
                vec![
                    Suite {
                        sync: SyncPolicy::Always,
                        faults: [Fault::each_alone(), vec![Fault::PowerLoss]].concat(),
                        seed,
                        schedule: duration,
                        status_queries,
                    },
                    Suite {
                        sync: SyncPolicy::Default,
                        faults: vec![Fault::PowerLoss],
                        seed,
                        schedule: Duration::ZERO,
                        status_queries,
                    },
                ]
            };
            let mut outcomes = Vec::new();
            for suite in &suites {
                outcomes.push(run::run(suite).await?);
            }
            let command = if short {
                format!("paytrack-chaos faults --short --seed {seed}")
            } else {
                format!("make chaos SEED={seed} DURATION={}s", duration.as_secs())
            };
            let command = if without_status_queries {
                format!("{command} --without-status-queries")
            } else {
                command
            };
            let table = report::fault_table(&outcomes, &command);
            println!("{table}");
            if let Some(out) = out {
                std::fs::write(&out, &table).with_context(|| format!("write {}", out.display()))?;
            }
            let failed: Vec<&str> = outcomes
                .iter()
                .flat_map(|o| &o.rows)
                .filter(|r| {
                    r.sync == SyncPolicy::Always
                        && (!r.counts.clean() || r.recovery.is_none() && r.fault != "no fault (baseline)")
                })
                .map(|r| r.fault.as_str())
                .collect();
            anyhow::ensure!(
                failed.is_empty(),
                "rows not clean under the recommended policy: {failed:?}"
            );
            Ok(())
        }
        Command::Throughput { messages, out } => {
            let measured = throughput::measure(messages).await?;
            let mut table = String::from(
                "| sync policy | stream replicas | acknowledged publishes/s (512 B, 64 in flight) | messages |\n|---|---|---|---|\n",
            );
            for m in &measured {
                table.push_str(&format!(
                    "| {} | R{} | {:.0} | {} |\n",
                    m.sync.label(),
                    m.replicas,
                    m.per_second,
                    m.messages
                ));
            }
            println!("{table}");
            if let Some(out) = out {
                let text = format!(
                    "# Durability: measured cost\n\nProduced by `make chaos` (`paytrack-chaos throughput --messages {messages}`) on {} \
                     (machine time), on the three-node loopback cluster of the chaos harness (nats-server 2.15.1, \
                     file storage, every node on this machine's one disk). docs/durability.md reads these figures.\n\n{table}",
                    chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
                );
                std::fs::write(&out, text).with_context(|| format!("write {}", out.display()))?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_make_chaos_passes_them() {
        assert_eq!(parse_duration("90s").ok(), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m").ok(), Some(Duration::from_secs(1800)));
        assert_eq!(parse_duration("2h").ok(), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("45").ok(), Some(Duration::from_secs(45)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5d").is_err());
    }
}
