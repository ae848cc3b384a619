//! Which paytrack payment a provider's own reference belongs to, and the provider
//! events that arrived before anyone knew.
//!
//! A provider event names its payment by metadata (Razorpay `notes.payment_id`,
//! Stripe `metadata.payment_id`) or only by the provider's reference (`pay_…`,
//! `pi_…`). The create command records `provider_ref → payment_id` here when the
//! provider accepts the payment ([`ProviderRefs::record`]). An event that names
//! neither a payment nor a recorded reference is **parked**: kept durably in the same
//! JetStream KV bucket (the webhook still gets its 2xx, so the provider stops
//! retrying) and published to PAYTRACK_IN, with its original fact id, as soon as the
//! reference is recorded. Both sides write first and look second (record, then drain;
//! park, then look up), so whichever comes second sees the other: no event is left
//! parked once its reference is known, and one drained twice is one fact
//! (`Nats-Msg-Id`).
//!
//! Each tenant may have at most `ingest_parked_events_max_per_tenant` events parked
//! at once: past it an event is refused ([`ProviderRefsError::QuotaReached`], 429 to
//! the provider, which retries later) and nothing is parked. A drained event's key
//! is purged with a one-second marker, so it stops counting at once.
//!
//! Keys: `ref.<tenant>.<provider>.<ref>` → payment id, and
//! `parked.<tenant>.<provider>.<ref>.<delivery>` → the fact without its payment,
//! where `<ref>` and `<delivery>` are base64url (a KV key token cannot hold every
//! character a provider may use).

use std::time::Duration;

use async_nats::jetstream::{consumer, kv, stream};
use base64::Engine;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use paytrack_shared::envelope::{ENVELOPE_VERSION, FactSource, InboundFact, RawEvidence};
use paytrack_shared::{FactId, MerchantId, PaymentId, TenantId, subjects};
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use crate::publish::{FactPublisher, Stored};

/// The KV bucket.
pub const BUCKET: &str = paytrack_shared::subjects::PROVIDER_REFS_BUCKET;
/// How long a reference (and a parked event) is kept: longer than any provider's
/// refund or dispute window.
pub const RETENTION: Duration = paytrack_nats::PROVIDER_REFS_RETENTION;
/// How long the marker of a drained (purged) parked event is kept: the shortest a
/// marker may live, so a drained event stops counting against the quota at once.
const MARKER_TTL: Duration = paytrack_nats::PROVIDER_REFS_MARKER_TTL;
/// Parked events one tenant may have when no setting says otherwise.
pub const DEFAULT_MAX_PARKED_PER_TENANT: usize = 10_000;

/// Why the bucket could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ProviderRefsError {
    /// JetStream did not answer or refused.
    #[error("provider references bucket: {0}")]
    Nats(String),
    /// A stored value is not what this module wrote.
    #[error("provider references bucket: unreadable value at {0}")]
    Corrupt(String),
    /// The tenant has its quota of parked events: this one is not parked.
    #[error("{parked} provider events are already waiting for their payment (at most {quota} per tenant)")]
    QuotaReached {
        /// Events parked now.
        parked: u64,
        /// The quota.
        quota: usize,
    },
}

fn nats<E: std::fmt::Display>(error: E) -> ProviderRefsError {
    ProviderRefsError::Nats(error.to_string())
}

/// A provider event kept until its payment is known.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Parked {
    /// The fact's stable id (`wh:<provider>:<delivery>`).
    pub fact_id: FactId,
    /// The merchant the event names, if any.
    pub merchant_id: Option<MerchantId>,
    /// When ingest received it.
    pub received_at: DateTime<Utc>,
    /// What it says.
    pub source: FactSource,
    /// Its raw evidence (already masked).
    pub raw: RawEvidence,
}

impl Parked {
    /// The fact for `payment_id` and `tenant`, exactly as it would have been stored
    /// had the payment been known on arrival.
    pub fn into_fact(self, tenant: TenantId, payment_id: PaymentId) -> InboundFact {
        InboundFact {
            v: ENVELOPE_VERSION,
            fact_id: self.fact_id,
            tenant,
            payment_id,
            merchant_id: self.merchant_id,
            received_at: self.received_at,
            source: self.source,
            raw: self.raw,
        }
    }
}

/// The provider-reference store (cheap to clone).
#[derive(Clone)]
pub struct ProviderRefs {
    store: std::sync::Arc<OnceCell<(kv::Store, stream::Stream)>>,
    publisher: FactPublisher,
    max_parked_per_tenant: usize,
}

