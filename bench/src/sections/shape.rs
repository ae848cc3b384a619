//! Section 8: The production shape: the ingest and end-to-end figures of sections 1
//! and 2 measured again with every service in its own process (two replicas each,
//! two edges, ingest behind a balancer), a three-node JetStream cluster with every
//! stream and bucket at R3 and `sync_interval: always` (the durability
//! recommendation), and durable PostgreSQL: set beside the one-process figures, they
//! show what replication costs. The cluster and the processes are started by
//! `paytrack-chaos`'s launcher, as its fault runs start them.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use async_nats::jetstream;
use futures::StreamExt;
use paytrack_chaos::cluster::SyncPolicy;
use paytrack_chaos::services::Kind;
use paytrack_chaos::shape::{self, Shape, ShapeOptions};
use paytrack_nats::Role;

use crate::client::{Fleet, Target};
use crate::ctx::Ctx;
use crate::plan::Plan;
use crate::report::{Report, num};
use crate::stats::{self, histogram, progress};

/// The section's title in the table.
pub const SECTION: &str = crate::report::SECTIONS[7];

/// The webhook provider every posted webhook comes from.
const PROVIDER: &str = "stdwebhooks";

/// The stream the ingest ceiling publishes into: PAYTRACK_IN's configuration (R3,
/// file storage, duplicate window) on subjects of its own.
const CEILING_STREAM: &str = "BENCH_SHAPE_IN";

/// The system load average (1, 5, 15 minutes) as `/proc/loadavg` has it now: every
/// figure of this section carries the one taken when it was measured, since other
/// work on the machine weighs on a replicated cluster more than on one process.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// One ingest size measured on the shape.
#[derive(Debug, Clone)]
pub struct IngestFigures {
    /// Webhooks posted.
    pub size: usize,
    /// Accepted webhooks per second with the consumers paused.
    pub rate: f64,
    /// Raw JetStream publishes acknowledged per second into the R3 ceiling stream.
    pub ceiling: f64,
    /// Latency p50 / p99 of ingest and of the ceiling, ms.
    pub p50: (f64, f64),
    /// Latency p99 of ingest and of the ceiling, ms.
    pub p99: (f64, f64),
    /// Accepted webhooks per second while every consumer runs, sustained.
    pub live_rate: f64,
    /// How long the live rate was sustained.
    pub live_secs: u64,
    /// The load average when the size was measured.
    pub load: String,
}

/// One offered end-to-end load measured on the shape.
#[derive(Debug, Clone)]
pub struct LoadFigures {
    /// Sessions subscribed (spread over both edges).
    pub sessions: usize,
    /// Transitions offered per second.
    pub load: u32,
    /// Seconds the load was sustained.
    pub secs: u64,
    /// Latency p50 / p99 / p999, ms.
    pub latency: (f64, f64, f64),
    /// Events not received within 30 s of the last webhook.
    pub missing: usize,
    /// Webhooks refused or failed.
    pub refused: usize,
    /// Where the cores went ("other" holds the service processes).
    pub cpu: String,
    /// The load average when the load ended.
    pub load_average: String,
}

/// The correctness counts of the shape's own run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Correctness {
    /// Events whose `prev_seq` was not the last one seen, every shape session.
    pub gaps: u64,
    /// Events seen twice.
    pub duplicates: u64,
    /// Journal entries whose legs do not sum to 0.
    pub unbalanced: u64,
    /// Payments acknowledged 2xx but not in the projection.
    pub lost_acks: u64,
    /// Payments acknowledged 2xx.
    pub acked: usize,
}

impl Correctness {
    /// The checks that are not 0.
    pub fn broken(&self) -> Vec<&'static str> {
        self.rows()
            .into_iter()
            .filter(|(_, count, _)| *count != 0)
            .map(|(name, _, _)| name)
            .collect()
    }

    fn rows(&self) -> [(&'static str, u64, &'static str); 4] {
        [
            ("gaps", self.gaps, "every shape session's events"),
            ("duplicates", self.duplicates, "every shape session's events"),
            (
                "unbalanced ledger entries",
                self.unbalanced,
                "journal entries whose legs do not sum to 0",
            ),
            (
                "lost acks",
                self.lost_acks,
                "payments acknowledged 2xx but not in the projection",
            ),
        ]
    }
}

