//! The channel map: the channels this edge follows (held by a session, or idle since
//! recently), the keys a message's subject belongs to, and how a channel is attached
//! to and detached from.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use paytrack_shared::subjects::{AlertSubject, PaymentSubject, PushSubject};

use super::feed::Feed;
use super::hub::Sub;
use super::hub::{Hub, Inner, Request};
use paytrack_shared::ChannelKey;

/// The map key of a channel inside a tenant (and, for user channels, a device).
pub fn channel_key(tenant: &str, name: &str, device: Option<&str>) -> String {
    format!("{tenant} {name} {}", device.unwrap_or(""))
}

/// The keys of every channel a message of `feed` on `subject` belongs to.
pub(super) fn keys_of(
    feed: Feed,
    subject: &str,
    user_devices: &HashMap<String, HashMap<String, usize>>,
) -> Vec<String> {
    match feed {
        Feed::Status => match PaymentSubject::parse(subject) {
            Some(s) => vec![
                channel_key(s.tenant, &format!("payment:{}", s.payment), None),
                channel_key(s.tenant, &format!("merchant:{}", s.merchant), None),
                channel_key(s.tenant, "payments", None),
            ],
            None => Vec::new(),
        },
        Feed::Alert => match alert_tenant(subject) {
            Some(tenant) => vec![channel_key(tenant, "alerts", None)],
            None => Vec::new(),
        },
        Feed::Push => match PushSubject::parse(subject) {
            Some(s) => {
                let name = format!("user:{}", s.user);
                let mut keys = vec![channel_key(s.tenant, &name, None)];
                match s.device {
                    None => {
                        if let Some(devices) = user_devices.get(&channel_key(s.tenant, &name, None)) {
                            keys.extend(devices.keys().map(|d| channel_key(s.tenant, &name, Some(d))));
                        }
                    }
                    Some(device) => keys.push(channel_key(s.tenant, &name, Some(device))),
                }
                keys
            }
            None => Vec::new(),
        },
    }
}

/// The tenant of an alert or acknowledgement subject (`paytrack.alert.<tenant>.<kind>`).
fn alert_tenant(subject: &str) -> Option<&str> {
    let alert = AlertSubject::parse(subject)?;
    (!alert.tenant.is_empty() && !alert.kind.is_empty()).then_some(alert.tenant)
}

/// Whether `subject` is in the channel of `key` (used to pick a channel's messages
/// from the ring). Allocates nothing: a resume may test many ring messages.
pub(super) fn matches(feed: Feed, subject: &str, key: &str) -> bool {
    let mut parts = key.splitn(3, ' ');
    let (Some(key_tenant), Some(name), Some(key_device)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    match feed {
        Feed::Status => PaymentSubject::parse(subject).is_some_and(|s| {
            s.tenant == key_tenant
                && key_device.is_empty()
                && (name == "payments"
                    || name.strip_prefix("payment:") == Some(s.payment)
                    || name.strip_prefix("merchant:") == Some(s.merchant))
        }),
        Feed::Alert => name == "alerts" && key_device.is_empty() && alert_tenant(subject) == Some(key_tenant),
        Feed::Push => PushSubject::parse(subject).is_some_and(|s| {
            s.tenant == key_tenant
                && name.strip_prefix("user:") == Some(s.user)
                && (key_device.is_empty() || s.device.is_none_or(|device| device == key_device))
        }),
    }
}

/// How long a channel no session holds is still followed, so that clients that
/// reconnect (a dropped edge connection, a reconnect storm) resume from memory.
pub(super) const IDLE_FOR: Duration = Duration::from_secs(120);

/// At most this many channels no session holds are followed (the oldest go first).
pub(super) const IDLE_CHANNELS: usize = 65_536;

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
pub(super) fn attach<'a>(inner: &'a mut Inner, key: &str, name: &str, request: &Request) -> &'a mut Entry {
    let head = inner.rings[Feed::of(&request.channel) as usize].head;
    attach_in(&mut inner.channels, &mut inner.user_devices, head, key, name, request)
}

