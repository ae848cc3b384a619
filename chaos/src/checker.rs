//! The checker: it trusts nothing of the product. It reads the providers' ground
//! truth (the simulator), both histories on JetStream (as the admin), REST, the
//! database and every client's frames, and counts, per phase of the run:
//!
//! - acknowledged commands and webhooks absent from PAYTRACK_IN (lost), and of those
//!   the ones whose payment still reached the provider's truth (recovered);
//! - facts applied twice (one fact causing two transitions of a payment);
//! - forked payments (two transitions with one version, or a history on two subjects);
//! - payments whose status or amount differs from the provider's truth;
//! - client timelines broken without being told, and transitions a client never got;
//! - ledger entries whose legs do not sum to zero.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use paytrack_shared::subjects;
use serde_json::Value;

use crate::clients::Timeline;
use crate::load::Acked;

/// What the checker counted for one phase.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Commands and webhooks answered 2xx.
    pub acked: usize,
    /// Of those, absent from the history and not recovered.
    pub lost: usize,
    /// Absent from the history, but the payment reached the provider's truth anyway
    /// (provider redelivery or the sweep's status query).
    pub recovered: usize,
    /// Facts applied twice.
    pub duplicated: usize,
    /// Payments with two chains.
    pub forked: usize,
    /// Client timeline breaks nobody announced, plus transitions a client never got.
    pub client_gaps: usize,
    /// Payments whose status or amount differs from the provider's truth.
    pub diverged: usize,
    /// Ledger entries that do not balance.
    pub unbalanced: usize,
    /// A few of the payments behind non-zero counts, with what was wrong, so a row
    /// can be looked into.
    pub examples: Vec<String>,
}

impl Counts {
    /// Whether anything the acceptance forbids was counted.
    pub fn clean(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.forked == 0
            && self.client_gaps == 0
            && self.diverged == 0
            && self.unbalanced == 0
    }
}

/// One transition as PAYTRACK_STATUS holds it.
#[derive(Debug, Clone)]
struct Transition {
    subject: String,
    version: u64,
    fact_id: String,
    seq: u64,
}

/// Every message of `stream` as (sequence, subject, JSON payload), read with an
/// ordered consumer up to the last sequence at the time of the call.
async fn read_stream(js: &jetstream::Context, stream: &str) -> anyhow::Result<Vec<(u64, String, Value)>> {
    let mut handle = js
        .get_stream(stream)
        .await
        .with_context(|| format!("stream {stream}"))?;
    let last = handle.info().await?.state.last_sequence;
    let mut out = Vec::new();
    if last == 0 {
        return Ok(out);
    }
    let consumer = handle
        .create_consumer(consumer::pull::OrderedConfig::default())
        .await
        .context("ordered consumer")?;
    let mut messages = consumer.messages().await?;
    loop {
        let next = tokio::time::timeout(Duration::from_secs(30), messages.next())
            .await
            .with_context(|| format!("reading {stream} stalled before sequence {last}"))?;
        let Some(message) = next else { break };
        let message = message.map_err(|e| anyhow::anyhow!("{stream}: {e}"))?;
        let seq = message.info().map_err(|e| anyhow::anyhow!("{e}"))?.stream_sequence;
        let payload: Value = serde_json::from_slice(&message.payload).unwrap_or(Value::Null);
        out.push((seq, message.subject.to_string(), payload));
        if seq >= last {
            break;
        }
    }
    Ok(out)
}

/// The delivery ids (`msg_…`, `evt_…`) that occur anywhere in `text`.
fn delivery_ids(text: &str, into: &mut HashSet<String>) {
    for prefix in ["msg_", "evt_"] {
        let mut rest = text;
        while let Some(at) = rest.find(prefix) {
            let tail = &rest[at..];
            let len = prefix.len() + tail[prefix.len()..].chars().take_while(char::is_ascii_hexdigit).count();
            if len == prefix.len() + 24 {
                into.insert(tail[..len].to_owned());
            }
            rest = &tail[prefix.len()..];
        }
    }
}