/// Everything the section measured.
#[derive(Debug, Clone, Default)]
pub struct ShapeFigures {
    /// Per ingest size.
    pub ingest: Vec<IngestFigures>,
    /// Per (sessions, load).
    pub loads: Vec<LoadFigures>,
    /// The run's correctness counts.
    pub correctness: Correctness,
}

/// How the shape is described in every row's size column.
const SHAPE: &str = "3 nodes R3 sync always, 2 replicas each";

/// Adds the section's rows to `report`: ingest against its same-run ceiling on the
/// same cluster, end-to-end latency per load, each with the load average beside it,
/// and the correctness counts.
pub fn tabulate(figures: &ShapeFigures, report: &mut Report) {
    for f in &figures.ingest {
        let size = format!("{SHAPE}: {} webhooks", f.size);
        let ceiling = format!(
            "raw JetStream publish+ack, R3 stream, same cluster; load avg {}",
            f.load
        );
        report.measured(SECTION, &size, "accepted webhooks/s", f.rate, f.ceiling, &ceiling, "/s");
        report.measured(SECTION, &size, "latency p50", f.p50.0, f.p50.1, &ceiling, "ms");
        report.measured(SECTION, &size, "latency p99", f.p99.0, f.p99.1, &ceiling, "ms");
        report.plain(
            SECTION,
            &size,
            &format!(
                "accepted webhooks/s while the services consume them (sustained {} s)",
                f.live_secs
            ),
            format!("{} /s", num(f.live_rate)),
            &format!("one-process figure: section 1; load avg {}", f.load),
        );
    }
    for f in &figures.loads {
        let size = format!("{SHAPE}: {} sessions, {}/s for {} s", f.sessions, f.load, f.secs);
        let (p50, p99, p999) = f.latency;
        report.plain(
            SECTION,
            &size,
            "end to end latency p50 / p99 / p999",
            format!("{} / {} / {} ms", num(p50), num(p99), num(p999)),
            &format!("one-process figure: section 2; load avg {}", f.load_average),
        );
        report.plain(
            SECTION,
            &size,
            "CPU cores used (\"other\" = the service processes)",
            f.cpu.clone(),
            "the machine's cores: where they went",
        );
        report.failures(
            SECTION,
            &size,
            "webhooks not accepted (error or non-2xx)",
            f.refused,
            "0",
        );
        report.failures(SECTION, &size, "events not received within 30 s", f.missing, "0");
    }
    let c = figures.correctness;
    for (name, count, what) in c.rows() {
        report.plain(
            SECTION,
            format!("{SHAPE}: {} acknowledged payments", c.acked),
            &format!("correctness: {name}"),
            count.to_string(),
            what,
        );
    }
}

/// Starts the shape, measures it, adds its rows; fails when a correctness count is
/// not 0 (after adding the rows, so the table shows which).
pub async fn run(plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
    progress("production shape: starting 3 nats nodes (R3, sync always), PostgreSQL and the services");
    let shape = Shape::start(ShapeOptions {
        sync: SyncPolicy::Always,
        stream_replicas: 3,
        status_queries: false,
        window_divisor: 1,
    })
    .await
    .context("start the production shape")?;
    let target = ShapeTarget::new(&shape).await?;
    let mut figures = ShapeFigures::default();
    let measured = measure(plan, &shape, &target, &mut figures).await;
    figures.correctness = target.correctness().await?;
    tabulate(&figures, report);
    measured?;
    let broken = figures.correctness.broken();
    anyhow::ensure!(
        broken.is_empty(),
        "production shape: correctness checks not 0: {broken:?}"
    );
    progress(&format!("production shape: done (logs in {})", shape.logs.display()));
    Ok(())
}

async fn measure(plan: &Plan, shape: &Shape, target: &ShapeTarget, figures: &mut ShapeFigures) -> anyhow::Result<()> {
    ingest(plan, shape, target, figures).await?;
    end_to_end(plan, shape, target, figures).await
}

