//! A session's send queue (unrelated to the projector's checkpoint outbox): a queue of
//! encoded frames bounded in messages and in bytes, shared by the router (which writes
//! the same encoded event into every session of a channel) and the session (its own
//! replies), and how the session ends. A full queue closes the session with 4008 instead
//! of growing memory or dropping events.
//!
//! Everything that wakes a WebSocket session's writer comes through one [`Notify`]
//! (`ready`): a frame queued, the close, a heartbeat due (set by the edge's heartbeat
//! wheel, `heartbeat.rs`). Whether the session is closed is one atomic flag, so the
//! router's [`SendQueue::push`], called for every session of a channel on every event,
//! takes no lock but the queue's own.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::Notify;

use crate::protocol::ServerMessage;
use crate::protocol::close;

/// The bounded queue of one session's outgoing text frames, and its close. The queue
/// holds memory only while it holds frames: an idle session's is empty and unallocated
/// (a channel would preallocate a block of slots per session).
pub struct SendQueue {
    queue: Mutex<VecDeque<Utf8Bytes>>,
    /// Wakes the writer: a frame queued (a permit is kept if it is not waiting), the
    /// session closed, or a heartbeat due.
    ready: Notify,
    /// Wakes every task waiting in [`SendQueue::closed`] (an SSE session's driver and its
    /// stream are two).
    closing: Notify,
    /// Wakes a replay waiting in [`SendQueue::drained`]: frames written, or the close.
    taken: Notify,
    /// Set once the session must close: nothing more is queued.
    closed: AtomicBool,
    /// Set by the heartbeat wheel when the session's heartbeat is due.
    heartbeat_due: AtomicBool,
    /// The first close reason wins.
    reason: OnceLock<(u16, String)>,
    queued_bytes: AtomicUsize,
    queued_messages: AtomicUsize,
    /// Bytes queued by every session of the edge, this one included: what the edge
    /// holds for clients that have not read yet (`paytrack_edge_queued_bytes`).
    edge_total: Arc<AtomicUsize>,
    /// The bounds, as u32 (a session's queue bound is far below 4 GiB): the queue is
    /// allocated per session and this keeps it in a smaller allocation size.
    max_bytes: u32,
    max_messages: u32,
}

/// The receiving end, read by the session's writer.
pub struct Outgoing {
    queue: Arc<SendQueue>,
}

/// What woke a session's writer, in the order it must be handled.
#[derive(Debug, PartialEq)]
pub enum Next {
    /// The session is closed (see [`SendQueue::close_reason`]).
    Closed,
    /// Its heartbeat is due.
    Heartbeat,
    /// A frame to write; call [`Outgoing::written`] once it is on the socket.
    Frame(Utf8Bytes),
}

impl SendQueue {
    /// A queue holding at most `max_messages` frames and `max_bytes` bytes.
    #[cfg(test)]
    pub fn new(max_messages: usize, max_bytes: usize) -> (Arc<SendQueue>, Outgoing) {
        Self::counted(max_messages, max_bytes, Arc::default())
    }

    /// [`SendQueue::new`], adding what it queues to the edge's `edge_total`.
    pub fn counted(max_messages: usize, max_bytes: usize, edge_total: Arc<AtomicUsize>) -> (Arc<SendQueue>, Outgoing) {
        let queue = Arc::new(SendQueue {
            queue: Mutex::new(VecDeque::new()),
            ready: Notify::new(),
            closing: Notify::new(),
            taken: Notify::new(),
            closed: AtomicBool::new(false),
            heartbeat_due: AtomicBool::new(false),
            reason: OnceLock::new(),
            queued_bytes: AtomicUsize::new(0),
            queued_messages: AtomicUsize::new(0),
            edge_total,
            max_bytes: u32::try_from(max_bytes.max(1)).unwrap_or(u32::MAX),
            max_messages: u32::try_from(max_messages.max(1)).unwrap_or(u32::MAX),
        });
        let outgoing = Outgoing { queue: queue.clone() };
        (queue, outgoing)
    }

