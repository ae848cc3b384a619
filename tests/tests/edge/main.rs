//! The edge and its readers: alerts, draining, the SSE fallback, fan-out, presence,
//! the mesh end to end, scale-out, and the reader client and recipes.
//!
//! One test binary, so the whole theme links once and shares one PostgreSQL cluster
//! (a fresh database per test, `paytrack_tests::pg`).

mod edge_alerts;
mod edge_drain;
mod edge_fallback;
mod fanout;
mod mesh;
mod presence;
mod reader_client;
mod reader_recipes;
mod scale_out;
mod tenant_readers;
