//! Multicore scaling: the engine's delivered throughput at 1, 2, 4, ... shards, with the
//! handler cost fixed, so that the figure shows how far adding cores adds capacity.
//!
//! Each point starts a fresh engine with `shards` shards and a handler that busy-waits
//! `service_ns` per message (the loadgen's simulated cost), then runs `producers` producer
//! threads, each with its own [`Ingress`] and its own share of the connections
//! (connection `c` belongs to producer `c mod producers`). A producer keeps up to
//! `window_per_shard` messages outstanding on each shard: per shard, it submits round-robin
//! over its connections that the shard owns until that window is full or the ring hands the
//! message back, then reads completions. Only the deliveries read during the measured window count; the warm-up before
//! it lets the shards, caches and the wait strategy settle.
//!
//! What is and is not measured:
//! - The per-connection token bucket is set far above what any connection is offered here
//!   ([`RATE_PER_CONNECTION_PER_SEC`]), so the figure is the data path's capacity (rings,
//!   admission, queue, handler, completion), not the rate limit's. Every other level and the
//!   control thread run as configured by default.
//! - Messages are `Role::Session` at the default priority, as the load generator sends them,
//!   and the default window keeps each shard's queue below the first priority threshold (60%
//!   of the session role's cap of 10,000 per shard) with two producers, so a point that refuses anything says so in its `refused` count instead of
//!   hiding it in the rate.
//! - Known bias: producers, shards and the control thread share the machine's cores; with
//!   more threads than cores the figure includes scheduling, and the report states both
//!   counts. Pinning follows the engine's `pinning` setting.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use spillway::config::Config;
use spillway::ingress::Ingress;
use spillway::message::{ConnectionId, Message, MessageId, Role};
use spillway::metrics::Tally;
use spillway::outcome::{Completion, Outcome};
use spillway_loadgen::report::OutcomeCounts;

use crate::stats::Summary;

/// Per-connection token-bucket rate during a scaling run: far above what one connection is
/// offered (at 14 shards of 1 µs handlers and 15,000 connections, under 1,000 msg/s each).
pub const RATE_PER_CONNECTION_PER_SEC: u32 = 1_000_000;

/// What one scaling run measures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScalingSettings {
    /// Shard counts, one point each, in order.
    pub shard_counts: Vec<usize>,
    /// Producer threads (each with its own `Ingress`).
    pub producers: usize,
    /// Simulated connections, split across the producers.
    pub connections: u32,
    /// Handler cost per message, ns (busy-wait).
    pub service_ns: u64,
    /// Messages each producer keeps outstanding per shard.
    pub window_per_shard: usize,
    /// Run before the measured window of each repetition.
    pub warmup: Duration,
    /// The measured window of each repetition.
    pub duration: Duration,
    /// Repetitions per point (a fresh engine each).
    pub reps: usize,
    /// Pin shards (and the control thread) to cores.
    pub pinning: bool,
}

impl Default for ScalingSettings {
    fn default() -> Self {
        Self {
            shard_counts: vec![1, 2, 4, 8, 14],
            producers: 2,
            connections: 15_000,
            service_ns: 1_000,
            window_per_shard: 512,
            warmup: Duration::from_millis(500),
            duration: Duration::from_secs(2),
            reps: 3,
            pinning: true,
        }
    }
}

/// One repetition at one shard count.
#[derive(Clone, Copy, Debug)]
pub struct ScalingRun {
    /// Deliveries read during the measured window, per second.
    pub delivered_per_sec: f64,
    /// Completions other than delivered read during the measured window (refusals and the
    /// like; expected 0).
    pub not_delivered: u64,
    /// Outcomes of the whole run (warm-up included) by reason, as the producers read them.
    pub outcomes: Tally,
    /// Whether the engine pinned every shard.
    pub pinned: bool,
}

