//! The `e2e` run: spillway and the tokio/tower [baseline](crate::baseline), one after the
//! other in one process, driven by loadgen's generator and measured the same way (the same
//! schedules, coordinated-omission-corrected latency, generator lag, reconciliation and
//! per-run report), then side by side with the ratios.
//!
//! Two measurements, each run for spillway and then for the baseline:
//!
//! - **(a) max throughput** at `connections` (15,000 by default): a closed loop, as loadgen's
//!   `calibrate_capacity` measures capacity. Each connection keeps one message outstanding
//!   and sends the next as soon as the previous one completes, whatever the outcome, so the
//!   system always has work; the figure is delivered messages per second over the measured
//!   phase, by the clock. Refusals count against it: a refused message is resent at once,
//!   and only deliveries count.
//! - **(b) open loop** at `rate` (500K msg/s by default) over the same connections: each
//!   connection sends on its own schedule; achieved rate, refusals, latency of delivered
//!   messages from their intended send time (p50/p99/p99.9/max), generator lag p99.
//!
//! Ratios: (a) spillway delivered/s over the baseline's; (b) the baseline's p99 over
//! spillway's. The goals (issue #6): at least 3x the baseline's throughput in (a), a lower
//! p99 than the baseline in (b); the report says whether this run met them.
//!
//! Both systems get the same cores: the baseline's runtime has as many workers as spillway
//! has shards ([`BaselineSettings::matching`]); spillway also runs its control thread and,
//! with the probe on, a probe thread asking for a health check every `control_probe_ms`.
//!
//! Known bias: the generator is one thread in the same process as the system it drives and
//! shares the machine's cores with it; on a machine with two cores, the generator, the one
//! shard (or worker) and everything else share two cores. Runs are sequential, so
//! whichever runs second finds caches and the allocator warmed by the first; the warm-up
//! phase of each run is there to even that out.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use spillway::config::Config;
use spillway::metrics::Stats;
use spillway::outcome::RefusalReason;
use spillway_loadgen::cli::{parse_value, split_flag};
use spillway_loadgen::generator::{run_inproc, run_with_target, Phase, RunPlan, RunResult};
use spillway_loadgen::progress::format_ns;
use spillway_loadgen::report::{self, RunInfo, RunReport, NO_CONTROL_PLANE};
use spillway_loadgen::target::TargetStats;

use crate::baseline::{Baseline, BaselineSettings, BaselineStats};
use crate::report::nonzero_counts;

/// Connections of both measurements unless `--connections` says otherwise (SPEC 8's
/// saturation scenario).
pub const CONNECTIONS_DEFAULT: u32 = 15_000;
/// Offered rate of the open-loop measurement unless `--rate` says otherwise.
pub const RATE_DEFAULT: u64 = 500_000;
/// Measured seconds of each run unless `--duration` says otherwise.
pub const DURATION_S_DEFAULT: f64 = 5.0;
/// Warm-up seconds (run, not recorded) before each measured phase.
pub const WARMUP_S_DEFAULT: f64 = 1.0;
/// Spillway's health-check probe interval, ms (loadgen's default); 0 disables it.
pub const CONTROL_PROBE_MS_DEFAULT: u64 = 10;
/// `--tcp`'s closed-loop windows (messages outstanding per connection): one at a time, and
/// two depths of pipelining.
pub const TCP_WINDOWS_DEFAULT: [u32; 3] = [1, 4, 16];
/// The deepest window `--windows` accepts.
pub const WINDOW_MAX: u32 = 1_000;
/// Most time a run waits for outstanding completions after its last send (loadgen's).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest measured phase or warm-up `e2e` accepts, s: the whole run (four runs, each
/// with its warm-up and drain) stays bounded.
pub const PHASE_S_MAX: f64 = 600.0;
/// The goal for (a): spillway's max throughput over the baseline's.
pub const THROUGHPUT_RATIO_GOAL: f64 = 3.0;

/// The usage text for `e2e`.
pub const USAGE: &str = "\
usage: e2e [--duration SECS] [--warmup SECS] [--service-ns NS] [--shards N]
           [--connections N] [--rate MSGS_PER_S] [--control-probe-ms MS] [--json]
           [--tcp] [--spillway HOST:PORT]
       e2e serve-baseline --listen ADDR [...]   (the tokio TCP twin, as baseline-serve)

