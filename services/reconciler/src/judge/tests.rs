//! Given a payment's state and a fact, when the core decides, then the verdict is the
//! one the model's table says: every (state, event) pair, per kind of rail.

use chrono::{DateTime, Duration, Utc};
use paytrack_shared::envelope::{Cause, PaymentTerms, ProviderOrder, Transition};
use paytrack_shared::{MerchantId, PaymentId, Status, StatusModel, TenantId};

use super::*;

const STATES: [Option<Status>; 9] = [
    None,
    Some(Status::Initiated),
    Some(Status::Pending),
    Some(Status::Held),
    Some(Status::Succeeded),
    Some(Status::Failed),
    Some(Status::Cancelled),
    Some(Status::Returned),
    Some(Status::InvestigationRequired),
];

fn t0() -> DateTime<Utc> {
    // A Monday: two banking days later is Wednesday.
    "2026-11-23T12:00:00Z".parse().unwrap()
}

fn state(status: Status, rail: Option<&str>) -> Transition {
    Transition {
        v: 1,
        tenant: TenantId::new("t").unwrap(),
        merchant_id: MerchantId::new("m").unwrap(),
        payment_id: PaymentId::new("p").unwrap(),
        version: 3,
        status,
        previous_status: Some(Status::Pending),
        occurred_at: t0(),
        recorded_at: t0(),
        cause: Cause {
            fact_id: "wh:sim:setter".into(),
            source: "webhook:sim".into(),
            provider_event_id: None,
            rule: "sim:x".into(),
            inbound_seq: 1,
        },
        trace_id: String::new(),
        applied_fact_ids: vec!["wh:sim:earlier".into(), "wh:sim:setter".into()],
        applied_fact_count: 2,
        terms: PaymentTerms {
            rail: rail.map(str::to_owned),
            ..PaymentTerms::default()
        },
        ordered_by: Some(order(5, t0())),
        evidence_fact_ids: Vec::new(),
        amounts: None,
        money: Default::default(),
        movements: Vec::new(),
    }
}

fn order(seq: u64, at: DateTime<Utc>) -> ProviderOrder {
    ProviderOrder {
        provider: "sim".into(),
        provider_seq: Some(seq),
        occurred_at: Some(at),
    }
}

