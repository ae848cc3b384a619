//! The canonical status model, loaded from `status-model.json`.
//!
//! The model is data so that every surface (the reconciler's state machine,
//! `GET /v1/status-model`, the docs) reads one table; code asks it questions instead
//! of re-encoding transitions in `match` arms.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::LazyLock;

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
        out
    }
}

#[cfg(test)]
mod tests {
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
        let all = [
            Status::Initiated,
            Status::Pending,
            Status::Held,
            Status::Succeeded,
            Status::Failed,
            Status::Cancelled,
            Status::Returned,
            Status::InvestigationRequired,
        ];
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
    fn finality_depends_on_the_rail() {
        let model = StatusModel::get();
        assert!(model.is_terminal(Status::Succeeded, Some("card")));
        assert!(!model.is_terminal(Status::Succeeded, Some("ach_debit")));
        assert!(!model.is_terminal(Status::Succeeded, None));
        assert!(model.is_terminal(Status::Failed, None));
        assert!(!model.is_terminal(Status::Pending, Some("rtp")));
    }
}
