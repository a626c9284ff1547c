//! What a run reports: one type, [`RunReport`], built from the generator's result and written
//! either as the human table ([`RunReport::to_table`]) or as exactly one JSON object (its
//! `Serialize`, every field SPEC 8 asks for).
//!
//! A run split among several servers reports the total as that object, with the same
//! object for each server in its `targets` array (the table: one block per server, then the
//! total's).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::{Serialize, Serializer};
use spillway::control::CommandLatency;
use spillway::metrics::Tally;
use spillway::metrics::LATENCY_BUCKET_BOUNDS_NS;
use spillway::outcome::{DropReason, FailureReason, RefusalReason, ShedReason};

use crate::generator::RunResult;
use crate::progress::format_ns;
use crate::target::TargetStats;
use crate::tcp::target_name;
use crate::tcp_stats::TcpStats;

/// What reports say where a target has no control plane, instead of printing zeros.
pub const NO_CONTROL_PLANE: &str =
    "not applicable: the target has no control plane (no health checks, no breaker)";

/// What reports say of the server-side settings of a TCP run.
pub const REMOTE_NOTE: &str = "shards, pinning and handler cost are the server's own settings, not visible over the protocol: null here";

/// The rule behind `generator_fell_behind`.
pub const FELL_BEHIND_RULE: &str = "open loop only: generator lag p99 > 1 ms, or unsent > 0";

/// What `latency_us` measures.
pub const LATENCY_OF: &str = "delivered messages of the measured phase, from intended send time (open loop) or send time (closed loop) to the generator reading the completion";

/// Peak resident set size of this process, bytes: `VmHWM` from `/proc/self/status`, or
/// `None` where that cannot be read (not Linux).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Cores this process may run on.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |cores| cores.get())
}

/// Prints a report on stdout: its JSON object, pretty, when `json`; otherwise `table()`.
/// What every binary of the workspace that reports does at its end.
///
/// # Errors
/// When the JSON cannot be encoded or stdout cannot be written.
pub fn print(
    report: &impl Serialize,
    json: bool,
    table: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    if json {
        return print_json(report);
    }
    let mut stdout = std::io::stdout().lock();
    write!(stdout, "{}", table()).context("writing to stdout")?;
    stdout.flush().context("writing to stdout")
}

/// Prints `report`'s JSON object on stdout, pretty.
///
/// # Errors
/// When the JSON cannot be encoded or stdout cannot be written.
pub fn print_json(report: &impl Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(report).context("encoding the JSON")?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}").context("writing to stdout")?;
    stdout.flush().context("writing to stdout")
}

/// A time kept in nanoseconds; JSON reports write it in microseconds, rounded to 0.1 µs,
/// and tables in the `1.23 ms` style.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct LatencyNs(pub u64);

impl LatencyNs {
    /// Microseconds, rounded to 0.1 µs, as the JSON has it.
    pub fn us(self) -> f64 {
        (self.0 as f64 / 1e3 * 10.0).round() / 10.0
    }

    /// `1.23 ms` style.
    pub fn text(self) -> String {
        format_ns(self.0)
    }
}

impl Serialize for LatencyNs {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(self.us())
    }
}

/// A latency distribution: how many, and its percentiles. All zero when there were none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Percentiles {
    /// Values recorded.
    pub count: u64,
    /// Median.
    pub p50: LatencyNs,
    /// 90th percentile; `None` (and not written) where the source has none (the engine's
    /// own command latency).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p90: Option<LatencyNs>,
    /// 99th percentile.
    pub p99: LatencyNs,
    /// 99.9th percentile.
    pub p999: LatencyNs,
    /// The largest.
    pub max: LatencyNs,
}

