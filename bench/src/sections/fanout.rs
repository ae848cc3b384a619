//! Section 3: Fan-out: sessions one process holds, resident memory per idle session, and a
//! broadcast on `payments` to all of them (p99 until received), for the edge, a bare
//! axum WebSocket server and nats-server's WebSocket listener serving the same clients.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use anyhow::Context;

use crate::client::{Fleet, Target};
use crate::ctx::Ctx;
use crate::report::{Plot, Report, num};
use crate::servers;
use crate::stats::{self, histogram, progress};

const SECTION: &str = "3. Fan-out";

/// Broadcasts per size (their receipts are pooled for the p99).
const BROADCASTS: usize = 3;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Edge,
    Bare,
    NatsWs,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Edge => "ws-edge",
            Kind::Bare => "bare axum",
            Kind::NatsWs => "nats-server websocket",
        }
    }
}

/// Figures of one server at one size.
struct Figures {
    rss_per_session: f64,
    p99_ms: f64,
    /// The bare server's broadcast of the edge's three frames per webhook.
    same_frames_p99_ms: Option<f64>,
}

/// Runs every server at every size.
pub async fn run(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    let mut results: Vec<(Kind, usize, Figures)> = Vec::new();
    for kind in [Kind::Edge, Kind::Bare, Kind::NatsWs] {
        for (size, figures) in measure(ctx, kind).await? {
            results.push((kind, size, figures));
        }
    }
    let find = |kind: Kind, size: usize| results.iter().find(|(k, s, _)| *k == kind && *s == size).map(|r| &r.2);
    for &size in &ctx.plan.fanout_sizes {
        let (Some(edge), Some(bare), Some(nats)) =
            (find(Kind::Edge, size), find(Kind::Bare, size), find(Kind::NatsWs, size))
        else {
            continue;
        };
        let label = format!("{size} sessions, one process");
        report.plain(
            SECTION,
            &label,
            "sessions held by one edge process",
            size.to_string(),
            "open-files limit 20,000",
        );
        let kib = |v: f64| v / 1024.0;
        report.measured(
            SECTION,
            &label,
            "resident KiB per idle session (edge)",
            kib(edge.rss_per_session),
            kib(bare.rss_per_session),
            "bare axum",
            "KiB",
        );
        report.measured(
            SECTION,
            &label,
            "resident KiB per idle session (edge)",
            kib(edge.rss_per_session),
            kib(nats.rss_per_session),
            "nats-server websocket",
            "KiB",
        );
        report.measured(
            SECTION,
            &label,
            "broadcast on payments, p99 until received",
            edge.p99_ms,
            bare.p99_ms,
            "bare axum, the transition frame alone",
            "ms",
        );
        if let Some(same_frames) = bare.same_frames_p99_ms {
            report.measured(
                SECTION,
                &label,
                "broadcast on payments, p99 until received",
                edge.p99_ms,
                same_frames,
                "bare axum, the edge's three frames per webhook",
                "ms",
            );
        }
        report.measured(
            SECTION,
            &label,
            "broadcast on payments, p99 until received",
            edge.p99_ms,
            nats.p99_ms,
            "nats-server websocket",
            "ms",
        );
    }
    let series = |f: fn(&Figures) -> f64| {
        [Kind::Edge, Kind::Bare, Kind::NatsWs]
            .into_iter()
            .map(|kind| {
                let pts = results
                    .iter()
                    .filter(|r| r.0 == kind)
                    .map(|r| (r.1 as f64, f(&r.2)))
                    .collect();
                (kind.name().to_owned(), pts)
            })
            .collect::<Vec<_>>()
    };
    report.plots.push(Plot {
        file: "fanout_memory.png".into(),
        title: "Fan-out: resident memory per idle session".into(),
        x_label: "sessions in one process".into(),
        y_label: "KiB per session".into(),
        series: series(|f| f.rss_per_session / 1024.0),
    });
    report.plots.push(Plot {
        file: "fanout_broadcast.png".into(),
        title: "Fan-out: broadcast on payments, p99 until received".into(),
        x_label: "sessions in one process".into(),
        y_label: "p99 ms".into(),
        series: {
            let mut all = series(|f| f.p99_ms);
            let same_frames = results
                .iter()
                .filter_map(|r| r.2.same_frames_p99_ms.map(|p99| (r.1 as f64, p99)))
                .collect();
            all.push(("bare axum, the edge's three frames".to_owned(), same_frames));
            all
        },
    });
    Ok(())
}

