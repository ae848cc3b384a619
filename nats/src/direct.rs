//! Batched direct reads (`$JS.API.DIRECT.GET.<stream>` with `multi_last`): the newest
//! message of every subject under a few filters, in one request that a stream's
//! leader or any replica answers, with no consumer. A read of a handful of keys
//! thus costs one round trip and leaves nothing behind on the server, however many
//! readers ask at once.

use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;

/// Why a batched direct read failed.
#[derive(Debug, thiserror::Error)]
pub enum DirectReadError {
    /// The request could not be sent or its answers not received.
    #[error("direct read of {stream}: {source}")]
    Nats {
        /// The stream read.
        stream: String,
        /// What failed.
        #[source]
        source: async_nats::Error,
    },
    /// The server answered with an error status (a stream without direct gets, a
    /// filter matching more subjects than `batch`).
    #[error("direct read of {stream}: the server answered {status} {description}")]
    Refused {
        /// The stream read.
        stream: String,
        /// The status code.
        status: u16,
        /// The server's description.
        description: String,
    },
    /// No answer, or not every answer, came within the timeout.
    #[error("direct read of {stream}: no complete answer within {0:?}", .timeout)]
    Timeout {
        /// The stream read.
        stream: String,
        /// How long was waited.
        timeout: Duration,
    },
}

/// The request's body (ADR-31's batched get).
#[derive(Serialize)]
struct MultiLast<'a> {
    multi_last: &'a [String],
    batch: usize,
}

/// The end of a batch.
const END_OF_BATCH: u16 = 204;
/// No subject matched.
const NO_RESULTS: u16 = 404;

/// The newest message of every subject matching one of `filters` in `stream` (at
/// most `batch` of them), each with its `Nats-Subject` header, in one direct get.
/// Deleted keys of a bucket come back as their delete markers ([`last_per_key`] reads
/// their `KV-Operation` header).
pub(crate) async fn last_per_subject(
    client: &async_nats::Client,
    stream: &str,
    filters: &[String],
    batch: usize,
    timeout: Duration,
) -> Result<Vec<async_nats::Message>, DirectReadError> {
    let nats = |source: async_nats::Error| DirectReadError::Nats {
        stream: stream.to_owned(),
        source,
    };
    let body = serde_json::to_vec(&MultiLast {
        multi_last: filters,
        batch,
    })
    .map_err(|e| nats(e.into()))?;
    let inbox = client.new_inbox();
    let mut answers = client.subscribe(inbox.clone()).await.map_err(|e| nats(e.into()))?;
    client
        .publish_with_reply(format!("$JS.API.DIRECT.GET.{stream}"), inbox, body.into())
        .await
        .map_err(|e| nats(e.into()))?;
    let read = async {
        let mut messages = Vec::new();
        while let Some(message) = answers.next().await {
            match message.status.map(u16::from) {
                None | Some(200) => messages.push(message),
                Some(END_OF_BATCH) => return Ok(messages),
                Some(NO_RESULTS) => return Ok(Vec::new()),
                Some(status) => {
                    return Err(DirectReadError::Refused {
                        stream: stream.to_owned(),
                        status,
                        description: message.description.unwrap_or_default(),
                    });
                }
            }
        }
        Err(nats("the connection closed".into()))
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| DirectReadError::Timeout {
            stream: stream.to_owned(),
            timeout,
        })?
}

/// The newest entry of a KV bucket key, as [`last_per_key`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    /// The key (without the bucket's subject prefix).
    pub key: String,
    /// Its value; None for a deleted or purged key.
    pub value: Option<Vec<u8>>,
}

/// The newest entry of every key of KV `bucket` matching one of `key_filters`
/// (wildcards allowed; at most `batch` keys), in one batched direct get of the
/// bucket's stream: a read of a few keys that opens no watch and no consumer.
pub async fn last_per_key(
    client: &async_nats::Client,
    bucket: &str,
    key_filters: &[String],
    batch: usize,
    timeout: Duration,
) -> Result<Vec<KeyEntry>, DirectReadError> {
    let prefix = format!("$KV.{bucket}.");
    let filters: Vec<String> = key_filters.iter().map(|f| format!("{prefix}{f}")).collect();
    let newest = last_per_subject(client, &format!("KV_{bucket}"), &filters, batch, timeout).await?;
    Ok(newest
        .into_iter()
        .filter_map(|message| {
            let headers = message.headers.as_ref()?;
            let key = headers
                .get("Nats-Subject")?
                .as_str()
                .strip_prefix(prefix.as_str())?
                .to_owned();
            let removed = headers
                .get("KV-Operation")
                .is_some_and(|op| matches!(op.as_str(), "DEL" | "PURGE"));
            Some(KeyEntry {
                key,
                value: (!removed).then(|| message.payload.to_vec()),
            })
        })
        .collect())
}