impl Percentiles {
    /// The percentiles of an HDR histogram of nanoseconds.
    pub fn of(histogram: &Histogram<u64>) -> Self {
        let at = |quantile| {
            LatencyNs(if histogram.is_empty() {
                0
            } else {
                histogram.value_at_quantile(quantile)
            })
        };
        Self {
            count: histogram.len(),
            p50: at(0.50),
            p90: Some(at(0.90)),
            p99: at(0.99),
            p999: at(0.999),
            max: LatencyNs(histogram.max()),
        }
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// A table row: the name, then p50, p90, p99, p99.9 and max, or `(none)`.
    fn table_row(&self, out: &mut String, name: &str) {
        if self.is_empty() {
            let _ = writeln!(out, "{name:<22}{:>10}", "(none)");
            return;
        }
        let _ = writeln!(
            out,
            "{name:<22}{:>10} {:>10} {:>10} {:>10} {:>10}",
            self.p50.text(),
            self.p90.map_or_else(|| "-".to_string(), LatencyNs::text),
            self.p99.text(),
            self.p999.text(),
            self.max.text(),
        );
    }
}

impl From<CommandLatency> for Percentiles {
    fn from(latency: CommandLatency) -> Self {
        Self {
            count: latency.count,
            p50: LatencyNs(latency.p50_ns),
            p90: None,
            p99: LatencyNs(latency.p99_ns),
            p999: LatencyNs(latency.p999_ns),
            max: LatencyNs(latency.max_ns),
        }
    }
}

/// Counts by reason, in the reasons' own order, written as one object keyed by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReasonCounts(Vec<(&'static str, u64)>);

impl ReasonCounts {
    /// `names` paired with `counts`.
    pub fn new(names: impl IntoIterator<Item = &'static str>, counts: &[u64]) -> Self {
        Self(names.into_iter().zip(counts.iter().copied()).collect())
    }

    /// Each reason's name and count.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.0.iter().copied()
    }

    /// `name count` for each reason counted at least once.
    pub fn nonzero(&self) -> impl Iterator<Item = String> + '_ {
        self.iter()
            .filter(|&(_, count)| count > 0)
            .map(|(name, count)| format!("{name} {count}"))
    }
}

impl Serialize for ReasonCounts {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

/// Every outcome of the measured messages, with the reasons behind each kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OutcomeCounts {
    /// Admitted.
    pub admitted: u64,
    /// Refused, all reasons.
    pub refused: u64,
    /// Refused, by reason.
    pub refused_by_reason: ReasonCounts,
    /// Shed, all reasons.
    pub shed: u64,
    /// Shed, by reason.
    pub shed_by_reason: ReasonCounts,
    /// Delivered.
    pub delivered: u64,
    /// Failed, all reasons.
    pub failed: u64,
    /// Failed, by reason.
    pub failed_by_reason: ReasonCounts,
    /// Cancelled.
    pub cancelled: u64,
    /// Dropped, all reasons.
    pub dropped: u64,
    /// Dropped, by reason.
    pub dropped_by_reason: ReasonCounts,
}

impl From<&Tally> for OutcomeCounts {
    fn from(tally: &Tally) -> Self {
        Self {
            admitted: tally.admitted,
            refused: tally.refused_total(),
            refused_by_reason: ReasonCounts::new(
                RefusalReason::ALL.map(RefusalReason::name),
                &tally.refused,
            ),
            shed: tally.shed_total(),
            shed_by_reason: ReasonCounts::new(ShedReason::ALL.map(ShedReason::name), &tally.shed),
            delivered: tally.delivered,
            failed: tally.failed_total(),
            failed_by_reason: ReasonCounts::new(
                FailureReason::ALL.map(FailureReason::name),
                &tally.failed,
            ),
            cancelled: tally.cancelled,
            dropped: tally.dropped_total(),
            dropped_by_reason: ReasonCounts::new(
                DropReason::ALL.map(DropReason::name),
                &tally.dropped,
            ),
        }
    }
}

/// The whole run's counts, warm-up included.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct WholeRun {
    /// Messages submitted.
    pub submitted: u64,
    /// Delivered.
    pub delivered: u64,
    /// Refused.
    pub refused: u64,
    /// Shed.
    pub shed: u64,
    /// Admitted.
    pub admitted: u64,
}

