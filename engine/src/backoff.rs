//! Retry pacing for [`Client::send_with_backpressure`](crate::client::Client::send_with_backpressure)
//! (SPEC 6): exponential backoff with full jitter, floored by the server's `retry_after`,
//! as a pure function of the retry number and a random source that tests replace.
//!
//! Full jitter is the scheme of the AWS Architecture Blog's "Exponential Backoff And
//! Jitter" (Marc Brooker, 2015): the wait before retry `n` (from 0) is uniform in
//! `[0, min(max_delay, base_delay * 2^n)]`. It spreads retries from many clients evenly
//! instead of letting them return in waves. Here it is also never less than the
//! `retry_after_ns` of the refusal it answers, which is the server's verdict on when a
//! retry can succeed.

use core::time::Duration;

/// Settings of [`Client::send_with_backpressure`](crate::client::Client::send_with_backpressure).
/// The defaults are SPEC 6's: base 100 ms, at most 50 retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffConfig {
    /// The ceiling of the first retry's wait; each later retry doubles it (until
    /// `max_delay`). Zero retries at once, as soon as any `retry_after` allows.
    pub base_delay: Duration,
    /// The cap on the jittered part of every wait. A refusal's `retry_after` may still ask
    /// for longer, and is honoured.
    pub max_delay: Duration,
    /// How many times a refused or shed message is submitted again before giving up, so a
    /// message is submitted at most `max_retries + 1` times.
    pub max_retries: u32,
}

impl BackoffConfig {
    /// SPEC 6's base delay: 100 ms.
    pub const DEFAULT_BASE_DELAY: Duration = Duration::from_millis(100);
    /// The default cap on a wait: 10 s. SPEC 6 names none; without one the 50th retry's
    /// ceiling would be `100 ms * 2^49`, about 1.8 million years.
    pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(10);
    /// SPEC 6's retry bound: 50.
    pub const DEFAULT_MAX_RETRIES: u32 = 50;
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            base_delay: Self::DEFAULT_BASE_DELAY,
            max_delay: Self::DEFAULT_MAX_DELAY,
            max_retries: Self::DEFAULT_MAX_RETRIES,
        }
    }
}

/// A source of uniformly distributed 64-bit values for the jitter. [`SplitMix64`] in a
/// client; a fixed sequence in tests.
pub trait RandomSource {
    /// The next value, uniform over all of `u64`.
    fn next_u64(&mut self) -> u64;
}

/// SplitMix64 (Guy Steele, Doug Lea and Christine Flood, "Fast splittable pseudorandom
/// number generators", OOPSLA 2014; the constants are those of `java.util.SplittableRandom`
/// and of Sebastiano Vigna's reference code): a Weyl sequence through a 64-bit finalizer.
/// Every seed is fine, including 0; the period is 2^64. Not for cryptography: it only has
/// to keep clients from retrying in step.
///
/// ```
/// use spillway::client::{RandomSource, SplitMix64};
///
/// let mut random = SplitMix64::new(0);
/// assert_eq!(random.next_u64(), 0xe220_a839_7b1d_cdaf); // the reference sequence
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitMix64 {
    /// The Weyl sequence: advances by the golden-ratio increment on every draw, wrapping.
    state: u64,
}

impl SplitMix64 {
    /// The generator whose sequence `seed` starts.
    pub const fn new(seed: u64) -> Self {
        Self { state: seed }
    }
}

impl RandomSource for SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut mixed = self.state;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        mixed ^ (mixed >> 31)
    }
}

