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

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use paytrack_shared::envelope::{Cause, PaymentTerms};
    use paytrack_shared::money::MovementChange;
    use paytrack_shared::{MerchantId, PaymentId, TenantId};

    use super::*;

    fn transition(previous: Status, status: Status, movements: Vec<MovementChange>) -> Transition {
        Transition {
            v: 1,
            tenant: TenantId::new("t").unwrap(),
            merchant_id: MerchantId::new("m").unwrap(),
            payment_id: PaymentId::new("p").unwrap(),
            version: 2,
            status,
            previous_status: Some(previous),
            occurred_at: Utc::now(),
            recorded_at: Utc::now(),
            cause: Cause {
                fact_id: "wh:razorpay:e2".into(),
                source: "webhook:razorpay".into(),
                provider_event_id: None,
                rule: "razorpay:payment.captured".into(),
                inbound_seq: 2,
            },
            trace_id: String::new(),
            applied_fact_ids: Vec::new(),
            applied_fact_count: 0,
            terms: PaymentTerms::default(),
            ordered_by: None,
            evidence_fact_ids: Vec::new(),
            amounts: None,
            money: Default::default(),
            movements,
        }
    }

    fn change(kind: MovementKind, state: MovementState, previous: Option<MovementState>) -> MovementChange {
        MovementChange {
            kind,
            id: "x_1".into(),
            state,
            previous_state: previous,
            amount_minor: 100,
            fee_minor: None,
        }
    }

    fn kinds(t: &Transition, conflict: Option<&str>) -> Vec<&'static str> {
        of(t, conflict).into_iter().map(|(k, _)| k).collect()
    }

    /// Given a transition, when its alerts are decided, then exactly these are raised.
    #[test]
    fn the_moments_an_operator_must_see() {
        use MovementKind::{Dispute, Refund};
        use MovementState::*;
        let s = Status::Succeeded;
        let rows: Vec<(Transition, Option<&str>, Vec<&str>)> = vec![
            (
                transition(Status::Failed, s, vec![]),
                None,
                vec!["captured_after_failure"],
            ),
            (
                transition(Status::Failed, Status::InvestigationRequired, vec![]),
                Some("wh:razorpay:e1"),
                vec!["captured_after_failure", "investigation_required"],
            ),
            (
                transition(s, Status::InvestigationRequired, vec![]),
                Some("wh:x:1"),
                vec!["investigation_required"],
            ),
            (transition(Status::Pending, s, vec![]), None, vec![]),
            (
                transition(s, s, vec![change(Dispute, Opened, None)]),
                None,
                vec!["dispute_opened"],
            ),
            (
                transition(s, s, vec![change(Dispute, Lost, Some(Opened))]),
                None,
                vec![],
            ),
            (
                transition(s, s, vec![change(Refund, Failed, Some(Pending))]),
                None,
                vec!["refund_failed"],
            ),
            (
                transition(s, s, vec![change(Refund, Cancelled, None)]),
                None,
                vec!["refund_failed"],
            ),
            (transition(s, s, vec![change(Refund, Succeeded, None)]), None, vec![]),
        ];
        for (t, conflict, want) in rows {
            assert_eq!(
                kinds(&t, conflict),
                want,
                "{:?} -> {} {:?}",
                t.previous_status,
                t.status,
                t.movements
            );
        }
    }
}
