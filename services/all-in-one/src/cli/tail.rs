//! `paytrack tail <channel>`: follows a channel over ws-edge's WebSocket. Each event
//! is a human line with its position (`epoch:seq`, and the `prev_seq` it continues
//! from, so a gap shows), or with `--json` every frame as received, one per line.
//! Heartbeats are acknowledged. An `error` frame, or a close other than a normal one,
//! ends the command with a non-zero exit instead of waiting forever.

use anyhow::Context;
use futures::{SinkExt, StreamExt};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::cli::api::shown;
use crate::cli::output::{Output, cell};

/// What to follow and for how long.
pub struct TailArgs {
    /// The channel, e.g. `payment:pay_1`, `merchant:m_1`, `payments`, `user:u1`.
    pub channel: String,
    /// Resume after this position.
    pub since: Option<Value>,
    /// Stop after this many events (None: until the socket closes).
    pub count: Option<usize>,
}

/// Parses `--since <epoch>:<seq>`.
pub fn since(raw: &str) -> anyhow::Result<Value> {
    let (epoch, seq) = raw.rsplit_once(':').context("--since is <epoch>:<seq>")?;
    let seq: u64 = seq.parse().context("--since: the seq after ':' is not a number")?;
    Ok(json!({"epoch": epoch, "seq": seq}))
}

/// Subscribes and prints until `count` events, a close, or an error frame.
pub async fn run(ws_url: &str, token: &SecretString, args: TailArgs, out: Output) -> anyhow::Result<()> {
    let mut request = ws_url
        .into_client_request()
        .with_context(|| format!("{} is not a WebSocket URL", shown(ws_url)))?;
    let mut bearer: tokio_tungstenite::tungstenite::http::HeaderValue = format!("Bearer {}", token.expose_secret())
        .parse()
        .context("the token is not a header value")?;
    bearer.set_sensitive(true);
    request.headers_mut().insert("authorization", bearer);
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .with_context(|| format!("connecting to {}", shown(ws_url)))?;
    let mut subscribe = json!({"type": "subscribe", "channel": args.channel});
    if let Some(since) = args.since {
        subscribe["since"] = since;
    }
    socket.send(Message::text(subscribe.to_string())).await?;
    let mut events = 0;
    while let Some(message) = socket.next().await {
        let text = match message.context("the WebSocket failed")? {
            Message::Text(text) => text.to_string(),
            Message::Close(frame) => {
                let (code, reason) =
                    frame.map_or((CloseCode::Normal, String::new()), |f| (f.code, f.reason.to_string()));
                anyhow::ensure!(
                    code == CloseCode::Normal,
                    "the edge closed the session: {} {reason}",
                    u16::from(code)
                );
                return Ok(());
            }
            _ => continue,
        };
        let frame: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if out.json {
            println!("{text}");
        }
        match frame["type"].as_str().unwrap_or("") {
            "event" => {
                events += 1;
                if !out.json {
                    println!("{}", event_line(&frame));
                }
            }
            "subscribed" if !out.json => println!(
                "{} subscribed {} (recovered: {})",
                position(&frame["position"]),
                cell(&frame["channel"]),
                cell(&frame["recovered"])
            ),
            "heartbeat" => {
                socket
                    .send(Message::text(
                        json!({"type": "ack", "positions": frame["positions"]}).to_string(),
                    ))
                    .await?;
            }
            "error" => anyhow::bail!("the edge refused: {} {}", cell(&frame["code"]), cell(&frame["message"])),
            _ => {}
        }
        if args.count.is_some_and(|n| events >= n) {
            let _ = socket.close(None).await;
            return Ok(());
        }
    }
    anyhow::bail!("the WebSocket ended without a close frame")
}

/// `epoch:seq`.
fn position(p: &Value) -> String {
    format!("{}:{}", cell(&p["epoch"]), cell(&p["seq"]))
}

/// One event as a line: its position, what it continues from, and what happened.
fn event_line(frame: &Value) -> String {
    let head = format!("{} prev_seq={}", position(&frame["position"]), cell(&frame["prev_seq"]));
    match frame["kind"].as_str().unwrap_or("?") {
        "transition" => format!(
            "{head} transition {} v{} {} -> {} ({})",
            cell(&frame["payment_id"]),
            cell(&frame["version"]),
            cell(&frame["previous_status"]),
            cell(&frame["status"]),
            cell(&frame["cause"]["rule"])
        ),
        "checkpoint" => format!(
            "{head} checkpoint {} v{} {} {}{}",
            cell(&frame["payment_id"]),
            cell(&frame["version"]),
            cell(&frame["checkpoint"]),
            cell(&frame["status"]),
            if frame["final"] == json!(true) { " final" } else { "" }
        ),
        "push" => format!(
            "{head} push {} {}",
            cell(&frame["push_type"]),
            frame.get("data").map(Value::to_string).unwrap_or_default()
        ),
        other => format!("{head} {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_line_names_its_position_and_move() {
        let frame = json!({"type": "event", "kind": "transition", "position": {"epoch": "e1", "seq": 7},
            "prev_seq": 3, "payment_id": "pay_1", "version": 2, "previous_status": "pending",
            "status": "succeeded", "cause": {"rule": "stripe:payment_intent.succeeded"}});
        assert_eq!(
            event_line(&frame),
            "e1:7 prev_seq=3 transition pay_1 v2 pending -> succeeded (stripe:payment_intent.succeeded)"
        );
        assert!(since("e1:x").is_err());
        assert_eq!(since("e:1:5").ok(), Some(json!({"epoch": "e:1", "seq": 5})));
    }
}
