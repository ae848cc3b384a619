//! Money in and money out never share a history: a payout event that names a
//! payment (a payout of that payment's money, linked by its notes), or a payment
//! event that names a payout, is refused, so a payment's ledger is never posted
//! the other way round. Pure, like the judge.

use paytrack_shared::envelope::{Direction, FactSource, InboundFact, Transition};

use crate::judge::Verdict;

/// `verdict`, or a refusal when `fact` speaks of money going the other way than the
/// payment whose newest transition is `current`. A status-query answer that says no
/// direction is the provider's word on whatever the payment is, so it is kept.
pub fn refuse_other_direction(verdict: Verdict, current: Option<&Transition>, fact: &InboundFact) -> Verdict {
    let Some(current) = current else {
        return verdict;
    };
    if matches!(verdict, Verdict::Duplicate { .. } | Verdict::Stale { .. }) {
        return verdict;
    }
    let said = match &fact.source {
        FactSource::Webhook(event) => event.direction.unwrap_or(Direction::Payin),
        FactSource::StatusQuery(event) => match event.direction {
            Some(direction) => direction,
            None => return verdict,
        },
        FactSource::Command(_) => return verdict,
    };
    let known = current.terms.direction.unwrap_or(Direction::Payin);
    if said == known {
        return verdict;
    }
    Verdict::Refused {
        reason: format!("a {} event cannot move a {}", name(said), name(known)),
        against: Some(current.cause.fact_id.clone()),
    }
}

fn name(direction: Direction) -> &'static str {
    match direction {
        Direction::Payin => "payment",
        Direction::Payout => "payout",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::{DateTime, Utc};
    use paytrack_shared::envelope::{Cause, PaymentTerms, ProviderEvent, RawEvidence};
    use paytrack_shared::{MerchantId, PaymentId, Status, TenantId};

    use super::*;

    fn t0() -> DateTime<Utc> {
        "2026-11-23T12:00:00Z".parse().unwrap()
    }

    fn current(direction: Option<Direction>) -> Transition {
        Transition {
            v: 1,
            tenant: TenantId::new("t").unwrap(),
            merchant_id: MerchantId::new("m").unwrap(),
            payment_id: PaymentId::new("p").unwrap(),
            version: 1,
            status: Status::Succeeded,
            previous_status: None,
            occurred_at: t0(),
            recorded_at: t0(),
            cause: Cause {
                fact_id: "wh:razorpay:setter".into(),
                source: "webhook:razorpay".into(),
                provider_event_id: None,
                rule: "razorpay:x".into(),
                inbound_seq: 1,
            },
            trace_id: String::new(),
            applied_fact_ids: vec!["wh:razorpay:setter".into()],
            applied_fact_count: 1,
            terms: PaymentTerms {
                direction,
                ..PaymentTerms::default()
            },
            ordered_by: None,
            evidence_fact_ids: Vec::new(),
            amounts: None,
            money: Default::default(),
            movements: Vec::new(),
        }
    }

    fn fact(query: bool, direction: Option<Direction>) -> InboundFact {
        let event = ProviderEvent {
            status: Some("returned".into()),
            occurred_at: Some(t0()),
            provider_ref: Some("pout_1".into()),
            amount_minor: Some(100),
            currency: Some("INR".into()),
            direction,
            ..ProviderEvent::new("razorpay", "e1", "payout.reversed")
        };
        InboundFact {
            v: 1,
            fact_id: "wh:razorpay:e1".into(),
            tenant: TenantId::new("t").unwrap(),
            payment_id: PaymentId::new("p").unwrap(),
            merchant_id: None,
            received_at: t0(),
            source: if query {
                FactSource::StatusQuery(event)
            } else {
                FactSource::Webhook(event)
            },
            raw: RawEvidence {
                headers: BTreeMap::new(),
                body: String::new(),
            },
        }
    }

    /// Given a payment or a payout, when an event of either direction arrives, then
    /// only one of the same direction (or a status-query answer saying none) keeps
    /// its verdict; the rest are refused, and a first event opens either.
    #[test]
    fn only_events_of_the_same_direction_move_a_payment() {
        let apply = || Verdict::Apply {
            status: Status::Returned,
        };
        let payout = Some(Direction::Payout);
        // (current's direction, a status query?, the event's direction, kept?)
        let rows = [
            (None, false, None, true),
            (None, false, payout, false),
            (payout, false, payout, true),
            (payout, false, None, false),
            (payout, true, None, true),
            (None, true, payout, false),
            (Some(Direction::Payin), false, None, true),
        ];
        for (known, query, said, kept) in rows {
            let verdict = refuse_other_direction(apply(), Some(&current(known)), &fact(query, said));
            assert_eq!(
                matches!(verdict, Verdict::Apply { .. }),
                kept,
                "{known:?} {query} {said:?}: {verdict:?}"
            );
        }
        let first = refuse_other_direction(apply(), None, &fact(false, payout));
        assert!(matches!(first, Verdict::Apply { .. }));
        let duplicate = Verdict::Duplicate {
            superseded_by: "x".into(),
        };
        let kept = refuse_other_direction(duplicate, Some(&current(None)), &fact(false, payout));
        assert!(matches!(kept, Verdict::Duplicate { .. }));
    }
}
