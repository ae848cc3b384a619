//! Recording inbound facts in PAYTRACK_IN, with the answer a webhook sender needs:
//! stored (or already stored), or "try again".

use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind, message::PublishMessage};
use paytrack_shared::envelope::{self, InboundFact};
use paytrack_shared::telemetry;
use paytrack_shared::{msg_id, subjects};

use crate::error::ApiError;

/// Where a fact landed.
#[derive(Debug, Clone, Copy)]
pub struct Stored {
    /// Its sequence in PAYTRACK_IN.
    pub seq: u64,
    /// True when JetStream had it already (same `Nats-Msg-Id` inside the window).
    pub duplicate: bool,
}

/// Publishes facts and waits for JetStream's acknowledgement.
#[derive(Clone)]
pub struct FactPublisher {
    client: async_nats::Client,
    js: jetstream::Context,
    ack_timeout: Duration,
}

impl FactPublisher {
    /// A publisher whose acks time out after `ack_timeout`.
    pub fn new(client: async_nats::Client, ack_timeout: Duration) -> FactPublisher {
        let js = jetstream::ContextBuilder::new()
            .timeout(ack_timeout)
            .build(client.clone());
        FactPublisher {
            client,
            js,
            ack_timeout,
        }
    }

    /// The NATS client (for readiness).
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The JetStream context (for applying the layout).
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// Stores `fact`; `Nats-Msg-Id` = `<tenant>:<fact_id>`, so retries de-duplicate
    /// and another tenant's fact with the same id does not.
    /// Answers [`ApiError::Unavailable`] unless JetStream acknowledged it.
    pub async fn store(&self, fact: &InboundFact) -> Result<Stored, ApiError> {
        let mut headers = async_nats::HeaderMap::new();
        telemetry::inject_nats(&tracing::Span::current(), &mut headers);
        let subject = subjects::inbound(&fact.tenant, &fact.payment_id);
        self.publish(
            subject,
            headers,
            msg_id::fact(&fact.tenant, &fact.fact_id),
            envelope::encode(fact),
        )
        .await
    }

    /// Publishes `payload` on `subject` with `Nats-Msg-Id` = `message_id` and waits
    /// for JetStream's ack; [`ApiError::Unavailable`] unless it came.
    pub async fn publish(
        &self,
        subject: String,
        headers: async_nats::HeaderMap,
        message_id: String,
        payload: bytes::Bytes,
    ) -> Result<Stored, ApiError> {
        if self.client.connection_state() != async_nats::connection::State::Connected {
            tracing::warn!("nats is disconnected; refusing the message so the sender retries");
            return Err(ApiError::Unavailable);
        }
        let message = PublishMessage::build()
            .headers(headers)
            .message_id(message_id)
            .payload(payload);
        let ack = async {
            let future = self.js.send_publish(subject, message).await?;
            future.await
        };
        match tokio::time::timeout(self.ack_timeout, ack).await {
            Ok(Ok(ack)) => Ok(Stored {
                seq: ack.sequence,
                duplicate: ack.duplicate,
            }),
            Ok(Err(error)) => {
                let kind = error.kind();
                tracing::warn!(%error, ?kind, "jetstream did not take the message");
                Err(match kind {
                    PublishErrorKind::MaxPayloadExceeded => ApiError::TooLarge(self.client.server_info().max_payload),
                    _ => ApiError::Unavailable,
                })
            }
            Err(_) => {
                tracing::warn!("jetstream ack timed out");
                Err(ApiError::Unavailable)
            }
        }
    }
}