/// The wait before retry number `retry` (0 for the first retry): uniform in
/// `[0, min(max_delay, base_delay * 2^retry)]`, drawn from `random`, and never less than
/// `retry_after`.
///
/// Exact in nanoseconds. Durations over `u64::MAX` ns (584 years) count as `u64::MAX` ns,
/// and `base_delay * 2^retry` saturates there too instead of overflowing, so every `retry`
/// is valid. The draw maps `random`'s value onto the range by a 128-bit multiply (Lemire's
/// method without its rejection step), so it is uniform to within one part in
/// `2^64 / range`, and a source that answers `0` gives `0`, one that answers `u64::MAX`
/// gives the top of the range.
///
/// ```
/// use std::time::Duration;
/// use spillway::client::{backoff_delay, BackoffConfig, SplitMix64};
///
/// let config = BackoffConfig::default(); // base 100 ms
/// let mut random = SplitMix64::new(7);
/// let delay = backoff_delay(&config, 2, Duration::ZERO, &mut random);
/// assert!(delay <= Duration::from_millis(400));
/// let delay = backoff_delay(&config, 0, Duration::from_secs(1), &mut random);
/// assert!(delay >= Duration::from_secs(1)); // the server's retry_after wins
/// ```
pub fn backoff_delay(
    config: &BackoffConfig,
    retry: u32,
    retry_after: Duration,
    random: &mut impl RandomSource,
) -> Duration {
    let ceiling_ns = jitter_ceiling_ns(config, retry);
    let drawn_ns = ((u128::from(random.next_u64()) * (u128::from(ceiling_ns) + 1)) >> 64) as u64;
    Duration::from_nanos(drawn_ns.max(duration_ns(retry_after)))
}

/// A seed for [`SplitMix64`] that differs from run to run and process to process: the time
/// of day in ns and the process id, mixed with `distinct` (what tells apart seeds taken in
/// the same nanosecond by one process, such as a client's local port).
pub(crate) fn time_seed(distinct: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, duration_ns);
    nanos ^ distinct ^ u64::from(std::process::id()).rotate_left(24)
}

/// `min(max_delay, base_delay * 2^retry)` in ns, saturating at `u64::MAX`.
pub(crate) fn jitter_ceiling_ns(config: &BackoffConfig, retry: u32) -> u64 {
    let base_ns = duration_ns(config.base_delay);
    let doubled_ns = if base_ns == 0 {
        0
    } else if retry >= u64::BITS || base_ns > (u64::MAX >> retry) {
        u64::MAX
    } else {
        base_ns << retry
    };
    doubled_ns.min(duration_ns(config.max_delay))
}

