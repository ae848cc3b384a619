//! Live clients that trust nothing: WebSocket and SSE sessions on the tenant's
//! `payments` channel that move to the other edge when theirs drops and resume from
//! the last position they saw. Each keeps every frame it received and checks
//! continuity by `prev_seq` alone; a break the server did not announce (a
//! `recovered: false` subscribe) is a silent gap.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use paytrack_tests::sse::{Opened, SseClient};
use paytrack_tests::ws::WsClient;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// The channel every client follows.
pub const CHANNEL: &str = "payments";

/// How a client talks to the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `GET /v1/ws`.
    WebSocket,
    /// `GET /v1/sse`.
    Sse,
}

/// One event frame as a client received it.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Its sequence in PAYTRACK_STATUS.
    pub seq: u64,
    /// The payment.
    pub payment_id: String,
    /// When it arrived.
    pub at: Instant,
}

/// A break in a client's timeline.
#[derive(Debug, Clone)]
pub struct Gap {
    /// The last sequence seen before it.
    pub after: u64,
    /// The `prev_seq` of the event that broke continuity.
    pub prev_seq: u64,
    /// When it was seen.
    pub at: Instant,
}

/// Everything a client saw.
#[derive(Debug, Default)]
pub struct Timeline {
    /// Every event frame, in arrival order.
    pub frames: Vec<Frame>,
    /// Breaks in continuity no `recovered: false` announced.
    pub silent_gaps: Vec<Gap>,
    /// Resumes the server answered `recovered: false` (the client was told).
    pub told: Vec<Instant>,
    /// Times the session dropped and the client reconnected.
    pub reconnects: usize,
    /// Frames whose sequence was not after the last one seen (sent twice).
    pub repeated: usize,
}

/// The cursor a client resumes from.
#[derive(Debug, Clone, Default)]
struct Cursor {
    epoch: Option<Value>,
    seq: u64,
}

impl Cursor {
    fn since(&self) -> Option<Value> {
        self.epoch
            .as_ref()
            .map(|epoch| json!({"epoch": epoch, "seq": self.seq}))
    }

    /// Takes one event; records a silent gap or a repeat in `timeline`.
    fn take(&mut self, event: &Value, timeline: &mut Timeline) {
        let seq = event["position"]["seq"].as_u64().unwrap_or_default();
        let prev = event["prev_seq"].as_u64().unwrap_or_default();
        if seq <= self.seq {
            timeline.repeated += 1;
            return;
        }
        if prev != self.seq {
            timeline.silent_gaps.push(Gap {
                after: self.seq,
                prev_seq: prev,
                at: Instant::now(),
            });
        }
        self.seq = seq;
        self.epoch = Some(event["position"]["epoch"].clone());
        timeline.frames.push(Frame {
            seq,
            payment_id: event["payment_id"].as_str().unwrap_or_default().to_owned(),
            at: Instant::now(),
        });
    }

    /// Takes a `subscribed` answer: where the channel continues from.
    fn subscribed(&mut self, answer: &Value, timeline: &mut Timeline) {
        let resumed = self.epoch.is_some();
        if resumed && answer["recovered"] == false {
            timeline.told.push(Instant::now());
        }
        if !resumed || answer["recovered"] == false {
            self.seq = answer["position"]["seq"].as_u64().unwrap_or_default();
            self.epoch = Some(answer["position"]["epoch"].clone());
        }
    }
}

/// Follows the channel over `transport`, alternating between `edges` whenever a
/// session drops, until `stop`.
pub async fn follow(
    transport: Transport,
    edges: Vec<String>,
    token: String,
    timeline: Arc<Mutex<Timeline>>,
    stop: CancellationToken,
) {
    let mut cursor = Cursor::default();
    let mut attempt = 0usize;
    while !stop.is_cancelled() {
        let edge = &edges[attempt % edges.len()];
        attempt += 1;
        let target = Session {
            edge,
            token: &token,
            timeline: &timeline,
            stop: &stop,
        };
        let session = match transport {
            Transport::WebSocket => ws_session(target, &mut cursor).await,
            Transport::Sse => sse_session(target, &mut cursor).await,
        };
        if stop.is_cancelled() {
            break;
        }
        if let Err(error) = session {
            tracing::debug!(%error, edge, "a client session dropped");
        }
        timeline
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .reconnects += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn lock(timeline: &Mutex<Timeline>) -> std::sync::MutexGuard<'_, Timeline> {
    timeline.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What one client session needs besides its cursor: the edge it talks to, its
/// token, the timeline it records into and when to stop.
#[derive(Clone, Copy)]
struct Session<'a> {
    edge: &'a str,
    token: &'a str,
    timeline: &'a Mutex<Timeline>,
    stop: &'a CancellationToken,
}

async fn ws_session(session: Session<'_>, cursor: &mut Cursor) -> anyhow::Result<()> {
    let url = format!("{}/v1/ws", session.edge.replacen("http://", "ws://", 1));
    let mut client = WsClient::connect(&url, session.token).await?;
    let mut subscribe = json!({"type": "subscribe", "channel": CHANNEL});
    if let Some(since) = cursor.since() {
        subscribe["since"] = since;
    }
    client.send(subscribe).await?;
    // A session that hears nothing (not even a heartbeat) for this long is dead.
    let silence = Duration::from_secs(20);
    loop {
        let frame = tokio::select! {
            _ = session.stop.cancelled() => return Ok(()),
            frame = client.next(silence) => frame?,
        };
        match frame["type"].as_str() {
            Some("subscribed") => cursor.subscribed(&frame, &mut lock(session.timeline)),
            Some("event") => cursor.take(&frame, &mut lock(session.timeline)),
            Some("heartbeat") => {
                let positions = frame["positions"].clone();
                client.send(json!({"type": "ack", "positions": positions})).await?;
            }
            Some("error") => anyhow::bail!("error frame: {frame}"),
            _ => {}
        }
    }
}

async fn sse_session(session: Session<'_>, cursor: &mut Cursor) -> anyhow::Result<()> {
    let last_event_id = cursor.epoch.as_ref().map(|epoch| {
        format!(
            "{}:{}",
            epoch.as_str().map(str::to_owned).unwrap_or_else(|| epoch.to_string()),
            cursor.seq
        )
    });
    let mut client = match SseClient::open(session.edge, CHANNEL, Some(session.token), last_event_id.as_deref()).await?
    {
        Opened::Open(client) => client,
        Opened::Refused(status, body) => anyhow::bail!("SSE refused with {status}: {body}"),
    };
    let silence = Duration::from_secs(20);
    loop {
        let event = tokio::select! {
            _ = session.stop.cancelled() => return Ok(()),
            event = client.next(silence) => event?,
        };
        match event.event.as_str() {
            "subscribed" => cursor.subscribed(&event.data, &mut lock(session.timeline)),
            "close" => anyhow::bail!("closed: {}", event.data),
            "heartbeat" => {}
            _ if event.data["type"] == "event" || event.data["position"].is_object() => {
                cursor.take(&event.data, &mut lock(session.timeline));
            }
            _ => {}
        }
    }
}
