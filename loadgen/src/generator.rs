//! The generator: drives a [`Target`] from one generator thread and measures what comes
//! back. The default target is the in-process engine: [`run_inproc`] builds an [`Engine`]
//! and drives its [`Ingress`](spillway::ingress::Ingress). [`run_with_target`] runs the
//! same plan, measured the same way, against any [`SystemUnderTest`].
//!
//! Open loop (the default): message `k` of a phase goes to connection `k mod N` at
//! `k × 1e9 / rate` ns after the phase starts ([`OpenLoopSchedule`]). Each turn of the loop
//! reads the clock once, submits every message whose time has come, and reads completions.
//! The [`MessageId`] is the ordinal `k`, so a completion's intended send time is recomputed
//! from its id: nothing is stored per message. Latency runs from the intended send time to
//! the turn in which the generator reads the completion, so a stall anywhere (engine, ring,
//! generator) shows in latency instead of hiding by delaying sends (coordinated omission,
//! corrected as wrk2 does). When `submit` hands a message back (for the engine: its shard's
//! ring credit is used up) the generator keeps it and retries next turn; its latency keeps growing from its
//! intended time.
//!
//! Closed loop: each connection has at most one message outstanding and sends the next as
//! soon as the previous one completes; latency runs from the actual send.
//!
//! A system that splits its connections among several servers
//! ([`SystemUnderTest::split`]) is driven the same way, by the same loop; the recorder
//! also counts each message against its connection's server, so that the result has each
//! server's own figures and reconciliation ([`RunResult::targets`]) beside the total.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use spillway::client::{RandomSource, SplitMix64};
use spillway::clock::Clock;
use spillway::config::Config;
use spillway::control::{Control, HealthKind};
use spillway::engine::Engine;
use spillway::message::{ConnectionId, Message, MessageId, Priority, Role, TenantId};
use spillway::metrics::Stats;
use spillway::metrics::Tally;
use spillway::outcome::{Completion, Outcome, RefusalReason};

use crate::payload::{EchoCheck, PayloadPlan};
use crate::progress::{Progress, ProgressView};
use crate::schedule::OpenLoopSchedule;
use crate::split::ConnectionSplit;
use crate::target::{SystemUnderTest, Target, TargetStats};
use crate::tcp_stats::TcpStats;

/// Longest latency a histogram holds (an hour, in ns); longer values are clamped.
const HISTOGRAM_MAX_NS: u64 = 3_600_000_000_000;
/// Most messages submitted in one turn before completions are read again.
const SUBMIT_BATCH_MAX: usize = 1_024;

/// One phase of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Phase {
    /// Simulated connections, ids `0..connections`.
    pub connections: u32,
    /// Messages per second offered, all connections together (open loop).
    pub rate: u64,
    /// How long it lasts, ns.
    pub duration_ns: u64,
    /// Whether its messages are measured (warm-up and lead-in phases are not).
    pub recorded: bool,
}

/// Everything a run needs besides the engine's configuration.
#[derive(Clone, Debug)]
pub struct RunPlan {
    /// Run in order; usually a warm-up phase then the measured phase.
    pub phases: Vec<Phase>,
    /// Closed loop instead of open loop.
    pub closed_loop: bool,
    /// Closed loop: messages each connection keeps outstanding (1: send the next only when
    /// the last completes; more: pipelining, sent together, so a client that writes its
    /// connection's messages in one system call can). Ignored in open loop.
    pub window: u32,
    /// Busy-wait per message in the handler, ns (0: the handler does nothing).
    pub service_ns: u64,
    /// A full health check every this many ms during the run; 0 disables the probe.
    pub control_probe_ms: u64,
    /// The probe asks `GET /health` of an admin endpoint started on the engine
    /// (`spillway::admin`, on a free loopback port) over one keep-alive connection, the
    /// way an operator's load balancer does, instead of calling `Control::health`.
    pub probe_over_http: bool,
    /// Relative weights of P0..P3; `None` sends everything at P1.
    pub priority_weights: Option<[u32; 4]>,
    /// Read completions only every this many ns (0: every turn).
    pub consumer_poll_ns: u64,
    /// Print a progress line to stderr every second.
    pub progress: bool,
    /// How long to wait for outstanding completions after the last send.
    pub drain_timeout: Duration,
    /// What each message carries, and whether responses are checked as its echo.
    pub payload: PayloadPlan,
    /// The tenant every message is sent as.
    pub tenant: TenantId,
}

impl RunPlan {
    /// Nanoseconds from the start to the end of the last phase.
    pub fn total_ns(&self) -> u64 {
        self.phases.iter().map(|phase| phase.duration_ns).sum()
    }
}

/// Results for one priority (priority-mix runs).
#[derive(Clone, Debug)]
pub struct PriorityResult {
    /// Which priority.
    pub priority: Priority,
    /// Tally of its measured messages.
    pub outcomes: Tally,
    /// Latency of its delivered measured messages, ns.
    pub latency_ns: Histogram<u64>,
}

/// What the health-check probe saw, for a target with a control plane.
#[derive(Clone, Debug)]
pub struct ProbeResult {
    /// Health-check latency seen by the probe thread, ns (measured phase only); empty when
    /// the plan disabled the probe.
    pub latency_ns: Histogram<u64>,
    /// Health checks that returned an error.
    pub errors: u64,
    /// The niceness the probe thread ran at, if it was granted the control thread's
    /// (`None`: normal priority).
    pub nice: Option<i32>,
    /// Whether it asked over HTTP (`RunPlan::probe_over_http`).
    pub over_http: bool,
}

