//! The pure decision core: what one fact does to a payment, given the payment's
//! newest transition and the status model. No I/O, so every rule here is tested
//! given/when/then; `decide.rs` is the shell that reads, appends and retries.
//!
//! The order of the checks is the contract:
//! 1. a fact no rule maps is `Unmapped`;
//! 2. a fact already applied is a `Duplicate` (of itself);
//! 3. while `investigation_required`, only an operator's `resolve` to one of the
//!    model's `resolves_to` applies; everything else is refused;
//! 4. evidence of success after a failure is a late capture: the money moved, so
//!    the model's `late_captures` row for the provider and rail decides (`Apply`
//!    succeeded, or a `Conflict`), whatever its order (it is never stale);
//! 5. evidence older than the fact that set the current status (provider sequence
//!    where both give one, else provider time; never arrival order) is `Stale`;
//! 6. evidence repeating the current status is a `Duplicate` of the fact that set it;
//! 7. evidence contradicting what was applied (the model's `conflicts`, a return
//!    outside its rail's window) is a `Conflict`: the payment moves to
//!    `investigation_required` with both facts;
//! 8. otherwise the model's table decides: `Apply` or `Refused`.
//!
//! Refunds and disputes are judged by [`crate::movements`], which answers `Move`.

use std::cmp::Ordering;

use chrono::{DateTime, Utc};
use paytrack_shared::envelope::{Direction, PaymentTerms, ProviderOrder, Transition};
use paytrack_shared::money::{MoneyState, MovementChange};
use paytrack_shared::{FactId, Status, StatusModel};

/// What the core needs to know of the payment: its newest transition.
#[derive(Debug, Clone, Copy)]
pub struct State<'a> {
    /// The newest transition.
    pub transition: &'a Transition,
}

/// What kind of fact it is: provider evidence is ordered by the provider and can
/// conflict; a command is a request and is judged by the table alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FactKind {
    /// A webhook or a status-query answer.
    Evidence,
    /// An operator's resolution of `investigation_required`.
    Resolve,
    /// Any other command (create, cancel).
    Command,
}

/// The fact as the core sees it.
#[derive(Debug, Clone)]
pub struct FactView<'a> {
    /// The fact's id.
    pub fact_id: &'a str,
    /// The status its rule maps it to (None: unmapped).
    pub target: Option<Status>,
    /// Evidence or command.
    pub kind: FactKind,
    /// Where the provider places it (evidence only).
    pub order: Option<ProviderOrder>,
    /// When it happened (provider time, else when it was received).
    pub occurred_at: DateTime<Utc>,
    /// The reason the fact gives (a return reason code on `returned`).
    pub reason: Option<&'a str>,
}

/// What the fact does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Append a transition to `status`.
    Apply {
        /// The new status.
        status: Status,
    },
    /// It was applied before (itself), or repeats the status another fact set.
    Duplicate {
        /// The applied fact it repeats.
        superseded_by: FactId,
    },
    /// It is older than the fact that set the current status.
    Stale {
        /// The newer applied fact.
        superseded_by: FactId,
    },
    /// It contradicts what was applied: append `investigation_required` carrying
    /// both facts.
    Conflict {
        /// The applied fact it contradicts.
        with: FactId,
        /// Why, from the model.
        why: String,
    },
    /// The model does not allow the move.
    Refused {
        /// Why, in words.
        reason: String,
        /// The applied fact the decision was made against, if any.
        against: Option<FactId>,
    },
    /// No rule maps the fact.
    Unmapped,
    /// Append a transition that moves money (refunds, disputes), to `status`: the
    /// current one, or `succeeded` when the movement proves the capture.
    Move {
        /// The status after it.
        status: Status,
        /// Every movement, in its state after it.
        money: MoneyState,
        /// What changed.
        changes: Vec<MovementChange>,
    },
}

