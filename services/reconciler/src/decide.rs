//! Deciding what one fact does to its payment, and appending the transition.

use async_nats::jetstream::{self, consumer, context::PublishErrorKind, message::PublishMessage, stream::Stream};
use chrono::Utc;
use futures::StreamExt;
use paytrack_shared::envelope::{self, Cause, ENVELOPE_VERSION, FactSource, InboundFact, Transition};
use paytrack_shared::status::TransitionError;
use paytrack_shared::telemetry::{self, NatsHeaders};
use paytrack_shared::{MerchantId, StatusModel, Token, msg_id, subjects};
use tracing::{Instrument, field};

use paytrack_nats::HandleError;

use crate::mapping::map_fact;

/// What a fact did.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// It moved the payment; the transition is in PAYTRACK_STATUS at `seq`.
    Applied {
        /// The transition appended.
        transition: Box<Transition>,
        /// Its sequence in PAYTRACK_STATUS.
        seq: u64,
    },
    /// It had been applied before (redelivery or a repeated delivery).
    Duplicate,
    /// The status model refused the move (stale, out of order or conflicting).
    NotApplied(TransitionError),
    /// No mapping rule covers the event.
    Unmapped,
}

/// The header naming the subject filter `Nats-Expected-Last-Subject-Sequence` is
/// checked against (nats-server 2.12+; async-nats has no builder method for it).
const EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT: &str = "Nats-Expected-Last-Subject-Sequence-Subject";

/// How many times a fact is re-decided when another writer appended first.
const MAX_CONFLICT_RETRIES: usize = 5;

/// The state machine over PAYTRACK_STATUS.
pub struct Reconciler {
    js: jetstream::Context,
    status: Stream,
}

struct Current {
    merchant: MerchantId,
    seq: u64,
    transition: Transition,
}

impl Reconciler {
    /// A reconciler writing through `js`.
    pub async fn new(js: jetstream::Context) -> Result<Reconciler, paytrack_nats::LayoutError> {
        let status = js
            .get_stream(subjects::STREAM_STATUS)
            .await
            .map_err(|e| paytrack_nats::LayoutError::Read {
                stream: subjects::STREAM_STATUS.to_owned(),
                source: e.into(),
            })?;
        Ok(Reconciler { js, status })
    }

    /// Handles one message of PAYTRACK_IN (the caller acknowledges it).
    pub async fn handle(&self, message: &jetstream::Message) -> Result<Decision, HandleError> {
        let inbound_seq = message
            .info()
            .map(|i| i.stream_sequence)
            .map_err(|e| HandleError::Poison(e.to_string()))?;
        let fact: InboundFact = envelope::decode(&message.payload).map_err(|e| HandleError::Poison(e.to_string()))?;
        let span = tracing::info_span!(
            "reconcile",
            trace_id = field::Empty,
            tenant = %fact.tenant,
            payment_id = %fact.payment_id,
            fact_id = %fact.fact_id,
        );
        if let Some(headers) = &message.headers {
            telemetry::continue_from(&span, &NatsHeaders(headers));
        }
        let trace_id = telemetry::record_trace_id(&span);
        async move {
            let decision = self.decide(&fact, inbound_seq, &trace_id).await?;
            let label = match &decision {
                Decision::Applied { .. } => "applied",
                Decision::Duplicate => "duplicate",
                Decision::NotApplied(_) => "not_applied",
                Decision::Unmapped => "unmapped",
            };
            metrics::counter!("paytrack_reconciler_facts_total", "decision" => label).increment(1);
            match &decision {
                Decision::Applied { transition, seq } => tracing::info!(
                    status = %transition.status,
                    version = transition.version,
                    seq,
                    "transition appended"
                ),
                Decision::Duplicate => tracing::info!("duplicate fact; nothing applied"),
                Decision::NotApplied(reason) => tracing::info!(%reason, "fact recorded, not applied"),
                Decision::Unmapped => tracing::info!("no mapping rule; fact recorded, not applied"),
            }
            Ok(decision)
        }
        .instrument(span)
        .await
    }

    /// Decides and appends, re-deciding if another writer appended first.
    pub async fn decide(&self, fact: &InboundFact, inbound_seq: u64, trace_id: &str) -> Result<Decision, HandleError> {
        let Some(mapped) = map_fact(fact) else {
            return Ok(Decision::Unmapped);
        };
        for _ in 0..MAX_CONFLICT_RETRIES {
            let current = self.current(fact).await?;
            if current
                .as_ref()
                .is_some_and(|c| c.transition.cause.fact_id == fact.fact_id)
            {
                return Ok(Decision::Duplicate);
            }
            let from = current.as_ref().map(|c| c.transition.status);
            if let Err(reason) = StatusModel::get().check_transition(from, mapped.status) {
                return Ok(Decision::NotApplied(reason));
            }
            // Only a move the model allows needs the (costlier) look at older history.
            if let Some(current) = &current
                && self.applied_earlier(current, &fact.fact_id).await?
            {
                return Ok(Decision::Duplicate);
            }
            let merchant = match &current {
                Some(c) => c.merchant.clone(),
                None => fact.merchant_id.clone().unwrap_or_else(MerchantId::unattributed),
            };
            let transition = Transition {
                v: ENVELOPE_VERSION,
                tenant: fact.tenant.clone(),
                merchant_id: merchant.clone(),
                payment_id: fact.payment_id.clone(),
                version: current.as_ref().map_or(1, |c| c.transition.version + 1),
                status: mapped.status,
                previous_status: from,
                occurred_at: occurred_at(fact),
                recorded_at: Utc::now(),
                cause: Cause {
                    fact_id: fact.fact_id.clone(),
                    source: source_of(fact),
                    provider_event_id: provider_event_id(fact),
                    rule: mapped.rule.clone(),
                    inbound_seq,
                },
                trace_id: trace_id.to_owned(),
            };
            match self.append(&transition, current.as_ref().map_or(0, |c| c.seq)).await? {
                Appended::At { seq, duplicate: false } => {
                    return Ok(Decision::Applied {
                        transition: Box::new(transition),
                        seq,
                    });
                }
                Appended::At { duplicate: true, .. } => return Ok(Decision::Duplicate),
                Appended::Conflict => {
                    tracing::info!("another writer appended first; deciding again");
                    continue;
                }
            }
        }
        Err(HandleError::Transient(
            "too many concurrent writers for one payment".into(),
        ))
    }

