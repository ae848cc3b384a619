//! One suite: the shape started with a sync policy, the load and the clients running
//! throughout, then one phase per fault (injected, healed, recovery timed), then the
//! run settles and the checker counts every phase.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use paytrack_nats::Role;
use rand::{Rng, SeedableRng};
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

use crate::checker::{self, Counts, Sources};
use crate::clients::{self, Timeline, Transport};
use crate::cluster::{DEFAULT_SYNC_INTERVAL, SyncPolicy};
use crate::faults::Fault;
use crate::load::{self, LoadLog};
use crate::shape::{Shape, ShapeOptions};

/// How long the run may take to converge to the providers' truth after the load stops.
const SETTLE: Duration = Duration::from_secs(240);

/// How long a probe may take to find the whole path working again after a fault.
const RECOVERY: Duration = Duration::from_secs(240);

/// Commands per second.
pub const LOAD_PER_SECOND: f64 = 4.0;

/// What a suite runs.
#[derive(Debug, Clone)]
pub struct Suite {
    /// The nodes' sync policy.
    pub sync: SyncPolicy,
    /// The faults run each alone, in order.
    pub faults: Vec<Fault>,
    /// The seed of the random schedule.
    pub seed: u64,
    /// How long the random schedule runs after them (zero: none).
    pub schedule: Duration,
    /// Whether the sweep may ask the providers (see [`ShapeOptions::status_queries`]).
    pub status_queries: bool,
}

/// One row of the fault table.
#[derive(Debug, Clone)]
pub struct Row {
    /// The fault.
    pub fault: String,
    /// The seed that reproduces it.
    pub seed: u64,
    /// The nodes' sync policy.
    pub sync: SyncPolicy,
    /// Whether every command of the phase was answered 2xx in the end.
    pub load_held: bool,
    /// What the checker counted.
    pub counts: Counts,
    /// From the heal to a probe payment answered by its provider again.
    pub recovery: Option<Duration>,
    /// What was hit, and anything else worth saying.
    pub note: String,
}

struct Phase {
    label: String,
    started: Instant,
    recovery: Option<Duration>,
    note: String,
}

/// How long each fault of the random schedule occupies: a fault that heals
/// sooner waits out its slot, so a 30-minute schedule runs 30 minutes.
pub const SCHEDULE_SLOT: Duration = Duration::from_secs(30);

/// The quiet time after a fault before the next one: at least 10 s, and for
/// a scheduled fault the rest of its slot.
fn settle_after(took: Duration, scheduled: bool) -> Duration {
    let quiet = Duration::from_secs(10);
    if scheduled {
        SCHEDULE_SLOT.saturating_sub(took).max(quiet)
    } else {
        quiet
    }
}

/// Faults drawn from the pool with `seed` until `duration` has passed.
pub fn schedule(seed: u64, count: usize) -> Vec<Fault> {
    let pool = Fault::pool();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..count).map(|_| pool[rng.random_range(0..pool.len())]).collect()
}

/// What a suite produced: its rows (the first is the baseline phase without a
/// fault) and a line on what the load and the clients did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// One row per phase.
    pub rows: Vec<Row>,
    /// Commands, clients' frames, reconnects and announced resumes.
    pub summary: String,
}

