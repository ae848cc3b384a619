//! REST reads of the projection: a payment's current state and its timeline, and
//! the status model. The tenant is the caller's; another tenant's payment is 404.

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use paytrack_shared::{PaymentId, StatusModel};
use serde::Serialize;

use crate::app::AppState;
use crate::auth::{Access, Caller};
use crate::error::ApiError;

/// `GET /v1/payments/{id}`.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct PaymentView {
    /// The payment.
    pub payment_id: String,
    /// Its merchant.
    pub merchant_id: String,
    /// Current canonical status.
    pub status: String,
    /// Version of that status (1 for the first transition).
    pub version: i64,
    /// PAYTRACK_STATUS sequence of the transition.
    pub seq: i64,
    /// Whether the status is final (terminal, persisted and posted to the ledger).
    #[serde(rename = "final")]
    #[sqlx(rename = "final")]
    pub is_final: bool,
    /// Trace of the transition.
    pub trace_id: String,
    /// When the cause happened.
    pub occurred_at: DateTime<Utc>,
    /// When the projection last changed.
    pub updated_at: DateTime<Utc>,
}

/// One timeline entry.
#[derive(Debug, Serialize, sqlx::FromRow)]
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
    let row = sqlx::query_as::<_, PaymentView>(
        "SELECT payment_id, merchant_id, status, version, status_seq AS seq, final, trace_id, occurred_at, updated_at
         FROM payments WHERE tenant = $1 AND payment_id = $2",
    )
    .bind(caller.tenant.as_str())
    .bind(payment_id.as_str())
    .fetch_optional(&state.db)
    .await?;
    row.map(Json)
        .ok_or_else(|| ApiError::NotFound("no such payment".into()))
}

/// Every transition of one payment, oldest first.
pub async fn get_timeline(
    State(state): State<AppState>,
    caller: Caller,
    Path(payment_id): Path<String>,
) -> Result<Json<Vec<TimelineEntry>>, ApiError> {
    let payment_id = parse_id(&payment_id)?;
    authorize(&state, &caller, &payment_id).await?;
    let rows = sqlx::query_as::<_, TimelineEntry>(
        "SELECT version, status, previous_status, status_seq AS seq, fact_id, source, rule, inbound_seq, trace_id, occurred_at, recorded_at
         FROM payment_timeline WHERE tenant = $1 AND payment_id = $2 ORDER BY version",
    )
    .bind(caller.tenant.as_str())
    .bind(payment_id.as_str())
    .fetch_all(&state.db)
    .await?;
    if rows.is_empty() {
        return Err(ApiError::NotFound("no such payment".into()));
    }
    Ok(Json(rows))
}

/// A raw fact as kept in the evidence.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct FactEvidence {
    /// The fact's id.
    pub fact_id: String,
    /// Its sequence in PAYTRACK_IN.
    pub inbound_seq: i64,
    /// What it says, parsed.
    pub source: serde_json::Value,
    /// The headers kept.
    pub raw_headers: serde_json::Value,
    /// The body exactly as received (stored as bytes; rendered as the UTF-8 text
    /// ingest accepted).
    #[serde(serialize_with = "body_as_text")]
    pub raw_body: Vec<u8>,
    /// When ingest received it.
    pub received_at: DateTime<Utc>,
}

/// Renders a stored raw body as text: ingest only accepts UTF-8 bodies, so this is
/// the body as received (anything else is shown with replacement characters).
fn body_as_text<S: serde::Serializer>(body: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&String::from_utf8_lossy(body))
}

/// A session's subscribe to the payment's channel.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct SessionEvidence {
    /// The session.
    pub session_id: String,
    /// The token's subject.
    pub subject: String,
    /// `websocket` or `sse`.
    pub transport: String,
    /// The outcome (position, recovered, since).
    pub detail: serde_json::Value,
    /// When.
    pub at: DateTime<Utc>,
}

/// `GET /v1/payments/{id}/evidence`: everything a status traces to.
#[derive(Debug, Serialize)]
pub struct EvidencePack {
    /// Current state.
    pub payment: PaymentView,
    /// Every transition with its cause and rule.
    pub timeline: Vec<TimelineEntry>,
    /// Every fact received for the payment, applied or not, with its raw payload.
    pub facts: Vec<FactEvidence>,
    /// Which sessions subscribed to the payment's channel, and from where.
    pub sessions: Vec<SessionEvidence>,
}

/// The payment's evidence pack.
pub async fn get_evidence(
    State(state): State<AppState>,
    caller: Caller,
    Path(payment_id): Path<String>,
) -> Result<Json<EvidencePack>, ApiError> {
    let Json(payment) = get_payment(State(state.clone()), caller.clone(), Path(payment_id.clone())).await?;
    let Json(timeline) = get_timeline(State(state.clone()), caller.clone(), Path(payment_id)).await?;
    let tenant = caller.tenant.as_str();
    let facts = sqlx::query_as::<_, FactEvidence>(
        "SELECT fact_id, inbound_seq, source, raw_headers, raw_body, received_at
         FROM inbound_facts WHERE tenant = $1 AND payment_id = $2 ORDER BY inbound_seq",
    )
    .bind(tenant)
    .bind(&payment.payment_id)
    .fetch_all(&state.db)
    .await?;
    let sessions = sqlx::query_as::<_, SessionEvidence>(
        "SELECT session_id, subject, transport, detail, at
         FROM session_audit WHERE tenant = $1 AND channel = $2 AND kind = 'subscribe' ORDER BY session_seq",
    )
    .bind(tenant)
    .bind(format!("payment:{}", payment.payment_id))
    .fetch_all(&state.db)
    .await?;
    Ok(Json(EvidencePack {
        payment,
        timeline,
        facts,
        sessions,
    }))
}

/// The canonical status model, as data.
pub async fn status_model() -> Json<&'static StatusModel> {
    Json(StatusModel::get())
}
