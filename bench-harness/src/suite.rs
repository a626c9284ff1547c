//! The whole comparison as `compare` runs it: settings, command-line flags, and the run that
//! turns the measurement modules into a [`Report`].
//!
//! Repetitions are interleaved: repetition 1 of every peer, then repetition 2 of every peer,
//! and so on, so that a slow spell of the machine (another build, a thermal step) lands on all
//! peers alike instead of on whichever ran during it.
//!
//! Known bias: the sections run one after another in a fixed order (throughput, latency,
//! buckets, admission pipeline), so anything that drifts over minutes (frequency, background load) differs
//! between sections, not within one.

use std::hash::RandomState;
use std::sync::Arc;

use anyhow::Context;
use governor::clock::{QuantaClock, QuantaUpkeepClock};

use crate::admission::{self, TenantSetup, ADMISSION_BUDGET_NS, CONNECTION_BUDGET_BYTES};
use crate::bucket_checks::{
    self, BucketAccess, BucketQuota, CheckRun, ClockMode, ConnectionIdBuildHasher, KeyOrder,
    TwoThreadRun, CHECKS_PER_CLOCK_READ, CONNECTIONS, KEY_ORDER_SEED, UPKEEP_INTERVAL,
};
use crate::machine::{self, Pinning, Wait};
use crate::report::{
    AbsoluteRow, Admitted, Budget, Figure, Report, Row, RunSetup, Section, Target, Unit,
};
use crate::ring_latency;
use crate::ring_throughput::{self, Mode, BATCH, CAPACITIES};
use crate::rings::Peer;
use crate::stats::Summary;
use crate::with_ring_peer;

/// How much to measure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Repetitions of every measurement; figures are the median over them.
    pub reps: u32,
    /// Messages per throughput run.
    pub messages: u64,
    /// Recorded round trips per latency run (after the warm-up).
    pub round_trips: u64,
    /// Checks per single-thread bucket run.
    pub bucket_checks: u64,
    /// Checks per thread in a two-thread bucket run.
    pub two_thread_checks: u64,
    /// Shuffles of the connection ids in the keyed key order.
    pub keyed_rounds: u32,
    /// Passes over the key order per keyed run.
    pub keyed_passes: u32,
    /// Timed messages per admission-pipeline run (after the warm-up).
    pub admission_messages: u64,
    /// Whether these are the `--quick` counts (a smoke run whose figures mean little).
    pub quick: bool,
}

impl Default for Settings {
    /// Full counts: about 2–3 minutes on a 2-core machine.
    fn default() -> Self {
        Self {
            reps: 7,
            messages: 10_000_000,
            round_trips: 100_000,
            bucket_checks: 10_000_000,
            two_thread_checks: 5_000_000,
            keyed_rounds: 64,
            keyed_passes: 4,
            admission_messages: 5_000_000,
            quick: false,
        }
    }
}

impl Settings {
    /// Small counts that run in a second or two even unoptimised: checks that everything
    /// works, not what it costs.
    pub fn quick() -> Self {
        Self {
            reps: 1,
            messages: 20_000,
            round_trips: 2_000,
            bucket_checks: 20_000,
            two_thread_checks: 10_000,
            keyed_rounds: 1,
            keyed_passes: 1,
            admission_messages: 20_000,
            quick: true,
        }
    }
}

/// Measures spillway and its peers side by side in one process: SPSC ring throughput and
/// round-trip latency (rtrb, crossbeam ArrayQueue, crossbeam-channel, std sync_channel) and
/// token-bucket checks (governor); then spillway's admission pipeline (one simulated shard,
/// 15000 connections, all three levels on) and its memory per connection, against absolute
/// budgets.
#[derive(Clone, Debug, PartialEq, Eq, clap::Parser)]
#[command(name = "compare")]
pub struct Options {
    /// Print one JSON object with every figure and ratio (progress goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Tiny counts and 1 repetition: a smoke run, figures mean little.
    #[arg(long)]
    pub quick: bool,
    /// Repetitions of every measurement [default: 7; 1 with --quick].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub reps: Option<u32>,
    /// Messages per throughput run [default: 10000000; 20000 with --quick].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub messages: Option<u64>,
}

