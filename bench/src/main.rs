//! `paytrack-bench`: starts the mesh on this machine (nats-server and PostgreSQL
//! started here, temporary data, random ports), measures the six capacity figures
//! against ceilings taken in the same run, and writes `results.md` and PNG plots.
//!
//! `make bench` runs the full size; `--smoke` runs tiny sizes in seconds (the test
//! suite does, so the harness cannot rot). Hidden subcommands run the servers the
//! fan-out section compares in their own processes.

mod bare;
mod client;
mod cpu;
mod ctx;
mod machine;
mod plan;
mod report;
mod sections;
mod servers;
mod stats;

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::plan::Plan;
use crate::report::Report;
use crate::stats::progress;

/// Capacity figures of the paytrack mesh against ceilings measured in the same run.
#[derive(Parser)]
#[command(name = "paytrack-bench")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Tiny sizes (seconds): checks the harness, not the figures.
    #[arg(long)]
    smoke: bool,
    /// Scales every count of the full run (e.g. 0.1 for a tenth of the sessions).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Where results.md and the plots go.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// Also fan-out over several edge processes together (50k and 100k sessions in
    /// the full run; several minutes more).
    #[arg(long)]
    multi_edge: bool,
    /// Only these sections (numbers 1-10, comma separated); all by default (the smoke
    /// run leaves out 8, the production shape, unless named: it needs the service
    /// binaries built next to this one).
    #[arg(long, value_delimiter = ',')]
    only: Vec<u8>,
    /// Seconds each end-to-end load is sustained (60 in the full run). A shorter one
    /// is a lighter variant, and the results label it so.
    #[arg(long)]
    load_secs: Option<u64>,
    /// Only these end-to-end loads (transitions/s, comma separated), e.g. to profile one.
    #[arg(long, value_delimiter = ',')]
    loads: Vec<u32>,
    /// Only these end-to-end session counts (comma separated).
    #[arg(long, value_delimiter = ',')]
    sessions: Vec<usize>,
    /// Only these projector sizes (transitions preloaded, comma separated).
    #[arg(long, value_delimiter = ',')]
    projector_sizes: Vec<usize>,
    /// Only these ingest sizes (webhooks per burst, comma separated), e.g. a burst long
    /// enough to profile.
    #[arg(long, value_delimiter = ',')]
    ingest_sizes: Vec<usize>,
    /// Where paytrack's log files go (default: a temporary directory, removed at the end).
    #[arg(long)]
    log_dir: Option<PathBuf>,
}

/// The production shape's number for `--only`.
const SHAPE_SECTION: u8 = 8;

