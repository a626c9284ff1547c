//! The one report of `e2e`, in process and over TCP ([`E2eReport`]): the rows of both
//! measurements (each a run of one server, with loadgen's full report of it), the ratios
//! and goals, the table and the JSON object. The two transports print their own header and
//! columns (the TCP rows add the window, the connect time and the server's own counts)
//! from the same rows.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;

use serde::{Serialize, Serializer};
use spillway_loadgen::report::{LatencyNs, Percentiles, ReasonCounts, RunReport, NO_CONTROL_PLANE};
use spillway_loadgen::tcp_stats::TcpStats;

use super::settings::E2eSettings;
use crate::baseline::BaselineSettings;
use crate::baseline_tcp::TwinStats;

/// The goal for (a) in process: spillway's max throughput over the baseline's.
pub const THROUGHPUT_RATIO_GOAL: f64 = 3.0;

/// Issue #7's goal for the TCP path: spillway's closed-loop maximum over TCP at least this
/// many times the tokio twin's.
pub const TCP_THROUGHPUT_RATIO_GOAL: f64 = 1.5;

/// Which server a row measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    /// Spillway: the engine in process, or `spillway serve` over TCP.
    Spillway,
    /// The tokio/tower baseline, in process.
    Baseline,
    /// The baseline's TCP twin (`baseline-serve`).
    TokioTwin,
}

impl System {
    /// Its name in tables.
    pub fn name(self) -> &'static str {
        match self {
            System::Spillway => "spillway",
            System::Baseline => "baseline",
            System::TokioTwin => "tokio twin",
        }
    }

    /// Its name in JSON keys.
    fn key(self) -> &'static str {
        match self {
            System::Spillway => "spillway",
            System::Baseline => "baseline",
            System::TokioTwin => "tokio_twin",
        }
    }
}

/// The server a TCP row drove, and what it said of itself.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerSide {
    /// Its address.
    pub address: SocketAddr,
    /// The twin's own counters after the run (`None` for spillway's server, whose counters
    /// are not reachable over the protocol).
    pub counts: Option<TwinStats>,
    /// Where the twin's counters disagree with the client's.
    pub cross_check: Vec<String>,
}

/// One run of one server.
#[derive(Clone, Debug, PartialEq)]
pub struct E2eRow {
    /// The server.
    pub system: System,
    /// (a): messages outstanding per connection; `None` for (b), the open loop.
    pub window: Option<u32>,
    /// loadgen's report of the run.
    pub report: RunReport,
    /// Over TCP: the server's side.
    pub server: Option<ServerSide>,
}

impl E2eRow {
    /// Whether the client's counts reconciled and, for the twin, agree with its own.
    pub fn reconciled(&self) -> bool {
        self.report.reconciled && self.cross_check().is_empty()
    }

    fn cross_check(&self) -> &[String] {
        self.server
            .as_ref()
            .map_or(&[], |server| server.cross_check.as_slice())
    }

    fn tcp(&self) -> Option<&TcpStats> {
        self.report.tcp.as_ref()
    }
}

/// How the servers were set up.
#[derive(Clone, Debug, PartialEq)]
pub enum Setup {
    /// Spillway and the baseline in this process.
    InProcess {
        /// The baseline's settings.
        baseline: BaselineSettings,
    },
    /// Servers on loopback, driven by loadgen's TCP target.
    Tcp {
        /// The twin's worker threads.
        twin_workers: usize,
        /// The twin's concurrency limit in (b) (in (a) it is raised to connections x
        /// window).
        twin_concurrency_limit: usize,
        /// Where `spillway serve` ran, if it was measured.
        spillway: Option<SocketAddr>,
    },
}

/// Both measurements: spillway and the other server (the baseline in process, the twin
/// over TCP), row by row.
#[derive(Clone, Debug, PartialEq)]
pub struct E2eReport {
    /// What ran.
    pub settings: E2eSettings,
    /// Cores this process may use.
    pub cores: usize,
    /// How the servers were set up.
    pub setup: Setup,
    /// (a) rows, window by window: spillway first when measured, then the other server.
    pub max: Vec<E2eRow>,
    /// (b) rows, in the same order.
    pub open: Vec<E2eRow>,
}

