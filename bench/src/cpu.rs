//! Where the cores went during a measurement: CPU time per process group, read from
//! `/proc`, so a figure that misses its target says whether the machine was saturated
//! and by whom (the profile a note can point at without a profiler).

use std::collections::BTreeMap;
use std::time::Instant;

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`; 100 on
/// every Linux this runs on).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU time per group at one instant.
pub struct CpuSample {
    at: Instant,
    ticks: BTreeMap<&'static str, u64>,
}

/// The groups a sample adds processes into.
pub const GROUPS: [&str; 5] = ["nats-server", "postgres", "edge", "mesh+clients", "other"];

impl CpuSample {
    /// Every process's user+system time now, grouped: nats-server and postgres by
    /// name, the edge under test by `edge_pid`, this process (the in-process services
    /// and the load generators) as `mesh+clients`, the rest as `other`.
    pub fn now(edge_pid: Option<u32>) -> CpuSample {
        let own = std::process::id();
        let mut ticks: BTreeMap<&'static str, u64> = GROUPS.iter().map(|g| (*g, 0)).collect();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let Some((comm, used)) = stat_of(pid) else { continue };
            let group = if pid == own {
                "mesh+clients"
            } else if Some(pid) == edge_pid {
                "edge"
            } else if comm == "nats-server" {
                "nats-server"
            } else if comm == "postgres" {
                "postgres"
            } else {
                "other"
            };
            *ticks.entry(group).or_default() += used;
        }
        CpuSample {
            at: Instant::now(),
            ticks,
        }
    }

    /// Cores each group used on average between `self` and `later` (a process that
    /// ended meanwhile is not counted).
    pub fn cores_until(&self, later: &CpuSample) -> Vec<(&'static str, f64)> {
        let seconds = later.at.duration_since(self.at).as_secs_f64().max(1e-3);
        GROUPS
            .iter()
            .map(|g| {
                let before = self.ticks.get(g).copied().unwrap_or(0);
                let after = later.ticks.get(g).copied().unwrap_or(0);
                (*g, after.saturating_sub(before) as f64 / TICKS_PER_SECOND / seconds)
            })
            .collect()
    }
}

/// The process ids of this process's children named `comm` (the mesh's own
/// nats-server, apart from any other on the machine).
pub fn own_children(comm: &str) -> Vec<u32> {
    let own = std::process::id();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .is_some_and(|stat| {
                    let close = stat.rfind(')').unwrap_or(0);
                    let name = stat.find('(').and_then(|open| stat.get(open + 1..close));
                    // After comm: state, then the parent's pid.
                    let parent = stat.get(close + 2..).and_then(|rest| rest.split(' ').nth(1));
                    name == Some(comm) && parent.and_then(|p| p.parse::<u32>().ok()) == Some(own)
                })
        })
        .collect()
}

/// Seconds of CPU (user+system) `pids` have used so far, together.
pub fn cpu_seconds(pids: &[u32]) -> f64 {
    pids.iter()
        .filter_map(|pid| stat_of(*pid))
        .map(|(_, ticks)| ticks as f64 / TICKS_PER_SECOND)
        .sum()
}

/// `comm` and utime+stime (ticks) of `/proc/<pid>/stat`.
fn stat_of(pid: u32) -> Option<(String, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm is in parentheses and may hold spaces; the fields after it are plain.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_owned();
    let rest: Vec<&str> = stat.get(close + 2..)?.split(' ').collect();
    // After comm: state is field 3, utime 14 and stime 15 (1-based in proc(5)).
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    Some((comm, utime + stime))
}

/// "nats-server 0.62, postgres 0.31, …" for a report cell.
pub fn describe(cores: &[(&'static str, f64)]) -> String {
    let total: f64 = cores.iter().map(|(_, c)| c).sum();
    let parts: Vec<String> = cores
        .iter()
        .filter(|(_, c)| *c >= 0.005)
        .map(|(g, c)| format!("{g} {c:.2}"))
        .collect();
    format!("{} (total {total:.2})", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_counted_as_the_mesh() {
        // Burn 200 ms of this process's own CPU (however busy the machine is, so the
        // check counts CPU time, not a share of wall time).
        let own_ticks = || stat_of(std::process::id()).map_or(0, |(_, ticks)| ticks);
        let before = CpuSample::now(None);
        let started = Instant::now();
        let target = own_ticks() + 20;
        let mut x = 0u64;
        while own_ticks() < target && started.elapsed() < std::time::Duration::from_secs(60) {
            let until = Instant::now() + std::time::Duration::from_millis(5);
            while Instant::now() < until {
                x = x.wrapping_mul(31).wrapping_add(7);
            }
        }
        std::hint::black_box(x);
        let after = CpuSample::now(None);
        let seconds = started.elapsed().as_secs_f64();
        let cores = before.cores_until(&after);
        let mesh = cores
            .iter()
            .find(|(g, _)| *g == "mesh+clients")
            .map_or(0.0, |(_, c)| *c);
        assert!(mesh * seconds >= 0.15, "{seconds:.2} s: {cores:?}");
        assert!(describe(&cores).contains("mesh+clients"));
    }
}