/// A duration in ns, saturating at `u64::MAX` (584 years).
pub(crate) fn duration_ns(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// What [`Client::send_with_backpressure`](crate::client::Client::send_with_backpressure) has done
/// on one client, counted since the client connected (SPEC 6).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackpressureStats {
    /// Calls made.
    pub calls: u64,
    /// Submissions made by those calls, first tries and retries.
    pub attempts: u64,
    /// Backoff waits: one before every retry.
    pub waits: u64,
    /// Calls that ended with a final outcome after at least one wait.
    pub successes_after_waiting: u64,
    /// Calls that ended in an error: gave up (retries exhausted, or a refusal that waiting
    /// does not help), or a connection error on the way.
    pub failures: u64,
    /// Time spent in backoff waits, in ns (saturating at 584 years).
    pub waited_ns: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers the same value every time.
    struct Fixed(u64);

    impl RandomSource for Fixed {
        fn next_u64(&mut self) -> u64 {
            self.0
        }
    }

    const MS: Duration = Duration::from_millis(1);

    fn config(base_delay: Duration, max_delay: Duration) -> BackoffConfig {
        BackoffConfig {
            base_delay,
            max_delay,
            max_retries: 50,
        }
    }

    #[test]
    fn defaults_are_spec_6() {
        let config = BackoffConfig::default();
        assert_eq!(config.base_delay, Duration::from_millis(100));
        assert_eq!(config.max_retries, 50);
        assert_eq!(config.max_delay, Duration::from_secs(10));
    }

    #[test]
    fn full_jitter_spans_zero_to_the_doubled_base() {
        let config = config(100 * MS, Duration::from_secs(3600));
        for retry in 0..10u32 {
            let ceiling = 100 * MS * 2u32.pow(retry);
            assert_eq!(
                backoff_delay(&config, retry, Duration::ZERO, &mut Fixed(0)),
                Duration::ZERO
            );
            assert_eq!(
                backoff_delay(&config, retry, Duration::ZERO, &mut Fixed(u64::MAX)),
                ceiling,
                "retry {retry}"
            );
            let middle = backoff_delay(&config, retry, Duration::ZERO, &mut Fixed(1 << 63));
            assert!(
                middle.abs_diff(ceiling / 2) <= Duration::from_nanos(1),
                "retry {retry}: {middle:?}"
            );
        }
    }

    #[test]
    fn draws_stay_in_range_and_cover_it() {
        let config = config(10 * MS, Duration::from_secs(3600));
        let mut random = SplitMix64::new(42);
        let ceiling = 40 * MS;
        let (mut low, mut high) = (false, false);
        for _ in 0..10_000 {
            let delay = backoff_delay(&config, 2, Duration::ZERO, &mut random);
            assert!(delay <= ceiling);
            low |= delay < ceiling / 10;
            high |= delay > ceiling * 9 / 10;
        }
        assert!(low && high, "full jitter reaches both ends of its range");
    }

    #[test]
    fn the_cap_bounds_the_jitter() {
        let config = config(100 * MS, 250 * MS);
        assert_eq!(jitter_ceiling_ns(&config, 0), 100_000_000);
        assert_eq!(jitter_ceiling_ns(&config, 1), 200_000_000);
        assert_eq!(jitter_ceiling_ns(&config, 2), 250_000_000);
        assert_eq!(
            backoff_delay(&config, 30, Duration::ZERO, &mut Fixed(u64::MAX)),
            250 * MS
        );
    }

    #[test]
    fn retry_after_is_a_floor_even_above_the_cap() {
        let config = config(100 * MS, 250 * MS);
        let retry_after = 20 * MS;
        assert_eq!(
            backoff_delay(&config, 0, retry_after, &mut Fixed(0)),
            retry_after
        );
        assert_eq!(
            backoff_delay(&config, 0, retry_after, &mut Fixed(u64::MAX)),
            100 * MS
        );
        let long = Duration::from_secs(2);
        assert_eq!(backoff_delay(&config, 5, long, &mut Fixed(u64::MAX)), long);
    }

    #[test]
    fn large_retry_numbers_and_durations_saturate() {
        let config = config(Duration::MAX, Duration::MAX);
        assert_eq!(jitter_ceiling_ns(&config, 0), u64::MAX);
        assert_eq!(jitter_ceiling_ns(&config, u32::MAX), u64::MAX);
        let config = self::config(MS, Duration::MAX);
        assert_eq!(jitter_ceiling_ns(&config, 63), u64::MAX);
        assert_eq!(jitter_ceiling_ns(&config, 64), u64::MAX);
        assert_eq!(
            backoff_delay(&config, u32::MAX, Duration::ZERO, &mut Fixed(u64::MAX)),
            Duration::from_nanos(u64::MAX)
        );
        assert_eq!(duration_ns(Duration::MAX), u64::MAX);
    }

    #[test]
    fn zero_base_retries_at_once_unless_told_to_wait() {
        let config = config(Duration::ZERO, Duration::from_secs(1));
        assert_eq!(
            backoff_delay(&config, 7, Duration::ZERO, &mut Fixed(u64::MAX)),
            Duration::ZERO
        );
        assert_eq!(backoff_delay(&config, 7, MS, &mut Fixed(u64::MAX)), MS);
    }

    #[test]
    fn splitmix64_matches_the_reference_sequence() {
        // From Vigna's splitmix64.c with x = 0.
        let mut random = SplitMix64::new(0);
        assert_eq!(random.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(random.next_u64(), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(random.next_u64(), 0x06c4_5d18_8009_454f);
    }
}
