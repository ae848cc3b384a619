//! paytrack's JetStream layout as code: the streams, KV buckets and durable consumers
//! of the design, plus the few stream reads every service needs (a stream's epoch, a
//! subject filter's latest message).
//!
//! The layout is applied by one step as the NATS admin ([`apply_layout`]: `paytrack
//! layout`, the harness, the Kubernetes Job); no service user may create, change or
//! delete a stream. Each service verifies the layout at start ([`verify_layout`]),
//! waits while it does not exist yet and refuses to run on a wrong one.
//!
//! `nats/local.conf` beside this crate is the server configuration of the local stack;
//! its users and permissions are code in [`auth`].

pub mod auth;
pub mod backlog;
mod batches;
mod buckets;
mod consume;
mod delivery;
mod direct;
mod lanes;
pub mod overrun;
pub mod reader_accounts;
mod retry;
mod service;
mod verify;

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use paytrack_shared::subjects;

pub use crate::auth::{Credentials, Role};
pub use crate::batches::{consume_delivery_batches, pull_batches};
pub use crate::buckets::{
    IngestBuckets, PRESENCE_RETENTION, PROVIDER_REFS_MARKER_TTL, PROVIDER_REFS_RETENTION, bucket_configs, open_bucket,
    open_ingest_buckets,
};
pub use crate::consume::{Cause, HandleError, Panicked, catch_panic, consume, guarded};
pub use crate::delivery::{
    Delivery, OpenError, RetryPolicy, STALLED_AFTER_FAILURES, Supervisor, Traced, consume_deliveries_in_lanes,
    dead_headers, printable,
};
pub use crate::direct::{DirectReadError, KeyEntry, last_per_key};
pub use crate::lanes::{consume_in_lanes, lane_of};
pub use crate::reader_accounts::{ReaderAccount, apply_reader_layout};
pub use crate::retry::{NotStarted, RefuseWrongLayout, Stopped, retry_until_laid_out, retry_until_ready};
pub use crate::service::{AdminTask, ConsumerWatch, ServiceStart, StartError};
pub use crate::verify::{layout_streams, verify_layout};

/// Why the JetStream layout could not be applied or read.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// Could not reach the server.
    #[error("cannot connect to NATS: {0}")]
    Connect(#[from] async_nats::ConnectError),
    /// A stream could not be created or updated.
    #[error("stream {stream}: {source}")]
    Stream {
        /// The stream.
        stream: String,
        /// What the server said.
        source: async_nats::Error,
    },
    /// A consumer could not be created.
    #[error("consumer {consumer} on {stream}: {source}")]
    Consumer {
        /// The stream.
        stream: String,
        /// The consumer.
        consumer: String,
        /// What the server said.
        source: async_nats::Error,
    },
    /// A stream or bucket of the layout does not exist (yet): the layout step has not
    /// run. Services wait for it.
    #[error(
        "stream {stream} does not exist: the layout is applied by the NATS admin (`paytrack layout`), not by services"
    )]
    Missing {
        /// The stream.
        stream: String,
    },
    /// A stream exists with another configuration than the layout's (e.g. a source
    /// that rewrites other subjects into it). Services refuse to run on it.
    #[error(
        "stream {stream} is not laid out as paytrack expects ({differences}); refusing to run on it until the NATS admin re-applies the layout"
    )]
    Wrong {
        /// The stream.
        stream: String,
        /// What differs, field by field (`field: expected …, found …`).
        differences: String,
    },
    /// A read failed.
    #[error("read from {stream}: {source}")]
    Read {
        /// The stream.
        stream: String,
        /// What the server said.
        source: async_nats::Error,
    },
}

/// How the streams are laid out on this deployment's JetStream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Replicas of every stream: 1 on one node, 3 on a cluster.
    pub replicas: usize,
    /// How long each stream remembers a `Nats-Msg-Id` for de-duplication.
    pub windows: DuplicateWindows,
    /// How long ingest's idempotency bucket keeps a key (and the response it replays).
    pub idempotency_ttl: Duration,
    /// How long a payment claim is kept after its last write (the reconciler rewrites
    /// a claim it still uses well within it).
    pub claims_max_age: Duration,
}

/// How long each stream remembers message ids. JetStream keeps about 233 bytes of
/// server memory per remembered id, so each window is sized for the retries it must
/// absorb, not "as long as possible" (docs/operations.md: the memory it costs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DuplicateWindows {
    /// PAYTRACK_IN: providers' quick retries of a webhook delivery (and callers'
    /// retries of a command). A repeat after it is stored again and recognised by
    /// the reconciler and the projector.
    pub inbound: Duration,
    /// PAYTRACK_PUSH: a backend's retries of one push.
    pub push: Duration,
    /// Streams only paytrack's services write (status, outcome, alert, session): a
    /// writer's own retry after a lost ack. Correctness never depends on it.
    pub internal: Duration,
}