/// One priority's results (priority-mix runs).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct PriorityReport {
    /// Measured messages submitted at it.
    pub submitted: u64,
    /// Delivered.
    pub delivered: u64,
    /// Deliveries per second of the measured phase.
    pub goodput_rate: f64,
    /// Refused.
    pub refused: u64,
    /// Shed.
    pub shed: u64,
    /// Latency of its delivered messages.
    pub latency_us: Percentiles,
}

/// How the run offered its load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoopMode {
    /// Each connection sends on its own schedule.
    OpenLoop,
    /// Each connection sends the next message when one completes.
    ClosedLoop,
}

/// Context a run's report needs besides its result.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunInfo {
    /// Scenario name.
    pub scenario: String,
    /// `inproc`, `tcp://HOST:PORT`, or another target's name.
    pub target: String,
    /// The engine profile's name.
    pub profile: String,
    /// Capacity measured by a calibration run, msg/s, when the rate was derived from it.
    #[serde(rename = "capacity_rate")]
    pub capacity: Option<f64>,
    /// Times capacity offered, when it was.
    #[serde(rename = "overload_factor")]
    pub overload: Option<f64>,
}

/// A run's report: what the table prints and what the JSON object holds. For a target
/// without a control plane the control fields are `None` (`null`) and `control_note` says
/// why.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunReport {
    /// Scenario, target, profile, capacity and overload factor.
    #[serde(flatten)]
    pub info: RunInfo,
    /// Open or closed loop.
    pub mode: LoopMode,
    /// Closed loop: messages outstanding per connection.
    pub window: Option<u32>,
    /// Connections of the measured phase.
    pub connections: u32,
    /// Shards (another target's worker threads); `None` over TCP, where they are the
    /// server's and not visible.
    pub shards: Option<usize>,
    /// Cores this process may run on.
    pub cores: usize,
    /// Whether every shard was pinned.
    pub pinned: bool,
    /// Handler cost, ns; `None` over TCP (the server's own).
    pub service_ns: Option<u64>,
    /// Length of the measured phase, s.
    pub duration_s: f64,
    /// Warm-up and lead-in before it, s.
    pub warmup_s: f64,
    /// Offered rate of the measured phase (open loop), msg/s.
    pub offered_rate: u64,
    /// Submissions per second during the measured phase, rounded.
    pub achieved_rate: f64,
    /// Deliveries per second during the measured phase, rounded.
    pub delivered_rate: f64,
    /// Payload bytes per message.
    pub payload_bytes: u32,
    /// Payload bytes per second submitted during the measured phase (Submit payloads over
    /// TCP), rounded.
    pub payload_sent_bytes_per_s: f64,
    /// Response bytes per second read during the measured phase (Reply responses over
    /// TCP, the completions' in process), rounded.
    pub response_received_bytes_per_s: f64,
    /// Delivered responses checked as the echo of their message's payload, whole run;
    /// `None` when the run did not check (no `--verify-echo`).
    pub echo_checked: Option<u64>,
    /// Those that were not their payload, byte for byte and length included; any fails the
    /// run ([`RunReport::echo_failure`]). `None` when the run did not check.
    pub echo_mismatches: Option<u64>,
    /// Generator lag p99 (0 when none was recorded).
    pub generator_lag_us: LatencyNs,
    /// Generator lag of the measured messages.
    pub generator_lag_detail_us: Percentiles,
    /// Whether the generator fell behind its schedule ([`FELL_BEHIND_RULE`]).
    pub generator_fell_behind: bool,
    /// [`FELL_BEHIND_RULE`].
    pub generator_fell_behind_rule: &'static str,
    /// Messages whose time had come by the end but that were never submitted.
    pub unsent: u64,
    /// Times `submit` handed a message back for lack of room.
    pub ring_full_retries: u64,
    /// Messages of the measured phase submitted.
    pub submitted: u64,
    /// Their outcomes.
    #[serde(flatten)]
    pub outcomes: OutcomeCounts,
    /// Latency of the delivered measured messages ([`LATENCY_OF`]).
    pub latency_us: Percentiles,
    /// [`LATENCY_OF`].
    pub latency_of: &'static str,
    /// The same latencies counted at the bounds of spillway's own histogram
    /// (`spillway_message_latency_seconds`, [`LATENCY_BUCKET_BOUNDS_NS`]): for each bound
    /// in seconds, how many were at or under it, the last (`+Inf`) all of them; so that a
    /// quantile Prometheus interpolates from the server's buckets can be set against the
    /// one the same interpolation gives from the client's (`scripts/prometheus-check.sh`).
    pub latency_buckets: Vec<(f64, u64)>,
    /// Health-check latency as the probe saw it; `None` without a control plane.
    pub control_latency_us: Option<Percentiles>,
    /// Health checks that returned an error.
    pub control_probe_errors: Option<u64>,
    /// The niceness the probe thread ran at (`None`: normal priority, or no probe).
    pub control_probe_nice: Option<i32>,
    /// Whether the probe asked `GET /health` over HTTP (`--control-probe-http`).
    pub control_probe_over_http: bool,
    /// Health-check latency as the control plane measured it.
    pub control_latency_engine_us: Option<Percentiles>,
    /// Health checks slower than the SLO, whole run.
    pub control_slo_violations: Option<u64>,
    /// The circuit breaker's state at the end.
    pub breaker_final: Option<&'static str>,
    /// Peak RSS of this process, bytes (written as 0 when unknown; `peak_rss_note` then
    /// says so).
    #[serde(serialize_with = "zero_when_unknown")]
    pub peak_rss_bytes: Option<u64>,
    /// The whole run's counts, warm-up included.
    pub whole_run: WholeRun,
    /// Whether the counts reconcile.
    pub reconciled: bool,
    /// Where they do not.
    pub reconcile_errors: Vec<String>,
    /// Messages still without a completion after the drain timeout.
    pub lost: u64,
    /// [`NO_CONTROL_PLANE`], when the control fields are `null`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control_note: Option<&'static str>,
    /// The TCP client's figures, for a TCP run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpStats>,
    /// [`REMOTE_NOTE`], for a TCP run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_note: Option<&'static str>,
    /// Why `peak_rss_bytes` is 0, when it is unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_rss_note: Option<&'static str>,
    /// Per priority (`P0`..`P3`), when the run had a priority mix.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub per_priority: BTreeMap<String, PriorityReport>,
    /// The tenant every message was sent as.
    pub tenant: u32,
    /// This server's weight in the split, in a split run's `targets`; not written
    /// otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split_weight: Option<u32>,
    /// For a run split among several servers, each server's own report (the same object,
    /// its `target` the server), in the order of `--target`; not written for one server.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<RunReport>,
}