/// What the section talks to: ingest through the balancer, the cluster as admin,
/// the database; and the payments ingest acknowledged.
struct ShapeTarget {
    poster: Arc<ShapePoster>,
    js: jetstream::Context,
    db: sqlx::PgPool,
    acked: Mutex<HashSet<String>>,
    /// Gaps and duplicates of every fleet that has ended.
    continuity: Mutex<(u64, u64)>,
}

impl ShapeTarget {
    async fn new(shape: &Shape) -> anyhow::Result<ShapeTarget> {
        let admin = shape.cluster.connect_as(Role::Admin).await?;
        Ok(ShapeTarget {
            poster: Arc::new(ShapePoster {
                http: reqwest::Client::builder()
                    .pool_max_idle_per_host(256)
                    .timeout(Duration::from_secs(30))
                    .build()?,
                webhook_url: format!("{}/v1/webhooks/{}/{PROVIDER}", shape.ingest_url(), shape::TENANT),
                secret: shape::webhook_secret(PROVIDER),
            }),
            js: jetstream::new(admin),
            db: sqlx::postgres::PgPoolOptions::new()
                .max_connections(4)
                .connect(&shape.postgres.url())
                .await
                .context("connect to the shape's PostgreSQL")?,
            acked: Mutex::default(),
            continuity: Mutex::default(),
        })
    }

    /// Signs and posts `body`; Ok once ingest answered 2xx (the payment is then
    /// remembered as acknowledged).
    async fn post(&self, payment: &str, body: &str) -> anyhow::Result<()> {
        self.poster.post(body).await?;
        self.acked(payment);
        Ok(())
    }

    /// Remembers that ingest acknowledged a webhook of `payment`.
    fn acked(&self, payment: &str) {
        if let Ok(mut acked) = self.acked.lock() {
            acked.insert(payment.to_owned());
        }
    }

    /// Posts every (payment, body) with `concurrency` in flight: rate and latencies.
    async fn post_all(
        &self,
        items: &[(String, String)],
        concurrency: usize,
    ) -> anyhow::Result<(f64, hdrhistogram::Histogram<u64>)> {
        let started = Instant::now();
        let mut latencies = histogram();
        let mut results = futures::stream::iter(items.iter().map(|(payment, body)| async move {
            let t = Instant::now();
            self.post(payment, body).await?;
            Ok::<_, anyhow::Error>(t.elapsed())
        }))
        .buffer_unordered(concurrency);
        while let Some(r) = results.next().await {
            stats::record(&mut latencies, r?);
        }
        Ok((items.len() as f64 / started.elapsed().as_secs_f64(), latencies))
    }

    /// Publishes every body into the ceiling stream with `Nats-Msg-Id`, each ack
    /// awaited, `concurrency` in flight: rate and latencies.
    async fn publish_all(
        &self,
        round: usize,
        items: &[(String, String)],
        concurrency: usize,
    ) -> anyhow::Result<(f64, hdrhistogram::Histogram<u64>)> {
        let started = Instant::now();
        let mut raw = histogram();
        let js = &self.js;
        let mut results = futures::stream::iter(items.iter().enumerate().map(|(i, (_, body))| async move {
            let t = Instant::now();
            let message = jetstream::message::PublishMessage::build()
                .message_id(format!("raw-{round}-{i}-{}", uuid::Uuid::new_v4().simple()))
                .payload(body.clone().into());
            js.send_publish(format!("bench.shape.in.{round}.{i}"), message)
                .await?
                .await?;
            Ok::<_, anyhow::Error>(t.elapsed())
        }))
        .buffer_unordered(concurrency);
        while let Some(r) = results.next().await {
            stats::record(&mut raw, r?);
        }
        Ok((items.len() as f64 / started.elapsed().as_secs_f64(), raw))
    }

    /// Waits until every durable consumer of the main streams has nothing pending.
    async fn drain(&self) -> anyhow::Result<()> {
        let streams = [
            paytrack_shared::subjects::STREAM_IN,
            paytrack_shared::subjects::STREAM_STATUS,
            paytrack_shared::subjects::STREAM_OUTCOME,
            paytrack_shared::subjects::STREAM_SESSION,
        ];
        paytrack_tests::eventually(Duration::from_secs(300), "the shape to drain", || {
            crate::ctx::consumers_idle(&self.js, streams)
        })
        .await
    }

