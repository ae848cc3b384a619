//! The posting rules: which journal entry a transition makes, as data.
//!
//! The ledger keeps, per payment, the amount it currently recognises as owed by the
//! provider to the merchant (`ledger_minor`). A status implies a target for it
//! (`succeeded`: the payment's amount; `returned`, `failed`, `cancelled`: nothing;
//! the others, `investigation_required` included: unchanged), and a transition posts
//! the difference. So a capture, a return, and the reversal or capture that resolves
//! an investigation are one rule, and a payment can never be posted twice.
//!
//! Accounts (per tenant and currency):
//! - `provider_clearing:<provider>` (asset): what the provider owes us until it settles;
//! - `merchant_payable:<merchant>` (liability): what we owe the merchant;
//! - `provider_fees:<provider>` (expense): what the provider kept, where a provider
//!   event reported its fee;
//! - `payout_clearing:<provider>` (asset): money sent out by payouts. A payout
//!   (`direction: payout`) posts the other way: paid debits the merchant and credits
//!   payout clearing, a return reverses it; `ledger_minor` is what it paid out.
//!
//! A capture debits clearing and credits the merchant; a reversal does the opposite.
//! A first capture whose fee is known splits its debit: the provider owes the amount
//! less its fee, and the fee is an expense. Providers keep their fee when money comes
//! back, so a return reverses the whole amount through clearing and the expense stays.
//! Debits are positive, credits negative: every entry sums to zero per currency, which
//! the database also enforces.
//!
//! A transition that carries amounts ([`movement_posting`]) posts the difference
//! between its net amount and what is recognised, under the kind of the movement that
//! made it (a refund, a dispute's withdrawal or reinstatement, a return): the
//! merchant's credit shrinks and the provider keeps or returns the money through
//! clearing. Fees the provider reports on refunds and disputes are expenses it takes
//! out of clearing. So `ledger_minor` equals captured less refunded, returned and
//! disputed, for every payment, always; transitions written before amounts existed
//! keep the status rule ([`posting`]).

use paytrack_shared::Status;
use paytrack_shared::envelope::{Direction, PaymentTerms};
use paytrack_shared::money::Amounts;

/// What kind of balance an account holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountKind {
    /// Money owed to us.
    Asset,
    /// Money we owe.
    Liability,
    /// Money spent (provider fees).
    Expense,
}

impl AccountKind {
    /// As stored in `ledger_accounts.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::Asset => "asset",
            AccountKind::Liability => "liability",
            AccountKind::Expense => "expense",
        }
    }
}

/// One leg of an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leg {
    /// The account name.
    pub account: String,
    /// Its kind, for the chart of accounts.
    pub kind: AccountKind,
    /// Debit positive, credit negative, in minor units.
    pub amount_minor: i64,
}

/// The journal entry of one transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `capture`, `return`, `reversal`, `resolution_capture`, `resolution_reversal`.
    pub kind: &'static str,
    /// ISO 4217 code of every leg.
    pub currency: String,
    /// The legs, summing to zero.
    pub legs: Vec<Leg>,
}

/// What the ledger does for a transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Posting {
    /// Nothing moves (the ledger is posted: `ledger_posted` may follow).
    Nothing,
    /// This entry; afterwards the payment's recognised amount is `ledger_minor`.
    Entry {
        /// The entry.
        entry: Entry,
        /// The recognised amount after it.
        ledger_minor: i64,
    },
    /// Money moved but the amount or currency is unknown: nothing can be posted, so
    /// no `ledger_posted` checkpoint (and never `final`).
    Unpostable,
}

