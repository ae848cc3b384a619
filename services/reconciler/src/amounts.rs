//! Where a payment's money is after a transition: a pure function of the status it
//! reaches, its terms and its movements, so every transition carries amounts that
//! the ledger posts the difference of.
//!
//! - `succeeded` captures the payment's amount, or what a partial capture reported
//!   (once: a later `succeeded` keeps what was captured); `failed` and `cancelled` hold nothing captured (a resolution
//!   that reverses a capture); `returned` takes back what was left;
//! - the other statuses keep what was captured;
//! - a payout's `paid_minor` is what it captured: the money that went out;
//! - refunds and disputes take back what their movements withhold, never more than
//!   was captured, so `net_minor` is never negative.

use paytrack_shared::Status;
use paytrack_shared::envelope::{Direction, PaymentTerms, Transition};
use paytrack_shared::money::{Amounts, MoneyState, MovementKind};

/// The amounts `t` carries, or, for a transition written before amounts existed,
/// the ones its status implied (captured while `succeeded`).
pub fn of(t: &Transition) -> Amounts {
    if let Some(a) = &t.amounts {
        return a.clone();
    }
    let captured = match t.status {
        Status::Succeeded => t.terms.amount_minor.unwrap_or(0).max(0),
        _ => 0,
    };
    Amounts {
        authorised_minor: captured,
        captured_minor: captured,
        ..Amounts::default()
    }
    .settle()
}

/// The amounts after a transition to `status` from a payment whose amounts were
/// `previous`, with `terms` and `money` as they are after it.
pub fn after(previous: Amounts, status: Status, terms: &PaymentTerms, money: &MoneyState) -> Amounts {
    let mut a = previous;
    let amount = terms.amount_minor.unwrap_or(0).max(0);
    match status {
        Status::Succeeded if a.captured_minor == 0 => {
            // A partial capture captures what the provider reported, never more than
            // the amount.
            a.captured_minor = terms.captured_minor.map_or(amount, |c| c.clamp(0, amount));
            a.authorised_minor = a.authorised_minor.max(amount);
        }
        Status::Failed | Status::Cancelled => a.captured_minor = 0,
        _ => {}
    }
    a.authorised_minor = a.authorised_minor.max(a.captured_minor);
    a.refunded_minor = money.refunded().clamp(0, a.captured_minor);
    a.disputed_minor = money
        .withheld(MovementKind::Dispute)
        .clamp(0, a.captured_minor - a.refunded_minor);
    a.returned_minor = match status {
        Status::Returned => a.captured_minor - a.refunded_minor - a.disputed_minor,
        _ => 0,
    };
    a.movement_fees_minor = money.fees();
    a.paid_minor = (terms.direction == Some(Direction::Payout)).then_some(a.captured_minor);
    a.settle()
}

#[cfg(test)]
mod tests {
    use paytrack_shared::money::{Movement, MovementState};

    use super::*;

    fn terms(amount: i64) -> PaymentTerms {
        PaymentTerms {
            amount_minor: Some(amount),
            currency: Some("USD".into()),
            ..PaymentTerms::default()
        }
    }

    fn movement(kind: MovementKind, id: &str, state: MovementState, amount: i64) -> Movement {
        Movement {
            kind,
            id: id.into(),
            state,
            amount_minor: amount,
            fee_minor: None,
            reason: None,
        }
    }

    /// Given a status and movements, when the amounts are computed, then net is
    /// captured less what refunds, returns and disputes take back.
    #[test]
    fn amounts_follow_the_status_and_the_movements() {
        use MovementKind::{Dispute, Refund};
        use MovementState::*;
        let none = MoneyState::default();
        let two_refunds = MoneyState {
            movements: vec![
                movement(Refund, "re_1", Succeeded, 1000),
                movement(Refund, "re_2", Pending, 1500),
            ],
            refunded_total_minor: None,
        };
        let lost = MoneyState {
            movements: vec![movement(Dispute, "dp_1", Lost, 5000)],
            refunded_total_minor: None,
        };
        let won = MoneyState {
            movements: vec![movement(Dispute, "dp_1", Won, 5000)],
            refunded_total_minor: None,
        };
        // (status, money) -> (captured, refunded, returned, disputed, net, refunded?)
        type Want = (i64, i64, i64, i64, i64, bool);
        let rows: &[(Status, &MoneyState, Want)] = &[
            (Status::InvestigationRequired, &none, (5000, 0, 0, 0, 5000, false)),
            (Status::Succeeded, &none, (5000, 0, 0, 0, 5000, false)),
            (Status::Succeeded, &two_refunds, (5000, 2500, 0, 0, 2500, false)),
            (Status::Succeeded, &lost, (5000, 0, 0, 5000, 0, false)),
            (Status::Succeeded, &won, (5000, 0, 0, 0, 5000, false)),
            (Status::Returned, &two_refunds, (5000, 2500, 2500, 0, 0, false)),
            (Status::Failed, &two_refunds, (0, 0, 0, 0, 0, false)),
        ];
        let captured = after(Amounts::default(), Status::Succeeded, &terms(5000), &none);
        for (status, money, want) in rows {
            let a = after(captured.clone(), *status, &terms(5000), money);
            assert_eq!(
                (
                    a.captured_minor,
                    a.refunded_minor,
                    a.returned_minor,
                    a.disputed_minor,
                    a.net_minor,
                    a.refunded
                ),
                *want,
                "{status} {money:?}"
            );
        }
        let full = MoneyState {
            movements: vec![movement(Refund, "re_1", Succeeded, 5000)],
            refunded_total_minor: None,
        };
        assert!(after(Amounts::default(), Status::Succeeded, &terms(5000), &full).refunded);
        // A partial capture: 3,000 of 5,000 authorised.
        let partial = PaymentTerms {
            captured_minor: Some(3000),
            ..terms(5000)
        };
        let a = after(Amounts::default(), Status::Succeeded, &partial, &none);
        assert_eq!((a.authorised_minor, a.captured_minor, a.net_minor), (5000, 3000, 3000));
        let pending = after(Amounts::default(), Status::Pending, &terms(5000), &none);
        assert_eq!(pending.net_minor, 0);
        assert_eq!(pending.paid_minor, None);
    }

    /// Given a payout, when it is paid and then returned, then `paid_minor` shows
    /// what went out and the net comes back to 0.
    #[test]
    fn a_payout_shows_what_it_paid_and_what_came_back() {
        let none = MoneyState::default();
        let payout = PaymentTerms {
            direction: Some(Direction::Payout),
            ..terms(5000)
        };
        let queued = after(Amounts::default(), Status::Pending, &payout, &none);
        assert_eq!((queued.paid_minor, queued.net_minor), (Some(0), 0));
        let paid = after(queued, Status::Succeeded, &payout, &none);
        assert_eq!((paid.paid_minor, paid.net_minor), (Some(5000), 5000));
        let returned = after(paid, Status::Returned, &payout, &none);
        assert_eq!(
            (returned.paid_minor, returned.returned_minor, returned.net_minor),
            (Some(5000), 5000, 0)
        );
        let failed = after(Amounts::default(), Status::Failed, &payout, &none);
        assert_eq!((failed.paid_minor, failed.net_minor), (Some(0), 0));
    }
}