/// Decides what `fact` does to a payment in `state` (None: no history yet).
pub fn decide(state: Option<State<'_>>, fact: &FactView<'_>, model: &StatusModel) -> Verdict {
    let Some(to) = fact.target else {
        return Verdict::Unmapped;
    };
    let Some(state) = state else {
        if fact.kind == FactKind::Resolve {
            return refused("nothing to resolve: the payment has no history".to_owned(), None);
        }
        return match model.check_transition(None, to) {
            Ok(()) => Verdict::Apply { status: to },
            Err(e) => refused(e.to_string(), None),
        };
    };
    let current = state.transition;
    let setter = current.cause.fact_id.clone();
    if current.has_applied(fact.fact_id) {
        return Verdict::Duplicate {
            superseded_by: FactId::from(fact.fact_id),
        };
    }
    let from = current.status;
    if fact.kind == FactKind::Resolve || from == Status::InvestigationRequired {
        if fact.kind != FactKind::Resolve {
            return refused(format!("only an operator's resolve leaves {from}"), Some(setter));
        }
        return match model.check_resolution(from, to) {
            Ok(()) => Verdict::Apply { status: to },
            Err(e) => refused(e.to_string(), Some(setter)),
        };
    }
    if fact.kind == FactKind::Evidence {
        if from == Status::Failed && to == Status::Succeeded {
            return late_capture(current, fact, model);
        }
        if let (Some(order), Some(current_order)) = (&fact.order, &current.ordered_by)
            && compare(order, current_order) == Some(Ordering::Less)
        {
            return Verdict::Stale { superseded_by: setter };
        }
        if to == from {
            return Verdict::Duplicate { superseded_by: setter };
        }
        if let Some(why) = contradiction(current, fact, to, model) {
            return match model.check_transition(Some(from), Status::InvestigationRequired) {
                Ok(()) => Verdict::Conflict { with: setter, why },
                Err(e) => refused(e.to_string(), Some(setter)),
            };
        }
    } else if to == from {
        return Verdict::Duplicate { superseded_by: setter };
    }
    match model.check_transition(Some(from), to) {
        Ok(()) => Verdict::Apply { status: to },
        Err(e) => refused(e.to_string(), Some(setter)),
    }
}

fn refused(reason: String, against: Option<FactId>) -> Verdict {
    Verdict::Refused { reason, against }
}

/// Evidence of success after `current` failed: what the model's late-capture row of
/// the provider and rail says (no row: the table refuses, as before).
fn late_capture(current: &Transition, fact: &FactView<'_>, model: &StatusModel) -> Verdict {
    let provider = fact.order.as_ref().map_or("", |o| o.provider.as_str());
    match model.late_capture(provider, current.terms.rail.as_deref()) {
        Some(rule) if rule.to == Status::Succeeded => Verdict::Apply {
            status: Status::Succeeded,
        },
        Some(rule) => Verdict::Conflict {
            with: current.cause.fact_id.clone(),
            why: rule.why.clone(),
        },
        None => refused(
            format!(
                "{} -> {} is not an allowed transition",
                Status::Failed,
                Status::Succeeded
            ),
            Some(current.cause.fact_id.clone()),
        ),
    }
}

/// The late-capture rule that allows `previous` (failed) to move to `next` by the
/// evidence of its cause, if one does.
fn late_capture_allows(model: &StatusModel, previous: &Transition, next: &Transition) -> bool {
    let provider = next.cause.source.split_once(':').map_or("", |(_, provider)| provider);
    previous.status == Status::Failed
        && model
            .late_capture(provider, previous.terms.rail.as_deref())
            .is_some_and(|rule| rule.to == next.status)
}

/// Why evidence asking for `to` contradicts the applied `current`, if it does.
fn contradiction(current: &Transition, fact: &FactView<'_>, to: Status, model: &StatusModel) -> Option<String> {
    let conflict = model.conflict(current.status, to)?;
    // A bank reverses a paid payout on any mode: the provider's word is the return.
    if to == Status::Returned && current.terms.direction == Some(Direction::Payout) {
        return None;
    }
    if to == Status::Returned {
        let allowed = model.return_allowed(
            current.terms.rail.as_deref(),
            fact.reason,
            current.occurred_at,
            fact.occurred_at,
        );
        // An unknown rail gives nothing to judge the return by: the table decides.
        if allowed.unwrap_or(true) {
            return None;
        }
        return Some(format!(
            "{} (rail {}, code {})",
            conflict.why,
            current.terms.rail.as_deref().unwrap_or("unknown"),
            fact.reason.unwrap_or("none")
        ));
    }
    Some(conflict.why.clone())
}

