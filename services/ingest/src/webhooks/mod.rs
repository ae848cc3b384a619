//! `POST /v1/webhooks/{tenant}/{provider}`: verify, parse, store, then answer.
//!
//! A 2xx means the fact is in JetStream (in PAYTRACK_IN, or parked in the provider
//! references bucket until its payment is known: see [`crate::provider_refs`]).
//! Nothing is stored for a request that fails any check. Each scheme is a module of
//! its own: its verifier and its provider's mapping table (`EVENTS`); every scheme's
//! event is then held to the same [`bounds`].

#[cfg(test)]
mod arbitrary;
pub mod bounds;
pub mod keys;
pub mod mask;
pub mod movements;
pub mod razorpay;
pub mod stdwebhooks;
mod strict_json;
pub mod stripe;
mod verify;

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use paytrack_shared::envelope::{FactSource, RawEvidence};
use paytrack_shared::telemetry::{self, HttpHeaders};
use paytrack_shared::{FactId, TenantId, Token};
use serde::Serialize;
use tracing::{Instrument, field};

use crate::app::AppState;
use crate::error::ApiError;
use crate::provider_refs::Parked;

/// A verified, parsed provider event, ready to become a fact.
pub struct Verified {
    /// The provider's delivery id (de-duplication key).
    pub delivery_id: String,
    /// The payment it names (stdwebhooks data, Razorpay notes, Stripe metadata);
    /// None when only the provider reference can link it.
    pub payment_id: Option<paytrack_shared::PaymentId>,
    /// The merchant it names.
    pub merchant_id: Option<paytrack_shared::MerchantId>,
    /// What it says.
    pub event: paytrack_shared::envelope::ProviderEvent,
    /// The headers kept as evidence.
    pub evidence_headers: BTreeMap<String, String>,
}

/// The answer to an accepted webhook.
#[derive(Serialize)]
pub struct Accepted {
    /// The fact's stable id.
    pub fact_id: FactId,
    /// Its sequence in PAYTRACK_IN.
    pub seq: u64,
    /// True when this delivery had been received before.
    pub duplicate: bool,
    /// True when the payment is not known yet: the event is kept (parked) and
    /// becomes a fact once its provider reference is recorded (`seq` is then 0).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub parked: bool,
}

/// The webhook outcomes the `webhooks received` summary line counts.
pub const OUTCOME_LABELS: &[&str] = &["stored", "duplicate", "parked", "refused"];

