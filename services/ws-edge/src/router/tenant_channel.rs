//! The channel map's key: a [`ChannelKey`] inside its tenant (and, for a user channel
//! read by a device-bound token, the device), typed rather than spelled as a string,
//! and its borrowed form, which the feed builds from a message's subject to look the
//! channels up without allocating (every message of every stream goes through it).

use std::hash::{Hash, Hasher};

use hashbrown::Equivalent;
use paytrack_shared::{ChannelKey, DeviceId, TenantId};

/// The channel map: one entry per channel this edge follows. Looked up by
/// [`TenantChannelRef`] on the hot path.
pub(super) type ChannelMap<V> = hashbrown::HashMap<TenantChannel, V, std::hash::RandomState>;

/// A channel as this edge follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantChannel {
    /// The subscriber's tenant, which every channel lives inside.
    pub tenant: TenantId,
    /// The channel.
    pub channel: ChannelKey,
    /// For a user channel read by a device-bound token, that device: it sees its own
    /// pushes and those to all the user's devices, never another device's.
    pub device: Option<DeviceId>,
}

/// A [`ChannelKey`] borrowed: from a key, or from a message's subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum ChannelRef<'a> {
    /// `payment:<id>`.
    Payment(&'a str),
    /// `merchant:<id>`.
    Merchant(&'a str),
    /// `payments`.
    Payments,
    /// `alerts`.
    Alerts,
    /// `user:<id>`.
    User(&'a str),
}

/// A [`TenantChannel`] borrowed; hashes and compares as the key it stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct TenantChannelRef<'a> {
    pub(super) tenant: &'a str,
    pub(super) channel: ChannelRef<'a>,
    pub(super) device: Option<&'a str>,
}

impl TenantChannel {
    /// The key of `channel` read within `tenant` by a token naming `device`; the
    /// device counts only for user channels.
    pub fn new(tenant: TenantId, channel: ChannelKey, device: Option<DeviceId>) -> TenantChannel {
        let device = device.filter(|_| matches!(channel, ChannelKey::User(_)));
        TenantChannel {
            tenant,
            channel,
            device,
        }
    }

    /// The same user channel without its device (where the device index lives).
    pub(super) fn without_device(&self) -> TenantChannelRef<'_> {
        TenantChannelRef {
            device: None,
            ..self.borrowed()
        }
    }

    /// The key borrowed, for lookups and comparisons.
    pub(super) fn borrowed(&self) -> TenantChannelRef<'_> {
        let channel = match &self.channel {
            ChannelKey::Payment(id) => ChannelRef::Payment(id.as_str()),
            ChannelKey::Merchant(id) => ChannelRef::Merchant(id.as_str()),
            ChannelKey::Payments => ChannelRef::Payments,
            ChannelKey::Alerts => ChannelRef::Alerts,
            ChannelKey::User(id) => ChannelRef::User(id.as_str()),
        };
        TenantChannelRef {
            tenant: self.tenant.as_str(),
            channel,
            device: self.device.as_ref().map(DeviceId::as_str),
        }
    }
}

/// Hashed as its borrowed form, so that a [`TenantChannelRef`] finds it.
impl Hash for TenantChannel {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.borrowed().hash(state);
    }
}

impl Equivalent<TenantChannel> for TenantChannelRef<'_> {
    fn equivalent(&self, key: &TenantChannel) -> bool {
        *self == key.borrowed()
    }
}

#[cfg(test)]
impl TenantChannel {
    /// A key from its parts, for the router's unit tests.
    pub(super) fn parse(tenant: &str, channel: &str, device: Option<&str>) -> TenantChannel {
        let tenant = TenantId::new(tenant).expect("tenant");
        let channel = ChannelKey::parse(channel).expect("channel");
        let device = device.map(|d| DeviceId::new(d).expect("device"));
        TenantChannel::new(tenant, channel, device)
    }
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::*;

    #[test]
    fn a_key_and_its_borrowed_form_hash_and_compare_alike() {
        let hasher = std::hash::RandomState::new();
        for (channel, device) in [
            ("payment:p1", None),
            ("merchant:m1", None),
            ("payments", None),
            ("alerts", None),
            ("user:u1", None),
            ("user:u1", Some("d1")),
        ] {
            let key = TenantChannel::parse("acme", channel, device);
            let borrowed = key.borrowed();
            assert_eq!(hasher.hash_one(&key), hasher.hash_one(borrowed), "{channel}");
            assert!(borrowed.equivalent(&key));
        }
        // Ids that read alike in different kinds of channel are different channels.
        let payment = TenantChannel::parse("acme", "payment:x", None);
        let merchant = TenantChannel::parse("acme", "merchant:x", None);
        assert!(!merchant.borrowed().equivalent(&payment));
        // A device only counts for user channels.
        let payments = TenantChannel::parse("acme", "payments", Some("d1"));
        assert_eq!(payments.device, None);
    }
}
