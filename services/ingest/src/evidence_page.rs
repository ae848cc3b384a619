//! The raw facts of an evidence pack, a page at a time: a payment may hold any number
//! of facts of up to `max_body_bytes` each, so one response (and ingest's memory for
//! it) holds at most [`PAGE_BYTES`] of raw bodies (always at least one fact), and the
//! caller follows `facts_next` for the rest.

use paytrack_shared::{PaymentId, TenantId};
use sqlx::PgPool;

use crate::error::ApiError;
use crate::payments::FactEvidence;

/// Most raw body bytes in one page of facts (a page past it ends before the fact
/// that would cross it, unless that fact is the page's first).
pub const PAGE_BYTES: i64 = 1024 * 1024;
/// Most facts in one page, whatever their size.
pub const PAGE_FACTS: i64 = 500;

/// One page of a payment's facts, in PAYTRACK_IN order.
pub struct FactsPage {
    /// The facts, each with its raw body.
    pub facts: Vec<FactEvidence>,
    /// The `inbound_seq` to ask after for the next page; None on the last one.
    pub next: Option<i64>,
}

/// Parses `facts_after` (the previous page's `facts_next`): 400 unless a sequence.
pub fn parse_after(raw: Option<&str>) -> Result<i64, ApiError> {
    match raw {
        None => Ok(0),
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|seq| *seq >= 0)
            .ok_or_else(|| ApiError::Invalid("facts_after must be a fact's inbound_seq (facts_next)".into())),
    }
}

/// The facts of `payment` after `after`, within the page budget. Sizes are read
/// first (PostgreSQL reports a stored body's length without reading it), then only
/// the bodies that fit.
pub async fn facts_after(
    db: &PgPool,
    tenant: &TenantId,
    payment: &PaymentId,
    after: i64,
) -> Result<FactsPage, ApiError> {
    let sizes: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT inbound_seq, octet_length(raw_body)::bigint FROM inbound_facts
         WHERE tenant = $1 AND payment_id = $2 AND inbound_seq > $3
         ORDER BY inbound_seq LIMIT $4",
    )
    .bind(tenant.as_str())
    .bind(payment.as_str())
    .bind(after)
    .bind(PAGE_FACTS + 1)
    .fetch_all(db)
    .await?;
    let (last, more) = page_end(&sizes);
    let Some(last) = last else {
        return Ok(FactsPage {
            facts: Vec::new(),
            next: None,
        });
    };
    let facts = sqlx::query_as::<_, FactEvidence>(
        "SELECT f.fact_id, f.inbound_seq, f.source, f.raw_headers, f.raw_body, f.received_at,
                o.outcome, o.reason AS outcome_reason, o.superseded_by
         FROM inbound_facts f
         LEFT JOIN fact_outcomes o
           ON o.tenant = f.tenant AND o.payment_id = f.payment_id AND o.inbound_seq = f.inbound_seq
         WHERE f.tenant = $1 AND f.payment_id = $2 AND f.inbound_seq > $3 AND f.inbound_seq <= $4
         ORDER BY f.inbound_seq",
    )
    .bind(tenant.as_str())
    .bind(payment.as_str())
    .bind(after)
    .bind(last)
    .fetch_all(db)
    .await?;
    Ok(FactsPage {
        facts,
        next: more.then_some(last),
    })
}

/// Where a page of facts of these `(inbound_seq, body bytes)` ends: the last
/// sequence in it (None: no facts), and whether facts remain after it.
fn page_end(sizes: &[(i64, i64)]) -> (Option<i64>, bool) {
    let mut total = 0;
    let mut last = None;
    for (n, (seq, bytes)) in sizes.iter().enumerate() {
        total += bytes;
        if n as i64 == PAGE_FACTS || (n > 0 && total > PAGE_BYTES) {
            return (last, true);
        }
        last = Some(*seq);
    }
    (last, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_holds_at_least_one_fact_and_at_most_the_budget() {
        assert_eq!(page_end(&[]), (None, false));
        // One fact over the budget still makes a page (else the cursor never moves).
        assert_eq!(page_end(&[(3, PAGE_BYTES * 2), (5, 1)]), (Some(3), true));
        let half = PAGE_BYTES / 2;
        assert_eq!(page_end(&[(1, half), (2, half), (3, 1)]), (Some(2), true));
        assert_eq!(page_end(&[(1, half), (2, half)]), (Some(2), false));
        let many: Vec<(i64, i64)> = (1..=PAGE_FACTS + 1).map(|s| (s, 0)).collect();
        assert_eq!(page_end(&many), (Some(PAGE_FACTS), true));
        assert!(parse_after(Some("x")).is_err() && parse_after(Some("-1")).is_err());
        assert_eq!(parse_after(Some("7")).unwrap(), 7);
    }
}