Runs spillway, then a tokio/tower baseline (tokio multi-thread runtime, governor keyed
limiter per connection, bounded tokio mpsc, tower load-shed + concurrency-limit), driven by
loadgen's generator and measured the same way:
  (a) max throughput: closed loop at N connections, delivered msg/s;
  (b) open loop at RATE msg/s over N connections: achieved rate, refused, latency
      p50/p99/p99.9/max, generator lag p99.
Prints both rows and the ratios (spillway/baseline throughput, baseline p99/spillway p99).
Four runs, each WARMUP + DURATION seconds plus the drain; progress goes to stderr.

  --duration SECS        measured seconds of each run (default 5)
  --warmup SECS          warm-up seconds before each, run but not recorded (default 1)
  --service-ns NS        simulated handler cost per message, busy wait (default 0, as
                         loadgen's saturation scenario)
  --shards N             spillway's shards and the baseline's worker threads (default:
                         spillway's automatic choice for this machine)
  --connections N        simulated connections (default 15000)
  --rate MSGS_PER_S      offered rate of the open-loop run (default 500000)
  --control-probe-ms MS  spillway's health-check probe interval (default 10; 0 disables)
  --json                 print one JSON object instead of the table
  --tcp                  the TCP rows instead: loadgen's TCP target (real sockets, one
                         per connection) against the tokio twin (baseline-serve, started
                         by e2e as a child process, as `e2e serve-baseline`) and, with
                         --spillway, against spillway's server; --shards sets the twin's
                         workers, --service-ns its handler cost
  --spillway HOST:PORT   with --tcp (implies it): also measure `spillway serve` running
                         at HOST:PORT, with its own settings (start it with the same
                         handler cost); without it only the twin is measured
  --windows W1,W2,...    with --tcp (implies it): the closed loop's messages outstanding per
                         connection, one run per window and server (default 1,4,16); max
                         throughput is each server's best; the twin's concurrency limit
                         is raised to connections x window, so it sheds nothing for lack
                         of permits and its capacity, not its limit, is measured
  -h, --help             this text
";

/// What `e2e` runs.
#[derive(Clone, Debug, PartialEq)]
pub struct E2eSettings {
    /// Simulated connections of both measurements.
    pub connections: u32,
    /// Offered rate of the open-loop measurement, msg/s.
    pub rate: u64,
    /// Measured seconds of each run.
    pub duration_s: f64,
    /// Warm-up seconds before each.
    pub warmup_s: f64,
    /// Handler cost per message, ns.
    pub service_ns: u64,
    /// Spillway's shards (and the baseline's workers); `None`: spillway's automatic choice.
    pub shards: Option<usize>,
    /// Spillway's health-check probe interval, ms; 0 disables it.
    pub control_probe_ms: u64,
    /// `--tcp`: the closed loop's windows (messages outstanding per connection).
    pub tcp_windows: Vec<u32>,
}

impl Default for E2eSettings {
    fn default() -> Self {
        Self {
            connections: CONNECTIONS_DEFAULT,
            rate: RATE_DEFAULT,
            duration_s: DURATION_S_DEFAULT,
            warmup_s: WARMUP_S_DEFAULT,
            service_ns: 0,
            shards: None,
            control_probe_ms: CONTROL_PROBE_MS_DEFAULT,
            tcp_windows: TCP_WINDOWS_DEFAULT.to_vec(),
        }
    }
}

/// What the command line asked for.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Print the usage text.
    Help,
    /// Run both measurements.
    Run {
        /// What to run.
        settings: E2eSettings,
        /// One JSON object instead of the table.
        json: bool,
    },
    /// Run both measurements over TCP ([`crate::e2e_tcp`]).
    RunTcp {
        /// What to run.
        settings: E2eSettings,
        /// Where `spillway serve` runs, if it is to be measured.
        spillway: Option<std::net::SocketAddr>,
        /// One JSON object instead of the table.
        json: bool,
    },
}

fn parse_number<T: std::str::FromStr>(flag: &str, value: Option<String>) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    let value = value.with_context(|| format!("{flag} needs a value"))?;
    parse_value(flag, &value)
}

