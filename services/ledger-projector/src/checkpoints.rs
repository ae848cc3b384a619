//! The checkpoints each applied version owes, as the `checkpoints` table keeps them:
//! one row per version (its `persisted` checkpoint, and its `ledger_posted` one when
//! its postings are written), written in the batch's transaction, with the sequence
//! the stream stored each at once that is known.
//!
//! A row holds what the checkpoints are built from, not their encoded messages: the
//! subject, message id, payload and `traceparent` follow from the version, so the row
//! stays narrow and the drainer builds the same messages the live loop sent. A row is
//! written once after its insert, when JetStream acknowledges its checkpoints
//! ([`confirm_stored`]); a payment is final when its current version's row has both
//! stored and is terminal on its rail (`paytrack_shared::db::PAYMENT_IS_FINAL`). A
//! success on a reversible rail also keeps when its return window closes
//! (`final_after`); the window scan ([`crate::window`]) then owes its third
//! checkpoint, `return_window_closed`, whose storage makes the row final.

use chrono::{DateTime, SubsecRound, Utc};
use paytrack_shared::envelope::{self, Checkpoint, CheckpointKind, ENVELOPE_VERSION, Transition};
use paytrack_shared::{MerchantId, PaymentId, Status, TenantId, msg_id, subjects};
use sqlx::{Postgres, Transaction};

/// The checkpoints one version owes, and which of them the stream holds.
#[derive(Debug, Clone)]
pub struct Due {
    /// Tenant.
    pub tenant: TenantId,
    /// Merchant (part of the subject).
    pub merchant_id: MerchantId,
    /// Payment.
    pub payment_id: PaymentId,
    /// The version confirmed.
    pub version: u64,
    /// Its status.
    pub status: Status,
    /// Its trace (the checkpoints continue it).
    pub trace_id: String,
    /// When the checkpoints were reached (microseconds, as the row keeps it, so the
    /// drainer's payload is the live one).
    pub recorded_at: DateTime<Utc>,
    /// Whether a `ledger_posted` checkpoint is owed (the postings are written).
    pub ledger_posted: bool,
    /// Whether `ledger_posted` says final.
    pub is_final: bool,
    /// Sequence of the stored `persisted` checkpoint.
    pub persisted_seq: Option<i64>,
    /// Sequence of the stored `ledger_posted` checkpoint.
    pub ledger_posted_seq: Option<i64>,
    /// When a success on a reversible rail turns final by time (its last return
    /// window closes); `None` for every other version.
    pub final_after: Option<DateTime<Utc>>,
    /// Whether the `return_window_closed` checkpoint is owed now (the window scan
    /// found the window closed with the payment still at this version).
    pub window_closed: bool,
    /// Sequence of the stored `return_window_closed` checkpoint.
    pub window_closed_seq: Option<i64>,
}

/// One checkpoint message, ready to publish.
#[derive(Debug, Clone)]
pub struct Message {
    /// Which of the version's checkpoints.
    pub kind: CheckpointKind,
    /// `paytrack.checkpoint.<tenant>.<merchant>.<payment>`.
    pub subject: String,
    /// Its `Nats-Msg-Id`.
    pub msg_id: String,
    /// The encoded envelope.
    pub payload: Vec<u8>,
    /// Trace context.
    pub traceparent: Option<String>,
}

impl Due {
    /// What a newly applied transition owes; `final_after` (from the status model)
    /// counts only once its postings are written.
    pub fn of(t: &Transition, ledger_posted: bool, is_final: bool, final_after: Option<DateTime<Utc>>) -> Due {
        Due {
            tenant: t.tenant.clone(),
            merchant_id: t.merchant_id.clone(),
            payment_id: t.payment_id.clone(),
            version: t.version,
            status: t.status,
            trace_id: t.trace_id.clone(),
            recorded_at: Utc::now().trunc_subsecs(6),
            ledger_posted,
            is_final: ledger_posted && is_final,
            persisted_seq: None,
            ledger_posted_seq: None,
            final_after: final_after.filter(|_| ledger_posted && !is_final),
            window_closed: false,
            window_closed_seq: None,
        }
    }

    /// The checkpoints the stream does not hold yet, in publishing order
    /// (`persisted` first).
    pub fn unstored(&self) -> Vec<Message> {
        let mut out = Vec::with_capacity(2);
        if self.persisted_seq.is_none() {
            out.push(self.message(CheckpointKind::Persisted));
        }
        if self.ledger_posted && self.ledger_posted_seq.is_none() {
            out.push(self.message(CheckpointKind::LedgerPosted));
        }
        if self.window_closed && self.window_closed_seq.is_none() {
            out.push(self.message(CheckpointKind::ReturnWindowClosed));
        }
        out
    }

