//! Versioned JSON envelopes of every message paytrack puts on JetStream.
//!
//! Internal services may subscribe to the subjects directly, so these types are the
//! documented wire contract. Every envelope carries `v`; a reader rejects a version it
//! does not know instead of guessing.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{DeviceId, FactId, MerchantId, PaymentId, TenantId, UserId};
use crate::money::{Amounts, MoneyState, MovementChange, MovementEvidence};
use crate::status::Status;

/// The envelope version this build writes and reads.
pub const ENVELOPE_VERSION: u32 = 1;

/// Why bytes from a stream are not an envelope this build understands.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// Not JSON of the expected shape.
    #[error("malformed envelope: {0}")]
    Malformed(#[from] serde_json::Error),
    /// Written by a newer (or older, retired) build.
    #[error("unsupported envelope version {0}")]
    UnsupportedVersion(u32),
}

/// Decodes an envelope and checks its version.
pub fn decode<T: for<'de> Deserialize<'de> + Versioned>(bytes: &[u8]) -> Result<T, EnvelopeError> {
    let value: T = serde_json::from_slice(bytes)?;
    if value.version() != ENVELOPE_VERSION {
        return Err(EnvelopeError::UnsupportedVersion(value.version()));
    }
    Ok(value)
}

/// Encodes an envelope; serialization of these plain types cannot fail.
pub fn encode<T: Serialize>(value: &T) -> bytes::Bytes {
    bytes::Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

/// Envelopes expose their version so [`decode`] can check it.
pub trait Versioned {
    /// The `v` field.
    fn version(&self) -> u32;
}

macro_rules! versioned {
    ($($t:ty),*) => {$(
        impl Versioned for $t {
            fn version(&self) -> u32 {
                self.v
            }
        }
    )*};
}

/// An inbound fact on `paytrack.in.<tenant>.<payment_id>`: what a provider or a
/// caller told us, recorded before anything acts on it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InboundFact {
    /// Envelope version.
    pub v: u32,
    /// Stable id of the fact (also its `Nats-Msg-Id`), e.g. `wh:stdwebhooks:<webhook-id>`.
    pub fact_id: FactId,
    /// The tenant whose endpoint or credential received the fact.
    pub tenant: TenantId,
    /// The payment the fact is about.
    pub payment_id: PaymentId,
    /// The merchant the fact names, if any.
    pub merchant_id: Option<MerchantId>,
    /// When ingest received it.
    pub received_at: DateTime<Utc>,
    /// What the fact says, parsed.
    pub source: FactSource,
    /// The raw evidence: the headers that matter and the exact body.
    pub raw: RawEvidence,
}

/// Where a fact came from and what it says.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
// A fact is decoded, handled and dropped one at a time, never held in bulk: the size
// of its largest variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub enum FactSource {
    /// A signed provider webhook.
    Webhook(ProviderEvent),
    /// The provider's answer to a status query made by the reconciler's sweep of
    /// stuck payments: evidence like a webhook, kept and de-duplicated the same way.
    StatusQuery(ProviderEvent),
    /// A command from the payments API: create, cancel, retry, or an operator's
    /// resolution. Commands are facts like webhooks: the reconciler alone decides what
    /// they do to a payment's status.
    Command(PaymentCommand),
}

/// A command as ingest accepted it, with who asked for it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PaymentCommand {
    /// What the command asks for.
    #[serde(flatten)]
    pub action: CommandAction,
    /// The credential's subject (an operator's `sub` or an API key's id), for the audit.
    pub actor: String,
    /// The caller's `Idempotency-Key`, when the route takes one.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// The commands of docs/contract.md §6, tagged by `command` on the wire.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "command", rename_all = "snake_case")]