/// Everything a run measured. `S` is the target's own final counters: spillway's
/// [`Stats`] for the in-process engine.
#[derive(Clone, Debug)]
pub struct RunResult<S = Stats> {
    /// Closed loop or open loop.
    pub closed_loop: bool,
    /// Closed loop: messages outstanding per connection.
    pub window: u32,
    /// Connections of the measured phase.
    pub connections: u32,
    /// Shards the engine ran (for another target: its worker threads).
    pub shards: usize,
    /// Whether every shard (worker thread) was pinned.
    pub pinned: bool,
    /// Offered rate of the measured phase (open loop), msg/s.
    pub offered_rate: u64,
    /// Length of the measured phase, s.
    pub duration_s: f64,
    /// Warm-up and lead-in time before it, s.
    pub unrecorded_s: f64,
    /// Handler cost, ns.
    pub service_ns: u64,
    /// Messages of the measured phase that were submitted.
    pub submitted: u64,
    /// Tally of the measured phase's messages.
    pub measured: Tally,
    /// Tally of every message of the run, warm-up included.
    pub all: Tally,
    /// Messages submitted in the whole run.
    pub submitted_all: u64,
    /// Submissions made during the measured phase (by the clock, whatever their schedule).
    pub sent_in_window: u64,
    /// Deliveries read during the measured phase (by the clock).
    pub delivered_in_window: u64,
    /// Latency of delivered measured messages, ns (intended send to completion read).
    pub latency_ns: Histogram<u64>,
    /// Generator lag of measured messages, ns (actual submit minus intended submit).
    pub lag_ns: Histogram<u64>,
    /// Per priority, when the run had a priority mix.
    pub per_priority: Vec<PriorityResult>,
    /// Messages whose time had come by the end but that were never submitted.
    pub unsent: u64,
    /// Times `submit` handed a message back because the target had no room (for the
    /// engine: its shard's ring credit was used up); after one, the generator retries only
    /// once a read of completions has found some.
    pub ring_full_retries: u64,
    /// Messages still without a completion after the drain timeout.
    pub lost: u64,
    /// The health-check probe's figures; `None` when the target has no control plane
    /// (the baseline), so reports say "not applicable" rather than print zeros.
    pub control: Option<ProbeResult>,
    /// The target's final counters (the engine's [`Stats`] for the in-process engine).
    pub engine: S,
    /// Disagreements between the generator's counts and the target's; empty when they
    /// reconcile.
    pub reconcile_errors: Vec<String>,
    /// Payload bytes per message.
    pub payload_bytes: u32,
    /// Payload bytes of the submissions made during the measured phase (by the clock).
    pub payload_bytes_in_window: u64,
    /// Response bytes of the completions read during the measured phase (by the clock).
    pub response_bytes_in_window: u64,
    /// The responses checked as echoes of their payloads, whole run; `None` when the plan
    /// did not ask for the check.
    pub echo: Option<EchoCheck>,
    /// The tenant every message was sent as.
    pub tenant: TenantId,
    /// This server's weight in the split, for one server's part of a split run; `None`
    /// for a whole run.
    pub split_weight: Option<u32>,
    /// For a run split among several servers, each server's own result, in order: its
    /// connections and offered rate (its share), its messages' counts and latencies, its
    /// own counters ([`TcpStats`]) and their reconciliation. Empty for one server.
    pub targets: Vec<RunResult<TcpStats>>,
}

impl<S> RunResult<S> {
    /// Submissions per second made during the measured phase (by the clock: a generator
    /// that is behind is still sending earlier messages, and those count here).
    pub fn achieved_rate(&self) -> f64 {
        self.sent_in_window as f64 / self.duration_s
    }

    /// Deliveries per second read during the measured phase (by the clock).
    pub fn delivered_rate(&self) -> f64 {
        self.delivered_in_window as f64 / self.duration_s
    }

    /// Payload bytes per second submitted during the measured phase (by the clock).
    pub fn payload_sent_bytes_per_s(&self) -> f64 {
        self.payload_bytes_in_window as f64 / self.duration_s
    }

    /// Response bytes per second read during the measured phase (by the clock).
    pub fn response_received_bytes_per_s(&self) -> f64 {
        self.response_bytes_in_window as f64 / self.duration_s
    }

    /// The generator fell behind its schedule: lag p99 over 1 ms, or messages whose time
    /// had come were never sent. (Open loop only; a closed loop has no schedule.)
    pub fn generator_fell_behind(&self) -> bool {
        !self.closed_loop && (self.lag_ns.value_at_quantile(0.99) > 1_000_000 || self.unsent > 0)
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_NS, 3).expect("valid histogram bounds")
}

/// The priority of the message with id `id` under `weights`: a fixed hash of the id, so it
/// is recomputed from the id when the completion arrives.
fn priority_of(id: u64, weights: Option<&[u32; 4]>) -> Priority {
    let Some(weights) = weights else {
        return Priority::P1;
    };
    let total: u64 = weights.iter().map(|&weight| u64::from(weight)).sum();
    // The first draw of the sequence the id seeds: a fixed, well-mixed function of the id.
    let mut pick = SplitMix64::new(id).next_u64() % total.max(1);
    for (index, &weight) in weights.iter().enumerate() {
        if pick < u64::from(weight) {
            return Priority::from_index(index).expect("four priorities");
        }
        pick -= u64::from(weight);
    }
    Priority::P3
}

/// One phase's place in the run's stream of ordinals and in time.
struct PhaseSlot {
    schedule: OpenLoopSchedule,
    first_ordinal: u64,
    start_ns: u64,
    recorded: bool,
}

/// The whole run's open-loop timeline: message ordinal to intended time, connection and
/// whether it is measured.
struct Timeline {
    slots: Vec<PhaseSlot>,
    total: u64,
}

impl Timeline {
    fn new(phases: &[Phase]) -> anyhow::Result<Self> {
        let mut slots = Vec::with_capacity(phases.len());
        let mut first_ordinal = 0;
        let mut start_ns = 0;
        for phase in phases {
            let schedule = OpenLoopSchedule::new(phase.connections, phase.rate)
                .map_err(|error| anyhow::anyhow!("{error}"))?;
            let messages = schedule.messages_before(phase.duration_ns);
            slots.push(PhaseSlot {
                schedule,
                first_ordinal,
                start_ns,
                recorded: phase.recorded,
            });
            first_ordinal += messages;
            start_ns += phase.duration_ns;
        }
        Ok(Self {
            slots,
            total: first_ordinal,
        })
    }

    #[inline]
    fn slot(&self, ordinal: u64) -> &PhaseSlot {
        self.slots
            .iter()
            .rev()
            .find(|slot| slot.first_ordinal <= ordinal)
            .unwrap_or(&self.slots[0])
    }

    /// Intended send time (ns from the run's start), connection, and whether it is measured.
    #[inline]
    fn at(&self, ordinal: u64) -> (u64, u32, bool) {
        let slot = self.slot(ordinal);
        let send = slot.schedule.send_at(ordinal - slot.first_ordinal);
        (
            slot.start_ns + send.intended_ns,
            send.connection,
            slot.recorded,
        )
    }
}

/// Whether time `ns` (from the run's start) lies in a recorded phase.
fn recorded_at(phases: &[Phase], ns: u64) -> bool {
    let mut start = 0;
    for phase in phases {
        if ns < start + phase.duration_ns {
            return phase.recorded;
        }
        start += phase.duration_ns;
    }
    false
}

