//! `fleet-quota`: one tenant's fleet-wide rate enforced two ways on one machine, side by
//! side, at the same limit (issue 16, "against the per-request design"):
//!
//! - **leases** ([`System::Leases`]): the engine's `[global]` with the tenant's
//!   `rate_per_sec` set to the limit, against a real Redis, with production's refresh, lease
//!   and burst. The producers only submit; the shard charges each message to the share that
//!   the engine's lease thread renews from Redis every `refresh_ns`, off the message path.
//! - **per-request** ([`System::PerRequest`]): the algorithm of Envoy's global rate limit
//!   service (envoyproxy/ratelimit, `src/redis/fixed_cache_impl.go`, for one descriptor with
//!   a per-second limit and without its optional local over-limit cache, which is off by
//!   default): before each message, one Redis round trip carrying a pipelined
//!   `INCRBY key 1` and `EXPIRE key 1`, `key` naming the current second of the unix clock
//!   ([`FixedWindowCounter`]). The message is admitted while the count is at most the limit,
//!   and only then submitted, to the same engine without `[global]`; a refused message never
//!   reaches the engine and is counted as refused where Redis said so.
//!
//! Load: an open loop of one tenant's messages at `offered` msg/s in total from `producers`
//! threads, interleaved (message `g` of the whole stream is due `g x 1e9 / offered` ns after
//! the start and belongs to producer `g mod producers`), each with its own ingress and, for
//! per-request, its own Redis connection. One engine per run: 1 shard, a no-op handler, the
//! per-connection rate limit off. A warm-up, then the measured window; the systems alternate
//! (rep 1: leases then per-request, rep 2 the other way round, ...). A leases run starts its
//! load only once the tenant's mode is `Leased`.
//!
//! What a run measures ([`Run`]):
//! - decided msg/s: decisions (admitted or refused) made within the window, per second of
//!   it; admitted msg/s likewise; offered: messages due within the window, per second;
//! - latency, HDR: for each message due within the window, from its due time to its
//!   decision as its producer sees it (Redis's refusal, or the engine's completion read), so
//!   a producer that falls behind its schedule shows as latency (no coordinated omission).
//!   A message still unsent when the window closes enters with its wait until then (a lower
//!   bound) and is counted as behind at the end;
//! - Redis commands and round trips per admitted message within the window: the lease
//!   thread's own count (each of its commands is one round trip), or two commands in one
//!   round trip per decision.
//!
//! Known biases: everything shares the machine's cores (the producers, the shard, the
//! engine's control and lease threads, redis-server): a per-request producer blocked on its
//! round trip leaves its core to redis-server, a leases producer between messages yields
//! it. The per-request side has one request in flight per producer, as a caller that waits
//! for its answer before it sends on; Envoy's service also pipelines the requests of many
//! concurrent callers over its Redis connections, which this does not model (more
//! `--producers` put more round trips in flight). A per-request producer reads its
//! completions between round trips, so it sees an admitted message's completion up to one
//! round trip late.
//! Redis is on loopback: a network between the processes and Redis adds its round-trip
//! time to every per-request decision and nothing to the leased ones.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, ensure, Context};
use hdrhistogram::Histogram;
use spillway::admission::global::LeaseFigures;
use spillway::config::{Config, GlobalTenantConfig};
use spillway::control::{HealthKind, QuotaMode};
use spillway::engine::Engine;
use spillway::ingress::Ingress;
use spillway::message::{ConnectionId, Message, MessageId, TenantId};
use spillway::metrics::{Stats, Tally};
use spillway::outcome::{Completion, Outcome, RefusalReason};
use spillway_loadgen::progress::format_ns;

use crate::stats::spread;

/// Connections per producer: they only spread the engine's per-connection state (one
/// shard, the per-connection rate limit off).
const CONNECTIONS_PER_PRODUCER: u64 = 64;
/// Most messages a leases producer submits in one turn before it reads completions.
const SUBMIT_BATCH_MAX: usize = 256;
/// Longest wait for the tenant's first lease, and for the last completions after the window.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a per-request round trip (or connecting) may take before the run fails.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// Between the producers' start and their first message due: time for every thread to start.
const START_DELAY: Duration = Duration::from_millis(20);
/// The per-request counter's window, in seconds: a per-second limit (Envoy's unit `SECOND`).
const WINDOW_S: u64 = 1;
/// Longest stretch a busy producer runs without a yield: with more runnable threads than
/// cores (producers, the shard, the control and lease threads, redis-server), a producer
/// that never yields leaves the shard waiting for the scheduler to preempt it
/// (milliseconds), as loadgen's generator found.
const YIELD_EVERY_NS: u64 = 100_000;
/// The latency histograms' range: 1 ns to an hour, 3 significant digits.
const LATENCY_MAX_NS: u64 = 3_600_000_000_000;

/// What `fleet-quota` runs.
#[derive(Clone, Debug, clap::Args)]
pub struct Settings {
    /// The Redis both systems use (`redis://HOST:PORT`); scripts/fleet-quota-bench.sh
    /// starts a private one.
    #[arg(long)]
    pub redis_url: String,
    /// Messages per second offered, all producers together (open loop).
    #[arg(long, default_value_t = 150_000)]
    pub offered: u64,
    /// Producer threads, each with its own ingress (and, per-request, its own Redis
    /// connection).
    #[arg(long, default_value_t = 2)]
    pub producers: u32,
    /// The tenant's limit in both systems, messages per second.
    #[arg(long, default_value_t = 50_000)]
    pub limit: u32,
    /// Measured seconds per run.
    #[arg(long, default_value_t = 5.0)]
    pub duration_s: f64,
    /// Unmeasured warm-up seconds before each run's window.
    #[arg(long, default_value_t = 1.0)]
    pub warmup_s: f64,
    /// Runs of each system, alternating between them.
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// The tenant every message is sent as (and whose lease hash Redis keeps).
    #[arg(long, default_value_t = 16)]
    pub tenant: u32,
}