/// The providers' truth of every payment, by paytrack payment id.
pub async fn ground_truth(simulator_url: &str, token: &str) -> anyhow::Result<HashMap<String, Value>> {
    let truth: Value = reqwest::Client::new()
        .get(format!("{simulator_url}/v1/ground-truth"))
        .bearer_auth(token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(truth["payments"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter_map(|p| Some((p["payment_id"].as_str()?.to_owned(), p.clone())))
                .collect()
        })
        .unwrap_or_default())
}

/// Where to look.
pub struct Sources<'a> {
    /// The admin's JetStream.
    pub js: &'a jetstream::Context,
    /// ingest's URL and an operator token.
    pub ingest_url: &'a str,
    /// The operator token.
    pub token: &'a str,
    /// The simulator's URL and token.
    pub simulator_url: &'a str,
    /// The simulator's API token.
    pub simulator_token: &'a str,
    /// The database.
    pub db: &'a sqlx::PgPool,
}

/// Whether REST shows every acknowledged payment at its provider's truth: what
/// recovery waits for before counting.
pub async fn converged(sources: &Sources<'_>, acked: &[Acked]) -> anyhow::Result<usize> {
    let truth = ground_truth(sources.simulator_url, sources.simulator_token).await?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let mut diverged = 0;
    for command in acked {
        if !matches_truth(&http, sources, truth.get(&command.payment_id), &command.payment_id).await {
            diverged += 1;
        }
    }
    Ok(diverged)
}

async fn matches_truth(http: &reqwest::Client, sources: &Sources<'_>, truth: Option<&Value>, payment_id: &str) -> bool {
    difference(http, sources, truth, payment_id).await.is_none()
}

/// How REST's view of `payment_id` differs from its provider's truth, if it does.
async fn difference(
    http: &reqwest::Client,
    sources: &Sources<'_>,
    truth: Option<&Value>,
    payment_id: &str,
) -> Option<String> {
    let Some(truth) = truth else {
        return Some("unknown to the providers".to_owned());
    };
    let Ok(response) = http
        .get(format!("{}/v1/payments/{payment_id}", sources.ingest_url))
        .bearer_auth(sources.token)
        .send()
        .await
    else {
        return Some("REST did not answer".to_owned());
    };
    let Ok(view) = response.json::<Value>().await else {
        return Some("REST answered no JSON".to_owned());
    };
    (view["status"] != truth["status"] || view["amount_minor"] != truth["amount_minor"]).then(|| {
        format!(
            "REST {} {}, provider {} {}",
            view["status"], view["amount_minor"], truth["status"], truth["amount_minor"]
        )
    })
}