/// The generator's bookkeeping.
struct Recorder {
    weights: Option<[u32; 4]>,
    measured: Tally,
    all: Tally,
    latency_ns: Histogram<u64>,
    lag_ns: Histogram<u64>,
    per_priority: Vec<(Tally, Histogram<u64>)>,
    submitted: u64,
    submitted_all: u64,
    ring_full_retries: u64,
    /// Whether the clock is in a recorded phase now (set by the driver once per turn).
    window: bool,
    /// Submissions made while `window` was set.
    sent_in_window: u64,
    /// Deliveries read while `window` was set.
    delivered_in_window: u64,
    /// Payload bytes submitted while `window` was set.
    payload_bytes_in_window: u64,
    /// Response bytes read while `window` was set.
    response_bytes_in_window: u64,
    /// Set when every delivered response is checked as the echo of its payload.
    echo_of: Option<PayloadPlan>,
    echo: EchoCheck,
    /// Messages whose time had come by the end but that were never submitted.
    unsent: u64,
    /// Completions read after the target shut down.
    late: u64,
    /// For a run split among several servers, each one's own bookkeeping.
    split: Option<Box<SplitRecorders>>,
}

/// Each server's own [`Recorder`] in a split run, found from a message's connection.
struct SplitRecorders {
    split: ConnectionSplit,
    parts: Vec<Recorder>,
}

impl Recorder {
    fn new(weights: Option<[u32; 4]>, payload: PayloadPlan) -> Self {
        Self {
            weights,
            measured: Tally::default(),
            all: Tally::default(),
            latency_ns: histogram(),
            lag_ns: histogram(),
            per_priority: (0..Priority::COUNT)
                .map(|_| (Tally::default(), histogram()))
                .collect(),
            submitted: 0,
            submitted_all: 0,
            ring_full_retries: 0,
            window: false,
            sent_in_window: 0,
            delivered_in_window: 0,
            payload_bytes_in_window: 0,
            response_bytes_in_window: 0,
            echo_of: payload.verify_echo.then_some(payload),
            echo: EchoCheck::default(),
            unsent: 0,
            late: 0,
            split: None,
        }
    }

    /// Also keeps each server's own bookkeeping, when `split` divides the connections.
    fn split_by(mut self, split: Option<ConnectionSplit>) -> Self {
        self.split = split.map(|split| {
            let parts = (0..split.targets())
                .map(|_| Recorder::new(self.weights, self.echo_of.unwrap_or_default()))
                .collect();
            Box::new(SplitRecorders { split, parts })
        });
        self
    }

    /// The bookkeeping of `connection`'s server, in a split run.
    #[inline]
    fn part(&mut self, connection: ConnectionId) -> Option<&mut Recorder> {
        let split = self.split.as_deref_mut()?;
        let target = split.split.target_of(connection.0)?;
        split.parts.get_mut(target)
    }

    /// Whether the clock is in a recorded phase now.
    #[inline]
    fn set_window(&mut self, window: bool) {
        self.window = window;
        if let Some(split) = self.split.as_deref_mut() {
            for part in &mut split.parts {
                part.window = window;
            }
        }
    }

    /// A message submitted on `connection`.
    #[inline]
    fn sent(
        &mut self,
        connection: ConnectionId,
        measured: bool,
        lag_ns: Option<u64>,
        payload_bytes: usize,
    ) {
        self.count_sent(measured, lag_ns, payload_bytes);
        if let Some(part) = self.part(connection) {
            part.count_sent(measured, lag_ns, payload_bytes);
        }
    }

    /// A message `submit` handed back, for lack of room on `connection`.
    #[inline]
    fn handed_back(&mut self, connection: ConnectionId) {
        self.ring_full_retries += 1;
        if let Some(part) = self.part(connection) {
            part.ring_full_retries += 1;
        }
    }

    /// A message on `connection` whose time had come but that was never submitted.
    fn not_sent(&mut self, connection: ConnectionId) {
        self.unsent += 1;
        if let Some(part) = self.part(connection) {
            part.unsent += 1;
        }
    }

    /// A completion read after the target shut down: counted, not measured.
    fn late(&mut self, completion: &Completion) {
        self.count_late(completion);
        if let Some(part) = self.part(completion.connection) {
            part.count_late(completion);
        }
    }

    fn count_late(&mut self, completion: &Completion) {
        self.late += 1;
        self.all.count_completion(completion.outcome);
        self.check_echo(completion);
    }

    #[inline]
    fn count_sent(&mut self, measured: bool, lag_ns: Option<u64>, payload_bytes: usize) {
        self.submitted_all += 1;
        if self.window {
            self.sent_in_window += 1;
            self.payload_bytes_in_window += payload_bytes as u64;
        }
        if measured {
            self.submitted += 1;
            if let Some(lag_ns) = lag_ns {
                self.lag_ns.saturating_record(lag_ns.max(1));
            }
        }
    }

    /// A completion read during the run, `latency_ns` after its message's (intended) send.
    #[inline]
    fn completed(&mut self, completion: &Completion, measured: bool, latency_ns: u64) {
        self.count_completed(completion, measured, latency_ns);
        if let Some(part) = self.part(completion.connection) {
            part.count_completed(completion, measured, latency_ns);
        }
    }

    #[inline]
    fn count_completed(&mut self, completion: &Completion, measured: bool, latency_ns: u64) {
        self.all.count_completion(completion.outcome);
        self.check_echo(completion);
        if self.window {
            self.response_bytes_in_window += completion.response.len() as u64;
            if completion.outcome == Outcome::Delivered {
                self.delivered_in_window += 1;
            }
        }
        if !measured {
            return;
        }
        self.measured.count_completion(completion.outcome);
        let delivered = completion.outcome == Outcome::Delivered;
        if delivered {
            self.latency_ns.saturating_record(latency_ns.max(1));
        }
        if self.weights.is_some() {
            let priority = priority_of(completion.message.0, self.weights.as_ref());
            let (outcomes, latency) = &mut self.per_priority[priority.index()];
            outcomes.count_completion(completion.outcome);
            if delivered {
                latency.saturating_record(latency_ns.max(1));
            }
        }
    }

    /// Checks a delivered completion's response against its message's payload, when the
    /// plan asks for it. Refused, shed, failed, cancelled and dropped messages have no
    /// response to check.
    #[inline]
    fn check_echo(&mut self, completion: &Completion) {
        let Some(plan) = &self.echo_of else {
            return;
        };
        if completion.outcome != Outcome::Delivered {
            return;
        }
        self.echo.checked += 1;
        if !plan.echoed(
            completion.connection,
            completion.message,
            &completion.response,
        ) {
            self.echo.mismatches += 1;
        }
    }
}

