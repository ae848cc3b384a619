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

/// Opens a pool; it connects lazily so a service can start before the database.
pub fn pool(url: &SecretString, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy(url.expose_secret())
}
