//! The payments created through the API, by tenant: the terms later commands are
//! checked against (country, rail and program for capabilities, the provider for
//! routing a retry), in the KV bucket `PAYTRACK_COMMANDED`. A payment that only
//! providers' events have named is found in its newest transition instead. Keys are
//! `<tenant>.<payment_id>`, so another tenant's payment is never found (404).

use async_nats::jetstream::{self, kv, stream};
use chrono::{DateTime, Utc};
use paytrack_shared::envelope::{self, Transition};
use paytrack_shared::{MerchantId, PaymentId, TenantId, subjects};
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use crate::error::ApiError;

/// What a later command needs to know about a payment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Commanded {
    /// Its merchant.
    pub merchant_id: Option<MerchantId>,
    /// Its country (empty when no fact named one).
    pub country: String,
    /// Its rail (empty when no fact named one).
    pub rail: String,
    /// Its program.
    pub program: Option<String>,
    /// The provider it was routed to.
    pub provider: Option<String>,
    /// Amount in minor units.
    pub amount_minor: Option<i64>,
    /// ISO 4217 code.
    pub currency: Option<String>,
    /// When it was created through the API (None: known from provider events only).
    pub created_at: Option<DateTime<Utc>>,
}

/// The bucket, plus the status stream for payments not created through the API.
#[derive(Clone)]
pub struct CommandedPayments {
    store: kv::Store,
    js: jetstream::Context,
    status: std::sync::Arc<OnceCell<stream::Stream>>,
}

fn unavailable(error: &dyn std::fmt::Display) -> ApiError {
    tracing::warn!(%error, "payment lookup failed");
    ApiError::Unavailable
}

impl CommandedPayments {
    /// Wraps the bucket's store.
    pub fn new(store: kv::Store, js: jetstream::Context) -> CommandedPayments {
        CommandedPayments {
            store,
            js,
            status: std::sync::Arc::default(),
        }
    }

    fn key(tenant: &TenantId, payment: &PaymentId) -> String {
        format!("{tenant}.{payment}")
    }

    /// Records a payment created through the API.
    pub async fn record(&self, tenant: &TenantId, payment: &PaymentId, terms: &Commanded) -> Result<(), ApiError> {
        let value = serde_json::to_vec(terms).unwrap_or_default();
        self.store
            .put(Self::key(tenant, payment), value.into())
            .await
            .map(|_| ())
            .map_err(|e| unavailable(&e))
    }

    /// The tenant's payment, or None when the tenant has no such payment.
    pub async fn find(&self, tenant: &TenantId, payment: &PaymentId) -> Result<Option<Commanded>, ApiError> {
        if let Some(value) = self
            .store
            .get(Self::key(tenant, payment))
            .await
            .map_err(|e| unavailable(&e))?
            && let Ok(terms) = serde_json::from_slice::<Commanded>(&value)
        {
            return Ok(Some(terms));
        }
        let status = self
            .status
            .get_or_try_init(|| async { self.js.get_stream(subjects::STREAM_STATUS).await })
            .await
            .map_err(|e| unavailable(&e))?;
        let newest = paytrack_nats::last_message(status, &subjects::status_of_payment(tenant, payment))
            .await
            .map_err(|e| unavailable(&e))?;
        let Some(message) = newest else { return Ok(None) };
        let transition: Transition = envelope::decode(&message.payload).map_err(|error| {
            tracing::error!(%error, "unreadable transition");
            ApiError::Internal
        })?;
        let terms = transition.terms;
        Ok(Some(Commanded {
            merchant_id: Some(transition.merchant_id),
            country: terms.country.unwrap_or_default(),
            rail: terms.rail.unwrap_or_default(),
            program: None,
            provider: terms.provider,
            amount_minor: terms.amount_minor,
            currency: terms.currency,
            created_at: None,
        }))
    }
}
