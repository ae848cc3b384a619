//! Who may subscribe to a channel. The channel names themselves, their streams and
//! filters are the contract's [`ChannelKey`]; every channel lives inside the token's
//! tenant.

use paytrack_shared::auth::Claims;
use paytrack_shared::channel::ChannelKeyError;
use paytrack_shared::{ChannelKey, DeviceId};

/// Why a channel cannot be subscribed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// Not a channel name paytrack knows.
    #[error(transparent)]
    Unknown(#[from] ChannelKeyError),
    /// The token does not grant it.
    #[error("channel {0:?} is not allowed for this token")]
    Forbidden(String),
}

/// Parses `raw` and checks that `claims` may subscribe to it; with it, the device the
/// token is bound to (which narrows a `user:` channel).
pub fn subscribable(raw: &str, claims: &Claims) -> Result<(ChannelKey, Option<DeviceId>), ChannelError> {
    let channel = ChannelKey::parse(raw)?;
    authorize(&channel, claims)?;
    Ok((channel, claims.device.clone()))
}

/// Whether `claims` may subscribe to `channel`: a token with `channels` gets exactly
/// those; an operator token (no `channels`) gets every channel of its tenant except
/// another user's `user:` channel.
pub fn authorize(channel: &ChannelKey, claims: &Claims) -> Result<(), ChannelError> {
    let name = channel.to_string();
    let allowed = match &claims.channels {
        Some(granted) => granted.contains(&name),
        None => match channel {
            ChannelKey::User(user) => *user == claims.sub,
            _ => true,
        },
    };
    if allowed {
        Ok(())
    } else {
        Err(ChannelError::Forbidden(name))
    }
}

#[cfg(test)]
mod tests {
    use paytrack_shared::{TenantId, UserId};

    use super::*;

    fn claims(sub: &str, channels: Option<Vec<&str>>) -> Claims {
        Claims {
            sub: UserId::new(sub).unwrap(),
            tenant: TenantId::new("acme").unwrap(),
            exp: u64::MAX,
            aud: "a".into(),
            iss: "i".into(),
            device: None,
            channels: channels.map(|c| c.into_iter().map(String::from).collect()),
        }
    }

    #[test]
    fn an_unknown_channel_is_told_apart_from_a_forbidden_one() {
        let operator = claims("op", None);
        assert!(matches!(
            subscribable("ledger:x", &operator),
            Err(ChannelError::Unknown(_))
        ));
        assert!(matches!(
            subscribable("user:x", &operator),
            Err(ChannelError::Forbidden(_))
        ));
        assert_eq!(
            subscribable("payment:a.b", &operator).map_err(|e| e.to_string()),
            Err(r#"channel "payment:a.b": payment_id may only contain A-Z, a-z, 0-9, '_' and '-'"#.to_owned())
        );
    }

    #[test]
    fn authorization_follows_the_token() {
        let key = |raw: &str| ChannelKey::parse(raw).unwrap();
        let operator = claims("op", None);
        assert!(authorize(&ChannelKey::Payments, &operator).is_ok());
        assert!(authorize(&key("user:someone"), &operator).is_err());
        assert!(authorize(&key("user:op"), &operator).is_ok());
        let scoped = claims("u1", Some(vec!["payment:p1", "user:u1"]));
        assert!(authorize(&key("payment:p1"), &scoped).is_ok());
        assert!(authorize(&key("payment:p2"), &scoped).is_err());
        assert!(authorize(&ChannelKey::Payments, &scoped).is_err());
    }
}
