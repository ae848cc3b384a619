//! REST reads of the projection: a payment's current state and its timeline, and
//! the status model. The tenant is the caller's; another tenant's payment is 404.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use chrono::{DateTime, Utc};
use paytrack_shared::{ChannelKey, MerchantId, PaymentId, StatusModel};
use serde::{Deserialize, Serialize};

use crate::app::AppState;
use crate::auth::{Access, Caller, CallerKind};
use crate::error::ApiError;
use crate::payment_state::PaymentState;

/// `GET /v1/payments/{id}`.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct PaymentView {
    /// The payment's current state, as the list shows it too.
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub state: PaymentState,
    /// Trace of the transition.
    pub trace_id: String,
    /// The provider's reference, when known.
    pub provider_ref: Option<String>,
    /// The routing decision of its create command, if any.
    pub routing: Option<serde_json::Value>,
    /// The capability snapshot it was created on, with `checked_at`, if any.
    pub capabilities: Option<serde_json::Value>,
}

/// One timeline entry.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct TimelineEntry {
    /// Version.
    pub version: i64,
    /// Status at that version.
    pub status: String,
    /// Status before.
    pub previous_status: Option<String>,
    /// PAYTRACK_STATUS sequence.
    pub seq: i64,
    /// The fact that caused it.
    pub fact_id: String,
    /// Where that fact came from.
    pub source: String,
    /// The mapping rule.
    pub rule: String,
    /// Where its raw payload is in PAYTRACK_IN.
    pub inbound_seq: i64,
    /// Trace.
    pub trace_id: String,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// When it was decided.
    pub recorded_at: DateTime<Utc>,
    /// Where the money was after it (null before amounts existed).
    pub amounts: Option<serde_json::Value>,
    /// The refunds and disputes it moved, each with its provider id, state and
    /// amount (null when it moved none).
    pub movements: Option<serde_json::Value>,
}

/// A fact that did not move the payment (duplicate, refused by the status model, or
/// unmapped), shown in the timeline so that every fact received is visible.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct FactNotApplied {
    /// The fact.
    pub fact_id: String,
    /// `duplicate`, `refused` or `unmapped`.
    pub outcome: String,
    /// Why it was not applied.
    pub reason: Option<String>,
    /// The mapping rule that matched, if any.
    pub rule: Option<String>,
    /// The provider's event type (what an unmapped fact said).
    pub event_type: Option<String>,
    /// The payment's version the decision was made against.
    pub current_version: Option<i64>,
    /// The applied fact it lost to (stale, duplicate) or contradicted (conflict).
    pub superseded_by: Option<String>,
    /// Where its raw payload is in PAYTRACK_IN.
    pub inbound_seq: i64,
    /// Trace.
    pub trace_id: String,
    /// When it was decided.
    pub recorded_at: DateTime<Utc>,
}

/// One entry of a payment's timeline: a transition, or a fact that changed nothing.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TimelineItem {
    /// A version of the payment.
    Transition(TimelineEntry),
    /// A fact received and recorded, not applied.
    Fact(FactNotApplied),
}

fn parse_id(raw: &str) -> Result<PaymentId, ApiError> {
    PaymentId::new(raw).map_err(|_| ApiError::NotFound("no such payment".into()))
}

/// Refuses (403) a payment outside the caller's scope. Decided before anything is
/// read for a payment-scoped token, so the answer says nothing about whether the
/// payment exists; a merchant-scoped token is also refused for a payment that does
/// not exist in its tenant. Another tenant's payments never exist for a caller.
async fn authorize(state: &AppState, caller: &Caller, payment_id: &PaymentId) -> Result<(), ApiError> {
    let forbidden = || ApiError::Forbidden("this token does not grant that payment".into());
    match caller.scope.access(payment_id) {
        Access::Granted => Ok(()),
        Access::Denied => Err(forbidden()),
        Access::IfMerchantIn(merchants) => {
            let merchant: Option<String> =
                sqlx::query_scalar("SELECT merchant_id FROM payments WHERE tenant = $1 AND payment_id = $2")
                    .bind(caller.tenant.as_str())
                    .bind(payment_id.as_str())
                    .fetch_optional(&state.db)
                    .await?;
            match merchant {
                Some(m) if merchants.iter().any(|g| g.as_str() == m) => Ok(()),
                _ => Err(forbidden()),
            }
        }
    }
}

