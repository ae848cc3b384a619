//! Given a payment's newest transition and a movement event, when the core judges
//! it, then the verdict and the money state are the ones below.

use chrono::{DateTime, Utc};
use paytrack_shared::envelope::{Cause, PaymentTerms, Transition};
use paytrack_shared::money::{Amounts, Movement, MovementKind, MovementState};
use paytrack_shared::{MerchantId, PaymentId, TenantId};

use super::*;

fn t0() -> DateTime<Utc> {
    "2026-11-23T12:00:00Z".parse().unwrap()
}

fn payment(status: Status, money: MoneyState) -> Transition {
    let terms = PaymentTerms {
        amount_minor: Some(5000),
        currency: Some("USD".into()),
        rail: Some("card".into()),
        ..PaymentTerms::default()
    };
    let amounts = crate::amounts::after(
        crate::amounts::after(Amounts::default(), Status::Succeeded, &terms, &MoneyState::default()),
        status,
        &terms,
        &money,
    );
    Transition {
        v: 1,
        tenant: TenantId::new("t").unwrap(),
        merchant_id: MerchantId::new("m").unwrap(),
        payment_id: PaymentId::new("p").unwrap(),
        version: 2,
        status,
        previous_status: Some(Status::Pending),
        occurred_at: t0(),
        recorded_at: t0(),
        cause: Cause {
            fact_id: "wh:stripe:setter".into(),
            source: "webhook:stripe".into(),
            provider_event_id: None,
            rule: "stripe:payment_intent.succeeded".into(),
            inbound_seq: 1,
        },
        trace_id: String::new(),
        applied_fact_ids: vec!["wh:stripe:setter".into()],
        applied_fact_count: 1,
        terms,
        ordered_by: None,
        evidence_fact_ids: Vec::new(),
        amounts: Some(amounts),
        money,
        movements: Vec::new(),
    }
}

fn refund(id: &str, state: MovementState, amount: i64) -> Movement {
    Movement {
        kind: MovementKind::Refund,
        id: id.into(),
        state,
        amount_minor: amount,
        fee_minor: None,
        reason: None,
    }
}

fn dispute(id: &str, state: MovementState) -> Movement {
    Movement {
        kind: MovementKind::Dispute,
        id: id.into(),
        state,
        amount_minor: 5000,
        fee_minor: Some(1500),
        reason: None,
    }
}

fn evidence(items: Vec<Movement>) -> MovementEvidence {
    MovementEvidence {
        items,
        refunded_total_minor: None,
    }
}

/// A judged verdict: its letter, and the status and net after a move.
type Judged = (char, Option<(Status, i64)>);

/// The verdict as a letter (Move, Duplicate, Refused) and, for a move, the status
/// and net after it.
fn judged(current: Option<&Transition>, e: &MovementEvidence) -> Judged {
    let verdict = judge(current, "wh:stripe:new", e, Some(5000), StatusModel::get());
    match verdict {
        Verdict::Move { status, money, .. } => {
            let before = current.map(crate::amounts::of).unwrap_or_default();
            let terms = current.map(|c| c.terms.clone()).unwrap_or(PaymentTerms {
                amount_minor: Some(5000),
                ..PaymentTerms::default()
            });
            let net = crate::amounts::after(before, status, &terms, &money).net_minor;
            ('M', Some((status, net)))
        }
        Verdict::Duplicate { .. } => ('D', None),
        Verdict::Refused { .. } => ('R', None),
        other => panic!("a movement is never {other:?}"),
    }
}