    /// The trace context each of [`Due::unstored`]'s checkpoints carries, without
    /// encoding them: the projector records a span under each, so the messages'
    /// parent is a real span of the exported trace.
    pub fn traceparents(&self) -> Vec<(CheckpointKind, String)> {
        let mut kinds = vec![CheckpointKind::Persisted];
        if self.ledger_posted {
            kinds.push(CheckpointKind::LedgerPosted);
        }
        if self.window_closed {
            kinds.push(CheckpointKind::ReturnWindowClosed);
        }
        kinds
            .into_iter()
            .filter_map(|kind| traceparent(&self.trace_id, self, kind).map(|t| (kind, t)))
            .collect()
    }

    fn message(&self, kind: CheckpointKind) -> Message {
        let is_final = match kind {
            CheckpointKind::Persisted => false,
            CheckpointKind::LedgerPosted => self.is_final,
            CheckpointKind::ReturnWindowClosed => true,
        };
        let checkpoint = Checkpoint {
            v: ENVELOPE_VERSION,
            checkpoint: kind,
            tenant: self.tenant.clone(),
            merchant_id: self.merchant_id.clone(),
            payment_id: self.payment_id.clone(),
            version: self.version,
            status: self.status,
            recorded_at: self.recorded_at,
            trace_id: self.trace_id.clone(),
            is_final,
        };
        Message {
            kind,
            subject: subjects::checkpoint(&self.tenant, &self.merchant_id, &self.payment_id),
            msg_id: msg_id::checkpoint(&self.tenant, &self.payment_id, self.version, kind.as_str()),
            payload: envelope::encode(&checkpoint).to_vec(),
            traceparent: traceparent(&self.trace_id, self, kind),
        }
    }
}

