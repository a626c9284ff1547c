//! How a producer waits for its completions, measured side by side at one offered rate:
//! polling with `yield_now` between polls, parked in `Ingress::wait_completions`, and async
//! (`CompletionStream` read by one task; `AsyncIngress::submit(..).await`, a task per
//! message), each on a tokio current-thread runtime on the producer's thread.
//!
//! A load run starts a fresh engine and one producer thread, which offers `rate_per_sec`
//! messages in batches, one batch per `tick` (the same pacing for every mode: at each tick it
//! submits what is due, keeping what the ring hands back for the next try), and between
//! ticks waits for completions its mode's way. Over the measured window it counts the
//! deliveries it reads and the CPU time of its own thread and of the whole process
//! (`getrusage`), so the figures are delivered msg/s and CPU µs per delivered message.
//!
//! An idle run holds one message in a gated handler while the producer waits for its
//! completion for `idle` (2 s by default): the CPU the producer's thread and the process
//! spend then is what waiting costs when nothing comes.
//!
//! Known bias: the async modes pace with tokio's timer, whose resolution is a millisecond,
//! so with a shorter tick their batches come a millisecond apart (larger, as many per
//! second); the default tick is that millisecond, for all modes alike. The process CPU
//! includes the shard's own waiting (its adaptive strategy spins, yields, then parks) and
//! the control thread. On a 2-core machine the producer, the shard and the control thread
//! share the cores.

use std::fmt::Write as _;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_core::Stream;
use serde::Serialize;
use spillway::async_ingress::{AsyncIngress, CompletionStream, SubmitError};
use spillway::config::Config;
use spillway::engine::Engine;
use spillway::ingress::Ingress;
use spillway::message::{ConnectionId, Message, MessageId};
use spillway::metrics::Tally;
use spillway::outcome::{
    Completion, DropReason, FailureReason, Outcome, RefusalReason, ShedReason,
};

use crate::stats::Summary;

/// Per-connection token-bucket rate: far above what one connection is offered, so the
/// figures are the data path's, not the rate limit's (as in `scaling`).
const RATE_PER_CONNECTION_PER_SEC: u32 = 1_000_000;

/// One way of waiting for completions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// `poll_completions` in a loop, `yield_now` when a poll finds nothing.
    Poll,
    /// `wait_completions`, parked until a completion or the next tick.
    Wait,
    /// A `CompletionStream` read by one task.
    Stream,
    /// `AsyncIngress::submit(..).await`, one task per message.
    Submit,
}

impl Mode {
    /// Every mode, in the report's order.
    pub const ALL: [Mode; 4] = [Mode::Poll, Mode::Wait, Mode::Stream, Mode::Submit];

    /// The mode's row label.
    pub fn label(self) -> &'static str {
        match self {
            Mode::Poll => "poll + yield_now",
            Mode::Wait => "wait_completions",
            Mode::Stream => "async: CompletionStream",
            Mode::Submit => "async: submit().await",
        }
    }
}

/// What the runs measure.
#[derive(Clone, Debug, Serialize)]
pub struct WaitingSettings {
    /// Offered messages per second.
    pub rate_per_sec: u64,
    /// One batch per tick.
    pub tick: Duration,
    /// Connections the messages go round-robin over.
    pub connections: u64,
    /// Shards.
    pub shards: usize,
    /// Handler cost per message, ns (busy-wait).
    pub service_ns: u64,
    /// Run before the measured window of each load run.
    pub warmup: Duration,
    /// The measured window of each load run.
    pub duration: Duration,
    /// How long an idle run's producer waits.
    pub idle: Duration,
    /// Repetitions of each run, the modes interleaved.
    pub reps: usize,
}

impl Default for WaitingSettings {
    fn default() -> Self {
        Self {
            rate_per_sec: 500_000,
            tick: Duration::from_millis(1),
            connections: 1_000,
            shards: 1,
            service_ns: 0,
            warmup: Duration::from_millis(300),
            duration: Duration::from_secs(2),
            idle: Duration::from_secs(2),
            reps: 3,
        }
    }
}

/// CPU time of the calling thread (`RUSAGE_THREAD`) or of the process (`RUSAGE_SELF`).
#[derive(Clone, Copy, Debug)]
struct CpuClock {
    thread: Duration,
    process: Duration,
}

impl CpuClock {
    fn now() -> Self {
        Self {
            thread: rusage(libc::RUSAGE_THREAD),
            process: rusage(libc::RUSAGE_SELF),
        }
    }

