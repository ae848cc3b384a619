//! Who is calling `/v1/payments…` and what they may read: an operator JWT or a
//! backend API key reads the whole tenant; an end user's JWT (one with a `channels`
//! claim) reads only the payments its channels name. The tenant always comes from
//! the credential, never from the request.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use paytrack_shared::auth::{AuthError, bearer};
use paytrack_shared::{ChannelKey, MerchantId, PaymentId, TenantId};

use crate::app::AppState;
use crate::error::ApiError;

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The only tenant this caller may read or command.
    pub tenant: TenantId,
    /// Which of the tenant's payments it may read.
    pub scope: Scope,
    /// What kind of credential it presented.
    pub kind: CallerKind,
    /// Who it is, for the audit of commands: an operator's `sub`, or
    /// `api_key:<key id>` for a backend key (never the key).
    pub actor: String,
}

/// The kinds of credential, which decide who may command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerKind {
    /// A JWT without a `channels` claim: creates, cancels, retries and resolves.
    Operator,
    /// A backend API key: creates, cancels and retries (never resolves).
    Backend,
    /// An end user's JWT (with `channels`): reads only.
    User,
}

impl Caller {
    /// Refuses (403) a credential that may not create, cancel or retry payments.
    pub fn require_commander(&self) -> Result<(), ApiError> {
        match self.kind {
            CallerKind::Operator | CallerKind::Backend => Ok(()),
            CallerKind::User => Err(ApiError::Forbidden(
                "an end user's token may not command payments".into(),
            )),
        }
    }

    /// Refuses (403) anyone but an operator (resolutions are operators' alone).
    pub fn require_operator(&self) -> Result<(), ApiError> {
        match self.kind {
            CallerKind::Operator => Ok(()),
            _ => Err(ApiError::Forbidden("only an operator may resolve a payment".into())),
        }
    }
}

/// What part of its tenant a caller may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Everything: operator tokens (no `channels` claim), backend API keys, and end
    /// user tokens granted the `payments` channel.
    Tenant,
    /// Only these payments, and the payments of these merchants (the token's
    /// `payment:<id>` and `merchant:<id>` channels; other channels grant nothing
    /// over REST).
    Limited {
        /// Payments granted by id.
        payments: Vec<PaymentId>,
        /// Merchants whose payments are granted.
        merchants: Vec<MerchantId>,
    },
}

/// What the scope says about one payment before anything is read.
#[derive(Debug, PartialEq, Eq)]
pub enum Access<'a> {
    /// Readable (a missing payment is then 404).
    Granted,
    /// Readable only if the payment belongs to one of these merchants.
    IfMerchantIn(&'a [MerchantId]),
    /// Not readable: 403, whether or not the payment exists.
    Denied,
}

impl Scope {
    /// The scope of a token's `channels` claim (None: an operator's token).
    pub fn of_channels(channels: Option<&[String]>) -> Scope {
        let Some(channels) = channels else {
            return Scope::Tenant;
        };
        let mut payments = Vec::new();
        let mut merchants = Vec::new();
        for channel in channels {
            match ChannelKey::parse(channel) {
                Ok(ChannelKey::Payments) => return Scope::Tenant,
                Ok(ChannelKey::Payment(id)) => payments.push(id),
                Ok(ChannelKey::Merchant(id)) => merchants.push(id),
                _ => {}
            }
        }
        Scope::Limited { payments, merchants }
    }

    /// Whether `payment` may be read under this scope.
    pub fn access(&self, payment: &PaymentId) -> Access<'_> {
        match self {
            Scope::Tenant => Access::Granted,
            Scope::Limited { payments, .. } if payments.contains(payment) => Access::Granted,
            Scope::Limited { merchants, .. } if !merchants.is_empty() => Access::IfMerchantIn(merchants),
            Scope::Limited { .. } => Access::Denied,
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
        let token = bearer(header).ok_or_else(|| ApiError::Unauthorized(AuthError::Missing.to_string()))?;
        if let Some(tenant) = state.api_keys.tenant_of(token) {
            return Ok(Caller {
                tenant,
                scope: Scope::Tenant,
                kind: CallerKind::Backend,
                actor: format!("api_key:{}", paytrack_shared::config::ApiKeys::key_id(token)),
            });
        }
        let claims = state
            .jwt
            .verify(token)
            .map_err(|e| ApiError::Unauthorized(e.to_string()))?;
        let kind = if claims.channels.is_none() {
            CallerKind::Operator
        } else {
            CallerKind::User
        };
        Ok(Caller {
            scope: Scope::of_channels(claims.channels.as_deref()),
            tenant: claims.tenant,
            kind,
            actor: claims.sub.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(channels: &[&str]) -> Scope {
        let channels: Vec<String> = channels.iter().map(|c| (*c).to_owned()).collect();
        Scope::of_channels(Some(&channels))
    }

    fn pay(id: &str) -> PaymentId {
        PaymentId::new(id).unwrap()
    }

    #[test]
    fn operators_and_the_payments_channel_read_the_whole_tenant() {
        assert_eq!(Scope::of_channels(None), Scope::Tenant);
        assert_eq!(scope(&["user:u1", "payments"]), Scope::Tenant);
        assert_eq!(Scope::Tenant.access(&pay("pay_any")), Access::Granted);
    }

    #[test]
    fn a_scoped_token_reads_only_what_its_channels_name() {
        let mine = scope(&["payment:pay_mine", "user:u1"]);
        assert_eq!(mine.access(&pay("pay_mine")), Access::Granted);
        assert_eq!(mine.access(&pay("pay_secret")), Access::Denied);
        let merchant = scope(&["merchant:m_1"]);
        assert_eq!(
            merchant.access(&pay("pay_secret")),
            Access::IfMerchantIn(&[MerchantId::new("m_1").unwrap()])
        );
        // Malformed grants grant nothing.
        assert_eq!(
            scope(&["payment:*", "merchant:>"]).access(&pay("pay_1")),
            Access::Denied
        );
        assert_eq!(scope(&[]).access(&pay("pay_1")), Access::Denied);
    }
}