/// A W3C `traceparent` continuing the transition's trace (its `trace_id`), with a
/// parent id derived from the checkpoint, so a checkpoint published by a batch (or by
/// the drainer, or replayed) stays in the journey's trace without a span per message.
fn traceparent(trace_id: &str, due: &Due, kind: CheckpointKind) -> Option<String> {
    use std::hash::{Hash, Hasher};
    let valid =
        trace_id.len() == 32 && trace_id.bytes().all(|b| b.is_ascii_hexdigit()) && trace_id.bytes().any(|b| b != b'0');
    if !valid {
        return None;
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (due.tenant.as_str(), due.payment_id.as_str(), due.version, kind.as_str()).hash(&mut hasher);
    let parent = hasher.finish().max(1);
    Some(format!("00-{}-{parent:016x}-01", trace_id.to_ascii_lowercase()))
}

/// Checkpoint keys with a stream sequence each, as columns for `unnest`.
#[derive(Debug, Default)]
pub struct Stored {
    tenant: Vec<String>,
    payment_id: Vec<String>,
    version: Vec<i64>,
    kind: Vec<String>,
    seq: Vec<i64>,
}

impl Stored {
    /// Records that the stream holds `kind` of `(tenant, payment, version)` at `seq`.
    pub fn push(&mut self, tenant: &str, payment_id: &str, version: i64, kind: CheckpointKind, seq: i64) {
        self.tenant.push(tenant.to_owned());
        self.payment_id.push(payment_id.to_owned());
        self.version.push(version);
        self.kind.push(kind.as_str().to_owned());
        self.seq.push(seq);
    }

    /// How many checkpoints.
    pub fn len(&self) -> usize {
        self.tenant.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.tenant.is_empty()
    }
}

/// Writes the rows of newly applied versions (a replayed version keeps its row).
pub async fn insert(tx: &mut Transaction<'_, Postgres>, due: &[Due]) -> Result<(), sqlx::Error> {
    if due.is_empty() {
        return Ok(());
    }
    #[allow(clippy::type_complexity)] // the columns of one INSERT, bound in order
    let mut c: (
        Vec<&str>,
        Vec<&str>,
        Vec<i64>,
        Vec<&str>,
        Vec<&str>,
        Vec<&str>,
        Vec<DateTime<Utc>>,
        Vec<bool>,
        Vec<bool>,
        Vec<Option<DateTime<Utc>>>,
    ) = Default::default();
    for d in due {
        c.0.push(d.tenant.as_str());
        c.1.push(d.payment_id.as_str());
        c.2.push(i64::try_from(d.version).unwrap_or(i64::MAX));
        c.3.push(d.merchant_id.as_str());
        c.4.push(d.status.as_str());
        c.5.push(d.trace_id.as_str());
        c.6.push(d.recorded_at);
        c.7.push(d.ledger_posted);
        c.8.push(d.is_final);
        c.9.push(d.final_after);
    }
    sqlx::query(
        "INSERT INTO checkpoints
           (tenant, payment_id, version, merchant_id, status, trace_id, created_at, ledger_posted_due, is_final,
            final_after)
         SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[],
           $7::timestamptz[], $8::bool[], $9::bool[], $10::timestamptz[])
         ON CONFLICT (tenant, payment_id, version) DO NOTHING",
    )
    .bind(&c.0)
    .bind(&c.1)
    .bind(&c.2)
    .bind(&c.3)
    .bind(&c.4)
    .bind(&c.5)
    .bind(&c.6)
    .bind(&c.7)
    .bind(&c.8)
    .bind(&c.9)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Records that the stream stored these checkpoints (JetStream acknowledged them, or
/// a rebuild read them); a payment whose current version's row then has both, and
/// says final, reads as final. A stored `return_window_closed` checkpoint makes its
/// row final. A checkpoint already recorded keeps its first sequence; `published_at`
/// is set once every checkpoint the version owes is stored, which stops the drainer.
///
/// Each row is found by one index probe and locked (in key order, so two confirms
/// never deadlock), then updated by its row id: joined by key instead, the planner
/// hash-joined a seq scan of the whole table for every handful of acks (1.5 ms a call
/// at 14k rows, the first PostgreSQL cost at 300 webhooks/s). The lock makes the row
/// id the row's latest version, so a concurrent confirm of the same row is not lost.
pub async fn confirm_stored(tx: &mut Transaction<'_, Postgres>, stored: &Stored) -> Result<(), sqlx::Error> {
    if stored.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE checkpoints c SET
           persisted_seq = COALESCE(c.persisted_seq, u.ps),
           ledger_posted_seq = COALESCE(c.ledger_posted_seq, u.ls),
           window_closed_seq = COALESCE(c.window_closed_seq, u.ws),
           is_final = c.is_final OR u.ws IS NOT NULL,
           published_at = CASE
             WHEN COALESCE(c.persisted_seq, u.ps) IS NOT NULL
              AND (NOT c.ledger_posted_due OR COALESCE(c.ledger_posted_seq, u.ls) IS NOT NULL)
             THEN COALESCE(c.published_at, now()) END
         FROM (
           SELECT r.row_id, g.ps, g.ls, g.ws FROM (
             SELECT t, p, v, min(seq) FILTER (WHERE k = 'persisted') AS ps,
               min(seq) FILTER (WHERE k = 'ledger_posted') AS ls,
               min(seq) FILTER (WHERE k = 'return_window_closed') AS ws
             FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::bigint[]) AS x(t, p, v, k, seq)
             GROUP BY t, p, v ORDER BY t, p, v
           ) g
           CROSS JOIN LATERAL (
             SELECT ctid AS row_id FROM checkpoints
             WHERE tenant = g.t AND payment_id = g.p AND version = g.v LIMIT 1 FOR UPDATE
           ) r
         ) u
         WHERE c.ctid = u.row_id
           AND (c.persisted_seq IS NULL OR (c.ledger_posted_due AND c.ledger_posted_seq IS NULL)
                OR (u.ws IS NOT NULL AND c.window_closed_seq IS NULL))",
    )
    .bind(&stored.tenant)
    .bind(&stored.payment_id)
    .bind(&stored.version)
    .bind(&stored.kind)
    .bind(&stored.seq)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A row as read back for the drainer.
#[derive(sqlx::FromRow)]
struct Row {
    tenant: String,
    payment_id: String,
    version: i64,
    merchant_id: String,
    status: String,
    trace_id: String,
    created_at: DateTime<Utc>,
    ledger_posted_due: bool,
    is_final: bool,
    persisted_seq: Option<i64>,
    ledger_posted_seq: Option<i64>,
    final_after: Option<DateTime<Utc>>,
    window_closed_seq: Option<i64>,
}

/// The columns a [`Row`] is read from.
const ROW_COLUMNS: &str = "c.tenant, c.payment_id, c.version, c.merchant_id, c.status, c.trace_id, c.created_at,
    c.ledger_posted_due, c.is_final, c.persisted_seq, c.ledger_posted_seq, c.final_after, c.window_closed_seq";

/// Rows whose checkpoints are not all stored `older_than_secs` after they were made
/// due (a crash or a NATS outage after the commit), oldest first, at most `limit`.
pub async fn unpublished(db: &sqlx::PgPool, older_than_secs: f64, limit: i64) -> Result<Vec<Due>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT {ROW_COLUMNS} FROM checkpoints c
         WHERE c.published_at IS NULL AND c.created_at < now() - make_interval(secs => $1)
         ORDER BY c.created_at, c.tenant, c.payment_id, c.version LIMIT $2"
    ))
    .bind(older_than_secs)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().filter_map(due_of).collect())
}