    /// Queues an encoded frame; a full queue means the client is too slow: the session
    /// is closed with 4008 and false is returned (nothing is silently dropped from a
    /// session that stays open). A closed session queues nothing.
    pub fn push(&self, frame: Utf8Bytes) -> bool {
        if self.is_closed() {
            return false;
        }
        let len = frame.len();
        let bytes = self.queued_bytes.fetch_add(len, Ordering::AcqRel) + len;
        self.edge_total.fetch_add(len, Ordering::AcqRel);
        let messages = self.queued_messages.fetch_add(1, Ordering::AcqRel) + 1;
        if bytes > self.max_bytes as usize || messages > self.max_messages as usize {
            self.close(close::TOO_SLOW, "client too slow: queue overflowed");
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

    /// Closes the session with `code` and `reason` unless a reason was set already,
    /// and wakes whatever waits for it.
    pub fn close(&self, code: u16, reason: &str) {
        self.reason.get_or_init(|| (code, reason.to_owned()));
        self.closed.store(true, Ordering::Release);
        self.ready.notify_one();
        self.closing.notify_waiters();
        self.taken.notify_waiters();
    }

    /// Whether the session is closed (one atomic load).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Completes once the session is closed.
    pub async fn closed(&self) {
        loop {
            // Created before the flag is read: a close in between still wakes it.
            let woken = self.closing.notified();
            if self.is_closed() {
                return;
            }
            woken.await;
        }
    }

    /// The close code and reason (1000 when the session was closed without one).
    pub fn close_reason(&self) -> (u16, String) {
        self.reason
            .get()
            .cloned()
            .unwrap_or_else(|| (1000, "closed".to_owned()))
    }

    /// Marks the session's heartbeat due and wakes its writer (the heartbeat wheel).
    pub fn heartbeat_due(&self) {
        self.heartbeat_due.store(true, Ordering::Release);
        self.ready.notify_one();
    }

    /// Whether at most half the queue's bound (in frames and in bytes) is taken: room
    /// for a replay's next frame that leaves the other half to the live events and the
    /// session's own messages.
    fn half_free(&self) -> bool {
        self.queued_messages.load(Ordering::Acquire) * 2 <= self.max_messages as usize
            && self.queued_bytes.load(Ordering::Acquire) * 2 <= self.max_bytes as usize
    }

    /// Waits until the queue is at most half full, so that a replay is queued only as
    /// fast as the client takes it; false once the session is closed.
    pub async fn drained(&self) -> bool {
        loop {
            // Created before the state is read: a write or close in between still wakes it.
            let woken = self.taken.notified();
            if self.is_closed() {
                return false;
            }
            if self.half_free() {
                return true;
            }
            woken.await;
        }
    }

    /// Whether `frames` more frames of about `bytes` bytes fit in half of what the
    /// queue has free now (a replay handing its buffered live events over at once).
    pub fn fits(&self, frames: usize, bytes: usize) -> bool {
        let free_frames = (self.max_messages as usize).saturating_sub(self.queued_messages.load(Ordering::Acquire));
        let free_bytes = (self.max_bytes as usize).saturating_sub(self.queued_bytes.load(Ordering::Acquire));
        frames * 2 <= free_frames && bytes * 2 <= free_bytes
    }

    /// Bytes queued now.
    #[cfg(test)]
    fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::Acquire)
    }

    fn written_batch(&self, frames: usize, bytes: usize) {
        self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
        self.edge_total.fetch_sub(bytes, Ordering::AcqRel);
        self.queued_messages.fetch_sub(frames, Ordering::AcqRel);
        self.taken.notify_waiters();
    }
}

impl Drop for SendQueue {
    /// What was never written is freed with the session: take it off the edge's total.
    fn drop(&mut self) {
        let left = self.queued_bytes.load(Ordering::Acquire);
        self.edge_total.fetch_sub(left, Ordering::AcqRel);
    }
}

impl Outgoing {
    /// What the writer does next, waiting until there is something: the close first,
    /// then a due heartbeat, then the oldest frame. Cancel-safe: a frame or a
    /// heartbeat is taken only when it is returned.
    pub async fn next(&mut self) -> Next {
        loop {
            let woken = self.queue.ready.notified();
            if self.queue.is_closed() {
                return Next::Closed;
            }
            if self.queue.heartbeat_due.swap(false, Ordering::AcqRel) {
                return Next::Heartbeat;
            }
            if let Some(frame) = self.queue.pop() {
                return Next::Frame(frame);
            }
            woken.await;
        }
    }

    /// The next frame to write, or None once the session is closed (a transport
    /// without heartbeats from the wheel: SSE).
    pub async fn recv(&mut self) -> Option<Utf8Bytes> {
        loop {
            match self.next().await {
                Next::Closed => return None,
                Next::Heartbeat => continue,
                Next::Frame(frame) => return Some(frame),
            }
        }
    }

    /// The oldest queued frame if there is one and the session is open (a writer
    /// adding what is queued to the frame it writes).
    pub fn try_frame(&mut self) -> Option<Utf8Bytes> {
        if self.queue.is_closed() {
            return None;
        }
        self.queue.pop()
    }

    /// Releases a written frame's share of the bound.
    pub fn written(&self, queue: &SendQueue, len: usize) {
        queue.written_batch(1, len);
    }

