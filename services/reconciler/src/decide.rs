//! Deciding what one fact does to its payment, and appending the transition.

use async_nats::jetstream::{self, context::PublishErrorKind, message::PublishMessage, stream::Stream};
use chrono::{DateTime, Utc};
use paytrack_shared::envelope::{
    self, Cause, CommandAction, ENVELOPE_VERSION, FactOutcome, FactSource, InboundFact, OutcomeKind, PaymentTerms,
    ProviderOrder, Transition,
};
use paytrack_shared::metrics::latency;
use paytrack_shared::telemetry::{self, Tally};
use paytrack_shared::{FactId, MerchantId, StatusModel, msg_id, subjects};
use tracing::Instrument;

use paytrack_nats::{Delivery, HandleError};

use crate::claims::{Claims, Created};
use crate::judge::{self, FactKind, FactView, Verdict};
use crate::mapping::{MappedStatus, map_fact, movement_of};

/// What a fact did.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// It moved the payment; the transition is in PAYTRACK_STATUS at `seq`. When it
    /// contradicted what was applied, the transition is `investigation_required`
    /// and `conflict_with` names the applied fact it contradicted.
    Applied {
        /// The transition appended.
        transition: Box<Transition>,
        /// Its sequence in PAYTRACK_STATUS.
        seq: u64,
        /// True when this very message had been applied before it was redelivered
        /// (its ack was lost): nothing new was appended this time.
        redelivered: bool,
        /// The applied fact this one contradicted (a conflict), if any.
        conflict_with: Option<FactId>,
    },
    /// It had been applied before, or repeats the status another fact set.
    Duplicate {
        /// The payment's version when the repeat was recognised.
        current_version: Option<u64>,
        /// The applied fact it repeats.
        superseded_by: Option<FactId>,
    },
    /// It is older (provider sequence or time) than the fact that set the status.
    Stale {
        /// The payment's version it was judged against.
        current_version: Option<u64>,
        /// The newer applied fact.
        superseded_by: FactId,
    },
    /// The status model refused the move.
    NotApplied {
        /// The model's refusal, in words.
        reason: String,
        /// The rule that mapped the fact.
        rule: String,
        /// The payment's version the move was refused against.
        current_version: Option<u64>,
        /// The applied fact it was refused against.
        superseded_by: Option<FactId>,
    },
    /// No mapping rule covers the event.
    Unmapped,
}

/// How many times a fact is re-decided when another writer appended first.
const MAX_CONFLICT_RETRIES: usize = 5;

/// The state machine over PAYTRACK_STATUS.
pub struct Reconciler {
    js: jetstream::Context,
    status: Stream,
    claims: Claims,
    sweeps: Option<std::sync::Arc<crate::sweep::Sweeps>>,
    /// Decisions since the last `facts decided` summary line (per fact at debug).
    decisions: Tally,
}

/// The decision labels counted for the summary line, as the facts metric names them.
const DECISION_LABELS: &[&str] = &[
    "applied",
    "redelivered",
    "conflict",
    "duplicate",
    "stale",
    "not_applied",
    "unmapped",
];

/// How often the reconciler writes its `facts decided` summary line, at most.
const SUMMARY_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

struct Current {
    merchant: MerchantId,
    seq: u64,
    transition: Transition,
}

impl Reconciler {
    /// A reconciler writing through `js`, keeping payment claims for the default time.
    pub async fn new(js: jetstream::Context) -> Result<Reconciler, paytrack_nats::LayoutError> {
        Reconciler::with_claims_max_age(js, crate::claims::DEFAULT_MAX_AGE).await
    }

    /// A reconciler writing through `js`, keeping payment claims `claims_max_age`
    /// after their last write.
    pub async fn with_claims_max_age(
        js: jetstream::Context,
        claims_max_age: std::time::Duration,
    ) -> Result<Reconciler, paytrack_nats::LayoutError> {
        let status = js
            .get_stream(subjects::STREAM_STATUS)
            .await
            .map_err(|e| paytrack_nats::LayoutError::Read {
                stream: subjects::STREAM_STATUS.to_owned(),
                source: e.into(),
            })?;
        let claims =
            Claims::open(&js, &status, claims_max_age)
                .await
                .map_err(|e| paytrack_nats::LayoutError::Read {
                    stream: subjects::STREAM_CLAIMS.to_owned(),
                    source: e.into(),
                })?;
        Ok(Reconciler {
            js,
            status,
            claims,
            sweeps: None,
            decisions: Tally::new(DECISION_LABELS, SUMMARY_EVERY),
        })
    }

