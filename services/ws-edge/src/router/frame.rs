//! Encoding a ring message as its channel's [`EventFrame`]: once per channel and
//! `prev_seq`, the same bytes queued to every session current on the channel.

use axum::extract::ws::Utf8Bytes;
use paytrack_shared::envelope::Position;

use super::ring::Msg;
use crate::protocol::EventFrame;

/// The frame of `message` on `channel`, continuing from `prev_seq`; None for a message
/// that renders to no event.
pub(super) fn encode_event(channel: &str, epoch: &str, message: &Msg, prev_seq: u64) -> Option<Utf8Bytes> {
    let (kind, body) = message.rendered()?;
    let position = Position {
        epoch: epoch.to_owned(),
        seq: message.seq,
    };
    let frame = EventFrame {
        channel,
        kind,
        position: &position,
        prev_seq,
        body,
    };
    serde_json::to_string(&frame).ok().map(Utf8Bytes::from)
}
