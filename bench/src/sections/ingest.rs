//! Section 1: Ingest: signed webhooks durably accepted per second, against raw JetStream
//! publish-with-ack (`Nats-Msg-Id`) of the same payloads at the same concurrency.

use std::time::Instant;

use async_nats::jetstream;
use futures::StreamExt;

use crate::ctx::Ctx;
use crate::report::{Plot, Report};
use crate::stats::{self, histogram, progress};

const SECTION: &str = "1. Ingest";

/// Runs every size.
pub async fn run(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    let ceiling_stream = ceiling_stream(ctx).await?;
    let concurrency = ctx.plan.ingest_concurrency;
    let (mut ingest_pts, mut raw_pts, mut live_pts) = (Vec::new(), Vec::new(), Vec::new());
    for (round, &size) in ctx.plan.ingest_sizes.iter().enumerate() {
        let bodies = |tag: &str| -> Vec<String> {
            (0..size)
                .map(|i| Ctx::body(&format!("i{round}{tag}x{i}"), "pending", &format!("im{}", i % 50)))
                .collect()
        };
        // The intake path alone, for ingest and its ceiling alike: the reconciler and
        // the projector are stopped meanwhile (a 2xx never waits for them), so neither
        // measurement shares the cores with the other's backlog.
        let (bodies_alone, bodies_live) = (bodies("a"), bodies("l"));
        let mut measured = None;
        ctx.mesh
            .restart_projector(ctx.mesh.restart_reconcilers(async {
                progress(&format!(
                    "ingest: {size} webhooks, {concurrency} in flight (consumers stopped)"
                ));
                let (ingest_rate, latencies) = post_all(ctx, &bodies_alone, concurrency).await?;
                progress(&format!("ingest ceiling: {size} JetStream publishes with ack"));
                let (raw_rate, raw) = publish_all(ctx, round, &bodies_alone, concurrency).await?;
                measured = Some((ingest_rate, latencies, raw_rate, raw));
                Ok(())
            }))
            .await?;
        let (ingest_rate, latencies, raw_rate, raw) =
            measured.ok_or_else(|| anyhow::anyhow!("the ingest measurement did not run"))?;
        ctx.drain().await?;
        // The same again while the mesh consumes what ingest stores (as in production),
        // sustained as long as an end-to-end load.
        let sustain = ctx.plan.e2e_step;
        progress(&format!(
            "ingest: webhooks for {} s while the mesh consumes them",
            sustain.as_secs()
        ));
        let (live_rate, live) = post_for(ctx, &bodies_live, sustain, concurrency).await?;

        let label = format!("{size} webhooks");
        let ceiling = "raw JetStream publish+ack";
        report.measured(
            SECTION,
            &label,
            "accepted webhooks/s",
            ingest_rate,
            raw_rate,
            ceiling,
            "/s",
        );
        report.measured(
            SECTION,
            &label,
            "latency p50",
            stats::ms(&latencies, 0.5),
            stats::ms(&raw, 0.5),
            ceiling,
            "ms",
        );
        report.measured(
            SECTION,
            &label,
            "latency p99",
            stats::ms(&latencies, 0.99),
            stats::ms(&raw, 0.99),
            ceiling,
            "ms",
        );
        report.plain(
            SECTION,
            &label,
            &format!(
                "accepted webhooks/s, p50 / p99, while the mesh consumes them (sustained {} s)",
                sustain.as_secs()
            ),
            format!(
                "{} /s, {} / {} ms",
                crate::report::num(live_rate),
                crate::report::num(stats::ms(&live, 0.5)),
                crate::report::num(stats::ms(&live, 0.99))
            ),
            "reconciler, projector and edge working on the same cores",
        );
        ingest_pts.push((size as f64, ingest_rate));
        raw_pts.push((size as f64, raw_rate));
        live_pts.push((size as f64, live_rate));
        ctx.drain().await?;
    }
    ceiling_stream.delete().await;
    report.plots.push(Plot {
        file: "ingest.png".into(),
        title: "Ingest: accepted webhooks/s vs raw JetStream".into(),
        x_label: "webhooks posted (payments in history grow)".into(),
        y_label: "per second".into(),
        series: vec![
            ("ingest (signed stdwebhooks)".into(), ingest_pts),
            ("raw publish+ack".into(), raw_pts),
            ("ingest while the mesh consumes".into(), live_pts),
        ],
    });
    Ok(())
}

