//! Stream names and subject builders: the one place subjects are spelled.
//!
//! The hierarchy tenant → merchant → payment is what lets every WebSocket channel
//! be a server-side JetStream filter; see docs/contract.md §3.

use crate::ids::{DeviceId, MerchantId, PaymentId, TenantId, UserId};

/// Raw inbound facts (webhooks, commands), written by ingest.
pub const STREAM_IN: &str = "PAYTRACK_IN";
/// Transitions (reconciler) and checkpoints (projector), one sequence for both.
pub const STREAM_STATUS: &str = "PAYTRACK_STATUS";
/// What each fact did, written by the reconciler.
pub const STREAM_OUTCOME: &str = "PAYTRACK_OUTCOME";
/// User-targeted pushes from backends.
pub const STREAM_PUSH: &str = "PAYTRACK_PUSH";
/// Operational alerts.
pub const STREAM_ALERT: &str = "PAYTRACK_ALERT";
/// Session audit written by ws-edge.
pub const STREAM_SESSION: &str = "PAYTRACK_SESSION";
/// Messages a consumer parked because it could not handle them (dead letters).
pub const STREAM_DEAD: &str = "PAYTRACK_DEAD";

/// The JetStream KV bucket of presence: which sessions each user has open, one key
/// `<tenant>.<user>.<device>.<session_id>` per session, written by ws-edge.
pub const PRESENCE_BUCKET: &str = "PAYTRACK_PRESENCE";
/// The stream behind [`PRESENCE_BUCKET`] (JetStream names a bucket's stream `KV_<bucket>`).
pub const STREAM_PRESENCE: &str = "KV_PAYTRACK_PRESENCE";
/// The subjects a presence write is published on.
pub const PRESENCE_ALL: &str = "$KV.PAYTRACK_PRESENCE.>";

/// The JetStream KV bucket of the reconciler's stuck-payment sweep: one key
/// `<tenant>.<payment>` per payment whose status is not yet settled and persisted.
pub const SWEEP_BUCKET: &str = "PAYTRACK_SWEEP";
/// The stream behind [`SWEEP_BUCKET`].
pub const STREAM_SWEEP: &str = "KV_PAYTRACK_SWEEP";
/// The subjects a sweep entry is written on.
pub const SWEEP_ALL: &str = "$KV.PAYTRACK_SWEEP.>";
/// The JetStream KV bucket of the reconciler's payment claims: one key
/// `<tenant>.<payment>` per payment, holding the merchant whose subject carries its
/// history. Created once (before the payment's first transition), so a payment's
/// newest transition is read, and its next one appended, on one literal subject:
/// a `paytrack.status.<tenant>.*.<payment>` lookup walks every merchant of the tenant.
pub const CLAIMS_BUCKET: &str = "PAYTRACK_CLAIMS";
/// The stream behind [`CLAIMS_BUCKET`].
pub const STREAM_CLAIMS: &str = "KV_PAYTRACK_CLAIMS";
/// The subjects a claim is written on.
pub const CLAIMS_ALL: &str = "$KV.PAYTRACK_CLAIMS.>";
/// Alert: a payment pending past its rail's window that the provider cannot confirm.
pub const ALERT_UNCLEAR_PENDING: &str = "unclear_pending";
/// Alert: the provider's status query disagrees with what its webhooks said.
pub const ALERT_SOURCE_MISMATCH: &str = "source_mismatch";
/// Alert: a transition's `persisted` checkpoint did not follow in time.
pub const ALERT_TRACE_GAP: &str = "trace_gap";
/// Alert: a tenant has its quota of payments the reconciler sweeps; a payment past
/// it is not swept.
pub const ALERT_SWEEP_QUOTA: &str = "sweep_quota";
/// Alert: a payment has had more facts applied than a transition lists (it keeps
/// flipping between statuses).
pub const ALERT_MANY_FACTS: &str = "many_facts";
/// Alert: a payer disputed a payment; its amount is withheld until it is decided.
pub const ALERT_DISPUTE_OPENED: &str = "dispute_opened";
/// Alert: money was captured after the payment was reported failed (a late
/// capture): an operator refunds or accepts it.
pub const ALERT_CAPTURED_AFTER_FAILURE: &str = "captured_after_failure";
/// Alert: a refund failed or was cancelled; the money stayed with the merchant.
pub const ALERT_REFUND_FAILED: &str = "refund_failed";
/// Alert: evidence conflicts and the payment waits for an operator's resolution.
pub const ALERT_INVESTIGATION_REQUIRED: &str = "investigation_required";
/// The JetStream KV bucket of provider references, written by ingest: which payment
/// each provider reference is (`ref.<tenant>.<provider>.<ref>`), and provider events
/// parked until it is known (`parked.<tenant>.<provider>.<ref>.<delivery>`).
pub const PROVIDER_REFS_BUCKET: &str = "PAYTRACK_PROVIDER_REFS";
/// The stream behind [`PROVIDER_REFS_BUCKET`].
pub const STREAM_PROVIDER_REFS: &str = "KV_PAYTRACK_PROVIDER_REFS";
/// The subjects a provider-reference write is published on.
pub const PROVIDER_REFS_ALL: &str = "$KV.PAYTRACK_PROVIDER_REFS.>";
/// The JetStream KV bucket of idempotency keys of `POST /v1/payments`: one key
/// `<tenant>.<sha256 of the Idempotency-Key>` each, holding the claim and then the
/// first response, written by ingest; its TTL is `idempotency_ttl_secs`.
pub const IDEMPOTENCY_BUCKET: &str = "PAYTRACK_IDEMPOTENCY";
/// The stream behind [`IDEMPOTENCY_BUCKET`].
pub const STREAM_IDEMPOTENCY: &str = "KV_PAYTRACK_IDEMPOTENCY";
/// The subjects an idempotency write is published on.
pub const IDEMPOTENCY_ALL: &str = "$KV.PAYTRACK_IDEMPOTENCY.>";
/// The JetStream KV bucket of payments created through the API: one key
/// `<tenant>.<payment_id>` each, holding the terms later commands are checked against
/// (rail, country, program, provider), written by ingest and kept.
pub const COMMANDED_BUCKET: &str = "PAYTRACK_COMMANDED";
/// The stream behind [`COMMANDED_BUCKET`].
pub const STREAM_COMMANDED: &str = "KV_PAYTRACK_COMMANDED";
/// The subjects a commanded-payment write is published on.
pub const COMMANDED_ALL: &str = "$KV.PAYTRACK_COMMANDED.>";

