//! Thousands of WebSocket clients in one process: each a task that connects (from one
//! of several 127.0.0.x source addresses, so loopback ephemeral ports stretch), subscribes,
//! checks continuity from `prev_seq`, and records when each transition arrived.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_util::sync::CancellationToken;

/// Source addresses clients spread over.
const SOURCES: u8 = 8;
/// Subscribes retried after an error that says "retry" before the session counts as failed.
const MAX_SUBSCRIBE_RETRIES: u64 = 10;

/// Gaps and duplicates seen by every edge session of this process, every section
/// together: the run's continuity checks (both must stay 0).
static GAPS: AtomicU64 = AtomicU64::new(0);
static DUPLICATES: AtomicU64 = AtomicU64::new(0);

/// (gaps, duplicates) seen so far by this process's edge sessions.
pub fn continuity() -> (u64, u64) {
    (GAPS.load(Ordering::Relaxed), DUPLICATES.load(Ordering::Relaxed))
}

/// When each transition reached a client: `(payment_id:status, time)`.
#[derive(Default)]
pub struct Recorder {
    receipts: Mutex<Vec<(String, SystemTime)>>,
    /// Transitions received, all sessions together.
    pub received: AtomicU64,
}

impl Recorder {
    /// Records one receipt of `key` now.
    pub fn record(&self, key: String) {
        let now = SystemTime::now();
        if let Ok(mut r) = self.receipts.lock() {
            r.push((key, now));
        }
        self.received.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes what was recorded so far.
    pub fn take(&self) -> Vec<(String, SystemTime)> {
        self.received.store(0, Ordering::SeqCst);
        self.receipts
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default()
    }
}

/// One session's view of its channel.
#[derive(Debug, Default, Clone)]
pub struct ChannelState {
    /// The stream epoch, once subscribed.
    pub epoch: Option<String>,
    /// The last position seen (or the `subscribed` position).
    pub last_seq: u64,
    /// `subscribed` arrived on the current connection.
    pub subscribed: bool,
    /// Events whose `prev_seq` was not the last seq seen.
    pub gaps: u64,
    /// Events at or before the last seq seen.
    pub duplicates: u64,
    /// Resumes answered `recovered:false`.
    pub unrecovered: u64,
    /// Connections that failed or were closed by the server.
    pub failures: u64,
    /// Why the last one failed, for the report.
    pub last_error: Option<String>,
}

/// A client session of the edge protocol (also spoken by the bare server).
pub struct Session {
    /// Its state, shared with its task.
    pub state: Arc<Mutex<ChannelState>>,
    /// Its channel.
    pub channel: String,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// What a fleet of sessions connects to.
#[derive(Clone)]
pub struct Target {
    /// The server.
    pub addr: SocketAddr,
    /// Its bearer token (None for the bare server and nats-server).
    pub token: Option<String>,
    /// `true`: nats-server's WebSocket protocol instead of the edge's.
    pub nats: bool,
}

/// Many sessions.
pub struct Fleet {
    /// The sessions, index = client number.
    pub sessions: Vec<Session>,
    /// Where they record transitions.
    pub recorder: Arc<Recorder>,
    target: Target,
    connects: Arc<Semaphore>,
    source_base: u8,
}

impl Fleet {
    /// An empty fleet for `target`; at most `concurrent_connects` handshakes run at once.
    pub fn new(target: Target, concurrent_connects: usize) -> Fleet {
        Fleet {
            sessions: Vec::new(),
            recorder: Arc::new(Recorder::default()),
            target,
            connects: Arc::new(Semaphore::new(concurrent_connects.max(1))),
            source_base: 1,
        }
    }

    /// Spreads this fleet over 127.0.0.`base`.. (client processes side by side use
    /// different bases, so loopback ephemeral ports stretch further).
    pub fn with_source_base(mut self, base: u8) -> Fleet {
        self.source_base = base.max(1);
        self
    }

    /// Adds sessions on `channels` (one each) and starts them.
    pub fn add(&mut self, channels: impl IntoIterator<Item = String>) {
        for channel in channels {
            let index = self.sessions.len();
            let state = Arc::new(Mutex::new(ChannelState::default()));
            let mut session = Session {
                state,
                channel,
                stop: CancellationToken::new(),
                task: None,
            };
            self.start(index, &mut session);
            self.sessions.push(session);
        }
    }

    fn start(&self, index: usize, session: &mut Session) {
        let last = (self.source_base as usize + index % SOURCES as usize).min(254) as u8;
        let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, last));
        let target = self.target.clone();
        let state = session.state.clone();
        let channel = session.channel.clone();
        let recorder = self.recorder.clone();
        let stop = session.stop.clone();
        let connects = self.connects.clone();
        session.task = Some(tokio::spawn(async move {
            let outcome = if target.nats {
                run_nats(&target, source, &state, &recorder, &stop, &connects).await
            } else {
                run_edge(&target, source, &channel, &state, &recorder, &stop, &connects).await
            };
            if let Err(error) = outcome
                && let Ok(mut s) = state.lock()
            {
                s.failures += 1;
                s.subscribed = false;
                s.last_error = Some(format!("{error:#}"));
            }
        }));
    }

