//! A client for internal services that read paytrack's payment histories from NATS.
//!
//! It connects as a reader ([`Login`]: a tenant's own reader, `reader-<tenant>`, or
//! the all-tenant `reader`), reads transitions from the readers' mirror with an
//! ordered consumer filtered on the reader's scope, and keeps a [`Cursor`]: the
//! stream position last read and each payment's last version. Reading resumes from
//! the cursor after a dropped connection or a restart of the program (save it, hand
//! it back), delivers no transition twice, and reports a missing version of a
//! payment as a [`Gap`], never silently.
//!
//! ```no_run
//! # async fn run() -> Result<(), paytrack_reader::ReadError> {
//! use paytrack_reader::{Cursor, Login, PaymentHistories, ReadError};
//! let tenant = paytrack_contract::TenantId::new("acme").expect("a tenant id");
//! let login = Login::tenant(tenant.clone(), "the reader's password".into());
//! let client = paytrack_reader::connect("nats://127.0.0.1:14222", &login).await?;
//! let mut histories = PaymentHistories::new(client, login.scope(), Cursor::beginning());
//! loop {
//!     match histories.next().await {
//!         Ok(entry) => println!("{} v{} {:?}", entry.transition.payment_id, entry.transition.version, entry.transition.status),
//!         Err(ReadError::Gap(gap)) => eprintln!("missing history: {gap}"),
//!         Err(ReadError::Interrupted(why)) => eprintln!("reconnecting: {why}"),
//!         Err(other) => return Err(other),
//!     }
//! }
//! # }
//! ```

mod connect;
mod cursor;
mod histories;

pub use crate::connect::{Login, Scope, connect};
pub use crate::cursor::{Cursor, Gap, Verdict};
pub use crate::histories::{Entry, PaymentHistories, ReadError};
