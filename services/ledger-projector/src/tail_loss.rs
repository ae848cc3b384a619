//! Noticing that PAYTRACK_STATUS lost its tail.
//!
//! When nats-server finds a bad record (a flipped bit, a torn write) in a message
//! block on restart, it cuts the stream at that record: acknowledged transitions that
//! were already projected are gone from the stream, the stream's last sequence moves
//! back and its sequence numbers are given out again (docs/durability-bitflip.md).
//! The server moves the projector's durable consumer back with it, which is how this
//! is seen: the consumer's ack floor, which only ever grows within one stream
//! incarnation, is found lower than before. Then every projected transition past the
//! new floor is looked up in the stream by its sequence; each one the stream no longer
//! holds (its sequence is missing or now holds another message) gets a `history_lost`
//! alert, so an operator checks the payment with its provider. The projection keeps
//! what it has; the projection's position is moved back to the floor, because the
//! sequences past it will be used again by new messages.

use async_nats::jetstream;
use sqlx::PgPool;

use crate::project::Item;

/// The alert kind raised for a projected version the stream no longer holds.
pub const KIND: &str = "history_lost";

/// The most projected transitions looked up after one loss (the newest ones are
/// checked first; a loss larger than this is logged as such).
const MOST_CHECKED: i64 = 10_000;

/// Consecutive projected transitions found still held after which the older ones
/// are taken as intact: the broker cuts a block from a bad record on, so what it
/// loses is one contiguous run of sequences.
const INTACT_RUN: usize = 100;

/// Why a check could not finish.
#[derive(Debug, thiserror::Error)]
pub enum TailLossError {
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The stream could not be read.
    #[error("stream: {0}")]
    Stream(String),
}

/// A projected transition past the floor.
#[derive(Debug, sqlx::FromRow)]
struct Projected {
    tenant: String,
    payment_id: String,
    version: i64,
    status: String,
    status_seq: i64,
    fact_id: String,
    trace_id: String,
}

/// Checks every projected transition of `stream` past `floor` against the stream
/// (all of them: the floor last seen before the loss may have lagged behind what was
/// projected) and raises `history_lost` for each it no longer holds. Answers how many
/// were lost.
pub async fn check(db: &PgPool, js: &jetstream::Context, stream: &str, floor: u64) -> Result<usize, TailLossError> {
    let handle = js
        .get_stream(stream)
        .await
        .map_err(|e| TailLossError::Stream(e.to_string()))?;
    let candidates: Vec<Projected> = sqlx::query_as(
        "SELECT tenant, payment_id, version, status, status_seq, fact_id, trace_id FROM payment_timeline
          WHERE status_seq > $1 ORDER BY status_seq DESC LIMIT $2",
    )
    .bind(i64::try_from(floor).unwrap_or(i64::MAX))
    .bind(MOST_CHECKED)
    .fetch_all(db)
    .await?;
    if candidates.len() as i64 == MOST_CHECKED {
        tracing::error!(floor, "more projected transitions past the floor than are checked");
    }
    let (mut lost, mut held_run) = (0, 0);
    for row in candidates {
        if still_held(&handle, &row).await? {
            held_run += 1;
            if held_run >= INTACT_RUN {
                break;
            }
            continue;
        }
        held_run = 0;
        lost += 1;
        raise(db, stream, &row).await?;
    }
    Ok(lost)
}

/// Whether the stream still holds the newest projected transition. A cheap probe,
/// run every few seconds, for a loss the consumer's floor did not show (new messages
/// took the floor past its old value before it was read). Answers the newest
/// projected transition's sequence and whether it is held (None: nothing projected,
/// or the stream is no longer the incarnation `epoch` the projector reads: a
/// recreated stream is not a damaged one).
pub async fn newest_held(
    db: &PgPool,
    js: &jetstream::Context,
    stream: &str,
    epoch: &str,
) -> Result<Option<(i64, bool)>, TailLossError> {
    let newest: Option<Projected> = sqlx::query_as(
        "SELECT tenant, payment_id, version, status, status_seq, fact_id, trace_id FROM payment_timeline
          ORDER BY status_seq DESC LIMIT 1",
    )
    .fetch_optional(db)
    .await?;
    let Some(newest) = newest else {
        return Ok(None);
    };
    let handle = js
        .get_stream(stream)
        .await
        .map_err(|e| TailLossError::Stream(e.to_string()))?;
    if paytrack_nats::epoch_of(handle.cached_info()) != epoch {
        return Ok(None);
    }
    let held = still_held(&handle, &newest).await?;
    Ok(Some((newest.status_seq, held)))
}

/// Whether the stream still holds `row`'s transition at its sequence.
async fn still_held(stream: &jetstream::stream::Stream, row: &Projected) -> Result<bool, TailLossError> {
    let Ok(seq) = u64::try_from(row.status_seq) else {
        return Ok(false);
    };
    let message = match stream.get_raw_message(seq).await {
        Ok(message) => message,
        Err(error) if error.kind() == jetstream::stream::RawMessageErrorKind::NoMessageFound => return Ok(false),
        Err(error) => return Err(TailLossError::Stream(error.to_string())),
    };
    Ok(match Item::decode(message.subject.as_str(), &message.payload) {
        // By its cause, not its version: a rewrite the projection adopted is projected
        // at a later version than the stream's (divergence.rs), and a fact causes at
        // most one transition of a payment.
        Ok(Item::Transition(t)) => {
            t.tenant.as_str() == row.tenant && t.payment_id.as_str() == row.payment_id && t.cause.fact_id == row.fact_id
        }
        _ => false,
    })
}

/// Stores the `history_lost` alert of `row` (once per version and sequence), with
/// alert sequence 0: owed to PAYTRACK_ALERT, published by `alert_outbox`.
async fn raise(db: &PgPool, stream: &str, row: &Projected) -> Result<(), sqlx::Error> {
    tracing::error!(
        tenant = %row.tenant,
        payment_id = %row.payment_id,
        trace_id = %row.trace_id,
        version = row.version,
        status_seq = row.status_seq,
        "{stream} lost a projected transition"
    );
    metrics::counter!("paytrack_projector_history_lost_total").increment(1);
    let detail = format!(
        "version {} ({}, sequence {} of {stream}) is projected but {stream} no longer holds it: the broker lost \
         it; the reconciler continues from an older version until the payment is checked with its provider",
        row.version, row.status, row.status_seq
    );
    let evidence = serde_json::json!({
        "stream": stream,
        "version": row.version,
        "status": row.status,
        "status_seq": row.status_seq,
        "fact_id": row.fact_id,
    })
    .to_string();
    sqlx::query(
        "INSERT INTO alerts
           (tenant, alert_id, kind, payment_id, merchant_id, detail, evidence, raised_at, trace_id, alert_seq)
         VALUES ($1, $2, $3, $4, (SELECT merchant_id FROM payments WHERE tenant = $1 AND payment_id = $4), $5, $6,
                 now(), $7, 0)
         ON CONFLICT (tenant, alert_id) DO NOTHING",
    )
    .bind(&row.tenant)
    .bind(format!("{KIND}:{}:{}:{}", row.payment_id, row.version, row.status_seq))
    .bind(KIND)
    .bind(&row.payment_id)
    .bind(detail)
    .bind(evidence)
    .bind(&row.trace_id)
    .execute(db)
    .await?;
    Ok(())
}
