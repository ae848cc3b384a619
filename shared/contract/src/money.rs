//! Where a payment's money is: its amounts, and the movements after (or beside) the
//! attempt's outcome that move them (captures, refunds, disputes, returns).
//!
//! A payment's `status` says how its attempt ended; its [`Amounts`] say where the
//! money is now. Each movement is its own fact with the provider's id and its own
//! lifecycle, so a repeated or reordered event of one refund or dispute is recognised
//! by that id and changes nothing twice.

use serde::{Deserialize, Serialize};

/// A payment's money in minor units of its currency, carried on every transition.
/// `net_minor` = `captured_minor` − `refunded_minor` − `returned_minor` −
/// `disputed_minor`, and is what the ledger recognises (`ledger_minor`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Amounts {
    /// What the provider authorised (0 until it did).
    pub authorised_minor: i64,
    /// What was captured: the money that moved to us.
    pub captured_minor: i64,
    /// What refunds still pending or succeeded take back (failed or cancelled refunds
    /// give the money back and count no more).
    pub refunded_minor: i64,
    /// What a return after success (ach_debit) took back.
    #[serde(default)]
    pub returned_minor: i64,
    /// What open or lost disputes currently withhold (withdrawn when a dispute
    /// opens, reinstated when it is won).
    pub disputed_minor: i64,
    /// What remains with us: captured less refunded, returned and disputed.
    pub net_minor: i64,
    /// True once refunds take back everything captured (Stripe's `refunded`).
    #[serde(default)]
    pub refunded: bool,
    /// Fees the provider reported on refunds and disputes (the capture's fee is in
    /// the payment's terms).
    #[serde(default)]
    pub movement_fees_minor: i64,
    /// What a payout paid out (its `captured_minor`); absent for a payment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paid_minor: Option<i64>,
}

impl Amounts {
    /// Recomputes `net_minor` and `refunded` from the other amounts.
    pub fn settle(mut self) -> Amounts {
        self.net_minor = self.captured_minor - self.refunded_minor - self.returned_minor - self.disputed_minor;
        self.refunded = self.captured_minor > 0 && self.refunded_minor >= self.captured_minor;
        self
    }
}

/// What kind of money movement a provider event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MovementKind {
    /// Money given back to the payer at the merchant's request.
    Refund,
    /// A chargeback: the payer's bank claws the money back until it is decided.
    Dispute,
}

impl MovementKind {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            MovementKind::Refund => "refund",
            MovementKind::Dispute => "dispute",
        }
    }
}

/// Where one movement is in its lifecycle. Refunds go `pending` → `succeeded`, or
/// end `failed` or `cancelled` (the money comes back); disputes go `opened` →
/// `funds_withdrawn` → `evidence_submitted` → `won` (funds reinstated) or `lost`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MovementState {
    /// A refund was created; the money is on its way back to the payer.
    Pending,
    /// A refund completed.
    Succeeded,
    /// A refund failed: the money stays with the merchant.
    Failed,
    /// A refund was cancelled: the money stays with the merchant.
    Cancelled,
    /// A dispute was opened; its amount is withheld.
    Opened,
    /// The provider took the disputed funds.
    FundsWithdrawn,
    /// The merchant answered the dispute with evidence.
    EvidenceSubmitted,
    /// The dispute was decided for the merchant: the funds are reinstated.
    Won,
    /// The dispute was decided for the payer: the funds are gone for good.
    Lost,
}

impl MovementState {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            MovementState::Pending => "pending",
            MovementState::Succeeded => "succeeded",
            MovementState::Failed => "failed",
            MovementState::Cancelled => "cancelled",
            MovementState::Opened => "opened",
            MovementState::FundsWithdrawn => "funds_withdrawn",
            MovementState::EvidenceSubmitted => "evidence_submitted",
            MovementState::Won => "won",
            MovementState::Lost => "lost",
        }
    }

    /// How far along its lifecycle the state is: a movement moves only forward, so
    /// a late copy of an earlier state changes nothing.
    pub fn rank(self) -> u8 {
        match self {
            MovementState::Pending | MovementState::Opened => 0,
            MovementState::FundsWithdrawn => 1,
            MovementState::EvidenceSubmitted => 2,
            MovementState::Succeeded => 3,
            MovementState::Failed | MovementState::Cancelled | MovementState::Won | MovementState::Lost => 4,
        }
    }

    /// Whether a movement in this state currently takes its amount away from the
    /// merchant.
    pub fn withholds(self) -> bool {
        !matches!(
            self,
            MovementState::Failed | MovementState::Cancelled | MovementState::Won
        )
    }

    /// The states a movement of `kind` can be in.
    pub fn fits(self, kind: MovementKind) -> bool {
        let refund = matches!(
            self,
            MovementState::Pending | MovementState::Succeeded | MovementState::Failed | MovementState::Cancelled
        );
        refund == (kind == MovementKind::Refund)
    }
}