    /// This reconciler, recording each transition it appends in the stuck-payment
    /// sweep's bucket.
    pub fn with_sweeps(self, sweeps: std::sync::Arc<crate::sweep::Sweeps>) -> Reconciler {
        Reconciler {
            sweeps: Some(sweeps),
            ..self
        }
    }

    /// Handles one fact of PAYTRACK_IN, opened by the shared delivery prologue (the
    /// supervisor acknowledges it, or parks it when it keeps failing).
    pub async fn handle(&self, delivery: Delivery<InboundFact>) -> Result<Decision, HandleError> {
        let inbound_seq = delivery.stream_seq;
        let fact = &delivery.envelope;
        let trace_id = telemetry::record_trace_id(&delivery.span);
        let span = tracing::info_span!(
            "reconcile",
            trace_id = %trace_id,
            tenant = %fact.tenant,
            payment_id = %fact.payment_id,
            fact_id = %fact.fact_id,
        );
        async move {
            let decision = self.decide(fact, inbound_seq, &trace_id).await?;
            // Recorded before the fact is acknowledged: every fact has an outcome.
            let outcome = outcome_of(fact, inbound_seq, &decision, &trace_id);
            self.publish_outcome(&outcome).await?;
            if let Decision::Applied {
                transition,
                conflict_with,
                ..
            } = &decision
            {
                self.money_alerts(transition, conflict_with.as_deref()).await?;
            }
            if let (Some(sweeps), Decision::Applied { transition, .. }) = (&self.sweeps, &decision) {
                sweeps
                    .track(transition)
                    .await
                    .map_err(|e| HandleError::transient("track the payment for sweeps", e))?;
            }
            if matches!(fact.source, FactSource::StatusQuery(_))
                && matches!(
                    outcome.outcome,
                    OutcomeKind::Stale | OutcomeKind::Refused | OutcomeKind::Conflict
                )
            {
                self.source_mismatch(&outcome).await?;
            }
            let label = match &decision {
                Decision::Applied { redelivered: true, .. } => "redelivered",
                Decision::Applied {
                    conflict_with: Some(_), ..
                } => "conflict",
                Decision::Applied { .. } => "applied",
                Decision::Duplicate { .. } => "duplicate",
                Decision::Stale { .. } => "stale",
                Decision::NotApplied { .. } => "not_applied",
                Decision::Unmapped => "unmapped",
            };
            metrics::counter!("paytrack_reconciler_facts_total", "decision" => label).increment(1);
            match &decision {
                Decision::Applied {
                    transition,
                    seq,
                    redelivered,
                    ..
                } => tracing::debug!(
                    status = %transition.status,
                    version = transition.version,
                    seq,
                    redelivered,
                    "transition appended"
                ),
                Decision::Duplicate { superseded_by, .. } => {
                    tracing::info!(?superseded_by, "duplicate fact; nothing applied")
                }
                Decision::Stale { superseded_by, .. } => {
                    tracing::info!(%superseded_by, "stale fact; recorded, not applied")
                }
                Decision::NotApplied { reason, .. } => tracing::info!(%reason, "fact recorded, not applied"),
                Decision::Unmapped => tracing::info!("no mapping rule; fact recorded, not applied"),
            }
            if let Some(summary) = self.decisions.record(label) {
                tracing::info!(decisions = %summary, total = summary.total(), elapsed_ms = summary.elapsed.as_millis() as u64, "facts decided");
            }
            Ok(decision)
        }
        .instrument(span)
        .await
    }

