//! The prologue and epilogue every consumer shares, written once: read the
//! message's position, decode its envelope, continue its trace; then acknowledge by
//! outcome, retry with backoff, and park what cannot be handled on a dead-letter
//! subject (with an alert) so that one poisonous message never stalls a consumer.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer, message::PublishMessage};
use chrono::Utc;
use paytrack_shared::envelope::{
    self, DeadLetter, ENVELOPE_VERSION, FactOutcome, InboundFact, SessionAudit, Transition, Versioned,
};
use paytrack_shared::health::Readiness;
use paytrack_shared::telemetry::{self, NatsHeaders};
use paytrack_shared::{PaymentId, TenantId, subjects};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, field};

use crate::consume::{HandleError, guarded};

/// Headers a parked message carries beside the original ones.
pub mod dead_headers {
    /// The stream the message was read from.
    pub const STREAM: &str = "Paytrack-Dead-Stream";
    /// The durable consumer that gave up on it.
    pub const CONSUMER: &str = "Paytrack-Dead-Consumer";
    /// Its original subject.
    pub const SUBJECT: &str = "Paytrack-Dead-Subject";
    /// Its sequence in the original stream.
    pub const SEQ: &str = "Paytrack-Dead-Seq";
    /// How many times it was delivered before it was parked.
    pub const DELIVERED: &str = "Paytrack-Dead-Delivered";
    /// The last error (control characters escaped, at most 512 characters).
    pub const ERROR: &str = "Paytrack-Dead-Error";
}

/// Consecutive failed attempts (no success between them) after which a consumer
/// counts as stalled and its service reports not ready.
pub const STALLED_AFTER_FAILURES: u32 = 3;

/// Envelopes say which tenant and payment they concern, so the shared prologue can
/// put both on the span of every log line.
pub trait Traced {
    /// The tenant the message belongs to.
    fn tenant(&self) -> &TenantId;
    /// The payment it concerns, if any.
    fn payment_id(&self) -> Option<&PaymentId>;
}

impl Traced for InboundFact {
    fn tenant(&self) -> &TenantId {
        &self.tenant
    }
    fn payment_id(&self) -> Option<&PaymentId> {
        Some(&self.payment_id)
    }
}

impl Traced for Transition {
    fn tenant(&self) -> &TenantId {
        &self.tenant
    }
    fn payment_id(&self) -> Option<&PaymentId> {
        Some(&self.payment_id)
    }
}

impl Traced for FactOutcome {
    fn tenant(&self) -> &TenantId {
        &self.tenant
    }
    fn payment_id(&self) -> Option<&PaymentId> {
        Some(&self.payment_id)
    }
}

impl Traced for paytrack_shared::envelope::Alert {
    fn tenant(&self) -> &TenantId {
        &self.tenant
    }
    fn payment_id(&self) -> Option<&PaymentId> {
        Some(&self.payment_id)
    }
}

impl Traced for paytrack_shared::envelope::AlertAck {
    fn tenant(&self) -> &TenantId {
        &self.tenant
    }
    fn payment_id(&self) -> Option<&PaymentId> {
        None
    }
}

impl Traced for SessionAudit {
    fn tenant(&self) -> &TenantId {
        &self.tenant
    }
    fn payment_id(&self) -> Option<&PaymentId> {
        None
    }
}

/// One message, opened: its position, how often it was delivered, its decoded
/// envelope and the span (continuing the producer's trace) to handle it in.
#[derive(Debug)]
pub struct Delivery<T> {
    /// The message's sequence in its stream (its position, and a natural key).
    pub stream_seq: u64,
    /// How many times JetStream has delivered it, this time included.
    pub delivered: i64,
    /// The decoded envelope.
    pub envelope: T,
    /// The handling span: `consumer`, `stream_seq`, `delivered`, `tenant`,
    /// `payment_id` and `trace_id` (continued from the `traceparent` header).
    pub span: tracing::Span,
}

