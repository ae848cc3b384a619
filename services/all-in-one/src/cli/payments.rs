//! `paytrack payments list|get|timeline|evidence|ledger`: the REST reads of ingest,
//! printed for an operator. The list's filters go to `GET /v1/payments` as they are
//! given; the evidence pack is read page by page until its facts are complete.

use serde_json::{Value, json};

use crate::cli::api::Api;
use crate::cli::output::{Output, cell, money, table};

/// A read of one payment or of the list.
#[derive(clap::Subcommand, Debug)]
pub enum PaymentsCommand {
    /// List the tenant's payments (`GET /v1/payments`); filters pass through as query
    /// parameters.
    List(Box<ListArgs>),
    /// A payment's current state (`GET /v1/payments/{id}`).
    Get {
        /// The payment.
        payment_id: String,
    },
    /// Every transition, and the facts that changed nothing between them.
    Timeline {
        /// The payment.
        payment_id: String,
    },
    /// The evidence pack, every page of raw facts.
    Evidence {
        /// The payment.
        payment_id: String,
    },
    /// The payment's journal entries and postings.
    Ledger {
        /// The payment.
        payment_id: String,
    },
}

/// The list's filters: each becomes the query parameter of the same name.
#[derive(clap::Args, Debug, Default)]
pub struct ListArgs {
    /// status=…
    #[arg(long)]
    pub status: Option<String>,
    /// merchant=…
    #[arg(long)]
    pub merchant: Option<String>,
    /// provider=…
    #[arg(long)]
    pub provider: Option<String>,
    /// rail=…
    #[arg(long)]
    pub rail: Option<String>,
    /// direction=… (payin, payout)
    #[arg(long)]
    pub direction: Option<String>,
    /// amount_min=…
    #[arg(long)]
    pub amount_min: Option<String>,
    /// amount_max=…
    #[arg(long)]
    pub amount_max: Option<String>,
    /// currency=…
    #[arg(long)]
    pub currency: Option<String>,
    /// created_after=…
    #[arg(long)]
    pub created_after: Option<String>,
    /// created_before=…
    #[arg(long)]
    pub created_before: Option<String>,
    /// updated_after=…
    #[arg(long)]
    pub updated_after: Option<String>,
    /// updated_before=…
    #[arg(long)]
    pub updated_before: Option<String>,
    /// q=… (free text)
    #[arg(long)]
    pub q: Option<String>,
    /// order=…
    #[arg(long)]
    pub order: Option<String>,
    /// cursor=… (the previous page's next_cursor)
    #[arg(long)]
    pub cursor: Option<String>,
    /// limit=…
    #[arg(long)]
    pub limit: Option<String>,
    /// Any other query parameter, as KEY=VALUE (repeatable).
    #[arg(long = "filter", value_name = "KEY=VALUE")]
    pub filters: Vec<String>,
}

impl ListArgs {
    /// The query parameters, in the order given, untouched.
    pub fn query(&self) -> anyhow::Result<Vec<(String, String)>> {
        let named = [
            ("status", &self.status),
            ("merchant", &self.merchant),
            ("provider", &self.provider),
            ("rail", &self.rail),
            ("direction", &self.direction),
            ("amount_min", &self.amount_min),
            ("amount_max", &self.amount_max),
            ("currency", &self.currency),
            ("created_after", &self.created_after),
            ("created_before", &self.created_before),
            ("updated_after", &self.updated_after),
            ("updated_before", &self.updated_before),
            ("q", &self.q),
            ("order", &self.order),
            ("cursor", &self.cursor),
            ("limit", &self.limit),
        ];
        let mut query: Vec<(String, String)> = named
            .into_iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| (k.to_owned(), v.clone())))
            .collect();
        for filter in &self.filters {
            let (key, value) = filter
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--filter {filter:?}: expected KEY=VALUE"))?;
            query.push((key.to_owned(), value.to_owned()));
        }
        Ok(query)
    }
}