#[allow(clippy::large_enum_variant)] // as FactSource: one at a time, never in bulk
pub enum CommandAction {
    /// `POST /v1/payments`: opens the payment's history as `initiated`.
    Create(CreatePayment),
    /// `POST /v1/payments/{id}/cancel`.
    Cancel {
        /// Why, in the caller's words.
        #[serde(default)]
        reason: Option<String>,
    },
    /// `POST /v1/payments/{id}/retry`: submit the payment to a provider again.
    Retry {
        /// Why, in the caller's words.
        #[serde(default)]
        reason: Option<String>,
        /// The provider chosen for the new attempt, when routing chose one.
        #[serde(default)]
        routing: Option<RoutingDecision>,
    },
    /// `POST /v1/payments/{id}/resolve`: an operator's audited way out of
    /// `investigation_required`, to the status the evidence supports.
    Resolve {
        /// The status the operator resolves to.
        status: Status,
        /// Why; required, and kept in the timeline.
        reason: String,
    },
}

impl CommandAction {
    /// The command's wire name, used in rules (`command:<name>`) and fact ids.
    pub fn name(&self) -> &'static str {
        match self {
            CommandAction::Create(_) => "create",
            CommandAction::Cancel { .. } => "cancel",
            CommandAction::Retry { .. } => "retry",
            CommandAction::Resolve { .. } => "resolve",
        }
    }
}

/// The terms of a new payment, as `POST /v1/payments` accepted them, with the routing
/// and capability decisions made at create time.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CreatePayment {
    /// The merchant; fixes the payment's subjects for good.
    pub merchant_id: MerchantId,
    /// Amount in minor units of `currency`.
    pub amount_minor: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// `card`, `ach_debit`, `rtp`, `upi`, …: decides finality (docs/contract.md §5).
    pub rail: String,
    /// ISO 3166-1 alpha-2 country.
    pub country: String,
    /// The program, when the caller names one.
    #[serde(default)]
    pub program: Option<String>,
    /// The caller's customer reference.
    #[serde(default)]
    pub customer_ref: Option<String>,
    /// Free-form caller metadata, kept as given.
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
    /// Which provider the payment was routed to, and why.
    #[serde(default)]
    pub routing: Option<RoutingDecision>,
    /// The capabilities the create was checked against.
    #[serde(default)]
    pub capabilities: Option<CapabilitySnapshot>,
}

/// The gateway chosen for a payment and the reason, stored on the payment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RoutingDecision {
    /// The provider (webhook scheme name), e.g. `razorpay`.
    pub provider: String,
    /// The provider's reference of the payment, once initiation returned one.
    #[serde(default)]
    pub provider_ref: Option<String>,
    /// Why this provider, in words (rule matched, success rates compared).
    pub reason: String,
}

/// What a country, rail and program supported when a command was checked.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CapabilitySnapshot {
    /// ISO 3166-1 alpha-2 country.
    pub country: String,
    /// The rail.
    pub rail: String,
    /// The program, if any.
    #[serde(default)]
    pub program: Option<String>,
    /// Feature → supported (`cancel`, `retry`, `instant`, `refund`, …).
    pub features: BTreeMap<String, bool>,
    /// When the snapshot was taken.
    pub checked_at: DateTime<Utc>,
}

/// What is known about a payment beyond its status: set by the create command or
/// learnt from provider events, and carried forward on every transition, so a reader
/// of the newest transition (the projector posting the ledger and deciding finality
/// by rail, a client) needs no other lookup.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PaymentTerms {
    /// Amount in minor units.
    #[serde(default)]
    pub amount_minor: Option<i64>,
    /// ISO 4217 code.
    #[serde(default)]
    pub currency: Option<String>,
    /// The rail, which decides finality.
    #[serde(default)]
    pub rail: Option<String>,
    /// ISO 3166-1 alpha-2 country.
    #[serde(default)]
    pub country: Option<String>,
    /// The provider handling the payment.
    #[serde(default)]
    pub provider: Option<String>,
    /// The provider's reference of the payment.
    #[serde(default)]
    pub provider_ref: Option<String>,
    /// The provider's fee for the payment in minor units (same currency), where a
    /// provider event reported it: posted to the fees account with the capture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fee_minor: Option<i64>,
    /// What was captured, where a provider event reported less than the amount (a
    /// partial capture); absent: the whole amount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub captured_minor: Option<i64>,
    /// Which way the money goes: absent for a payment (money in), `payout` for money
    /// out to a merchant or beneficiary, which the ledger posts the other way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
}

