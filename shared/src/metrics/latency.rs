//! Webhook-to-event latency: `paytrack_webhook_to_event_seconds{stage}`, from the
//! moment ingest accepted a webhook (its fact's `received_at`) to
//! - `transition_published`: the reconciler appended the transition it caused;
//! - `frame_queued`: the edge queued that transition's frame to a session.
//!
//! The reconciler stamps the acceptance time on the transition's NATS message
//! ([`ACCEPTED_AT`]), so the edge measures without reading the fact. Clocks of
//! different machines are compared, so a negative difference (skew) counts as 0.

use chrono::{DateTime, Utc};

/// NATS header of a transition caused by a webhook: when ingest accepted the webhook,
/// in Unix milliseconds.
pub const ACCEPTED_AT: &str = "Paytrack-Accepted-At";
/// The histogram's name.
pub const WEBHOOK_TO_EVENT: &str = "paytrack_webhook_to_event_seconds";
/// Stage: the reconciler appended the transition.
pub const TRANSITION_PUBLISHED: &str = "transition_published";
/// Stage: the edge queued the transition's frame to a session.
pub const FRAME_QUEUED: &str = "frame_queued";

/// Writes `accepted_at` into `headers` as [`ACCEPTED_AT`].
pub fn stamp(headers: &mut async_nats::HeaderMap, accepted_at: DateTime<Utc>) {
    headers.insert(ACCEPTED_AT, accepted_at.timestamp_millis().to_string().as_str());
}

/// Records the time from `accepted_at` to now at `stage`.
pub fn observe(stage: &'static str, accepted_at: DateTime<Utc>) {
    let elapsed = (Utc::now() - accepted_at).to_std().unwrap_or_default();
    metrics::histogram!(WEBHOOK_TO_EVENT, "stage" => stage).record(elapsed.as_secs_f64());
}

/// Records the time from the [`ACCEPTED_AT`] stamp in `headers` to now at `stage`;
/// nothing when the message carries no (readable) stamp.
pub fn observe_stamped(stage: &'static str, headers: &async_nats::HeaderMap) {
    let accepted_at = headers
        .get(ACCEPTED_AT)
        .and_then(|value| value.as_str().parse::<i64>().ok())
        .and_then(DateTime::from_timestamp_millis);
    if let Some(accepted_at) = accepted_at {
        observe(stage, accepted_at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_reads_back_as_the_same_millisecond() {
        let at = DateTime::from_timestamp_millis(1_760_000_000_123).unwrap_or_default();
        let mut headers = async_nats::HeaderMap::new();
        stamp(&mut headers, at);
        assert_eq!(
            headers.get(ACCEPTED_AT).map(|v| v.as_str().to_owned()),
            Some("1760000000123".to_owned())
        );
    }
}
