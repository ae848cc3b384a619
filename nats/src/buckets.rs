//! ingest's JetStream KV buckets, as code like the streams: idempotency keys of
//! `POST /v1/payments` (with a TTL) and the payments created through the API (kept),
//! created or updated idempotently at ingest's start.

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use paytrack_shared::subjects;

use crate::LayoutError;

/// The configuration of ingest's buckets: `idempotency_ttl` is how long a key (and the
/// first response it replays) is kept.
pub fn ingest_buckets(replicas: usize, idempotency_ttl: Duration) -> Vec<kv::Config> {
    let base = |bucket: &str, description: &str, max_age: Duration| kv::Config {
        bucket: bucket.to_owned(),
        description: description.to_owned(),
        history: 1,
        max_age,
        storage: stream::StorageType::File,
        num_replicas: replicas.max(1),
        ..Default::default()
    };
    vec![
        base(
            subjects::IDEMPOTENCY_BUCKET,
            "paytrack: Idempotency-Key claims and first responses of POST /v1/payments",
            idempotency_ttl,
        ),
        base(
            subjects::COMMANDED_BUCKET,
            "paytrack: terms of payments created through the API, for later commands",
            Duration::ZERO,
        ),
    ]
}

/// The stores of ingest's buckets, in the order of [`ingest_buckets`].
pub struct IngestBuckets {
    /// Idempotency claims and responses.
    pub idempotency: kv::Store,
    /// Payments created through the API.
    pub commanded: kv::Store,
}

/// Creates (or updates) ingest's buckets and opens them.
pub async fn ensure_ingest_buckets(
    js: &jetstream::Context,
    replicas: usize,
    idempotency_ttl: Duration,
) -> Result<IngestBuckets, LayoutError> {
    let mut stores = Vec::new();
    for config in ingest_buckets(replicas, idempotency_ttl) {
        let name = config.bucket.clone();
        let store = js
            .create_or_update_key_value(config)
            .await
            .map_err(|e| LayoutError::Stream {
                stream: format!("KV_{name}"),
                source: e.into(),
            })?;
        stores.push(store);
    }
    let mut stores = stores.into_iter();
    match (stores.next(), stores.next()) {
        (Some(idempotency), Some(commanded)) => Ok(IngestBuckets { idempotency, commanded }),
        _ => Err(LayoutError::Stream {
            stream: "ingest buckets".into(),
            source: "missing bucket".into(),
        }),
    }
}
