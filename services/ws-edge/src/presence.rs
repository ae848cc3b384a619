//! Presence: which of a user's devices have a session open right now, on any edge.
//!
//! Each session keeps one key, `<tenant>.<user>.<device>.<session_id>`, in the JetStream
//! KV bucket `PAYTRACK_PRESENCE`, written at open, refreshed while the session lives and
//! deleted at close. The bucket's TTL removes the keys of an edge that died without
//! closing its sessions. One task per edge refreshes every session's key (a session
//! holds no timer or task of its own for it). `GET /v1/presence/{user}` reads the user's keys with one
//! short-lived ordered consumer (last value per key), so reading presence costs a
//! request, not a consumer per session.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, stream};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use paytrack_shared::TenantId;
use paytrack_shared::auth::Claims;
use paytrack_shared::ids::validate_token;
use serde::{Deserialize, Serialize};

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

/// Key writes of the refresh that run at once.
const REFRESH_CONCURRENCY: usize = 32;

/// The presence bucket of one edge.
pub struct Presence {
    store: kv::Store,
    stream: stream::Stream,
    ttl: Duration,
    edge_id: String,
    /// The sessions present on this edge, by key, refreshed together. The key is
    /// shared with its session (`Arc<str>`), not copied.
    present: Mutex<HashMap<Arc<str>, Present>>,
}

/// One session present on this edge.
struct Present {
    since: DateTime<Utc>,
    /// SSE or WebSocket: a flag rather than the name (16 bytes) in every entry of the
    /// map.
    sse: bool,
    /// A write of the key is on its way: a close waits for it before deleting.
    writing: bool,
    /// The session closed while a write was on its way: delete the key after it.
    closed: bool,
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
        let presence = Arc::new(Presence {
            store,
            stream,
            ttl,
            edge_id: edge_id.to_owned(),
            present: Mutex::new(HashMap::new()),
        });
        tokio::spawn(refresh(Arc::downgrade(&presence), ttl));
        Ok(presence)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Present>> {
        self.present.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks a session present (its key is written now and refreshed at a third of the
    /// TTL with every other session of the edge) and returns its key, for
    /// [`Presence::leave`] at close. Failures are logged: presence is advisory and never
    /// holds a session up.
    pub fn track(self: &Arc<Self>, claims: &Claims, session_id: &str, transport: &'static str) -> Option<Arc<str>> {
        // A `sub` that is not a subject token cannot name a key; such a user has no presence.
        if validate_token(&claims.sub, "user").is_err() {
            return None;
        }
        let device = claims.device.as_deref().unwrap_or(NO_DEVICE);
        let key: Arc<str> = format!("{}.{}.{}.{}", claims.tenant, claims.sub, device, session_id).into();
        self.lock().insert(
            key.clone(),
            Present {
                since: Utc::now(),
                sse: transport == crate::sse::TRANSPORT,
                writing: false,
                closed: false,
            },
        );
        let presence = self.clone();
        let written = key.clone();
        tokio::spawn(async move { presence.write(&written).await });
        Some(key)
    }

    /// Ends a session's presence: its key is deleted (after a write of it on its way).
    pub fn leave(self: &Arc<Self>, key: Arc<str>) {
        let delete = {
            let mut present = self.lock();
            match present.get_mut(&*key) {
                Some(p) if p.writing => {
                    p.closed = true;
                    false
                }
                Some(_) => present.remove(&*key).is_some(),
                None => false,
            }
        };
        if delete {
            let presence = self.clone();
            tokio::spawn(async move { presence.delete(&key).await });
        }
    }

    /// Writes `key` with the time now, unless a write of it is on its way or its
    /// session closed; deletes it afterwards if the session closed meanwhile.
    async fn write(&self, key: &str) {
        let value = {
            let mut present = self.lock();
            let Some(p) = present.get_mut(key).filter(|p| !p.writing && !p.closed) else {
                return;
            };
            p.writing = true;
            let (device, session_id) = device_and_session(key);
            let here = Here {
                device: device.to_owned(),
                session_id: session_id.to_owned(),
                edge_id: self.edge_id.clone(),
                transport: transport_name(p.sse).to_owned(),
                since: p.since,
                seen_at: Utc::now(),
            };
            serde_json::to_vec(&here).unwrap_or_default()
        };
        if let Err(error) = self.store.put(key, value.into()).await {
            tracing::warn!(%error, "presence not written");
        }
        let closed = {
            let mut present = self.lock();
            match present.get_mut(key) {
                Some(p) if p.closed => present.remove(key).is_some(),
                Some(p) => {
                    p.writing = false;
                    false
                }
                None => false,
            }
        };
        if closed {
            self.delete(key).await;
        }
    }

    async fn delete(&self, key: &str) {
        if let Err(error) = self.store.delete(key).await {
            tracing::warn!(%error, "presence not removed; it expires with the TTL");
        }
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

/// The transport a presence entry names (`Present::sse`).
fn transport_name(sse: bool) -> &'static str {
    if sse { crate::sse::TRANSPORT } else { "websocket" }
}

/// The device and session of a key `<tenant>.<user>.<device>.<session_id>`.
fn device_and_session(key: &str) -> (&str, &str) {
    let mut parts = key.rsplitn(3, '.');
    let session_id = parts.next().unwrap_or_default();
    let device = parts.next().unwrap_or(NO_DEVICE);
    (device, session_id)
}

/// Refreshes every present session's key at a third of the TTL, for as long as the
/// edge's presence exists.
async fn refresh(presence: Weak<Presence>, ttl: Duration) {
    let mut tick = tokio::time::interval((ttl / 3).max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(presence) = presence.upgrade() else { return };
        let keys: Vec<Arc<str>> = presence.lock().keys().cloned().collect();
        futures::stream::iter(keys)
            .for_each_concurrent(REFRESH_CONCURRENCY, |key| {
                let presence = presence.clone();
                async move { presence.write(&key).await }
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_names_its_transport() {
        for transport in [crate::sse::TRANSPORT, "websocket"] {
            assert_eq!(transport_name(transport == crate::sse::TRANSPORT), transport);
        }
    }

    #[test]
    fn a_key_names_its_device_and_session() {
        assert_eq!(device_and_session("acme.u1.phone.0190-ab"), ("phone", "0190-ab"));
    }
}
