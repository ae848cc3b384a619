//! Counts of per-message outcomes, summarised on one log line per window.
//!
//! A service that handles thousands of messages a second cannot write an `info`
//! line for each (at 1,000 transitions/s that was a twentieth of the busiest
//! process's CPU and hundreds of megabytes an hour). Its per-message lines go to
//! `debug`; a [`Tally`] counts the outcomes and hands back, at most once per window,
//! the counts for one `info` summary line. Warnings and errors are still logged per
//! message, inside the message's span (trace id, tenant, payment).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Counts of named outcomes since the last summary.
pub struct Tally {
    labels: &'static [&'static str],
    counts: Vec<AtomicU64>,
    every: Duration,
    window_start: Mutex<Instant>,
}

impl Tally {
    /// A tally of `labels`' outcomes, summarised at most once per `every`.
    pub fn new(labels: &'static [&'static str], every: Duration) -> Tally {
        Tally {
            labels,
            counts: labels.iter().map(|_| AtomicU64::new(0)).collect(),
            every,
            window_start: Mutex::new(Instant::now()),
        }
    }

    /// Counts one `label` outcome (an unknown label is not counted). Returns the
    /// window's summary when the window has ended, for the caller to log at `info`;
    /// the counts then start again from zero.
    pub fn record(&self, label: &str) -> Option<Summary> {
        self.record_at(label, Instant::now())
    }

    fn record_at(&self, label: &str, now: Instant) -> Option<Summary> {
        if let Some(i) = self.labels.iter().position(|l| *l == label) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        // One caller closes the window; the others go on counting.
        let mut start = self.window_start.try_lock().ok()?;
        let elapsed = now.saturating_duration_since(*start);
        if elapsed < self.every {
            return None;
        }
        *start = now;
        let counts = self
            .labels
            .iter()
            .zip(&self.counts)
            .map(|(label, count)| (*label, count.swap(0, Ordering::Relaxed)))
            .filter(|(_, count)| *count > 0)
            .collect();
        Some(Summary { counts, elapsed })
    }
}

/// One window's counts, in the order of the tally's labels (outcomes that did not
/// occur are left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Each outcome that occurred and how often.
    pub counts: Vec<(&'static str, u64)>,
    /// How long the window lasted.
    pub elapsed: Duration,
}

impl Summary {
    /// Every count together.
    pub fn total(&self) -> u64 {
        self.counts.iter().map(|(_, c)| c).sum()
    }
}

impl std::fmt::Display for Summary {
    /// `applied=10 duplicate=2`: one field of the summary's log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (label, count)) in self.counts.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{label}={count}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LABELS: &[&str] = &["applied", "duplicate", "stale"];

    #[test]
    fn nothing_is_summarised_before_the_window_ends() {
        let tally = Tally::new(LABELS, Duration::from_secs(10));
        let start = *tally.window_start.lock().expect("unpoisoned");
        for _ in 0..5 {
            assert_eq!(tally.record_at("applied", start + Duration::from_secs(9)), None);
        }
    }

    #[test]
    fn a_window_summarises_its_counts_and_starts_again_from_zero() {
        let tally = Tally::new(LABELS, Duration::from_secs(10));
        let start = *tally.window_start.lock().expect("unpoisoned");
        tally.record_at("applied", start + Duration::from_secs(1));
        tally.record_at("stale", start + Duration::from_secs(2));
        tally.record_at("unknown", start + Duration::from_secs(3));
        let summary = tally
            .record_at("applied", start + Duration::from_secs(10))
            .expect("the window ended");
        assert_eq!(summary.counts, vec![("applied", 2), ("stale", 1)]);
        assert_eq!(summary.total(), 3);
        assert_eq!(summary.elapsed, Duration::from_secs(10));
        assert_eq!(summary.to_string(), "applied=2 stale=1");

        assert_eq!(tally.record_at("duplicate", start + Duration::from_secs(15)), None);
        let next = tally
            .record_at("duplicate", start + Duration::from_secs(20))
            .expect("the second window ended");
        assert_eq!(next.counts, vec![("duplicate", 2)]);
    }
}
