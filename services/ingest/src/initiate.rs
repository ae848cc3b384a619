//! Payment initiation at the routed provider's sandbox gateway (the provider
//! simulator), when `provider_urls` names one:
//! `POST {base}/v1/providers/{provider}/payments` with
//! `{tenant, payment_id, amount_minor, currency, rail}` and `Idempotency-Key:
//! <payment_id>`, expecting 2xx with `{"provider_ref": ..}`.
//!
//! The key makes the call idempotent at the provider: a create retried after a 503
//! keeps its payment id (see [`crate::idempotency`]), so its second initiation is the
//! same payment there, never a second charge.
//!
//! Tolerant by design: any failure (unreachable, timeout, non-2xx, no
//! `provider_ref`) leaves the reference unknown (it then comes with the provider's
//! events), marks the provider unavailable for a while so routing avoids it, and never
//! fails the create.

use std::collections::BTreeMap;
use std::time::Duration;

use paytrack_shared::{PaymentId, TenantId};
use serde::{Deserialize, Serialize};

use crate::routing::ProviderHealth;

/// How long one initiation call may take.
const TIMEOUT: Duration = Duration::from_secs(2);

/// The sandbox gateways by provider.
#[derive(Clone)]
pub struct Initiator {
    urls: BTreeMap<String, String>,
    http: reqwest::Client,
}

#[derive(Serialize)]
struct Request<'a> {
    tenant: &'a TenantId,
    payment_id: &'a PaymentId,
    amount_minor: i64,
    currency: &'a str,
    rail: &'a str,
}

#[derive(Deserialize)]
struct Answer {
    provider_ref: String,
}

/// What the payment initiation needs.
pub struct Initiation<'a> {
    /// The tenant.
    pub tenant: &'a TenantId,
    /// The new payment.
    pub payment_id: &'a PaymentId,
    /// Amount in minor units.
    pub amount_minor: i64,
    /// ISO 4217 code.
    pub currency: &'a str,
    /// The rail.
    pub rail: &'a str,
}

impl Initiator {
    /// Gateways from `provider=base URL`, called with the gateways' bearer `token`
    /// when one is configured.
    pub fn new(urls: BTreeMap<String, String>, token: Option<&secrecy::SecretString>) -> Initiator {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .default_headers(paytrack_shared::auth::gateway_headers(token))
            .build()
            .unwrap_or_default();
        Initiator { urls, http }
    }

    /// Asks `provider`'s gateway to initiate the payment; its reference, or None (no
    /// gateway configured, or the call failed: then the provider is marked
    /// unavailable in `health`).
    pub async fn initiate(&self, provider: &str, payment: Initiation<'_>, health: &ProviderHealth) -> Option<String> {
        let base = self.urls.get(provider)?;
        let url = format!("{base}/v1/providers/{provider}/payments");
        let body = Request {
            tenant: payment.tenant,
            payment_id: payment.payment_id,
            amount_minor: payment.amount_minor,
            currency: payment.currency,
            rail: payment.rail,
        };
        let answer = async {
            let response = self
                .http
                .post(&url)
                .header("idempotency-key", payment.payment_id.as_str())
                .json(&body)
                .send()
                .await?
                .error_for_status()?;
            response.json::<Answer>().await
        };
        match answer.await {
            Ok(answer)
                if !answer.provider_ref.is_empty()
                    && answer.provider_ref.len() <= crate::webhooks::bounds::MAX_PROVIDER_REF_LEN =>
            {
                Some(answer.provider_ref)
            }
            Ok(_) => {
                tracing::warn!(provider, payment_id = %payment.payment_id, "initiation answered no usable provider_ref");
                health.mark_unavailable(provider);
                None
            }
            Err(error) => {
                tracing::warn!(provider, payment_id = %payment.payment_id, %error, "initiation failed; provider marked unavailable");
                health.mark_unavailable(provider);
                None
            }
        }
    }
}