/// `numerator / denominator`, when the denominator is above zero.
pub(crate) fn ratio(numerator: f64, denominator: f64) -> Option<f64> {
    (denominator > 0.0 && numerator.is_finite()).then(|| numerator / denominator)
}

fn find(rows: &[E2eRow], system: System) -> Option<&E2eRow> {
    rows.iter().find(|row| row.system == system)
}

impl E2eReport {
    /// The server spillway is compared with.
    pub fn other(&self) -> System {
        match self.setup {
            Setup::InProcess { .. } => System::Baseline,
            Setup::Tcp { .. } => System::TokioTwin,
        }
    }

    /// (a): `system`'s run with the most delivered msg/s, over the windows.
    pub fn best(&self, system: System) -> Option<&E2eRow> {
        self.max
            .iter()
            .filter(|row| row.system == system)
            .max_by(|a, b| a.report.delivered_rate.total_cmp(&b.report.delivered_rate))
    }

    /// (a): spillway's max throughput (its best window) over the other server's; `None`
    /// without spillway rows or when the other delivered nothing.
    pub fn throughput_ratio(&self) -> Option<f64> {
        ratio(
            self.best(System::Spillway)?.report.delivered_rate,
            self.best(self.other())?.report.delivered_rate,
        )
    }

    /// (a): spillway over the other server at `window`.
    pub fn throughput_ratio_at(&self, window: u32) -> Option<f64> {
        let at = |system| {
            self.max
                .iter()
                .find(|row| row.system == system && row.window == Some(window))
                .map(|row| row.report.delivered_rate)
        };
        ratio(at(System::Spillway)?, at(self.other())?)
    }

    /// (b): the other server's p99 latency over spillway's; `None` without spillway rows or
    /// when either delivered nothing.
    pub fn p99_ratio(&self) -> Option<f64> {
        let p99 = |system| p99(&find(&self.open, system)?.report.latency_us);
        ratio(p99(self.other())?.0 as f64, p99(System::Spillway)?.0 as f64)
    }

    /// Whether every run reconciled (and the twin's counts agree with the client's).
    pub fn reconciled(&self) -> bool {
        self.max.iter().chain(&self.open).all(E2eRow::reconciled)
    }

