//! Token expiry for every WebSocket session of the edge on one timer: each session's
//! `exp` is a deadline in one ordered map, and one task closes a session with 4001
//! when its deadline passes (a session holds no timer of its own for it).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::protocol::close;
use crate::send_queue::SendQueue;

/// A session's place in [`Expiries`]: its deadline and a number unique to it.
pub type ExpiryKey = (Instant, u64);

/// The deadlines of every session's token.
#[derive(Default)]
pub struct Expiries {
    deadlines: Mutex<BTreeMap<ExpiryKey, Weak<SendQueue>>>,
    /// Woken when a deadline earlier than every other is added.
    earlier: Notify,
    next: AtomicU64,
}

impl Expiries {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<ExpiryKey, Weak<SendQueue>>> {
        // Every change is a single insert or remove: a poisoned map is still consistent.
        self.deadlines.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Closes `out`'s session with 4001 at `at`, unless unwatched first.
    pub fn watch(&self, at: Instant, out: &Arc<SendQueue>) -> ExpiryKey {
        let key = (at, self.next.fetch_add(1, Ordering::Relaxed));
        let earliest = {
            let mut deadlines = self.lock();
            deadlines.insert(key, Arc::downgrade(out));
            deadlines.first_key_value().is_some_and(|(first, _)| *first == key)
        };
        if earliest {
            self.earlier.notify_one();
        }
        key
    }

    /// Moves a session's deadline (a refreshed token).
    pub fn rewatch(&self, key: ExpiryKey, at: Instant, out: &Arc<SendQueue>) -> ExpiryKey {
        self.unwatch(key);
        self.watch(at, out)
    }

    /// Forgets a session's deadline (it closed).
    pub fn unwatch(&self, key: ExpiryKey) {
        self.lock().remove(&key);
    }

    /// Closes sessions whose deadline passed, until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let now = Instant::now();
            let next = {
                let mut deadlines = self.lock();
                while let Some(entry) = deadlines.first_entry() {
                    if entry.key().0 > now {
                        break;
                    }
                    if let Some(out) = entry.remove().upgrade() {
                        out.close(close::UNAUTHORIZED, "token expired");
                    }
                }
                deadlines.first_key_value().map(|(key, _)| key.0)
            };
            let earlier = self.earlier.notified();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = earlier => {}
                _ = async {
                    match next {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_session_is_closed_at_its_deadline_and_a_refresh_moves_it() {
        let expiries = Arc::new(Expiries::default());
        let shutdown = CancellationToken::new();
        tokio::spawn(expiries.clone().run(shutdown.clone()));
        let (early, _early_rx) = SendQueue::new(8, 1024);
        let (late, _late_rx) = SendQueue::new(8, 1024);
        let start = Instant::now();
        let ms = Duration::from_millis;
        let key = expiries.watch(start + ms(300), &late);
        expiries.watch(start + ms(150), &early);
        // A refresh moves the late one further out.
        expiries.rewatch(key, start + ms(600), &late);
        tokio::time::sleep_until(start + ms(250)).await;
        assert_eq!(early.close_reason().0, close::UNAUTHORIZED);
        tokio::time::sleep_until(start + ms(450)).await;
        assert!(!late.is_closed());
        tokio::time::sleep_until(start + ms(750)).await;
        assert_eq!(late.close_reason().0, close::UNAUTHORIZED);
        shutdown.cancel();
    }
}