/// Why a message could not be opened; it can never be handled, so it is parked at once.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The message carries no JetStream metadata (not from a JetStream consumer).
    #[error("no JetStream metadata: {0}")]
    Metadata(String),
    /// The payload is not an envelope this build reads.
    #[error(transparent)]
    Envelope(#[from] envelope::EnvelopeError),
}

impl<T: DeserializeOwned + Versioned + Traced> Delivery<T> {
    /// Opens `message` as read by `consumer`.
    pub fn open(message: &jetstream::Message, consumer: &str) -> Result<Delivery<T>, OpenError> {
        let info = message.info().map_err(|e| OpenError::Metadata(e.to_string()))?;
        let (stream_seq, delivered) = (info.stream_sequence, info.delivered);
        let envelope: T = envelope::decode(&message.payload)?;
        let span = tracing::info_span!(
            "consume",
            consumer,
            stream_seq,
            delivered,
            trace_id = field::Empty,
            tenant = %envelope.tenant(),
            payment_id = field::Empty,
        );
        if let Some(payment) = envelope.payment_id() {
            span.record("payment_id", payment.as_str());
        }
        if let Some(headers) = &message.headers {
            telemetry::continue_from(&span, &NatsHeaders(headers));
        }
        telemetry::record_trace_id(&span);
        Ok(Delivery {
            stream_seq,
            delivered,
            envelope,
            span,
        })
    }
}

/// How often a failing message is retried, and how fast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Deliveries before a message that keeps failing is parked (at least 1).
    pub max_deliveries: u32,
    /// Delay before the second delivery; it doubles for each one after.
    pub first_delay: Duration,
    /// The longest delay between two deliveries.
    pub max_delay: Duration,
    /// How long a delivered message may stay unacknowledged before JetStream
    /// delivers it again: the durable consumers are created with it.
    pub ack_wait: Duration,
}

impl RetryPolicy {
    /// The policy the settings ask for.
    pub fn from_settings(settings: &paytrack_shared::config::Settings) -> RetryPolicy {
        RetryPolicy {
            max_deliveries: settings.consumer_max_deliveries.max(1),
            first_delay: Duration::from_millis(settings.consumer_retry_ms),
            max_delay: Duration::from_secs(30),
            ack_wait: Duration::from_millis(settings.consumer_ack_wait_ms.max(1)),
        }
    }

    /// A durable, explicitly acknowledged pull consumer ([`crate::durable_consumer`])
    /// with this policy's ack wait.
    pub fn durable_consumer(&self, name: &str, filter: &str) -> async_nats::jetstream::consumer::pull::Config {
        async_nats::jetstream::consumer::pull::Config {
            ack_wait: self.ack_wait,
            ..crate::durable_consumer(name, filter)
        }
    }

    /// The delay before redelivering a message delivered `delivered` times.
    pub fn delay(&self, delivered: i64) -> Duration {
        let doublings = u32::try_from(delivered.saturating_sub(1).clamp(0, 16)).unwrap_or(16);
        self.first_delay.saturating_mul(1 << doublings).min(self.max_delay)
    }

    /// Whether a message delivered `delivered` times has had its last chance.
    fn exhausted(&self, delivered: i64) -> bool {
        delivered >= i64::from(self.max_deliveries)
    }
}

/// What one consumer needs to settle its messages: where to park them, how to
/// retry, and the readiness to mark while it keeps failing.
pub struct Supervisor {
    js: jetstream::Context,
    stream: String,
    pub(crate) consumer: String,
    retry: RetryPolicy,
    readiness: Readiness,
    consecutive_failures: AtomicU32,
}

impl Supervisor {
    /// A supervisor for durable `consumer` on `stream`.
    pub fn new(js: jetstream::Context, stream: &str, consumer: &str, retry: RetryPolicy, readiness: Readiness) -> Self {
        Supervisor {
            js,
            stream: stream.to_owned(),
            consumer: consumer.to_owned(),
            retry,
            readiness,
            consecutive_failures: AtomicU32::new(0),
        }
    }