/// Which way a payment's money goes, so one history, checkpoint and ledger path
/// serves money in and money out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Money in from a payer (what a payment without a direction is).
    Payin,
    /// Money out to a merchant or beneficiary: `succeeded` means paid, `returned`
    /// means the bank reversed it after it was paid.
    Payout,
}

/// A provider event, parsed from its own shape into the fields paytrack reads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProviderEvent {
    /// The provider (webhook scheme) name, e.g. `stdwebhooks`.
    pub provider: String,
    /// The provider's id of this delivery (e.g. `webhook-id`).
    pub event_id: String,
    /// The provider's event type, e.g. `payment.succeeded`.
    pub event_type: String,
    /// paytrack's generic provider status that ingest's mapping table of this
    /// provider gives the event type (`pending`, `held`, `succeeded`, `failed`,
    /// `cancelled`, `returned`); absent when the table has no row for it, or in facts
    /// written before the field existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// When the provider says it happened.
    pub occurred_at: Option<DateTime<Utc>>,
    /// The provider's reference of the payment.
    pub provider_ref: Option<String>,
    /// Amount in minor units, as the provider reported it.
    pub amount_minor: Option<i64>,
    /// ISO 4217 currency, as the provider reported it.
    pub currency: Option<String>,
    /// A decline or hold reason, if given.
    pub reason: Option<String>,
    /// The provider's own ordering of its events for the payment, where it gives one
    /// (the tie-breaker prefers it to `occurred_at`).
    #[serde(default)]
    pub provider_seq: Option<u64>,
    /// The provider's fee in minor units, where the event reports one (Razorpay's
    /// `fee` on a captured payment, `data.fee_minor` of a Standard Webhooks event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fee_minor: Option<i64>,
    /// The payment's rail as the provider's own event says it (Razorpay's `method`,
    /// Stripe's payment method type, a Standard Webhooks event's `data.rail`), in
    /// paytrack's words (`card`, `upi`, `ach_debit`, …); absent when it names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rail: Option<String>,
    /// The refunds or disputes the event reports, where it reports money moving
    /// after the attempt's outcome (such an event changes amounts, not the status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub movement: Option<MovementEvidence>,
    /// What the provider captured of the amount, where it reports it (Stripe's
    /// `amount_received` and `amount_captured`): less than the amount on a partial
    /// capture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub captured_minor: Option<i64>,
    /// `payout` when the event is about money out (Razorpay's `payout.*`); absent
    /// for a payment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
}

impl ProviderEvent {
    /// An event that names who sent it, the delivery and its type, with every other
    /// field empty: parsers and tests fill in only what they know, so a field the
    /// event gains is defaulted here once.
    pub fn new(
        provider: impl Into<String>,
        event_id: impl Into<String>,
        event_type: impl Into<String>,
    ) -> ProviderEvent {
        ProviderEvent {
            provider: provider.into(),
            event_id: event_id.into(),
            event_type: event_type.into(),
            status: None,
            occurred_at: None,
            provider_ref: None,
            amount_minor: None,
            currency: None,
            reason: None,
            provider_seq: None,
            fee_minor: None,
            rail: None,
            movement: None,
            captured_minor: None,
            direction: None,
        }
    }
}

/// The raw payload of a fact, kept so every status can be traced to it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RawEvidence {
    /// Selected request headers (never credentials).
    pub headers: BTreeMap<String, String>,
    /// The body exactly as received (UTF-8; non-UTF-8 bodies are rejected at ingest).
    pub body: String,
}

