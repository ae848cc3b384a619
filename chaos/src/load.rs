//! The steady load: payments created through REST over every webhook scheme (the
//! routing sends card/US to Standard Webhooks, card/GB to Stripe, UPI/IN to
//! Razorpay), with the simulator's providers sending their webhooks duplicated, out of
//! order and partly lost. Each command is retried with its Idempotency-Key while
//! ingest cannot answer, as a client would, and every 2xx answer is recorded: the
//! checker holds the product to each.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// The schemes the load covers: (rail, country, currency), each routed to another provider.
pub const SCHEMES: [(&str, &str, &str); 3] = [("card", "US", "USD"), ("card", "GB", "GBP"), ("upi", "IN", "INR")];

/// A create command ingest answered 2xx.
#[derive(Debug, Clone)]
pub struct Acked {
    /// The payment it created.
    pub payment_id: String,
    /// The amount asked.
    pub amount_minor: i64,
    /// When the answer came.
    pub at: Instant,
    /// The phase of the run it belongs to.
    pub phase: usize,
}

/// What the load did so far.
#[derive(Debug, Default)]
pub struct LoadLog {
    /// Commands answered 2xx.
    pub acked: Vec<Acked>,
    /// The phase of each command given up on (never answered 2xx after every retry).
    pub abandoned: Vec<usize>,
    /// Commands refused with a 4xx.
    pub refused: usize,
}

/// Sets every provider's behaviour: duplicates, reordering and lost webhooks.
pub async fn configure_providers(simulator_url: &str, token: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    for provider in ["stdwebhooks", "razorpay", "stripe"] {
        let response = http
            .put(format!("{simulator_url}/v1/providers/{provider}/behaviour"))
            .bearer_auth(token)
            .json(&json!({
                "success_pct": 80.0, "latency_ms": 150, "duplicate_pct": 20.0,
                "reorder_pct": 30.0, "loss_pct": 10.0,
            }))
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "behaviour of {provider}: {}",
            response.status()
        );
    }
    Ok(())
}

/// Runs the command load at `per_second` until `stop`; `phase` says which phase each
/// acknowledged command belongs to.
pub async fn run(
    ingest_url: String,
    token: String,
    per_second: f64,
    phase: Arc<std::sync::atomic::AtomicUsize>,
    log: Arc<Mutex<LoadLog>>,
    stop: CancellationToken,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap_or_default();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / per_second.max(0.1)));
    let mut n: u64 = 0;
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        n += 1;
        let (rail, country, currency) = SCHEMES[(n % 3) as usize];
        let amount_minor = 1_000 + (n as i64 % 97) * 10;
        let body = json!({
            "merchant_id": format!("m{}", n % 4), "amount_minor": amount_minor,
            "currency": currency, "rail": rail, "country": country,
        });
        let key = uuid::Uuid::new_v4().to_string();
        let (http, url, token, log, phase) = (
            http.clone(),
            ingest_url.clone(),
            token.clone(),
            log.clone(),
            phase.clone(),
        );
        tasks.spawn(async move {
            let outcome = create(&http, &url, &token, &key, &body).await;
            let mut log = log.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match outcome {
                Created::Yes(payment_id) => log.acked.push(Acked {
                    payment_id,
                    amount_minor,
                    at: Instant::now(),
                    phase: phase.load(std::sync::atomic::Ordering::Relaxed),
                }),
                Created::Refused(status, answer) => {
                    tracing::warn!(status, %answer, "a create command was refused");
                    log.refused += 1;
                }
                Created::GaveUp => log.abandoned.push(phase.load(std::sync::atomic::Ordering::Relaxed)),
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

enum Created {
    Yes(String),
    Refused(u16, Value),
    GaveUp,
}

/// `POST /v1/payments`, retried with the same key for up to two minutes while ingest
/// answers 5xx or cannot be reached.
async fn create(http: &reqwest::Client, url: &str, token: &str, key: &str, body: &Value) -> Created {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let answer = http
            .post(format!("{url}/v1/payments"))
            .bearer_auth(token)
            .header("idempotency-key", key)
            .json(body)
            .send()
            .await;
        if let Ok(response) = answer {
            let status = response.status();
            let value: Value = response.json().await.unwrap_or(Value::Null);
            if status.is_success()
                && let Some(id) = value["payment_id"].as_str()
            {
                return Created::Yes(id.to_owned());
            }
            // 409: the key's first attempt is still in flight; retry like a 5xx.
            if status.is_client_error() && status.as_u16() != 409 && status.as_u16() != 429 {
                return Created::Refused(status.as_u16(), value);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Created::GaveUp
}

/// Creates one payment and waits until REST shows a provider's answer on it (any
/// status past `initiated`): the whole path works again. The time it took.
pub async fn probe(ingest_url: &str, token: &str, timeout: Duration) -> Option<Duration> {
    let started = Instant::now();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .ok()?;
    let key = uuid::Uuid::new_v4().to_string();
    let body = json!({"merchant_id": "probe", "amount_minor": 500, "currency": "USD", "rail": "card", "country": "US"});
    let payment_id = loop {
        if let Created::Yes(id) = create(&http, ingest_url, token, &key, &body).await {
            break id;
        }
        if started.elapsed() > timeout {
            return None;
        }
    };
    while started.elapsed() < timeout {
        if let Ok(response) = http
            .get(format!("{ingest_url}/v1/payments/{payment_id}"))
            .bearer_auth(token)
            .send()
            .await
            && response.status().is_success()
            && let Ok(view) = response.json::<Value>().await
            && view["status"].as_str().is_some_and(|s| s != "initiated")
        {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    None
}