    fn succeeded(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
        metrics::gauge!("paytrack_consumer_consecutive_failures", "consumer" => self.consumer.clone()).set(0.0);
        self.readiness.set_consumer_stalled(&self.consumer, false);
    }

    fn failed(&self, kind: &'static str) {
        let n = self
            .consecutive_failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        metrics::counter!("paytrack_consumer_failures_total", "consumer" => self.consumer.clone(), "kind" => kind)
            .increment(1);
        metrics::gauge!("paytrack_consumer_consecutive_failures", "consumer" => self.consumer.clone())
            .set(f64::from(n));
        if n >= STALLED_AFTER_FAILURES {
            self.readiness.set_consumer_stalled(&self.consumer, true);
        }
    }

    /// Acknowledges `message` by how handling it went: done (ack); transient (redeliver
    /// after a growing delay, until the policy's last delivery); poison or out of
    /// deliveries (park, then terminate).
    pub async fn settle(&self, message: &jetstream::Message, delivered: i64, result: Result<(), HandleError>) {
        let ack = match result {
            Ok(()) => {
                self.succeeded();
                AckKind::Ack
            }
            Err(reason @ HandleError::Transient { .. }) if !self.retry.exhausted(delivered) => {
                self.failed("transient");
                let delay = self.retry.delay(delivered);
                tracing::warn!(%reason, delivered, ?delay, "transient failure; the message will be redelivered");
                AckKind::Nak(Some(delay))
            }
            Err(error) => {
                self.failed(match error {
                    HandleError::Poison { .. } => "poison",
                    HandleError::Transient { .. } => "transient",
                });
                self.park_or_retry(message, delivered, &error.to_string()).await
            }
        };
        if let Err(error) = message.ack_with(ack).await {
            tracing::warn!(%error, "ack failed; the message will be redelivered and handled idempotently");
        }
    }

    async fn park_or_retry(&self, message: &jetstream::Message, delivered: i64, reason: &str) -> AckKind {
        match self.park(message, delivered, reason).await {
            Ok(dead_subject) => {
                metrics::counter!("paytrack_consumer_parked_total", "consumer" => self.consumer.clone()).increment(1);
                tracing::error!(
                    %reason,
                    delivered,
                    subject = %message.subject,
                    %dead_subject,
                    "message parked on the dead-letter subject; moving on"
                );
                AckKind::Term
            }
            Err(error) => {
                tracing::error!(%error, %reason, "cannot park the message; it will be redelivered");
                AckKind::Nak(Some(self.retry.delay(delivered)))
            }
        }
    }

