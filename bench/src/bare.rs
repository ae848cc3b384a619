//! A bare axum WebSocket server with the edge's crates and socket buffers: the
//! ceiling of what one process can hold and broadcast, with no auth, no JetStream and
//! no per-channel bookkeeping. It speaks just enough of the edge's protocol
//! (`welcome`, `subscribed`, `event`) for the same clients.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use futures::{SinkExt, StreamExt};
use tokio::sync::broadcast;

/// The edge's socket buffers (`services/ws-edge/src/app.rs`), so the ceiling holds
/// sessions as the edge does.
const READ_BUFFER: usize = 0;

struct Bare {
    events: broadcast::Sender<Utf8Bytes>,
    seq: AtomicU64,
}

/// Serves `/v1/ws` and `POST /broadcast` (its body, a key, goes to every session).
pub async fn serve(
    listener: tokio::net::TcpListener,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let (events, _) = broadcast::channel(1024);
    let state = Arc::new(Bare {
        events,
        seq: AtomicU64::new(0),
    });
    let app = Router::new()
        .route("/v1/ws", get(upgrade))
        .route("/broadcast", post(broadcast_key))
        .route("/readyz", get(|| async { "ok" }))
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    Ok(())
}

/// `?frames=3` sends what the edge sends for one webhook: the transition and its two
/// checkpoints (`persisted`, `ledger_posted`), shaped and sized as the edge's frames;
/// without it, the transition alone.
#[derive(serde::Deserialize)]
struct BroadcastQuery {
    #[serde(default)]
    frames: Option<u8>,
}

async fn broadcast_key(
    State(state): State<Arc<Bare>>,
    Query(query): Query<BroadcastQuery>,
    key: String,
) -> &'static str {
    let (payment, status) = key.split_once(':').unwrap_or((key.as_str(), "pending"));
    let fields = |kind: &str| {
        let mut fields = serde_json::json!({
            "payment_id": payment, "merchant_id": "bcast", "version": 1, "status": status,
            "previous_status": null, "final": false, "occurred_at": chrono::Utc::now(),
            "trace_id": "0af7651916cd43dd8448eb211c80319c",
        });
        if kind != "transition" {
            fields["checkpoint"] = kind.into();
        }
        fields
    };
    let kinds: &[&str] = if query.frames == Some(3) {
        &["transition", "persisted", "ledger_posted"]
    } else {
        &["transition"]
    };
    for kind in kinds {
        let seq = state.seq.fetch_add(1, Ordering::SeqCst) + 1;
        let mut frame = serde_json::json!({
            "type": "event", "channel": "payments",
            "kind": if *kind == "transition" { "transition" } else { "checkpoint" },
            "position": {"epoch": "bare", "seq": seq}, "prev_seq": seq - 1,
        });
        if let (Some(frame), serde_json::Value::Object(fields)) = (frame.as_object_mut(), fields(kind)) {
            frame.extend(fields);
        }
        let _ = state.events.send(frame.to_string().into());
    }
    "ok"
}

async fn upgrade(State(state): State<Arc<Bare>>, upgrade: WebSocketUpgrade) -> Response {
    upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(64 * 1024)
        .max_frame_size(64 * 1024)
        .on_upgrade(move |socket| session(socket, state))
}

async fn session(socket: WebSocket, state: Arc<Bare>) {
    let (mut tx, mut rx) = socket.split();
    let welcome = r#"{"type":"welcome","session_id":"bare","heartbeat_ms":120000}"#;
    if tx.send(Message::Text(welcome.into())).await.is_err() {
        return;
    }
    // The first message subscribes; everything after it is ignored.
    let Some(Ok(Message::Text(first))) = rx.next().await else {
        return;
    };
    let channel = serde_json::from_str::<serde_json::Value>(&first)
        .ok()
        .and_then(|v| v["channel"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "payments".into());
    let mut events = state.events.subscribe();
    let seq = state.seq.load(Ordering::SeqCst);
    let subscribed = serde_json::json!({
        "type": "subscribed", "channel": channel, "recovered": false,
        "position": {"epoch": "bare", "seq": seq},
    })
    .to_string();
    if tx.send(Message::Text(subscribed.into())).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(text) => if tx.send(Message::Text(text)).await.is_err() { return },
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            },
            incoming = rx.next() => match incoming {
                Some(Ok(_)) => {}
                _ => return,
            },
        }
    }
}