impl Options {
    /// The counts: `--quick`'s small ones or the full ones, with `--reps` and `--messages`
    /// over either.
    pub fn settings(&self) -> Settings {
        let mut settings = if self.quick {
            Settings::quick()
        } else {
            Settings::default()
        };
        if let Some(reps) = self.reps {
            settings.reps = reps;
        }
        if let Some(messages) = self.messages {
            settings.messages = messages;
        }
        settings
    }
}

fn summary(samples: &[f64]) -> anyhow::Result<Summary> {
    Summary::of(samples).context("a measurement gave no usable samples")
}

fn figure(name: impl Into<String>, samples: &[f64], unit: Unit) -> anyhow::Result<Figure> {
    Ok(Figure {
        name: name.into(),
        summary: summary(samples)?,
        unit,
        admitted: None,
        counts: Vec::new(),
    })
}

/// Runs the whole comparison, calling `progress` with a line before each part.
///
/// # Errors
/// When a correctness check fails (a ring lost a message, a peer echoed a wrong value) or a
/// thread cannot be started.
pub fn run(settings: &Settings, mut progress: impl FnMut(&str)) -> anyhow::Result<Report> {
    let pinning = Pinning::detect();
    let wait = Wait::for_this_machine();
    let mut sections = Vec::new();

    progress("ring throughput");
    sections.extend(throughput_sections(
        settings,
        &pinning,
        wait,
        &mut progress,
    )?);
    progress("ring round-trip latency");
    sections.push(latency_section(settings, &pinning, wait)?);
    progress("token bucket checks");
    sections.push(bucket_section(settings, &pinning, &mut progress)?);
    progress("admission pipeline");
    sections.push(admission_section(settings, &pinning, &mut progress)?);

    let machine = RunSetup {
        cores: machine::cores(),
        cpu: machine::cpu_model().unwrap_or_else(|| "unknown".to_owned()),
        pinned: pinning.describe(),
        pinned_ok: pinning.is_pinned(),
        wait_on_full_or_empty: wait.name(),
        reps: settings.reps,
        messages: settings.messages,
        round_trips: settings.round_trips,
        bucket_checks: settings.bucket_checks,
        two_thread_checks_per_thread: settings.two_thread_checks,
        keyed_checks: u64::from(settings.keyed_rounds)
            * u64::from(CONNECTIONS)
            * u64::from(settings.keyed_passes),
        admission_messages: settings.admission_messages,
        quick: settings.quick,
        build: if machine::DEBUG_BUILD {
            "debug assertions ON: unoptimised, figures meaningless"
        } else {
            "optimised"
        },
    };
    Ok(Report { machine, sections })
}

