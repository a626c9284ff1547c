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
//! and leave, O(1) per sample and per verdict. The window keeps each sample's latency too, so
//! that when it moves the breaker the shard can say why with the window's figures
//! ([`BreakerWindow::take_figures`]: the p95 itself is selected then, O(n), once per
//! transition; the window is cleared on every transition anyway).
//!
//! Every transition has exactly one author: the shard whose compare-exchange won (it reports
//! the transition and its cause to the control plane, off the data path), or the control
//! plane itself for forced states and the monitor's overload.

pub use crate::command::WindowFigures;
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

    /// The encoded word, to carry through layers that do not know this type.
    pub(crate) fn word(self) -> u64 {
        self.word
    }

    /// The reading `word` encodes (see [`word`](Self::word)).
    pub(crate) fn from_word(word: u64) -> Self {
        Self { word }
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

/// Which automatic rule moved the breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Closed or half-open -> open: a shard's window went bad ([`CircuitBreaker::evaluate`])
    /// or a queue reached 100% of its cap ([`CircuitBreaker::trip_full_queue`]).
    Tripped,
    /// The recovery timeout passed: open -> half-open.
    Probing,
    /// The good period passed in half-open: -> closed.
    Recovered,
}

/// A transition one call made: the rule, the reading it replaced and the one it wrote.
///
/// ```
/// use spillway::admission::breaker::{BreakerState, CircuitBreaker, Transition};
///
/// let breaker = CircuitBreaker::new();
/// let moved = breaker.trip_full_queue(7).unwrap();
/// assert_eq!(moved.transition, Transition::Tripped);
/// assert_eq!(moved.from.state(), BreakerState::Closed);
/// assert_eq!(moved.to, breaker.read());
/// assert_eq!((moved.to.state(), moved.to.since_ns()), (BreakerState::Open, 7));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerMove {
    /// The rule.
    pub transition: Transition,
    /// The reading it moved from.
    pub from: BreakerReading,
    /// The reading it wrote (its `since_ns` is the transition's time).
    pub to: BreakerReading,
}

impl BreakerMove {
    /// How long the breaker had been in the state it left, ns.
    ///
    /// ```
    /// use spillway::admission::breaker::{CircuitBreaker, Transition, WindowVerdict};
    /// use spillway::config::BreakerConfig;
    ///
    /// let config = BreakerConfig {
    ///     recovery_timeout_ns: 1_000,
    ///     ..BreakerConfig::default()
    /// };
    /// let breaker = CircuitBreaker::new();
    /// let open = breaker.trip_full_queue(100).unwrap().to;
    /// let probing = breaker.evaluate(open, WindowVerdict::Good, 1_250, &config).unwrap();
    /// assert_eq!(probing.transition, Transition::Probing);
    /// assert_eq!(probing.held_ns(), 1_150); // open from 100 ns to 1250 ns
    /// ```
    pub fn held_ns(&self) -> u64 {
        self.to.since_ns().saturating_sub(self.from.since_ns())
    }
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

    /// Moves from `seen` to `to` at `now_ns` by `transition` unless someone moved it first;
    /// the move if this call made it. Relaxed: the compare-exchange alone decides which of two
    /// racing shards moves it; nothing else is published.
    fn move_from(
        &self,
        seen: BreakerReading,
        to: BreakerState,
        now_ns: u64,
        transition: Transition,
    ) -> Option<BreakerMove> {
        let to = BreakerReading {
            word: word(to, now_ns),
        };
        self.word
            .compare_exchange(seen.word, to.word, Ordering::Relaxed, Ordering::Relaxed)
            .ok()
            .map(|_| BreakerMove {
                transition,
                from: seen,
                to,
            })
    }

    /// Applies the automatic rules for a shard whose window reads `verdict` at `now_ns`, from
    /// the state `seen` that the shard read this batch. Returns the move this call made.
    pub fn evaluate(
        &self,
        seen: BreakerReading,
        verdict: WindowVerdict,
        now_ns: u64,
        config: &BreakerConfig,
    ) -> Option<BreakerMove> {
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
        self.move_from(seen, to, now_ns, transition)
    }

    /// Opens the breaker because a queue reached 100% of its cap (unless it is open, or held
    /// by the control plane). Returns the move if this call opened it.
    ///
    /// ```
    /// use spillway::admission::breaker::{BreakerState, CircuitBreaker, Transition};
    ///
    /// let breaker = CircuitBreaker::new();
    /// let tripped = breaker.trip_full_queue(10).unwrap();
    /// assert_eq!(tripped.transition, Transition::Tripped);
    /// assert_eq!(tripped.to.state(), BreakerState::Open);
    /// // Already open: a second full queue moves nothing.
    /// assert_eq!(breaker.trip_full_queue(11), None);
    /// assert_eq!(breaker.read().since_ns(), 10);
    /// ```
    pub fn trip_full_queue(&self, now_ns: u64) -> Option<BreakerMove> {
        let seen = self.read();
        if !matches!(seen.state(), BreakerState::Closed | BreakerState::HalfOpen) {
            return None;
        }
        self.move_from(seen, BreakerState::Open, now_ns, Transition::Tripped)
    }

