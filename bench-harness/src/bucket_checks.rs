//! Token-bucket checks: nanoseconds per check, spillway's `TokenBucket` against governor's
//! `RateLimiter`, with identical quotas (both are GCRA, and the same rate and burst admit and
//! refuse exactly the same sequences; see [`BucketQuota`]).
//!
//! Each measurement is a loop of `checks` checks on one thread, timed with `Instant` around
//! the whole loop, so the figure is total time / checks. Every result goes through
//! `std::hint::black_box` and admitted checks are counted, so nothing is optimised away and
//! readers can see that both sides admitted the same number.
//!
//! Two ways to reach a spillway bucket ([`BucketAccess`]):
//! - **shared**: `TokenBucket::try_acquire(&self, ..)`, a compare-exchange, safe from any
//!   number of threads (a bucket shared between threads); like-for-like with governor, whose
//!   `check()` is a compare-exchange too;
//! - **exclusive**: `TokenBucket::try_acquire_exclusive(&mut self, ..)`, the same decision as
//!   a plain load and store, for a bucket one thread owns (a shard's per-connection bucket).
//!   Only the single-thread and keyed loops have it: `&mut` cannot be shared by two threads.
//!
//! Two ways to get the time:
//! - **clock read per check**: spillway calls `Clock::now_ns()` (quanta `now`) before every
//!   check; governor uses its default clock, `QuantaClock`, which reads quanta's TSC in every
//!   `check()`;
//! - **amortised**: spillway reads `Clock::now_ns()` once per [`CHECKS_PER_CLOCK_READ`] checks
//!   (what a shard does: one clock read per batch, SPEC 2); governor runs on
//!   `QuantaUpkeepClock` with an upkeep thread asked to refresh a shared atomic every
//!   [`UPKEEP_INTERVAL`], and every `check()` loads that atomic.
//!
//! Known bias: with an admitting quota and one thread, every check's compare-exchange
//! succeeds on a cache line the thread owns, the best case for both; the loops do nothing else
//! between checks, so the figures are throughput-bound costs, not latencies in a real shard
//! loop. The amortised modes differ in kind: spillway's reading is up to 64 checks old,
//! governor's up to one upkeep interval (in practice longer: Linux rounds short sleeps up by
//! its timer slack, 50 µs by default), and governor's upkeep thread takes some CPU time from
//! whichever core it wakes on, which on a 2-core machine is a measured core. The keyed rows
//! compare two designs, not just two buckets: spillway's shard owns its connections' buckets
//! in a `Vec` indexed by connection id, governor looks each key up in a `DashMap`.

use std::hash::{BuildHasher, BuildHasherDefault};
use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use governor::clock::{Clock as GovernorClock, QuantaClock, QuantaUpkeepClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use spillway::bucket::TokenBucket;
use spillway::client::{RandomSource, SplitMix64};
use spillway::clock::Clock;
use spillway::message::ConnectionIdHasher;

use crate::machine::{Pinning, Side};

/// Checks per clock reading in spillway's amortised mode, as a shard batch does it.
pub const CHECKS_PER_CLOCK_READ: usize = 64;

/// How often governor's `QuantaUpkeepClock` thread is asked to refresh its reading.
pub const UPKEEP_INTERVAL: Duration = Duration::from_micros(10);

/// Connections (one bucket each) in the keyed comparison.
pub const CONNECTIONS: u32 = 15_000;

/// Seed of the keyed comparison's key order (any non-zero value; fixed so runs compare).
pub const KEY_ORDER_SEED: u64 = 0x5EED_0F15_B177_A7E5;

/// A rate and a burst, made into the same bucket on both sides.
///
/// spillway: `TokenBucket::new(rate, burst)`, emission interval `T = ceil(1e9 / rate)` ns,
/// window `burst × T`, admits when `max(tat, now) + T <= now + burst × T`.
/// governor: `Quota::per_second(rate).allow_burst(burst)`, `t = floor(1e9 / rate)` ns,
/// `tau = t × (burst - 1)`, admits when `now >= tat - tau`. With `T == t` (any rate that
/// divides 1e9, as both quotas here do) the two conditions are the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BucketQuota {
    /// Messages per second.
    pub rate_per_sec: NonZeroU32,
    /// The most messages a full bucket admits at once.
    pub burst: NonZeroU32,
}

