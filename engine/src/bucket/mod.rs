//! Per-connection rate limiting: a token bucket on atomics, and the adaptive controller that
//! lowers its rate when the handler falls behind (SPEC 3, level 1).
//!
//! The bucket is the Generic Cell Rate Algorithm (GCRA, ATM Forum TM 4.0; the same scheme as
//! governor's `gcra.rs`): instead of a token count and a refill timestamp it keeps one number,
//! the *theoretical arrival time* (TAT), in one `AtomicU64`. Each admitted token pushes the
//! TAT one emission interval `T = 1/rate` later; a request is admitted when the new TAT is no
//! further ahead of now than the burst window `τ`. The decision is a pure function of
//! `(tat, now, T, τ, n)`; a compare-exchange loop applies it, and refusals write nothing, so
//! a flood of refused requests does not bounce the bucket's cache line between cores.
//!
//! Time is passed in (nanoseconds from [`crate::clock::Clock`] or a test's hand-made values):
//! a shard reads the clock once per batch, and tests run on a fake clock.
//!
//! # Exactness
//! `T` is `1e9 / rate` nanoseconds rounded *up* to a whole nanosecond, so:
//! - over any interval of length `t` starting from a full bucket, admitted tokens are at most
//!   `burst + rate * t` (each admitted token advances the TAT by `T >= 1e9/rate`, and the TAT
//!   never runs more than `τ` ahead of the latest `now`);
//! - a sender that spaces its requests at least `ceil(1e9/rate)` ns apart (any steady sender
//!   at or under the rate on a nanosecond clock) is never refused;
//! - when `rate` does not divide 1e9 the effective rate is `1e9 / T`, under nominal by less
//!   than `rate / 1e9` (0.1% at 1M/s, 0.00005% at the default 500/s). The cap is never
//!   exceeded; rates above 1e9/s are held to 1e9/s.

mod adaptive;

pub use adaptive::{
    decide as adaptive_decide, AdaptiveError, AdaptiveRate, AdaptiveSettings, RateDecision,
};

use core::num::NonZeroU32;
use core::time::Duration;

use crate::sync::{AtomicU64, Ordering};

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// A refusal from [`TokenBucket::try_acquire`]: how long until the tokens asked for are there.
///
/// ```
/// use core::num::NonZeroU32;
/// use spillway::bucket::TokenBucket;
/// let bucket = TokenBucket::new(NonZeroU32::new(10).unwrap(), NonZeroU32::new(1).unwrap());
/// bucket.try_acquire(0, 1).unwrap();
/// let refusal = bucket.try_acquire(0, 1).unwrap_err();
/// assert_eq!(refusal.wait_ns, 100_000_000); // one token per 100 ms
/// assert!(bucket.try_acquire(refusal.wait_ns, 1).is_ok());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("rate limited: retry after {wait_ns} ns")]
pub struct RetryAfter {
    /// Nanoseconds from the `now_ns` of the refused call until the tokens are there, if no
    /// one else takes them first. [`RetryAfter::NEVER`] when more tokens were asked for than
    /// the burst holds.
    pub wait_ns: u64,
}

impl RetryAfter {
    /// The answer for a request larger than the bucket's burst: waiting does not help.
    pub const NEVER: Self = Self { wait_ns: u64::MAX };

    /// The wait as a `Duration`, or `None` for [`RetryAfter::NEVER`].
    pub fn as_duration(self) -> Option<Duration> {
        (self != Self::NEVER).then_some(Duration::from_nanos(self.wait_ns))
    }
}