/// Every repetition at one shard count.
#[derive(Clone, Debug)]
pub struct ScalingPoint {
    /// Shards the engine ran.
    pub shards: usize,
    /// The repetitions.
    pub runs: Vec<ScalingRun>,
}

impl ScalingPoint {
    /// Median, min and max of delivered msg/s over the repetitions.
    pub fn delivered(&self) -> Option<Summary> {
        let rates: Vec<f64> = self.runs.iter().map(|run| run.delivered_per_sec).collect();
        Summary::of(&rates)
    }
}

/// Turns that found no completion before a producer starts yielding its core.
const IDLE_SPIN_TURNS: u32 = 256;

/// What one producer counted.
#[derive(Default)]
struct ProducerCount {
    delivered_in_window: u64,
    not_delivered_in_window: u64,
    submitted: u64,
    /// Every completion read (its `submitted` counts them).
    outcomes: Tally,
}

/// One repetition: a fresh engine with `shards` shards, driven by the producers.
pub fn run_once(settings: &ScalingSettings, shards: usize) -> anyhow::Result<ScalingRun> {
    if settings.producers == 0 || settings.connections == 0 {
        bail!("a scaling run needs at least one producer and one connection");
    }
    let mut config = Config {
        shards,
        pinning: settings.pinning,
        ..Config::default()
    };
    config.rate.per_connection_per_sec = RATE_PER_CONNECTION_PER_SEC;
    config.rate.burst = RATE_PER_CONNECTION_PER_SEC;
    config
        .validate()
        .context("the scaling run's configuration")?;
    let engine = spillway_loadgen::generator::start_engine(config, settings.service_ns)?;
    let shard_of: Arc<Vec<usize>> = Arc::new(
        (0..u64::from(settings.connections))
            .map(|connection| engine.shard_of(ConnectionId(connection)))
            .collect(),
    );
    let window_per_shard = settings.window_per_shard.max(1);

    let start = Arc::new(Barrier::new(settings.producers + 1));
    let recording = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::with_capacity(settings.producers);
    for producer in 0..settings.producers {
        let ingress = engine.ingress().context("taking an ingress")?;
        let mine = (0..u64::from(settings.connections))
            .filter(|connection| connection % settings.producers as u64 == producer as u64);
        let lanes = ShardLanes::new(mine, Arc::clone(&shard_of), engine.shards());
        let (start, recording, stop) = (
            Arc::clone(&start),
            Arc::clone(&recording),
            Arc::clone(&stop),
        );
        let handle = thread::Builder::new()
            .name(format!("scaling-producer-{producer}"))
            .spawn(move || produce(ingress, lanes, window_per_shard, &start, &recording, &stop))
            .context("spawning a producer thread")?;
        handles.push(handle);
    }

    start.wait();
    thread::sleep(settings.warmup);
    // Relaxed is enough for both flags: they only tell the producers which window a
    // completion falls in; the counts themselves come back through `join`.
    recording.store(true, Ordering::Relaxed);
    let window_started = Instant::now();
    thread::sleep(settings.duration);
    recording.store(false, Ordering::Relaxed);
    let window_length = window_started.elapsed();
    stop.store(true, Ordering::Relaxed);

    let mut total = ProducerCount::default();
    for handle in handles {
        let count = handle
            .join()
            .map_err(|_| anyhow::anyhow!("a producer thread panicked"))??;
        total.delivered_in_window += count.delivered_in_window;
        total.not_delivered_in_window += count.not_delivered_in_window;
        total.submitted += count.submitted;
        total.outcomes.add(&count.outcomes);
    }
    // Read after the run: each shard pins itself once its thread starts.
    let pinned = engine.pinned();
    let stats = engine.shutdown();
    if !stats.reconciles() {
        bail!("the engine's counters do not reconcile after a scaling run");
    }
    if stats.total.submitted != total.submitted || total.outcomes.submitted != total.submitted {
        bail!(
            "producers submitted {} and read {} completions; the engine counted {} submitted",
            total.submitted,
            total.outcomes.submitted,
            stats.total.submitted
        );
    }
    Ok(ScalingRun {
        delivered_per_sec: total.delivered_in_window as f64 / window_length.as_secs_f64(),
        not_delivered: total.not_delivered_in_window,
        outcomes: total.outcomes,
        pinned,
    })
}

