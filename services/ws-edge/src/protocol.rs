//! The WebSocket (and SSE) wire format: one JSON object per message, named by `type`.

use paytrack_shared::envelope::Position;
use serde::{Deserialize, Serialize};

/// Client → server.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// Subscribe to a channel, optionally resuming after `since`.
    Subscribe {
        /// The channel.
        channel: String,
        /// The last position the client saw.
        #[serde(default)]
        since: Option<Position>,
    },
    /// Stop a subscription.
    Unsubscribe {
        /// The channel.
        channel: String,
    },
    /// Client heartbeat.
    Ping,
    /// Replace the session's token before it expires.
    Refresh {
        /// The new token.
        token: String,
    },
    /// The positions the client has processed (its answer to a heartbeat).
    Ack {
        /// Channel → position.
        #[serde(default)]
        positions: std::collections::BTreeMap<String, Position>,
    },
}

/// Server → client, every message but a channel's events (those are [`EventFrame`]s,
/// encoded once and shared by every session on the channel).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// First message of a session.
    Welcome {
        /// The session's id (also in the audit).
        session_id: String,
        /// How often the server sends heartbeats; the client should ping as often.
        heartbeat_ms: u64,
    },
    /// A subscription's start: where the channel continues from.
    Subscribed {
        /// The channel.
        channel: String,
        /// True when `since` was continued gap-free.
        recovered: bool,
        /// Where the channel continues from: the next event's `prev_seq` equals its `seq`.
        position: Position,
        /// The channel's current state when continuity was not proven.
        #[serde(skip_serializing_if = "Option::is_none")]
        snapshot: Option<serde_json::Value>,
    },
    /// The latest position of every subscribed channel, and whether the edge itself
    /// is current with the streams: while `live` is false (its feed is cut from
    /// JetStream) the positions are only what was sent, not a claim of currency.
    Heartbeat {
        /// Channel → position.
        positions: std::collections::BTreeMap<String, Position>,
        /// Whether the edge's feeds are connected to JetStream and caught up.
        live: bool,
        /// How long the edge's feeds have been behind the streams, in milliseconds
        /// (0 when caught up).
        lag_ms: u64,
    },
    /// Answer to `ping`.
    Pong,
    /// A refused request; the session stays open unless a close follows.
    Error {
        /// 4000 bad request, 4001 unauthorized, 4003 forbidden.
        code: u16,
        /// What was wrong.
        message: String,
    },
}

/// One event of a channel as it goes on the wire (`"type": "event"`), over WebSocket
/// and SSE alike, live or replayed. It borrows the message's rendered fields so a frame
/// is encoded once per channel and `prev_seq`, and the same bytes are queued to every
/// session current on the channel. The envelope's own fields win over a body field of
/// the same name (a push may carry its own `type`), so the frame never holds a key twice.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EventFrame<'a> {
    /// The channel it was delivered on.
    pub channel: &'a str,
    /// `transition`, `checkpoint`, `push`, `alert` or `alert_ack`.
    pub kind: &'a str,
    /// Its position.
    pub position: &'a Position,
    /// The previous event's `seq` on this channel (0 for the first).
    pub prev_seq: u64,
    /// The event's own fields (payment fields, or a push's `type` and `data`).
    pub body: &'a serde_json::Map<String, serde_json::Value>,
}

impl EventFrame<'_> {
    /// The fields the frame itself sets; a body field of the same name is dropped.
    const ENVELOPE_FIELDS: [&'static str; 5] = ["type", "channel", "kind", "position", "prev_seq"];
}

impl Serialize for EventFrame<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("type", "event")?;
        map.serialize_entry("channel", self.channel)?;
        map.serialize_entry("kind", self.kind)?;
        map.serialize_entry("position", self.position)?;
        map.serialize_entry("prev_seq", &self.prev_seq)?;
        for (key, value) in self.body {
            if !Self::ENVELOPE_FIELDS.contains(&key.as_str()) {
                map.serialize_entry(key, value)?;
            }
        }
        map.end()
    }
}

/// Close codes of the contract.
pub mod close {
    /// Bad request (malformed message, missed heartbeats).
    pub const BAD_REQUEST: u16 = 4000;
    /// Unauthorized or token expired.
    pub const UNAUTHORIZED: u16 = 4001;
    /// Forbidden.
    pub const FORBIDDEN: u16 = 4003;
    /// The session's bounded queue overflowed.
    pub const TOO_SLOW: u16 = 4008;
    /// The edge is restarting, or a stream the session reads was recreated (its
    /// positions are of the old epoch); reconnect and resume.
    pub const RESTARTING: u16 = 1012;
    /// Too many requests (subscribes per second, resumes in flight for the tenant);
    /// sent as an `error`, the session stays open and may retry later.
    pub const RATE_LIMITED: u16 = 4029;
    /// A frame or message larger than the edge accepts (RFC 6455 "message too big").
    pub const MESSAGE_TOO_BIG: u16 = 1009;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_shapes() {
        let m: ClientMessage =
            serde_json::from_str(r#"{"type":"subscribe","channel":"payment:p1","since":{"epoch":"e","seq":41}}"#)
                .unwrap();
        assert_eq!(
            m,
            ClientMessage::Subscribe {
                channel: "payment:p1".into(),
                since: Some(Position {
                    epoch: "e".into(),
                    seq: 41
                })
            }
        );
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"nope"}"#).is_err());
        let mut body = serde_json::Map::new();
        body.insert("status".into(), "pending".into());
        let position = Position {
            epoch: "e".into(),
            seq: 42,
        };
        let e = EventFrame {
            channel: "payment:p1",
            kind: "transition",
            position: &position,
            prev_seq: 41,
            body: &body,
        };
        let v = serde_json::to_value(e).unwrap();
        assert_eq!(v["type"], "event");
        assert_eq!(v["prev_seq"], 41);
        assert_eq!(v["position"]["seq"], 42);
        assert_eq!(v["status"], "pending");
    }

    #[test]
    fn event_frame_never_repeats_an_envelope_field() {
        let body: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
            r#"{"type":"chat","channel":"x","kind":"y","position":1,"prev_seq":2,"data":{"a":1}}"#,
        )
        .unwrap();
        let position = Position {
            epoch: "e".into(),
            seq: 7,
        };
        let frame = EventFrame {
            channel: "user:u1",
            kind: "push",
            position: &position,
            prev_seq: 3,
            body: &body,
        };
        assert_eq!(
            serde_json::to_string(&frame).unwrap(),
            r#"{"type":"event","channel":"user:u1","kind":"push","position":{"epoch":"e","seq":7},"prev_seq":3,"data":{"a":1}}"#
        );
    }
}
