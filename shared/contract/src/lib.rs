//! paytrack's wire contract, with no runtime dependencies.
//!
//! Everything a program needs to read or write paytrack's subjects lives here and
//! nowhere else: validated ids, channel keys, stream names and subject builders, every
//! `Nats-Msg-Id` (`msg_id`), the versioned envelopes and the canonical status model. Internal
//! services that only subscribe to our subjects depend on this crate alone; the
//! runtime pieces (configuration, telemetry, auth, HTTP, database) are in
//! `paytrack-shared` beside it.

pub mod channel;
pub mod envelope;
pub mod ids;
pub mod money;
pub mod msg_id;
pub mod readers;
pub mod status;
pub mod subjects;

pub use channel::{ChannelKey, ChannelKeyError};
pub use ids::{DeviceId, FactId, FactIdError, MerchantId, PaymentId, TenantId, Token, UserId};
pub use status::{Status, StatusModel};
