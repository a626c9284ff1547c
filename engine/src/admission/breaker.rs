//! Level 3: the global circuit breaker (SPEC 3).
//!
//! The state is one `AtomicU64` shared by every shard: the state in the low 3 bits and the
//! time it was entered (ns on the engine clock) in the high 61 bits (enough for 73 years).
//! Transitions are compare-exchanges from the word a shard last read, so when two shards see
//! the same reason to move, exactly one moves it and the other sees the new word.
//!
//! Each shard keeps its own [`BreakerWindow`] of its last `window_requests` finished
//! messages and judges only its own traffic: a shard whose window is bad opens the breaker
//! for all (a conservative reading of "global": the worst shard decides). The p95 test needs
//! no histogram: the 95th percentile of `n` samples is above the limit exactly when more than
//! `n - ceil(0.95 n)` samples are, so the window counts slow samples and errors as they enter
//! and leave, O(1) per sample and per verdict.

use crate::config::BreakerConfig;
use crate::sync::{AtomicU64, Ordering};

/// The breaker's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Normal: nothing is shed.
    Closed,
    /// Tripped: P2 and P3 are shed until the recovery timeout passes.
    Open,
    /// Probing: nothing is shed; closes after the good period, re-opens on degradation.
    HalfOpen,
    /// Held open by the control plane until reset.
    ForcedOpen,
    /// Held closed by the control plane until reset.
    ForcedClosed,
}

impl BreakerState {
    /// Whether messages of shed priorities (P2, P3) are shed in this state.
    pub fn sheds(self) -> bool {
        matches!(self, BreakerState::Open | BreakerState::ForcedOpen)
    }

    /// A stable snake_case name for reports.
    pub fn name(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
            BreakerState::ForcedOpen => "forced_open",
            BreakerState::ForcedClosed => "forced_closed",
        }
    }

    fn code(self) -> u64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
            BreakerState::ForcedOpen => 3,
            BreakerState::ForcedClosed => 4,
        }
    }

    fn from_code(code: u64) -> Self {
        match code {
            1 => BreakerState::Open,
            2 => BreakerState::HalfOpen,
            3 => BreakerState::ForcedOpen,
            4 => BreakerState::ForcedClosed,
            _ => BreakerState::Closed,
        }
    }
}

/// One reading of the breaker: its state and when it was entered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerReading {
    word: u64,
}

impl BreakerReading {
    /// The state.
    pub fn state(self) -> BreakerState {
        BreakerState::from_code(self.word & STATE_MASK)
    }

    /// When the state was entered, ns on the engine clock.
    pub fn since_ns(self) -> u64 {
        self.word >> STATE_BITS
    }
}

const STATE_BITS: u32 = 3;
const STATE_MASK: u64 = (1 << STATE_BITS) - 1;

fn word(state: BreakerState, since_ns: u64) -> u64 {
    (since_ns.min(u64::MAX >> STATE_BITS) << STATE_BITS) | state.code()
}

/// The shared breaker state. Every method is safe from any thread.
#[derive(Debug)]
pub struct CircuitBreaker {
    /// See the module docs for the encoding.
    word: AtomicU64,
}