fn parse_seconds(flag: &str, value: Option<String>, allow_zero: bool) -> anyhow::Result<f64> {
    let seconds: f64 = parse_number(flag, value)?;
    if !seconds.is_finite() || seconds < 0.0 || (!allow_zero && seconds == 0.0) {
        bail!("{flag}: must be a positive number of seconds");
    }
    if seconds > PHASE_S_MAX {
        bail!("{flag}: at most {PHASE_S_MAX} seconds");
    }
    Ok(seconds)
}

impl Command {
    /// Parses `e2e`'s arguments (without the program name).
    ///
    /// # Errors
    /// On an unknown flag, a missing or malformed value, or a value out of range.
    pub fn parse(args: impl IntoIterator<Item = String>) -> anyhow::Result<Self> {
        let mut settings = E2eSettings::default();
        let mut json = false;
        let mut tcp = false;
        let mut spillway = None;
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (flag, inline) = split_flag(&arg);
            let takes_value = !matches!(flag.as_str(), "--json" | "--tcp" | "--help" | "-h");
            if !takes_value && inline.is_some() {
                bail!("{flag} takes no value");
            }
            let value = if takes_value {
                inline.or_else(|| args.next())
            } else {
                None
            };
            match flag.as_str() {
                "--json" => json = true,
                "--tcp" => tcp = true,
                "--spillway" => {
                    let value = value.with_context(|| format!("{flag} needs a value"))?;
                    spillway =
                        Some(spillway_loadgen::tcp::parse_target(&value).context("--spillway")?);
                }
                "--help" | "-h" => return Ok(Command::Help),
                "--duration" => settings.duration_s = parse_seconds(&flag, value, false)?,
                "--warmup" => settings.warmup_s = parse_seconds(&flag, value, true)?,
                "--service-ns" => settings.service_ns = parse_number(&flag, value)?,
                "--shards" => {
                    let shards: usize = parse_number(&flag, value)?;
                    if shards == 0 || shards > spillway::config::SHARDS_MAX {
                        bail!("--shards: must be in 1..={}", spillway::config::SHARDS_MAX);
                    }
                    settings.shards = Some(shards);
                }
                "--connections" => {
                    settings.connections = parse_number(&flag, value)?;
                    if settings.connections == 0 {
                        bail!("--connections: must be at least 1");
                    }
                }
                "--rate" => {
                    settings.rate = parse_number(&flag, value)?;
                    if settings.rate == 0 {
                        bail!("--rate: must be at least 1 message per second");
                    }
                }
                "--control-probe-ms" => settings.control_probe_ms = parse_number(&flag, value)?,
                "--windows" => {
                    let value = value.with_context(|| format!("{flag} needs a value"))?;
                    settings.tcp_windows = value
                        .split(',')
                        .map(|part| parse_number(&flag, Some(part.trim().to_string())))
                        .collect::<anyhow::Result<_>>()?;
                    if settings
                        .tcp_windows
                        .iter()
                        .any(|&window| window == 0 || window > WINDOW_MAX)
                    {
                        bail!("--windows: each window must be 1 to {WINDOW_MAX} messages");
                    }
                    tcp = true;
                }
                other => bail!("unknown flag {other:?} (see --help)"),
            }
        }
        if tcp || spillway.is_some() {
            return Ok(Command::RunTcp {
                settings,
                spillway,
                json,
            });
        }
        Ok(Command::Run { settings, json })
    }
}

/// Spillway's configuration for the run: the default (production) profile, with the shard
/// count from the settings.
pub fn spillway_config(settings: &E2eSettings) -> anyhow::Result<Config> {
    let mut config = Config::default();
    if let Some(shards) = settings.shards {
        config.shards = shards;
    }
    config.validate().context("spillway settings")?;
    Ok(config)
}