const fn non_zero(value: u32) -> NonZeroU32 {
    match NonZeroU32::new(value) {
        Some(value) => value,
        None => panic!("zero"),
    }
}

impl BucketQuota {
    /// 1e9 per second (T = 1 ns) with a burst of 1e8 (a 100 ms window): a loop cannot check
    /// faster than 1 ns apiece, so every check of a run is admitted and both sides take the
    /// full update path (the compare-exchange) every time.
    pub const ADMITTING: Self = Self {
        rate_per_sec: non_zero(1_000_000_000),
        burst: non_zero(100_000_000),
    };

    /// 1 per second, burst 1: the first check of a run is admitted and the rest refused,
    /// which on both sides is a load and a comparison with no write.
    pub const REFUSING: Self = Self {
        rate_per_sec: non_zero(1),
        burst: non_zero(1),
    };

    /// A full spillway bucket with this quota.
    pub fn spillway(self) -> TokenBucket {
        TokenBucket::new(self.rate_per_sec, self.burst)
    }

    /// The governor quota with this rate and burst.
    pub fn governor(self) -> Quota {
        Quota::per_second(self.rate_per_sec).allow_burst(self.burst)
    }

    /// The quota in words.
    pub fn describe(self) -> String {
        format!("{}/s, burst {}", self.rate_per_sec, self.burst)
    }
}

/// One timed loop of checks on one thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckRun {
    /// Checks made.
    pub checks: u64,
    /// Checks admitted.
    pub admitted: u64,
    /// Time for the whole loop.
    pub elapsed: Duration,
}

impl CheckRun {
    /// Nanoseconds per check.
    pub fn ns_per_check(&self) -> f64 {
        self.elapsed.as_nanos() as f64 / self.checks as f64
    }
}

/// `checks` rounded up to a whole number of clock-read batches, so that both sides of a
/// comparison make exactly the same number of checks in every mode.
pub fn round_checks(checks: u64) -> u64 {
    let batch = CHECKS_PER_CLOCK_READ as u64;
    checks.max(1).div_ceil(batch) * batch
}

/// Where the time for each check comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClockMode {
    /// A clock read for every check (spillway `Clock::now_ns`, governor `QuantaClock`).
    PerCheck,
    /// spillway: one read per [`CHECKS_PER_CLOCK_READ`]; governor: `QuantaUpkeepClock`.
    Amortised,
}

/// How spillway's checks reach the bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BucketAccess {
    /// `try_acquire(&self, ..)`: a compare-exchange, for a bucket any thread may check.
    Shared,
    /// `try_acquire_exclusive(&mut self, ..)`: a load and a store, for a bucket one thread
    /// owns (as a shard owns its connections' buckets).
    Exclusive,
}

impl BucketAccess {
    /// Both, shared first.
    pub const ALL: [Self; 2] = [Self::Shared, Self::Exclusive];

    /// The method and what it is for, in words.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Shared => "try_acquire (CAS, any thread)",
            Self::Exclusive => "try_acquire_exclusive (owner thread, as shards use it)",
        }
    }

    /// A short name, as in the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::Shared => "shared",
            Self::Exclusive => "exclusive",
        }
    }
}

/// The loop of [`spillway_loop`] and [`spillway_loop_exclusive`]: `checks` (rounded) calls
/// of `check` with a fresh or an amortised clock reading; `check` says whether it admitted.
#[inline(always)]
fn check_loop(
    clock: &Clock,
    checks: u64,
    mode: ClockMode,
    mut check: impl FnMut(u64) -> bool,
) -> CheckRun {
    let checks = round_checks(checks);
    let batches = checks / CHECKS_PER_CLOCK_READ as u64;
    let mut admitted = 0u64;
    let start = Instant::now();
    match mode {
        ClockMode::PerCheck => {
            for _ in 0..checks {
                if check(clock.now_ns()) {
                    admitted += 1;
                }
            }
        }
        ClockMode::Amortised => {
            for _ in 0..batches {
                let now_ns = clock.now_ns();
                for _ in 0..CHECKS_PER_CLOCK_READ {
                    if check(now_ns) {
                        admitted += 1;
                    }
                }
            }
        }
    }
    CheckRun {
        checks,
        admitted,
        elapsed: start.elapsed(),
    }
}

