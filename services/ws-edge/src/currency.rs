//! Whether a session is *current* (docs/contract.md §7): its acks have caught up with the
//! positions of the previous heartbeat. A session behind for two heartbeats in a row is
//! `stale`, audited once per episode. Kept per session; the `sessions_current` gauge
//! (per transport) counts the sessions that are current now.

use std::collections::BTreeMap;

use paytrack_shared::envelope::Position;

/// Heartbeats a session may stay behind before it is audited `stale`.
const STALE_AFTER: u32 = 2;

/// What a heartbeat tick found about a session.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Its acks caught up with the previous heartbeat (or there was none to catch up).
    Current,
    /// Behind, not yet (or no longer newly) stale.
    Behind,
    /// Behind for the second heartbeat in a row: audit it, once per episode. Holds the
    /// heartbeat positions it did not catch up with.
    Stale(BTreeMap<String, Position>),
}

/// One session's currency.
pub struct Currency {
    transport: &'static str,
    previous: Option<BTreeMap<String, Position>>,
    acked: BTreeMap<String, Position>,
    behind: u32,
    current: bool,
}

impl Currency {
    /// A new session: current (nothing was sent it could be behind on), and counted in
    /// `sessions_current`.
    pub fn new(transport: &'static str) -> Currency {
        metrics::gauge!("paytrack_edge_sessions_current", "transport" => transport).increment(1);
        Currency {
            transport,
            previous: None,
            acked: BTreeMap::new(),
            behind: 0,
            current: true,
        }
    }

    /// Records a client's `ack {positions}`; a position only ever moves forward within
    /// its epoch (a late ack cannot undo a newer one).
    pub fn ack(&mut self, positions: BTreeMap<String, Position>) {
        for (channel, position) in positions {
            match self.acked.get(&channel) {
                Some(known) if known.epoch == position.epoch && known.seq >= position.seq => {}
                _ => {
                    self.acked.insert(channel, position);
                }
            }
        }
    }

    /// The acked positions (for the audit).
    pub fn acked(&self) -> &BTreeMap<String, Position> {
        &self.acked
    }

    /// Judges the session at a heartbeat tick, before the new heartbeat is sent:
    /// channels of the previous heartbeat still held (`held`) must have been acked at
    /// or past its positions.
    pub fn tick(&mut self, held: impl Fn(&str) -> bool) -> Verdict {
        let missing: BTreeMap<String, Position> = self
            .previous
            .iter()
            .flatten()
            .filter(|(channel, _)| held(channel))
            .filter(|(channel, sent)| {
                !self
                    .acked
                    .get(*channel)
                    .is_some_and(|acked| acked.epoch == sent.epoch && acked.seq >= sent.seq)
            })
            .map(|(c, p)| (c.clone(), p.clone()))
            .collect();
        if missing.is_empty() {
            self.behind = 0;
            self.set_current(true);
            return Verdict::Current;
        }
        self.behind += 1;
        self.set_current(false);
        if self.behind == STALE_AFTER {
            Verdict::Stale(missing)
        } else {
            Verdict::Behind
        }
    }

    /// Remembers the positions of the heartbeat just sent.
    pub fn sent(&mut self, positions: BTreeMap<String, Position>) {
        self.previous = Some(positions);
    }

    fn set_current(&mut self, current: bool) {
        if current != self.current {
            let gauge = metrics::gauge!("paytrack_edge_sessions_current", "transport" => self.transport);
            if current {
                gauge.increment(1)
            } else {
                gauge.decrement(1)
            }
            self.current = current;
        }
    }
}

impl Drop for Currency {
    fn drop(&mut self) {
        self.set_current(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seq: u64) -> Position {
        Position { epoch: "e".into(), seq }
    }

    fn map(entries: &[(&str, u64)]) -> BTreeMap<String, Position> {
        entries.iter().map(|(c, s)| ((*c).to_owned(), at(*s))).collect()
    }

    #[test]
    fn acks_that_catch_up_keep_a_session_current_and_two_missed_make_it_stale_once() {
        let mut c = Currency::new("test");
        let all = |_: &str| true;
        assert_eq!(c.tick(all), Verdict::Current);
        c.sent(map(&[("payments", 5)]));
        c.ack(map(&[("payments", 5)]));
        assert_eq!(c.tick(all), Verdict::Current);
        c.sent(map(&[("payments", 9)]));
        // No ack for 9: behind once, then stale, then still behind (no second audit).
        assert_eq!(c.tick(all), Verdict::Behind);
        c.sent(map(&[("payments", 9)]));
        assert_eq!(c.tick(all), Verdict::Stale(map(&[("payments", 9)])));
        c.sent(map(&[("payments", 9)]));
        assert_eq!(c.tick(all), Verdict::Behind);
        // Catching up ends the episode; a late, older ack does not undo it.
        c.ack(map(&[("payments", 9)]));
        c.ack(map(&[("payments", 7)]));
        assert_eq!(c.tick(all), Verdict::Current);
        assert_eq!(c.acked()["payments"].seq, 9);
        // A position of another epoch is not caught up; an unsubscribed channel is
        // not waited for.
        c.sent(map(&[("payments", 9), ("payment:p", 3)]));
        c.ack(BTreeMap::from([(
            "payments".to_owned(),
            Position {
                epoch: "f".into(),
                seq: 9,
            },
        )]));
        assert_eq!(c.tick(|ch| ch == "payment:p"), Verdict::Behind);
    }
}