/// The entry for a move to `status` from `previous`, with `ledger_minor` recognised so
/// far, for a payment of `merchant` with `terms`.
pub fn posting(
    status: Status,
    previous: Option<Status>,
    ledger_minor: i64,
    merchant: &str,
    terms: &PaymentTerms,
) -> Posting {
    let target = match status {
        Status::Succeeded => match terms.amount_minor {
            Some(amount) if amount > 0 => amount,
            _ => return Posting::Unpostable,
        },
        Status::Returned | Status::Failed | Status::Cancelled => 0,
        _ => ledger_minor,
    };
    let delta = target.saturating_sub(ledger_minor);
    if delta == 0 {
        return Posting::Nothing;
    }
    let Some(currency) = terms.currency.as_ref().filter(|c| !c.is_empty()) else {
        return Posting::Unpostable;
    };
    let resolution = previous == Some(Status::InvestigationRequired);
    let kind = match (delta > 0, status, resolution) {
        (true, _, true) => "resolution_capture",
        (true, _, false) => "capture",
        (false, _, true) => "resolution_reversal",
        (false, Status::Returned, false) => "return",
        (false, _, false) => "reversal",
    };
    if is_payout(terms) {
        return payout_entry(kind, delta, currency, merchant, terms, target);
    }
    let provider = terms.provider.as_deref().unwrap_or("unknown");
    // The fee is posted with the first capture only (a payment is captured once; a
    // resolution re-recognises the amount, the fee was already charged).
    let fee = match (kind, terms.fee_minor) {
        ("capture", Some(fee)) if fee > 0 && fee <= delta => fee,
        _ => 0,
    };
    Posting::Entry {
        entry: Entry {
            kind,
            currency: currency.to_uppercase(),
            legs: legs(provider, merchant, delta, fee),
        },
        ledger_minor: target,
    }
}

/// The balanced legs of an entry that changes what is recognised for `merchant` by
/// `delta`, of which the provider kept `fees`: the provider's clearing account takes
/// the rest, its fees account the fees, the merchant's payable the whole change.
fn legs(provider: &str, merchant: &str, delta: i64, fees: i64) -> Vec<Leg> {
    let mut legs = Vec::with_capacity(3);
    if delta - fees != 0 {
        legs.push(Leg {
            account: format!("provider_clearing:{provider}"),
            kind: AccountKind::Asset,
            amount_minor: delta - fees,
        });
    }
    if fees != 0 {
        legs.push(Leg {
            account: format!("provider_fees:{provider}"),
            kind: AccountKind::Expense,
            amount_minor: fees,
        });
    }
    if delta != 0 {
        legs.push(Leg {
            account: format!("merchant_payable:{merchant}"),
            kind: AccountKind::Liability,
            amount_minor: -delta,
        });
    }
    legs
}

/// The entry for a transition that moved the amounts from `before` to `after`, with
/// `ledger_minor` recognised so far; `resolution` when it leaves
/// `investigation_required`.
pub fn movement_posting(
    before: &Amounts,
    after: &Amounts,
    ledger_minor: i64,
    resolution: bool,
    merchant: &str,
    terms: &PaymentTerms,
) -> Posting {
    let delta = after.net_minor.saturating_sub(ledger_minor);
    let movement_fee = (after.movement_fees_minor - before.movement_fees_minor).max(0);
    if delta == 0 && movement_fee == 0 {
        return Posting::Nothing;
    }
    let Some(currency) = terms.currency.as_ref().filter(|c| !c.is_empty()) else {
        return Posting::Unpostable;
    };
    let up = |a: i64, b: i64| a.cmp(&b);
    use std::cmp::Ordering::{Greater, Less};
    let kind = match (
        resolution,
        up(after.captured_minor, before.captured_minor),
        up(after.returned_minor, before.returned_minor),
        up(after.refunded_minor, before.refunded_minor),
        up(after.disputed_minor, before.disputed_minor),
    ) {
        (true, ..) if delta > 0 => "resolution_capture",
        (true, ..) if delta < 0 => "resolution_reversal",
        (_, Greater, ..) => "capture",
        (_, Less, ..) => "reversal",
        (_, _, Greater, ..) => "return",
        (_, _, _, Greater, _) => "refund",
        (_, _, _, Less, _) => "refund_reversal",
        (_, _, _, _, Greater) => "dispute_withdrawal",
        (_, _, _, _, Less) => "dispute_reinstatement",
        _ if delta == 0 => "movement_fee",
        _ => "adjustment",
    };
    if is_payout(terms) && delta != 0 {
        return payout_entry(kind, delta, currency, merchant, terms, after.net_minor);
    }
    let provider = terms.provider.as_deref().unwrap_or("unknown");
    // The capture's fee is posted with the first capture only.
    let capture_fee = match (kind, terms.fee_minor) {
        ("capture", Some(fee)) if before.captured_minor == 0 && fee > 0 && fee <= delta => fee,
        _ => 0,
    };
    let fees = capture_fee + movement_fee;
    Posting::Entry {
        entry: Entry {
            kind,
            currency: currency.to_uppercase(),
            legs: legs(provider, merchant, delta, fees),
        },
        ledger_minor: after.net_minor,
    }
}