fn throughput_sections(
    settings: &Settings,
    pinning: &Pinning,
    wait: Wait,
    progress: &mut impl FnMut(&str),
) -> anyhow::Result<Vec<Section>> {
    let mut rows_by_mode = [Vec::new(), Vec::new()];
    for capacity in CAPACITIES {
        for (mode_index, mode) in [Mode::Single, Mode::Batched].into_iter().enumerate() {
            progress(&format!("  capacity {capacity}, {}", mode.name()));
            let mut samples: Vec<Vec<f64>> = vec![Vec::new(); Peer::ALL.len()];
            let mut full_waits: Vec<Vec<u64>> = vec![Vec::new(); Peer::ALL.len()];
            let mut empty_waits: Vec<Vec<u64>> = vec![Vec::new(); Peer::ALL.len()];
            for _ in 0..settings.reps {
                for (peer_index, peer) in Peer::ALL.into_iter().enumerate() {
                    let run = with_ring_peer!(peer, R => ring_throughput::run::<R>(
                        capacity,
                        settings.messages,
                        mode,
                        pinning,
                        wait,
                    ))?;
                    samples[peer_index].push(run.messages_per_sec_millions());
                    full_waits[peer_index].push(run.full_waits);
                    empty_waits[peer_index].push(run.empty_waits);
                }
            }
            let case = match mode {
                Mode::Single => format!("cap {capacity}, single"),
                Mode::Batched => format!("cap {capacity}, batched {BATCH}"),
            };
            let with_waits = |name: String, peer_index: usize| -> anyhow::Result<Figure> {
                Ok(Figure {
                    counts: vec![
                        ("full_waits".to_owned(), full_waits[peer_index].clone()),
                        ("empty_waits".to_owned(), empty_waits[peer_index].clone()),
                    ],
                    ..figure(name, &samples[peer_index], Unit::MillionMessagesPerSec)?
                })
            };
            let spillway = with_waits(Peer::Spillway.name().to_owned(), 0)?;
            for (peer_index, peer) in Peer::ALL.into_iter().enumerate().skip(1) {
                let name = match (mode, peer.has_batch_api()) {
                    (Mode::Batched, false) => {
                        format!("{} (loop of {BATCH} single ops)", peer.name())
                    }
                    _ => peer.name().to_owned(),
                };
                let target = match peer {
                    Peer::Rtrb => Some(Target::RatioAtLeast(1.0)),
                    Peer::ArrayQueue => Some(Target::RatioAtLeast(3.0)),
                    _ => None,
                };
                rows_by_mode[mode_index].push(Row {
                    case: case.clone(),
                    spillway: spillway.clone(),
                    peer: with_waits(name, peer_index)?,
                    target,
                });
            }
        }
    }
    let [single_rows, batched_rows] = rows_by_mode;
    let common = format!(
        "1 producer thread -> 1 consumer thread, u64 0..{} summed and checked; timed on the \
         consumer from a Barrier to the last message; median (min–max) of {} reps",
        settings.messages, settings.reps
    );
    let regime = "full_waits / empty_waits: how often the producer found the ring full / the \
                  consumer found it empty; they show the regime: a ring that runs near full lets \
                  both sides work from their cached index, one that runs near empty costs a \
                  cache-line transfer every few messages"
        .to_owned();
    Ok(vec![
        Section {
            title: "Ring throughput, one message per call".to_owned(),
            notes: vec![
                common.clone(),
                format!(
                    "spillway push/pop, rtrb push/pop, ArrayQueue push/pop, channels \
                     try_send/try_recv; every peer waits with {} on full/empty",
                    wait.name()
                ),
                regime.clone(),
            ],
            rows: single_rows,
            absolute_rows: Vec::new(),
        },
        Section {
            title: format!("Ring throughput, batches of {BATCH}"),
            notes: vec![
                common,
                format!(
                    "spillway {}; rtrb {}; ArrayQueue, crossbeam-channel and sync_channel have no batch \
                     API: a loop of up to {BATCH} single calls stopping at full/empty",
                    Peer::Spillway.batch_method(),
                    Peer::Rtrb.batch_method()
                ),
                regime,
            ],
            rows: batched_rows,
            absolute_rows: Vec::new(),
        },
    ])
}

fn latency_section(settings: &Settings, pinning: &Pinning, wait: Wait) -> anyhow::Result<Section> {
    let mut p50: Vec<Vec<f64>> = vec![Vec::new(); Peer::ALL.len()];
    let mut p99: Vec<Vec<f64>> = vec![Vec::new(); Peer::ALL.len()];
    for _ in 0..settings.reps {
        for (peer_index, peer) in Peer::ALL.into_iter().enumerate() {
            let run = with_ring_peer!(peer, R => ring_latency::run::<R>(
                settings.round_trips,
                pinning,
                wait,
            ))?;
            p50[peer_index].push(run.p50_ns as f64);
            p99[peer_index].push(run.p99_ns as f64);
        }
    }
    let mut rows = Vec::new();
    for (label, samples) in [("p50", &p50), ("p99", &p99)] {
        let spillway = figure(Peer::Spillway.name(), &samples[0], Unit::Nanoseconds)?;
        for (peer_index, peer) in Peer::ALL.into_iter().enumerate().skip(1) {
            rows.push(Row {
                case: format!("round trip {label}"),
                spillway: spillway.clone(),
                peer: figure(peer.name(), &samples[peer_index], Unit::Nanoseconds)?,
                target: None,
            });
        }
    }
    Ok(Section {
        title: "Ring round-trip latency (ping-pong)".to_owned(),
        notes: vec![format!(
            "two rings of capacity {}, an echo thread on the other core; {} recorded round trips \
                 after {} warm-up, HDR histogram; median (min–max) over {} reps of each percentile",
            ring_latency::CAPACITY,
            settings.round_trips,
            ring_latency::WARMUP_ROUND_TRIPS,
            settings.reps
        )],
        rows,
        absolute_rows: Vec::new(),
    })
}

