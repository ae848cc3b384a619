//! The operator commands of `paytrack`: create a payment, send a signed webhook of
//! any scheme, tail a channel with its positions, fetch an evidence pack. Each talks
//! to a running stack over its public HTTP and WebSocket surfaces, as an operator's
//! script would.

use anyhow::Context;
use futures::{SinkExt, StreamExt};
use paytrack_shared::auth::JwtKeys;
use paytrack_shared::config::{Settings, WebhookSecrets};
use paytrack_shared::{TenantId, Token};
use paytrack_simulator::gateway::Payment;
use paytrack_simulator::sign::Signer;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Where the stack is and who the operator is.
pub struct Target {
    /// ingest's base URL.
    pub ingest_url: String,
    /// ws-edge's WebSocket URL.
    pub ws_url: String,
    /// The bearer token sent.
    pub token: String,
}

impl Target {
    /// From explicit values, else the settings (a token minted for `tenant`).
    pub fn new(
        settings: &Settings,
        tenant: &str,
        ingest_url: Option<String>,
        edge_url: Option<String>,
        token: Option<String>,
    ) -> anyhow::Result<Target> {
        let token = match token {
            Some(token) => token,
            None => {
                let keys = JwtKeys::new(settings.jwt_secret()?, &settings.jwt_issuer, &settings.jwt_audience);
                keys.mint(
                    "paytrack-cli",
                    &TenantId::parse(tenant).context("tenant")?,
                    600,
                    None,
                    None,
                )
            }
        };
        let edge = edge_url.unwrap_or_else(|| format!("http://{}", settings.edge_listen));
        let ws_url = format!(
            "{}/v1/ws",
            edge.trim_end_matches('/')
                .replacen("https://", "wss://", 1)
                .replacen("http://", "ws://", 1)
        );
        Ok(Target {
            ingest_url: ingest_url
                .unwrap_or_else(|| format!("http://{}", settings.ingest_listen))
                .trim_end_matches('/')
                .to_owned(),
            ws_url,
            token,
        })
    }
}

/// Prints an HTTP answer (status line, then the body, pretty when JSON) and fails
/// on a non-2xx one.
async fn print_answer(response: reqwest::Response) -> anyhow::Result<Value> {
    let status = response.status();
    let text = response.text().await?;
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    println!("HTTP {}", status.as_u16());
    println!("{}", serde_json::to_string_pretty(&value)?);
    anyhow::ensure!(status.is_success(), "answered {status}");
    Ok(value)
}

/// `POST /v1/payments` with an `Idempotency-Key`.
pub async fn create_payment(target: &Target, body: Value, idempotency_key: &str) -> anyhow::Result<Value> {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/payments", target.ingest_url))
        .bearer_auth(&target.token)
        .header("idempotency-key", idempotency_key)
        .json(&body)
        .send()
        .await?;
    print_answer(response).await
}

/// What one signed webhook says.
pub struct WebhookArgs {
    /// `stdwebhooks`, `razorpay` or `stripe`.
    pub provider: String,
    /// The endpoint's tenant.
    pub tenant: String,
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
pub async fn send_webhook(settings: &Settings, ingest_url: &str, args: WebhookArgs) -> anyhow::Result<Value> {
    let tenant = TenantId::parse(&args.tenant).context("tenant")?;
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
    print_answer(request.body(body).send().await?).await
}

/// Subscribes to `channel` and prints every message with its position
/// (`epoch:seq`, and the `prev_seq` it continues from), acknowledging heartbeats,
/// until `count` events were printed (forever when None).
pub async fn tail(target: &Target, channel: &str, since: Option<Value>, count: Option<usize>) -> anyhow::Result<()> {
    let mut request = target.ws_url.as_str().into_client_request()?;
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {}", target.token).parse()?);
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .with_context(|| format!("connecting to {}", target.ws_url))?;
    let mut subscribe = json!({"type": "subscribe", "channel": channel});
    if let Some(since) = since {
        subscribe["since"] = since;
    }
    socket.send(Message::text(subscribe.to_string())).await?;
    let mut events = 0;
    while let Some(message) = socket.next().await {
        let text = match message? {
            Message::Text(text) => text.to_string(),
            Message::Close(frame) => {
                println!("closed {frame:?}");
                break;
            }
            _ => continue,
        };
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let kind = value["type"].as_str().unwrap_or("?");
        let position = |p: &Value| format!("{}:{}", p["epoch"].as_str().unwrap_or("-"), p["seq"]);
        match kind {
            "event" => {
                events += 1;
                println!(
                    "{} prev_seq={} {} {}",
                    position(&value["position"]),
                    value["prev_seq"],
                    value["kind"].as_str().unwrap_or("?"),
                    text
                );
            }
            "subscribed" => println!("{} subscribed {}", position(&value["position"]), text),
            "heartbeat" => {
                socket
                    .send(Message::text(
                        json!({"type": "ack", "positions": value["positions"]}).to_string(),
                    ))
                    .await?;
            }
            _ => println!("{text}"),
        }
        if count.is_some_and(|n| events >= n) {
            break;
        }
    }
    Ok(())
}

/// `GET /v1/payments/{id}/evidence`.
pub async fn evidence(target: &Target, payment_id: &str) -> anyhow::Result<Value> {
    let response = reqwest::Client::new()
        .get(format!("{}/v1/payments/{payment_id}/evidence", target.ingest_url))
        .bearer_auth(&target.token)
        .send()
        .await?;
    print_answer(response).await
}
