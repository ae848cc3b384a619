//! The canonical status model, loaded from `status-model.json`.
//!
//! The model is data so that every surface (the reconciler's state machine,
//! `GET /v1/status-model`, the docs) reads one table; code asks it questions instead
//! of re-encoding transitions in `match` arms.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The model's source, embedded so that a binary always serves the table it enforces.
pub const STATUS_MODEL_JSON: &str = include_str!("../status-model.json");

/// A canonical payment status; every provider's events are mapped into these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Created by a command, not yet accepted by a provider.
    Initiated,
    /// Accepted by a provider; outcome unknown.
    Pending,
    /// Stopped for review.
    Held,
    /// The provider confirmed the money moved.
    Succeeded,
    /// The provider declined or errored.
    Failed,
    /// Cancelled before settlement.
    Cancelled,
    /// Money came back after success.
    Returned,
    /// Evidence conflicts; only an operator resolution leaves it.
    InvestigationRequired,
}

impl Status {
    /// Every status, in declaration order: for the tables and tests that must cover
    /// each one.
    pub const ALL: [Status; 8] = [
        Status::Initiated,
        Status::Pending,
        Status::Held,
        Status::Succeeded,
        Status::Failed,
        Status::Cancelled,
        Status::Returned,
        Status::InvestigationRequired,
    ];

    /// The status as spelled on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Initiated => "initiated",
            Status::Pending => "pending",
            Status::Held => "held",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
            Status::Returned => "returned",
            Status::InvestigationRequired => "investigation_required",
        }
    }

    /// Parses the wire spelling.
    pub fn parse(value: &str) -> Option<Status> {
        serde_json::from_value(serde_json::Value::String(value.to_owned())).ok()
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of the model: a status, where it may come from and what it means.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusDefinition {
    /// The status this row defines.
    pub status: Status,
    /// One line for operators.
    pub meaning: String,
    /// The statuses a payment may move here from.
    pub allowed_from: Vec<Status>,
    /// Whether a fact about a payment never seen before may start its history here
    /// (a webhook can beat the command that created the payment).
    pub opens_history: bool,
    /// Terminality per rail; `default` applies to rails not listed.
    pub terminal: BTreeMap<String, bool>,
    /// What support should tell a customer.
    pub guidance: String,
    /// The statuses an operator's `resolve` command may move a payment to from this
    /// one (only `investigation_required` has any: nothing else leaves it).
    #[serde(default)]
    pub resolves_to: Vec<Status>,
}

/// A move that provider evidence asks for but that contradicts what was applied: the
/// payment goes to `investigation_required` with both facts instead.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Conflict {
    /// The applied status.
    pub from: Status,
    /// The status the newer evidence reports.
    pub to: Status,
    /// Why it is a conflict, for operators.
    pub why: String,
}

/// Finality and windows of one rail.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RailRules {
    /// Whether a success is final at once (rtp, upi, card capture): a later failure
    /// or return is a conflict, never a move. The outcome is irrevocable, not the
    /// money: refunds and disputes still move amounts inside `money_windows`.
    pub irrevocable: bool,
    /// How long a payment may stay non-terminal before it is checked with the
    /// provider's status-query API (scaled by configuration in tests).
    pub pending_window_secs: u64,
    /// When a success may still come back, by return reason code.
    pub return_windows: Vec<ReturnWindow>,
    /// How the provider's status-query API is polled for a stuck payment.
    pub status_checks: StatusChecks,
    /// How long captured money can still move back (refunds, disputes): a final
    /// status is proven, not beyond change of its amounts.
    #[serde(default)]
    pub money_windows: MoneyWindows,
}

/// How long after a capture its money can still leave, per rail: cards and UPI can be
/// refunded and disputed for months after they succeeded.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct MoneyWindows {
    /// Days after capture a refund may still be made (None: the rail has none).
    pub refund_days: Option<u32>,
    /// Days after capture a dispute may still be opened (None: the rail has none).
    pub dispute_days: Option<u32>,
}