impl Settings {
    /// Checks that the settings describe a run.
    ///
    /// # Errors
    /// When a rate, a count or a duration is out of range.
    pub fn validate(&self) -> anyhow::Result<()> {
        ensure!(self.offered >= 1, "--offered must be at least 1 msg/s");
        ensure!(self.limit >= 1, "--limit must be at least 1 msg/s");
        ensure!(
            (1..=64).contains(&self.producers),
            "--producers must be in 1..=64"
        );
        ensure!(self.reps >= 1, "--reps must be at least 1");
        for (name, seconds) in [
            ("--duration-s", self.duration_s),
            ("--warmup-s", self.warmup_s),
        ] {
            ensure!(
                seconds.is_finite() && (0.0..=3_600.0).contains(&seconds),
                "{name} must be in 0..=3600 s"
            );
        }
        ensure!(self.duration_s > 0.0, "--duration-s must be more than 0");
        Ok(())
    }

    fn window_ns(&self) -> (u64, u64) {
        let warmup_ns = (self.warmup_s * 1e9) as u64;
        (warmup_ns, warmup_ns + (self.duration_s * 1e9) as u64)
    }
}

/// The two ways of enforcing the tenant's limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    /// The engine's `[global]`: leased shares charged on the shard.
    Leases,
    /// One Redis round trip per message before it is submitted (Envoy's algorithm).
    PerRequest,
}

impl System {
    /// Its column heading.
    pub fn name(self) -> &'static str {
        match self {
            System::Leases => "leases",
            System::PerRequest => "per-request",
        }
    }
}

/// Envoy's fixed-window counter in Redis, for one descriptor with a per-second limit: per
/// message, `INCRBY key 1` and `EXPIRE key 1` pipelined in one round trip on one blocking
/// connection, `key` being a prefix and the current second of the unix clock; admitted while
/// the count is at most the limit.
pub struct FixedWindowCounter {
    connection: redis::Connection,
    prefix: String,
    limit: u64,
    /// Reused per message: the key and the pipeline.
    key: String,
    pipeline: redis::Pipeline,
}

impl FixedWindowCounter {
    /// Connects to `url` (TCP_NODELAY, as Go's net package sets by default), with every
    /// later call bounded by a 2 s read and write timeout.
    ///
    /// # Errors
    /// When the URL is not a Redis URL or the server cannot be reached.
    pub fn connect(url: &str, prefix: String, limit: u32) -> anyhow::Result<Self> {
        let info = redis::IntoConnectionInfo::into_connection_info(url)
            .with_context(|| format!("parsing the Redis URL {url:?}"))?;
        let tcp = info.tcp_settings().clone().set_nodelay(true);
        let client = redis::Client::open(info.set_tcp_settings(tcp))?;
        let connection = client
            .get_connection_with_timeout(REDIS_TIMEOUT)
            .with_context(|| format!("connecting to Redis at {url}"))?;
        connection.set_read_timeout(Some(REDIS_TIMEOUT))?;
        connection.set_write_timeout(Some(REDIS_TIMEOUT))?;
        Ok(Self {
            connection,
            prefix,
            limit: u64::from(limit),
            key: String::new(),
            pipeline: redis::Pipeline::new(),
        })
    }

    /// Counts one message: the window (unix second) it was counted in, and whether it is
    /// admitted.
    ///
    /// # Errors
    /// When Redis does not answer in time or answers with an error.
    pub fn charge(&mut self) -> anyhow::Result<(u64, bool)> {
        let second = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .context("the clock is before 1970")?
            .as_secs()
            / WINDOW_S
            * WINDOW_S;
        self.key.clear();
        let _ = write!(self.key, "{}{second}", self.prefix);
        self.pipeline.clear();
        self.pipeline
            .cmd("INCRBY")
            .arg(&self.key)
            .arg(1)
            .cmd("EXPIRE")
            .arg(&self.key)
            .arg(WINDOW_S)
            .ignore();
        let (count,): (u64,) = self
            .pipeline
            .query(&mut self.connection)
            .context("INCRBY and EXPIRE")?;
        Ok((second, count <= self.limit))
    }
}

/// The open loop every producer follows.
#[derive(Clone, Copy, Debug)]
struct Schedule {
    offered: u64,
    producers: u64,
    /// The measured window, ns after the start: `[start, end)`.
    window_start_ns: u64,
    window_end_ns: u64,
}

impl Schedule {
    fn of(settings: &Settings) -> Self {
        let (window_start_ns, window_end_ns) = settings.window_ns();
        Self {
            offered: settings.offered,
            producers: u64::from(settings.producers),
            window_start_ns,
            window_end_ns,
        }
    }

    /// When `producer`'s message `ordinal` is due, ns after the start.
    fn due_ns(&self, producer: u64, ordinal: u64) -> u64 {
        let stream_ordinal =
            u128::from(ordinal) * u128::from(self.producers) + u128::from(producer);
        (stream_ordinal * 1_000_000_000 / u128::from(self.offered)) as u64
    }

    /// Messages of the whole stream due before `ns`: those with
    /// `floor(g x 1e9 / offered) < ns`, i.e. `g < ns x offered / 1e9`.
    fn due_before(&self, ns: u64) -> u64 {
        (u128::from(ns) * u128::from(self.offered)).div_ceil(1_000_000_000) as u64
    }