/// A token bucket that many threads may use at once, with a rate that any thread may change.
///
/// `burst` is the bucket's depth in messages at the rate given to `new`. Internally it is a
/// window of time, `τ = burst × T` (`burst / rate` seconds of traffic), and
/// [`set_rate`](Self::set_rate) keeps that window: the burst in messages scales with the rate
/// (SPEC 3's "burst 2x the rate" stays true at any rate), a rate change never refills the
/// bucket, and the window never shrinks below one message.
///
/// ```
/// use core::num::NonZeroU32;
/// use spillway::bucket::TokenBucket;
/// // 500 msg/s with a burst of 1000, the per-connection defaults.
/// let bucket = TokenBucket::new(NonZeroU32::new(500).unwrap(), NonZeroU32::new(1000).unwrap());
/// assert!(bucket.try_acquire(0, 1000).is_ok()); // a full bucket takes the whole burst
/// assert!(bucket.try_acquire(0, 1).is_err());
/// assert!(bucket.try_acquire(2_000_000, 1).is_ok()); // one token per 2 ms
/// ```
#[derive(Debug)]
pub struct TokenBucket {
    /// Theoretical arrival time in nanoseconds on the caller's clock: the time at which the
    /// bucket would be full again. `tat <= now` means full. Invariant after every successful
    /// update: `tat <= now + max(τ, T)` for the `now` of that update.
    tat_ns: AtomicU64,
    /// Current rate and emission interval, packed so that one load reads a matching pair:
    /// high 32 bits the rate in messages per second (`1..=u32::MAX`), low 32 bits
    /// `T = ceil(1e9 / rate)` in nanoseconds (`1..=1e9`, fits in 30 bits).
    rate_and_interval: AtomicU64,
    /// The burst window `τ` in nanoseconds, `burst × T` at construction: at most
    /// `u32::MAX × 1e9 < 2^62`, so `now + τ` cannot overflow before `now` passes 2^62 ns
    /// (146 years of uptime); additions below saturate regardless.
    tolerance_ns: u64,
}

impl TokenBucket {
    /// A full bucket admitting `rate_per_sec` messages per second on average and up to
    /// `burst` at once.
    pub fn new(rate_per_sec: NonZeroU32, burst: NonZeroU32) -> Self {
        let interval_ns = interval_ns(rate_per_sec);
        Self {
            tat_ns: AtomicU64::new(0),
            rate_and_interval: AtomicU64::new(pack(rate_per_sec, interval_ns)),
            tolerance_ns: u64::from(burst.get()) * interval_ns,
        }
    }

    /// Takes `n` tokens at time `now_ns`, or says how long until they are there. Safe from
    /// any number of threads at once: the update is a compare-exchange.
    ///
    /// `now_ns` is a monotonic reading; readings a little older than another thread's (one
    /// clock read per batch) are fine: an old `now` can only make the answer stricter.
    /// `n == 0` always succeeds.
    #[inline]
    pub fn try_acquire(&self, now_ns: u64, n: u32) -> Result<(), RetryAfter> {
        let (increment_ns, limit_ns) = self.request(now_ns, n)?;
        // Relaxed throughout: the TAT publishes no other memory, and every successful
        // compare-exchange is a read-modify-write, so it acts on the latest TAT in the
        // atomic's single modification order; that total order is all the bound needs.
        // A refusal may come from a stale load, with no read-modify-write: that is still
        // right, because the TAT only grows (each write is `max(tat, now) + increment`) and
        // a larger TAT only refuses more; its `wait_ns` may then be an underestimate.
        let mut tat_ns = self.tat_ns.load(Ordering::Relaxed);
        loop {
            let new_tat_ns = decide(tat_ns, now_ns, increment_ns, limit_ns)?;
            match self.tat_ns.compare_exchange_weak(
                tat_ns,
                new_tat_ns,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(current_ns) => tat_ns = current_ns,
            }
        }
    }

    /// [`try_acquire`](Self::try_acquire) for a bucket that one thread owns, such as a
    /// shard's per-connection bucket: `&mut self` proves that no other thread can check or
    /// change this bucket meanwhile, so the update is a plain load and store with no locked
    /// instruction (the compare-exchange is most of `try_acquire`'s cost). Same decision,
    /// same bound.
    #[inline]
    pub fn try_acquire_exclusive(&mut self, now_ns: u64, n: u32) -> Result<(), RetryAfter> {
        let (increment_ns, limit_ns) = self.request(now_ns, n)?;
        // Relaxed: `&mut self` excludes every other access; these compile to plain moves.
        let tat_ns = self.tat_ns.load(Ordering::Relaxed);
        let new_tat_ns = decide(tat_ns, now_ns, increment_ns, limit_ns)?;
        self.tat_ns.store(new_tat_ns, Ordering::Relaxed);
        Ok(())
    }

    /// The cost of `n` tokens and the latest TAT that admits them at `now_ns`.
    #[inline(always)]
    fn request(&self, now_ns: u64, n: u32) -> Result<(u64, u64), RetryAfter> {
        // Relaxed: the pair is self-contained, and a rate change that this check does not
        // see yet is one the caller could have raced anyway; the bound holds for whichever
        // interval each update uses.
        let interval_ns = unpack_interval(self.rate_and_interval.load(Ordering::Relaxed));
        let tolerance_ns = self.tolerance_ns.max(interval_ns);
        // At most u32::MAX × 1e9 < 2^62: no overflow.
        let increment_ns = u64::from(n) * interval_ns;
        if increment_ns > tolerance_ns {
            return Err(RetryAfter::NEVER);
        }
        Ok((increment_ns, now_ns.saturating_add(tolerance_ns)))
    }

