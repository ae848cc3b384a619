//! What the reconciler's lookup of a payment without a claim costs nats-server.
//!
//! Every payment's first fact finds no claim and looks its history up by
//! `paytrack.status.<tenant>.*.<payment>` (a wildcard last-message get on
//! PAYTRACK_STATUS) before claiming it. This measures that lookup against the two
//! literal reads it sits between (the claim's KV get and a last-message get on one
//! literal subject), with PAYTRACK_STATUS holding `PAYTRACK_BENCH_PAYMENTS` histories
//! (20,000 by default) spread over `PAYTRACK_BENCH_MERCHANTS` merchants (50) of one
//! tenant. Ignored by default (it measures, it does not check); run it with
//! `cargo test -p paytrack-tests --test pipeline claim_lookup:: -- --ignored --nocapture`.

use std::time::{Duration, Instant};

use futures::future::try_join_all;
use paytrack_shared::{MerchantId, PaymentId, Token, subjects};
use paytrack_tests::Mesh;

/// Lookups timed per kind.
const LOOKUPS: usize = 2_000;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Mean and p99 of `samples`, in microseconds.
fn summary(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let mean = samples.iter().map(Duration::as_secs_f64).sum::<f64>() / samples.len().max(1) as f64;
    let p99 = samples
        .get(samples.len() * 99 / 100)
        .copied()
        .unwrap_or_default()
        .as_secs_f64();
    (mean * 1e6, p99 * 1e6)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run explicitly"]
async fn missing_claim_lookup_against_literal_reads() -> anyhow::Result<()> {
    let payments = env_or("PAYTRACK_BENCH_PAYMENTS", 20_000);
    let merchants = env_or("PAYTRACK_BENCH_MERCHANTS", 50).max(1);
    let mesh = Mesh::start().await?;
    let tenant = mesh.tenant.clone();
    let merchant = |i: usize| MerchantId::parse(&format!("m{}", i % merchants));

    // The histories: one transition-sized message per payment.
    let body = vec![b'x'; 600];
    for chunk in (0..payments).collect::<Vec<_>>().chunks(500) {
        let acks = try_join_all(
            chunk
                .iter()
                .map(|&i| {
                    let subject = subjects::status(&tenant, &merchant(i)?, &PaymentId::parse(&format!("pay_{i}"))?);
                    let js = mesh.js.clone();
                    let body = body.clone();
                    Ok::<_, anyhow::Error>(async move { js.publish(subject, body.into()).await })
                })
                .collect::<anyhow::Result<Vec<_>>>()?,
        )
        .await?;
        try_join_all(acks.into_iter().map(std::future::IntoFuture::into_future)).await?;
    }
    let status = mesh.js.get_stream(subjects::STREAM_STATUS).await?;
    let claims = mesh.js.get_key_value(subjects::CLAIMS_BUCKET).await?;

    let (mut wildcard, mut literal, mut kv_get) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..LOOKUPS {
        let missing = PaymentId::parse(&format!("pay_new_{i}"))?;
        let started = Instant::now();
        let found = paytrack_nats::last_message(&status, &subjects::status_of_payment(&tenant, &missing)).await?;
        wildcard.push(started.elapsed());
        anyhow::ensure!(found.is_none());

        let started = Instant::now();
        claims.entry(format!("{tenant}.{missing}")).await?;
        kv_get.push(started.elapsed());

        let known = PaymentId::parse(&format!("pay_{}", i % payments.max(1)))?;
        let started = Instant::now();
        let found = paytrack_nats::last_message(&status, &subjects::status(&tenant, &merchant(i)?, &known)).await?;
        literal.push(started.elapsed());
        anyhow::ensure!(found.is_some());
    }
    for (what, samples) in [
        ("wildcard last-message get, payment without history", wildcard),
        ("claims KV get, missing key", kv_get),
        ("literal last-message get, existing history", literal),
    ] {
        let (mean, p99) = summary(samples);
        eprintln!(
            "{what}: mean {mean:.0} µs, p99 {p99:.0} µs over {LOOKUPS} ({payments} histories, {merchants} merchants)"
        );
    }
    Ok(())
}