/// One producer's connections, grouped by the shard that owns them, with the number of
/// messages outstanding on each shard.
struct ShardLanes {
    /// Per shard: its connections (of this producer) and the next one to send on.
    connections: Vec<(Vec<u64>, usize)>,
    /// Per shard: messages submitted and not yet completed.
    outstanding: Vec<usize>,
    /// Shard of each connection id (ids are `0..connections`).
    shard_of: Arc<Vec<usize>>,
}

impl ShardLanes {
    fn new(mine: impl Iterator<Item = u64>, shard_of: Arc<Vec<usize>>, shards: usize) -> Self {
        let mut connections = vec![(Vec::new(), 0); shards];
        for connection in mine {
            connections[shard_of[connection as usize]]
                .0
                .push(connection);
        }
        Self {
            connections,
            outstanding: vec![0; shards],
            shard_of,
        }
    }

    fn completed(&mut self, connection: ConnectionId) {
        self.outstanding[self.shard_of[connection.0 as usize]] -= 1;
    }
}

/// One producer's loop: keep up to `window_per_shard` messages outstanding on every shard
/// until `stop`, then read every outstanding completion.
fn produce(
    mut ingress: Ingress,
    mut lanes: ShardLanes,
    window_per_shard: usize,
    start: &Barrier,
    recording: &AtomicBool,
    stop: &AtomicBool,
) -> anyhow::Result<ProducerCount> {
    let mut count = ProducerCount::default();
    let mut completions: Vec<Completion> =
        Vec::with_capacity(window_per_shard * lanes.outstanding.len());
    let mut idle_turns = 0u32;
    start.wait();
    while !stop.load(Ordering::Relaxed) {
        'shards: for shard in 0..lanes.connections.len() {
            let (connections, cursor) = &mut lanes.connections[shard];
            if connections.is_empty() {
                continue;
            }
            while lanes.outstanding[shard] < window_per_shard {
                let message = Message::new(
                    ConnectionId(connections[*cursor]),
                    MessageId(count.submitted),
                )
                .with_role(Role::Session);
                match ingress.submit(message) {
                    Ok(()) => {
                        count.submitted += 1;
                        lanes.outstanding[shard] += 1;
                        *cursor = (*cursor + 1) % connections.len();
                    }
                    Err(full) if full.stopped => {
                        bail!("the engine stopped during a scaling run")
                    }
                    // This shard's ring credit is used up: the next read of completions
                    // frees it. (The message is made afresh next time, same id.)
                    Err(_) => continue 'shards,
                }
            }
        }
        if read_completions(
            &mut ingress,
            &mut completions,
            recording,
            &mut count,
            &mut lanes,
        ) == 0
        {
            idle_turns += 1;
            if idle_turns < IDLE_SPIN_TURNS {
                std::hint::spin_loop();
            } else {
                // No core of our own (more threads than cores): let a shard run.
                thread::yield_now();
            }
        } else {
            idle_turns = 0;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while ingress.outstanding() > 0 {
        if Instant::now() > deadline {
            bail!(
                "{} completions never came back after the run",
                ingress.outstanding()
            );
        }
        if read_completions(
            &mut ingress,
            &mut completions,
            recording,
            &mut count,
            &mut lanes,
        ) == 0
        {
            thread::yield_now();
        }
    }
    Ok(count)
}

fn read_completions(
    ingress: &mut Ingress,
    completions: &mut Vec<Completion>,
    recording: &AtomicBool,
    count: &mut ProducerCount,
    lanes: &mut ShardLanes,
) -> usize {
    completions.clear();
    let read = ingress.poll_completions(completions);
    let recording = recording.load(Ordering::Relaxed);
    for completion in completions.iter() {
        count.outcomes.count_completion(completion.outcome);
        lanes.completed(completion.connection);
        if recording {
            match completion.outcome {
                Outcome::Delivered => count.delivered_in_window += 1,
                _ => count.not_delivered_in_window += 1,
            }
        }
    }
    read
}

/// The non-delivered outcomes of `tally` by reason, e.g. `refused rate_limited 12, shed
/// circuit_open 3`; empty when every message was delivered.
pub fn undelivered_reasons(tally: &Tally) -> String {
    let outcomes = OutcomeCounts::from(tally);
    let prefixed = |kind: &'static str| move |reason: String| format!("{kind} {reason}");
    let mut parts: Vec<String> = outcomes
        .refused_by_reason
        .nonzero()
        .map(prefixed("refused"))
        .chain(outcomes.shed_by_reason.nonzero().map(prefixed("shed")))
        .chain(
            outcomes
                .dropped_by_reason
                .nonzero()
                .map(prefixed("dropped")),
        )
        .collect();
    let failed: u64 = tally.failed.iter().sum();
    if failed > 0 {
        parts.push(format!("failed {failed}"));
    }
    if tally.cancelled > 0 {
        parts.push(format!("cancelled {}", tally.cancelled));
    }
    parts.join(", ")
}

/// Every point of `settings`, each repeated `settings.reps` times; `progress` hears one line
/// per repetition.
pub fn run(
    settings: &ScalingSettings,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<Vec<ScalingPoint>> {
    let mut points = Vec::with_capacity(settings.shard_counts.len());
    for &shards in &settings.shard_counts {
        let mut runs = Vec::with_capacity(settings.reps);
        for rep in 0..settings.reps {
            let run = run_once(settings, shards)
                .with_context(|| format!("{shards} shards, repetition {}", rep + 1))?;
            progress(&format!(
                "{shards} shards, rep {}: {:.2} M msg/s delivered, {} not delivered in the window ({})",
                rep + 1,
                run.delivered_per_sec / 1e6,
                run.not_delivered,
                undelivered_reasons(&run.outcomes)
            ));
            runs.push(run);
        }
        points.push(ScalingPoint { shards, runs });
    }
    Ok(points)
}

/// Median, min and max of a point's delivered msg/s.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Spread {
    /// The median over the repetitions.
    pub median: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
}

/// One shard count's line of the report.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct PointReport {
    /// Shards the engine ran.
    pub shards: usize,
    /// Threads that ran: the shards, the producers and the control thread.
    pub threads: usize,
    /// Whether every repetition pinned every shard.
    pub pinned: bool,
    /// Delivered msg/s over the repetitions.
    pub delivered_per_sec: Spread,
    /// Completions other than delivered in the measured windows, all repetitions.
    pub not_delivered: u64,
    /// Median delivered msg/s over the first point's.
    pub speedup: f64,
    /// Speedup over the growth in shards from the first point.
    pub efficiency: f64,
}

