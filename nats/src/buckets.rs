//! paytrack's JetStream KV buckets, as code like the streams: created by the layout
//! step ([`crate::apply_layout`]) and only opened by the services that use them.
//!
//! - ingest: idempotency keys of `POST /v1/payments` (with a TTL), the payments
//!   created through the API (kept), provider references with the events parked
//!   until their payment is known;
//! - the reconciler: payment claims (which merchant subject holds a history) and the
//!   stuck-payment sweep;
//! - ws-edge: presence (open sessions and live edges).

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use paytrack_shared::subjects;

use crate::{Layout, LayoutError};

/// How long a provider reference (and an event parked on it) is kept: longer than any
/// provider retries a webhook or reports on a payment.
pub const PROVIDER_REFS_RETENTION: Duration = Duration::from_secs(400 * 24 * 3600);

/// How long the marker of a purged provider-reference key lives: the shortest a
/// marker may, so a drained parked event stops counting against its tenant's quota
/// at once.
pub const PROVIDER_REFS_MARKER_TTL: Duration = Duration::from_secs(1);

/// How long a presence key lives without being rewritten: an edge rewrites its
/// sessions' keys well within it, so a dead edge's keys expire by themselves.
pub const PRESENCE_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// The configuration of every bucket of the layout.
pub fn bucket_configs(layout: &Layout) -> Vec<kv::Config> {
    let base = |bucket: &str, description: &str, max_age: Duration| kv::Config {
        bucket: bucket.to_owned(),
        description: description.to_owned(),
        history: 1,
        max_age,
        storage: stream::StorageType::File,
        num_replicas: layout.replicas.max(1),
        ..Default::default()
    };
    vec![
        base(
            subjects::IDEMPOTENCY_BUCKET,
            "paytrack: Idempotency-Key claims and first responses of POST /v1/payments",
            layout.idempotency_ttl,
        ),
        base(
            subjects::COMMANDED_BUCKET,
            "paytrack: terms of payments created through the API, for later commands",
            Duration::ZERO,
        ),
        kv::Config {
            // Purges leave markers that expire, so parked events can be counted.
            limit_markers: Some(PROVIDER_REFS_MARKER_TTL),
            ..base(
                subjects::PROVIDER_REFS_BUCKET,
                "paytrack: provider reference → payment, and events parked until it is known",
                PROVIDER_REFS_RETENTION,
            )
        },
        base(
            subjects::CLAIMS_BUCKET,
            "paytrack: the merchant subject of each payment's history",
            layout.claims_max_age,
        ),
        base(
            subjects::SWEEP_BUCKET,
            "paytrack: payments the reconciler sweeps until settled and persisted",
            Duration::ZERO,
        ),
        base(
            subjects::PRESENCE_BUCKET,
            "paytrack: open sessions per user and device, and which edges are alive",
            PRESENCE_RETENTION,
        ),
    ]
}

/// The stream a bucket is stored in, as the layout step creates it (the same
/// translation async-nats makes): what [`crate::verify_layout`] expects to find.
pub(crate) fn bucket_stream(config: &kv::Config) -> stream::Config {
    stream::Config {
        name: format!("KV_{}", config.bucket),
        subjects: vec![format!("$KV.{}.>", config.bucket)],
        max_messages_per_subject: config.history.max(1),
        max_age: config.max_age,
        storage: config.storage,
        num_replicas: config.num_replicas.max(1),
        allow_rollup: true,
        deny_delete: true,
        deny_purge: false,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    }
}

/// Opens a bucket of the layout (never creates it).
pub async fn open_bucket(js: &jetstream::Context, bucket: &str) -> Result<kv::Store, LayoutError> {
    js.get_key_value(bucket).await.map_err(|e| LayoutError::Read {
        stream: format!("KV_{bucket}"),
        source: e.into(),
    })
}

/// The stores of ingest's idempotency and commanded-payments buckets.
pub struct IngestBuckets {
    /// Idempotency claims and responses.
    pub idempotency: kv::Store,
    /// Payments created through the API.
    pub commanded: kv::Store,
}

/// Opens ingest's idempotency and commanded-payments buckets.
pub async fn open_ingest_buckets(js: &jetstream::Context) -> Result<IngestBuckets, LayoutError> {
    Ok(IngestBuckets {
        idempotency: open_bucket(js, subjects::IDEMPOTENCY_BUCKET).await?,
        commanded: open_bucket(js, subjects::COMMANDED_BUCKET).await?,
    })
}
