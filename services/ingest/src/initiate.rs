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
//! A failed call (unreachable, timeout, non-2xx) marks the provider unavailable for a
//! while so routing avoids it, and fails the create with 503: a payment no provider
//! was asked to make would wait in `initiated` for events that never come. The
//! failure says whether the provider may hold the payment anyway (a timeout, a 5xx):
//! then the retry under the same `Idempotency-Key` asks that provider again, never a
//! second one. A 2xx without a usable `provider_ref` is a payment the provider holds:
//! the create goes on, and the reference comes with the provider's events.

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

/// An initiation that did not reach a usable answer.
#[derive(Debug, thiserror::Error)]
#[error("{provider} could not initiate the payment ({reason}); retry with the same Idempotency-Key")]
pub struct InitiationFailed {
    /// The provider asked.
    pub provider: String,
    /// Whether the provider may have made the payment even so (it was sent and no
    /// definite refusal came back): the retry must ask this provider again.
    pub may_hold_payment: bool,
    /// What went wrong, for the caller and the logs.
    pub reason: String,
}

impl InitiationFailed {
    /// A failure of the HTTP exchange: only a connection never made is sure not to
    /// have reached the provider.
    fn from_transport(provider: &str, error: &reqwest::Error) -> InitiationFailed {
        let reason = match error.status() {
            Some(status) => format!("the gateway answered {status}"),
            None if error.is_timeout() => "no answer in time".to_owned(),
            None if error.is_connect() => "the gateway could not be reached".to_owned(),
            None => "the exchange broke off".to_owned(),
        };
        let may_hold_payment = match error.status() {
            Some(status) => !definite_refusal(status),
            None => !error.is_connect(),
        };
        InitiationFailed {
            provider: provider.to_owned(),
            may_hold_payment,
            reason,
        }
    }
}

/// A 4xx that says the provider did not make the payment (not a timeout, a conflict
/// over the key, or a rate limit, after which it may have).
fn definite_refusal(status: reqwest::StatusCode) -> bool {
    status.is_client_error() && !matches!(status.as_u16(), 408 | 409 | 425 | 429)
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

    /// Whether `provider` has a gateway to ask (else a create names the provider and
    /// its reference comes with the provider's events).
    pub fn has_gateway(&self, provider: &str) -> bool {
        self.urls.contains_key(provider)
    }

    /// Asks `provider`'s gateway to initiate the payment: its reference; None when no
    /// gateway is configured or its 2xx named no usable reference. A failure marks the
    /// provider unavailable in `health`.
    pub async fn initiate(
        &self,
        provider: &str,
        payment: Initiation<'_>,
        health: &ProviderHealth,
    ) -> Result<Option<String>, InitiationFailed> {
        let Some(base) = self.urls.get(provider) else {
            return Ok(None);
        };
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
            // A 2xx is a payment the provider holds, whatever its body says.
            Ok::<_, reqwest::Error>(response.json::<Answer>().await.ok())
        };
        match answer.await {
            Ok(Some(answer))
                if !answer.provider_ref.is_empty()
                    && answer.provider_ref.len() <= crate::webhooks::bounds::MAX_PROVIDER_REF_LEN =>
            {
                Ok(Some(answer.provider_ref))
            }
            Ok(_) => {
                tracing::warn!(provider, payment_id = %payment.payment_id, "initiation answered no usable provider_ref");
                health.mark_unavailable(provider);
                Ok(None)
            }
            Err(error) => {
                let failed = InitiationFailed::from_transport(provider, &error);
                tracing::warn!(
                    provider,
                    payment_id = %payment.payment_id,
                    %error,
                    may_hold_payment = failed.may_hold_payment,
                    "initiation failed; provider marked unavailable"
                );
                health.mark_unavailable(provider);
                Err(failed)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_definite_4xx_says_the_provider_made_no_payment() {
        for (status, refused) in [(400, true), (401, true), (404, true), (422, true)].into_iter().chain([
            (408, false),
            (409, false),
            (429, false),
            (500, false),
            (503, false),
        ]) {
            let status = reqwest::StatusCode::from_u16(status).unwrap();
            assert_eq!(definite_refusal(status), refused, "{status}");
        }
    }
}
