//! `POST /v1/webhooks/{tenant}/{provider}`: verify, parse, store, then answer.
//!
//! A 2xx means the fact is in JetStream. Nothing is stored for a request that fails
//! any check.

mod stdwebhooks;

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use paytrack_shared::envelope::{ENVELOPE_VERSION, FactSource, InboundFact, RawEvidence};
use paytrack_shared::telemetry::{self, HttpHeaders};
use paytrack_shared::{TenantId, Token};
use serde::Serialize;
use tracing::{Instrument, field};

use crate::app::AppState;
use crate::error::ApiError;

/// A verified, parsed provider event, ready to become a fact.
pub struct Verified {
    /// The provider's delivery id (de-duplication key).
    pub delivery_id: String,
    /// The payment it is about.
    pub payment_id: paytrack_shared::PaymentId,
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
    pub fact_id: String,
    /// Its sequence in PAYTRACK_IN.
    pub seq: u64,
    /// True when this delivery had been received before.
    pub duplicate: bool,
}

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
            Ok(_) => "stored",
            Err(error) => error.code(),
        };
        metrics::counter!("paytrack_ingest_webhooks_total", "outcome" => outcome).increment(1);
        match &result {
            Ok((_, Json(accepted))) => {
                tracing::info!(seq = accepted.seq, duplicate = accepted.duplicate, "webhook stored")
            }
            Err(error) => tracing::info!(%error, "webhook refused"),
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
    let secret = state.webhook_secrets.get(&tenant, provider).ok_or_else(unknown)?;
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge(state.max_body_bytes),
        _ => ApiError::Malformed(rejection.body_text()),
    })?;
    let verified = match provider {
        stdwebhooks::PROVIDER => stdwebhooks::verify_and_parse(secret, headers, &body)?,
        _ => return Err(unknown()),
    };
    let span = tracing::Span::current();
    span.record("payment_id", verified.payment_id.as_str());
    span.record("delivery_id", verified.delivery_id.as_str());

    let fact = InboundFact {
        v: ENVELOPE_VERSION,
        fact_id: paytrack_shared::msg_id::webhook_fact_id(provider, &verified.delivery_id),
        tenant,
        payment_id: verified.payment_id,
        merchant_id: verified.merchant_id,
        received_at: chrono::Utc::now(),
        source: FactSource::Webhook(verified.event),
        raw: RawEvidence {
            headers: verified.evidence_headers,
            // verify_and_parse only accepts UTF-8 bodies.
            body: String::from_utf8_lossy(&body).into_owned(),
        },
    };
    let stored = state.publisher.store(&fact).await?;
    Ok((
        StatusCode::OK,
        Json(Accepted {
            fact_id: fact.fact_id,
            seq: stored.seq,
            duplicate: stored.duplicate,
        }),
    ))
}