    /// Sessions subscribed now.
    pub fn subscribed(&self) -> usize {
        self.sessions
            .iter()
            .filter(|s| s.state.lock().map(|s| s.subscribed).unwrap_or(false))
            .count()
    }

    /// Sessions whose connection failed.
    pub fn failures(&self) -> u64 {
        self.sum(|s| s.failures)
    }

    /// Sums a counter over sessions.
    pub fn sum(&self, f: impl Fn(&ChannelState) -> u64) -> u64 {
        self.sessions
            .iter()
            .map(|s| s.state.lock().map(|s| f(&s)).unwrap_or(0))
            .sum()
    }

    /// Waits until every session is subscribed; fails when one has failed or `timeout` passes.
    pub async fn wait_subscribed(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let n = self.subscribed();
            if n == self.sessions.len() {
                return Ok(());
            }
            let failed = self.failures();
            if failed > 0 {
                let why = self
                    .sessions
                    .iter()
                    .find_map(|s| s.state.lock().ok().and_then(|s| s.last_error.clone()))
                    .unwrap_or_default();
                bail!(
                    "{failed} sessions failed to connect ({n} of {} subscribed): {why}",
                    self.sessions.len()
                );
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "only {n} of {} sessions subscribed within {timeout:?}",
                    self.sessions.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Drops every connection at once (no close handshake); sessions keep their positions.
    pub async fn drop_all(&mut self) {
        // Every socket is aborted first, then the tasks are reaped: the drop is at once.
        let mut tasks = Vec::with_capacity(self.sessions.len());
        for s in &mut self.sessions {
            s.stop.cancel();
            if let Some(task) = s.task.take() {
                task.abort();
                tasks.push(task);
            }
        }
        for task in tasks {
            let _ = task.await;
        }
        for s in &self.sessions {
            if let Ok(mut st) = s.state.lock() {
                st.subscribed = false;
            }
        }
    }

    /// Reconnects every session, resuming each with `since` = its last position.
    pub fn resume_all(&mut self) {
        let mut sessions = std::mem::take(&mut self.sessions);
        for (i, s) in sessions.iter_mut().enumerate() {
            s.stop = CancellationToken::new();
            self.start(i, s);
        }
        self.sessions = sessions;
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for s in &self.sessions {
            s.stop.cancel();
            if let Some(task) = &s.task {
                task.abort();
            }
        }
    }
}

async fn connect(
    url: &str,
    addr: SocketAddr,
    source: IpAddr,
    token: Option<&str>,
    connects: &Semaphore,
) -> anyhow::Result<tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>> {
    let _permit = connects.acquire().await?;
    let mut request = url.into_client_request()?;
    if let Some(token) = token {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
    }
    let mut last = None;
    for attempt in 0..5u64 {
        let socket = tokio::net::TcpSocket::new_v4()?;
        // Source addresses other than 127.0.0.1 need the whole 127/8 on loopback (Linux has it).
        if socket.bind(SocketAddr::new(source, 0)).is_err() {
            socket.bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0))?;
        }
        match socket.connect(addr).await {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                // Small buffers: thousands of clients share this process's memory.
                let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
                    .read_buffer_size(4 * 1024)
                    .write_buffer_size(0);
                let (ws, _) =
                    tokio_tungstenite::client_async_with_config(request.clone(), stream, Some(config)).await?;
                return Ok(ws);
            }
            Err(e) => {
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(100 * (attempt + 1))).await;
            }
        }
    }
    Err(last
        .map(anyhow::Error::from)
        .unwrap_or_else(|| anyhow::anyhow!("connect failed")))
}