/// The plan of one run: `warmup_s` unrecorded, then `duration_s` recorded, at
/// `connections`; closed loop (the rate is then unused) or open loop at `rate`.
pub fn plan(settings: &E2eSettings, closed_loop: bool, control_probe_ms: u64) -> RunPlan {
    let rate = if closed_loop { 1 } else { settings.rate };
    let mut phases = Vec::with_capacity(2);
    if settings.warmup_s > 0.0 {
        phases.push(Phase {
            connections: settings.connections,
            rate,
            duration_ns: (settings.warmup_s * 1e9) as u64,
            recorded: false,
        });
    }
    phases.push(Phase {
        connections: settings.connections,
        rate,
        duration_ns: (settings.duration_s * 1e9) as u64,
        recorded: true,
    });
    RunPlan {
        phases,
        closed_loop,
        window: 1,
        service_ns: settings.service_ns,
        control_probe_ms,
        priority_weights: None,
        consumer_poll_ns: 0,
        progress: true,
        drain_timeout: DRAIN_TIMEOUT,
    }
}

/// Both measurements, both systems.
pub struct E2eReport {
    /// What ran.
    pub settings: E2eSettings,
    /// Cores this process may use.
    pub cores: usize,
    /// Spillway's configuration.
    pub config: Config,
    /// The baseline's settings.
    pub baseline: BaselineSettings,
    /// (a) spillway.
    pub max_spillway: RunResult<Stats>,
    /// (a) the baseline.
    pub max_baseline: RunResult<BaselineStats>,
    /// (b) spillway.
    pub open_spillway: RunResult<Stats>,
    /// (b) the baseline.
    pub open_baseline: RunResult<BaselineStats>,
}

/// Runs (a) then (b), spillway first each time; `progress` gets a line before each run.
pub fn run(settings: &E2eSettings, mut progress: impl FnMut(&str)) -> anyhow::Result<E2eReport> {
    let config = spillway_config(settings)?;
    let cores = report::cores();
    let baseline = BaselineSettings::matching(&config, cores, settings.service_ns);
    let closed = plan(settings, true, settings.control_probe_ms);
    let open = plan(settings, false, settings.control_probe_ms);

    progress("(a) max throughput, closed loop: spillway");
    let max_spillway = run_inproc(config.clone(), &closed).context("(a) spillway")?;
    progress("(a) max throughput, closed loop: baseline");
    let max_baseline =
        run_with_target(Baseline::start(baseline)?, &closed).context("(a) baseline")?;
    progress(&format!(
        "(b) open loop at {} msg/s: spillway",
        settings.rate
    ));
    let open_spillway = run_inproc(config.clone(), &open).context("(b) spillway")?;
    progress(&format!(
        "(b) open loop at {} msg/s: baseline",
        settings.rate
    ));
    let open_baseline =
        run_with_target(Baseline::start(baseline)?, &open).context("(b) baseline")?;
    Ok(E2eReport {
        settings: settings.clone(),
        cores,
        config,
        baseline,
        max_spillway,
        max_baseline,
        open_spillway,
        open_baseline,
    })
}

pub(crate) fn p99(histogram: &Histogram<u64>) -> Option<u64> {
    (!histogram.is_empty()).then(|| histogram.value_at_quantile(0.99))
}

fn us(ns: u64) -> f64 {
    (ns as f64 / 1e3 * 10.0).round() / 10.0
}

pub(crate) fn ratio(numerator: f64, denominator: f64) -> Option<f64> {
    (denominator > 0.0 && numerator.is_finite()).then(|| numerator / denominator)
}

pub(crate) fn refused_reasons<S>(result: &RunResult<S>) -> String {
    let reasons: Vec<String> = nonzero_counts(
        RefusalReason::ALL.map(RefusalReason::name),
        &result.measured.refused,
    )
    .collect();
    if reasons.is_empty() {
        "none".to_string()
    } else {
        reasons.join(", ")
    }
}

