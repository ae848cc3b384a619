//! Offline checks of the monitoring in `k8s/monitoring/`: promtool accepts the alert
//! rules and their unit tests, the dashboard's queries are valid PromQL, and every
//! metric the rules and the dashboard name is one the services export (catalogued,
//! and recorded somewhere in the code; tests/tests/metrics.rs checks that what a
//! scrape shows is catalogued). promtool comes from scripts/install-promtool.sh; a
//! missing promtool fails the test rather than skipping it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use paytrack_shared::metrics::catalog;
use serde_json::Value;

const INSTALL_HINT: &str = "install promtool with scripts/install-promtool.sh";

fn monitoring() -> PathBuf {
    paytrack_tests::workspace_root().join("k8s/monitoring")
}

/// Runs promtool with `args` in `dir`; fails with its output unless it succeeds.
fn promtool(dir: &Path, args: &[&str]) -> Result<String> {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .with_context(|| format!("promtool not runnable; {INSTALL_HINT}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if !output.status.success() {
        bail!("promtool {args:?} failed:\n{text}");
    }
    Ok(text)
}

/// Every PromQL expression of the dashboard's panels.
fn dashboard_expressions() -> Result<Vec<String>> {
    let text = std::fs::read_to_string(monitoring().join("dashboard.json"))?;
    let dashboard: Value = serde_json::from_str(&text)?;
    let panels = dashboard["panels"].as_array().context("the dashboard has no panels")?;
    let mut expressions = Vec::new();
    for panel in panels {
        let targets = panel["targets"]
            .as_array()
            .with_context(|| format!("panel {} has no targets", panel["title"]))?;
        for target in targets {
            let expr = target["expr"]
                .as_str()
                .with_context(|| format!("a target of {} has no expr", panel["title"]))?;
            expressions.push(expr.to_owned());
        }
    }
    Ok(expressions)
}

/// Every `paytrack_…` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("paytrack_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// The Rust sources that record metrics (the catalogue itself left out).
fn recording_sources() -> Result<String> {
    let root = paytrack_tests::workspace_root();
    let mut sources = String::new();
    let mut dirs: Vec<PathBuf> = vec![root.join("shared/src"), root.join("nats/src"), root.join("services")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| dir.display().to_string())? {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("metrics/catalog.rs") {
                sources.push_str(&std::fs::read_to_string(&path)?);
            }
        }
    }
    Ok(sources)
}

#[test]
fn promtool_accepts_the_rules_and_their_unit_tests() -> Result<()> {
    let dir = monitoring();
    let checked = promtool(&dir, &["check", "rules", "alerts.yaml"])?;
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = promtool(&dir, &["test", "rules", "alerts.test.yaml"])?;
    assert!(tested.contains("SUCCESS"), "{tested}");
    Ok(())
}

#[test]
fn the_dashboards_queries_are_valid_promql() -> Result<()> {
    // promtool checks expressions in rule files: the queries become recording rules.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in dashboard_expressions()?.iter().enumerate() {
        rules.push_str(&format!(
            "      - record: dashboard_query_{i}\n        expr: {}\n",
            serde_json::to_string(expr)?
        ));
    }
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("dashboard-rules.yaml"), rules)?;
    let checked = promtool(dir.path(), &["check", "rules", "dashboard-rules.yaml"])?;
    assert!(checked.contains("SUCCESS"), "{checked}");
    Ok(())
}

#[test]
fn rules_and_dashboard_name_only_exported_metrics() -> Result<()> {
    let rules = std::fs::read_to_string(monitoring().join("alerts.yaml"))?;
    let mut named = metric_names(&rules);
    for expr in dashboard_expressions()? {
        named.extend(metric_names(&expr));
    }
    assert!(named.len() > 10, "{named:?}");
    let sources = recording_sources()?;
    for name in &named {
        let metric = catalog::find(name).with_context(|| format!("{name} is not a metric paytrack exports"))?;
        assert!(
            sources.contains(&format!("\"{}\"", metric.name)),
            "{} is catalogued but nothing records it",
            metric.name
        );
    }
    // Every alert the rules' groups promise is there.
    for alert in [
        "PaytrackConsumerBacklogGrowing",
        "PaytrackDeadLetters",
        "PaytrackConsumerPanics",
        "PaytrackSessionsNotCurrent",
        "PaytrackWebhookToEventSlow",
        "PaytrackHttpLatencySlo",
        "PaytrackProjectorLagging",
    ] {
        assert!(rules.contains(&format!("alert: {alert}\n")), "{alert}");
    }
    Ok(())
}

#[test]
fn every_catalogued_metric_is_recorded_somewhere() -> Result<()> {
    let sources = recording_sources()?;
    for metric in catalog::METRICS {
        assert!(
            sources.contains(&format!("\"{}\"", metric.name)),
            "{} is catalogued but nothing records it",
            metric.name
        );
    }
    Ok(())
}
