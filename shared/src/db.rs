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

/// Opens a pool; it connects lazily so a service can start before the database.
pub fn pool(url: &SecretString, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy(url.expose_secret())
}
