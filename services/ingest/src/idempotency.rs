//! `Idempotency-Key` of `POST /v1/payments`: one key per tenant in the JetStream KV
//! bucket `PAYTRACK_IDEMPOTENCY` (TTL `idempotency_ttl_secs`).
//!
//! The first request *claims* the key with KV create-if-absent (only one create of a
//! key can succeed, across every ingest replica), records the payment id it will use,
//! does the work, then stores the exact response bytes. Concurrent requests with the
//! key wait for that response and answer it byte for byte; a request with another
//! body answers 422. A claim whose owner died between claim and response (older than
//! the claim timeout) is taken over by compare-and-set on its revision, keeping its
//! payment id: the command fact's `Nats-Msg-Id` (`cmd:<payment>:create:<key>`)
//! de-duplicates a publish that did happen before the crash, so the key still makes
//! one payment.
//!
//! Commands whose repeat JetStream de-duplicates (cancel, retry, resolve, push)
//! [`Idempotency::bind`] their key to their body under a scoped bucket key, so the key
//! with another body is 422 there too.

use std::time::Duration;

use async_nats::jetstream::kv::{self, CreateErrorKind};
use chrono::{DateTime, Utc};
use paytrack_shared::envelope::RoutingDecision;
use paytrack_shared::{PaymentId, TenantId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// Longest accepted `Idempotency-Key`.
pub const MAX_KEY_LEN: usize = 255;
/// How often a waiting request looks at the key again.
const POLL: Duration = Duration::from_millis(25);

/// What the bucket holds for one key.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
enum Record {
    /// Claimed; the response is being made.
    Pending {
        body_hash: String,
        payment_id: PaymentId,
        claimed_at: DateTime<Utc>,
        /// The provider an abandoned attempt chose (and its reference, if it got
        /// one), so the retry asks the same provider and never a second one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        routing: Option<RoutingDecision>,
    },
    /// Answered: the response to replay.
    Done {
        body_hash: String,
        payment_id: PaymentId,
        status: u16,
        body: String,
    },
    /// Bound to the body of a command whose repeat JetStream de-duplicates (cancel,
    /// retry, resolve, push): only that body may use the key.
    Bound { body_hash: String },
}

impl Record {
    /// A claim of `payment_id` for the body hashing to `body_hash`, made at `claimed_at`.
    fn pending(
        body_hash: &str,
        payment_id: &PaymentId,
        claimed_at: DateTime<Utc>,
        routing: Option<RoutingDecision>,
    ) -> Record {
        Record::Pending {
            body_hash: body_hash.to_owned(),
            payment_id: payment_id.clone(),
            claimed_at,
            routing,
        }
    }

    fn body_hash(&self) -> &str {
        match self {
            Record::Pending { body_hash, .. } | Record::Done { body_hash, .. } | Record::Bound { body_hash } => {
                body_hash
            }
        }
    }
}

/// The outcome of a claim.
#[derive(Debug)]
pub enum Claimed {
    /// This request owns the key: make the payment with this id, then [`Idempotency::complete`].
    Owner {
        /// The claim's revision (for the compare-and-set that completes it).
        revision: u64,
        /// The payment id to use (the dead owner's, after a take-over).
        payment_id: PaymentId,
        /// The provider the abandoned attempt chose, to be used again.
        routing: Option<RoutingDecision>,
    },
    /// The key was answered before: answer this, byte for byte.
    Replay {
        /// The HTTP status.
        status: u16,
        /// The body.
        body: String,
    },
}

/// The idempotency bucket.
#[derive(Clone)]
pub struct Idempotency {
    store: kv::Store,
    /// After this, a pending claim is presumed dead and may be taken over.
    claim_timeout: Duration,
    /// How long a concurrent request waits for the first one's response.
    wait: Duration,
}

/// Checks an `Idempotency-Key` header: 1 to 255 visible ASCII characters (it is
/// part of the command's `Nats-Msg-Id`).
pub fn validate_key(raw: Option<&http::HeaderValue>) -> Result<String, ApiError> {
    let raw = raw.ok_or_else(|| ApiError::Invalid("the Idempotency-Key header is required".into()))?;
    let key = raw
        .to_str()
        .map_err(|_| ApiError::Invalid("Idempotency-Key must be visible ASCII".into()))?;
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::Invalid(format!(
            "Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"
        )));
    }
    Ok(key.to_owned())
}

/// The hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn unavailable(what: &str, error: &dyn std::fmt::Display) -> ApiError {
    tracing::warn!(%error, "idempotency bucket: {what} failed");
    ApiError::Unavailable
}

