//! A scripted payment workload for the ledger projector's tests: transitions published
//! directly as the reconciler (its NATS user), so volume costs no webhook round trips,
//! and the checks every such test makes on the projection.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream;
use paytrack_nats::Role;
use paytrack_shared::envelope::{self, Cause, ENVELOPE_VERSION, PaymentTerms, Transition};
use paytrack_shared::{MerchantId, PaymentId, Status, TenantId, subjects};
use serde_json::Value;
use sqlx::PgPool;

use crate::Mesh;

/// How long a projection may take to catch up.
pub const WAIT: Duration = Duration::from_secs(60);

/// One payment's scripted history.
#[derive(Debug, Clone)]
pub struct Plan {
    /// See the type.
    pub payment: String,
    /// See the type.
    pub merchant: String,
    /// See the type.
    pub rail: &'static str,
    /// See the type.
    pub amount: i64,
    /// See the type.
    pub statuses: Vec<Status>,
    /// What the ledger must recognise at the end, and the entry kinds posted.
    /// See the type.
    pub ledger_minor: i64,
    /// See the type.
    pub entries: Vec<&'static str>,
}

/// `n` payments cycling through card capture, ach_debit capture and return, rtp
/// failure, and upi capture, investigation and resolution to failed.
pub fn plans(prefix: &str, n: usize) -> Vec<Plan> {
    use Status::*;
    (0..n)
        .map(|i| {
            let amount = 100 + i as i64;
            let (rail, statuses, ledger_minor, entries) = match i % 4 {
                0 => ("card", vec![Initiated, Pending, Succeeded], amount, vec!["capture"]),
                1 => (
                    "ach_debit",
                    vec![Initiated, Pending, Succeeded, Returned],
                    0,
                    vec!["capture", "return"],
                ),
                2 => ("rtp", vec![Initiated, Pending, Failed], 0, vec![]),
                _ => (
                    "upi",
                    vec![Pending, Succeeded, InvestigationRequired, Failed],
                    0,
                    vec!["capture", "resolution_reversal"],
                ),
            };
            Plan {
                payment: format!("{prefix}{i}"),
                merchant: format!("m{}", i % 3),
                rail,
                amount,
                statuses,
                ledger_minor,
                entries,
            }
        })
        .collect()
}

/// Version `version` (from 1) of `plan` as the reconciler would publish it.
pub fn transition(tenant: &TenantId, plan: &Plan, version: usize) -> anyhow::Result<Transition> {
    let status = plan.statuses[version - 1];
    // Now: a success on a reversible rail stays inside its return window (not final)
    // for the whole test; a test that needs a closed window sets `occurred_at` itself.
    let at = chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 6);
    Ok(Transition {
        v: ENVELOPE_VERSION,
        tenant: tenant.clone(),
        merchant_id: MerchantId::new(&plan.merchant)?,
        payment_id: PaymentId::new(&plan.payment)?,
        version: version as u64,
        status,
        previous_status: (version > 1).then(|| plan.statuses[version - 2]),
        occurred_at: at,
        recorded_at: at,
        cause: Cause {
            fact_id: format!("wh:test:{}:{version}", plan.payment).into(),
            source: "webhook:stdwebhooks".into(),
            provider_event_id: Some(format!("evt_{}_{version}", plan.payment)),
            rule: format!("stdwebhooks:payment.{status}"),
            inbound_seq: version as u64,
        },
        trace_id: format!("{:032x}", version),
        applied_fact_ids: vec![],
        applied_fact_count: 0,
        terms: PaymentTerms {
            amount_minor: Some(plan.amount),
            currency: Some("USD".into()),
            rail: Some(plan.rail.into()),
            country: Some("US".into()),
            provider: Some("stdwebhooks".into()),
            provider_ref: Some(format!("ref_{}", plan.payment)),
            fee_minor: None,
            captured_minor: None,
            direction: None,
        },
        ordered_by: None,
        evidence_fact_ids: vec![],
        amounts: None,
        money: Default::default(),
        movements: Vec::new(),
    })
}

/// Publishes `transitions` as the reconciler, in order, each acknowledged before the
/// next.
pub async fn publish_transitions(mesh: &Mesh, transitions: &[Transition]) -> anyhow::Result<()> {
    let js = jetstream::new(mesh.nats.connect_as(Role::Reconciler).await?);
    for t in transitions {
        let subject = subjects::status(&t.tenant, &t.merchant_id, &t.payment_id);
        js.publish(subject, envelope::encode(t)).await?.await?;
    }
    Ok(())
}