    /// Decides and appends, re-deciding if another writer appended first: reads
    /// the newest transition, asks the pure core ([`crate::judge::decide`]), and
    /// appends with the sequence it read.
    pub async fn decide(&self, fact: &InboundFact, inbound_seq: u64, trace_id: &str) -> Result<Decision, HandleError> {
        let movement = movement_of(fact);
        let mapped = match &movement {
            Some(m) => m.mapped.clone(),
            None => match map_fact(fact) {
                Some(mapped) => mapped,
                None => return Ok(Decision::Unmapped),
            },
        };
        let view = view_of(fact, &mapped);
        for _ in 0..MAX_CONFLICT_RETRIES {
            let (claimed, current) = self.current(fact).await?;
            let current_version = current.as_ref().map(|c| c.transition.version);
            if let Some(c) = &current
                && c.transition.has_applied(&fact.fact_id)
            {
                let cause = &c.transition.cause;
                if cause.fact_id == fact.fact_id && cause.inbound_seq == inbound_seq {
                    // This very message was applied and then redelivered (its ack
                    // was lost): its outcome is still what it was.
                    return Ok(Decision::Applied {
                        transition: Box::new(c.transition.clone()),
                        seq: c.seq,
                        redelivered: true,
                        conflict_with: conflict_partner(&c.transition, &fact.fact_id),
                    });
                }
            }
            let state = current.as_ref().map(|c| judge::State {
                transition: &c.transition,
            });
            let verdict = match &movement {
                Some(m) => crate::movements::judge(
                    current.as_ref().map(|c| &c.transition),
                    &fact.fact_id,
                    m.evidence,
                    m.payment_amount,
                    StatusModel::get(),
                ),
                None => judge::decide(state, &view, StatusModel::get()),
            };
            let verdict = carry_create_terms(verdict, current.as_ref().map(|c| &c.transition), fact);
            let verdict =
                crate::direction::refuse_other_direction(verdict, current.as_ref().map(|c| &c.transition), fact);
            let conflict_with = match &verdict {
                Verdict::Apply { .. } | Verdict::Move { .. } => None,
                Verdict::Conflict { with, why } => {
                    tracing::warn!(conflict_with = %with, %why, "evidence conflicts; investigation required");
                    Some(with.clone())
                }
                Verdict::Duplicate { superseded_by } => {
                    return Ok(Decision::Duplicate {
                        current_version,
                        superseded_by: Some(superseded_by.clone()),
                    });
                }
                Verdict::Stale { superseded_by } => {
                    return Ok(Decision::Stale {
                        current_version,
                        superseded_by: superseded_by.clone(),
                    });
                }
                Verdict::Refused { reason, against } => {
                    return Ok(Decision::NotApplied {
                        reason: reason.clone(),
                        rule: mapped.rule.clone(),
                        current_version,
                        superseded_by: against.clone(),
                    });
                }
                Verdict::Unmapped => return Ok(Decision::Unmapped),
            };
            let merchant = match (&current, claimed) {
                (Some(c), _) => c.merchant.clone(),
                (None, Some(claimed)) => claimed,
                (None, None) => {
                    // The payment's first transition: claim it for its merchant first,
                    // so a first fact naming another merchant cannot start a second
                    // history; losing the claim means deciding again on the winner's.
                    let merchant = fact.merchant_id.clone().unwrap_or_else(MerchantId::unattributed);
                    let created = self
                        .claims
                        .create(&fact.tenant, &fact.payment_id, &merchant)
                        .await
                        .map_err(|e| HandleError::transient("claim the payment", e))?;
                    if created == Created::Taken {
                        tracing::info!("another writer claimed the payment first; deciding again");
                        continue;
                    }
                    merchant
                }
            };
            let Some(transition) = next_transition(
                current.as_ref().map(|c| &c.transition),
                merchant,
                fact,
                &view,
                &verdict,
                &mapped.rule,
                inbound_seq,
                trace_id,
            ) else {
                return Ok(Decision::Unmapped);
            };
            // A webhook's transition carries when ingest accepted it (end-to-end latency).
            let accepted_at = matches!(fact.source, FactSource::Webhook(_)).then_some(fact.received_at);
            match self
                .append(&transition, current.as_ref().map_or(0, |c| c.seq), accepted_at)
                .await?
            {
                Appended::At { seq, duplicate: false } => {
                    if let Some(accepted_at) = accepted_at {
                        latency::observe(latency::TRANSITION_PUBLISHED, accepted_at);
                    }
                    crate::alerts::many_facts_once(&self.js, &transition).await;
                    return Ok(Decision::Applied {
                        transition: Box::new(transition),
                        seq,
                        redelivered: false,
                        conflict_with,
                    });
                }
                Appended::At { duplicate: true, .. } => {
                    return Ok(Decision::Duplicate {
                        current_version,
                        superseded_by: Some(fact.fact_id.clone()),
                    });
                }
                Appended::Conflict => {
                    tracing::info!("another writer appended first; deciding again");
                    continue;
                }
            }
        }
        Err(HandleError::transient(
            "append the transition",
            ConflictsExhausted(MAX_CONFLICT_RETRIES),
        ))
    }