/// One run's figures for the side-by-side JSON.
pub(crate) fn summary<S: TargetStats>(result: &RunResult<S>) -> Value {
    let latency = &result.latency_ns;
    let quantile = |q: f64| (!latency.is_empty()).then(|| us(latency.value_at_quantile(q)));
    let control_p99 = result
        .control
        .as_ref()
        .and_then(|probe| p99(&probe.latency_ns));
    json!({
        "workers": result.shards,
        "delivered_rate": result.delivered_rate().round(),
        "achieved_rate": result.achieved_rate().round(),
        "submitted": result.submitted,
        "delivered": result.measured.delivered,
        "refused": result.measured.refused_total(),
        "refused_by_reason": RefusalReason::ALL
            .iter()
            .map(|reason| (reason.name().to_string(), json!(result.measured.refused[reason.index()])))
            .collect::<serde_json::Map<String, Value>>(),
        "shed": result.measured.shed_total(),
        "failed": result.measured.failed_total(),
        "latency_us": {
            "p50": quantile(0.50),
            "p99": quantile(0.99),
            "p999": quantile(0.999),
            "max": (!latency.is_empty()).then(|| us(latency.max())),
        },
        "generator_lag_p99_us": p99(&result.lag_ns).map(us),
        "generator_fell_behind": result.generator_fell_behind(),
        "unsent": result.unsent,
        "ring_full_retries": result.ring_full_retries,
        "lost": result.lost,
        "control_p99_us": control_p99.map(us),
        "control_note": result.control.is_none().then_some(NO_CONTROL_PLANE),
        "reconciled": result.reconcile_errors.is_empty(),
        "reconcile_errors": result.reconcile_errors,
    })
}

impl E2eReport {
    /// (a): spillway's delivered rate over the baseline's; `None` when the baseline
    /// delivered nothing.
    pub fn throughput_ratio(&self) -> Option<f64> {
        ratio(
            self.max_spillway.delivered_rate(),
            self.max_baseline.delivered_rate(),
        )
    }

    /// (b): the baseline's p99 latency over spillway's; `None` when either delivered
    /// nothing.
    pub fn p99_ratio(&self) -> Option<f64> {
        let spillway = p99(&self.open_spillway.latency_ns)?;
        let baseline = p99(&self.open_baseline.latency_ns)?;
        ratio(baseline as f64, spillway as f64)
    }

    /// Whether all four runs reconciled.
    pub fn reconciled(&self) -> bool {
        self.max_spillway.reconcile_errors.is_empty()
            && self.max_baseline.reconcile_errors.is_empty()
            && self.open_spillway.reconcile_errors.is_empty()
            && self.open_baseline.reconcile_errors.is_empty()
    }

    fn spillway_shards(&self) -> usize {
        self.max_spillway.shards
    }

    fn threads_line(&self) -> String {
        format!(
            "spillway: {} shard thread(s), pinned {}, + 1 control thread{}; baseline: tokio multi-thread runtime, {} worker thread(s), not pinned; each driven by 1 generator thread",
            self.spillway_shards(),
            self.max_spillway.pinned,
            if self.settings.control_probe_ms > 0 {
                format!(
                    " + 1 probe thread (health check every {} ms)",
                    self.settings.control_probe_ms
                )
            } else {
                String::new()
            },
            self.baseline.stack.workers,
        )
    }

    fn baseline_line(&self) -> String {
        let rate = match self.baseline.stack.rate {
            Some(rate) => format!(
                "governor keyed limiter {}/s burst {} per connection",
                rate.per_connection_per_sec, rate.burst
            ),
            None => "no rate limiter (spillway's level 1 is off)".to_string(),
        };
        format!(
            "baseline: bounded tokio mpsc {} slots in, {} back; {rate}; tower load_shed + concurrency_limit({})",
            self.baseline.submission_capacity,
            self.baseline.completion_capacity,
            self.baseline.stack.concurrency_limit
        )
    }