/// Publishes every plan's transitions as the reconciler, interleaved across payments
/// (step by step), `pause` between steps; returns the number published.
pub async fn publish(mesh: &Mesh, plans: &[Plan], pause: Duration) -> anyhow::Result<usize> {
    let js = jetstream::new(mesh.nats.connect_as(Role::Reconciler).await?);
    let steps = plans.iter().map(|p| p.statuses.len()).max().unwrap_or(0);
    let mut published = 0;
    for version in 1..=steps {
        let mut acks = Vec::new();
        for plan in plans.iter().filter(|p| p.statuses.len() >= version) {
            let t = transition(&mesh.tenant, plan, version)?;
            let subject = subjects::status(&t.tenant, &t.merchant_id, &t.payment_id);
            acks.push(
                js.send_publish(
                    subject,
                    jetstream::message::PublishMessage::build().payload(envelope::encode(&t)),
                )
                .await?,
            );
            if acks.len() >= 500 {
                for ack in acks.drain(..) {
                    ack.await?;
                }
            }
            published += 1;
        }
        for ack in acks {
            ack.await?;
        }
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    Ok(published)
}

/// A number from `sql` (with the tenant as `$1`), or None on any error.
pub async fn scalar(db: &PgPool, sql: &str, tenant: &TenantId) -> Option<i64> {
    sqlx::query_scalar(sql).bind(tenant.as_str()).fetch_one(db).await.ok()
}

/// Waits up to `wait` until the mesh's projected payments are exactly `expected`
/// (payment id to status): every payment at the status it should end at.
pub async fn wait_statuses(mesh: &Mesh, expected: &BTreeMap<String, String>, wait: Duration) -> anyhow::Result<()> {
    crate::eventually(wait, "every payment at its expected status", || async {
        let rows: Vec<(String, String)> = sqlx::query_as("SELECT payment_id, status FROM payments WHERE tenant = $1")
            .bind(mesh.tenant.as_str())
            .fetch_all(&mesh.db)
            .await
            .ok()?;
        let got: BTreeMap<String, String> = rows.into_iter().collect();
        (&got == expected).then_some(())
    })
    .await
}

/// The transitions of the mesh's tenant in the projection now; None on any error.
async fn timeline_rows(mesh: &Mesh, db: &PgPool) -> Option<i64> {
    scalar(
        db,
        "SELECT count(*) FROM payment_timeline WHERE tenant = $1",
        &mesh.tenant,
    )
    .await
}

/// Waits until the projection holds at least `at_least` of the mesh's transitions: a
/// point part-way through a flow at which a test stops, kills or reads something.
pub async fn wait_some_projected(mesh: &Mesh, at_least: i64) -> anyhow::Result<()> {
    mesh.eventually(WAIT, "some transitions projected", || async {
        timeline_rows(mesh, &mesh.db)
            .await
            .filter(|n| *n >= at_least)
            .map(|_| ())
    })
    .await
}

/// Waits until the projection holds all `total` transitions and the stream holds both
/// checkpoints of each. While it waits it asks only what is cheap to answer (the
/// projector's progress counters and the unpublished part of the outbox), so polling
/// does not compete with the projector for the database; the full counts are checked
/// once those say done.
pub async fn wait_projected(mesh: &Mesh, db: &PgPool, total: usize) -> anyhow::Result<()> {
    let total = total as i64;
    mesh.eventually(
        WAIT,
        "every transition projected and both checkpoints stored",
        || async {
            let applied: i64 = sqlx::query_scalar("SELECT COALESCE(sum(applied), 0)::bigint FROM projector_progress")
                .fetch_one(db)
                .await
                .ok()?;
            if applied < total {
                return None;
            }
            let unpublished: i64 =
                sqlx::query_scalar("SELECT count(*) FROM checkpoints WHERE published_at IS NULL")
                    .fetch_one(db)
                    .await
                    .ok()?;
            if unpublished > 0 {
                return None;
            }
            let timeline = timeline_rows(mesh, db).await?;
            let stored = scalar(
                db,
                "SELECT count(*) FILTER (WHERE persisted_seq IS NOT NULL) + count(*) FILTER (WHERE ledger_posted_seq IS NOT NULL)
                 FROM checkpoints WHERE tenant = $1",
                &mesh.tenant,
            )
            .await?;
            (timeline == total && stored == 2 * total).then_some(())
        },
    )
    .await
}

/// Tables a rebuild does not reproduce, and why: each instance's count of applied
/// batches (`projector_progress`) and the low-water mark copied from a live durable
/// consumer (`projector_positions`) describe the process that projected, not the
/// payments; a rebuild records its own.
pub const REBUILD_LOCAL_TABLES: [&str; 2] = ["projector_progress", "projector_positions"];

/// How many of the mesh tenant's journal entries have legs that do not sum to zero
/// per currency: 0 whatever was projected, rewritten or adopted.
pub async fn unbalanced_entries(mesh: &Mesh) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT 1 FROM ledger_postings WHERE tenant = $1
           GROUP BY payment_id, version, currency HAVING sum(amount_minor) <> 0) u",
    )
    .bind(mesh.tenant.as_str())
    .fetch_one(&mesh.db)
    .await?)
}