/// Starts an engine with `config` whose handler costs `service_ns` per message.
pub fn start_engine(config: Config, service_ns: u64) -> anyhow::Result<Engine> {
    let clock = Clock::new();
    let engine = Engine::builder()
        .config(config)
        .handler(move |_: &Message| {
            clock.spin_for_ns(service_ns);
            Ok(())
        })
        .start()
        .context("starting the engine")?;
    Ok(engine)
}

/// How the probe asks.
enum ProbeVia {
    /// `Control::health(Full)`.
    Control,
    /// `GET /health` on the admin endpoint at this address.
    Http(std::net::SocketAddr),
}

/// An HTTP/1.1 client for one URL over one keep-alive connection (reconnecting after an
/// error), as a load balancer's health checker keeps one.
struct HealthOverHttp {
    address: std::net::SocketAddr,
    stream: Option<std::net::TcpStream>,
    buffer: Vec<u8>,
}

impl HealthOverHttp {
    /// Asks once; the status code.
    fn check(&mut self) -> std::io::Result<u16> {
        use std::io::{Read, Write};
        let result = (|| {
            if self.stream.is_none() {
                let stream = std::net::TcpStream::connect(self.address)?;
                stream.set_nodelay(true)?;
                stream.set_read_timeout(Some(Duration::from_secs(5)))?;
                self.stream = Some(stream);
            }
            let stream = self.stream.as_mut().expect("connected above");
            stream.write_all(b"GET /health HTTP/1.1\r\nHost: spillway\r\n\r\n")?;
            self.buffer.clear();
            let mut chunk = [0u8; 4096];
            loop {
                let read = stream.read(&mut chunk)?;
                if read == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                self.buffer.extend_from_slice(&chunk[..read]);
                let mut headers = [httparse::EMPTY_HEADER; 16];
                let mut response = httparse::Response::new(&mut headers);
                let parsed = response
                    .parse(&self.buffer)
                    .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidData, error))?;
                if let httparse::Status::Complete(head) = parsed {
                    let body = response
                        .headers
                        .iter()
                        .find(|header| header.name.eq_ignore_ascii_case("content-length"))
                        .and_then(|header| std::str::from_utf8(header.value).ok()?.parse().ok())
                        .unwrap_or(0usize);
                    if self.buffer.len() >= head + body {
                        return Ok(response.code.unwrap_or(0));
                    }
                }
            }
        })();
        if result.is_err() {
            self.stream = None;
        }
        result
    }
}

/// Health-check probe: a full health check every `interval`, timed from call to answer,
/// recorded once `record_after` has passed, until `stop` is raised.
fn probe(
    control: Control,
    via: ProbeVia,
    interval: Duration,
    record_after: Duration,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(Histogram<u64>, u64, Option<i32>)> {
    std::thread::Builder::new()
        .name("loadgen-probe".into())
        .spawn(move || {
            // An operator's health checker runs favoured like the control thread it asks:
            // otherwise, with both cores busy, this thread waits a scheduler slice (about
            // 1 ms) to read each answer, which measures the scheduler, not the engine. The
            // report says whether it was granted (`probe_nice`).
            let nice = control
                .thread_nice()
                .and_then(spillway::control::raise_thread_priority);
            let mut latency = histogram();
            let mut errors = 0;
            let started = Instant::now();
            let mut next = started;
            let mut http = match via {
                ProbeVia::Http(address) => Some(HealthOverHttp {
                    address,
                    stream: None,
                    buffer: Vec::new(),
                }),
                ProbeVia::Control => None,
            };
            while !stop.load(Ordering::Relaxed) {
                let asked = Instant::now();
                // An answer is a health check that reached every shard: 200 or 503 over
                // HTTP (503 is an answer too: the engine said it is not live).
                let answered = match &mut http {
                    Some(http) => http
                        .check()
                        .is_ok_and(|status| status == 200 || status == 503),
                    None => control.health(HealthKind::Full).is_ok(),
                };
                let took = asked.elapsed();
                if asked.duration_since(started) >= record_after {
                    if answered {
                        latency.saturating_record((took.as_nanos() as u64).max(1));
                    } else {
                        errors += 1;
                    }
                }
                next += interval;
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                } else {
                    // Fell behind (a check took longer than the interval): start afresh.
                    next = now;
                }
            }
            (latency, errors, nice)
        })
        .expect("spawning the probe thread")
}

/// Checks that `plan` can run: a phase, a recorded phase, weights not all zero.
fn check_plan(plan: &RunPlan) -> anyhow::Result<()> {
    if plan.phases.is_empty() {
        bail!("a run needs at least one phase");
    }
    if !plan.phases.iter().any(|phase| phase.recorded) {
        bail!("a run needs a recorded phase");
    }
    if let Some(weights) = plan.priority_weights {
        if weights.iter().all(|&weight| weight == 0) {
            bail!("priority weights must not all be zero");
        }
    }
    Ok(())
}

/// Runs `plan` against a fresh in-process engine built from `config`.
pub fn run_inproc(config: Config, plan: &RunPlan) -> anyhow::Result<RunResult> {
    check_plan(plan)?;
    let engine = start_engine(config, plan.service_ns)?;
    run_with_target(engine, plan)
}

