//! The edge's fan-out: one ordered consumer per stream (PAYTRACK_STATUS and
//! PAYTRACK_PUSH, delivering what arrives after the edge started), an in-memory ring of
//! recent messages, and a map from channel to the local subscriptions that match each
//! message's subject. Each event is encoded once per channel (per `prev_seq`, which is
//! the same for every session that is current on the channel) and the same bytes are
//! queued to every session of that channel.
//!
//! JetStream consumers are a fixed cost: two per edge, whatever its sessions. A
//! subscribe reads JetStream only for what memory cannot answer (a channel's latest
//! position the first time this edge holds it, a payment's snapshot, a resume older
//! than the ring), through a semaphore, with a short-lived filtered consumer that is
//! deleted right after. A backlog larger than the session's queue can take at once is
//! sent as the client drains it (`backlog.rs`). A stream found recreated restarts its
//! feed under the new epoch (`incarnation.rs`).
//!
//! Everything that decides what a session sees (the ring, the channel map, each
//! subscription's `prev_seq`, the queueing of `subscribed`, events and heartbeats)
//! changes under one lock, so a session's queue always holds `subscribed` first, then
//! every event of its channel exactly once and in stream order, and a heartbeat never
//! names a position whose event is not queued before it.
//!
//! One file per job: `ring.rs` (the recent messages), `feed.rs` (reading a stream and
//! queueing each message to its channels), `channels.rs` (the channel map), `tenant_channel.rs` (its key), `frame.rs`
//! (an event's wire encoding), `hub.rs` (the hub and its start), `replay.rs` (where a
//! subscription continues from), `backlog.rs` (the paged replay), `health.rs` (feed
//! currency and heartbeats) and `incarnation.rs` (a recreated stream).

mod backlog;
mod channels;
mod feed;
mod frame;
mod health;
mod hub;
mod incarnation;
mod replay;
mod ring;
mod tenant_channel;

pub use channels::IdleWindow;
pub use hub::{Hub, Ready, Request, Subscribed};
pub use tenant_channel::TenantChannel;