/// Why the breaker moved, for counters and alerts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// A shard's window went bad: closed or half-open -> open.
    Tripped,
    /// A queue reached 100% of its cap: closed or half-open -> open.
    TrippedByFullQueue,
    /// The recovery timeout passed: open -> half-open.
    Probing,
    /// The good period passed in half-open: -> closed.
    Recovered,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new() -> Self {
        Self {
            word: AtomicU64::new(word(BreakerState::Closed, 0)),
        }
    }

    /// The current state. Relaxed: the word is self-contained (shards act on the state
    /// itself, no other memory is published with it). A change becomes visible to each shard
    /// soon after (in practice by its next batch); Relaxed promises visibility, not when.
    #[inline]
    pub fn read(&self) -> BreakerReading {
        BreakerReading {
            word: self.word.load(Ordering::Relaxed),
        }
    }

    /// Moves from `seen` to `to` at `now_ns` unless someone moved it first; true if this
    /// call moved it. Relaxed: the compare-exchange alone decides which of two racing shards
    /// moves it; nothing else is published.
    fn move_from(&self, seen: BreakerReading, to: BreakerState, now_ns: u64) -> bool {
        self.word
            .compare_exchange(
                seen.word,
                word(to, now_ns),
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// Applies the automatic rules for a shard whose window reads `verdict` at `now_ns`, from
    /// the state `seen` that the shard read this batch. Returns the transition this call made.
    pub fn evaluate(
        &self,
        seen: BreakerReading,
        verdict: WindowVerdict,
        now_ns: u64,
        config: &BreakerConfig,
    ) -> Option<Transition> {
        let elapsed_ns = now_ns.saturating_sub(seen.since_ns());
        let (to, transition) = match (seen.state(), verdict) {
            (BreakerState::Closed | BreakerState::HalfOpen, WindowVerdict::Bad) => {
                (BreakerState::Open, Transition::Tripped)
            }
            (BreakerState::Open, _) if elapsed_ns >= config.recovery_timeout_ns => {
                (BreakerState::HalfOpen, Transition::Probing)
            }
            (BreakerState::HalfOpen, _) if elapsed_ns >= config.good_period_ns => {
                (BreakerState::Closed, Transition::Recovered)
            }
            _ => return None,
        };
        self.move_from(seen, to, now_ns).then_some(transition)
    }

    /// Opens the breaker because a queue reached 100% of its cap (unless it is open, or held
    /// by the control plane). Returns whether this call opened it.
    pub fn trip_full_queue(&self, now_ns: u64) -> bool {
        let seen = self.read();
        matches!(seen.state(), BreakerState::Closed | BreakerState::HalfOpen)
            && self.move_from(seen, BreakerState::Open, now_ns)
    }

    /// Holds the breaker open (control plane) until [`reset`](Self::reset).
    pub fn force_open(&self, now_ns: u64) {
        // Relaxed: as in `read`.
        self.word
            .store(word(BreakerState::ForcedOpen, now_ns), Ordering::Relaxed);
    }

    /// Holds the breaker closed (control plane) until [`reset`](Self::reset).
    pub fn force_closed(&self, now_ns: u64) {
        self.word
            .store(word(BreakerState::ForcedClosed, now_ns), Ordering::Relaxed);
    }

    /// Returns the breaker to automatic control, closed.
    pub fn reset(&self, now_ns: u64) {
        self.word
            .store(word(BreakerState::Closed, now_ns), Ordering::Relaxed);
    }
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        Self::new()
    }
}

/// A window's judgement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowVerdict {
    /// Fewer samples than the minimum: no judgement.
    TooFewSamples,
    /// p95 latency and error rate within limits.
    Good,
    /// p95 latency or error rate over its limit.
    Bad,
}

/// One shard's rolling window of its last finished messages.
#[derive(Debug)]
pub struct BreakerWindow {
    /// Per sample: bit 0 slow (latency over the p95 limit), bit 1 error. A ring of
    /// `window_requests` entries; `next` is where the next sample goes.
    samples: Box<[u8]>,
    next: usize,
    filled: usize,
    slow: usize,
    errors: usize,
    latency_limit_ns: u64,
    error_rate_max_percent: f64,
    min_samples: usize,
}

const SLOW: u8 = 1;
const ERROR: u8 = 2;

impl BreakerWindow {
    /// An empty window sized and judged per `config`.
    pub fn new(config: &BreakerConfig) -> Self {
        Self {
            samples: vec![0; config.window_requests as usize].into_boxed_slice(),
            next: 0,
            filled: 0,
            slow: 0,
            errors: 0,
            latency_limit_ns: config.p95_latency_max_ns,
            error_rate_max_percent: config.error_rate_max_percent,
            min_samples: config.min_samples as usize,
        }
    }

    /// Adds one finished message: its latency and whether it failed.
    #[inline]
    pub fn record(&mut self, latency_ns: u64, failed: bool) {
        let sample = u8::from(latency_ns > self.latency_limit_ns) * SLOW + u8::from(failed) * ERROR;
        if self.filled == self.samples.len() {
            let evicted = self.samples[self.next];
            self.slow -= usize::from(evicted & SLOW);
            self.errors -= usize::from(evicted & ERROR != 0);
        } else {
            self.filled += 1;
        }
        self.samples[self.next] = sample;
        self.slow += usize::from(sample & SLOW);
        self.errors += usize::from(sample & ERROR != 0);
        self.next = (self.next + 1) % self.samples.len();
    }

    /// Forgets every sample (on each breaker state change, so a state is judged only on what
    /// happened in it).
    pub fn clear(&mut self) {
        self.next = 0;
        self.filled = 0;
        self.slow = 0;
        self.errors = 0;
    }

