//! The recent messages of each stream the edge reads, kept in memory so that a
//! resume within them needs no JetStream read.

use std::collections::VecDeque;
use std::sync::Arc;

use async_nats::HeaderMap;
use serde_json::{Map, Value};

use crate::stream_event::render;

/// One stream message as the edge keeps it: shared by the ring, the channels it
/// matches and any replay, and rendered once, when a session is first sent it. A
/// message no session holds a channel of is never rendered: an edge reads the whole
/// stream, and rendering every message for nobody was most of an idle edge's work.
pub struct Msg {
    pub(super) seq: u64,
    pub(super) subject: String,
    pub(super) payload: bytes::Bytes,
    pub(super) rendered: std::sync::OnceLock<Option<(String, Map<String, Value>)>>,
    pub(super) headers: Option<HeaderMap>,
}

impl Msg {
    pub(super) fn new(seq: u64, subject: &str, payload: bytes::Bytes, headers: Option<HeaderMap>) -> Arc<Msg> {
        Arc::new(Msg {
            seq,
            subject: subject.to_owned(),
            payload,
            rendered: std::sync::OnceLock::new(),
            headers,
        })
    }

    /// The event's kind and fields (None for a message that cannot be read).
    pub(super) fn rendered(&self) -> Option<&(String, Map<String, Value>)> {
        self.rendered
            .get_or_init(|| render(&self.subject, &self.payload))
            .as_ref()
    }
}

/// The most recent messages of one stream. It holds every message with a sequence in
/// `(floor, head]`.
pub(super) struct Ring {
    pub(super) messages: VecDeque<Arc<Msg>>,
    pub(super) floor: u64,
    pub(super) head: u64,
    pub(super) capacity: usize,
}

impl Ring {
    pub(super) fn new(head: u64, capacity: usize) -> Ring {
        Ring {
            messages: VecDeque::new(),
            floor: head,
            head,
            capacity: capacity.max(1),
        }
    }

    /// Adds the newest message; returns the one it pushed out, if the ring was full.
    pub(super) fn push(&mut self, message: Arc<Msg>) -> Option<Arc<Msg>> {
        self.head = message.seq;
        self.messages.push_back(message);
        let mut evicted = None;
        while self.messages.len() > self.capacity {
            if let Some(oldest) = self.messages.pop_front() {
                self.floor = oldest.seq;
                evicted = Some(oldest);
            }
        }
        evicted
    }

    /// The held message with sequence `seq`.
    pub(super) fn get(&self, seq: u64) -> Option<&Arc<Msg>> {
        let at = self.messages.partition_point(|m| m.seq < seq);
        self.messages.get(at).filter(|m| m.seq == seq)
    }

    /// The held messages after `seq`, oldest first; only complete when `floor <= seq`.
    pub(super) fn after(&self, seq: u64) -> impl Iterator<Item = &Arc<Msg>> {
        let start = self.messages.partition_point(|m| m.seq <= seq);
        self.messages.range(start..)
    }
}

#[cfg(test)]
impl Msg {
    /// A readable message for the router's unit tests.
    pub(super) fn note(seq: u64, subject: &str) -> Arc<Msg> {
        let payload = serde_json::json!({"type": "note", "kind": "x", "n": seq}).to_string();
        Msg::new(seq, subject, payload.into(), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_is_bounded_and_knows_what_it_covers() {
        let mut ring = Ring::new(10, 3);
        for seq in 11..=15 {
            ring.push(Msg::note(seq, "paytrack.push.a.u.all"));
        }
        assert_eq!((ring.floor, ring.head), (12, 15));
        assert_eq!(ring.after(13).map(|m| m.seq).collect::<Vec<_>>(), vec![14, 15]);
    }
}