/// Current state of one payment.
pub async fn get_payment(
    State(state): State<AppState>,
    caller: Caller,
    Path(payment_id): Path<String>,
) -> Result<Json<PaymentView>, ApiError> {
    let payment_id = parse_id(&payment_id)?;
    authorize(&state, &caller, &payment_id).await?;
    let sql = format!(
        "SELECT p.payment_id, p.merchant_id, p.status, p.version, p.status_seq AS seq, {final_} AS final, {why} AS not_final_because, {direction} AS direction, {payout_status} AS payout_status, p.trace_id,
                p.occurred_at, p.updated_at, p.amount_minor, p.currency, p.rail, p.provider, p.provider_ref,
                p.amounts AS amounts,
                CASE WHEN p.at_risk_until > now() THEN COALESCE((p.amounts->>'net_minor')::bigint, 0) ELSE 0 END
                  AS at_risk_minor,
                CASE WHEN p.at_risk_until > now() THEN p.at_risk_until END AS at_risk_until,
                d.routing::jsonb AS routing, d.capabilities::jsonb AS capabilities
         FROM payments p
         LEFT JOIN payment_decisions d ON d.tenant = p.tenant AND d.payment_id = p.payment_id
         WHERE p.tenant = $1 AND p.payment_id = $2",
        final_ = paytrack_shared::db::PAYMENT_IS_FINAL,
        why = paytrack_shared::db::payment_not_final_because(),
        direction = paytrack_shared::db::PAYMENT_DIRECTION,
        payout_status = paytrack_shared::db::PAYOUT_STATUS,
    );
    let row = sqlx::query_as::<_, PaymentView>(&sql)
        .bind(caller.tenant.as_str())
        .bind(payment_id.as_str())
        .fetch_optional(&state.db)
        .await?;
    row.map(Json)
        .ok_or_else(|| ApiError::NotFound("no such payment".into()))
}

/// Every transition of one payment in version order, with the facts that changed
/// nothing placed where they were decided.
pub async fn get_timeline(
    State(state): State<AppState>,
    caller: Caller,
    Path(payment_id): Path<String>,
) -> Result<Json<Vec<TimelineItem>>, ApiError> {
    let payment_id = parse_id(&payment_id)?;
    authorize(&state, &caller, &payment_id).await?;
    let items = timeline(&state, &caller, &payment_id).await?;
    if items.is_empty() {
        return Err(ApiError::NotFound("no such payment".into()));
    }
    Ok(Json(items))
}

async fn timeline(state: &AppState, caller: &Caller, payment_id: &PaymentId) -> Result<Vec<TimelineItem>, ApiError> {
    let transitions = sqlx::query_as::<_, TimelineEntry>(
        "SELECT version, status, previous_status, status_seq AS seq, fact_id, source, rule, inbound_seq, trace_id, occurred_at,
                recorded_at, amounts, movements
         FROM payment_timeline WHERE tenant = $1 AND payment_id = $2 ORDER BY version",
    )
    .bind(caller.tenant.as_str())
    .bind(payment_id.as_str())
    .fetch_all(&state.db)
    .await?;
    let not_applied = sqlx::query_as::<_, FactNotApplied>(
        "SELECT fact_id, outcome, reason, rule, event_type, current_version, superseded_by, inbound_seq,
                trace_id, decided_at AS recorded_at
         FROM fact_outcomes WHERE tenant = $1 AND payment_id = $2 AND outcome <> 'applied'
         ORDER BY decided_at, inbound_seq",
    )
    .bind(caller.tenant.as_str())
    .bind(payment_id.as_str())
    .fetch_all(&state.db)
    .await?;
    Ok(merge_timeline(transitions, not_applied))
}

/// Transitions keep their version order; each fact that changed nothing goes before
/// the first transition decided after it.
fn merge_timeline(transitions: Vec<TimelineEntry>, not_applied: Vec<FactNotApplied>) -> Vec<TimelineItem> {
    let mut items = Vec::with_capacity(transitions.len() + not_applied.len());
    let mut facts = not_applied.into_iter().peekable();
    for transition in transitions {
        while let Some(fact) = facts.next_if(|f| f.recorded_at < transition.recorded_at) {
            items.push(TimelineItem::Fact(fact));
        }
        items.push(TimelineItem::Transition(transition));
    }
    items.extend(facts.map(TimelineItem::Fact));
    items
}

