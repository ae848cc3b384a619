//! paytrack's provider simulator (being built).
