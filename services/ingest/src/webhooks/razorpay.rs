//! The `razorpay` provider: `X-Razorpay-Signature` is the hex HMAC-SHA256 of the raw
//! body under the webhook secret. Razorpay signs neither `x-razorpay-event-id` (kept
//! as evidence only) nor a timestamp, so the delivery is named by the signed body's
//! hash. Bodies are Razorpay's own events (`payment.captured` with
//! `payload.payment.entity`, …).
//!
//! With no timestamp there is no tolerance to check: a replay of a genuine delivery,
//! under any event id, is a duplicate fact (same body) and changes nothing.
//! Razorpay delivers unordered (`payment.failed` may precede `payment.captured`, an
//! authorisation may come after a failure): the event's own `created_at` is kept as
//! the provider time, and the reconciler's tie-breaker decides.

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use paytrack_shared::envelope::{Direction, ProviderEvent};
use paytrack_shared::{MerchantId, PaymentId};
use serde_json::Value;

use super::keys::Key;
use super::{Verified, verify};
use crate::error::ApiError;

/// The provider name in the webhook URL.
pub const PROVIDER: &str = "razorpay";
/// The signature header.
pub const HEADER_SIGNATURE: &str = "x-razorpay-signature";
/// Razorpay's event id: unsigned, so kept as evidence, never the fact id.
pub const HEADER_EVENT_ID: &str = "x-razorpay-event-id";

/// Razorpay's event types paytrack maps, each to paytrack's provider status; refunds
/// and disputes move amounts instead ([`super::movements::RAZORPAY_EVENTS`]); any
/// other event is kept as an unmapped fact.
pub const EVENTS: &[(&str, &str)] = &[
    ("payment.authorized", "pending"),
    ("payment.captured", "succeeded"),
    ("payment.failed", "failed"),
];

/// Razorpay's payment `method`s that name one of paytrack's rails.
pub const RAILS: &[(&str, &str)] = &[("card", "card"), ("upi", "upi")];

/// Razorpay's payout events (`payload.payout.entity`), each to paytrack's provider
/// status: a payout is a payment whose money goes out, so `succeeded` is paid and
/// `returned` is a reversal after it was paid. `payout.updated` maps by the entity's
/// `status` ([`PAYOUT_STATUSES`]).
pub const PAYOUT_EVENTS: &[(&str, &str)] = &[
    ("payout.queued", "pending"),
    ("payout.pending", "pending"),
    ("payout.processing", "pending"),
    ("payout.processed", "succeeded"),
    ("payout.reversed", "returned"),
    ("payout.failed", "failed"),
    ("payout.rejected", "failed"),
    ("payout.updated", "by the payout's status"),
];

/// A Razorpay payout entity's `status`, as paytrack's provider status.
pub const PAYOUT_STATUSES: &[(&str, &str)] = &[
    ("queued", "pending"),
    ("pending", "pending"),
    ("processing", "pending"),
    ("processed", "succeeded"),
    ("reversed", "returned"),
    ("failed", "failed"),
    ("rejected", "failed"),
    ("cancelled", "cancelled"),
];

/// Razorpay's payout `mode`s, as paytrack's rails.
pub const PAYOUT_RAILS: &[(&str, &str)] = &[("IMPS", "imps"), ("NEFT", "neft"), ("RTGS", "rtgs"), ("UPI", "upi")];

/// paytrack's provider status of a payout event, if it maps one.
fn payout_status(event_type: &str, payout: &Value) -> Option<String> {
    let (_, status) = PAYOUT_EVENTS.iter().find(|(t, _)| *t == event_type)?;
    let status = if event_type == "payout.updated" {
        let own = payout["status"].as_str()?;
        PAYOUT_STATUSES.iter().find(|(s, _)| *s == own).map(|(_, s)| *s)?
    } else {
        *status
    };
    Some(status.to_owned())
}

