//! The `stdwebhooks` provider: the Standard Webhooks signature scheme (via the spec's
//! own `standardwebhooks` crate) and paytrack's generic event body.

use std::collections::BTreeMap;

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use paytrack_shared::envelope::ProviderEvent;
use paytrack_shared::{MerchantId, PaymentId};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use standardwebhooks::{HEADER_WEBHOOK_ID, HEADER_WEBHOOK_SIGNATURE, HEADER_WEBHOOK_TIMESTAMP, Webhook, WebhookError};

use super::Verified;
use crate::error::ApiError;

/// The provider name in the webhook URL.
pub const PROVIDER: &str = "stdwebhooks";

/// Longest accepted `webhook-id`.
const MAX_DELIVERY_ID_LEN: usize = 128;

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
}

/// Verifies the signature and timestamp, then parses the body.
pub fn verify_and_parse(secret: &SecretString, headers: &HeaderMap, body: &[u8]) -> Result<Verified, ApiError> {
    let webhook = Webhook::new(secret.expose_secret()).map_err(|_| {
        tracing::error!("the stdwebhooks secret of this tenant is not a valid whsec_ secret");
        ApiError::Internal
    })?;
    webhook.verify(body, headers).map_err(|e| match e {
        WebhookError::TimestampTooOldError | WebhookError::FutureTimestampError => {
            ApiError::BadSignature("webhook-timestamp is outside the tolerance".into())
        }
        WebhookError::InvalidPayload => ApiError::Malformed("body is not UTF-8".into()),
        other => ApiError::BadSignature(format!("signature verification failed: {other}")),
    })?;

    let delivery_id = header(headers, HEADER_WEBHOOK_ID).unwrap_or_default().to_owned();
    if delivery_id.is_empty()
        || delivery_id.len() > MAX_DELIVERY_ID_LEN
        || !delivery_id.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ApiError::Malformed(
            "webhook-id must be 1-128 visible ASCII characters".into(),
        ));
    }
    let parsed: Body =
        serde_json::from_slice(body).map_err(|e| ApiError::Malformed(format!("invalid event body: {e}")))?;
    if !parsed.event_type.starts_with("payment.") {
        return Err(ApiError::Malformed("type must be payment.<status>".into()));
    }
    if parsed.data.currency.len() != 3 || !parsed.data.currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(ApiError::Malformed("currency must be an ISO 4217 code".into()));
    }
    if parsed.data.amount_minor < 0 {
        return Err(ApiError::Malformed("amount_minor must not be negative".into()));
    }

    let evidence_headers = [
        HEADER_WEBHOOK_ID,
        HEADER_WEBHOOK_TIMESTAMP,
        HEADER_WEBHOOK_SIGNATURE,
        "content-type",
    ]
    .into_iter()
    .filter_map(|name| header(headers, name).map(|v| (name.to_owned(), v.to_owned())))
    .collect::<BTreeMap<_, _>>();

    Ok(Verified {
        delivery_id: delivery_id.clone(),
        payment_id: parsed.data.payment_id,
        merchant_id: parsed.data.merchant_id,
        event: ProviderEvent {
            provider: PROVIDER.to_owned(),
            event_id: delivery_id,
            event_type: parsed.event_type,
            occurred_at: Some(parsed.timestamp),
            provider_ref: Some(parsed.data.provider_ref),
            amount_minor: Some(parsed.data.amount_minor),
            currency: Some(parsed.data.currency),
            reason: parsed.data.reason,
        },
        evidence_headers,
    })
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
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

    fn secret() -> SecretString {
        SecretString::from(SECRET.to_owned())
    }

    #[test]
    fn a_signed_event_parses() {
        let b = body("pay_1");
        let v = verify_and_parse(&secret(), &signed(&b, "msg_1", Utc::now().timestamp()), b.as_bytes()).unwrap();
        assert_eq!(v.payment_id.as_str(), "pay_1");
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
}