/// spillway, [`BucketAccess::Shared`]: `checks` `try_acquire` checks of one bucket on the
/// calling thread.
#[inline(never)]
pub fn spillway_loop(
    bucket: &TokenBucket,
    clock: &Clock,
    checks: u64,
    mode: ClockMode,
) -> CheckRun {
    check_loop(clock, checks, mode, |now_ns| {
        black_box(bucket.try_acquire(now_ns, 1)).is_ok()
    })
}

/// spillway, [`BucketAccess::Exclusive`]: `checks` `try_acquire_exclusive` checks of one
/// bucket on the calling thread.
#[inline(never)]
pub fn spillway_loop_exclusive(
    bucket: &mut TokenBucket,
    clock: &Clock,
    checks: u64,
    mode: ClockMode,
) -> CheckRun {
    check_loop(clock, checks, mode, |now_ns| {
        black_box(bucket.try_acquire_exclusive(now_ns, 1)).is_ok()
    })
}

/// A governor direct (one-state) limiter on clock `C`.
pub type DirectLimiter<C> =
    RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as GovernorClock>::Instant>>;

/// governor: `checks` checks of one direct limiter on the calling thread.
#[inline(never)]
pub fn governor_loop<C: GovernorClock>(limiter: &DirectLimiter<C>, checks: u64) -> CheckRun {
    let checks = round_checks(checks);
    let mut admitted = 0u64;
    let start = Instant::now();
    for _ in 0..checks {
        if black_box(limiter.check()).is_ok() {
            admitted += 1;
        }
    }
    CheckRun {
        checks,
        admitted,
        elapsed: start.elapsed(),
    }
}

/// spillway, one thread, a fresh bucket with `quota`, reached as `access` says.
pub fn spillway_single(
    quota: BucketQuota,
    checks: u64,
    mode: ClockMode,
    access: BucketAccess,
) -> CheckRun {
    let clock = Clock::new();
    let mut bucket = quota.spillway();
    match access {
        BucketAccess::Shared => spillway_loop(&bucket, &clock, checks, mode),
        BucketAccess::Exclusive => spillway_loop_exclusive(&mut bucket, &clock, checks, mode),
    }
}

/// governor, one thread, a fresh direct limiter with `quota` on its default `QuantaClock`
/// ([`ClockMode::PerCheck`]) or on a clone of `upkeep` ([`ClockMode::Amortised`]).
pub fn governor_single(
    quota: BucketQuota,
    checks: u64,
    mode: ClockMode,
    upkeep: &QuantaUpkeepClock,
) -> CheckRun {
    match mode {
        ClockMode::PerCheck => {
            let limiter = RateLimiter::direct_with_clock(quota.governor(), QuantaClock::default());
            governor_loop(&limiter, checks)
        }
        ClockMode::Amortised => {
            let limiter = RateLimiter::direct_with_clock(quota.governor(), upkeep.clone());
            governor_loop(&limiter, checks)
        }
    }
}

/// spillway's clock alone: `reads` calls of `Clock::now_ns`, each through `black_box`; the
/// time of the whole loop. Shows how much of a clock-per-check figure is the clock.
#[inline(never)]
pub fn spillway_clock_reads(reads: u64) -> Duration {
    let clock = Clock::new();
    let start = Instant::now();
    for _ in 0..reads {
        black_box(clock.now_ns());
    }
    start.elapsed()
}

/// governor's clock `C` alone: `reads` calls of its `now`, each through `black_box`.
#[inline(never)]
pub fn governor_clock_reads<C: GovernorClock>(clock: &C, reads: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..reads {
        black_box(clock.now());
    }
    start.elapsed()
}

/// Two threads on one bucket: each thread's own run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TwoThreadRun {
    /// What each thread saw, timed from leaving a shared barrier to its last check.
    pub threads: [CheckRun; 2],
}

impl TwoThreadRun {
    /// Mean over the two threads of each one's ns per check: the cost a checking thread sees.
    pub fn per_thread_ns_per_check(&self) -> f64 {
        (self.threads[0].ns_per_check() + self.threads[1].ns_per_check()) / 2.0
    }