/// Versions whose last return window has closed, at most `limit`, oldest window
/// first: posted and persisted, not final yet, and still the payment's current
/// version (a later transition, a return inside the window or an investigation,
/// leaves the success behind). Each owes its `return_window_closed` checkpoint.
pub async fn windows_closed(db: &sqlx::PgPool, limit: i64) -> Result<Vec<Due>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT {ROW_COLUMNS} FROM checkpoints c
         JOIN payments p ON p.tenant = c.tenant AND p.payment_id = c.payment_id AND p.version = c.version
         WHERE c.final_after IS NOT NULL AND NOT c.is_final AND c.final_after <= now()
           AND c.persisted_seq IS NOT NULL AND c.ledger_posted_seq IS NOT NULL
         ORDER BY c.final_after LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(due_of)
        .map(|mut due| {
            due.window_closed = true;
            due
        })
        .collect())
}

/// A row read back as what it owes; a row the projector could not have written (an
/// id or status that does not parse) is skipped with a warning, never published.
fn due_of(row: Row) -> Option<Due> {
    let parsed = (|| {
        Some(Due {
            tenant: TenantId::new(&row.tenant).ok()?,
            merchant_id: MerchantId::new(&row.merchant_id).ok()?,
            payment_id: PaymentId::new(&row.payment_id).ok()?,
            version: u64::try_from(row.version).ok()?,
            status: Status::parse(&row.status)?,
            trace_id: row.trace_id.clone(),
            recorded_at: row.created_at,
            ledger_posted: row.ledger_posted_due,
            is_final: row.is_final,
            persisted_seq: row.persisted_seq,
            ledger_posted_seq: row.ledger_posted_seq,
            final_after: row.final_after,
            window_closed: false,
            window_closed_seq: row.window_closed_seq,
        })
    })();
    if parsed.is_none() {
        tracing::warn!(tenant = %row.tenant, payment_id = %row.payment_id, version = row.version, "a checkpoints row that does not parse; not published");
    }
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn due(ledger_posted: bool, is_final: bool) -> Due {
        Due {
            tenant: TenantId::new("t1").expect("tenant"),
            merchant_id: MerchantId::new("m1").expect("merchant"),
            payment_id: PaymentId::new("pay_1").expect("payment"),
            version: 3,
            status: Status::Succeeded,
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".to_owned(),
            recorded_at: Utc::now().trunc_subsecs(6),
            ledger_posted,
            is_final,
            persisted_seq: None,
            ledger_posted_seq: None,
            final_after: None,
            window_closed: false,
            window_closed_seq: None,
        }
    }

    #[test]
    fn a_closed_return_window_owes_one_final_checkpoint_once() {
        let mut d = due(true, false);
        d.persisted_seq = Some(10);
        d.ledger_posted_seq = Some(11);
        assert!(d.unstored().is_empty(), "nothing owed before the window scan");
        d.window_closed = true;
        let messages = d.unstored();
        let kinds: Vec<_> = messages.iter().map(|m| m.kind).collect();
        assert_eq!(kinds, [CheckpointKind::ReturnWindowClosed]);
        let decoded: Checkpoint = envelope::decode(&messages[0].payload).expect("decodes");
        assert!(decoded.is_final, "the window checkpoint says final");
        assert_eq!(messages[0].msg_id, "t1:pay_1:3:return_window_closed");
        d.window_closed_seq = Some(12);
        assert!(d.unstored().is_empty(), "stored once, never owed again");
    }

    #[test]
    fn a_version_owes_persisted_then_ledger_posted_and_only_final_says_final() {
        let messages = due(true, true).unstored();
        let kinds: Vec<_> = messages.iter().map(|m| m.kind).collect();
        assert_eq!(kinds, [CheckpointKind::Persisted, CheckpointKind::LedgerPosted]);
        let decoded: Vec<Checkpoint> = messages
            .iter()
            .map(|m| envelope::decode(&m.payload).expect("decodes"))
            .collect();
        assert!(!decoded[0].is_final && decoded[1].is_final);
        assert_eq!(messages[0].subject, "paytrack.checkpoint.t1.m1.pay_1");
        assert_eq!(messages[1].msg_id, "t1:pay_1:3:ledger_posted");
        assert!(
            messages[0]
                .traceparent
                .as_deref()
                .is_some_and(|t| t.starts_with("00-4bf92f35"))
        );
        assert_ne!(messages[0].traceparent, messages[1].traceparent);
    }

    #[test]
    fn only_what_the_stream_lacks_is_published_again() {
        let mut d = due(true, false);
        d.persisted_seq = Some(10);
        let kinds: Vec<_> = d.unstored().iter().map(|m| m.kind).collect();
        assert_eq!(kinds, [CheckpointKind::LedgerPosted]);
        d.ledger_posted_seq = Some(11);
        assert!(d.unstored().is_empty());
        let unposted = due(false, false);
        let kinds: Vec<_> = unposted.unstored().iter().map(|m| m.kind).collect();
        assert_eq!(kinds, [CheckpointKind::Persisted], "no postings, no ledger_posted");
    }
}
