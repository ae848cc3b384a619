//! Presence: which of a user's devices have a session open right now, on any edge.
//!
//! Each session keeps one key, `<tenant>.<user>.<device>.<session_id>`, in the JetStream
//! KV bucket `PAYTRACK_PRESENCE`, written at open, refreshed while the session lives and
//! deleted at close. The bucket's TTL removes the keys of an edge that died without
//! closing its sessions. `GET /v1/presence/{user}` reads the user's keys with one
//! short-lived ordered consumer (last value per key), so reading presence costs a
//! request, not a consumer per session.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, stream};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use paytrack_shared::TenantId;
use paytrack_shared::auth::Claims;
use paytrack_shared::ids::validate_token;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use paytrack_shared::subjects::{PRESENCE_BUCKET as BUCKET, STREAM_PRESENCE};
/// The device name of a token without a `device` claim.
const NO_DEVICE: &str = "_";

/// Why presence could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    /// The bucket could not be created or opened.
    #[error("presence bucket: {0}")]
    Bucket(#[source] async_nats::Error),
    /// JetStream did not answer a read.
    #[error("presence read: {0}")]
    Read(#[source] async_nats::Error),
}

/// One open session of a user, as `GET /v1/presence/{user}` lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Here {
    /// The device (`_` for a token without a `device` claim).
    pub device: String,
    /// The session.
    pub session_id: String,
    /// The edge holding it.
    pub edge_id: String,
    /// `websocket` or `sse`.
    pub transport: String,
    /// When the session opened.
    pub since: DateTime<Utc>,
    /// When the edge last confirmed it (at most the TTL ago).
    pub seen_at: DateTime<Utc>,
}

/// The presence bucket of one edge.
pub struct Presence {
    store: kv::Store,
    stream: stream::Stream,
    ttl: Duration,
    edge_id: String,
}

impl Presence {
    /// Creates (or opens) the bucket with `ttl` and `replicas`.
    pub async fn open(
        js: &jetstream::Context,
        ttl: Duration,
        replicas: usize,
        edge_id: &str,
    ) -> Result<Arc<Presence>, PresenceError> {
        let store = js
            .create_key_value(kv::Config {
                bucket: BUCKET.to_owned(),
                description: "paytrack: open sessions per user and device".to_owned(),
                history: 1,
                max_age: ttl,
                storage: stream::StorageType::File,
                num_replicas: replicas.max(1),
                ..Default::default()
            })
            .await
            .map_err(|e| PresenceError::Bucket(e.into()))?;
        let stream = js
            .get_stream(STREAM_PRESENCE)
            .await
            .map_err(|e| PresenceError::Bucket(e.into()))?;
        Ok(Arc::new(Presence {
            store,
            stream,
            ttl,
            edge_id: edge_id.to_owned(),
        }))
    }

    /// Marks a session present until `done` is cancelled, refreshing its key at a
    /// third of the TTL, then deletes the key. Failures are logged: presence is
    /// advisory and never holds a session up.
    pub fn track(self: &Arc<Self>, claims: &Claims, session_id: &str, transport: &str, done: CancellationToken) {
        let device = claims.device.clone().unwrap_or_else(|| NO_DEVICE.to_owned());
        let key = format!("{}.{}.{}.{}", claims.tenant, claims.sub, device, session_id);
        // A `sub` that is not a subject token cannot name a key; such a user has no presence.
        if validate_token(&claims.sub, "user").is_err() {
            return;
        }
        let here = Here {
            device,
            session_id: session_id.to_owned(),
            edge_id: self.edge_id.clone(),
            transport: transport.to_owned(),
            since: Utc::now(),
            seen_at: Utc::now(),
        };
        let presence = self.clone();
        tokio::spawn(async move {
            let mut here = here;
            let mut tick = tokio::time::interval((presence.ttl / 3).max(Duration::from_millis(100)));
            loop {
                tokio::select! {
                    _ = done.cancelled() => break,
                    _ = tick.tick() => {
                        here.seen_at = Utc::now();
                        let value = serde_json::to_vec(&here).unwrap_or_default();
                        if let Err(error) = presence.store.put(&key, value.into()).await {
                            tracing::warn!(%error, "presence not written");
                        }
                    }
                }
            }
            if let Err(error) = presence.store.delete(&key).await {
                tracing::warn!(%error, "presence not removed; it expires with the TTL");
            }
        });
    }

    /// The sessions `user` of `tenant` has open now.
    /// `user` must be a valid subject token (the caller checks it).
    pub async fn of(&self, tenant: &TenantId, user: &str) -> Result<Vec<Here>, PresenceError> {
        let filter = format!("$KV.{BUCKET}.{tenant}.{user}.>");
        let read = |e: &dyn std::fmt::Display| PresenceError::Read(e.to_string().into());
        let mut ordered = self
            .stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: filter,
                deliver_policy: consumer::DeliverPolicy::LastPerSubject,
                ..Default::default()
            })
            .await
            .map_err(|e| read(&e))?;
        let pending = ordered.info().await.map_err(|e| read(&e))?.num_pending;
        let mut messages = ordered.messages().await.map_err(|e| read(&e))?;
        let mut present = Vec::new();
        for _ in 0..pending {
            let Some(message) = messages.next().await else { break };
            let message = message.map_err(|e| read(&e))?;
            let deleted = message
                .headers
                .as_ref()
                .and_then(|h| h.get("KV-Operation"))
                .is_some_and(|op| op.as_str() != "PUT");
            if deleted {
                continue;
            }
            if let Ok(here) = serde_json::from_slice::<Here>(&message.payload)
                && Utc::now()
                    .signed_duration_since(here.seen_at)
                    .to_std()
                    .unwrap_or_default()
                    <= self.ttl
            {
                present.push(here);
            }
        }
        present.sort_by(|a, b| (&a.device, a.since).cmp(&(&b.device, b.since)));
        Ok(present)
    }
}