    /// The merchant the payment is claimed for, and its newest transition (on that
    /// merchant's subject, one literal lookup). A claim without a transition is a
    /// first writer between its claim and its append (or one that crashed there).
    async fn current(&self, fact: &InboundFact) -> Result<(Option<MerchantId>, Option<Current>), HandleError> {
        let Some(merchant) = self
            .claims
            .merchant_of(&fact.tenant, &fact.payment_id)
            .await
            .map_err(|e| HandleError::transient("read the payment's claim", e))?
        else {
            return Ok((None, None));
        };
        let subject = subjects::status(&fact.tenant, &merchant, &fact.payment_id);
        let last = paytrack_nats::last_message(&self.status, &subject)
            .await
            .map_err(|e| HandleError::transient("read the payment's newest transition", e))?;
        let Some(message) = last else {
            return Ok((Some(merchant), None));
        };
        let transition: Transition = envelope::decode(&message.payload)
            .map_err(|e| HandleError::transient("decode the payment's newest transition", e))?;
        Ok((
            Some(merchant.clone()),
            Some(Current {
                merchant,
                seq: message.sequence,
                transition,
            }),
        ))
    }

    /// Raises the alerts an operator must see about an applied transition: a
    /// conflict (`investigation_required`), money captured after a failure, a
    /// dispute opened, a refund that failed. Raising one again adds nothing.
    async fn money_alerts(&self, t: &Transition, conflict_with: Option<&str>) -> Result<(), HandleError> {
        for (kind, detail) in crate::money_alerts::of(t, conflict_with) {
            tracing::warn!(alert = kind, %detail, "alert raised");
            crate::alerts::raise(
                &self.js,
                crate::alerts::Raise {
                    tenant: &t.tenant,
                    payment: &t.payment_id,
                    merchant: Some(&t.merchant_id),
                    kind,
                    discriminator: &t.cause.fact_id,
                    detail,
                    trace_id: &t.trace_id,
                },
            )
            .await
            .map_err(|e| HandleError::transient("raise an alert", e))?;
        }
        Ok(())
    }

    /// Raises `source_mismatch`: the provider's status query disagrees with what was
    /// applied from its webhooks.
    async fn source_mismatch(&self, outcome: &FactOutcome) -> Result<(), HandleError> {
        let detail = format!(
            "the status query ({}) was {}: {}; applied: {}",
            outcome.event_type.as_deref().unwrap_or("?"),
            outcome.outcome.as_str(),
            outcome.reason.as_deref().unwrap_or(""),
            outcome.superseded_by.as_deref().unwrap_or("nothing")
        );
        tracing::warn!(%detail, "source mismatch");
        crate::alerts::raise(
            &self.js,
            crate::alerts::Raise {
                tenant: &outcome.tenant,
                payment: &outcome.payment_id,
                merchant: None,
                kind: subjects::ALERT_SOURCE_MISMATCH,
                discriminator: &outcome.fact_id,
                detail,
                trace_id: &outcome.trace_id,
            },
        )
        .await
        .map_err(|e| HandleError::transient("raise source_mismatch", e))
    }

