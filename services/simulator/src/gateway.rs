//! The sandbox gateways: payments they accepted, how each provider behaves, and the
//! webhooks each payment's life sends to ingest (late, twice, out of order or never,
//! as the behaviour says).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use paytrack_shared::config::WebhookSecrets;
use paytrack_shared::{TenantId, Token};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::events;
use crate::sign::{PROVIDERS, Signer};

/// How one sandbox provider behaves; every field can be changed at run time.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Behaviour {
    /// Share of payments that succeed, 0–100.
    pub success_pct: f64,
    /// Share of API calls (initiation, status query) answered, 0–100; the rest get 503.
    pub availability_pct: f64,
    /// Delay before each webhook, in milliseconds.
    pub latency_ms: u64,
    /// Share of webhooks delivered twice, 0–100.
    pub duplicate_pct: f64,
    /// Share of payments whose webhooks are sent in reverse order, 0–100.
    pub reorder_pct: f64,
    /// Share of webhooks never sent, 0–100.
    pub loss_pct: f64,
    /// Whether the status-query API answers at all (false: always 503).
    pub status_api: bool,
    /// Whether events carry the paytrack payment id as metadata (Razorpay notes,
    /// Stripe metadata); false: only the provider reference links them.
    pub send_metadata: bool,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            success_pct: 90.0,
            availability_pct: 100.0,
            latency_ms: 300,
            duplicate_pct: 0.0,
            reorder_pct: 0.0,
            loss_pct: 0.0,
            status_api: true,
            send_metadata: true,
        }
    }
}

/// A partial update of a [`Behaviour`] (`PUT /v1/providers/{provider}/behaviour`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BehaviourUpdate {
    /// See [`Behaviour::success_pct`].
    pub success_pct: Option<f64>,
    /// See [`Behaviour::availability_pct`].
    pub availability_pct: Option<f64>,
    /// See [`Behaviour::latency_ms`].
    pub latency_ms: Option<u64>,
    /// See [`Behaviour::duplicate_pct`].
    pub duplicate_pct: Option<f64>,
    /// See [`Behaviour::reorder_pct`].
    pub reorder_pct: Option<f64>,
    /// See [`Behaviour::loss_pct`].
    pub loss_pct: Option<f64>,
    /// See [`Behaviour::status_api`].
    pub status_api: Option<bool>,
    /// See [`Behaviour::send_metadata`].
    pub send_metadata: Option<bool>,
}

impl BehaviourUpdate {
    /// Applies the update, refusing a percentage outside 0–100.
    pub fn apply(&self, to: &mut Behaviour) -> Result<(), String> {
        let pcts = [
            ("success_pct", self.success_pct, &mut to.success_pct),
            ("availability_pct", self.availability_pct, &mut to.availability_pct),
            ("duplicate_pct", self.duplicate_pct, &mut to.duplicate_pct),
            ("reorder_pct", self.reorder_pct, &mut to.reorder_pct),
            ("loss_pct", self.loss_pct, &mut to.loss_pct),
        ];
        let mut checked = Vec::new();
        for (name, value, slot) in pcts {
            if let Some(v) = value {
                if !(0.0..=100.0).contains(&v) {
                    return Err(format!("{name} must be within 0-100"));
                }
                checked.push((slot, v));
            }
        }
        for (slot, v) in checked {
            *slot = v;
        }
        if let Some(ms) = self.latency_ms {
            to.latency_ms = ms;
        }
        if let Some(b) = self.status_api {
            to.status_api = b;
        }
        if let Some(b) = self.send_metadata {
            to.send_metadata = b;
        }
        Ok(())
    }
}

