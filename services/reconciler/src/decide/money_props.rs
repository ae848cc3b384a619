//! Property tests of money movements through the pure core and the transitions the
//! shell builds: a payment's captures, refunds (partial and full, some failing) and
//! disputes (won and lost), delivered shuffled, repeated and partly lost, and then
//! delivered again as a sweep would, end with exactly the provider's amounts.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use paytrack_shared::envelope::{FactSource, InboundFact, ProviderEvent, RawEvidence, Transition};
use paytrack_shared::money::{Movement, MovementEvidence, MovementKind, MovementState};
use paytrack_shared::{MerchantId, PaymentId, Status, StatusModel, TenantId};
use proptest::prelude::*;

use super::{next_transition, view_of};
use crate::judge::{self, State};
use crate::mapping::{map_fact, movement_of};

fn t0() -> DateTime<Utc> {
    "2026-11-23T12:00:00Z".parse().unwrap()
}

/// What the provider did to one payment: its amount, its refunds and its dispute,
/// each with the states it went through.
#[derive(Debug, Clone)]
struct Truth {
    amount: i64,
    refunds: Vec<(i64, MovementState)>,
    dispute: Option<(i64, MovementState, bool)>,
}

impl Truth {
    /// Where the money is at the end: (captured, refunded, disputed, net).
    fn amounts(&self) -> (i64, i64, i64, i64) {
        let refunded: i64 = self.refunds.iter().filter(|(_, s)| s.withholds()).map(|(a, _)| a).sum();
        let disputed = self.dispute.filter(|(_, s, _)| s.withholds()).map_or(0, |(a, _, _)| a);
        (self.amount, refunded, disputed, self.amount - refunded - disputed)
    }

    /// Every event the provider sends, in its own order.
    fn events(&self) -> Vec<InboundFact> {
        let mut out = vec![event("pi_ok", Some("succeeded"), Some(self.amount), None)];
        for (n, (amount, end)) in self.refunds.iter().enumerate() {
            let id = format!("re_{n}");
            out.push(movement(
                &format!("rf_{n}_created"),
                MovementKind::Refund,
                &id,
                MovementState::Pending,
                *amount,
            ));
            if *end != MovementState::Pending {
                out.push(movement(
                    &format!("rf_{n}_end"),
                    MovementKind::Refund,
                    &id,
                    *end,
                    *amount,
                ));
            }
        }
        if let Some((amount, end, withdrawn)) = self.dispute {
            out.push(movement(
                "dp_open",
                MovementKind::Dispute,
                "dp_1",
                MovementState::Opened,
                amount,
            ));
            if withdrawn {
                out.push(movement(
                    "dp_funds",
                    MovementKind::Dispute,
                    "dp_1",
                    MovementState::FundsWithdrawn,
                    amount,
                ));
            }
            if end != MovementState::Opened {
                out.push(movement("dp_end", MovementKind::Dispute, "dp_1", end, amount));
            }
        }
        out
    }
}

fn event(id: &str, status: Option<&str>, amount: Option<i64>, movement: Option<MovementEvidence>) -> InboundFact {
    let event_type = if movement.is_some() {
        "charge.refund.updated"
    } else {
        "payment_intent.succeeded"
    };
    InboundFact {
        v: 1,
        fact_id: format!("wh:stripe:{id}").into(),
        tenant: TenantId::new("t").unwrap(),
        payment_id: PaymentId::new("p").unwrap(),
        merchant_id: Some(MerchantId::new("m").unwrap()),
        received_at: t0() + Duration::days(1),
        source: FactSource::Webhook(ProviderEvent {
            status: status.map(str::to_owned),
            occurred_at: Some(t0()),
            provider_ref: Some("pi_1".into()),
            amount_minor: amount,
            currency: Some("USD".into()),
            movement,
            ..ProviderEvent::new("stripe", id, event_type)
        }),
        raw: RawEvidence {
            headers: BTreeMap::new(),
            body: String::new(),
        },
    }
}

fn movement(id: &str, kind: MovementKind, movement_id: &str, state: MovementState, amount: i64) -> InboundFact {
    let evidence = MovementEvidence {
        items: vec![Movement {
            kind,
            id: movement_id.into(),
            state,
            amount_minor: amount,
            fee_minor: None,
            reason: None,
        }],
        refunded_total_minor: None,
    };
    event(id, None, None, Some(evidence))
}

