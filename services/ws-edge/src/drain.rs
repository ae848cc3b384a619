//! Leaving without dropping a client: the edge's drain when it stops.
//!
//! On SIGTERM (in Kubernetes, after the preStop wait that takes the pod out of the
//! Service) the edge stops accepting and closes every WebSocket session with 1012
//! (restarting): the client reconnects, through the Service, to another edge and
//! resumes from its last position. A session then waits for its client to answer
//! the close or hang up, so the process does not exit under a client that has not
//! read its 1012 yet. The drain is bounded by `edge_drain_timeout_ms`, counted from
//! the first session that starts draining: clients get three quarters of it, the
//! sessions' close audits the rest, which keeps the whole drain inside the
//! orchestrator's grace period.

use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::ws::Message;
use futures::{Stream, StreamExt};
use tokio::time::Instant;

/// The drain's bound, shared by every session of the edge.
#[derive(Debug)]
pub struct Drain {
    timeout: Duration,
    started: OnceLock<Instant>,
}

/// How a draining session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Departure {
    /// The client answered the close or hung up.
    Left,
    /// The drain's bound passed first; the socket is dropped under the client.
    TimedOut,
}

impl Drain {
    /// A drain that waits at most `timeout` for clients to leave.
    pub fn new(timeout: Duration) -> Drain {
        Drain {
            timeout,
            started: OnceLock::new(),
        }
    }

    /// When the whole drain ends, close audits included; the first call starts it.
    pub fn deadline(&self) -> Instant {
        *self.started.get_or_init(Instant::now) + self.timeout
    }

    /// When sessions stop waiting for their clients: three quarters into the drain,
    /// so the last quarter is left for their close audits.
    pub fn departure_deadline(&self) -> Instant {
        *self.started.get_or_init(Instant::now) + self.timeout * 3 / 4
    }

    /// Waits, until [`Drain::departure_deadline`], for the client behind `incoming`
    /// to answer the close frame it was sent or to hang up. Anything else it sends is
    /// ignored.
    pub async fn await_departure<S>(&self, incoming: &mut S) -> Departure
    where
        S: Stream<Item = Result<Message, axum::Error>> + Unpin,
    {
        let left = async {
            while let Some(Ok(message)) = incoming.next().await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
            }
        };
        match tokio::time::timeout_at(self.departure_deadline(), left).await {
            Ok(()) => Departure::Left,
            Err(_) => Departure::TimedOut,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_client_that_answers_leaves_and_a_silent_one_is_dropped_at_the_deadline() {
        let drain = Drain::new(Duration::from_secs(20));
        let mut answering = futures::stream::iter(vec![Ok(Message::Text("late".into())), Ok(Message::Close(None))]);
        assert_eq!(drain.await_departure(&mut answering).await, Departure::Left);
        let mut hung_up = futures::stream::empty();
        assert_eq!(drain.await_departure(&mut hung_up).await, Departure::Left);

        let start = Instant::now();
        let mut silent = futures::stream::pending();
        assert_eq!(drain.await_departure(&mut silent).await, Departure::TimedOut);
        assert_eq!(
            Instant::now(),
            start + Duration::from_secs(15),
            "a quarter is left for the audits"
        );
        assert_eq!(drain.deadline(), start + Duration::from_secs(20));
    }
}