/// Subjects captured by [`STREAM_IN`].
pub const IN_ALL: &str = "paytrack.in.>";
/// Transition subjects in [`STREAM_STATUS`].
pub const STATUS_ALL: &str = "paytrack.status.>";
/// Checkpoint subjects in [`STREAM_STATUS`].
pub const CHECKPOINT_ALL: &str = "paytrack.checkpoint.>";
/// Subjects captured by [`STREAM_OUTCOME`].
pub const OUTCOME_ALL: &str = "paytrack.outcome.>";
/// Subjects captured by [`STREAM_PUSH`].
pub const PUSH_ALL: &str = "paytrack.push.>";
/// Subjects captured by [`STREAM_ALERT`].
pub const ALERT_ALL: &str = "paytrack.alert.>";
/// Subjects captured by [`STREAM_SESSION`].
pub const SESSION_ALL: &str = "paytrack.session.>";
/// Subjects captured by [`STREAM_DEAD`].
pub const DEAD_ALL: &str = "paytrack.dead.>";
/// The alert kind raised when a consumer parks a message.
pub const ALERT_DEAD_LETTER: &str = "dead_letter";
/// The alert kind raised when a durable consumer's position was past its stream's
/// end (the stream lost its tail, the consumer's state did not) and was rewound.
pub const ALERT_CONSUMER_REWOUND: &str = "consumer_rewound";
/// The tenant token of alerts about messages whose subject names no readable tenant.
pub const NO_TENANT: &str = "_";
/// The last token of an operator's acknowledgement of an alert
/// (`paytrack.alert.<tenant>._ack`): a fact in PAYTRACK_ALERT beside the alerts, so
/// a rebuild restores who acknowledged what. No alert kind starts with `_`.
pub const ALERT_ACK: &str = "_ack";

/// `paytrack.in.<tenant>.<payment_id>`: where ingest records an inbound fact.
pub fn inbound(tenant: &TenantId, payment: &PaymentId) -> String {
    format!("paytrack.in.{tenant}.{payment}")
}

/// `paytrack.status.<tenant>.<merchant>.<payment_id>`: one payment's transitions.
pub fn status(tenant: &TenantId, merchant: &MerchantId, payment: &PaymentId) -> String {
    format!("paytrack.status.{tenant}.{merchant}.{payment}")
}

