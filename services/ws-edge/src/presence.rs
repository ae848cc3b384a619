//! Presence: which of a user's devices have a session open right now, on any edge.
//!
//! Each session keeps one key, `<tenant>.<user>.<device>.<session_id>`, in the JetStream
//! KV bucket `PAYTRACK_PRESENCE`, written at open and deleted at close. Whether the
//! edge holding it is still alive is said once per edge, not once per session: every
//! edge rewrites its own key `_edge.<edge_id>` every third of the presence TTL, and a
//! reader lists a session only while its edge's key is younger than the TTL. An edge
//! that died without closing its sessions thus drops out of every answer within the
//! TTL, and the steady cost is one write per edge per refresh whatever the number of
//! sessions (10,000 sessions refreshed one key each at a third of 60 s were 500
//! JetStream writes a second). Session keys are rewritten only every third of
//! [`SESSION_KEY_RETENTION`], the bucket's age limit, which removes a dead edge's
//! leftovers. `GET /v1/presence/{user}` reads the user's keys with one short-lived
//! ordered consumer (last value per key) and each edge's key with a direct get, so
//! reading presence costs requests, not a consumer per session.

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
    /// When the edge holding it last said it is alive (at most the TTL ago).
    pub seen_at: DateTime<Utc>,
}

/// Key writes of the refresh that run at once.
const REFRESH_CONCURRENCY: usize = 32;

/// How long a key lives without being rewritten (the bucket's age limit): session
/// keys are rewritten every third of it, so only a dead edge's keys reach it.
pub const SESSION_KEY_RETENTION: Duration = paytrack_nats::PRESENCE_RETENTION;

/// The first token of an edge's own key (`_edge.<edge_id>`): two tokens, so it never
/// falls under a user's filter `<tenant>.<user>.>`.
const EDGE_KEY_PREFIX: &str = "_edge";

/// What an edge's own key holds: when it last said it is alive.
#[derive(Debug, Serialize, Deserialize)]
struct Alive {
    edge_id: String,
    seen_at: DateTime<Utc>,
}

/// The key an edge says it is alive under; characters a key token cannot hold
/// become `_`.
fn edge_key(edge_id: &str) -> String {
    let token: String = edge_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{EDGE_KEY_PREFIX}.{token}")
}

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
    /// Opens the bucket (the layout step creates it), says this edge is alive, and
    /// keeps saying so every third of `ttl`.
    pub async fn open(js: &jetstream::Context, ttl: Duration, edge_id: &str) -> Result<Arc<Presence>, PresenceError> {
        let store = paytrack_nats::open_bucket(js, BUCKET)
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
        presence.say_alive().await;
        tokio::spawn(every_third_of(Arc::downgrade(&presence), ttl, |p| async move {
            p.say_alive().await
        }));
        tokio::spawn(every_third_of(
            Arc::downgrade(&presence),
            SESSION_KEY_RETENTION,
            |p| async move { p.rewrite_sessions().await },
        ));
        Ok(presence)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Present>> {
        self.present.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks a session present (its key is written now, and rewritten with every other
    /// session of the edge only at a third of [`SESSION_KEY_RETENTION`]) and returns its key, for
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

    /// Rewrites every present session's key (so that only a dead edge's keys reach
    /// the bucket's age limit).
    async fn rewrite_sessions(self: Arc<Self>) {
        let keys: Vec<Arc<str>> = self.lock().keys().cloned().collect();
        futures::stream::iter(keys)
            .for_each_concurrent(REFRESH_CONCURRENCY, |key| {
                let presence = self.clone();
                async move { presence.write(&key).await }
            })
            .await;
    }

    /// Rewrites this edge's own key with the time now.
    async fn say_alive(&self) {
        let alive = Alive {
            edge_id: self.edge_id.clone(),
            seen_at: Utc::now(),
        };
        let value = serde_json::to_vec(&alive).unwrap_or_default();
        if let Err(error) = self.store.put(edge_key(&self.edge_id), value.into()).await {
            tracing::warn!(%error, "edge presence not written");
        }
    }

    /// When `edge_id` last said it is alive, if it has within the TTL (this edge
    /// always has).
    async fn alive_at(&self, edge_id: &str) -> Result<Option<DateTime<Utc>>, PresenceError> {
        if edge_id == self.edge_id {
            return Ok(Some(Utc::now()));
        }
        let value = self
            .store
            .get(edge_key(edge_id))
            .await
            .map_err(|e| PresenceError::Read(e.into()))?;
        Ok(value
            .and_then(|v| serde_json::from_slice::<Alive>(&v).ok())
            .map(|alive| alive.seen_at)
            .filter(|seen_at| within(*seen_at, self.ttl)))
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
        let mut present: Vec<Here> = Vec::new();
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
                && within(here.seen_at, SESSION_KEY_RETENTION)
            {
                present.push(here);
            }
        }
        // A session is present while the edge holding it says it is alive.
        let mut edges: HashMap<String, Option<DateTime<Utc>>> = HashMap::new();
        for here in &present {
            if !edges.contains_key(&here.edge_id) {
                let alive = self.alive_at(&here.edge_id).await?;
                edges.insert(here.edge_id.clone(), alive);
            }
        }
        let mut present: Vec<Here> = present
            .into_iter()
            .filter_map(|mut here| {
                here.seen_at = edges.get(&here.edge_id).copied().flatten()?;
                Some(here)
            })
            .collect();
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

/// Whether `at` is at most `age` ago.
fn within(at: DateTime<Utc>, age: Duration) -> bool {
    Utc::now().signed_duration_since(at).to_std().unwrap_or_default() <= age
}

/// Runs `work` every third of `period` (first a third after the start), for as long
/// as the edge's presence exists.
async fn every_third_of<F, Fut>(presence: Weak<Presence>, period: Duration, work: F)
where
    F: Fn(Arc<Presence>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut tick = tokio::time::interval((period / 3).max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(presence) = presence.upgrade() else { return };
        work(presence).await;
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
    fn an_edge_key_is_two_tokens_whatever_the_edge_id() {
        assert_eq!(edge_key("edge-7_a"), "_edge.edge-7_a");
        assert_eq!(edge_key("pod.ns.svc"), "_edge.pod_ns_svc");
        assert_eq!(edge_key("a b*>"), "_edge.a_b__");
    }

    #[test]
    fn a_key_names_its_device_and_session() {
        assert_eq!(device_and_session("acme.u1.phone.0190-ab"), ("phone", "0190-ab"));
    }
}
