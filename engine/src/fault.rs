//! Panics injected at named points of a shard thread, for the tests that check that a lost
//! shard loses no message (`tests/tests/shard_lost.rs`). Inert unless the
//! `fault-injection` feature is on (only the test crate turns it on): without it the switch
//! is a zero-sized field and every pass compiles to nothing.
//!
//! Each shard has one switch; arming it (`Engine::inject_panic`) makes the `after + 1`-th
//! pass of the shard through that point panic, once.

/// Where in a shard thread a panic is injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FaultPoint {
    /// At the top of a turn of the shard loop, outside any handler.
    ShardLoop = 1,
    /// In admission, with a message in hand (taken from a ring or offered by code on the
    /// shard, such as the TCP front end), before its outcome is decided.
    Admission = 2,
}

/// One shard's switch.
#[derive(Debug, Default)]
pub(crate) struct FaultSwitch {
    /// The armed point in the top byte and the passes left before the panic below it;
    /// 0 when not armed. std's atomic, not `crate::sync`'s: a test switch, not modelled.
    #[cfg(feature = "fault-injection")]
    armed: std::sync::atomic::AtomicU64,
}

#[cfg(feature = "fault-injection")]
const POINT_SHIFT: u32 = 56;
#[cfg(feature = "fault-injection")]
const COUNT_MASK: u64 = (1 << POINT_SHIFT) - 1;

impl FaultSwitch {
    /// Arms the switch: the `after + 1`-th pass through `point` panics.
    #[cfg(feature = "fault-injection")]
    pub(crate) fn arm(&self, point: FaultPoint, after: u64) {
        let word = ((point as u64) << POINT_SHIFT) | (after.min(COUNT_MASK - 1) + 1);
        // Relaxed: the shard thread picks it up on its own schedule; nothing rides on it.
        self.armed.store(word, std::sync::atomic::Ordering::Relaxed);
    }

    /// A pass through `point`: panics if this is the armed pass.
    #[inline(always)]
    pub(crate) fn pass(&self, point: FaultPoint) {
        #[cfg(feature = "fault-injection")]
        {
            use std::sync::atomic::Ordering;
            // Relaxed: only the shard thread counts passes down; `arm` just sets the word.
            let word = self.armed.load(Ordering::Relaxed);
            if word >> POINT_SHIFT == point as u64 {
                let next = if word & COUNT_MASK == 1 { 0 } else { word - 1 };
                self.armed.store(next, Ordering::Relaxed);
                if next == 0 {
                    panic!("fault injected at {point:?}");
                }
            }
        }
        #[cfg(not(feature = "fault-injection"))]
        let _ = point;
    }
}