/// Runs `plan` against `system`, already started (with the plan's handler cost), and shuts
/// it down at the end: the same schedules, latency, lag, reconciliation and report as
/// [`run_inproc`], for any target. The health-check probe and the breaker on the progress
/// line run only when the system has a control plane; the generator's counts are
/// reconciled against the system's own ([`TargetStats::tally`]).
pub fn run_with_target<S: SystemUnderTest>(
    mut system: S,
    plan: &RunPlan,
) -> anyhow::Result<RunResult<S::Stats>> {
    check_plan(plan)?;
    let mut target = system.target()?;
    let control = system.control();
    let clock = Clock::new();

    let unrecorded_ns: u64 = plan
        .phases
        .iter()
        .take_while(|phase| !phase.recorded)
        .map(|phase| phase.duration_ns)
        .sum();
    let stop_probe = Arc::new(AtomicBool::new(false));
    // The admin endpoint the probe asks over HTTP; stopped before the system is.
    let admin = match (&control, plan.probe_over_http && plan.control_probe_ms > 0) {
        (Some(control), true) => {
            let mut settings = Config::default();
            settings.admin.listen = Some("127.0.0.1:0".to_string());
            Some(
                spillway::admin::AdminServer::builder(control.clone(), settings)
                    .start()
                    .context("starting the admin endpoint for the HTTP probe")?,
            )
        }
        _ => None,
    };
    let prober = control
        .as_ref()
        .filter(|_| plan.control_probe_ms > 0)
        .map(|control| {
            probe(
                control.clone(),
                match &admin {
                    Some(admin) => ProbeVia::Http(admin.local_addr()),
                    None => ProbeVia::Control,
                },
                Duration::from_millis(plan.control_probe_ms),
                Duration::from_nanos(unrecorded_ns),
                Arc::clone(&stop_probe),
            )
        });

    let mut recorder = Recorder::new(plan.priority_weights, plan.payload).split_by(system.split());
    let mut progress = Progress::new(plan.progress, unrecorded_ns);
    let start_ns = clock.now_ns();
    let driven = if plan.closed_loop {
        drive_closed_loop(
            plan,
            &mut target,
            &clock,
            start_ns,
            &mut recorder,
            &mut progress,
            control.as_ref(),
        )
    } else {
        drive_open_loop(
            plan,
            &mut target,
            &clock,
            start_ns,
            &mut recorder,
            &mut progress,
            control.as_ref(),
        )
    };

    stop_probe.store(true, Ordering::Relaxed);
    let probed = prober.map(|handle| {
        handle
            .join()
            .map_err(|_| anyhow::anyhow!("the probe thread panicked"))
    });
    if let Some(admin) = admin {
        admin.stop();
    }
    // In flight once the loop has drained, before the shutdown reads the last of it.
    let outstanding = target.outstanding() as u64;
    let outstanding_by_target = target.outstanding_by_target();
    let shards = system.workers();
    let pinned = system.pinned();
    // Stopped whatever happened in the run, so that an error does not leave it running.
    let target_stats = system.shutdown();
    driven?;
    let control = match probed {
        Some(probed) => {
            let (latency_ns, errors, nice) = probed?;
            Some(ProbeResult {
                latency_ns,
                errors,
                nice,
                over_http: plan.probe_over_http,
            })
        }
        None if control.is_some() => Some(ProbeResult {
            latency_ns: histogram(),
            errors: 0,
            nice: None,
            over_http: false,
        }),
        None => None,
    };
    // Whatever the target never saw is refused here, so it is counted too.
    let mut late = Vec::new();
    target.poll_completions(&mut late);
    for completion in &late {
        recorder.late(completion);
    }
    drop(target);

    let measured_phase = plan
        .phases
        .iter()
        .find(|phase| phase.recorded)
        .expect("checked above");
    let recorded_ns: u64 = plan
        .phases
        .iter()
        .filter(|phase| phase.recorded)
        .map(|phase| phase.duration_ns)
        .sum();
    let shape = RunShape {
        closed_loop: plan.closed_loop,
        window: plan.window,
        connections: measured_phase.connections,
        shards,
        pinned,
        offered_rate: if plan.closed_loop {
            0
        } else {
            measured_phase.rate
        },
        duration_s: recorded_ns as f64 / 1e9,
        unrecorded_s: unrecorded_ns as f64 / 1e9,
        service_ns: plan.service_ns,
        payload_bytes: plan.payload.bytes,
        verify_echo: plan.payload.verify_echo,
        tenant: plan.tenant,
    };
    let split = recorder.split.take();
    let mut targets = Vec::new();
    let mut split_errors = Vec::new();
    if let Some(split) = split {
        let SplitRecorders { split, parts } = *split;
        let part_stats = target_stats.targets();
        if part_stats.len() != parts.len() {
            split_errors.push(format!(
                "the run was split among {} servers but the target reported the counts of {}",
                parts.len(),
                part_stats.len()
            ));
        }
        for (index, (part, stats)) in parts.into_iter().zip(part_stats).enumerate() {
            let connections = split.connections_of_first(index, shape.connections);
            let part_shape = RunShape {
                connections,
                // Each connection keeps the schedule's per-connection rate.
                offered_rate: (shape.offered_rate as f64 * f64::from(connections)
                    / f64::from(shape.connections))
                .round() as u64,
                ..shape
            };
            let outstanding = outstanding_by_target.get(index).copied().unwrap_or(0) as u64;
            let lost = outstanding.saturating_sub(part.late);
            let mut result = part.into_result(&part_shape, stats.clone(), lost);
            result.split_weight = Some(split.weights()[index].get());
            let server = stats.address.map_or_else(
                || format!("server {}", index + 1),
                |address| address.to_string(),
            );
            split_errors.extend(
                result
                    .reconcile_errors
                    .iter()
                    .map(|error| format!("{server}: {error}")),
            );
            targets.push(result);
        }
    }
    let lost = outstanding.saturating_sub(recorder.late);
    let mut result = recorder.into_result(&shape, target_stats, lost);
    // A run whose servers do not each reconcile does not reconcile.
    result.reconcile_errors.extend(split_errors);
    result.control = control;
    result.targets = targets;
    Ok(result)
}

/// What a result says of its run besides the counts: the same for the whole run and, but
/// for the connections and the offered rate, for each server's part of a split one.
#[derive(Clone, Copy, Debug)]
struct RunShape {
    closed_loop: bool,
    window: u32,
    /// Connections of the measured phase.
    connections: u32,
    shards: usize,
    pinned: bool,
    /// Offered rate of the measured phase, msg/s (0 in a closed loop).
    offered_rate: u64,
    duration_s: f64,
    unrecorded_s: f64,
    service_ns: u64,
    payload_bytes: u32,
    verify_echo: bool,
    tenant: TenantId,
}

impl Recorder {
    /// The result of a run shaped `shape` from this bookkeeping and the target's own
    /// counters, reconciled; no probe figures, no parts.
    fn into_result<S: TargetStats>(self, shape: &RunShape, engine: S, lost: u64) -> RunResult<S> {
        let reconcile_errors = reconcile(&self, &engine, lost);
        RunResult {
            closed_loop: shape.closed_loop,
            window: shape.window,
            connections: shape.connections,
            shards: shape.shards,
            pinned: shape.pinned,
            offered_rate: shape.offered_rate,
            duration_s: shape.duration_s,
            unrecorded_s: shape.unrecorded_s,
            service_ns: shape.service_ns,
            submitted: self.submitted,
            measured: self.measured,
            all: self.all,
            submitted_all: self.submitted_all,
            sent_in_window: self.sent_in_window,
            delivered_in_window: self.delivered_in_window,
            latency_ns: self.latency_ns,
            lag_ns: self.lag_ns,
            per_priority: if self.weights.is_some() {
                self.per_priority
                    .into_iter()
                    .zip(Priority::ALL)
                    .map(|((outcomes, latency_ns), priority)| PriorityResult {
                        priority,
                        outcomes,
                        latency_ns,
                    })
                    .collect()
            } else {
                Vec::new()
            },
            unsent: self.unsent,
            ring_full_retries: self.ring_full_retries,
            lost,
            control: None,
            engine,
            reconcile_errors,
            payload_bytes: shape.payload_bytes,
            payload_bytes_in_window: self.payload_bytes_in_window,
            response_bytes_in_window: self.response_bytes_in_window,
            echo: shape.verify_echo.then_some(self.echo),
            tenant: shape.tenant,
            split_weight: None,
            targets: Vec::new(),
        }
    }
}