impl Layout {
    /// The layout the settings ask for.
    pub fn from_settings(settings: &paytrack_shared::config::Settings) -> Layout {
        Layout {
            replicas: settings.nats_replicas,
            windows: DuplicateWindows {
                inbound: Duration::from_secs(settings.nats_duplicate_window_in_secs),
                push: Duration::from_secs(settings.nats_duplicate_window_push_secs),
                internal: Duration::from_secs(settings.nats_duplicate_window_secs),
            },
            idempotency_ttl: Duration::from_secs(settings.idempotency_ttl_secs),
            claims_max_age: Duration::from_secs(settings.reconciler_claims_max_age_secs.max(1)),
        }
    }
}

impl LayoutError {
    /// The layout exists but is wrong: waiting will not fix it.
    pub fn is_wrong(&self) -> bool {
        matches!(self, LayoutError::Wrong { .. })
    }

    /// For `map_err`: a failure to create, update or read `stream`, naming it, so each
    /// call on a stream does not spell the variant out again.
    pub fn on_stream<E: Into<async_nats::Error>>(stream: impl Into<String>) -> impl FnOnce(E) -> LayoutError {
        let stream = stream.into();
        move |source| LayoutError::Stream {
            stream,
            source: source.into(),
        }
    }
}

/// The streams readers watch, each with a mirror in every reader's account that the
/// reader reads history from ([`reader_stream`], [`ReaderAccount::mirror_configs`]).
pub const READER_SOURCES: [&str; 3] = [
    subjects::STREAM_STATUS,
    subjects::STREAM_OUTCOME,
    subjects::STREAM_ALERT,
];

/// How many consumers a reader may hold on one of its mirrors. NATS has no per-user
/// count of consumers; this cap, on streams in the reader's own account, is what
/// bounds them, and a flood of reader consumers fills it, never the services' streams.
pub const READER_CONSUMERS: i32 = 256;

/// The longest a reader's consumer may stay without a pull before the server deletes
/// it (a reader cannot ask for more). It holds for a consumer given a durable name
/// too (the server applies the stream's limit to every consumer), so no reader
/// consumer is durable, and an abandoned one frees its place in [`READER_CONSUMERS`]
/// within this time.
pub const READER_INACTIVE_LIMIT: Duration = Duration::from_secs(300);

/// The mirror of `source` that readers read history from, e.g. `PAYTRACK_STATUS_READ`.
/// A mirror keeps its source's sequences, so positions read there are the source's.
pub fn reader_stream(source: &str) -> String {
    format!("{source}_READ")
}

/// The durable consumer the reconciler reads `PAYTRACK_IN` with.
pub const CONSUMER_RECONCILER: &str = "reconciler";
/// The durable consumer the projector reads transitions with.
pub const CONSUMER_PROJECTOR_STATUS: &str = "ledger-projector-status";
/// The durable consumer the projector reads raw facts (evidence) with.
pub const CONSUMER_PROJECTOR_EVIDENCE: &str = "ledger-projector-evidence";
/// The durable consumer the projector reads session audit with.
pub const CONSUMER_PROJECTOR_SESSIONS: &str = "ledger-projector-sessions";
/// The durable consumer the projector reads fact outcomes with.
pub const CONSUMER_PROJECTOR_OUTCOMES: &str = "ledger-projector-outcomes";
/// The durable consumer the projector stores payment alerts with.
pub const CONSUMER_PROJECTOR_ALERTS: &str = "ledger-projector-alerts";

/// Connects to `url` (one server, or a cluster's servers comma-separated) with the
/// client name given, as `credentials`' user when given (with
/// that user's inbox prefix, the only replies its permissions let it read). The
/// connection is made in the background and kept up across server restarts, so a
/// service may start before the server; callers find out it is usable when their
/// first request (applying the layout) succeeds.
pub async fn connect(
    url: &str,
    name: &str,
    credentials: Option<&Credentials>,
) -> Result<async_nats::Client, LayoutError> {
    use secrecy::ExposeSecret;
    let mut options = async_nats::ConnectOptions::new();
    if let Some(credentials) = credentials {
        options = async_nats::ConnectOptions::with_user_and_password(
            credentials.role.user().to_owned(),
            credentials.password.expose_secret().to_owned(),
        )
        .custom_inbox_prefix(credentials.role.inbox_prefix());
    } else {
        tracing::warn!(
            client = name,
            "no NATS credentials configured; connecting without a user"
        );
    }
    let options = options
        .name(name)
        .retry_on_initial_connect()
        .event_callback(|event| async move {
            tracing::info!(%event, "nats connection event");
        });
    // `url` may list a cluster's nodes, comma-separated; a malformed entry is left to
    // the client to refuse with its own error.
    let servers: Result<Vec<async_nats::ServerAddr>, _> = url
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect();
    let client = match servers {
        Ok(servers) if !servers.is_empty() => options.connect(servers).await?,
        _ => options.connect(url).await?,
    };
    Ok(client)
}