    /// Wall time (the slower thread's) over all checks of both: the bucket's throughput.
    pub fn aggregate_ns_per_check(&self) -> f64 {
        let wall = self.threads[0].elapsed.max(self.threads[1].elapsed);
        wall.as_nanos() as f64 / self.checks() as f64
    }

    /// Checks by both threads.
    pub fn checks(&self) -> u64 {
        self.threads[0].checks + self.threads[1].checks
    }

    /// Admitted checks of both threads.
    pub fn admitted(&self) -> u64 {
        self.threads[0].admitted + self.threads[1].admitted
    }
}

/// Runs `work` on two threads pinned to two cores, started together behind a barrier.
fn on_two_threads<F>(pinning: &Pinning, work: F) -> anyhow::Result<TwoThreadRun>
where
    F: Fn() -> CheckRun + Send + Sync + 'static,
{
    let work = Arc::new(work);
    let barrier = Arc::new(Barrier::new(2));
    let mut handles = Vec::with_capacity(2);
    for side in [Side::First, Side::Second] {
        let work = Arc::clone(&work);
        let barrier = Arc::clone(&barrier);
        let pinning = pinning.clone();
        let handle = thread::Builder::new()
            .name("bench-checker".to_owned())
            .spawn(move || {
                pinning.pin_current(side);
                barrier.wait();
                work()
            })
            .context("spawning a checker thread")?;
        handles.push(handle);
    }
    let mut runs = Vec::with_capacity(2);
    for handle in handles {
        match handle.join() {
            Ok(run) => runs.push(run),
            Err(_) => bail!("a checker thread panicked"),
        }
    }
    Ok(TwoThreadRun {
        threads: [runs[0], runs[1]],
    })
}

/// Runs `work` on one thread pinned to the first core, and returns what it returns.
///
/// # Errors
/// When the thread cannot be spawned or panics.
pub fn on_pinned_thread<T, F>(pinning: &Pinning, work: F) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let pinning = pinning.clone();
    let handle = thread::Builder::new()
        .name("bench-single".to_owned())
        .spawn(move || {
            pinning.pin_current(Side::First);
            work()
        })
        .context("spawning the measuring thread")?;
    handle
        .join()
        .map_err(|_| anyhow::anyhow!("the measuring thread panicked"))
}

/// spillway, two threads checking one shared bucket, `checks_per_thread` checks each;
/// always [`BucketAccess::Shared`] (an exclusive bucket cannot be shared, by type).
///
/// # Errors
/// When a thread cannot be spawned or panics.
pub fn spillway_two_threads(
    quota: BucketQuota,
    checks_per_thread: u64,
    mode: ClockMode,
    pinning: &Pinning,
) -> anyhow::Result<TwoThreadRun> {
    let bucket = Arc::new(quota.spillway());
    let clock = Clock::new();
    on_two_threads(pinning, move || {
        spillway_loop(&bucket, &clock, checks_per_thread, mode)
    })
}

/// governor, two threads checking one shared direct limiter, `checks_per_thread` checks each.
///
/// # Errors
/// When a thread cannot be spawned or panics.
pub fn governor_two_threads(
    quota: BucketQuota,
    checks_per_thread: u64,
    mode: ClockMode,
    upkeep: &QuantaUpkeepClock,
    pinning: &Pinning,
) -> anyhow::Result<TwoThreadRun> {
    match mode {
        ClockMode::PerCheck => {
            let limiter = Arc::new(RateLimiter::direct_with_clock(
                quota.governor(),
                QuantaClock::default(),
            ));
            on_two_threads(pinning, move || governor_loop(&limiter, checks_per_thread))
        }
        ClockMode::Amortised => {
            let limiter = Arc::new(RateLimiter::direct_with_clock(
                quota.governor(),
                upkeep.clone(),
            ));
            on_two_threads(pinning, move || governor_loop(&limiter, checks_per_thread))
        }
    }
}

/// A fixed pseudo-random order of connection ids: `rounds` shuffles of `0..connections`,
/// one after another, so every connection is checked equally often and in no pattern a
/// prefetcher or branch predictor could learn.
#[derive(Clone, Debug)]
pub struct KeyOrder {
    connections: u32,
    keys: Vec<u32>,
}

