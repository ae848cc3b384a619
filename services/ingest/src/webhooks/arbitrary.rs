//! Arbitrary webhook input for the providers' property tests: header values (absent,
//! any bytes, printable text) and bodies (any bytes, or JSON shaped like a Stripe or
//! Razorpay event with arbitrary values), so each scheme is fed the same hostile mix,
//! and the one answer every scheme may give it.

use axum::http::{HeaderMap, HeaderValue};
use axum::response::IntoResponse;
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

/// One arbitrary webhook request: a signature header value, an event-id header
/// value, a body, and whether a valid signature replaces the arbitrary one.
#[derive(Debug, Clone)]
pub struct ArbitraryRequest {
    signature: Option<Vec<u8>>,
    event_id: Option<Vec<u8>>,
    /// The body, as the scheme receives it.
    pub body: Vec<u8>,
    sign: bool,
}

/// Arbitrary requests: any header values and bodies, about half of them signed
/// validly so that the parser is reached too.
pub fn request() -> impl Strategy<Value = ArbitraryRequest> {
    (header_value(), header_value(), provider_body(), any::<bool>()).prop_map(|(signature, event_id, body, sign)| {
        ArbitraryRequest {
            signature,
            event_id,
            body,
            sign,
        }
    })
}

impl ArbitraryRequest {
    /// The request's headers as a scheme reads them: the signature under
    /// `signature_header` (`sign(body)` when the request is signed validly) and the
    /// event id under `event_id_header`, where the scheme has one.
    pub fn headers(
        &self,
        signature_header: &'static str,
        event_id_header: Option<&'static str>,
        sign: impl Fn(&[u8]) -> String,
    ) -> HeaderMap {
        let mut headers = HeaderMap::new();
        set_header(&mut headers, signature_header, self.signature.clone());
        if let Some(name) = event_id_header {
            set_header(&mut headers, name, self.event_id.clone());
        }
        if self.sign {
            let signature = HeaderValue::from_str(&sign(&self.body)).expect("a signature is printable ASCII");
            headers.insert(signature_header, signature);
        }
        headers
    }
}

/// Headers holding each arbitrary value a header can carry at all (an absent one,
/// or bytes no header can carry, is left out).
pub fn headers(values: &[(&'static str, &Option<Vec<u8>>)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in values {
        set_header(&mut headers, name, (*value).clone());
    }
    headers
}

/// Sets header `name` to `value` where a request can carry it (absent and
/// unrepresentable values are left out), as a client sending those bytes would.
fn set_header(headers: &mut HeaderMap, name: &'static str, value: Option<Vec<u8>>) {
    if let Some(v) = value.and_then(|v| HeaderValue::from_bytes(&v).ok()) {
        headers.insert(name, v);
    }
}

/// Holds when a scheme's answer to arbitrary input is an accepted event or a 4xx:
/// never a 5xx (a panic fails the property on its own).
pub fn accepted_or_4xx<T>(answer: Result<T, ApiError>) -> Result<(), TestCaseError> {
    if let Err(error) = answer {
        let status = error.into_response().status().as_u16();
        prop_assert!((400..500).contains(&status), "answered {}", status);
    }
    Ok(())
}
