//! An event as it goes on the wire: encoded once per channel and `prev_seq`, the same
//! bytes queued to every session current on the channel.

use axum::extract::ws::Utf8Bytes;
use paytrack_shared::envelope::Position;
use serde::Serialize;
use serde_json::{Map, Value};

use super::ring::Msg;

/// An event as it goes on the wire, borrowing the message's rendered fields. The
/// envelope's own fields win over a body field of the same name (a push may carry its
/// own `type`), so the frame never holds a key twice.
struct WireEvent<'a> {
    channel: &'a str,
    kind: &'a str,
    position: Position,
    prev_seq: u64,
    body: &'a Map<String, Value>,
}

const ENVELOPE_FIELDS: [&str; 5] = ["type", "channel", "kind", "position", "prev_seq"];

impl Serialize for WireEvent<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("type", "event")?;
        map.serialize_entry("channel", self.channel)?;
        map.serialize_entry("kind", self.kind)?;
        map.serialize_entry("position", &self.position)?;
        map.serialize_entry("prev_seq", &self.prev_seq)?;
        for (key, value) in self.body {
            if !ENVELOPE_FIELDS.contains(&key.as_str()) {
                map.serialize_entry(key, value)?;
            }
        }
        map.end()
    }
}

pub(super) fn encode_event(channel: &str, epoch: &str, message: &Msg, prev_seq: u64) -> Option<Utf8Bytes> {
    let (kind, body) = message.rendered()?;
    let event = WireEvent {
        channel,
        kind,
        position: Position {
            epoch: epoch.to_owned(),
            seq: message.seq,
        },
        prev_seq,
        body,
    };
    serde_json::to_string(&event).ok().map(Utf8Bytes::from)
}
