//! `paytrack webhook`: one provider event in the provider's own shape, signed with
//! the tenant's configured secret(s) of that provider (PAYTRACK_WEBHOOK_SECRETS), posted
//! to ingest as the provider would.

use anyhow::Context;
use paytrack_shared::TenantId;
use paytrack_shared::config::{Settings, WebhookSecrets};
use paytrack_simulator::gateway::Payment;
use paytrack_simulator::sign::Signer;
use serde_json::Value;

use crate::cli::api::{Refusal, shown};
use crate::cli::output::{Output, cell};

/// What one signed webhook says.
pub struct WebhookArgs {
    /// `stdwebhooks`, `razorpay` or `stripe`.
    pub provider: String,
    /// The paytrack payment (sent as metadata unless `no_metadata`).
    pub payment_id: String,
    /// The provider's reference (default: derived from the payment id).
    pub provider_ref: Option<String>,
    /// Provider status: pending, held, succeeded, failed, cancelled, returned.
    pub status: String,
    /// Amount in minor units.
    pub amount_minor: i64,
    /// ISO 4217 currency.
    pub currency: String,
    /// The merchant, if any.
    pub merchant_id: Option<String>,
    /// Leave the payment id out of the metadata (link by reference only).
    pub no_metadata: bool,
}

/// Builds the provider's own event body, signs it with the tenant's configured
/// secret(s) of that provider, and posts it to ingest.
pub async fn send_webhook(
    settings: &Settings,
    ingest_url: &str,
    tenant: &TenantId,
    args: WebhookArgs,
    out: Output,
) -> anyhow::Result<()> {
    let tenant = tenant.clone();
    let secrets = WebhookSecrets::parse(&settings.webhook_secrets)?;
    let signer = Signer::new(&args.provider, secrets.all(&tenant, &args.provider)).with_context(|| {
        format!(
            "PAYTRACK_WEBHOOK_SECRETS has no usable {}/{} secret",
            tenant, args.provider
        )
    })?;
    let now = chrono::Utc::now().timestamp();
    let default_ref = match signer.provider() {
        "razorpay" => format!("pay_{}", args.payment_id),
        "stripe" => format!("pi_{}", args.payment_id),
        _ => format!("sw_{}", args.payment_id),
    };
    let payment = Payment {
        tenant: tenant.to_string(),
        provider: signer.provider().to_owned(),
        provider_ref: args.provider_ref.unwrap_or(default_ref),
        payment_id: args.payment_id,
        merchant_id: args.merchant_id,
        amount_minor: args.amount_minor,
        currency: args.currency,
        rail: "card".to_owned(),
        status: args.status.clone(),
        webhooks_sent: 0,
        webhooks_lost: 0,
        acked_deliveries: Vec::new(),
        created_at: now,
        payout: false,
        movements: Vec::new(),
        refunded_minor: 0,
        disputed_minor: 0,
    };
    let delivery_id = paytrack_simulator::events::delivery_id(signer.provider());
    let body = paytrack_simulator::events::body(&payment, &args.status, &delivery_id, now, !args.no_metadata)
        .with_context(|| format!("{} sends no event for status {:?}", signer.provider(), args.status))?;
    let mut request = reqwest::Client::new().post(format!(
        "{}/v1/webhooks/{tenant}/{}",
        ingest_url.trim_end_matches('/'),
        signer.provider()
    ));
    for (k, v) in signer.headers(&delivery_id, &body, now) {
        request = request.header(k, v);
    }
    let response = request
        .body(body)
        .send()
        .await
        .map_err(reqwest::Error::without_url)
        .with_context(|| format!("posting to ingest at {}", shown(ingest_url)))?;
    let status = response.status();
    let text = response.text().await.map_err(reqwest::Error::without_url)?;
    if !status.is_success() {
        return Err(Refusal::read(status, &text).into());
    }
    let answer: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    out.emit(&answer, |a| {
        format!(
            "HTTP {}: stored as fact {} (seq {}, duplicate: {})",
            status.as_u16(),
            cell(&a["fact_id"]),
            cell(&a["seq"]),
            cell(&a["duplicate"])
        )
    })
}
