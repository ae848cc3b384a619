//! Telling a redelivered transition from a rewritten one.
//!
//! The projection keys every transition by `(tenant, payment, version)`, so a
//! transition whose version is already projected is normally a redelivery or a
//! replay and changes nothing. There is one other way to meet a projected version
//! again: the broker lost the tail of PAYTRACK_STATUS (a corrupted or truncated
//! message block; docs/durability-bitflip.md), the reconciler, which sees only the
//! shortened chain, decided the payment's next fact again and wrote a version the
//! projection already holds, with different content. Dropping it as a duplicate
//! would leave the projection and the stream disagreeing without anyone knowing. So a
//! projected version is compared by the fact that caused it: the same fact is a
//! redelivery; another fact raises a `history_diverged` alert (one per rewritten
//! version), and the projection keeps its own version until an operator resolves it.

use std::collections::HashMap;

use paytrack_shared::envelope::Transition;
use sqlx::{Postgres, Transaction};

/// The alert kind raised when the stream rewrote a projected version.
pub const KIND: &str = "history_diverged";

/// The projected transitions of one batch, by `(tenant, payment, version)`: the
/// cause's fact and the status (those applied earlier in the batch are not in the
/// table yet).
#[derive(Debug, Default)]
pub struct Projected(HashMap<(String, String, i64), (String, String)>);

impl Projected {
    /// Notes a transition applied by this batch.
    pub fn note(&mut self, key: &(String, String), version: i64, transition: &Transition) {
        self.0.insert(
            (key.0.clone(), key.1.clone(), version),
            (
                transition.cause.fact_id.to_string(),
                transition.status.as_str().to_owned(),
            ),
        );
    }

    /// The fact and status the projection holds for `version` of `key`.
    async fn held(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        key: &(String, String),
        version: i64,
    ) -> Result<Option<(String, String)>, sqlx::Error> {
        if let Some(held) = self.0.get(&(key.0.clone(), key.1.clone(), version)) {
            return Ok(Some(held.clone()));
        }
        sqlx::query_as(
            "SELECT fact_id, status FROM payment_timeline WHERE tenant = $1 AND payment_id = $2 AND version = $3",
        )
        .bind(&key.0)
        .bind(&key.1)
        .bind(version)
        .fetch_optional(&mut **tx)
        .await
    }
}

/// Checks a transition whose version is already projected: nothing to do when it
/// was caused by the same fact (a redelivery); otherwise the stream rewrote that
/// version, and a `history_diverged` alert is stored in the same transaction.
/// Answers whether it diverged.
pub async fn check(
    tx: &mut Transaction<'_, Postgres>,
    projected: &Projected,
    key: &(String, String),
    version: i64,
    status_seq: i64,
    transition: &Transition,
) -> Result<bool, sqlx::Error> {
    let Some((held_fact, held_status)) = projected.held(tx, key, version).await? else {
        return Ok(false);
    };
    if held_fact == transition.cause.fact_id {
        return Ok(false);
    }
    let stream_status = transition.status.as_str();
    tracing::error!(
        tenant = %transition.tenant,
        payment_id = %transition.payment_id,
        trace_id = %transition.trace_id,
        version,
        status_seq,
        projected_status = %held_status,
        stream_status,
        "PAYTRACK_STATUS rewrote a projected version: the broker lost transitions"
    );
    metrics::counter!("paytrack_projector_history_diverged_total").increment(1);
    let detail = format!(
        "version {version} is projected as {held_status} (fact {held_fact}) but PAYTRACK_STATUS now holds it as \
         {stream_status} (fact {}, sequence {status_seq}): the broker lost transitions the projection had; the \
         projection keeps {held_status} until the payment is checked with its provider",
        transition.cause.fact_id
    );
    let evidence = serde_json::json!({
        "version": version,
        "projected": {"status": held_status, "fact_id": held_fact},
        "stream": {"status": stream_status, "fact_id": transition.cause.fact_id, "status_seq": status_seq},
    })
    .to_string();
    // One alert per rewritten version and fact: a redelivery of the rewritten
    // transition adds nothing. Not read from PAYTRACK_ALERT, so no alert sequence.
    sqlx::query(
        "INSERT INTO alerts
           (tenant, alert_id, kind, payment_id, merchant_id, detail, evidence, raised_at, trace_id, alert_seq)
         VALUES ($1, $2, $3, $4, $5, $6, $7, now(), $8, 0)
         ON CONFLICT (tenant, alert_id) DO NOTHING",
    )
    .bind(&key.0)
    .bind(format!("{KIND}:{}:{version}:{}", key.1, transition.cause.fact_id).replace('\0', ""))
    .bind(KIND)
    .bind(&key.1)
    .bind(transition.merchant_id.as_str())
    .bind(detail.replace('\0', "\u{FFFD}"))
    .bind(evidence)
    .bind(&transition.trace_id)
    .execute(&mut **tx)
    .await?;
    Ok(true)
}