    /// Copies `message` to `paytrack.dead.<stream>.<consumer>` (original headers and
    /// payload, plus where it came from and why it was parked), then raises a
    /// `dead_letter` alert for its tenant. Both are de-duplicated by the original
    /// sequence, so parking again after a lost ack adds nothing.
    async fn park(
        &self,
        message: &jetstream::Message,
        delivered: i64,
        reason: &str,
    ) -> Result<String, async_nats::Error> {
        let seq = message.info().map(|i| i.stream_sequence).ok();
        let dead_subject = subjects::dead_letter(&self.stream, &self.consumer);
        let reason = printable(reason, 512);
        let mut headers = async_nats::HeaderMap::new();
        for (name, values) in message.headers.iter().flat_map(|h| h.iter()) {
            // The original's de-duplication and concurrency headers would apply here.
            if AsRef::<str>::as_ref(name).starts_with("Nats-") {
                continue;
            }
            for value in values {
                headers.append(name.clone(), value.clone());
            }
        }
        headers.insert(dead_headers::STREAM, self.stream.as_str());
        headers.insert(dead_headers::CONSUMER, self.consumer.as_str());
        headers.insert(dead_headers::SUBJECT, message.subject.as_str());
        headers.insert(dead_headers::DELIVERED, delivered.to_string().as_str());
        headers.insert(dead_headers::ERROR, reason.as_str());
        if let Some(seq) = seq {
            headers.insert(dead_headers::SEQ, seq.to_string().as_str());
        }
        let mut dead = PublishMessage::build()
            .headers(headers)
            .payload(message.payload.clone());
        if let Some(seq) = seq {
            dead = dead.message_id(paytrack_shared::msg_id::dead_letter(&self.stream, &self.consumer, seq));
        }
        self.js.send_publish(dead_subject.clone(), dead).await?.await?;

        let tenant = subjects::tenant_of(&message.subject);
        let alert = DeadLetter {
            v: ENVELOPE_VERSION,
            kind: "dead_letter".to_owned(),
            tenant: tenant.clone(),
            stream: self.stream.clone(),
            consumer: self.consumer.clone(),
            subject: message.subject.to_string(),
            stream_seq: seq,
            delivered,
            error: reason,
            dead_subject: dead_subject.clone(),
            parked_at: Utc::now(),
        };
        let mut alert_message = PublishMessage::build().payload(envelope::encode(&alert));
        if let Some(seq) = seq {
            alert_message =
                alert_message.message_id(paytrack_shared::msg_id::dead_letter(&self.stream, &self.consumer, seq));
        }
        let alert_subject = subjects::alert(tenant.as_ref(), subjects::ALERT_DEAD_LETTER);
        self.js.send_publish(alert_subject, alert_message).await?.await?;
        paytrack_shared::metrics::alert_raised(subjects::ALERT_DEAD_LETTER);
        Ok(dead_subject)
    }
}

/// `text` with control characters escaped (`\u{0}`) and cut to `max` characters, so
/// it fits a header or a TEXT column whatever it held.
pub fn printable(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
        if out.chars().count() >= max {
            break;
        }
    }
    out
}

/// [`crate::consume`] with the shared prologue and epilogue: each message is opened as a
/// [`Delivery`] of `T` (one that cannot be opened is parked at once), handed to
/// `handle` inside its span, and settled by the [`Supervisor`]. A `handle` that
/// panics on a message is poison: the message is parked with an alert and the
/// consumer goes on. `lanes` messages are handled at once: messages of one subject
/// are handled in delivery order, one after another (see [`crate::consume_in_lanes`]);
/// [`NonZeroUsize::MIN`] handles one message at a time.
pub async fn consume_deliveries_in_lanes<T, F, Fut>(
    consumer: consumer::PullConsumer,
    shutdown: CancellationToken,
    supervisor: Supervisor,
    lanes: NonZeroUsize,
    handle: F,
) where
    T: DeserializeOwned + Versioned + Traced,
    F: Fn(Delivery<T>) -> Fut,
    Fut: std::future::Future<Output = Result<(), HandleError>>,
{
    let supervisor = &supervisor;
    let handle = &handle;
    crate::consume_in_lanes(consumer, shutdown, lanes, |message| async move {
        let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
        let result = match Delivery::<T>::open(&message, &supervisor.consumer) {
            Ok(delivery) => {
                let span = delivery.span.clone();
                guarded(async move { handle(delivery).await }).instrument(span).await
            }
            Err(error) => Err(HandleError::poison("open the message", error)),
        };
        supervisor.settle(&message, delivered, result).await;
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_and_end() {
        let policy = RetryPolicy {
            max_deliveries: 4,
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(300),
            ack_wait: Duration::from_secs(30),
        };
        let delays: Vec<_> = (1..=4).map(|n| policy.delay(n).as_millis()).collect();
        assert_eq!(delays, vec![100, 200, 300, 300]);
        assert!(!policy.exhausted(3));
        assert!(policy.exhausted(4));
        assert_eq!(policy.delay(i64::MAX), Duration::from_millis(300));
    }

    #[test]
    fn printable_escapes_control_characters_and_cuts() {
        assert_eq!(printable("a\u{0}b\nc", 100), "a\\u{0}b\\nc");
        assert_eq!(printable("abcdef", 3), "abc");
    }
}