/// `paytrack.status.<tenant>.*.<payment_id>`: finds a payment's transitions when
/// its merchant is not yet known to the caller.
pub fn status_of_payment(tenant: &TenantId, payment: &PaymentId) -> String {
    format!("paytrack.status.{tenant}.*.{payment}")
}

/// `paytrack.checkpoint.<tenant>.<merchant>.<payment_id>`: the projector's
/// confirmations that a version is persisted (and later, posted to the ledger).
pub fn checkpoint(tenant: &TenantId, merchant: &MerchantId, payment: &PaymentId) -> String {
    format!("paytrack.checkpoint.{tenant}.{merchant}.{payment}")
}

/// `paytrack.outcome.<tenant>.<payment_id>`: what each of a payment's facts did.
pub fn outcome(tenant: &TenantId, payment: &PaymentId) -> String {
    format!("paytrack.outcome.{tenant}.{payment}")
}

/// `paytrack.session.<tenant>.<edge_id>`: session audit of one edge process.
pub fn session(tenant: &TenantId, edge_id: &str) -> String {
    format!("paytrack.session.{tenant}.{edge_id}")
}

/// `paytrack.dead.<stream>.<consumer>`: where durable `consumer` of `stream` parks
/// what it cannot handle. Stream and consumer names are our own constants.
pub fn dead_letter(stream: &str, consumer: &str) -> String {
    format!("paytrack.dead.{stream}.{consumer}")
}

/// `paytrack.alert.<tenant>.<kind>`; without a tenant, `paytrack.alert._.<kind>`.
pub fn alert(tenant: Option<&TenantId>, kind: &str) -> String {
    let tenant = tenant.map_or(NO_TENANT, TenantId::as_str);
    format!("paytrack.alert.{tenant}.{kind}")
}

/// `paytrack.alert.<tenant>._ack`: where an operator's acknowledgement of one of the
/// tenant's alerts is recorded.
pub fn alert_ack(tenant: &TenantId) -> String {
    format!("paytrack.alert.{tenant}.{ALERT_ACK}")
}

/// `paytrack.alert.<tenant>.>`: every alert of a tenant and every acknowledgement of
/// one (the edge's `alerts` channel).
pub fn tenant_alerts(tenant: &TenantId) -> String {
    format!("paytrack.alert.{tenant}.>")
}

/// The tenant a paytrack subject names (its third token, `paytrack.<kind>.<tenant>…`),
/// if that token is a valid tenant id.
pub fn tenant_of(subject: &str) -> Option<TenantId> {
    TenantId::new(subject.split('.').nth(2)?).ok()
}

/// What kind of message a [`STREAM_STATUS`] subject holds, from its second token.
pub fn status_stream_kind(subject: &str) -> Option<&'static str> {
    match subject.split('.').nth(1)? {
        "status" => Some("transition"),
        "checkpoint" => Some("checkpoint"),
        _ => None,
    }
}

/// The device token of a push to every device of a user.
pub const PUSH_ALL_DEVICES: &str = "all";

/// `paytrack.push.<tenant>.<user>.<device>`, or `….all` without a device: where a
/// push to a user is stored in [`STREAM_PUSH`].
pub fn push(tenant: &TenantId, user: &UserId, device: Option<&DeviceId>) -> String {
    format!(
        "paytrack.push.{tenant}.{user}.{}",
        device.map_or(PUSH_ALL_DEVICES, DeviceId::as_str)
    )
}

/// `paytrack.push.<tenant>.<user>.>`: every push to a user, whatever its device.
pub fn user_pushes(tenant: &TenantId, user: &UserId) -> String {
    format!("paytrack.push.{tenant}.{user}.>")
}

/// `paytrack.*.<tenant>.*.<payment>`: one payment's transitions and checkpoints.
pub fn payment_messages(tenant: &TenantId, payment: &PaymentId) -> String {
    format!("paytrack.*.{tenant}.*.{payment}")
}

/// `paytrack.*.<tenant>.<merchant>.*`: the transitions and checkpoints of every
/// payment of one merchant.
pub fn merchant_messages(tenant: &TenantId, merchant: &MerchantId) -> String {
    format!("paytrack.*.{tenant}.{merchant}.*")
}

/// `paytrack.*.<tenant>.>`: every transition and checkpoint of a tenant (and, in
/// [`STREAM_PUSH`], every push).
pub fn tenant_messages(tenant: &TenantId) -> String {
    format!("paytrack.*.{tenant}.>")
}

