//! Property tests of the pure core together with the transition the shell builds
//! from its verdict: whatever facts arrive, in whatever order, repeated or lost,
//! the chain they produce is one the status model allows, and no fact is applied
//! twice.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use paytrack_shared::envelope::{
    CommandAction, CreatePayment, FactSource, InboundFact, PaymentCommand, ProviderEvent, RawEvidence, Transition,
};
use paytrack_shared::{MerchantId, PaymentId, Status, StatusModel, TenantId};
use proptest::prelude::*;

use super::{carry_create_terms, next_transition, view_of};
use crate::judge::{self, State};
use crate::mapping::map_fact;

/// The statuses a provider's path walks through: every one but `initiated` (a
/// command's) and `investigation_required` (the reconciler's).
fn walk() -> impl Iterator<Item = Status> {
    Status::ALL
        .into_iter()
        .filter(|s| !matches!(s, Status::Initiated | Status::InvestigationRequired))
}

fn t0() -> DateTime<Utc> {
    "2026-11-23T12:00:00Z".parse().unwrap()
}

fn inbound(fact_id: String, source: FactSource) -> InboundFact {
    InboundFact {
        v: 1,
        fact_id: fact_id.into(),
        tenant: TenantId::new("t").unwrap(),
        payment_id: PaymentId::new("p").unwrap(),
        merchant_id: Some(MerchantId::new("m").unwrap()),
        received_at: t0() + Duration::days(1),
        source,
        raw: RawEvidence {
            headers: BTreeMap::new(),
            body: String::new(),
        },
    }
}

fn webhook(n: u64, status: Status, seq: u64) -> InboundFact {
    inbound(
        format!("wh:stdwebhooks:e{n}"),
        FactSource::Webhook(ProviderEvent {
            occurred_at: Some(t0() + Duration::seconds(i64::try_from(seq).unwrap_or(0))),
            provider_ref: Some("pr".into()),
            amount_minor: Some(100),
            currency: Some("USD".into()),
            reason: (status == Status::Returned).then(|| "R01".to_owned()),
            provider_seq: Some(seq),
            status: Some(status.as_str().to_owned()),
            ..ProviderEvent::new("stdwebhooks", format!("e{n}"), format!("payment.{status}"))
        }),
    )
}

fn command(id: &str, action: CommandAction) -> InboundFact {
    inbound(
        id.to_owned(),
        FactSource::Command(PaymentCommand {
            action,
            actor: "op".into(),
            idempotency_key: None,
        }),
    )
}

fn create(rail: &str) -> InboundFact {
    command(
        "cmd:create",
        CommandAction::Create(CreatePayment {
            merchant_id: MerchantId::new("m").unwrap(),
            amount_minor: 100,
            currency: "USD".into(),
            rail: rail.into(),
            country: "US".into(),
            program: None,
            customer_ref: None,
            metadata: None,
            routing: None,
            capabilities: None,
        }),
    )
}

/// A path the provider could really take: each step one the model allows, returns
/// only where the rail has a window (or is unknown).
fn truth(rail: Option<&str>, choices: &[u8]) -> Vec<Status> {
    let model = StatusModel::get();
    let mut path: Vec<Status> = Vec::new();
    for c in choices {
        let candidates: Vec<Status> = walk()
            .filter(|s| model.check_transition(path.last().copied(), *s).is_ok())
            .filter(|s| *s != Status::Returned || rail.is_none_or(|r| !model.rail(Some(r)).irrevocable))
            .collect();
        if candidates.is_empty() {
            break;
        }
        path.push(candidates[usize::from(*c) % candidates.len()]);
    }
    path
}

/// Feeds `facts` to the core one after the other, as the shell would, and checks
/// every step; returns the chain.
fn run(facts: &[InboundFact]) -> Vec<Transition> {
    let model = StatusModel::get();
    let mut chain: Vec<Transition> = Vec::new();
    let mut causes = HashSet::new();
    for (n, fact) in facts.iter().enumerate() {
        let Some(mapped) = map_fact(fact) else { continue };
        let view = view_of(fact, &mapped);
        let current = chain.last();
        let verdict = judge::decide(current.map(|t| State { transition: t }), &view, model);
        let verdict = carry_create_terms(verdict, current, fact);
        let merchant = MerchantId::new("m").unwrap();
        let Some(next) = next_transition(current, merchant, fact, &view, &verdict, &mapped.rule, n as u64, "") else {
            continue;
        };
        if let Err(e) = judge::valid_step(model, current, &next) {
            panic!("{e}: {:?} -> {next:?} by {verdict:?}", current.map(|c| c.status));
        }
        assert!(
            causes.insert(next.cause.fact_id.clone()),
            "{} applied twice",
            next.cause.fact_id
        );
        if let Some(c) = current {
            assert!(judge::terms_kept(&c.terms, &next.terms), "terms lost");
            if let (Some(a), Some(b)) = (&c.ordered_by, &next.ordered_by) {
                assert_ne!(
                    judge::compare(b, a),
                    Some(std::cmp::Ordering::Less),
                    "an older fact replaced a newer one"
                );
            }
        }
        chain.push(next);
    }
    chain
}