/// One movement as a provider event reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Movement {
    /// Refund or dispute.
    pub kind: MovementKind,
    /// The provider's id of the movement (`re_…`, `rfnd_…`, `dp_…`, `disp_…`): what
    /// makes its events idempotent.
    pub id: String,
    /// Where it is now.
    pub state: MovementState,
    /// Its amount in minor units of the payment's currency.
    pub amount_minor: i64,
    /// The provider's fee on it, where reported (a dispute fee, a refund fee).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fee_minor: Option<i64>,
    /// The provider's reason (a dispute reason, a refund failure reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The movements one provider event reports: usually one; Stripe's
/// `charge.refunded` lists every refund of the charge, and reports the cumulative
/// amount refunded.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct MovementEvidence {
    /// The movements, by the provider's id.
    pub items: Vec<Movement>,
    /// The total refunded so far as the provider reports it (Stripe's
    /// `amount_refunded`): a floor for the refunded amount when the event does not
    /// itemise every refund.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refunded_total_minor: Option<i64>,
}

/// What a payment's movements are, carried forward on every transition so the
/// newest transition alone says which movements were seen and in which state.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct MoneyState {
    /// Every movement seen, in the order first seen, each in its latest state.
    #[serde(default)]
    pub movements: Vec<Movement>,
    /// The highest cumulative refunded amount a provider reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refunded_total_minor: Option<i64>,
}

impl MoneyState {
    /// Whether no movement was ever seen.
    pub fn is_empty(&self) -> bool {
        self.movements.is_empty() && self.refunded_total_minor.is_none()
    }

    /// The movement with `kind` and `id`, if seen.
    pub fn find(&self, kind: MovementKind, id: &str) -> Option<&Movement> {
        self.movements.iter().find(|m| m.kind == kind && m.id == id)
    }

    /// What movements of `kind` currently withhold.
    pub fn withheld(&self, kind: MovementKind) -> i64 {
        self.movements
            .iter()
            .filter(|m| m.kind == kind && m.state.withholds())
            .map(|m| m.amount_minor)
            .sum()
    }

    /// What refunds take back: the itemised refunds still pending or succeeded,
    /// never less than the cumulative amount the provider reported, less the refunds
    /// known to have failed since.
    pub fn refunded(&self) -> i64 {
        let itemised = self.withheld(MovementKind::Refund);
        let gave_back: i64 = self
            .movements
            .iter()
            .filter(|m| m.kind == MovementKind::Refund && !m.state.withholds())
            .map(|m| m.amount_minor)
            .sum();
        let floor = self.refunded_total_minor.unwrap_or(0) - gave_back;
        itemised.max(floor)
    }

    /// The fees reported on every movement.
    pub fn fees(&self) -> i64 {
        self.movements.iter().filter_map(|m| m.fee_minor).sum()
    }
}

/// The change of money one transition made, so the ledger posts it under its own
/// kind (and its fee), and the timeline shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MovementChange {
    /// Refund or dispute.
    pub kind: MovementKind,
    /// The provider's id of the movement.
    pub id: String,
    /// Its state after the transition.
    pub state: MovementState,
    /// Its state before (None: first seen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_state: Option<MovementState>,
    /// Its amount.
    pub amount_minor: i64,
    /// The fee first reported with this transition, posted with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fee_minor: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn failed_refunds_give_the_money_back_and_the_floor_holds_otherwise() {
        let mut s = MoneyState {
            movements: vec![
                refund("re_1", MovementState::Succeeded, 1000),
                refund("re_2", MovementState::Pending, 1500),
            ],
            refunded_total_minor: None,
        };
        assert_eq!(s.refunded(), 2500);
        s.movements[1].state = MovementState::Failed;
        assert_eq!(s.refunded(), 1000);
        s.refunded_total_minor = Some(4000);
        // 4,000 reported in total, 1,500 of it failed since.
        assert_eq!(s.refunded(), 2500);
        let amounts = Amounts {
            captured_minor: 2500,
            refunded_minor: 2500,
            ..Default::default()
        }
        .settle();
        assert_eq!((amounts.net_minor, amounts.refunded), (0, true));
    }

    #[test]
    fn states_fit_their_kind_and_only_move_forward() {
        assert!(MovementState::Pending.fits(MovementKind::Refund));
        assert!(!MovementState::Won.fits(MovementKind::Refund));
        assert!(MovementState::Lost.fits(MovementKind::Dispute));
        assert!(MovementState::Opened.rank() < MovementState::Lost.rank());
        assert!(MovementState::Lost.withholds() && !MovementState::Won.withholds());
    }
}
