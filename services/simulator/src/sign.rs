//! Signing a webhook the way each sandbox provider does, so ingest verifies it as it
//! would the real provider's. Also used by the operator CLI (`paytrack webhook`).

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use standardwebhooks::Webhook;

/// The three schemes.
pub const PROVIDERS: [&str; 3] = ["stdwebhooks", "razorpay", "stripe"];

/// Why a webhook could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// No scheme of that name.
    #[error("unknown provider {0:?} (known: stdwebhooks, razorpay, stripe)")]
    UnknownProvider(String),
    /// No secret the scheme can sign with (a `whpk_` public key cannot sign).
    #[error("no {0} secret this sender can sign with")]
    NoSigningSecret(String),
}

/// Signs with every configured secret of one endpoint where the scheme carries
/// several signatures (Standard Webhooks: space-separated; Stripe: several `v1`),
/// and with the last listed (the newest, during a rotation) where it carries one
/// (Razorpay).
pub struct Signer {
    provider: &'static str,
    secrets: Vec<SecretString>,
}

impl Signer {
    /// A signer for `provider` with the endpoint's `secrets` (in the order listed).
    pub fn new(provider: &str, secrets: &[SecretString]) -> Result<Signer, SignError> {
        let provider = PROVIDERS
            .into_iter()
            .find(|p| *p == provider)
            .ok_or_else(|| SignError::UnknownProvider(provider.to_owned()))?;
        let usable: Vec<SecretString> = secrets
            .iter()
            .filter(|s| provider != "stdwebhooks" || Webhook::new(s.expose_secret()).is_ok())
            .cloned()
            .collect();
        if usable.is_empty() {
            return Err(SignError::NoSigningSecret(provider.to_owned()));
        }
        Ok(Signer {
            provider,
            secrets: usable,
        })
    }

    /// The provider.
    pub fn provider(&self) -> &'static str {
        self.provider
    }

    /// The headers of a delivery of `body` with id `delivery_id`, signed at `now`
    /// (Unix seconds). Stripe's delivery id travels in the body (`id`), so it is
    /// not a header there.
    pub fn headers(&self, delivery_id: &str, body: &str, now: i64) -> Vec<(String, String)> {
        let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
        match self.provider {
            "stdwebhooks" => {
                let signatures: Vec<String> = self
                    .secrets
                    .iter()
                    .filter_map(|s| {
                        Webhook::new(s.expose_secret())
                            .ok()?
                            .sign(delivery_id, now, body.as_bytes())
                            .ok()
                    })
                    .collect();
                headers.extend([
                    ("webhook-id".to_owned(), delivery_id.to_owned()),
                    ("webhook-timestamp".to_owned(), now.to_string()),
                    ("webhook-signature".to_owned(), signatures.join(" ")),
                ]);
            }
            "razorpay" => {
                let newest = self.secrets.last().map(|s| hmac_hex(s, &[body.as_bytes()]));
                headers.extend([
                    ("x-razorpay-signature".to_owned(), newest.unwrap_or_default()),
                    ("x-razorpay-event-id".to_owned(), delivery_id.to_owned()),
                ]);
            }
            _ => {
                let t = now.to_string();
                let mut value = format!("t={t}");
                for secret in &self.secrets {
                    value.push_str(",v1=");
                    value.push_str(&hmac_hex(secret, &[t.as_bytes(), b".", body.as_bytes()]));
                }
                headers.push(("stripe-signature".to_owned(), value));
            }
        }
        headers
    }
}

fn hmac_hex(secret: &SecretString, parts: &[&[u8]]) -> String {
    // HMAC takes keys of any length.
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(secret.expose_secret().as_bytes()) else {
        return String::new();
    };
    for part in parts {
        mac.update(part);
    }
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scheme_signs_with_its_headers() {
        let std = Signer::new(
            "stdwebhooks",
            &[SecretString::from("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")],
        )
        .unwrap();
        let h = std.headers("msg_p5jXN8AQM9LWM0D4loKWxJek", r#"{"test": 2432232314}"#, 1614265330);
        assert!(h.contains(&(
            "webhook-signature".to_owned(),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=".to_owned()
        )));
        let stripe = Signer::new(
            "stripe",
            &[SecretString::from("whsec_a"), SecretString::from("whsec_b")],
        )
        .unwrap();
        let h = stripe.headers("evt_1", "{}", 1);
        assert_eq!(h[1].1.matches(",v1=").count(), 2);
        assert!(Signer::new("paypal", &[SecretString::from("x")]).is_err());
        assert!(Signer::new("stdwebhooks", &[SecretString::from("whpk_AAAA")]).is_err());
    }
}
