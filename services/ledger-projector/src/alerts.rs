//! Storing every record of PAYTRACK_ALERT so operators can list and acknowledge
//! them (`GET /v1/alerts`): payment alerts (`unclear_pending`, `source_mismatch`,
//! `trace_gap`, and the money's: `dispute_opened`, `captured_after_failure`,
//! `refund_failed`, `investigation_required`), `dead_letter` alerts of parked messages,
//! `consumer_rewound` alerts of consumers found past their stream's end, and operators'
//! acknowledgements (`paytrack.alert.<tenant>._ack`). The live consumer and a
//! rebuild both go through [`apply`], so a rebuild ends with the same rows.

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use paytrack_nats::{Delivery, HandleError};
use paytrack_shared::envelope::{self, Alert, AlertAck, ConsumerRewound, DeadLetter};
use paytrack_shared::subjects;
use sqlx::PgPool;
use tracing::Instrument;

use crate::{db_error, sequence};

/// Text PostgreSQL can hold (a NUL cannot be stored in TEXT).
fn clean(s: &str) -> String {
    s.replace('\0', "\u{FFFD}")
}

/// Stores one record of PAYTRACK_ALERT, by the kind its subject names; a repeat is
/// a no-op (alerts are keyed by their id, acknowledgements by their alert's).
pub async fn apply(db: &PgPool, message: &jetstream::Message, consumer: &str) -> Result<(), HandleError> {
    let kind = subjects::AlertSubject::parse(&message.subject).map_or("", |s| s.kind);
    match kind {
        subjects::ALERT_ACK => {
            let delivery = Delivery::<AlertAck>::open(message, consumer)
                .map_err(|e| HandleError::poison("open the acknowledgement", e))?;
            let span = delivery.span.clone();
            apply_ack(db, delivery).instrument(span).await
        }
        subjects::ALERT_DEAD_LETTER => {
            let info = message
                .info()
                .map_err(|e| HandleError::poison("read the message's position", e.to_string()))?;
            let seq = info.stream_sequence;
            let dead: DeadLetter =
                envelope::decode(&message.payload).map_err(|e| HandleError::poison("decode the dead letter", e))?;
            let span = tracing::info_span!("consume", consumer, stream_seq = seq, tenant = ?dead.tenant);
            apply_dead_letter(db, seq, &dead).instrument(span).await
        }
        subjects::ALERT_CONSUMER_REWOUND => {
            let seq = message
                .info()
                .map_err(|e| HandleError::poison("read the message's position", e.to_string()))?
                .stream_sequence;
            let rewound: ConsumerRewound =
                envelope::decode(&message.payload).map_err(|e| HandleError::poison("decode the rewind", e))?;
            let span = tracing::info_span!("consume", consumer, stream_seq = seq, rewound = %rewound.consumer);
            apply_consumer_rewound(db, seq, &rewound).instrument(span).await
        }
        _ => {
            let delivery =
                Delivery::<Alert>::open(message, consumer).map_err(|e| HandleError::poison("open the alert", e))?;
            let span = delivery.span.clone();
            apply_alert(db, delivery).instrument(span).await
        }
    }
}

/// Stores one payment alert.
async fn apply_alert(db: &PgPool, delivery: Delivery<Alert>) -> Result<(), HandleError> {
    let seq = sequence(delivery.stream_seq)?;
    let a = &delivery.envelope;
    sqlx::query(
        "INSERT INTO alerts
           (tenant, alert_id, kind, payment_id, merchant_id, detail, evidence, raised_at, trace_id, alert_seq)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (tenant, alert_id) DO NOTHING",
    )
    .bind(a.tenant.as_str())
    .bind(clean(&a.alert_id))
    .bind(clean(&a.kind))
    .bind(a.payment_id.as_str())
    .bind(a.merchant_id.as_ref().map(|m| m.as_str().to_owned()))
    .bind(clean(&a.detail))
    .bind(clean(&a.evidence))
    .bind(a.raised_at)
    .bind(&a.trace_id)
    .bind(seq)
    .execute(db)
    .await
    .map_err(db_error)?;
    tracing::info!(tenant = %a.tenant, payment_id = %a.payment_id, kind = %a.kind, "alert stored");
    Ok(())
}

/// Stores the `dead_letter` alert of a parked message: no payment; the detail says
/// what was parked, by whom and why, and the evidence is where the parked copy is.
/// Its id is the parked copy's (`dead:<stream>:<consumer>:<seq>`), or, when the
/// original's position was unknown, the alert's own position.
async fn apply_dead_letter(db: &PgPool, alert_seq: u64, dead: &DeadLetter) -> Result<(), HandleError> {
    let seq = sequence(alert_seq)?;
    let alert_id = match dead.stream_seq {
        Some(original) => paytrack_shared::msg_id::dead_letter(&dead.stream, &dead.consumer, original),
        None => format!("dead:{}:{}:alert{alert_seq}", dead.stream, dead.consumer),
    };
    let tenant = dead.tenant.as_ref().map_or(subjects::NO_TENANT, |t| t.as_str());
    let position = dead.stream_seq.map(|s| format!(" (sequence {s})")).unwrap_or_default();
    let detail = format!(
        "{consumer} parked {subject} of {stream}{position} after {delivered} deliveries: {error}",
        consumer = dead.consumer,
        subject = dead.subject,
        stream = dead.stream,
        delivered = dead.delivered,
        error = dead.error,
    );
    store_operational(
        db,
        OperationalAlert {
            tenant,
            alert_id: &alert_id,
            kind: subjects::ALERT_DEAD_LETTER,
            detail: &detail,
            evidence: &dead.dead_subject,
            raised_at: dead.parked_at,
            seq,
        },
    )
    .await?;
    tracing::info!(tenant, alert_id, "dead-letter alert stored");
    Ok(())
}

