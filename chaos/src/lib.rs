//! The production shape on loopback under faults, and a checker that trusts nothing
//! of the product.
//!
//! `paytrack-chaos faults` starts three nats-server nodes whose routes cross fault
//! [`proxy`] links, lays out every stream and bucket at R3, starts PostgreSQL with
//! fsync on and every service as its own process (two replicas each, two edges), runs
//! the simulator's providers and REST commands as steady load with WebSocket and SSE
//! clients following, injects each fault alone and then a seeded random schedule, and
//! lets the [`checker`] count what was lost, applied twice, forked, silently skipped
//! or left unbalanced. `paytrack-chaos throughput` measures what each durability
//! choice costs.

pub mod checker;
pub mod clients;
pub mod cluster;
pub mod faults;
pub mod load;
pub mod postgres;
pub mod proxy;
pub mod report;
pub mod run;
pub mod services;
pub mod shape;
pub mod throughput;
