//! Applying a batch of PAYTRACK_STATUS messages (transitions; checkpoints too when a
//! rebuild replays the stream) in ONE database transaction: timeline, current state,
//! journal entries and postings, the checkpoints they make due (an outbox), the
//! checkpoints read, finality, and the instance's progress.
//!
//! Exactly once: every row is keyed by `(tenant, payment, version)` and current state
//! moves only to the next version, so a batch redelivered after a crash changes
//! nothing. Order per payment: a transition is applied only on top of its previous
//! version (`version = current + 1`); one that arrives before its predecessor (two
//! instances share the consumer, or a redelivery) is deferred and redelivered. The
//! payments of a batch are locked (advisory, in key order) for the transaction, so two
//! instances never interleave on one payment.
//!
//! Finality: a transition makes `persisted` due, and `ledger_posted` once its postings
//! are written; the `ledger_posted` checkpoint carries `final` = the status is terminal
//! on the payment's rail (a `checkpoints` row per version, [`crate::checkpoints`]). A
//! payment reads as `final` only once BOTH checkpoints of its current version are
//! stored in the stream (JetStream acknowledged them, [`crate::outbox`], or a rebuild
//! read them), so a client never sees `final` before the chain exists.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use paytrack_shared::envelope::{self, Checkpoint, PaymentTerms, Transition};
use paytrack_shared::money::Amounts;
use paytrack_shared::{Status, StatusModel, subjects};
use sqlx::{PgPool, Postgres, Transaction};

use crate::checkpoints::{self, Due, Stored};
use crate::ledger::{self, Posting};

/// One message of PAYTRACK_STATUS, decoded.
#[derive(Debug, Clone)]
pub enum Item {
    /// A canonical transition.
    Transition(Box<Transition>),
    /// A checkpoint (read back).
    Checkpoint(Checkpoint),
}

impl Item {
    /// Decodes a PAYTRACK_STATUS message by its subject.
    pub fn decode(subject: &str, payload: &[u8]) -> Result<Item, envelope::EnvelopeError> {
        if paytrack_shared::subjects::status_stream_kind(subject) == Some("checkpoint") {
            Ok(Item::Checkpoint(envelope::decode(payload)?))
        } else {
            Ok(Item::Transition(Box::new(envelope::decode(payload)?)))
        }
    }

    /// The payment the message is about: `(tenant, payment)`.
    pub fn key(&self) -> (String, String) {
        match self {
            Item::Transition(t) => (t.tenant.to_string(), t.payment_id.to_string()),
            Item::Checkpoint(c) => (c.tenant.to_string(), c.payment_id.to_string()),
        }
    }
}

/// What a batch did with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Applied now.
    New,
    /// Already in the projection (a redelivery or replay): nothing changed.
    Duplicate,
    /// Its predecessor version is not applied yet: deliver it again later.
    Deferred,
    /// A checkpoint read back.
    Observed,
}

/// The result of a batch: per message (in input order) what it did, and the
/// checkpoints to publish after commit.
#[derive(Debug, Default)]
pub struct BatchResult {
    /// Per input item.
    pub applied: Vec<Applied>,
    /// The checkpoints of the versions applied, in the order to publish them.
    pub due: Vec<Due>,
}

/// Where the batch was read: the stream incarnation and who applied it.
#[derive(Debug, Clone)]
pub struct Origin {
    /// PAYTRACK_STATUS epoch.
    pub epoch: String,
    /// The projector instance (progress is kept per instance).
    pub instance: String,
}

#[derive(Debug, Clone, Default)]
struct State {
    version: i64,
    ledger_minor: i64,
    /// The amounts of the current version (None: none recorded yet).
    amounts: Option<Amounts>,
    /// When the money was captured (None: nothing captured).
    captured_at: Option<DateTime<Utc>>,
    /// The current version's status, stream sequence and decision time (None for a
    /// payment not projected yet): what a rewritten version is weighed against.
    current: Option<crate::divergence::Current>,
    /// The payment's projected terms (amount, currency, rail, …): what an adopted
    /// rewrite that lacks them keeps.
    terms: PaymentTerms,
}