    /// Records what a fact did on `paytrack.outcome.<tenant>.<payment_id>`.
    async fn publish_outcome(&self, outcome: &FactOutcome) -> Result<(), HandleError> {
        let mut headers = async_nats::HeaderMap::new();
        telemetry::inject_nats(&tracing::Span::current(), &mut headers);
        let message = PublishMessage::build()
            .headers(headers)
            .message_id(msg_id::outcome(
                &outcome.tenant,
                &outcome.payment_id,
                outcome.inbound_seq,
            ))
            .payload(envelope::encode(outcome));
        let subject = subjects::outcome(&outcome.tenant, &outcome.payment_id);
        async { self.js.send_publish(subject, message).await?.await }
            .await
            .map(drop)
            .map_err(|e| HandleError::transient("publish the fact's outcome", e))
    }

    async fn append(
        &self,
        transition: &Transition,
        expected_subject_seq: u64,
        accepted_at: Option<DateTime<Utc>>,
    ) -> Result<Appended, HandleError> {
        let subject = subjects::status(&transition.tenant, &transition.merchant_id, &transition.payment_id);
        let mut headers = async_nats::HeaderMap::new();
        telemetry::inject_nats(&tracing::Span::current(), &mut headers);
        if let Some(accepted_at) = accepted_at {
            latency::stamp(&mut headers, accepted_at);
        }
        // The payment's whole history is on this subject (its claim names the
        // merchant), so its last sequence there is the history's.
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
            Err(e) => Err(HandleError::transient("append the transition", e)),
        }
    }
}

/// Every attempt to append found that another writer had appended first.
#[derive(Debug, thiserror::Error)]
#[error("another writer appended first {0} times in a row")]
struct ConflictsExhausted(usize);

enum Appended {
    At { seq: u64, duplicate: bool },
    Conflict,
}

/// The outcome record of `decision`.
fn outcome_of(fact: &InboundFact, inbound_seq: u64, decision: &Decision, trace_id: &str) -> FactOutcome {
    let (outcome, reason, rule, version, current_version, superseded_by) = match decision {
        Decision::Applied {
            transition,
            conflict_with,
            ..
        } => (
            if conflict_with.is_some() {
                OutcomeKind::Conflict
            } else {
                OutcomeKind::Applied
            },
            conflict_with
                .as_ref()
                .map(|with| format!("contradicts {with}: investigation required")),
            Some(transition.cause.rule.clone()),
            Some(transition.version),
            transition.version.checked_sub(1).filter(|v| *v > 0),
            conflict_with.clone(),
        ),
        Decision::Duplicate {
            current_version,
            superseded_by,
        } => (
            OutcomeKind::Duplicate,
            Some("the fact, or its status, was applied before".to_owned()),
            None,
            None,
            *current_version,
            superseded_by.clone(),
        ),
        Decision::Stale {
            current_version,
            superseded_by,
        } => (
            OutcomeKind::Stale,
            Some("older than the fact that set the current status".to_owned()),
            None,
            None,
            *current_version,
            Some(superseded_by.clone()),
        ),
        Decision::NotApplied {
            reason,
            rule,
            current_version,
            superseded_by,
        } => (
            OutcomeKind::Refused,
            Some(reason.clone()),
            Some(rule.clone()),
            None,
            *current_version,
            superseded_by.clone(),
        ),
        Decision::Unmapped => (
            OutcomeKind::Unmapped,
            Some("no mapping rule covers this event type".to_owned()),
            None,
            None,
            None,
            None,
        ),
    };
    FactOutcome {
        v: ENVELOPE_VERSION,
        tenant: fact.tenant.clone(),
        payment_id: fact.payment_id.clone(),
        fact_id: fact.fact_id.clone(),
        inbound_seq,
        outcome,
        reason,
        rule,
        event_type: match &fact.source {
            FactSource::Webhook(event) | FactSource::StatusQuery(event) => Some(event.event_type.clone()),
            FactSource::Command(command) => Some(format!("command.{}", command.action.name())),
        },
        version,
        current_version,
        trace_id: trace_id.to_owned(),
        decided_at: Utc::now(),
        superseded_by,
    }
}