    /// The side-by-side table.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let line = "-".repeat(100);
        let settings = &self.settings;
        let _ = writeln!(out, "{line}");
        let _ = writeln!(
            out,
            "e2e: spillway and a tokio/tower baseline, same generator (loadgen), measured the same way"
        );
        let _ = writeln!(
            out,
            "machine: {} core(s); {} connections; handler cost {} ns; each run {:.1} s warm-up + {:.1} s measured",
            self.cores, settings.connections, settings.service_ns, settings.warmup_s, settings.duration_s
        );
        let _ = writeln!(out, "{}", self.threads_line());
        let _ = writeln!(out, "{}", self.baseline_line());
        let _ = writeln!(out, "{line}");
        let _ = writeln!(
            out,
            "(a) max throughput: closed loop, each connection keeps one message outstanding; delivered msg/s over the measured phase"
        );
        let _ = writeln!(
            out,
            "{:<10}{:>14}{:>12}{:>11}{:>11}{:>11}{:>11}  reconciled",
            "target", "delivered/s", "refused", "p50", "p99", "p99.9", "max"
        );
        self.closed_row(&mut out, "spillway", &self.max_spillway);
        self.closed_row(&mut out, "baseline", &self.max_baseline);
        let _ = writeln!(
            out,
            "  refused by reason: spillway {}; baseline {}",
            refused_reasons(&self.max_spillway),
            refused_reasons(&self.max_baseline)
        );
        let _ = writeln!(
            out,
            "  latency in a closed loop runs from the actual send (no schedule to be late for)"
        );
        match self.throughput_ratio() {
            Some(ratio) => {
                let _ = writeln!(
                    out,
                    "spillway / baseline max throughput: {ratio:.2}x (goal >= {THROUGHPUT_RATIO_GOAL}x: {})",
                    if ratio >= THROUGHPUT_RATIO_GOAL { "met" } else { "not met" }
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "spillway / baseline max throughput: n/a (the baseline delivered nothing)"
                );
            }
        }
        let _ = writeln!(out, "{line}");
        let _ = writeln!(
            out,
            "(b) open loop: {} msg/s offered over {} connections; latency of delivered messages from their intended send time",
            settings.rate, settings.connections
        );
        let _ = writeln!(
            out,
            "{:<10}{:>12}{:>12}{:>10}{:>11}{:>11}{:>11}{:>11}{:>11}{:>12}  reconciled",
            "target",
            "achieved/s",
            "delivered/s",
            "refused",
            "p50",
            "p99",
            "p99.9",
            "max",
            "lag p99",
            "health p99"
        );
        self.open_row(&mut out, "spillway", &self.open_spillway);
        self.open_row(&mut out, "baseline", &self.open_baseline);
        let _ = writeln!(
            out,
            "  refused by reason: spillway {}; baseline {}",
            refused_reasons(&self.open_spillway),
            refused_reasons(&self.open_baseline)
        );
        let _ = writeln!(out, "  baseline health p99: {NO_CONTROL_PLANE}");
        match self.p99_ratio() {
            Some(ratio) => {
                let _ = writeln!(
                    out,
                    "baseline p99 / spillway p99: {ratio:.2}x (goal: spillway lower, ratio > 1: {})",
                    if ratio > 1.0 { "met" } else { "not met" }
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "baseline p99 / spillway p99: n/a (a target delivered nothing)"
                );
            }
        }
        for (name, result) in [
            ("spillway (b)", self.open_spillway.generator_fell_behind()),
            ("baseline (b)", self.open_baseline.generator_fell_behind()),
        ] {
            if result {
                let _ = writeln!(out, "{}", fell_behind_warning(name));
            }
        }
        let _ = writeln!(out, "{line}");
        if self.reconciled() {
            let _ = writeln!(
                out,
                "counts reconcile in all four runs: every submitted message has one completion, and each target's own counters agree"
            );
        } else {
            let _ = writeln!(out, "ERROR: counts do not reconcile:");
            for (name, errors) in [
                ("(a) spillway", &self.max_spillway.reconcile_errors),
                ("(a) baseline", &self.max_baseline.reconcile_errors),
                ("(b) spillway", &self.open_spillway.reconcile_errors),
                ("(b) baseline", &self.open_baseline.reconcile_errors),
            ] {
                for error in errors {
                    let _ = writeln!(out, "  {name}: {error}");
                }
            }
        }
        out
    }

    fn closed_row<S>(&self, out: &mut String, name: &str, result: &RunResult<S>) {
        let _ = writeln!(
            out,
            "{name:<10}{}  {}",
            closed_cells(result),
            yes_no(result.reconcile_errors.is_empty()),
        );
    }

    fn open_row<S>(&self, out: &mut String, name: &str, result: &RunResult<S>) {
        let health = match &result.control {
            Some(probe) => p99(&probe.latency_ns).map_or_else(|| "-".to_string(), format_ns),
            None => "n/a".to_string(),
        };
        let _ = writeln!(
            out,
            "{name:<10}{}{health:>12}  {}",
            open_cells(result),
            yes_no(result.reconcile_errors.is_empty()),
        );
    }

    /// The whole run as one JSON object: settings, both rows of each measurement, the
    /// ratios and goals, and each run's full loadgen report under `detail`.
    pub fn to_json(&self) -> Value {
        let settings = &self.settings;
        let info = |target: &str, scenario: &str| RunInfo {
            scenario: scenario.to_string(),
            target: target.to_string(),
            profile: self.config.profile.name().to_string(),
            capacity: None,
            overload: None,
        };
        let throughput_ratio = self.throughput_ratio();
        let p99_ratio = self.p99_ratio();
        json!({
            "cores": self.cores,
            "connections": settings.connections,
            "service_ns": settings.service_ns,
            "duration_s": settings.duration_s,
            "warmup_s": settings.warmup_s,
            "threads": self.threads_line(),
            "spillway": {
                "profile": self.config.profile.name(),
                "shards": self.spillway_shards(),
                "pinned": self.max_spillway.pinned,
                "control_probe_ms": settings.control_probe_ms,
            },
            "baseline": {
                "runtime": "tokio multi-thread",
                "workers": self.baseline.stack.workers,
                "submission_capacity": self.baseline.submission_capacity,
                "completion_capacity": self.baseline.completion_capacity,
                "concurrency_limit": self.baseline.stack.concurrency_limit,
                "rate_per_connection_per_sec": self.baseline.stack.rate.map(|rate| rate.per_connection_per_sec.get()),
                "burst": self.baseline.stack.rate.map(|rate| rate.burst.get()),
                "control_plane": Value::Null,
                "control_note": NO_CONTROL_PLANE,
            },
            "max_throughput": {
                "method": "closed loop: each connection keeps one message outstanding and resends as soon as it completes; delivered msg/s over the measured phase",
                "spillway": summary(&self.max_spillway),
                "baseline": summary(&self.max_baseline),
                "ratio_spillway_over_baseline": throughput_ratio,
                "goal_ratio_at_least": THROUGHPUT_RATIO_GOAL,
                "goal_met": throughput_ratio.map(|ratio| ratio >= THROUGHPUT_RATIO_GOAL),
            },
            "open_loop": {
                "offered_rate": settings.rate,
                "spillway": summary(&self.open_spillway),
                "baseline": summary(&self.open_baseline),
                "ratio_p99_baseline_over_spillway": p99_ratio,
                "goal": "spillway's p99 lower than the baseline's (ratio > 1)",
                "goal_met": p99_ratio.map(|ratio| ratio > 1.0),
            },
            "reconciled": self.reconciled(),
            "detail": {
                "note": "each run's full loadgen report; peak_rss_bytes there is this whole process's peak, over all runs so far",
                "max_throughput_spillway": RunReport::new(&info("inproc", "e2e-max-throughput"), &self.max_spillway),
                "max_throughput_baseline": RunReport::new(&info("baseline", "e2e-max-throughput"), &self.max_baseline),
                "open_loop_spillway": RunReport::new(&info("inproc", "e2e-open-loop"), &self.open_spillway),
                "open_loop_baseline": RunReport::new(&info("baseline", "e2e-open-loop"), &self.open_baseline),
            },
        })
    }
}

