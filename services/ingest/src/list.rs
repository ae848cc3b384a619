//! `GET /v1/payments?merchant_id=&status=&cursor=&limit=`: a page of the tenant's
//! payments with the `position` of docs/contract.md §6.
//!
//! `position` is read BEFORE the page, from `projector_positions` (the projector's safe
//! low-water mark of PAYTRACK_STATUS: every message at or below it is committed in the
//! projection). So every change up to `position` is in the page; the page may also show
//! newer changes, whose events a client subscribing with `since = position` receives
//! again and recognises by `version`. Nothing can fall between the page and the stream.

use axum::Json;
use axum::extract::{Query, State};
use chrono::{DateTime, Utc};
use paytrack_shared::envelope::Position;
use paytrack_shared::{MerchantId, Status, subjects};
use serde::{Deserialize, Serialize};

use crate::app::AppState;
use crate::auth::{Caller, Scope};
use crate::error::ApiError;

/// Largest page.
const MAX_LIMIT: i64 = 500;
/// Page size when none is asked for.
const DEFAULT_LIMIT: i64 = 100;

/// The query string.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    /// Only this merchant's payments.
    pub merchant_id: Option<String>,
    /// Only payments in this canonical status.
    pub status: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size (at most 500).
    pub limit: Option<i64>,
}

/// One payment of the list.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ListItem {
    /// The payment.
    pub payment_id: String,
    /// Its merchant.
    pub merchant_id: String,
    /// Current canonical status.
    pub status: String,
    /// Version of that status.
    pub version: i64,
    /// PAYTRACK_STATUS sequence of the transition.
    pub seq: i64,
    /// Whether the status is final.
    #[serde(rename = "final")]
    #[sqlx(rename = "final")]
    pub is_final: bool,
    /// Why it is not final (null when it is): `not_terminal`, `rail_unknown`,
    /// `return_window_open_until:<time>`, `ledger_unpostable`, `awaiting_persisted`
    /// or `awaiting_ledger_posted`.
    pub not_final_because: Option<String>,
    /// `payin` (money in from a payer) or `payout` (money out to a merchant or
    /// beneficiary).
    pub direction: String,
    /// A payout's status in its own words (`initiated`, `pending`, `paid`, `failed`,
    /// `returned`, `cancelled`); null for a payment.
    pub payout_status: Option<String>,
    /// Amount in minor units, when known.
    pub amount_minor: Option<i64>,
    /// ISO 4217, when known.
    pub currency: Option<String>,
    /// The rail, when known.
    pub rail: Option<String>,
    /// Where the money is, in minor units: `authorised_minor`, `captured_minor`,
    /// `refunded_minor`, `returned_minor`, `disputed_minor` (withheld by open or lost
    /// disputes), `net_minor` and `refunded` (fully refunded); null for a payment
    /// projected before amounts existed.
    pub amounts: Option<serde_json::Value>,
    /// How much of the net amount refunds and disputes may still take back: the net
    /// while the rail's refund and dispute windows are open, else 0.
    pub at_risk_minor: i64,
    /// Until when it is at risk (null: nothing is).
    pub at_risk_until: Option<DateTime<Utc>>,
    /// When the cause happened.
    pub occurred_at: DateTime<Utc>,
    /// When the projection last changed.
    pub updated_at: DateTime<Utc>,
}

/// The answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ListPage {
    /// The page, by payment id.
    pub items: Vec<ListItem>,
    /// Pass as `cursor` for the next page; null on the last one.
    pub next_cursor: Option<String>,
    /// Subscribe with `since` = this to miss nothing after the page.
    #[schema(value_type = Object)]
    pub position: Position,
}

/// The list.
pub async fn list_payments(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> Result<Json<ListPage>, ApiError> {
    let merchant = query
        .merchant_id
        .as_deref()
        .map(|m| MerchantId::new(m).map_err(|_| ApiError::Malformed("merchant_id is not a valid id".into())))
        .transpose()?;
    let status = query
        .status
        .as_deref()
        .map(|s| Status::parse(s).ok_or_else(|| ApiError::Malformed(format!("unknown status {s:?}"))))
        .transpose()?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    // What a limited token may list: its merchants' payments and its own payments.
    let (scoped_merchants, scoped_payments): (Option<Vec<String>>, Option<Vec<String>>) = match &caller.scope {
        Scope::Tenant => (None, None),
        Scope::Limited { payments, merchants } => {
            if let Some(m) = &merchant
                && !merchants.contains(m)
                && payments.is_empty()
            {
                return Err(ApiError::Forbidden("this token does not grant that merchant".into()));
            }
            (
                Some(merchants.iter().map(|m| m.to_string()).collect()),
                Some(payments.iter().map(|p| p.to_string()).collect()),
            )
        }
    };
    // Position first: every change at or below it is already visible to the page query.
    let position: Option<(String, i64)> =
        sqlx::query_as("SELECT epoch, seq FROM projector_positions WHERE stream = $1")
            .bind(subjects::STREAM_STATUS)
            .fetch_optional(&state.db)
            .await?;
    let (epoch, seq) = position.unwrap_or_default();
    let sql = format!(
        "SELECT p.payment_id, p.merchant_id, p.status, p.version, p.status_seq AS seq, {final_} AS final, {why} AS not_final_because, {direction} AS direction, {payout_status} AS payout_status, p.amount_minor,
                p.currency, p.rail, p.amounts AS amounts,
                CASE WHEN p.at_risk_until > now() THEN COALESCE((p.amounts->>'net_minor')::bigint, 0) ELSE 0 END
                  AS at_risk_minor,
                CASE WHEN p.at_risk_until > now() THEN p.at_risk_until END AS at_risk_until, p.occurred_at, p.updated_at
         FROM payments p
         WHERE p.tenant = $1
           AND ($2::text IS NULL OR p.merchant_id = $2)
           AND ($3::text IS NULL OR p.status = $3)
           AND ($4::text IS NULL OR p.payment_id > $4)
           AND ($5::text[] IS NULL OR p.merchant_id = ANY($5) OR p.payment_id = ANY($6))
         ORDER BY p.payment_id
         LIMIT $7",
        final_ = paytrack_shared::db::PAYMENT_IS_FINAL,
        why = paytrack_shared::db::payment_not_final_because(),
        direction = paytrack_shared::db::PAYMENT_DIRECTION,
        payout_status = paytrack_shared::db::PAYOUT_STATUS,
    );
    let mut items = sqlx::query_as::<_, ListItem>(&sql)
        .bind(caller.tenant.as_str())
        .bind(merchant.as_ref().map(|m| m.as_str()))
        .bind(status.map(|s| s.as_str()))
        .bind(crate::params::token("cursor", query.cursor.as_deref())?)
        .bind(scoped_merchants)
        .bind(scoped_payments.unwrap_or_default())
        .bind(limit + 1)
        .fetch_all(&state.db)
        .await?;
    let more = items.len() as i64 > limit;
    items.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_cursor = more.then(|| items.last().map(|i| i.payment_id.clone())).flatten();
    Ok(Json(ListPage {
        items,
        next_cursor,
        position: Position {
            epoch,
            seq: u64::try_from(seq).unwrap_or(0),
        },
    }))
}