    /// Counts the run's correctness checks on the shape's own database.
    async fn correctness(&self) -> anyhow::Result<Correctness> {
        // The last acknowledged payments may still be on their way to the projection.
        let (lost, acked) =
            crate::ctx::lost_acks(&self.db, shape::TENANT, &self.acked, Duration::from_secs(180)).await?;
        let unbalanced = crate::ctx::unbalanced_entries(&self.db).await?;
        let (gaps, duplicates) = self.continuity.lock().map(|c| *c).unwrap_or_default();
        Ok(Correctness {
            gaps,
            duplicates,
            unbalanced: u64::try_from(unbalanced).unwrap_or(u64::MAX),
            lost_acks: lost as u64,
            acked,
        })
    }
}

/// Sends `signal` to every replica of `kinds` (`STOP` pauses, `CONT` resumes).
fn signal_all(shape: &Shape, kinds: &[Kind], signal: &str) -> anyhow::Result<()> {
    for replica in shape.replicas.iter().filter(|r| kinds.contains(&r.kind)) {
        replica.signal(signal)?;
    }
    Ok(())
}

/// Ingest alone (reconcilers and projectors paused, as section 1 stops them) against
/// the raw R3 ceiling, then ingest sustained while every consumer runs.
async fn ingest(plan: &Plan, shape: &Shape, target: &ShapeTarget, figures: &mut ShapeFigures) -> anyhow::Result<()> {
    let mut config = target
        .js
        .get_stream(paytrack_shared::subjects::STREAM_IN)
        .await?
        .info()
        .await?
        .config
        .clone();
    config.name = CEILING_STREAM.into();
    config.subjects = vec!["bench.shape.in.>".into()];
    target.js.get_or_create_stream(config).await?;
    let concurrency = plan.ingest_concurrency;
    let consumers = [Kind::Reconciler, Kind::Projector];
    for (round, &size) in plan.ingest_sizes.iter().enumerate() {
        let items = |tag: &str| -> Vec<(String, String)> {
            (0..size)
                .map(|i| {
                    let payment = format!("s{round}{tag}x{i}");
                    let body = Ctx::body(&payment, "pending", &format!("sm{}", i % 50));
                    (payment, body)
                })
                .collect()
        };
        progress(&format!(
            "production shape: ingest {size} webhooks, {concurrency} in flight (consumers paused)"
        ));
        signal_all(shape, &consumers, "STOP")?;
        let alone = async {
            let (rate, latencies) = target.post_all(&items("a"), concurrency).await?;
            progress(&format!("production shape: ceiling, {size} R3 publishes with ack"));
            let (ceiling, raw) = target.publish_all(round, &items("a"), concurrency).await?;
            Ok::<_, anyhow::Error>((rate, latencies, ceiling, raw))
        }
        .await;
        signal_all(shape, &consumers, "CONT")?;
        let (rate, latencies, ceiling, raw) = alone?;
        let load = load_average();
        target.drain().await?;
        progress(&format!(
            "production shape: ingest for {} s while the services consume",
            plan.e2e_step.as_secs()
        ));
        let live = items("l");
        let started = Instant::now();
        let mut posted = 0usize;
        for again in 0.. {
            let renamed: Vec<(String, String)> = live
                .iter()
                .map(|(p, b)| (format!("r{again}{p}"), b.replace(p.as_str(), &format!("r{again}{p}"))))
                .collect();
            target.post_all(&renamed, concurrency).await?;
            posted += renamed.len();
            if started.elapsed() >= plan.e2e_step || live.is_empty() {
                break;
            }
        }
        let live_rate = posted as f64 / started.elapsed().as_secs_f64();
        figures.ingest.push(IngestFigures {
            size,
            rate,
            ceiling,
            p50: (stats::ms(&latencies, 0.5), stats::ms(&raw, 0.5)),
            p99: (stats::ms(&latencies, 0.99), stats::ms(&raw, 0.99)),
            live_rate,
            live_secs: started.elapsed().as_secs(),
            load,
        });
        target.drain().await?;
    }
    let _ = target.js.delete_stream(CEILING_STREAM).await;
    Ok(())
}