fn evidence(target: Status, seq: u64, at: DateTime<Utc>, reason: Option<&'static str>) -> FactView<'static> {
    FactView {
        fact_id: "wh:sim:new",
        target: Some(target),
        kind: FactKind::Evidence,
        order: Some(order(seq, at)),
        occurred_at: at,
        reason,
    }
}

/// A verdict as one letter: Apply, Duplicate, Stale, Conflict, Refused, Unmapped.
fn letter(v: &Verdict) -> char {
    match v {
        Verdict::Apply { .. } => 'A',
        Verdict::Duplicate { .. } => 'D',
        Verdict::Stale { .. } => 'S',
        Verdict::Conflict { .. } => 'C',
        Verdict::Refused { .. } => 'R',
        Verdict::Unmapped => 'U',
        Verdict::Move { .. } => 'M',
    }
}

/// Runs every (state, target) pair and returns one row of letters per state.
fn table(rail: Option<&str>, fact: impl Fn(Status) -> FactView<'static>) -> Vec<String> {
    let model = StatusModel::get();
    STATES
        .iter()
        .map(|from| {
            let current = from.map(|s| state(s, rail));
            Status::ALL
                .iter()
                .map(|to| {
                    letter(&decide(
                        current.as_ref().map(|t| State { transition: t }),
                        &fact(*to),
                        model,
                    ))
                })
                .collect()
        })
        .collect()
}

fn expect(rows: [&str; 9]) -> Vec<String> {
    rows.iter().map(|r| (*r).to_owned()).collect()
}

// Columns: initiated, pending, held, succeeded, failed, cancelled, returned,
// investigation_required. Rows: no history, then STATES in order.

#[test]
fn newer_evidence_on_an_irrevocable_rail() {
    for rail in ["rtp", "upi", "card"] {
        let got = table(Some(rail), |to| {
            evidence(to, 6, t0() + Duration::seconds(1), Some("R01"))
        });
        assert_eq!(
            got,
            expect([
                "AAAAAARR", // no history: anything that may open one
                "DAAAAARA", // initiated
                "RDAAAARA", // pending
                "RADAAARA", // held
                "RRRDCCCA", // succeeded: failure, cancel, return contradict it
                "RRRCDRRR", // failed: a late capture from a provider without a rule conflicts
                "RRRRRDRR", // cancelled
                "RRRRRRDR", // returned
                "RRRRRRRR", // investigation_required: only resolve leaves
            ]),
            "{rail}"
        );
    }
}

#[test]
fn newer_evidence_on_ach_debit_inside_and_outside_the_return_window() {
    let inside = table(Some("ach_debit"), |to| {
        evidence(to, 6, t0() + Duration::days(2), Some("R01"))
    });
    assert_eq!(inside[4], "RRRDCCAA", "a return inside R01's 2 banking days applies");
    let late = table(Some("ach_debit"), |to| {
        evidence(to, 6, t0() + Duration::days(2) + Duration::seconds(1), Some("R01"))
    });
    assert_eq!(late[4], "RRRDCCCA", "after 2 banking days R01 is a conflict");
    let long = table(Some("ach_debit"), |to| {
        evidence(to, 6, t0() + Duration::days(59), Some("R10"))
    });
    assert_eq!(long[4], "RRRDCCAA", "R10 has 60 days");
    let unknown_code = table(Some("ach_debit"), |to| evidence(to, 6, t0(), Some("X1")));
    assert_eq!(unknown_code[4], "RRRDCCCA");
    // Every other row is the irrevocable table's.
    let rtp = table(Some("rtp"), |to| {
        evidence(to, 6, t0() + Duration::seconds(1), Some("R01"))
    });
    for (n, (a, b)) in inside.iter().zip(&rtp).enumerate() {
        if n != 4 {
            assert_eq!(a, b, "row {n}");
        }
    }
}

#[test]
fn a_return_on_an_unknown_rail_is_left_to_the_table() {
    let got = table(None, |to| evidence(to, 6, t0() + Duration::days(300), None));
    assert_eq!(got[4], "RRRDCCAA");
}

#[test]
fn older_evidence_is_stale_whatever_it_says() {
    for older in [
        evidence(Status::Pending, 4, t0() + Duration::days(1), None), // sequence wins over time
        ProviderOrder {
            provider_seq: None,
            ..order(0, t0() - Duration::seconds(1))
        }
        .pipe(|o| FactView {
            order: Some(o),
            ..evidence(Status::Pending, 0, t0(), None)
        }),
    ] {
        let got = table(Some("rtp"), |to| FactView {
            target: Some(to),
            ..older.clone()
        });
        assert_eq!(
            got,
            expect([
                // A success after a failure is a late capture: money moved, never stale.
                "AAAAAARR", "SSSSSSSS", "SSSSSSSS", "SSSSSSSS", "SSSSSSSS", "SSSCSSSS", "SSSSSSSS", "SSSSSSSS",
                "RRRRRRRR",
            ])
        );
    }
}

trait Pipe: Sized {
    fn pipe<R>(self, f: impl FnOnce(Self) -> R) -> R {
        f(self)
    }
}
impl<T> Pipe for T {}

#[test]
fn a_sequence_from_another_provider_falls_back_to_time() {
    let model = StatusModel::get();
    let current = state(Status::Held, Some("rtp"));
    let mut fact = evidence(Status::Pending, 1, t0() + Duration::seconds(1), None);
    fact.order = Some(ProviderOrder {
        provider: "other".into(),
        ..order(1, t0() + Duration::seconds(1))
    });
    let verdict = decide(Some(State { transition: &current }), &fact, model);
    assert_eq!(
        verdict,
        Verdict::Apply {
            status: Status::Pending
        }
    );
}

#[test]
fn commands_follow_the_table_and_are_never_stale() {
    let command = |to| FactView {
        fact_id: "cmd:k",
        target: Some(to),
        kind: FactKind::Command,
        order: None,
        occurred_at: t0() - Duration::days(1),
        reason: None,
    };
    assert_eq!(
        table(Some("rtp"), command),
        expect([
            "AAAAAARR", "DAAAAARA", "RDAAAARA", "RADAAARA", "RRRDRRAA", "RRRRDRRR", "RRRRRDRR", "RRRRRRDR", "RRRRRRRR",
        ])
    );
}

#[test]
fn only_a_resolve_leaves_investigation_required() {
    let resolve = |to| FactView {
        fact_id: "cmd:resolve",
        target: Some(to),
        kind: FactKind::Resolve,
        order: None,
        occurred_at: t0(),
        reason: None,
    };
    assert_eq!(
        table(Some("rtp"), resolve),
        expect([
            "RRRRRRRR", "RRRRRRRR", "RRRRRRRR", "RRRRRRRR", "RRRRRRRR", "RRRRRRRR", "RRRRRRRR", "RRRRRRRR",
            "RARAAAAR", // held is not a resolution the model offers
        ])
    );
}

#[test]
fn a_fact_applied_before_is_a_duplicate_of_itself() {
    let model = StatusModel::get();
    let current = state(Status::Succeeded, Some("rtp"));
    for id in ["wh:sim:earlier", "wh:sim:setter"] {
        let fact = FactView {
            fact_id: id,
            ..evidence(Status::Failed, 9, t0() + Duration::days(1), None)
        };
        assert_eq!(
            decide(Some(State { transition: &current }), &fact, model),
            Verdict::Duplicate {
                superseded_by: id.into()
            }
        );
    }
}

#[test]
fn stale_duplicate_and_conflict_name_the_fact_that_set_the_status() {
    let model = StatusModel::get();
    let current = state(Status::Succeeded, Some("rtp"));
    let s = Some(State { transition: &current });
    let setter = FactId::from("wh:sim:setter");
    assert_eq!(
        decide(s, &evidence(Status::Pending, 1, t0(), None), model),
        Verdict::Stale {
            superseded_by: setter.clone()
        }
    );
    assert_eq!(
        decide(s, &evidence(Status::Succeeded, 7, t0(), None), model),
        Verdict::Duplicate {
            superseded_by: setter.clone()
        }
    );
    assert!(matches!(
        decide(s, &evidence(Status::Failed, 7, t0(), None), model),
        Verdict::Conflict { with, .. } if with == setter
    ));
}

#[test]
fn an_unmapped_fact_is_unmapped_in_every_state() {
    let model = StatusModel::get();
    for from in STATES {
        let current = from.map(|s| state(s, Some("rtp")));
        let fact = FactView {
            target: None,
            ..evidence(Status::Pending, 9, t0(), None)
        };
        let verdict = decide(current.as_ref().map(|t| State { transition: t }), &fact, model);
        assert_eq!(verdict, Verdict::Unmapped);
    }
}

/// A success reported after a failure: the model's late-capture rows decide per
/// provider and rail, and the answer is the same whatever the evidence's order.
#[test]
fn a_success_after_a_failure_follows_the_late_capture_rule() {
    let model = StatusModel::get();
    let rows: &[(&str, &str, char)] = &[
        ("razorpay", "card", 'A'),
        ("razorpay", "upi", 'A'),
        ("stripe", "card", 'A'),
        ("stripe", "ach_debit", 'C'),
        ("stdwebhooks", "card", 'C'),
        ("sim", "rtp", 'C'),
    ];
    for (provider, rail, want) in rows {
        let current = state(Status::Failed, Some(rail));
        for (seq, at) in [(6, t0() + Duration::seconds(1)), (1, t0() - Duration::days(1))] {
            let mut fact = evidence(Status::Succeeded, seq, at, None);
            fact.order = Some(ProviderOrder {
                provider: (*provider).into(),
                ..order(seq, at)
            });
            let verdict = decide(Some(State { transition: &current }), &fact, model);
            assert_eq!(letter(&verdict), *want, "{provider} on {rail}: {verdict:?}");
        }
    }
}

/// Given a paid payout on an irrevocable rail (upi), when the provider reports it
/// returned, then the return applies (a bank reverses a payout on any mode) and the
/// chain checker accepts the step, while a payment on the same rail conflicts.
#[test]
fn a_paid_payout_may_be_returned_on_any_rail() {
    let model = StatusModel::get();
    let mut payout = state(Status::Succeeded, Some("upi"));
    payout.terms.direction = Some(paytrack_shared::envelope::Direction::Payout);
    let returned = evidence(Status::Returned, 6, t0() + Duration::seconds(1), None);
    let verdict = decide(Some(State { transition: &payout }), &returned, model);
    assert_eq!(letter(&verdict), 'A', "{verdict:?}");
    let payment = state(Status::Succeeded, Some("upi"));
    let verdict = decide(Some(State { transition: &payment }), &returned, model);
    assert_eq!(letter(&verdict), 'C', "{verdict:?}");

    let mut next = payout.clone();
    next.version = payout.version + 1;
    next.previous_status = Some(Status::Succeeded);
    next.status = Status::Returned;
    assert_eq!(valid_step(model, Some(&payout), &next), Ok(()));
    let mut payment_next = next.clone();
    payment_next.terms.direction = None;
    assert!(valid_step(model, Some(&payment), &payment_next).is_err());
}
