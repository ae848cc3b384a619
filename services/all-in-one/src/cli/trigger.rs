//! `paytrack trigger <scenario>`: asks the provider simulator to play one payment's
//! story (`POST /v1/scenarios/{name}`) and prints the payment it made, the state it
//! should end in, and how to watch it get there. `paytrack trigger --list` names the
//! scenarios.

use serde_json::{Value, json};

use crate::cli::api::Api;
use crate::cli::output::{Output, cell, table};

/// Plays `scenario` (at `provider`, if given) for `tenant`, or lists the scenarios.
pub async fn run(
    simulator: &Api,
    scenario: Option<String>,
    provider: Option<String>,
    tenant: &str,
    out: Output,
) -> anyhow::Result<()> {
    let Some(scenario) = scenario else {
        let list = simulator.get("/v1/scenarios", &[]).await?;
        return out.emit(&list, render_list);
    };
    let mut body = json!({ "tenant": tenant });
    if let Some(provider) = provider {
        body["provider"] = json!(provider);
    }
    let Ok(mut url) = reqwest::Url::parse("http://localhost/v1/scenarios/") else {
        anyhow::bail!("cannot build the scenario's path");
    };
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.pop_if_empty().push(&scenario);
    }
    let (_, started) = simulator.post(url.path(), &body, None).await?;
    out.emit(&started, render_started)
}

fn render_list(list: &Value) -> String {
    let rows: Vec<Vec<String>> = list["scenarios"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|s| {
            let providers: Vec<String> = s["providers"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(cell)
                .collect();
            vec![cell(&s["name"]), providers.join(","), cell(&s["description"])]
        })
        .collect();
    table(&["SCENARIO", "PROVIDERS", "STORY"], &rows)
}

fn render_started(s: &Value) -> String {
    let payment = cell(&s["payment_id"]);
    let expect = &s["expect"];
    let amounts = expect["amounts"]
        .as_object()
        .map(|a| {
            a.iter()
                .map(|(k, v)| format!("{k}={}", cell(v)))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    [
        format!(
            "{} started: payment {payment} at {} ({})",
            cell(&s["scenario"]),
            cell(&s["provider"]),
            cell(&s["provider_ref"])
        ),
        format!("  {}", cell(&s["description"])),
        format!("  expect: {} {amounts}", cell(&expect["status"])),
        "  watch it with:".to_owned(),
        format!("    paytrack tail payment:{payment}"),
        format!("    paytrack payments get {payment}"),
    ]
    .join("\n")
}
