//! Which alerts an applied transition raises: the moments an operator must see
//! about money (a dispute opened, a capture after a failure, a refund that failed)
//! and a conflict that waits for a resolution. Pure, so the rules are tested alone.

use paytrack_shared::envelope::Transition;
use paytrack_shared::money::{MovementKind, MovementState};
use paytrack_shared::{Status, subjects};

/// The alerts `t` raises, as (kind, detail); `conflict_with` names the applied fact
/// `t`'s cause contradicted, when it did.
pub fn of(t: &Transition, conflict_with: Option<&str>) -> Vec<(&'static str, String)> {
    let mut alerts = Vec::new();
    if t.previous_status == Some(Status::Failed)
        && matches!(t.status, Status::Succeeded | Status::InvestigationRequired)
    {
        alerts.push((
            subjects::ALERT_CAPTURED_AFTER_FAILURE,
            format!(
                "{} reported the money captured after the payment failed (rule {}): the payment is now {}; refund or accept it",
                t.cause.source, t.cause.rule, t.status
            ),
        ));
    }
    if let Some(with) = conflict_with {
        alerts.push((
            subjects::ALERT_INVESTIGATION_REQUIRED,
            format!(
                "{} contradicts {with}: the payment waits for an operator's resolve",
                t.cause.fact_id
            ),
        ));
    }
    for m in &t.movements {
        match (m.kind, m.state, m.previous_state) {
            (MovementKind::Dispute, _, None) => alerts.push((
                subjects::ALERT_DISPUTE_OPENED,
                format!(
                    "dispute {} of {} opened ({}): the amount is withheld until it is decided",
                    m.id,
                    m.amount_minor,
                    m.state.as_str()
                ),
            )),
            (MovementKind::Refund, MovementState::Failed | MovementState::Cancelled, previous)
                if previous != Some(m.state) =>
            {
                alerts.push((
                    subjects::ALERT_REFUND_FAILED,
                    format!(
                        "refund {} of {} {}: the money stayed with the merchant",
                        m.id,
                        m.amount_minor,
                        m.state.as_str()
                    ),
                ))
            }
            _ => {}
        }
    }
    alerts
}