/// A JetStream context whose requests (publish acks, gets, consumer calls) give up
/// after `timeout`, so work in flight when a server dies is retried promptly.
pub fn jetstream(client: async_nats::Client, timeout: Duration) -> jetstream::Context {
    jetstream::ContextBuilder::new().timeout(timeout).build(client)
}

/// The configuration of every paytrack stream for `replicas` replicas.
pub fn stream_configs(layout: &Layout) -> Vec<stream::Config> {
    let base = |name: &str, subjects: Vec<&str>, max_age: Duration, duplicate_window: Duration| stream::Config {
        name: name.to_owned(),
        subjects: subjects.into_iter().map(str::to_owned).collect(),
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        num_replicas: layout.replicas,
        max_age,
        duplicate_window,
        allow_direct: true,
        deny_delete: true,
        ..Default::default()
    };
    const DAY: u64 = 86_400;
    let (windows, year) = (&layout.windows, Duration::from_secs(365 * DAY));
    // (stream, subjects, max_age, duplicate window), one row a stream.
    #[rustfmt::skip]
    let streams = [
        // Evidence: raw facts are kept for a year; the projector copies them to PostgreSQL.
        (subjects::STREAM_IN, vec![subjects::IN_ALL], year, windows.inbound),
        // The history every payment channel reads; kept (max_age 0: forever).
        (subjects::STREAM_STATUS, vec![subjects::STATUS_ALL, subjects::CHECKPOINT_ALL], Duration::ZERO, windows.internal),
        // What each fact did (applied, duplicate, refused, unmapped); the projector
        // copies it to PostgreSQL, so a year like the facts themselves.
        (subjects::STREAM_OUTCOME, vec![subjects::OUTCOME_ALL], year, windows.internal),
        (subjects::STREAM_PUSH, vec![subjects::PUSH_ALL], Duration::from_secs(DAY), windows.push),
        // Alerts and operators' acknowledgements of them: the projector copies them to
        // PostgreSQL, and a rebuild restores them from here, so a year like the facts.
        (subjects::STREAM_ALERT, vec![subjects::ALERT_ALL], year, windows.internal),
        (subjects::STREAM_SESSION, vec![subjects::SESSION_ALL], Duration::from_secs(7 * DAY), windows.internal),
        // Parked messages wait 30 days for a person (their alerts are kept longer).
        (subjects::STREAM_DEAD, vec![subjects::DEAD_ALL], Duration::from_secs(30 * DAY), windows.internal),
    ];
    streams
        .into_iter()
        .map(|(name, subjects, max_age, duplicate_window)| base(name, subjects, max_age, duplicate_window))
        .collect()
}

/// The layout step: creates or updates every stream and KV bucket of the layout. Only
/// the admin user may (services verify with [`verify_layout`]); safe to repeat.
pub async fn apply_layout(js: &jetstream::Context, layout: &Layout) -> Result<(), LayoutError> {
    for config in stream_configs(layout) {
        let stream = config.name.clone();
        js.create_or_update_stream(config)
            .await
            .map_err(LayoutError::on_stream(stream))?;
    }
    for config in bucket_configs(layout) {
        let stream = format!("KV_{}", config.bucket);
        js.create_or_update_key_value(config)
            .await
            .map_err(LayoutError::on_stream(stream))?;
    }
    Ok(())
}

/// A durable, explicitly acknowledged pull consumer, with the default ack wait
/// (30 s; a service takes its configured one through [`RetryPolicy::durable_consumer`]).
pub fn durable_consumer(name: &str, filter: &str) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(name.to_owned()),
        filter_subject: filter.to_owned(),
        ack_policy: consumer::AckPolicy::Explicit,
        deliver_policy: consumer::DeliverPolicy::All,
        ack_wait: Duration::from_secs(30),
        max_deliver: -1,
        max_ack_pending: 1_000,
        ..Default::default()
    }
}