/// A payment a sandbox provider accepted, and what really happened to it.
#[derive(Debug, Clone, Serialize)]
pub struct Payment {
    /// The tenant whose endpoint receives its webhooks.
    pub tenant: String,
    /// The sandbox provider.
    pub provider: String,
    /// The provider's reference.
    pub provider_ref: String,
    /// paytrack's payment id.
    pub payment_id: String,
    /// The merchant, when the initiation named one.
    pub merchant_id: Option<String>,
    /// Amount in minor units.
    pub amount_minor: i64,
    /// ISO 4217 currency.
    pub currency: String,
    /// The rail.
    pub rail: String,
    /// The provider status now (ground truth): `pending`, then `succeeded` or `failed`.
    pub status: String,
    /// Webhooks delivered (each duplicate counts).
    pub webhooks_sent: u32,
    /// Webhooks dropped by the loss setting.
    pub webhooks_lost: u32,
    /// The delivery ids ingest answered 2xx (a delivery sent twice is listed twice):
    /// what a checker holds paytrack to, since an acknowledged webhook must never be lost.
    pub acked_deliveries: Vec<String>,
    /// Unix seconds of the initiation.
    pub created_at: i64,
    /// Whether it is a payout (money out), whose events are `payout.*`.
    pub payout: bool,
    /// Its refunds and disputes, each in the state the provider decided.
    pub movements: Vec<SimMovement>,
    /// What refunds took back (pending or succeeded ones).
    pub refunded_minor: i64,
    /// What lost (or open) disputes withhold.
    pub disputed_minor: i64,
}

impl Payment {
    /// Recomputes the refunded and disputed amounts from the movements.
    fn settle_amounts(&mut self) {
        let withheld = |kind: &str| -> i64 {
            self.movements
                .iter()
                .filter(|m| m.kind == kind && !matches!(m.state.as_str(), "failed" | "won"))
                .map(|m| m.amount_minor)
                .sum()
        };
        self.refunded_minor = withheld("refund");
        self.disputed_minor = withheld("dispute");
    }

    /// What is left with the merchant.
    fn net_minor(&self) -> i64 {
        match self.status.as_str() {
            "succeeded" => self.amount_minor - self.refunded_minor - self.disputed_minor,
            _ => 0,
        }
    }
}

/// A refund or dispute of a sandbox payment, as the provider decided it.
#[derive(Debug, Clone, Serialize)]
pub struct SimMovement {
    /// `refund` or `dispute`.
    pub kind: String,
    /// The provider's id.
    pub id: String,
    /// Its amount.
    pub amount_minor: i64,
    /// Its final state: `succeeded` or `failed` (refunds), `won` or `lost` (disputes).
    pub state: String,
}

/// `POST /v1/providers/{provider}/payments/{provider_ref}/movements`: money that
/// moves after the outcome, driven per payment.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum MovementRequest {
    /// Refund part (`amount_minor`) or, without it, the rest; `fails` makes the
    /// refund fail after it was created (the money comes back).
    Refund {
        /// The amount; the rest when absent.
        #[serde(default)]
        amount_minor: Option<i64>,
        /// Whether the refund fails.
        #[serde(default)]
        fails: bool,
    },
    /// A dispute of what is left, then won or lost.
    Dispute {
        /// Whether the merchant wins it.
        won: bool,
    },
    /// A payment reported failed is captured after all (late authorisation).
    LateCapture,
    /// A paid payout is reversed by the beneficiary's bank (returned).
    PayoutReturn,
}

/// One event of a movement: its kind, the provider's id, the amount, and the state
/// the event reports.
pub(crate) type MovementStep = (String, String, i64, &'static str);

/// Outcomes of one provider's recent payments and calls.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    /// Payments initiated.
    pub initiated: u64,
    /// Payments that reached `succeeded`.
    pub succeeded: u64,
    /// Payments that reached `failed`.
    pub failed: u64,
    /// API calls answered 503.
    pub unavailable: u64,
    /// Succeeded share of the last 100 finished payments (1.0 when none finished).
    pub success_rate: f64,
    /// Answered share of the last 100 API calls (1.0 when none).
    pub availability: f64,
}

#[derive(Default)]
struct ProviderState {
    behaviour: Behaviour,
    stats: Stats,
    recent_outcomes: VecDeque<bool>,
    recent_calls: VecDeque<bool>,
}

