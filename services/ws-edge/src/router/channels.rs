//! The channel map: the channels this edge follows (held by a session, or idle since
//! recently), the keys a message's subject belongs to, and how a channel is attached
//! to and detached from.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use paytrack_shared::DeviceId;
use paytrack_shared::subjects::{AlertSubject, PaymentSubject, PushSubject};

use super::feed::Feed;
use super::hub::Sub;
use super::hub::{Hub, Inner};
use super::tenant_channel::{ChannelMap, ChannelRef, TenantChannel, TenantChannelRef};

/// `tenant user:<id>` → device → how many followed channels are bound to it, so a push
/// to `all` finds the device-bound channels.
pub(super) type UserDevices = ChannelMap<HashMap<DeviceId, usize>>;

/// Calls `each` with the key of every channel a message of `feed` on `subject` belongs
/// to. Allocates nothing: every message of every stream goes through it.
pub(super) fn each_key<'a>(
    feed: Feed,
    subject: &'a str,
    user_devices: &'a UserDevices,
    mut each: impl FnMut(TenantChannelRef<'a>),
) {
    let key = |tenant, channel| TenantChannelRef {
        tenant,
        channel,
        device: None,
    };
    match feed {
        Feed::Status => {
            if let Some(s) = PaymentSubject::parse(subject) {
                each(key(s.tenant, ChannelRef::Payment(s.payment)));
                each(key(s.tenant, ChannelRef::Merchant(s.merchant)));
                each(key(s.tenant, ChannelRef::Payments));
            }
        }
        Feed::Alert => {
            if let Some(tenant) = alert_tenant(subject) {
                each(key(tenant, ChannelRef::Alerts));
            }
        }
        Feed::Push => {
            if let Some(s) = PushSubject::parse(subject) {
                let user = key(s.tenant, ChannelRef::User(s.user));
                each(user);
                match s.device {
                    None => {
                        for device in user_devices.get(&user).into_iter().flat_map(HashMap::keys) {
                            each(TenantChannelRef {
                                device: Some(device.as_str()),
                                ..user
                            });
                        }
                    }
                    Some(device) => each(TenantChannelRef {
                        device: Some(device),
                        ..user
                    }),
                }
            }
        }
    }
}

/// The tenant of an alert or acknowledgement subject (`paytrack.alert.<tenant>.<kind>`).
fn alert_tenant(subject: &str) -> Option<&str> {
    let alert = AlertSubject::parse(subject)?;
    (!alert.tenant.is_empty() && !alert.kind.is_empty()).then_some(alert.tenant)
}

/// Whether `subject` is in the channel of `key` (used to pick a channel's messages
/// from the ring). Allocates nothing: a resume may test many ring messages.
pub(super) fn matches(feed: Feed, subject: &str, key: &TenantChannel) -> bool {
    let key = key.borrowed();
    match (feed, key.channel) {
        (Feed::Status, channel) => PaymentSubject::parse(subject).is_some_and(|s| {
            s.tenant == key.tenant
                && key.device.is_none()
                && match channel {
                    ChannelRef::Payments => true,
                    ChannelRef::Payment(id) => id == s.payment,
                    ChannelRef::Merchant(id) => id == s.merchant,
                    ChannelRef::Alerts | ChannelRef::User(_) => false,
                }
        }),
        (Feed::Alert, ChannelRef::Alerts) => key.device.is_none() && alert_tenant(subject) == Some(key.tenant),
        (Feed::Push, ChannelRef::User(user)) => PushSubject::parse(subject).is_some_and(|s| {
            s.tenant == key.tenant
                && s.user == user
                && key
                    .device
                    .is_none_or(|key_device| s.device.is_none_or(|device| device == key_device))
        }),
        (Feed::Alert | Feed::Push, _) => false,
    }
}

/// How long, and how many, channels no session holds are still followed, so that
/// clients that reconnect (a dropped edge connection, a reconnect storm) resume from
/// memory. Both bound what an edge keeps for sessions that are gone: an idle channel
/// costs its entry in the channel map (about 650 bytes).
#[derive(Debug, Clone, Copy)]
pub struct IdleWindow {
    /// How long an idle channel is followed.
    pub keep_for: Duration,
    /// At most this many idle channels are followed (the oldest go first).
    pub at_most: usize,
}

impl Default for IdleWindow {
    fn default() -> Self {
        IdleWindow {
            keep_for: Duration::from_secs(120),
            at_most: 65_536,
        }
    }
}

/// How often the hub forgets idle channels past their window when no session
/// detaches to do it (a quiet edge gives their memory back too).
pub(super) const IDLE_SWEEP_EVERY: Duration = Duration::from_secs(5);

