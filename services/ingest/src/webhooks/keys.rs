//! Webhook verification keys, decoded once at start from the configured secrets, so
//! a secret a scheme cannot use stops ingest with a clear error instead of failing
//! every delivery.

use std::collections::HashMap;

use base64::Engine;
use ed25519_dalek::VerifyingKey;
use paytrack_shared::TenantId;
use paytrack_shared::config::{ConfigError, WebhookSecrets};
use secrecy::{ExposeSecret, SecretBox};
use standardwebhooks::Webhook;

use super::{razorpay, stdwebhooks, stripe};

/// One active key of a tenant's provider endpoint.
pub enum Key {
    /// A Standard Webhooks `whsec_` secret (symmetric `v1` signatures).
    StdSymmetric(Box<Webhook>),
    /// A Standard Webhooks `whpk_` ed25519 public key (asymmetric `v1a` signatures).
    StdPublic(VerifyingKey),
    /// The HMAC-SHA256 key of Razorpay or Stripe (the secret's bytes, as those
    /// providers use them).
    Hmac(SecretBox<[u8]>),
}

/// Every endpoint's keys: one, or two during a rotation.
#[derive(Default)]
pub struct Keys(HashMap<(TenantId, String), Vec<Key>>);

impl Keys {
    /// Decodes every configured secret for the scheme of its provider. A provider
    /// ingest has no scheme for, or a secret its scheme cannot use, is an error
    /// naming the endpoint (never the secret).
    pub fn from_secrets(secrets: &WebhookSecrets) -> Result<Keys, ConfigError> {
        let mut keys = HashMap::new();
        for (tenant, provider, active) in secrets.endpoints() {
            let bad = |reason: &str| ConfigError::BadEntry {
                key: "WEBHOOK_SECRETS",
                entry: format!("{tenant}/{provider}"),
                reason: reason.to_owned(),
            };
            let mut decoded = Vec::with_capacity(active.len());
            for secret in active {
                let secret = secret.expose_secret();
                let key = match provider {
                    stdwebhooks::PROVIDER => match secret.strip_prefix("whpk_") {
                        Some(public) => {
                            let bytes = base64::engine::general_purpose::STANDARD
                                .decode(public)
                                .ok()
                                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                                .ok_or_else(|| bad("a whpk_ key must be the base64 of 32 bytes"))?;
                            Key::StdPublic(
                                VerifyingKey::from_bytes(&bytes)
                                    .map_err(|_| bad("the whpk_ key is not an ed25519 public key"))?,
                            )
                        }
                        None => Key::StdSymmetric(Box::new(
                            Webhook::new(secret).map_err(|_| bad("not a Standard Webhooks whsec_ secret"))?,
                        )),
                    },
                    stripe::PROVIDER => {
                        if !secret.starts_with("whsec_") || secret.len() < 10 {
                            return Err(bad("a Stripe endpoint secret starts with whsec_"));
                        }
                        Key::Hmac(SecretBox::new(secret.as_bytes().into()))
                    }
                    razorpay::PROVIDER => {
                        if secret.len() < 8 {
                            return Err(bad("a Razorpay webhook secret has at least 8 characters"));
                        }
                        Key::Hmac(SecretBox::new(secret.as_bytes().into()))
                    }
                    _ => {
                        return Err(bad(&format!(
                            "no webhook scheme for this provider (known: {}, {}, {})",
                            stdwebhooks::PROVIDER,
                            razorpay::PROVIDER,
                            stripe::PROVIDER
                        )));
                    }
                };
                decoded.push(key);
            }
            keys.insert((tenant.clone(), provider.to_owned()), decoded);
        }
        Ok(Keys(keys))
    }

    /// The keys of one endpoint, None when it has none (the endpoint does not exist).
    pub fn get(&self, tenant: &TenantId, provider: &str) -> Option<&[Key]> {
        self.0
            .get(&(tenant.clone(), provider.to_owned()))
            .map(Vec::as_slice)
            .filter(|k| !k.is_empty())
    }
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;

    fn parse(raw: &str) -> Result<Keys, ConfigError> {
        Keys::from_secrets(&WebhookSecrets::parse(&SecretString::from(raw.to_owned()))?)
    }

    #[test]
    fn every_scheme_decodes_its_secrets_and_two_may_be_active() {
        let keys = parse(
            "acme/stdwebhooks=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw,\
             acme/stdwebhooks=whpk_11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=,\
             acme/razorpay=rzp_webhook_secret, acme/stripe=whsec_test_secret",
        )
        .unwrap();
        let acme = TenantId::new("acme").unwrap();
        assert_eq!(keys.get(&acme, "stdwebhooks").map(<[Key]>::len), Some(2));
        assert_eq!(keys.get(&acme, "razorpay").map(<[Key]>::len), Some(1));
        assert!(keys.get(&acme, "paypal").is_none());
    }

    #[test]
    fn unusable_secrets_stop_the_start_naming_the_endpoint_not_the_secret() {
        for raw in [
            "acme/stripe=sk_live_notawebhooksecret",
            "acme/razorpay=short",
            "acme/paypal=whatever-secret",
        ] {
            let error = parse(raw).unwrap_err().to_string();
            assert!(error.contains("acme/"), "{error}");
            let secret = raw.split_once('=').unwrap().1;
            assert!(!error.contains(secret), "{error}");
        }
    }
}