impl KeyOrder {
    /// `rounds` Fisher–Yates shuffles of `0..connections` drawn from spillway's
    /// [`SplitMix64`] seeded with `seed` (every seed is fine).
    pub fn shuffled(connections: u32, rounds: u32, seed: u64) -> Self {
        let mut random = SplitMix64::new(seed);
        let mut keys = Vec::with_capacity(connections as usize * rounds as usize);
        for _ in 0..rounds {
            let start = keys.len();
            keys.extend(0..connections);
            let round = &mut keys[start..];
            for index in (1..round.len()).rev() {
                // Modulo bias is below 1e-14 for 15,000 keys: irrelevant to an order.
                let other = (random.next_u64() % (index as u64 + 1)) as usize;
                round.swap(index, other);
            }
        }
        Self { connections, keys }
    }

    /// Connection ids are `0..connections`.
    pub fn connections(&self) -> u32 {
        self.connections
    }

    /// The ids in check order.
    pub fn keys(&self) -> &[u32] {
        &self.keys
    }
}

/// spillway, keyed: one bucket per connection in a `Vec` indexed by connection id (as a
/// shard holds them), checked in `order`, `passes` times over, reading the clock once per
/// [`CHECKS_PER_CLOCK_READ`] checks; `buckets[id].try_acquire` ([`BucketAccess::Shared`]) or
/// `(&mut buckets[id]).try_acquire_exclusive` ([`BucketAccess::Exclusive`]). Every bucket is
/// checked once before the clock starts.
pub fn spillway_keyed(
    quota: BucketQuota,
    order: &KeyOrder,
    passes: u32,
    access: BucketAccess,
) -> CheckRun {
    let clock = Clock::new();
    let mut buckets: Vec<TokenBucket> =
        (0..order.connections()).map(|_| quota.spillway()).collect();
    let warm_up_ns = clock.now_ns();
    for bucket in &buckets {
        black_box(bucket.try_acquire(warm_up_ns, 1)).ok();
    }
    match access {
        BucketAccess::Shared => keyed_loop(&clock, order, passes, |key, now_ns| {
            black_box(buckets[key as usize].try_acquire(now_ns, 1)).is_ok()
        }),
        BucketAccess::Exclusive => keyed_loop(&clock, order, passes, |key, now_ns| {
            let bucket = &mut buckets[key as usize];
            black_box(bucket.try_acquire_exclusive(now_ns, 1)).is_ok()
        }),
    }
}

/// The timed loop of [`spillway_keyed`]: `check(key, now_ns)` for every key of `order`,
/// `passes` times over, one clock reading per [`CHECKS_PER_CLOCK_READ`] keys.
#[inline(never)]
fn keyed_loop(
    clock: &Clock,
    order: &KeyOrder,
    passes: u32,
    mut check: impl FnMut(u32, u64) -> bool,
) -> CheckRun {
    let mut admitted = 0u64;
    let mut checks = 0u64;
    let start = Instant::now();
    for _ in 0..passes {
        for batch in order.keys().chunks(CHECKS_PER_CLOCK_READ) {
            let now_ns = clock.now_ns();
            for &key in batch {
                if check(key, now_ns) {
                    admitted += 1;
                }
            }
            checks += batch.len() as u64;
        }
    }
    CheckRun {
        checks,
        admitted,
        elapsed: start.elapsed(),
    }
}

/// A governor keyed limiter on `u32` keys, in governor's `DashMap` store with hasher `S`, on
/// `QuantaUpkeepClock`.
pub type KeyedLimiter<S> = RateLimiter<
    u32,
    DashMapStateStore<u32, S>,
    QuantaUpkeepClock,
    NoOpMiddleware<<QuantaUpkeepClock as GovernorClock>::Instant>,
>;

