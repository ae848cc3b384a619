//! Operators' view of alerts: `GET /v1/alerts` lists the tenant's payment alerts
//! (newest first, each linking to its payment's evidence, with its acknowledgement
//! if any), and `POST /v1/alerts/{id}/ack` records who acknowledged one, when and
//! why. The acknowledgement is an audit row (`alert_acks`), written once: the
//! first acknowledgement stands and a repeat answers it again. This is ingest's one
//! write to PostgreSQL: it changes no payment, only the record of who looked.

use axum::Json;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use paytrack_shared::TenantId;
use paytrack_shared::auth::{AuthError, bearer};
use serde::{Deserialize, Serialize};

use crate::app::AppState;
use crate::error::ApiError;
use crate::params;

/// An operator: an operator JWT without `channels`, or a backend API key (whose
/// actor is `api_key`). End users' tokens are refused with 403.
pub struct Operator {
    tenant: TenantId,
    actor: String,
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
        let token = bearer(header).ok_or_else(|| ApiError::Unauthorized(AuthError::Missing.to_string()))?;
        if let Some(tenant) = state.api_keys.tenant_of(token) {
            return Ok(Operator {
                tenant,
                actor: "api_key".to_owned(),
            });
        }
        let claims = state
            .jwt
            .verify(token)
            .map_err(|e| ApiError::Unauthorized(e.to_string()))?;
        if claims.channels.is_some() {
            return Err(ApiError::Forbidden("alerts are for operators".into()));
        }
        Ok(Operator {
            tenant: claims.tenant,
            actor: claims.sub,
        })
    }
}

/// One alert as listed.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct AlertItem {
    /// The alert's id.
    pub alert_id: String,
    /// `unclear_pending`, `source_mismatch`, `trace_gap`.
    pub kind: String,
    /// The payment.
    pub payment_id: String,
    /// Its merchant, when known.
    pub merchant_id: Option<String>,
    /// What was observed.
    pub detail: String,
    /// The payment's evidence.
    pub evidence: String,
    /// When it was raised.
    pub raised_at: DateTime<Utc>,
    /// The trace.
    pub trace_id: String,
    /// Who acknowledged it, if anyone.
    pub acked_by: Option<String>,
    /// When.
    pub acked_at: Option<DateTime<Utc>>,
    /// Why, in the operator's words.
    pub ack_note: Option<String>,
}

/// Filters of the list.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    /// Only this kind.
    kind: Option<String>,
    /// Only this payment's.
    payment_id: Option<String>,
    /// Only unacknowledged (`false`) or acknowledged (`true`) ones.
    acknowledged: Option<bool>,
}

/// The list.
#[derive(Debug, Serialize)]
pub struct AlertList {
    /// Newest first, at most 500.
    pub items: Vec<AlertItem>,
}

const SELECT: &str = "SELECT a.alert_id, a.kind, a.payment_id, a.merchant_id, a.detail, a.evidence, a.raised_at,
        a.trace_id, k.actor AS acked_by, k.acked_at, k.note AS ack_note
     FROM alerts a LEFT JOIN alert_acks k ON k.tenant = a.tenant AND k.alert_id = a.alert_id";

/// `GET /v1/alerts`.
#[utoipa::path(get, path = "/v1/alerts", tag = "alerts",
    params(("kind" = Option<String>, Query, description = "unclear_pending, source_mismatch, trace_gap"),
        ("payment_id" = Option<String>, Query), ("acknowledged" = Option<bool>, Query)),
    responses((status = 200, description = "items: newest first, each with its evidence link and acknowledgement", body = Object),
        (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
        (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    operator: Operator,
    Query(q): Query<ListQuery>,
) -> Result<Json<AlertList>, ApiError> {
    let items = sqlx::query_as::<_, AlertItem>(&format!(
        "{SELECT}
         WHERE a.tenant = $1 AND ($2::TEXT IS NULL OR a.kind = $2) AND ($3::TEXT IS NULL OR a.payment_id = $3)
           AND ($4::BOOLEAN IS NULL OR (k.alert_id IS NOT NULL) = $4)
         ORDER BY a.raised_at DESC, a.alert_seq DESC LIMIT 500"
    ))
    .bind(operator.tenant.as_str())
    .bind(params::token("kind", q.kind.as_deref())?)
    .bind(params::token("payment_id", q.payment_id.as_deref())?)
    .bind(q.acknowledged)
    .fetch_all(&state.db)
    .await?;
    Ok(Json(AlertList { items }))
}

/// The acknowledgement's body (optional).
#[derive(Debug, Default, Deserialize)]
pub struct AckBody {
    /// Why, in the operator's words.
    note: Option<String>,
}

/// `POST /v1/alerts/{id}/ack`.
#[utoipa::path(post, path = "/v1/alerts/{alert_id}/ack", tag = "alerts",
    params(("alert_id" = String, Path)),
    request_body(content = Object, description = r#"{"note": ".."} (optional)"#),
    responses((status = 200, description = "The alert with its (first) acknowledgement", body = Object),
        (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
        (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn ack(
    State(state): State<AppState>,
    operator: Operator,
    Path(alert_id): Path<String>,
    body: Option<Json<AckBody>>,
) -> Result<Json<AlertItem>, ApiError> {
    let alert_id = params::alert_id(&alert_id)?.to_owned();
    let note = body.and_then(|Json(b)| b.note);
    if note.as_deref().is_some_and(|n| n.len() > 2_000 || n.contains('\0')) {
        return Err(ApiError::Malformed("note: at most 2000 characters, no NUL".into()));
    }
    let tenant = operator.tenant.as_str();
    let inserted = sqlx::query(
        "INSERT INTO alert_acks (tenant, alert_id, actor, note, acked_at)
         SELECT tenant, alert_id, $3, $4, now() FROM alerts WHERE tenant = $1 AND alert_id = $2
         ON CONFLICT (tenant, alert_id) DO NOTHING",
    )
    .bind(tenant)
    .bind(&alert_id)
    .bind(&operator.actor)
    .bind(&note)
    .execute(&state.db)
    .await?;
    let item = sqlx::query_as::<_, AlertItem>(&format!("{SELECT} WHERE a.tenant = $1 AND a.alert_id = $2"))
        .bind(tenant)
        .bind(&alert_id)
        .fetch_optional(&state.db)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such alert".into()))?;
    if inserted.rows_affected() == 1 {
        tracing::info!(tenant, alert_id, actor = %operator.actor, "alert acknowledged");
    }
    Ok(Json(item))
}
