//! Continuity checks for live channels: a client's events chain by `prev_seq`, and
//! their sequences equal the stream's for the channel's filter.

use anyhow::Context;
use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use serde_json::Value;

/// Asserts `events` chain from `start` and returns their sequences.
pub fn chain(start: u64, events: &[Value]) -> Vec<u64> {
    let mut last = start;
    let mut seqs = Vec::new();
    for event in events {
        assert_eq!(event["prev_seq"], last, "gap or duplicate before {event}");
        last = event["position"]["seq"].as_u64().unwrap_or_default();
        seqs.push(last);
    }
    seqs
}

/// The sequences of a channel's messages as the stream holds them.
pub async fn stream_seqs(js: &jetstream::Context, stream: &str, filter: &str) -> anyhow::Result<Vec<u64>> {
    let stream = js.get_stream(stream).await?;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: filter.to_owned(),
            ..Default::default()
        })
        .await?;
    let mut pending = consumer.cached_info().num_pending;
    let mut messages = consumer.messages().await?;
    let mut seqs = Vec::new();
    while pending > 0 {
        let message = tokio::time::timeout(std::time::Duration::from_secs(60), messages.next())
            .await?
            .context("stream ended")??;
        let info = message.info().map_err(|e| anyhow::anyhow!("{e}"))?;
        seqs.push(info.stream_sequence);
        pending = info.pending;
    }
    Ok(seqs)
}