/// A channel some local session holds, or held until recently (idle).
pub(super) struct Entry {
    pub(super) name: String,
    /// The channel's newest message on the edge's feed, once known.
    pub(super) latest: Option<u64>,
    /// The channel's newest message at or below the ring's floor, once known (kept as
    /// the ring evicts the channel's messages): a `since` at or after it is continued
    /// from the ring even when it is older than the ring, since the channel has
    /// nothing between the two.
    pub(super) below_floor: Option<u64>,
    pub(super) subs: HashMap<u64, Sub>,
    /// Set while no session holds the channel: its ticket in [`Inner::idle`].
    pub(super) idle: Option<u64>,
    /// The sequences of the channel's messages the ring holds after `indexed_after`,
    /// oldest first, so a resume picks its missed messages without scanning the ring.
    pub(super) recent: VecDeque<u64>,
    /// Every message of the channel the ring holds after this is in `recent`.
    pub(super) indexed_after: u64,
}

impl Entry {
    /// A channel this edge starts to follow, its messages indexed from `indexed_after`.
    pub(super) fn new(name: &str, indexed_after: u64) -> Entry {
        Entry {
            name: name.to_owned(),
            latest: None,
            below_floor: None,
            subs: HashMap::new(),
            idle: None,
            recent: VecDeque::new(),
            indexed_after,
        }
    }

    /// The channel's newest message at or below `floor`, when known.
    pub(super) fn below(&self, floor: u64) -> Option<u64> {
        self.below_floor.or(self.latest.filter(|latest| *latest <= floor))
    }

    /// Whether the ring (holding everything after `floor`) holds every message of the
    /// channel after `after`.
    pub(super) fn in_ring_after(&self, floor: u64, after: u64) -> bool {
        floor <= after || self.below(floor).is_some_and(|below| below <= after)
    }
}

/// The channel's entry, created (and indexed) when this edge did not follow it, or
/// taken back from the idle channels.
pub(super) fn attach<'a>(inner: &'a mut Inner, key: &TenantChannel, name: &str) -> &'a mut Entry {
    let head = inner.rings[Feed::of(&key.channel) as usize].head;
    attach_in(&mut inner.channels, &mut inner.user_devices, head, key, name)
}

/// [`attach`] on the hub's fields (`head`: the ring's head, where the entry's index
/// starts).
pub(super) fn attach_in<'a>(
    channels: &'a mut ChannelMap<Entry>,
    user_devices: &mut UserDevices,
    head: u64,
    key: &TenantChannel,
    name: &str,
) -> &'a mut Entry {
    if !channels.contains_key(key) {
        if let Some(device) = &key.device {
            let user = TenantChannel {
                device: None,
                ..key.clone()
            };
            *user_devices.entry(user).or_default().entry(device.clone()).or_default() += 1;
        }
        metrics::gauge!("paytrack_edge_channels").increment(1);
    }
    let entry = channels.entry(key.clone()).or_insert_with(|| Entry::new(name, head));
    if entry.idle.take().is_some() {
        metrics::gauge!("paytrack_edge_channels").increment(1);
    }
    entry
}

/// Ends subscription `id` of the channel; a channel no session holds any more stays
/// followed (idle) for a while when it has a known position, else is forgotten.
pub(super) fn detach_locked(inner: &mut Inner, key: &TenantChannel, id: u64) {
    let Some(entry) = inner.channels.get_mut(key) else {
        return;
    };
    entry.subs.remove(&id);
    if !entry.subs.is_empty() || entry.idle.is_some() {
        return;
    }
    metrics::gauge!("paytrack_edge_channels").decrement(1);
    if entry.latest.is_none() {
        remove_entry(inner, key);
        return;
    }
    // Still followed for a while, so that its sessions resume from memory.
    entry.subs.shrink_to_fit();
    let ticket = inner.next_ticket;
    inner.next_ticket += 1;
    entry.idle = Some(ticket);
    let now = std::time::Instant::now();
    inner.idle.push_back((ticket, now, key.clone()));
    expire_idle(inner, now);
}

/// Forgets the idle channels past the hub's [`IdleWindow`] at `now`: those idle longer
/// than its time, and the oldest beyond its count. A channel taken back by a session
/// since it went idle has a new ticket (or none) and is kept.
pub(super) fn expire_idle(inner: &mut Inner, now: std::time::Instant) {
    let window = inner.idle_window;
    while let Some((ticket, since, _)) = inner.idle.front() {
        if inner.idle.len() <= window.at_most && now.duration_since(*since) < window.keep_for {
            break;
        }
        let ticket = *ticket;
        if let Some((_, _, key)) = inner.idle.pop_front()
            && inner.channels.get(&key).is_some_and(|e| e.idle == Some(ticket))
        {
            remove_entry(inner, &key);
        }
    }
    if inner.idle.is_empty() && inner.idle.capacity() > 0 {
        inner.idle = VecDeque::new();
    }
}

/// Forgets a channel (and its device index).
pub(super) fn remove_entry(inner: &mut Inner, key: &TenantChannel) {
    inner.channels.remove(key);
    let Some(device) = &key.device else {
        return;
    };
    let user = key.without_device();
    if let Some(devices) = inner.user_devices.get_mut(&user) {
        if let Some(count) = devices.get_mut(device) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                devices.remove(device);
            }
        }
        if devices.is_empty() {
            inner.user_devices.remove(&user);
        }
    }
}