    fn in_window(&self, ns: u64) -> bool {
        (self.window_start_ns..self.window_end_ns).contains(&ns)
    }

    fn window_s(&self) -> f64 {
        (self.window_end_ns - self.window_start_ns) as f64 / 1e9
    }
}

/// What one producer counted.
struct Counts {
    /// Messages due before the window closed.
    due: u64,
    /// Never sent: still waiting for their turn (or for room in the ring) when the window
    /// closed.
    unsent: u64,
    /// Sent, without a completion after [`SETTLE_TIMEOUT`].
    undecided: u64,
    /// Every completion read from the engine.
    engine: Tally,
    /// Per-request: refused by the counter in Redis (never submitted).
    redis_refused: u64,
    /// Per-request: round trips, whole run and within the window.
    round_trips: u64,
    round_trips_in_window: u64,
    /// Per-request: admitted by the counter, by window (unix second).
    admitted_by_second: BTreeMap<u64, u64>,
    decided_in_window: u64,
    admitted_in_window: u64,
    latency_ns: Histogram<u64>,
}

impl Counts {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            due: 0,
            unsent: 0,
            undecided: 0,
            engine: Tally::default(),
            redis_refused: 0,
            round_trips: 0,
            round_trips_in_window: 0,
            admitted_by_second: BTreeMap::new(),
            decided_in_window: 0,
            admitted_in_window: 0,
            latency_ns: Histogram::new_with_bounds(1, LATENCY_MAX_NS, 3)?,
        })
    }

    fn add(&mut self, other: &Counts) -> anyhow::Result<()> {
        self.due += other.due;
        self.unsent += other.unsent;
        self.undecided += other.undecided;
        self.engine.add(&other.engine);
        self.redis_refused += other.redis_refused;
        self.round_trips += other.round_trips;
        self.round_trips_in_window += other.round_trips_in_window;
        for (second, admitted) in &other.admitted_by_second {
            *self.admitted_by_second.entry(*second).or_default() += admitted;
        }
        self.decided_in_window += other.decided_in_window;
        self.admitted_in_window += other.admitted_in_window;
        self.latency_ns.add(&other.latency_ns)?;
        Ok(())
    }
}

/// One producer thread: its share of the schedule, its ingress, its counts.
struct Producer {
    index: u64,
    schedule: Schedule,
    start: Instant,
    tenant: TenantId,
    ingress: Ingress,
    /// The ordinal of the next message to send.
    next: u64,
    completions: Vec<Completion>,
    /// When this thread last yielded its core, ns after the start.
    last_yield_ns: u64,
    counts: Counts,
}

impl Producer {
    fn now_ns(&self) -> u64 {
        Instant::now()
            .saturating_duration_since(self.start)
            .as_nanos() as u64
    }

    fn is_due(&self, now_ns: u64) -> bool {
        self.schedule.due_ns(self.index, self.next) <= now_ns
    }

    fn take_next(&mut self) -> Message {
        let ordinal = self.next;
        self.next += 1;
        let connection = self.index * CONNECTIONS_PER_PRODUCER + ordinal % CONNECTIONS_PER_PRODUCER;
        Message::new(ConnectionId(connection), MessageId(ordinal)).with_tenant(self.tenant)
    }

    /// Counts the decision on message `ordinal`, made (as seen here) at `decided_ns`.
    fn decide(&mut self, ordinal: u64, decided_ns: u64, admitted: bool) {
        if self.schedule.in_window(decided_ns) {
            self.counts.decided_in_window += 1;
            self.counts.admitted_in_window += u64::from(admitted);
        }
        let due_ns = self.schedule.due_ns(self.index, ordinal);
        if self.schedule.in_window(due_ns) {
            self.counts
                .latency_ns
                .saturating_record(decided_ns.saturating_sub(due_ns).max(1));
        }
    }

    /// Reads the completions that have arrived and counts each; returns how many.
    fn collect(&mut self) -> usize {
        let mut completions = std::mem::take(&mut self.completions);
        let read = self.ingress.poll_completions(&mut completions);
        if read > 0 {
            let now_ns = self.now_ns();
            for completion in completions.drain(..) {
                self.counts.engine.count_completion(completion.outcome);
                let admitted = !matches!(
                    completion.outcome,
                    Outcome::Refused { .. } | Outcome::Shed { .. }
                );
                self.decide(completion.message.0, now_ns, admitted);
            }
        }
        self.completions = completions;
        read
    }

    /// Between turns: yields the core when the turn found nothing to do, or when it has not
    /// for [`YIELD_EVERY_NS`].
    fn pause(&mut self, idle: bool, now_ns: u64) {
        if idle || now_ns.saturating_sub(self.last_yield_ns) >= YIELD_EVERY_NS {
            self.last_yield_ns = now_ns;
            std::thread::yield_now();
        }
    }

    /// Hands `message` to the engine, or hands it back when its ring is full.
    fn submit(&mut self, message: Message) -> anyhow::Result<Option<Message>> {
        match self.ingress.submit(message) {
            Ok(()) => Ok(None),
            Err(full) if full.stopped => bail!("the engine stopped during the run"),
            Err(full) => Ok(Some(full.message)),
        }
    }