/// A canonical transition on `paytrack.status.<tenant>.<merchant>.<payment_id>`,
/// written by the reconciler only.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Transition {
    /// Envelope version.
    pub v: u32,
    /// Tenant of the payment.
    pub tenant: TenantId,
    /// Merchant fixed by the payment's first fact.
    pub merchant_id: MerchantId,
    /// The payment.
    pub payment_id: PaymentId,
    /// 1 for the first transition, +1 for each one after.
    pub version: u64,
    /// The new status.
    pub status: Status,
    /// The status before (None for the first transition).
    pub previous_status: Option<Status>,
    /// When the cause says it happened.
    pub occurred_at: DateTime<Utc>,
    /// When the reconciler decided.
    pub recorded_at: DateTime<Utc>,
    /// The evidence the transition was accepted on.
    pub cause: Cause,
    /// The W3C trace id of the fact's journey.
    pub trace_id: String,
    /// The ids of the newest facts applied to the payment up to and including this
    /// transition (at most [`APPLIED_FACT_IDS_KEPT`]), oldest first, so the newest
    /// transition alone tells whether a recent fact was applied before (one request,
    /// whenever the fact comes back). A fact older than the kept ones that comes
    /// back is placed behind the current status by its provider position (stale).
    /// Bounded so that a payment flipping between two statuses for ever cannot grow
    /// one transition past NATS's payload limit. Empty in transitions written before
    /// the field existed.
    #[serde(default)]
    pub applied_fact_ids: Vec<FactId>,
    /// How many facts were applied to the payment up to and including this
    /// transition (more than `applied_fact_ids` holds once the oldest are dropped).
    /// 0 in transitions written before the field existed: there the list is whole.
    #[serde(default)]
    pub applied_fact_count: u64,
    /// What is known about the payment (amount, rail, provider), carried forward.
    #[serde(default)]
    pub terms: PaymentTerms,
    /// The provider's position of the fact that set this status (None when a
    /// command set it): what a later fact is compared with to tell whether it is
    /// stale (the tie-breaker orders by provider sequence, else provider time).
    #[serde(default)]
    pub ordered_by: Option<ProviderOrder>,
    /// For `investigation_required`: the facts whose evidence disagrees (the applied
    /// one, then the one that contradicted it).
    #[serde(default)]
    pub evidence_fact_ids: Vec<FactId>,
    /// Where the payment's money is after this transition (absent in transitions
    /// written before the field existed: the ledger then reads the status alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amounts: Option<Amounts>,
    /// Every refund and dispute seen so far, each in its latest state, carried
    /// forward like `applied_fact_ids`.
    #[serde(default, skip_serializing_if = "MoneyState::is_empty")]
    pub money: MoneyState,
    /// The movements this transition applied, when it applied any (its status may
    /// then repeat the previous one: a refund moves money, not the attempt's outcome).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub movements: Vec<MovementChange>,
}

/// How many of the newest applied fact ids a transition carries: 256 ids of at most
/// a few hundred bytes each keep a transition far under NATS's 1 MB payload.
pub const APPLIED_FACT_IDS_KEPT: usize = 256;

/// Where a provider places one of its facts about a payment.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProviderOrder {
    /// The provider that placed it (sequences of two providers do not compare).
    pub provider: String,
    /// The provider's sequence, when it gives one.
    #[serde(default)]
    pub provider_seq: Option<u64>,
    /// The provider's time of the event, when it gives one.
    #[serde(default)]
    pub occurred_at: Option<DateTime<Utc>>,
}

impl Transition {
    /// Whether `fact_id` was applied to the payment at this version or before.
    pub fn has_applied(&self, fact_id: &str) -> bool {
        self.cause.fact_id == fact_id || self.applied_fact_ids.iter().any(|id| id == fact_id)
    }
}

/// The evidence a transition must carry (docs/contract.md §5).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Cause {
    /// The inbound fact's id.
    pub fact_id: FactId,
    /// `webhook:<provider>` or `command:<name>`.
    pub source: String,
    /// The provider's event id, for webhooks.
    pub provider_event_id: Option<String>,
    /// The mapping rule that produced the status, e.g. `stdwebhooks:payment.succeeded`.
    pub rule: String,
    /// Where the raw payload is: the fact's sequence in `PAYTRACK_IN`.
    pub inbound_seq: u64,
}