/// Handles one webhook delivery.
pub async fn receive(
    State(state): State<AppState>,
    Path((tenant, provider)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let span = tracing::info_span!(
        "webhook",
        trace_id = field::Empty,
        tenant = %tenant,
        provider = %provider,
        payment_id = field::Empty,
        delivery_id = field::Empty,
    );
    telemetry::continue_from(&span, &HttpHeaders(&headers));
    telemetry::record_trace_id(&span);
    async move {
        let result = handle(&state, &tenant, &provider, &headers, body).await;
        let outcome = match &result {
            Ok((_, Json(accepted))) if accepted.duplicate => "duplicate",
            Ok((_, Json(accepted))) if accepted.parked => "parked",
            Ok(_) => "stored",
            Err(error) => error.code(),
        };
        metrics::counter!("paytrack_ingest_webhooks_total", "outcome" => outcome).increment(1);
        match &result {
            Ok((_, Json(accepted))) => {
                tracing::debug!(seq = accepted.seq, duplicate = accepted.duplicate, "webhook stored")
            }
            Err(error) => tracing::info!(%error, "webhook refused"),
        }
        let counted = if result.is_ok() { outcome } else { "refused" };
        if let Some(summary) = state.webhook_tally.record(counted) {
            tracing::info!(outcomes = %summary, total = summary.total(), elapsed_ms = summary.elapsed.as_millis() as u64, "webhooks received");
        }
        result
    }
    .instrument(span)
    .await
}

async fn handle(
    state: &AppState,
    tenant: &str,
    provider: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let unknown = || ApiError::NotFound("no webhook endpoint for this tenant and provider".into());
    let tenant = TenantId::parse(tenant).map_err(|_| unknown())?;
    let keys = state.webhook_keys.get(&tenant, provider).ok_or_else(unknown)?;
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge(state.max_body_bytes),
        _ => ApiError::Malformed(rejection.body_text()),
    })?;
    let mut verified = match provider {
        stdwebhooks::PROVIDER => stdwebhooks::verify_and_parse(keys, headers, &body)?,
        razorpay::PROVIDER => razorpay::verify_and_parse(keys, headers, &body)?,
        stripe::PROVIDER => stripe::verify_and_parse(keys, headers, &body)?,
        _ => return Err(unknown()),
    };
    bounds::check(&verified, chrono::Utc::now())?;
    if verified.event.rail.is_none() {
        // The event names no rail: the tenant's default at this provider, if set.
        verified.event.rail = state.default_rails.get(&tenant, provider).map(str::to_owned);
    }
    let text = std::str::from_utf8(&body).map_err(|_| ApiError::Malformed("body is not UTF-8".into()))?;
    let span = tracing::Span::current();
    span.record("delivery_id", verified.delivery_id.as_str());

    let (masked_body, masked) = mask::mask_card_numbers(text);
    let mut evidence_headers = verified.evidence_headers;
    if masked > 0 {
        // No digest of the received bytes is kept: with the rest of the body stored,
        // an unkeyed digest would let anyone reading the evidence search the few
        // masked digits. The signature headers (keyed) are what match an original.
        evidence_headers.insert(MASKED_HEADER.to_owned(), masked.to_string());
    }
    let fact_id = paytrack_shared::msg_id::webhook_fact_id(provider, &verified.delivery_id)
        .map_err(|e| ApiError::Malformed(e.to_string()))?;
    let provider_ref = verified.event.provider_ref.clone();
    // A provider's status event that names its payment records its reference, so its
    // later refunds and disputes (which name only the reference) find the payment.
    // Generic events always name their payment: nothing to record for them.
    let records_reference =
        verified.payment_id.is_some() && provider != stdwebhooks::PROVIDER && verified.event.movement.is_none();
    let parked = Parked {
        fact_id: fact_id.clone(),
        merchant_id: verified.merchant_id,
        received_at: chrono::Utc::now(),
        source: FactSource::Webhook(verified.event),
        raw: RawEvidence {
            headers: evidence_headers,
            body: masked_body.into_owned(),
        },
    };
    let payment_id = match verified.payment_id {
        Some(id) => id,
        None => match link(
            state,
            &tenant,
            provider,
            provider_ref.as_deref(),
            &verified.delivery_id,
            &parked,
        )
        .await?
        {
            Some(id) => id,
            None => {
                return Ok((
                    StatusCode::ACCEPTED,
                    Json(Accepted {
                        fact_id,
                        seq: 0,
                        duplicate: false,
                        parked: true,
                    }),
                ));
            }
        },
    };
    span.record("payment_id", payment_id.as_str());
    let fact = parked.into_fact(tenant, payment_id);
    let stored = state.publisher.store(&fact).await?;
    if let (true, Some(provider_ref)) = (records_reference, provider_ref.as_deref()) {
        state
            .provider_refs
            .record_if_absent(&fact.tenant, provider, provider_ref, &fact.payment_id)
            .await
            .map_err(|error| {
                tracing::warn!(%error, "provider references unavailable; the sender retries");
                ApiError::Unavailable
            })?;
    }
    Ok((
        StatusCode::OK,
        Json(Accepted {
            fact_id: fact.fact_id,
            seq: stored.seq,
            duplicate: stored.duplicate,
            parked: false,
        }),
    ))
}

/// Counts a webhook refused for its declared size before its handler ran (the
/// early 413 of [`paytrack_shared::http::refuse_oversized_bodies`]), under the same
/// metric as every other webhook outcome.
pub fn count_too_large(path: &str) {
    if path.starts_with("/v1/webhooks/") {
        metrics::counter!("paytrack_ingest_webhooks_total", "outcome" => "body_too_large").increment(1);
    }
}

/// Evidence header: how many card-like numbers were masked in the stored body.
pub const MASKED_HEADER: &str = "paytrack-masked-card-numbers";

/// The payment of an event that names none: its recorded provider reference, or
/// None after parking it (kept until the reference is recorded).
async fn link(
    state: &AppState,
    tenant: &TenantId,
    provider: &str,
    provider_ref: Option<&str>,
    delivery_id: &str,
    parked: &Parked,
) -> Result<Option<paytrack_shared::PaymentId>, ApiError> {
    let Some(provider_ref) = provider_ref else {
        return Err(ApiError::Malformed(
            "the event names neither a payment nor a provider reference".into(),
        ));
    };
    let unavailable = |error: crate::provider_refs::ProviderRefsError| {
        tracing::warn!(%error, "provider references unavailable; the sender retries");
        ApiError::Unavailable
    };
    if let Some(id) = state
        .provider_refs
        .lookup(tenant, provider, provider_ref)
        .await
        .map_err(unavailable)?
    {
        return Ok(Some(id));
    }
    let linked = state
        .provider_refs
        .park(tenant, provider, provider_ref, delivery_id, parked)
        .await
        .map_err(|error| match error {
            quota @ crate::provider_refs::ProviderRefsError::QuotaReached { .. } => {
                ApiError::QuotaExceeded(quota.to_string())
            }
            other => unavailable(other),
        })?;
    if linked.is_none() {
        tracing::info!(
            provider_ref,
            "event for a payment not known yet: parked until its reference is recorded"
        );
    }
    // Linked meanwhile: park() already published it; storing again below answers
    // with its position (a duplicate of the same fact id).
    Ok(linked)
}