/// A raw fact as kept in the evidence.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct FactEvidence {
    /// The fact's id.
    pub fact_id: String,
    /// Its sequence in PAYTRACK_IN.
    pub inbound_seq: i64,
    /// What it says, parsed.
    #[schema(value_type = Object)]
    pub source: serde_json::Value,
    /// The headers kept.
    #[schema(value_type = Object)]
    pub raw_headers: serde_json::Value,
    /// The body exactly as received (stored as bytes; rendered as the UTF-8 text
    /// ingest accepted).
    #[serde(serialize_with = "body_as_text")]
    #[schema(value_type = String)]
    pub raw_body: Vec<u8>,
    /// When ingest received it.
    pub received_at: DateTime<Utc>,
    /// What it did (`applied`, `duplicate`, `refused`, `unmapped`), once decided.
    pub outcome: Option<String>,
    /// Why it was not applied, if it was not.
    pub outcome_reason: Option<String>,
    /// The applied fact it lost to or contradicted, if any.
    pub superseded_by: Option<String>,
}

/// Renders a stored raw body as text: ingest only accepts UTF-8 bodies, so this is
/// the body as received (anything else is shown with replacement characters).
fn body_as_text<S: serde::Serializer>(body: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&String::from_utf8_lossy(body))
}

/// A session subscribed to a channel that carries the payment (`payment:<id>`, its
/// `merchant:<id>`, or `payments`), and the versions it was sent.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct SessionEvidence {
    /// The session.
    pub session_id: String,
    /// The token's subject.
    pub subject: String,
    /// `websocket` or `sse`.
    pub transport: String,
    /// The channel that carried the payment.
    pub channel: String,
    /// The outcome (position, recovered, since).
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    /// When.
    pub at: DateTime<Utc>,
    /// When the session closed, if it did.
    pub closed_at: Option<DateTime<Utc>>,
    /// The versions of the payment the channel carried to the session: those after the
    /// position it subscribed from, decided before it closed.
    pub versions_sent: Vec<i64>,
}

/// A checkpoint of one version, and where it is in PAYTRACK_STATUS.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct CheckpointEvidence {
    /// The version confirmed.
    pub version: i64,
    /// `persisted`, `ledger_posted`, or `return_window_closed` (a success on a
    /// reversible rail whose last return window closed).
    pub kind: String,
    /// Whether it makes the status final.
    #[serde(rename = "final")]
    pub is_final: bool,
    /// Its sequence in PAYTRACK_STATUS, once published.
    pub seq: Option<i64>,
    /// Whether the stream is known to hold it (JetStream acknowledged it, or a
    /// rebuild read it back): finality needs both of a version.
    pub observed: bool,
    /// When it was made due.
    pub created_at: DateTime<Utc>,
    /// When every checkpoint of its version was stored (absent until then).
    pub published_at: Option<DateTime<Utc>>,
}

/// The capability snapshot and routing decision the payment was created on.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct DecisionEvidence {
    /// The create command fact.
    pub fact_id: String,
    /// Provider chosen and why.
    pub routing: Option<serde_json::Value>,
    /// What the country, rail and program supported, with `checked_at`.
    pub capabilities: Option<serde_json::Value>,
}

/// `GET /v1/payments/{id}/evidence`: everything a status traces to.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EvidencePack {
    /// Current state (null while no fact has moved the payment, e.g. only unmapped
    /// events were received).
    pub payment: Option<PaymentView>,
    /// Every transition with its cause and rule, and the facts that changed nothing.
    pub timeline: Vec<TimelineItem>,
    /// The facts received for the payment, applied or not, with their raw payloads, a
    /// page at a time (at most 1 MiB of raw bodies, always at least one fact).
    pub facts: Vec<FactEvidence>,
    /// More facts remain: ask again with `?facts_after=<this>`; null on the last page.
    pub facts_next: Option<i64>,
    /// Every checkpoint of every version.
    pub checkpoints: Vec<CheckpointEvidence>,
    /// The journal entries and their postings.
    pub ledger: Vec<JournalEntry>,
    /// The routing decision and capability snapshot, when a create command was received.
    pub decisions: Option<DecisionEvidence>,
    /// The sessions any channel carrying the payment was sent to, with the versions
    /// (an end user sees only its own sessions).
    pub sessions: Vec<SessionEvidence>,
    /// Alerts raised about the payment.
    pub alerts: Vec<serde_json::Value>,
}

/// The query string of `GET /v1/payments/{id}/evidence`.
#[derive(Debug, Deserialize)]
pub struct EvidenceQuery {
    /// The previous page's `facts_next`: the facts after that inbound sequence.
    pub facts_after: Option<String>,
}