/// The shape's end-to-end latency: sessions spread over both edges, one
/// `merchant:` channel each, every offered load sustained as in section 2.
async fn end_to_end(
    plan: &Plan,
    shape: &Shape,
    target: &ShapeTarget,
    figures: &mut ShapeFigures,
) -> anyhow::Result<()> {
    let token = shape.operator_token();
    let edges: Vec<std::net::SocketAddr> = shape
        .replicas
        .iter()
        .filter(|r| r.kind == Kind::Edge)
        .map(|r| r.addr)
        .collect();
    for &sessions in &plan.shape_sessions {
        progress(&format!(
            "production shape: connecting {sessions} sessions over {} edges",
            edges.len()
        ));
        let mut fleets = Vec::new();
        for (e, addr) in edges.iter().enumerate() {
            let mut fleet = Fleet::new(
                Target {
                    addr: *addr,
                    token: Some(token.clone()),
                    nats: false,
                },
                plan.connect_concurrency,
            )
            .with_source_base(1 + 10 * e as u8);
            fleet.add(
                (0..sessions)
                    .filter(|i| i % edges.len() == e)
                    .map(|i| format!("merchant:s{sessions}m{i}")),
            );
            fleets.push(fleet);
        }
        for fleet in &fleets {
            fleet.wait_subscribed(Duration::from_secs(300)).await?;
        }
        target.drain().await?;
        let mut outcome = Ok(());
        for &load in &plan.e2e_loads {
            progress(&format!("production shape: {load}/s offered to {sessions} sessions"));
            match offer(plan, target, &fleets, sessions, load).await {
                Ok(f) => figures.loads.push(f),
                Err(error) => {
                    outcome = Err(error);
                    break;
                }
            }
            target.drain().await?;
        }
        if let Ok(mut c) = target.continuity.lock() {
            c.0 += fleets.iter().map(|f| f.sum(|s| s.gaps)).sum::<u64>();
            c.1 += fleets.iter().map(|f| f.sum(|s| s.duplicates)).sum::<u64>();
        }
        outcome?;
    }
    Ok(())
}

/// Offers `load` transitions/s for the plan's step, open loop, each a new payment of
/// one session's merchant; latency runs from just before the webhook is sent to the
/// `event` frame.
async fn offer(
    plan: &Plan,
    target: &ShapeTarget,
    fleets: &[Fleet],
    sessions: usize,
    load: u32,
) -> anyhow::Result<LoadFigures> {
    for fleet in fleets {
        fleet.recorder.take();
    }
    let cpu_before = crate::cpu::CpuSample::now(None);
    let total = (f64::from(load) * plan.e2e_step.as_secs_f64()).ceil() as usize;
    let sent: Mutex<HashMap<String, SystemTime>> = Mutex::default();
    let errors = std::sync::atomic::AtomicUsize::new(0);
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(load)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let (sent, errors) = (Arc::new(sent), Arc::new(errors));
    let mut tasks = Vec::with_capacity(total);
    for k in 0..total {
        ticker.tick().await;
        let payment = format!("s{sessions}l{load}x{k}");
        let merchant = format!("s{sessions}m{}", (k * 7919) % sessions);
        let (poster, sent, errors) = (target.poster.clone(), sent.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            if let Ok(mut s) = sent.lock() {
                s.insert(format!("{payment}:pending"), SystemTime::now());
            }
            let body = Ctx::body(&payment, "pending", &merchant);
            match poster.post(&body).await {
                Ok(()) => Some(payment),
                Err(_) => {
                    errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    None
                }
            }
        }));
    }
    for t in tasks {
        if let Ok(Some(payment)) = t.await {
            target.acked(&payment);
        }
    }
    let received = || {
        fleets
            .iter()
            .map(|f| f.recorder.received.load(std::sync::atomic::Ordering::Relaxed) as usize)
            .sum::<usize>()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while received() < total && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu = cpu_before.cores_until(&crate::cpu::CpuSample::now(None));
    let load_average = load_average();
    let sent = sent.lock().map(|s| s.clone()).unwrap_or_default();
    let mut h = histogram();
    let mut seen = 0;
    for fleet in fleets {
        for (key, at) in fleet.recorder.take() {
            if let Some(t0) = sent.get(&key) {
                stats::record(&mut h, stats::between(*t0, at));
                seen += 1;
            }
        }
    }
    Ok(LoadFigures {
        sessions,
        load,
        secs: plan.e2e_step.as_secs(),
        latency: (stats::ms(&h, 0.5), stats::ms(&h, 0.99), stats::ms(&h, 0.999)),
        missing: total.saturating_sub(seen),
        refused: errors.load(std::sync::atomic::Ordering::Relaxed),
        cpu: crate::cpu::describe(&cpu),
        load_average,
    })
}

