//! The list's query string, checked whole before any query runs: every parameter is
//! known, every value well-formed and in range, else 400 `invalid_request` naming
//! the parameter. `status` may repeat or hold a comma list; no other parameter may
//! repeat.

use chrono::{DateTime, Utc};
use paytrack_shared::{MerchantId, Status};
use serde::{Deserialize, Serialize};

use super::cursor::{Cursor, CursorError};
use crate::error::ApiError;

/// Largest page.
pub const MAX_LIMIT: i64 = 200;
/// Page size when none is asked for.
pub const DEFAULT_LIMIT: i64 = 50;
/// Longest `q`.
const MAX_Q_LEN: usize = 256;

/// The sort order: by creation or last change, newest or oldest first; ties by
/// payment id in the same direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Order {
    /// `-created_at`: newest first (the default).
    #[default]
    #[serde(rename = "-created_at")]
    CreatedDesc,
    /// `created_at`: oldest first.
    #[serde(rename = "created_at")]
    CreatedAsc,
    /// `-updated_at`: most recently changed first.
    #[serde(rename = "-updated_at")]
    UpdatedDesc,
    /// `updated_at`: least recently changed first.
    #[serde(rename = "updated_at")]
    UpdatedAsc,
}

impl Order {
    /// Every order, as `order=` spells it.
    const ALL: [Order; 4] = [
        Order::CreatedDesc,
        Order::CreatedAsc,
        Order::UpdatedDesc,
        Order::UpdatedAsc,
    ];

    /// As `order=` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Order::CreatedDesc => "-created_at",
            Order::CreatedAsc => "created_at",
            Order::UpdatedDesc => "-updated_at",
            Order::UpdatedAsc => "updated_at",
        }
    }

    /// The column sorted by.
    pub fn column(self) -> &'static str {
        match self {
            Order::CreatedDesc | Order::CreatedAsc => "created_at",
            Order::UpdatedDesc | Order::UpdatedAsc => "updated_at",
        }
    }

    /// Whether newest first.
    pub fn descending(self) -> bool {
        matches!(self, Order::CreatedDesc | Order::UpdatedDesc)
    }
}

/// `payin` or `payout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Money in from a payer.
    Payin,
    /// Money out to a merchant or beneficiary.
    Payout,
}

impl Direction {
    /// As the list's `direction` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Payin => "payin",
            Direction::Payout => "payout",
        }
    }
}

/// The checked query.
#[derive(Debug, Default)]
pub struct ListQuery {
    /// Only these statuses (empty: any).
    pub statuses: Vec<Status>,
    /// Only this merchant.
    pub merchant: Option<MerchantId>,
    /// Only payments routed to this provider.
    pub provider: Option<String>,
    /// Only this rail.
    pub rail: Option<String>,
    /// Only this direction.
    pub direction: Option<Direction>,
    /// Amount at least (minor units).
    pub amount_min: Option<i64>,
    /// Amount at most (minor units).
    pub amount_max: Option<i64>,
    /// Only this ISO 4217 currency.
    pub currency: Option<String>,
    /// Created strictly after.
    pub created_after: Option<DateTime<Utc>>,
    /// Created strictly before.
    pub created_before: Option<DateTime<Utc>>,
    /// Last changed strictly after.
    pub updated_after: Option<DateTime<Utc>>,
    /// Last changed strictly before.
    pub updated_before: Option<DateTime<Utc>>,
    /// An exact payment id, provider reference or trace id.
    pub q: Option<String>,
    /// The sort order.
    pub order: Order,
    /// Where the page starts.
    pub cursor: Option<Cursor>,
    /// Page size.
    pub limit: i64,
}

fn invalid(parameter: &str, message: impl Into<String>) -> ApiError {
    ApiError::InvalidParameter {
        parameter: parameter.to_owned(),
        message: message.into(),
    }
}

fn has_control(value: &str) -> bool {
    value.chars().any(char::is_control)
}

fn name(parameter: &str, value: &str) -> Result<String, ApiError> {
    if value.is_empty()
        || value.len() > 32
        || !value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(invalid(parameter, "must be 1 to 32 characters of a-z, 0-9 and '_'"));
    }
    Ok(value.to_owned())
}

fn amount(parameter: &str, value: &str) -> Result<i64, ApiError> {
    value
        .parse::<i64>()
        .ok()
        .filter(|a| *a >= 0)
        .ok_or_else(|| invalid(parameter, "must be a whole number of minor units, 0 or more"))
}

fn time(parameter: &str, value: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| invalid(parameter, "must be an RFC 3339 time, e.g. 2026-12-01T00:00:00Z"))
}