/// Runs `suite` on a fresh shape.
pub async fn run(suite: &Suite) -> anyhow::Result<Outcome> {
    let mut shape = Shape::start(ShapeOptions {
        sync: suite.sync,
        stream_replicas: 3,
        status_queries: suite.status_queries,
        window_divisor: crate::shape::WINDOW_DIVISOR,
    })
    .await?;
    shape.cluster.mark_synced();
    let mut last_sync = Instant::now();
    let token = shape.operator_token();
    let simulator_token = shape.simulator_token.expose_secret().to_owned();
    load::configure_providers(&shape.simulator_url(), &simulator_token).await?;
    tracing::info!(logs = %shape.logs.display(), "the shape is up");

    let stop_load = CancellationToken::new();
    let stop_clients = CancellationToken::new();
    let phase = Arc::new(AtomicUsize::new(0));
    let log = Arc::new(Mutex::new(LoadLog::default()));
    let load_task = tokio::spawn(load::run(
        shape.ingest_url(),
        token.clone(),
        LOAD_PER_SECOND,
        phase.clone(),
        log.clone(),
        stop_load.clone(),
    ));
    let mut timelines = Vec::new();
    let mut client_tasks = Vec::new();
    for (n, transport) in [Transport::WebSocket, Transport::WebSocket, Transport::Sse]
        .into_iter()
        .enumerate()
    {
        let timeline = Arc::new(Mutex::new(Timeline::default()));
        let mut edges = shape.edge_urls();
        let turn = n % edges.len();
        edges.rotate_left(turn);
        client_tasks.push(tokio::spawn(clients::follow(
            transport,
            edges,
            token.clone(),
            timeline.clone(),
            stop_clients.clone(),
        )));
        timelines.push(timeline);
    }

    let mut phases = vec![Phase {
        label: "no fault (baseline)".to_owned(),
        started: Instant::now(),
        recovery: None,
        note: String::new(),
    }];
    tokio::time::sleep(Duration::from_secs(15)).await;
    let mut faults: Vec<(String, Fault)> = suite.faults.iter().map(|f| (f.label(), *f)).collect();
    if !suite.schedule.is_zero() {
        // One fault per 30 s slot, so the schedule lasts its whole time.
        let count = (suite.schedule.as_secs() / SCHEDULE_SLOT.as_secs()).max(1) as usize;
        for (n, fault) in schedule(suite.seed, count).into_iter().enumerate() {
            faults.push((format!("schedule #{}: {}", n + 1, fault.label()), fault));
        }
    }
    let mut schedule_started: Option<Instant> = None;
    for (label, fault) in faults {
        if label.starts_with("schedule") {
            let started = *schedule_started.get_or_insert_with(Instant::now);
            if started.elapsed() >= suite.schedule {
                break;
            }
        }
        if suite.sync == SyncPolicy::Default && last_sync.elapsed() >= DEFAULT_SYNC_INTERVAL {
            shape.cluster.mark_synced();
            last_sync = Instant::now();
        }
        phase.store(phases.len(), Ordering::Relaxed);
        tracing::info!(fault = %label, "injecting");
        let started = Instant::now();
        let is_scheduled = label.starts_with("schedule");
        let note = match fault.run(&mut shape).await {
            Ok(note) => note,
            Err(error) => format!("fault step failed: {error:#}"),
        };
        let recovery = load::probe(&shape.ingest_url(), &token, RECOVERY).await;
        tracing::info!(fault = %label, ?recovery, "healed");
        phases.push(Phase {
            label,
            started,
            recovery,
            note,
        });
        tokio::time::sleep(settle_after(started.elapsed(), is_scheduled)).await;
    }

    stop_load.cancel();
    let _ = load_task.await;
    let log = std::mem::take(&mut *log.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    let admin = shape.cluster.connect_as(Role::Admin).await?;
    let js = async_nats::jetstream::new(admin);
    let db = sqlx::PgPool::connect(&shape.postgres.url()).await?;
    let ingest_url = shape.ingest_url();
    let simulator_url = shape.simulator_url();
    let sources = Sources {
        js: &js,
        ingest_url: &ingest_url,
        token: &token,
        simulator_url: &simulator_url,
        simulator_token: &simulator_token,
        db: &db,
    };
    let settle_started = Instant::now();
    while settle_started.elapsed() < SETTLE {
        match checker::converged(&sources, &log.acked).await {
            Ok(0) => break,
            Ok(n) => tracing::info!(diverged = n, "waiting for the providers' truth"),
            Err(error) => tracing::info!(%error, "waiting for the providers' truth"),
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    // The clients get the last transitions before they stop.
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop_clients.cancel();
    for task in client_tasks {
        let _ = task.await;
    }
    let timelines: Vec<Timeline> = timelines
        .iter()
        .map(|t| std::mem::take(&mut *t.lock().unwrap_or_else(std::sync::PoisonError::into_inner)))
        .collect();
    let starts: Vec<Instant> = phases.iter().map(|p| p.started).collect();
    let phase_of_time = |at: Instant| starts.iter().rposition(|s| *s <= at).unwrap_or(0);
    let counted = match checker::count(&sources, &log.acked, &timelines, phase_of_time).await {
        Ok(counted) => counted,
        Err(error) => {
            // A history that cannot be read at all is the worst loss: every
            // acknowledged command of every phase counts as lost.
            tracing::error!(error = %format!("{error:#}"), "the checker could not read the history");
            let mut counted = std::collections::BTreeMap::new();
            for command in &log.acked {
                let row: &mut Counts = counted.entry(command.phase).or_default();
                row.acked += 1;
                row.lost += 1;
            }
            counted
        }
    };
    let rows = phases
        .into_iter()
        .enumerate()
        .map(|(i, p)| Row {
            fault: p.label,
            seed: suite.seed,
            sync: suite.sync,
            load_held: !log.abandoned.contains(&i) && log.acked.iter().any(|a| a.phase == i),
            counts: counted.get(&i).cloned().unwrap_or_default(),
            recovery: p.recovery,
            note: [
                p.note,
                counted.get(&i).map(|c| c.examples.join("; ")).unwrap_or_default(),
            ]
            .into_iter()
            .filter(|n| !n.is_empty())
            .collect::<Vec<_>>()
            .join("; "),
        })
        .collect();
    let clients: Vec<String> = timelines
        .iter()
        .zip(["WebSocket", "WebSocket", "SSE"])
        .map(|(t, transport)| {
            format!(
                "{transport}: {} frames, {} reconnects, {} resumes answered `recovered: false`, {} repeated frames",
                t.frames.len(),
                t.reconnects,
                t.told.len(),
                t.repeated
            )
        })
        .collect();
    let summary = format!(
        "{}: {} create commands answered 2xx, {} refused (4xx), {} never answered; clients on `payments`: {}.",
        suite.sync.label(),
        log.acked.len(),
        log.refused,
        log.abandoned.len(),
        clients.join("; ")
    );
    tracing::info!(%summary, "suite done");
    Ok(Outcome { rows, summary })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scheduled_fault_waits_out_its_slot_and_every_fault_gets_quiet_time() {
        assert_eq!(settle_after(Duration::from_secs(4), true), Duration::from_secs(26));
        assert_eq!(settle_after(Duration::from_secs(25), true), Duration::from_secs(10));
        assert_eq!(settle_after(Duration::from_secs(4), false), Duration::from_secs(10));
    }

    #[test]
    fn a_seed_reproduces_its_schedule_and_another_seed_draws_another() {
        let labels = |seed| schedule(seed, 8).into_iter().map(Fault::label).collect::<Vec<_>>();
        assert_eq!(labels(7), labels(7));
        assert_ne!(labels(7), labels(8));
        println!("seed 7: {:?}", labels(7));
    }
}
