//! A stream message rendered as a channel event (unrelated to the projector's consumer of
//! the status history), and the error a subscribe reports when the history it needs
//! cannot be read now.

use paytrack_shared::envelope::{self, Checkpoint, CheckpointKind, Transition};
use paytrack_shared::subjects;
use serde_json::{Map, Value, json};

/// Why a channel's history cannot be read now.
#[derive(Debug, thiserror::Error)]
#[error("history unavailable: {0}")]
pub struct HistoryError(String);

/// A [`HistoryError`] from any displayable cause.
pub fn unavailable(e: impl std::fmt::Display) -> HistoryError {
    HistoryError(e.to_string())
}
/// Why a payment is not final at this transition (a transition never is: finality
/// comes with its checkpoints), in the words REST uses: `not_terminal`,
/// `rail_unknown`, `return_window_open_until:<time>`, or `awaiting_ledger_posted`
/// when only the checkpoints are missing.
fn not_final_because(t: &Transition) -> String {
    let model = paytrack_shared::StatusModel::get();
    let rail = t.terms.rail.as_deref();
    if model.is_terminal(t.status, rail) {
        return "awaiting_ledger_posted".to_owned();
    }
    if let Some(closes) = model.final_after(t.status, rail, t.occurred_at) {
        return format!("return_window_open_until:{}", closes.format("%Y-%m-%dT%H:%M:%SZ"));
    }
    let terminal_somewhere = model
        .definition(t.status)
        .is_some_and(|d| d.terminal.values().any(|terminal| *terminal));
    if rail.is_none() && terminal_somewhere {
        "rail_unknown".to_owned()
    } else {
        "not_terminal".to_owned()
    }
}

/// An alert (`kind: alert`, its own kind as `alert_kind`, since `kind` names the
/// event's kind on the wire) or an acknowledgement (`kind: alert_ack`); None when
/// `subject` is not on PAYTRACK_ALERT, `Some(None)` when it cannot be read.
fn render_alert(subject: &str, payload: &[u8]) -> Option<Option<(String, Map<String, Value>)>> {
    let ack = subjects::AlertSubject::parse(subject)?.kind == subjects::ALERT_ACK;
    let Ok(Value::Object(mut map)) = serde_json::from_slice::<Value>(payload) else {
        return Some(None);
    };
    if ack {
        return Some(Some(("alert_ack".to_owned(), map)));
    }
    if let Some(kind) = map.remove("kind") {
        map.insert("alert_kind".into(), kind);
    }
    Some(Some(("alert".to_owned(), map)))
}

/// Turns a stream message into an event's `kind` and fields. Unknown or unreadable
/// messages yield None and are skipped (they are still counted in `prev_seq`).
pub fn render(subject: &str, payload: &[u8]) -> Option<(String, Map<String, Value>)> {
    if let Some(rendered) = render_alert(subject, payload) {
        return rendered;
    }
    let (kind, value) = match subjects::status_stream_kind(subject) {
        Some("transition") => {
            let t: Transition = envelope::decode(payload).ok()?;
            let mut value = json!({
                "payment_id": t.payment_id,
                "merchant_id": t.merchant_id,
                "version": t.version,
                "status": t.status,
                "previous_status": t.previous_status,
                "final": false,
                "rail": t.terms.rail,
                "not_final_because": not_final_because(&t),
                "occurred_at": t.occurred_at,
                "trace_id": t.trace_id,
            });
            // Where the money is, and what moved it, as the envelope carries them.
            if let Some(amounts) = &t.amounts {
                value["amounts"] = json!(amounts);
            }
            if !t.movements.is_empty() {
                value["movements"] = json!(t.movements);
            }
            ("transition", value)
        }
        Some("checkpoint") => {
            let c: Checkpoint = envelope::decode(payload).ok()?;
            // The projector decides finality (it knows the rail); the edge forwards it
            // from the checkpoints that may carry it (`persisted` never does).
            let is_final = c.is_final
                && matches!(
                    c.checkpoint,
                    CheckpointKind::LedgerPosted | CheckpointKind::ReturnWindowClosed
                );
            let value = json!({
                "payment_id": c.payment_id,
                "merchant_id": c.merchant_id,
                "version": c.version,
                "status": c.status,
                "checkpoint": c.checkpoint,
                "final": is_final,
                "occurred_at": c.recorded_at,
                "trace_id": c.trace_id,
            });
            ("checkpoint", value)
        }
        _ => ("push", serde_json::from_slice::<Value>(payload).ok()?),
    };
    match value {
        Value::Object(map) => Some((kind.to_owned(), map)),
        other => {
            let mut map = Map::new();
            map.insert("data".into(), other);
            Some((kind.to_owned(), map))
        }
    }
}
