//! The sizes of a run: `--smoke` (seconds, inside the test suite) or full.

use std::time::Duration;

/// How long the full run sustains each end-to-end load: long enough to reach the
/// saturation a burst of a few seconds hides.
pub const FULL_LOAD_SECS: u64 = 60;

/// Every size the sections use.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Smoke mode (tiny sizes).
    pub smoke: bool,
    /// Webhooks per ingest measurement, one measurement per size.
    pub ingest_sizes: Vec<usize>,
    /// Requests in flight for ingest and its ceiling.
    pub ingest_concurrency: usize,
    /// Subscribed sessions of the end-to-end section.
    pub e2e_sessions: Vec<usize>,
    /// Offered loads, transitions per second.
    pub e2e_loads: Vec<u32>,
    /// How long each end-to-end load is sustained (60 s in the full run).
    pub e2e_step: Duration,
    /// Sessions held by one process.
    pub fanout_sizes: Vec<usize>,
    /// Several edge processes together (`--multi-edge`): total sessions.
    pub multi_edge_sizes: Vec<usize>,
    /// Reconnect storms: (sessions, outage).
    pub storms: Vec<(usize, Duration)>,
    /// Transitions per second flowing during a storm.
    pub storm_rate: u32,
    /// Transitions preloaded for the projector.
    pub projector_sizes: Vec<usize>,
    /// Polling clients.
    pub polling_clients: Vec<usize>,
    /// Their polling period.
    pub polling_period: Duration,
    /// How long transitions flow while they poll (one per client, evenly spread).
    pub polling_duration: Duration,
    /// Handshakes a client process runs at once.
    pub connect_concurrency: usize,
    /// Subscribed sessions of the production shape's end-to-end figure, spread over
    /// its two edges (fewer than section 2's largest: every service, three nats nodes
    /// and the clients share the machine).
    pub shape_sessions: Vec<usize>,
    /// Sessions one edge opens and closes per long-lives cycle.
    pub long_lives_sessions: usize,
    /// Open/close cycles of the long-lives section.
    pub long_lives_cycles: usize,
    /// How long idle sessions are watched (section 10).
    pub idle_window: Duration,
}

impl Plan {
    /// Seconds-long sizes for the test suite.
    pub fn smoke() -> Plan {
        Plan {
            smoke: true,
            ingest_sizes: vec![30, 60],
            ingest_concurrency: 8,
            e2e_sessions: vec![10, 20],
            e2e_loads: vec![10, 30],
            e2e_step: Duration::from_secs(1),
            fanout_sizes: vec![20, 50],
            multi_edge_sizes: vec![40, 80],
            storms: vec![
                (10, Duration::from_millis(300)),
                (20, Duration::from_millis(300)),
                (20, Duration::from_secs(1)),
            ],
            storm_rate: 20,
            projector_sizes: vec![30, 60],
            polling_clients: vec![10, 20],
            polling_period: Duration::from_secs(1),
            polling_duration: Duration::from_secs(2),
            connect_concurrency: 16,
            shape_sessions: vec![10],
            long_lives_sessions: 30,
            long_lives_cycles: 3,
            idle_window: Duration::from_secs(2),
        }
    }

    /// The full run with every count (sessions, webhooks, clients) scaled by `factor`
    /// (at least 2), for a quicker look at the same shape.
    pub fn scaled(factor: f64) -> Plan {
        let scale = |n: usize| ((n as f64 * factor).round() as usize).max(2);
        let full = Plan::full();
        Plan {
            ingest_sizes: full.ingest_sizes.iter().map(|&n| scale(n)).collect(),
            e2e_sessions: full.e2e_sessions.iter().map(|&n| scale(n)).collect(),
            fanout_sizes: full.fanout_sizes.iter().map(|&n| scale(n)).collect(),
            multi_edge_sizes: full.multi_edge_sizes.iter().map(|&n| scale(n)).collect(),
            storms: full.storms.iter().map(|&(n, d)| (scale(n), d)).collect(),
            projector_sizes: full.projector_sizes.iter().map(|&n| scale(n)).collect(),
            polling_clients: full.polling_clients.iter().map(|&n| scale(n)).collect(),
            shape_sessions: full.shape_sessions.iter().map(|&n| scale(n)).collect(),
            long_lives_sessions: scale(full.long_lives_sessions),
            ..full
        }
    }

    /// The full run (`make bench`).
    pub fn full() -> Plan {
        Plan {
            smoke: false,
            ingest_sizes: vec![2_000, 8_000],
            ingest_concurrency: 64,
            e2e_sessions: vec![2_000, 10_000],
            e2e_loads: vec![100, 300, 1_000],
            e2e_step: Duration::from_secs(FULL_LOAD_SECS),
            fanout_sizes: vec![5_000, 15_000],
            multi_edge_sizes: vec![50_000, 100_000],
            storms: vec![
                (2_000, Duration::from_secs(1)),
                (10_000, Duration::from_secs(1)),
                (10_000, Duration::from_secs(3)),
            ],
            storm_rate: 200,
            projector_sizes: vec![10_000, 40_000],
            polling_clients: vec![1_000, 5_000],
            polling_period: Duration::from_secs(5),
            polling_duration: Duration::from_secs(15),
            connect_concurrency: 256,
            shape_sessions: vec![2_000],
            long_lives_sessions: 15_000,
            long_lives_cycles: 5,
            idle_window: Duration::from_secs(30),
        }
    }
}
