//! `paytrack alerts list|ack`: the tenant's alerts and an operator's acknowledgement.

use serde_json::{Value, json};

use crate::cli::api::Api;
use crate::cli::output::{Output, cell, table};

/// An alerts command.
#[derive(clap::Subcommand, Debug)]
pub enum AlertsCommand {
    /// List alerts, newest first (`GET /v1/alerts`).
    List {
        /// Only this kind (e.g. unclear_pending).
        #[arg(long)]
        kind: Option<String>,
        /// Only this payment's.
        #[arg(long)]
        payment_id: Option<String>,
        /// Only acknowledged (true) or unacknowledged (false) ones.
        #[arg(long)]
        acknowledged: Option<bool>,
    },
    /// Acknowledge an alert with a note (`POST /v1/alerts/{id}/ack`).
    Ack {
        /// The alert.
        alert_id: String,
        /// Why, in the operator's words.
        #[arg(long)]
        note: String,
    },
}

/// Runs one alerts command and prints its answer.
pub async fn run(api: &Api, command: AlertsCommand, out: Output) -> anyhow::Result<()> {
    match command {
        AlertsCommand::List {
            kind,
            payment_id,
            acknowledged,
        } => {
            let mut query = Vec::new();
            let filters = [
                ("kind", kind),
                ("payment_id", payment_id),
                ("acknowledged", acknowledged.map(|a| a.to_string())),
            ];
            for (key, value) in filters {
                if let Some(value) = value {
                    query.push((key.to_owned(), value));
                }
            }
            let list = api.get("/v1/alerts", &query).await?;
            out.emit(&list, render_list)
        }
        AlertsCommand::Ack { alert_id, note } => {
            let path = alert_path(&alert_id);
            let (status, answer) = api.post(&path, &json!({ "note": note }), None).await?;
            out.emit(&answer, |a| render_ack(a, &alert_id, status))
        }
    }
}

/// `/v1/alerts/{id}/ack`, the id percent-encoded.
fn alert_path(alert_id: &str) -> String {
    let Ok(mut url) = reqwest::Url::parse("http://localhost/v1/alerts/") else {
        return format!("/v1/alerts/{alert_id}/ack");
    };
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.pop_if_empty().push(alert_id).push("ack");
    }
    url.path().to_owned()
}

fn render_list(list: &Value) -> String {
    let rows: Vec<Vec<String>> = list["items"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|a| {
            vec![
                cell(&a["alert_id"]),
                cell(&a["kind"]),
                cell(&a["payment_id"]),
                cell(&a["raised_at"]),
                a["acked_by"]
                    .as_str()
                    .map_or_else(|| "no".to_owned(), |by| format!("by {by}")),
                cell(&a["detail"]),
            ]
        })
        .collect();
    let mut text = table(&["ALERT", "KIND", "PAYMENT", "RAISED", "ACKED", "DETAIL"], &rows);
    text.push_str(&format!("\n{} alert(s)", rows.len()));
    text
}

fn render_ack(answer: &Value, alert_id: &str, status: u16) -> String {
    if status == 202 {
        return format!("acknowledgement of {alert_id} recorded; the list shows it shortly");
    }
    format!(
        "{alert_id} acknowledged by {} at {}: {}",
        cell(&answer["acked_by"]),
        cell(&answer["acked_at"]),
        cell(&answer["ack_note"])
    )
}
