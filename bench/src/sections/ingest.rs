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
    let (mut ingest_pts, mut raw_pts) = (Vec::new(), Vec::new());
    for (round, &size) in ctx.plan.ingest_sizes.iter().enumerate() {
        progress(&format!("ingest: {size} webhooks, {concurrency} in flight"));
        let bodies: Vec<String> = (0..size)
            .map(|i| Ctx::body(&format!("i{round}x{i}"), "pending", &format!("im{}", i % 50)))
            .collect();
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
        let ingest_rate = size as f64 / started.elapsed().as_secs_f64();
        drop(results);

        progress(&format!("ingest ceiling: {size} JetStream publishes with ack"));
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
        let raw_rate = size as f64 / started.elapsed().as_secs_f64();
        drop(results);

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
        ingest_pts.push((size as f64, ingest_rate));
        raw_pts.push((size as f64, raw_rate));
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
        ],
    });
    Ok(())
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
