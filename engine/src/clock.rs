//! Monotonic time in nanoseconds, from quanta.
//!
//! The data path reads the clock once per batch and passes the reading down (to
//! [`TokenBucket::try_acquire`](crate::bucket::TokenBucket::try_acquire), to latency
//! bookkeeping), never once per message; tests pass hand-made readings instead, so nothing
//! below this module ever reads time by itself.

/// A monotonic clock whose readings are nanoseconds since the clock was made.
///
/// Cloning is cheap and clones share the epoch, so readings from clones on different
/// threads are comparable.
///
/// ```
/// let clock = spillway::clock::Clock::new();
/// let start_ns = clock.now_ns();
/// let later_ns = clock.now_ns();
/// assert!(later_ns >= start_ns);
/// ```
#[derive(Clone, Debug)]
pub struct Clock {
    inner: quanta::Clock,
    /// Raw counter reading of `inner` at construction, so that readings start near zero and
    /// a `u64` of nanoseconds lasts 584 years.
    epoch_raw: u64,
}

impl Clock {
    /// Makes a clock whose zero is now. Calibrates quanta's TSC source on first use in the
    /// process (a few milliseconds); make clocks at start-up, not on the data path.
    pub fn new() -> Self {
        let inner = quanta::Clock::new();
        let epoch_raw = inner.raw();
        Self { inner, epoch_raw }
    }

    /// Nanoseconds since this clock (or the clock it was cloned from) was made.
    ///
    /// One raw counter read (the TSC where quanta calibrated it) and one scaling, with no
    /// `Instant` or `Duration` in between: those cost a third of the read.
    #[inline]
    pub fn now_ns(&self) -> u64 {
        self.inner.delta_as_nanos(self.epoch_raw, self.inner.raw())
    }

    /// Busy-waits `duration_ns` on this clock, keeping the core: the simulated handler cost
    /// that the load generator, `spillway serve` and the benches give a handler, so that a
    /// shard's capacity is known. Returns at once for 0.
    #[inline]
    pub fn spin_for_ns(&self, duration_ns: u64) {
        if duration_ns == 0 {
            return;
        }
        let until_ns = self.now_ns() + duration_ns;
        while self.now_ns() < until_ns {
            core::hint::spin_loop();
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}