fn rails() -> impl Strategy<Value = Option<&'static str>> {
    prop::sample::select(vec![None, Some("rtp"), Some("card"), Some("upi"), Some("ach_debit")])
}

fn noise() -> impl Strategy<Value = Vec<(u8, u8, u64)>> {
    prop::collection::vec((0u8..3, 0u8..8, 0u64..12), 0..4)
}

fn noise_fact(n: usize, (kind, status, seq): (u8, u8, u64)) -> InboundFact {
    let statuses = Status::ALL;
    let status = statuses[usize::from(status) % statuses.len()];
    match kind {
        0 => webhook(100 + n as u64, status, seq),
        1 => command(
            &format!("cmd:resolve:{n}"),
            CommandAction::Resolve {
                status,
                reason: "checked".into(),
            },
        ),
        _ => command(&format!("cmd:cancel:{n}"), CommandAction::Cancel { reason: None }),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Shuffled, repeated, partly lost, mixed with contradicting evidence, resolves
    /// and cancels: every chain is one the model allows, no fact applied twice, no
    /// older fact ever replaces a newer one.
    #[test]
    fn no_sequence_of_facts_builds_a_chain_the_model_forbids(
        rail in rails(),
        choices in prop::collection::vec(any::<u8>(), 1..7),
        order in prop::collection::vec(any::<u16>(), 0..40),
        keep in prop::collection::vec(any::<bool>(), 0..40),
        extra in noise(),
    ) {
        let path = truth(rail, &choices);
        let mut facts: Vec<InboundFact> = rail.map(create).into_iter().collect();
        facts.extend(path.iter().enumerate().map(|(i, s)| webhook(i as u64, *s, i as u64 + 1)));
        facts.extend(extra.iter().enumerate().map(|(n, e)| noise_fact(n, *e)));
        // Deliveries: each index drawn from `order` (so facts repeat and some never
        // come), filtered by `keep`.
        let delivered: Vec<InboundFact> = order
            .iter()
            .zip(keep.iter().chain(std::iter::repeat(&true)))
            .filter(|(_, k)| **k)
            .map(|(i, _)| facts[usize::from(*i) % facts.len()].clone())
            .collect();
        run(&delivered);
    }

    /// Delivered in the provider's order, each possibly repeated: the payment ends
    /// where the provider's path ends.
    #[test]
    fn in_order_with_repeats_the_payment_ends_at_the_truth(
        rail in rails(),
        choices in prop::collection::vec(any::<u8>(), 1..7),
        repeats in prop::collection::vec(0usize..3, 7),
    ) {
        let path = truth(rail, &choices);
        let mut facts: Vec<InboundFact> = rail.map(create).into_iter().collect();
        for (i, s) in path.iter().enumerate() {
            for _ in 0..=repeats[i] {
                facts.push(webhook(i as u64, *s, i as u64 + 1));
            }
        }
        let chain = run(&facts);
        prop_assert_eq!(chain.last().map(|t| t.status), path.last().copied());
    }

    /// Shuffled without loss: the newest provider fact, once seen, is never
    /// replaced, so whenever it applies it is where the payment ends.
    #[test]
    fn the_newest_fact_is_never_overtaken(
        rail in rails(),
        choices in prop::collection::vec(any::<u8>(), 1..7),
        perm in Just((0..7usize).collect::<Vec<_>>()).prop_shuffle(),
    ) {
        let path = truth(rail, &choices);
        let mut facts: Vec<InboundFact> = rail.map(create).into_iter().collect();
        facts.extend(
            perm.iter()
                .filter(|i| **i < path.len())
                .map(|i| webhook(*i as u64, path[*i], *i as u64 + 1)),
        );
        let chain = run(&facts);
        let newest = format!("wh:stdwebhooks:e{}", path.len() - 1);
        if chain.iter().any(|t| t.cause.fact_id == newest) {
            prop_assert_eq!(chain.last().map(|t| t.cause.fact_id.clone()), Some(newest.into()));
        }
    }

    /// The create arrives anywhere among its payment's webhooks (a webhook may beat
    /// it): whatever the order, the payment ends on the provider's last status with
    /// the create's rail, so it can turn final on it.
    #[test]
    fn a_create_beaten_by_its_webhooks_still_gives_its_rail(
        rail in prop::sample::select(vec!["rtp", "card", "upi", "ach_debit"]),
        choices in prop::collection::vec(any::<u8>(), 1..7),
        at in 0usize..8,
    ) {
        let path = truth(Some(rail), &choices);
        let mut facts: Vec<InboundFact> =
            path.iter().enumerate().map(|(i, s)| webhook(i as u64, *s, i as u64 + 1)).collect();
        facts.insert(at.min(facts.len()), create(rail));
        let chain = run(&facts);
        prop_assert_eq!(chain.last().map(|t| t.status), path.last().copied().or(Some(Status::Initiated)));
        prop_assert_eq!(chain.last().and_then(|t| t.terms.rail.as_deref()), Some(rail));
    }
}

/// The largest transition a pending <-> held loop may build: far under NATS's 1 MB
/// payload, whatever the number of facts the payment has seen.
const TRANSITION_BOUND: usize = 64 * 1024;

/// A provider that flips a payment between pending and held 5,000 times: every
/// transition stays under [`TRANSITION_BOUND`] (the applied-fact list carries the
/// newest ids and a count, not every id), the count is exact, a fact of the kept
/// window that comes back is a duplicate, and one older than the window is stale
/// (its provider position is behind the current one), so none is applied twice.
#[test]
fn a_long_pending_held_loop_keeps_every_transition_small_and_recognises_repeats() {
    let model = StatusModel::get();
    let merchant = MerchantId::new("m").unwrap();
    const LOOP: u64 = 5_000;
    let facts: Vec<InboundFact> = (0..LOOP)
        .map(|n| {
            let status = if n % 2 == 0 { Status::Pending } else { Status::Held };
            webhook(n, status, n + 1)
        })
        .collect();
    let decide = |current: Option<&Transition>, fact: &InboundFact| {
        let mapped = map_fact(fact).expect("mapped");
        let view = view_of(fact, &mapped);
        let verdict = judge::decide(current.map(|t| State { transition: t }), &view, model);
        let next = next_transition(current, merchant.clone(), fact, &view, &verdict, &mapped.rule, 0, "");
        (verdict, next)
    };
    let mut current: Option<Transition> = None;
    let mut largest = 0;
    for fact in &facts {
        let (verdict, next) = decide(current.as_ref(), fact);
        let next = next.unwrap_or_else(|| panic!("{} applies: {verdict:?}", fact.fact_id));
        let size = paytrack_shared::envelope::encode(&next).len();
        largest = largest.max(size);
        assert!(
            size <= TRANSITION_BOUND,
            "version {} is {size} bytes, over {TRANSITION_BOUND}",
            next.version
        );
        current = Some(next);
    }
    let newest = current.expect("a chain");
    assert_eq!(newest.version, LOOP);
    assert_eq!(newest.applied_fact_count, LOOP, "every applied fact is counted");
    assert!(newest.applied_fact_ids.len() < LOOP as usize);
    eprintln!(
        "largest transition: {largest} bytes; ids kept: {}",
        newest.applied_fact_ids.len()
    );

    let last = &facts[facts.len() - 1];
    let recent = &facts[facts.len() - 10];
    for fact in [last, recent] {
        let (verdict, next) = decide(Some(&newest), fact);
        assert!(
            matches!(verdict, judge::Verdict::Duplicate { .. }) && next.is_none(),
            "{} is a duplicate: {verdict:?}",
            fact.fact_id
        );
    }
    for fact in [&facts[0], &facts[1]] {
        let (verdict, next) = decide(Some(&newest), fact);
        assert!(
            matches!(verdict, judge::Verdict::Stale { .. }) && next.is_none(),
            "{} (older than the kept ids) is recognised, not applied again: {verdict:?}",
            fact.fact_id
        );
    }
}