    /// The side-by-side table: the transport's header, then (a) and (b), each with its
    /// rows, the reasons behind them and the ratio, then the reconciliation.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let line = "-".repeat(100);
        let _ = writeln!(out, "{line}");
        self.header(&mut out);
        let _ = writeln!(out, "{line}");
        self.max_section(&mut out);
        let _ = writeln!(out, "{line}");
        self.open_section(&mut out);
        let _ = writeln!(out, "{line}");
        if self.reconciled() {
            let _ = writeln!(
                out,
                "{}",
                match self.setup {
                    Setup::InProcess { .. } => "counts reconcile in all four runs: every submitted message has one completion, and each target's own counters agree",
                    Setup::Tcp { .. } => "counts reconcile in every run: each message has one Reply or is accounted for, and the twin's own counts agree with the client's",
                }
            );
        } else {
            let _ = writeln!(out, "ERROR: counts do not reconcile:");
            for (what, rows) in [("(a)", &self.max), ("(b)", &self.open)] {
                for row in rows {
                    for error in row.report.reconcile_errors.iter().chain(row.cross_check()) {
                        let _ = writeln!(out, "  {what} {}: {error}", row.system.name());
                    }
                }
            }
        }
        out
    }

    fn threads_line(&self, baseline: &BaselineSettings) -> String {
        let spillway = find(&self.max, System::Spillway).map(|row| &row.report);
        format!(
            "spillway: {} shard thread(s), pinned {}, + 1 control thread{}; baseline: tokio multi-thread runtime, {} worker thread(s), not pinned; each driven by 1 generator thread",
            spillway.and_then(|report| report.shards).unwrap_or(0),
            spillway.is_some_and(|report| report.pinned),
            if self.settings.control_probe_ms > 0 {
                format!(
                    " + 1 probe thread (health check every {} ms)",
                    self.settings.control_probe_ms
                )
            } else {
                String::new()
            },
            baseline.stack.workers,
        )
    }

    /// What ran, on what, set up how.
    fn header(&self, out: &mut String) {
        let settings = &self.settings;
        match &self.setup {
            Setup::InProcess { baseline } => {
                let _ = writeln!(
                    out,
                    "e2e: spillway and a tokio/tower baseline, same generator (loadgen), measured the same way"
                );
                let _ = writeln!(
                    out,
                    "machine: {} core(s); {} connections; handler cost {} ns; each run {:.1} s warm-up + {:.1} s measured",
                    self.cores, settings.connections, settings.service_ns, settings.warmup_s, settings.duration_s
                );
                let _ = writeln!(out, "{}", self.threads_line(baseline));
                let _ = writeln!(
                    out,
                    "baseline: bounded tokio mpsc {} slots in, {} back; {}; tower load_shed + concurrency_limit({})",
                    baseline.submission_capacity,
                    baseline.completion_capacity,
                    baseline.stack.rate_text(),
                    baseline.stack.concurrency_limit
                );
            }
            Setup::Tcp {
                twin_workers,
                spillway,
                ..
            } => {
                let _ = writeln!(
                    out,
                    "e2e --tcp: loadgen's TCP target (1 generator thread, mio, one socket per connection) against servers on loopback"
                );
                let _ = writeln!(
                    out,
                    "machine: {} core(s), shared by client and server; {} connections; each run {:.1} s warm-up + {:.1} s measured",
                    self.cores, settings.connections, settings.warmup_s, settings.duration_s
                );
                let _ = writeln!(
                    out,
                    "tokio twin: baseline-serve in a child process, {twin_workers} worker(s), handler {} ns; spillway: {}",
                    settings.service_ns,
                    match spillway {
                        Some(address) => format!("`spillway serve` at {address}, its own settings"),
                        None => "not measured (give --spillway HOST:PORT of a running `spillway serve`)"
                            .to_string(),
                    }
                );
            }
        }
    }

    /// Width of the target column: the twin's name is longer.
    fn name_width(&self) -> usize {
        match self.setup {
            Setup::InProcess { .. } => 10,
            Setup::Tcp { .. } => 12,
        }
    }

    /// (a): its method, the rows (over TCP with their window and connect time), the
    /// reasons behind them, and the ratio against its goal.
    fn max_section(&self, out: &mut String) {
        let width = self.name_width();
        let tcp = matches!(self.setup, Setup::Tcp { .. });
        match self.setup {
            Setup::InProcess { .. } => {
                let _ = writeln!(
                    out,
                    "(a) max throughput: closed loop, each connection keeps one message outstanding; delivered msg/s over the measured phase"
                );
                let _ = writeln!(
                    out,
                    "{:<width$}{:>14}{:>12}{:>11}{:>11}{:>11}{:>11}  reconciled",
                    "target", "delivered/s", "refused", "p50", "p99", "p99.9", "max"
                );
            }
            Setup::Tcp {
                twin_concurrency_limit,
                ..
            } => {
                let _ = writeln!(
                    out,
                    "(a) max throughput: closed loop, each connection keeps `window` messages outstanding (sent together); delivered msg/s"
                );
                let _ = writeln!(
                    out,
                    "    the twin's concurrency limit is raised to connections x window here ({twin_concurrency_limit} in (b)), so it sheds nothing for lack of permits",
                );
                let _ = writeln!(
                    out,
                    "{:<width$}{:>7}{:>14}{:>12}{:>11}{:>11}{:>11}{:>11}{:>10}  reconciled",
                    "target",
                    "window",
                    "delivered/s",
                    "refused",
                    "p50",
                    "p99",
                    "p99.9",
                    "max",
                    "connect"
                );
            }
        }
        for row in &self.max {
            let _ = write!(out, "{:<width$}", row.system.name());
            if tcp {
                let _ = write!(out, "{:>7}", row.window.unwrap_or(1));
            }
            let _ = write!(out, "{}", closed_cells(&row.report));
            if let Some(tcp) = row.tcp() {
                let _ = write!(out, "{:>9.2}s", tcp.connect_ns as f64 / 1e9);
            }
            let _ = writeln!(out, "  {}", yes_no(row.reconciled()));
        }
        self.reasons(out, &self.max);
        if tcp {
            for &window in &self.settings.tcp_windows {
                if let Some(ratio) = self.throughput_ratio_at(window) {
                    let _ = writeln!(out, "spillway / twin at window {window}: {ratio:.2}x");
                }
            }
            if let (Some(ratio), Some(spillway), Some(twin)) = (
                self.throughput_ratio(),
                self.best(System::Spillway),
                self.best(System::TokioTwin),
            ) {
                let _ = writeln!(
                    out,
                    "spillway / twin max throughput over TCP (each at its best window: {} and {}): {ratio:.2}x (goal >= {TCP_THROUGHPUT_RATIO_GOAL}x: {})",
                    spillway.window.unwrap_or(1),
                    twin.window.unwrap_or(1),
                    met(ratio >= TCP_THROUGHPUT_RATIO_GOAL)
                );
            }
            return;
        }
        let _ = writeln!(
            out,
            "  latency in a closed loop runs from the actual send (no schedule to be late for)"
        );
        match self.throughput_ratio() {
            Some(ratio) => {
                let _ = writeln!(
                    out,
                    "spillway / baseline max throughput: {ratio:.2}x (goal >= {THROUGHPUT_RATIO_GOAL}x: {})",
                    met(ratio >= THROUGHPUT_RATIO_GOAL)
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "spillway / baseline max throughput: n/a (the baseline delivered nothing)"
                );
            }
        }
    }

    /// (b): the offered load, the rows (in process with spillway's health-check p99), the
    /// reasons behind them, the p99 ratio, and a warning for each run whose generator fell
    /// behind.
    fn open_section(&self, out: &mut String) {
        let width = self.name_width();
        let in_process = matches!(self.setup, Setup::InProcess { .. });
        let _ = writeln!(
            out,
            "(b) open loop: {} msg/s offered over {} connections; latency of delivered messages from their intended send time",
            self.settings.rate, self.settings.connections
        );
        let _ = write!(
            out,
            "{:<width$}{:>12}{:>12}{:>10}{:>11}{:>11}{:>11}{:>11}{:>11}",
            "target",
            "achieved/s",
            "delivered/s",
            "refused",
            "p50",
            "p99",
            "p99.9",
            "max",
            "lag p99"
        );
        if in_process {
            let _ = write!(out, "{:>12}", "health p99");
        }
        let _ = writeln!(out, "  reconciled");
        for row in &self.open {
            let _ = write!(
                out,
                "{:<width$}{}",
                row.system.name(),
                open_cells(&row.report)
            );
            if in_process {
                let health = match &row.report.control_latency_us {
                    Some(probe) => p99(probe).map_or_else(|| "-".to_string(), LatencyNs::text),
                    None => "n/a".to_string(),
                };
                let _ = write!(out, "{health:>12}");
            }
            let _ = writeln!(out, "  {}", yes_no(row.reconciled()));
        }
        self.reasons(out, &self.open);
        if in_process {
            let _ = writeln!(out, "  baseline health p99: {NO_CONTROL_PLANE}");
            match self.p99_ratio() {
                Some(ratio) => {
                    let _ = writeln!(
                        out,
                        "baseline p99 / spillway p99: {ratio:.2}x (goal: spillway lower, ratio > 1: {})",
                        met(ratio > 1.0)
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "baseline p99 / spillway p99: n/a (a target delivered nothing)"
                    );
                }
            }
        } else if let Some(ratio) = self.p99_ratio() {
            let _ = writeln!(
                out,
                "twin p99 / spillway p99 over TCP: {ratio:.2}x (spillway lower: {})",
                if ratio > 1.0 { "yes" } else { "no" }
            );
        }
        for row in &self.open {
            if row.report.generator_fell_behind {
                let _ = writeln!(
                    out,
                    "WARNING: {} (b): the generator fell behind its schedule (lag p99 over 1 ms or messages unsent): the load was not offered as scheduled",
                    row.system.name()
                );
            }
        }
    }

    /// The reasons behind `rows`: in process one line of refusals for all of them; over TCP
    /// a line per row with its refusals, flow signals, dropped replies, Errors and the
    /// client's system calls per message.
    fn reasons(&self, out: &mut String, rows: &[E2eRow]) {
        if matches!(self.setup, Setup::InProcess { .. }) {
            let entries: Vec<String> = rows
                .iter()
                .map(|row| format!("{} {}", row.system.name(), refused_reasons(&row.report)))
                .collect();
            let _ = writeln!(out, "  refused by reason: {}", entries.join("; "));
            return;
        }
        for row in rows {
            let Some(tcp) = row.tcp() else {
                continue;
            };
            let _ = writeln!(
                out,
                "  {}{}: refused by reason {}; flow signals {}; replies dropped {}; closed by Error {}; client syscalls/message {:.2}",
                row.system.name(),
                row.window
                    .map_or_else(String::new, |window| format!(" (window {window})")),
                refused_reasons(&row.report),
                tcp.flow_signals.total(),
                tcp.without_reply.replies_dropped,
                tcp.closed.errors_by_code.total(),
                tcp.syscalls_per_message(),
            );
        }
    }
}

