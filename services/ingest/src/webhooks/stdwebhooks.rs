//! The `stdwebhooks` provider: the Standard Webhooks signature scheme and
//! paytrack's generic event body.
//!
//! Symmetric `v1` signatures are checked by the spec's own `standardwebhooks` crate;
//! asymmetric `v1a` (ed25519) signatures, which that crate does not verify yet, with
//! `ed25519-dalek` over the same signed content (`<id>.<timestamp>.<body>`). The
//! `webhook-signature` header may hold several space-separated signatures (a sender
//! rotating its secret signs with both), and an endpoint may hold two keys (ours
//! rotating): a delivery verifies when any signature matches any key.

use axum::http::HeaderMap;
use base64::Engine;
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, VerifyingKey};
use paytrack_shared::envelope::ProviderEvent;
use paytrack_shared::{MerchantId, PaymentId};
use serde::Deserialize;
use standardwebhooks::{HEADER_WEBHOOK_ID, HEADER_WEBHOOK_SIGNATURE, HEADER_WEBHOOK_TIMESTAMP, WebhookError};

use super::Verified;
use super::keys::Key;
use super::verify::{self, MAX_DELIVERY_ID_LEN, MAX_SIGNATURE_LEN, MAX_TIMESTAMP_DIGITS};
use crate::error::ApiError;

/// The provider name in the webhook URL.
pub const PROVIDER: &str = "stdwebhooks";

/// The generic format's event types, each naming paytrack's provider status.
pub const EVENTS: &[(&str, &str)] = &[
    ("payment.pending", "pending"),
    ("payment.held", "held"),
    ("payment.succeeded", "succeeded"),
    ("payment.failed", "failed"),
    ("payment.cancelled", "cancelled"),
    ("payment.returned", "returned"),
];

#[derive(Deserialize)]
struct Body {
    #[serde(rename = "type")]
    event_type: String,
    timestamp: DateTime<Utc>,
    data: Data,
}

#[derive(Deserialize)]
struct Data {
    payment_id: PaymentId,
    provider_ref: String,
    amount_minor: i64,
    currency: String,
    #[serde(default)]
    merchant_id: Option<MerchantId>,
    #[serde(default)]
    reason: Option<String>,
    /// The provider's fee, in the payment's minor units.
    #[serde(default)]
    fee_minor: Option<i64>,
    /// The payment's rail, in paytrack's words (`card`, `ach_debit`, …).
    #[serde(default)]
    rail: Option<String>,
    /// The refund or dispute a `payment.refund.*` or `payment.dispute.*` event is
    /// about ([`super::movements::STDWEBHOOKS_EVENTS`]).
    #[serde(default)]
    movement: Option<super::movements::StdMovement>,
}

/// Verifies a signature and the timestamp with any of `keys`, then parses the body.
/// A pure function of its inputs and the clock: every header is checked here before
/// the signature library sees it (the library overflows on
/// `webhook-timestamp: -9223372036854775808`), and every failure is a 4xx [`ApiError`].
pub fn verify_and_parse(keys: &[Key], headers: &HeaderMap, body: &[u8]) -> Result<Verified, ApiError> {
    let delivery_id = check_headers(headers)?;
    verify_signature(keys, headers, body)?;

    let value = verify::parse_json(body)?;
    let parsed = Body::deserialize(&value).map_err(|e| ApiError::Malformed(format!("invalid event body: {e}")))?;
    if !parsed.event_type.starts_with("payment.") {
        return Err(ApiError::Malformed("type must be payment.<status>".into()));
    }
    if parsed.data.currency.len() != 3 || !parsed.data.currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(ApiError::Malformed("currency must be an ISO 4217 code".into()));
    }
    if parsed.data.amount_minor < 0 {
        return Err(ApiError::Malformed("amount_minor must not be negative".into()));
    }
    if parsed
        .data
        .fee_minor
        .is_some_and(|f| f < 0 || f > parsed.data.amount_minor)
    {
        return Err(ApiError::Malformed(
            "fee_minor must be between 0 and amount_minor".into(),
        ));
    }
    verify::check_text("type", Some(&parsed.event_type))?;
    verify::check_text("data.provider_ref", Some(&parsed.data.provider_ref))?;
    verify::check_text("data.reason", parsed.data.reason.as_deref())?;
    if let Some(rail) = &parsed.data.rail {
        paytrack_shared::ids::validate_token(rail, "data.rail").map_err(|e| ApiError::Malformed(e.to_string()))?;
    }

    let evidence_headers = verify::evidence_headers(
        headers,
        &[
            HEADER_WEBHOOK_ID,
            HEADER_WEBHOOK_TIMESTAMP,
            HEADER_WEBHOOK_SIGNATURE,
            "content-type",
        ],
    );
    let status = verify::status_of(EVENTS, &parsed.event_type);
    let movement = super::movements::stdwebhooks(&parsed.event_type, parsed.data.movement.as_ref())?;
    let event = ProviderEvent {
        amount_minor: Some(parsed.data.amount_minor),
        currency: Some(parsed.data.currency),
        reason: parsed.data.reason,
        fee_minor: parsed.data.fee_minor,
        rail: parsed.data.rail,
        movement,
        ..verify::provider_event(
            PROVIDER,
            &delivery_id,
            parsed.event_type,
            status,
            parsed.timestamp,
            parsed.data.provider_ref,
        )
    };
    Ok(Verified {
        delivery_id,
        payment_id: Some(parsed.data.payment_id),
        merchant_id: parsed.data.merchant_id,
        event,
        evidence_headers,
    })
}