/// The fact `t` records as contradicted by `fact_id`, when `t` is the conflict
/// `fact_id` caused.
fn conflict_partner(t: &Transition, fact_id: &str) -> Option<FactId> {
    (t.status == paytrack_shared::Status::InvestigationRequired && t.cause.fact_id == fact_id)
        .then(|| t.evidence_fact_ids.first().cloned())
        .flatten()
}

/// The fact as the pure core sees it.
pub(crate) fn view_of<'a>(fact: &'a InboundFact, mapped: &MappedStatus) -> FactView<'a> {
    match &fact.source {
        FactSource::Webhook(event) | FactSource::StatusQuery(event) => FactView {
            fact_id: &fact.fact_id,
            target: Some(mapped.status),
            kind: FactKind::Evidence,
            order: Some(ProviderOrder {
                provider: event.provider.clone(),
                provider_seq: event.provider_seq,
                occurred_at: event.occurred_at,
            }),
            occurred_at: event.occurred_at.unwrap_or(fact.received_at),
            reason: event.reason.as_deref(),
        },
        FactSource::Command(command) => FactView {
            fact_id: &fact.fact_id,
            target: Some(mapped.status),
            kind: match command.action {
                CommandAction::Resolve { .. } => FactKind::Resolve,
                _ => FactKind::Command,
            },
            order: None,
            occurred_at: fact.received_at,
            reason: None,
        },
    }
}

/// The transition `verdict` appends after `current` (None when it appends nothing).
#[allow(clippy::too_many_arguments)]
pub(crate) fn next_transition(
    current: Option<&Transition>,
    merchant: MerchantId,
    fact: &InboundFact,
    view: &FactView<'_>,
    verdict: &Verdict,
    rule: &str,
    inbound_seq: u64,
    trace_id: &str,
) -> Option<Transition> {
    let carried = || current.map(|c| c.money.clone()).unwrap_or_default();
    let (status, evidence_fact_ids, money, movements) = match verdict {
        Verdict::Apply { status } => (*status, Vec::new(), carried(), Vec::new()),
        Verdict::Conflict { with, .. } => (
            paytrack_shared::Status::InvestigationRequired,
            vec![with.clone(), fact.fact_id.clone()],
            carried(),
            Vec::new(),
        ),
        Verdict::Move { status, money, changes } => (*status, Vec::new(), money.clone(), changes.clone()),
        _ => return None,
    };
    let terms = terms_after(current.map(|c| &c.terms), fact);
    let amounts = crate::amounts::after(
        current.map(crate::amounts::of).unwrap_or_default(),
        status,
        &terms,
        &money,
    );
    let (mut applied_fact_ids, applied_before) = current.map(applied_so_far).unwrap_or_default();
    applied_fact_ids.push(fact.fact_id.clone());
    let dropped = applied_fact_ids
        .len()
        .saturating_sub(paytrack_shared::envelope::APPLIED_FACT_IDS_KEPT);
    applied_fact_ids.drain(..dropped);
    Some(Transition {
        v: ENVELOPE_VERSION,
        tenant: fact.tenant.clone(),
        merchant_id: merchant,
        payment_id: fact.payment_id.clone(),
        version: current.map_or(1, |c| c.version + 1),
        status,
        previous_status: current.map(|c| c.status),
        // Terms completed, status kept: the status still dates from when it was reached
        // (return windows run from it).
        occurred_at: match current {
            Some(c) if c.status == status && evidence_fact_ids.is_empty() => c.occurred_at,
            _ => view.occurred_at,
        },
        recorded_at: Utc::now(),
        cause: Cause {
            fact_id: fact.fact_id.clone(),
            source: source_of(fact),
            provider_event_id: provider_event_id(fact),
            rule: rule.to_owned(),
            inbound_seq,
        },
        trace_id: trace_id.to_owned(),
        applied_fact_ids,
        applied_fact_count: applied_before + 1,
        terms,
        ordered_by: judge::ordered_by_after(verdict, current, view),
        evidence_fact_ids,
        amounts: Some(amounts),
        money,
        movements,
    })
}

