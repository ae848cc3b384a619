//! Handling a consumer's messages concurrently while keeping each subject's order.
//!
//! A consumer that handles one message at a time spends most of its time waiting
//! on round trips (reading a payment's history, appending, acknowledging). Lanes
//! let it wait on many payments at once: every message goes to the lane its
//! subject hashes to, each lane handles its messages one after another, and the
//! lanes run concurrently. Two messages of one subject (one payment) always share
//! a lane, so they are handled in the order the consumer delivered them, exactly
//! as with a single loop; messages of different payments overlap.

use std::hash::Hasher;
use std::num::NonZeroUsize;

use async_nats::jetstream::{self, consumer};
use futures::future::join_all;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Messages a lane may hold before the consumer loop waits for it: enough to keep
/// a lane busy, small enough that a slow lane holds back little.
const LANE_DEPTH: usize = 16;

/// The lane of `subject` among `lanes`: stable for a subject within a process, so
/// one payment's messages are never handled concurrently.
pub fn lane_of(subject: &str, lanes: NonZeroUsize) -> usize {
    // SipHash with fixed keys: the same subject always maps to the same lane, and
    // the spread over lanes does not depend on the subject's shape.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    hasher.write(subject.as_bytes());
    (hasher.finish() % lanes.get() as u64) as usize
}

/// [`crate::consume`] with `lanes` concurrent handlers, each message handed to the
/// lane of its subject. On shutdown the loop stops pulling and every message
/// already handed to a lane is finished first; a message never handled (the
/// process died, or its handler panicked) is redelivered by JetStream after the
/// consumer's ack wait.
pub async fn consume_in_lanes<F, Fut>(
    consumer: consumer::PullConsumer,
    shutdown: CancellationToken,
    lanes: NonZeroUsize,
    handle: F,
) where
    F: Fn(jetstream::Message) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..lanes.get())
        .map(|_| mpsc::channel::<jetstream::Message>(LANE_DEPTH))
        .unzip();
    let dispatch = async move {
        let senders = &senders;
        crate::consume(consumer, shutdown, |message| async move {
            let lane = lane_of(&message.subject, lanes);
            // A lane ends only after every sender is gone, so this cannot fail
            // while the dispatcher runs.
            let _ = senders[lane].send(message).await;
        })
        .await;
        // `senders` is dropped here: each lane finishes what it holds, then ends.
    };
    let handle = &handle;
    let workers = join_all(receivers.into_iter().map(|mut lane| async move {
        while let Some(message) = lane.recv().await {
            // A lane serves many payments: a panic on one message must not end it.
            if let Err(panicked) = crate::consume::catch_panic(async { handle(message).await }).await {
                tracing::error!(error = %panicked, "a message handler panicked; the lane goes on");
            }
        }
    }));
    tokio::join!(dispatch, workers);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_subject_always_takes_the_same_lane() {
        let lanes = NonZeroUsize::new(32).expect("non-zero");
        for p in 0..100 {
            let subject = format!("paytrack.in.t_a.pay_{p}");
            let first = lane_of(&subject, lanes);
            assert!(first < 32);
            assert_eq!(lane_of(&subject, lanes), first);
        }
    }

    #[test]
    fn subjects_spread_over_the_lanes() {
        let lanes = NonZeroUsize::new(8).expect("non-zero");
        let mut used = [0usize; 8];
        for p in 0..800 {
            used[lane_of(&format!("paytrack.in.t_a.pay_{p}"), lanes)] += 1;
        }
        // Every lane gets work, none gets most of it.
        assert!(used.iter().all(|n| *n > 40 && *n < 200), "{used:?}");
    }

    #[test]
    fn one_lane_takes_everything() {
        let one = NonZeroUsize::new(1).expect("non-zero");
        assert_eq!(lane_of("paytrack.in.a.b", one), 0);
        assert_eq!(lane_of("paytrack.in.c.d", one), 0);
    }
}
