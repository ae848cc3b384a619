//! `paytrack cancel|retry|resolve`: an operator's commands on a payment. Each is sent
//! with a fresh `Idempotency-Key` (or the one given, so a retried command is a
//! duplicate), and its answer says how to watch the reconciler decide it.

use serde_json::{Value, json};

use crate::cli::api::Api;
use crate::cli::output::{Output, cell};
use crate::cli::payments::path;

/// What is asked of the payment.
#[derive(Debug)]
pub enum Action {
    /// `POST …/cancel`.
    Cancel,
    /// `POST …/retry`.
    Retry,
    /// `POST …/resolve` of `investigation_required`, to `status`.
    Resolve {
        /// The status it resolves to: succeeded, failed, cancelled or returned.
        status: String,
    },
}

impl Action {
    fn name(&self) -> &'static str {
        match self {
            Action::Cancel => "cancel",
            Action::Retry => "retry",
            Action::Resolve { .. } => "resolve",
        }
    }
}

/// Sends the command and prints its answer.
pub async fn run(
    api: &Api,
    payment_id: &str,
    action: Action,
    reason: Option<String>,
    idempotency_key: Option<String>,
    out: Output,
) -> anyhow::Result<()> {
    let mut body = json!({});
    if let Some(reason) = reason {
        body["reason"] = json!(reason);
    }
    if let Action::Resolve { status } = &action {
        body["status"] = json!(status);
    }
    let key = idempotency_key.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let (_, answer) = api
        .post(&path(payment_id, &format!("/{}", action.name())), &body, Some(&key))
        .await?;
    out.emit(&answer, |a| render(a, payment_id, action.name()))
}

fn render(answer: &Value, payment_id: &str, command: &str) -> String {
    let duplicate = if answer["duplicate"] == json!(true) {
        " (a duplicate: recorded before)"
    } else {
        ""
    };
    let mut lines = vec![format!(
        "{command} of {payment_id} recorded as fact {} (seq {}){duplicate}",
        cell(&answer["fact_id"]),
        cell(&answer["seq"])
    )];
    if let Some(provider) = answer["routing"]["provider"].as_str() {
        lines.push(format!("  new attempt at {provider}"));
    }
    lines.push("  the reconciler decides it; watch with:".to_owned());
    lines.push(format!("    paytrack tail payment:{payment_id}"));
    lines.push(format!("    paytrack payments timeline {payment_id}"));
    lines.join("\n")
}
