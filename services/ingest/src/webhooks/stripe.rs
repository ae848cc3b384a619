//! The `stripe` provider: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…]`, where
//! each `v1` is the hex HMAC-SHA256 of `<t>.<raw body>` under the endpoint secret
//! (the whole `whsec_…` string); several `v1` appear while Stripe rolls a secret.
//! `t` must be within 300 s of now. The event's `id` (`evt_…`) names the delivery.

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use paytrack_shared::envelope::ProviderEvent;
use paytrack_shared::{MerchantId, PaymentId};
use serde_json::Value;

use super::keys::Key;
use super::{Verified, verify};
use crate::error::ApiError;

/// The provider name in the webhook URL.
pub const PROVIDER: &str = "stripe";
/// The signature header.
pub const HEADER_SIGNATURE: &str = "stripe-signature";

/// Stripe's payment method types that name one of paytrack's rails.
pub const RAILS: &[(&str, &str)] = &[("card", "card"), ("us_bank_account", "ach_debit")];

/// Stripe's event types paytrack maps, each to paytrack's provider status; refunds
/// and disputes move amounts instead ([`super::movements::STRIPE_EVENTS`]); any
/// other event is kept as an unmapped fact.
pub const EVENTS: &[(&str, &str)] = &[
    ("payment_intent.processing", "pending"),
    ("payment_intent.succeeded", "succeeded"),
    ("payment_intent.payment_failed", "failed"),
    ("payment_intent.canceled", "cancelled"),
];

