//! Section 6: Polling baseline: the same clients polling `GET /v1/payments/{id}` every period
//! while transitions flow, against the same clients on WebSocket `payment:` channels:
//! server requests per second and mean staleness (from ingest's 2xx to the client
//! seeing the new status).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::ctx::Ctx;
use crate::report::{Plot, Report, num};
use crate::stats::{between, progress};

const SECTION: &str = "6. Polling baseline";

/// Runs every client count.
pub async fn run(ctx: &Arc<Ctx>, report: &mut Report) -> anyhow::Result<()> {
    let (mut poll_pts, mut ws_pts) = (Vec::new(), Vec::new());
    for &clients in &ctx.plan.polling_clients {
        let r = measure(ctx, clients).await?;
        let label = format!("{clients} clients");
        report.measured(
            SECTION,
            &label,
            "mean staleness, REST polling",
            r.poll_staleness_ms,
            r.ws_staleness_ms,
            "WebSocket, same clients",
            "ms",
        );
        report.plain(
            SECTION,
            &label,
            "server requests/s, REST polling",
            num(r.poll_rps),
            &format!("WebSocket: {} events/s pushed, 0 requests", num(r.ws_events_per_sec)),
        );
        report.failures(SECTION, &label, "transitions no poll saw before the end", r.unseen, "");
        poll_pts.push((clients as f64, r.poll_staleness_ms));
        ws_pts.push((clients as f64, r.ws_staleness_ms));
        ctx.drain().await?;
    }
    report.plots.push(Plot {
        file: "polling.png".into(),
        title: "Mean staleness: REST polling vs WebSocket".into(),
        x_label: "clients".into(),
        y_label: "ms".into(),
        series: vec![("REST polling".into(), poll_pts), ("WebSocket".into(), ws_pts)],
    });
    Ok(())
}

struct Figures {
    poll_staleness_ms: f64,
    ws_staleness_ms: f64,
    poll_rps: f64,
    ws_events_per_sec: f64,
    unseen: usize,
}

async fn measure(ctx: &Arc<Ctx>, clients: usize) -> anyhow::Result<Figures> {
    let prefix = format!("q{clients}x");
    progress(&format!("polling: preloading {clients} payments"));
    ctx.post_many(clients, 32, |i| (format!("{prefix}{i}"), "pending", "qm".to_owned()))
        .await?;
    let pattern = format!("{prefix}%");
    ctx.mesh
        .eventually(Duration::from_secs(300), "preloaded payments projected", || async {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM payments WHERE tenant = $1 AND payment_id LIKE $2")
                .bind(ctx.mesh.tenant.as_str())
                .bind(&pattern)
                .fetch_one(&ctx.mesh.db)
                .await
                .ok()?;
            (n as usize >= clients).then_some(())
        })
        .await?;

    let (_edge, fleet) = ctx
        .edge_with_sessions((0..clients).map(|i| format!("payment:{prefix}{i}")))
        .await?;
    fleet.recorder.take();

    progress(&format!(
        "polling: {clients} clients polling every {:?} beside {clients} WebSocket sessions",
        ctx.plan.polling_period
    ));
    let period = ctx.plan.polling_period;
    let seen: Arc<Mutex<Vec<(String, SystemTime)>>> = Arc::default();
    let requests = Arc::new(AtomicU64::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let mut pollers = Vec::new();
    for i in 0..clients {
        let url = format!("{}/v1/payments/{prefix}{i}", ctx.mesh.ingest_url);
        let (http, seen, requests, stop, key) = (
            http.clone(),
            seen.clone(),
            requests.clone(),
            stop.clone(),
            ctx.mesh.api_key.clone(),
        );
        let offset = period.mul_f64(i as f64 / clients as f64);
        pollers.push(tokio::spawn(async move {
            tokio::time::sleep(offset).await;
            let mut ticker = tokio::time::interval(period);
            let mut last = String::from("pending");
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = ticker.tick() => {}
                }
                let Ok(response) = http.get(&url).bearer_auth(&key).send().await else {
                    continue;
                };
                requests.fetch_add(1, Ordering::Relaxed);
                let Ok(body) = response.json::<serde_json::Value>().await else {
                    continue;
                };
                let status = body["status"].as_str().unwrap_or("").to_owned();
                if !status.is_empty() && status != last {
                    if let Ok(mut s) = seen.lock() {
                        s.push((
                            format!("{}:{status}", url.rsplit('/').next().unwrap_or("")),
                            SystemTime::now(),
                        ));
                    }
                    last = status;
                }
            }
        }));
    }
    let polling_started = Instant::now();
    let requests_before = requests.load(Ordering::Relaxed);

    // One transition per client's payment (pending → held), spread evenly over the
    // polling duration, so every poller has exactly one change to notice.
    let total = clients;
    let acked: Arc<Mutex<HashMap<String, SystemTime>>> = Arc::default();
    let mut ticker = tokio::time::interval(ctx.plan.polling_duration.div_f64(total as f64));
    let mut posts = Vec::new();
    for k in 0..total {
        ticker.tick().await;
        let payment = format!("{prefix}{k}");
        let (ctx, acked) = (ctx.clone(), acked.clone());
        posts.push(tokio::spawn(async move {
            if let Ok(at) = ctx.post(&payment, "held", "qm").await
                && let Ok(mut a) = acked.lock()
            {
                a.insert(format!("{payment}:held"), at);
            }
        }));
    }
    for p in posts {
        let _ = p.await;
    }
    // One more period (and some) so every poller has looked once more.
    tokio::time::sleep(period + Duration::from_secs(2)).await;
    stop.cancel();
    for p in pollers {
        let _ = p.await;
    }
    let poll_secs = polling_started.elapsed().as_secs_f64();
    let poll_rps = (requests.load(Ordering::Relaxed) - requests_before) as f64 / poll_secs;
    let acked = acked.lock().map(|a| a.clone()).unwrap_or_default();
    let mean = |observed: &[(String, SystemTime)]| -> (f64, usize) {
        let mut first: HashMap<&str, SystemTime> = HashMap::new();
        for (k, at) in observed {
            first.entry(k.as_str()).or_insert(*at);
        }
        let lags: Vec<f64> = acked
            .iter()
            .filter_map(|(k, t0)| first.get(k.as_str()).map(|at| between(*t0, *at).as_secs_f64() * 1000.0))
            .collect();
        let unseen = acked.len() - lags.len();
        (lags.iter().sum::<f64>() / lags.len().max(1) as f64, unseen)
    };
    let polled = seen.lock().map(|s| s.clone()).unwrap_or_default();
    let (poll_staleness_ms, unseen) = mean(&polled);
    let pushed = fleet.recorder.take();
    let ws_events_per_sec = pushed.len() as f64 / poll_secs;
    let (ws_staleness_ms, _) = mean(&pushed);
    Ok(Figures {
        poll_staleness_ms,
        ws_staleness_ms,
        poll_rps,
        ws_events_per_sec,
        unseen,
    })
}