/// How `a` is placed against `b` by the provider: by sequence when both come from
/// the same provider and carry one, else by provider time; None when nothing
/// compares (then the fact is not stale).
pub fn compare(a: &ProviderOrder, b: &ProviderOrder) -> Option<Ordering> {
    if a.provider == b.provider
        && let (Some(x), Some(y)) = (a.provider_seq, b.provider_seq)
    {
        return Some(x.cmp(&y));
    }
    match (a.occurred_at, b.occurred_at) {
        (Some(x), Some(y)) => Some(x.cmp(&y)),
        _ => None,
    }
}

/// The ordering a transition records: the fact's own for evidence, the previous one
/// for a command. A conflict keeps the newer of the two.
pub fn ordered_by_after(verdict: &Verdict, current: Option<&Transition>, fact: &FactView<'_>) -> Option<ProviderOrder> {
    match verdict {
        // A refund or dispute is not the provider's word on the attempt.
        Verdict::Move { .. } => current.and_then(|c| c.ordered_by.clone()),
        Verdict::Conflict { .. } => {
            let known = current.and_then(|c| c.ordered_by.clone());
            match (&fact.order, known) {
                (Some(f), Some(k)) if compare(f, &k) != Some(Ordering::Less) => Some(f.clone()),
                (f, k) => k.or_else(|| f.clone()),
            }
        }
        _ if fact.kind == FactKind::Evidence => fact.order.clone(),
        // A command is not placed by the provider: the provider's last word stays
        // the yardstick for later evidence.
        _ => current.and_then(|c| c.ordered_by.clone()),
    }
}

/// Whether `previous -> next` (the cause's kind given) is a move the model allows:
/// the checker the property tests and the integration tests run over whole chains.
pub fn valid_step(model: &StatusModel, previous: Option<&Transition>, next: &Transition) -> Result<(), String> {
    let resolve = next.cause.rule == "command:resolve";
    let from = previous.map(|p| p.status);
    if next.previous_status != from {
        return Err(format!(
            "previous_status {:?} but the chain says {from:?}",
            next.previous_status
        ));
    }
    if next.version != previous.map_or(1, |p| p.version + 1) {
        return Err(format!(
            "version {} after {:?}",
            next.version,
            previous.map(|p| p.version)
        ));
    }
    if from == Some(next.status) && next.cause.rule == "command:create" {
        // A create that arrived after its payment's webhooks: it completes the terms.
        return match previous {
            Some(p) if p.terms != next.terms && terms_kept(&p.terms, &next.terms) => Ok(()),
            _ => Err("a late create that completed no terms".to_owned()),
        };
    }
    match from {
        Some(Status::InvestigationRequired) if resolve => model
            .check_resolution(Status::InvestigationRequired, next.status)
            .map_err(|e| e.to_string()),
        Some(status) if status == next.status && previous.is_some_and(|p| crate::movements::moved_money(p, next)) => {
            Ok(())
        }
        Some(Status::InvestigationRequired) => Err("left investigation_required without a resolve".to_owned()),
        Some(Status::Failed) if previous.is_some_and(|p| late_capture_allows(model, p, next)) => Ok(()),
        _ if resolve => Err("a resolve outside investigation_required".to_owned()),
        _ => {
            model.check_transition(from, next.status).map_err(|e| e.to_string())?;
            if next.status == Status::Returned
                && let Some(p) = previous
                && model.rail(p.terms.rail.as_deref()).irrevocable
                && p.terms.rail.is_some()
                && p.terms.direction != Some(Direction::Payout)
            {
                return Err(format!("returned on irrevocable rail {:?}", p.terms.rail));
            }
            if next.status == Status::InvestigationRequired && next.evidence_fact_ids.len() < 2 {
                return Err("investigation_required without both facts".to_owned());
            }
            Ok(())
        }
    }
}

/// Terms are never lost: `after` keeps every field `before` had.
pub fn terms_kept(before: &PaymentTerms, after: &PaymentTerms) -> bool {
    let kept = |b: &Option<String>, a: &Option<String>| b.is_none() || b == a;
    (before.amount_minor.is_none() || before.amount_minor == after.amount_minor)
        && kept(&before.currency, &after.currency)
        && kept(&before.rail, &after.rail)
        && kept(&before.country, &after.country)
        && kept(&before.provider, &after.provider)
        && kept(&before.provider_ref, &after.provider_ref)
        && (before.direction.is_none() || before.direction == after.direction)
}

#[cfg(test)]
mod tests;