impl MoneyWindows {
    /// Until when money captured at `captured_at` is still at risk: the later of the
    /// two windows' ends (None when the rail has neither).
    pub fn at_risk_until(&self, captured_at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        [self.refund_days, self.dispute_days]
            .into_iter()
            .flatten()
            .max()
            .and_then(|days| captured_at.checked_add_signed(chrono::Duration::days(i64::from(days))))
    }
}

/// What a success reported after a failure means, for a provider and its rails: the
/// money moved, so the payment never stays `failed`; whether it succeeds (the
/// provider documents late captures) or needs an operator is data here.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LateCapture {
    /// The provider (webhook scheme) name, or `*` for any other.
    pub provider: String,
    /// The rails it applies to (empty: every rail).
    #[serde(default)]
    pub rails: Vec<String>,
    /// `succeeded` or `investigation_required`.
    pub to: Status,
    /// Why, for operators (also the alert's words).
    pub why: String,
}

/// Return reason codes and how long after the success they may arrive.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReturnWindow {
    /// Return reason codes (the `returned` event's `reason`), e.g. `R01`.
    pub codes: Vec<String>,
    /// Window in banking days (Monday to Friday; holidays are not modelled).
    pub banking_days: Option<u32>,
    /// Window in calendar days.
    pub calendar_days: Option<u32>,
}

/// Status-query schedule of a rail.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusChecks {
    /// The first check is made no earlier than this after initiation.
    pub first_after_secs: u64,
    /// Between checks.
    pub interval_secs: u64,
    /// This many checks, then the payment raises `unclear_pending`; the checks
    /// go on after it, ever less often (see [`StatusChecks::interval_after`]).
    pub max_checks: u32,
}

/// How many times the interval doubles once `max_checks` are spent: the
/// provider stays the truth for a payment nobody settled, so it is asked
/// again, at most every `interval_secs × 2^TAIL_DOUBLINGS`.
pub const TAIL_DOUBLINGS: u32 = 6;

impl StatusChecks {
    /// The wait after check number `made` (1 for the first): `interval_secs`
    /// up to `max_checks`, then doubling each time up to [`TAIL_DOUBLINGS`].
    pub fn interval_after(&self, made: u32) -> u64 {
        let past = made.saturating_sub(self.max_checks).min(TAIL_DOUBLINGS);
        self.interval_secs.saturating_mul(1u64 << past)
    }
}

/// A date that chrono cannot represent: the arithmetic that would produce it is
/// refused instead of panicking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{days} days after {from} is beyond the last representable date")]
pub struct DateOutOfRange {
    /// The instant the arithmetic started from.
    pub from: DateTime<Utc>,
    /// The days that were to be added.
    pub days: u32,
}

impl ReturnWindow {
    /// The last instant a return may happen after a success at `succeeded_at`; an
    /// error when that instant is beyond chrono's range (a success dated near the end
    /// of time).
    pub fn closes(&self, succeeded_at: DateTime<Utc>) -> Result<DateTime<Utc>, DateOutOfRange> {
        let calendar = self
            .calendar_days
            .map(|d| {
                succeeded_at
                    .checked_add_days(chrono::Days::new(u64::from(d)))
                    .ok_or(DateOutOfRange {
                        from: succeeded_at,
                        days: d,
                    })
            })
            .transpose()?;
        let banking = self
            .banking_days
            .map(|d| add_banking_days(succeeded_at, d))
            .transpose()?;
        Ok(match (calendar, banking) {
            (Some(c), Some(b)) => c.max(b),
            (Some(c), None) => c,
            (None, Some(b)) => b,
            (None, None) => succeeded_at,
        })
    }
}