/// The projector's confirmation, on `paytrack.checkpoint.…`, that a version reached a
/// durable record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Checkpoint {
    /// Envelope version.
    pub v: u32,
    /// Which record now holds the version.
    pub checkpoint: CheckpointKind,
    /// Tenant of the payment.
    pub tenant: TenantId,
    /// Merchant of the payment.
    pub merchant_id: MerchantId,
    /// The payment.
    pub payment_id: PaymentId,
    /// The version it confirms.
    pub version: u64,
    /// The status of that version.
    pub status: Status,
    /// When the checkpoint was reached.
    pub recorded_at: DateTime<Utc>,
    /// The trace of the transition it confirms.
    pub trace_id: String,
    /// Whether this checkpoint makes the status final: decided by the projector, true
    /// on a `ledger_posted` checkpoint of a status terminal on the payment's rail
    /// (never `succeeded` on ach_debit), and on a `return_window_closed` checkpoint.
    /// Absent in checkpoints written before the field existed, which read as false.
    #[serde(rename = "final", default)]
    pub is_final: bool,
}

/// The checkpoints that together turn a terminal status final (and, on a reversible
/// rail, the close of the return window that makes a success final).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointKind {
    /// The transition is in PostgreSQL (current state and timeline).
    Persisted,
    /// The ledger entries of the transition are posted.
    LedgerPosted,
    /// The last return window of a success on a reversible rail has closed with the
    /// payment still at that version: the status is final from here on (always
    /// `final`: true).
    ReturnWindowClosed,
}

impl CheckpointKind {
    /// The wire spelling, also used in checkpoint message ids.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckpointKind::Persisted => "persisted",
            CheckpointKind::LedgerPosted => "ledger_posted",
            CheckpointKind::ReturnWindowClosed => "return_window_closed",
        }
    }
}

/// What one fact did, on `paytrack.outcome.<tenant>.<payment_id>`, written by the
/// reconciler for every fact it decides, so a payment's timeline and evidence record
/// every fact, not only the applied ones (an unknown provider event type included).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FactOutcome {
    /// Envelope version.
    pub v: u32,
    /// Tenant of the payment.
    pub tenant: TenantId,
    /// The payment.
    pub payment_id: PaymentId,
    /// The fact's id.
    pub fact_id: FactId,
    /// Where the fact is in PAYTRACK_IN.
    pub inbound_seq: u64,
    /// What the fact did.
    pub outcome: OutcomeKind,
    /// Why it was not applied, in words (the status model's refusal).
    pub reason: Option<String>,
    /// The mapping rule that matched, if any.
    pub rule: Option<String>,
    /// The provider's event type, for webhooks (what an unmapped fact said).
    pub event_type: Option<String>,
    /// The version the fact created, when applied.
    pub version: Option<u64>,
    /// The payment's version the decision was made against (None: no history yet).
    pub current_version: Option<u64>,
    /// The trace of the fact's journey.
    pub trace_id: String,
    /// When the reconciler decided.
    pub decided_at: DateTime<Utc>,
    /// For a stale, duplicate or conflicting fact: the applied fact it lost to.
    #[serde(default)]
    pub superseded_by: Option<FactId>,
}

/// The outcomes a fact can have.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    /// It moved the payment (a transition was appended).
    Applied,
    /// It had been applied before; nothing changed.
    Duplicate,
    /// The status model refused the move (stale, out of order or conflicting).
    Refused,
    /// No mapping rule covers it (e.g. a provider event type paytrack does not map).
    Unmapped,
    /// Older (by provider time or sequence) than the state it would replace.
    Stale,
    /// It contradicts what was applied (e.g. `failed` after `succeeded` on an
    /// irrevocable rail): the payment moved to `investigation_required`.
    Conflict,
}