#[derive(Debug, Clone)]
struct PaymentRow {
    tenant: String,
    payment_id: String,
    merchant_id: String,
    status: String,
    version: i64,
    seq: i64,
    trace_id: String,
    occurred_at: DateTime<Utc>,
    terms: PaymentTerms,
    ledger_minor: i64,
    amounts: Option<String>,
    captured_at: Option<DateTime<Utc>>,
    at_risk_until: Option<DateTime<Utc>>,
}

/// Columns of a bulk insert, one vector per column.
#[derive(Default)]
struct Timeline {
    tenant: Vec<String>,
    payment_id: Vec<String>,
    version: Vec<i64>,
    status: Vec<String>,
    previous_status: Vec<Option<String>>,
    seq: Vec<i64>,
    fact_id: Vec<String>,
    source: Vec<String>,
    provider_event_id: Vec<Option<String>>,
    rule: Vec<String>,
    inbound_seq: Vec<i64>,
    trace_id: Vec<String>,
    occurred_at: Vec<DateTime<Utc>>,
    recorded_at: Vec<DateTime<Utc>>,
    provider_ref: Vec<Option<String>>,
    amounts: Vec<Option<String>>,
    movements: Vec<Option<String>>,
}

#[derive(Default)]
struct Journal {
    tenant: Vec<String>,
    payment_id: Vec<String>,
    version: Vec<i64>,
    kind: Vec<String>,
    status: Vec<String>,
    seq: Vec<i64>,
    trace_id: Vec<String>,
    occurred_at: Vec<DateTime<Utc>>,
}

#[derive(Default)]
struct Postings {
    tenant: Vec<String>,
    payment_id: Vec<String>,
    version: Vec<i64>,
    leg: Vec<i32>,
    account: Vec<String>,
    currency: Vec<String>,
    amount: Vec<i64>,
}