/// A tenant's projection dumped by [`dump`], table by table.
pub type Dump = BTreeMap<&'static str, Vec<Value>>;

/// The mesh's projection next to one rebuilt from the streams into an empty
/// database: what every rebuild test compares.
#[derive(Debug)]
pub struct Rebuilt {
    /// What the rebuild read and wrote.
    pub report: paytrack_ledger_projector::rebuild::RebuildReport,
    /// The mesh's own database, dumped.
    pub live: Dump,
    /// The rebuilt database, dumped.
    pub replayed: Dump,
    /// The rebuilt database itself, for checks beyond the dump.
    pub db: PgPool,
}

impl Rebuilt {
    /// Asserts that each of `tables` holds the same rows live and rebuilt.
    pub fn assert_same(&self, tables: &[&str]) {
        for table in tables {
            assert_eq!(self.live[table], self.replayed[table], "{table}");
        }
    }
}

/// Rebuilds the mesh's projection from its streams (as the projector's NATS user)
/// into a fresh database, and dumps both for the tenant.
pub async fn rebuild_and_dump(mesh: &Mesh) -> anyhow::Result<Rebuilt> {
    let rebuilt = PgPool::connect(&crate::pg::fresh_database().await?).await?;
    let js = jetstream::new(mesh.nats.connect_as(Role::Projector).await?);
    let report = paytrack_ledger_projector::rebuild::rebuild(&js, &rebuilt).await?;
    Ok(Rebuilt {
        report,
        live: dump(&mesh.db, &mesh.tenant).await?,
        replayed: dump(&rebuilt, &mesh.tenant).await?,
        db: rebuilt,
    })
}

