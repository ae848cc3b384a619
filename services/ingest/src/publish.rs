//! Recording inbound facts in PAYTRACK_IN, with the answer a webhook sender needs:
//! stored (or already stored), or "try again".

use std::sync::Arc;
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

/// Publishes facts and waits for JetStream's acknowledgement. Cloned into every
/// request's handler state, so a clone shares one connection handle ([`Handles`])
/// instead of copying the client's channels (each copy allocates and is freed again).
#[derive(Clone)]
pub struct FactPublisher {
    handles: Arc<Handles>,
    ack_timeout: Duration,
}

/// The NATS client and its JetStream context, shared by every clone of a publisher.
struct Handles {
    client: async_nats::Client,
    js: jetstream::Context,
}

impl FactPublisher {
    /// A publisher whose acks time out after `ack_timeout`.
    pub fn new(client: async_nats::Client, ack_timeout: Duration) -> FactPublisher {
        let js = jetstream::ContextBuilder::new()
            .timeout(ack_timeout)
            .build(client.clone());
        FactPublisher {
            handles: Arc::new(Handles { client, js }),
            ack_timeout,
        }
    }

    /// The NATS client (for readiness).
    pub fn client(&self) -> &async_nats::Client {
        &self.handles.client
    }

    /// The JetStream context (for applying the layout).
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.handles.js
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
        if self.handles.client.connection_state() != async_nats::connection::State::Connected {
            tracing::warn!("nats is disconnected; refusing the message so the sender retries");
            return Err(ApiError::Unavailable);
        }
        let message = PublishMessage::build()
            .headers(headers)
            .message_id(message_id)
            .payload(payload);
        let ack = async {
            let future = self.handles.js.send_publish(subject, message).await?;
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
                    PublishErrorKind::MaxPayloadExceeded => {
                        ApiError::TooLarge(self.handles.client.server_info().max_payload)
                    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every request's handler state holds a clone of the publisher: a clone must share
    /// the connection handle, not copy the client (whose copy allocates per request).
    #[tokio::test]
    async fn clones_share_one_connection_handle() -> anyhow::Result<()> {
        // Nothing listens there: the client keeps trying in the background, which is
        // all a clone needs.
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect("127.0.0.1:1")
            .await?;
        let publisher = FactPublisher::new(client, Duration::from_secs(1));
        let clone = publisher.clone();
        assert!(std::ptr::eq(publisher.client(), clone.client()));
        assert!(std::ptr::eq(publisher.jetstream(), clone.jetstream()));
        Ok(())
    }
}
