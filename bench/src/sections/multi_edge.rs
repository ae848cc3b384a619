//! Section 3: Fan-out over several edge processes together (`--multi-edge`): sessions spread
//! over edge processes of at most [`PER_EDGE`] each, held by client processes (this
//! binary's hidden `clients` subcommand) on their own 127.0.0.x source addresses.

use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::client::{Fleet, Target};
use crate::ctx::Ctx;
use crate::report::{Report, num};
use crate::stats::{self, histogram, progress};

const SECTION: &str = "3. Fan-out";

/// Sessions per edge process (and per client process): under the 20,000 open files.
pub const PER_EDGE: usize = 12_500;

/// Runs every multi-edge size.
pub async fn run(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    for &size in &ctx.plan.multi_edge_sizes {
        let edges_needed = size.div_ceil(PER_EDGE.min(size.max(1)));
        let edges_needed = if ctx.plan.smoke { 2 } else { edges_needed };
        progress(&format!("fan-out: {size} sessions over {edges_needed} edge processes"));
        let mut edges = Vec::new();
        for _ in 0..edges_needed {
            edges.push(ctx.spawn_edge().await?);
        }
        let base: u64 = edges.iter().map(|e| e.rss_bytes().unwrap_or(0)).sum();
        let per = size.div_ceil(edges_needed);
        let mut clients = Vec::new();
        for (j, edge) in edges.iter().enumerate() {
            let count = per.min(size - j * per);
            clients.push(ClientProcess::spawn(edge.addr, &ctx.token, count, 1 + (j * 8 % 240) as u8).await?);
        }
        for c in &mut clients {
            c.wait_line("subscribed").await?;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss: u64 = edges.iter().map(|e| e.rss_bytes().unwrap_or(0)).sum();
        let mut h = histogram();
        let payment = format!("mb{size}");
        ctx.post(&payment, "pending", "bcast").await?;
        let stored = stored_at(ctx, &payment).await?;
        let start_nanos = stored.duration_since(UNIX_EPOCH)?.as_nanos();
        for c in &mut clients {
            c.send(&format!("report {payment}:pending {start_nanos} {}\n", c.count))
                .await?;
        }
        let mut received = 0usize;
        for c in &mut clients {
            let line = c.wait_line("lat").await?;
            for us in line.split_whitespace().skip(1).filter_map(|v| v.parse::<u64>().ok()) {
                h.saturating_record(us.max(1));
                received += 1;
            }
        }
        let label = format!("{size} sessions, {edges_needed} edge processes");
        report.plain(
            SECTION,
            &label,
            "sessions held together",
            size.to_string(),
            "all subscribed",
        );
        report.plain(
            SECTION,
            &label,
            "resident KiB per idle session (all edges)",
            format!("{} KiB", num(rss.saturating_sub(base) as f64 / size as f64 / 1024.0)),
            "target ≤ 4 KiB",
        );
        report.plain(
            SECTION,
            &label,
            "broadcast on payments, p99 until received",
            format!("{} ms ({received} received)", num(stats::ms(&h, 0.99))),
            "single-process figures above",
        );
        drop(clients);
        drop(edges);
    }
    Ok(())
}

async fn stored_at(ctx: &Ctx, payment: &str) -> anyhow::Result<SystemTime> {
    let stream = ctx.mesh.js.get_stream(paytrack_shared::subjects::STREAM_STATUS).await?;
    let subject = ctx.status_subject("bcast", payment)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(m) = stream.get_last_raw_message_by_subject(&subject).await {
            return Ok(SystemTime::from(m.time));
        }
        if tokio::time::Instant::now() > deadline {
            bail!("no transition on {subject}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A client process holding `count` sessions on `payments`.
struct ClientProcess {
    count: usize,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    _child: Child,
}

impl ClientProcess {
    async fn spawn(
        addr: std::net::SocketAddr,
        token: &str,
        count: usize,
        source_base: u8,
    ) -> anyhow::Result<ClientProcess> {
        let mut child = Command::new(std::env::current_exe()?)
            .args([
                "clients",
                "--addr",
                &addr.to_string(),
                "--count",
                &count.to_string(),
                "--source-base",
                &source_base.to_string(),
            ])
            .env("PAYTRACK_BENCH_TOKEN", token)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child.stdin.take().context("stdin")?;
        let stdout = child.stdout.take().context("stdout")?;
        Ok(ClientProcess {
            count,
            stdin,
            lines: BufReader::new(stdout).lines(),
            _child: child,
        })
    }

    async fn send(&mut self, line: &str) -> anyhow::Result<()> {
        self.stdin.write_all(line.as_bytes()).await?;
        self.stdin.flush().await?;
        Ok(())
    }

    async fn wait_line(&mut self, prefix: &str) -> anyhow::Result<String> {
        let line = tokio::time::timeout(Duration::from_secs(900), async {
            loop {
                match self.lines.next_line().await? {
                    Some(l) if l.starts_with(prefix) => return Ok::<_, anyhow::Error>(l),
                    Some(l) if l.starts_with("error") => bail!("client process: {l}"),
                    Some(_) => {}
                    None => bail!("client process ended"),
                }
            }
        })
        .await
        .context("client process silent")??;
        Ok(line)
    }
}

/// The hidden `clients` subcommand: holds `count` sessions on `payments` of the edge at
/// `addr`; prints `subscribed`, then for each `report <key> <start_unix_nanos> <n>` on
/// stdin prints `lat` and the microseconds each session took to receive `key`.
pub async fn clients_main(addr: std::net::SocketAddr, count: usize, source_base: u8) -> anyhow::Result<()> {
    let token = std::env::var("PAYTRACK_BENCH_TOKEN").context("PAYTRACK_BENCH_TOKEN")?;
    let mut fleet = Fleet::new(
        Target {
            addr,
            token: Some(token),
            nats: false,
        },
        256,
    )
    .with_source_base(source_base);
    fleet.add(std::iter::repeat_n("payments".to_owned(), count));
    if let Err(e) = fleet.wait_subscribed(Duration::from_secs(900)).await {
        println!("error {e:#}");
        return Err(e);
    }
    println!("subscribed {count}");
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = stdin.next_line().await? {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [_, key, start, n] = parts.as_slice() else { continue };
        let start = UNIX_EPOCH + Duration::from_nanos(start.parse::<u64>()?);
        let n: usize = n.parse()?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while (fleet.recorder.received.load(std::sync::atomic::Ordering::Relaxed) as usize) < n
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let lat: Vec<String> = fleet
            .recorder
            .take()
            .into_iter()
            .filter(|(k, _)| k == key)
            .map(|(_, at)| stats::between(start, at).as_micros().to_string())
            .collect();
        println!("lat {}", lat.join(" "));
    }
    Ok(())
}
