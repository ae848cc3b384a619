//! A session's outbound side: a queue of encoded frames bounded in messages and in
//! bytes, shared by the router (which writes the same encoded event into every session
//! of a channel) and the session (its own replies). A full queue closes the session with
//! 4008 instead of growing memory or dropping events.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::protocol::{ServerMessage, close};

/// How a session ends: the first close reason wins.
#[derive(Default)]
pub struct Closer {
    /// Cancelled once the session must close.
    pub token: CancellationToken,
    reason: Mutex<Option<(u16, String)>>,
    /// The edge's shutdown, the parent of `token`: a session it closed without a
    /// reason of its own was closed by a restart.
    shutdown: CancellationToken,
}

impl Closer {
    /// A closer whose token is a child of `parent`: cancelling the parent (the edge
    /// shutting down) closes the session too. Each session then waits on its own
    /// token alone, instead of every session polling the edge's one shared token (a
    /// mutex every session took on every wake-up).
    pub fn under(parent: &CancellationToken) -> Closer {
        Closer {
            token: parent.child_token(),
            reason: Mutex::new(None),
            shutdown: parent.clone(),
        }
    }

    /// Closes with `code` unless a reason was set already.
    pub fn close(&self, code: u16, reason: &str) {
        if let Ok(mut slot) = self.reason.lock() {
            slot.get_or_insert_with(|| (code, reason.to_owned()));
        }
        self.token.cancel();
    }

    /// The close code and reason (1012 when the edge's shutdown closed it, else 1000
    /// when none was set).
    pub fn reason(&self) -> (u16, String) {
        self.reason.lock().ok().and_then(|r| r.clone()).unwrap_or_else(|| {
            if self.shutdown.is_cancelled() {
                (close::RESTARTING, "edge restarting".to_owned())
            } else {
                (1000, "closed".to_owned())
            }
        })
    }
}

/// The bounded queue of one session's outgoing text frames. The queue holds memory only
/// while it holds frames: an idle session's is empty and unallocated (a channel would
/// preallocate a block of slots per session).
pub struct Outbox {
    queue: Mutex<VecDeque<Utf8Bytes>>,
    /// Wakes the writer when a frame is queued (a permit is kept if it is not waiting).
    ready: Notify,
    queued_bytes: AtomicUsize,
    queued_messages: AtomicUsize,
    /// Bytes queued by every session of the edge, this one included: what the edge
    /// holds for clients that have not read yet (`paytrack_edge_queued_bytes`).
    edge_total: Arc<AtomicUsize>,
    max_bytes: usize,
    max_messages: usize,
    /// How the session ends.
    pub closer: Closer,
}

/// The receiving end, read by the session's writer.
pub struct Outgoing {
    outbox: Arc<Outbox>,
}

impl Outbox {
    /// A queue holding at most `max_messages` frames and `max_bytes` bytes.
    #[cfg(test)]
    pub fn new(max_messages: usize, max_bytes: usize) -> (Arc<Outbox>, Outgoing) {
        Self::counted(max_messages, max_bytes, Arc::default(), &CancellationToken::new())
    }

    /// [`Outbox::new`], adding what it queues to the edge's `edge_total`, closed when
    /// `shutdown` is cancelled (see [`Closer::under`]).
    pub fn counted(
        max_messages: usize,
        max_bytes: usize,
        edge_total: Arc<AtomicUsize>,
        shutdown: &CancellationToken,
    ) -> (Arc<Outbox>, Outgoing) {
        let outbox = Arc::new(Outbox {
            queue: Mutex::new(VecDeque::new()),
            ready: Notify::new(),
            queued_bytes: AtomicUsize::new(0),
            queued_messages: AtomicUsize::new(0),
            edge_total,
            max_bytes: max_bytes.max(1),
            max_messages: max_messages.max(1),
            closer: Closer::under(shutdown),
        });
        let outgoing = Outgoing { outbox: outbox.clone() };
        (outbox, outgoing)
    }

    /// Queues an encoded frame; a full queue means the client is too slow: the session
    /// is closed with 4008 and false is returned (nothing is silently dropped from a
    /// session that stays open).
    pub fn push(&self, frame: Utf8Bytes) -> bool {
        if self.closer.token.is_cancelled() {
            return false;
        }
        let len = frame.len();
        let bytes = self.queued_bytes.fetch_add(len, Ordering::AcqRel) + len;
        self.edge_total.fetch_add(len, Ordering::AcqRel);
        let messages = self.queued_messages.fetch_add(1, Ordering::AcqRel) + 1;
        if bytes > self.max_bytes || messages > self.max_messages {
            self.closer.close(close::TOO_SLOW, "client too slow: queue overflowed");
            return false;
        }
        match self.queue.lock() {
            Ok(mut queue) => queue.push_back(frame),
            Err(_) => return false,
        }
        self.ready.notify_one();
        true
    }

