//! Payment claims: which merchant's subject carries each payment's history.
//!
//! A payment's transitions live on `paytrack.status.<tenant>.<merchant>.<payment>`,
//! and its first fact may name any merchant (or none). Finding the history by
//! `paytrack.status.<tenant>.*.<payment>` makes nats-server walk every merchant of the
//! tenant, for the read before each decision and again for the append's expected
//! sequence: a cost per fact that grows with the tenant's merchants. Instead, the
//! first writer of a payment creates its claim (`<tenant>.<payment>` → merchant) in
//! the KV bucket `PAYTRACK_CLAIMS` before its first transition; a KV create is
//! exclusive, so two first facts naming different merchants cannot both start a
//! history. Every read and append after that is on one literal subject, guarded by
//! `Nats-Expected-Last-Subject-Sequence` on that subject. A claim never changes, so
//! each replica remembers the ones it has read or made (up to [`REMEMBERED`]) and a
//! payment's later facts cost one read, of its newest transition.
//!
//! Histories written before claims existed are claimed once when the bucket is first
//! opened (one pass over the newest transition of every subject), so a payment is
//! never started twice.

use std::collections::HashMap;

use async_nats::jetstream::{self, consumer, kv, stream};
use futures::StreamExt;
use paytrack_shared::{MerchantId, PaymentId, TenantId, Token, subjects};

/// The key saying that every history older than the bucket is claimed.
const BACKFILLED: &str = "_backfilled";

/// Why the claims could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// The bucket could not be created or opened.
    #[error("claims bucket: {0}")]
    Bucket(#[source] async_nats::Error),
    /// JetStream did not answer a read or a write.
    #[error("claim: {0}")]
    Io(#[source] async_nats::Error),
}

/// What creating a claim found.
#[derive(Debug, PartialEq, Eq)]
pub enum Created {
    /// This writer claimed the payment for the merchant.
    Claimed,
    /// Another writer claimed it first: decide again.
    Taken,
}

/// Most claims a replica remembers; past it the memory is emptied and refilled.
const REMEMBERED: usize = 100_000;

/// The claims bucket.
#[derive(Clone)]
pub struct Claims {
    store: kv::Store,
    /// Claims this replica has read or made. A claim never changes once created, so
    /// a payment's later facts need not read it again (only the newest transition).
    remembered: std::sync::Arc<std::sync::Mutex<HashMap<String, MerchantId>>>,
}

fn key(tenant: &TenantId, payment: &PaymentId) -> String {
    format!("{tenant}.{payment}")
}

impl Claims {
    /// Opens the bucket (the layout step creates it), and claims the histories written
    /// before it once.
    pub async fn open(js: &jetstream::Context, status: &stream::Stream) -> Result<Claims, ClaimError> {
        let store = paytrack_nats::open_bucket(js, subjects::CLAIMS_BUCKET)
            .await
            .map_err(|e| ClaimError::Bucket(e.into()))?;
        let claims = Claims {
            store,
            remembered: Default::default(),
        };
        claims.backfill(status).await?;
        Ok(claims)
    }

    /// The merchant `payment` is claimed for, if any.
    pub async fn merchant_of(&self, tenant: &TenantId, payment: &PaymentId) -> Result<Option<MerchantId>, ClaimError> {
        let key = key(tenant, payment);
        if let Some(merchant) = self.lock().get(&key) {
            return Ok(Some(merchant.clone()));
        }
        let value = self.store.get(&key).await.map_err(|e| ClaimError::Io(e.into()))?;
        let merchant = value.and_then(|v| std::str::from_utf8(&v).ok().and_then(|m| MerchantId::parse(m).ok()));
        if let Some(merchant) = &merchant {
            self.remember(key, merchant.clone());
        }
        Ok(merchant)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, MerchantId>> {
        self.remembered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn remember(&self, key: String, merchant: MerchantId) {
        let mut remembered = self.lock();
        if remembered.len() >= REMEMBERED {
            remembered.clear();
        }
        remembered.insert(key, merchant);
    }

    /// Claims `payment` for `merchant`, unless another writer has.
    pub async fn create(
        &self,
        tenant: &TenantId,
        payment: &PaymentId,
        merchant: &MerchantId,
    ) -> Result<Created, ClaimError> {
        let key = key(tenant, payment);
        match self.store.create(&key, merchant.as_str().to_owned().into()).await {
            Ok(_) => {
                self.remember(key, merchant.clone());
                Ok(Created::Claimed)
            }
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(Created::Taken),
            Err(e) => Err(ClaimError::Io(e.into())),
        }
    }

    /// Claims every history of `status` once (the newest transition of each
    /// subject names its merchant), then marks the bucket backfilled. Several
    /// reconcilers may do it at once: a claim is only ever created, never changed.
    async fn backfill(&self, status: &stream::Stream) -> Result<(), ClaimError> {
        let io = |e: &dyn std::fmt::Display| ClaimError::Io(e.to_string().into());
        if self.store.get(BACKFILLED).await.map_err(|e| io(&e))?.is_some() {
            return Ok(());
        }
        let mut ordered = status
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: subjects::STATUS_ALL.to_owned(),
                deliver_policy: consumer::DeliverPolicy::LastPerSubject,
                ..Default::default()
            })
            .await
            .map_err(|e| io(&e))?;
        let pending = ordered.info().await.map_err(|e| io(&e))?.num_pending;
        let mut messages = ordered.messages().await.map_err(|e| io(&e))?;
        let mut claimed = 0u64;
        for _ in 0..pending {
            let Some(message) = messages.next().await else { break };
            let message = message.map_err(|e| io(&e))?;
            // paytrack.status.<tenant>.<merchant>.<payment>
            let mut parts = message.subject.split('.').skip(2);
            let (Some(t), Some(m), Some(p)) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            let (Ok(t), Ok(m), Ok(p)) = (TenantId::parse(t), MerchantId::parse(m), PaymentId::parse(p)) else {
                continue;
            };
            if self.create(&t, &p, &m).await? == Created::Claimed {
                claimed += 1;
            }
        }
        self.store
            .put(BACKFILLED, pending.to_string().into())
            .await
            .map_err(|e| io(&e))?;
        tracing::info!(histories = pending, claimed, "payment claims backfilled");
        Ok(())
    }
}