/// Verifies `X-Razorpay-Signature` with any of `keys`, then parses the event.
pub fn verify_and_parse(keys: &[Key], headers: &HeaderMap, body: &[u8]) -> Result<Verified, ApiError> {
    let signature = verify::one_header(headers, HEADER_SIGNATURE)?;
    if signature.len() != 64 {
        return Err(ApiError::BadSignature(format!(
            "{HEADER_SIGNATURE} must be 64 hex digits"
        )));
    }
    let matches = keys.iter().any(|key| match key {
        Key::Hmac(secret) => verify::hex_matches(signature, &verify::hmac_sha256(secret, &[body])),
        _ => false,
    });
    if !matches {
        return Err(ApiError::BadSignature(
            "no signature verified with this endpoint's keys".into(),
        ));
    }
    let event_id = verify::one_header(headers, HEADER_EVENT_ID)
        .map_err(|_| ApiError::Malformed(format!("{HEADER_EVENT_ID} is required (one value)")))?;
    verify::check_delivery_id(event_id, HEADER_EVENT_ID)?;

    let value = verify::parse_json(body)?;
    let delivery_id = signed_identity(body)?;
    let event_type = value["event"]
        .as_str()
        .ok_or_else(|| ApiError::Malformed("event is required".into()))?
        .to_owned();
    verify::check_text("event", Some(&event_type))?;
    let occurred_at = value["created_at"]
        .as_i64()
        .and_then(|secs| DateTime::<Utc>::from_timestamp(secs, 0))
        .ok_or_else(|| ApiError::Malformed("created_at must be Unix seconds".into()))?;
    // A refund event's payment is the refund's `payment_id`; a payment event's is the
    // payment entity's `id`.
    let payment = &value["payload"]["payment"]["entity"];
    let refund = &value["payload"]["refund"]["entity"];
    let payout = &value["payload"]["payout"]["entity"];
    if event_type.starts_with("payout.") && payout.is_object() {
        return parse_payout(event_type, payout, headers, delivery_id, occurred_at);
    }
    let (entity, provider_ref) = if event_type.starts_with("refund.") && refund.is_object() {
        (refund, refund["payment_id"].as_str())
    } else {
        let dispute = &value["payload"]["dispute"]["entity"];
        (payment, payment["id"].as_str().or(dispute["payment_id"].as_str()))
    };
    let provider_ref = provider_ref
        .ok_or_else(|| ApiError::Malformed("the event names no Razorpay payment".into()))?
        .to_owned();
    verify::check_text("provider_ref", Some(&provider_ref))?;
    let movement = super::movements::razorpay(&event_type, &value)?;
    let amount_minor = match &movement {
        Some(parsed) => parsed.payment_amount,
        None => entity["amount"].as_i64().filter(|a| *a >= 0),
    };
    // Razorpay reports its fee (tax included) on the payment entity once captured.
    let fee_minor = payment["fee"]
        .as_i64()
        .filter(|f| *f >= 0 && payment["amount"].as_i64().is_some_and(|a| *f <= a));
    let currency = entity["currency"].as_str().map(verify::currency).transpose()?;
    let reason = payment["error_description"]
        .as_str()
        .or(payment["error_reason"].as_str())
        .map(str::to_owned);
    verify::check_text("error_description", reason.as_deref())?;
    let (payment_id, merchant_id) = linked_by_notes(&payment["notes"], &refund["notes"]);
    let status = verify::status_of(EVENTS, &event_type);
    let event = ProviderEvent {
        amount_minor,
        currency,
        reason,
        fee_minor,
        rail: payment["method"].as_str().and_then(|m| verify::rail_of(RAILS, m)),
        movement: movement.map(|parsed| parsed.evidence),
        ..verify::provider_event(PROVIDER, &delivery_id, event_type, status, occurred_at, provider_ref)
    };
    Ok(verified(delivery_id, (payment_id, merchant_id), event, headers))
}

/// A payment's or payout's event as verified: with the payment and merchant it is
/// linked to, and the headers kept as evidence.
fn verified(
    delivery_id: String,
    (payment_id, merchant_id): (Option<PaymentId>, Option<MerchantId>),
    event: ProviderEvent,
    headers: &HeaderMap,
) -> Verified {
    Verified {
        delivery_id,
        payment_id,
        merchant_id,
        event,
        evidence_headers: verify::evidence_headers(headers, &[HEADER_EVENT_ID, HEADER_SIGNATURE, "content-type"]),
    }
}