/// The machine a scaling run ran on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MachineReport {
    /// Cores this process may use.
    pub cores: usize,
    /// The CPU's model name.
    pub cpu: String,
}

/// What `scaling` reports: the table ([`ScalingReport::to_table`]) and the JSON object
/// (its `Serialize`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScalingReport {
    /// The machine.
    pub machine: MachineReport,
    /// Producer threads.
    pub producers: usize,
    /// Simulated connections.
    pub connections: u32,
    /// Handler cost per message, ns.
    pub service_ns: u64,
    /// Outstanding messages per producer per shard.
    pub window_per_shard: usize,
    /// The per-connection rate limit (not binding).
    pub rate_per_connection_per_sec: u32,
    /// Warm-up of every repetition, ms.
    pub warmup_ms: u64,
    /// Measured window of every repetition, ms.
    pub duration_ms: u64,
    /// Repetitions per shard count.
    pub reps: usize,
    /// One line per shard count.
    pub points: Vec<PointReport>,
}

impl ScalingReport {
    /// The report of `points`, measured with `settings` on `machine`.
    ///
    /// # Errors
    /// When a point has no repetitions.
    pub fn new(
        settings: &ScalingSettings,
        machine: MachineReport,
        points: &[ScalingPoint],
    ) -> anyhow::Result<Self> {
        let mut lines = Vec::with_capacity(points.len());
        let mut base: Option<(usize, f64)> = None;
        for point in points {
            let summary = point.delivered().context("a point with no repetitions")?;
            let (base_shards, base_rate) = *base.get_or_insert((point.shards, summary.median));
            let speedup = summary.median / base_rate;
            lines.push(PointReport {
                shards: point.shards,
                threads: point.shards + settings.producers + 1,
                pinned: point.runs.iter().all(|run| run.pinned),
                delivered_per_sec: Spread {
                    median: summary.median,
                    min: summary.min,
                    max: summary.max,
                },
                not_delivered: point.runs.iter().map(|run| run.not_delivered).sum(),
                speedup,
                efficiency: speedup * base_shards as f64 / point.shards as f64,
            });
        }
        Ok(Self {
            machine,
            producers: settings.producers,
            connections: settings.connections,
            service_ns: settings.service_ns,
            window_per_shard: settings.window_per_shard,
            rate_per_connection_per_sec: RATE_PER_CONNECTION_PER_SEC,
            warmup_ms: settings.warmup.as_millis() as u64,
            duration_ms: settings.duration.as_millis() as u64,
            reps: settings.reps,
            points: lines,
        })
    }