/// Samples (ns/check) and admitted counts of one side of a bucket row.
#[derive(Default)]
struct BucketSamples {
    ns_per_check: Vec<f64>,
    admitted: u64,
    checks: u64,
}

impl BucketSamples {
    fn add(&mut self, run: CheckRun) {
        self.ns_per_check.push(run.ns_per_check());
        self.admitted += run.admitted;
        self.checks += run.checks;
    }

    fn figure(&self, name: impl Into<String>) -> anyhow::Result<Figure> {
        Ok(Figure {
            admitted: Some(Admitted {
                admitted: self.admitted,
                checks: self.checks,
            }),
            ..figure(name, &self.ns_per_check, Unit::NanosecondsPerCheck)?
        })
    }
}

/// The per-thread and aggregate samples of two-thread rows.
#[derive(Default)]
struct TwoThreadSamples {
    per_thread: BucketSamples,
    aggregate: BucketSamples,
}

impl TwoThreadSamples {
    fn add(&mut self, run: TwoThreadRun) {
        self.per_thread
            .ns_per_check
            .push(run.per_thread_ns_per_check());
        self.aggregate
            .ns_per_check
            .push(run.aggregate_ns_per_check());
        for samples in [&mut self.per_thread, &mut self.aggregate] {
            samples.admitted += run.admitted();
            samples.checks += run.checks();
        }
    }
}