/// The payment's evidence pack.
pub async fn get_evidence(
    State(state): State<AppState>,
    caller: Caller,
    Path(payment_id): Path<String>,
    query: Result<Query<EvidenceQuery>, QueryRejection>,
) -> Result<Json<EvidencePack>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::Invalid(e.body_text()))?;
    let after = crate::evidence_page::parse_after(query.facts_after.as_deref())?;
    let payment = match get_payment(State(state.clone()), caller.clone(), Path(payment_id.clone())).await {
        Ok(Json(payment)) => Some(payment),
        Err(ApiError::NotFound(_)) => None,
        Err(other) => return Err(other),
    };
    let payment_id = parse_id(&payment_id)?;
    let timeline = timeline(&state, &caller, &payment_id).await?;
    let tenant = caller.tenant.as_str();
    let page = crate::evidence_page::facts_after(&state.db, &caller.tenant, &payment_id, after).await?;
    let facts = page.facts;
    if payment.is_none() && timeline.is_empty() && facts.is_empty() && after == 0 {
        return Err(ApiError::NotFound("no such payment".into()));
    }
    let mut channels = vec![
        ChannelKey::Payment(payment_id.clone()).to_string(),
        ChannelKey::Payments.to_string(),
    ];
    if let Some(merchant) = payment
        .as_ref()
        .and_then(|p| MerchantId::new(&p.state.merchant_id).ok())
    {
        channels.push(ChannelKey::Merchant(merchant).to_string());
    }
    let sessions = sqlx::query_as::<_, SessionEvidence>(
        "SELECT * FROM (
           SELECT s.session_id, s.subject, s.transport, s.channel, s.detail::jsonb AS detail, s.at, c.at AS closed_at,
             ARRAY(SELECT t.version FROM payment_timeline t
                   WHERE t.tenant = s.tenant AND t.payment_id = $2
                     AND t.status_seq > COALESCE((s.detail->'position'->>'seq')::bigint, 0)
                     AND (c.at IS NULL OR t.recorded_at <= c.at)
                   ORDER BY t.version) AS versions_sent
           FROM session_audit s
           LEFT JOIN LATERAL (SELECT x.at FROM session_audit x WHERE x.tenant = s.tenant
                              AND x.session_id = s.session_id AND x.kind = 'close' LIMIT 1) c ON TRUE
           WHERE s.tenant = $1 AND s.kind = 'subscribe' AND s.channel = ANY($3)
             AND ($5::text IS NULL OR s.subject = $5)
           ORDER BY s.at, s.session_epoch, s.session_seq) q
         WHERE channel = $4 OR cardinality(versions_sent) > 0",
    )
    .bind(tenant)
    .bind(payment_id.as_str())
    .bind(&channels)
    .bind(&channels[0])
    .bind(own_sessions_only(&caller))
    .fetch_all(&state.db)
    .await?;
    let checkpoints = sqlx::query_as::<_, CheckpointEvidence>(
        "SELECT c.version, k.kind, k.is_final, k.seq, k.seq IS NOT NULL AS observed,
                c.created_at, CASE WHEN k.seq IS NOT NULL THEN c.published_at END AS published_at
         FROM checkpoints c
         CROSS JOIN LATERAL (VALUES
           (1, 'persisted', c.persisted_seq, TRUE, FALSE),
           (2, 'ledger_posted', c.ledger_posted_seq, c.ledger_posted_due, c.is_final AND c.window_closed_seq IS NULL),
           (3, 'return_window_closed', c.window_closed_seq, c.window_closed_seq IS NOT NULL, TRUE)
         ) AS k(ord, kind, seq, owed, is_final)
         WHERE c.tenant = $1 AND c.payment_id = $2 AND k.owed
         ORDER BY c.version, k.ord",
    )
    .bind(tenant)
    .bind(payment_id.as_str())
    .fetch_all(&state.db)
    .await?;
    let decisions = sqlx::query_as::<_, DecisionEvidence>(
        "SELECT fact_id, routing::jsonb AS routing, capabilities::jsonb AS capabilities
         FROM payment_decisions WHERE tenant = $1 AND payment_id = $2",
    )
    .bind(tenant)
    .bind(payment_id.as_str())
    .fetch_optional(&state.db)
    .await?;
    let ledger = journal(&state, tenant, payment_id.as_str()).await?;
    let alerts = alerts(&state, tenant, payment_id.as_str()).await;
    Ok(Json(EvidencePack {
        payment,
        timeline,
        facts,
        facts_next: page.next,
        checkpoints,
        ledger,
        decisions,
        sessions,
        alerts,
    }))
}

/// Whose sessions an evidence pack may list: an end user's token sees only its own
/// (its `sub`), never other people's; operators and backend keys see every session.
fn own_sessions_only(caller: &Caller) -> Option<&str> {
    (caller.kind == CallerKind::User).then_some(caller.actor.as_str())
}