impl Idempotency {
    /// The bucket's store; claims older than `claim_timeout` may be taken over, and a
    /// concurrent request waits up to `wait` for the first response.
    pub fn new(store: kv::Store, claim_timeout: Duration, wait: Duration) -> Idempotency {
        Idempotency {
            store,
            claim_timeout,
            wait,
        }
    }

    /// The bucket key of a tenant's `Idempotency-Key`: `<tenant>.<sha256 of the key>`
    /// (any key becomes a valid KV key; tenants never share one).
    pub fn bucket_key(tenant: &TenantId, key: &str) -> String {
        format!("{tenant}.{}", sha256_hex(key.as_bytes()))
    }

    /// The bucket key of a tenant's `Idempotency-Key` on a command that is not a create:
    /// `<tenant>.<sha256>` of the length-prefixed `scope` (which command, on which
    /// payment) and key, so one key on two scopes is two keys. The hashed text starts
    /// with a NUL, which a create's (a visible ASCII key) never holds: the two never meet.
    pub fn scoped_bucket_key(tenant: &TenantId, scope: &[&str], key: &str) -> String {
        let mut hasher = Sha256::new();
        hasher.update(b"\0scoped");
        for part in scope.iter().chain([&key]) {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part.as_bytes());
        }
        format!("{tenant}.{}", hex::encode(hasher.finalize()))
    }

    /// Binds `key` to the body of a command whose repeat is answered by JetStream's
    /// de-duplication (`duplicate: true`) rather than replayed: the first body to bind
    /// the key owns it, and the key with another body is 422, before anything is stored.
    /// True when this call bound the key, false when the same body had bound it
    /// before (a repeat of that request).
    pub async fn bind(&self, key: &str, body_hash: &str) -> Result<bool, ApiError> {
        let bound = Record::Bound {
            body_hash: body_hash.to_owned(),
        };
        // A key deleted between the create and the read is bound again; twice is plenty.
        for _ in 0..3 {
            match self.store.create(key, encode(&bound)).await {
                Ok(_) => return Ok(true),
                Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {}
                Err(e) => return Err(unavailable("bind", &e)),
            }
            let Some(entry) = self.store.entry(key).await.map_err(|e| unavailable("read", &e))? else {
                continue;
            };
            if entry.operation != kv::Operation::Put {
                continue;
            }
            let record: Record = serde_json::from_slice(&entry.value).map_err(|error| {
                tracing::error!(%error, "unreadable idempotency record");
                ApiError::Internal
            })?;
            return match record {
                Record::Bound { body_hash: first } if first == body_hash => Ok(false),
                _ => Err(ApiError::IdempotencyKeyReused),
            };
        }
        Err(ApiError::Unavailable)
    }

    /// Claims `key` for a request whose body hashes to `body_hash`, or finds the
    /// answer to replay. 422 when the key was used with another body; 409 when the
    /// first request is still at work after the wait.
    pub async fn claim(&self, key: &str, body_hash: &str, fresh: PaymentId) -> Result<Claimed, ApiError> {
        let deadline = tokio::time::Instant::now() + self.wait;
        loop {
            let pending = Record::pending(body_hash, &fresh, Utc::now(), None);
            match self.store.create(key, encode(&pending)).await {
                Ok(revision) => {
                    return Ok(Claimed::Owner {
                        revision,
                        payment_id: fresh,
                        routing: None,
                    });
                }
                Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {}
                Err(e) => return Err(unavailable("claim", &e)),
            }
            loop {
                let Some(entry) = self.store.entry(key).await.map_err(|e| unavailable("read", &e))? else {
                    break; // expired or released between: claim again
                };
                if entry.operation != kv::Operation::Put {
                    break;
                }
                let record: Record = serde_json::from_slice(&entry.value).map_err(|error| {
                    tracing::error!(%error, "unreadable idempotency record");
                    ApiError::Internal
                })?;
                if record.body_hash() != body_hash {
                    return Err(ApiError::IdempotencyKeyReused);
                }
                match record {
                    Record::Done { status, body, .. } => return Ok(Claimed::Replay { status, body }),
                    // Another kind of command's key (never the case: their bucket keys differ).
                    Record::Bound { .. } => return Err(ApiError::IdempotencyKeyReused),
                    Record::Pending {
                        payment_id,
                        claimed_at,
                        routing,
                        ..
                    } if Utc::now()
                        .signed_duration_since(claimed_at)
                        .to_std()
                        .unwrap_or_default()
                        > self.claim_timeout =>
                    {
                        let taken = Record::pending(body_hash, &payment_id, Utc::now(), routing.clone());
                        if let Ok(revision) = self.store.update(key, encode(&taken), entry.revision).await {
                            tracing::warn!(payment_id = %payment_id, "took over an abandoned idempotency claim");
                            return Ok(Claimed::Owner {
                                revision,
                                payment_id,
                                routing,
                            });
                        }
                    }
                    Record::Pending { .. } => {
                        if tokio::time::Instant::now() > deadline {
                            return Err(ApiError::IdempotencyInProgress);
                        }
                        tokio::time::sleep(POLL).await;
                    }
                }
            }
        }
    }

    /// Stores the response of a claim this request owns, so every later request
    /// with the key replays it.
    pub async fn complete(
        &self,
        key: &str,
        revision: u64,
        body_hash: &str,
        payment_id: &PaymentId,
        status: u16,
        body: &str,
    ) -> Result<(), ApiError> {
        let done = Record::Done {
            body_hash: body_hash.to_owned(),
            payment_id: payment_id.clone(),
            status,
            body: body.to_owned(),
        };
        self.store
            .update(key, encode(&done), revision)
            .await
            .map(|_| ())
            .map_err(|e| unavailable("complete", &e))
    }

    /// Writes the provider a claim this request owns has chosen into the claim, before
    /// that provider is asked to initiate the payment: an ingest that dies while
    /// asking leaves the choice behind, so the retry that takes the claim over asks
    /// the same provider (under the same payment id) and never a second one. The
    /// claim's new revision.
    pub async fn note_routing(
        &self,
        key: &str,
        revision: u64,
        body_hash: &str,
        payment_id: &PaymentId,
        routing: &RoutingDecision,
    ) -> Result<u64, ApiError> {
        let noted = Record::pending(body_hash, payment_id, Utc::now(), Some(routing.clone()));
        self.store
            .update(key, encode(&noted), revision)
            .await
            .map_err(|e| unavailable("note routing", &e))
    }

    /// Gives up a claim whose work failed (the publish was refused or timed out), so
    /// the caller's retry takes it over at once. The claim keeps its payment id: a
    /// publish that JetStream did store despite the error is then de-duplicated by
    /// its `Nats-Msg-Id`, and the retry answers the payment that fact created.
    /// The claim also keeps `routing`, the provider this attempt chose: the retry
    /// asks that provider again (or, holding its reference, not at all), never
    /// another one, which would make the payment twice.
    pub async fn abandon(
        &self,
        key: &str,
        revision: u64,
        body_hash: &str,
        payment_id: &PaymentId,
        routing: Option<&RoutingDecision>,
    ) {
        let abandoned = Record::pending(body_hash, payment_id, DateTime::UNIX_EPOCH, routing.cloned());
        if let Err(error) = self.store.update(key, encode(&abandoned), revision).await {
            tracing::warn!(%error, "idempotency claim not abandoned; it is taken over after the claim timeout");
        }
    }
}

