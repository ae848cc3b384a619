//! The sections, each measuring a figure against a ceiling in the same run.

pub mod e2e;
pub mod fanout;
pub mod idle;
pub mod ingest;
pub mod long_lives;
pub mod multi_edge;
pub mod polling;
pub mod projector;
pub mod shape;
pub mod storm;
