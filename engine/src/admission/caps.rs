//! Level 2: priority-aware thresholds on every cap.
//!
//! A cap of `C` pending messages admits priority `p` only while fewer than
//! `ceil(C × percent[p] / 100)` are pending, so with SPEC's percentages (100, 95, 80, 60) P3 is
//! refused from 60% of the cap and P0 only at 100%: higher priorities keep headroom. Rounding
//! up gives every priority at least one slot of a non-zero cap.

use crate::message::Priority;

/// The limit `percent` of `cap` gives: rounded up, at least 1, at most the cap.
#[inline]
pub fn limit_of(cap: u64, percent: u32) -> u64 {
    // cap ≤ 2^40 and percent ≤ 100 (validated): no overflow.
    (cap * u64::from(percent)).div_ceil(100).max(1).min(cap)
}

/// A cap's per-priority admission limits, computed once when the cap is set (never per
/// message).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thresholds {
    /// `limit[p]`: priority `p` is admitted while the pending amount plus the new one is at
    /// most this.
    limit: [u64; Priority::COUNT],
}

impl Thresholds {
    /// Limits for a cap of `cap` with `percent[p]` for each priority.
    pub fn new(cap: u64, percent: &[u32; Priority::COUNT]) -> Self {
        Self {
            limit: percent.map(|percent| limit_of(cap, percent)),
        }
    }

    /// The same limits for new percentages (a cap's thresholds changed at run time).
    pub fn with_percent(&self, percent: &[u32; Priority::COUNT]) -> Self {
        Self::new(self.cap(), percent)
    }

    /// Whether `amount` more fits on top of `pending` for `priority`.
    #[inline(always)]
    pub fn admits(&self, pending: u64, amount: u64, priority: Priority) -> bool {
        pending + amount <= self.limit[priority.index()]
    }

    /// The limit for `priority`.
    pub fn limit(&self, priority: Priority) -> u64 {
        self.limit[priority.index()]
    }

    /// The full cap (P0's limit).
    pub fn cap(&self) -> u64 {
        self.limit[Priority::P0.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC_PERCENT: [u32; 4] = [100, 95, 80, 60];

    #[test]
    fn spec_thresholds_on_a_cap_of_1000() {
        let thresholds = Thresholds::new(1000, &SPEC_PERCENT);
        assert!(thresholds.admits(599, 1, Priority::P3));
        assert!(!thresholds.admits(600, 1, Priority::P3));
        assert!(!thresholds.admits(800, 1, Priority::P2));
        assert!(thresholds.admits(949, 1, Priority::P1));
        assert!(!thresholds.admits(950, 1, Priority::P1));
        assert!(thresholds.admits(999, 1, Priority::P0));
        assert!(!thresholds.admits(1000, 1, Priority::P0));
    }

    #[test]
    fn a_cap_of_one_admits_every_priority_when_empty() {
        let thresholds = Thresholds::new(1, &SPEC_PERCENT);
        for priority in Priority::ALL {
            assert!(thresholds.admits(0, 1, priority));
            assert!(!thresholds.admits(1, 1, priority));
        }
    }
}
