//! Criterion bench: one token-bucket check on one thread, spillway's `TokenBucket` against
//! governor's direct `RateLimiter`, with the same admitting GCRA quota (1e9/s, burst 1e8, so
//! every check takes the full compare-exchange path), in the two clock modes `compare` uses:
//! a clock read per check (spillway `Clock::now_ns`, governor's default `QuantaClock`) and
//! amortised (spillway one `now_ns` per 64 checks, governor `QuantaUpkeepClock` with a 10 µs
//! upkeep interval). spillway runs both access modes: `try_acquire` (a compare-exchange, any
//! thread) and `try_acquire_exclusive` (`&mut`, a load and a store, a bucket one thread owns).
//! One iteration is 64 checks, the batch of one clock read; the loops are
//! `spillway_bench::bucket_checks::{spillway_loop, spillway_loop_exclusive, governor_loop}`.
//!
//! Known bias: an uncontended bucket whose cache line never leaves the core, the best case for
//! both; governor's upkeep thread takes CPU from whichever core it wakes on. The bucket lives
//! across samples, which is fine for the admitting quota (it can never run dry: a check takes
//! more than the 1 ns it charges). Contended, keyed and refused cases are in `compare`.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use governor::clock::{QuantaClock, QuantaUpkeepClock};
use governor::RateLimiter;
use spillway::clock::Clock;
use spillway_bench::bucket_checks::{
    governor_loop, spillway_loop, spillway_loop_exclusive, BucketQuota, ClockMode,
    CHECKS_PER_CLOCK_READ, UPKEEP_INTERVAL,
};

const CHECKS_PER_ITERATION: u64 = CHECKS_PER_CLOCK_READ as u64;

fn bucket_single_thread(c: &mut Criterion) {
    let quota = BucketQuota::ADMITTING;
    let upkeep = QuantaUpkeepClock::from_interval(UPKEEP_INTERVAL).expect("quanta upkeep thread");
    let mut group = c.benchmark_group("bucket_1_thread");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(CHECKS_PER_ITERATION));

    let clock = Clock::new();
    for (name, mode) in [
        ("spillway/clock_per_check", ClockMode::PerCheck),
        ("spillway/amortised_per_64", ClockMode::Amortised),
    ] {
        let bucket = quota.spillway();
        group.bench_function(name, |b| {
            b.iter_custom(|iterations| {
                spillway_loop(&bucket, &clock, iterations * CHECKS_PER_ITERATION, mode).elapsed
            });
        });
    }
    for (name, mode) in [
        ("spillway_exclusive/clock_per_check", ClockMode::PerCheck),
        ("spillway_exclusive/amortised_per_64", ClockMode::Amortised),
    ] {
        let mut bucket = quota.spillway();
        group.bench_function(name, |b| {
            b.iter_custom(|iterations| {
                spillway_loop_exclusive(
                    &mut bucket,
                    &clock,
                    iterations * CHECKS_PER_ITERATION,
                    mode,
                )
                .elapsed
            });
        });
    }

    let limiter = RateLimiter::direct_with_clock(quota.governor(), QuantaClock::default());
    group.bench_function("governor/quanta_clock", |b| {
        b.iter_custom(|iterations| {
            governor_loop(&limiter, iterations * CHECKS_PER_ITERATION).elapsed
        });
    });
    let limiter = RateLimiter::direct_with_clock(quota.governor(), upkeep.clone());
    group.bench_function("governor/quanta_upkeep_clock_10us", |b| {
        b.iter_custom(|iterations| {
            governor_loop(&limiter, iterations * CHECKS_PER_ITERATION).elapsed
        });
    });
    group.finish();
}

criterion_group!(benches, bucket_single_thread);
criterion_main!(benches);
