//! The pure core of money movements: what a refund or dispute event does to a
//! payment, given its newest transition. No I/O, table-tested like the judge.
//!
//! The order of the checks is the contract:
//! 1. a fact already applied is a `Duplicate` (of itself);
//! 2. a movement needs captured money: on a payment that has not succeeded yet (or
//!    has no history) it proves the capture, so the payment moves to `succeeded`
//!    with it when its amount is known and the model allows the move; while the
//!    amount is unknown the movement is kept with the status as it is (`pending`
//!    for a payment without history) and counts once the capture arrives; on a
//!    payment that failed, was cancelled or returned it is `Refused`;
//! 3. each movement is recognised by its provider id: a new one is recorded, a known
//!    one moves only forward in its lifecycle (a late copy of an earlier state
//!    changes nothing), and a fee reported for the first time is recorded;
//! 4. nothing new is a `Duplicate` of the fact that set the current state;
//! 5. otherwise `Move`: a transition carrying the movements' new states. Refunds
//!    that seem to take back more than was captured are still recorded (delivered
//!    out of order, a refund's failure may not have arrived yet): the amounts count
//!    at most what was captured.

use paytrack_shared::envelope::Transition;
use paytrack_shared::money::{MoneyState, MovementChange, MovementEvidence};
use paytrack_shared::{FactId, Status, StatusModel};

use crate::judge::Verdict;

/// Decides what a movement event (`fact_id`, reporting `evidence`; the payment's
/// amount `event_amount` where the event gives it) does to a payment whose newest
/// transition is `current` (None: no history yet).
pub fn judge(
    current: Option<&Transition>,
    fact_id: &str,
    evidence: &MovementEvidence,
    event_amount: Option<i64>,
    model: &StatusModel,
) -> Verdict {
    let against = current.map(|c| c.cause.fact_id.clone());
    if let Some(c) = current
        && c.has_applied(fact_id)
    {
        return Verdict::Duplicate {
            superseded_by: FactId::from(fact_id),
        };
    }
    let from = current.map(|c| c.status);
    let status = match from {
        Some(Status::Succeeded) | Some(Status::InvestigationRequired) => from.unwrap_or(Status::Succeeded),
        None | Some(Status::Initiated) | Some(Status::Pending) | Some(Status::Held) => {
            let amount = current.and_then(|c| c.terms.amount_minor).or(event_amount);
            match (amount.is_some_and(|a| a > 0), from) {
                (true, _) => match model.check_transition(from, Status::Succeeded) {
                    Ok(()) => Status::Succeeded,
                    Err(e) => return refused(e.to_string(), against),
                },
                // The amount is not known yet: the movement is kept (never dropped)
                // and counts once the capture's evidence arrives.
                (false, Some(status)) => status,
                (false, None) => Status::Pending,
            }
        }
        Some(other) => {
            return refused(format!("no captured money to move: the payment is {other}"), against);
        }
    };
    let mut money = current.map(|c| c.money.clone()).unwrap_or_default();
    let mut changes = Vec::new();
    for item in &evidence.items {
        if !item.state.fits(item.kind) || item.amount_minor <= 0 {
            return refused(
                format!(
                    "{} {} cannot be {} with amount {}",
                    item.kind.as_str(),
                    item.id,
                    item.state.as_str(),
                    item.amount_minor
                ),
                against,
            );
        }
        match money
            .movements
            .iter_mut()
            .find(|m| m.kind == item.kind && m.id == item.id)
        {
            None => {
                money.movements.push(item.clone());
                changes.push(MovementChange {
                    kind: item.kind,
                    id: item.id.clone(),
                    state: item.state,
                    previous_state: None,
                    amount_minor: item.amount_minor,
                    fee_minor: item.fee_minor,
                });
            }
            Some(known) => {
                let advances = item.state.rank() > known.state.rank();
                let new_fee = known.fee_minor.is_none() && item.fee_minor.is_some();
                if !advances && !new_fee {
                    continue;
                }
                let previous_state = known.state;
                if advances {
                    known.state = item.state;
                    if item.reason.is_some() {
                        known.reason = item.reason.clone();
                    }
                }
                if new_fee {
                    known.fee_minor = item.fee_minor;
                }
                changes.push(MovementChange {
                    kind: known.kind,
                    id: known.id.clone(),
                    state: known.state,
                    previous_state: Some(previous_state),
                    amount_minor: known.amount_minor,
                    fee_minor: if new_fee { item.fee_minor } else { None },
                });
            }
        }
    }
    // The provider's cumulative refunded amount counts only where it says more
    // than the refunds known by id.
    let mut floor_rose = false;
    if let Some(total) = evidence.refunded_total_minor
        && total > money.refunded_total_minor.unwrap_or(0)
    {
        floor_rose = total > money.refunded();
        money.refunded_total_minor = Some(total);
    }
    if changes.is_empty()
        && !floor_rose
        && status == from.unwrap_or(status)
        && let Some(setter) = against
    {
        return Verdict::Duplicate { superseded_by: setter };
    }
    Verdict::Move { status, money, changes }
}

fn refused(reason: String, against: Option<FactId>) -> Verdict {
    Verdict::Refused { reason, against }
}

/// Whether `next` moved money without moving the status, as the chain checker
/// accepts: its movements differ from `previous`'s.
pub fn moved_money(previous: &Transition, next: &Transition) -> bool {
    next.money != previous.money && !MoneyState::is_empty(&next.money)
}

#[cfg(test)]
mod tests;
