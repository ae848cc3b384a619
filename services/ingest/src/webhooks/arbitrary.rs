//! Arbitrary webhook input for the providers' property tests: header values (absent,
//! any bytes, printable text) and bodies (any bytes, or JSON shaped like a Stripe or
//! Razorpay event with arbitrary values), so each scheme is fed the same hostile mix.

use proptest::prelude::*;

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