/// Every row of the projection that a rebuild must reproduce, as JSON, in key order:
/// every table the migrations create except [`REBUILD_LOCAL_TABLES`]. Columns left
/// out, and why: `payments.created_at`/`updated_at` (when this database wrote the
/// row), `checkpoints.created_at` (when this database reached them) and
/// `checkpoints.published_at`, compared as published or not (when this process saw
/// the acknowledgement).
pub async fn dump(db: &PgPool, tenant: &TenantId) -> anyhow::Result<Dump> {
    let payments = format!(
        "SELECT tenant, payment_id, merchant_id, status, version, status_seq, {final_} AS final, trace_id, occurred_at,
                amount_minor, currency, rail, country, provider, provider_ref, ledger_minor, status_epoch, amounts,
                captured_at, at_risk_until
         FROM payments p WHERE tenant = $1 ORDER BY payment_id",
        final_ = paytrack_shared::db::PAYMENT_IS_FINAL,
    );
    let tables: [(&str, &str); 13] = [
        ("payments", payments.as_str()),
        (
            "payment_timeline",
            "SELECT * FROM payment_timeline WHERE tenant = $1 ORDER BY payment_id, version",
        ),
        (
            "ledger_accounts",
            "SELECT * FROM ledger_accounts WHERE tenant = $1 ORDER BY account, currency",
        ),
        (
            "journal_entries",
            "SELECT * FROM journal_entries WHERE tenant = $1 ORDER BY payment_id, version",
        ),
        (
            "ledger_postings",
            "SELECT * FROM ledger_postings WHERE tenant = $1 ORDER BY payment_id, version, leg",
        ),
        (
            "checkpoints",
            "SELECT tenant, payment_id, version, merchant_id, status, trace_id, ledger_posted_due, is_final,
                    persisted_seq, ledger_posted_seq, published_at IS NOT NULL AS published, final_after,
                    window_closed_seq
             FROM checkpoints WHERE tenant = $1 ORDER BY payment_id, version",
        ),
        (
            "inbound_facts",
            "SELECT tenant, fact_id, payment_id, inbound_seq, source::text AS source,
                    raw_headers::text AS raw_headers, raw_body, received_at
             FROM inbound_facts WHERE tenant = $1 ORDER BY fact_id",
        ),
        (
            "fact_outcomes",
            "SELECT * FROM fact_outcomes WHERE tenant = $1 ORDER BY payment_id, inbound_seq",
        ),
        (
            "payment_decisions",
            "SELECT tenant, payment_id, fact_id, routing::text AS routing, capabilities::text AS capabilities,
                    program, customer_ref, received_at
             FROM payment_decisions WHERE tenant = $1 ORDER BY payment_id",
        ),
        (
            "session_audit",
            "SELECT * FROM session_audit WHERE tenant = $1 ORDER BY session_epoch, session_seq",
        ),
        ("alerts", "SELECT * FROM alerts WHERE tenant = $1 ORDER BY alert_id"),
        (
            "alert_acks",
            "SELECT * FROM alert_acks WHERE tenant = $1 ORDER BY alert_id",
        ),
        (
            "_tables",
            "SELECT table_name::text AS name FROM information_schema.tables
             WHERE table_schema = 'public' AND table_name <> '_sqlx_migrations' AND $1 <> ''
             ORDER BY table_name",
        ),
    ];
    let mut out = BTreeMap::new();
    for (name, sql) in tables {
        let rows: Vec<Value> = sqlx::query_scalar(&format!("SELECT to_jsonb(x) FROM ({sql}) x"))
            .bind(tenant.as_str())
            .fetch_all(db)
            .await?;
        out.insert(name, rows);
    }
    // Every table of the projection is compared (or named rebuild-local above), so
    // a table added by a later migration cannot be missed by a rebuild unnoticed.
    let tables = out.remove("_tables").unwrap_or_default();
    for table in tables.iter().filter_map(|t| t["name"].as_str()) {
        anyhow::ensure!(
            out.contains_key(table) || REBUILD_LOCAL_TABLES.contains(&table),
            "table {table} is neither compared by a rebuild check nor named rebuild-local"
        );
    }
    Ok(out)
}

/// The ledger of `tenant` against the plans: every entry balances (the database
/// checked it), the whole ledger sums to zero per currency, and every payment ends
/// with the amount and the entries its history implies (which an out-of-order
/// application would get wrong: a return applied before its capture posts nothing).
pub async fn check_ledger(db: &PgPool, tenant: &TenantId, plans: &[Plan]) -> anyhow::Result<()> {
    let sums: Vec<(String, i64)> = sqlx::query_as(
        "SELECT currency, sum(amount_minor)::bigint FROM ledger_postings WHERE tenant = $1 GROUP BY currency",
    )
    .bind(tenant.as_str())
    .fetch_all(db)
    .await?;
    assert!(!sums.is_empty(), "something was posted");
    assert!(
        sums.iter().all(|(_, s)| *s == 0),
        "the ledger balances per currency: {sums:?}"
    );
    let rows: Vec<(String, i64, i64, Vec<String>)> = sqlx::query_as(
        "SELECT p.payment_id, p.version, p.ledger_minor,
                ARRAY(SELECT j.entry_kind FROM journal_entries j WHERE j.tenant = p.tenant
                      AND j.payment_id = p.payment_id ORDER BY j.version)
         FROM payments p WHERE p.tenant = $1",
    )
    .bind(tenant.as_str())
    .fetch_all(db)
    .await?;
    let rows: BTreeMap<_, _> = rows.into_iter().map(|r| (r.0.clone(), r)).collect();
    for plan in plans {
        let row = rows.get(&plan.payment).expect("every payment projected");
        assert_eq!(row.1, plan.statuses.len() as i64, "{}: last version", plan.payment);
        assert_eq!(row.2, plan.ledger_minor, "{}: recognised amount", plan.payment);
        assert_eq!(row.3, plan.entries, "{}: journal entries", plan.payment);
    }
    let payable: i64 = sqlx::query_scalar(
        "SELECT COALESCE(sum(amount_minor), 0)::bigint FROM ledger_postings
         WHERE tenant = $1 AND account LIKE 'merchant_payable:%'",
    )
    .bind(tenant.as_str())
    .fetch_one(db)
    .await?;
    let expected: i64 = plans.iter().map(|p| p.ledger_minor).sum();
    assert_eq!(
        -payable, expected,
        "merchants are owed exactly the captured, unreturned amounts"
    );
    Ok(())
}