impl OutcomeKind {
    /// The wire spelling, also stored in PostgreSQL.
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeKind::Applied => "applied",
            OutcomeKind::Duplicate => "duplicate",
            OutcomeKind::Refused => "refused",
            OutcomeKind::Unmapped => "unmapped",
            OutcomeKind::Stale => "stale",
            OutcomeKind::Conflict => "conflict",
        }
    }
}

/// A position in a stream's history, as clients see it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Position {
    /// The stream's incarnation; changes when the stream is recreated.
    pub epoch: String,
    /// The message's sequence in its stream.
    pub seq: u64,
}

/// A session audit record on `paytrack.session.<tenant>.<edge_id>`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SessionAudit {
    /// Envelope version.
    pub v: u32,
    /// The session.
    pub session_id: String,
    /// The token's tenant.
    pub tenant: TenantId,
    /// The token's subject.
    pub subject: String,
    /// The edge process.
    pub edge_id: String,
    /// `websocket` or `sse`.
    pub transport: String,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// What happened.
    pub event: SessionEvent,
}

/// The moments of a session the audit keeps.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SessionEvent {
    /// The session opened with this scope (`None`: operator scope).
    Open {
        /// The token's `channels` claim.
        scope: Option<Vec<String>>,
    },
    /// A subscribe or resume and its outcome.
    Subscribe {
        /// The channel.
        channel: String,
        /// The position the client resumed from, if any.
        since: Option<Position>,
        /// Whether continuity was proven.
        recovered: bool,
        /// Where the channel continues from.
        position: Position,
    },
    /// A subscribe that was refused.
    Denied {
        /// The channel asked for.
        channel: String,
        /// The error code sent.
        code: u16,
    },
    /// The session stayed behind for two heartbeats: its acks had not caught up
    /// with the positions the edge had sent (connected, not current). Recorded once
    /// per episode; the session is current again once its acks catch up.
    Stale {
        /// The positions of the heartbeat the session did not catch up with.
        positions: std::collections::BTreeMap<String, Position>,
        /// The positions it had acked.
        acked: std::collections::BTreeMap<String, Position>,
    },
    /// The session closed.
    Close {
        /// The close code.
        code: u16,
        /// Why.
        reason: String,
    },
}

/// A `consumer_rewound` alert on `paytrack.alert._.consumer_rewound`: a durable
/// consumer had delivered past its stream's last sequence (the stream lost its tail
/// in a power loss or a damaged block, the consumer's state did not), so it would
/// have skipped the messages stored at the sequences handed out again. It was rewound
/// to deliver from `restart_at`; what it had done before is delivered again and
/// recognised, since every consumer is idempotent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConsumerRewound {
    /// Envelope version.
    pub v: u32,
    /// Always `consumer_rewound`.
    pub kind: String,
    /// The stream.
    pub stream: String,
    /// The durable consumer.
    pub consumer: String,
    /// The stream sequence the consumer had delivered up to.
    pub delivered: u64,
    /// The stream sequence the consumer's acknowledgements had reached.
    pub ack_floor: u64,
    /// The stream's last sequence when the overrun was noticed.
    pub stream_last: u64,
    /// The first stream sequence delivered again after the rewind.
    pub restart_at: u64,
    /// When it was rewound.
    pub rewound_at: DateTime<Utc>,
}

/// A `dead_letter` alert on `paytrack.alert.<tenant>.dead_letter`: a consumer parked
/// a message it could not handle on `dead_subject` and moved on. The parked copy
/// keeps the original headers and payload, so an operator can fix the cause and
/// publish it again.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeadLetter {
    /// Envelope version.
    pub v: u32,
    /// Always `dead_letter` (alerts of every kind carry their kind).
    pub kind: String,
    /// The tenant the original subject names, when it names a valid one.
    pub tenant: Option<TenantId>,
    /// The stream the message was read from.
    pub stream: String,
    /// The durable consumer that parked it.
    pub consumer: String,
    /// The original subject.
    pub subject: String,
    /// The original sequence in `stream`, when the message carried it.
    pub stream_seq: Option<u64>,
    /// Deliveries before it was parked.
    pub delivered: i64,
    /// The last error, control characters escaped.
    pub error: String,
    /// Where the parked copy is: `paytrack.dead.<stream>.<consumer>`.
    pub dead_subject: String,
    /// When it was parked.
    pub parked_at: DateTime<Utc>,
}