impl Hub {
    /// Ends a subscription.
    pub fn detach(&self, key: &TenantChannel, id: u64) {
        detach_locked(&mut self.lock(), key, id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys_of(feed: Feed, subject: &str, user_devices: &UserDevices) -> Vec<TenantChannel> {
        let mut keys = Vec::new();
        each_key(feed, subject, user_devices, |key| {
            let found = ChannelMap::from_iter(
                ["payment:p1", "merchant:m1", "payments", "alerts", "user:u1"]
                    .iter()
                    .flat_map(|c| [None, Some("d1"), Some("d2")].map(|d| TenantChannel::parse(key.tenant, c, d)))
                    .map(|k| (k, ())),
            );
            let (owned, ()) = found.get_key_value(&key).expect("a key of a known channel");
            keys.push(owned.clone());
        });
        keys
    }

    fn key(channel: &str, device: Option<&str>) -> TenantChannel {
        TenantChannel::parse("acme", channel, device)
    }

    #[test]
    fn subjects_map_to_their_channels() {
        let none = UserDevices::default();
        assert_eq!(
            keys_of(Feed::Status, "paytrack.status.acme.m1.p1", &none),
            vec![key("payment:p1", None), key("merchant:m1", None), key("payments", None)]
        );
        let mut devices = UserDevices::default();
        devices.insert(
            key("user:u1", None),
            HashMap::from([(DeviceId::new("d1").expect("device"), 1)]),
        );
        assert_eq!(
            keys_of(Feed::Push, "paytrack.push.acme.u1.all", &devices),
            vec![key("user:u1", None), key("user:u1", Some("d1"))]
        );
        assert_eq!(
            keys_of(Feed::Push, "paytrack.push.acme.u1.d2", &devices),
            vec![key("user:u1", None), key("user:u1", Some("d2"))]
        );
        assert!(matches(
            Feed::Push,
            "paytrack.push.acme.u1.all",
            &key("user:u1", Some("d9"))
        ));
        assert!(!matches(
            Feed::Push,
            "paytrack.push.acme.u1.d1",
            &key("user:u1", Some("d9"))
        ));
        assert!(!matches(
            Feed::Status,
            "paytrack.status.other.m1.p1",
            &key("payments", None)
        ));
        assert_eq!(
            keys_of(Feed::Alert, "paytrack.alert.acme.dispute_opened", &none),
            vec![key("alerts", None)]
        );
        assert!(matches(Feed::Alert, "paytrack.alert.acme._ack", &key("alerts", None)));
        assert!(!matches(
            Feed::Alert,
            "paytrack.alert.other.dispute_opened",
            &key("alerts", None)
        ));
        assert!(!matches(
            Feed::Alert,
            "paytrack.alert.acme.dispute_opened",
            &key("payments", None)
        ));
        assert!(matches(
            Feed::Status,
            "paytrack.status.acme.m1.p1",
            &key("merchant:m1", None)
        ));
        assert!(!matches(
            Feed::Status,
            "paytrack.status.acme.p1.m1",
            &key("merchant:m1", None)
        ));
    }

    /// Idle channels are forgotten past the window's count at once, and past its time
    /// by a later sweep; a channel a session took back is kept.
    #[test]
    fn idle_channels_are_forgotten_past_their_window_and_held_ones_kept() {
        let ring = || super::super::ring::Ring::new(0, 4);
        let window = IdleWindow {
            keep_for: Duration::from_secs(60),
            at_most: 2,
        };
        let mut inner = Inner::new([ring(), ring(), ring()], ["e"; 3].map(str::to_owned), window);
        let keys: Vec<TenantChannel> = ["merchant:m1", "merchant:m2", "merchant:m3"]
            .iter()
            .map(|c| TenantChannel::parse("a", c, None))
            .collect();
        let (out, _outgoing) = crate::send_queue::SendQueue::new(4, 4096);
        for (id, key) in keys.iter().enumerate() {
            let entry = attach(&mut inner, key, "merchant");
            entry.latest = Some(1);
            entry.subs.insert(
                id as u64,
                Sub {
                    out: out.clone(),
                    last_seq: 1,
                    replay: None,
                },
            );
        }
        for (id, key) in keys.iter().enumerate() {
            detach_locked(&mut inner, key, id as u64);
        }
        // Three idle, at most two kept: the oldest went at once.
        assert!(!inner.channels.contains_key(&keys[0]));
        assert!(inner.channels.contains_key(&keys[1]) && inner.channels.contains_key(&keys[2]));
        // m2 is held again; then both are past the window's time.
        attach(&mut inner, &keys[1], "merchant");
        expire_idle(&mut inner, std::time::Instant::now() + Duration::from_secs(61));
        assert!(inner.channels.contains_key(&keys[1]), "a held channel is kept");
        assert!(
            !inner.channels.contains_key(&keys[2]),
            "an idle one past its time is forgotten"
        );
        assert!(inner.idle.is_empty());
    }
}
