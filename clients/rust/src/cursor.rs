//! Where a reader is in the histories, and what a newly read transition is to it.
//!
//! The contract gives two orders: the stream position (a mirror keeps its source's
//! sequences, so a position is the same on both) and each payment's `version` (1 for
//! its first transition, +1 for each one after). A filtered reader sees positions
//! with holes (other tenants' and other payments' messages), so continuity is judged
//! per payment by version; the position only says where to resume and what was
//! already read. The checks, in the order [`Cursor::judge`] makes them:
//!
//! 1. a position at or before the cursor's was read already: [`Verdict::Duplicate`];
//! 2. a version at or below the payment's last one was read already: `Duplicate`;
//! 3. the payment's next version: [`Verdict::Next`];
//! 4. a payment not seen yet: `Next` when the cursor cannot know its earlier
//!    versions (it started after the beginning), else only version 1 is `Next`;
//! 5. anything else skips versions: [`Verdict::Gap`].
//!
//! Every verdict but `Duplicate` moves the cursor, so reading goes on after a gap.

use std::collections::HashMap;

use paytrack_contract::{PaymentId, TenantId};

/// The position last read and each payment's last version: what a reader saves to
/// resume without a gap or a duplicate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    position: u64,
    from_beginning: bool,
    versions: HashMap<(TenantId, PaymentId), u64>,
}

/// Versions of one payment that were never read: `expected` up to `got - 1`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{tenant}/{payment}: version {got} at position {position}, expected {expected}")]
pub struct Gap {
    /// The payment's tenant.
    pub tenant: TenantId,
    /// The payment.
    pub payment: PaymentId,
    /// The version that should have come next.
    pub expected: u64,
    /// The version that came.
    pub got: u64,
    /// Where the version that came is in the stream.
    pub position: u64,
}

/// What a transition read at a position is, given the cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The next of its payment's history.
    Next,
    /// Already read: skip it.
    Duplicate,
    /// Versions before it were never read.
    Gap(Gap),
}

impl Cursor {
    /// Before the first message: every payment's history must start at version 1.
    pub fn beginning() -> Cursor {
        Cursor {
            from_beginning: true,
            ..Cursor::default()
        }
    }

    /// After `position`, with the payments' last versions read so far (empty when
    /// only the position was kept: each payment's first version seen is then taken
    /// as it comes).
    pub fn resume(position: u64, versions: impl IntoIterator<Item = ((TenantId, PaymentId), u64)>) -> Cursor {
        Cursor {
            position,
            from_beginning: position == 0,
            versions: versions.into_iter().collect(),
        }
    }

    /// The stream position last read (0: none).
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Each payment's last version read.
    pub fn versions(&self) -> impl Iterator<Item = (&(TenantId, PaymentId), &u64)> {
        self.versions.iter()
    }

    /// The last version read of `payment`.
    pub fn version_of(&self, tenant: &TenantId, payment: &PaymentId) -> Option<u64> {
        self.versions.get(&(tenant.clone(), payment.clone())).copied()
    }

    /// Moves past `position`, a message in scope that is no transition; false when it
    /// was read already.
    pub fn pass(&mut self, position: u64) -> bool {
        if position <= self.position {
            return false;
        }
        self.position = position;
        true
    }

    /// Judges the transition `version` of `payment` read at `position`, and moves the
    /// cursor past it unless it is a duplicate.
    pub fn judge(&mut self, position: u64, tenant: &TenantId, payment: &PaymentId, version: u64) -> Verdict {
        if position <= self.position {
            return Verdict::Duplicate;
        }
        let key = (tenant.clone(), payment.clone());
        let last = self.versions.get(&key).copied();
        if last.is_some_and(|last| version <= last) {
            return Verdict::Duplicate;
        }
        let expected = match last {
            Some(last) => Some(last + 1),
            None if self.from_beginning => Some(1),
            None => None,
        };
        self.position = position;
        self.versions.insert(key, version);
        match expected {
            Some(expected) if expected != version => Verdict::Gap(Gap {
                tenant: tenant.clone(),
                payment: payment.clone(),
                expected,
                got: version,
                position,
            }),
            _ => Verdict::Next,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(payment: &str) -> (TenantId, PaymentId) {
        (TenantId::new("acme").unwrap(), PaymentId::new(payment).unwrap())
    }

    /// (cursor, position, payment, version) -> verdict, with the cursor after it.
    #[test]
    fn every_verdict_in_order() {
        let (t, a) = ids("pay_a");
        let (_, b) = ids("pay_b");
        let gap = |payment: &PaymentId, expected, got, position| {
            Verdict::Gap(Gap {
                tenant: t.clone(),
                payment: payment.clone(),
                expected,
                got,
                position,
            })
        };
        let mut c = Cursor::beginning();
        assert_eq!(c.judge(3, &t, &a, 1), Verdict::Next);
        assert_eq!(c.judge(3, &t, &a, 2), Verdict::Duplicate, "position already read");
        assert_eq!(c.judge(5, &t, &a, 1), Verdict::Duplicate, "version already read");
        assert_eq!(c.judge(6, &t, &a, 2), Verdict::Next);
        assert_eq!(
            c.judge(7, &t, &b, 2),
            gap(&b, 1, 2, 7),
            "from the beginning, a history starts at 1"
        );
        assert_eq!(c.judge(9, &t, &a, 4), gap(&a, 3, 4, 9));
        assert_eq!(c.judge(10, &t, &a, 5), Verdict::Next, "reading goes on after a gap");
        assert_eq!(c.position(), 10);
        assert_eq!(c.version_of(&t, &a), Some(5));

        let mut resumed = Cursor::resume(10, [((t.clone(), a.clone()), 5)]);
        assert_eq!(
            resumed.judge(11, &t, &b, 7),
            Verdict::Next,
            "unknown before the position"
        );
        assert_eq!(resumed.judge(12, &t, &a, 7), gap(&a, 6, 7, 12));
        assert_eq!(Cursor::resume(0, []), Cursor::beginning());
    }
}