fn encode(record: &Record) -> bytes::Bytes {
    bytes::Bytes::from(serde_json::to_vec(record).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_visible_ascii_up_to_255_and_bucket_keys_are_per_tenant() {
        let header = |v: &str| http::HeaderValue::from_str(v).unwrap();
        assert_eq!(validate_key(Some(&header("order-42:a/b"))).unwrap(), "order-42:a/b");
        assert!(validate_key(None).is_err());
        assert!(validate_key(Some(&header(""))).is_err());
        assert!(validate_key(Some(&header("a b"))).is_err());
        assert!(validate_key(Some(&header(&"k".repeat(256)))).is_err());
        assert!(validate_key(Some(&header(&"k".repeat(255)))).is_ok());
        let (a, b) = (TenantId::new("acme").unwrap(), TenantId::new("beta").unwrap());
        let key = Idempotency::bucket_key(&a, "k. >*");
        assert!(key.starts_with("acme.") && key.len() == "acme.".len() + 64, "{key}");
        assert_ne!(key, Idempotency::bucket_key(&b, "k. >*"));
        // Scoped keys: per tenant, per scope, never a create's, never ambiguous.
        let scoped = Idempotency::scoped_bucket_key(&a, &["cancel", "pay_1"], "k");
        assert!(scoped.starts_with("acme.") && scoped.len() == key.len(), "{scoped}");
        assert_ne!(scoped, Idempotency::scoped_bucket_key(&b, &["cancel", "pay_1"], "k"));
        assert_ne!(scoped, Idempotency::scoped_bucket_key(&a, &["retry", "pay_1"], "k"));
        assert_ne!(scoped, Idempotency::scoped_bucket_key(&a, &["cancel", "pay_1k"], ""));
        assert_ne!(scoped, Idempotency::bucket_key(&a, "k"));
    }
}
