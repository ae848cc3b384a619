//! Facts put straight on PAYTRACK_IN (as ingest would: commands, provider events
//! with a provider sequence) and a payment's chain read back from PAYTRACK_STATUS,
//! for tests of the reconciler's decisions.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, message::PublishMessage};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use paytrack_shared::envelope::{
    self, CommandAction, CreatePayment, FactSource, InboundFact, PaymentCommand, ProviderEvent, RawEvidence,
    RoutingDecision, Transition,
};
use paytrack_shared::{FactId, MerchantId, PaymentId, Status, TenantId, msg_id, subjects};

/// Publishes `fact` on its `paytrack.in` subject with its message id; its sequence.
pub async fn publish(js: &jetstream::Context, fact: &InboundFact) -> anyhow::Result<u64> {
    let message = PublishMessage::build()
        .message_id(msg_id::fact(&fact.tenant, &fact.fact_id))
        .payload(envelope::encode(fact));
    let ack = js
        .send_publish(subjects::inbound(&fact.tenant, &fact.payment_id), message)
        .await?
        .await?;
    Ok(ack.sequence)
}

fn fact(tenant: &TenantId, payment: &str, fact_id: FactId, source: FactSource) -> anyhow::Result<InboundFact> {
    Ok(InboundFact {
        v: 1,
        fact_id,
        tenant: tenant.clone(),
        payment_id: PaymentId::new(payment)?,
        merchant_id: Some(MerchantId::new("m_1")?),
        received_at: Utc::now(),
        source,
        raw: RawEvidence {
            headers: BTreeMap::new(),
            body: "{}".into(),
        },
    })
}

/// The create command of `payment` on `rail`, routed to `provider` as `pr_<payment>`.
pub fn create(tenant: &TenantId, payment: &str, rail: &str, provider: &str) -> anyhow::Result<InboundFact> {
    create_with_ref(tenant, payment, rail, provider, &format!("pr_{payment}"))
}

/// The create command of `payment` on `rail`, routed to `provider` as `provider_ref`.
pub fn create_with_ref(
    tenant: &TenantId,
    payment: &str,
    rail: &str,
    provider: &str,
    provider_ref: &str,
) -> anyhow::Result<InboundFact> {
    let action = CommandAction::Create(CreatePayment {
        merchant_id: MerchantId::new("m_1")?,
        amount_minor: 1250,
        currency: "USD".into(),
        rail: rail.into(),
        country: "US".into(),
        program: None,
        customer_ref: None,
        metadata: None,
        routing: Some(RoutingDecision {
            provider: provider.into(),
            provider_ref: Some(provider_ref.to_owned()),
            reason: "test".into(),
        }),
        capabilities: None,
    });
    command(tenant, payment, "create", action)
}

/// A command fact (`cmd:<payment>:<name>:<n>`).
pub fn command(tenant: &TenantId, payment: &str, key: &str, action: CommandAction) -> anyhow::Result<InboundFact> {
    let id = msg_id::command_fact_id(&PaymentId::new(payment)?, &action, key)?;
    fact(
        tenant,
        payment,
        id,
        FactSource::Command(PaymentCommand {
            action,
            actor: "operator@test".into(),
            idempotency_key: Some(key.into()),
        }),
    )
}

/// A `stdwebhooks` provider event with the provider's sequence and time.
pub fn event(
    tenant: &TenantId,
    payment: &str,
    event_id: &str,
    status: Status,
    provider_seq: Option<u64>,
    occurred_at: DateTime<Utc>,
    reason: Option<&str>,
) -> anyhow::Result<InboundFact> {
    fact(
        tenant,
        payment,
        msg_id::webhook_fact_id("stdwebhooks", event_id)?,
        FactSource::Webhook(ProviderEvent {
            occurred_at: Some(occurred_at),
            provider_ref: Some(format!("pr_{payment}")),
            amount_minor: Some(1250),
            currency: Some("USD".into()),
            reason: reason.map(str::to_owned),
            provider_seq,
            status: Some(status.as_str().to_owned()),
            ..ProviderEvent::new("stdwebhooks", event_id, format!("payment.{status}"))
        }),
    )
}

/// The provider's first event of `payment`: `pending`, sequence 1, now, delivered
/// as `<payment>_p`.
pub fn first_pending(tenant: &TenantId, payment: &str) -> anyhow::Result<InboundFact> {
    event(
        tenant,
        payment,
        &format!("{payment}_p"),
        Status::Pending,
        Some(1),
        Utc::now(),
        None,
    )
}

/// Every transition of `payment` in PAYTRACK_STATUS, oldest first.
pub async fn chain(js: &jetstream::Context, tenant: &TenantId, payment: &str) -> anyhow::Result<Vec<Transition>> {
    let filter = subjects::status_of_payment(tenant, &PaymentId::new(payment)?);
    let stream = js.get_stream(subjects::STREAM_STATUS).await?;
    let last = match stream.get_last_raw_message_by_subject(&filter).await {
        Ok(m) => m.sequence,
        Err(_) => return Ok(Vec::new()),
    };
    let ordered = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: filter,
            ..Default::default()
        })
        .await?;
    let mut messages = ordered.messages().await?;
    let mut out = Vec::new();
    while let Some(message) = tokio::time::timeout(Duration::from_secs(60), messages.next())
        .await?
        .transpose()?
    {
        let seq = message.info().map_err(|e| anyhow::anyhow!("{e}"))?.stream_sequence;
        out.push(envelope::decode(&message.payload)?);
        if seq >= last {
            break;
        }
    }
    Ok(out)
}