/// A payout event (`payout` is `payload.payout.entity`): the payout is linked like
/// a payment, by `notes.payment_id`, else a `reference_id` that is a valid id, else
/// its own id (`pout_…`) as the provider reference.
fn parse_payout(
    event_type: String,
    payout: &Value,
    headers: &HeaderMap,
    delivery_id: String,
    occurred_at: DateTime<Utc>,
) -> Result<Verified, ApiError> {
    let provider_ref = payout["id"]
        .as_str()
        .ok_or_else(|| ApiError::Malformed("the event names no Razorpay payout".into()))?
        .to_owned();
    verify::check_text("provider_ref", Some(&provider_ref))?;
    let amount_minor = match &payout["amount"] {
        Value::Null => None,
        amount => Some(
            amount
                .as_i64()
                .filter(|a| *a > 0)
                .ok_or_else(|| ApiError::Malformed("the payout's amount must be a positive integer".into()))?,
        ),
    };
    let currency = payout["currency"].as_str().map(verify::currency).transpose()?;
    let reason = payout["failure_reason"].as_str().map(str::to_owned);
    verify::check_text("failure_reason", reason.as_deref())?;
    let (by_notes, merchant_id) = linked_by_notes(&payout["notes"], &Value::Null);
    let payment_id = by_notes.or_else(|| payout["reference_id"].as_str().and_then(|r| PaymentId::new(r).ok()));
    let status = payout_status(&event_type, payout);
    let event = ProviderEvent {
        amount_minor,
        currency,
        reason,
        rail: payout["mode"].as_str().and_then(|m| verify::rail_of(PAYOUT_RAILS, m)),
        direction: Some(Direction::Payout),
        ..verify::provider_event(PROVIDER, &delivery_id, event_type, status, occurred_at, provider_ref)
    };
    Ok(verified(delivery_id, (payment_id, merchant_id), event, headers))
}

/// What names a Razorpay delivery: the hex SHA-256 of the body Razorpay signed, not
/// `x-razorpay-event-id`, which it does not sign (a captured body replayed under fresh
/// event ids is then the same delivery). Hashed as stored, card numbers masked, so
/// the id tells no more than the kept body does.
fn signed_identity(body: &[u8]) -> Result<String, ApiError> {
    let text = std::str::from_utf8(body).map_err(|_| ApiError::Malformed("body is not UTF-8".into()))?;
    let (masked, _) = super::mask::mask_card_numbers(text);
    Ok(crate::idempotency::sha256_hex(masked.as_bytes()))
}

/// `notes.payment_id` and `notes.merchant_id` of the payment (or refund) entity,
/// when they are valid ids. Razorpay sends `"notes": []` when there are none; an
/// invalid id links nothing (the provider reference may still link the event).
fn linked_by_notes(payment_notes: &Value, refund_notes: &Value) -> (Option<PaymentId>, Option<MerchantId>) {
    let note = |name: &str| {
        payment_notes[name]
            .as_str()
            .or(refund_notes[name].as_str())
            .map(str::to_owned)
    };
    (
        note("payment_id").and_then(|id| PaymentId::new(&id).ok()),
        note("merchant_id").and_then(|id| MerchantId::new(&id).ok()),
    )
}

#[cfg(test)]
mod tests {
    use secrecy::SecretBox;

    use super::*;

    const SECRET: &str = "rzp_test_webhook_secret";

    fn keys(secret: &str) -> Vec<Key> {
        vec![Key::Hmac(SecretBox::new(secret.as_bytes().into()))]
    }

    fn captured(notes: &str) -> String {
        format!(
            r#"{{"entity":"event","account_id":"acc_BFQ7uQEaa7j2z7","event":"payment.captured","contains":["payment"],"payload":{{"payment":{{"entity":{{"id":"pay_DESlfW9H8K9uqM","entity":"payment","amount":100,"currency":"INR","status":"captured","order_id":"order_DESlLckIVRkHWj","method":"card","notes":{notes},"error_description":null,"created_at":1567674599}}}}}},"created_at":1567674606}}"#
        )
    }

    fn headers(signature: &str, event_id: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(HEADER_SIGNATURE, signature.parse().unwrap());
        h.insert(HEADER_EVENT_ID, event_id.parse().unwrap());
        h
    }