/// [`attach`] on the hub's fields (`head`: the ring's head, where the entry's index
/// starts).
pub(super) fn attach_in<'a>(
    channels: &'a mut HashMap<String, Entry>,
    user_devices: &mut HashMap<String, HashMap<String, usize>>,
    head: u64,
    key: &str,
    name: &str,
    request: &Request,
) -> &'a mut Entry {
    if !channels.contains_key(key) {
        if let (ChannelKey::User(_), Some(device)) = (&request.channel, &request.device) {
            let user = channel_key(request.tenant.as_str(), name, None);
            *user_devices
                .entry(user)
                .or_default()
                .entry(device.to_string())
                .or_default() += 1;
        }
        metrics::gauge!("paytrack_edge_channels").increment(1);
    }
    let entry = channels.entry(key.to_owned()).or_insert_with(|| Entry::new(name, head));
    if entry.idle.take().is_some() {
        metrics::gauge!("paytrack_edge_channels").increment(1);
    }
    entry
}

pub(super) fn detach_locked(inner: &mut Inner, key: &str, id: u64) {
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
    inner.idle.push_back((ticket, now, key.to_owned()));
    while let Some((ticket, since, _)) = inner.idle.front() {
        if inner.idle.len() <= IDLE_CHANNELS && now.duration_since(*since) < IDLE_FOR {
            break;
        }
        let ticket = *ticket;
        if let Some((_, _, key)) = inner.idle.pop_front()
            && inner.channels.get(&key).is_some_and(|e| e.idle == Some(ticket))
        {
            remove_entry(inner, &key);
        }
    }
}

/// Forgets a channel (and its device index).
pub(super) fn remove_entry(inner: &mut Inner, key: &str) {
    inner.channels.remove(key);
    // A device-bound user channel's key is `tenant user:<id> device`.
    let mut parts = key.splitn(3, ' ');
    if let (Some(tenant), Some(name), Some(device)) = (parts.next(), parts.next(), parts.next())
        && !device.is_empty()
    {
        let user = channel_key(tenant, name, None);
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
}

impl Hub {
    /// Ends a subscription.
    pub fn detach(&self, key: &str, id: u64) {
        detach_locked(&mut self.lock(), key, id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_map_to_their_channels() {
        let none = HashMap::new();
        assert_eq!(
            keys_of(Feed::Status, "paytrack.status.acme.m1.p1", &none),
            vec!["acme payment:p1 ", "acme merchant:m1 ", "acme payments "]
        );
        let mut devices = HashMap::new();
        devices.insert(
            channel_key("acme", "user:u1", None),
            HashMap::from([("d1".to_owned(), 1)]),
        );
        assert_eq!(
            keys_of(Feed::Push, "paytrack.push.acme.u1.all", &devices),
            vec!["acme user:u1 ", "acme user:u1 d1"]
        );
        assert_eq!(
            keys_of(Feed::Push, "paytrack.push.acme.u1.d2", &devices),
            vec!["acme user:u1 ", "acme user:u1 d2"]
        );
        assert!(matches(Feed::Push, "paytrack.push.acme.u1.all", "acme user:u1 d9"));
        assert!(!matches(Feed::Push, "paytrack.push.acme.u1.d1", "acme user:u1 d9"));
        assert!(!matches(Feed::Status, "paytrack.status.other.m1.p1", "acme payments "));
        assert_eq!(
            keys_of(Feed::Alert, "paytrack.alert.acme.dispute_opened", &none),
            vec!["acme alerts "]
        );
        assert!(matches(Feed::Alert, "paytrack.alert.acme._ack", "acme alerts "));
        assert!(!matches(
            Feed::Alert,
            "paytrack.alert.other.dispute_opened",
            "acme alerts "
        ));
        assert!(!matches(
            Feed::Alert,
            "paytrack.alert.acme.dispute_opened",
            "acme payments "
        ));
    }
}