    /// Leases: submit what is due (the shard decides), read completions, until the window
    /// closes.
    fn run_leases(mut self) -> anyhow::Result<Counts> {
        let mut handed_back = None;
        loop {
            let now_ns = self.now_ns();
            if now_ns >= self.schedule.window_end_ns {
                break;
            }
            let mut submitted = 0;
            while submitted < SUBMIT_BATCH_MAX {
                let message = match handed_back.take() {
                    Some(message) => message,
                    None if self.is_due(now_ns) => self.take_next(),
                    None => break,
                };
                handed_back = self.submit(message)?;
                if handed_back.is_some() {
                    break;
                }
                submitted += 1;
            }
            let idle = self.collect() == 0 && submitted == 0;
            self.pause(idle, now_ns);
        }
        self.finish(handed_back.map(|message: Message| message.id.0))
    }

    /// Per-request: for each message due, one round trip to the counter in Redis, then
    /// submit it if admitted; read completions; until the window closes.
    fn run_per_request(mut self, mut counter: FixedWindowCounter) -> anyhow::Result<Counts> {
        loop {
            let now_ns = self.now_ns();
            if now_ns >= self.schedule.window_end_ns {
                break;
            }
            let due = self.is_due(now_ns);
            if due {
                let message = self.take_next();
                let (second, admitted) = counter.charge()?;
                let answered_ns = self.now_ns();
                self.counts.round_trips += 1;
                if self.schedule.in_window(answered_ns) {
                    self.counts.round_trips_in_window += 1;
                }
                if admitted {
                    *self.counts.admitted_by_second.entry(second).or_default() += 1;
                    let mut unsent = Some(message);
                    while let Some(message) = unsent.take() {
                        unsent = self.submit(message)?;
                        if unsent.is_some() {
                            // The ring is full: completions free it.
                            self.collect();
                            std::thread::yield_now();
                        }
                    }
                } else {
                    self.counts.redis_refused += 1;
                    self.decide(message.id.0, answered_ns, false);
                }
            }
            let idle = self.collect() == 0 && !due;
            self.pause(idle, now_ns);
        }
        self.finish(None)
    }

    /// After the window: counts what was never sent (with its wait so far as its latency, a
    /// lower bound), reads the completions still owed, and hands the counts back.
    fn finish(mut self, handed_back: Option<u64>) -> anyhow::Result<Counts> {
        let end_ns = self.schedule.window_end_ns;
        let mut never_sent: Vec<u64> = handed_back.into_iter().collect();
        let mut ordinal = self.next;
        while self.schedule.due_ns(self.index, ordinal) < end_ns {
            never_sent.push(ordinal);
            ordinal += 1;
        }
        self.counts.due = ordinal;
        self.counts.unsent = never_sent.len() as u64;
        for ordinal in never_sent {
            let due_ns = self.schedule.due_ns(self.index, ordinal);
            if self.schedule.in_window(due_ns) {
                self.counts
                    .latency_ns
                    .saturating_record((end_ns - due_ns).max(1));
            }
        }
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        while self.ingress.outstanding() > 0 && Instant::now() < deadline {
            if self.collect() == 0 {
                std::thread::yield_now();
            }
        }
        self.counts.undecided = self.ingress.outstanding() as u64;
        Ok(self.counts)
    }
}

/// Latency percentiles of one run, ns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Latency {
    /// Median.
    pub p50_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p999_ns: u64,
    /// Largest.
    pub max_ns: u64,
}

/// Counts over a whole run, warm-up and drain included: what the bounds and the
/// reconciliation are checked on.
#[derive(Clone, Debug)]
pub struct WholeRun {
    /// Messages due before the window closed.
    pub due: u64,
    /// Admitted: by the engine (leases), by Redis and then the engine (per-request).
    pub admitted: u64,
    /// Refused: by the engine (leases), by Redis or the engine (per-request).
    pub refused: u64,
    /// Never sent (the producers were behind their schedule when the window closed).
    pub unsent: u64,
    /// Sent without a completion after the drain's timeout.
    pub undecided: u64,
    /// From the first message due to the end of the last producer's drain, ns: every
    /// admission happened within it.
    pub elapsed_ns: u64,
    /// Per-request: admitted by the counter in Redis, by window (unix second).
    pub admitted_by_second: BTreeMap<u64, u64>,
    /// Per-request: round trips to Redis.
    pub redis_round_trips: u64,
    /// The engine's own counts at shutdown.
    pub engine: Tally,
    /// Leases: the burst the tenant's bucket allows, ns of its share (`global.burst_ns`).
    pub burst_ns: Option<u64>,
}

/// One run of one system.
#[derive(Clone, Debug)]
pub struct Run {
    /// Which system.
    pub system: System,
    /// Which repetition, from 1.
    pub rep: usize,
    /// Messages due within the window, per second of it.
    pub offered_per_sec: f64,
    /// Decisions (admitted or refused) made within the window, per second of it.
    pub decided_per_sec: f64,
    /// Admissions made within the window, per second of it.
    pub admitted_per_sec: f64,
    /// From each message's due time to its decision, for the messages due within the
    /// window; `None` when there were none.
    pub latency: Option<Latency>,
    /// Messages due within the run and never sent when the window closed.
    pub behind_at_end: u64,
    /// Whole run: messages the engine refused or shed for another reason than the tenant's
    /// limit (a cap, after a stall let a backlog build up).
    pub refused_otherwise: u64,
    /// Whole run: Redis calls that failed (leases: renewals that timed out or erred, each
    /// retried; per-request: none, a failure ends the run).
    pub redis_failures: u64,
    /// Admissions within the window.
    pub admitted_in_window: u64,
    /// Redis commands sent within the window.
    pub redis_commands: u64,
    /// Redis round trips within the window.
    pub redis_round_trips: u64,
    /// The whole run's counts.
    pub whole: WholeRun,
    /// Where the counts do not reconcile, or the run did not measure what it should;
    /// empty when all is well.
    pub problems: Vec<String>,
}