/// `at` plus `days` banking days (weekends skipped); an error when the result is
/// beyond chrono's range.
pub fn add_banking_days(at: DateTime<Utc>, days: u32) -> Result<DateTime<Utc>, DateOutOfRange> {
    use chrono::Datelike;
    let out_of_range = DateOutOfRange { from: at, days };
    let mut t = at;
    let mut left = days;
    while left > 0 {
        t = t.checked_add_days(chrono::Days::new(1)).ok_or(out_of_range)?;
        if !matches!(t.weekday(), chrono::Weekday::Sat | chrono::Weekday::Sun) {
            left -= 1;
        }
    }
    Ok(t)
}

/// The whole model as served at `GET /v1/status-model`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusModel {
    /// Bumped when the table's meaning changes.
    pub version: u32,
    /// One row per status.
    pub statuses: Vec<StatusDefinition>,
    /// What a transition must carry to be accepted.
    pub evidence_required: Vec<String>,
    /// When a status is shown as final.
    pub finality: String,
    /// How facts of one payment are ordered (the tie-breaker).
    #[serde(default)]
    pub ordering: String,
    /// Moves that evidence asks for but that contradict what was applied.
    #[serde(default)]
    pub conflicts: Vec<Conflict>,
    /// Finality and windows per rail.
    #[serde(default)]
    pub rails: BTreeMap<String, RailRules>,
    /// The rules of a rail the table does not list (or a payment whose rail is not
    /// known yet).
    pub default_rail: RailRules,
    /// What a success after a failure means per provider and rail, first match wins.
    #[serde(default)]
    pub late_captures: Vec<LateCapture>,
}

/// Why a fact cannot move a payment to a status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// The payment already has this status: the fact is a duplicate.
    #[error("payment is already {0}")]
    AlreadyInStatus(Status),
    /// The model does not allow this move.
    #[error("{from} -> {to} is not an allowed transition")]
    NotAllowed {
        /// The payment's current status.
        from: Status,
        /// The status the fact asked for.
        to: Status,
    },
    /// Only an operator's resolution to one of the model's `resolves_to` leaves
    /// this status.
    #[error("{from} -> {to} is not a resolution the model allows")]
    NotResolvable {
        /// The payment's current status.
        from: Status,
        /// The status asked for.
        to: Status,
    },
    /// The status cannot be the first one a payment has.
    #[error("a payment's history cannot start with {0}")]
    CannotOpenHistory(Status),
}

static MODEL: LazyLock<StatusModel> = LazyLock::new(|| {
    // The JSON is compiled in and checked by unit tests; a failure here is a build defect.
    #[allow(clippy::expect_used)]
    serde_json::from_str(STATUS_MODEL_JSON).expect("status-model.json is valid")
});

