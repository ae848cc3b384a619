//! Refunds and disputes in each provider's own event shapes: the mapping tables from
//! a provider's event (and the object's own status) to a movement's state, and the
//! parsing of the movements an event reports. An event that reports movements moves
//! a payment's amounts, never its status (a partial refund is not a return).

use paytrack_shared::money::{Movement, MovementEvidence, MovementKind, MovementState};
use serde_json::Value;

use super::verify;
use crate::error::ApiError;

/// Stripe's refund and dispute events paytrack maps. A refund's state is its
/// object's `status`; a dispute's is the event's (or, once closed, its `status`).
pub const STRIPE_EVENTS: &[(&str, &str)] = &[
    (
        "charge.refunded",
        "every refund of the charge, by refund status; amount_refunded is the floor",
    ),
    ("charge.refund.updated", "the refund, by its status"),
    ("refund.created", "the refund, by its status"),
    ("refund.updated", "the refund, by its status"),
    ("refund.failed", "failed"),
    ("charge.dispute.created", "opened"),
    ("charge.dispute.funds_withdrawn", "funds_withdrawn"),
    (
        "charge.dispute.updated",
        "by status: under_review is evidence_submitted",
    ),
    ("charge.dispute.funds_reinstated", "won"),
    (
        "charge.dispute.closed",
        "by status: won (or warning_closed) is won, lost is lost",
    ),
];

/// Razorpay's refund and dispute events paytrack maps, each to a movement's state.
pub const RAZORPAY_EVENTS: &[(&str, &str)] = &[
    ("refund.created", "pending"),
    ("refund.processed", "succeeded"),
    ("refund.failed", "failed"),
    ("payment.dispute.created", "opened"),
    ("payment.dispute.action_required", "opened"),
    ("payment.dispute.under_review", "evidence_submitted"),
    ("payment.dispute.won", "won"),
    ("payment.dispute.lost", "lost"),
    ("payment.dispute.closed", "lost"),
];

/// The generic format's movement events: `payment.refund.<state>` and
/// `payment.dispute.<state>`, with `data.movement` naming the refund or dispute.
pub const STDWEBHOOKS_EVENTS: &[(&str, &str)] = &[
    ("payment.refund.pending", "pending"),
    ("payment.refund.succeeded", "succeeded"),
    ("payment.refund.failed", "failed"),
    ("payment.refund.cancelled", "cancelled"),
    ("payment.dispute.opened", "opened"),
    ("payment.dispute.funds_withdrawn", "funds_withdrawn"),
    ("payment.dispute.evidence_submitted", "evidence_submitted"),
    ("payment.dispute.won", "won"),
    ("payment.dispute.lost", "lost"),
];

/// `data.movement` of a generic movement event.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct StdMovement {
    /// The provider's id of the refund or dispute.
    pub id: String,
    /// Its amount, in the payment's minor units.
    pub amount_minor: i64,
    /// The provider's fee on it, if any.
    #[serde(default)]
    pub fee_minor: Option<i64>,
    /// A failure or dispute reason.
    #[serde(default)]
    pub reason: Option<String>,
}

/// The movement of a generic event, if its type is a movement's (which then needs
/// `data.movement`).
pub fn stdwebhooks(event_type: &str, data: Option<&StdMovement>) -> Result<Option<MovementEvidence>, ApiError> {
    let Some((_, state)) = STDWEBHOOKS_EVENTS.iter().find(|(t, _)| *t == event_type) else {
        return Ok(None);
    };
    let m = data.ok_or_else(|| ApiError::Malformed(format!("{event_type} needs data.movement")))?;
    let kind = if event_type.starts_with("payment.refund.") {
        MovementKind::Refund
    } else {
        MovementKind::Dispute
    };
    let state: MovementState = serde_json::from_value(Value::String((*state).to_owned()))
        .map_err(|e| ApiError::Malformed(format!("movement state: {e}")))?;
    if m.fee_minor.is_some_and(|f| f < 0) {
        return Err(ApiError::Malformed(
            "data.movement.fee_minor must not be negative".into(),
        ));
    }
    let item = movement(
        kind,
        &Value::String(m.id.clone()),
        state,
        &Value::from(m.amount_minor),
        m.fee_minor,
        m.reason.as_deref(),
    )?;
    Ok(Some(MovementEvidence {
        items: vec![item],
        refunded_total_minor: None,
    }))
}