/// Signs and posts every body with `concurrency` in flight: the rate and latencies.
async fn post_all(
    ctx: &Ctx,
    bodies: &[String],
    concurrency: usize,
) -> anyhow::Result<(f64, hdrhistogram::Histogram<u64>)> {
    let started = Instant::now();
    let mut latencies = histogram();
    let mut results = futures::stream::iter(bodies.iter().map(|body| async move {
        let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
        let t = Instant::now();
        let response = ctx.mesh.post_webhook(&id, body).await?;
        anyhow::ensure!(response.status().is_success(), "webhook answered {}", response.status());
        Ok::<_, anyhow::Error>(t.elapsed())
    }))
    .buffer_unordered(concurrency);
    while let Some(r) = results.next().await {
        stats::record(&mut latencies, r?);
    }
    Ok((bodies.len() as f64 / started.elapsed().as_secs_f64(), latencies))
}

/// Signs and posts `bodies` over and over (each round under new payment ids) with
/// `concurrency` in flight until `duration` has passed: the rate and latencies.
async fn post_for(
    ctx: &Ctx,
    bodies: &[String],
    duration: std::time::Duration,
    concurrency: usize,
) -> anyhow::Result<(f64, hdrhistogram::Histogram<u64>)> {
    let started = Instant::now();
    let mut latencies = histogram();
    let mut posted = 0usize;
    for round in 0.. {
        // A repeated body is a new payment: its ids carry the round.
        let renamed: Vec<String> = bodies
            .iter()
            .map(|b| {
                b.replace("\"payment_id\":\"", &format!("\"payment_id\":\"r{round}"))
                    .replace("\"provider_ref\":\"pr_", &format!("\"provider_ref\":\"pr_r{round}"))
            })
            .collect();
        let (_, h) = post_all(ctx, &renamed, concurrency).await?;
        latencies.add(&h)?;
        posted += renamed.len();
        if started.elapsed() >= duration || bodies.is_empty() {
            break;
        }
    }
    Ok((posted as f64 / started.elapsed().as_secs_f64(), latencies))
}

/// Publishes every body straight to the ceiling stream with `Nats-Msg-Id`, awaiting
/// each ack, `concurrency` in flight: the rate and latencies.
async fn publish_all(
    ctx: &Ctx,
    round: usize,
    bodies: &[String],
    concurrency: usize,
) -> anyhow::Result<(f64, hdrhistogram::Histogram<u64>)> {
    let started = Instant::now();
    let mut raw = histogram();
    let js = &ctx.mesh.js;
    let mut results = futures::stream::iter(bodies.iter().enumerate().map(|(i, body)| async move {
        let t = Instant::now();
        let message = jetstream::message::PublishMessage::build()
            .message_id(format!("raw-{round}-{i}-{}", uuid::Uuid::new_v4().simple()))
            .payload(body.clone().into());
        js.send_publish(format!("bench.in.{round}.{i}"), message).await?.await?;
        Ok::<_, anyhow::Error>(t.elapsed())
    }))
    .buffer_unordered(concurrency);
    while let Some(r) = results.next().await {
        stats::record(&mut raw, r?);
    }
    Ok((bodies.len() as f64 / started.elapsed().as_secs_f64(), raw))
}

/// A stream configured as PAYTRACK_IN (storage, replicas, duplicate window) on its own subjects.
struct CeilingStream<'a> {
    js: &'a jetstream::Context,
}

impl CeilingStream<'_> {
    async fn delete(self) {
        let _ = self.js.delete_stream("BENCH_IN").await;
    }
}

async fn ceiling_stream(ctx: &Ctx) -> anyhow::Result<CeilingStream<'_>> {
    let mut inbound = ctx.mesh.js.get_stream(paytrack_shared::subjects::STREAM_IN).await?;
    let mut config = inbound.info().await?.config.clone();
    config.name = "BENCH_IN".into();
    config.subjects = vec!["bench.in.>".into()];
    ctx.mesh.js.get_or_create_stream(config).await?;
    Ok(CeilingStream { js: &ctx.mesh.js })
}
