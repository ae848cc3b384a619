//! The harness cannot rot: `paytrack-bench --smoke` (tiny sizes) must produce a complete
//! table and every plot. Asserts completeness only, never timing.

use std::process::Command;

#[test]
fn smoke_run_writes_a_complete_table_and_every_plot() -> anyhow::Result<()> {
    let out = tempfile::tempdir()?;
    let status = Command::new(env!("CARGO_BIN_EXE_paytrack-bench"))
        .arg("--smoke")
        .arg("--out")
        .arg(out.path())
        .current_dir(paytrack_tests::workspace_root())
        .status()?;
    assert!(status.success(), "paytrack-bench --smoke failed: {status}");
    let table = std::fs::read_to_string(out.path().join("results.md"))?;
    for header in [
        "| section | size | figure | value | ceiling (same run) | ratio |",
        "- machine:",
        "- paytrack ",
    ] {
        assert!(table.contains(header), "results.md lacks {header:?}:\n{table}");
    }
    assert!(!table.contains("section failed"), "a section failed:\n{table}");
    // The run is the system as `make up` runs it, and the results say so.
    for setting in [
        "- PostgreSQL: fsync=on, synchronous_commit=on, full_page_writes=on",
        "- logs: paytrack at its default level (info)",
        "- client heartbeats: every session answers each heartbeat with its acks; heartbeat_ms=15000 (the default)",
        "- load duration: ",
    ] {
        assert!(
            table.contains(setting),
            "results.md does not state {setting:?}:\n{table}"
        );
    }
    // The correctness checks are in the table, each at 0 (the run fails otherwise).
    for check in ["gaps", "duplicates", "unbalanced ledger entries", "lost acks"] {
        let row = table
            .lines()
            .find(|l| l.starts_with("| 7. Correctness |") && l.contains(&format!("| {check} |")))
            .unwrap_or_else(|| panic!("no correctness row {check:?}:\n{table}"));
        assert!(row.contains("| 0 |"), "correctness check {check:?} is not 0: {row}");
    }
    for section in [
        "1. Ingest",
        "2. End to end",
        "3. Fan-out",
        "4. Reconnect storm",
        "5. Projector",
        "6. Polling baseline",
        "9. Long lives",
        "10. Idle sessions",
    ] {
        let rows = table
            .lines()
            .filter(|l| l.starts_with(&format!("| {section} |")))
            .count();
        assert!(rows >= 2, "section {section} has {rows} rows:\n{table}");
    }
    // Every row has a value, and every figure was measured at two sizes at least.
    for line in table
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| section"))
    {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        assert!(cells.len() >= 7 && !cells[4].is_empty(), "row without a value: {line}");
        assert!(
            !cells[4].contains("NaN") && !cells[4].contains("inf"),
            "row with no measure: {line}"
        );
    }
    for plot in [
        "ingest.png",
        "e2e.png",
        "fanout_memory.png",
        "fanout_broadcast.png",
        "storm.png",
        "storm_sessions.png",
        "projector.png",
        "polling.png",
    ] {
        let bytes = std::fs::read(out.path().join(plot))?;
        assert!(bytes.starts_with(b"\x89PNG"), "{plot} is not a PNG");
        assert!(table.contains(&format!("]({plot})")), "results.md does not show {plot}");
    }
    Ok(())
}