/// What an offered load's tasks need to sign and post one webhook (owned, so each
/// task can hold it).
struct ShapePoster {
    http: reqwest::Client,
    webhook_url: String,
    secret: String,
}

impl ShapePoster {
    /// Signs `body` as the provider would and posts it; Ok on a 2xx.
    async fn post(&self, body: &str) -> anyhow::Result<()> {
        let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
        let headers = paytrack_tests::hostile::sign(PROVIDER, &self.secret, &id, body)?;
        let mut request = self
            .http
            .post(&self.webhook_url)
            .header("content-type", "application/json")
            .body(body.to_owned());
        for (k, v) in &headers {
            request = request.header(k, v);
        }
        let status = request.send().await?.status();
        anyhow::ensure!(status.is_success(), "webhook answered {status}");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(correctness: Correctness) -> ShapeFigures {
        ShapeFigures {
            ingest: vec![IngestFigures {
                size: 2000,
                rate: 500.0,
                ceiling: 2000.0,
                p50: (10.0, 2.0),
                p99: (40.0, 8.0),
                live_rate: 400.0,
                live_secs: 60,
                load: "3.10 2.50 2.00".into(),
            }],
            loads: vec![LoadFigures {
                sessions: 2000,
                load: 300,
                secs: 60,
                latency: (4.0, 12.0, 30.0),
                missing: 0,
                refused: 0,
                cpu: "other 1.00 (total 1.00)".into(),
                load_average: "4.00 3.00 2.00".into(),
            }],
            correctness,
        }
    }

    fn row<'a>(report: &'a Report, figure: &str) -> &'a crate::report::Row {
        report
            .rows
            .iter()
            .find(|r| r.figure == figure)
            .unwrap_or_else(|| panic!("no row {figure:?}: {:#?}", report.rows))
    }

    /// Ingest is set against the same-run R3 ceiling (a ratio), every figure carries
    /// its load average, and each end-to-end load says how long it was held.
    #[test]
    fn rows_set_ingest_against_its_ceiling_with_the_load_average() {
        let mut report = Report::default();
        tabulate(&figures(Correctness::default()), &mut report);
        assert!(report.rows.iter().all(|r| r.section == SECTION));
        let accepted = row(&report, "accepted webhooks/s");
        assert_eq!(accepted.ratio, "0.25");
        assert!(accepted.ceiling.contains("R3") && accepted.ceiling.contains("load avg 3.10 2.50 2.00"));
        assert!(accepted.size.contains("2000 webhooks"));
        let latency = row(&report, "end to end latency p50 / p99 / p999");
        assert_eq!(latency.value, "4.00 / 12.0 / 30.0 ms");
        assert!(latency.size.contains("300/s for 60 s"), "{}", latency.size);
        assert!(latency.ceiling.contains("load avg 4.00 3.00 2.00"));
        for check in ["gaps", "duplicates", "unbalanced ledger entries", "lost acks"] {
            assert_eq!(row(&report, &format!("correctness: {check}")).value, "0");
        }
    }

    /// A correctness count that is not 0 is named, so the section fails.
    #[test]
    fn a_lost_ack_or_a_gap_breaks_the_run() {
        let counts = Correctness {
            gaps: 1,
            lost_acks: 2,
            acked: 10,
            ..Correctness::default()
        };
        assert_eq!(counts.broken(), vec!["gaps", "lost acks"]);
        assert!(Correctness::default().broken().is_empty());
        let mut report = Report::default();
        tabulate(&figures(counts), &mut report);
        assert_eq!(row(&report, "correctness: lost acks").value, "2");
    }
}