/// The generator's counts against the target's: every submitted message has exactly one
/// completion, or is one the target accounted for without one
/// ([`TargetStats::without_reply`]), and the target counted the same outcomes.
fn reconcile(recorder: &Recorder, stats: &impl TargetStats, lost: u64) -> Vec<String> {
    let mut errors = stats.self_check();
    let all = &recorder.all;
    if lost > 0 {
        errors.push(format!("{lost} submitted messages never completed"));
    }
    let without_reply = stats.without_reply();
    if all.submitted + without_reply != recorder.submitted_all {
        errors.push(if without_reply == 0 {
            format!(
                "submitted {} but read {} completions",
                recorder.submitted_all, all.submitted
            )
        } else {
            format!(
                "submitted {} but read {} completions and the target accounted for {without_reply} without one",
                recorder.submitted_all, all.submitted
            )
        });
    }
    let total = stats.tally();
    let pairs = [
        ("submitted", total.submitted, all.submitted),
        ("admitted", total.admitted, all.admitted),
        ("delivered", total.delivered, all.delivered),
        ("refused", total.refused_total(), all.refused_total()),
        ("shed", total.shed_total(), all.shed_total()),
        ("failed", total.failed_total(), all.failed_total()),
        ("cancelled", total.cancelled, all.cancelled),
        ("dropped", total.dropped_total(), all.dropped_total()),
    ];
    for (name, target, generator) in pairs {
        if target != generator {
            errors.push(format!(
                "{name}: target counted {target}, generator read {generator}"
            ));
        }
    }
    for reason in RefusalReason::ALL {
        let (target, generator) = (total.refused[reason.index()], all.refused[reason.index()]);
        if target != generator {
            errors.push(format!(
                "refused {}: target counted {target}, generator read {generator}",
                reason.name()
            ));
        }
    }
    errors
}

/// How the generator waits when a turn found nothing to do: it spins for a while (a yield
/// hands the core to whichever thread is runnable, and on a machine with fewer cores than
/// threads the generator then comes back late: that showed as generator lag), then yields.
///
/// A busy generator also yields once every [`YIELD_EVERY_NS`] even when it has work: on a
/// machine with no spare core the engine's control thread and the probe need a core now and
/// then, and otherwise wait for the scheduler to preempt the generator (milliseconds).
#[derive(Default)]
struct Idle {
    turns: u32,
    last_yield_ns: u64,
}

/// Idle turns spent spinning before the generator starts yielding.
const IDLE_SPIN_TURNS: u32 = 512;
/// Longest stretch the generator runs without a yield.
const YIELD_EVERY_NS: u64 = 100_000;

impl Idle {
    #[inline]
    fn wait_if(&mut self, idle: bool, now_ns: u64) {
        if now_ns.saturating_sub(self.last_yield_ns) >= YIELD_EVERY_NS {
            self.last_yield_ns = now_ns;
            std::thread::yield_now();
            return;
        }
        if !idle {
            self.turns = 0;
            return;
        }
        self.turns = self.turns.saturating_add(1);
        if self.turns < IDLE_SPIN_TURNS {
            std::hint::spin_loop();
        } else {
            self.last_yield_ns = now_ns;
            std::thread::yield_now();
        }
    }
}

/// Reads completions and records each against its intended (open loop) send time.
fn collect_open<T: Target>(
    target: &mut T,
    buffer: &mut Vec<Completion>,
    timeline: &Timeline,
    now_ns: u64,
    recorder: &mut Recorder,
) -> usize {
    buffer.clear();
    let read = target.poll_completions(buffer);
    for completion in buffer.iter() {
        let (intended_ns, _, measured) = timeline.at(completion.message.0);
        recorder.completed(completion, measured, now_ns.saturating_sub(intended_ns));
    }
    read
}

#[allow(clippy::too_many_arguments)]
fn drive_open_loop<T: Target>(
    plan: &RunPlan,
    target: &mut T,
    clock: &Clock,
    start_ns: u64,
    recorder: &mut Recorder,
    progress: &mut Progress,
    control: Option<&Control>,
) -> anyhow::Result<()> {
    let timeline = Timeline::new(&plan.phases)?;
    let end_ns = plan.total_ns();
    let mut buffer = Vec::with_capacity(16 * 1024);
    let mut next_ordinal = 0u64;
    // A message `submit` handed back, with its intended send time and whether it is
    // measured: retried before any newer one.
    let mut held: Option<(Message, u64, bool)> = None;
    let mut idle = Idle::default();
    // Set when `submit` handed a message back: the engine's ring credit comes back only as
    // this thread reads completions, so retrying before a read that found some is pointless
    // (and a hot retry loop steals memory bandwidth and CPU from the shards). Other targets
    // get the same rule, so that both are driven the same way.
    let mut credit_blocked = false;
    let mut next_poll_ns = 0;
    loop {
        let now_ns = clock.now_ns() - start_ns;
        // Every message of the run is due before `end_ns`, so the last turn (the one that
        // finds the end has come) still submits all of them; it is not capped at a batch.
        let last_turn = now_ns >= end_ns;
        recorder.set_window(recorded_at(&plan.phases, now_ns));
        let mut sent = 0;
        while (sent < SUBMIT_BATCH_MAX || last_turn) && !credit_blocked {
            let (message, intended_ns, measured) = match held.take() {
                Some(held) => held,
                None => match due(&timeline, next_ordinal, now_ns, plan) {
                    Some(due) => {
                        next_ordinal += 1;
                        due
                    }
                    None => break,
                },
            };
            let payload_bytes = message.payload.len();
            let connection = message.connection;
            match target.submit(message) {
                Ok(()) => {
                    recorder.sent(
                        connection,
                        measured,
                        Some(now_ns.saturating_sub(intended_ns)),
                        payload_bytes,
                    );
                    sent += 1;
                }
                Err(full) if full.stopped => bail!("the target stopped during the run"),
                Err(full) => {
                    recorder.handed_back(connection);
                    held = Some((full.message, intended_ns, measured));
                    credit_blocked = true;
                    break;
                }
            }
        }
        if sent > 0 {
            target.flush();
        }
        if last_turn {
            break;
        }
        let mut read = 0;
        if plan.consumer_poll_ns == 0 || now_ns >= next_poll_ns {
            read = collect_open(target, &mut buffer, &timeline, now_ns, recorder);
            next_poll_ns = now_ns + plan.consumer_poll_ns;
            if read > 0 {
                credit_blocked = false;
            }
        }
        progress.tick(now_ns, recorder_view(recorder), control);
        idle.wait_if(sent == 0 && read == 0, now_ns);
    }
    // Stop sending; collect what is outstanding, within the drain timeout.
    recorder.set_window(false);
    if recorder.split.is_some() {
        // Each unsent message is counted against its server: one pass over them, which is
        // nothing beside the run that left them unsent.
        for ordinal in next_ordinal..timeline.total {
            let (_, connection, _) = timeline.at(ordinal);
            recorder.not_sent(ConnectionId(u64::from(connection)));
        }
        if let Some((message, ..)) = &held {
            recorder.not_sent(message.connection);
        }
    } else {
        recorder.unsent = timeline.total - next_ordinal + u64::from(held.is_some());
    }
    let deadline = Instant::now() + plan.drain_timeout;
    while target.outstanding() > 0 && Instant::now() < deadline {
        let now_ns = clock.now_ns() - start_ns;
        if collect_open(target, &mut buffer, &timeline, now_ns, recorder) == 0 {
            std::thread::yield_now();
        }
    }
    Ok(())
}

