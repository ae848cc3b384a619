//! Credentials: operator and client JWTs (shared by ingest and ws-edge, same issuer
//! and keys) and backend API keys.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::ids::{DeviceId, TenantId, UserId};

/// The claims paytrack reads from a token, each id typed: `sub` names a user (or an
/// operator) and `device` one of its devices, and both end up in subjects, filters
/// and presence keys, so a token whose ids are not ids is refused.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    /// Who the token was issued to (an operator, a user).
    pub sub: UserId,
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
    pub device: Option<DeviceId>,
    /// The channels the token may subscribe to; absent for operator tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<String>>,
}

/// The claims as a token carries them, before their ids are checked: what is signed
/// when minting and decoded when verifying, so a malformed id is told apart from a
/// bad token ([`AuthError::BadClaim`]).
#[derive(Serialize, Deserialize)]
struct TokenClaims {
    sub: String,
    tenant: TenantId,
    exp: u64,
    aud: String,
    iss: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    device: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    channels: Option<Vec<String>>,
}

impl TryFrom<TokenClaims> for Claims {
    type Error = AuthError;

    fn try_from(raw: TokenClaims) -> Result<Claims, AuthError> {
        let sub = UserId::new(&raw.sub).map_err(|_| AuthError::BadClaim("sub"))?;
        let device = raw
            .device
            .map(|device| DeviceId::new(&device).map_err(|_| AuthError::BadClaim("device")))
            .transpose()?;
        Ok(Claims {
            sub,
            tenant: raw.tenant,
            exp: raw.exp,
            aud: raw.aud,
            iss: raw.iss,
            device,
            channels: raw.channels,
        })
    }
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
    /// A claim that ends up in a subject or a filter (`sub`, `device`) is not a subject
    /// token (`[A-Za-z0-9_-]{1,64}`); `device: ">"` would otherwise widen a JetStream
    /// filter.
    #[error("invalid token: malformed {0} claim")]
    BadClaim(&'static str),
}

/// Why a JWKS cannot be used; names the key at fault, so a bad set refuses to start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    /// The document is not a JWKS.
    #[error("not a JWKS: {0}")]
    Malformed(String),
    /// One key of the set cannot be used.
    #[error("JWKS key {kid:?}: {reason}")]
    Key {
        /// The key's `kid` (empty when it has none).
        kid: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// A JWKS key with the one algorithm it may verify: a token naming another `alg`
/// (HS256 signed with an RSA key's public bytes, `none`) is refused before any
/// signature check.
#[derive(Clone)]
struct PinnedKey {
    algorithm: Algorithm,
    key: DecodingKey,
}

/// Verifies tokens: HS256 with the shared secret (local stacks, tests; tokens without
/// `kid`), and RS256 or EdDSA with the keys of a JWKS selected by `kid` (production;
/// several keys at once during a rotation), each key pinned to its own algorithm. It
/// also mints HS256 tokens for local use and tests.
#[derive(Clone)]
pub struct JwtKeys {
    secret: Option<(DecodingKey, EncodingKey)>,
    /// Shared by clones, so a refresh reaches every holder.
    jwks: Arc<RwLock<Arc<HashMap<String, PinnedKey>>>>,
    issuer: String,
    audience: String,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids = self.kids();
        f.debug_struct("JwtKeys")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("hs256", &self.secret.is_some())
            .field("kids", &kids)
            .finish_non_exhaustive()
    }
}

impl JwtKeys {
    /// Keys for one HS256 secret, issuer and audience.
    pub fn new(secret: &SecretString, issuer: &str, audience: &str) -> JwtKeys {
        let bytes = secret.expose_secret().as_bytes();
        JwtKeys {
            secret: Some((DecodingKey::from_secret(bytes), EncodingKey::from_secret(bytes))),
            ..JwtKeys::without_secret(issuer, audience)
        }
    }

    /// Keys without an HS256 secret (production with a JWKS only): tokens without a
    /// `kid` are refused.
    pub fn without_secret(issuer: &str, audience: &str) -> JwtKeys {
        JwtKeys {
            secret: None,
            jwks: Arc::default(),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
        }
    }