/// An alert on `paytrack.alert.<tenant>.<kind>` (docs/contract.md §4), raised by the
/// reconciler (or the projector), stored and listed for operators.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Alert {
    /// Envelope version.
    pub v: u32,
    /// Stable id (also its `Nats-Msg-Id`), so raising it again adds nothing.
    pub alert_id: String,
    /// `unclear_pending`, `source_mismatch`, `trace_gap`, `sweep_quota`, `many_facts`.
    pub kind: String,
    /// The tenant.
    pub tenant: TenantId,
    /// The payment it is about.
    pub payment_id: PaymentId,
    /// The payment's merchant, when known.
    #[serde(default)]
    pub merchant_id: Option<MerchantId>,
    /// What was observed, in words.
    pub detail: String,
    /// Where the evidence is: `/v1/payments/<id>/evidence`.
    pub evidence: String,
    /// When it was raised.
    pub raised_at: DateTime<Utc>,
    /// The trace it belongs to.
    pub trace_id: String,
}

/// An operator's acknowledgement of an alert on `paytrack.alert.<tenant>._ack`:
/// who looked, when and why. A fact in PAYTRACK_ALERT (not only a database row), so
/// a rebuild of the projection restores it; the first acknowledgement of an alert
/// in the stream stands.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AlertAck {
    /// Envelope version.
    pub v: u32,
    /// The tenant.
    pub tenant: TenantId,
    /// The alert acknowledged.
    pub alert_id: String,
    /// Who: the operator token's `sub`, or `api_key`.
    pub actor: String,
    /// Why, in the operator's words.
    #[serde(default)]
    pub note: Option<String>,
    /// When.
    pub acked_at: DateTime<Utc>,
    /// The trace of the request that acknowledged it.
    pub trace_id: String,
}

/// A push to a user, as stored in PAYTRACK_PUSH at
/// [`crate::subjects::push`] and forwarded to the user's `user:` channel subscribers:
/// ws-edge adds only the event frame's own fields (`type`, `channel`, `kind`,
/// `position`, `prev_seq`), which is why the backend's type travels as `push_type`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PushMessage {
    /// The push's id: the request's `Idempotency-Key`, or one ingest made.
    pub push_id: String,
    /// The user.
    pub user: UserId,
    /// The device, or None for every device of the user.
    pub device: Option<DeviceId>,
    /// The backend's event type, e.g. `order.ready`.
    pub push_type: String,
    /// The backend's data, any JSON.
    pub data: serde_json::Value,
    /// When ingest stored it.
    pub pushed_at: DateTime<Utc>,
}

versioned!(
    Alert,
    AlertAck,
    InboundFact,
    Transition,
    Checkpoint,
    FactOutcome,
    SessionAudit,
    DeadLetter,
    ConsumerRewound
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_rejects_unknown_versions() {
        let cp = Checkpoint {
            v: 2,
            checkpoint: CheckpointKind::Persisted,
            tenant: TenantId::new("t").unwrap(),
            merchant_id: MerchantId::new("m").unwrap(),
            payment_id: PaymentId::new("p").unwrap(),
            version: 1,
            status: Status::Pending,
            recorded_at: Utc::now(),
            trace_id: "0".repeat(32),
            is_final: false,
        };
        let bytes = encode(&cp);
        assert!(matches!(
            decode::<Checkpoint>(&bytes),
            Err(EnvelopeError::UnsupportedVersion(2))
        ));
        let ok = Checkpoint { v: 1, ..cp };
        assert_eq!(decode::<Checkpoint>(&encode(&ok)).unwrap(), ok);
        assert!(matches!(decode::<Checkpoint>(b"{"), Err(EnvelopeError::Malformed(_))));
    }
}