    /// The report as a Markdown table under a few lines of context.
    pub fn to_table(&self) -> String {
        let mut table = String::new();
        let _ = writeln!(
            table,
            "machine: {} cores, {}\nhandler: busy-wait {} ns/message; {} producer threads; {} connections; window {} per producer per shard; per-connection rate {} msg/s (not binding)\nmedian of {} repetitions (min-max), {} ms measured after {} ms warm-up each\n",
            self.machine.cores,
            self.machine.cpu,
            self.service_ns,
            self.producers,
            self.connections,
            self.window_per_shard,
            self.rate_per_connection_per_sec,
            self.reps,
            self.duration_ms,
            self.warmup_ms
        );
        let _ = writeln!(
            table,
            "| shards | threads | pinned | delivered M msg/s | speedup vs {} | efficiency | not delivered |",
            self.points.first().map_or(1, |point| point.shards)
        );
        let _ = writeln!(table, "|---:|---:|:---:|---:|---:|---:|---:|");
        for point in &self.points {
            let delivered = point.delivered_per_sec;
            let _ = writeln!(
                table,
                "| {} | {} | {} | {:.2} ({:.2}-{:.2}) | {:.2}x | {:.0}% | {} |",
                point.shards,
                point.threads,
                if point.pinned { "yes" } else { "no" },
                delivered.median / 1e6,
                delivered.min / 1e6,
                delivered.max / 1e6,
                point.speedup,
                point.efficiency * 100.0,
                point.not_delivered
            );
        }
        table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_run_delivers_and_reconciles() {
        let settings = ScalingSettings {
            shard_counts: vec![1],
            producers: 1,
            connections: 100,
            service_ns: 0,
            window_per_shard: 64,
            warmup: Duration::from_millis(20),
            duration: Duration::from_millis(100),
            reps: 1,
            pinning: false,
        };
        let points = run(&settings, |_| {}).unwrap();
        assert_eq!(points.len(), 1);
        let run = points[0].runs[0];
        assert!(run.delivered_per_sec > 0.0, "{run:?}");
        assert_eq!(run.not_delivered, 0, "{run:?}");
    }
}