/// Counts everything, per phase (`acked[i].phase`), after the run has settled.
/// `phase_of_time` maps a client's gap to its phase.
pub async fn count(
    sources: &Sources<'_>,
    acked: &[Acked],
    timelines: &[Timeline],
    phase_of_time: impl Fn(std::time::Instant) -> usize,
) -> anyhow::Result<BTreeMap<usize, Counts>> {
    let mut rows: BTreeMap<usize, Counts> = BTreeMap::new();
    let phase_of: HashMap<&str, usize> = acked.iter().map(|a| (a.payment_id.as_str(), a.phase)).collect();
    let truth = ground_truth(sources.simulator_url, sources.simulator_token).await?;

    // The inbound history: which commands and deliveries it holds.
    let inbound = read_stream(sources.js, subjects::STREAM_IN).await?;
    let mut commanded: HashSet<String> = HashSet::new();
    let mut delivered: HashSet<String> = HashSet::new();
    for (_, _, fact) in &inbound {
        if let Some(fact_id) = fact["fact_id"].as_str()
            && fact_id.starts_with("cmd:")
            && fact_id.contains(":create:")
            && let Some(payment) = fact["payment_id"].as_str()
        {
            commanded.insert(payment.to_owned());
        }
        delivery_ids(&fact["raw"].to_string(), &mut delivered);
    }

    // The status history: chains per payment.
    let status = read_stream(sources.js, subjects::STREAM_STATUS).await?;
    let mut chains: HashMap<String, Vec<Transition>> = HashMap::new();
    for (seq, subject, payload) in &status {
        if subjects::status_stream_kind(subject) != Some("transition") {
            continue;
        }
        let Some(payment) = payload["payment_id"].as_str() else {
            continue;
        };
        chains.entry(payment.to_owned()).or_default().push(Transition {
            subject: subject.clone(),
            version: payload["version"].as_u64().unwrap_or_default(),
            fact_id: payload["cause"]["fact_id"].as_str().unwrap_or_default().to_owned(),
            seq: *seq,
        });
    }

    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    for command in acked {
        let row = rows.entry(command.phase).or_default();
        let truth_of = truth.get(&command.payment_id);
        let difference = difference(&http, sources, truth_of, &command.payment_id).await;
        let at_truth = difference.is_none();
        // The command, then every webhook the provider had acknowledged.
        let mut missing = usize::from(!commanded.contains(&command.payment_id));
        row.acked += 1;
        if let Some(truth) = truth_of
            && !truth["acked_deliveries"].is_array()
        {
            anyhow::bail!("the simulator's ground truth does not list acknowledged deliveries: {truth}");
        }
        if let Some(deliveries) = truth_of.and_then(|t| t["acked_deliveries"].as_array()) {
            let unique: HashSet<&str> = deliveries.iter().filter_map(Value::as_str).collect();
            row.acked += unique.len();
            missing += unique.iter().filter(|d| !delivered.contains(**d)).count();
        }
        if at_truth {
            row.recovered += missing;
        } else {
            row.lost += missing;
            row.diverged += 1;
            if row.examples.len() < 3 {
                row.examples.push(format!(
                    "{}: {} ({missing} acknowledged inputs missing)",
                    command.payment_id,
                    difference.unwrap_or_default()
                ));
            }
        }
        if let Some(chain) = chains.get(&command.payment_id) {
            let subjects: HashSet<&str> = chain.iter().map(|t| t.subject.as_str()).collect();
            let versions: HashSet<u64> = chain.iter().map(|t| t.version).collect();
            if subjects.len() > 1 || versions.len() < chain.len() {
                row.forked += 1;
                if row.examples.len() < 6 {
                    let links: Vec<String> = chain
                        .iter()
                        .map(|t| format!("v{} seq {} {} ({})", t.version, t.seq, t.fact_id, t.subject))
                        .collect();
                    row.examples
                        .push(format!("{} forked: {}", command.payment_id, links.join(", ")));
                }
            }
            let facts: HashSet<&str> = chain.iter().map(|t| t.fact_id.as_str()).collect();
            row.duplicated += chain.len() - facts.len();
        }
    }

    // Clients: silent breaks, and transitions of acknowledged payments never received.
    let transitions: HashMap<u64, &str> = chains
        .iter()
        .flat_map(|(payment, chain)| chain.iter().map(move |t| (t.seq, payment.as_str())))
        .collect();
    for timeline in timelines {
        for gap in &timeline.silent_gaps {
            rows.entry(phase_of_time(gap.at)).or_default().client_gaps += 1;
        }
        let seen: HashSet<u64> = timeline.frames.iter().map(|f| f.seq).collect();
        let first = timeline.frames.first().map(|f| f.seq).unwrap_or(u64::MAX);
        if timeline.told.is_empty() {
            for (seq, payment) in &transitions {
                if *seq > first
                    && !seen.contains(seq)
                    && let Some(phase) = phase_of.get(payment)
                {
                    rows.entry(*phase).or_default().client_gaps += 1;
                }
            }
        }
    }

    // The ledger: every entry's legs sum to zero per currency.
    let unbalanced: Vec<(String,)> = sqlx::query_as(
        "SELECT payment_id FROM ledger_postings GROUP BY tenant, payment_id, version, currency \
         HAVING sum(amount_minor) <> 0",
    )
    .fetch_all(sources.db)
    .await?;
    for (payment,) in unbalanced {
        rows.entry(phase_of.get(payment.as_str()).copied().unwrap_or(0))
            .or_default()
            .unbalanced += 1;
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_ids_are_found_wherever_they_occur() {
        let mut found = HashSet::new();
        delivery_ids(
            r#"{"headers":{"webhook-id":"msg_0123456789abcdef01234567"},"body":"{\"id\":\"evt_abcdefabcdefabcdefabcdef\"}","x":"evt_short"}"#,
            &mut found,
        );
        let mut found: Vec<_> = found.into_iter().collect();
        found.sort();
        assert_eq!(found, ["evt_abcdefabcdefabcdefabcdef", "msg_0123456789abcdef01234567"]);
    }
}