    /// Changes the rate from now on, from any thread; the burst window is kept (see the type's
    /// docs). Checks already under way may still use the old rate.
    pub fn set_rate(&self, rate_per_sec: NonZeroU32) {
        // Relaxed: see `try_acquire`; the pair is the only thing published.
        self.rate_and_interval.store(
            pack(rate_per_sec, interval_ns(rate_per_sec)),
            Ordering::Relaxed,
        );
    }

    /// The rate in messages per second last set.
    pub fn rate_per_sec(&self) -> NonZeroU32 {
        let packed = self.rate_and_interval.load(Ordering::Relaxed);
        NonZeroU32::new((packed >> 32) as u32).expect("rate is stored non-zero")
    }

    /// The burst at the current rate: the most messages a full bucket admits at once.
    pub fn burst(&self) -> u32 {
        let interval_ns = unpack_interval(self.rate_and_interval.load(Ordering::Relaxed));
        u32::try_from(self.tolerance_ns.max(interval_ns) / interval_ns).unwrap_or(u32::MAX)
    }

    /// Tokens that a request at `now_ns` could take right now (a snapshot).
    pub fn available(&self, now_ns: u64) -> u32 {
        let interval_ns = unpack_interval(self.rate_and_interval.load(Ordering::Relaxed));
        let tolerance_ns = self.tolerance_ns.max(interval_ns);
        let tat_ns = self.tat_ns.load(Ordering::Relaxed).max(now_ns);
        let room_ns = now_ns.saturating_add(tolerance_ns).saturating_sub(tat_ns);
        u32::try_from(room_ns / interval_ns).unwrap_or(u32::MAX)
    }
}

/// The GCRA decision: the TAT after admitting `increment_ns` worth of tokens at `now_ns`, or
/// the wait if that would put the TAT past `limit_ns` (= now + τ).
#[inline(always)]
fn decide(tat_ns: u64, now_ns: u64, increment_ns: u64, limit_ns: u64) -> Result<u64, RetryAfter> {
    let new_tat_ns = tat_ns.max(now_ns).saturating_add(increment_ns);
    if new_tat_ns > limit_ns {
        return Err(RetryAfter {
            wait_ns: new_tat_ns - limit_ns,
        });
    }
    Ok(new_tat_ns)
}

/// `ceil(1e9 / rate)`, in `1..=1e9`: rounding up keeps the cap exact (module docs).
fn interval_ns(rate_per_sec: NonZeroU32) -> u64 {
    NANOS_PER_SEC.div_ceil(u64::from(rate_per_sec.get()))
}

fn pack(rate_per_sec: NonZeroU32, interval_ns: u64) -> u64 {
    debug_assert!((1..=NANOS_PER_SEC).contains(&interval_ns));
    (u64::from(rate_per_sec.get()) << 32) | interval_ns
}

