//! Validated identifiers: every token that can end up in a NATS subject.
//!
//! Subjects are built from tenant, merchant and payment ids, so an id that is not a
//! safe subject token (`[A-Za-z0-9_-]{1,64}`) is rejected where it enters the system,
//! never escaped later.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// The longest token a subject may carry.
pub const MAX_TOKEN_LEN: usize = 64;

/// Why a string is not a valid subject token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The string was empty.
    #[error("{what} must not be empty")]
    Empty {
        /// Which identifier was being parsed.
        what: &'static str,
    },
    /// The string was longer than [`MAX_TOKEN_LEN`].
    #[error("{what} is longer than {MAX_TOKEN_LEN} characters")]
    TooLong {
        /// Which identifier was being parsed.
        what: &'static str,
    },
    /// The string held a character outside `[A-Za-z0-9_-]`.
    #[error("{what} may only contain A-Z, a-z, 0-9, '_' and '-'")]
    BadCharacter {
        /// Which identifier was being parsed.
        what: &'static str,
    },
}

/// Checks that `value` is a valid subject token; `what` names it in the error.
pub fn validate_token(value: &str, what: &'static str) -> Result<(), TokenError> {
    if value.is_empty() {
        return Err(TokenError::Empty { what });
    }
    if value.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLong { what });
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(TokenError::BadCharacter { what });
    }
    Ok(())
}

/// Behaviour shared by every validated identifier.
pub trait Token: Sized {
    /// Parses and validates an identifier.
    fn parse(value: &str) -> Result<Self, TokenError>;
    /// The identifier as it appears in subjects and JSON.
    fn as_str(&self) -> &str;
}