fn met(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "not met"
    }
}

fn yes_no(value: bool) -> &'static str {
    if value {
        "yes"
    } else {
        "NO"
    }
}

/// The p99, when anything was recorded.
fn p99(percentiles: &Percentiles) -> Option<LatencyNs> {
    (!percentiles.is_empty()).then_some(percentiles.p99)
}

/// Non-zero refusal reasons, `name count, ...`, or `none`.
fn refused_reasons(report: &RunReport) -> String {
    let reasons: Vec<String> = report.outcomes.refused_by_reason.nonzero().collect();
    if reasons.is_empty() {
        "none".to_string()
    } else {
        reasons.join(", ")
    }
}

/// p50, p99, p99.9 and max, or dashes when nothing was delivered.
fn latency_cells(latency: &Percentiles) -> String {
    if latency.is_empty() {
        return format!("{:>11}{:>11}{:>11}{:>11}", "-", "-", "-", "-");
    }
    format!(
        "{:>11}{:>11}{:>11}{:>11}",
        latency.p50.text(),
        latency.p99.text(),
        latency.p999.text(),
        latency.max.text(),
    )
}

/// A closed-loop row's figures: delivered msg/s, refused, then the latency cells.
fn closed_cells(report: &RunReport) -> String {
    format!(
        "{:>14.0}{:>12}{}",
        report.delivered_rate,
        report.outcomes.refused,
        latency_cells(&report.latency_us)
    )
}

