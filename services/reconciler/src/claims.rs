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
//!
//! Claims are not kept for ever: the bucket's `max_age` is
//! `reconciler_claims_max_age_secs` (400 days by default, as long as provider
//! references, beyond refund and dispute windows), counted from a claim's last
//! write, and a claim read when older than half of it is written again, so only
//! payments idle that long lose theirs. A payment whose claim is missing but whose
//! history exists (found once by `paytrack.status.<tenant>.*.<payment>`) is claimed
//! again for that history's merchant, so an expired claim, or one the broker lost
//! (the bucket is a replicated stream like any other), never starts a second
//! history. That lookup is made for every missing claim: once per payment, at its
//! first fact, and again only where a claim went missing.

use std::collections::HashMap;
use std::time::{Duration, Instant};

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

/// How long claims are kept after their last write when no setting says otherwise.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(400 * 24 * 3600);

/// The claims bucket.
#[derive(Clone)]
pub struct Claims {
    store: kv::Store,
    /// PAYTRACK_STATUS, where a payment whose claim expired is found again.
    status: stream::Stream,
    /// A claim older than this is written again when read (half the bucket's max age).
    refresh_after: Duration,
    /// Claims this replica has read or made, and when. A claim never changes once
    /// created, so a payment's later facts need not read it again (only the newest
    /// transition) until it is due to be refreshed.
    remembered: std::sync::Arc<std::sync::Mutex<HashMap<String, (MerchantId, Instant)>>>,
}

fn key(tenant: &TenantId, payment: &PaymentId) -> String {
    format!("{tenant}.{payment}")
}

impl Claims {
    /// Opens the bucket (the layout step creates it, keeping claims `max_age` after
    /// their last write), and claims the histories written before it once.
    pub async fn open(
        js: &jetstream::Context,
        status: &stream::Stream,
        max_age: Duration,
    ) -> Result<Claims, ClaimError> {
        let store = paytrack_nats::open_bucket(js, subjects::CLAIMS_BUCKET)
            .await
            .map_err(|e| ClaimError::Bucket(e.into()))?;
        let claims = Claims {
            store,
            status: status.clone(),
            refresh_after: max_age / 2,
            remembered: Default::default(),
        };
        claims.backfill(status).await?;
        Ok(claims)
    }

    /// The merchant `payment` is claimed for, if any. A claim due to be refreshed
    /// is written again; a missing claim of a payment that has a history is made
    /// again from it.
    pub async fn merchant_of(&self, tenant: &TenantId, payment: &PaymentId) -> Result<Option<MerchantId>, ClaimError> {
        let key = key(tenant, payment);
        if let Some((merchant, at)) = self.lock().get(&key)
            && at.elapsed() < self.refresh_after
        {
            return Ok(Some(merchant.clone()));
        }
        let entry = self.store.entry(&key).await.map_err(|e| ClaimError::Io(e.into()))?;
        let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
            return self.found_again(tenant, payment).await;
        };
        let Some(merchant) = std::str::from_utf8(&entry.value)
            .ok()
            .and_then(|m| MerchantId::parse(m).ok())
        else {
            return Ok(None);
        };
        if self.due_to_refresh(entry.created.unix_timestamp()) {
            // The same value again: only its age changes.
            self.store
                .put(&key, entry.value.clone())
                .await
                .map_err(|e| ClaimError::Io(e.into()))?;
            tracing::debug!(%tenant, payment_id = %payment, "payment claim refreshed");
        }
        self.remember(key, merchant.clone());
        Ok(Some(merchant))
    }

    /// The merchant of `payment`'s existing history when its claim is missing (it
    /// expired, or the broker lost it), claimed again for it; None for a payment
    /// without a history.
    async fn found_again(&self, tenant: &TenantId, payment: &PaymentId) -> Result<Option<MerchantId>, ClaimError> {
        let newest = paytrack_nats::last_message(&self.status, &subjects::status_of_payment(tenant, payment))
            .await
            .map_err(|e| ClaimError::Io(e.into()))?;
        let Some(merchant) = newest
            .and_then(|m| subjects::PaymentSubject::parse(&m.subject).and_then(|s| MerchantId::parse(s.merchant).ok()))
        else {
            return Ok(None);
        };
        tracing::info!(%tenant, payment_id = %payment, %merchant, "expired payment claim made again from its history");
        if self.create(tenant, payment, &merchant).await? == Created::Taken {
            // Another writer made it again first: read what it wrote.
            let value = self
                .store
                .get(key(tenant, payment))
                .await
                .map_err(|e| ClaimError::Io(e.into()))?;
            return Ok(value.and_then(|v| std::str::from_utf8(&v).ok().and_then(|m| MerchantId::parse(m).ok())));
        }
        Ok(Some(merchant))
    }

    /// Whether a claim written at `written` (Unix seconds) is due to be written again.
    fn due_to_refresh(&self, written: i64) -> bool {
        let age = chrono::Utc::now().timestamp().saturating_sub(written);
        u64::try_from(age).unwrap_or(0) > self.refresh_after.as_secs()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (MerchantId, Instant)>> {
        self.remembered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn remember(&self, key: String, merchant: MerchantId) {
        let mut remembered = self.lock();
        if remembered.len() >= REMEMBERED {
            remembered.clear();
        }
        remembered.insert(key, (merchant, Instant::now()));
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
        if let Some(marker) = self.store.entry(BACKFILLED).await.map_err(|e| io(&e))?
            && marker.operation == kv::Operation::Put
        {
            // Kept as long as the claims are: written again when due.
            if self.due_to_refresh(marker.created.unix_timestamp()) {
                self.store.put(BACKFILLED, marker.value).await.map_err(|e| io(&e))?;
            }
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
            let Some(s) = subjects::PaymentSubject::parse(&message.subject) else {
                continue;
            };
            let (Ok(t), Ok(m), Ok(p)) = (
                TenantId::parse(s.tenant),
                MerchantId::parse(s.merchant),
                PaymentId::parse(s.payment),
            ) else {
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