    /// Holds the breaker open (control plane) until [`reset`](Self::reset). Returns the
    /// reading it replaced.
    ///
    /// ```
    /// use spillway::admission::breaker::{BreakerState, CircuitBreaker};
    ///
    /// let breaker = CircuitBreaker::new();
    /// let replaced = breaker.force_open(5);
    /// assert_eq!(replaced.state(), BreakerState::Closed);
    /// assert_eq!(breaker.read().state(), BreakerState::ForcedOpen);
    /// assert!(breaker.read().state().sheds());
    /// // Held: the automatic rules leave it alone.
    /// assert_eq!(breaker.trip_full_queue(6), None);
    /// ```
    pub fn force_open(&self, now_ns: u64) -> BreakerReading {
        self.replace(BreakerState::ForcedOpen, now_ns)
    }

    /// Holds the breaker closed (control plane) until [`reset`](Self::reset). Returns the
    /// reading it replaced.
    ///
    /// ```
    /// use spillway::admission::breaker::{BreakerState, CircuitBreaker, WindowVerdict};
    /// use spillway::config::BreakerConfig;
    ///
    /// let breaker = CircuitBreaker::new();
    /// breaker.trip_full_queue(1).unwrap();
    /// assert_eq!(breaker.force_closed(2).state(), BreakerState::Open);
    /// // A bad window no longer opens it.
    /// let config = BreakerConfig::default();
    /// assert_eq!(breaker.evaluate(breaker.read(), WindowVerdict::Bad, 3, &config), None);
    /// assert_eq!(breaker.read().state(), BreakerState::ForcedClosed);
    /// ```
    pub fn force_closed(&self, now_ns: u64) -> BreakerReading {
        self.replace(BreakerState::ForcedClosed, now_ns)
    }

    /// Returns the breaker to automatic control, closed. Returns the reading it replaced.
    ///
    /// ```
    /// use spillway::admission::breaker::{BreakerState, CircuitBreaker};
    ///
    /// let breaker = CircuitBreaker::new();
    /// breaker.force_open(4);
    /// let replaced = breaker.reset(9);
    /// assert_eq!((replaced.state(), replaced.since_ns()), (BreakerState::ForcedOpen, 4));
    /// assert_eq!((breaker.read().state(), breaker.read().since_ns()), (BreakerState::Closed, 9));
    /// // Automatic again: a full queue trips it.
    /// assert!(breaker.trip_full_queue(10).is_some());
    /// ```
    pub fn reset(&self, now_ns: u64) -> BreakerReading {
        self.replace(BreakerState::Closed, now_ns)
    }