/// An open-loop row's figures: achieved and delivered msg/s, refused, the latency cells,
/// then the generator's lag p99.
fn open_cells(report: &RunReport) -> String {
    let lag = p99(&report.generator_lag_detail_us).map_or_else(|| "-".to_string(), LatencyNs::text);
    format!(
        "{:>12.0}{:>12.0}{:>10}{}{lag:>11}",
        report.achieved_rate,
        report.delivered_rate,
        report.outcomes.refused,
        latency_cells(&report.latency_us)
    )
}

// The JSON objects. One shape per transport (the keys `e2e --json` and `e2e --tcp --json`
// have always had), both drawn from the same rows.

impl Serialize for E2eReport {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.setup {
            Setup::InProcess { baseline } => {
                InProcessJson::new(self, baseline).serialize(serializer)
            }
            Setup::Tcp {
                twin_workers,
                twin_concurrency_limit,
                spillway,
            } => TcpJson::new(self, *twin_workers, *twin_concurrency_limit, *spillway)
                .serialize(serializer),
        }
    }
}

/// A row's latency: p50, p99, p99.9 and max, `null` when nothing was delivered.
#[derive(Serialize)]
struct RowLatency {
    p50: Option<LatencyNs>,
    p99: Option<LatencyNs>,
    p999: Option<LatencyNs>,
    max: Option<LatencyNs>,
}