/// Accepts when any signature of `webhook-signature` verifies under any key and the
/// timestamp is within the tolerance; a stale timestamp is named as such.
fn verify_signature(keys: &[Key], headers: &HeaderMap, body: &[u8]) -> Result<(), ApiError> {
    let timestamp = verify::one_header(headers, HEADER_WEBHOOK_TIMESTAMP)?;
    verify::check_timestamp(timestamp, Utc::now().timestamp())?;
    for key in keys {
        let verified = match key {
            Key::StdSymmetric(webhook) => match webhook.verify(body, headers) {
                Ok(()) => true,
                Err(WebhookError::TimestampTooOldError | WebhookError::FutureTimestampError) => {
                    return Err(ApiError::BadSignature(
                        "webhook-timestamp is outside the tolerance".into(),
                    ));
                }
                Err(WebhookError::InvalidPayload) => return Err(ApiError::Malformed("body is not UTF-8".into())),
                Err(_) => false,
            },
            Key::StdPublic(public) => verify_v1a(public, headers, body)?,
            Key::Hmac(_) => false,
        };
        if verified {
            return Ok(());
        }
    }
    Err(ApiError::BadSignature(
        "no signature verified with this endpoint's keys".into(),
    ))
}

/// Whether a `v1a,<base64 ed25519 signature>` of the header verifies under `public`
/// over `<webhook-id>.<webhook-timestamp>.<body>`.
fn verify_v1a(public: &VerifyingKey, headers: &HeaderMap, body: &[u8]) -> Result<bool, ApiError> {
    let id = verify::one_header(headers, HEADER_WEBHOOK_ID)?;
    let timestamp = verify::one_header(headers, HEADER_WEBHOOK_TIMESTAMP)?;
    let signatures = verify::one_header(headers, HEADER_WEBHOOK_SIGNATURE)?;
    let mut content = Vec::with_capacity(id.len() + timestamp.len() + body.len() + 2);
    content.extend_from_slice(id.as_bytes());
    content.push(b'.');
    content.extend_from_slice(timestamp.as_bytes());
    content.push(b'.');
    content.extend_from_slice(body);
    Ok(signatures.split(' ').any(|entry| {
        let Some(encoded) = entry.strip_prefix("v1a,") else {
            return false;
        };
        let Some(bytes) = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
            .and_then(|b| <[u8; 64]>::try_from(b).ok())
        else {
            return false;
        };
        public.verify_strict(&content, &Signature::from_bytes(&bytes)).is_ok()
    }))
}

