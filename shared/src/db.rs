//! PostgreSQL connection and the schema's migrations.
//!
//! The migrations live in the workspace's `migrations/` and are compiled in, so a
//! binary always carries the schema it expects.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgPool, PgPoolOptions};

/// The schema's migrations, applied by the projector (and the all-in-one binary).
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// The SQL condition "payment `p` is final", for a query over `payments p`: the
/// `checkpoints` row of its current version has both its `persisted` and its
/// `ledger_posted` checkpoint stored in the stream and says final (the projector
/// decided the status terminal on the payment's rail). Finality is read, not kept on
/// the payment, so confirming a checkpoint writes no second version of the payment's
/// row; every reader of `final` uses this one expression.
pub const PAYMENT_IS_FINAL: &str = "EXISTS (SELECT 1 FROM checkpoints c
   WHERE c.tenant = p.tenant AND c.payment_id = p.payment_id AND c.version = p.version
     AND c.is_final AND c.persisted_seq IS NOT NULL AND c.ledger_posted_seq IS NOT NULL)";

/// The SQL expression "which way payment `p` moves money": `payout` for money out
/// (a payout's amounts always carry `paid_minor`), else `payin`.
pub const PAYMENT_DIRECTION: &str = "CASE WHEN p.amounts ? 'paid_minor' THEN 'payout' ELSE 'payin' END";

/// The SQL expression "payout `p`'s status in a payout's own words" (NULL for a
/// payment): `initiated`, `pending` (queued, processing or in transit), `paid`,
/// `failed`, `returned`, `cancelled`, or the canonical status otherwise. The history
/// keeps the canonical statuses, so one state machine, ledger and finality rule
/// serve both directions.
pub const PAYOUT_STATUS: &str = "CASE WHEN p.amounts ? 'paid_minor' THEN
     CASE p.status WHEN 'succeeded' THEN 'paid' WHEN 'held' THEN 'pending' ELSE p.status END
   END";

/// The SQL expression "why payment `p` is not final" (NULL when it is), for a query
/// over `payments p`, read from the same `checkpoints` row as [`PAYMENT_IS_FINAL`]:
/// - `not_terminal`: the status is terminal on no rail (or not on the payment's);
/// - `rail_unknown`: the status would be terminal, but the payment's rail is unknown;
/// - `return_window_open_until:<UTC time>`: a success on a reversible rail whose last
///   return window is still open;
/// - `ledger_unpostable`: terminal, but its amount or currency is unknown, so nothing
///   can be posted;
/// - `awaiting_persisted`, `awaiting_ledger_posted`: final once that checkpoint is
///   stored in the stream.
///
/// The statuses terminal on some rail come from the status model.
pub fn payment_not_final_because() -> String {
    let model = crate::StatusModel::get();
    let terminal: Vec<String> = model
        .statuses
        .iter()
        .filter(|d| d.terminal.values().any(|t| *t))
        .map(|d| format!("'{}'", d.status.as_str()))
        .collect();
    let terminal = if terminal.is_empty() {
        "NULL".to_owned()
    } else {
        terminal.join(", ")
    };
    format!(
        "(SELECT CASE
           WHEN c.version IS NULL OR (c.is_final AND c.persisted_seq IS NULL) THEN 'awaiting_persisted'
           WHEN c.is_final AND c.ledger_posted_seq IS NULL THEN 'awaiting_ledger_posted'
           WHEN c.is_final THEN NULL
           WHEN c.final_after IS NOT NULL
             THEN 'return_window_open_until:' || to_char(c.final_after AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
           WHEN p.status NOT IN ({terminal}) THEN 'not_terminal'
           WHEN p.rail IS NULL THEN 'rail_unknown'
           WHEN NOT c.ledger_posted_due THEN 'ledger_unpostable'
           ELSE 'not_terminal' END
         FROM (SELECT 1) AS one
         LEFT JOIN checkpoints c
           ON c.tenant = p.tenant AND c.payment_id = p.payment_id AND c.version = p.version)"
    )
}

/// Opens a pool; it connects lazily so a service can start before the database.
pub fn pool(url: &SecretString, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy(url.expose_secret())
}