/// One row's figures for the side-by-side JSON.
#[derive(Serialize)]
struct RowSummary<'a> {
    workers: usize,
    delivered_rate: f64,
    achieved_rate: f64,
    submitted: u64,
    delivered: u64,
    refused: u64,
    refused_by_reason: &'a ReasonCounts,
    shed: u64,
    failed: u64,
    latency_us: RowLatency,
    generator_lag_p99_us: Option<LatencyNs>,
    generator_fell_behind: bool,
    unsent: u64,
    ring_full_retries: u64,
    lost: u64,
    control_p99_us: Option<LatencyNs>,
    control_note: Option<&'static str>,
    reconciled: bool,
    reconcile_errors: &'a [String],
}

impl<'a> RowSummary<'a> {
    fn new(row: &'a E2eRow) -> Self {
        let report = &row.report;
        let latency = &report.latency_us;
        let delivered = !latency.is_empty();
        Self {
            workers: report.shards.unwrap_or(0),
            delivered_rate: report.delivered_rate,
            achieved_rate: report.achieved_rate,
            submitted: report.submitted,
            delivered: report.outcomes.delivered,
            refused: report.outcomes.refused,
            refused_by_reason: &report.outcomes.refused_by_reason,
            shed: report.outcomes.shed,
            failed: report.outcomes.failed,
            latency_us: RowLatency {
                p50: delivered.then_some(latency.p50),
                p99: delivered.then_some(latency.p99),
                p999: delivered.then_some(latency.p999),
                max: delivered.then_some(latency.max),
            },
            generator_lag_p99_us: p99(&report.generator_lag_detail_us),
            generator_fell_behind: report.generator_fell_behind,
            unsent: report.unsent,
            ring_full_retries: report.ring_full_retries,
            lost: report.lost,
            control_p99_us: report.control_latency_us.as_ref().and_then(p99),
            control_note: report
                .control_latency_us
                .is_none()
                .then_some(NO_CONTROL_PLANE),
            reconciled: row.reconciled(),
            reconcile_errors: &report.reconcile_errors,
        }
    }
}

#[derive(Serialize)]
struct InProcessJson<'a> {
    cores: usize,
    connections: u32,
    service_ns: u64,
    duration_s: f64,
    warmup_s: f64,
    threads: String,
    spillway: SpillwaySetupJson<'a>,
    baseline: BaselineSetupJson,
    max_throughput: MaxThroughputJson<'a>,
    open_loop: OpenLoopJson<'a>,
    reconciled: bool,
    detail: DetailJson<'a>,
}

#[derive(Serialize)]
struct SpillwaySetupJson<'a> {
    profile: Option<&'a str>,
    shards: Option<usize>,
    pinned: Option<bool>,
    control_probe_ms: u64,
}

#[derive(Serialize)]
struct BaselineSetupJson {
    runtime: &'static str,
    workers: usize,
    submission_capacity: usize,
    completion_capacity: usize,
    concurrency_limit: usize,
    rate_per_connection_per_sec: Option<u32>,
    burst: Option<u32>,
    control_plane: Option<()>,
    control_note: &'static str,
}

#[derive(Serialize)]
struct MaxThroughputJson<'a> {
    method: &'static str,
    spillway: Option<RowSummary<'a>>,
    baseline: Option<RowSummary<'a>>,
    ratio_spillway_over_baseline: Option<f64>,
    goal_ratio_at_least: f64,
    goal_met: Option<bool>,
}

