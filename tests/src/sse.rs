//! A small Server-Sent Events client for tests: opens `GET /v1/sse`, then yields each
//! event's `event`, `id` and `data` (parsed as JSON), with timeouts.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

/// One Server-Sent Event.
#[derive(Debug, Clone, Default)]
pub struct SseEvent {
    /// The `event:` field (`message` when absent).
    pub event: String,
    /// The `id:` field, if any.
    pub id: Option<String>,
    /// The `data:` field as JSON.
    pub data: Value,
}

/// An open event stream.
pub struct SseClient {
    response: reqwest::Response,
    buffer: String,
}

/// How an open attempt ended.
pub enum Opened {
    /// Streaming.
    Open(Box<SseClient>),
    /// Refused with this status and JSON body.
    Refused(u16, Value),
}

impl SseClient {
    /// `GET {base}/v1/sse?channel=…` with `Authorization: Bearer` (when given) and
    /// `Last-Event-ID` (when given).
    pub async fn open(
        base: &str,
        channel: &str,
        bearer: Option<&str>,
        last_event_id: Option<&str>,
    ) -> anyhow::Result<Opened> {
        let mut request = reqwest::Client::new()
            .get(format!("{base}/v1/sse"))
            .query(&[("channel", channel)])
            .header("accept", "text/event-stream");
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await?;
        if !response.status().is_success() {
            let status = response.status().as_u16();
            let body = response.json().await.unwrap_or(Value::Null);
            return Ok(Opened::Refused(status, body));
        }
        Ok(Opened::Open(Box::new(SseClient {
            response,
            buffer: String::new(),
        })))
    }

    /// Opens or fails.
    pub async fn connect(
        base: &str,
        channel: &str,
        bearer: &str,
        last_event_id: Option<&str>,
    ) -> anyhow::Result<SseClient> {
        match Self::open(base, channel, Some(bearer), last_event_id).await? {
            Opened::Open(client) => Ok(*client),
            Opened::Refused(status, body) => bail!("SSE refused with {status}: {body}"),
        }
    }

    /// The next event of any type.
    pub async fn next(&mut self, timeout: Duration) -> anyhow::Result<SseEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = SseEvent {
                    event: "message".to_owned(),
                    ..SseEvent::default()
                };
                let mut data = String::new();
                for line in block.lines() {
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    match field {
                        "event" => event.event = value.to_owned(),
                        "id" => event.id = Some(value.to_owned()),
                        "data" => data.push_str(value),
                        _ => {}
                    }
                }
                if data.is_empty() && event.id.is_none() {
                    continue; // a comment (keep-alive)
                }
                event.data = serde_json::from_str(&data).with_context(|| format!("data not JSON: {data}"))?;
                return Ok(event);
            }
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let chunk = tokio::time::timeout(remaining, self.response.chunk())
                .await
                .context("timed out waiting for an event")??
                .context("event stream ended")?;
            self.buffer
                .push_str(&String::from_utf8_lossy(&chunk).replace("\r\n", "\n"));
        }
    }

    /// The next event named `kind`, skipping heartbeats (any other event is an error).
    pub async fn next_of(&mut self, kind: &str, timeout: Duration) -> anyhow::Result<SseEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let event = self.next(remaining).await?;
            if event.event == kind {
                return Ok(event);
            }
            if event.event != "heartbeat" {
                bail!("expected {kind}, got {} {}", event.event, event.data);
            }
        }
    }
}
