//! Channel keys: the names clients subscribe to over WebSocket and SSE
//! (`payment:<id>`, `merchant:<id>`, `user:<id>`, `payments`, `alerts`), parsed once
//! where they enter, and the stream and subject filters each one reads. Every channel
//! lives inside one tenant, which the subscriber's token names, never the key.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ids::{DeviceId, MerchantId, PaymentId, TenantId, Token, TokenError, UserId};
use crate::subjects;

/// The longest part of a refused channel name an error repeats.
const QUOTED_LEN: usize = 80;

/// A channel a client may subscribe to, as its name is spelled on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ChannelKey {
    /// `payment:<id>`: one payment's transitions and checkpoints.
    Payment(PaymentId),
    /// `merchant:<id>`: all of one merchant's payments.
    Merchant(MerchantId),
    /// `payments`: all of the tenant's payments.
    Payments,
    /// `alerts`: the tenant's alerts and their acknowledgements (operators).
    Alerts,
    /// `user:<id>`: pushes to a user's devices.
    User(UserId),
}

/// Why a string is not a channel key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelKeyError {
    /// Not a kind of channel paytrack knows.
    #[error("unknown channel {raw:?}: expected payment:<id>, merchant:<id>, user:<id>, payments or alerts")]
    Unknown {
        /// The refused name (at most 80 characters of it).
        raw: String,
    },
    /// A known kind whose id is not a valid id.
    #[error("channel {raw:?}: {reason}")]
    BadId {
        /// The refused name (at most 80 characters of it).
        raw: String,
        /// What is wrong with the id.
        reason: TokenError,
    },
}

impl ChannelKey {
    /// Parses `kind:id`, `payments` or `alerts`.
    pub fn parse(raw: &str) -> Result<ChannelKey, ChannelKeyError> {
        let quoted = || raw.chars().take(QUOTED_LEN).collect::<String>();
        let bad_id = |reason| ChannelKeyError::BadId { raw: quoted(), reason };
        match raw {
            "payments" => return Ok(ChannelKey::Payments),
            "alerts" => return Ok(ChannelKey::Alerts),
            _ => {}
        }
        match raw.split_once(':') {
            Some(("payment", id)) => PaymentId::parse(id).map(ChannelKey::Payment).map_err(bad_id),
            Some(("merchant", id)) => MerchantId::parse(id).map(ChannelKey::Merchant).map_err(bad_id),
            Some(("user", id)) => UserId::parse(id).map(ChannelKey::User).map_err(bad_id),
            _ => Err(ChannelKeyError::Unknown { raw: quoted() }),
        }
    }

    /// The stream the channel reads.
    pub fn stream(&self) -> &'static str {
        match self {
            ChannelKey::User(_) => subjects::STREAM_PUSH,
            ChannelKey::Alerts => subjects::STREAM_ALERT,
            _ => subjects::STREAM_STATUS,
        }
    }

    /// Where the channel's snapshot comes from: a payment's newest transition. Wider
    /// channels have none (their current state is a list, served over REST).
    pub fn snapshot_filter(&self, tenant: &TenantId) -> Option<String> {
        match self {
            ChannelKey::Payment(id) => Some(subjects::status_of_payment(tenant, id)),
            _ => None,
        }
    }

    /// The server-side filters of the channel within `tenant` (and, for a user channel
    /// read by a token bound to a device, that device's pushes and those to `all`).
    pub fn filters(&self, tenant: &TenantId, device: Option<&DeviceId>) -> Vec<String> {
        match self {
            ChannelKey::Payment(id) => vec![subjects::payment_messages(tenant, id)],
            ChannelKey::Merchant(id) => vec![subjects::merchant_messages(tenant, id)],
            ChannelKey::Payments => vec![subjects::tenant_messages(tenant)],
            ChannelKey::Alerts => vec![subjects::tenant_alerts(tenant)],
            ChannelKey::User(user) => match device {
                Some(device) => vec![
                    subjects::push(tenant, user, Some(device)),
                    subjects::push(tenant, user, None),
                ],
                None => vec![subjects::user_pushes(tenant, user)],
            },
        }
    }
}

impl fmt::Display for ChannelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChannelKey::Payment(id) => write!(f, "payment:{id}"),
            ChannelKey::Merchant(id) => write!(f, "merchant:{id}"),
            ChannelKey::Payments => f.write_str("payments"),
            ChannelKey::Alerts => f.write_str("alerts"),
            ChannelKey::User(id) => write!(f, "user:{id}"),
        }
    }
}

impl FromStr for ChannelKey {
    type Err = ChannelKeyError;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Self::parse(raw)
    }
}

impl Serialize for ChannelKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ChannelKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_channels_round_trip() {
        for name in ["payments", "alerts", "payment:pay_1", "merchant:m1", "user:u1"] {
            let key = ChannelKey::parse(name).unwrap();
            assert_eq!(key.to_string(), name);
            assert_eq!(serde_json::to_value(&key).unwrap(), name);
            assert_eq!(serde_json::from_value::<ChannelKey>(name.into()).unwrap(), key);
        }
        assert_eq!(
            ChannelKey::parse("payment:pay_1"),
            Ok(ChannelKey::Payment(PaymentId::new("pay_1").unwrap()))
        );
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "",
            "payment:",
            "payment:a.b",
            "payment:*",
            "ledger:x",
            "payments:x",
            "user:>",
            "Payments",
        ] {
            assert!(ChannelKey::parse(bad).is_err(), "{bad}");
            assert!(serde_json::from_value::<ChannelKey>(bad.into()).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_channel_that_cannot_be_parsed_says_why() {
        let cases = [
            (
                "ledger:x",
                r#"unknown channel "ledger:x": expected payment:<id>, merchant:<id>, user:<id>, payments or alerts"#,
            ),
            (
                "payment:a.b",
                r#"channel "payment:a.b": payment_id may only contain A-Z, a-z, 0-9, '_' and '-'"#,
            ),
            ("user:", r#"channel "user:": user must not be empty"#),
        ];
        for (raw, expected) in cases {
            assert_eq!(
                ChannelKey::parse(raw).map_err(|e| e.to_string()),
                Err(expected.to_owned()),
                "{raw}"
            );
        }
        let long = format!("ledger:{}", "x".repeat(500));
        assert!(ChannelKey::parse(&long).unwrap_err().to_string().len() < 200);
    }

    #[test]
    fn filters_stay_inside_the_tenant() {
        let t = TenantId::new("acme").unwrap();
        let key = |raw: &str| ChannelKey::parse(raw).unwrap();
        assert_eq!(key("payment:p1").filters(&t, None), vec!["paytrack.*.acme.*.p1"]);
        assert_eq!(key("merchant:m1").filters(&t, None), vec!["paytrack.*.acme.m1.*"]);
        assert_eq!(ChannelKey::Payments.filters(&t, None), vec!["paytrack.*.acme.>"]);
        let device = DeviceId::new("d1").unwrap();
        assert_eq!(
            key("user:u1").filters(&t, Some(&device)),
            vec!["paytrack.push.acme.u1.d1", "paytrack.push.acme.u1.all"]
        );
        assert_eq!(
            key("user:u1").filters(&t, None),
            vec![subjects::user_pushes(&t, &UserId::new("u1").unwrap())]
        );
    }
}