/// Why a batch could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// A number does not fit BIGINT (poison).
    #[error("a value out of range: {0}")]
    Range(&'static str),
    /// The database failed or refused.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// Applying panicked (poison: the same data panics again).
    #[error(transparent)]
    Panicked(#[from] paytrack_nats::Panicked),
}

fn int(v: u64, what: &'static str) -> Result<i64, BatchError> {
    i64::try_from(v).map_err(|_| BatchError::Range(what))
}

/// Applies `items` (with their stream sequences) in one transaction.
pub async fn apply_batch(db: &PgPool, origin: &Origin, items: &[(u64, Item)]) -> Result<BatchResult, BatchError> {
    let mut tx = db.begin().await?;
    let result = apply_in(&mut tx, origin, items).await?;
    tx.commit().await?;
    Ok(result)
}

async fn apply_in(
    tx: &mut Transaction<'_, Postgres>,
    origin: &Origin,
    items: &[(u64, Item)],
) -> Result<BatchResult, BatchError> {
    let keys: BTreeSet<(String, String)> = items.iter().map(|(_, i)| i.key()).collect();
    let (tenants, payments): (Vec<String>, Vec<String>) = keys.iter().cloned().unzip();
    // Lock the batch's payments in key order: two instances never interleave on one
    // payment, and never deadlock.
    sqlx::query(
        "SELECT pg_advisory_xact_lock(k) FROM (
           SELECT DISTINCT hashtextextended(t || '/' || p, 17) AS k FROM unnest($1::text[], $2::text[]) AS u(t, p)
         ) s ORDER BY k",
    )
    .bind(&tenants)
    .bind(&payments)
    .execute(&mut **tx)
    .await?;
    type Row = (
        String,
        String,
        i64,
        i64,
        Option<String>,
        Option<DateTime<Utc>>,
        String,
        i64,
        Option<i64>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let current: Vec<Row> = sqlx::query_as(
        // One index probe per payment, whatever the planner thinks of the table's size:
        // a hash join over a seq scan of `payments` costs each batch the whole table.
        "SELECT u.t, u.id, p.version, p.ledger_minor, p.amounts::text, p.captured_at, p.status, p.status_seq,
                p.amount_minor, p.currency, p.rail, p.country, p.provider, p.provider_ref
         FROM unnest($1::text[], $2::text[]) AS u(t, id)
         CROSS JOIN LATERAL (
           SELECT version, ledger_minor, amounts, captured_at, status, status_seq, amount_minor, currency, rail,
                  country, provider, provider_ref FROM payments
            WHERE tenant = u.t AND payment_id = u.id LIMIT 1
         ) p",
    )
    .bind(&tenants)
    .bind(&payments)
    .fetch_all(&mut **tx)
    .await?;
    let mut state: HashMap<(String, String), State> = current
        .into_iter()
        .map(
            |(
                t,
                p,
                version,
                ledger_minor,
                amounts,
                captured_at,
                status,
                status_seq,
                amount_minor,
                currency,
                rail,
                country,
                provider,
                provider_ref,
            )| {
                let amounts = amounts.and_then(|a| serde_json::from_str(&a).ok());
                (
                    (t, p),
                    State {
                        version,
                        ledger_minor,
                        amounts,
                        captured_at,
                        current: Some(crate::divergence::Current {
                            status: Status::parse(&status),
                            version,
                            seq: status_seq,
                            recorded_at: None,
                        }),
                        terms: PaymentTerms {
                            amount_minor,
                            currency,
                            rail,
                            country,
                            provider,
                            provider_ref,
                            ..PaymentTerms::default()
                        },
                    },
                )
            },
        )
        .collect();

    // The payments the projection held before this batch (the lock above keeps it so
    // until commit): every other payment of the batch is inserted, never upserted.
    let existing: BTreeSet<(String, String)> = state.keys().cloned().collect();
    let model = StatusModel::get();
    let mut result = BatchResult::default();
    let mut timeline = Timeline::default();
    let mut journal = Journal::default();
    let mut postings = Postings::default();
    let mut accounts: BTreeMap<(String, String, String), &'static str> = BTreeMap::new();
    let mut rows: BTreeMap<(String, String), PaymentRow> = BTreeMap::new();
    let mut observed = Stored::default();
    let mut max_seq = 0i64;
    let mut projected = crate::divergence::Projected::default();

    for (seq, item) in items {
        let seq = int(*seq, "stream sequence")?;
        max_seq = max_seq.max(seq);
        let t = match item {
            Item::Checkpoint(c) => {
                observed.push(
                    c.tenant.as_str(),
                    c.payment_id.as_str(),
                    int(c.version, "version")?,
                    c.checkpoint,
                    seq,
                );
                result.applied.push(Applied::Observed);
                continue;
            }
            Item::Transition(t) => t,
        };
        let key = item.key();
        let mut version = int(t.version, "version")?;
        let known = state.get(&key).cloned().unwrap_or_default();
        let rebased;
        let mut t: &Transition = t;
        if version <= known.version {
            // A redelivery, unless the stream rewrote the version (divergence.rs): then
            // its new chain, when it is the one the reconciler continues, becomes the
            // projection's next version.
            match crate::divergence::check(tx, &projected, &key, version, seq, t, known.current.as_ref()).await? {
                crate::divergence::Verdict::Repeat | crate::divergence::Verdict::Superseded => {
                    result.applied.push(Applied::Duplicate);
                    continue;
                }
                crate::divergence::Verdict::Adopt => {
                    version = known.version + 1;
                    rebased = crate::divergence::rebase(t, version, known.current.as_ref(), &known.terms);
                    t = &rebased;
                }
            }
        }
        if version != known.version + 1 {
            result.applied.push(Applied::Deferred);
            continue;
        }
        let merchant = t.merchant_id.to_string();
        let posting = match &t.amounts {
            Some(after) => {
                // A payment projected before amounts existed: what it recognised is
                // what it had captured.
                let before = known.amounts.clone().unwrap_or_else(|| {
                    Amounts {
                        authorised_minor: known.ledger_minor,
                        captured_minor: known.ledger_minor,
                        ..Amounts::default()
                    }
                    .settle()
                });
                let resolution = t.previous_status == Some(Status::InvestigationRequired);
                ledger::movement_posting(&before, after, known.ledger_minor, resolution, &merchant, &t.terms)
            }
            None => ledger::posting(t.status, t.previous_status, known.ledger_minor, &merchant, &t.terms),
        };
        let (ledger_minor, posted) = match posting {
            Posting::Nothing => (known.ledger_minor, true),
            Posting::Unpostable => {
                tracing::warn!(
                    tenant = %t.tenant,
                    payment_id = %t.payment_id,
                    version,
                    status = %t.status,
                    "money moved but the amount or currency is unknown: not posted, never final"
                );
                (known.ledger_minor, false)
            }
            Posting::Entry { entry, ledger_minor } => {
                journal.tenant.push(key.0.clone());
                journal.payment_id.push(key.1.clone());
                journal.version.push(version);
                journal.kind.push(entry.kind.to_owned());
                journal.status.push(t.status.as_str().to_owned());
                journal.seq.push(seq);
                journal.trace_id.push(t.trace_id.clone());
                journal.occurred_at.push(t.occurred_at);
                for (leg, l) in entry.legs.iter().enumerate() {
                    accounts.insert(
                        (key.0.clone(), l.account.clone(), entry.currency.clone()),
                        l.kind.as_str(),
                    );
                    postings.tenant.push(key.0.clone());
                    postings.payment_id.push(key.1.clone());
                    postings.version.push(version);
                    postings.leg.push(i32::try_from(leg).unwrap_or(i32::MAX));
                    postings.account.push(l.account.clone());
                    postings.currency.push(entry.currency.clone());
                    postings.amount.push(l.amount_minor);
                }
                (ledger_minor, true)
            }
        };
        projected.note(&key, version, t);
        timeline.tenant.push(key.0.clone());
        timeline.payment_id.push(key.1.clone());
        timeline.version.push(version);
        timeline.status.push(t.status.as_str().to_owned());
        timeline
            .previous_status
            .push(t.previous_status.map(|s| s.as_str().to_owned()));
        timeline.seq.push(seq);
        timeline.fact_id.push(t.cause.fact_id.to_string());
        timeline.source.push(t.cause.source.clone());
        timeline.provider_event_id.push(t.cause.provider_event_id.clone());
        timeline.rule.push(t.cause.rule.clone());
        timeline.inbound_seq.push(int(t.cause.inbound_seq, "inbound sequence")?);
        timeline.trace_id.push(t.trace_id.clone());
        timeline.occurred_at.push(t.occurred_at);
        timeline.recorded_at.push(t.recorded_at);
        timeline.provider_ref.push(t.terms.provider_ref.clone());
        timeline.amounts.push(t.amounts.as_ref().map(envelope_json));
        timeline
            .movements
            .push((!t.movements.is_empty()).then(|| envelope_json(&t.movements)));

        let rail = t.terms.rail.as_deref();
        let captured_at = match &t.amounts {
            Some(a) if a.captured_minor <= 0 => None,
            Some(_) => known.captured_at.or(Some(t.occurred_at)),
            None => known.captured_at,
        };
        let at_risk_until = captured_at.and_then(|at| model.rail(rail).money_windows.at_risk_until(at));
        let is_final = model.is_terminal(t.status, rail);
        let final_after = model.final_after(t.status, rail, t.occurred_at);
        result.due.push(Due::of(t, posted, is_final, final_after));
        rows.insert(
            key.clone(),
            PaymentRow {
                tenant: key.0.clone(),
                payment_id: key.1.clone(),
                merchant_id: merchant,
                status: t.status.as_str().to_owned(),
                version,
                seq,
                trace_id: t.trace_id.clone(),
                occurred_at: t.occurred_at,
                terms: t.terms.clone(),
                ledger_minor,
                amounts: t.amounts.as_ref().map(envelope_json),
                captured_at,
                at_risk_until,
            },
        );
        state.insert(
            key,
            State {
                version,
                ledger_minor,
                amounts: t.amounts.clone().or(known.amounts),
                captured_at,
                current: Some(crate::divergence::Current {
                    status: Some(t.status),
                    version,
                    seq,
                    recorded_at: Some(t.recorded_at),
                }),
                terms: t.terms.clone(),
            },
        );
        result.applied.push(Applied::New);
    }

    write_timeline(tx, &timeline, &origin.epoch).await?;
    let (first_seen, known) = first_seen_and_known(&rows, &existing);
    write_payments(tx, first_seen, PaymentWrite::Insert, &origin.epoch).await?;
    write_payments(tx, known, PaymentWrite::Update, &origin.epoch).await?;
    write_ledger(tx, &accounts, &journal, &postings).await?;
    checkpoints::insert(tx, &result.due).await?;
    // Checkpoints read from the stream (a rebuild) are stored ones, and only a stored
    // checkpoint can make a payment final (a new version never is).
    checkpoints::confirm_stored(tx, &observed).await?;
    sqlx::query(
        "INSERT INTO projector_progress (instance, stream, epoch, max_seq, applied) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (instance, stream, epoch) DO UPDATE SET
           max_seq = GREATEST(projector_progress.max_seq, EXCLUDED.max_seq),
           applied = projector_progress.applied + EXCLUDED.applied, updated_at = now()",
    )
    .bind(&origin.instance)
    .bind(subjects::STREAM_STATUS)
    .bind(&origin.epoch)
    .bind(max_seq)
    .bind(i64::try_from(result.applied.iter().filter(|a| **a == Applied::New).count()).unwrap_or(i64::MAX))
    .execute(&mut **tx)
    .await?;
    Ok(result)
}

/// A value as JSON text, for a `jsonb` column (these plain types always encode).
fn envelope_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

async fn write_timeline(tx: &mut Transaction<'_, Postgres>, t: &Timeline, epoch: &str) -> Result<(), BatchError> {
    if t.tenant.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO payment_timeline
           (tenant, payment_id, version, status, previous_status, status_seq, fact_id, source,
            provider_event_id, rule, inbound_seq, trace_id, occurred_at, recorded_at, provider_ref, status_epoch,
            amounts, movements)
         SELECT u.t, u.p, u.v, u.s, u.ps, u.sq, u.f, u.src, u.pe, u.r, u.i, u.tr, u.o, u.rc, u.pr, $16,
                u.a::jsonb, u.m::jsonb
         FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::bigint[],
           $7::text[], $8::text[], $9::text[], $10::text[], $11::bigint[], $12::text[], $13::timestamptz[],
           $14::timestamptz[], $15::text[], $17::text[], $18::text[])
           AS u(t, p, v, s, ps, sq, f, src, pe, r, i, tr, o, rc, pr, a, m)
         ON CONFLICT (tenant, payment_id, version) DO NOTHING",
    )
    .bind(&t.tenant)
    .bind(&t.payment_id)
    .bind(&t.version)
    .bind(&t.status)
    .bind(&t.previous_status)
    .bind(&t.seq)
    .bind(&t.fact_id)
    .bind(&t.source)
    .bind(&t.provider_event_id)
    .bind(&t.rule)
    .bind(&t.inbound_seq)
    .bind(&t.trace_id)
    .bind(&t.occurred_at)
    .bind(&t.recorded_at)
    .bind(&t.provider_ref)
    .bind(epoch)
    .bind(&t.amounts)
    .bind(&t.movements)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The batch's payment rows as the relation `u`, one array per column in