/// What a [`STREAM_STATUS`] message is, from its subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusKind {
    /// `paytrack.status.…`: a transition, written by the reconciler.
    Transition,
    /// `paytrack.checkpoint.…`: a checkpoint, written by the projector.
    Checkpoint,
}

/// A [`STREAM_STATUS`] subject read apart:
/// `paytrack.<status|checkpoint>.<tenant>.<merchant>.<payment>`. Borrowed, so reading
/// one allocates nothing (the edge reads every message's subject).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaymentSubject<'a> {
    /// Transition or checkpoint.
    pub kind: StatusKind,
    /// The tenant token.
    pub tenant: &'a str,
    /// The merchant token.
    pub merchant: &'a str,
    /// The payment token.
    pub payment: &'a str,
}

impl PaymentSubject<'_> {
    /// Reads a [`STREAM_STATUS`] subject; None for any other subject.
    pub fn parse(subject: &str) -> Option<PaymentSubject<'_>> {
        let [kind, tenant, merchant, payment] = paytrack_tokens(subject)?;
        let kind = match kind {
            "status" => StatusKind::Transition,
            "checkpoint" => StatusKind::Checkpoint,
            _ => return None,
        };
        Some(PaymentSubject {
            kind,
            tenant,
            merchant,
            payment,
        })
    }
}

/// A [`STREAM_PUSH`] subject read apart: `paytrack.push.<tenant>.<user>.<device or all>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushSubject<'a> {
    /// The tenant token.
    pub tenant: &'a str,
    /// The user.
    pub user: &'a str,
    /// The device, or None for a push to every device of the user.
    pub device: Option<&'a str>,
}

impl PushSubject<'_> {
    /// Reads a [`STREAM_PUSH`] subject; None for any other subject.
    pub fn parse(subject: &str) -> Option<PushSubject<'_>> {
        let ["push", tenant, user, device] = paytrack_tokens(subject)? else {
            return None;
        };
        Some(PushSubject {
            tenant,
            user,
            device: (device != PUSH_ALL_DEVICES).then_some(device),
        })
    }
}

/// A [`STREAM_ALERT`] subject read apart: `paytrack.alert.<tenant or _>.<kind>`
/// (`_ack` for an operator's acknowledgement).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlertSubject<'a> {
    /// The tenant token ([`NO_TENANT`] when the alert names none).
    pub tenant: &'a str,
    /// The alert's kind, or [`ALERT_ACK`].
    pub kind: &'a str,
}

impl AlertSubject<'_> {
    /// Reads a [`STREAM_ALERT`] subject; None for any other subject.
    pub fn parse(subject: &str) -> Option<AlertSubject<'_>> {
        let mut tokens = subject.strip_prefix("paytrack.alert.")?.split('.');
        let (Some(tenant), Some(kind), None) = (tokens.next(), tokens.next(), tokens.next()) else {
            return None;
        };
        Some(AlertSubject { tenant, kind })
    }
}

/// The four tokens after `paytrack.` of a five-token subject.
fn paytrack_tokens(subject: &str) -> Option<[&str; 4]> {
    let mut tokens = subject.strip_prefix("paytrack.")?.split('.');
    let four = [tokens.next()?, tokens.next()?, tokens.next()?, tokens.next()?];
    match tokens.next() {
        None => Some(four),
        Some(_) => None,
    }
}

/// `$KV.<bucket>.<keys>`: the subjects of a KV bucket's keys matching `keys` (a key
/// or a filter such as `parked.<tenant>.>`).
pub fn kv_keys(bucket: &str, keys: &str) -> String {
    format!("$KV.{bucket}.{keys}")
}