impl Run {
    /// Redis commands per admitted message within the window.
    pub fn commands_per_admitted(&self) -> Option<f64> {
        per(self.redis_commands, self.admitted_in_window)
    }

    /// Redis round trips per admitted message within the window.
    pub fn round_trips_per_admitted(&self) -> Option<f64> {
        per(self.redis_round_trips, self.admitted_in_window)
    }
}

fn per(count: u64, admitted: u64) -> Option<f64> {
    (admitted > 0).then(|| count as f64 / admitted as f64)
}

/// The engine of one run: 1 shard, a no-op handler, only the tenant's limit (leases) or
/// none at all (per-request) besides the caps and the breaker.
pub fn engine_config(system: System, settings: &Settings) -> Config {
    let mut config = Config::default();
    config.shards = 1;
    config.levels.rate_limit = false;
    if system == System::Leases {
        config.global.redis = vec![settings.redis_url.clone()];
        config.global.tenants = vec![GlobalTenantConfig::new(
            TenantId(settings.tenant),
            settings.limit,
        )];
    }
    config
}

/// Waits until the tenant holds a lease with a share above zero.
fn await_lease(engine: &Engine, tenant: TenantId) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let health = engine.control().health(HealthKind::Full)?;
        let mode = health
            .global
            .iter()
            .find(|quota| quota.tenant == tenant)
            .map(|quota| quota.mode);
        if mode == Some(QuotaMode::Leased) {
            return Ok(());
        }
        ensure!(
            started.elapsed() < SETTLE_TIMEOUT,
            "no lease for tenant {} after {SETTLE_TIMEOUT:?} (mode {mode:?}): is Redis reachable?",
            tenant.0
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn sleep_until(deadline: Instant) {
    let now = Instant::now();
    if deadline > now {
        std::thread::sleep(deadline - now);
    }
}

/// What the producers of one run counted, merged, and what the run measured around them.
struct Driven {
    counts: Counts,
    /// The lease thread's Redis commands within the window.
    commands_in_window: u64,
    /// From the first message due to the end of the last producer's drain, ns.
    elapsed_ns: u64,
}

/// Starts the producers against `engine` (each with its ingress and, per-request, its
/// counter in Redis), counts the lease thread's Redis commands within the window, and
/// merges what the producers counted once they are done.
fn drive(system: System, settings: &Settings, engine: &Engine) -> anyhow::Result<Driven> {
    let tenant = TenantId(settings.tenant);
    let run_id = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    let mut counters = Vec::new();
    let mut ingresses = Vec::new();
    for _ in 0..settings.producers {
        ingresses.push(engine.ingress().context("taking an ingress")?);
        if system == System::PerRequest {
            // As Envoy's keys: a prefix naming the limit, then the window's start.
            let prefix = format!("fleet-quota_tenant_{}_{run_id}_", tenant.0);
            counters.push(FixedWindowCounter::connect(
                &settings.redis_url,
                prefix,
                settings.limit,
            )?);
        }
    }
    let schedule = Schedule::of(settings);
    let control = engine.control();
    let commands = || control.global_quotas().stats.figures().redis_operations;
    let start = Instant::now() + START_DELAY;
    std::thread::scope(|scope| {
        let mut counters = counters.into_iter();
        let mut producers = Vec::new();
        for (index, ingress) in ingresses.into_iter().enumerate() {
            let producer = Producer {
                index: index as u64,
                schedule,
                start,
                tenant,
                ingress,
                next: 0,
                completions: Vec::new(),
                last_yield_ns: 0,
                counts: Counts::new()?,
            };
            let counter = counters.next();
            producers.push(
                std::thread::Builder::new()
                    .name(format!("fleet-quota-producer-{index}"))
                    .spawn_scoped(scope, move || match counter {
                        None => producer.run_leases(),
                        Some(counter) => producer.run_per_request(counter),
                    })
                    .context("starting a producer thread")?,
            );
        }
        sleep_until(start + Duration::from_nanos(schedule.window_start_ns));
        let commands_before = commands();
        sleep_until(start + Duration::from_nanos(schedule.window_end_ns));
        let commands_in_window = commands() - commands_before;
        let mut counts = Counts::new()?;
        for producer in producers {
            let producer_counts = producer
                .join()
                .map_err(|_| anyhow!("a producer thread panicked"))??;
            counts.add(&producer_counts)?;
        }
        Ok(Driven {
            counts,
            commands_in_window,
            elapsed_ns: start.elapsed().as_nanos() as u64,
        })
    })
}

/// Where the producers' counts, the schedule and the engine's own counts disagree, or the
/// run did not measure what it should (refusals for other reasons, a lease lost).
fn reconcile(
    system: System,
    schedule: &Schedule,
    counts: &Counts,
    stats: &Stats,
    leases: &LeaseFigures,
) -> Vec<String> {
    let engine = &stats.total;
    let mut problems = Vec::new();
    if !stats.reconciles() {
        problems.push("the engine's own counters do not reconcile".to_owned());
    }
    if counts.engine != *engine {
        problems.push(format!(
            "the producers read {:?}, the engine counted {engine:?}",
            counts.engine
        ));
    }
    if counts.undecided > 0 {
        problems.push(format!(
            "{} messages had no completion {SETTLE_TIMEOUT:?} after the window",
            counts.undecided
        ));
    }
    let due_expected = schedule.due_before(schedule.window_end_ns);
    if counts.due != due_expected {
        problems.push(format!(
            "the producers counted {} messages due, the schedule has {due_expected}",
            counts.due
        ));
    }
    let decided = counts.engine.submitted + counts.redis_refused;
    if counts.due != decided + counts.unsent + counts.undecided {
        problems.push(format!(
            "{} due != {decided} decided + {} unsent + {} undecided",
            counts.due, counts.unsent, counts.undecided
        ));
    }
    match system {
        System::Leases => {
            // A failed renewal alone leaves the share in place until the lease runs out,
            // and the next try usually succeeds first; a fallback means it did not.
            if leases.fallbacks > 0 {
                problems.push(format!(
                    "Redis failed during the run, the tenant left its lease: {leases:?}"
                ));
            }
        }
        System::PerRequest => {
            if counts.round_trips != decided {
                problems.push(format!(
                    "{} round trips for {decided} decisions",
                    counts.round_trips
                ));
            }
            let admitted_by_redis: u64 = counts.admitted_by_second.values().sum();
            if admitted_by_redis != counts.engine.submitted {
                problems.push(format!(
                    "Redis admitted {admitted_by_redis}, the engine was given {}",
                    counts.engine.submitted
                ));
            }
        }
    }
    problems
}

/// The engine's refusals and sheds for other reasons than the tenant's limit.
fn refused_otherwise(system: System, engine: &Tally) -> u64 {
    let for_the_limit = match system {
        System::Leases => engine.refused[RefusalReason::GlobalQuotaExceeded.index()],
        // Its refusals for the limit are Redis's, and never reach the engine.
        System::PerRequest => 0,
    };
    engine.refused_total() - for_the_limit + engine.shed_total()
}

/// Runs one system once: a fresh engine, the producers, the counts.
///
/// # Errors
/// When the settings are invalid, the engine cannot start, the tenant gets no lease,
/// Redis cannot be reached or fails during a per-request run, or a producer fails.
pub fn run_once(system: System, settings: &Settings, rep: usize) -> anyhow::Result<Run> {
    settings.validate()?;
    let config = engine_config(system, settings);
    let burst_ns = (system == System::Leases).then_some(config.global.burst_ns);
    let engine = Engine::builder()
        .config(config)
        .handler(|_: &Message| Ok(()))
        .start()
        .context("starting the engine")?;
    if system == System::Leases {
        await_lease(&engine, TenantId(settings.tenant))?;
    }
    let driven = drive(system, settings, &engine)?;
    let leases = engine.control().global_quotas().stats.figures();
    let stats = engine.shutdown();

    let schedule = Schedule::of(settings);
    let counts = &driven.counts;
    let problems = reconcile(system, &schedule, counts, &stats, &leases);
    let window_s = schedule.window_s();
    let due_in_window =
        schedule.due_before(schedule.window_end_ns) - schedule.due_before(schedule.window_start_ns);
    let histogram = &counts.latency_ns;
    let latency = (!histogram.is_empty()).then(|| Latency {
        p50_ns: histogram.value_at_quantile(0.5),
        p99_ns: histogram.value_at_quantile(0.99),
        p999_ns: histogram.value_at_quantile(0.999),
        max_ns: histogram.max(),
    });
    let (redis_commands, redis_round_trips) = match system {
        // Each command of the lease thread is a round trip of its own.
        System::Leases => (driven.commands_in_window, driven.commands_in_window),
        System::PerRequest => (
            2 * counts.round_trips_in_window,
            counts.round_trips_in_window,
        ),
    };
    Ok(Run {
        system,
        rep,
        offered_per_sec: due_in_window as f64 / window_s,
        decided_per_sec: counts.decided_in_window as f64 / window_s,
        admitted_per_sec: counts.admitted_in_window as f64 / window_s,
        latency,
        behind_at_end: counts.unsent,
        refused_otherwise: refused_otherwise(system, &stats.total),
        redis_failures: leases.failed,
        admitted_in_window: counts.admitted_in_window,
        redis_commands,
        redis_round_trips,
        whole: WholeRun {
            due: counts.due,
            admitted: stats.total.admitted,
            refused: counts.redis_refused + stats.total.refused_total(),
            unsent: counts.unsent,
            undecided: counts.undecided,
            elapsed_ns: driven.elapsed_ns,
            admitted_by_second: counts.admitted_by_second.clone(),
            redis_round_trips: counts.round_trips,
            engine: stats.total,
            burst_ns,
        },
        problems,
    })
}

/// Every run of a comparison, and the machine it ran on.
#[derive(Clone, Debug)]
pub struct Comparison {
    /// What ran.
    pub settings: Settings,
    /// Cores, CPU model, build.
    pub machine: String,
    /// The load average (1, 5, 15 min) before the first run and after the last.
    pub load_before: String,
    /// See `load_before`.
    pub load_after: String,
    /// `redis_version` of the server.
    pub redis_version: String,
    /// Every run, in the order run.
    pub runs: Vec<Run>,
}

impl Comparison {
    /// Every run's problems, each named by its system and rep.
    pub fn problems(&self) -> Vec<String> {
        self.runs
            .iter()
            .flat_map(|run| {
                run.problems
                    .iter()
                    .map(move |problem| format!("{} rep {}: {problem}", run.system.name(), run.rep))
            })
            .collect()
    }
}

/// The server's `redis_version`, from `INFO server`.
fn redis_version(url: &str) -> anyhow::Result<String> {
    let client = redis::Client::open(url).with_context(|| format!("parsing {url:?}"))?;
    let mut connection = client
        .get_connection_with_timeout(REDIS_TIMEOUT)
        .with_context(|| format!("connecting to Redis at {url}"))?;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query(&mut connection)
        .context("INFO server")?;
    Ok(info
        .lines()
        .find_map(|line| line.trim().strip_prefix("redis_version:"))
        .unwrap_or("unknown")
        .to_owned())
}

/// The first three fields of `/proc/loadavg`.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(
        |_| "unknown".to_owned(),
        |text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        },
    )
}