/// A closed-loop row's figures: delivered msg/s, refused, then the latency cells.
pub(crate) fn closed_cells<S>(result: &RunResult<S>) -> String {
    format!(
        "{:>14.0}{:>12}{}",
        result.delivered_rate(),
        result.measured.refused_total(),
        latency_cells(&result.latency_ns)
    )
}

/// An open-loop row's figures: achieved and delivered msg/s, refused, the latency cells,
/// then the generator's lag p99.
pub(crate) fn open_cells<S>(result: &RunResult<S>) -> String {
    let lag = p99(&result.lag_ns).map_or_else(|| "-".to_string(), format_ns);
    format!(
        "{:>12.0}{:>12.0}{:>10}{}{lag:>11}",
        result.achieved_rate(),
        result.delivered_rate(),
        result.measured.refused_total(),
        latency_cells(&result.latency_ns)
    )
}

/// The warning for a run whose generator did not keep its schedule.
pub(crate) fn fell_behind_warning(run: &str) -> String {
    format!("WARNING: {run}: the generator fell behind its schedule (lag p99 over 1 ms or messages unsent): the load was not offered as scheduled")
}

pub(crate) fn latency_cells(histogram: &Histogram<u64>) -> String {
    if histogram.is_empty() {
        return format!("{:>11}{:>11}{:>11}{:>11}", "-", "-", "-", "-");
    }
    format!(
        "{:>11}{:>11}{:>11}{:>11}",
        format_ns(histogram.value_at_quantile(0.50)),
        format_ns(histogram.value_at_quantile(0.99)),
        format_ns(histogram.value_at_quantile(0.999)),
        format_ns(histogram.max()),
    )
}

