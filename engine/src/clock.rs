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
    /// Reading of `inner` at construction, so that readings start near zero and a `u64` of
    /// nanoseconds lasts 584 years.
    epoch: quanta::Instant,
}

impl Clock {
    /// Makes a clock whose zero is now. Calibrates quanta's TSC source on first use in the
    /// process (a few milliseconds); make clocks at start-up, not on the data path.
    pub fn new() -> Self {
        let inner = quanta::Clock::new();
        let epoch = inner.now();
        Self { inner, epoch }
    }

    /// Nanoseconds since this clock (or the clock it was cloned from) was made.
    #[inline]
    pub fn now_ns(&self) -> u64 {
        let elapsed = self.inner.now().saturating_duration_since(self.epoch);
        // u64 nanoseconds overflow after 584 years of uptime; saturate rather than wrap.
        u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}