#[derive(Serialize)]
struct OpenLoopJson<'a> {
    offered_rate: u64,
    spillway: Option<RowSummary<'a>>,
    baseline: Option<RowSummary<'a>>,
    ratio_p99_baseline_over_spillway: Option<f64>,
    goal: &'static str,
    goal_met: Option<bool>,
}

#[derive(Serialize)]
struct DetailJson<'a> {
    note: &'static str,
    max_throughput_spillway: Option<&'a RunReport>,
    max_throughput_baseline: Option<&'a RunReport>,
    open_loop_spillway: Option<&'a RunReport>,
    open_loop_baseline: Option<&'a RunReport>,
}

impl<'a> InProcessJson<'a> {
    fn new(report: &'a E2eReport, baseline: &BaselineSettings) -> Self {
        let settings = &report.settings;
        let summary = |rows: &'a [E2eRow], system| find(rows, system).map(RowSummary::new);
        let detail = |rows: &'a [E2eRow], system| find(rows, system).map(|row| &row.report);
        let spillway = find(&report.max, System::Spillway).map(|row| &row.report);
        let throughput_ratio = report.throughput_ratio();
        let p99_ratio = report.p99_ratio();
        Self {
            cores: report.cores,
            connections: settings.connections,
            service_ns: settings.service_ns,
            duration_s: settings.duration_s,
            warmup_s: settings.warmup_s,
            threads: report.threads_line(baseline),
            spillway: SpillwaySetupJson {
                profile: spillway.map(|report| report.info.profile.as_str()),
                shards: spillway.and_then(|report| report.shards),
                pinned: spillway.map(|report| report.pinned),
                control_probe_ms: settings.control_probe_ms,
            },
            baseline: BaselineSetupJson {
                runtime: "tokio multi-thread",
                workers: baseline.stack.workers,
                submission_capacity: baseline.submission_capacity,
                completion_capacity: baseline.completion_capacity,
                concurrency_limit: baseline.stack.concurrency_limit,
                rate_per_connection_per_sec: baseline
                    .stack
                    .rate
                    .map(|rate| rate.per_connection_per_sec.get()),
                burst: baseline.stack.rate.map(|rate| rate.burst.get()),
                control_plane: None,
                control_note: NO_CONTROL_PLANE,
            },
            max_throughput: MaxThroughputJson {
                method: "closed loop: each connection keeps one message outstanding and resends as soon as it completes; delivered msg/s over the measured phase",
                spillway: summary(&report.max, System::Spillway),
                baseline: summary(&report.max, System::Baseline),
                ratio_spillway_over_baseline: throughput_ratio,
                goal_ratio_at_least: THROUGHPUT_RATIO_GOAL,
                goal_met: throughput_ratio.map(|ratio| ratio >= THROUGHPUT_RATIO_GOAL),
            },
            open_loop: OpenLoopJson {
                offered_rate: settings.rate,
                spillway: summary(&report.open, System::Spillway),
                baseline: summary(&report.open, System::Baseline),
                ratio_p99_baseline_over_spillway: p99_ratio,
                goal: "spillway's p99 lower than the baseline's (ratio > 1)",
                goal_met: p99_ratio.map(|ratio| ratio > 1.0),
            },
            reconciled: report.reconciled(),
            detail: DetailJson {
                note: "each run's full loadgen report; peak_rss_bytes there is this whole process's peak, over all runs so far",
                max_throughput_spillway: detail(&report.max, System::Spillway),
                max_throughput_baseline: detail(&report.max, System::Baseline),
                open_loop_spillway: detail(&report.open, System::Spillway),
                open_loop_baseline: detail(&report.open, System::Baseline),
            },
        }
    }
}

/// A TCP row: its figures, the server's side, and loadgen's full report under `detail`.
#[derive(Serialize)]
struct TcpRowJson<'a> {
    #[serde(flatten)]
    summary: RowSummary<'a>,
    address: Option<SocketAddr>,
    tcp: Option<&'a TcpStats>,
    server: Option<&'a TwinStats>,
    cross_check_errors: &'a [String],
    detail: &'a RunReport,
    window: Option<u32>,
}