/// [`write_payments`]' binding order ($16, the epoch, is a scalar): the insert and
/// the update of [`PaymentWrite`] read the same rows. A macro, so both statements
/// stay `&'static str` literals.
macro_rules! payment_columns {
    () => {
        "
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[],
           $7::text[], $8::timestamptz[], $9::bigint[], $10::text[], $11::text[], $12::text[], $13::text[],
           $14::text[], $15::bigint[], $17::text[], $18::timestamptz[], $19::timestamptz[])
           AS u(t, p, m, s, v, sq, tr, o, am, c, r, co, pv, pr, l, a, ca, ar)"
    };
}

/// How a batch writes current state: payments first seen in the batch are plain
/// inserts (no conflict is possible under the batch's lock, and an upsert's
/// speculative insertion was the batch's most expensive statement); payments already
/// projected are updated, only ever to a newer version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PaymentWrite {
    Insert,
    Update,
}

impl PaymentWrite {
    fn sql(self) -> &'static str {
        match self {
            PaymentWrite::Insert => {
                concat!(
                    "INSERT INTO payments
                       (tenant, payment_id, merchant_id, status, version, status_seq, trace_id, occurred_at,
                        amount_minor, currency, rail, country, provider, provider_ref, ledger_minor, status_epoch,
                        amounts, captured_at, at_risk_until)
                     SELECT u.t, u.p, u.m, u.s, u.v, u.sq, u.tr, u.o, u.am, u.c, u.r, u.co, u.pv, u.pr, u.l, $16,
                            u.a::jsonb, u.ca, u.ar",
                    payment_columns!()
                )
            }
            // Only a newer version moves current state (a new version is not final until
            // its own checkpoints are stored: finality is read from `checkpoints`). The
            // merchant never changes ($3 is bound for the insert's sake).
            PaymentWrite::Update => {
                concat!(
                    "UPDATE payments SET
                       status = u.s, version = u.v, status_seq = u.sq, trace_id = u.tr, occurred_at = u.o,
                       amount_minor = u.am, currency = u.c, rail = u.r, country = u.co, provider = u.pv,
                       provider_ref = u.pr, ledger_minor = u.l, status_epoch = $16, amounts = u.a::jsonb,
                       captured_at = u.ca, at_risk_until = u.ar, updated_at = now()",
                    payment_columns!(),
                    "
                     WHERE payments.tenant = u.t AND payments.payment_id = u.p AND payments.version < u.v"
                )
            }
        }
    }
}