/// Runs every rep of both systems, alternating; `progress` gets a line before and after
/// each run.
///
/// # Errors
/// When the settings are invalid, Redis cannot be reached, or a run fails.
pub fn run(settings: &Settings, mut progress: impl FnMut(&str)) -> anyhow::Result<Comparison> {
    settings.validate()?;
    let redis_version = redis_version(&settings.redis_url)?;
    let machine = format!(
        "{} cores, {}, {}",
        crate::machine::cores(),
        crate::machine::cpu_model().unwrap_or_else(|| "CPU model unknown".to_owned()),
        if crate::machine::DEBUG_BUILD {
            "DEBUG build: these figures mean nothing"
        } else {
            "optimised build"
        }
    );
    let load_before = load_average();
    let mut runs = Vec::new();
    for rep in 1..=settings.reps {
        let order = if rep % 2 == 1 {
            [System::Leases, System::PerRequest]
        } else {
            [System::PerRequest, System::Leases]
        };
        for system in order {
            progress(&format!("rep {rep}/{}: {}", settings.reps, system.name()));
            let run = run_once(system, settings, rep)
                .with_context(|| format!("{} rep {rep}", system.name()))?;
            progress(&format!(
                "  decided {} msg/s, admitted {} msg/s, p99 {}, behind at end {}{}",
                rate_text(run.decided_per_sec),
                rate_text(run.admitted_per_sec),
                run.latency
                    .map_or_else(|| "n/a".to_owned(), |latency| format_ns(latency.p99_ns)),
                run.behind_at_end,
                if run.problems.is_empty() {
                    String::new()
                } else {
                    format!("; PROBLEMS: {}", run.problems.join("; "))
                }
            ));
            runs.push(run);
        }
    }
    Ok(Comparison {
        settings: settings.clone(),
        machine,
        load_before,
        load_after: load_average(),
        redis_version,
        runs,
    })
}