/// What a movement event says: its movements and the payment's own amount, where
/// the event gives it (a refund's amount is the refund's, not the payment's).
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// The movements.
    pub evidence: MovementEvidence,
    /// The payment's amount, when the event carries the payment (or charge).
    pub payment_amount: Option<i64>,
}

/// The movements of a Stripe event whose `data.object` is `object`, if its type is a
/// movement's.
pub fn stripe(event_type: &str, object: &Value) -> Result<Option<Parsed>, ApiError> {
    if !STRIPE_EVENTS.iter().any(|(t, _)| *t == event_type) {
        return Ok(None);
    }
    if event_type == "charge.refunded" {
        let mut items = Vec::new();
        for refund in object["refunds"]["data"].as_array().into_iter().flatten() {
            if let Some(item) = stripe_refund(refund, None)? {
                items.push(item);
            }
        }
        let total = object["amount_refunded"].as_i64().filter(|a| *a >= 0);
        return Ok(Some(Parsed {
            evidence: MovementEvidence {
                items,
                refunded_total_minor: total,
            },
            payment_amount: object["amount"].as_i64().filter(|a| *a > 0),
        }));
    }
    let item = if event_type.starts_with("charge.dispute.") {
        let state = match (event_type, object["status"].as_str()) {
            ("charge.dispute.created", _) => MovementState::Opened,
            ("charge.dispute.funds_withdrawn", _) => MovementState::FundsWithdrawn,
            ("charge.dispute.funds_reinstated", _) => MovementState::Won,
            (_, Some("won" | "warning_closed")) => MovementState::Won,
            (_, Some("lost")) => MovementState::Lost,
            (_, Some("under_review" | "warning_under_review")) => MovementState::EvidenceSubmitted,
            _ => MovementState::Opened,
        };
        let fee: Option<i64> = object["balance_transactions"]
            .as_array()
            .map(|txs| txs.iter().filter_map(|t| t["fee"].as_i64()).filter(|f| *f > 0).sum())
            .filter(|f: &i64| *f > 0);
        Some(movement(
            MovementKind::Dispute,
            &object["id"],
            state,
            &object["amount"],
            fee,
            object["reason"].as_str(),
        )?)
    } else {
        let forced = (event_type == "refund.failed").then_some(MovementState::Failed);
        stripe_refund(object, forced)?
    };
    Ok(Some(Parsed {
        evidence: MovementEvidence {
            items: item.into_iter().collect(),
            refunded_total_minor: None,
        },
        payment_amount: None,
    }))
}

/// A Stripe refund object as a movement (None for a status paytrack does not track
/// yet, `requires_action`: nothing has moved).
fn stripe_refund(refund: &Value, forced: Option<MovementState>) -> Result<Option<Movement>, ApiError> {
    let state = match (forced, refund["status"].as_str()) {
        (Some(state), _) => state,
        (None, Some("pending")) => MovementState::Pending,
        (None, Some("succeeded")) => MovementState::Succeeded,
        (None, Some("failed")) => MovementState::Failed,
        (None, Some("canceled")) => MovementState::Cancelled,
        (None, Some("requires_action")) => return Ok(None),
        (None, other) => {
            return Err(ApiError::Malformed(format!(
                "refund status {} is not one Stripe documents",
                other.unwrap_or("(missing)")
            )));
        }
    };
    movement(
        MovementKind::Refund,
        &refund["id"],
        state,
        &refund["amount"],
        None,
        refund["failure_reason"].as_str(),
    )
    .map(Some)
}