    /// Adds the keys of a JWKS document (replacing any previous set; this value then
    /// no longer shares its keys with the clones it was made from). Every key must
    /// have a `kid`, an `alg` of RS256 or EdDSA that matches its key type, and (when
    /// given) `use: sig`; otherwise the whole set is refused, naming the key.
    pub fn with_jwks(mut self, document: &str) -> Result<JwtKeys, JwksError> {
        self.jwks = Arc::new(RwLock::new(Arc::new(parse_jwks(document)?)));
        Ok(self)
    }

    /// Replaces the JWKS keys of this value and of every clone of it (a periodic
    /// refresh); a set that cannot be used changes nothing. Returns the number of keys.
    pub fn replace_jwks(&self, document: &str) -> Result<usize, JwksError> {
        let keys = parse_jwks(document)?;
        let count = keys.len();
        *self.jwks.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
        Ok(count)
    }

    fn current_jwks(&self) -> Arc<HashMap<String, PinnedKey>> {
        self.jwks.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The `kid`s of the JWKS keys in use.
    pub fn kids(&self) -> Vec<String> {
        let mut kids: Vec<String> = self.current_jwks().keys().cloned().collect();
        kids.sort();
        kids
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        validation.leeway = 5;
        // A token whose `nbf` is in the future is not valid yet (off by default).
        validation.validate_nbf = true;
        validation
    }

    /// Checks a token's signature, expiry, not-before, issuer and audience, and that
    /// its `sub` and `device` claims are ids (they become parts of subjects, filters
    /// and keys).
    ///
    /// The key is chosen by the header alone, then the algorithm is pinned by the
    /// key, never by the token: a `kid` selects a JWKS key and the token's `alg` must
    /// be that key's; a token without `kid` is HS256 with the secret. An unknown
    /// `kid`, another `alg`, or `alg: none` (not a known algorithm) is invalid.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Invalid)?;
        let jwks = self.current_jwks();
        let (algorithm, key) = match &header.kid {
            Some(kid) => {
                let pinned = jwks.get(kid).ok_or(AuthError::Invalid)?;
                (pinned.algorithm, &pinned.key)
            }
            None => {
                let (decoding, _) = self.secret.as_ref().ok_or(AuthError::Invalid)?;
                (Algorithm::HS256, decoding)
            }
        };
        if header.alg != algorithm {
            return Err(AuthError::Invalid);
        }
        let claims = jsonwebtoken::decode::<TokenClaims>(token, key, &self.validation(algorithm))
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid,
            })?;
        Claims::try_from(claims)
    }

    /// Mints a token for `sub` in `tenant`, valid for `ttl_secs`. The claims are
    /// signed as given: a `sub` or `device` that is no id makes a token that
    /// [`JwtKeys::verify`] refuses.
    pub fn mint(
        &self,
        sub: &str,
        tenant: &TenantId,
        ttl_secs: u64,
        channels: Option<Vec<String>>,
        device: Option<String>,
    ) -> String {
        let exp = chrono::Utc::now().timestamp().max(0) as u64 + ttl_secs;
        let claims = TokenClaims {
            sub: sub.to_owned(),
            tenant: tenant.clone(),
            exp,
            aud: self.audience.clone(),
            iss: self.issuer.clone(),
            device,
            channels,
        };
        // Encoding HS256 claims of plain strings cannot fail; without a secret there is
        // nothing to mint with (an empty token is refused everywhere).
        let Some((_, encoding)) = &self.secret else {
            return String::new();
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, encoding).unwrap_or_default()
    }
}