impl ListQuery {
    /// Checks `pairs` (the query string, in order). `merchant_id` is accepted as
    /// another spelling of `merchant` (the edge's reload URLs use it).
    pub fn parse(pairs: &[(String, String)]) -> Result<ListQuery, ApiError> {
        let mut query = ListQuery {
            limit: DEFAULT_LIMIT,
            ..ListQuery::default()
        };
        let mut seen: Vec<&str> = Vec::new();
        let mut raw_cursor = None;
        for (key, value) in pairs {
            let key = key.as_str();
            if key != "status" {
                let canonical = if key == "merchant_id" { "merchant" } else { key };
                if seen.contains(&canonical) {
                    return Err(invalid(key, "may be given once"));
                }
                seen.push(canonical);
            }
            let value = value.as_str();
            match key {
                "status" => {
                    for part in value.split(',') {
                        let status = Status::parse(part.trim()).ok_or_else(|| {
                            invalid(
                                "status",
                                format!("unknown status {:?}", part.chars().take(40).collect::<String>()),
                            )
                        })?;
                        if !query.statuses.contains(&status) {
                            query.statuses.push(status);
                        }
                    }
                }
                "merchant" | "merchant_id" => {
                    query.merchant =
                        Some(MerchantId::new(value).map_err(|_| invalid(key, "is not a valid merchant id"))?);
                }
                "provider" => query.provider = Some(name(key, value)?),
                "rail" => query.rail = Some(name(key, value)?),
                "direction" => {
                    query.direction = Some(match value {
                        "payin" => Direction::Payin,
                        "payout" => Direction::Payout,
                        _ => return Err(invalid(key, "must be payin or payout")),
                    });
                }
                "amount_min" => query.amount_min = Some(amount(key, value)?),
                "amount_max" => query.amount_max = Some(amount(key, value)?),
                "currency" => {
                    if value.len() != 3 || !value.bytes().all(|b| b.is_ascii_uppercase()) {
                        return Err(invalid(key, "must be an ISO 4217 code in upper case, e.g. USD"));
                    }
                    query.currency = Some(value.to_owned());
                }
                "created_after" => query.created_after = Some(time(key, value)?),
                "created_before" => query.created_before = Some(time(key, value)?),
                "updated_after" => query.updated_after = Some(time(key, value)?),
                "updated_before" => query.updated_before = Some(time(key, value)?),
                "q" => {
                    if value.is_empty() || value.len() > MAX_Q_LEN || has_control(value) {
                        return Err(invalid(
                            key,
                            format!("must be 1 to {MAX_Q_LEN} bytes without control characters"),
                        ));
                    }
                    query.q = Some(value.to_owned());
                }
                "order" => {
                    query.order = Order::ALL
                        .into_iter()
                        .find(|o| o.as_str() == value)
                        .ok_or_else(|| invalid(key, "must be -created_at, created_at, -updated_at or updated_at"))?;
                }
                "cursor" => raw_cursor = Some(value),
                "limit" => {
                    query.limit = value
                        .parse::<i64>()
                        .ok()
                        .filter(|l| (1..=MAX_LIMIT).contains(l))
                        .ok_or_else(|| invalid(key, format!("must be a whole number from 1 to {MAX_LIMIT}")))?;
                }
                _ => {
                    let shown: String = key.chars().filter(|c| !c.is_control()).take(64).collect();
                    return Err(invalid(&shown, "is not a parameter of this list"));
                }
            }
        }
        if let (Some(min), Some(max)) = (query.amount_min, query.amount_max)
            && min > max
        {
            return Err(invalid("amount_min", "must not be above amount_max"));
        }
        if let Some(raw) = raw_cursor {
            query.cursor = Some(Cursor::decode(raw, query.order).map_err(|e| match e {
                CursorError::Malformed => invalid("cursor", e.to_string()),
                CursorError::OtherOrder(_) => invalid("cursor", e.to_string()),
            })?);
        }
        Ok(query)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(query: &str) -> Result<ListQuery, ApiError> {
        let pairs: Vec<(String, String)> = url_pairs(query);
        ListQuery::parse(&pairs)
    }

    fn url_pairs(query: &str) -> Vec<(String, String)> {
        query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect()
    }

    fn parameter(result: Result<ListQuery, ApiError>) -> Option<String> {
        match result {
            Err(ApiError::InvalidParameter { parameter, .. }) => Some(parameter),
            _ => None,
        }
    }

    #[test]
    fn filters_parse_and_statuses_combine() {
        let query = parse(
            "status=pending,failed&status=held&merchant=m_1&amount_min=5&amount_max=10&order=updated_at&limit=200",
        )
        .unwrap();
        assert_eq!(query.statuses, vec![Status::Pending, Status::Failed, Status::Held]);
        assert_eq!(query.merchant.map(|m| m.to_string()).as_deref(), Some("m_1"));
        assert_eq!((query.amount_min, query.amount_max), (Some(5), Some(10)));
        assert_eq!((query.order, query.limit), (Order::UpdatedAsc, 200));
        assert_eq!(parse("").unwrap().limit, DEFAULT_LIMIT);
    }

    #[test]
    fn every_bad_parameter_is_named() {
        for (query, named) in [
            ("colour=red", "colour"),
            ("status=bogus", "status"),
            ("merchant=a%20b", "merchant"),
            ("merchant=m&merchant_id=m", "merchant_id"),
            ("direction=sideways", "direction"),
            ("amount_min=-1", "amount_min"),
            ("amount_min=9&amount_max=1", "amount_min"),
            ("amount_max=x", "amount_max"),
            ("currency=usd", "currency"),
            ("created_after=yesterday", "created_after"),
            ("updated_before=2026-13-01", "updated_before"),
            ("order=name", "order"),
            ("limit=0", "limit"),
            ("limit=201", "limit"),
            ("limit=ten", "limit"),
            ("limit=5&limit=6", "limit"),
            ("cursor=nope", "cursor"),
            ("q=", "q"),
        ] {
            assert_eq!(parameter(parse(query)).as_deref(), Some(named), "{query}");
        }
    }
}