/// The movements of a Razorpay event (`value` is the whole body), if its type is a
/// movement's.
pub fn razorpay(event_type: &str, value: &Value) -> Result<Option<Parsed>, ApiError> {
    let Some((_, state)) = RAZORPAY_EVENTS.iter().find(|(t, _)| *t == event_type) else {
        return Ok(None);
    };
    let (kind, entity) = if event_type.starts_with("refund.") {
        (MovementKind::Refund, &value["payload"]["refund"]["entity"])
    } else {
        (MovementKind::Dispute, &value["payload"]["dispute"]["entity"])
    };
    let state: MovementState = serde_json::from_value(Value::String((*state).to_owned()))
        .map_err(|e| ApiError::Malformed(format!("movement state: {e}")))?;
    let item = movement(
        kind,
        &entity["id"],
        state,
        &entity["amount"],
        None,
        entity["reason_code"].as_str().or(entity["reason_description"].as_str()),
    )?;
    Ok(Some(Parsed {
        evidence: MovementEvidence {
            items: vec![item],
            refunded_total_minor: None,
        },
        payment_amount: value["payload"]["payment"]["entity"]["amount"]
            .as_i64()
            .filter(|a| *a > 0),
    }))
}

/// One movement, its id and amount checked: bad input is a 400, never a fact.
fn movement(
    kind: MovementKind,
    id: &Value,
    state: MovementState,
    amount: &Value,
    fee_minor: Option<i64>,
    reason: Option<&str>,
) -> Result<Movement, ApiError> {
    let what = kind.as_str();
    let id = id
        .as_str()
        .ok_or_else(|| ApiError::Malformed(format!("the {what} has no id")))?;
    verify::check_delivery_id(id, &format!("the {what}'s id"))?;
    let amount_minor = amount
        .as_i64()
        .filter(|a| *a > 0)
        .ok_or_else(|| ApiError::Malformed(format!("the {what}'s amount must be a positive integer")))?;
    verify::check_text("reason", reason)?;
    Ok(Movement {
        kind,
        id: id.to_owned(),
        state,
        amount_minor,
        fee_minor: fee_minor.filter(|f| *f > 0 && *f <= amount_minor.saturating_mul(10)),
        reason: reason.map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_charge_refunded_lists_every_refund_and_the_cumulative_amount() {
        let charge = json!({"id": "ch_1", "object": "charge", "amount": 5000, "amount_refunded": 2500,
            "payment_intent": "pi_1", "refunds": {"object": "list", "data": [
                {"id": "re_2", "object": "refund", "amount": 1500, "status": "succeeded"},
                {"id": "re_1", "object": "refund", "amount": 1000, "status": "succeeded"}]}});
        let parsed = stripe("charge.refunded", &charge).unwrap().unwrap();
        assert_eq!(parsed.payment_amount, Some(5000));
        assert_eq!(parsed.evidence.refunded_total_minor, Some(2500));
        let ids: Vec<_> = parsed
            .evidence
            .items
            .iter()
            .map(|m| (m.id.as_str(), m.amount_minor))
            .collect();
        assert_eq!(ids, vec![("re_2", 1500), ("re_1", 1000)]);
    }

    #[test]
    fn stripe_dispute_states_follow_the_event_and_the_status() {
        let dispute = |status: &str| {
            json!({"id": "dp_1", "object": "dispute", "amount": 5000, "payment_intent": "pi_1",
                "status": status, "reason": "fraudulent", "balance_transactions": [{"fee": 1500, "amount": -5000}]})
        };
        let cases = [
            ("charge.dispute.created", "needs_response", MovementState::Opened),
            (
                "charge.dispute.funds_withdrawn",
                "needs_response",
                MovementState::FundsWithdrawn,
            ),
            (
                "charge.dispute.updated",
                "under_review",
                MovementState::EvidenceSubmitted,
            ),
            ("charge.dispute.funds_reinstated", "won", MovementState::Won),
            ("charge.dispute.closed", "won", MovementState::Won),
            ("charge.dispute.closed", "lost", MovementState::Lost),
        ];
        for (event, status, want) in cases {
            let parsed = stripe(event, &dispute(status)).unwrap().unwrap();
            let item = &parsed.evidence.items[0];
            assert_eq!((item.kind, item.state), (MovementKind::Dispute, want), "{event}");
            assert_eq!(item.fee_minor, Some(1500));
        }
        assert_eq!(stripe("payment_intent.succeeded", &dispute("x")).unwrap(), None);
    }

    #[test]
    fn razorpay_refunds_and_disputes_map_by_event() {
        let body = json!({"event": "refund.failed", "payload": {
            "refund": {"entity": {"id": "rfnd_1", "entity": "refund", "amount": 700, "payment_id": "pay_1"}},
            "payment": {"entity": {"id": "pay_1", "amount": 2000}}}});
        let parsed = razorpay("refund.failed", &body).unwrap().unwrap();
        assert_eq!(parsed.payment_amount, Some(2000));
        let item = &parsed.evidence.items[0];
        assert_eq!(
            (item.id.as_str(), item.state, item.amount_minor),
            ("rfnd_1", MovementState::Failed, 700)
        );
        let dispute =
            json!({"payload": {"dispute": {"entity": {"id": "disp_1", "amount": 2000, "payment_id": "pay_1"}}}});
        let lost = razorpay("payment.dispute.lost", &dispute).unwrap().unwrap();
        assert_eq!(lost.evidence.items[0].state, MovementState::Lost);
    }

    /// The docs page lists every event these tables map.
    #[test]
    fn the_docs_name_every_mapped_event() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/money.md");
        let docs = std::fs::read_to_string(path).unwrap_or_default();
        for (event, _) in STRIPE_EVENTS.iter().chain(RAZORPAY_EVENTS).chain(STDWEBHOOKS_EVENTS) {
            assert!(
                docs.contains(&format!("| `{event}` |")),
                "docs/money.md does not map {event}"
            );
        }
    }

    #[test]
    fn generic_movement_events_name_their_movement() {
        let m = StdMovement {
            id: "rf_1".into(),
            amount_minor: 300,
            fee_minor: None,
            reason: None,
        };
        let e = stdwebhooks("payment.refund.failed", Some(&m)).unwrap().unwrap();
        assert_eq!(
            (e.items[0].kind, e.items[0].state),
            (MovementKind::Refund, MovementState::Failed)
        );
        let d = stdwebhooks("payment.dispute.won", Some(&m)).unwrap().unwrap();
        assert_eq!(d.items[0].state, MovementState::Won);
        assert_eq!(stdwebhooks("payment.succeeded", Some(&m)).unwrap(), None);
        assert!(matches!(
            stdwebhooks("payment.refund.pending", None),
            Err(ApiError::Malformed(_))
        ));
        let negative = StdMovement { amount_minor: -1, ..m };
        assert!(stdwebhooks("payment.refund.pending", Some(&negative)).is_err());
    }

    #[test]
    fn bad_movements_are_refused_as_malformed() {
        for object in [
            json!({"id": "re_1", "object": "refund", "amount": -5, "status": "succeeded"}),
            json!({"id": "re_1", "object": "refund", "amount": "5", "status": "succeeded"}),
            json!({"object": "refund", "amount": 5, "status": "succeeded"}),
            json!({"id": "re 1", "object": "refund", "amount": 5, "status": "succeeded"}),
            json!({"id": "re_1", "object": "refund", "amount": 5, "status": "exploded"}),
        ] {
            assert!(
                matches!(stripe("refund.updated", &object), Err(ApiError::Malformed(_))),
                "{object}"
            );
        }
    }
}