fn bucket_section(
    settings: &Settings,
    pinning: &Pinning,
    progress: &mut impl FnMut(&str),
) -> anyhow::Result<Section> {
    // Made on this (unpinned) thread, so the upkeep thread it starts is not pinned to a
    // measured core; it lives for the whole section, spillway's rows included.
    let upkeep = QuantaUpkeepClock::from_interval(UPKEEP_INTERVAL)
        .context("starting governor's QuantaUpkeepClock")?;
    let admitting = BucketQuota::ADMITTING;
    let refusing = BucketQuota::REFUSING;
    let checks = settings.bucket_checks;

    // (case, quota, mode, [target of the Shared row, target of the Exclusive row]) of the
    // single-thread rows. Each target is judged on one access mode only: the clock-per-check
    // one on the CAS path (like for like with governor's CAS), the amortised one on the
    // exclusive path (what a shard does for its connections' buckets).
    let single_cases = [
        (
            "1 thread, clock read per check, admitted",
            admitting,
            ClockMode::PerCheck,
            [Some(Target::RatioAtMost(1.0)), None],
        ),
        (
            "1 thread, amortised clock, admitted",
            admitting,
            ClockMode::Amortised,
            [None, Some(Target::RatioAtMost(0.5))],
        ),
        (
            "1 thread, amortised clock, refused",
            refusing,
            ClockMode::Amortised,
            [None, None],
        ),
    ];
    // Per case: spillway per access mode (BucketAccess::ALL order), then governor.
    let mut single: Vec<([BucketSamples; 2], BucketSamples)> =
        single_cases.iter().map(|_| Default::default()).collect();
    let mut two_threads: Vec<(TwoThreadSamples, TwoThreadSamples)> =
        (0..2).map(|_| Default::default()).collect();
    // spillway shared, spillway exclusive, governor SipHash, governor Fibonacci.
    let mut keyed: [BucketSamples; 4] = Default::default();
    let mut clock_reads: [Vec<f64>; 2] = Default::default();
    let order = KeyOrder::shuffled(CONNECTIONS, settings.keyed_rounds, KEY_ORDER_SEED);

    for rep in 1..=settings.reps {
        progress(&format!("  rep {rep}/{}", settings.reps));
        for ((_, quota, mode, _), (spillway, governor)) in single_cases.iter().zip(&mut single) {
            let (quota, mode) = (*quota, *mode);
            for (access, samples) in BucketAccess::ALL.into_iter().zip(spillway.iter_mut()) {
                samples.add(bucket_checks::on_pinned_thread(pinning, move || {
                    bucket_checks::spillway_single(quota, checks, mode, access)
                })?);
            }
            let clock = upkeep.clone();
            governor.add(bucket_checks::on_pinned_thread(pinning, move || {
                bucket_checks::governor_single(quota, checks, mode, &clock)
            })?);
        }
        for (mode, (spillway, governor)) in [ClockMode::PerCheck, ClockMode::Amortised]
            .into_iter()
            .zip(&mut two_threads)
        {
            spillway.add(bucket_checks::spillway_two_threads(
                admitting,
                settings.two_thread_checks,
                mode,
                pinning,
            )?);
            governor.add(bucket_checks::governor_two_threads(
                admitting,
                settings.two_thread_checks,
                mode,
                &upkeep,
                pinning,
            )?);
        }
        let reads = checks;
        let [spillway_reads, governor_reads] =
            bucket_checks::on_pinned_thread(pinning, move || {
                [
                    bucket_checks::spillway_clock_reads(reads),
                    bucket_checks::governor_clock_reads(&QuantaClock::default(), reads),
                ]
            })?;
        clock_reads[0].push(spillway_reads.as_nanos() as f64 / reads as f64);
        clock_reads[1].push(governor_reads.as_nanos() as f64 / reads as f64);
        let passes = settings.keyed_passes;
        let keyed_order = order.clone();
        let clock = upkeep.clone();
        let runs = bucket_checks::on_pinned_thread(pinning, move || {
            [
                bucket_checks::spillway_keyed(
                    admitting,
                    &keyed_order,
                    passes,
                    BucketAccess::Shared,
                ),
                bucket_checks::spillway_keyed(
                    admitting,
                    &keyed_order,
                    passes,
                    BucketAccess::Exclusive,
                ),
                bucket_checks::governor_keyed(
                    admitting,
                    &keyed_order,
                    passes,
                    &clock,
                    RandomState::new(),
                ),
                bucket_checks::governor_keyed(
                    admitting,
                    &keyed_order,
                    passes,
                    &clock,
                    ConnectionIdBuildHasher::default(),
                ),
            ]
        })?;
        for (samples, run) in keyed.iter_mut().zip(runs) {
            samples.add(run);
        }
    }

    let upkeep_us = UPKEEP_INTERVAL.as_micros();
    let governor_per_check = "governor direct, QuantaClock (default)";
    let governor_upkeep = format!("governor direct, QuantaUpkeepClock {upkeep_us} us");
    let clock_name = |mode: ClockMode| match mode {
        ClockMode::PerCheck => "now_ns per check".to_owned(),
        ClockMode::Amortised => format!("now_ns per {CHECKS_PER_CLOCK_READ}"),
    };
    let spillway_name = |access: BucketAccess, mode: ClockMode| {
        format!("spillway {}, {}", access.describe(), clock_name(mode))
    };
    let mut rows = Vec::new();
    for ((case, _, mode, targets), (spillway, governor)) in single_cases.iter().zip(&single) {
        let governor = governor.figure(match mode {
            ClockMode::PerCheck => governor_per_check.to_owned(),
            ClockMode::Amortised => governor_upkeep.clone(),
        })?;
        for ((access, samples), target) in BucketAccess::ALL.into_iter().zip(spillway).zip(targets)
        {
            rows.push(Row {
                case: (*case).to_owned(),
                spillway: samples.figure(spillway_name(access, *mode))?,
                peer: governor.clone(),
                target: *target,
            });
        }
    }
    for (mode, (spillway, governor)) in [ClockMode::PerCheck, ClockMode::Amortised]
        .into_iter()
        .zip(&two_threads)
    {
        let (mode_name, governor_name) = match mode {
            ClockMode::PerCheck => ("clock per check", governor_per_check.to_owned()),
            ClockMode::Amortised => ("amortised clock", governor_upkeep.clone()),
        };
        // Shared only: an exclusive (`&mut`) bucket cannot be checked by two threads.
        let spillway_name = spillway_name(BucketAccess::Shared, mode);
        rows.push(Row {
            case: format!("2 threads, 1 bucket, {mode_name}: per thread"),
            spillway: spillway.per_thread.figure(spillway_name.clone())?,
            peer: governor.per_thread.figure(governor_name.clone())?,
            target: None,
        });
        rows.push(Row {
            case: format!("2 threads, 1 bucket, {mode_name}: aggregate"),
            spillway: spillway.aggregate.figure(spillway_name)?,
            peer: governor.aggregate.figure(governor_name)?,
            target: None,
        });
    }
    rows.push(Row {
        case: "clock read alone (no check)".to_owned(),
        spillway: figure(
            "spillway Clock::now_ns",
            &clock_reads[0],
            Unit::NanosecondsPerRead,
        )?,
        peer: figure(
            "governor QuantaClock::now",
            &clock_reads[1],
            Unit::NanosecondsPerRead,
        )?,
        target: None,
    });
    let keyed_case = format!("{CONNECTIONS} keyed, random order, amortised clock");
    let keyed_name = |access: BucketAccess| {
        let place = match access {
            BucketAccess::Shared => "Vec<TokenBucket>[id]",
            BucketAccess::Exclusive => "&mut Vec<TokenBucket>[id]",
        };
        format!(
            "spillway {place} {}, {}",
            access.describe(),
            clock_name(ClockMode::Amortised)
        )
    };
    let keyed_shared = keyed[0].figure(keyed_name(BucketAccess::Shared))?;
    let keyed_exclusive = keyed[1].figure(keyed_name(BucketAccess::Exclusive))?;
    let governor_siphash = keyed[2].figure(format!(
        "governor keyed (DashMap, default SipHash), QuantaUpkeepClock {upkeep_us} us"
    ))?;
    let governor_fibonacci = keyed[3].figure(format!(
        "governor keyed (DashMap, Fibonacci hash), QuantaUpkeepClock {upkeep_us} us"
    ))?;
    // The target is judged on the exclusive path (a shard's own buckets) against governor's
    // default keyed limiter; the other rows are shown without one.
    for (spillway, peer, target) in [
        (&keyed_shared, &governor_siphash, None),
        (
            &keyed_exclusive,
            &governor_siphash,
            Some(Target::RatioAtMost(0.2)),
        ),
        (&keyed_shared, &governor_fibonacci, None),
        (&keyed_exclusive, &governor_fibonacci, None),
    ] {
        rows.push(Row {
            case: keyed_case.clone(),
            spillway: spillway.clone(),
            peer: peer.clone(),
            target,
        });
    }
    drop(upkeep);

    Ok(Section {
        title: "Token bucket checks, spillway vs governor 0.10".to_owned(),
        notes: vec![
            format!(
                "same GCRA quota both sides: admitted rows {}, refused row {}; ns/check = loop time / \
                 checks ({} per single-thread run, {} per thread in 2-thread runs), median (min–max) of \
                 {} reps; results through black_box, admissions counted",
                admitting.describe(),
                refusing.describe(),
                bucket_checks::round_checks(checks),
                bucket_checks::round_checks(settings.two_thread_checks),
                settings.reps
            ),
            format!(
                "clock per check: spillway Clock::now_ns() before every check, governor's default \
                 QuantaClock (TSC read in every check); amortised: spillway reads now_ns once per \
                 {CHECKS_PER_CLOCK_READ} checks, governor QuantaUpkeepClock with an upkeep thread asked \
                 for every {upkeep_us} us (a sleep; Linux timer slack makes it coarser)"
            ),
            format!(
                "spillway access modes: {} = `try_acquire(&self)`, a compare-exchange, for a bucket \
                 shared by threads; {} = `try_acquire_exclusive(&mut self)`, the same decision as a \
                 plain load+store, for a bucket one thread owns. Shards own their connections' \
                 buckets exclusively, so the amortised-clock target (<= 0.5) and the keyed target \
                 (<= 0.2, vs governor's default SipHash) are judged on the exclusive rows; the \
                 clock-per-check target (<= 1.0) is judged on the CAS row, the like-for-like path \
                 with governor's own CAS; the other rows carry no target. 2-thread rows are CAS \
                 only (`&mut` cannot be shared)",
                BucketAccess::Shared.describe(),
                BucketAccess::Exclusive.describe(),
            ),
            "2 threads: both pinned threads hammer one shared bucket/limiter (Arc); per thread = mean \
             of each thread's ns/check, aggregate = slower thread's time / all checks"
                .to_owned(),
            format!(
                "keyed: {CONNECTIONS} connections, {} shuffles of the ids (xorshift64, seed {KEY_ORDER_SEED:#x}) \
                 x {} passes per run; every key checked once before timing (governor's inserts not timed)",
                settings.keyed_rounds, settings.keyed_passes
            ),
        ],
        rows,
        absolute_rows: Vec::new(),
    })
}