    /// Releases the share of `frames` written frames of `bytes` bytes together.
    pub fn written_batch(&self, queue: &SendQueue, frames: usize, bytes: usize) {
        queue.written_batch(frames, bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_edge_total_returns_to_zero_when_a_session_goes() {
        let total = Arc::new(AtomicUsize::new(0));
        let (queue, rx) = SendQueue::counted(100, 1_000, total.clone());
        assert!(queue.push("12345".into()));
        assert!(queue.push("123".into()));
        queue.written_batch(1, 3);
        assert_eq!(total.load(Ordering::Acquire), 5);
        drop((queue, rx));
        assert_eq!(total.load(Ordering::Acquire), 0);
    }

    #[test]
    fn a_full_queue_closes_the_session_with_4008_instead_of_dropping_events() {
        let (queue, _rx) = SendQueue::new(100, 10);
        assert!(queue.push("12345".into()));
        assert!(!queue.push("123456".into()));
        assert!(queue.is_closed());
        assert_eq!(queue.close_reason().0, close::TOO_SLOW);
        // Once closed nothing more is queued.
        assert!(!queue.push("1".into()));
    }

    #[test]
    fn the_first_close_reason_wins() {
        let (queue, _rx) = SendQueue::new(10, 100);
        assert_eq!(queue.close_reason().0, 1000, "no reason yet");
        queue.close(close::UNAUTHORIZED, "token expired");
        queue.close(close::RESTARTING, "edge restarting");
        assert_eq!(queue.close_reason(), (close::UNAUTHORIZED, "token expired".to_owned()));
    }

    #[tokio::test]
    async fn written_frames_release_their_bytes() {
        let (queue, mut rx) = SendQueue::new(2, 100);
        assert!(queue.push("abc".into()));
        assert!(queue.push("de".into()));
        assert_eq!(queue.queued_bytes(), 5);
        let Next::Frame(frame) = rx.next().await else {
            panic!("a frame is queued")
        };
        rx.written(&queue, frame.len());
        assert_eq!(queue.queued_bytes(), 2);
        assert!(queue.push("f".into()));
        assert!(!queue.is_closed());
    }

    #[tokio::test]
    async fn the_writer_is_woken_by_the_close_first_then_a_heartbeat_then_frames() {
        let (queue, mut rx) = SendQueue::new(10, 100);
        assert!(queue.push("a".into()));
        queue.heartbeat_due();
        assert_eq!(
            rx.next().await,
            Next::Heartbeat,
            "a due heartbeat goes before queued frames"
        );
        assert_eq!(rx.next().await, Next::Frame("a".into()));
        // A writer waiting with nothing queued is woken by a heartbeat, then by a close.
        let waiting = tokio::spawn(async move {
            let first = rx.next().await;
            let second = rx.next().await;
            (first, second, rx)
        });
        tokio::task::yield_now().await;
        queue.heartbeat_due();
        tokio::task::yield_now().await;
        queue.close(close::TOO_SLOW, "test");
        let (first, second, mut rx) = waiting.await.expect("writer task");
        assert_eq!(first, Next::Heartbeat);
        assert_eq!(second, Next::Closed);
        assert!(!queue.push("late".into()), "nothing is queued after the close");
        assert_eq!(rx.recv().await, None, "SSE's view of a closed session");
    }

    #[test]
    fn a_writer_adds_queued_frames_to_its_write_until_the_close() {
        let (queue, mut rx) = SendQueue::new(10, 100);
        assert!(queue.push("a".into()));
        assert!(queue.push("bc".into()));
        assert_eq!(rx.try_frame(), Some("a".into()));
        rx.written_batch(&queue, 1, 1);
        assert_eq!(queue.queued_bytes(), 2);
        queue.close(close::TOO_SLOW, "test");
        assert_eq!(rx.try_frame(), None, "a closed session writes nothing more");
    }

    #[tokio::test]
    async fn a_replay_waits_until_the_client_has_taken_half_the_queue() {
        use futures::FutureExt;
        let (queue, rx) = SendQueue::new(4, 1_000);
        assert!(queue.drained().now_or_never() == Some(true));
        for frame in ["a", "b", "c"] {
            assert!(queue.push(frame.into()));
        }
        assert!(!queue.fits(1, 1), "one free frame is not twice one");
        let mut waiting = Box::pin(queue.drained());
        assert!((&mut waiting).now_or_never().is_none(), "three of four queued");
        let waiting = tokio::spawn({
            let queue = queue.clone();
            async move { queue.drained().await }
        });
        tokio::task::yield_now().await;
        rx.written(&queue, 1);
        assert!(waiting.await.expect("woken by the write"));
        queue.close(close::TOO_SLOW, "test");
        assert!(!queue.drained().await, "a closed session takes no more");
    }

    #[tokio::test]
    async fn every_task_waiting_for_the_close_is_woken() {
        let (queue, _rx) = SendQueue::new(10, 100);
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let queue = queue.clone();
                tokio::spawn(async move { queue.closed().await })
            })
            .collect();
        tokio::task::yield_now().await;
        queue.close(1000, "client closed");
        for waiter in waiters {
            waiter.await.expect("woken by the close");
        }
        // Already closed: completes at once.
        queue.closed().await;
    }
}
