//! A small WebSocket client for tests: JSON in, JSON out, with timeouts.

use std::time::Duration;

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A connected test client.
pub struct WsClient {
    socket: WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>,
}

/// How an upgrade attempt ended.
pub enum Upgrade {
    /// Connected.
    Open(Box<WsClient>),
    /// Refused with this HTTP status.
    Refused(u16),
}

impl WsClient {
    /// Tries an upgrade with `Authorization: Bearer` (when given) against `url`.
    pub async fn try_connect(url: &str, bearer: Option<&str>) -> anyhow::Result<Upgrade> {
        let mut request = url.into_client_request()?;
        if let Some(token) = bearer {
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {token}").parse()?);
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((socket, _)) => Ok(Upgrade::Open(Box::new(WsClient { socket }))),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Ok(Upgrade::Refused(response.status().as_u16()))
            }
            Err(other) => Err(other.into()),
        }
    }

    /// Connects or fails.
    pub async fn connect(url: &str, bearer: &str) -> anyhow::Result<WsClient> {
        match Self::try_connect(url, Some(bearer)).await? {
            Upgrade::Open(client) => Ok(*client),
            Upgrade::Refused(status) => bail!("upgrade refused with {status}"),
        }
    }

    /// Sends one JSON message.
    pub async fn send(&mut self, value: Value) -> anyhow::Result<()> {
        self.socket.send(Message::Text(value.to_string().into())).await?;
        Ok(())
    }

    /// The next JSON message, skipping heartbeats unless `type` asks for them.
    pub async fn next_of(&mut self, kind: &str, timeout: Duration) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let frame = tokio::time::timeout(remaining, self.socket.next())
                .await
                .with_context(|| format!("timed out waiting for {kind}"))?
                .context("socket ended")??;
            match frame {
                Message::Text(text) => {
                    let value: Value = serde_json::from_str(&text)?;
                    if value["type"] == kind {
                        return Ok(value);
                    }
                    if value["type"] != "heartbeat" && value["type"] != "welcome" {
                        bail!("expected {kind}, got {value}");
                    }
                }
                Message::Close(frame) => bail!("closed while waiting for {kind}: {frame:?}"),
                _ => {}
            }
        }
    }

    /// The next JSON message of any type (a close is an error).
    pub async fn next(&mut self, timeout: Duration) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let frame = tokio::time::timeout(remaining, self.socket.next())
                .await
                .context("timed out waiting for a message")?
                .context("socket ended")??;
            match frame {
                Message::Text(text) => return Ok(serde_json::from_str(&text)?),
                Message::Close(frame) => bail!("closed: {frame:?}"),
                _ => {}
            }
        }
    }

    /// The next JSON message of any type, or the close code once the server closes.
    pub async fn next_or_close(&mut self, timeout: Duration) -> anyhow::Result<Result<Value, u16>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(remaining, self.socket.next())
                .await
                .context("timed out waiting for a message or a close")?
            {
                Some(Ok(Message::Text(text))) => return Ok(Ok(serde_json::from_str(&text)?)),
                Some(Ok(Message::Close(Some(frame)))) => return Ok(Err(u16::from(frame.code))),
                Some(Ok(Message::Close(None))) | None => return Ok(Err(1005)),
                Some(Ok(_)) => {}
                Some(Err(error)) => bail!("socket error before close: {error}"),
            }
        }
    }

    /// Writes raw bytes to the socket under the WebSocket protocol (to send what a
    /// well-behaved client library would refuse to, e.g. a frame header alone).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        use tokio::io::AsyncWriteExt;
        match self.socket.get_mut() {
            MaybeTlsStream::Plain(stream) => {
                stream.write_all(bytes).await?;
                stream.flush().await?;
                Ok(())
            }
            _ => bail!("send_raw needs a plain TCP socket"),
        }
    }

    /// After [`WsClient::closed`]: answers the server's close frame and waits until the
    /// server hangs up, as a well-behaved client leaving an edge does.
    pub async fn leave(&mut self, timeout: Duration) -> anyhow::Result<()> {
        tokio::time::timeout(timeout, async { while let Some(Ok(_)) = self.socket.next().await {} })
            .await
            .context("the server did not hang up after the close")
    }

    /// Waits for the server to close; returns the close code.
    pub async fn closed(&mut self, timeout: Duration) -> anyhow::Result<u16> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(remaining, self.socket.next())
                .await
                .context("timed out waiting for close")?
            {
                Some(Ok(Message::Close(Some(frame)))) => return Ok(u16::from(frame.code)),
                Some(Ok(Message::Close(None))) | None => return Ok(1005),
                Some(Ok(_)) => {}
                Some(Err(error)) => bail!("socket error before close: {error}"),
            }
        }
    }
}