#[test]
fn refunds_are_partial_multiple_and_idempotent_by_their_id() {
    use MovementState::*;
    let none = MoneyState::default();
    let one = MoneyState {
        movements: vec![refund("re_1", Succeeded, 1000)],
        refunded_total_minor: None,
    };
    let succeeded = payment(Status::Succeeded, none.clone());
    let after_one = payment(Status::Succeeded, one.clone());
    let rows: Vec<(&Transition, Vec<Movement>, Judged)> = vec![
        (
            &succeeded,
            vec![refund("re_1", Succeeded, 1000)],
            ('M', Some((Status::Succeeded, 4000))),
        ),
        (&after_one, vec![refund("re_1", Succeeded, 1000)], ('D', None)),
        (&after_one, vec![refund("re_1", Pending, 1000)], ('D', None)),
        (
            &after_one,
            vec![refund("re_2", Pending, 1500)],
            ('M', Some((Status::Succeeded, 2500))),
        ),
        (
            &after_one,
            vec![refund("re_1", Failed, 1000)],
            ('M', Some((Status::Succeeded, 5000))),
        ),
        // More than captured, as seen out of order: recorded, counted up to the capture.
        (
            &after_one,
            vec![refund("re_2", Succeeded, 4001)],
            ('M', Some((Status::Succeeded, 0))),
        ),
        (
            &after_one,
            vec![refund("re_2", Succeeded, 4000)],
            ('M', Some((Status::Succeeded, 0))),
        ),
        (&succeeded, vec![refund("re_1", Won, 1000)], ('R', None)),
        (&succeeded, vec![refund("re_1", Succeeded, 0)], ('R', None)),
    ];
    for (current, items, want) in rows {
        assert_eq!(judged(Some(current), &evidence(items.clone())), want, "{items:?}");
    }
    // Stripe's cumulative amount_refunded is a floor when refunds are not itemised.
    let floor = MovementEvidence {
        items: vec![],
        refunded_total_minor: Some(2500),
    };
    assert_eq!(judged(Some(&after_one), &floor), ('M', Some((Status::Succeeded, 2500))));
    assert_eq!(
        judged(
            Some(&after_one),
            &MovementEvidence {
                items: vec![],
                refunded_total_minor: Some(1000)
            }
        ),
        ('D', None)
    );
}

#[test]
fn disputes_withdraw_then_are_reinstated_or_lost() {
    use MovementState::*;
    let succeeded = payment(Status::Succeeded, MoneyState::default());
    let opened = payment(
        Status::Succeeded,
        MoneyState {
            movements: vec![dispute("dp_1", Opened)],
            refunded_total_minor: None,
        },
    );
    let rows: Vec<(&Transition, Movement, Judged)> = vec![
        (&succeeded, dispute("dp_1", Opened), ('M', Some((Status::Succeeded, 0)))),
        (&opened, dispute("dp_1", Opened), ('D', None)),
        (
            &opened,
            dispute("dp_1", FundsWithdrawn),
            ('M', Some((Status::Succeeded, 0))),
        ),
        (
            &opened,
            dispute("dp_1", EvidenceSubmitted),
            ('M', Some((Status::Succeeded, 0))),
        ),
        (&opened, dispute("dp_1", Won), ('M', Some((Status::Succeeded, 5000)))),
        (&opened, dispute("dp_1", Lost), ('M', Some((Status::Succeeded, 0)))),
        (&opened, dispute("dp_1", Pending), ('R', None)),
    ];
    for (current, item, want) in rows {
        assert_eq!(judged(Some(current), &evidence(vec![item.clone()])), want, "{item:?}");
    }
    let won = payment(
        Status::Succeeded,
        MoneyState {
            movements: vec![dispute("dp_1", Won)],
            refunded_total_minor: None,
        },
    );
    // A late copy of an earlier state changes nothing.
    assert_eq!(
        judged(Some(&won), &evidence(vec![dispute("dp_1", FundsWithdrawn)])),
        ('D', None)
    );
}

#[test]
fn a_movement_proves_the_capture_or_is_refused_without_one() {
    use MovementState::*;
    let e = evidence(vec![refund("re_1", Succeeded, 1000)]);
    // No history yet, or not yet succeeded: the refund proves the money was captured.
    assert_eq!(judged(None, &e), ('M', Some((Status::Succeeded, 4000))));
    // Without the payment's amount it is kept, and counts once the capture arrives.
    let kept = judge(None, "wh:stripe:new", &e, None, StatusModel::get());
    assert!(
        matches!(&kept, Verdict::Move { status: Status::Pending, money, .. } if money.refunded() == 1000),
        "{kept:?}"
    );
    let mut pending = payment(Status::Pending, MoneyState::default());
    pending.amounts = Some(Amounts::default());
    assert_eq!(judged(Some(&pending), &e), ('M', Some((Status::Succeeded, 4000))));
    for status in [Status::Failed, Status::Cancelled, Status::Returned] {
        let mut done = payment(status, MoneyState::default());
        done.amounts = Some(Amounts::default());
        assert_eq!(judged(Some(&done), &e), ('R', None), "{status}");
    }
    let investigating = payment(Status::InvestigationRequired, MoneyState::default());
    assert_eq!(
        judged(Some(&investigating), &e),
        ('M', Some((Status::InvestigationRequired, 4000)))
    );
    // The same fact again is a duplicate of itself.
    let mut applied = payment(Status::Succeeded, MoneyState::default());
    applied.applied_fact_ids.push("wh:stripe:new".into());
    assert_eq!(judged(Some(&applied), &e), ('D', None));
}