/// Whether `terms` are a payout's: money out, posted the other way round.
fn is_payout(terms: &PaymentTerms) -> bool {
    terms.direction == Some(Direction::Payout)
}

/// A payout's entry for a change of `delta` in what it paid out: paid debits what we
/// owe the merchant and credits `payout_clearing:<provider>` (the money left); a
/// return posts the opposite. `kind` is the payment's kind, renamed for a payout.
fn payout_entry(
    kind: &'static str,
    delta: i64,
    currency: &str,
    merchant: &str,
    terms: &PaymentTerms,
    ledger_minor: i64,
) -> Posting {
    let kind = match kind {
        "capture" => "payout",
        "return" => "payout_return",
        "reversal" => "payout_reversal",
        other => other,
    };
    let provider = terms.provider.as_deref().unwrap_or("unknown");
    Posting::Entry {
        entry: Entry {
            kind,
            currency: currency.to_uppercase(),
            legs: vec![
                Leg {
                    account: format!("merchant_payable:{merchant}"),
                    kind: AccountKind::Liability,
                    amount_minor: delta,
                },
                Leg {
                    account: format!("payout_clearing:{provider}"),
                    kind: AccountKind::Asset,
                    amount_minor: -delta,
                },
            ],
        },
        ledger_minor,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amounts(captured: i64, refunded: i64, disputed: i64, fees: i64) -> Amounts {
        Amounts {
            authorised_minor: captured,
            captured_minor: captured,
            refunded_minor: refunded,
            disputed_minor: disputed,
            movement_fees_minor: fees,
            ..Amounts::default()
        }
        .settle()
    }

    /// Given the amounts before and after a movement, when it is posted, then the
    /// entry has the movement's kind, balances, and leaves `ledger_minor` = net.
    #[test]
    fn every_movement_posts_its_own_balanced_entry() {
        let t = terms(Some(5000));
        let rows: &[(Amounts, Amounts, &str, i64, Vec<i64>)] = &[
            (
                amounts(0, 0, 0, 0),
                amounts(5000, 0, 0, 0),
                "capture",
                5000,
                vec![5000, -5000],
            ),
            (
                amounts(5000, 0, 0, 0),
                amounts(5000, 1000, 0, 0),
                "refund",
                4000,
                vec![-1000, 1000],
            ),
            (
                amounts(5000, 1000, 0, 0),
                amounts(5000, 2500, 0, 0),
                "refund",
                2500,
                vec![-1500, 1500],
            ),
            (
                amounts(5000, 2500, 0, 0),
                amounts(5000, 1000, 0, 0),
                "refund_reversal",
                4000,
                vec![1500, -1500],
            ),
            (
                amounts(5000, 0, 0, 0),
                amounts(5000, 0, 5000, 1500),
                "dispute_withdrawal",
                0,
                vec![-6500, 1500, 5000],
            ),
            (
                amounts(5000, 0, 5000, 1500),
                amounts(5000, 0, 0, 1500),
                "dispute_reinstatement",
                5000,
                vec![5000, -5000],
            ),
            (
                amounts(5000, 0, 5000, 0),
                amounts(5000, 0, 5000, 1500),
                "movement_fee",
                0,
                vec![-1500, 1500],
            ),
        ];
        for (before, after, kind, ledger, legs) in rows {
            let p = movement_posting(before, after, before.net_minor, false, "m1", &t);
            assert_eq!(entry(&p), (*kind, *ledger, legs.clone()), "{before:?} -> {after:?}");
            assert_eq!(legs.iter().sum::<i64>(), 0);
        }
        let same = amounts(5000, 1000, 0, 0);
        assert_eq!(movement_posting(&same, &same, 4000, false, "m1", &t), Posting::Nothing);
        let resolved = movement_posting(&amounts(5000, 0, 0, 0), &amounts(0, 0, 0, 0), 5000, true, "m1", &t);
        assert_eq!(entry(&resolved).0, "resolution_reversal");
    }

    fn terms(amount: Option<i64>) -> PaymentTerms {
        PaymentTerms {
            amount_minor: amount,
            currency: Some("usd".into()),
            provider: Some("stdwebhooks".into()),
            ..Default::default()
        }
    }

    fn entry(p: &Posting) -> (&'static str, i64, Vec<i64>) {
        match p {
            Posting::Entry { entry, ledger_minor } => (
                entry.kind,
                *ledger_minor,
                entry.legs.iter().map(|l| l.amount_minor).collect(),
            ),
            other => panic!("no entry: {other:?}"),
        }
    }

    /// Given a payout, when it is paid and then returned, then paid debits the
    /// merchant and credits payout clearing, the return posts the opposite, and a
    /// payout that fails or is cancelled before it is paid posts nothing.
    #[test]
    fn a_payout_posts_paid_and_returned_the_other_way() {
        let t = PaymentTerms {
            direction: Some(Direction::Payout),
            provider: Some("razorpay".into()),
            ..terms(Some(1250))
        };
        let paid = Amounts {
            captured_minor: 1250,
            paid_minor: Some(1250),
            ..Amounts::default()
        }
        .settle();
        let returned = Amounts {
            returned_minor: 1250,
            ..paid.clone()
        }
        .settle();
        let rows = [
            (Amounts::default(), paid.clone(), 0, "payout", 1250, vec![1250, -1250]),
            (
                paid.clone(),
                returned.clone(),
                1250,
                "payout_return",
                0,
                vec![-1250, 1250],
            ),
        ];
        for (before, after, ledger, kind, left, legs) in rows {
            let p = movement_posting(&before, &after, ledger, false, "m1", &t);
            assert_eq!(entry(&p), (kind, left, legs));
            let Posting::Entry { entry, .. } = p else {
                unreachable!()
            };
            let accounts: Vec<_> = entry.legs.iter().map(|l| l.account.as_str()).collect();
            assert_eq!(accounts, ["merchant_payable:m1", "payout_clearing:razorpay"]);
        }
        // The status rule (transitions without amounts) posts payouts the same way.
        let by_status = posting(Status::Succeeded, Some(Status::Pending), 0, "m1", &t);
        assert_eq!(entry(&by_status), ("payout", 1250, vec![1250, -1250]));
        let back = posting(Status::Returned, Some(Status::Succeeded), 1250, "m1", &t);
        assert_eq!(entry(&back), ("payout_return", 0, vec![-1250, 1250]));
        for status in [Status::Failed, Status::Cancelled] {
            assert_eq!(posting(status, Some(Status::Pending), 0, "m1", &t), Posting::Nothing);
            let nothing = Amounts::default();
            assert_eq!(
                movement_posting(&nothing, &nothing, 0, false, "m1", &t),
                Posting::Nothing
            );
        }
    }

    #[test]
    fn capture_then_return_balances_and_nets_to_zero() {
        let t = terms(Some(1250));
        let capture = posting(Status::Succeeded, Some(Status::Pending), 0, "m1", &t);
        assert_eq!(entry(&capture), ("capture", 1250, vec![1250, -1250]));
        let ret = posting(Status::Returned, Some(Status::Succeeded), 1250, "m1", &t);
        assert_eq!(entry(&ret), ("return", 0, vec![-1250, 1250]));
        assert_eq!(
            posting(Status::Pending, Some(Status::Initiated), 0, "m1", &t),
            Posting::Nothing
        );
        assert_eq!(
            posting(Status::Failed, Some(Status::Pending), 0, "m1", &t),
            Posting::Nothing
        );
    }

    #[test]
    fn investigation_keeps_then_resolution_posts_the_difference() {
        let t = terms(Some(900));
        assert_eq!(
            posting(Status::InvestigationRequired, Some(Status::Succeeded), 900, "m", &t),
            Posting::Nothing
        );
        let rev = posting(Status::Failed, Some(Status::InvestigationRequired), 900, "m", &t);
        assert_eq!(entry(&rev), ("resolution_reversal", 0, vec![-900, 900]));
        let cap = posting(Status::Succeeded, Some(Status::InvestigationRequired), 0, "m", &t);
        assert_eq!(entry(&cap).0, "resolution_capture");
        // Resolved to succeeded when it was already posted: nothing twice.
        assert_eq!(
            posting(Status::Succeeded, Some(Status::InvestigationRequired), 900, "m", &t),
            Posting::Nothing
        );
    }

    #[test]
    fn a_reported_fee_is_an_expense_of_the_capture_and_stays_after_a_return() {
        let mut t = terms(Some(1000));
        t.fee_minor = Some(30);
        let capture = posting(Status::Succeeded, Some(Status::Pending), 0, "m1", &t);
        let Posting::Entry {
            entry: split,
            ledger_minor,
        } = &capture
        else {
            panic!("no entry: {capture:?}");
        };
        assert_eq!(*ledger_minor, 1000);
        let legs: Vec<(&str, AccountKind, i64)> = split
            .legs
            .iter()
            .map(|l| (l.account.as_str(), l.kind, l.amount_minor))
            .collect();
        assert_eq!(
            legs,
            vec![
                ("provider_clearing:stdwebhooks", AccountKind::Asset, 970),
                ("provider_fees:stdwebhooks", AccountKind::Expense, 30),
                ("merchant_payable:m1", AccountKind::Liability, -1000),
            ]
        );
        assert_eq!(split.legs.iter().map(|l| l.amount_minor).sum::<i64>(), 0);
        // The return takes the whole amount back through clearing; the fee stays spent.
        let ret = posting(Status::Returned, Some(Status::Succeeded), 1000, "m1", &t);
        assert_eq!(entry(&ret), ("return", 0, vec![-1000, 1000]));
        // A resolution capture charges no second fee.
        let again = posting(Status::Succeeded, Some(Status::InvestigationRequired), 0, "m1", &t);
        assert_eq!(entry(&again), ("resolution_capture", 1000, vec![1000, -1000]));
        // A fee larger than the amount is not believed.
        t.fee_minor = Some(5000);
        let odd = posting(Status::Succeeded, Some(Status::Pending), 0, "m1", &t);
        assert_eq!(entry(&odd), ("capture", 1000, vec![1000, -1000]));
    }

    #[test]
    fn unknown_amount_cannot_be_posted() {
        assert_eq!(
            posting(Status::Succeeded, None, 0, "m", &terms(None)),
            Posting::Unpostable
        );
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        /// One step of a payment's money: a capture, a refund or its failure, a
        /// dispute's withdrawal or reinstatement, a reported fee.
        fn steps() -> impl Strategy<Value = Vec<(u8, i64)>> {
            prop::collection::vec((0u8..6, 1i64..5_000), 0..30)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Whatever the movements, posted one transition at a time: every entry
            /// balances, `ledger_minor` equals the net after each, and the
            /// merchant's account holds exactly the net.
            #[test]
            fn ledger_minor_is_the_net_after_every_movement(amount in 1i64..100_000, fee in 0i64..50, steps in steps()) {
                let mut t = terms(Some(amount));
                t.fee_minor = Some(fee);
                let mut before = Amounts::default();
                let mut ledger_minor = 0;
                let mut merchant = 0;
                let mut fees_posted = 0;
                for (kind, x) in steps {
                    let mut after = before.clone();
                    match kind {
                        0 => after.captured_minor = amount,
                        1 => after.refunded_minor = (after.refunded_minor + x).min(after.captured_minor),
                        2 => after.refunded_minor = (after.refunded_minor - x).max(0),
                        3 => after.disputed_minor = (after.disputed_minor + x)
                            .min(after.captured_minor - after.refunded_minor),
                        4 => after.disputed_minor = (after.disputed_minor - x).max(0),
                        _ => after.movement_fees_minor += x % 100,
                    }
                    let after = after.settle();
                    match movement_posting(&before, &after, ledger_minor, false, "m", &t) {
                        Posting::Entry { entry, ledger_minor: next } => {
                            prop_assert_eq!(entry.legs.iter().map(|l| l.amount_minor).sum::<i64>(), 0);
                            prop_assert!(entry.legs.iter().all(|l| l.amount_minor != 0));
                            for l in &entry.legs {
                                if l.kind == AccountKind::Liability {
                                    merchant -= l.amount_minor;
                                }
                                if l.kind == AccountKind::Expense {
                                    fees_posted += l.amount_minor;
                                }
                            }
                            ledger_minor = next;
                        }
                        Posting::Nothing => {}
                        Posting::Unpostable => prop_assert!(false, "currency is known"),
                    }
                    prop_assert_eq!(ledger_minor, after.net_minor);
                    prop_assert_eq!(merchant, after.net_minor);
                    before = after;
                }
                let capture_fee = if before.captured_minor > 0 && fee > 0 && fee <= amount { fee } else { 0 };
                prop_assert_eq!(fees_posted, before.movement_fees_minor + capture_fee);
            }
        }
    }
}