#[inline(always)]
fn unpack_interval(packed: u64) -> u64 {
    packed & u64::from(u32::MAX)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn bucket(rate: u32, burst: u32) -> TokenBucket {
        TokenBucket::new(
            NonZeroU32::new(rate).unwrap(),
            NonZeroU32::new(burst).unwrap(),
        )
    }

    #[test]
    fn full_bucket_admits_exactly_the_burst() {
        let bucket = bucket(500, 1000);
        for _ in 0..1000 {
            bucket.try_acquire(5_000_000_000, 1).unwrap();
        }
        let refusal = bucket.try_acquire(5_000_000_000, 1).unwrap_err();
        assert_eq!(refusal.wait_ns, 2_000_000);
    }

    #[test]
    fn steady_sender_at_the_rate_is_never_refused() {
        // 3/s does not divide 1e9: T rounds up to 333_333_334 ns.
        let bucket = bucket(3, 1);
        for message in 0..100_000u64 {
            bucket.try_acquire(message * 333_333_334, 1).unwrap();
        }
    }

    #[test]
    fn asking_for_more_than_the_burst_is_never() {
        let bucket = bucket(100, 5);
        assert_eq!(bucket.try_acquire(0, 6), Err(RetryAfter::NEVER));
        assert_eq!(RetryAfter::NEVER.as_duration(), None);
        assert!(bucket.try_acquire(0, 5).is_ok());
        assert!(bucket.try_acquire(0, 0).is_ok());
    }

    #[test]
    fn lowering_the_rate_does_not_refill() {
        let bucket = bucket(1000, 100);
        bucket.try_acquire(0, 100).unwrap();
        bucket.set_rate(NonZeroU32::new(100).unwrap());
        assert_eq!(bucket.available(0), 0);
        // The window is 100 ms: at 100/s that is 10 messages.
        assert_eq!(bucket.burst(), 10);
        assert_eq!(bucket.available(100_000_000), 10);
        assert_eq!(bucket.rate_per_sec().get(), 100);
    }

    #[test]
    fn the_window_never_shrinks_below_one_message() {
        let bucket = bucket(1000, 1);
        bucket.set_rate(NonZeroU32::new(1).unwrap());
        assert_eq!(bucket.burst(), 1);
        assert!(bucket.try_acquire(0, 1).is_ok());
        assert_eq!(
            bucket.try_acquire(0, 1),
            Err(RetryAfter {
                wait_ns: 1_000_000_000
            })
        );
    }

    #[test]
    fn exclusive_and_shared_checks_decide_alike() {
        let shared = bucket(1000, 10);
        let mut exclusive = bucket(1000, 10);
        let mut now_ns = 0;
        for step in 0..10_000u64 {
            now_ns += (step * 7919) % 1_700_000;
            let n = (step % 4) as u32;
            assert_eq!(
                shared.try_acquire(now_ns, n),
                exclusive.try_acquire_exclusive(now_ns, n)
            );
        }
    }

    #[test]
    fn an_older_now_from_another_thread_is_only_stricter() {
        let bucket = bucket(10, 1);
        bucket.try_acquire(1_000_000_000, 1).unwrap();
        assert!(bucket.try_acquire(999_000_000, 1).is_err());
        assert!(bucket.try_acquire(1_100_000_000, 1).is_ok());
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! Concurrent `try_acquire` racing `set_rate` (scripts/loom.sh), at a frozen `now = 0`
    //! on a full bucket. Every admitted token advanced the TAT by the interval in force for
    //! its check (T1 before the rate change, T2 after), so the final TAT must be
    //! `x × T1 + y × T2` with `x + y` = the tokens admitted (a lost or doubled update breaks
    //! this), and it must not pass `now + τ` (the bound: at most `τ / T2` tokens even if every
    //! check saw the faster rate).
    use super::*;
    use loom::sync::atomic::AtomicU32;
    use loom::sync::Arc;
    use loom::thread;

    const INTERVAL_SLOW_NS: u64 = 500_000_000; // 2/s
    const INTERVAL_FAST_NS: u64 = 250_000_000; // 4/s

    #[test]
    fn concurrent_acquire_and_set_rate_never_exceed_the_bound() {
        loom::model(|| {
            // Burst 2 at 2/s: a window of τ = 1 s, worth 4 tokens at the faster rate.
            let bucket = Arc::new(TokenBucket::new(
                NonZeroU32::new(2).unwrap(),
                NonZeroU32::new(2).unwrap(),
            ));
            let admitted = Arc::new(AtomicU32::new(0));
            let workers: Vec<_> = (0..2)
                .map(|_| {
                    let bucket = Arc::clone(&bucket);
                    let admitted = Arc::clone(&admitted);
                    thread::spawn(move || {
                        for _ in 0..3 {
                            if bucket.try_acquire(0, 1).is_ok() {
                                admitted.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    })
                })
                .collect();
            bucket.set_rate(NonZeroU32::new(4).unwrap());
            for worker in workers {
                worker.join().unwrap();
            }
            let admitted = u64::from(admitted.load(Ordering::Relaxed));
            let tat_ns = bucket.tat_ns.load(Ordering::Relaxed);
            let tolerance_ns = bucket.tolerance_ns;
            assert!(tat_ns <= tolerance_ns, "TAT {tat_ns} beyond now + τ");
            assert!(admitted <= tolerance_ns / INTERVAL_FAST_NS);
            let decomposes = (0..=admitted).any(|slow| {
                slow * INTERVAL_SLOW_NS + (admitted - slow) * INTERVAL_FAST_NS == tat_ns
            });
            assert!(
                decomposes,
                "{admitted} tokens cannot make a TAT of {tat_ns}"
            );
            // Six attempts against a window of at least two tokens: some were admitted.
            assert!(admitted >= 2);
        });
    }
}