    /// Sets the state whatever it was. Relaxed: as in `read`; the swap makes the replaced
    /// reading exact even if a shard moved the word just before.
    fn replace(&self, state: BreakerState, now_ns: u64) -> BreakerReading {
        BreakerReading {
            word: self.word.swap(word(state, now_ns), Ordering::Relaxed),
        }
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
    /// Per sample: the latency in ns (bits 0..63, saturated at [`LATENCY_MASK`]) and
    /// whether it failed (bit 63, [`FAILED`]). A ring of `window_requests` entries; `next`
    /// is where the next sample goes, the first `filled` entries are in use.
    samples: Box<[u64]>,
    next: usize,
    filled: usize,
    /// Samples in use whose latency is over `latency_limit_ns`.
    slow: usize,
    /// Samples in use that failed.
    errors: usize,
    latency_limit_ns: u64,
    error_rate_max_percent: f64,
    min_samples: usize,
}

/// A sample's failed bit.
const FAILED: u64 = 1 << 63;
/// A sample's latency bits (292 years of ns).
const LATENCY_MASK: u64 = FAILED - 1;

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
        let sample = latency_ns.min(LATENCY_MASK) | if failed { FAILED } else { 0 };
        if self.filled == self.samples.len() {
            let evicted = self.samples[self.next];
            self.slow -= usize::from(evicted & LATENCY_MASK > self.latency_limit_ns);
            self.errors -= usize::from(evicted & FAILED != 0);
        } else {
            self.filled += 1;
        }
        self.samples[self.next] = sample;
        self.slow += usize::from(sample & LATENCY_MASK > self.latency_limit_ns);
        self.errors += usize::from(failed);
        self.next = (self.next + 1) % self.samples.len();
    }

    /// The window's figures now, then clears it (for the transition that follows: the window
    /// is cleared on every transition, so selecting the p95 in place costs no copy). O(n) for
    /// the p95; called once per transition, never per message.
    ///
    /// ```
    /// use spillway::admission::breaker::BreakerWindow;
    /// use spillway::config::BreakerConfig;
    ///
    /// let config = BreakerConfig {
    ///     window_requests: 20,
    ///     min_samples: 20,
    ///     ..BreakerConfig::default()
    /// };
    /// let mut window = BreakerWindow::new(&config);
    /// for ms in 1..=20u64 {
    ///     window.record(ms * 1_000_000, ms == 20); // 1..=20 ms, the last one failed
    /// }
    /// let figures = window.take_figures();
    /// assert_eq!((figures.samples, figures.failed), (20, 1));
    /// assert_eq!(figures.error_rate_percent, 5.0);
    /// assert_eq!(figures.p95_latency_ns, 19_000_000); // rank ceil(0.95 × 20) = 19
    /// assert!(window.is_empty());
    /// ```
    pub fn take_figures(&mut self) -> WindowFigures {
        let count = self.filled;
        let samples = &mut self.samples[..count];
        let p95_latency_ns = if count == 0 {
            0
        } else {
            for sample in samples.iter_mut() {
                *sample &= LATENCY_MASK;
            }
            // Rank ceil(0.95 n), 1-based, as `verdict` judges it: over the limit exactly when
            // more than n - ceil(0.95 n) samples are.
            let rank = (count * 95).div_ceil(100);
            *samples.select_nth_unstable(rank - 1).1
        };
        let figures = WindowFigures {
            samples: count as u64,
            failed: self.errors as u64,
            error_rate_percent: self.error_rate_percent(),
            error_rate_max_percent: self.error_rate_max_percent,
            p95_latency_ns,
            p95_latency_max_ns: self.latency_limit_ns,
        };
        self.clear();
        figures
    }

    fn error_rate_percent(&self) -> f64 {
        if self.filled == 0 {
            return 0.0;
        }
        self.errors as f64 * 100.0 / self.filled as f64
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
        if self.slow > slow_allowed || self.error_rate_percent() > self.error_rate_max_percent {
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
        let tripped = breaker
            .evaluate(seen, WindowVerdict::Bad, 10, &config)
            .unwrap();
        assert_eq!(tripped.transition, Transition::Tripped);
        assert_eq!(tripped.from, seen);
        assert_eq!(tripped.to, breaker.read());
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
        let probing = breaker
            .evaluate(
                open,
                WindowVerdict::Good,
                10 + config.recovery_timeout_ns,
                &config,
            )
            .unwrap();
        assert_eq!(probing.transition, Transition::Probing);
        assert_eq!(probing.held_ns(), config.recovery_timeout_ns);
        let half_open = breaker.read();
        assert_eq!(half_open.state(), BreakerState::HalfOpen);
        let later = half_open.since_ns() + config.good_period_ns;
        assert_eq!(
            breaker
                .evaluate(half_open, WindowVerdict::Good, later, &config)
                .map(|moved| moved.transition),
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
        assert_eq!(breaker.trip_full_queue(7), None);
        assert_eq!(breaker.force_open(8).state(), BreakerState::ForcedClosed);
        assert!(breaker.read().state().sheds());
        let replaced = breaker.reset(9);
        assert_eq!(
            (replaced.state(), replaced.since_ns()),
            (BreakerState::ForcedOpen, 8)
        );
        let tripped = breaker.trip_full_queue(10).unwrap();
        assert_eq!(tripped.transition, Transition::Tripped);
        assert_eq!(tripped.from.state(), BreakerState::Closed);
        assert_eq!(breaker.read().state(), BreakerState::Open);
    }

    #[test]
    fn figures_give_the_error_rate_and_the_p95_the_verdict_judged_then_clear() {
        let mut window = BreakerWindow::new(&config());
        // 1000 samples: latencies 1..=1000 ms, every 50th failed (2%).
        for index in 1..=1000u64 {
            window.record(index * 1_000_000, index % 50 == 0);
        }
        assert_eq!(window.verdict(), WindowVerdict::Bad);
        let figures = window.take_figures();
        assert_eq!(
            figures,
            WindowFigures {
                samples: 1000,
                failed: 20,
                error_rate_percent: 2.0,
                error_rate_max_percent: 1.0,
                // Rank ceil(950) of 1..=1000 ms.
                p95_latency_ns: 950_000_000,
                p95_latency_max_ns: 200_000_000,
            }
        );
        assert!(window.is_empty());
        assert_eq!(
            window.take_figures(),
            WindowFigures {
                error_rate_max_percent: 1.0,
                p95_latency_max_ns: 200_000_000,
                ..WindowFigures::default()
            }
        );
    }

    #[test]
    fn the_p95_figure_is_over_the_limit_exactly_when_the_verdict_says_slow() {
        // 1000 samples of which `slow` are over the 200 ms limit: bad from 51.
        for slow in [50, 51] {
            let mut window = BreakerWindow::new(&config());
            for index in 0..1000 {
                window.record(if index < slow { 250_000_000 } else { 1_000 }, false);
            }
            let bad = window.verdict() == WindowVerdict::Bad;
            let figures = window.take_figures();
            assert_eq!(bad, slow == 51);
            assert_eq!(figures.p95_latency_ns > figures.p95_latency_max_ns, bad);
        }
    }
}
