//! Credentials: operator and client JWTs (shared by ingest and ws-edge, same issuer
//! and keys) and backend API keys.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::ids::TenantId;

/// The claims paytrack reads from a token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    /// Who the token was issued to (an operator, a user).
    pub sub: String,
    /// The only tenant the token may see.
    pub tenant: TenantId,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Audience; must match the configured one.
    pub aud: String,
    /// Issuer; must match the configured one.
    pub iss: String,
    /// The device a user's token belongs to (narrows `user:` channels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// The channels the token may subscribe to; absent for operator tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<String>>,
}

/// Why a credential was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credential was presented.
    #[error("missing credentials")]
    Missing,
    /// The token has expired.
    #[error("token expired")]
    Expired,
    /// The token is malformed, badly signed, not yet valid (`nbf`), or for another
    /// audience or issuer.
    #[error("invalid token")]
    Invalid,
    /// A claim that ends up in a subject or a filter is not a subject token
    /// (`[A-Za-z0-9_-]{1,64}`); `device: ">"` would otherwise widen a JetStream filter.
    #[error("invalid token: malformed {0} claim")]
    BadClaim(&'static str),
}

/// Verifies (and, for local use and tests, mints) HS256 tokens.
#[derive(Clone)]
pub struct JwtKeys {
    decoding: DecodingKey,
    encoding: EncodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl JwtKeys {
    /// Keys for one secret, issuer and audience.
    pub fn new(secret: &SecretString, issuer: &str, audience: &str) -> JwtKeys {
        let bytes = secret.expose_secret().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        validation.leeway = 5;
        // A token whose `nbf` is in the future is not valid yet (off by default).
        validation.validate_nbf = true;
        JwtKeys {
            decoding: DecodingKey::from_secret(bytes),
            encoding: EncodingKey::from_secret(bytes),
            validation,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
        }
    }

    /// Checks a token's signature, expiry, not-before, issuer and audience, and that
    /// its `device` claim is a subject token (it becomes part of a JetStream filter).
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid,
            })?;
        if let Some(device) = &claims.device {
            crate::ids::validate_token(device, "device").map_err(|_| AuthError::BadClaim("device"))?;
        }
        Ok(claims)
    }

    /// Mints a token for `sub` in `tenant`, valid for `ttl_secs`.
    pub fn mint(
        &self,
        sub: &str,
        tenant: &TenantId,
        ttl_secs: u64,
        channels: Option<Vec<String>>,
        device: Option<String>,
    ) -> String {
        let exp = chrono::Utc::now().timestamp().max(0) as u64 + ttl_secs;
        let claims = Claims {
            sub: sub.to_owned(),
            tenant: tenant.clone(),
            exp,
            aud: self.audience.clone(),
            iss: self.issuer.clone(),
            device,
            channels,
        };
        // Encoding HS256 claims of plain strings cannot fail.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).unwrap_or_default()
    }
}

/// Takes the token out of an `Authorization: Bearer …` header value.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let value = header?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> JwtKeys {
        JwtKeys::new(
            &SecretString::from("s3cret-s3cret-s3cret".to_owned()),
            "paytrack",
            "paytrack",
        )
    }

    #[test]
    fn minted_tokens_verify() {
        let tenant = TenantId::new("acme").unwrap();
        let token = keys().mint("op", &tenant, 60, None, None);
        let claims = keys().verify(&token).unwrap();
        assert_eq!(claims.tenant, tenant);
        assert_eq!(claims.sub, "op");
    }

    #[test]
    fn wrong_secret_audience_or_expiry_is_refused() {
        let tenant = TenantId::new("acme").unwrap();
        let other = JwtKeys::new(
            &SecretString::from("other-other-other".to_owned()),
            "paytrack",
            "paytrack",
        );
        assert_eq!(
            other.verify(&keys().mint("op", &tenant, 60, None, None)),
            Err(AuthError::Invalid)
        );
        let other_aud = JwtKeys::new(
            &SecretString::from("s3cret-s3cret-s3cret".to_owned()),
            "paytrack",
            "elsewhere",
        );
        assert_eq!(
            keys().verify(&other_aud.mint("op", &tenant, 60, None, None)),
            Err(AuthError::Invalid)
        );
        let claims = Claims {
            sub: "op".into(),
            tenant,
            exp: 1_000,
            aud: "paytrack".into(),
            iss: "paytrack".into(),
            device: None,
            channels: None,
        };
        let expired = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"s3cret-s3cret-s3cret"),
        )
        .unwrap();
        assert_eq!(keys().verify(&expired), Err(AuthError::Expired));
        assert_eq!(keys().verify("garbage"), Err(AuthError::Invalid));
    }

    fn encode(claims: &serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(b"s3cret-s3cret-s3cret"),
        )
        .unwrap()
    }

    fn claims_json(extra: serde_json::Value) -> serde_json::Value {
        let now = chrono::Utc::now().timestamp();
        let mut claims = serde_json::json!({
            "sub": "u1", "tenant": "acme", "exp": now + 600, "aud": "paytrack", "iss": "paytrack",
        });
        if let (Some(map), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
            map.extend(extra.clone());
        }
        claims
    }

    #[test]
    fn a_token_not_valid_before_an_hour_from_now_is_refused() {
        let now = chrono::Utc::now().timestamp();
        let future = encode(&claims_json(serde_json::json!({ "nbf": now + 3600 })));
        assert_eq!(keys().verify(&future), Err(AuthError::Invalid));
        let past = encode(&claims_json(serde_json::json!({ "nbf": now - 10 })));
        assert!(keys().verify(&past).is_ok());
    }

    #[test]
    fn a_device_claim_that_is_not_a_subject_token_is_refused() {
        for device in [">", "*", "d.1", "", "a b", &"d".repeat(65)] {
            let token = encode(&claims_json(serde_json::json!({ "device": device })));
            assert_eq!(keys().verify(&token), Err(AuthError::BadClaim("device")), "{device:?}");
        }
        let token = encode(&claims_json(serde_json::json!({ "device": "phone-1_a" })));
        assert_eq!(keys().verify(&token).unwrap().device.as_deref(), Some("phone-1_a"));
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer ")), None);
        assert_eq!(bearer(None), None);
    }
}
