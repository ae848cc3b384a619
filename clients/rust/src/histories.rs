//! Reading payment histories: an ordered consumer on the status mirror, filtered on
//! the reader's scope, opened at the cursor's position and re-opened there after any
//! interruption (a dropped connection, a restarted server, a deleted consumer).
//!
//! The consumer is created with a random name, so the server sees the create that
//! names its filter (`$JS.API.CONSUMER.CREATE.<mirror>.<name>.<filter>`): the only
//! one a tenant reader may send. The name is unguessable, which keeps other readers
//! from pulling from it.

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use paytrack_contract::envelope::{self, Transition};
use paytrack_contract::readers;

use crate::connect::Scope;
use crate::cursor::{Cursor, Gap, Verdict};

/// One transition read, with where it is in the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The stream position (the source's sequence: the mirror keeps it).
    pub position: u64,
    /// The transition.
    pub transition: Transition,
}

/// Why [`PaymentHistories::next`] returned no entry. After any of them, calling
/// `next` again goes on from the cursor.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The first connection failed (a wrong password, an unreachable server).
    #[error("cannot connect to NATS: {0}")]
    Connect(String),
    /// Versions of a payment were never read; the cursor is past them now. Reload the
    /// payment (REST) if its whole history matters.
    #[error("gap in a payment's history: {0}")]
    Gap(Gap),
    /// A message in scope is not a transition this client understands; the cursor is
    /// past it.
    #[error("position {position} is not a readable transition: {reason}")]
    Unreadable {
        /// Where it is.
        position: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading stopped (connection lost, consumer gone, permission refused); the next
    /// call re-opens reading at the cursor.
    #[error("reading interrupted: {0}")]
    Interrupted(String),
}

type Messages = consumer::pull::Ordered;

/// A reader of payment histories in one scope, resuming from a [`Cursor`].
pub struct PaymentHistories {
    js: jetstream::Context,
    scope: Scope,
    cursor: Cursor,
    messages: Option<Messages>,
}

impl PaymentHistories {
    /// Reads `scope`'s transitions after `cursor` on `client` (connected as a reader
    /// of that scope, see [`crate::connect`]).
    pub fn new(client: async_nats::Client, scope: Scope, cursor: Cursor) -> PaymentHistories {
        PaymentHistories {
            js: jetstream::new(client),
            scope,
            cursor,
            messages: None,
        }
    }

    /// Where reading is: save it to resume later with [`PaymentHistories::new`].
    pub fn cursor(&self) -> &Cursor {
        &self.cursor
    }

    /// The next transition in scope not read yet. Waits for one when the reader is
    /// caught up. Duplicates (a re-delivery after a re-open) are skipped; a gap is
    /// returned as [`ReadError::Gap`] once, and reading goes on after it.
    pub async fn next(&mut self) -> Result<Entry, ReadError> {
        loop {
            let messages = match self.messages.as_mut() {
                Some(messages) => messages,
                None => self.messages.insert(self.open().await?),
            };
            let message = match messages.next().await {
                Some(Ok(message)) => message,
                Some(Err(error)) => return Err(self.interrupted(error.to_string())),
                None => return Err(self.interrupted("the consumer's messages ended".to_owned())),
            };
            let position = match message.info() {
                Ok(info) => info.stream_sequence,
                Err(error) => return Err(self.interrupted(format!("a message without its position: {error}"))),
            };
            let transition: Transition = match envelope::decode(&message.payload) {
                Ok(transition) => transition,
                Err(error) => {
                    if self.cursor.pass(position) {
                        return Err(ReadError::Unreadable {
                            position,
                            reason: error.to_string(),
                        });
                    }
                    continue;
                }
            };
            match self
                .cursor
                .judge(position, &transition.tenant, &transition.payment_id, transition.version)
            {
                Verdict::Next => return Ok(Entry { position, transition }),
                Verdict::Duplicate => {
                    tracing::debug!(
                        position,
                        tenant = %transition.tenant,
                        payment_id = %transition.payment_id,
                        version = transition.version,
                        "skipped a transition already read"
                    );
                }
                Verdict::Gap(gap) => {
                    tracing::warn!(
                        position,
                        tenant = %gap.tenant,
                        payment_id = %gap.payment,
                        expected = gap.expected,
                        got = gap.got,
                        trace_id = %transition.trace_id,
                        "gap in a payment's history"
                    );
                    return Err(ReadError::Gap(gap));
                }
            }
        }
    }

    /// Drops the consumer's stream, so the next call re-opens at the cursor.
    fn interrupted(&mut self, why: String) -> ReadError {
        tracing::warn!(position = self.cursor.position(), error = %why, "reading interrupted");
        self.messages = None;
        ReadError::Interrupted(why)
    }

    /// An ordered consumer on the status mirror after the cursor's position.
    async fn open(&self) -> Result<Messages, ReadError> {
        let deliver_policy = match self.cursor.position() {
            0 => consumer::DeliverPolicy::All,
            position => consumer::DeliverPolicy::ByStartSequence {
                start_sequence: position + 1,
            },
        };
        let config = consumer::pull::OrderedConfig {
            name: Some(format!("histories-{}", uuid::Uuid::new_v4().simple())),
            filter_subject: self.scope.transitions_filter(),
            deliver_policy,
            ..Default::default()
        };
        let interrupted = |error: String| ReadError::Interrupted(error);
        // No stream info: a tenant reader may not read it (it lists every subject).
        let mirror = self
            .js
            .get_stream_no_info(readers::STATUS_MIRROR)
            .await
            .map_err(|e| interrupted(e.to_string()))?;
        let consumer = mirror
            .create_consumer(config)
            .await
            .map_err(|e| interrupted(format!("cannot create a consumer on {}: {e}", readers::STATUS_MIRROR)))?;
        consumer.messages().await.map_err(|e| interrupted(e.to_string()))
    }
}