/// Alerts about a payment, when the alert store exists (it is filled by the alert
/// consumer); an unreadable store answers none rather than failing the evidence.
async fn alerts(state: &AppState, tenant: &str, payment_id: &str) -> Vec<serde_json::Value> {
    // Each alert with its acknowledgement, if an operator gave one (who, when, why).
    sqlx::query_scalar(
        "SELECT to_jsonb(a) || jsonb_build_object('ack', to_jsonb(k) - 'tenant' - 'alert_id')
         FROM alerts a LEFT JOIN alert_acks k USING (tenant, alert_id)
         WHERE a.tenant = $1 AND a.payment_id = $2 ORDER BY a.raised_at, a.alert_seq",
    )
    .bind(tenant)
    .bind(payment_id)
    .fetch_all(&state.db)
    .await
    .unwrap_or_else(|error| {
        tracing::warn!(%error, "alerts not readable for the evidence pack");
        Vec::new()
    })
}

/// One posting of a journal entry.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct PostingView {
    /// Leg number within the entry.
    pub leg: i32,
    /// Account, e.g. `merchant_payable:m_1`.
    pub account: String,
    /// ISO 4217.
    pub currency: String,
    /// Debit positive, credit negative, in minor units.
    pub amount_minor: i64,
}

/// A journal entry of a payment (one per money-moving version).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JournalEntry {
    /// The version it posts.
    pub version: i64,
    /// `capture`, `return`, `reversal`, `resolution_capture`, `resolution_reversal`.
    pub entry_kind: String,
    /// The status posted.
    pub status: String,
    /// PAYTRACK_STATUS sequence of the transition.
    pub seq: i64,
    /// When the cause happened.
    pub occurred_at: DateTime<Utc>,
    /// Its legs (summing to zero per currency).
    pub postings: Vec<PostingView>,
}

async fn journal(state: &AppState, tenant: &str, payment_id: &str) -> Result<Vec<JournalEntry>, ApiError> {
    let entries: Vec<(i64, String, String, i64, DateTime<Utc>)> = sqlx::query_as(
        "SELECT version, entry_kind, status, status_seq, occurred_at FROM journal_entries
         WHERE tenant = $1 AND payment_id = $2 ORDER BY version",
    )
    .bind(tenant)
    .bind(payment_id)
    .fetch_all(&state.db)
    .await?;
    let postings: Vec<(i64, i32, String, String, i64)> = sqlx::query_as(
        "SELECT version, leg, account, currency, amount_minor FROM ledger_postings
         WHERE tenant = $1 AND payment_id = $2 ORDER BY version, leg",
    )
    .bind(tenant)
    .bind(payment_id)
    .fetch_all(&state.db)
    .await?;
    Ok(entries
        .into_iter()
        .map(|(version, entry_kind, status, seq, occurred_at)| JournalEntry {
            version,
            entry_kind,
            status,
            seq,
            occurred_at,
            postings: postings
                .iter()
                .filter(|p| p.0 == version)
                .map(|p| PostingView {
                    leg: p.1,
                    account: p.2.clone(),
                    currency: p.3.clone(),
                    amount_minor: p.4,
                })
                .collect(),
        })
        .collect())
}

/// `GET /v1/payments/{id}/ledger`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LedgerView {
    /// The payment.
    pub payment_id: String,
    /// Amount the ledger currently recognises for it, in `currency`.
    pub ledger_minor: i64,
    /// Its currency, when known.
    pub currency: Option<String>,
    /// Its journal entries.
    pub entries: Vec<JournalEntry>,
}

/// The payment's journal entries and postings.
pub async fn get_ledger(
    State(state): State<AppState>,
    caller: Caller,
    Path(payment_id): Path<String>,
) -> Result<Json<LedgerView>, ApiError> {
    let payment_id = parse_id(&payment_id)?;
    authorize(&state, &caller, &payment_id).await?;
    let tenant = caller.tenant.as_str();
    let row: Option<(i64, Option<String>)> =
        sqlx::query_as("SELECT ledger_minor, currency FROM payments WHERE tenant = $1 AND payment_id = $2")
            .bind(tenant)
            .bind(payment_id.as_str())
            .fetch_optional(&state.db)
            .await?;
    let Some((ledger_minor, currency)) = row else {
        return Err(ApiError::NotFound("no such payment".into()));
    };
    Ok(Json(LedgerView {
        payment_id: payment_id.to_string(),
        ledger_minor,
        currency,
        entries: journal(&state, tenant, payment_id.as_str()).await?,
    }))
}

/// The canonical status model, as data.
pub async fn status_model() -> Json<&'static StatusModel> {
    Json(StatusModel::get())
}