/// governor, keyed: its `DashMap` store (hasher `hasher`) on a clone of `upkeep`, checked in
/// `order`, `passes` times over. Every key is checked (and so inserted) once before the clock
/// starts, so no first-insert cost is timed.
pub fn governor_keyed<S>(
    quota: BucketQuota,
    order: &KeyOrder,
    passes: u32,
    upkeep: &QuantaUpkeepClock,
    hasher: S,
) -> CheckRun
where
    S: BuildHasher + Default + Clone,
{
    let limiter: KeyedLimiter<S> =
        RateLimiter::dashmap_with_clock_and_hasher(quota.governor(), upkeep.clone(), hasher);
    for key in 0..order.connections() {
        black_box(limiter.check_key(&key)).ok();
    }
    let mut admitted = 0u64;
    let mut checks = 0u64;
    let start = Instant::now();
    for _ in 0..passes {
        for key in order.keys() {
            if black_box(limiter.check_key(key)).is_ok() {
                admitted += 1;
            }
        }
        checks += order.keys().len() as u64;
    }
    CheckRun {
        checks,
        admitted,
        elapsed: start.elapsed(),
    }
}

/// `BuildHasher` of governor's keyed row with spillway's connection-id hash
/// ([`ConnectionIdHasher`]: one multiply per `u32` key), beside the one with governor's
/// default hasher (std's SipHash `RandomState`).
pub type ConnectionIdBuildHasher = BuildHasherDefault<ConnectionIdHasher>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::RandomState;

    #[test]
    fn key_order_is_rounds_of_permutations() {
        let order = KeyOrder::shuffled(100, 3, 7);
        assert_eq!(order.keys().len(), 300);
        for round in order.keys().chunks(100) {
            let mut sorted = round.to_vec();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        }
        assert_ne!(&order.keys()[..100], &order.keys()[100..200]);
        assert_eq!(order.keys(), KeyOrder::shuffled(100, 3, 7).keys());
    }

    #[test]
    fn same_quota_admits_the_same_on_both_sides() {
        let upkeep = QuantaUpkeepClock::from_interval(UPKEEP_INTERVAL).unwrap();
        for mode in [ClockMode::PerCheck, ClockMode::Amortised] {
            let governor = governor_single(BucketQuota::ADMITTING, 1000, mode, &upkeep);
            assert_eq!(governor.admitted, 1024);
            for access in BucketAccess::ALL {
                let spillway = spillway_single(BucketQuota::ADMITTING, 1000, mode, access);
                assert_eq!(spillway.checks, 1024);
                assert_eq!(spillway.admitted, 1024, "{access:?}");
            }
            // A burst of 1 per second: only the first check of the run gets through.
            let governor = governor_single(BucketQuota::REFUSING, 1000, mode, &upkeep);
            assert_eq!(governor.admitted, 1);
            for access in BucketAccess::ALL {
                let spillway = spillway_single(BucketQuota::REFUSING, 1000, mode, access);
                assert_eq!(spillway.admitted, 1, "{access:?}");
            }
        }
        let pinning = Pinning::off();
        for mode in [ClockMode::PerCheck, ClockMode::Amortised] {
            let spillway =
                spillway_two_threads(BucketQuota::ADMITTING, 640, mode, &pinning).unwrap();
            let governor =
                governor_two_threads(BucketQuota::ADMITTING, 640, mode, &upkeep, &pinning).unwrap();
            assert_eq!((spillway.checks(), spillway.admitted()), (1280, 1280));
            assert_eq!((governor.checks(), governor.admitted()), (1280, 1280));
        }
        let order = KeyOrder::shuffled(CONNECTIONS, 1, KEY_ORDER_SEED);
        let spillway = spillway_keyed(BucketQuota::ADMITTING, &order, 2, BucketAccess::Shared);
        let exclusive = spillway_keyed(BucketQuota::ADMITTING, &order, 2, BucketAccess::Exclusive);
        let governor = governor_keyed(
            BucketQuota::ADMITTING,
            &order,
            2,
            &upkeep,
            RandomState::new(),
        );
        let fibonacci = governor_keyed(
            BucketQuota::ADMITTING,
            &order,
            2,
            &upkeep,
            ConnectionIdBuildHasher::default(),
        );
        assert_eq!((spillway.checks, exclusive.checks), (30_000, 30_000));
        assert_eq!(
            (
                spillway.admitted,
                exclusive.admitted,
                governor.admitted,
                fibonacci.admitted
            ),
            (30_000, 30_000, 30_000, 30_000)
        );
    }
}