async fn run_edge(
    target: &Target,
    source: IpAddr,
    channel: &str,
    state: &Mutex<ChannelState>,
    recorder: &Recorder,
    stop: &CancellationToken,
    connects: &Semaphore,
) -> anyhow::Result<()> {
    let url = format!("ws://{}/v1/ws", target.addr);
    // Only paytrack's edge (which needs a token) counts toward the run's continuity
    // checks; the bare comparison server does not keep positions.
    let edge = target.token.is_some();
    let mut ws = connect(&url, target.addr, source, target.token.as_deref(), connects).await?;
    let subscribe = |state: &Mutex<ChannelState>| -> anyhow::Result<String> {
        let s = state.lock().map_err(|_| anyhow::anyhow!("state lock"))?;
        let since = s
            .epoch
            .as_ref()
            .map(|epoch| serde_json::json!({"epoch": epoch, "seq": s.last_seq}));
        let mut msg = serde_json::json!({"type": "subscribe", "channel": channel});
        if let Some(since) = since {
            msg["since"] = since;
        }
        Ok(msg.to_string())
    };
    let resuming = state.lock().map(|s| s.epoch.is_some()).unwrap_or(false);
    let mut retries = 0u64;
    ws.send(Message::Text(subscribe(state)?.into())).await?;
    loop {
        let frame = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            frame = ws.next() => frame,
        };
        let text = match frame.context("socket ended")?? {
            Message::Text(text) => text,
            Message::Close(frame) => bail!("closed by server: {frame:?}"),
            _ => continue,
        };
        let value: Value = serde_json::from_str(&text)?;
        match value["type"].as_str() {
            Some("subscribed") => {
                let mut s = state.lock().map_err(|_| anyhow::anyhow!("state lock"))?;
                if resuming && value["recovered"] != true {
                    s.unrecovered += 1;
                }
                if !resuming || value["recovered"] != true {
                    s.epoch = value["position"]["epoch"].as_str().map(str::to_owned);
                    s.last_seq = value["position"]["seq"].as_u64().unwrap_or(0);
                }
                s.subscribed = true;
            }
            Some("event") => {
                let seq = value["position"]["seq"].as_u64().unwrap_or(0);
                let prev = value["prev_seq"].as_u64().unwrap_or(0);
                {
                    let mut s = state.lock().map_err(|_| anyhow::anyhow!("state lock"))?;
                    if seq <= s.last_seq {
                        s.duplicates += 1;
                        if edge {
                            DUPLICATES.fetch_add(1, Ordering::Relaxed);
                        }
                        continue;
                    }
                    if prev != s.last_seq {
                        s.gaps += 1;
                        if edge {
                            GAPS.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    s.last_seq = seq;
                }
                if value["kind"] == "transition" {
                    let key = format!(
                        "{}:{}",
                        value["payment_id"].as_str().unwrap_or(""),
                        value["status"].as_str().unwrap_or("")
                    );
                    recorder.record(key);
                }
            }
            Some("heartbeat") => {
                // As a real client does: answer each heartbeat with the position it has
                // processed on its channel (the edge closes a silent session).
                let ack = {
                    let s = state.lock().map_err(|_| anyhow::anyhow!("state lock"))?;
                    let mut positions = serde_json::Map::new();
                    if let Some(epoch) = &s.epoch {
                        positions.insert(
                            channel.to_owned(),
                            serde_json::json!({"epoch": epoch, "seq": s.last_seq}),
                        );
                    }
                    serde_json::json!({"type": "ack", "positions": positions}).to_string()
                };
                ws.send(Message::Text(ack.into())).await?;
            }
            Some("error") if value["code"] == 4029 || value["code"] == 1011 => {
                // The tenant's subscribe queue is full (4029), or the edge could not
                // read the channel's history in time (1011): both say "retry", as a
                // real client does, a little later and at most a few times.
                retries += 1;
                if retries > MAX_SUBSCRIBE_RETRIES {
                    bail!("error from server after {MAX_SUBSCRIBE_RETRIES} retries: {value}");
                }
                tokio::time::sleep(Duration::from_millis(200 * retries)).await;
                ws.send(Message::Text(subscribe(state)?.into())).await?;
            }
            Some("error") => bail!("error from server: {value}"),
            _ => {}
        }
    }
}

/// A nats-server WebSocket client: `SUB payments`, then each `MSG` payload is a key.
async fn run_nats(
    target: &Target,
    source: IpAddr,
    state: &Mutex<ChannelState>,
    recorder: &Recorder,
    stop: &CancellationToken,
    connects: &Semaphore,
) -> anyhow::Result<()> {
    let url = format!("ws://{}/", target.addr);
    let mut ws = connect(&url, target.addr, source, None, connects).await?;
    let hello = "CONNECT {\"verbose\":false,\"pedantic\":false,\"echo\":false}\r\nSUB payments 1\r\nPING\r\n";
    ws.send(Message::Binary(hello.as_bytes().to_vec().into())).await?;
    let mut buffer: Vec<u8> = Vec::new();
    loop {
        let frame = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            frame = ws.next() => frame,
        };
        match frame.context("socket ended")?? {
            Message::Binary(b) => buffer.extend_from_slice(&b),
            Message::Text(t) => buffer.extend_from_slice(t.as_bytes()),
            Message::Close(frame) => bail!("closed by server: {frame:?}"),
            _ => continue,
        }
        // Parse whole protocol lines (and MSG payloads) out of the buffer.
        while let Some(eol) = buffer.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&buffer[..eol]).to_string();
            if let Some(rest) = line.strip_prefix("MSG ") {
                let size: usize = rest.rsplit(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0);
                let end = eol + 2 + size + 2;
                if buffer.len() < end {
                    break;
                }
                let payload = String::from_utf8_lossy(&buffer[eol + 2..eol + 2 + size]).to_string();
                buffer.drain(..end);
                recorder.record(payload);
                continue;
            }
            buffer.drain(..eol + 2);
            if line == "PING" {
                ws.send(Message::Binary(b"PONG\r\n".to_vec().into())).await?;
            } else if line == "PONG"
                && let Ok(mut s) = state.lock()
            {
                s.subscribed = true;
            } else if line.starts_with("-ERR") {
                bail!("nats-server: {line}");
            }
        }
    }
}