/// `150.0K`.
fn rate_text(per_sec: f64) -> String {
    format!("{:.1}K", per_sec / 1e3)
}

fn latency_text(ns: f64) -> String {
    format_ns(ns as u64)
}

fn count_text(count: f64) -> String {
    format!("{count:.0}")
}

/// Commands or round trips per admitted message: `1 per 3981` below one in ten.
fn per_admitted_text(value: f64) -> String {
    if value > 0.0 && value < 0.1 {
        format!("1 per {:.0}", 1.0 / value)
    } else {
        format!("{value:.2}")
    }
}

/// A ratio to three significant digits (`0.964x`, `1.00x`, `3193x`).
fn ratio_text(ratio: f64) -> String {
    if ratio <= 0.0 || !ratio.is_finite() {
        return format!("{ratio}x");
    }
    let decimals = (2 - ratio.log10().floor() as i64).clamp(0, 9) as usize;
    format!("{ratio:.decimals$}x")
}

/// One row of the table.
struct Row {
    name: &'static str,
    value: fn(&Run) -> Option<f64>,
    text: fn(f64) -> String,
}

const ROWS: [Row; 12] = [
    Row {
        name: "offered msg/s",
        value: |run| Some(run.offered_per_sec),
        text: rate_text,
    },
    Row {
        name: "decided msg/s (admitted + refused)",
        value: |run| Some(run.decided_per_sec),
        text: rate_text,
    },
    Row {
        name: "admitted msg/s",
        value: |run| Some(run.admitted_per_sec),
        text: rate_text,
    },
    Row {
        name: "latency p50",
        value: |run| run.latency.map(|latency| latency.p50_ns as f64),
        text: latency_text,
    },
    Row {
        name: "latency p99",
        value: |run| run.latency.map(|latency| latency.p99_ns as f64),
        text: latency_text,
    },
    Row {
        name: "latency p99.9",
        value: |run| run.latency.map(|latency| latency.p999_ns as f64),
        text: latency_text,
    },
    Row {
        name: "latency max",
        value: |run| run.latency.map(|latency| latency.max_ns as f64),
        text: latency_text,
    },
    Row {
        name: "behind at end (due, never sent)",
        value: |run| Some(run.behind_at_end as f64),
        text: count_text,
    },
    Row {
        name: "refused by the engine otherwise (a cap; whole run)",
        value: |run| Some(run.refused_otherwise as f64),
        text: count_text,
    },
    Row {
        name: "Redis calls failed (whole run)",
        value: |run| Some(run.redis_failures as f64),
        text: count_text,
    },
    Row {
        name: "Redis commands per admitted message",
        value: Run::commands_per_admitted,
        text: per_admitted_text,
    },
    Row {
        name: "Redis round trips per admitted message",
        value: Run::round_trips_per_admitted,
        text: per_admitted_text,
    },
];

