//! Telling a redelivered transition from a rewritten one, and following a rewrite.
//!
//! The projection keys every transition by `(tenant, payment, version)`, so a
//! transition whose version is already projected is normally a redelivery or a
//! replay and changes nothing. There are other ways to meet a projected version
//! again: the broker lost the tail of PAYTRACK_STATUS (a corrupted or truncated
//! message block, docs/durability-bitflip.md; or a power loss under the default sync,
//! docs/durability.md) and the reconciler, which sees only the shortened chain,
//! decided the payment's next facts again and wrote versions the projection already
//! holds, with different content; or two appends of one version both landed (a
//! forked chain). Dropping such a transition as a duplicate would leave the
//! projection and the stream disagreeing for good. So a projected version is compared
//! by the fact that caused it: the same fact (at that version or any other of the
//! payment's) is a repeat; another fact raises a `history_diverged` alert (one per
//! rewritten version and fact), and when the rewrite is newer than what the
//! projection shows (a later stream sequence, or decided later) it is the chain the
//! reconciler continues: the projection takes it as its own next version, after
//! everything it recorded (nothing is removed; the ledger moves by the difference,
//! like any transition). A rewrite older than the projection's current version (the
//! losing twin of a fork, met late) is recorded by its alert only.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use paytrack_shared::Status;
use paytrack_shared::envelope::{PaymentTerms, Transition};
use sqlx::{Postgres, Transaction};

/// The alert kind raised when the stream rewrote a projected version.
pub const KIND: &str = "history_diverged";

/// The projection's current version of a payment, as a rewrite is weighed against it.
#[derive(Debug, Clone)]
pub struct Current {
    /// Its status (None: a status this build does not know).
    pub status: Option<Status>,
    /// Its version.
    pub version: i64,
    /// The PAYTRACK_STATUS sequence it was projected from.
    pub seq: i64,
    /// When the reconciler decided it (None: not read yet; read from the timeline
    /// only when a rewrite is weighed, which is rare).
    pub recorded_at: Option<DateTime<Utc>>,
}

/// What a transition of an already projected version is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A redelivery or replay of a projected transition: nothing to do.
    Repeat,
    /// A rewrite older than the projection's current version: alerted, not applied.
    Superseded,
    /// A rewrite the reconciler continues from: projected as the next version.
    Adopt,
}

/// The projected transitions of one batch, by `(tenant, payment, version)`: the
/// cause's fact and the status (those applied earlier in the batch are not in the
/// table yet), and the facts applied per payment.
#[derive(Debug, Default)]
pub struct Projected {
    versions: HashMap<(String, String, i64), (String, String)>,
    facts: HashSet<(String, String, String)>,
}

impl Projected {
    /// Notes a transition applied by this batch as `version`.
    pub fn note(&mut self, key: &(String, String), version: i64, transition: &Transition) {
        self.versions.insert(
            (key.0.clone(), key.1.clone(), version),
            (
                transition.cause.fact_id.to_string(),
                transition.status.as_str().to_owned(),
            ),
        );
        self.facts
            .insert((key.0.clone(), key.1.clone(), transition.cause.fact_id.to_string()));
    }