    /// The oldest queued frame; an emptied queue gives its memory back.
    fn pop(&self) -> Option<Utf8Bytes> {
        let mut queue = self.queue.lock().ok()?;
        let frame = queue.pop_front();
        if queue.is_empty() && queue.capacity() > 0 {
            *queue = VecDeque::new();
        }
        frame
    }

    /// Encodes and queues a message of the session itself.
    pub fn send(&self, message: &ServerMessage) -> bool {
        match serde_json::to_string(message) {
            Ok(text) => self.push(text.into()),
            Err(error) => {
                tracing::error!(%error, "server message not encodable");
                false
            }
        }
    }

    /// Bytes queued now.
    #[cfg(test)]
    fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::Acquire)
    }

    fn written(&self, len: usize) {
        self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
        self.edge_total.fetch_sub(len, Ordering::AcqRel);
        self.queued_messages.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for Outbox {
    /// What was never written is freed with the session: take it off the edge's total.
    fn drop(&mut self) {
        let left = self.queued_bytes.load(Ordering::Acquire);
        self.edge_total.fetch_sub(left, Ordering::AcqRel);
    }
}

impl Outgoing {
    /// The next frame to write, waiting for one; call [`Outgoing::written`] once it is
    /// on the socket. Cancel-safe: a frame is taken only when it is returned.
    pub async fn recv(&mut self) -> Utf8Bytes {
        loop {
            let queued = self.outbox.ready.notified();
            if let Some(frame) = self.outbox.pop() {
                return frame;
            }
            queued.await;
        }
    }

    /// Releases a written frame's share of the bound.
    pub fn written(&self, outbox: &Outbox, len: usize) {
        outbox.written(len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_edge_shutting_down_closes_every_session_as_a_restart() {
        let shutdown = CancellationToken::new();
        let (quiet, _rx1) = Outbox::counted(10, 1_000, Arc::default(), &shutdown);
        let (slow, _rx2) = Outbox::counted(10, 1_000, Arc::default(), &shutdown);
        slow.closer.close(close::TOO_SLOW, "client too slow");
        assert!(!quiet.closer.token.is_cancelled());
        shutdown.cancel();
        assert!(quiet.closer.token.is_cancelled(), "a child of the shutdown");
        assert_eq!(quiet.closer.reason().0, close::RESTARTING);
        assert_eq!(slow.closer.reason().0, close::TOO_SLOW, "its own reason stands");
        assert!(!quiet.push("late".into()), "nothing is queued after the close");
    }

    #[test]
    fn the_edge_total_returns_to_zero_when_a_session_goes() {
        let total = Arc::new(AtomicUsize::new(0));
        let (outbox, rx) = Outbox::counted(100, 1_000, total.clone(), &CancellationToken::new());
        assert!(outbox.push("12345".into()));
        assert!(outbox.push("123".into()));
        outbox.written(3);
        assert_eq!(total.load(Ordering::Acquire), 5);
        drop((outbox, rx));
        assert_eq!(total.load(Ordering::Acquire), 0);
    }

    #[test]
    fn a_full_queue_closes_the_session_with_4008_instead_of_dropping_events() {
        let (outbox, _rx) = Outbox::new(100, 10);
        assert!(outbox.push("12345".into()));
        assert!(!outbox.push("123456".into()));
        assert!(outbox.closer.token.is_cancelled());
        assert_eq!(outbox.closer.reason().0, close::TOO_SLOW);
        // Once closed nothing more is queued.
        assert!(!outbox.push("1".into()));
    }

    #[tokio::test]
    async fn written_frames_release_their_bytes() {
        let (outbox, mut rx) = Outbox::new(2, 100);
        assert!(outbox.push("abc".into()));
        assert!(outbox.push("de".into()));
        assert_eq!(outbox.queued_bytes(), 5);
        let frame = rx.recv().await;
        rx.written(&outbox, frame.len());
        assert_eq!(outbox.queued_bytes(), 2);
        assert!(outbox.push("f".into()));
        assert!(!outbox.closer.token.is_cancelled());
    }
}