/// The newest facts applied up to `t`, including its own cause (which a transition
/// written before `applied_fact_ids` existed does not list), and how many were
/// applied in all (a transition written before `applied_fact_count` existed lists
/// every one).
fn applied_so_far(t: &Transition) -> (Vec<FactId>, u64) {
    let mut ids = t.applied_fact_ids.clone();
    if !ids.contains(&t.cause.fact_id) {
        ids.push(t.cause.fact_id.clone());
    }
    let count = t.applied_fact_count.max(ids.len() as u64);
    (ids, count)
}

/// Whether JetStream refused the append with 10071 ("wrong last sequence"), however
/// the client classified it: a refusal under the filter header is the same conflict.
fn is_wrong_last_sequence(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.downcast_ref::<jetstream::Error>()
            .is_some_and(|js| js.error_code() == jetstream::ErrorCode::STREAM_WRONG_LAST_SEQUENCE)
        {
            return true;
        }
        cause = e.source();
    }
    false
}

fn source_of(fact: &InboundFact) -> String {
    match &fact.source {
        FactSource::Webhook(event) => format!("webhook:{}", event.provider),
        FactSource::StatusQuery(event) => format!("status_query:{}", event.provider),
        FactSource::Command(command) => format!("command:{}", command.action.name()),
    }
}

fn provider_event_id(fact: &InboundFact) -> Option<String> {
    match &fact.source {
        FactSource::Webhook(event) | FactSource::StatusQuery(event) => Some(event.event_id.clone()),
        FactSource::Command(_) => None,
    }
}

/// A create that arrives after its payment's history began (a webhook beat it) is no
/// move of the status, but its terms (rail, country, amount, …) are the payment's own:
/// instead of refusing it outright, a transition that keeps the status gives the
/// payment those terms, so it can become final on its rail. A create that adds
/// nothing, or one met in `investigation_required`, stays as judged.
fn carry_create_terms(verdict: Verdict, current: Option<&Transition>, fact: &InboundFact) -> Verdict {
    let Some(current) = current else {
        return verdict;
    };
    let is_create = matches!(&fact.source, FactSource::Command(c) if matches!(c.action, CommandAction::Create(_)));
    let judged_away = matches!(
        verdict,
        Verdict::Refused { .. } | Verdict::Duplicate { .. } | Verdict::Stale { .. }
    );
    if !is_create
        || !judged_away
        || current.has_applied(&fact.fact_id)
        || current.status == paytrack_shared::Status::InvestigationRequired
        || terms_after(Some(&current.terms), fact) == current.terms
    {
        return verdict;
    }
    Verdict::Apply { status: current.status }
}

/// The payment's terms after `fact`: what was known, completed (never overwritten)
/// by what the fact says.
fn terms_after(known: Option<&PaymentTerms>, fact: &InboundFact) -> PaymentTerms {
    let mut terms = known.cloned().unwrap_or_default();
    match &fact.source {
        FactSource::Webhook(event) | FactSource::StatusQuery(event) => {
            terms.amount_minor = terms.amount_minor.or(event.amount_minor);
            terms.fee_minor = terms.fee_minor.or(event.fee_minor);
            terms.captured_minor = terms.captured_minor.or(event.captured_minor);
            terms.currency = terms.currency.take().or_else(|| event.currency.clone());
            terms.provider = terms.provider.take().or_else(|| Some(event.provider.clone()));
            terms.provider_ref = terms.provider_ref.take().or_else(|| event.provider_ref.clone());
            terms.rail = terms.rail.take().or_else(|| event.rail.clone());
            terms.direction = terms.direction.or(event.direction);
        }
        FactSource::Command(command) => {
            if let CommandAction::Create(create) = &command.action {
                terms.amount_minor = terms.amount_minor.or(Some(create.amount_minor));
                terms.currency = terms.currency.take().or_else(|| Some(create.currency.clone()));
                terms.rail = terms.rail.take().or_else(|| Some(create.rail.clone()));
                terms.country = terms.country.take().or_else(|| Some(create.country.clone()));
                if let Some(routing) = &create.routing {
                    terms.provider = terms.provider.take().or_else(|| Some(routing.provider.clone()));
                    terms.provider_ref = terms.provider_ref.take().or_else(|| routing.provider_ref.clone());
                }
            }
        }
    }
    terms
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod money_props;
