//! Publishing the alerts the projector raises inside its own transactions
//! (`history_lost`, `history_diverged`) on PAYTRACK_ALERT, the path every other
//! alert takes: the live `alerts` channel shows them, and a rebuild restores them
//! from the stream like the rest.
//!
//! Such an alert is first a row of `alerts` written in the transaction that noticed
//! the loss, with `alert_seq` 0 (no position in PAYTRACK_ALERT yet): that row is the
//! outbox. Every [`DRAIN_EVERY`] the owed rows are published as [`Alert`] envelopes
//! under a message id made from their alert id, so a publish repeated after a crash
//! adds nothing, and each acknowledged one records the sequence it was stored at.
//! The alert consumer's insert of the same alert changes nothing (alerts are keyed
//! by their id).

use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage};
use chrono::{DateTime, Utc};
use paytrack_shared::envelope::{self, Alert, ENVELOPE_VERSION};
use paytrack_shared::{MerchantId, PaymentId, TenantId, msg_id, subjects};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// How often owed alerts are looked for.
pub const DRAIN_EVERY: Duration = Duration::from_secs(1);
/// Most alerts published in one pass.
const PER_PASS: i64 = 500;

/// The kinds the projector raises itself and publishes from the outbox.
pub const KINDS: [&str; 2] = [crate::tail_loss::KIND, crate::divergence::KIND];

/// Why owed alerts could not be published.
#[derive(Debug, thiserror::Error)]
pub enum AlertOutboxError {
    /// The database could not be read or updated.
    #[error("alert outbox: {0}")]
    Database(#[from] sqlx::Error),
    /// JetStream did not take or acknowledge a publish.
    #[error("publish alert {alert_id}: {source}")]
    Publish {
        /// The alert.
        alert_id: String,
        /// Why.
        #[source]
        source: async_nats::Error,
    },
}

/// An `alerts` row owed to PAYTRACK_ALERT.
#[derive(sqlx::FromRow)]
struct Owed {
    tenant: String,
    alert_id: String,
    kind: String,
    payment_id: String,
    merchant_id: Option<String>,
    detail: String,
    evidence: String,
    raised_at: DateTime<Utc>,
    trace_id: String,
}

/// Publishes owed alerts every [`DRAIN_EVERY`] until `shutdown`; a failed pass is
/// logged and tried again.
pub async fn drain(db: PgPool, js: jetstream::Context, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(DRAIN_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match publish_owed(&db, &js).await {
            Ok(0) => {}
            Ok(published) => tracing::info!(published, "projector alerts published on PAYTRACK_ALERT"),
            Err(error) => tracing::warn!(%error, "projector alerts not published; retrying"),
        }
    }
}

/// Publishes the owed alerts (oldest first, at most a pass's worth) and records
/// where each was stored; returns how many were published.
pub async fn publish_owed(db: &PgPool, js: &jetstream::Context) -> Result<usize, AlertOutboxError> {
    let owed: Vec<Owed> = sqlx::query_as(
        "SELECT tenant, alert_id, kind, payment_id, merchant_id, detail, evidence, raised_at, trace_id
         FROM alerts WHERE alert_seq = 0 AND kind = ANY($1) AND payment_id IS NOT NULL
         ORDER BY raised_at LIMIT $2",
    )
    .bind(KINDS.to_vec())
    .bind(PER_PASS)
    .fetch_all(db)
    .await?;
    let mut published = 0;
    for row in owed {
        let (Ok(tenant), Ok(payment_id)) = (TenantId::new(&row.tenant), PaymentId::new(&row.payment_id)) else {
            tracing::error!(tenant = %row.tenant, payment_id = %row.payment_id, alert_id = %row.alert_id,
                "an owed alert names no valid tenant or payment; left unpublished");
            continue;
        };
        let alert = Alert {
            v: ENVELOPE_VERSION,
            alert_id: row.alert_id.clone(),
            kind: row.kind.clone(),
            tenant: tenant.clone(),
            payment_id: payment_id.clone(),
            merchant_id: row.merchant_id.as_deref().and_then(|m| MerchantId::new(m).ok()),
            detail: row.detail,
            evidence: row.evidence,
            raised_at: row.raised_at,
            trace_id: row.trace_id,
        };
        let message = PublishMessage::build()
            .message_id(msg_id::alert(&tenant, &payment_id, &row.kind, &row.alert_id))
            .payload(envelope::encode(&alert));
        let publish_error = |source: async_nats::Error| AlertOutboxError::Publish {
            alert_id: row.alert_id.clone(),
            source,
        };
        let ack = js
            .send_publish(subjects::alert(Some(&tenant), &row.kind), message)
            .await
            .map_err(|e| publish_error(e.into()))?
            .await
            .map_err(|e| publish_error(e.into()))?;
        let seq = i64::try_from(ack.sequence).unwrap_or(i64::MAX);
        sqlx::query("UPDATE alerts SET alert_seq = $3 WHERE tenant = $1 AND alert_id = $2 AND alert_seq = 0")
            .bind(tenant.as_str())
            .bind(&row.alert_id)
            .bind(seq)
            .execute(db)
            .await?;
        paytrack_shared::metrics::alert_raised(&row.kind);
        tracing::info!(tenant = %tenant, payment_id = %payment_id, trace_id = %alert.trace_id,
            kind = %row.kind, alert_seq = seq, "alert published on PAYTRACK_ALERT");
        published += 1;
    }
    Ok(published)
}
