//! Property tests of the token bucket on a fake clock (time is passed in, so each case is
//! deterministic): the rate bound holds over every window of every random request sequence,
//! also across rate changes; a steady sender at or under the rate is never refused; and a
//! refusal's `retry_after` is exact.

use std::num::NonZeroU32;

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use spillway::bucket::{RetryAfter, TokenBucket};

const NANOS_PER_SEC: u128 = 1_000_000_000;

#[derive(Clone, Debug)]
struct Request {
    advance_ns: u64,
    tokens: u32,
    new_rate: Option<u32>,
}

fn request() -> impl Strategy<Value = Request> {
    (
        prop_oneof![Just(0u64), 0u64..2_000_000, 0u64..2_000_000_000],
        0u32..6,
        proptest::option::weighted(0.05, 1u32..5_000),
    )
        .prop_map(|(advance_ns, tokens, new_rate)| Request {
            advance_ns,
            tokens,
            new_rate,
        })
}

fn nonzero(value: u32) -> NonZeroU32 {
    NonZeroU32::new(value).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    /// Over every window `[t_i, t_j]` of the run: admitted <= burst + rate × t, with rate the
    /// fastest in force and burst the window's worth at that rate (the bucket's burst window
    /// `τ` is fixed at construction; see `TokenBucket`).
    #[test]
    fn admitted_never_exceeds_burst_plus_rate_times_t(
        rate in 1u32..5_000,
        burst in 1u32..50,
        requests in proptest::collection::vec(request(), 1..200),
    ) {
        let bucket = TokenBucket::new(nonzero(rate), nonzero(burst));
        // The owner-only path must decide exactly as the shared one, request by request.
        let mut exclusive = TokenBucket::new(nonzero(rate), nonzero(burst));
        let tolerance_ns = u128::from(burst) * NANOS_PER_SEC.div_ceil(u128::from(rate));
        let mut fastest_rate = rate;
        let mut now_ns = 0u64;
        // (time, tokens admitted at that time)
        let mut admissions: Vec<(u64, u128)> = Vec::new();
        for request in &requests {
            now_ns += request.advance_ns;
            if let Some(new_rate) = request.new_rate {
                bucket.set_rate(nonzero(new_rate));
                exclusive.set_rate(nonzero(new_rate));
                fastest_rate = fastest_rate.max(new_rate);
            }
            let decision = bucket.try_acquire(now_ns, request.tokens);
            prop_assert_eq!(decision, exclusive.try_acquire_exclusive(now_ns, request.tokens));
            if decision.is_ok() {
                admissions.push((now_ns, u128::from(request.tokens)));
            }
        }
        let interval_min_ns = NANOS_PER_SEC.div_ceil(u128::from(fastest_rate));
        for start in 0..admissions.len() {
            let mut admitted = 0u128;
            for &(time_ns, tokens) in &admissions[start..] {
                admitted += tokens;
                let window_ns = u128::from(time_ns - admissions[start].0);
                // admitted × T_min <= τ_effective + t, i.e. admitted <= burst + rate × t.
                let allowance_ns = tolerance_ns.max(interval_min_ns) + window_ns;
                prop_assert!(
                    admitted * interval_min_ns <= allowance_ns,
                    "{} tokens in {} ns at {}/s, burst {}", admitted, window_ns, fastest_rate, burst
                );
            }
        }
    }

    /// A sender whose gaps are never shorter than `ceil(1e9 / rate)` ns is never refused,
    /// whatever the jitter on top.
    #[test]
    fn steady_sender_at_or_under_the_rate_is_never_refused(
        rate in 1u32..2_000_000,
        burst in 1u32..10,
        extra_gaps_ns in proptest::collection::vec(0u64..1_000, 1..2_000),
    ) {
        let bucket = TokenBucket::new(nonzero(rate), nonzero(burst));
        let interval_ns = 1_000_000_000u64.div_ceil(u64::from(rate));
        let mut now_ns = 0;
        for extra_ns in extra_gaps_ns {
            prop_assert!(bucket.try_acquire(now_ns, 1).is_ok(), "refused at {} ns", now_ns);
            now_ns += interval_ns + extra_ns;
        }
    }

    /// A refusal's wait is exact: one nanosecond early is still refused, on time is admitted.
    #[test]
    fn retry_after_is_exact(
        rate in 1u32..100_000,
        burst in 1u32..20,
        tokens in 1u32..20,
        drained in 0u32..20,
        start_ns in 0u64..10_000_000_000,
    ) {
        let bucket = TokenBucket::new(nonzero(rate), nonzero(burst));
        let _ = bucket.try_acquire(start_ns, drained.min(burst));
        match bucket.try_acquire(start_ns, tokens) {
            Ok(()) => {}
            Err(RetryAfter::NEVER) => prop_assert!(tokens > burst),
            Err(RetryAfter { wait_ns }) => {
                prop_assert!(wait_ns > 0);
                prop_assert!(bucket.try_acquire(start_ns + wait_ns - 1, tokens).is_err());
                prop_assert!(bucket.try_acquire(start_ns + wait_ns, tokens).is_ok());
            }
        }
    }
}