/// The keys of a JWKS document, each pinned to its algorithm (see [`JwtKeys::with_jwks`]).
fn parse_jwks(document: &str) -> Result<HashMap<String, PinnedKey>, JwksError> {
    let set: JwkSet = serde_json::from_str(document).map_err(|e| JwksError::Malformed(e.to_string()))?;
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let kid = jwk.common.key_id.clone().unwrap_or_default();
        let bad = |reason: &str| JwksError::Key {
            kid: kid.clone(),
            reason: reason.to_owned(),
        };
        if kid.is_empty() {
            return Err(bad("has no kid"));
        }
        if jwk
            .common
            .public_key_use
            .as_ref()
            .is_some_and(|u| *u != PublicKeyUse::Signature)
        {
            return Err(bad("is not a signing key (use must be sig)"));
        }
        let algorithm = match (jwk.common.key_algorithm, &jwk.algorithm) {
            (Some(KeyAlgorithm::RS256), AlgorithmParameters::RSA(_)) => Algorithm::RS256,
            (Some(KeyAlgorithm::EdDSA), AlgorithmParameters::OctetKeyPair(p)) if p.curve == EllipticCurve::Ed25519 => {
                Algorithm::EdDSA
            }
            (None, _) => return Err(bad("has no alg (each key is pinned to one algorithm)")),
            (Some(alg), _) => {
                return Err(bad(&format!(
                    "alg {alg} with this key type is not accepted (RS256 with RSA, EdDSA with Ed25519)"
                )));
            }
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| bad(&e.to_string()))?;
        if keys.insert(kid.clone(), PinnedKey { algorithm, key }).is_some() {
            return Err(bad("appears twice"));
        }
    }
    Ok(keys)
}