/// The batch's payment rows split into those first seen in the batch (not in
/// `existing`, the payments projected before it) and those already known.
fn first_seen_and_known<'a>(
    rows: &'a BTreeMap<(String, String), PaymentRow>,
    existing: &BTreeSet<(String, String)>,
) -> (Vec<&'a PaymentRow>, Vec<&'a PaymentRow>) {
    let (mut first_seen, mut known) = (Vec::new(), Vec::new());
    for (key, row) in rows {
        if existing.contains(key) {
            known.push(row);
        } else {
            first_seen.push(row);
        }
    }
    (first_seen, known)
}

async fn write_payments(
    tx: &mut Transaction<'_, Postgres>,
    rows: Vec<&PaymentRow>,
    write: PaymentWrite,
    epoch: &str,
) -> Result<(), BatchError> {
    #[derive(Default)]
    struct Cols {
        tenant: Vec<String>,
        payment_id: Vec<String>,
        merchant_id: Vec<String>,
        status: Vec<String>,
        version: Vec<i64>,
        seq: Vec<i64>,
        trace_id: Vec<String>,
        occurred_at: Vec<DateTime<Utc>>,
        amount: Vec<Option<i64>>,
        currency: Vec<Option<String>>,
        rail: Vec<Option<String>>,
        country: Vec<Option<String>>,
        provider: Vec<Option<String>>,
        provider_ref: Vec<Option<String>>,
        ledger_minor: Vec<i64>,
        amounts: Vec<Option<String>>,
        captured_at: Vec<Option<DateTime<Utc>>>,
        at_risk_until: Vec<Option<DateTime<Utc>>>,
    }
    let mut c = Cols::default();
    for r in rows {
        c.tenant.push(r.tenant.clone());
        c.payment_id.push(r.payment_id.clone());
        c.merchant_id.push(r.merchant_id.clone());
        c.status.push(r.status.clone());
        c.version.push(r.version);
        c.seq.push(r.seq);
        c.trace_id.push(r.trace_id.clone());
        c.occurred_at.push(r.occurred_at);
        c.amount.push(r.terms.amount_minor);
        c.currency.push(r.terms.currency.clone());
        c.rail.push(r.terms.rail.clone());
        c.country.push(r.terms.country.clone());
        c.provider.push(r.terms.provider.clone());
        c.provider_ref.push(r.terms.provider_ref.clone());
        c.ledger_minor.push(r.ledger_minor);
        c.amounts.push(r.amounts.clone());
        c.captured_at.push(r.captured_at);
        c.at_risk_until.push(r.at_risk_until);
    }
    if c.tenant.is_empty() {
        return Ok(());
    }
    sqlx::query(write.sql())
        .bind(&c.tenant)
        .bind(&c.payment_id)
        .bind(&c.merchant_id)
        .bind(&c.status)
        .bind(&c.version)
        .bind(&c.seq)
        .bind(&c.trace_id)
        .bind(&c.occurred_at)
        .bind(&c.amount)
        .bind(&c.currency)
        .bind(&c.rail)
        .bind(&c.country)
        .bind(&c.provider)
        .bind(&c.provider_ref)
        .bind(&c.ledger_minor)
        .bind(epoch)
        .bind(&c.amounts)
        .bind(&c.captured_at)
        .bind(&c.at_risk_until)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn write_ledger(
    tx: &mut Transaction<'_, Postgres>,
    accounts: &BTreeMap<(String, String, String), &'static str>,
    j: &Journal,
    p: &Postings,
) -> Result<(), BatchError> {
    if j.tenant.is_empty() {
        return Ok(());
    }
    let mut a: (Vec<String>, Vec<String>, Vec<String>, Vec<String>) = Default::default();
    for ((tenant, account, currency), kind) in accounts {
        a.0.push(tenant.clone());
        a.1.push(account.clone());
        a.2.push(currency.clone());
        a.3.push((*kind).to_owned());
    }
    sqlx::query(
        "INSERT INTO ledger_accounts (tenant, account, currency, kind)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
         ON CONFLICT DO NOTHING",
    )
    .bind(&a.0)
    .bind(&a.1)
    .bind(&a.2)
    .bind(&a.3)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO journal_entries (tenant, payment_id, version, entry_kind, status, status_seq, trace_id, occurred_at)
         SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::bigint[], $7::text[],
           $8::timestamptz[])
         ON CONFLICT DO NOTHING",
    )
    .bind(&j.tenant)
    .bind(&j.payment_id)
    .bind(&j.version)
    .bind(&j.kind)
    .bind(&j.status)
    .bind(&j.seq)
    .bind(&j.trace_id)
    .bind(&j.occurred_at)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO ledger_postings (tenant, payment_id, version, leg, account, currency, amount_minor)
         SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::int[], $5::text[], $6::text[], $7::bigint[])
         ON CONFLICT DO NOTHING",
    )
    .bind(&p.tenant)
    .bind(&p.payment_id)
    .bind(&p.version)
    .bind(&p.leg)
    .bind(&p.account)
    .bind(&p.currency)
    .bind(&p.amount)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(tenant: &str, payment: &str, version: i64) -> PaymentRow {
        PaymentRow {
            tenant: tenant.to_owned(),
            payment_id: payment.to_owned(),
            merchant_id: "m_1".to_owned(),
            status: "pending".to_owned(),
            version,
            seq: version,
            trace_id: String::new(),
            occurred_at: DateTime::<Utc>::UNIX_EPOCH,
            terms: PaymentTerms::default(),
            ledger_minor: 0,
            amounts: None,
            captured_at: None,
            at_risk_until: None,
        }
    }

    fn key(tenant: &str, payment: &str) -> (String, String) {
        (tenant.to_owned(), payment.to_owned())
    }

    #[test]
    fn payments_first_seen_in_a_batch_are_inserted_and_known_ones_updated() {
        let rows = BTreeMap::from([
            (key("t1", "pay_new"), row("t1", "pay_new", 2)),
            (key("t1", "pay_known"), row("t1", "pay_known", 4)),
            (key("t2", "pay_known"), row("t2", "pay_known", 1)),
        ]);
        // Known in tenant t1 only: the same payment id in t2 is another payment.
        let existing = BTreeSet::from([key("t1", "pay_known"), key("t1", "pay_elsewhere")]);
        let (first_seen, known) = first_seen_and_known(&rows, &existing);
        let names = |rows: &[&PaymentRow]| {
            rows.iter()
                .map(|r| format!("{}/{}", r.tenant, r.payment_id))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&first_seen), ["t1/pay_new", "t2/pay_known"]);
        assert_eq!(names(&known), ["t1/pay_known"]);
    }

    #[test]
    fn only_the_update_moves_an_existing_row_and_only_to_a_newer_version() {
        let insert = PaymentWrite::Insert.sql();
        assert!(insert.starts_with("INSERT INTO payments"));
        assert!(
            !insert.contains("ON CONFLICT"),
            "a first-seen payment is never upserted"
        );
        let update = PaymentWrite::Update.sql();
        assert!(update.starts_with("UPDATE payments"));
        assert!(update.contains("payments.version < u.v"));
        assert!(!update.contains("merchant_id ="), "the merchant never changes");
    }
}