/// Feeds `facts` to the core as the shell would, checking every step; the chain.
fn run(facts: &[InboundFact]) -> Vec<Transition> {
    let model = StatusModel::get();
    let mut chain: Vec<Transition> = Vec::new();
    for (n, fact) in facts.iter().enumerate() {
        let movement = movement_of(fact);
        let Some(mapped) = movement.as_ref().map(|m| m.mapped.clone()).or_else(|| map_fact(fact)) else {
            continue;
        };
        let view = view_of(fact, &mapped);
        let current = chain.last();
        let verdict = match &movement {
            Some(m) => crate::movements::judge(current, &fact.fact_id, m.evidence, m.payment_amount, model),
            None => judge::decide(current.map(|t| State { transition: t }), &view, model),
        };
        let merchant = MerchantId::new("m").unwrap();
        let Some(next) = next_transition(current, merchant, fact, &view, &verdict, &mapped.rule, n as u64, "") else {
            continue;
        };
        if let Err(e) = judge::valid_step(model, current, &next) {
            panic!("{e}: {:?} -> {next:?} by {verdict:?}", current.map(|c| c.status));
        }
        let a = next.amounts.clone().unwrap_or_default();
        assert!(a.net_minor >= 0, "net below zero: {a:?}");
        assert_eq!(
            a.net_minor,
            a.captured_minor - a.refunded_minor - a.returned_minor - a.disputed_minor
        );
        chain.push(next);
    }
    chain
}

fn refund_end() -> impl Strategy<Value = MovementState> {
    prop::sample::select(vec![
        MovementState::Pending,
        MovementState::Succeeded,
        MovementState::Succeeded,
        MovementState::Failed,
        MovementState::Cancelled,
    ])
}

fn dispute_end() -> impl Strategy<Value = MovementState> {
    prop::sample::select(vec![
        MovementState::Opened,
        MovementState::EvidenceSubmitted,
        MovementState::Won,
        MovementState::Lost,
    ])
}

fn truths() -> impl Strategy<Value = Truth> {
    (1_000i64..100_000).prop_flat_map(|amount| {
        (
            Just(amount),
            // Up to four refunds of at most a quarter each: never more than captured.
            prop::collection::vec((1..=amount / 4, refund_end()), 0..5),
            prop::option::of((dispute_end(), any::<bool>(), 1..=100i64)),
        )
            .prop_map(|(amount, refunds, dispute)| {
                let refunded: i64 = refunds.iter().map(|(a, _)| a).sum();
                let room = amount - refunded;
                let dispute = dispute
                    .filter(|_| room > 0)
                    .map(|(end, withdrawn, pct)| ((room * pct / 100).max(1), end, withdrawn));
                Truth {
                    amount,
                    refunds,
                    dispute,
                }
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Shuffled, repeated and partly lost, then delivered again in another order (a
    /// sweep): the payment ends `succeeded` with exactly the provider's amounts, a
    /// full refund says so, and every step kept net = captured − refunded − disputed.
    #[test]
    fn amounts_end_at_the_truth_whatever_the_delivery(
        truth in truths(),
        order in prop::collection::vec(any::<u16>(), 0..40),
        keep in prop::collection::vec(any::<bool>(), 0..40),
        sweep in Just((0..16usize).collect::<Vec<_>>()).prop_shuffle(),
    ) {
        let events = truth.events();
        let mut delivered: Vec<InboundFact> = order
            .iter()
            .zip(keep.iter().chain(std::iter::repeat(&true)))
            .filter(|(_, k)| **k)
            .map(|(i, _)| events[usize::from(*i) % events.len()].clone())
            .collect();
        delivered.extend(sweep.iter().filter(|i| **i < events.len()).map(|i| events[*i].clone()));
        let chain = run(&delivered);
        let last = chain.last().expect("the sweep delivers everything");
        prop_assert_eq!(last.status, Status::Succeeded);
        let a = last.amounts.clone().unwrap_or_default();
        let (captured, refunded, disputed, net) = truth.amounts();
        prop_assert_eq!(
            (a.captured_minor, a.refunded_minor, a.disputed_minor, a.net_minor),
            (captured, refunded, disputed, net),
            "{:?}", truth
        );
        prop_assert_eq!(a.refunded, refunded == captured);
        // A repeat of everything changes nothing more.
        let mut again = delivered.clone();
        again.extend(events.iter().cloned());
        prop_assert_eq!(run(&again).len(), chain.len());
    }
}
