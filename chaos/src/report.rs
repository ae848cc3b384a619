//! The fault table (`bench/results/faults.md`), one row per phase.

use std::fmt::Write;

use crate::run::Outcome;

/// Renders the suites' rows as the fault table, with how to reproduce them and what
/// the load and the clients did.
pub fn fault_table(outcomes: &[Outcome], command: &str) -> String {
    let mut out = String::from("# Fault table\n\n");
    let _ = writeln!(
        out,
        "Produced by `{command}` on {} (machine time). Each row is one phase of a run on the\n\
         production shape (three nats-server 2.15.1 nodes, every stream and bucket R3, two\n\
         replicas of each service as separate processes, two edges, PostgreSQL with fsync on)\n\
         under steady load. Counts are of payments created during the phase; `acked` counts\n\
         create commands and webhook deliveries answered 2xx. See docs/chaos.md for what each\n\
         column means and docs/durability.md for the sync policy.\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    );
    out.push_str(
        "| fault | seed | sync | load held | acked | lost | recovered | duplicated | forked | client gaps | diverged | ledger unbalanced | time to recover | note |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for row in outcomes.iter().flat_map(|o| &o.rows) {
        let c = &row.counts;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row.fault,
            row.seed,
            row.sync.label(),
            if row.load_held { "yes" } else { "no" },
            c.acked,
            c.lost,
            c.recovered,
            c.duplicated,
            c.forked,
            c.client_gaps,
            c.diverged,
            c.unbalanced,
            row.recovery
                .map(|d| format!("{:.1} s", d.as_secs_f64()))
                .unwrap_or_else(|| "-".to_owned()),
            row.note.replace('|', "/"),
        );
    }
    out.push_str("\nLoad and clients per run:\n\n");
    for outcome in outcomes {
        let _ = writeln!(out, "- {}", outcome.summary);
    }
    out
}
