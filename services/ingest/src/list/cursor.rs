//! The list's opaque cursor: base64url of the sort key of the last row served (its
//! time and payment id) and the order it was served in. A cursor names a position in
//! one order, so it is refused with another.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::query::Order;

/// Longest cursor accepted (an encoded one is about 150 characters).
const MAX_CURSOR_LEN: usize = 512;

/// Where the next page starts: after this row, in this order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// The order the cursor was made in.
    #[serde(rename = "o")]
    pub order: Order,
    /// The last row's sort time (its `created_at` or `updated_at`).
    #[serde(rename = "t")]
    pub at: DateTime<Utc>,
    /// The last row's payment id (ties on time are ordered by it).
    #[serde(rename = "p")]
    pub payment_id: String,
}

/// Why a cursor is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    /// Not a cursor this service made.
    #[error("not a cursor of this list")]
    Malformed,
    /// A cursor of another order.
    #[error("this cursor was made for order {0}; pass that order, or no cursor")]
    OtherOrder(&'static str),
}

impl Cursor {
    /// The cursor as passed in `cursor=`.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Reads `raw`, which must have been made for `order`.
    pub fn decode(raw: &str, order: Order) -> Result<Cursor, CursorError> {
        if raw.is_empty() || raw.len() > MAX_CURSOR_LEN {
            return Err(CursorError::Malformed);
        }
        let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| CursorError::Malformed)?;
        let cursor: Cursor = serde_json::from_slice(&bytes).map_err(|_| CursorError::Malformed)?;
        if paytrack_shared::ids::validate_token(&cursor.payment_id, "payment").is_err() {
            return Err(CursorError::Malformed);
        }
        if cursor.order != order {
            return Err(CursorError::OtherOrder(cursor.order.as_str()));
        }
        Ok(cursor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_in_its_own_order_only() {
        let cursor = Cursor {
            order: Order::CreatedDesc,
            at: Utc::now(),
            payment_id: "pay_1".into(),
        };
        let raw = cursor.encode();
        assert_eq!(Cursor::decode(&raw, Order::CreatedDesc), Ok(cursor));
        assert_eq!(
            Cursor::decode(&raw, Order::UpdatedDesc),
            Err(CursorError::OtherOrder("-created_at"))
        );
        for bad in [
            "",
            "pay_1",
            "!!!",
            &"A".repeat(600),
            &URL_SAFE_NO_PAD.encode(b"{\"o\":1}"),
        ] {
            assert_eq!(
                Cursor::decode(bad, Order::CreatedDesc),
                Err(CursorError::Malformed),
                "{bad}"
            );
        }
    }
}