pub(crate) fn yes_no(value: bool) -> &'static str {
    if value {
        "yes"
    } else {
        "NO"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|arg| arg.to_string()).collect()
    }

    #[test]
    fn flags_parse_and_bad_ones_are_named() {
        let Command::Run { settings, json } = Command::parse(args(&[
            "--duration",
            "3",
            "--warmup=0.5",
            "--shards",
            "2",
            "--connections",
            "100",
            "--rate",
            "20000",
            "--service-ns",
            "500",
            "--json",
        ]))
        .unwrap() else {
            panic!("expected a run");
        };
        assert!(json);
        assert_eq!(settings.duration_s, 3.0);
        assert_eq!(settings.warmup_s, 0.5);
        assert_eq!(settings.shards, Some(2));
        assert_eq!(settings.connections, 100);
        assert_eq!(settings.rate, 20_000);
        assert_eq!(settings.service_ns, 500);
        assert_eq!(settings.tcp_windows, TCP_WINDOWS_DEFAULT);
        let Command::RunTcp { settings, .. } =
            Command::parse(args(&["--windows", "1, 8,64"])).unwrap()
        else {
            panic!("--windows implies --tcp");
        };
        assert_eq!(settings.tcp_windows, [1, 8, 64]);
        assert_eq!(Command::parse(args(&["-h"])).unwrap(), Command::Help);
        for bad in [
            &["--bogus"][..],
            &["--duration"],
            &["--duration", "0"],
            &["--duration", "1e9"],
            &["--rate", "fast"],
            &["--shards", "0"],
            &["--connections", "0"],
            &["--json=1"],
            &["--windows", "0"],
            &["--windows", "4,,8"],
            &["--windows", "1001"],
        ] {
            assert!(Command::parse(args(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tcp_flags_choose_the_tcp_rows() {
        let Command::RunTcp {
            settings,
            spillway,
            json,
        } = Command::parse(args(&["--tcp", "--connections", "10"])).unwrap()
        else {
            panic!("expected a tcp run");
        };
        assert_eq!(settings.connections, 10);
        assert_eq!(spillway, None);
        assert!(!json);
        // --spillway implies --tcp.
        let Command::RunTcp { spillway, .. } =
            Command::parse(args(&["--spillway", "tcp://127.0.0.1:7878"])).unwrap()
        else {
            panic!("expected a tcp run");
        };
        assert_eq!(spillway, Some("127.0.0.1:7878".parse().unwrap()));
        assert!(Command::parse(args(&["--spillway"])).is_err());
        assert!(Command::parse(args(&["--spillway", "nowhere"])).is_err());
        assert!(Command::parse(args(&["--tcp=1"])).is_err());
        assert!(matches!(
            Command::parse(args(&["--rate", "5"])).unwrap(),
            Command::Run { .. }
        ));
    }

    #[test]
    fn plans_have_a_warm_up_and_a_measured_phase() {
        let settings = E2eSettings {
            duration_s: 2.0,
            warmup_s: 0.5,
            ..E2eSettings::default()
        };
        let closed = plan(&settings, true, 10);
        assert!(closed.closed_loop);
        assert_eq!(closed.phases.len(), 2);
        assert!(!closed.phases[0].recorded && closed.phases[1].recorded);
        assert_eq!(closed.total_ns(), 2_500_000_000);
        let open = plan(&settings, false, 0);
        assert_eq!(open.phases[1].rate, RATE_DEFAULT);
        assert_eq!(open.phases[1].connections, CONNECTIONS_DEFAULT);
        let no_warmup = plan(
            &E2eSettings {
                warmup_s: 0.0,
                ..settings
            },
            false,
            0,
        );
        assert_eq!(no_warmup.phases.len(), 1);
    }
}