/// The open loop's message number `ordinal` if it is due by `now_ns` (none past the last),
/// with its intended send time and whether it is measured.
fn due(
    timeline: &Timeline,
    ordinal: u64,
    now_ns: u64,
    plan: &RunPlan,
) -> Option<(Message, u64, bool)> {
    if ordinal >= timeline.total {
        return None;
    }
    let (intended_ns, connection, measured) = timeline.at(ordinal);
    if intended_ns > now_ns {
        return None;
    }
    let (connection, id) = (ConnectionId(u64::from(connection)), MessageId(ordinal));
    let message = Message::new(connection, id)
        .with_tenant(plan.tenant)
        .with_role(Role::Session)
        .with_priority(priority_of(ordinal, plan.priority_weights.as_ref()))
        .with_payload(plan.payload.payload(connection, id));
    Some((message, intended_ns, measured))
}

#[allow(clippy::too_many_arguments)]
fn drive_closed_loop<T: Target>(
    plan: &RunPlan,
    target: &mut T,
    clock: &Clock,
    start_ns: u64,
    recorder: &mut Recorder,
    progress: &mut Progress,
    control: Option<&Control>,
) -> anyhow::Result<()> {
    let end_ns = plan.total_ns();
    let connections = plan
        .phases
        .iter()
        .map(|phase| phase.connections)
        .max()
        .unwrap_or(1);
    // One slot per message a connection may have outstanding: slot `s` belongs to
    // connection `s / window`. Each message carries its slot in the low bits of its id (the
    // Reply echoes the id), so its send time is found whatever order the target completes
    // a connection's messages in; the high bits count messages, so ids stay unique.
    let window = plan.window.max(1);
    let slots = u64::from(connections) * u64::from(window);
    let slot_bits = u64::BITS - slots.saturating_sub(1).leading_zeros();
    let slot_mask = (1u64 << slot_bits) - 1;
    // Per slot: when its outstanding message was sent (ns from the start).
    let mut sent_at = vec![0u64; slots as usize];
    // A connection's slots are next to each other, so its first `window` messages go out
    // together, and so do those its completions free together.
    let mut ready: VecDeque<u32> = (0..slots as u32).collect();
    let mut buffer = Vec::with_capacity(16 * 1024);
    let mut next_ordinal = 0u64;
    let mut next_poll_ns = 0;
    let mut idle = Idle::default();
    // As in the open loop: after a hand-back, wait for a read that frees credit.
    let mut credit_blocked = false;
    let collect = |target: &mut T,
                   buffer: &mut Vec<Completion>,
                   ready: &mut VecDeque<u32>,
                   sent_at: &[u64],
                   now_ns: u64,
                   recorder: &mut Recorder| {
        buffer.clear();
        let read = target.poll_completions(buffer);
        for completion in buffer.iter() {
            let slot = (completion.message.0 & slot_mask) as u32;
            let sent_ns = sent_at[slot as usize];
            let measured = recorded_at(&plan.phases, sent_ns);
            recorder.completed(completion, measured, now_ns.saturating_sub(sent_ns));
            ready.push_back(slot);
        }
        read
    };
    loop {
        let now_ns = clock.now_ns() - start_ns;
        if now_ns >= end_ns {
            break;
        }
        recorder.set_window(recorded_at(&plan.phases, now_ns));
        let mut sent = 0;
        while let Some(&slot) = ready.front() {
            if sent >= SUBMIT_BATCH_MAX || credit_blocked {
                break;
            }
            let connection = ConnectionId(u64::from(slot / window));
            let id = MessageId(next_ordinal << slot_bits | u64::from(slot));
            let payload = plan.payload.payload(connection, id);
            let payload_bytes = payload.len();
            let message = Message::new(connection, id)
                .with_tenant(plan.tenant)
                .with_role(Role::Session)
                // From the id, as the recorder recomputes it from the completion's.
                .with_priority(priority_of(id.0, plan.priority_weights.as_ref()))
                .with_payload(payload);
            match target.submit(message) {
                Ok(()) => {
                    ready.pop_front();
                    next_ordinal += 1;
                    sent_at[slot as usize] = now_ns;
                    // The turn's window, set above from this `now_ns`.
                    recorder.sent(connection, recorder.window, None, payload_bytes);
                    sent += 1;
                }
                Err(full) if full.stopped => bail!("the target stopped during the run"),
                Err(_) => {
                    recorder.handed_back(connection);
                    credit_blocked = true;
                    break;
                }
            }
        }
        if sent > 0 {
            target.flush();
        }
        let mut read = 0;
        if plan.consumer_poll_ns == 0 || now_ns >= next_poll_ns {
            read = collect(target, &mut buffer, &mut ready, &sent_at, now_ns, recorder);
            next_poll_ns = now_ns + plan.consumer_poll_ns;
            if read > 0 {
                credit_blocked = false;
            }
        }
        progress.tick(now_ns, recorder_view(recorder), control);
        idle.wait_if(sent == 0 && read == 0, now_ns);
    }
    recorder.set_window(false);
    let deadline = Instant::now() + plan.drain_timeout;
    while target.outstanding() > 0 && Instant::now() < deadline {
        let now_ns = clock.now_ns() - start_ns;
        if collect(target, &mut buffer, &mut ready, &sent_at, now_ns, recorder) == 0 {
            std::thread::yield_now();
        }
    }
    Ok(())
}