/// Checks the three Standard Webhooks headers before any library reads them and
/// returns the delivery id. Missing or unusable signature or timestamp: 401 (the
/// request is not authenticated); a malformed id: 400.
fn check_headers(headers: &HeaderMap) -> Result<String, ApiError> {
    let one = |name: &str| verify::one_header(headers, name);
    let timestamp = one(HEADER_WEBHOOK_TIMESTAMP)?;
    if timestamp.is_empty() || timestamp.len() > MAX_TIMESTAMP_DIGITS || !timestamp.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(ApiError::BadSignature(
            "webhook-timestamp must be Unix seconds (digits only)".into(),
        ));
    }
    let signature = one(HEADER_WEBHOOK_SIGNATURE)?;
    if signature.is_empty() || signature.len() > MAX_SIGNATURE_LEN {
        return Err(ApiError::BadSignature(format!(
            "webhook-signature must be 1-{MAX_SIGNATURE_LEN} characters"
        )));
    }
    let delivery_id = one(HEADER_WEBHOOK_ID).map_err(|e| match e {
        ApiError::BadSignature(message) => ApiError::Malformed(message),
        other => other,
    })?;
    let token_ish = |b: u8| b.is_ascii_alphanumeric() || b"_-.:~+=/@".contains(&b);
    if delivery_id.is_empty() || delivery_id.len() > MAX_DELIVERY_ID_LEN || !delivery_id.bytes().all(token_ish) {
        return Err(ApiError::Malformed(format!(
            "webhook-id must be 1-{MAX_DELIVERY_ID_LEN} characters of [A-Za-z0-9_.:~+=/@-]"
        )));
    }
    Ok(delivery_id.to_owned())
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signer, SigningKey};
    use standardwebhooks::Webhook;

    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn signed(body: &str, id: &str, ts: i64) -> HeaderMap {
        let sig = Webhook::new(SECRET).unwrap().sign(id, ts, body.as_bytes()).unwrap();
        let mut h = HeaderMap::new();
        h.insert(HEADER_WEBHOOK_ID, id.parse().unwrap());
        h.insert(HEADER_WEBHOOK_TIMESTAMP, ts.to_string().parse().unwrap());
        h.insert(HEADER_WEBHOOK_SIGNATURE, sig.parse().unwrap());
        h
    }

    fn body(payment: &str) -> String {
        format!(
            r#"{{"type":"payment.succeeded","timestamp":"2026-11-22T10:00:00Z","data":{{"payment_id":"{payment}","provider_ref":"pr_1","amount_minor":1250,"currency":"USD","merchant_id":"m_1"}}}}"#
        )
    }

    fn secret() -> Vec<Key> {
        vec![Key::StdSymmetric(Box::new(Webhook::new(SECRET).unwrap()))]
    }

    /// The example of the Standard Webhooks specification: this secret, id,
    /// timestamp and payload sign to this signature, both by the spec's crate and by
    /// the signed content this module builds for `v1a`.
    #[test]
    fn the_specification_example_vector() {
        let (id, ts, payload) = ("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, r#"{"test": 2432232314}"#);
        let expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        assert_eq!(
            Webhook::new(SECRET).unwrap().sign(id, ts, payload.as_bytes()).unwrap(),
            expected
        );
        let key = base64::engine::general_purpose::STANDARD
            .decode(SECRET.strip_prefix("whsec_").unwrap())
            .unwrap();
        let mac = verify::hmac_sha256(
            &secrecy::SecretBox::new(key.into()),
            &[id.as_bytes(), b".", ts.to_string().as_bytes(), b".", payload.as_bytes()],
        );
        assert_eq!(
            format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac)),
            expected
        );
    }

    const OTHER: &str = "whsec_QWxsIHlvdXIgYmFzZSBhcmUgYmVsb25nIHRvIHVz";

    /// Two keys on the endpoint (ours rotating): either verifies; a header with two
    /// signatures (the sender rotating) verifies when one of them matches.
    #[test]
    fn rotation_on_either_side() {
        let b = body("pay_1");
        let now = Utc::now().timestamp();
        let both = vec![
            Key::StdSymmetric(Box::new(Webhook::new(SECRET).unwrap())),
            Key::StdSymmetric(Box::new(Webhook::new(OTHER).unwrap())),
        ];
        let signed_other = {
            let sig = Webhook::new(OTHER).unwrap().sign("msg_1", now, b.as_bytes()).unwrap();
            let mut h = signed(&b, "msg_1", now);
            h.insert(HEADER_WEBHOOK_SIGNATURE, sig.parse().unwrap());
            h
        };
        assert!(verify_and_parse(&both, &signed(&b, "msg_1", now), b.as_bytes()).is_ok());
        assert!(verify_and_parse(&both, &signed_other, b.as_bytes()).is_ok());
        assert!(matches!(
            verify_and_parse(&secret(), &signed_other, b.as_bytes()),
            Err(ApiError::BadSignature(_))
        ));
        let mut two = signed(&b, "msg_1", now);
        let old = two[HEADER_WEBHOOK_SIGNATURE].to_str().unwrap().to_owned();
        let new = signed_other[HEADER_WEBHOOK_SIGNATURE].to_str().unwrap().to_owned();
        two.insert(HEADER_WEBHOOK_SIGNATURE, format!("{new} {old}").parse().unwrap());
        assert!(verify_and_parse(&secret(), &two, b.as_bytes()).is_ok());
    }

    fn v1a_headers(signing: &SigningKey, b: &str, id: &str, ts: i64) -> HeaderMap {
        let sig = signing.sign(format!("{id}.{ts}.{b}").as_bytes());
        let mut h = signed(b, id, ts);
        let encoded = base64::engine::general_purpose::STANDARD.encode(sig.to_bytes());
        h.insert(HEADER_WEBHOOK_SIGNATURE, format!("v1a,{encoded}").parse().unwrap());
        h
    }

    /// Asymmetric `v1a`: verified with the configured public key; another key's
    /// signature, a tampered body and a stale timestamp are refused.
    #[test]
    fn asymmetric_v1a_signatures() {
        let signing = SigningKey::from_bytes(&[7u8; 32]);
        let public = vec![Key::StdPublic(signing.verifying_key())];
        let b = body("pay_1");
        let now = Utc::now().timestamp();
        assert!(verify_and_parse(&public, &v1a_headers(&signing, &b, "msg_1", now), b.as_bytes()).is_ok());
        let stranger = SigningKey::from_bytes(&[8u8; 32]);
        let refused = [
            (v1a_headers(&stranger, &b, "msg_1", now), b.clone()),
            (v1a_headers(&signing, &b, "msg_1", now), b.replace("1250", "1251")),
            (v1a_headers(&signing, &b, "msg_1", now - 301), b.clone()),
            (signed(&b, "msg_1", now), b.clone()),
        ];
        for (headers, sent) in refused {
            assert!(matches!(
                verify_and_parse(&public, &headers, sent.as_bytes()),
                Err(ApiError::BadSignature(_))
            ));
        }
    }

    #[test]
    fn a_signed_event_parses() {
        let b = body("pay_1");
        let v = verify_and_parse(&secret(), &signed(&b, "msg_1", Utc::now().timestamp()), b.as_bytes()).unwrap();
        assert_eq!(v.payment_id.unwrap().as_str(), "pay_1");
        assert_eq!(v.merchant_id.unwrap().as_str(), "m_1");
        assert_eq!(v.event.event_type, "payment.succeeded");
        assert_eq!(v.delivery_id, "msg_1");
        assert!(v.evidence_headers.contains_key("webhook-signature"));
    }

    #[test]
    fn tampering_stale_timestamps_and_bad_bodies_are_refused() {
        let now = Utc::now().timestamp();
        let b = body("pay_1");
        let tampered = b.replace("1250", "9999");
        assert!(matches!(
            verify_and_parse(&secret(), &signed(&b, "msg_1", now), tampered.as_bytes()),
            Err(ApiError::BadSignature(_))
        ));
        assert!(matches!(
            verify_and_parse(&secret(), &signed(&b, "msg_1", now - 3600), b.as_bytes()),
            Err(ApiError::BadSignature(_))
        ));
        assert!(matches!(
            verify_and_parse(&secret(), &HeaderMap::new(), b.as_bytes()),
            Err(ApiError::BadSignature(_))
        ));
        let bad_id = body("pay.1");
        assert!(matches!(
            verify_and_parse(&secret(), &signed(&bad_id, "msg_1", now), bad_id.as_bytes()),
            Err(ApiError::Malformed(_))
        ));
        let not_json = "{nope";
        assert!(matches!(
            verify_and_parse(&secret(), &signed(not_json, "msg_1", now), not_json.as_bytes()),
            Err(ApiError::Malformed(_))
        ));
    }

    fn status_of(error: ApiError) -> u16 {
        use axum::response::IntoResponse;
        error.into_response().status().as_u16()
    }

    /// Was a dropped connection: the signature library computed `now - ts` on
    /// `i64::MIN` and overflowed.
    #[test]
    fn extreme_timestamps_are_refused_before_the_library_sees_them() {
        let b = body("pay_1");
        for ts in [
            "-9223372036854775808",
            "9223372036854775807",
            "-1",
            "+5",
            "1e9",
            " 1",
            "",
            "99999999999999",
        ] {
            let mut h = signed(&b, "msg_1", Utc::now().timestamp());
            h.insert(HEADER_WEBHOOK_TIMESTAMP, ts.parse().unwrap());
            let result = verify_and_parse(&secret(), &h, b.as_bytes());
            assert!(matches!(result, Err(ApiError::BadSignature(_))), "{ts:?}");
        }
    }

    #[test]
    fn malformed_ids_and_oversized_signatures_are_refused() {
        let now = Utc::now().timestamp();
        let b = body("pay_1");
        for id in ["", "a b", "msg\"1", &"m".repeat(129), "msg>1"] {
            let mut h = signed(&b, "msg_1", now);
            h.insert(HEADER_WEBHOOK_ID, id.parse().unwrap());
            assert!(
                matches!(
                    verify_and_parse(&secret(), &h, b.as_bytes()),
                    Err(ApiError::Malformed(_))
                ),
                "{id:?}"
            );
        }
        let mut h = signed(&b, "msg_1", now);
        h.insert(HEADER_WEBHOOK_SIGNATURE, "v1,x ".repeat(300).parse().unwrap());
        assert!(matches!(
            verify_and_parse(&secret(), &h, b.as_bytes()),
            Err(ApiError::BadSignature(_))
        ));
        let mut h = signed(&b, "msg_1", now);
        h.append(HEADER_WEBHOOK_TIMESTAMP, now.to_string().parse().unwrap());
        assert!(matches!(
            verify_and_parse(&secret(), &h, b.as_bytes()),
            Err(ApiError::BadSignature(_))
        ));
    }

    /// PostgreSQL stores no NUL; a signed body holding one anywhere is refused (400),
    /// and so are control characters in the fields paytrack keeps.
    #[test]
    fn nul_and_control_characters_are_refused() {
        let now = Utc::now().timestamp();
        let cases = [
            body("pay_1").replace("pr_1", "pr\\u0000"),
            body("pay_1").replace("payment.succeeded", "payment.succeeded\\u0007"),
            body("pay_1").replace(r#""currency""#, r#""extra":{"k\u0000":1},"currency""#),
            body("pay_1").replace(r#""merchant_id":"m_1""#, r#""merchant_id":"m_1","reason":"a\nb""#),
        ];
        for b in cases {
            let result = verify_and_parse(&secret(), &signed(&b, "msg_1", now), b.as_bytes());
            assert!(matches!(result, Err(ApiError::Malformed(_))), "{b}");
        }
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;
        use crate::webhooks::arbitrary::headers;

        fn header_value() -> impl Strategy<Value = Option<Vec<u8>>> {
            let now = Utc::now().timestamp();
            prop_oneof![
                Just(None),
                proptest::collection::vec(any::<u8>(), 0..80).prop_map(Some),
                any::<i64>().prop_map(|n| Some(n.to_string().into_bytes())),
                // Where `now - ts` overflows: the edge of i64.
                (i64::MIN..i64::MIN + 4_000_000_000).prop_map(|n| Some(n.to_string().into_bytes())),
                (now - 400..now + 400).prop_map(|n| Some(n.to_string().into_bytes())),
                "[ -~]{0,40}".prop_map(|s| Some(s.into_bytes())),
            ]
        }

        fn body_bytes() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..300),
                (any::<String>(), any::<String>(), any::<i64>(), any::<String>()).prop_map(
                    |(kind, reference, amount, currency)| {
                        serde_json::json!({
                            "type": format!("payment.{kind}"),
                            "timestamp": "2026-11-22T10:00:00Z",
                            "data": {"payment_id": "pay_1", "provider_ref": reference,
                                     "amount_minor": amount, "currency": currency},
                        })
                        .to_string()
                        .into_bytes()
                    }
                ),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Whatever the bytes and headers, the answer is a 4xx or an accepted
            /// event, never a panic and never a 5xx. With `sign`, a valid signature
            /// over the arbitrary body is added, so the parser is reached too.
            #[test]
            fn arbitrary_input_gets_a_4xx_never_a_panic(
                id in header_value(),
                ts in header_value(),
                sig in header_value(),
                body in body_bytes(),
                sign in any::<bool>(),
            ) {
                let mut h = headers(&[(HEADER_WEBHOOK_ID, &id), (HEADER_WEBHOOK_TIMESTAMP, &ts), (HEADER_WEBHOOK_SIGNATURE, &sig)]);
                if sign {
                    let id = h.get(HEADER_WEBHOOK_ID).and_then(|v| v.to_str().ok()).unwrap_or("msg_1").to_owned();
                    let ts = h.get(HEADER_WEBHOOK_TIMESTAMP).and_then(|v| v.to_str().ok()?.parse::<i64>().ok());
                    let signature = ts
                        .filter(|t| t.checked_abs().is_some())
                        .and_then(|ts| Webhook::new(SECRET).unwrap().sign(&id, ts, &body).ok());
                    if let Some(signature) = signature {
                        h.insert(HEADER_WEBHOOK_SIGNATURE, signature.parse().unwrap());
                    }
                }
                match verify_and_parse(&secret(), &h, &body) {
                    Ok(verified) => prop_assert!(!verified.delivery_id.is_empty()),
                    Err(error) => {
                        let status = status_of(error);
                        prop_assert!((400..500).contains(&status), "answered {}", status);
                    }
                }
            }
        }
    }
}