async fn measure(ctx: &Ctx, kind: Kind) -> anyhow::Result<Vec<(usize, Figures)>> {
    let (mut server, nats_url) = match kind {
        Kind::Edge => (ctx.spawn_edge().await?, None),
        Kind::Bare => {
            let bare = servers::spawn_self("bare", &[], None).await?;
            (bare, None)
        }
        Kind::NatsWs => {
            let (server, url) = servers::spawn_nats_ws(paytrack_tests::nats::binary()?).await?;
            (server, Some(url))
        }
    };
    let publisher = match &nats_url {
        Some(url) => Some(async_nats::connect(url.as_str()).await?),
        None => None,
    };
    let http = reqwest::Client::new();
    let base_rss = server.rss_bytes()?;
    let mut fleet = Fleet::new(
        Target {
            addr: server.addr,
            token: (kind == Kind::Edge).then(|| ctx.token.clone()),
            nats: kind == Kind::NatsWs,
        },
        ctx.plan.connect_concurrency,
    );
    let mut out = Vec::new();
    for &size in &ctx.plan.fanout_sizes {
        progress(&format!("fan-out: {} holding {size} sessions", kind.name()));
        let more = size.saturating_sub(fleet.sessions.len());
        fleet.add(std::iter::repeat_n("payments".to_owned(), more));
        fleet.wait_subscribed(Duration::from_secs(600)).await?;
        server.check_alive()?;
        // Let allocations of the connect burst settle before reading RSS.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss = server.rss_bytes()?;
        let rss_per_session = rss.saturating_sub(base_rss) as f64 / size as f64;
        let mut h = histogram();
        let mut h_same_frames = histogram();
        // The bare server broadcasts twice over: the transition frame alone, then the
        // three frames the edge sends for one webhook (transition and two checkpoints).
        let rounds: &[u8] = if kind == Kind::Bare { &[1, 3] } else { &[1] };
        for &frames in rounds {
            for b in 0..BROADCASTS {
                fleet.recorder.take();
                let payment = format!("b{}{size}x{frames}x{b}", kind.name().len());
                let key = format!("{payment}:pending");
                let sent_at = SystemTime::now();
                match kind {
                    Kind::Edge => {
                        ctx.post(&payment, "pending", "bcast").await?;
                    }
                    Kind::Bare => {
                        http.post(format!("http://{}/broadcast?frames={frames}", server.addr))
                            .body(key.clone())
                            .send()
                            .await?;
                    }
                    Kind::NatsWs => {
                        if let Some(p) = &publisher {
                            p.publish("payments", key.clone().into()).await?;
                            p.flush().await?;
                        }
                    }
                }
                let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
                while (fleet.recorder.received.load(Ordering::Relaxed) as usize) < size
                    && tokio::time::Instant::now() < deadline
                {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                // For the edge, the clock starts when the transition is stored in
                // PAYTRACK_STATUS (the edge's input), not at the webhook.
                let start = match kind {
                    Kind::Edge => stored_at(ctx, &payment).await.unwrap_or(sent_at),
                    _ => sent_at,
                };
                let into = if frames == 3 { &mut h_same_frames } else { &mut h };
                for (k, at) in fleet.recorder.take() {
                    if k == key {
                        stats::record(into, stats::between(start, at));
                    }
                }
            }
        }
        let p99_ms = stats::ms(&h, 0.99);
        let same_frames_p99_ms = (kind == Kind::Bare).then(|| stats::ms(&h_same_frames, 0.99));
        progress(&format!(
            "fan-out: {} {size} sessions: {} KiB/session, broadcast p99 {} ms",
            kind.name(),
            num(rss_per_session / 1024.0),
            num(p99_ms)
        ));
        out.push((
            size,
            Figures {
                rss_per_session,
                p99_ms,
                same_frames_p99_ms,
            },
        ));
    }
    drop(fleet);
    drop(server);
    Ok(out)
}

/// When `payment`'s transition was stored in PAYTRACK_STATUS.
async fn stored_at(ctx: &Ctx, payment: &str) -> anyhow::Result<SystemTime> {
    let stream = ctx.mesh.js.get_stream(paytrack_shared::subjects::STREAM_STATUS).await?;
    let subject = ctx.status_subject("bcast", payment)?;
    let message = stream
        .get_last_raw_message_by_subject(&subject)
        .await
        .with_context(|| format!("no transition on {subject}"))?;
    Ok(SystemTime::from(message.time))
}
