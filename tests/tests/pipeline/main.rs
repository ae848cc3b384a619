//! From fact to ledger: the reconciler's chain and outcomes, poison and parked
//! facts, rails and sweeps, tie-breaks, the projector's checkpoints and ledger,
//! money, resilience and the service lifecycle, scenarios and the provider simulator.
//!
//! One test binary, so the whole theme links once and shares one PostgreSQL cluster
//! (a fresh database per test, `paytrack_tests::pg`).

mod bitflip;
mod chain;
mod checkpoint_outbox;
mod claim_lookup;
mod fact_window;
mod ledger;
mod ledger_bench;
mod lifecycle;
mod lost_claim;
mod money;
mod outcomes;
mod poison;
mod rail;
mod resilience;
mod rewrite;
mod scenarios;
mod simulated_providers;
mod simulator;
mod sweep;
mod tiebreak;
