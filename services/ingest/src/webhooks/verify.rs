//! Pieces every signature scheme uses: reading one header strictly, HMAC-SHA256
//! compared in constant time, the timestamp tolerance, and the delivery-id shape.

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use paytrack_shared::envelope::ProviderEvent;
use secrecy::{ExposeSecret, SecretBox};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// How far a signed timestamp may be from now, either way (Standard Webhooks'
/// reference libraries and Stripe's both use five minutes).
pub const TOLERANCE_SECS: i64 = 300;
/// Longest accepted delivery (event) id.
pub const MAX_DELIVERY_ID_LEN: usize = 128;
/// Longest accepted signature header.
pub const MAX_SIGNATURE_LEN: usize = 1024;
/// Most digits of a signed timestamp: Unix seconds below 10^11 (year 5138), so no
/// arithmetic on it can overflow.
pub const MAX_TIMESTAMP_DIGITS: usize = 11;

/// The one value of header `name`. Missing, repeated or not visible ASCII: 401
/// (the request is not authenticated by it).
pub fn one_header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, ApiError> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(value), None) => value
            .to_str()
            .map_err(|_| ApiError::BadSignature(format!("{name} is not visible ASCII"))),
        (None, _) => Err(ApiError::BadSignature(format!("{name} is missing"))),
        (Some(_), Some(_)) => Err(ApiError::BadSignature(format!("{name} is repeated"))),
    }
}

/// Parses Unix seconds (digits only) and checks them against now ± [`TOLERANCE_SECS`].
pub fn check_timestamp(raw: &str, now: i64) -> Result<i64, ApiError> {
    if raw.is_empty() || raw.len() > MAX_TIMESTAMP_DIGITS || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::BadSignature(
            "the timestamp must be Unix seconds (digits only)".into(),
        ));
    }
    let ts: i64 = raw
        .parse()
        .map_err(|_| ApiError::BadSignature("the timestamp must be Unix seconds".into()))?;
    if (now - ts).abs() > TOLERANCE_SECS {
        return Err(ApiError::BadSignature("the timestamp is outside the tolerance".into()));
    }
    Ok(ts)
}

/// HMAC-SHA256 of the concatenated `parts` under `key`.
pub fn hmac_sha256(key: &SecretBox<[u8]>, parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.expose_secret()).unwrap_or_else(|_| unreachable!());
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// Whether the hex `presented` signature equals `expected`, compared in constant
/// time (a malformed hex string never matches).
pub fn hex_matches(presented: &str, expected: &[u8; 32]) -> bool {
    let mut decoded = [0u8; 32];
    if hex::decode_to_slice(presented, &mut decoded).is_err() {
        return false;
    }
    bool::from(decoded.ct_eq(expected))
}

/// Checks a provider's delivery id is a short token (it becomes part of a
/// `Nats-Msg-Id`): 400 otherwise.
pub fn check_delivery_id(id: &str, what: &str) -> Result<(), ApiError> {
    let token_ish = |b: u8| b.is_ascii_alphanumeric() || b"_-.:~+=/@".contains(&b);
    if id.is_empty() || id.len() > MAX_DELIVERY_ID_LEN || !id.bytes().all(token_ish) {
        return Err(ApiError::Malformed(format!(
            "{what} must be 1-{MAX_DELIVERY_ID_LEN} characters of [A-Za-z0-9_.:~+=/@-]"
        )));
    }
    Ok(())
}

/// paytrack's rail for a provider's own payment method name, from the provider's
/// `table` (`(provider's name, rail)`); None for a method no rail matches.
pub fn rail_of(table: &[(&str, &str)], method: &str) -> Option<String> {
    looked_up(table, method)
}

/// paytrack's status for a provider's event type, from the provider's `table`
/// (`(event type, status)`); None for a type that moves no status.
pub fn status_of(table: &[(&str, &str)], event_type: &str) -> Option<String> {
    looked_up(table, event_type)
}

/// The value `table` pairs with `key`, owned.
fn looked_up(table: &[(&str, &str)], key: &str) -> Option<String> {
    table
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, value)| (*value).to_owned())
}

/// A provider event with what every scheme names (the provider, the delivery, its
/// type and status, when it happened, the provider's payment) and every other field
/// empty: each scheme then fills in only what its shape carries.
pub fn provider_event(
    provider: &str,
    delivery_id: &str,
    event_type: String,
    status: Option<String>,
    occurred_at: DateTime<Utc>,
    provider_ref: String,
) -> ProviderEvent {
    ProviderEvent {
        status,
        occurred_at: Some(occurred_at),
        provider_ref: Some(provider_ref),
        ..ProviderEvent::new(provider, delivery_id, event_type)
    }
}

/// Refuses control characters in a text paytrack keeps.
pub fn check_text(field: &str, text: Option<&str>) -> Result<(), ApiError> {
    if text.is_some_and(|t| t.chars().any(char::is_control)) {
        return Err(ApiError::Malformed(format!("{field} contains a control character")));
    }
    Ok(())
}

/// Whether any string (or key) of `value` holds a NUL, which PostgreSQL can store
/// neither in `text` nor in `jsonb`.
pub fn contains_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(contains_nul),
        serde_json::Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)),
        _ => false,
    }
}

/// Parses a verified body as JSON, refusing NULs anywhere in it and a key repeated
/// within one object (400).
pub fn parse_json(body: &[u8]) -> Result<serde_json::Value, ApiError> {
    let value = super::strict_json::parse(body).map_err(|e| ApiError::Malformed(format!("invalid event body: {e}")))?;
    if contains_nul(&value) {
        return Err(ApiError::Malformed(
            "the body contains a NUL character (\\u0000)".into(),
        ));
    }
    Ok(value)
}

/// An ISO 4217 code from a provider's currency (Stripe sends lower case).
pub fn currency(raw: &str) -> Result<String, ApiError> {
    let upper = raw.to_ascii_uppercase();
    if upper.len() != 3 || !upper.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(ApiError::Malformed("currency must be an ISO 4217 code".into()));
    }
    Ok(upper)
}

/// The headers kept as evidence, those of `names` that were sent.
pub fn evidence_headers(headers: &HeaderMap, names: &[&str]) -> std::collections::BTreeMap<String, String> {
    names
        .iter()
        .filter_map(|name| {
            let value = headers.get(*name)?.to_str().ok()?;
            Some(((*name).to_owned(), value.to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_outside_five_minutes_either_way_are_refused() {
        let now = 1_700_000_000;
        assert!(check_timestamp(&(now - 300).to_string(), now).is_ok());
        assert!(check_timestamp(&(now + 300).to_string(), now).is_ok());
        assert!(check_timestamp(&(now - 301).to_string(), now).is_err());
        assert!(check_timestamp(&(now + 301).to_string(), now).is_err());
        for bad in ["", "-1", "+5", "1e9", "99999999999999", " 1"] {
            assert!(check_timestamp(bad, now).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hex_signatures_match_only_exactly() {
        let key = SecretBox::new(b"k".as_slice().into());
        let mac = hmac_sha256(&key, &[b"body"]);
        assert!(hex_matches(&hex::encode(mac), &mac));
        assert!(hex_matches(&hex::encode_upper(mac), &mac));
        let mut other = mac;
        other[31] ^= 1;
        assert!(!hex_matches(&hex::encode(other), &mac));
        assert!(!hex_matches("zz", &mac));
        assert!(!hex_matches(&hex::encode(&mac[..31]), &mac));
    }
}