impl<'a> TcpRowJson<'a> {
    /// The row under its key: `spillway_window_4`, `tokio_twin` ...
    fn keyed(row: &'a E2eRow) -> (String, Self) {
        let key = match row.window {
            Some(window) => format!("{}_window_{window}", row.system.key()),
            None => row.system.key().to_string(),
        };
        let json = Self {
            summary: RowSummary::new(row),
            address: row.server.as_ref().map(|server| server.address),
            tcp: row.tcp(),
            server: row
                .server
                .as_ref()
                .and_then(|server| server.counts.as_ref()),
            cross_check_errors: row.cross_check(),
            detail: &row.report,
            window: row.window,
        };
        (key, json)
    }
}

#[derive(Serialize)]
struct TwinSetupJson {
    server: &'static str,
    workers: usize,
}

#[derive(Serialize)]
struct BestWindowJson {
    spillway: Option<u32>,
    tokio_twin: Option<u32>,
}

#[derive(Serialize)]
struct WindowRatioJson {
    window: u32,
    ratio: Option<f64>,
}

#[derive(Serialize)]
struct TcpJson<'a> {
    transport: &'static str,
    cores: usize,
    connections: u32,
    service_ns: u64,
    duration_s: f64,
    warmup_s: f64,
    twin: TwinSetupJson,
    spillway_address: Option<SocketAddr>,
    spillway_note: Option<&'static str>,
    max_throughput: BTreeMap<String, TcpRowJson<'a>>,
    max_throughput_windows: &'a [u32],
    max_throughput_best_window: BestWindowJson,
    max_throughput_ratio_spillway_over_twin: Option<f64>,
    max_throughput_ratio_by_window: Vec<WindowRatioJson>,
    twin_concurrency_limit_open_loop: usize,
    open_loop: BTreeMap<String, TcpRowJson<'a>>,
    open_loop_offered_rate: u64,
    open_loop_ratio_p99_twin_over_spillway: Option<f64>,
    reconciled: bool,
}

impl<'a> TcpJson<'a> {
    fn new(
        report: &'a E2eReport,
        twin_workers: usize,
        twin_concurrency_limit: usize,
        spillway: Option<SocketAddr>,
    ) -> Self {
        let settings = &report.settings;
        let best_window = |system| report.best(system).and_then(|row| row.window);
        Self {
            transport: "tcp",
            cores: report.cores,
            connections: settings.connections,
            service_ns: settings.service_ns,
            duration_s: settings.duration_s,
            warmup_s: settings.warmup_s,
            twin: TwinSetupJson {
                server: "baseline-serve (tokio multi-thread, task per connection), child process",
                workers: twin_workers,
            },
            spillway_address: spillway,
            spillway_note: spillway
                .is_none()
                .then_some("not measured: give --spillway HOST:PORT of a running `spillway serve`"),
            max_throughput: report.max.iter().map(TcpRowJson::keyed).collect(),
            max_throughput_windows: &settings.tcp_windows,
            max_throughput_best_window: BestWindowJson {
                spillway: best_window(System::Spillway),
                tokio_twin: best_window(System::TokioTwin),
            },
            max_throughput_ratio_spillway_over_twin: report.throughput_ratio(),
            max_throughput_ratio_by_window: settings
                .tcp_windows
                .iter()
                .map(|&window| WindowRatioJson {
                    window,
                    ratio: report.throughput_ratio_at(window),
                })
                .collect(),
            twin_concurrency_limit_open_loop: twin_concurrency_limit,
            open_loop: report.open.iter().map(TcpRowJson::keyed).collect(),
            open_loop_offered_rate: settings.rate,
            open_loop_ratio_p99_twin_over_spillway: report.p99_ratio(),
            reconciled: report.reconciled(),
        }
    }
}
