//! Session counters: open sessions, served at `/metrics` in Prometheus text format.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Counters of this edge's sessions.
#[derive(Default, Debug)]
pub struct SessionMetrics {
    open: AtomicI64,
    opened_total: AtomicU64,
}

impl SessionMetrics {
    /// A session opened.
    pub fn opened(&self) {
        self.open.fetch_add(1, Ordering::SeqCst);
        self.opened_total.fetch_add(1, Ordering::SeqCst);
    }

    /// A session closed.
    pub fn closed(&self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
    }

    /// Sessions open now.
    pub fn open(&self) -> i64 {
        self.open.load(Ordering::SeqCst)
    }

    /// Prometheus exposition.
    pub fn render(&self) -> String {
        format!(
            "# HELP paytrack_edge_sessions_open Sessions open now, by transport.\n\
             # TYPE paytrack_edge_sessions_open gauge\n\
             paytrack_edge_sessions_open{{transport=\"websocket\"}} {}\n\
             # HELP paytrack_edge_sessions_opened_total Sessions opened since start.\n\
             # TYPE paytrack_edge_sessions_opened_total counter\n\
             paytrack_edge_sessions_opened_total{{transport=\"websocket\"}} {}\n",
            self.open(),
            self.opened_total.load(Ordering::SeqCst)
        )
    }
}