impl StatusModel {
    /// The model compiled into this binary.
    pub fn get() -> &'static StatusModel {
        &MODEL
    }

    /// The row of `status`.
    pub fn definition(&self, status: Status) -> Option<&StatusDefinition> {
        self.statuses.iter().find(|d| d.status == status)
    }

    /// Whether a payment may move from `from` (None: nothing recorded yet) to `to`.
    pub fn check_transition(&self, from: Option<Status>, to: Status) -> Result<(), TransitionError> {
        let Some(def) = self.definition(to) else {
            return Err(TransitionError::CannotOpenHistory(to));
        };
        match from {
            None if def.opens_history => Ok(()),
            None => Err(TransitionError::CannotOpenHistory(to)),
            Some(from) if from == to => Err(TransitionError::AlreadyInStatus(to)),
            Some(from) if def.allowed_from.contains(&from) => Ok(()),
            Some(from) => Err(TransitionError::NotAllowed { from, to }),
        }
    }

    /// The rules of `rail` (the default rules when it is unknown or not listed).
    pub fn rail(&self, rail: Option<&str>) -> &RailRules {
        rail.and_then(|r| self.rails.get(r)).unwrap_or(&self.default_rail)
    }

    /// Whether evidence asking for `from -> to` contradicts what was applied.
    pub fn conflict(&self, from: Status, to: Status) -> Option<&Conflict> {
        self.conflicts.iter().find(|c| c.from == from && c.to == to)
    }

    /// Whether an operator may resolve a payment in `from` to `to`.
    pub fn check_resolution(&self, from: Status, to: Status) -> Result<(), TransitionError> {
        let allowed = self.definition(from).is_some_and(|d| d.resolves_to.contains(&to));
        if allowed {
            Ok(())
        } else {
            Err(TransitionError::NotResolvable { from, to })
        }
    }

    /// Whether a return with reason `code` at `returned_at` of a success at
    /// `succeeded_at` on `rail` is inside the rail's window. `None` when the rail is
    /// unknown (nothing to judge it by: the move is left to the table).
    pub fn return_allowed(
        &self,
        rail: Option<&str>,
        code: Option<&str>,
        succeeded_at: DateTime<Utc>,
        returned_at: DateTime<Utc>,
    ) -> Option<bool> {
        let rules = self.rails.get(rail?)?;
        if rules.irrevocable {
            return Some(false);
        }
        let window = rules
            .return_windows
            .iter()
            .find(|w| code.is_some_and(|c| w.codes.iter().any(|k| k == c)));
        // A window that closes beyond the representable dates is still open.
        Some(window.is_some_and(|w| w.closes(succeeded_at).map_or(true, |closes| returned_at <= closes)))
    }

    /// Whether `status` is terminal on `rail` (None: the rail is not known yet, in
    /// which case only statuses terminal on every rail count).
    pub fn is_terminal(&self, status: Status, rail: Option<&str>) -> bool {
        let Some(def) = self.definition(status) else {
            return false;
        };
        let default = def.terminal.get("default").copied().unwrap_or(false);
        match rail {
            Some(rail) => def.terminal.get(rail).copied().unwrap_or(default),
            None => default && def.terminal.values().all(|t| *t),
        }
    }
}

impl StatusModel {
    /// The rule for evidence of success from `provider` after a payment on `rail`
    /// was reported failed: the first row naming the provider (or `*`) and the rail
    /// (or every rail).
    pub fn late_capture(&self, provider: &str, rail: Option<&str>) -> Option<&LateCapture> {
        self.late_captures.iter().find(|l| {
            (l.provider == provider || l.provider == "*")
                && (l.rails.is_empty() || rail.is_some_and(|r| l.rails.iter().any(|x| x == r)))
        })
    }
}

impl StatusModel {
    /// When `status`, reached at `at` on `rail`, becomes final by time alone: the
    /// instant the last of the rail's return windows closes, for a status that is
    /// terminal by default but not on this rail because it can still be returned
    /// (`succeeded` on ach_debit). `None` when time changes nothing (the status is
    /// terminal on the rail already, never terminal, or the rail has no windows), and
    /// when a window closes beyond the representable dates (it never closes).
    pub fn final_after(&self, status: Status, rail: Option<&str>, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let def = self.definition(status)?;
        let terminal_by_default = def.terminal.get("default").copied().unwrap_or(false);
        if !terminal_by_default || self.is_terminal(status, rail) {
            return None;
        }
        let rules = self.rails.get(rail?)?;
        let closes: Result<Vec<_>, _> = rules.return_windows.iter().map(|w| w.closes(at)).collect();
        closes.ok()?.into_iter().max()
    }
}