    /// The window's judgement now.
    pub fn verdict(&self) -> WindowVerdict {
        let count = self.filled;
        if count < self.min_samples || count == 0 {
            return WindowVerdict::TooFewSamples;
        }
        // p95 is the value of rank ceil(0.95 n); it is over the limit iff more than
        // n - ceil(0.95 n) samples are.
        let slow_allowed = count - (count * 95).div_ceil(100);
        let error_rate_percent = self.errors as f64 * 100.0 / count as f64;
        if self.slow > slow_allowed || error_rate_percent > self.error_rate_max_percent {
            WindowVerdict::Bad
        } else {
            WindowVerdict::Good
        }
    }

    /// Samples in the window.
    pub fn len(&self) -> usize {
        self.filled
    }

    /// Whether the window is empty.
    pub fn is_empty(&self) -> bool {
        self.filled == 0
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn config() -> BreakerConfig {
        BreakerConfig {
            window_requests: 1000,
            min_samples: 100,
            ..BreakerConfig::default()
        }
    }

    #[test]
    fn p95_is_over_the_limit_from_the_51st_slow_sample_in_1000() {
        let mut window = BreakerWindow::new(&config());
        for index in 0..1000 {
            window.record(if index < 50 { 300_000_000 } else { 1_000 }, false);
        }
        assert_eq!(window.verdict(), WindowVerdict::Good);
        window.record(300_000_000, false); // evicts a slow one: still 50
        assert_eq!(window.verdict(), WindowVerdict::Good);
        for _ in 0..100 {
            window.record(1_000, false); // the rest of the old slow ones age out
        }
        for _ in 0..51 {
            window.record(300_000_000, false);
        }
        assert_eq!(window.verdict(), WindowVerdict::Bad);
    }

    #[test]
    fn error_rate_over_one_percent_is_bad_and_needs_min_samples() {
        let mut window = BreakerWindow::new(&config());
        for _ in 0..99 {
            window.record(1_000, true);
        }
        assert_eq!(window.verdict(), WindowVerdict::TooFewSamples);
        let mut window = BreakerWindow::new(&config());
        for index in 0..1000 {
            window.record(1_000, index >= 990);
        }
        assert_eq!(window.verdict(), WindowVerdict::Good); // exactly 1%
        window.record(1_000, true);
        window.record(1_000, true);
        assert_eq!(window.verdict(), WindowVerdict::Bad);
    }

    #[test]
    fn transitions_follow_the_spec_timings() {
        let config = config();
        let breaker = CircuitBreaker::new();
        let seen = breaker.read();
        assert_eq!(
            breaker.evaluate(seen, WindowVerdict::Bad, 10, &config),
            Some(Transition::Tripped)
        );
        // A second shard acting on the same stale reading does not move it again.
        assert_eq!(
            breaker.evaluate(seen, WindowVerdict::Bad, 11, &config),
            None
        );
        let open = breaker.read();
        assert_eq!(open.state(), BreakerState::Open);
        assert_eq!(open.since_ns(), 10);
        assert_eq!(
            breaker.evaluate(
                open,
                WindowVerdict::Good,
                10 + config.recovery_timeout_ns - 1,
                &config
            ),
            None
        );
        assert_eq!(
            breaker.evaluate(
                open,
                WindowVerdict::Good,
                10 + config.recovery_timeout_ns,
                &config
            ),
            Some(Transition::Probing)
        );
        let half_open = breaker.read();
        assert_eq!(half_open.state(), BreakerState::HalfOpen);
        let later = half_open.since_ns() + config.good_period_ns;
        assert_eq!(
            breaker.evaluate(half_open, WindowVerdict::Good, later, &config),
            Some(Transition::Recovered)
        );
        assert_eq!(breaker.read().state(), BreakerState::Closed);
    }

    #[test]
    fn forced_states_ignore_the_rules_until_reset() {
        let config = config();
        let breaker = CircuitBreaker::new();
        breaker.force_closed(5);
        assert_eq!(
            breaker.evaluate(breaker.read(), WindowVerdict::Bad, 6, &config),
            None
        );
        assert!(!breaker.trip_full_queue(7));
        breaker.force_open(8);
        assert!(breaker.read().state().sheds());
        breaker.reset(9);
        assert!(breaker.trip_full_queue(10));
        assert_eq!(breaker.read().state(), BreakerState::Open);
    }
}
