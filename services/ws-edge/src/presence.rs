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
//! leftovers.
//!
//! `GET /v1/presence/{user}` reads the bucket when asked: one batched direct get of
//! the newest value of the user's keys and of every edge's key (no consumer, one round
//! trip). An edge keeps nothing of other edges' sessions, so its memory does not grow
//! with the number of edges or with the sessions they hold (a view of every key, kept
//! by a watch on every edge, cost each edge about 500 bytes per session of the whole
//! fleet). Reads are limited per tenant ([`ReadLimit`]): a tenant over its rate gets
//! 429 with a Retry-After, and other tenants are untouched.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use paytrack_shared::DeviceId;
use paytrack_shared::TenantId;
use paytrack_shared::auth::Claims;
use serde::{Deserialize, Serialize};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use paytrack_shared::subjects::PRESENCE_BUCKET as BUCKET;
/// The device name of a token without a `device` claim.
const NO_DEVICE: &str = "_";

/// Why presence could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    /// The bucket could not be created or opened.
    #[error("presence bucket: {0}")]
    Bucket(#[source] async_nats::Error),
    /// A user's presence could not be read.
    #[error("presence read: {0}")]
    Read(#[source] paytrack_nats::DirectReadError),
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
    /// For the batched reads of a user's keys.
    client: async_nats::Client,
    /// How long a read may take.
    read_timeout: Duration,
    ttl: Duration,
    edge_id: String,
    /// The sessions present on this edge, by key, refreshed together. The key is
    /// shared with its session (`Arc<str>`), not copied.
    present: Mutex<HashMap<Arc<str>, Present>>,
}

/// What the bucket holds of one user and of the edges, as one read found it.
#[derive(Default)]
struct View {
    /// Session keys (`<tenant>.<user>.<device>.<session_id>`), sorted so that a user's
    /// keys are one range.
    sessions: BTreeMap<Box<str>, Seen>,
    /// Edge keys (`_edge.<edge_id>`): when each edge last said it is alive.
    edges: HashMap<String, DateTime<Utc>>,
    /// One copy of each edge id the entries name, shared by all of them.
    edge_ids: HashSet<Arc<str>>,
}

/// A session key's value as the view keeps it: its device and session id are its
/// key's last tokens, its edge's id is shared and its transport is a flag.
struct Seen {
    edge_id: Arc<str>,
    sse: bool,
    since: DateTime<Utc>,
    seen_at: DateTime<Utc>,
}

impl View {
    /// Applies one key's newest entry: a put stores the key's value, a delete or
    /// purge forgets it; values that cannot be read are ignored.
    fn apply(&mut self, key: &str, value: Option<&[u8]>) {
        let edge = key.starts_with(EDGE_KEY_PREFIX) && key.as_bytes().get(EDGE_KEY_PREFIX.len()) == Some(&b'.');
        match (edge, value) {
            (true, Some(value)) => {
                if let Ok(alive) = serde_json::from_slice::<Alive>(value) {
                    self.edges.insert(key.to_owned(), alive.seen_at);
                }
            }
            (true, None) => {
                self.edges.remove(key);
            }
            (false, Some(value)) => {
                if let Ok(here) = serde_json::from_slice::<Here>(value) {
                    let seen = Seen {
                        edge_id: self.edge_id(here.edge_id),
                        sse: here.transport == crate::sse::TRANSPORT,
                        since: here.since,
                        seen_at: here.seen_at,
                    };
                    self.sessions.insert(key.into(), seen);
                }
            }
            (false, None) => {
                self.sessions.remove(key);
            }
        }
    }

    /// The shared copy of `edge_id` (made on its first sight).
    fn edge_id(&mut self, edge_id: String) -> Arc<str> {
        if let Some(shared) = self.edge_ids.get(edge_id.as_str()) {
            return shared.clone();
        }
        let shared: Arc<str> = edge_id.into();
        self.edge_ids.insert(shared.clone());
        shared
    }

    /// The sessions under `prefix` (`<tenant>.<user>.`) whose edge said it is alive
    /// within `ttl` (`own` is this edge, alive by definition), each with when its edge
    /// last said so.
    fn of(&self, prefix: &str, own: &str, ttl: Duration) -> Vec<Here> {
        let mut present: Vec<Here> = self
            .sessions
            .range::<str, _>((std::ops::Bound::Included(prefix), std::ops::Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .filter(|(_, seen)| within(seen.seen_at, SESSION_KEY_RETENTION))
            .filter_map(|(key, seen)| {
                let seen_at = if &*seen.edge_id == own {
                    Utc::now()
                } else {
                    self.edges
                        .get(&edge_key(&seen.edge_id))
                        .copied()
                        .filter(|at| within(*at, ttl))?
                };
                let (device, session_id) = device_and_session(key);
                Some(Here {
                    device: device.to_owned(),
                    session_id: session_id.to_owned(),
                    edge_id: seen.edge_id.to_string(),
                    transport: transport_name(seen.sse).to_owned(),
                    since: seen.since,
                    seen_at,
                })
            })
            .collect();
        present.sort_by(|a, b| (&a.device, a.since).cmp(&(&b.device, b.since)));
        present
    }
}

/// Presence reads per second per tenant on one edge (also the burst, twice this).
const READS_PER_SECOND: u32 = 50;

/// The per-tenant limit of presence reads: one tenant's burst is refused with 429 and
/// never slows another tenant's reads.
pub struct ReadLimit {
    limiter: DefaultKeyedRateLimiter<TenantId>,
    clock: DefaultClock,
}

impl Default for ReadLimit {
    fn default() -> Self {
        let rate = NonZeroU32::new(READS_PER_SECOND).unwrap_or(NonZeroU32::MIN);
        let burst = rate.saturating_mul(NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN));
        ReadLimit {
            limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            clock: DefaultClock::default(),
        }
    }
}

impl ReadLimit {
    /// Counts one read of `tenant`; Err holds how long to wait before the next one
    /// is allowed (for Retry-After).
    pub fn check(&self, tenant: &TenantId) -> Result<(), Duration> {
        self.limiter.check_key(tenant).map_err(|not_until| {
            metrics::counter!("paytrack_edge_presence_reads_limited_total").increment(1);
            not_until.wait_time_from(self.clock.now())
        })?;
        // Forget tenants that have read nothing for a while (the map holds one cell per
        // tenant that read recently).
        if self.limiter.len() > 1_024 {
            self.limiter.retain_recent();
        }
        Ok(())
    }
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
    pub async fn open(
        js: &jetstream::Context,
        ttl: Duration,
        edge_id: &str,
        read_timeout: Duration,
    ) -> Result<Arc<Presence>, PresenceError> {
        let store = paytrack_nats::open_bucket(js, BUCKET)
            .await
            .map_err(|e| PresenceError::Bucket(e.into()))?;
        let presence = Arc::new(Presence {
            store,
            client: js.client(),
            read_timeout,
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
        let device = claims.device.as_ref().map_or(NO_DEVICE, DeviceId::as_str);
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

    async fn delete(&self, key: &str) {
        if let Err(error) = self.store.delete(key).await {
            tracing::warn!(%error, "presence not removed; it expires with the TTL");
        }
    }

    /// The sessions `user` of `tenant` has open now, on any edge, read from the bucket
    /// (the newest value of the user's keys and of every edge's key, in one batched
    /// direct get). `user` must be a valid subject token (the caller checks it).
    pub async fn of(&self, tenant: &TenantId, user: &str) -> Result<Vec<Here>, PresenceError> {
        let prefix = format!("{tenant}.{user}.");
        let filters = [format!("{prefix}>"), format!("{EDGE_KEY_PREFIX}.>")];
        let newest = paytrack_nats::last_per_key(&self.client, BUCKET, &filters, READ_BATCH, self.read_timeout)
            .await
            .map_err(PresenceError::Read)?;
        let mut view = View::default();
        for entry in &newest {
            view.apply(&entry.key, entry.value.as_deref());
        }
        Ok(view.of(&prefix, &self.edge_id, self.ttl))
    }
}

/// Keys one presence read returns at most (a user's sessions and every edge's key);
/// a user with more sessions open is listed in part.
const READ_BATCH: usize = 1024;

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

    fn here(device: &str, edge_id: &str) -> Vec<u8> {
        let now = Utc::now();
        serde_json::to_vec(&Here {
            device: device.to_owned(),
            session_id: format!("s-{device}"),
            edge_id: edge_id.to_owned(),
            transport: "websocket".to_owned(),
            since: now,
            seen_at: now,
        })
        .unwrap_or_default()
    }

    #[test]
    fn the_view_lists_a_users_sessions_on_live_edges_only() {
        let mut view = View::default();
        let ttl = Duration::from_secs(60);
        view.apply("t.u1.phone.s1", Some(&here("phone", "me")));
        view.apply("t.u1.tablet.s2", Some(&here("tablet", "other")));
        // Another user whose id starts with the same characters, another tenant.
        view.apply("t.u10.laptop.s3", Some(&here("laptop", "me")));
        view.apply("x.u1.watch.s4", Some(&here("watch", "me")));
        let devices =
            |view: &View| -> Vec<String> { view.of("t.u1.", "me", ttl).into_iter().map(|h| h.device).collect() };
        assert_eq!(devices(&view), ["phone"], "the other edge never said it is alive");
        let alive = serde_json::to_vec(&Alive {
            edge_id: "other".to_owned(),
            seen_at: Utc::now(),
        })
        .unwrap_or_default();
        view.apply(&edge_key("other"), Some(&alive));
        assert_eq!(devices(&view), ["phone", "tablet"]);
        view.apply(&edge_key("other"), None);
        view.apply("t.u1.phone.s1", None);
        assert!(devices(&view).is_empty(), "deleted keys are forgotten");
    }

    /// Every edge keeps an entry for every session of every edge: the entries of one
    /// edge's sessions share one copy of its id, and an entry's device and session
    /// are read back from its key, so the view grows by little more than the keys.
    #[test]
    fn the_view_keeps_one_copy_of_an_edge_id_for_all_its_sessions() {
        let mut view = View::default();
        view.apply("t.u1.phone.s1", Some(&here("phone", "other")));
        view.apply("t.u2.tablet.s2", Some(&here("tablet", "other")));
        let ids: Vec<&Arc<str>> = view.sessions.values().map(|seen| &seen.edge_id).collect();
        assert_eq!(ids.len(), 2);
        assert!(
            Arc::ptr_eq(ids[0], ids[1]),
            "each entry holds its own copy of the edge id"
        );
        let alive = serde_json::to_vec(&Alive {
            edge_id: "other".to_owned(),
            seen_at: Utc::now(),
        })
        .unwrap_or_default();
        view.apply(&edge_key("other"), Some(&alive));
        let listed = view.of("t.u2.", "me", Duration::from_secs(60));
        assert_eq!(listed.len(), 1);
        assert_eq!(
            (listed[0].device.as_str(), listed[0].session_id.as_str()),
            ("tablet", "s2")
        );
        assert_eq!(
            (listed[0].edge_id.as_str(), listed[0].transport.as_str()),
            ("other", "websocket")
        );
    }

    #[test]
    fn one_tenants_burst_of_reads_is_limited_and_another_tenant_is_not() {
        let limit = ReadLimit::default();
        let (a, b) = (TenantId::new("a").unwrap(), TenantId::new("b").unwrap());
        let answered = (0..1_000).filter(|_| limit.check(&a).is_ok()).count();
        assert!(
            (100..110).contains(&answered),
            "{answered} of a burst of 1,000 answered"
        );
        let wait = limit.check(&a).expect_err("over the limit");
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1), "{wait:?}");
        assert!(limit.check(&b).is_ok());
    }

    #[test]
    fn a_key_names_its_device_and_session() {
        assert_eq!(device_and_session("acme.u1.phone.0190-ab"), ("phone", "0190-ab"));
    }
}