/// Runs one read and prints it.
pub async fn run(api: &Api, command: PaymentsCommand, out: Output) -> anyhow::Result<()> {
    match command {
        PaymentsCommand::List(args) => {
            let page = api.get("/v1/payments", &args.query()?).await?;
            out.emit(&page, render_list)
        }
        PaymentsCommand::Get { payment_id } => {
            let view = api.get(&path(&payment_id, ""), &[]).await?;
            out.emit(&view, render_view)
        }
        PaymentsCommand::Timeline { payment_id } => {
            let items = api.get(&path(&payment_id, "/timeline"), &[]).await?;
            out.emit(&items, render_timeline)
        }
        PaymentsCommand::Evidence { payment_id } => {
            let pack = evidence(api, &payment_id).await?;
            out.emit(&pack, render_evidence)
        }
        PaymentsCommand::Ledger { payment_id } => {
            let ledger = api.get(&path(&payment_id, "/ledger"), &[]).await?;
            out.emit(&ledger, render_ledger)
        }
    }
}

/// `/v1/payments/{id}{rest}`, the id percent-encoded.
pub fn path(payment_id: &str, rest: &str) -> String {
    let Ok(mut url) = reqwest::Url::parse("http://localhost/v1/payments/") else {
        return format!("/v1/payments/{payment_id}{rest}");
    };
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.pop_if_empty().push(payment_id);
    }
    format!("{}{rest}", url.path())
}

/// Most evidence pages read before giving up (a pack of 1 MiB pages this long is
/// not one payment's).
const MAX_EVIDENCE_PAGES: usize = 10_000;

/// The evidence pack with the facts of every page (`facts_next` followed as
/// `facts_after`); the answer is the first page's with all facts and no cursor.
pub async fn evidence(api: &Api, payment_id: &str) -> anyhow::Result<Value> {
    let path = path(payment_id, "/evidence");
    let mut pack = api.get(&path, &[]).await?;
    for _ in 0..MAX_EVIDENCE_PAGES {
        let Some(next) = pack.get("facts_next").filter(|n| !n.is_null()).map(cell) else {
            return Ok(pack);
        };
        let page = api.get(&path, &[("facts_after".to_owned(), next)]).await?;
        let more = page["facts"].as_array().cloned().unwrap_or_default();
        if let Some(facts) = pack["facts"].as_array_mut() {
            facts.extend(more);
        }
        pack["facts_next"] = page["facts_next"].clone();
    }
    anyhow::bail!("the evidence pack of {payment_id} did not end after {MAX_EVIDENCE_PAGES} pages")
}

fn render_list(page: &Value) -> String {
    let rows: Vec<Vec<String>> = page["items"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|p| {
            vec![
                cell(&p["payment_id"]),
                cell(&p["status"]),
                money(&p["amount_minor"], &p["currency"]),
                cell(&p["merchant_id"]),
                cell(&p["provider"]),
                cell(&p["rail"]),
                cell(&p["updated_at"]),
            ]
        })
        .collect();
    let mut text = table(
        &["PAYMENT", "STATUS", "AMOUNT", "MERCHANT", "PROVIDER", "RAIL", "UPDATED"],
        &rows,
    );
    text.push_str(&format!("\n{} payment(s)", rows.len()));
    if let Some(next) = page["next_cursor"].as_str() {
        text.push_str(&format!("; more with --cursor {next}"));
    }
    text
}

fn render_view(v: &Value) -> String {
    let finality = if v["final"] == json!(true) {
        "final".to_owned()
    } else {
        format!("not final: {}", cell(&v["not_final_because"]))
    };
    let mut lines = vec![
        format!("{}  {}  ({finality})", cell(&v["payment_id"]), cell(&v["status"])),
        format!(
            "  version {}  merchant {}  {}  {}  rail {}",
            cell(&v["version"]),
            cell(&v["merchant_id"]),
            cell(&v["direction"]),
            money(&v["amount_minor"], &v["currency"]),
            cell(&v["rail"])
        ),
        format!("  provider {} {}", cell(&v["provider"]), cell(&v["provider_ref"])),
    ];
    if let Some(amounts) = v["amounts"].as_object() {
        let parts: Vec<String> = amounts
            .iter()
            .filter(|(_, a)| a.is_number())
            .map(|(k, a)| format!("{}={}", k.trim_end_matches("_minor"), a))
            .collect();
        lines.push(format!("  amounts {}", parts.join(" ")));
    }
    if v["at_risk_minor"].as_i64().unwrap_or(0) > 0 {
        lines.push(format!(
            "  at risk {} until {}",
            cell(&v["at_risk_minor"]),
            cell(&v["at_risk_until"])
        ));
    }
    lines.push(format!(
        "  updated {}  trace {}",
        cell(&v["updated_at"]),
        cell(&v["trace_id"])
    ));
    lines.join("\n")
}

