//! The common runtime crate every paytrack service builds on.
//!
//! It holds what the services must agree on without importing each other: the
//! identifiers and subject names of the JetStream contract, the versioned message
//! envelopes, the canonical status model (as data), configuration, credentials,
//! telemetry and the shutdown signal.

pub mod auth;
pub mod config;
pub mod db;
pub mod health;
pub mod http;
pub mod metrics;
pub mod openapi;
pub mod problem;
pub mod shutdown;
pub mod telemetry;

// The wire contract lives in `paytrack-contract` (no runtime dependencies); it is
// re-exported so services name it through one crate.
pub use paytrack_contract::{channel, envelope, ids, money, msg_id, readers, status, subjects};

pub use channel::ChannelKey;
pub use ids::{DeviceId, FactId, MerchantId, PaymentId, TenantId, Token, UserId};
pub use status::{Status, StatusModel};