impl StatusModel {
    /// The model as a Markdown table, for `docs/status-model.md`.
    pub fn to_markdown(&self) -> String {
        let mut out = String::from(
            "# Canonical status model\n\n\
             Generated from `shared/contract/status-model.json` (the table the reconciler enforces and \
             `GET /v1/status-model` serves); `cargo test -p paytrack-contract` fails when this \
             page is stale, and `PAYTRACK_UPDATE_DOCS=1 cargo test -p paytrack-contract` rewrites it.\n\n\
             | status | meaning | allowed from | may open a history | terminal | guidance |\n\
             |---|---|---|---|---|---|\n",
        );
        for d in &self.statuses {
            let from = if d.allowed_from.is_empty() {
                "—".to_owned()
            } else {
                d.allowed_from.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            };
            let terminal = d
                .terminal
                .iter()
                .map(|(rail, t)| format!("{rail}: {}", if *t { "yes" } else { "no" }))
                .collect::<Vec<_>>();
            out.push_str(&format!(
                "| `{}` | {} | {} | {} | {} | {} |\n",
                d.status,
                d.meaning,
                from,
                if d.opens_history { "yes" } else { "no" },
                terminal.join("; "),
                d.guidance
            ));
        }
        out.push_str(&format!(
            "\nEvidence every transition carries: {}.\n\n{}\n",
            self.evidence_required.join(", "),
            self.finality
        ));
        out.push_str(&format!("\n## Ordering\n\n{}\n", self.ordering));
        out.push_str(
            "\n## Conflicts\n\nEvidence asking for one of these moves sends the payment to \
             `investigation_required` with both facts; only an operator's `resolve` leaves it.\n\n\
             | from | to | why |\n|---|---|---|\n",
        );
        for c in &self.conflicts {
            out.push_str(&format!("| `{}` | `{}` | {} |\n", c.from, c.to, c.why));
        }
        out.push_str(
            "\n## Late captures\n\nEvidence of success after a payment was reported failed means money moved: \
             the payment never stays `failed`. The first row naming the provider (or `*`) and the rail \
             decides, whatever the evidence's order; either way a `captured_after_failure` alert asks an \
             operator to refund or accept it.\n\n| provider | rails | to | why |\n|---|---|---|---|\n",
        );
        for l in &self.late_captures {
            let rails = if l.rails.is_empty() {
                "every rail".to_owned()
            } else {
                l.rails.join(", ")
            };
            out.push_str(&format!("| `{}` | {} | `{}` | {} |\n", l.provider, rails, l.to, l.why));
        }
        out.push_str(
            "\n## Rails\n\n`irrevocable` is about the outcome (a later failure or return is a conflict), \
             not the money: refunds and disputes move a payment's amounts inside the rail's money windows.\n\n\
             | rail | irrevocable | pending window | return windows | money windows | status checks |\n\
             |---|---|---|---|---|---|\n",
        );
        let rails = self.rails.iter().map(|(name, r)| (name.as_str(), r));
        for (name, r) in rails.chain(std::iter::once(("(other)", &self.default_rail))) {
            let windows = r
                .return_windows
                .iter()
                .map(|w| {
                    let within = match (w.banking_days, w.calendar_days) {
                        (Some(b), _) => format!("{b} banking days"),
                        (None, Some(c)) => format!("{c} days"),
                        (None, None) => "never".to_owned(),
                    };
                    format!("{} within {within}", w.codes.join("/"))
                })
                .collect::<Vec<_>>();
            let c = &r.status_checks;
            let days = |d: Option<u32>| d.map_or("none".to_owned(), |d| format!("{d} days"));
            out.push_str(&format!(
                "| `{name}` | {} | {} s | {} | refunds {}; disputes {} | first after {} s, then every {} s; after {}, `unclear_pending`, then doubling to every {} s |\n",
                if r.irrevocable { "yes" } else { "no" },
                r.pending_window_secs,
                if windows.is_empty() {
                    "—".to_owned()
                } else {
                    windows.join("; ")
                },
                days(r.money_windows.refund_days),
                days(r.money_windows.dispute_days),
                c.first_after_secs,
                c.interval_secs,
                c.max_checks,
                c.interval_after(c.max_checks + TAIL_DOUBLINGS)
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn checks_go_on_after_unclear_pending_ever_less_often() {
        let c = StatusChecks {
            first_after_secs: 90,
            interval_secs: 90,
            max_checks: 3,
        };
        let waits: Vec<u64> = (1..=11).map(|made| c.interval_after(made)).collect();
        assert_eq!(waits, [90, 90, 90, 180, 360, 720, 1440, 2880, 5760, 5760, 5760]);
    }

    use super::*;

    #[test]
    fn the_docs_page_is_rendered_from_the_model() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/status-model.md");
        let rendered = StatusModel::get().to_markdown();
        if std::env::var_os("PAYTRACK_UPDATE_DOCS").is_some() {
            std::fs::write(&path, &rendered).unwrap();
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == rendered,
            "docs/status-model.md is stale; run PAYTRACK_UPDATE_DOCS=1 cargo test -p paytrack-contract"
        );
    }

    #[test]
    fn model_covers_every_status_once() {
        let model = StatusModel::get();
        let all = Status::ALL;
        assert_eq!(model.statuses.len(), all.len());
        for s in all {
            assert!(model.definition(s).is_some(), "{s} missing");
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn transitions_follow_the_contract_table() {
        use Status::*;
        let model = StatusModel::get();
        let cases: &[(Option<Status>, Status, bool)] = &[
            (None, Pending, true),
            (None, Succeeded, true),
            (None, Returned, false),
            (None, InvestigationRequired, false),
            (Some(Initiated), Pending, true),
            (Some(Pending), Held, true),
            (Some(Held), Pending, true),
            (Some(Pending), Succeeded, true),
            (Some(Succeeded), Pending, false),
            (Some(Succeeded), Failed, false),
            (Some(Succeeded), Returned, true),
            (Some(Pending), Returned, false),
            (Some(Failed), Succeeded, false),
            (Some(Succeeded), InvestigationRequired, true),
            (Some(Failed), InvestigationRequired, false),
            (Some(Cancelled), Pending, false),
        ];
        for (from, to, ok) in cases {
            assert_eq!(model.check_transition(*from, *to).is_ok(), *ok, "{from:?} -> {to}");
        }
        assert_eq!(
            model.check_transition(Some(Pending), Pending),
            Err(TransitionError::AlreadyInStatus(Pending))
        );
    }

    #[test]
    fn a_success_on_a_reversible_rail_turns_final_when_its_last_window_closes() {
        let model = StatusModel::get();
        // A Monday: R01-R04 close two banking days later, R05/R07/R10/R11 after 60 days.
        let at = DateTime::parse_from_rfc3339("2026-11-02T10:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        assert_eq!(
            model.final_after(Status::Succeeded, Some("ach_debit"), at),
            at.checked_add_days(chrono::Days::new(60))
        );
        // Final at once, or never by time.
        assert_eq!(model.final_after(Status::Succeeded, Some("card"), at), None);
        assert_eq!(model.final_after(Status::Failed, Some("ach_debit"), at), None);
        assert_eq!(model.final_after(Status::Pending, Some("ach_debit"), at), None);
        assert_eq!(
            model.final_after(Status::InvestigationRequired, Some("ach_debit"), at),
            None
        );
        assert_eq!(model.final_after(Status::Succeeded, None, at), None);
    }

    #[test]
    fn return_windows_follow_the_rail_and_the_code() {
        let model = StatusModel::get();
        // A Friday noon success: two banking days later is Tuesday noon.
        let friday = "2026-11-20T12:00:00Z".parse::<DateTime<Utc>>().unwrap();
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let ach = Some("ach_debit");
        assert_eq!(
            model.return_allowed(ach, Some("R01"), friday, at("2026-11-24T12:00:00Z")),
            Some(true)
        );
        assert_eq!(
            model.return_allowed(ach, Some("R01"), friday, at("2026-11-24T12:00:01Z")),
            Some(false)
        );
        assert_eq!(
            model.return_allowed(ach, Some("R10"), friday, at("2027-01-19T12:00:00Z")),
            Some(true)
        );
        assert_eq!(
            model.return_allowed(ach, Some("R10"), friday, at("2027-01-19T12:00:01Z")),
            Some(false)
        );
        assert_eq!(model.return_allowed(ach, Some("R99"), friday, friday), Some(false));
        assert_eq!(model.return_allowed(ach, None, friday, friday), Some(false));
        for rail in ["rtp", "upi", "card"] {
            assert_eq!(
                model.return_allowed(Some(rail), Some("R01"), friday, friday),
                Some(false)
            );
        }
        assert_eq!(model.return_allowed(None, Some("R01"), friday, friday), None);
        let upi = model.rail(Some("upi"));
        assert!(upi.irrevocable);
        assert_eq!(
            (upi.status_checks.first_after_secs, upi.status_checks.max_checks),
            (90, 3)
        );
    }

    #[test]
    fn only_investigation_required_is_resolved() {
        let model = StatusModel::get();
        assert!(
            model
                .check_resolution(Status::InvestigationRequired, Status::Failed)
                .is_ok()
        );
        assert!(
            model
                .check_resolution(Status::InvestigationRequired, Status::Initiated)
                .is_err()
        );
        assert!(model.check_resolution(Status::Pending, Status::Failed).is_err());
        assert!(model.conflict(Status::Succeeded, Status::Failed).is_some());
        assert!(model.conflict(Status::Pending, Status::Failed).is_none());
    }

    #[test]
    fn windows_near_the_end_of_time_are_errors_not_panics() {
        let model = StatusModel::get();
        let end = DateTime::<Utc>::MAX_UTC;
        let ach = Some("ach_debit");
        for window in &model.rail(ach).return_windows {
            assert!(window.closes(end).is_err(), "{:?}", window.codes);
        }
        assert!(add_banking_days(end, 1).is_err());
        assert_eq!(add_banking_days(end, 0), Ok(end));
        // Still open: a window that closes beyond time has not closed.
        assert_eq!(model.return_allowed(ach, Some("R01"), end, end), Some(true));
        assert_eq!(model.final_after(Status::Succeeded, ach, end), None);
        let near_end = end.checked_sub_days(chrono::Days::new(3)).expect("representable");
        assert!(model.final_after(Status::Succeeded, ach, near_end).is_none());
    }

    #[test]
    fn late_captures_and_money_windows_are_data() {
        let model = StatusModel::get();
        let to = |p: &str, r: &str| model.late_capture(p, Some(r)).map(|l| l.to);
        assert_eq!(to("razorpay", "upi"), Some(Status::Succeeded));
        assert_eq!(to("stripe", "card"), Some(Status::Succeeded));
        assert_eq!(to("stripe", "ach_debit"), Some(Status::InvestigationRequired));
        assert_eq!(to("stdwebhooks", "card"), Some(Status::InvestigationRequired));
        let at = "2026-11-20T12:00:00Z".parse::<DateTime<Utc>>().unwrap();
        assert_eq!(
            model.rail(Some("card")).money_windows.at_risk_until(at),
            Some(at + chrono::Duration::days(180))
        );
        assert_eq!(model.rail(Some("rtp")).money_windows.at_risk_until(at), None);
        assert_eq!(
            model
                .rail(Some("card"))
                .money_windows
                .at_risk_until(DateTime::<Utc>::MAX_UTC),
            None
        );
    }

    #[test]
    fn finality_depends_on_the_rail() {
        let model = StatusModel::get();
        assert!(model.is_terminal(Status::Succeeded, Some("card")));
        assert!(!model.is_terminal(Status::Succeeded, Some("ach_debit")));
        assert!(!model.is_terminal(Status::Succeeded, None));
        assert!(model.is_terminal(Status::Failed, None));
        assert!(!model.is_terminal(Status::Pending, Some("rtp")));
    }
}