/// The table: a row per figure, median [min–max] over the reps for each system, and the
/// ratio per-request / leases (per rep, then summarised).
pub fn table(comparison: &Comparison) -> String {
    let settings = &comparison.settings;
    let mut out = format!(
        "fleet-quota: one tenant limited to {} msg/s, {} msg/s offered (open loop) by {} producer threads into one engine (1 shard, no-op handler); {} s measured after {} s warm-up; {} reps per system, alternating: median [min–max]\n\
         machine: {}; load average {} before, {} after\n\
         redis-server {} at {}\n\n",
        settings.limit,
        settings.offered,
        settings.producers,
        settings.duration_s,
        settings.warmup_s,
        settings.reps,
        comparison.machine,
        comparison.load_before,
        comparison.load_after,
        comparison.redis_version,
        settings.redis_url,
    );
    out.push_str("| | leases | per-request | per-request / leases |\n|---|---|---|---|\n");
    let runs_of = |system: System| -> Vec<&Run> {
        let mut runs: Vec<&Run> = comparison
            .runs
            .iter()
            .filter(|run| run.system == system)
            .collect();
        runs.sort_by_key(|run| run.rep);
        runs
    };
    let (leases, per_request) = (runs_of(System::Leases), runs_of(System::PerRequest));
    for row in &ROWS {
        let values = |runs: &[&Run]| -> Vec<Option<f64>> {
            runs.iter().map(|run| (row.value)(run)).collect()
        };
        let (ours, theirs) = (values(&leases), values(&per_request));
        let ratios: Vec<f64> = ours
            .iter()
            .zip(&theirs)
            .filter_map(|(ours, theirs)| match (ours, theirs) {
                (Some(ours), Some(theirs)) if *ours > 0.0 => Some(theirs / ours),
                _ => None,
            })
            .collect();
        let known = |values: &[Option<f64>]| values.iter().flatten().copied().collect::<Vec<_>>();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            row.name,
            spread(&known(&ours), row.text),
            spread(&known(&theirs), row.text),
            spread(&ratios, ratio_text)
        );
    }
    out.push_str(
        "\ndecided: admitted or refused within the window. latency: from each message's due time to its decision as its producer sees it (Redis's refusal, or the engine's completion), HDR, generator lag included; a message never sent enters with its wait until the window closed (a lower bound). Redis commands: the lease thread's (one round trip each), or INCRBY + EXPIRE pipelined in one round trip per message.\n",
    );
    let problems = comparison.problems();
    if !problems.is_empty() {
        out.push_str("\nPROBLEMS:\n");
        for problem in problems {
            let _ = writeln!(out, "- {problem}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(offered: u64, producers: u32) -> Settings {
        Settings {
            redis_url: "redis://127.0.0.1:1".to_owned(),
            offered,
            producers,
            limit: 10,
            duration_s: 2.0,
            warmup_s: 1.0,
            reps: 1,
            tenant: 1,
        }
    }

    #[test]
    fn the_schedule_interleaves_the_producers_at_the_offered_rate() {
        let schedule = Schedule::of(&settings(4, 2));
        // Stream ordinals 0, 1, 2, 3 are due at 0, 250, 500, 750 ms; even ones are
        // producer 0's.
        assert_eq!(schedule.due_ns(0, 0), 0);
        assert_eq!(schedule.due_ns(1, 0), 250_000_000);
        assert_eq!(schedule.due_ns(0, 1), 500_000_000);
        assert_eq!(schedule.due_ns(1, 1), 750_000_000);
        // Due before 1 s: 0, 250, 500, 750 ms; before 1 ns: only the first.
        assert_eq!(schedule.due_before(1_000_000_000), 4);
        assert_eq!(schedule.due_before(1_000_000_001), 5);
        assert_eq!(schedule.due_before(1), 1);
        assert_eq!(schedule.due_before(0), 0);
        assert!(schedule.in_window(1_000_000_000));
        assert!(!schedule.in_window(3_000_000_000));
        assert_eq!(schedule.window_s(), 2.0);
    }

    #[test]
    fn due_before_counts_what_due_ns_schedules() {
        // A rate that does not divide a second: the closed form agrees with counting.
        let schedule = Schedule::of(&settings(7, 3));
        for ns in [0, 1, 142_857_142, 142_857_143, 999_999_999, 3_000_000_000] {
            let counted = (0..3)
                .map(|producer| {
                    (0..)
                        .take_while(|&ordinal| schedule.due_ns(producer, ordinal) < ns)
                        .count() as u64
                })
                .sum::<u64>();
            assert_eq!(schedule.due_before(ns), counted, "at {ns} ns");
        }
    }

    #[test]
    fn settings_out_of_range_are_refused() {
        assert!(settings(1, 1).validate().is_ok());
        assert!(settings(0, 1).validate().is_err());
        assert!(settings(1, 0).validate().is_err());
        let mut zero_window = settings(1, 1);
        zero_window.duration_s = 0.0;
        assert!(zero_window.validate().is_err());
        let mut not_a_number = settings(1, 1);
        not_a_number.warmup_s = f64::NAN;
        assert!(not_a_number.validate().is_err());
    }

    #[test]
    fn figures_are_written_for_reading() {
        assert_eq!(rate_text(149_987.0), "150.0K");
        assert_eq!(per_admitted_text(2.0), "2.00");
        assert_eq!(per_admitted_text(0.000_25), "1 per 4000");
        assert_eq!(spread(&[3.0, 1.0, 2.0], count_text), "2 [1–3]");
        assert_eq!(spread(&[5.0, 5.0], count_text), "5");
        assert_eq!(spread(&[], count_text), "n/a");
        assert_eq!(ratio_text(0.964_2), "0.964x");
        assert_eq!(ratio_text(1.0), "1.00x");
        assert_eq!(ratio_text(3_193.289), "3193x");
        assert_eq!(ratio_text(0.003_104), "0.00310x");
        assert_eq!(ratio_text(0.0), "0x");
    }
}