    /// An independent computation (`printf %s "$body" | openssl dgst -sha256 -hmac
    /// rzp_test_webhook_secret`) of Razorpay's documented scheme over its documented
    /// `payment.captured` example, with notes linking it.
    #[test]
    fn a_captured_payment_verifies_and_maps() {
        let body = captured(r#"{"payment_id":"pay_1","merchant_id":"m_1"}"#);
        let signature = "30d1057c4a934f580854a7e6801f9ccb87378cab9940decf0e5fd8c41dd8bfa1";
        let v = verify_and_parse(&keys(SECRET), &headers(signature, "evt_1"), body.as_bytes()).unwrap();
        // Named by the signed body, never by the unsigned event id header.
        assert_eq!(v.delivery_id, crate::idempotency::sha256_hex(body.as_bytes()));
        let fresh = verify_and_parse(&keys(SECRET), &headers(signature, "evt_2"), body.as_bytes()).unwrap();
        assert_eq!(fresh.delivery_id, v.delivery_id);
        assert_eq!(v.payment_id.unwrap().as_str(), "pay_1");
        assert_eq!(v.merchant_id.unwrap().as_str(), "m_1");
        assert_eq!(v.event.status.as_deref(), Some("succeeded"));
        assert_eq!(v.event.provider_ref.as_deref(), Some("pay_DESlfW9H8K9uqM"));
        assert_eq!(v.event.amount_minor, Some(100));
        assert_eq!(v.event.occurred_at.unwrap().timestamp(), 1567674606);
    }

    fn sign(secret: &str, body: &str) -> String {
        hex::encode(verify::hmac_sha256(
            &SecretBox::new(secret.as_bytes().into()),
            &[body.as_bytes()],
        ))
    }

    #[test]
    fn wrong_secret_tampering_and_missing_headers_are_refused() {
        let body = captured("[]");
        let good = sign(SECRET, &body);
        let cases = [
            (headers(&sign("another_secret", &body), "evt_1"), body.clone()),
            (
                headers(&good, "evt_1"),
                body.replace(r#""amount":100"#, r#""amount":900"#),
            ),
            (HeaderMap::new(), body.clone()),
            (headers("abc", "evt_1"), body.clone()),
        ];
        for (h, sent) in cases {
            assert!(matches!(
                verify_and_parse(&keys(SECRET), &h, sent.as_bytes()),
                Err(ApiError::BadSignature(_))
            ));
        }
        let mut no_id = headers(&good, "evt_1");
        no_id.remove(HEADER_EVENT_ID);
        assert!(matches!(
            verify_and_parse(&keys(SECRET), &no_id, body.as_bytes()),
            Err(ApiError::Malformed(_))
        ));
    }

    /// Empty notes (`[]`, as Razorpay sends them) link nothing: the provider
    /// reference is what remains; a refund names its payment by `payment_id`.
    #[test]
    fn unlinked_events_and_refunds() {
        let body = captured("[]");
        let v = verify_and_parse(&keys(SECRET), &headers(&sign(SECRET, &body), "evt_2"), body.as_bytes()).unwrap();
        assert!(v.payment_id.is_none());
        assert_eq!(v.event.provider_ref.as_deref(), Some("pay_DESlfW9H8K9uqM"));
        let refund = r#"{"entity":"event","event":"refund.processed","contains":["refund","payment"],"payload":{"refund":{"entity":{"id":"rfnd_1","payment_id":"pay_DESlfW9H8K9uqM","amount":100,"currency":"INR","notes":{"payment_id":"pay_9"},"created_at":1567674700}},"payment":{"entity":{"id":"pay_DESlfW9H8K9uqM","amount":100,"currency":"INR","notes":[]}}},"created_at":1567674701}"#;
        let v = verify_and_parse(
            &keys(SECRET),
            &headers(&sign(SECRET, refund), "evt_3"),
            refund.as_bytes(),
        )
        .unwrap();
        assert_eq!(v.payment_id.unwrap().as_str(), "pay_9");
        // A refund moves the amounts, not the status.
        assert_eq!(v.event.status, None);
        assert_eq!(v.event.movement.unwrap().items[0].id, "rfnd_1");
        assert_eq!(v.event.provider_ref.as_deref(), Some("pay_DESlfW9H8K9uqM"));
    }

    fn payout_event(event: &str, status: &str, notes: &str, amount: &str) -> String {
        format!(
            r#"{{"entity":"event","account_id":"acc_BFQ7uQEaa7j2z7","event":"{event}","contains":["payout"],"payload":{{"payout":{{"entity":{{"id":"pout_00000000000001","entity":"payout","fund_account_id":"fa_1","amount":{amount},"currency":"INR","status":"{status}","mode":"UPI","purpose":"payout","reference_id":"po_ref_1","utr":null,"failure_reason":null,"notes":{notes},"created_at":1567674599}}}}}},"created_at":1567674606}}"#
        )
    }

    /// A signed payout event maps to its status, the payout direction and its
    /// mode's rail, and is linked by notes, else by `reference_id`, else by its id.
    #[test]
    fn payout_events_map_by_event_and_link_like_payments() {
        let parse =
            |body: &str| verify_and_parse(&keys(SECRET), &headers(&sign(SECRET, body), "evt_p"), body.as_bytes());
        let cases = [
            ("payout.queued", "queued", Some("pending")),
            ("payout.processing", "processing", Some("pending")),
            ("payout.processed", "processed", Some("succeeded")),
            ("payout.reversed", "reversed", Some("returned")),
            ("payout.rejected", "rejected", Some("failed")),
            ("payout.updated", "cancelled", Some("cancelled")),
            ("payout.updated", "processed", Some("succeeded")),
            ("payout.updated", "something_new", None),
            ("payout.downtime.started", "queued", None),
        ];
        for (event, status, want) in cases {
            let v = parse(&payout_event(
                event,
                status,
                r#"{"payment_id":"po_1","merchant_id":"m_1"}"#,
                "1000",
            ))
            .unwrap();
            assert_eq!(v.event.status.as_deref(), want, "{event} {status}");
            assert_eq!(v.event.direction, Some(Direction::Payout));
            assert_eq!(v.event.rail.as_deref(), Some("upi"));
            assert_eq!(v.event.amount_minor, Some(1000));
            assert_eq!(v.event.provider_ref.as_deref(), Some("pout_00000000000001"));
            assert_eq!(v.payment_id.unwrap().as_str(), "po_1");
            assert_eq!(v.merchant_id.unwrap().as_str(), "m_1");
        }
        let by_reference = parse(&payout_event("payout.queued", "queued", "[]", "1000")).unwrap();
        assert_eq!(by_reference.payment_id.unwrap().as_str(), "po_ref_1");
        for amount in ["-5", "0", r#""1000""#] {
            assert!(matches!(
                parse(&payout_event("payout.queued", "queued", "[]", amount)),
                Err(ApiError::Malformed(_))
            ));
        }
    }

    /// The docs page lists every payout event this scheme maps.
    #[test]
    fn the_docs_name_every_payout_event() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/money.md");
        let docs = std::fs::read_to_string(path).unwrap_or_default();
        for (event, _) in PAYOUT_EVENTS {
            assert!(
                docs.contains(&format!("| `{event}` |")),
                "docs/money.md does not map {event}"
            );
        }
    }

    /// During a rotation both secrets verify.
    #[test]
    fn either_of_two_secrets_verifies() {
        let both = vec![
            Key::Hmac(SecretBox::new(SECRET.as_bytes().into())),
            Key::Hmac(SecretBox::new(b"the_new_secret".as_slice().into())),
        ];
        let body = captured("[]");
        for secret in [SECRET, "the_new_secret"] {
            assert!(verify_and_parse(&both, &headers(&sign(secret, &body), "evt_1"), body.as_bytes()).is_ok());
        }
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;
        use crate::webhooks::arbitrary::{accepted_or_4xx, request};

        fn sign_body(body: &[u8]) -> String {
            hex::encode(verify::hmac_sha256(&SecretBox::new(SECRET.as_bytes().into()), &[body]))
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Whatever the bytes and headers (signed or not), the answer is a 4xx or
            /// an accepted event, never a panic and never a 5xx.
            #[test]
            fn arbitrary_input_gets_a_4xx_never_a_panic(input in request()) {
                let h = input.headers(HEADER_SIGNATURE, Some(HEADER_EVENT_ID), sign_body);
                accepted_or_4xx(verify_and_parse(&keys(SECRET), &h, &input.body))?;
            }
        }
    }
}
