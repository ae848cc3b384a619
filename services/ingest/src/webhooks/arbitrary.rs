//! Arbitrary webhook input for the providers' property tests: header values (absent,
//! any bytes, printable text) and bodies (any bytes, or JSON shaped like a Stripe or
//! Razorpay event with arbitrary values), so each scheme is fed the same hostile mix.

use axum::http::HeaderMap;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use crate::error::ApiError;

/// A header value: absent, any bytes, or printable ASCII.
pub fn header_value() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        Just(None),
        proptest::collection::vec(any::<u8>(), 0..80).prop_map(Some),
        "[ -~]{0,70}".prop_map(|s| Some(s.into_bytes())),
    ]
}

/// A body: any bytes, or an event with both providers' fields and arbitrary values.
pub fn provider_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200),
        (any::<String>(), any::<i64>(), any::<String>(), any::<i64>()).prop_map(|(kind, amount, currency, at)| {
            serde_json::json!({
                "id": "evt_1", "event": kind, "type": kind, "created_at": at, "created": at,
                "payload": {"payment": {"entity": {"id": kind, "amount": amount, "currency": currency, "notes": []}}},
                "data": {"object": {"id": kind, "object": "charge", "amount": amount, "currency": currency}},
            })
            .to_string()
            .into_bytes()
        }),
    ]
}

/// Headers holding each arbitrary value that is a valid header value at all (an
/// absent one, or bytes no header can carry, is left out).
pub fn headers(values: &[(&'static str, &Option<Vec<u8>>)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in values {
        if let Some(value) = value.as_ref().and_then(|v| axum::http::HeaderValue::from_bytes(v).ok()) {
            headers.insert(*name, value);
        }
    }
    headers
}

/// The property every scheme holds: a refusal is a 4xx, never a 5xx.
pub fn refused_with_a_4xx<T>(answer: Result<T, ApiError>) -> Result<(), TestCaseError> {
    if let Err(error) = answer {
        use axum::response::IntoResponse;
        let status = error.into_response().status().as_u16();
        prop_assert!((400..500).contains(&status), "answered {}", status);
    }
    Ok(())
}
