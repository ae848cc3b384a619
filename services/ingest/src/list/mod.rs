//! `GET /v1/payments`: a page of the tenant's payments, filtered ([`query`]), newest
//! first by default, paged by an opaque cursor ([`cursor`]) on the sort key (time,
//! then payment id), with the `position` of docs/contract.md §6. Within a creation
//! order a payment that moves is neither repeated nor skipped: its key never changes.
//!
//! `position` is read BEFORE the page, from `projector_positions` (the projector's safe
//! low-water mark of PAYTRACK_STATUS: every message at or below it is committed in the
//! projection). So every change up to `position` is in the page; the page may also show
//! newer changes, whose events a client subscribing with `since = position` receives
//! again and recognises by `version`. Nothing can fall between the page and the stream.

pub mod cursor;
pub mod query;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use chrono::{DateTime, Utc};
use paytrack_shared::envelope::Position;
use paytrack_shared::subjects;
use serde::Serialize;
use sqlx::{Postgres, QueryBuilder};

use crate::app::AppState;
use crate::auth::{Caller, Scope};
use crate::error::ApiError;
use crate::payment_state::PaymentState;
use cursor::Cursor;
use query::{ListQuery, Order};

/// One payment of the list.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ListItem {
    /// The payment's current state, as `GET /v1/payments/{id}` shows it too.
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub state: PaymentState,
    /// When the projection first held the payment (the list's creation order).
    pub created_at: DateTime<Utc>,
}

/// The answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ListPage {
    /// The page, in the order asked for (newest first by default).
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
    pairs: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<ListPage>, ApiError> {
    let Query(pairs) = pairs.map_err(|rejection| ApiError::Invalid(rejection.body_text()))?;
    let query = ListQuery::parse(&pairs)?;
    // What a limited token may list: its merchants' payments and its own payments.
    let (scoped_merchants, scoped_payments): (Option<Vec<String>>, Option<Vec<String>>) = match &caller.scope {
        Scope::Tenant => (None, None),
        Scope::Limited { payments, merchants } => {
            if let Some(m) = &query.merchant
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
    let mut sql = select(&caller, &query);
    if let (Some(merchants), Some(payments)) = (scoped_merchants, scoped_payments) {
        sql.push(" AND (p.merchant_id = ANY(")
            .push_bind(merchants)
            .push(") OR p.payment_id = ANY(")
            .push_bind(payments)
            .push("))");
    }
    let (column, direction, compare) = match query.order.descending() {
        true => (query.order.column(), "DESC", "<"),
        false => (query.order.column(), "ASC", ">"),
    };
    if let Some(cursor) = &query.cursor {
        sql.push(format!(" AND (p.{column}, p.payment_id) {compare} ("))
            .push_bind(cursor.at)
            .push(", ")
            .push_bind(cursor.payment_id.clone())
            .push(")");
    }
    sql.push(format!(
        " ORDER BY p.{column} {direction}, p.payment_id {direction} LIMIT "
    ))
    .push_bind(query.limit + 1);
    let mut items = sql.build_query_as::<ListItem>().fetch_all(&state.db).await?;
    let more = items.len() as i64 > query.limit;
    items.truncate(usize::try_from(query.limit).unwrap_or(usize::MAX));
    let next_cursor = more.then(|| items.last().map(|item| next(query.order, item))).flatten();
    Ok(Json(ListPage {
        items,
        next_cursor,
        position: Position {
            epoch,
            seq: u64::try_from(seq).unwrap_or(0),
        },
    }))
}

/// The cursor after `item` in `order`.
fn next(order: Order, item: &ListItem) -> String {
    let at = match order {
        Order::CreatedDesc | Order::CreatedAsc => item.created_at,
        Order::UpdatedDesc | Order::UpdatedAsc => item.state.updated_at,
    };
    Cursor {
        order,
        at,
        payment_id: item.state.payment_id.clone(),
    }
    .encode()
}

/// The page query up to its filters (every value bound, never spliced).
fn select<'q>(caller: &Caller, query: &ListQuery) -> QueryBuilder<'q, Postgres> {
    let mut sql = QueryBuilder::new(format!(
        "SELECT p.payment_id, p.merchant_id, p.status, p.version, p.status_seq AS seq, {final_} AS final, {why} AS not_final_because, {direction} AS direction, {payout_status} AS payout_status, p.amount_minor,
                p.provider, p.currency, p.rail, p.amounts AS amounts,
                CASE WHEN p.at_risk_until > now() THEN COALESCE((p.amounts->>'net_minor')::bigint, 0) ELSE 0 END
                  AS at_risk_minor,
                CASE WHEN p.at_risk_until > now() THEN p.at_risk_until END AS at_risk_until, p.occurred_at,
                p.created_at, p.updated_at
         FROM payments p
         WHERE p.tenant = ",
        final_ = paytrack_shared::db::PAYMENT_IS_FINAL,
        why = paytrack_shared::db::payment_not_final_because(),
        direction = paytrack_shared::db::PAYMENT_DIRECTION,
        payout_status = paytrack_shared::db::PAYOUT_STATUS,
    ));
    sql.push_bind(caller.tenant.to_string());
    if !query.statuses.is_empty() {
        let statuses: Vec<String> = query.statuses.iter().map(|s| s.as_str().to_owned()).collect();
        sql.push(" AND p.status = ANY(").push_bind(statuses).push(")");
    }
    let mut equal = |column: &str, value: Option<String>| {
        if let Some(value) = value {
            sql.push(format!(" AND {column} = ")).push_bind(value);
        }
    };
    equal("p.merchant_id", query.merchant.as_ref().map(|m| m.to_string()));
    equal("p.provider", query.provider.clone());
    equal("p.rail", query.rail.clone());
    equal("p.currency", query.currency.clone());
    equal(
        &format!("({})", paytrack_shared::db::PAYMENT_DIRECTION),
        query.direction.map(|d| d.as_str().to_owned()),
    );
    if let Some(min) = query.amount_min {
        sql.push(" AND p.amount_minor >= ").push_bind(min);
    }
    if let Some(max) = query.amount_max {
        sql.push(" AND p.amount_minor <= ").push_bind(max);
    }
    for (column, op, value) in [
        ("created_at", ">", query.created_after),
        ("created_at", "<", query.created_before),
        ("updated_at", ">", query.updated_after),
        ("updated_at", "<", query.updated_before),
    ] {
        if let Some(value) = value {
            sql.push(format!(" AND p.{column} {op} ")).push_bind(value);
        }
    }
    if let Some(q) = &query.q {
        sql.push(" AND (p.payment_id = ")
            .push_bind(q.clone())
            .push(" OR p.provider_ref = ")
            .push_bind(q.clone())
            .push(" OR p.trace_id = ")
            .push_bind(q.clone())
            .push(")");
    }
    sql
}