    /// The fact and status the projection holds for `version` of `key`.
    async fn held(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        key: &(String, String),
        version: i64,
    ) -> Result<Option<(String, String)>, sqlx::Error> {
        if let Some(held) = self.versions.get(&(key.0.clone(), key.1.clone(), version)) {
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

    /// Whether `fact` caused any projected version of `key`.
    async fn applied(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        key: &(String, String),
        fact: &str,
    ) -> Result<bool, sqlx::Error> {
        if self.facts.contains(&(key.0.clone(), key.1.clone(), fact.to_owned())) {
            return Ok(true);
        }
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT version FROM payment_timeline WHERE tenant = $1 AND payment_id = $2 AND fact_id = $3 LIMIT 1",
        )
        .bind(&key.0)
        .bind(&key.1)
        .bind(fact)
        .fetch_optional(&mut **tx)
        .await?;
        Ok(found.is_some())
    }
}

/// Checks a transition whose version is already projected: a repeat when its fact
/// caused a projected version; otherwise the stream rewrote that version, and a
/// `history_diverged` alert is stored in the same transaction, saying whether the
/// rewrite is adopted (newer than `current`, the projection's current version) or
/// superseded.
pub async fn check(
    tx: &mut Transaction<'_, Postgres>,
    projected: &Projected,
    key: &(String, String),
    version: i64,
    status_seq: i64,
    transition: &Transition,
    current: Option<&Current>,
) -> Result<Verdict, sqlx::Error> {
    let Some((held_fact, held_status)) = projected.held(tx, key, version).await? else {
        return Ok(Verdict::Repeat);
    };
    if held_fact == transition.cause.fact_id || projected.applied(tx, key, &transition.cause.fact_id).await? {
        return Ok(Verdict::Repeat);
    }
    let verdict = match current {
        Some(c)
            if status_seq > c.seq
                || decided_at(tx, key, c)
                    .await?
                    .is_some_and(|at| transition.recorded_at > at) =>
        {
            Verdict::Adopt
        }
        _ => Verdict::Superseded,
    };
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
    let outcome = match verdict {
        Verdict::Adopt => "the projection takes the stream's version as its next one (its earlier versions stay \
                           on the timeline); check the payment with its provider"
            .to_owned(),
        _ => format!(
            "the projection keeps {held_status}: the stream's version is older than the projection's current one"
        ),
    };
    let detail = format!(
        "version {version} is projected as {held_status} (fact {held_fact}) but PAYTRACK_STATUS now holds it as \
         {stream_status} (fact {}, sequence {status_seq}): the broker lost or forked transitions; {outcome}",
        transition.cause.fact_id
    );
    let evidence = serde_json::json!({
        "version": version,
        "projected": {"status": held_status, "fact_id": held_fact},
        "stream": {"status": stream_status, "fact_id": transition.cause.fact_id, "status_seq": status_seq},
        "adopted": verdict == Verdict::Adopt,
    })
    .to_string();
    // One alert per rewritten version and fact: a redelivery of the rewritten
    // transition adds nothing. Stored with alert sequence 0: the row is owed to
    // PAYTRACK_ALERT, and `alert_outbox` publishes it after this transaction commits.
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
    Ok(verdict)
}

/// When the reconciler decided `current`, the projection's current version of `key`.
async fn decided_at(
    tx: &mut Transaction<'_, Postgres>,
    key: &(String, String),
    current: &Current,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    if let Some(at) = current.recorded_at {
        return Ok(Some(at));
    }
    sqlx::query_scalar(
        "SELECT recorded_at FROM payment_timeline WHERE tenant = $1 AND payment_id = $2 AND version = $3",
    )
    .bind(&key.0)
    .bind(&key.1)
    .bind(current.version)
    .fetch_optional(&mut **tx)
    .await
}

/// `transition` as the projection's `version`, following its `current` status: how
/// an adopted rewrite continues the projection. A rewrite that begins the payment's
/// history again (the broker lost it, and the reconciler wrote its next fact, often a
/// status-query answer, as a new version 1) carries no create terms: each term it
/// lacks is the one the projection `held`, so adopting it never forgets the amount.
pub fn rebase(transition: &Transition, version: i64, current: Option<&Current>, held: &PaymentTerms) -> Transition {
    Transition {
        version: u64::try_from(version).unwrap_or(transition.version),
        previous_status: current.and_then(|c| c.status).or(transition.previous_status),
        terms: keep_held_terms(&transition.terms, held),
        ..transition.clone()
    }
}

/// `stream`'s terms, each one it lacks taken from `held`.
fn keep_held_terms(stream: &PaymentTerms, held: &PaymentTerms) -> PaymentTerms {
    let or = |a: &Option<String>, b: &Option<String>| a.clone().or_else(|| b.clone());
    PaymentTerms {
        amount_minor: stream.amount_minor.or(held.amount_minor),
        currency: or(&stream.currency, &held.currency),
        rail: or(&stream.rail, &held.rail),
        country: or(&stream.country, &held.country),
        provider: or(&stream.provider, &held.provider),
        provider_ref: or(&stream.provider_ref, &held.provider_ref),
        fee_minor: stream.fee_minor.or(held.fee_minor),
        captured_minor: stream.captured_minor.or(held.captured_minor),
        direction: stream.direction.or(held.direction),
    }
}