/// Reads `stream`'s handle (and its cached info), naming the stream in the error.
pub async fn get_stream(js: &jetstream::Context, stream: &str) -> Result<stream::Stream, LayoutError> {
    js.get_stream(stream).await.map_err(LayoutError::on_stream(stream))
}

/// Gets or creates a durable consumer on `stream`.
pub async fn ensure_consumer(
    js: &jetstream::Context,
    stream: &str,
    config: consumer::pull::Config,
) -> Result<consumer::PullConsumer, LayoutError> {
    let handle = get_stream(js, stream).await?;
    let name = config.durable_name.clone().unwrap_or_default();
    handle
        .get_or_create_consumer(&name, config)
        .await
        .map_err(|e| LayoutError::Consumer {
            stream: stream.to_owned(),
            consumer: name,
            source: e.into(),
        })
}

/// The epoch of a stream: its creation time in hex nanoseconds. It changes exactly
/// when the stream is recreated, which is when its sequences could restart.
pub fn epoch_of(info: &stream::Info) -> String {
    format!("{:x}", info.created.unix_timestamp_nanos())
}

/// The newest message matching `filter` (wildcards allowed), or None.
pub async fn last_message(
    stream: &stream::Stream,
    filter: &str,
) -> Result<Option<jetstream::message::StreamMessage>, LayoutError> {
    match stream.get_last_raw_message_by_subject(filter).await {
        Ok(message) => Ok(Some(message)),
        Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(LayoutError::Read {
            stream: stream.cached_info().config.name.clone(),
            source: e.into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout the unit tests of this crate check: `replicas` replicas, an hour's
    /// inbound window, ten minutes' push window, two minutes' internal window.
    pub(crate) fn test_layout(replicas: usize) -> Layout {
        Layout {
            replicas,
            windows: DuplicateWindows {
                inbound: Duration::from_secs(3_600),
                push: Duration::from_secs(600),
                internal: Duration::from_secs(120),
            },
            idempotency_ttl: Duration::from_secs(86_400),
            claims_max_age: Duration::from_secs(86_400),
        }
    }

    #[test]
    fn transitions_and_checkpoints_share_one_stream() {
        let configs = stream_configs(&test_layout(3));
        let status = configs.iter().find(|c| c.name == subjects::STREAM_STATUS).unwrap();
        assert_eq!(status.subjects, vec!["paytrack.status.>", "paytrack.checkpoint.>"]);
        assert!(configs.iter().all(|c| c.num_replicas == 3 && c.allow_direct));
        // The readers' mirrors live in the readers' accounts, not among the services' streams.
        assert!(configs.iter().all(|c| c.mirror.is_none() && !c.name.ends_with("_READ")));
        // No two streams may claim the same subjects.
        let mut all: Vec<_> = configs.iter().flat_map(|c| c.subjects.clone()).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 8);
        let window = |name: &str| configs.iter().find(|c| c.name == name).map(|c| c.duplicate_window);
        assert_eq!(window(subjects::STREAM_IN), Some(Duration::from_secs(3_600)));
        assert_eq!(window(subjects::STREAM_STATUS), Some(Duration::from_secs(120)));
        assert_eq!(window(subjects::STREAM_OUTCOME), Some(Duration::from_secs(120)));
        assert_eq!(window(subjects::STREAM_PUSH), Some(Duration::from_secs(600)));
    }

    /// A rebuild restores alerts and their acknowledgements from PAYTRACK_ALERT
    /// alongside the evidence from PAYTRACK_IN: the alerts are kept at least as long.
    #[test]
    fn alerts_are_kept_as_long_as_the_evidence() {
        let configs = stream_configs(&test_layout(1));
        let max_age = |name: &str| configs.iter().find(|c| c.name == name).map(|c| c.max_age);
        assert!(max_age(subjects::STREAM_ALERT) >= max_age(subjects::STREAM_IN));
    }

    /// A cluster's nodes are given as one comma-separated setting, so a service that
    /// starts while one node is down still reaches the others.
    #[tokio::test]
    async fn a_comma_separated_list_of_servers_is_accepted_and_a_malformed_one_refused() {
        let list = connect(
            "nats://127.0.0.1:1, nats://127.0.0.1:2,nats://127.0.0.1:3",
            "test",
            None,
        )
        .await;
        assert!(list.is_ok(), "{:?}", list.err());
        let malformed = connect("nats://127.0.0.1:1,nats://127.0.0.1:port", "test", None).await;
        assert!(malformed.is_err());
    }
}
