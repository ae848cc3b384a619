//! Every metric paytrack exports, with its kind and its `# HELP` text: one list, so
//! each series at `/metrics` says what it measures, the docs list the same names
//! (docs/telemetry.md, checked by a test), and alert rules and dashboards can be
//! checked against it.
//!
//! Names carry their unit: counters end in `_total`, durations in `_seconds`, sizes
//! in `_bytes`; a gauge that counts things names them (`_messages`, `_sessions`...).

/// What kind of series a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (`_total`).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations in buckets (`_bucket`, `_sum`, `_count`).
    Histogram,
}

/// One metric: its name, kind and what it means.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// The Prometheus name.
    pub name: &'static str,
    /// Its kind.
    pub kind: Kind,
    /// The `# HELP` text (labels named in it).
    pub help: &'static str,
}

const fn counter(name: &'static str, help: &'static str) -> Metric {
    Metric {
        name,
        kind: Kind::Counter,
        help,
    }
}

const fn gauge(name: &'static str, help: &'static str) -> Metric {
    Metric {
        name,
        kind: Kind::Gauge,
        help,
    }
}

const fn histogram(name: &'static str, help: &'static str) -> Metric {
    Metric {
        name,
        kind: Kind::Histogram,
        help,
    }
}

/// Every metric, grouped by where it is recorded.
pub const METRICS: &[Metric] = &[
    // HTTP (ingest, ws-edge, the admin listeners).
    histogram(
        "paytrack_http_request_duration_seconds",
        "Time to answer an HTTP request, by service, method, route (the route's template, `unmatched` for none) and status code.",
    ),
    counter(
        "paytrack_http_panics_total",
        "HTTP handlers that panicked (answered 500).",
    ),
    // End to end.
    histogram(
        "paytrack_webhook_to_event_seconds",
        "From a fact's acceptance at ingest to its transition: `stage=transition_published` when the reconciler appended it, `stage=frame_queued` when the edge queued its frame to a session.",
    ),
    counter(
        "paytrack_alerts_raised_total",
        "Alerts raised, by kind (unclear_pending, source_mismatch, trace_gap, dead_letter, sweep_quota, many_facts, dispute_opened, captured_after_failure, refund_failed, investigation_required).",
    ),
    // Consumers (every JetStream-reading service).
    gauge(
        "paytrack_consumer_pending_messages",
        "Messages stored and not yet delivered to a durable consumer (its num_pending), by stream and consumer; polled every 5 s.",
    ),
    gauge(
        "paytrack_consumer_ack_pending_messages",
        "Messages delivered to a durable consumer and not yet acknowledged (its num_ack_pending), by stream and consumer.",
    ),
    gauge(
        "paytrack_consumer_paused",
        "1 while a durable consumer is paused on the server, by stream and consumer.",
    ),
    counter(
        "paytrack_consumer_panics_total",
        "Message handlers that panicked (the message is retried or parked).",
    ),
    counter(
        "paytrack_consumer_failures_total",
        "Failed attempts to handle a message, by consumer and kind (transient, refused).",
    ),
    gauge(
        "paytrack_consumer_consecutive_failures",
        "Failures in a row of a consumer's messages (0 after a success), by consumer.",
    ),
    counter(
        "paytrack_consumer_parked_total",
        "Messages parked on PAYTRACK_DEAD after failing too often or being unreadable, by consumer.",
    ),
    counter(
        "paytrack_consumer_rewinds_total",
        "Durable consumers found past their stream's last sequence (the broker lost the stream's tail) and rewound, by stream and consumer.",
    ),
    // ingest.
    counter(
        "paytrack_ingest_webhooks_total",
        "Webhooks answered, by outcome (stored, bad_signature, malformed, ...).",
    ),
    counter(
        "paytrack_ingest_webhooks_parked_total",
        "Provider events parked until their provider reference is known, by provider.",
    ),
    gauge(
        "paytrack_ingest_parked_events",
        "Provider events parked now, by tenant.",
    ),
    counter(
        "paytrack_ingest_parked_refused_total",
        "Webhooks refused (429) because the tenant's parked events are at their quota, by tenant.",
    ),
    counter(
        "paytrack_ingest_commands_total",
        "Payment commands answered, by command and outcome.",
    ),
    counter(
        "paytrack_ingest_routed_total",
        "Payments routed to a provider, by provider.",
    ),
    counter(
        "paytrack_ingest_pushes_total",
        "Push API requests answered, by outcome.",
    ),
    // reconciler.
    counter(
        "paytrack_reconciler_facts_total",
        "Facts decided, by decision (applied, duplicate, refused, unmapped, stale, conflict).",
    ),
    counter(
        "paytrack_reconciler_many_facts_total",
        "Payments that passed the applied-fact list's length, by tenant.",
    ),
    counter(
        "paytrack_reconciler_status_queries_total",
        "Provider status queries made by the stuck-payment sweep, by result (answered, no_answer, unreadable).",
    ),
    gauge(
        "paytrack_sweep_tracked",
        "Payments the sweep tracks (not yet settled and persisted).",
    ),
    gauge(
        "paytrack_sweep_tracked_by_tenant",
        "Payments the sweep tracks, by tenant.",
    ),
    counter(
        "paytrack_sweep_quota_refused_total",
        "Payments not swept because their tenant's sweep quota was full, by tenant.",
    ),
    // ledger-projector.
    histogram(
        "paytrack_projector_batch_seconds",
        "Time from a batch of transitions being applied to its messages being settled.",
    ),
    counter("paytrack_projector_transitions_total", "Transitions newly persisted."),
    counter(
        "paytrack_projector_batch_failures_total",
        "Batches the database could not take (retried).",
    ),
    counter(
        "paytrack_projector_checkpoints_published_total",
        "Checkpoints acknowledged by JetStream as the projector published them.",
    ),
    counter(
        "paytrack_projector_checkpoints_drained_total",
        "Checkpoints published late by the drainer (their first publication failed).",
    ),
    counter(
        "paytrack_projector_return_windows_closed_total",
        "return_window_closed checkpoints published.",
    ),
    // ws-edge.
    gauge(
        "paytrack_edge_sessions_open",
        "Sessions connected now, by transport (websocket, sse, poll).",
    ),
    gauge(
        "paytrack_edge_sessions_current",
        "Sessions whose acknowledgements caught up with the previous heartbeat's positions (heartbeat-proven current), by transport.",
    ),
    counter("paytrack_edge_sessions_opened_total", "Sessions opened, by transport."),
    counter("paytrack_edge_sessions_closed_total", "Sessions closed, by close code."),
    counter(
        "paytrack_edge_sessions_stale_total",
        "Sessions found stale (behind for two heartbeats), by transport.",
    ),
    gauge("paytrack_edge_channels", "Channels subscribed now, over all sessions."),
    gauge(
        "paytrack_edge_feed_live",
        "1 while the edge's feed of a stream is live, by stream.",
    ),
    gauge(
        "paytrack_edge_feed_lag_seconds",
        "Time since the edge's feed of a stream last caught up with the stream's newest message, by stream.",
    ),
    counter(
        "paytrack_edge_feed_messages_total",
        "Messages the edge's feeds received, by stream.",
    ),
    counter(
        "paytrack_edge_stream_recreated_total",
        "Times a stream was found recreated (a new epoch), by stream.",
    ),
    gauge(
        "paytrack_edge_queued_bytes",
        "Bytes queued to sessions and not yet written, by edge.",
    ),
    gauge(
        "paytrack_edge_replay_slots",
        "JetStream reads (gets, replays) the edge runs at once for subscribes.",
    ),
    gauge("paytrack_edge_replays_running", "Replays running now."),
    gauge(
        "paytrack_edge_replay_buffered_messages",
        "Live messages held back while their session's replay runs.",
    ),
    counter("paytrack_edge_replays_total", "Replays started."),
    counter(
        "paytrack_edge_replay_rounds_total",
        "Rounds of reading the stream during replays.",
    ),
    counter("paytrack_edge_replayed_messages_total", "Messages sent by replays."),
    counter(
        "paytrack_edge_replays_refused_total",
        "Replays refused because every replay slot was busy.",
    ),
    counter(
        "paytrack_edge_subscribes_refused_total",
        "Subscribes refused (4029), by limit (rate, tenant).",
    ),
    counter(
        "paytrack_edge_presence_reads_limited_total",
        "Presence reads refused by their rate limit.",
    ),
];

