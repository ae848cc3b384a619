//! Every WebSocket session's heartbeat on one timer, and the edge's list of its open
//! WebSocket sessions (closed with 1012 when the edge shuts down).
//!
//! A session holds no timer of its own: the wheel's period (the heartbeat interval) is
//! cut into slots, a session joins the slot the wheel has just passed (so its first
//! heartbeat comes about one interval after it opened), and one task, ticking once per
//! slot, marks every session of the next slot due and wakes it (`SendQueue::heartbeat_due`).
//! The session then does its heartbeat itself (silence check, currency, positions
//! under the hub's lock), as it did with a timer of its own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::protocol::close;
use crate::send_queue::SendQueue;

/// The shortest time between two slots: a short interval (tests) gets fewer slots.
const SLOT_AT_LEAST: Duration = Duration::from_millis(10);

/// Slots of the wheel at most: sessions that opened within one slot share their tick.
const MAX_SLOTS: usize = 64;

/// A session's place on the wheel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WheelKey {
    slot: usize,
    id: u64,
}

/// The heartbeat wheel of an edge.
pub struct Heartbeats {
    period: Duration,
    slots: Box<[Mutex<Slot>]>,
    /// The slot the wheel ticked last.
    cursor: AtomicUsize,
    next_id: AtomicU64,
}

/// One slot's sessions; `stopped` once the edge shut down (a session joining then is
/// closed at once).
#[derive(Default)]
struct Slot {
    sessions: HashMap<u64, Weak<SendQueue>>,
    stopped: bool,
}

impl Heartbeats {
    /// A wheel ticking each session every `period`.
    pub fn new(period: Duration) -> Heartbeats {
        let period = period.max(Duration::from_millis(1));
        let slots = (period.as_nanos() / SLOT_AT_LEAST.as_nanos()).clamp(1, MAX_SLOTS as u128) as usize;
        Heartbeats {
            period,
            slots: (0..slots).map(|_| Mutex::new(Slot::default())).collect(),
            cursor: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
        }
    }

    fn lock(&self, slot: usize) -> MutexGuard<'_, Slot> {
        // Every change is a single insert or remove: a poisoned slot is still consistent.
        self.slots[slot].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a session: its heartbeat is due about one period from now, and every
    /// period after. A session joining an edge that shut down is closed with 1012.
    pub fn join(&self, out: &Arc<SendQueue>) -> WheelKey {
        let slot = self.cursor.load(Ordering::Acquire);
        let key = WheelKey {
            slot,
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
        };
        let mut guard = self.lock(slot);
        if guard.stopped {
            drop(guard);
            out.close(close::RESTARTING, "edge restarting");
        } else {
            guard.sessions.insert(key.id, Arc::downgrade(out));
        }
        key
    }

    /// Removes a session (it closed).
    pub fn leave(&self, key: WheelKey) {
        let mut guard = self.lock(key.slot);
        guard.sessions.remove(&key.id);
        if guard.sessions.is_empty() && guard.sessions.capacity() > 0 {
            guard.sessions = HashMap::new();
        }
    }

    /// Ticks one slot after another until `shutdown`, then closes every session with
    /// 1012 (restarting).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let every = self.period / self.slots.len() as u32;
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let mut due = Vec::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticker.tick() => {}
            }
            let slot = (self.cursor.load(Ordering::Acquire) + 1) % self.slots.len();
            {
                // The cursor moves under the slot's lock: a session joining this slot
                // now is added after its sessions are taken, so it is due a period
                // later, not at once.
                let guard = self.lock(slot);
                self.cursor.store(slot, Ordering::Release);
                due.extend(guard.sessions.values().filter_map(Weak::upgrade));
            }
            for out in due.drain(..) {
                out.heartbeat_due();
            }
        }
        for slot in 0..self.slots.len() {
            let sessions = {
                let mut guard = self.lock(slot);
                guard.stopped = true;
                std::mem::take(&mut guard.sessions)
            };
            for out in sessions.values().filter_map(Weak::upgrade) {
                out.close(close::RESTARTING, "edge restarting");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::send_queue::Next;

    #[tokio::test(start_paused = true)]
    async fn each_session_is_due_once_per_period_until_it_leaves() {
        let wheel = Arc::new(Heartbeats::new(Duration::from_millis(400)));
        let shutdown = CancellationToken::new();
        tokio::spawn(wheel.clone().run(shutdown.clone()));
        let (out, mut rx) = SendQueue::new(8, 1024);
        let key = wheel.join(&out);
        let (gone, mut gone_rx) = SendQueue::new(8, 1024);
        let gone_key = wheel.join(&gone);
        wheel.leave(gone_key);
        let start = tokio::time::Instant::now();
        for n in 1..=3u32 {
            assert_eq!(rx.next().await, Next::Heartbeat);
            let at = start.elapsed();
            let period = Duration::from_millis(400);
            assert!(
                at <= period * n && at + period / 8 >= period * n,
                "heartbeat {n} at {at:?}"
            );
        }
        wheel.leave(key);
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        assert!(
            tokio::time::timeout(Duration::ZERO, gone_rx.next()).await.is_err(),
            "a session that left is never due"
        );
        assert!(
            tokio::time::timeout(Duration::ZERO, rx.next()).await.is_err(),
            "nor after it left"
        );
        shutdown.cancel();
    }

    #[tokio::test]
    async fn the_edge_shutting_down_closes_every_session_as_a_restart() {
        let wheel = Arc::new(Heartbeats::new(Duration::from_secs(60)));
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(wheel.clone().run(shutdown.clone()));
        let (quiet, _rx1) = SendQueue::new(10, 1_000);
        let (slow, _rx2) = SendQueue::new(10, 1_000);
        wheel.join(&quiet);
        wheel.join(&slow);
        slow.close(close::TOO_SLOW, "client too slow");
        assert!(!quiet.is_closed());
        shutdown.cancel();
        running.await.expect("the wheel stops");
        assert!(quiet.is_closed());
        assert_eq!(quiet.close_reason().0, close::RESTARTING);
        assert_eq!(slow.close_reason().0, close::TOO_SLOW, "its own reason stands");
        assert!(!quiet.push("late".into()), "nothing is queued after the close");
        // A session whose upgrade finished after the shutdown is closed at once.
        let (late, _rx3) = SendQueue::new(10, 1_000);
        wheel.join(&late);
        assert_eq!(late.close_reason().0, close::RESTARTING);
    }
}