fn token(raw: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn ref_key(tenant: &TenantId, provider: &str, provider_ref: &str) -> String {
    format!("ref.{tenant}.{provider}.{}", token(provider_ref))
}

fn parked_prefix(tenant: &TenantId, provider: &str, provider_ref: &str) -> String {
    format!("parked.{tenant}.{provider}.{}", token(provider_ref))
}

impl ProviderRefs {
    /// A store on `publisher`'s JetStream; the bucket (created by the layout step) is
    /// opened on first use (and by [`ProviderRefs::open`] at start).
    pub(crate) fn new(publisher: FactPublisher) -> ProviderRefs {
        ProviderRefs {
            store: std::sync::Arc::default(),
            publisher,
            max_parked_per_tenant: DEFAULT_MAX_PARKED_PER_TENANT,
        }
    }

    /// This store, parking at most `quota` events per tenant.
    pub fn with_max_parked_per_tenant(self, quota: usize) -> ProviderRefs {
        ProviderRefs {
            max_parked_per_tenant: quota,
            ..self
        }
    }

    /// A store of its own on `client` (tools and tests; ingest shares its
    /// publisher through [`ProviderRefs::new`]).
    pub fn from_client(client: async_nats::Client, ack_timeout: Duration) -> ProviderRefs {
        ProviderRefs::new(FactPublisher::new(client, ack_timeout))
    }

    /// Opens the bucket (the layout step creates it).
    pub async fn open(&self) -> Result<(), ProviderRefsError> {
        self.bucket().await.map(|_| ())
    }

    async fn bucket(&self) -> Result<&(kv::Store, stream::Stream), ProviderRefsError> {
        self.store
            .get_or_try_init(|| async {
                let store = self.publisher.jetstream().get_key_value(BUCKET).await.map_err(nats)?;
                let stream = self
                    .publisher
                    .jetstream()
                    .get_stream(paytrack_shared::subjects::STREAM_PROVIDER_REFS)
                    .await
                    .map_err(nats)?;
                Ok((store, stream))
            })
            .await
    }

    /// Records that the provider's `provider_ref` is `payment_id`, then publishes
    /// every event parked for that reference to PAYTRACK_IN. Called by the create
    /// command once the provider answered with its reference; repeating it is harmless.
    pub async fn record(
        &self,
        tenant: &TenantId,
        provider: &str,
        provider_ref: &str,
        payment_id: &PaymentId,
    ) -> Result<usize, ProviderRefsError> {
        let (store, _) = self.bucket().await?;
        store
            .put(
                ref_key(tenant, provider, provider_ref),
                payment_id.as_str().to_owned().into(),
            )
            .await
            .map_err(nats)?;
        self.drain(tenant, provider, provider_ref, payment_id).await
    }

    /// Records that `provider_ref` is `payment_id` unless a payment is recorded for it
    /// already (the create command's record wins), then publishes the events parked
    /// for it. Called for a signed event that names both its payment and its
    /// reference, so later events that name only the reference (a Stripe refund or
    /// dispute) find their payment.
    pub async fn record_if_absent(
        &self,
        tenant: &TenantId,
        provider: &str,
        provider_ref: &str,
        payment_id: &PaymentId,
    ) -> Result<usize, ProviderRefsError> {
        let (store, _) = self.bucket().await?;
        let key = ref_key(tenant, provider, provider_ref);
        match store.create(&key, payment_id.as_str().to_owned().into()).await {
            Ok(_) => self.drain(tenant, provider, provider_ref, payment_id).await,
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(0),
            Err(e) => Err(nats(e)),
        }
    }

    /// The payment `provider_ref` was recorded for, if any.
    pub async fn lookup(
        &self,
        tenant: &TenantId,
        provider: &str,
        provider_ref: &str,
    ) -> Result<Option<PaymentId>, ProviderRefsError> {
        let (store, _) = self.bucket().await?;
        let key = ref_key(tenant, provider, provider_ref);
        let Some(value) = store.get(&key).await.map_err(nats)? else {
            return Ok(None);
        };
        let id = std::str::from_utf8(&value)
            .ok()
            .and_then(|s| PaymentId::new(s).ok())
            .ok_or(ProviderRefsError::Corrupt(key))?;
        Ok(Some(id))
    }

    /// Keeps an event whose payment is not known yet, then looks the reference up
    /// again: when the payment became known meanwhile, the event is published at once
    /// (the answer is then its position in PAYTRACK_IN).
    pub async fn park(
        &self,
        tenant: &TenantId,
        provider: &str,
        provider_ref: &str,
        delivery_id: &str,
        parked: &Parked,
    ) -> Result<Option<PaymentId>, ProviderRefsError> {
        let (store, _) = self.bucket().await?;
        let key = format!(
            "{}.{}",
            parked_prefix(tenant, provider, provider_ref),
            token(delivery_id)
        );
        let value = serde_json::to_vec(parked).map_err(|e| ProviderRefsError::Corrupt(e.to_string()))?;
        let count = self.parked_count(tenant).await?;
        metrics::gauge!("paytrack_ingest_parked_events", "tenant" => tenant.to_string()).set(count as f64);
        if count >= self.max_parked_per_tenant as u64 && store.get(&key).await.map_err(nats)?.is_none() {
            metrics::counter!("paytrack_ingest_parked_refused_total", "tenant" => tenant.to_string()).increment(1);
            tracing::warn!(
                %tenant, provider, parked = count, quota = self.max_parked_per_tenant,
                "the tenant has its quota of parked provider events; refusing this one"
            );
            return Err(ProviderRefsError::QuotaReached {
                parked: count,
                quota: self.max_parked_per_tenant,
            });
        }
        store.put(&key, value.into()).await.map_err(nats)?;
        metrics::counter!("paytrack_ingest_webhooks_parked_total", "provider" => provider.to_owned()).increment(1);
        match self.lookup(tenant, provider, provider_ref).await? {
            Some(payment_id) => {
                self.drain(tenant, provider, provider_ref, &payment_id).await?;
                Ok(Some(payment_id))
            }
            None => Ok(None),
        }
    }

    /// How many events `tenant` has parked: the keys under `parked.<tenant>.`, counted
    /// by the server (an ordered consumer's pending count, last message per key), so
    /// the count costs two requests whatever it is. A drained key counts until its
    /// marker expires ([`MARKER_TTL`]).
    pub async fn parked_count(&self, tenant: &TenantId) -> Result<u64, ProviderRefsError> {
        let (_, stream) = self.bucket().await?;
        let counter = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: subjects::kv_keys(BUCKET, &format!("parked.{tenant}.>")),
                deliver_policy: consumer::DeliverPolicy::LastPerSubject,
                headers_only: true,
                ..Default::default()
            })
            .await
            .map_err(nats)?;
        let info = counter.cached_info();
        let count = info.num_pending;
        // Read nothing from it: delete it now (it would expire by itself anyway).
        let _ = stream.delete_consumer(&info.name).await;
        Ok(count)
    }

    /// The events parked for one reference (for the drain, and for tests).
    pub async fn parked(
        &self,
        tenant: &TenantId,
        provider: &str,
        provider_ref: &str,
    ) -> Result<Vec<(String, Parked)>, ProviderRefsError> {
        let (store, stream) = self.bucket().await?;
        let prefix = parked_prefix(tenant, provider, provider_ref);
        let filter = subjects::kv_keys(BUCKET, &format!("{prefix}.*"));
        let subjects: Vec<(String, usize)> = stream
            .info_with_subjects(&filter)
            .await
            .map_err(nats)?
            .try_collect()
            .await
            .map_err(nats)?;
        let mut out = Vec::new();
        for (subject, _) in subjects {
            let Some(key) = subjects::kv_key(BUCKET, &subject) else {
                continue;
            };
            // A drained (deleted) key is still listed with its delete marker.
            let Some(value) = store.get(key).await.map_err(nats)? else {
                continue;
            };
            let parked: Parked =
                serde_json::from_slice(&value).map_err(|_| ProviderRefsError::Corrupt(key.to_owned()))?;
            out.push((key.to_owned(), parked));
        }
        Ok(out)
    }

    /// Publishes every event parked for `provider_ref` as a fact of `payment_id`, and
    /// forgets each once JetStream acknowledged it.
    async fn drain(
        &self,
        tenant: &TenantId,
        provider: &str,
        provider_ref: &str,
        payment_id: &PaymentId,
    ) -> Result<usize, ProviderRefsError> {
        let parked = self.parked(tenant, provider, provider_ref).await?;
        let (store, _) = self.bucket().await?;
        let count = parked.len();
        for (key, event) in parked {
            let fact = event.into_fact(tenant.clone(), payment_id.clone());
            let Stored { seq, duplicate } = self
                .publisher
                .store(&fact)
                .await
                .map_err(|e| ProviderRefsError::Nats(e.to_string()))?;
            tracing::info!(
                tenant = %tenant, payment_id = %payment_id, fact_id = %fact.fact_id, seq, duplicate,
                "parked provider event published"
            );
            store.purge_with_ttl(&key, MARKER_TTL).await.map_err(nats)?;
        }
        Ok(count)
    }
}