    /// CPU spent since `self`: (thread, process).
    fn since(self, earlier: CpuClock) -> (Duration, Duration) {
        (
            self.thread.saturating_sub(earlier.thread),
            self.process.saturating_sub(earlier.process),
        )
    }
}

/// User plus system time of `who`.
fn rusage(who: libc::c_int) -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `usage` is a valid, writable `rusage`; getrusage only writes it.
    let result = unsafe { libc::getrusage(who, usage.as_mut_ptr()) };
    if result != 0 {
        return Duration::ZERO;
    }
    // SAFETY: zeroed is a valid `rusage` (plain integers), and getrusage succeeded.
    let usage = unsafe { usage.assume_init() };
    let time = |value: libc::timeval| {
        Duration::from_secs(value.tv_sec as u64) + Duration::from_micros(value.tv_usec as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// What one load run measured, over its window.
#[derive(Clone, Debug, Serialize)]
pub struct LoadRun {
    /// Deliveries read per second.
    pub delivered_per_sec: f64,
    /// CPU of the producer's thread per delivered message, µs.
    pub producer_cpu_us_per_message: f64,
    /// CPU of the whole process (producer, shards, control thread) per delivered message,
    /// µs.
    pub process_cpu_us_per_message: f64,
    /// The producer thread's CPU over the window's wall time (1.0: one core).
    pub producer_cores: f64,
    /// Completions read that were not deliveries (refusals, failures).
    pub not_delivered: u64,
    /// Submissions the ring handed back (retried in the poll, wait and stream modes; given
    /// up in the submit mode).
    pub handed_back: u64,
    /// The engine's reasons for what it did not deliver, over the whole run.
    pub not_delivered_reasons: String,
}

/// What one idle run measured: CPU over the idle wait, ms.
#[derive(Clone, Debug, Serialize)]
pub struct IdleRun {
    /// The producer thread's.
    pub producer_cpu_ms: f64,
    /// The whole process's.
    pub process_cpu_ms: f64,
}

/// The pacing and counting every mode shares.
struct Pace {
    started: Instant,
    tick: Duration,
    per_tick: u64,
    warmup_end: Instant,
    end: Instant,
    next_id: u64,
    connections: u64,
    /// Taken back from the ring, submitted first next time.
    held: Option<Message>,
    window: Option<(CpuClock, Instant)>,
    delivered_in_window: u64,
    not_delivered_in_window: u64,
    handed_back: u64,
}

impl Pace {
    fn new(settings: &WaitingSettings) -> Self {
        let tick_ns = settings.tick.as_nanos().max(1) as u64;
        let per_tick = (settings.rate_per_sec * tick_ns)
            .div_ceil(1_000_000_000)
            .max(1);
        let started = Instant::now();
        Self {
            started,
            tick: Duration::from_nanos(tick_ns),
            per_tick,
            warmup_end: started + settings.warmup,
            end: started + settings.warmup + settings.duration,
            next_id: 0,
            connections: settings.connections.max(1),
            held: None,
            window: None,
            delivered_in_window: 0,
            not_delivered_in_window: 0,
            handed_back: 0,
        }
    }

    /// Messages due by `now`: the batches of every tick begun.
    fn due(&self, now: Instant) -> u64 {
        let ticks = (now - self.started).as_nanos() / self.tick.as_nanos() + 1;
        ticks as u64 * self.per_tick
    }

    /// When the next tick begins.
    fn next_tick(&self, now: Instant) -> Instant {
        let ticks = (now - self.started).as_nanos() / self.tick.as_nanos() + 1;
        self.started + self.tick * ticks as u32
    }

    /// The next message to offer, if one is due.
    fn next_message(&mut self, now: Instant) -> Option<Message> {
        if let Some(message) = self.held.take() {
            return Some(message);
        }
        if self.next_id >= self.due(now) {
            return None;
        }
        let id = self.next_id;
        self.next_id += 1;
        Some(Message::new(
            ConnectionId(id % self.connections),
            MessageId(id),
        ))
    }

    /// Starts and ends the window as time passes; false once the run is over.
    fn running(&mut self, now: Instant) -> bool {
        if self.window.is_none() && now >= self.warmup_end {
            self.window = Some((CpuClock::now(), now));
            self.delivered_in_window = 0;
            self.not_delivered_in_window = 0;
            self.handed_back = 0;
        }
        now < self.end
    }

    fn count(&mut self, completion: &Completion) {
        if completion.outcome == Outcome::Delivered {
            self.delivered_in_window += 1;
        } else {
            self.not_delivered_in_window += 1;
        }
    }

    fn finish(self) -> anyhow::Result<LoadRun> {
        let cpu = CpuClock::now();
        let Some((cpu_start, wall_start)) = self.window else {
            bail!("the run ended before its window began");
        };
        let wall = wall_start.elapsed().as_secs_f64();
        let (thread, process) = cpu.since(cpu_start);
        let delivered = self.delivered_in_window.max(1) as f64;
        Ok(LoadRun {
            delivered_per_sec: self.delivered_in_window as f64 / wall,
            producer_cpu_us_per_message: thread.as_secs_f64() * 1e6 / delivered,
            process_cpu_us_per_message: process.as_secs_f64() * 1e6 / delivered,
            producer_cores: thread.as_secs_f64() / wall,
            not_delivered: self.not_delivered_in_window,
            handed_back: self.handed_back,
            not_delivered_reasons: String::new(),
        })
    }
}

/// Submits what is due on a plain ingress; what the ring hands back waits for the next try.
fn submit_due(ingress: &mut Ingress, pace: &mut Pace, now: Instant) -> anyhow::Result<()> {
    while let Some(message) = pace.next_message(now) {
        if let Err(full) = ingress.submit(message) {
            if full.stopped {
                bail!("the engine stopped during a run");
            }
            pace.handed_back += 1;
            pace.held = Some(full.message);
            break;
        }
    }
    Ok(())
}

fn engine_for(settings: &WaitingSettings) -> anyhow::Result<Engine> {
    let mut config = Config {
        shards: settings.shards,
        ..Config::default()
    };
    config.rate.per_connection_per_sec = RATE_PER_CONNECTION_PER_SEC;
    config.rate.burst = RATE_PER_CONNECTION_PER_SEC;
    config
        .validate()
        .context("the waiting run's configuration")?;
    spillway_loadgen::generator::start_engine(config, settings.service_ns)
}

fn current_thread_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .context("building a tokio runtime")
}

/// One load run of `mode`: a fresh engine, one producer thread.
pub fn load_run(settings: &WaitingSettings, mode: Mode) -> anyhow::Result<LoadRun> {
    let engine = engine_for(settings)?;
    let ingress = engine.ingress().context("taking an ingress")?;
    let producer_settings = settings.clone();
    let run = std::thread::Builder::new()
        .name(format!("waiting-{mode:?}"))
        .spawn(move || produce(&producer_settings, mode, ingress))
        .context("spawning the producer")?
        .join()
        .map_err(|_| anyhow::anyhow!("the producer panicked"))??;
    let stats = engine.shutdown();
    if !stats.reconciles() {
        bail!("the engine's counters do not reconcile after a waiting run");
    }
    let mut run = run;
    run.not_delivered_reasons = not_delivered_reasons(&stats.total);
    Ok(run)
}

/// The engine's reasons for what it did not deliver over the whole run (warm-up included),
/// `reason count` pairs; empty when it delivered everything.
fn not_delivered_reasons(total: &Tally) -> String {
    let refused = RefusalReason::ALL
        .iter()
        .map(|reason| (reason.name(), total.refused[reason.index()]));
    let shed = ShedReason::ALL
        .iter()
        .map(|reason| (reason.name(), total.shed[reason.index()]));
    let failed = FailureReason::ALL
        .iter()
        .map(|reason| (reason.name(), total.failed[reason.index()]));
    let dropped = DropReason::ALL
        .iter()
        .map(|reason| (reason.name(), total.dropped[reason.index()]));
    refused
        .chain(shed)
        .chain(failed)
        .chain(dropped)
        .chain([("cancelled", total.cancelled)])
        .filter(|&(_, count)| count > 0)
        .map(|(name, count)| format!("{name} {count}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn produce(settings: &WaitingSettings, mode: Mode, ingress: Ingress) -> anyhow::Result<LoadRun> {
    let pace = Pace::new(settings);
    match mode {
        Mode::Poll | Mode::Wait => produce_blocking(mode, ingress, pace),
        Mode::Stream => current_thread_runtime()?.block_on(produce_stream(ingress, pace)),
        Mode::Submit => current_thread_runtime()?.block_on(produce_submit(ingress, pace)),
    }
}

fn produce_blocking(mode: Mode, mut ingress: Ingress, mut pace: Pace) -> anyhow::Result<LoadRun> {
    let mut completions = Vec::new();
    loop {
        let now = Instant::now();
        if !pace.running(now) {
            break;
        }
        submit_due(&mut ingress, &mut pace, now)?;
        completions.clear();
        let collected = match mode {
            Mode::Wait if ingress.outstanding() == 0 => {
                // Nothing to wait for: the next batch is the next thing to do.
                std::thread::sleep(pace.next_tick(now).saturating_duration_since(now));
                0
            }
            Mode::Wait => {
                let until_tick = pace
                    .next_tick(now)
                    .saturating_duration_since(Instant::now());
                ingress.wait_completions(&mut completions, until_tick)
            }
            _ => ingress.poll_completions(&mut completions),
        };
        for completion in &completions {
            pace.count(completion);
        }
        if mode == Mode::Poll && collected == 0 {
            std::thread::yield_now();
        }
    }
    pace.finish()
}

async fn produce_stream(ingress: Ingress, mut pace: Pace) -> anyhow::Result<LoadRun> {
    let mut stream = CompletionStream::new(ingress);
    loop {
        let now = Instant::now();
        if !pace.running(now) {
            break;
        }
        while let Some(message) = pace.next_message(now) {
            if let Err(full) = stream.submit(message) {
                if full.stopped {
                    bail!("the engine stopped during a run");
                }
                pace.handed_back += 1;
                pace.held = Some(full.message);
                break;
            }
        }
        // The next completion or the next tick, whichever comes first.
        let mut tick = std::pin::pin!(tokio::time::sleep_until(pace.next_tick(now).into()));
        let next = poll_fn(|context| {
            if let Poll::Ready(next) = Pin::new(&mut stream).poll_next(context) {
                return Poll::Ready(next);
            }
            tick.as_mut().poll(context).map(|()| None)
        })
        .await;
        if let Some(completion) = next {
            pace.count(&completion);
        }
    }
    pace.finish()
}

async fn produce_submit(ingress: Ingress, mut pace: Pace) -> anyhow::Result<LoadRun> {
    let ingress = AsyncIngress::new(ingress);
    // Counted by the message tasks: [delivered, not delivered, handed back], from the
    // window's start (the producer resets them then).
    let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
    let mut window_started = false;
    loop {
        let now = Instant::now();
        if !pace.running(now) {
            break;
        }
        if !window_started && pace.window.is_some() {
            window_started = true;
            for count in counts.iter() {
                count.store(0, Ordering::Relaxed);
            }
        }
        while let Some(message) = pace.next_message(now) {
            let (ingress, counts) = (ingress.clone(), Arc::clone(&counts));
            tokio::spawn(async move {
                let slot = match ingress.submit(message).await {
                    Ok(completion) if completion.outcome == Outcome::Delivered => 0,
                    Ok(_) => 1,
                    Err(SubmitError::Full(_) | SubmitError::DuplicateId(_)) => 2,
                };
                // Relaxed: counts read after the runtime is idle.
                counts[slot].fetch_add(1, Ordering::Relaxed);
            });
        }
        tokio::time::sleep_until(pace.next_tick(now).into()).await;
    }
    // Relaxed: every task ran on this thread.
    pace.delivered_in_window = counts[0].load(Ordering::Relaxed);
    pace.not_delivered_in_window = counts[1].load(Ordering::Relaxed);
    pace.handed_back = counts[2].load(Ordering::Relaxed);
    pace.finish()
}

/// A handler that holds messages until the gate opens.
#[derive(Clone, Default)]
struct Gate(Arc<(Mutex<(bool, usize)>, Condvar)>);

impl Gate {
    fn pass(&self) {
        let (state, changed) = &*self.0;
        let mut state = state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.1 += 1;
        changed.notify_all();
        while !state.0 {
            state = changed
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    fn open(&self) {
        let (state, changed) = &*self.0;
        state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .0 = true;
        changed.notify_all();
    }

    fn wait_entered(&self) -> anyhow::Result<()> {
        let (state, changed) = &*self.0;
        let state = state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (state, timeout) = changed
            .wait_timeout_while(state, Duration::from_secs(10), |state| state.1 == 0)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        drop(state);
        if timeout.timed_out() {
            bail!("the gated handler never ran");
        }
        Ok(())
    }
}

/// One idle run of `mode`: one message held in the handler while the producer waits.
pub fn idle_run(settings: &WaitingSettings, mode: Mode) -> anyhow::Result<IdleRun> {
    let gate = Gate::default();
    let handler_gate = gate.clone();
    let engine = Engine::builder()
        .config(Config {
            shards: settings.shards,
            ..Config::default()
        })
        .handler(move |_: &Message| {
            handler_gate.pass();
            Ok(())
        })
        .start()
        .context("starting the gated engine")?;
    let ingress = engine.ingress().context("taking an ingress")?;
    let idle = settings.idle;
    let opener = gate.clone();
    let producer = std::thread::spawn(move || -> anyhow::Result<IdleRun> {
        let measured = idle_wait(mode, ingress, idle);
        // Whatever happened, let the held message go, or the engine cannot stop.
        opener.open();
        let ((thread, process), ingress) = measured?;
        if let Some(mut ingress) = ingress {
            let mut completions = Vec::new();
            while ingress.outstanding() > 0 {
                ingress.wait_completions(&mut completions, Duration::from_secs(10));
            }
        }
        Ok(IdleRun {
            producer_cpu_ms: thread.as_secs_f64() * 1e3,
            process_cpu_ms: process.as_secs_f64() * 1e3,
        })
    });
    gate.wait_entered()?;
    let run = producer
        .join()
        .map_err(|_| anyhow::anyhow!("the idle producer panicked"))??;
    gate.open();
    let stats = engine.shutdown();
    if !stats.reconciles() {
        bail!("the engine's counters do not reconcile after an idle run");
    }
    Ok(run)
}

/// The CPU (thread, process) that `mode`'s wait for `idle` spends while one submitted
/// message is held in the handler; the ingress back, if the mode keeps one.
type IdleWait = ((Duration, Duration), Option<Ingress>);

fn idle_wait(mode: Mode, mut ingress: Ingress, idle: Duration) -> anyhow::Result<IdleWait> {
    let held = Message::new(ConnectionId(1), MessageId(1));
    let runtime = current_thread_runtime()?;
    if mode == Mode::Submit {
        let ingress = AsyncIngress::new(ingress);
        let start = CpuClock::now();
        let waited = runtime.block_on(async {
            let submission = ingress.submit(held);
            tokio::time::timeout(idle, submission).await
        });
        let cpu = CpuClock::now().since(start);
        if waited.is_ok() {
            bail!("the held message completed while the gate was shut");
        }
        return Ok((cpu, None));
    }
    ingress
        .submit(held)
        .map_err(|_| anyhow::anyhow!("the held message came back"))?;
    let mut completions = Vec::new();
    let start = CpuClock::now();
    let ingress = match mode {
        Mode::Poll => {
            let until = Instant::now() + idle;
            while Instant::now() < until {
                if ingress.poll_completions(&mut completions) == 0 {
                    std::thread::yield_now();
                }
            }
            ingress
        }
        Mode::Wait => {
            ingress.wait_completions(&mut completions, idle);
            ingress
        }
        Mode::Stream | Mode::Submit => {
            let mut stream = CompletionStream::new(ingress);
            let next = runtime.block_on(async {
                let next = poll_fn(|context| Pin::new(&mut stream).poll_next(context));
                tokio::time::timeout(idle, next).await
            });
            if next.is_ok() {
                bail!("the held message completed while the gate was shut");
            }
            stream.into_parts().0
        }
    };
    let cpu = CpuClock::now().since(start);
    if !completions.is_empty() {
        bail!("the held message completed while the gate was shut");
    }
    Ok((cpu, Some(ingress)))
}

/// Every mode's figures.
#[derive(Clone, Debug, Serialize)]
pub struct ModeReport {
    /// The mode.
    pub mode: Mode,
    /// Delivered msg/s.
    pub delivered_per_sec: Summary,
    /// Producer thread CPU per delivered message, µs.
    pub producer_cpu_us_per_message: Summary,
    /// Process CPU per delivered message, µs.
    pub process_cpu_us_per_message: Summary,
    /// Producer thread CPU over wall time.
    pub producer_cores: Summary,
    /// Idle: the producer thread's CPU over the idle wait, ms.
    pub idle_producer_cpu_ms: Summary,
    /// Idle: the process's CPU over the idle wait, ms.
    pub idle_process_cpu_ms: Summary,
    /// Every load run, for the counts that should be zero.
    pub runs: Vec<LoadRun>,
}

/// The whole comparison.
#[derive(Clone, Debug, Serialize)]
pub struct WaitingReport {
    /// What was run.
    pub settings: WaitingSettings,
    /// The machine, in a line.
    pub machine: String,
    /// One row per mode.
    pub modes: Vec<ModeReport>,
}

/// Runs every mode `reps` times (interleaved: each repetition runs every mode once), load
/// then idle.
pub fn run(settings: &WaitingSettings, modes: &[Mode]) -> anyhow::Result<WaitingReport> {
    let mut loads: Vec<Vec<LoadRun>> = vec![Vec::new(); modes.len()];
    let mut idles: Vec<Vec<IdleRun>> = vec![Vec::new(); modes.len()];
    for _ in 0..settings.reps {
        for (index, &mode) in modes.iter().enumerate() {
            loads[index].push(load_run(settings, mode)?);
            idles[index].push(idle_run(settings, mode)?);
        }
    }
    let summary = |values: Vec<f64>| Summary::of(&values).context("no repetitions");
    let mut reports = Vec::with_capacity(modes.len());
    for ((&mode, runs), idle) in modes.iter().zip(loads).zip(idles) {
        let field = |get: fn(&LoadRun) -> f64| summary(runs.iter().map(get).collect());
        reports.push(ModeReport {
            mode,
            delivered_per_sec: field(|run| run.delivered_per_sec)?,
            producer_cpu_us_per_message: field(|run| run.producer_cpu_us_per_message)?,
            process_cpu_us_per_message: field(|run| run.process_cpu_us_per_message)?,
            producer_cores: field(|run| run.producer_cores)?,
            idle_producer_cpu_ms: summary(idle.iter().map(|run| run.producer_cpu_ms).collect())?,
            idle_process_cpu_ms: summary(idle.iter().map(|run| run.process_cpu_ms).collect())?,
            runs,
        });
    }
    Ok(WaitingReport {
        settings: settings.clone(),
        machine: format!(
            "{} cores, {}",
            std::thread::available_parallelism().map_or(0, |cores| cores.get()),
            crate::machine::cpu_model().unwrap_or_else(|| "unknown CPU".into())
        ),
        modes: reports,
    })
}

impl WaitingReport {
    /// The report as a table: median [min–max] of the repetitions.
    pub fn to_table(&self) -> String {
        let settings = &self.settings;
        let mut table = String::new();
        let _ = writeln!(
            table,
            "waiting for completions: {} msg/s offered in batches every {:?}, {} shard(s), \
             {} ns handlers, {} connections; {} reps of {:?} (after {:?} warm-up); idle wait {:?}",
            settings.rate_per_sec,
            settings.tick,
            settings.shards,
            settings.service_ns,
            settings.connections,
            settings.reps,
            settings.duration,
            settings.warmup,
            settings.idle,
        );
        let _ = writeln!(table, "machine: {}", self.machine);
        let _ = writeln!(table, "median [min-max] of {} runs", settings.reps);
        let _ = writeln!(
            table,
            "{:<24} {:>26} {:>22} {:>22} {:>20} {:>20} {:>20}",
            "mode",
            "delivered msg/s",
            "producer CPU us/msg",
            "process CPU us/msg",
            "producer cores",
            "idle producer ms",
            "idle process ms"
        );
        for mode in &self.modes {
            let _ = writeln!(
                table,
                "{:<24} {:>26} {:>22} {:>22} {:>20} {:>20} {:>20}",
                mode.mode.label(),
                cell(&mode.delivered_per_sec, 0),
                cell(&mode.producer_cpu_us_per_message, 3),
                cell(&mode.process_cpu_us_per_message, 3),
                cell(&mode.producer_cores, 2),
                cell(&mode.idle_producer_cpu_ms, 1),
                cell(&mode.idle_process_cpu_ms, 1),
            );
        }
        let odd: Vec<String> = self
            .modes
            .iter()
            .flat_map(|mode| {
                mode.runs
                    .iter()
                    .filter(|run| run.not_delivered > 0 || run.handed_back > 0)
                    .map(move |run| {
                        format!(
                            "{}: {} not delivered, {} handed back (whole run: {})",
                            mode.mode.label(),
                            run.not_delivered,
                            run.handed_back,
                            run.not_delivered_reasons
                        )
                    })
            })
            .collect();
        if !odd.is_empty() {
            let _ = writeln!(
                table,
                "runs with refusals or full rings: {}",
                odd.join("; ")
            );
        }
        table
    }
}

fn cell(summary: &Summary, decimals: usize) -> String {
    format!(
        "{:.*} [{:.*}-{:.*}]",
        decimals, summary.median, decimals, summary.min, decimals, summary.max
    )
}
