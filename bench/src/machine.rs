//! The machine, versions and commit a run is reported with.

use std::process::Command;

fn output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// Markdown lines: mode, date, CPU, cores, memory, kernel, versions, commit.
pub fn describe(mode: &str) -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split(':').nth(1)))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    let nats = paytrack_tests::nats::binary()
        .map(|b| output(&b.to_string_lossy(), &["--version"]))
        .unwrap_or_else(|_| "unknown".into());
    let pg_bin = std::env::var("PAYTRACK_PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into());
    let postgres = output(&format!("{pg_bin}/postgres"), &["--version"]);
    let commit = output("git", &["describe", "--always", "--dirty", "--abbrev=12"]);
    format!(
        "- mode: {mode}\n- date: {}\n- machine: {cpu}, {cores} cores, {mem_gib:.1} GiB, Linux {}\n- paytrack {} at commit `{commit}`; {}; {nats}; {postgres}\n- open-files limit (hard): {}\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        output("uname", &["-r"]),
        env!("CARGO_PKG_VERSION"),
        output("rustc", &["--version"]),
        output("sh", &["-c", "ulimit -Hn"]),
    )
}