const WINDOW: usize = 100;

fn push(window: &mut VecDeque<bool>, value: bool) -> f64 {
    window.push_back(value);
    if window.len() > WINDOW {
        window.pop_front();
    }
    window.iter().filter(|v| **v).count() as f64 / window.len() as f64
}

/// Why a request to a sandbox gateway was refused.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No such sandbox provider.
    #[error("unknown provider {0:?}")]
    UnknownProvider(String),
    /// The provider has no webhook endpoint (secret) for this tenant.
    #[error("no sandbox endpoint for tenant {0} and provider {1}")]
    NoEndpoint(String, String),
    /// The request is not usable.
    #[error("{0}")]
    Invalid(String),
    /// The availability setting made the provider not answer.
    #[error("the provider is unavailable")]
    Unavailable,
    /// No such payment at this provider.
    #[error("no such payment")]
    NotFound,
    /// The request is for a tenant the simulator does not act for.
    #[error("this simulator does not act for tenant {0}")]
    OtherTenant(String),
    /// The `Idempotency-Key` was used with other terms.
    #[error("this Idempotency-Key was used with another initiation")]
    IdempotencyKeyReused,
    /// No scenario has this name.
    #[error("no scenario named {0:?} (GET /v1/scenarios lists them)")]
    UnknownScenario(String),
}

/// `POST /v1/providers/{provider}/payments`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Initiation {
    /// The tenant (whose webhook endpoint the provider posts to).
    pub tenant: String,
    /// paytrack's payment id.
    pub payment_id: String,
    /// Amount in minor units.
    pub amount_minor: i64,
    /// ISO 4217 currency.
    pub currency: String,
    /// The rail (`card`, `ach_debit`, `rtp`, `upi`, …).
    pub rail: String,
    /// The merchant, if any.
    #[serde(default)]
    pub merchant_id: Option<String>,
    /// A payout (money out to the merchant or a beneficiary) rather than a payment;
    /// only Razorpay's sandbox makes payouts.
    #[serde(default)]
    pub payout: bool,
}

/// The answer to an initiation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Initiated {
    /// The provider.
    pub provider: String,
    /// The provider's reference of the payment.
    pub provider_ref: String,
    /// Always `pending`: the outcome comes by webhook (and the status API).
    pub status: String,
}