/// Per-repetition figures and admitted counts of one tenant setup's admission rows.
#[derive(Default)]
struct AdmissionSamples {
    admission_ns: Vec<f64>,
    full_path_ns: Vec<f64>,
    admitted: u64,
    messages: u64,
}

fn admission_section(
    settings: &Settings,
    pinning: &Pinning,
    progress: &mut impl FnMut(&str),
) -> anyhow::Result<Section> {
    let order = Arc::new(admission::order());
    let mut samples: Vec<AdmissionSamples> = TenantSetup::ALL
        .iter()
        .map(|_| AdmissionSamples::default())
        .collect();
    for rep in 1..=settings.reps {
        progress(&format!("  rep {rep}/{}", settings.reps));
        for (setup, samples) in TenantSetup::ALL.into_iter().zip(&mut samples) {
            let order = Arc::clone(&order);
            let messages = settings.admission_messages;
            let run = bucket_checks::on_pinned_thread(pinning, move || {
                admission::run(messages, setup, &order)
            })??;
            samples.admission_ns.push(run.admission_ns_per_message());
            samples.full_path_ns.push(run.full_path_ns_per_message());
            samples.admitted += run.admitted;
            samples.messages += run.messages;
        }
    }

    let mut absolute_rows = Vec::new();
    for (setup, samples) in TenantSetup::ALL.into_iter().zip(&samples) {
        let admitted = Some(Admitted {
            admitted: samples.admitted,
            checks: samples.messages,
        });
        absolute_rows.push(AbsoluteRow {
            case: format!("admission, {}", setup.describe()),
            spillway: Figure {
                admitted,
                ..figure(
                    "spillway Simulation::submit",
                    &samples.admission_ns,
                    Unit::NanosecondsPerMessage,
                )?
            },
            // The budget is for the three levels as the default config runs them;
            // a configured tenant adds the cross-shard cap's compare-exchange, reported
            // beside it without a budget.
            budget: (setup == TenantSetup::ALL[0]).then_some(Budget::AtMost(ADMISSION_BUDGET_NS)),
        });
        absolute_rows.push(AbsoluteRow {
            case: format!("admission + handler + completion, {}", setup.describe()),
            spillway: Figure {
                admitted,
                ..figure(
                    "spillway submit + run (no-op handler)",
                    &samples.full_path_ns,
                    Unit::NanosecondsPerMessage,
                )?
            },
            budget: None,
        });
    }
    let bytes = spillway::engine::Engine::bytes_per_connection();
    absolute_rows.push(AbsoluteRow {
        case: "memory per idle connection".to_owned(),
        spillway: figure(
            "spillway Engine::bytes_per_connection()",
            &[bytes as f64],
            Unit::BytesPerConnection,
        )?,
        budget: Some(Budget::AtMost(CONNECTION_BUDGET_BYTES)),
    });

    Ok(Section {
        title: format!(
            "Admission pipeline, one simulated shard, {} connections (absolute budgets, no peer)",
            admission::CONNECTIONS
        ),
        notes: vec![
            format!(
                "Config::default(), all three levels on (rate {} msg/s per connection, burst {}, \
                 caps, breaker); spillway::simulation::Simulation with a no-op handler; messages \
                 role Session, priority P1, tenant 0, no payload; connections 0..{} warmed with one \
                 message each, then visited in {} xorshift64 shuffles (seed {:#x}), repeated; \
                 simulated clock +{} ns per message (about {:.0} msg/s per connection, under the rate)",
                spillway::config::Config::default().rate.per_connection_per_sec,
                spillway::config::Config::default().rate.burst,
                admission::CONNECTIONS,
                admission::ORDER_ROUNDS,
                admission::ORDER_SEED,
                admission::NS_PER_MESSAGE,
                1e9 / (f64::from(admission::CONNECTIONS) * admission::NS_PER_MESSAGE as f64),
            ),
            format!(
                "admission = time in the batch's {batch} submit calls / messages; full path = the \
                 submits plus run(now, now, {batch}) after them (no-op handlers, completions, \
                 per-batch breaker evaluation and adaptive sweep) / messages; Instant around each \
                 batch; {} timed messages per run; median (min–max) of {} reps; every timed \
                 message must be admitted and delivered (the run fails otherwise)",
                settings.admission_messages,
                settings.reps,
                batch = admission::BATCH,
            ),
            format!(
                "tenant setups: without settings (the default config's path) and with tenant 0 \
                 configured (cap 2^30 pending, never reached: at most {} messages pending; \
                 ceiling P0, never lowers P1), so the tenant charge (compare-exchange) and release \
                 are on the path",
                admission::BATCH,
            ),
            format!(
                "budget (issue): admission with all three levels on, one shard, {} connections, \
                 <= {ADMISSION_BUDGET_NS} ns per message (design documents: about 2 us for the \
                 bucket check, 5 us for the breaker evaluation); judged on the default config's \
                 admission row; the configured-tenant row adds the optional cross-shard tenant \
                 cap (a shared compare-exchange per message) and is reported without a budget, \
                 as are the full-path rows",
                admission::CONNECTIONS
            ),
            format!(
                "memory: Engine::bytes_per_connection(), what a shard reserves per connection it \
                 can hold (entry, id-index share, round-robin share), a constant of this build, \
                 not a timing; budget (issue) <= {CONNECTION_BUDGET_BYTES} B per idle connection"
            ),
            "bias: the submit figure also builds the Message, and Simulation::submit drains the \
             core's outbox into a Vec after every decision (empty here: nothing is refused); two \
             Instant reads per batch add about 0.5 ns/message; no refusal path is timed; see \
             bench-harness/src/admission.rs"
                .to_owned(),
        ],
        rows: Vec::new(),
        absolute_rows,
    })
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    fn parse(flags: &[&str]) -> Result<Options, clap::Error> {
        Options::try_parse_from(std::iter::once("compare").chain(flags.iter().copied()))
    }

    #[test]
    fn cli_is_consistent() {
        Options::command().debug_assert();
    }

    #[test]
    fn flags_parse_in_any_order() {
        let options = parse(&[]).unwrap();
        assert!(!options.json);
        assert_eq!(options.settings(), Settings::default());
        let options = parse(&["--reps", "3", "--json", "--quick", "--messages=500"]).unwrap();
        assert!(options.json);
        let settings = options.settings();
        assert!(settings.quick);
        assert_eq!((settings.reps, settings.messages), (3, 500));
        assert_eq!(
            Settings {
                reps: Settings::quick().reps,
                messages: Settings::quick().messages,
                ..settings
            },
            Settings::quick()
        );
        assert_eq!(parse(&["--quick"]).unwrap().settings(), Settings::quick());
    }

    #[test]
    fn bad_flags_are_errors_that_say_why() {
        let message = |flags: &[&str]| parse(flags).unwrap_err().to_string();
        assert!(message(&["--fast"]).contains("unexpected argument '--fast'"));
        assert!(message(&["--reps"]).contains("a value is required for '--reps <N>'"));
        assert!(message(&["--reps", "x"]).contains("invalid value 'x' for '--reps <N>'"));
        assert!(message(&["--messages", "0"]).contains("0 is not in 1.."));
        assert!(message(&["--reps", "99999999999"]).contains("'99999999999'"));
    }
}