/// The headers paytrack presents to a sandbox gateway (the provider simulator,
/// which refuses calls without its token): `Authorization: Bearer <token>`, marked
/// sensitive so no debug output shows it. Empty when no token is configured.
pub fn gateway_headers(token: Option<&secrecy::SecretString>) -> http::HeaderMap {
    use secrecy::ExposeSecret;
    let mut headers = http::HeaderMap::new();
    let value = token.and_then(|t| http::HeaderValue::from_str(&format!("Bearer {}", t.expose_secret())).ok());
    if let Some(mut value) = value {
        value.set_sensitive(true);
        headers.insert(http::header::AUTHORIZATION, value);
    }
    headers
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
        assert_eq!(claims.sub.as_str(), "op");
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
        let claims = TokenClaims {
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
        let device = keys().verify(&token).unwrap().device;
        assert_eq!(device.as_ref().map(DeviceId::as_str), Some("phone-1_a"));
    }

    #[test]
    fn a_sub_claim_that_is_not_a_user_id_is_refused() {
        for sub in ["", "a.b", ">", "a b", "op\u{7}", &"u".repeat(65)] {
            let token = encode(&claims_json(serde_json::json!({ "sub": sub })));
            assert_eq!(keys().verify(&token), Err(AuthError::BadClaim("sub")), "{sub:?}");
        }
        let tenant = TenantId::new("acme").unwrap();
        let minted = keys().mint("op.1", &tenant, 60, None, None);
        assert_eq!(keys().verify(&minted), Err(AuthError::BadClaim("sub")));
        let token = encode(&claims_json(serde_json::json!({ "sub": "user_1-a" })));
        assert_eq!(keys().verify(&token).unwrap().sub.as_str(), "user_1-a");
    }

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/jwt");

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{FIXTURES}/{name}")).unwrap()
    }

    fn with_jwks() -> JwtKeys {
        keys()
            .with_jwks(&String::from_utf8(fixture("jwks.json")).unwrap())
            .unwrap()
    }

    /// Signs `claims` with `key`, naming `kid` in the header.
    fn sign(alg: Algorithm, kid: Option<&str>, claims: &serde_json::Value, key: &EncodingKey) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, key).unwrap()
    }

    fn rsa(kid: &str) -> EncodingKey {
        EncodingKey::from_rsa_der(&fixture(&format!("{kid}.der")))
    }

    fn ed() -> EncodingKey {
        EncodingKey::from_ed_der(&fixture("ed-1.der"))
    }

    #[test]
    fn rs256_and_eddsa_tokens_from_the_jwks_verify_and_both_rotation_kids_are_accepted() {
        let keys = with_jwks();
        assert_eq!(keys.kids(), vec!["ed-1", "rsa-1", "rsa-2"]);
        let claims = claims_json(serde_json::json!({}));
        for kid in ["rsa-1", "rsa-2"] {
            let token = sign(Algorithm::RS256, Some(kid), &claims, &rsa(kid));
            assert_eq!(keys.verify(&token).unwrap().sub, "u1", "{kid}");
        }
        let token = sign(Algorithm::EdDSA, Some("ed-1"), &claims, &ed());
        assert_eq!(keys.verify(&token).unwrap().tenant.as_str(), "acme");
        // HS256 tokens without kid still verify with the secret.
        assert!(keys.verify(&encode(&claims)).is_ok());
    }

    #[test]
    fn alg_none_confusion_wrong_key_audience_and_unknown_kid_are_refused() {
        let keys = with_jwks();
        let claims = claims_json(serde_json::json!({}));
        // alg: none, unsigned.
        let b64 = |v: &serde_json::Value| {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        for header in [
            serde_json::json!({"alg": "none", "typ": "JWT"}),
            serde_json::json!({"alg": "none", "kid": "rsa-1"}),
        ] {
            let none = format!("{}.{}.", b64(&header), b64(&claims));
            assert_eq!(keys.verify(&none), Err(AuthError::Invalid), "{header}");
        }
        // HS256 signed with the RSA public key's bytes, with and without its kid.
        let public = EncodingKey::from_secret(&fixture("rsa-1.pub.pem"));
        for kid in [Some("rsa-1"), None] {
            let confused = sign(Algorithm::HS256, kid, &claims, &public);
            assert_eq!(keys.verify(&confused), Err(AuthError::Invalid), "{kid:?}");
        }
        // RS256 token naming the EdDSA kid, and one signed by the other RSA key.
        let token = sign(Algorithm::RS256, Some("ed-1"), &claims, &rsa("rsa-1"));
        assert_eq!(keys.verify(&token), Err(AuthError::Invalid));
        let token = sign(Algorithm::RS256, Some("rsa-2"), &claims, &rsa("rsa-1"));
        assert_eq!(keys.verify(&token), Err(AuthError::Invalid));
        // Wrong audience, unknown kid.
        let elsewhere = claims_json(serde_json::json!({"aud": "elsewhere"}));
        let token = sign(Algorithm::RS256, Some("rsa-1"), &elsewhere, &rsa("rsa-1"));
        assert_eq!(keys.verify(&token), Err(AuthError::Invalid));
        let token = sign(Algorithm::RS256, Some("rsa-9"), &claims, &rsa("rsa-1"));
        assert_eq!(keys.verify(&token), Err(AuthError::Invalid));
        // Without a secret, a token without kid is refused.
        let jwks_only = JwtKeys::without_secret("paytrack", "paytrack")
            .with_jwks(&String::from_utf8(fixture("jwks.json")).unwrap())
            .unwrap();
        assert_eq!(jwks_only.verify(&encode(&claims)), Err(AuthError::Invalid));
        assert!(
            jwks_only
                .verify(&sign(Algorithm::RS256, Some("rsa-1"), &claims, &rsa("rsa-1")))
                .is_ok()
        );
    }

    #[test]
    fn a_bad_jwks_is_refused_naming_the_key() {
        let set: serde_json::Value = serde_json::from_slice(&fixture("jwks.json")).unwrap();
        let with = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut set = set.clone();
            f(&mut set["keys"][1]);
            keys().with_jwks(&set.to_string()).map(|_| ())
        };
        let kid_of = |r: Result<(), JwksError>| match r {
            Err(JwksError::Key { kid, reason }) => (kid, reason),
            other => panic!("{other:?}"),
        };
        let (kid, reason) = kid_of(with(&|k| {
            k.as_object_mut().unwrap().remove("alg");
        }));
        assert_eq!(kid, "rsa-2");
        assert!(reason.contains("no alg"), "{reason}");
        let (kid, _) = kid_of(with(&|k| k["alg"] = "HS256".into()));
        assert_eq!(kid, "rsa-2");
        let (kid, _) = kid_of(with(&|k| k["alg"] = "EdDSA".into()));
        assert_eq!(kid, "rsa-2");
        let (_, reason) = kid_of(with(&|k| k["kid"] = "rsa-1".into()));
        assert!(reason.contains("twice"), "{reason}");
        let (kid, _) = kid_of(with(&|k| k["use"] = "enc".into()));
        assert_eq!(kid, "rsa-2");
        assert!(matches!(keys().with_jwks("{}"), Err(JwksError::Malformed(_))));
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