    async fn current(&self, fact: &InboundFact) -> Result<Option<Current>, HandleError> {
        let filter = subjects::status_of_payment(&fact.tenant, &fact.payment_id);
        let last = paytrack_nats::last_message(&self.status, &filter)
            .await
            .map_err(|e| HandleError::Transient(e.to_string()))?;
        let Some(message) = last else {
            return Ok(None);
        };
        let transition: Transition = envelope::decode(&message.payload)
            .map_err(|e| HandleError::Transient(format!("unreadable history: {e}")))?;
        let merchant = message
            .subject
            .split('.')
            .nth(3)
            .and_then(|m| MerchantId::parse(m).ok())
            .unwrap_or_else(|| transition.merchant_id.clone());
        Ok(Some(Current {
            merchant,
            seq: message.sequence,
            transition,
        }))
    }

    /// Whether `fact_id` caused one of the transitions before the newest, read from
    /// the payment's own subject. (JetStream's `Nats-Msg-Id` window catches most
    /// repeats earlier; this catches the ones that arrive after it, e.g. a provider
    /// retrying days later into a pending → held → pending cycle.)
    async fn applied_earlier(&self, current: &Current, fact_id: &str) -> Result<bool, HandleError> {
        let earlier = current.transition.version.saturating_sub(1);
        if earlier == 0 {
            return Ok(false);
        }
        let t = &current.transition;
        let config = consumer::pull::OrderedConfig {
            filter_subject: subjects::status(&t.tenant, &current.merchant, &t.payment_id),
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        };
        let transient = |e: &dyn std::fmt::Display| HandleError::Transient(format!("reading history: {e}"));
        let mut history = self
            .status
            .create_consumer(config)
            .await
            .map_err(|e| transient(&e))?
            .messages()
            .await
            .map_err(|e| transient(&e))?;
        for _ in 0..earlier {
            let message = history
                .next()
                .await
                .ok_or_else(|| transient(&"history ended early"))?
                .map_err(|e| transient(&e))?;
            let transition: Transition = envelope::decode(&message.payload).map_err(|e| transient(&e))?;
            if transition.cause.fact_id == fact_id {
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn append(&self, transition: &Transition, expected_subject_seq: u64) -> Result<Appended, HandleError> {
        let subject = subjects::status(&transition.tenant, &transition.merchant_id, &transition.payment_id);
        let mut headers = async_nats::HeaderMap::new();
        telemetry::inject_nats(&tracing::Span::current(), &mut headers);
        // The expected sequence is checked against the payment's whole history
        // (`paytrack.status.<t>.*.<p>`), not only this merchant's subject: two first
        // facts naming different merchants (or none) must not both become version 1.
        headers.insert(
            EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT,
            subjects::status_of_payment(&transition.tenant, &transition.payment_id).as_str(),
        );
        let message = PublishMessage::build()
            .headers(headers)
            .message_id(msg_id::transition(
                &transition.tenant,
                &transition.payment_id,
                &transition.cause.fact_id,
            ))
            .expected_last_subject_sequence(expected_subject_seq)
            .payload(envelope::encode(transition));
        let result = async { self.js.send_publish(subject, message).await?.await }.await;
        match result {
            Ok(ack) => Ok(Appended::At {
                seq: ack.sequence,
                duplicate: ack.duplicate,
            }),
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence || is_wrong_last_sequence(&e) => {
                Ok(Appended::Conflict)
            }
            Err(e) => Err(HandleError::Transient(format!("append failed: {e}"))),
        }
    }
}

enum Appended {
    At { seq: u64, duplicate: bool },
    Conflict,
}

/// Whether JetStream refused the append with 10071 ("wrong last sequence"), however
/// the client classified it: a refusal under the filter header is the same conflict.
fn is_wrong_last_sequence(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e
            .downcast_ref::<jetstream::Error>()
            .is_some_and(|js| js.error_code() == jetstream::ErrorCode::STREAM_WRONG_LAST_SEQUENCE)
        {
            return true;
        }
        cause = e.source();
    }
    false
}

fn occurred_at(fact: &InboundFact) -> chrono::DateTime<Utc> {
    match &fact.source {
        FactSource::Webhook(event) => event.occurred_at.unwrap_or(fact.received_at),
    }
}

fn source_of(fact: &InboundFact) -> String {
    match &fact.source {
        FactSource::Webhook(event) => format!("webhook:{}", event.provider),
    }
}

fn provider_event_id(fact: &InboundFact) -> Option<String> {
    match &fact.source {
        FactSource::Webhook(event) => Some(event.event_id.clone()),
    }
}