/// The key a KV bucket's subject `$KV.<bucket>.<key>` names.
pub fn kv_key<'a>(bucket: &str, subject: &'a str) -> Option<&'a str> {
    subject.strip_prefix("$KV.")?.strip_prefix(bucket)?.strip_prefix('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_follow_the_contract() {
        let t = TenantId::new("acme").unwrap();
        let m = MerchantId::new("m1").unwrap();
        let p = PaymentId::new("pay_1").unwrap();
        assert_eq!(inbound(&t, &p), "paytrack.in.acme.pay_1");
        assert_eq!(status(&t, &m, &p), "paytrack.status.acme.m1.pay_1");
        assert_eq!(checkpoint(&t, &m, &p), "paytrack.checkpoint.acme.m1.pay_1");
        assert_eq!(status_of_payment(&t, &p), "paytrack.status.acme.*.pay_1");
        assert_eq!(outcome(&t, &p), "paytrack.outcome.acme.pay_1");
        assert_eq!(status_stream_kind("paytrack.status.a.b.c"), Some("transition"));
        assert_eq!(status_stream_kind("paytrack.checkpoint.a.b.c"), Some("checkpoint"));
        assert_eq!(status_stream_kind("paytrack.in.a.b"), None);
        assert_eq!(
            dead_letter(STREAM_IN, "ledger-projector-evidence"),
            "paytrack.dead.PAYTRACK_IN.ledger-projector-evidence"
        );
        assert_eq!(alert(Some(&t), ALERT_DEAD_LETTER), "paytrack.alert.acme.dead_letter");
        assert_eq!(alert(None, ALERT_DEAD_LETTER), "paytrack.alert._.dead_letter");
        assert_eq!(tenant_of("paytrack.in.acme.pay_1"), Some(t));
        assert_eq!(tenant_of("paytrack.in.a\u{0}b.pay_1"), None);
        assert_eq!(tenant_of("paytrack"), None);
    }

    #[test]
    fn built_subjects_read_back() {
        let t = TenantId::new("acme").unwrap();
        let m = MerchantId::new("m1").unwrap();
        let p = PaymentId::new("pay_1").unwrap();
        assert_eq!(
            PaymentSubject::parse(&status(&t, &m, &p)),
            Some(PaymentSubject {
                kind: StatusKind::Transition,
                tenant: "acme",
                merchant: "m1",
                payment: "pay_1"
            })
        );
        assert_eq!(
            PaymentSubject::parse(&checkpoint(&t, &m, &p)).map(|s| s.kind),
            Some(StatusKind::Checkpoint)
        );
        let (u1, d1) = (UserId::new("u1").unwrap(), DeviceId::new("d1").unwrap());
        assert_eq!(push(&t, &u1, Some(&d1)), "paytrack.push.acme.u1.d1");
        assert_eq!(
            PushSubject::parse(&push(&t, &u1, None)),
            Some(PushSubject {
                tenant: "acme",
                user: "u1",
                device: None
            })
        );
        assert_eq!(
            PushSubject::parse(&push(&t, &u1, Some(&d1))).and_then(|s| s.device),
            Some("d1")
        );
        for other in [
            "paytrack.in.acme.pay_1",
            "paytrack.status.acme.m1",
            "paytrack.status.acme.m1.pay_1.x",
            "other.status.acme.m1.pay_1",
        ] {
            assert_eq!(PaymentSubject::parse(other), None, "{other}");
            assert_eq!(PushSubject::parse(other), None, "{other}");
        }
        assert_eq!(PushSubject::parse(&status(&t, &m, &p)), None);
        assert_eq!(PaymentSubject::parse(&push(&t, &u1, None)), None);
        assert_eq!(payment_messages(&t, &p), "paytrack.*.acme.*.pay_1");
        assert_eq!(merchant_messages(&t, &m), "paytrack.*.acme.m1.*");
        assert_eq!(tenant_messages(&t), "paytrack.*.acme.>");
        assert_eq!(user_pushes(&t, &u1), "paytrack.push.acme.u1.>");
        let subject = kv_keys(PROVIDER_REFS_BUCKET, "ref.acme.stripe.pi_1");
        assert_eq!(subject, "$KV.PAYTRACK_PROVIDER_REFS.ref.acme.stripe.pi_1");
        assert_eq!(kv_key(PROVIDER_REFS_BUCKET, &subject), Some("ref.acme.stripe.pi_1"));
        assert_eq!(kv_key(SWEEP_BUCKET, &subject), None);
        assert_eq!(
            AlertSubject::parse(&alert_ack(&t)),
            Some(AlertSubject {
                tenant: "acme",
                kind: ALERT_ACK
            })
        );
        assert_eq!(
            AlertSubject::parse(&alert(None, ALERT_TRACE_GAP)).map(|s| (s.tenant, s.kind)),
            Some((NO_TENANT, ALERT_TRACE_GAP))
        );
        assert_eq!(AlertSubject::parse("paytrack.alert.acme"), None);
        assert_eq!(AlertSubject::parse(&status(&t, &m, &p)), None);
    }
}