fn render_timeline(items: &Value) -> String {
    let items = items.as_array().map(Vec::as_slice).unwrap_or_default();
    let lines: Vec<String> = items
        .iter()
        .map(|i| match i["kind"].as_str() {
            Some("transition") => format!(
                "v{:<3} {} -> {}  rule {}  fact {}  at {}",
                cell(&i["version"]),
                cell(&i["previous_status"]),
                cell(&i["status"]),
                cell(&i["rule"]),
                cell(&i["fact_id"]),
                cell(&i["occurred_at"])
            ),
            _ => format!(
                "     fact {} {}{}",
                cell(&i["fact_id"]),
                cell(&i["outcome"]),
                i["reason"].as_str().map(|r| format!(": {r}")).unwrap_or_default()
            ),
        })
        .collect();
    lines.join("\n")
}

fn render_evidence(pack: &Value) -> String {
    let count = |key: &str| pack[key].as_array().map_or(0, Vec::len);
    let mut lines = vec![format!(
        "evidence of {}: {} fact(s), {} timeline item(s), {} checkpoint(s), {} ledger entrie(s), {} session(s), {} alert(s)",
        cell(&pack["payment"]["payment_id"]),
        count("facts"),
        count("timeline"),
        count("checkpoints"),
        count("ledger"),
        count("sessions"),
        count("alerts")
    )];
    for fact in pack["facts"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let source = &fact["source"];
        let what = source["event_type"]
            .as_str()
            .or_else(|| source["action"].as_str())
            .unwrap_or("-");
        lines.push(format!(
            "  in#{} {} {}:{} -> {}",
            cell(&fact["inbound_seq"]),
            cell(&fact["fact_id"]),
            source["provider"].as_str().unwrap_or("command"),
            what,
            cell(&fact["outcome"])
        ));
    }
    lines.join("\n")
}

fn render_ledger(ledger: &Value) -> String {
    let mut lines = vec![format!(
        "ledger of {}: {}",
        cell(&ledger["payment_id"]),
        money(&ledger["ledger_minor"], &ledger["currency"])
    )];
    for entry in ledger["entries"].as_array().map(Vec::as_slice).unwrap_or_default() {
        lines.push(format!(
            "  v{} {} ({})",
            cell(&entry["version"]),
            cell(&entry["entry_kind"]),
            cell(&entry["status"])
        ));
        for posting in entry["postings"].as_array().map(Vec::as_slice).unwrap_or_default() {
            lines.push(format!(
                "      {:>12} {} {}",
                cell(&posting["amount_minor"]),
                cell(&posting["currency"]),
                cell(&posting["account"])
            ));
        }
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_filters_pass_through_as_given() -> anyhow::Result<()> {
        let args = ListArgs {
            status: Some("succeeded".into()),
            amount_min: Some("100".into()),
            filters: vec!["merchant_id=m_1".into(), "x=a=b".into()],
            ..ListArgs::default()
        };
        let query = args.query()?;
        let pairs: Vec<(&str, &str)> = query.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            pairs,
            [
                ("status", "succeeded"),
                ("amount_min", "100"),
                ("merchant_id", "m_1"),
                ("x", "a=b")
            ]
        );
        let bad = ListArgs {
            filters: vec!["novalue".into()],
            ..ListArgs::default()
        };
        assert!(bad.query().is_err());
        Ok(())
    }

    #[test]
    fn a_payment_id_is_one_path_segment() {
        assert_eq!(path("pay_1", "/timeline"), "/v1/payments/pay_1/timeline");
        assert_eq!(path("a/b?c", ""), "/v1/payments/a%2Fb%3Fc");
    }
}