/// Stores the `consumer_rewound` alert of a consumer found past its stream's end: no
/// tenant (`_`), no payment; the detail names the consumer and both positions, the
/// evidence is the stream. Its id is the one it was published under, so the replicas
/// that noticed the same overrun store one alert.
async fn apply_consumer_rewound(db: &PgPool, alert_seq: u64, rewound: &ConsumerRewound) -> Result<(), HandleError> {
    let seq = sequence(alert_seq)?;
    let alert_id = paytrack_shared::msg_id::consumer_rewound(
        &rewound.stream,
        &rewound.consumer,
        rewound.delivered,
        rewound.stream_last,
    );
    let detail = format!(
        "{consumer} on {stream} had delivered up to sequence {delivered} (acknowledged up to {ack_floor}), \
         past the stream's last sequence {last}; rewound to deliver again from sequence {restart}",
        consumer = rewound.consumer,
        stream = rewound.stream,
        delivered = rewound.delivered,
        ack_floor = rewound.ack_floor,
        last = rewound.stream_last,
        restart = rewound.restart_at,
    );
    store_operational(
        db,
        OperationalAlert {
            tenant: subjects::NO_TENANT,
            alert_id: &alert_id,
            kind: subjects::ALERT_CONSUMER_REWOUND,
            detail: &detail,
            evidence: &rewound.stream,
            raised_at: rewound.rewound_at,
            seq,
        },
    )
    .await?;
    tracing::warn!(alert_id, "consumer_rewound alert stored");
    Ok(())
}

/// An alert about the pipeline rather than a payment (a parked message, a rewound
/// consumer): it names no payment, no merchant and no trace.
struct OperationalAlert<'a> {
    /// The tenant it concerns, or `_` when it concerns none.
    tenant: &'a str,
    /// Its id; a repeat under the same id is a no-op.
    alert_id: &'a str,
    /// Its kind, as its subject names it.
    kind: &'a str,
    /// What happened, for an operator.
    detail: &'a str,
    /// Where to look: the parked copy's subject, the stream.
    evidence: &'a str,
    /// When it happened.
    raised_at: DateTime<Utc>,
    /// Its position in PAYTRACK_ALERT.
    seq: i64,
}

/// Stores an operational alert once (keyed by tenant and id).
async fn store_operational(db: &PgPool, alert: OperationalAlert<'_>) -> Result<(), HandleError> {
    sqlx::query(
        "INSERT INTO alerts
           (tenant, alert_id, kind, payment_id, merchant_id, detail, evidence, raised_at, trace_id, alert_seq)
         VALUES ($1, $2, $3, NULL, NULL, $4, $5, $6, '', $7)
         ON CONFLICT (tenant, alert_id) DO NOTHING",
    )
    .bind(alert.tenant)
    .bind(clean(alert.alert_id))
    .bind(alert.kind)
    .bind(clean(alert.detail))
    .bind(clean(alert.evidence))
    .bind(alert.raised_at)
    .bind(alert.seq)
    .execute(db)
    .await
    .map_err(db_error)?;
    Ok(())
}

/// Stores an operator's acknowledgement; the first one of an alert stands. One of
/// an alert never stored (which ingest does not publish) changes nothing.
async fn apply_ack(db: &PgPool, delivery: Delivery<AlertAck>) -> Result<(), HandleError> {
    let a = &delivery.envelope;
    let stored = sqlx::query(
        "INSERT INTO alert_acks (tenant, alert_id, actor, note, acked_at)
         SELECT tenant, alert_id, $3, $4, $5 FROM alerts WHERE tenant = $1 AND alert_id = $2
         ON CONFLICT (tenant, alert_id) DO NOTHING",
    )
    .bind(a.tenant.as_str())
    .bind(clean(&a.alert_id))
    .bind(clean(&a.actor))
    .bind(a.note.as_deref().map(clean))
    .bind(a.acked_at)
    .execute(db)
    .await
    .map_err(db_error)?;
    if stored.rows_affected() == 1 {
        tracing::info!(tenant = %a.tenant, alert_id = %a.alert_id, actor = %a.actor, "alert acknowledged");
    } else {
        tracing::info!(tenant = %a.tenant, alert_id = %a.alert_id, "acknowledgement already stored, or of no stored alert");
    }
    Ok(())
}