/// Where an initiation's `Idempotency-Key` is kept: tenant, provider, key.
type KeySlot = (String, &'static str, String);

/// Every sandbox gateway (cheap to clone).
#[derive(Clone)]
pub struct Gateways {
    inner: Arc<Inner>,
}

struct Inner {
    ingest_url: String,
    /// The one tenant these gateways act for: they sign only its webhooks.
    tenant: TenantId,
    secrets: WebhookSecrets,
    http: reqwest::Client,
    providers: Mutex<HashMap<&'static str, ProviderState>>,
    payments: Mutex<HashMap<(String, String), Payment>>,
    /// Initiations by `(tenant, provider, Idempotency-Key)`: the terms and the answer.
    keys: Mutex<HashMap<KeySlot, (Initiation, Initiated)>>,
    shutdown: CancellationToken,
}

impl Gateways {
    /// Gateways acting for `tenant` only, posting to `ingest_url` with its `secrets`
    /// (those of other tenants are never used).
    pub fn new(ingest_url: &str, tenant: TenantId, secrets: WebhookSecrets, shutdown: CancellationToken) -> Gateways {
        let providers = PROVIDERS.into_iter().map(|p| (p, ProviderState::default())).collect();
        Gateways {
            inner: Arc::new(Inner {
                ingest_url: ingest_url.trim_end_matches('/').to_owned(),
                tenant,
                secrets,
                http: reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap_or_default(),
                providers: Mutex::new(providers),
                payments: Mutex::new(HashMap::new()),
                keys: Mutex::new(HashMap::new()),
                shutdown,
            }),
        }
    }

    fn provider(&self, name: &str) -> Result<&'static str, GatewayError> {
        PROVIDERS
            .into_iter()
            .find(|p| *p == name)
            .ok_or_else(|| GatewayError::UnknownProvider(name.to_owned()))
    }

    fn with_provider<T>(&self, name: &'static str, f: impl FnOnce(&mut ProviderState) -> T) -> T {
        let mut providers = self.inner.providers.lock().unwrap_or_else(|p| p.into_inner());
        f(providers.entry(name).or_default())
    }

    /// Rolls the availability setting, counting the call.
    fn answer(&self, name: &'static str) -> Result<Behaviour, GatewayError> {
        let roll: f64 = rand::rng().random_range(0.0..100.0);
        self.with_provider(name, |p| {
            let up = roll < p.behaviour.availability_pct;
            p.stats.availability = push(&mut p.recent_calls, up);
            if up {
                Ok(p.behaviour.clone())
            } else {
                p.stats.unavailable += 1;
                Err(GatewayError::Unavailable)
            }
        })
    }

    /// The one tenant these gateways act for.
    pub fn tenant(&self) -> &TenantId {
        &self.inner.tenant
    }

    /// The providers a tenant has sandbox endpoints for.
    pub fn providers_of(&self, tenant: &TenantId) -> Vec<&'static str> {
        PROVIDERS
            .into_iter()
            .filter(|p| Signer::new(p, self.inner.secrets.all(tenant, p)).is_ok())
            .collect()
    }

    /// Accepts a payment once per `idempotency_key` (as providers do): a retry with
    /// the key answers the first answer and starts nothing; the key with other terms
    /// is refused. Without a key every call is a new payment.
    pub fn initiate_once(
        &self,
        provider: &str,
        idempotency_key: Option<&str>,
        request: Initiation,
    ) -> Result<Initiated, GatewayError> {
        let Some(key) = idempotency_key else {
            return self.initiate(provider, request);
        };
        let name = self.provider(provider)?;
        // Held across the initiation, so concurrent retries make one payment.
        let mut keys = self.inner.keys.lock().unwrap_or_else(|p| p.into_inner());
        let slot = (request.tenant.clone(), name, key.to_owned());
        if let Some((terms, answer)) = keys.get(&slot) {
            return if *terms == request {
                tracing::info!(provider = name, provider_ref = %answer.provider_ref, "initiation replayed by its idempotency key");
                Ok(answer.clone())
            } else {
                Err(GatewayError::IdempotencyKeyReused)
            };
        }
        let answer = self.initiate(provider, request.clone())?;
        keys.insert(slot, (request, answer.clone()));
        Ok(answer)
    }

    /// Accepts a payment and starts its life: a `pending` webhook, then after the
    /// latency its outcome, drawn from the success setting.
    pub fn initiate(&self, provider: &str, request: Initiation) -> Result<Initiated, GatewayError> {
        let (initiated, signer, behaviour) = self.accept(provider, request, true)?;
        let this = self.clone();
        let key = (initiated.provider.clone(), initiated.provider_ref.clone());
        tokio::spawn(async move { this.life(key, signer, behaviour).await });
        Ok(initiated)
    }

    /// Checks an initiation and records its payment as `pending`, starting nothing:
    /// the caller plays its life. `roll` applies the availability setting (a
    /// scenario's story is played whatever the behaviour says).
    pub(crate) fn accept(
        &self,
        provider: &str,
        request: Initiation,
        roll: bool,
    ) -> Result<(Initiated, Signer, Behaviour), GatewayError> {
        let name = self.provider(provider)?;
        let tenant = TenantId::parse(&request.tenant).map_err(|e| GatewayError::Invalid(format!("tenant: {e}")))?;
        if tenant != self.inner.tenant {
            return Err(GatewayError::OtherTenant(tenant.to_string()));
        }
        paytrack_shared::PaymentId::new(&request.payment_id)
            .map_err(|e| GatewayError::Invalid(format!("payment_id: {e}")))?;
        if request.amount_minor < 0 {
            return Err(GatewayError::Invalid("amount_minor must not be negative".into()));
        }
        if request.currency.len() != 3 || !request.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(GatewayError::Invalid("currency must be an ISO 4217 code".into()));
        }
        let signer = Signer::new(name, self.inner.secrets.all(&tenant, name))
            .map_err(|_| GatewayError::NoEndpoint(tenant.to_string(), name.to_owned()))?;
        let behaviour = if roll {
            self.answer(name)?
        } else {
            self.with_provider(name, |p| p.behaviour.clone())
        };
        if request.payout && name != "razorpay" {
            return Err(GatewayError::Invalid("only razorpay's sandbox makes payouts".into()));
        }
        let random = uuid::Uuid::new_v4().simple().to_string();
        let provider_ref = match name {
            "razorpay" if request.payout => format!("pout_{}", &random[..14]),
            "razorpay" => format!("pay_{}", &random[..14]),
            "stripe" => format!("pi_{}", &random[..24]),
            _ => format!("sw_{}", &random[..20]),
        };
        let payment = Payment {
            tenant: tenant.to_string(),
            provider: name.to_owned(),
            provider_ref: provider_ref.clone(),
            payment_id: request.payment_id,
            merchant_id: request.merchant_id,
            amount_minor: request.amount_minor,
            currency: request.currency,
            rail: request.rail,
            status: "pending".to_owned(),
            webhooks_sent: 0,
            webhooks_lost: 0,
            acked_deliveries: Vec::new(),
            created_at: chrono::Utc::now().timestamp(),
            payout: request.payout,
            movements: Vec::new(),
            refunded_minor: 0,
            disputed_minor: 0,
        };
        self.with_provider(name, |p| p.stats.initiated += 1);
        tracing::info!(
            tenant = %payment.tenant, payment_id = %payment.payment_id, provider = name, provider_ref = %provider_ref,
            "sandbox payment initiated"
        );
        self.inner
            .payments
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((name.to_owned(), provider_ref.clone()), payment);
        let initiated = Initiated {
            provider: name.to_owned(),
            provider_ref,
            status: "pending".to_owned(),
        };
        Ok((initiated, signer, behaviour))
    }

    /// Decides the outcome, records it as the truth, and sends the webhooks.
    async fn life(&self, key: (String, String), signer: Signer, behaviour: Behaviour) {
        let (succeeded, reorder) = {
            let mut rng = rand::rng();
            (
                rng.random_range(0.0..100.0) < behaviour.success_pct,
                rng.random_range(0.0..100.0) < behaviour.reorder_pct,
            )
        };
        let outcome = if succeeded { "succeeded" } else { "failed" };
        let mut statuses = vec!["pending", outcome];
        if reorder {
            statuses.reverse();
        }
        for (i, status) in statuses.into_iter().enumerate() {
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(behaviour.latency_ms)) => {}
            }
            // The truth moves when the provider decides, whether or not it tells.
            if status == outcome || i == 1 {
                self.settle(&key, outcome);
            }
            self.deliver(&key, &signer, status, &behaviour).await;
        }
    }

    /// Records `outcome` as the payment's true status (what the status-query API answers).
    pub(crate) fn settle(&self, key: &(String, String), outcome: &str) {
        let mut payments = self.inner.payments.lock().unwrap_or_else(|p| p.into_inner());
        let Some(payment) = payments.get_mut(key) else { return };
        if payment.status == outcome {
            return;
        }
        payment.status = outcome.to_owned();
        let name = self.provider(&key.0).ok();
        drop(payments);
        if let Some(name) = name {
            self.with_provider(name, |p| {
                if outcome == "succeeded" {
                    p.stats.succeeded += 1;
                } else {
                    p.stats.failed += 1;
                }
                p.stats.success_rate = push(&mut p.recent_outcomes, outcome == "succeeded");
            });
        }
    }

    async fn deliver(&self, key: &(String, String), signer: &Signer, status: &str, behaviour: &Behaviour) {
        self.deliver_with(key, signer, status, behaviour, |payment, delivery_id, now| {
            events::body(payment, status, delivery_id, now, behaviour.send_metadata)
        })
        .await
    }

    /// Delivers the event `render` makes of the payment (lost or sent twice as the
    /// behaviour says).
    async fn deliver_with(
        &self,
        key: &(String, String),
        signer: &Signer,
        status: &str,
        behaviour: &Behaviour,
        render: impl Fn(&Payment, &str, i64) -> Option<String>,
    ) {
        let Some(payment) = self.payment(&key.0, &key.1) else {
            return;
        };
        let (lost, twice) = {
            let mut rng = rand::rng();
            (
                rng.random_range(0.0..100.0) < behaviour.loss_pct,
                rng.random_range(0.0..100.0) < behaviour.duplicate_pct,
            )
        };
        if lost {
            self.count(key, 0, 1);
            tracing::info!(payment_id = %payment.payment_id, status, "sandbox webhook lost (by the loss setting)");
            return;
        }
        let delivery_id = events::delivery_id(signer.provider());
        let now = chrono::Utc::now().timestamp();
        let Some(body) = render(&payment, &delivery_id, now) else {
            return;
        };
        let url = self.webhook_url(&payment.tenant, signer.provider());
        for _ in 0..if twice { 2 } else { 1 } {
            if self.post(&url, signer, &delivery_id, &body, &payment).await {
                self.count(key, 1, 0);
                self.acknowledged(key, &delivery_id);
            }
        }
    }

    /// ingest's webhook endpoint of `tenant` and `provider`.
    pub(crate) fn webhook_url(&self, tenant: &str, provider: &str) -> String {
        format!("{}/v1/webhooks/{tenant}/{provider}", self.inner.ingest_url)
    }

    /// Resolves once the simulator is stopping.
    pub(crate) async fn stopped(&self) {
        self.inner.shutdown.cancelled().await
    }

    /// Posts one delivery, retrying (as providers do) while ingest answers 5xx or
    /// cannot be reached; true once ingest answered 2xx.
    pub(crate) async fn post(
        &self,
        url: &str,
        signer: &Signer,
        delivery_id: &str,
        body: &str,
        payment: &Payment,
    ) -> bool {
        for attempt in 0..6u32 {
            // Signed at each attempt, as providers do, so a retry is never stale.
            let mut request = self.inner.http.post(url).body(body.to_owned());
            for (k, v) in signer.headers(delivery_id, body, chrono::Utc::now().timestamp()) {
                request = request.header(k, v);
            }
            match request.send().await {
                Ok(response) if response.status().is_success() => return true,
                Ok(response) if response.status().is_client_error() => {
                    tracing::warn!(status = %response.status(), payment_id = %payment.payment_id, "ingest refused a sandbox webhook");
                    return false;
                }
                Ok(response) => tracing::debug!(status = %response.status(), attempt, "sandbox webhook to retry"),
                Err(error) => tracing::debug!(%error, attempt, "sandbox webhook to retry"),
            }
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return false,
                _ = tokio::time::sleep(Duration::from_millis(200 << attempt)) => {}
            }
        }
        false
    }

    pub(crate) fn count(&self, key: &(String, String), sent: u32, lost: u32) {
        let mut payments = self.inner.payments.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(payment) = payments.get_mut(key) {
            payment.webhooks_sent += sent;
            payment.webhooks_lost += lost;
        }
    }

    fn acknowledged(&self, key: &(String, String), delivery_id: &str) {
        let mut payments = self.inner.payments.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(payment) = payments.get_mut(key) {
            payment.acked_deliveries.push(delivery_id.to_owned());
        }
    }

    pub(crate) fn payment(&self, provider: &str, provider_ref: &str) -> Option<Payment> {
        self.inner
            .payments
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(provider.to_owned(), provider_ref.to_owned()))
            .cloned()
    }

    /// The status-query API: the payment as the provider knows it now.
    pub fn query(&self, provider: &str, provider_ref: &str) -> Result<Payment, GatewayError> {
        let name = self.provider(provider)?;
        if !self.with_provider(name, |p| p.behaviour.status_api) {
            self.with_provider(name, |p| p.stats.unavailable += 1);
            return Err(GatewayError::Unavailable);
        }
        self.answer(name)?;
        self.payment(name, provider_ref).ok_or(GatewayError::NotFound)
    }

    /// Moves a payment's money after its outcome (a refund, a dispute, a late
    /// capture): records what the provider decided as the truth at once, then sends
    /// the movement's events in order, each after the latency. Answers the payment.
    pub fn movement(
        &self,
        provider: &str,
        provider_ref: &str,
        request: &MovementRequest,
    ) -> Result<Payment, GatewayError> {
        let name = self.provider(provider)?;
        let key = (name.to_owned(), provider_ref.to_owned());
        let tenant = {
            let payments = self.inner.payments.lock().unwrap_or_else(|p| p.into_inner());
            payments.get(&key).ok_or(GatewayError::NotFound)?.tenant.clone()
        };
        let tenant = TenantId::parse(&tenant).map_err(|e| GatewayError::Invalid(format!("tenant: {e}")))?;
        let signer = Signer::new(name, self.inner.secrets.all(&tenant, name))
            .map_err(|_| GatewayError::NoEndpoint(tenant.to_string(), name.to_owned()))?;
        let behaviour = self.answer(name)?;
        let (payment, steps) = self.plan_movement(&key, request)?;
        let this = self.clone();
        let request = request.clone();
        tokio::spawn(async move { this.play_movement(&key, &signer, &request, steps, &behaviour).await });
        Ok(payment)
    }

    /// Records what the provider decided for a movement as the truth at once, and
    /// answers the payment and the movement's events to send, in order.
    pub(crate) fn plan_movement(
        &self,
        key: &(String, String),
        request: &MovementRequest,
    ) -> Result<(Payment, Vec<MovementStep>), GatewayError> {
        let name = self.provider(&key.0)?;
        let random = uuid::Uuid::new_v4().simple().to_string();
        // (kind, id, amount, the states its events report in order)
        let (payment, steps) = {
            let mut payments = self.inner.payments.lock().unwrap_or_else(|p| p.into_inner());
            let payment = payments.get_mut(key).ok_or(GatewayError::NotFound)?;
            let steps: Vec<MovementStep> = match request {
                MovementRequest::LateCapture => {
                    if payment.status != "failed" {
                        return Err(GatewayError::Invalid("only a failed payment is captured late".into()));
                    }
                    payment.status = "succeeded".to_owned();
                    Vec::new()
                }
                MovementRequest::PayoutReturn => {
                    if !payment.payout || payment.status != "succeeded" {
                        return Err(GatewayError::Invalid("only a paid payout is returned".into()));
                    }
                    payment.status = "returned".to_owned();
                    Vec::new()
                }
                MovementRequest::Refund { amount_minor, fails } => {
                    let left = payment.net_minor();
                    let amount = amount_minor.unwrap_or(left);
                    if payment.status != "succeeded" || amount <= 0 || amount > left {
                        return Err(GatewayError::Invalid(format!(
                            "a refund of {amount} needs a succeeded payment with that much left ({left})"
                        )));
                    }
                    let id = match name {
                        "razorpay" => format!("rfnd_{}", &random[..14]),
                        "stripe" => format!("re_{}", &random[..24]),
                        _ => format!("rf_{}", &random[..20]),
                    };
                    let end = if *fails { "failed" } else { "succeeded" };
                    payment.movements.push(SimMovement {
                        kind: "refund".into(),
                        id: id.clone(),
                        amount_minor: amount,
                        state: end.into(),
                    });
                    vec![
                        ("refund".into(), id.clone(), amount, "pending"),
                        ("refund".into(), id, amount, end),
                    ]
                }
                MovementRequest::Dispute { won } => {
                    let amount = payment.net_minor();
                    if payment.status != "succeeded" || amount <= 0 {
                        return Err(GatewayError::Invalid(
                            "a dispute needs a succeeded payment with money left".into(),
                        ));
                    }
                    let id = match name {
                        "razorpay" => format!("disp_{}", &random[..14]),
                        "stripe" => format!("dp_{}", &random[..24]),
                        _ => format!("dp_{}", &random[..20]),
                    };
                    let end = if *won { "won" } else { "lost" };
                    payment.movements.push(SimMovement {
                        kind: "dispute".into(),
                        id: id.clone(),
                        amount_minor: amount,
                        state: end.into(),
                    });
                    vec![
                        ("dispute".into(), id.clone(), amount, "opened"),
                        ("dispute".into(), id, amount, end),
                    ]
                }
            };
            payment.settle_amounts();
            (payment.clone(), steps)
        };
        Ok((payment, steps))
    }

    /// Sends a planned movement's events in order, each after the latency.
    pub(crate) async fn play_movement(
        &self,
        key: &(String, String),
        signer: &Signer,
        request: &MovementRequest,
        steps: Vec<MovementStep>,
        behaviour: &Behaviour,
    ) {
        // A late capture and a payout's return are the payment's own events.
        let own_event = match request {
            MovementRequest::LateCapture => Some("succeeded"),
            MovementRequest::PayoutReturn => Some("returned"),
            _ => None,
        };
        {
            if let Some(status) = own_event {
                tokio::select! {
                    _ = self.inner.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(behaviour.latency_ms)) => {}
                }
                self.deliver(key, signer, status, behaviour).await;
            }
            for (kind, id, amount, state) in steps {
                tokio::select! {
                    _ = self.inner.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(behaviour.latency_ms)) => {}
                }
                self.deliver_with(key, signer, state, behaviour, |payment, delivery_id, now| {
                    events::movement_body(
                        payment,
                        &kind,
                        &id,
                        amount,
                        state,
                        delivery_id,
                        now,
                        behaviour.send_metadata,
                    )
                })
                .await;
            }
        }
    }

    /// Every payment with its true status.
    pub fn ground_truth(&self) -> Vec<Payment> {
        let mut all: Vec<Payment> = self
            .inner
            .payments
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| (a.created_at, &a.payment_id).cmp(&(b.created_at, &b.payment_id)));
        all
    }

    /// Changes a provider's behaviour; answers the behaviour now in force.
    pub fn set_behaviour(&self, provider: &str, update: &BehaviourUpdate) -> Result<Behaviour, GatewayError> {
        let name = self.provider(provider)?;
        self.with_provider(name, |p| {
            update.apply(&mut p.behaviour).map_err(GatewayError::Invalid)?;
            Ok(p.behaviour.clone())
        })
    }

    /// A provider's behaviour and recent outcomes.
    pub fn describe(&self, provider: &str) -> Result<(Behaviour, Stats), GatewayError> {
        let name = self.provider(provider)?;
        Ok(self.with_provider(name, |p| (p.behaviour.clone(), p.stats.clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaviour_updates_are_partial_and_checked() {
        let mut b = Behaviour::default();
        BehaviourUpdate {
            success_pct: Some(10.0),
            status_api: Some(false),
            ..Default::default()
        }
        .apply(&mut b)
        .unwrap();
        assert_eq!((b.success_pct, b.status_api, b.latency_ms), (10.0, false, 300));
        let refused = BehaviourUpdate {
            loss_pct: Some(101.0),
            success_pct: Some(50.0),
            ..Default::default()
        };
        assert!(refused.apply(&mut b).is_err());
        assert_eq!(b.success_pct, 10.0, "a refused update changes nothing");
    }
}
