//! Operators' view of alerts: `GET /v1/alerts` lists the tenant's alerts of every
//! kind (payment alerts linking to their payment's evidence, `dead_letter` alerts
//! naming the parked copy; newest first, each with its acknowledgement if any), and
//! `POST /v1/alerts/{id}/ack` records who acknowledged one, when and why. The
//! acknowledgement is a fact (`paytrack.alert.<tenant>._ack` in PAYTRACK_ALERT) the
//! projector stores once, so a rebuild restores it: the first acknowledgement
//! stands and a repeat answers it again. It changes no payment, only the record of
//! who looked.

use std::time::Duration;

use axum::Json;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use paytrack_shared::auth::{AuthError, bearer};
use paytrack_shared::envelope::{self, AlertAck, ENVELOPE_VERSION};
use paytrack_shared::telemetry::{self, HttpHeaders};
use paytrack_shared::{TenantId, msg_id, subjects};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

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
            actor: claims.sub.to_string(),
        })
    }
}

/// One alert as listed.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct AlertItem {
    /// The alert's id.
    pub alert_id: String,
    /// `unclear_pending`, `source_mismatch`, `trace_gap`, `sweep_quota`,
    /// `many_facts`, `dead_letter`.
    pub kind: String,
    /// The payment; none for a `dead_letter` (a parked message).
    pub payment_id: Option<String>,
    /// Its merchant, when known.
    pub merchant_id: Option<String>,
    /// What was observed.
    pub detail: String,
    /// The payment's evidence, or where a parked message's copy is
    /// (`paytrack.dead.<stream>.<consumer>`).
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
    params(("kind" = Option<String>, Query, description = "unclear_pending, source_mismatch, trace_gap, sweep_quota, many_facts, dead_letter"),
        ("payment_id" = Option<String>, Query), ("acknowledged" = Option<bool>, Query)),
    responses((status = 200, description = "items: newest first, each with its evidence link and acknowledgement", body = Object),
        (status = 400, body = paytrack_shared::problem::ProblemBody), (status = 401, body = paytrack_shared::problem::ProblemBody),
        (status = 403, body = paytrack_shared::problem::ProblemBody)),
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

/// How long an acknowledgement waits to be visible in the projection before it is
/// answered 202 (recorded, not yet visible) instead of 200 with the acknowledgement.
const ACK_VISIBLE_WITHIN: Duration = Duration::from_secs(10);

/// The longest alert id accepted in a path.
const MAX_ALERT_ID: usize = 512;

async fn fetch(state: &AppState, tenant: &TenantId, alert_id: &str) -> Result<Option<AlertItem>, ApiError> {
    Ok(
        sqlx::query_as::<_, AlertItem>(&format!("{SELECT} WHERE a.tenant = $1 AND a.alert_id = $2"))
            .bind(tenant.as_str())
            .bind(alert_id)
            .fetch_optional(&state.db)
            .await?,
    )
}

/// `POST /v1/alerts/{id}/ack`: publishes the acknowledgement as a fact, then answers
/// 200 with the alert and its (first) acknowledgement once the projection shows it,
/// or 202 with the alert as it is when that takes longer than
/// [`ACK_VISIBLE_WITHIN`] (the acknowledgement is recorded; `GET /v1/alerts` shows
/// it shortly). An alert already acknowledged answers its acknowledgement at once.
#[utoipa::path(post, path = "/v1/alerts/{alert_id}/ack", tag = "alerts",
    params(("alert_id" = String, Path)),
    request_body(content = Object, description = r#"{"note": ".."} (optional)"#),
    responses((status = 200, description = "The alert with its (first) acknowledgement", body = Object),
        (status = 202, description = "Recorded, not yet visible: the alert as it is; GET /v1/alerts shows the acknowledgement shortly", body = Object),
        (status = 400, body = paytrack_shared::problem::ProblemBody), (status = 401, body = paytrack_shared::problem::ProblemBody),
        (status = 403, body = paytrack_shared::problem::ProblemBody), (status = 404, body = paytrack_shared::problem::ProblemBody),
        (status = 503, body = paytrack_shared::problem::ProblemBody)),
    security(("bearer" = [])))]
pub async fn ack(
    State(state): State<AppState>,
    operator: Operator,
    headers: HeaderMap,
    Path(alert_id): Path<String>,
    body: Option<Json<AckBody>>,
) -> Result<Response, ApiError> {
    let alert_id = params::alert_id(&alert_id)?.to_owned();
    let note = body.and_then(|Json(b)| b.note);
    if note.as_deref().is_some_and(|n| n.len() > 2_000 || n.contains('\0')) {
        return Err(ApiError::Malformed("note: at most 2000 characters, no NUL".into()));
    }
    if alert_id.len() > MAX_ALERT_ID || alert_id.contains('\0') {
        return Err(ApiError::Malformed(format!(
            "alert id: at most {MAX_ALERT_ID} bytes, no NUL"
        )));
    }
    let span = tracing::info_span!(
        "ack_alert",
        trace_id = tracing::field::Empty,
        tenant = %operator.tenant,
        alert_id = %alert_id,
    );
    telemetry::continue_from(&span, &HttpHeaders(&headers));
    let trace_id = telemetry::record_trace_id(&span);
    async move {
        let tenant = &operator.tenant;
        let item = fetch(&state, tenant, &alert_id)
            .await?
            .ok_or_else(|| ApiError::NotFound("no such alert".into()))?;
        if item.acked_at.is_some() {
            return Ok(Json(item).into_response());
        }
        let fact = AlertAck {
            v: ENVELOPE_VERSION,
            tenant: tenant.clone(),
            alert_id: alert_id.clone(),
            actor: operator.actor.clone(),
            note,
            acked_at: Utc::now(),
            trace_id,
        };
        let mut nats_headers = async_nats::HeaderMap::new();
        telemetry::inject_nats(&tracing::Span::current(), &mut nats_headers);
        state
            .publisher
            .publish(
                subjects::alert_ack(tenant),
                nats_headers,
                msg_id::alert_ack(tenant, &alert_id),
                envelope::encode(&fact),
            )
            .await?;
        tracing::info!(actor = %operator.actor, "alert acknowledgement recorded");
        let deadline = tokio::time::Instant::now() + ACK_VISIBLE_WITHIN;
        loop {
            let item = fetch(&state, tenant, &alert_id)
                .await?
                .ok_or_else(|| ApiError::NotFound("no such alert".into()))?;
            if item.acked_at.is_some() {
                return Ok(Json(item).into_response());
            }
            if tokio::time::Instant::now() >= deadline {
                let mut response = (StatusCode::ACCEPTED, Json(item)).into_response();
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return Ok(response);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    .instrument(span)
    .await
}