fn recorder_view(recorder: &Recorder) -> ProgressView<'_> {
    ProgressView {
        submitted_all: recorder.submitted_all,
        all: &recorder.all,
        latency_ns: &recorder.latency_ns,
        lag_ns: &recorder.lag_ns,
    }
}

/// Capacity of an engine with `config` and `service_ns` handlers, msg/s: a closed-loop run
/// over `connections` connections (each keeps one message outstanding, so the shards
/// always have work) for `seconds` after 0.2 s of warm-up, each message carrying
/// `payload_bytes` bytes, counting delivered messages per second.
pub fn calibrate_capacity(
    config: Config,
    connections: u32,
    service_ns: u64,
    payload_bytes: u32,
    seconds: f64,
) -> anyhow::Result<f64> {
    let plan = calibration_plan(connections, service_ns, payload_bytes, seconds);
    check_plan(&plan)?;
    let engine = start_engine(config, service_ns)?;
    calibrated(run_with_target(engine, &plan)?)
}

/// Capacity of a started system, msg/s, measured as [`calibrate_capacity`] measures the
/// engine's (`system` must serve `connections` connections; its handler cost is its own).
pub fn calibrate_capacity_with<S: SystemUnderTest>(
    system: S,
    connections: u32,
    payload_bytes: u32,
    seconds: f64,
) -> anyhow::Result<f64> {
    calibrated(run_with_target(
        system,
        &calibration_plan(connections, 0, payload_bytes, seconds),
    )?)
}

/// The delivered rate of a calibration run, if it reconciled and delivered something.
fn calibrated<S>(result: RunResult<S>) -> anyhow::Result<f64> {
    if !result.reconcile_errors.is_empty() {
        bail!(
            "calibration run did not reconcile: {}",
            result.reconcile_errors.join("; ")
        );
    }
    let capacity = result.delivered_rate();
    if capacity < 1.0 {
        bail!("calibration delivered nothing: cannot derive a capacity");
    }
    Ok(capacity)
}

/// The closed-loop plan of a calibration run. It sends the run's payloads, so that the
/// capacity is that of messages of their size, but does not check echoes (the run does).
/// It sends as tenant 0, the engine's default tenant: it measures the server, not one
/// tenant's cap.
fn calibration_plan(
    connections: u32,
    service_ns: u64,
    payload_bytes: u32,
    seconds: f64,
) -> RunPlan {
    RunPlan {
        phases: vec![
            Phase {
                connections,
                rate: 1,
                duration_ns: 200_000_000,
                recorded: false,
            },
            Phase {
                connections,
                rate: 1,
                duration_ns: (seconds * 1e9) as u64,
                recorded: true,
            },
        ],
        closed_loop: true,
        window: 1,
        service_ns,
        control_probe_ms: 0,
        probe_over_http: false,
        priority_weights: None,
        consumer_poll_ns: 0,
        progress: false,
        drain_timeout: Duration::from_secs(10),
        payload: PayloadPlan {
            bytes: payload_bytes,
            verify_echo: false,
        },
        tenant: TenantId(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_mix_follows_the_weights() {
        let weights = [1, 49, 30, 20];
        let mut counts = [0u32; 4];
        for ordinal in 0..100_000 {
            counts[priority_of(ordinal, Some(&weights)).index()] += 1;
        }
        assert!((800..1_200).contains(&counts[0]), "{counts:?}");
        assert!((48_000..50_000).contains(&counts[1]), "{counts:?}");
        assert!((29_000..31_000).contains(&counts[2]), "{counts:?}");
        assert!((19_000..21_000).contains(&counts[3]), "{counts:?}");
        assert_eq!(priority_of(5, None), Priority::P1);
    }

    /// Completes every message at once, and counts those whose priority is not the one the
    /// recorder will attribute its completion to (recomputed from the completion's id).
    struct Echo {
        weights: [u32; 4],
        completions: Vec<Completion>,
        misattributed: u64,
        submitted: u64,
    }

    impl Target for Echo {
        fn submit(&mut self, message: Message) -> Result<(), spillway::ingress::Full<Message>> {
            self.submitted += 1;
            if priority_of(message.id.0, Some(&self.weights)) != message.priority {
                self.misattributed += 1;
            }
            self.completions
                .push(Completion::of(&message, Outcome::Delivered));
            Ok(())
        }

        fn poll_completions(&mut self, completions: &mut Vec<Completion>) -> usize {
            let count = self.completions.len();
            completions.append(&mut self.completions);
            count
        }

        fn outstanding(&self) -> usize {
            self.completions.len()
        }
    }

    #[test]
    fn a_closed_loop_with_a_window_attributes_each_completion_to_the_priority_it_was_sent_at() {
        let weights = [1, 49, 30, 20];
        let plan = RunPlan {
            phases: vec![Phase {
                connections: 10,
                rate: 1,
                duration_ns: 20_000_000,
                recorded: true,
            }],
            closed_loop: true,
            window: 3,
            service_ns: 0,
            control_probe_ms: 0,
            probe_over_http: false,
            priority_weights: Some(weights),
            consumer_poll_ns: 0,
            progress: false,
            drain_timeout: Duration::from_secs(1),
            payload: PayloadPlan::default(),
            tenant: TenantId(0),
        };
        let mut target = Echo {
            weights,
            completions: Vec::new(),
            misattributed: 0,
            submitted: 0,
        };
        let clock = Clock::new();
        let mut recorder = Recorder::new(Some(weights), PayloadPlan::default());
        let mut progress = Progress::new(false, 0);
        drive_closed_loop(
            &plan,
            &mut target,
            &clock,
            clock.now_ns(),
            &mut recorder,
            &mut progress,
            None,
        )
        .unwrap();
        assert!(target.submitted > 30, "{}", target.submitted);
        assert_eq!(target.misattributed, 0);
    }

    #[test]
    fn the_timeline_spans_phases() {
        let phases = [
            Phase {
                connections: 2,
                rate: 10,
                duration_ns: 1_000_000_000,
                recorded: false,
            },
            Phase {
                connections: 3,
                rate: 20,
                duration_ns: 1_000_000_000,
                recorded: true,
            },
        ];
        let timeline = Timeline::new(&phases).unwrap();
        assert_eq!(timeline.total, 30);
        assert_eq!(timeline.at(9), (900_000_000, 1, false));
        assert_eq!(timeline.at(10), (1_000_000_000, 0, true));
        assert_eq!(timeline.at(11), (1_050_000_000, 1, true));
        assert!(!recorded_at(&phases, 999_999_999));
        assert!(recorded_at(&phases, 1_000_000_000));
    }
}
