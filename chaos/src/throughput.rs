//! The throughput cost of each durability choice, measured on the three-node
//! cluster: publishes acknowledged per second into a file stream at R1 and R3,
//! under the default sync and under `sync_interval: always`.

use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream::{self, stream};
use paytrack_nats::Role;

use crate::cluster::{Cluster, SyncPolicy};

/// One measurement.
#[derive(Debug, Clone)]
pub struct Measured {
    /// The nodes' sync policy.
    pub sync: SyncPolicy,
    /// The stream's replicas.
    pub replicas: usize,
    /// Acknowledged publishes per second.
    pub per_second: f64,
    /// Messages published.
    pub messages: usize,
}

/// Publishes `messages` messages of `size` bytes, at most `in_flight` unacknowledged,
/// into a fresh stream with `replicas` replicas on `cluster`.
async fn publish_rate(
    cluster: &Cluster,
    replicas: usize,
    messages: usize,
    size: usize,
    in_flight: usize,
) -> anyhow::Result<f64> {
    let admin = cluster.connect_as(Role::Admin).await?;
    let js = jetstream::new(admin);
    let name = format!("THROUGHPUT_R{replicas}");
    js.create_stream(stream::Config {
        name: name.clone(),
        subjects: vec![format!("throughput.r{replicas}.>")],
        storage: stream::StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    })
    .await
    .context("create the measured stream")?;
    let payload = bytes::Bytes::from(vec![b'x'; size]);
    let started = Instant::now();
    let mut pending = std::collections::VecDeque::new();
    for n in 0..messages {
        let ack = js
            .publish(format!("throughput.r{replicas}.{}", n % 64), payload.clone())
            .await?;
        pending.push_back(ack);
        if pending.len() >= in_flight
            && let Some(ack) = pending.pop_front()
        {
            ack.await?;
        }
    }
    for ack in pending {
        ack.await?;
    }
    let rate = messages as f64 / started.elapsed().as_secs_f64();
    js.delete_stream(&name).await?;
    Ok(rate)
}

/// Measures every combination: both sync policies, R1 and R3.
pub async fn measure(messages: usize) -> anyhow::Result<Vec<Measured>> {
    let mut out = Vec::new();
    for sync in [SyncPolicy::Default, SyncPolicy::Always] {
        let cluster = Cluster::start(sync).await?;
        // A warm-up, so the first measurement does not pay for connections and leaders.
        publish_rate(&cluster, 1, messages / 10, 512, 64).await?;
        for replicas in [1, 3] {
            let per_second = publish_rate(&cluster, replicas, messages, 512, 64).await?;
            out.push(Measured {
                sync,
                replicas,
                per_second,
                messages,
            });
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    Ok(out)
}