/// `histogram`'s cumulative counts at spillway's latency bucket bounds, in seconds.
fn cumulative_buckets(histogram: &hdrhistogram::Histogram<u64>) -> Vec<(f64, u64)> {
    LATENCY_BUCKET_BOUNDS_NS
        .iter()
        .map(|&bound_ns| {
            // HDR buckets are a little wider than one ns at these magnitudes: a latency
            // recorded a hair above a bound may count under it (error under 0.1%).
            (bound_ns as f64 / 1e9, histogram.count_between(0, bound_ns))
        })
        .chain(std::iter::once((f64::INFINITY, histogram.len())))
        .collect()
}

fn zero_when_unknown<S: Serializer>(bytes: &Option<u64>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(bytes.unwrap_or(0))
}

impl RunReport {
    /// The report of `result`, with `info`'s context. Reads this process's peak RSS now.
    pub fn new<S: TargetStats>(info: &RunInfo, result: &RunResult<S>) -> Self {
        let peak_rss_bytes = peak_rss_bytes();
        let control_plane = result.engine.control_plane();
        let tcp = result.engine.tcp().cloned();
        let remote = tcp.is_some();
        let lag = Percentiles::of(&result.lag_ns);
        let probe = result.control.as_ref();
        Self {
            info: info.clone(),
            mode: if result.closed_loop {
                LoopMode::ClosedLoop
            } else {
                LoopMode::OpenLoop
            },
            window: result.closed_loop.then_some(result.window),
            connections: result.connections,
            // Over TCP the server's threads and handler cost are its own, not visible here.
            shards: (!remote).then_some(result.shards),
            cores: cores(),
            pinned: result.pinned,
            service_ns: (!remote).then_some(result.service_ns),
            duration_s: result.duration_s,
            warmup_s: result.unrecorded_s,
            offered_rate: result.offered_rate,
            achieved_rate: result.achieved_rate().round(),
            delivered_rate: result.delivered_rate().round(),
            payload_bytes: result.payload_bytes,
            payload_sent_bytes_per_s: result.payload_sent_bytes_per_s().round(),
            response_received_bytes_per_s: result.response_received_bytes_per_s().round(),
            echo_checked: result.echo.map(|echo| echo.checked),
            echo_mismatches: result.echo.map(|echo| echo.mismatches),
            generator_lag_us: lag.p99,
            generator_lag_detail_us: lag,
            generator_fell_behind: result.generator_fell_behind(),
            generator_fell_behind_rule: FELL_BEHIND_RULE,
            unsent: result.unsent,
            ring_full_retries: result.ring_full_retries,
            submitted: result.submitted,
            outcomes: OutcomeCounts::from(&result.measured),
            latency_us: Percentiles::of(&result.latency_ns),
            latency_of: LATENCY_OF,
            latency_buckets: cumulative_buckets(&result.latency_ns),
            control_latency_us: probe.map(|probe| Percentiles::of(&probe.latency_ns)),
            control_probe_errors: probe.map(|probe| probe.errors),
            control_probe_nice: probe.and_then(|probe| probe.nice),
            control_probe_over_http: probe.is_some_and(|probe| probe.over_http),
            control_latency_engine_us: control_plane
                .and_then(|control_plane| control_plane.health_latency)
                .map(Percentiles::from),
            control_slo_violations: control_plane.map(|control_plane| control_plane.slo_violations),
            breaker_final: control_plane.map(|control_plane| control_plane.breaker_final),
            peak_rss_bytes,
            whole_run: WholeRun {
                submitted: result.submitted_all,
                delivered: result.all.delivered,
                refused: result.all.refused_total(),
                shed: result.all.shed_total(),
                admitted: result.all.admitted,
            },
            reconciled: result.reconcile_errors.is_empty(),
            reconcile_errors: result.reconcile_errors.clone(),
            lost: result.lost,
            control_note: (control_plane.is_none() || probe.is_none()).then_some(NO_CONTROL_PLANE),
            tcp,
            remote_note: remote.then_some(REMOTE_NOTE),
            peak_rss_note: peak_rss_bytes
                .is_none()
                .then_some("/proc/self/status unreadable: peak RSS unknown"),
            per_priority: result
                .per_priority
                .iter()
                .map(|entry| {
                    (
                        entry.priority.to_string(),
                        PriorityReport {
                            submitted: entry.outcomes.submitted,
                            delivered: entry.outcomes.delivered,
                            goodput_rate: (entry.outcomes.delivered as f64 / result.duration_s)
                                .round(),
                            refused: entry.outcomes.refused_total(),
                            shed: entry.outcomes.shed_total(),
                            latency_us: Percentiles::of(&entry.latency_ns),
                        },
                    )
                })
                .collect(),
            tenant: result.tenant.0,
            split_weight: result.split_weight,
            targets: result
                .targets
                .iter()
                .map(|part| {
                    let mut info = info.clone();
                    if let Some(address) = part.engine.address {
                        info.target = target_name(address);
                    }
                    RunReport::new(&info, part)
                })
                .collect(),
        }
    }

