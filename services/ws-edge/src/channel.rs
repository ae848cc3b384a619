//! Channels: what a session may subscribe to, who may, and which JetStream filter
//! each one is. Every channel lives inside the token's tenant.

use paytrack_shared::auth::Claims;
use paytrack_shared::{MerchantId, PaymentId, TenantId, Token, subjects};

/// A parsed channel name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Channel {
    /// `payment:<id>`: one payment's transitions and checkpoints.
    Payment(PaymentId),
    /// `merchant:<id>`: all of one merchant's payments.
    Merchant(MerchantId),
    /// `payments`: all of the tenant's payments.
    Payments,
    /// `alerts`: the tenant's alerts and their acknowledgements (operators).
    Alerts,
    /// `user:<id>`: pushes to a user's devices.
    User(String),
}

/// Why a channel cannot be subscribed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// Not a channel name paytrack knows.
    #[error("unknown channel {0:?}")]
    Unknown(String),
    /// The token does not grant it.
    #[error("channel {0:?} is not allowed for this token")]
    Forbidden(String),
}

impl Channel {
    /// Parses `kind:id` (or `payments`).
    pub fn parse(raw: &str) -> Result<Channel, ChannelError> {
        let unknown = || ChannelError::Unknown(raw.chars().take(80).collect());
        if raw == "payments" {
            return Ok(Channel::Payments);
        }
        if raw == "alerts" {
            return Ok(Channel::Alerts);
        }
        let (kind, id) = raw.split_once(':').ok_or_else(unknown)?;
        match kind {
            "payment" => PaymentId::parse(id).map(Channel::Payment).map_err(|_| unknown()),
            "merchant" => MerchantId::parse(id).map(Channel::Merchant).map_err(|_| unknown()),
            "user" => paytrack_shared::ids::validate_token(id, "user")
                .map(|_| Channel::User(id.to_owned()))
                .map_err(|_| unknown()),
            _ => Err(unknown()),
        }
    }

    /// The channel's name as clients spell it.
    pub fn name(&self) -> String {
        match self {
            Channel::Payment(id) => format!("payment:{id}"),
            Channel::Merchant(id) => format!("merchant:{id}"),
            Channel::Payments => "payments".to_owned(),
            Channel::Alerts => "alerts".to_owned(),
            Channel::User(id) => format!("user:{id}"),
        }
    }

    /// Whether `claims` may subscribe: a token with `channels` gets exactly those;
    /// an operator token (no `channels`) gets every channel of its tenant except
    /// another user's `user:` channel.
    pub fn authorize(&self, claims: &Claims) -> Result<(), ChannelError> {
        let name = self.name();
        let allowed = match &claims.channels {
            Some(granted) => granted.contains(&name),
            None => match self {
                Channel::User(user) => *user == claims.sub,
                _ => true,
            },
        };
        if allowed {
            Ok(())
        } else {
            Err(ChannelError::Forbidden(name))
        }
    }

    /// The stream the channel reads.
    pub fn stream(&self) -> &'static str {
        match self {
            Channel::User(_) => subjects::STREAM_PUSH,
            Channel::Alerts => subjects::STREAM_ALERT,
            _ => subjects::STREAM_STATUS,
        }
    }

    /// Where the channel's snapshot comes from: a payment's newest transition. Wider
    /// channels have none (their current state is a list, served over REST).
    pub fn snapshot_filter(&self, tenant: &TenantId) -> Option<String> {
        match self {
            Channel::Payment(id) => Some(subjects::status_of_payment(tenant, id)),
            _ => None,
        }
    }

    /// The server-side filters of the channel within `tenant` (and, for a user
    /// token bound to a device, that device and `all`).
    pub fn filters(&self, tenant: &TenantId, device: Option<&str>) -> Vec<String> {
        match self {
            Channel::Payment(id) => vec![subjects::payment_messages(tenant, id)],
            Channel::Merchant(id) => vec![subjects::merchant_messages(tenant, id)],
            Channel::Payments => vec![subjects::tenant_messages(tenant)],
            Channel::Alerts => vec![subjects::tenant_alerts(tenant)],
            Channel::User(user) => match device {
                Some(device) => vec![
                    subjects::push(tenant, user, Some(device)),
                    subjects::push(tenant, user, None),
                ],
                None => vec![subjects::user_pushes(tenant, user)],
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(sub: &str, channels: Option<Vec<&str>>) -> Claims {
        Claims {
            sub: sub.into(),
            tenant: TenantId::new("acme").unwrap(),
            exp: u64::MAX,
            aud: "a".into(),
            iss: "i".into(),
            device: None,
            channels: channels.map(|c| c.into_iter().map(String::from).collect()),
        }
    }

    #[test]
    fn parses_known_channels_only() {
        assert_eq!(Channel::parse("payments"), Ok(Channel::Payments));
        assert_eq!(
            Channel::parse("payment:pay_1"),
            Ok(Channel::Payment(PaymentId::new("pay_1").unwrap()))
        );
        assert_eq!(
            Channel::parse("merchant:m1").map(|c| c.name()),
            Ok("merchant:m1".into())
        );
        assert_eq!(Channel::parse("user:u1").map(|c| c.name()), Ok("user:u1".into()));
        for bad in [
            "",
            "payment:",
            "payment:a.b",
            "payment:*",
            "ledger:x",
            "payments:x",
            "user:>",
        ] {
            assert!(matches!(Channel::parse(bad), Err(ChannelError::Unknown(_))), "{bad}");
        }
    }

    #[test]
    fn filters_stay_inside_the_tenant() {
        let t = TenantId::new("acme").unwrap();
        assert_eq!(
            Channel::parse("payment:p1").unwrap().filters(&t, None),
            vec!["paytrack.*.acme.*.p1"]
        );
        assert_eq!(
            Channel::parse("merchant:m1").unwrap().filters(&t, None),
            vec!["paytrack.*.acme.m1.*"]
        );
        assert_eq!(Channel::Payments.filters(&t, None), vec!["paytrack.*.acme.>"]);
        assert_eq!(
            Channel::parse("user:u1").unwrap().filters(&t, Some("d1")),
            vec!["paytrack.push.acme.u1.d1", "paytrack.push.acme.u1.all"]
        );
    }

    #[test]
    fn authorization_follows_the_token() {
        let operator = claims("op", None);
        assert!(Channel::Payments.authorize(&operator).is_ok());
        assert!(Channel::parse("user:someone").unwrap().authorize(&operator).is_err());
        assert!(Channel::parse("user:op").unwrap().authorize(&operator).is_ok());
        let scoped = claims("u1", Some(vec!["payment:p1", "user:u1"]));
        assert!(Channel::parse("payment:p1").unwrap().authorize(&scoped).is_ok());
        assert!(Channel::parse("payment:p2").unwrap().authorize(&scoped).is_err());
        assert!(Channel::Payments.authorize(&scoped).is_err());
    }
}