/// Verifies `Stripe-Signature` with any of `keys`, then parses the event.
pub fn verify_and_parse(keys: &[Key], headers: &HeaderMap, body: &[u8]) -> Result<Verified, ApiError> {
    let header = verify::one_header(headers, HEADER_SIGNATURE)?;
    if header.len() > verify::MAX_SIGNATURE_LEN {
        return Err(ApiError::BadSignature(format!("{HEADER_SIGNATURE} is too long")));
    }
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for item in header.split(',') {
        match item.trim().split_once('=') {
            Some(("t", t)) => timestamp = Some(t),
            Some(("v1", s)) => signatures.push(s),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or_else(|| ApiError::BadSignature(format!("{HEADER_SIGNATURE} carries no t=")))?;
    if signatures.is_empty() {
        return Err(ApiError::BadSignature(format!("{HEADER_SIGNATURE} carries no v1=")));
    }
    verify::check_timestamp(timestamp, Utc::now().timestamp())?;
    let matches = keys.iter().any(|key| match key {
        Key::Hmac(secret) => {
            let expected = verify::hmac_sha256(secret, &[timestamp.as_bytes(), b".", body]);
            signatures.iter().any(|s| verify::hex_matches(s, &expected))
        }
        _ => false,
    });
    if !matches {
        return Err(ApiError::BadSignature(
            "no signature verified with this endpoint's keys".into(),
        ));
    }

    let value = verify::parse_json(body)?;
    let delivery_id = value["id"]
        .as_str()
        .ok_or_else(|| ApiError::Malformed("id is required".into()))?
        .to_owned();
    verify::check_delivery_id(&delivery_id, "id")?;
    let event_type = value["type"]
        .as_str()
        .ok_or_else(|| ApiError::Malformed("type is required".into()))?
        .to_owned();
    verify::check_text("type", Some(&event_type))?;
    let occurred_at = value["created"]
        .as_i64()
        .and_then(|secs| DateTime::<Utc>::from_timestamp(secs, 0))
        .ok_or_else(|| ApiError::Malformed("created must be Unix seconds".into()))?;
    let object = &value["data"]["object"];
    // A charge's payment is its PaymentIntent; a PaymentIntent is its own; a refund's
    // or a dispute's is the PaymentIntent (else the charge) it names.
    let provider_ref = match object["object"].as_str() {
        Some("charge") => object["payment_intent"].as_str().or(object["id"].as_str()),
        Some("refund" | "dispute") => object["payment_intent"].as_str().or(object["charge"].as_str()),
        _ => object["id"].as_str(),
    }
    .ok_or_else(|| ApiError::Malformed("data.object names no payment".into()))?
    .to_owned();
    verify::check_text("provider_ref", Some(&provider_ref))?;
    let movement = super::movements::stripe(&event_type, object)?;
    let amount_minor = match &movement {
        Some(parsed) => parsed.payment_amount,
        None => object["amount"].as_i64().filter(|a| *a >= 0),
    };
    let currency = object["currency"].as_str().map(verify::currency).transpose()?;
    // A partial capture: the PaymentIntent received (or the charge captured) less
    // than its amount.
    let captured_minor = object["amount_received"]
        .as_i64()
        .or(object["amount_captured"].as_i64())
        .filter(|c| *c >= 0 && amount_minor.is_some_and(|a| *c < a));
    let reason = object["last_payment_error"]["message"]
        .as_str()
        .or(object["cancellation_reason"].as_str())
        .map(str::to_owned);
    verify::check_text("reason", reason.as_deref())?;
    let metadata = &object["metadata"];
    let payment_id = metadata["payment_id"].as_str().and_then(|id| PaymentId::new(id).ok());
    let merchant_id = metadata["merchant_id"].as_str().and_then(|id| MerchantId::new(id).ok());
    let status = verify::status_of(EVENTS, &event_type);
    let event = ProviderEvent {
        amount_minor,
        currency,
        reason,
        rail: payment_method_type(object).and_then(|t| verify::rail_of(RAILS, t)),
        movement: movement.map(|parsed| parsed.evidence),
        captured_minor,
        ..verify::provider_event(PROVIDER, &delivery_id, event_type, status, occurred_at, provider_ref)
    };
    Ok(Verified {
        delivery_id,
        payment_id,
        merchant_id,
        event,
        evidence_headers: verify::evidence_headers(headers, &[HEADER_SIGNATURE, "content-type"]),
    })
}

/// The object's one payment method type: a charge's `payment_method_details.type`,
/// else the only entry of a PaymentIntent's `payment_method_types` (several: not
/// known which was used).
fn payment_method_type(object: &Value) -> Option<&str> {
    if let Some(kind) = object["payment_method_details"]["type"].as_str() {
        return Some(kind);
    }
    match object["payment_method_types"].as_array().map(Vec::as_slice) {
        Some([only]) => only.as_str(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use secrecy::SecretBox;

    use super::*;

    const SECRET: &str = "whsec_test_secret";

    fn keys(secrets: &[&str]) -> Vec<Key> {
        secrets
            .iter()
            .map(|s| Key::Hmac(SecretBox::new(s.as_bytes().into())))
            .collect()
    }

    fn body(metadata: &str) -> String {
        format!(
            r#"{{"id":"evt_3MtwBwLkdIwHu7ix0CB4U0ik","object":"event","api_version":"2022-11-15","created":1680064029,"data":{{"object":{{"id":"pi_3MtwBwLkdIwHu7ix28a3tqPa","object":"payment_intent","amount":2000,"currency":"usd","metadata":{metadata},"created":1680064028,"status":"succeeded"}}}},"livemode":false,"type":"payment_intent.succeeded"}}"#
        )
    }

    fn sign(secret: &str, t: i64, body: &str) -> String {
        let mac = verify::hmac_sha256(
            &SecretBox::new(secret.as_bytes().into()),
            &[t.to_string().as_bytes(), b".", body.as_bytes()],
        );
        hex::encode(mac)
    }

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(HEADER_SIGNATURE, value.parse().unwrap());
        h
    }

    /// The signed content is `<t>.<body>` keyed by the whole `whsec_` string: this
    /// vector was computed independently (`printf '1680064029.%s' "$body" | openssl
    /// dgst -sha256 -hmac whsec_test_secret`) over Stripe's documented
    /// `payment_intent.succeeded` shape.
    #[test]
    fn signed_content_matches_an_independent_computation() {
        let b = body("{}");
        assert_eq!(sign(SECRET, 1680064029, &b), VECTOR);
    }
    const VECTOR: &str = "dfb0e4d520a5c55d3ab4c03ac3612bec6d0dc8e9dee30f83312376754ac4e72f";

    #[test]
    fn a_signed_event_parses_and_maps() {
        let b = body(r#"{"payment_id":"pay_1","merchant_id":"m_2"}"#);
        let now = Utc::now().timestamp();
        let header = format!("t={now},v1={},v0=ignored", sign(SECRET, now, &b));
        let v = verify_and_parse(&keys(&[SECRET]), &headers(&header), b.as_bytes()).unwrap();
        assert_eq!(v.delivery_id, "evt_3MtwBwLkdIwHu7ix0CB4U0ik");
        assert_eq!(v.payment_id.unwrap().as_str(), "pay_1");
        assert_eq!(v.merchant_id.unwrap().as_str(), "m_2");
        assert_eq!(v.event.status.as_deref(), Some("succeeded"));
        assert_eq!(v.event.currency.as_deref(), Some("USD"));
        assert_eq!(v.event.provider_ref.as_deref(), Some("pi_3MtwBwLkdIwHu7ix28a3tqPa"));
        assert_eq!(v.event.occurred_at.unwrap().timestamp(), 1680064029);
    }

    #[test]
    fn several_v1_and_two_secrets_overlap_during_rotation() {
        let b = body("{}");
        let now = Utc::now().timestamp();
        let header = format!(
            "t={now},v1={},v1={}",
            sign("whsec_old", now, &b),
            sign("whsec_new", now, &b)
        );
        assert!(verify_and_parse(&keys(&["whsec_new"]), &headers(&header), b.as_bytes()).is_ok());
        let only_new = format!("t={now},v1={}", sign("whsec_new", now, &b));
        assert!(verify_and_parse(&keys(&["whsec_old", "whsec_new"]), &headers(&only_new), b.as_bytes()).is_ok());
        assert!(matches!(
            verify_and_parse(&keys(&["whsec_old"]), &headers(&only_new), b.as_bytes()),
            Err(ApiError::BadSignature(_))
        ));
    }

    #[test]
    fn stale_tampered_and_missing_are_refused() {
        let b = body("{}");
        let now = Utc::now().timestamp();
        let cases = [
            (
                headers(&format!("t={},v1={}", now - 301, sign(SECRET, now - 301, &b))),
                b.clone(),
            ),
            (
                headers(&format!("t={now},v1={}", sign(SECRET, now, &b))),
                b.replace("2000", "2001"),
            ),
            (
                headers(&format!("t={now},v1={}", sign("whsec_other", now, &b))),
                b.clone(),
            ),
            (headers(&format!("v1={}", sign(SECRET, now, &b))), b.clone()),
            (headers(&format!("t={now}")), b.clone()),
            (HeaderMap::new(), b.clone()),
        ];
        for (h, sent) in cases {
            assert!(matches!(
                verify_and_parse(&keys(&[SECRET]), &h, sent.as_bytes()),
                Err(ApiError::BadSignature(_))
            ));
        }
    }

    /// A refund arrives on the charge; its payment is the charge's PaymentIntent, and
    /// it moves the amounts (the refunds it lists), not the status.
    #[test]
    fn a_refunded_charge_names_its_payment_intent() {
        let b = r#"{"id":"evt_9","object":"event","created":1680065000,"type":"charge.refunded","data":{"object":{"id":"ch_1","object":"charge","payment_intent":"pi_7","amount":2000,"amount_refunded":2000,"currency":"eur","metadata":{}}}}"#;
        let now = Utc::now().timestamp();
        let header = format!("t={now},v1={}", sign(SECRET, now, b));
        let v = verify_and_parse(&keys(&[SECRET]), &headers(&header), b.as_bytes()).unwrap();
        assert!(v.payment_id.is_none());
        assert_eq!(v.event.provider_ref.as_deref(), Some("pi_7"));
        assert_eq!(v.event.status, None);
        assert_eq!(v.event.movement.unwrap().refunded_total_minor, Some(2000));
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;
        use crate::webhooks::arbitrary::{header_value, headers, provider_body, refused_with_a_4xx};

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Whatever the bytes and headers (signed or not), the answer is a 4xx or
            /// an accepted event, never a panic and never a 5xx.
            #[test]
            fn arbitrary_input_gets_a_4xx_never_a_panic(
                sig in header_value(),
                id in header_value(),
                body in provider_body(),
                sign in any::<bool>(),
            ) {
                let mut h = headers(&[(HEADER_SIGNATURE, &sig)]);
                let _ = id;
                if sign {
                    let now = Utc::now().timestamp();
                    let mac = verify::hmac_sha256(&SecretBox::new(SECRET.as_bytes().into()), &[now.to_string().as_bytes(), b".", &body]);
                    h.insert(HEADER_SIGNATURE, format!("t={now},v1={}", hex::encode(mac)).parse().unwrap());
                }
                refused_with_a_4xx(verify_and_parse(&keys(&[SECRET]), &h, &body))?;
            }
        }
    }

    /// The rail is the object's one payment method type in paytrack's words; several
    /// types, or one no rail matches, name none.
    #[test]
    fn the_rail_is_the_one_payment_method_type() {
        let rail = |object: Value| payment_method_type(&object).and_then(|t| verify::rail_of(RAILS, t));
        assert_eq!(
            rail(serde_json::json!({"payment_method_types": ["card"]})).as_deref(),
            Some("card")
        );
        assert_eq!(
            rail(serde_json::json!({"payment_method_types": ["us_bank_account"]})).as_deref(),
            Some("ach_debit")
        );
        assert_eq!(
            rail(serde_json::json!({"payment_method_types": ["card", "us_bank_account"]})),
            None
        );
        assert_eq!(
            rail(serde_json::json!({"object": "charge", "payment_method_details": {"type": "card"}})).as_deref(),
            Some("card")
        );
        assert_eq!(rail(serde_json::json!({"payment_method_types": ["sepa_debit"]})), None);
        assert_eq!(rail(serde_json::json!({"payment_method_types": "card"})), None);
    }
}