#[derive(Subcommand)]
enum Command {
    /// A ws-edge from PAYTRACK_* variables (fan-out: its own process and RSS).
    #[command(hide = true)]
    Edge,
    /// The bare axum WebSocket server.
    #[command(hide = true)]
    Bare,
    /// A client process holding sessions on `payments` (multi-edge fan-out).
    #[command(hide = true)]
    Clients {
        /// The edge.
        #[arg(long)]
        addr: std::net::SocketAddr,
        /// Sessions to hold.
        #[arg(long)]
        count: usize,
        /// First 127.0.0.x source address.
        #[arg(long, default_value_t = 1)]
        source_base: u8,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Each process's workers carry its role, so a whole-machine profile
    // (`scripts/bench-profile.sh`) tells the edge's samples from the bench's.
    let role = match &cli.command {
        Some(Command::Edge) => "edge",
        Some(Command::Bare) => "bare",
        Some(Command::Clients { .. }) => "clients",
        None => "bench",
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name(format!("{role}-worker"))
        .enable_all()
        .build()?;
    match cli.command {
        Some(Command::Edge) => runtime.block_on(servers::edge_main()),
        Some(Command::Bare) => runtime.block_on(servers::bare_main()),
        Some(Command::Clients {
            addr,
            count,
            source_base,
        }) => runtime.block_on(sections::multi_edge::clients_main(addr, count, source_base)),
        None => runtime.block_on(run(cli)),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut plan = match (cli.smoke, cli.scale) {
        (true, _) => Plan::smoke(),
        (false, s) if (s - 1.0).abs() < f64::EPSILON => Plan::full(),
        (false, s) => Plan::scaled(s),
    };
    if !cli.loads.is_empty() {
        plan.e2e_loads = cli.loads.clone();
    }
    if !cli.sessions.is_empty() {
        plan.e2e_sessions = cli.sessions.clone();
    }
    if !cli.projector_sizes.is_empty() {
        plan.projector_sizes = cli.projector_sizes.clone();
    }
    if !cli.ingest_sizes.is_empty() {
        plan.ingest_sizes = cli.ingest_sizes.clone();
    }
    if let Some(secs) = cli.load_secs {
        plan.e2e_step = std::time::Duration::from_secs(secs.max(1));
    }
    let log_tmp = tempfile::tempdir()?;
    let log_dir = cli.log_dir.clone().unwrap_or_else(|| log_tmp.path().to_path_buf());
    let smoke = plan.smoke;
    let wanted = |n: u8| cli.only.contains(&n) || (cli.only.is_empty() && !(smoke && n == SHAPE_SECTION));
    std::fs::create_dir_all(&cli.out)?;
    progress(&format!(
        "starting the mesh ({} run)",
        if plan.smoke { "smoke" } else { "full" }
    ));
    let ctx = Arc::new(ctx::Ctx::start(plan, log_dir).await?);
    let mut report = Report::default();
    // A section that fails is reported as such and the run goes on, so one failure
    // does not cost the other figures; the run still exits non-zero at the end.
    let mut failed = Vec::new();
    macro_rules! section {
        ($n:expr, $title:expr, $run:expr) => {
            if wanted($n) {
                // With PAYTRACK_PG_STATEMENTS=1, where PostgreSQL spent the section (the
                // projector's section prints its catch-up's own).
                paytrack_tests::pg::reset_statements(&ctx.mesh.db).await;
                let outcome = $run.await;
                if $n != 5 {
                    for line in paytrack_tests::pg::top_statements(&ctx.mesh.db, 15).await {
                        progress(&format!("{}: {line}", $title));
                    }
                }
                if let Err(error) = outcome {
                    progress(&format!("{} failed: {error:#}", $title));
                    report.plain(
                        $title,
                        "-",
                        "section failed",
                        format!("failed: {error:#}").replace('|', "/"),
                        "",
                    );
                    failed.push($title);
                }
                if let Err(error) = ctx.drain().await {
                    progress(&format!("the mesh did not drain after {}: {error:#}", $title));
                }
            }
        };
    }
    section!(1, report::SECTIONS[0], sections::ingest::run(&ctx, &mut report));
    section!(2, report::SECTIONS[1], sections::e2e::run(&ctx, &mut report));
    section!(3, report::SECTIONS[2], sections::fanout::run(&ctx, &mut report));
    if cli.multi_edge {
        section!(3, report::SECTIONS[2], sections::multi_edge::run(&ctx, &mut report));
    }
    section!(4, report::SECTIONS[3], sections::storm::run(&ctx, &mut report));
    section!(
        9,
        sections::long_lives::SECTION,
        sections::long_lives::run(&ctx, &mut report)
    );
    section!(10, sections::idle::SECTION, sections::idle::run(&ctx, &mut report));
    // The projector's bulk load runs last: the sweeps look for the `persisted`
    // checkpoint of each of its pending payments once the trace gap (30 s) has
    // passed, a burst that would weigh on any section after it.
    section!(6, report::SECTIONS[5], sections::polling::run(&ctx, &mut report));
    section!(5, report::SECTIONS[4], sections::projector::run(&ctx, &mut report));
    // The production shape last: its own cluster, database and processes, started
    // once the one-process figures are taken.
    section!(
        SHAPE_SECTION,
        sections::shape::SECTION,
        sections::shape::run(&ctx.plan, &mut report)
    );
    ctx.mesh.check_services()?;
    let broken = correctness(&ctx, &mut report).await?;
    report.notes.extend(notes(&ctx.plan, cli.multi_edge));
    let load_secs = ctx.plan.e2e_step.as_secs();
    let lighter = if !ctx.plan.smoke && load_secs < plan::FULL_LOAD_SECS {
        format!(
            ", LIGHTER VARIANT: loads held {load_secs} s instead of {} s",
            plan::FULL_LOAD_SECS
        )
    } else {
        String::new()
    };
    let mode = match (ctx.plan.smoke, cli.scale) {
        (true, _) => "smoke (tiny sizes: checks the harness, not the figures)".to_owned(),
        (false, s) if (s - 1.0).abs() < f64::EPSILON => format!("full{lighter}"),
        (false, s) => format!("full sizes scaled by {s}{lighter}"),
    };
    let machine = format!(
        "{}{}",
        machine::describe(&mode),
        settings(&ctx, cli.log_dir.is_some()).await?
    );
    report.draw(&cli.out)?;
    let markdown = report.markdown(&machine);
    std::fs::write(cli.out.join("results.md"), &markdown)?;
    println!("{markdown}");
    progress(&format!("wrote {}", cli.out.join("results.md").display()));
    anyhow::ensure!(failed.is_empty(), "sections failed: {failed:?}");
    anyhow::ensure!(broken.is_empty(), "correctness checks not 0: {broken:?}");
    let mut missing = report.missing_sections();
    if !wanted(SHAPE_SECTION) {
        missing.retain(|s| *s != sections::shape::SECTION);
    }
    anyhow::ensure!(
        missing.is_empty() || !cli.only.is_empty(),
        "sections without figures: {missing:?}"
    );
    Ok(())
}

/// The settings the run measured the system with, as lines under the machine's: what
/// `make up` runs, and anything lighter labelled as such.
async fn settings(ctx: &ctx::Ctx, kept_logs: bool) -> anyhow::Result<String> {
    let kept = if kept_logs { "" } else { " (removed after the run)" };
    Ok(format!(
        "- PostgreSQL: {} (durable, as `make up` runs it)\n\
         - logs: paytrack at its default level (info), JSON lines to files: {:.1} MiB written over the run{kept}\n\
         - client heartbeats: every session answers each heartbeat with its acks; heartbeat_ms={} (the default)\n\
         - load duration: each end-to-end load sustained {} s, and ingest while the mesh consumes as long; ingest alone and its ceiling post their sizes as bursts\n",
        ctx.pg_durability().await?,
        ctx.log_bytes() as f64 / (1024.0 * 1024.0),
        ctx.heartbeat_ms,
        ctx.plan.e2e_step.as_secs(),
    ))
}

/// The run's correctness checks, as rows of their own: gaps and duplicates seen by
/// every client, unbalanced ledger entries, and acknowledged webhooks whose payment
/// never reached the projection. Returns the checks that are not 0.
async fn correctness(ctx: &ctx::Ctx, report: &mut Report) -> anyhow::Result<Vec<&'static str>> {
    let section = report::SECTIONS[6];
    let (gaps, duplicates) = client::continuity();
    let unbalanced = u64::try_from(ctx.unbalanced_entries().await?).unwrap_or(u64::MAX);
    let (lost, acked) = ctx.lost_acks(std::time::Duration::from_secs(120)).await?;
    let checks = [
        ("gaps", gaps, "every session's events, every section"),
        ("duplicates", duplicates, "every session's events, every section"),
        (
            "unbalanced ledger entries",
            unbalanced,
            "journal entries whose legs do not sum to 0",
        ),
        (
            "lost acks",
            lost as u64,
            "payments acknowledged 2xx but not in the projection",
        ),
    ];
    let mut broken = Vec::new();
    for (name, count, what) in checks {
        report.plain(
            section,
            format!("{acked} acknowledged payments"),
            name,
            count.to_string(),
            what,
        );
        if count != 0 {
            broken.push(name);
        }
    }
    Ok(broken)
}

/// How the figures are taken, printed under the table.
fn notes(plan: &Plan, multi_edge: bool) -> Vec<String> {
    let mut notes = vec![
        "Everything runs on this one machine: the load generators and clients compete with the mesh for the same cores.".into(),
        "Ingest ceiling: the same bodies published by one client with `Nats-Msg-Id` and awaited acks, at the same concurrency, into a stream configured as PAYTRACK_IN. Ingest and its ceiling are measured with the reconciler and the projector stopped (a webhook's 2xx never waits for them), so neither shares the cores with a backlog; the row \"while the mesh consumes them\" posts the same number again with every consumer running.".into(),
        "End to end: each session holds one `merchant:` channel; every offered transition is a new payment of one merchant, so it reaches exactly one session; latency runs from just before the webhook is sent to the `event` frame. Open loop: sends are not held back by slow answers.".into(),
        "End to end, CPU cores used: user+system time of each process group from /proc while the load ran (first webhook sent until the last event received), divided by the elapsed time: nats-server, postgres, the edge under test, this process (ingest, reconciler and projector in-process, plus the webhook senders and WebSocket clients), and every other process; 2.00 in total is this machine saturated".into(),
        "Fan-out: every server runs in its own process; resident memory per session = (VmRSS with N subscribed sessions − VmRSS before any) / N. The edge's broadcast clock starts when the transition is stored in PAYTRACK_STATUS; the bare server's at its HTTP trigger; nats-server's at the core publish. For one webhook the edge sends each session three frames (the transition, then its `persisted` and `ledger_posted` checkpoints as the projector publishes them), so the bare server broadcasts twice: the transition frame alone, and the same three frames back to back, shaped and sized as the edge's; both time the transition frame. Clients spread over 127.0.0.1–8 and live in the bench process (the same clients for all three servers, so a client-side limit weighs on all three alike).".into(),
        format!(
            "Reconnect storm: sessions are dropped without a close handshake while {} transitions/s flow; current = `subscribed` again and every transition acknowledged before the resume started received. Resumes are paced by the client fleet to {} handshakes at once. JetStream API requests = the account's request counter over the storm, less its rate over one second before it.",
            plan.storm_rate, plan.connect_concurrency
        ),
        "Projector: transitions are written by the reconciler with the projector stopped, every other one a `succeeded` that posts a capture (a journal entry with two postings, checked by the database's balance trigger), the others `pending`; their raw facts and outcomes wait too and are stored at the same time; the figure is the time from its restart until its progress counters show every transition committed and every checkpoint acknowledged by JetStream. The ceiling copies every row of those payments (each table keyed by tenant and payment_id) into look-alike tables (no triggers) as the projector batches them: one transaction per 1,000 transitions' rows, one multi-row INSERT per table (rows bound as an array of the table's row type).".into(),
        format!(
            "Production shape: three nats-server nodes in one JetStream cluster with every stream and bucket at R3 and `sync_interval: always`, durable PostgreSQL, each service as its own process with two replicas (two edges, ingest behind a balancer), started by `paytrack-chaos`'s launcher with the shipped status-check windows. Ingest and its ceiling (raw publish+ack into a stream configured as PAYTRACK_IN, so R3 too, on the same cluster) run with the reconcilers and projectors paused (SIGSTOP); end to end offers the loads of section 2 to {:?} sessions spread over both edges (fewer than section 2's largest: the three nodes, eight service processes and the clients share the machine). Each row carries the load average (1, 5, 15 min) when it was measured. Its correctness counts are its own rows, and a count that is not 0 fails the run.",
            plan.shape_sessions
        ),
        format!(
            "Long lives: one edge process opens {} sessions (a `merchant:` channel each, new channels every cycle) and drops them without a close handshake, {} times; its VmRSS is read with every session subscribed and again once its `paytrack_edge_sessions_open` gauge is 0 (plus {} s). The edge follows a channel no session holds for {} s here (`PAYTRACK_EDGE_IDLE_CHANNEL_SECS`; 120 s by default, at most `edge_idle_channels` = 65,536 of them, about 650 bytes each), so that each cycle's new channels are gone when memory is read. The first cycle warms the allocator up; the verdict fits a line through the after-close figures of the later cycles: a slope under {}% of what the first cycle's sessions took while open, with no session or channel left in the edge's gauges, is a plateau (memory retained for reuse), otherwise a leak.",
            plan.long_lives_sessions,
            plan.long_lives_cycles,
            sections::long_lives::SETTLE.as_secs(),
            sections::long_lives::IDLE_CHANNEL_SECS,
            sections::long_lives::PLATEAU_SHARE * 100.0
        ),
        format!(
            "Idle sessions: one edge holds each size's sessions, all on `payments` or each on a `payment:` channel of its own, subscribed and then sent nothing for {} s. Cores are CPU time over that window of the mesh's own nats-server (a child of this process, so no other nats-server on the machine is counted) and of the edge; JetStream API requests are the account's counter; messages stored are the last sequences of every stream and bucket together; consumers are every stream's and bucket's at the end.",
            plan.idle_window.as_secs()
        ),
        "Polling: every client's payment gets one transition (pending → held), spread evenly over the polling window; staleness runs from ingest's 2xx for it to the first poll (or WebSocket event) showing it.".into(),
    ];
    if multi_edge {
        notes.push(format!(
            "Several edge processes together: at most {} sessions per edge process and per client process (hidden `clients` subcommand), each client process on its own 127.0.0.x range; the broadcast p99 pools every session's receipt.",
            sections::multi_edge::PER_EDGE
        ));
    } else {
        notes.push(format!(
            "Several edge processes together ({:?} sessions) run only with `--multi-edge` (`make bench` passes it; `make bench BENCH_ARGS=` leaves it out).",
            plan.multi_edge_sizes
        ));
    }
    notes
}