macro_rules! token_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl Token for $name {
            fn parse(value: &str) -> Result<Self, TokenError> {
                validate_token(value, $what)?;
                Ok(Self(value.to_owned()))
            }

            fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl $name {
            /// Parses and validates the identifier.
            pub fn new(value: &str) -> Result<Self, TokenError> {
                <Self as Token>::parse(value)
            }

            /// The identifier as it appears in subjects and JSON.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = TokenError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        /// Compares with the string it is spelled as (tests, claims, fixtures).
        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(deserializer)?;
                Self::new(&raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

token_type!(
    /// The tenant a credential, a webhook endpoint and every subject belong to.
    TenantId,
    "tenant"
);
token_type!(
    /// A payment's identifier, chosen by the caller or the provider event.
    PaymentId,
    "payment_id"
);
token_type!(
    /// The merchant a payment is attributed to; fixed by the payment's first fact.
    MerchantId,
    "merchant_id"
);

token_type!(
    /// A user of the tenant's own app, to whose devices pushes go (`user:<id>` channels).
    UserId,
    "user"
);
token_type!(
    /// One device of a user; a push names one, or none for every device of the user.
    DeviceId,
    "device"
);

/// A fact's stable id, the root of its `Nats-Msg-Id` and of its transition's: built by
/// [`crate::msg_id`] through [`FactId::new`] for a new fact (`wh:`, `sq:`, `cmd:`),
/// read back as it was written (`From`) from streams, rows and fixtures. Typed so that a fact id is
/// never confused with a payment, push or alert id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FactId(String);

/// The longest fact id (in bytes): the longest command fact id, `cmd:`, a payment id,
/// the longest command name and an idempotency key of 255 characters, fits with room
/// to spare. A fact id is part of a `Nats-Msg-Id`, so it is bounded where it is made.
pub const MAX_FACT_ID_LEN: usize = 512;

/// Why a string is not a fact id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FactIdError {
    /// The id was empty.
    #[error("a fact id must not be empty")]
    Empty,
    /// The id was longer than [`MAX_FACT_ID_LEN`] bytes.
    #[error("a fact id is at most {MAX_FACT_ID_LEN} bytes")]
    TooLong,
    /// The id held a control or white-space character (it is sent in a header).
    #[error("a fact id may hold printable characters only (no control characters or spaces)")]
    NotPrintable,
}

impl FactId {
    /// Validates a fact id made from outside input (a provider's delivery id, a
    /// caller's idempotency key): 1 to [`MAX_FACT_ID_LEN`] bytes, no control or
    /// white-space characters.
    pub fn new(id: &str) -> Result<FactId, FactIdError> {
        if id.is_empty() {
            return Err(FactIdError::Empty);
        }
        if id.len() > MAX_FACT_ID_LEN {
            return Err(FactIdError::TooLong);
        }
        if id.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(FactIdError::NotPrintable);
        }
        Ok(FactId(id.to_owned()))
    }

    /// The id as it appears in message ids and JSON.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FactId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for FactId {
    fn from(id: String) -> Self {
        Self(id)
    }
}

impl From<&str> for FactId {
    fn from(id: &str) -> Self {
        Self(id.to_owned())
    }
}

impl From<FactId> for String {
    fn from(id: FactId) -> Self {
        id.0
    }
}

/// A fact id reads as the string it is wherever a `&str` is asked for (message ids,
/// SQL parameters, comparisons), so only the places that make or keep one name the type.
impl std::ops::Deref for FactId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for FactId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<String> for FactId {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

impl PartialEq<FactId> for String {
    fn eq(&self, other: &FactId) -> bool {
        *self == other.0
    }
}

impl AsRef<str> for FactId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for FactId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for FactId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl MerchantId {
    /// The merchant of a payment whose first fact named none.
    pub fn unattributed() -> Self {
        Self("_".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_subject_safe_tokens() {
        for ok in ["a", "pay_123", "ACME-eu", &"x".repeat(64)] {
            assert!(PaymentId::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_anything_that_could_change_a_subject() {
        let cases: [(&str, TokenError); 6] = [
            ("", TokenError::Empty { what: "payment_id" }),
            (&"x".repeat(65), TokenError::TooLong { what: "payment_id" }),
            ("a.b", TokenError::BadCharacter { what: "payment_id" }),
            ("a*", TokenError::BadCharacter { what: "payment_id" }),
            ("a>", TokenError::BadCharacter { what: "payment_id" }),
            ("a b", TokenError::BadCharacter { what: "payment_id" }),
        ];
        for (input, expected) in cases {
            assert_eq!(PaymentId::new(input), Err(expected), "{input:?}");
        }
    }

    #[test]
    fn a_fact_id_is_its_string_on_the_wire() {
        let id = crate::msg_id::webhook_fact_id("stripe", "evt_1").unwrap();
        assert_eq!(id, "wh:stripe:evt_1");
        assert_eq!(serde_json::to_value(&id).unwrap(), "wh:stripe:evt_1");
        assert_eq!(serde_json::from_str::<FactId>("\"wh:stripe:evt_1\"").unwrap(), id);
    }

    #[test]
    fn a_fact_id_is_refused_when_empty_over_long_or_not_printable() {
        assert_eq!(
            FactId::new("cmd:p1:cancel:k-1/é").map(String::from),
            Ok("cmd:p1:cancel:k-1/é".to_owned())
        );
        assert!(FactId::new(&"x".repeat(MAX_FACT_ID_LEN)).is_ok());
        let long = "x".repeat(MAX_FACT_ID_LEN + 1);
        let cases: [(&str, FactIdError); 7] = [
            ("", FactIdError::Empty),
            (&long, FactIdError::TooLong),
            ("wh:sim:a\nb", FactIdError::NotPrintable),
            ("wh:sim:a\rb", FactIdError::NotPrintable),
            ("wh:sim:a b", FactIdError::NotPrintable),
            ("wh:sim:\u{7f}", FactIdError::NotPrintable),
            ("wh:sim:\u{85}", FactIdError::NotPrintable),
        ];
        for (input, expected) in cases {
            assert_eq!(FactId::new(input), Err(expected), "{input:?}");
        }
    }

    #[test]
    fn deserialization_validates() {
        assert!(serde_json::from_str::<TenantId>("\"ok\"").is_ok());
        assert!(serde_json::from_str::<TenantId>("\"no.dots\"").is_err());
    }
}