    /// Why the run failed its echo check: some delivered response was not its message's
    /// payload. `None` when every checked response was, or the run did not check.
    pub fn echo_failure(&self) -> Option<String> {
        let mismatches = self.echo_mismatches.filter(|&mismatches| mismatches > 0)?;
        Some(format!(
            "echo check: {mismatches} of {} delivered responses were not their message's payload ({} bytes, checked byte for byte)",
            self.echo_checked.unwrap_or(0),
            self.payload_bytes
        ))
    }

    /// The report as a human table: for a split run, each server's block, then the
    /// total's.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let weights: Vec<String> = self
            .targets
            .iter()
            .map(|part| part.split_weight.unwrap_or(0).to_string())
            .collect();
        for (index, part) in self.targets.iter().enumerate() {
            let _ = writeln!(
                out,
                "target {} of {}: {}, weight {} of split {} ({} connections, {}/s offered)",
                index + 1,
                self.targets.len(),
                part.info.target,
                weights[index],
                weights.join(","),
                part.connections,
                part.offered_rate,
            );
            out.push_str(&part.to_table());
        }
        if !self.targets.is_empty() {
            let _ = writeln!(
                out,
                "all {} targets together (split {}):",
                self.targets.len(),
                weights.join(",")
            );
        }
        self.block(&mut out);
        out
    }

    /// One run's (or one server's) block of the table.
    fn block(&self, out: &mut String) {
        let info = &self.info;
        let outcomes = &self.outcomes;
        let closed_loop = self.mode == LoopMode::ClosedLoop;
        let line = "-".repeat(72);
        let _ = writeln!(out, "{line}");
        let _ = writeln!(
            out,
            "scenario {}  target {}  profile {}  {}{}",
            info.scenario,
            info.target,
            info.profile,
            match self.window {
                None => "open loop".to_string(),
                Some(1) => "closed loop".to_string(),
                Some(window) => format!("closed loop, window {window} per connection"),
            },
            // The default tenant goes unsaid, as it did before messages could carry another.
            match self.tenant {
                0 => String::new(),
                tenant => format!("  tenant {tenant}"),
            }
        );
        match (self.shards, self.service_ns) {
            (Some(shards), Some(service_ns)) => {
                let _ = writeln!(
                    out,
                    "connections {}  shards {shards}  cores {}  pinned {}  handler cost {service_ns} ns",
                    self.connections, self.cores, self.pinned,
                );
            }
            _ => {
                let _ = writeln!(
                    out,
                    "connections {}  cores {} (this process)  shards, pinning, handler cost: the server's",
                    self.connections, self.cores,
                );
            }
        }
        let _ = writeln!(
            out,
            "measured {:.1} s after {:.1} s unrecorded (warm-up/lead-in)",
            self.duration_s, self.warmup_s
        );
        if let Some(capacity) = info.capacity {
            let _ = writeln!(
                out,
                "capacity (closed-loop calibration) {:.0} msg/s; offering {}x",
                capacity,
                info.overload.unwrap_or(1.0)
            );
        }
        let _ = writeln!(out, "{line}");
        let _ = writeln!(
            out,
            "{:<22}{:>14}",
            "offered rate",
            if closed_loop {
                "closed loop".to_string()
            } else {
                format!("{}/s", self.offered_rate)
            }
        );
        let _ = writeln!(
            out,
            "{:<22}{:>12.0}/s",
            "achieved (submitted)", self.achieved_rate
        );
        let _ = writeln!(out, "{:<22}{:>12.0}/s", "delivered", self.delivered_rate);
        let _ = writeln!(
            out,
            "{:<22}{:>12.0} B/s sent, {:.0} B/s received ({} bytes per message)",
            "payload bytes",
            self.payload_sent_bytes_per_s,
            self.response_received_bytes_per_s,
            self.payload_bytes
        );
        let rows = [
            ("submitted", self.submitted),
            ("admitted", outcomes.admitted),
            ("delivered", outcomes.delivered),
            ("refused", outcomes.refused),
            ("shed", outcomes.shed),
            ("failed", outcomes.failed),
            ("cancelled", outcomes.cancelled),
            ("dropped", outcomes.dropped),
        ];
        for (name, value) in rows {
            let _ = writeln!(out, "{name:<22}{value:>14}");
        }
        for (name, count) in outcomes.refused_by_reason.iter() {
            if count > 0 {
                let _ = writeln!(out, "  refused {name:<20}{count:>8}");
            }
        }
        for (name, count) in outcomes.shed_by_reason.iter() {
            if count > 0 {
                let _ = writeln!(out, "  shed {name:<23}{count:>8}");
            }
        }
        let _ = writeln!(out, "{line}");
        let _ = writeln!(
            out,
            "{:<22}{:>10} {:>10} {:>10} {:>10} {:>10}",
            "", "p50", "p90", "p99", "p99.9", "max"
        );
        self.latency_us.table_row(out, "latency (delivered)");
        if !closed_loop {
            self.generator_lag_detail_us.table_row(out, "generator lag");
        }
        match &self.control_latency_us {
            Some(probe) => probe.table_row(
                out,
                if self.control_probe_over_http {
                    "health (HTTP)"
                } else {
                    "health check"
                },
            ),
            None => {
                let _ = writeln!(out, "{:<22}{NO_CONTROL_PLANE}", "health check");
            }
        }
        for (priority, entry) in &self.per_priority {
            entry
                .latency_us
                .table_row(out, &format!("latency {priority}"));
        }
        let _ = writeln!(out, "{line}");
        for (priority, entry) in &self.per_priority {
            let _ = writeln!(
                out,
                "{priority}: submitted {} delivered {} ({:.0}/s goodput) refused {} shed {}",
                entry.submitted, entry.delivered, entry.goodput_rate, entry.refused, entry.shed,
            );
        }
        match (
            &self.control_latency_us,
            self.control_slo_violations,
            self.breaker_final,
        ) {
            (Some(probe), Some(slo_violations), Some(breaker)) => {
                let _ = writeln!(
                    out,
                    "health checks {} (errors {}, probe thread at {}), SLO violations {slo_violations}; breaker at end {breaker}",
                    probe.count,
                    self.control_probe_errors.unwrap_or(0),
                    match self.control_probe_nice {
                        Some(nice) => format!("nice {nice}, as the control thread"),
                        None => "normal priority".to_owned(),
                    },
                );
            }
            _ => {
                let _ = writeln!(out, "control plane: {NO_CONTROL_PLANE}");
            }
        }
        if let Some(tcp) = &self.tcp {
            tcp.table_lines(out);
        }
        let _ = writeln!(
            out,
            "ring-full retries {}; unsent at end {}; peak RSS {}",
            self.ring_full_retries,
            self.unsent,
            match self.peak_rss_bytes {
                Some(bytes) => format!("{:.1} MiB", bytes as f64 / 1048576.0),
                None => "unknown (/proc/self/status unreadable)".to_string(),
            }
        );
        if self.generator_fell_behind {
            let _ = writeln!(
                out,
                "WARNING: the generator fell behind its schedule (rule: lag p99 over 1 ms, or any message unsent at the end; here lag p99 {}, unsent {}): the load was not offered as scheduled",
                self.generator_lag_detail_us.p99.text(),
                self.unsent
            );
        }
        if let Some(failure) = self.echo_failure() {
            let _ = writeln!(out, "ERROR: {failure}");
        } else if let Some(checked) = self.echo_checked {
            let _ = writeln!(
                out,
                "echo check: all {checked} delivered responses were their message's payload, byte for byte"
            );
        }
        if self.reconciled {
            let _ = writeln!(
                out,
                "counts reconcile: every submitted message has one completion, and the target's own counters agree"
            );
        } else {
            let _ = writeln!(out, "ERROR: counts do not reconcile:");
            for error in &self.reconcile_errors {
                let _ = writeln!(out, "  {error}");
            }
        }
    }
}