/// The catalogued metric named `name` (a `_bucket`, `_sum` or `_count` series names
/// its histogram).
pub fn find(name: &str) -> Option<&'static Metric> {
    METRICS.iter().find(|m| m.name == name).or_else(|| {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))?;
        METRICS.iter().find(|m| m.name == base && m.kind == Kind::Histogram)
    })
}

/// Registers every metric's kind and help text with the installed recorder.
pub fn describe_all() {
    for metric in METRICS {
        match metric.kind {
            Kind::Counter => metrics::describe_counter!(metric.name, metric.help),
            Kind::Gauge => metrics::describe_gauge!(metric.name, metric.help),
            Kind::Histogram => metrics::describe_histogram!(metric.name, metric.help),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_carries_its_unit() {
        for metric in METRICS {
            assert!(metric.name.starts_with("paytrack_"), "{}", metric.name);
            assert!(!metric.help.is_empty(), "{}", metric.name);
            match metric.kind {
                Kind::Counter => assert!(metric.name.ends_with("_total"), "{}", metric.name),
                Kind::Histogram => assert!(
                    metric.name.ends_with("_seconds") || metric.name.ends_with("_bytes"),
                    "{}",
                    metric.name
                ),
                Kind::Gauge => assert!(!metric.name.ends_with("_total"), "{}", metric.name),
            }
            for bad in ["_ms", "_millis", "_secs"] {
                assert!(!metric.name.ends_with(bad), "{}", metric.name);
            }
        }
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = METRICS.iter().map(|m| m.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
    }

    #[test]
    fn docs_list_every_metric() {
        let docs = include_str!("../../../docs/telemetry.md");
        for metric in METRICS {
            assert!(
                docs.contains(&format!("`{}`", metric.name)),
                "docs/telemetry.md does not list {}",
                metric.name
            );
        }
    }

    #[test]
    fn histogram_series_name_their_histogram() {
        assert!(find("paytrack_projector_batch_seconds_bucket").is_some());
        assert!(find("paytrack_projector_transitions_total_count").is_none());
        assert!(find("paytrack_nope").is_none());
    }
}
