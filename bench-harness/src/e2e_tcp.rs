//! `e2e --tcp`: the TCP rows. loadgen's TCP target (one generator thread, real sockets on
//! loopback, one per simulated connection) drives the tokio baseline's TCP twin
//! ([`crate::baseline_tcp`]) and, given its address, `spillway serve`, each measured as the
//! in-process rows are: (a) max throughput in a closed loop, (b) an open loop at the
//! offered rate, with the same schedules, latency, lag and reconciliation.
//!
//! (a) runs once per window (messages each connection keeps outstanding, sent together):
//! with one, every message is a TCP segment each way and the kernel's per-segment work
//! bounds both servers; with more, a client writes a connection's messages in one system
//! call and a server that keeps them together (reads them in one call, writes their
//! replies in one) does less kernel work per message. A server's max throughput is its
//! best over the windows. The twin's concurrency limit is raised to connections x window
//! for these runs, so that it is measured at its capacity, not shed at its limit.
//!
//! The twin runs in a child process (this binary again, as `e2e serve-baseline`), started
//! afresh for each run, so that client and server do not share a descriptor table (15,000
//! connections are 30,000 descriptors on loopback, over a typical hard limit of 20,000
//! for one process) and each run's server counts are that run's alone. When a run ends the
//! child gets SIGTERM and prints its counters, which are checked against what the client
//! read: the twin's received, refused and delivered counts equal the client's.
//!
//! Spillway's server is started by the user (`spillway serve --listen ADDR`) with its own
//! settings; its counters are not reachable over the protocol, so its rows reconcile what
//! the client saw (every message got a Reply, or was reported dropped, or was in flight on a
//! connection that closed).
//!
//! Known bias: on one machine the client and the server share its cores, and over loopback
//! each message costs a system call on each side and the kernel's TCP work for both ends;
//! on a machine with two cores that, not either program, bounds the rate (see the figures
//! loadgen reports: system calls per message).

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};
use spillway_loadgen::generator::{run_with_target, RunResult};
use spillway_loadgen::report::{self, RunInfo, RunReport};
use spillway_loadgen::tcp::{TcpSettings, TcpSystem};
use spillway_loadgen::tcp_stats::TcpStats;

use crate::baseline_stack::StackSettings;
use crate::baseline_tcp::TwinStats;
use crate::e2e::{
    closed_cells, fell_behind_warning, open_cells, p99, plan, ratio, refused_reasons,
    spillway_config, summary, yes_no, E2eSettings,
};

/// Issue #7's goal for the TCP path: spillway's closed-loop maximum over TCP at least this
/// many times the tokio twin's (the in-process goal is `e2e::THROUGHPUT_RATIO_GOAL`).
pub const TCP_THROUGHPUT_RATIO_GOAL: f64 = 1.5;

/// The subcommand of the `e2e` binary that runs the twin (`e2e serve-baseline ...`).
pub const SERVE_SUBCOMMAND: &str = "serve-baseline";
/// How long the twin child may take to say where it listens.
pub const TWIN_START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the twin child may take to exit after SIGTERM.
pub const TWIN_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The twin, running as a child process.
pub struct TwinChild {
    child: Child,
    /// The child's stdout, line by line, from a reader thread (so that waiting for a line
    /// can time out).
    lines: mpsc::Receiver<String>,
    address: SocketAddr,
}

impl TwinChild {
    /// Starts `program serve-baseline --listen 127.0.0.1:0 --workers W --service-ns NS`
    /// and reads the address it bound. `program` is normally this binary.
    ///
    /// # Errors
    /// When the child cannot start or does not say where it listens.
    pub fn spawn(
        program: &std::path::Path,
        workers: usize,
        service_ns: u64,
        concurrency_limit: Option<usize>,
    ) -> anyhow::Result<Self> {
        let mut args = vec![
            SERVE_SUBCOMMAND.to_string(),
            "--listen".to_string(),
            "127.0.0.1:0".to_string(),
            "--workers".to_string(),
            workers.to_string(),
            "--service-ns".to_string(),
            service_ns.to_string(),
        ];
        if let Some(limit) = concurrency_limit {
            args.extend(["--concurrency-limit".to_string(), limit.to_string()]);
        }
        let mut child = Command::new(program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {} {SERVE_SUBCOMMAND}", program.display()))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (sender, lines) = mpsc::channel();
        std::thread::Builder::new()
            .name("e2e-twin-stdout".into())
            .spawn(move || forward_lines(stdout, sender))
            .context("starting the thread that reads the twin's output")?;
        let mut twin = Self {
            child,
            lines,
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        // The first line; a child that fails to bind exits, and the read ends.
        let line = twin.read_line(TWIN_START_TIMEOUT)?;
        twin.address = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|address| address.parse().ok())
            .ok_or_else(|| anyhow!("the twin said {line:?} instead of `listening on ADDR`"))?;
        Ok(twin)
    }

    /// Where it listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Sends SIGTERM, reads the counters it prints, and waits for it to exit.
    ///
    /// # Errors
    /// When the signal cannot be sent, or the child exits without printing its counters.
    pub fn stop(mut self) -> anyhow::Result<TwinStats> {
        // `kill -TERM` rather than libc::kill: no `unsafe` for a call that buys no speed. The
        // child is not yet waited for, so its id cannot have been reused.
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .context("running kill -TERM for the twin")?;
        if !status.success() {
            anyhow::bail!("kill -TERM {} failed: {status}", self.child.id());
        }
        let line = self.read_line(TWIN_STOP_TIMEOUT)?;
        let stats = serde_json::from_str::<TwinStats>(line.trim()).map_err(|error| {
            anyhow!("the twin printed {line:?} instead of its counters: {error}")
        })?;
        let _ = self.child.wait();
        Ok(stats)
    }

    /// The next line of the child's stdout, waiting at most `timeout`.
    fn read_line(&mut self, timeout: Duration) -> anyhow::Result<String> {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => Ok(line),
            Err(mpsc::RecvTimeoutError::Timeout) => bail!(
                "the twin printed nothing for {:.0} s",
                timeout.as_secs_f64()
            ),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                bail!("the twin exited before printing (see its message above)")
            }
        }
    }
}

/// Sends each line of `stdout` until it ends or nobody listens.
fn forward_lines(stdout: ChildStdout, sender: mpsc::Sender<String>) {
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else {
            return;
        };
        if sender.send(line).is_err() {
            return;
        }
    }
}

impl Drop for TwinChild {
    fn drop(&mut self) {
        // Stopped already, or abandoned on an error: never leave it running.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One TCP run: which server, and what the client (and, for the twin, the server) saw.
pub struct TcpRow {
    /// `spillway` or `tokio twin`.
    pub system: &'static str,
    /// (a): messages outstanding per connection; `None` for (b), the open loop.
    pub window: Option<u32>,
    /// The server's address.
    pub address: SocketAddr,
    /// The generator's result, with the TCP client's figures.
    pub result: RunResult<TcpStats>,
    /// The twin's own counters after the run (`None` for spillway's server).
    pub server: Option<TwinStats>,
    /// Where the server's counters disagree with the client's.
    pub cross_check: Vec<String>,
}

impl TcpRow {
    /// Whether the client's counts reconciled and, for the twin, agree with its own.
    pub fn reconciled(&self) -> bool {
        self.result.reconcile_errors.is_empty() && self.cross_check.is_empty()
    }
}

/// The twin's counts against what the client read.
fn cross_check(result: &RunResult<TcpStats>, server: &TwinStats) -> Vec<String> {
    let mut errors = server.self_check();
    let without_reply = result.engine.without_reply.total();
    if without_reply > 0 {
        errors.push(format!(
            "not compared with the twin: {without_reply} messages have no Reply"
        ));
        return errors;
    }
    let (twin, client) = (server.tally(), result.all);
    let pairs = [
        ("received", twin.submitted, client.submitted),
        ("delivered", twin.delivered, client.delivered),
        ("refused", twin.refused_total(), client.refused_total()),
        ("failed", twin.failed_total(), client.failed_total()),
    ];
    for (name, twin, client) in pairs {
        if twin != client {
            errors.push(format!(
                "{name}: the twin counted {twin}, the client read {client}"
            ));
        }
    }
    errors
}

/// Both measurements over TCP.
pub struct TcpE2eReport {
    /// What ran.
    pub settings: E2eSettings,
    /// Cores of this machine.
    pub cores: usize,
    /// The twin's worker threads.
    pub twin_workers: usize,
    /// The twin's concurrency limit in (b) (in (a) it is raised, see the module).
    pub twin_concurrency_limit: usize,
    /// Spillway's server, if measured.
    pub spillway: Option<SocketAddr>,
    /// (a) rows, window by window: spillway first when measured, then the twin.
    pub max: Vec<TcpRow>,
    /// (b) rows, in the same order.
    pub open: Vec<TcpRow>,
}

/// Runs (a) then (b) over TCP: against `spillway` when given, then against a fresh twin
/// child started from `program` (this binary); `progress` gets a line before each run.
///
/// # Errors
/// When a server cannot be reached or the twin cannot be started.
pub fn run(
    settings: &E2eSettings,
    spillway: Option<SocketAddr>,
    program: &std::path::Path,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<TcpE2eReport> {
    let config = spillway_config(settings)?;
    let cores = report::cores();
    let twin_settings = StackSettings::matching(&config, cores, settings.service_ns);
    let twin_workers = twin_settings.workers;
    let connect =
        |address: SocketAddr| TcpSystem::connect(TcpSettings::new(address, settings.connections));
    // (a) window by window, then (b).
    let runs = settings
        .tcp_windows
        .iter()
        .map(|&window| Some(window))
        .chain([None]);
    let mut max = Vec::new();
    let mut open = Vec::new();
    for window in runs {
        let (what, rows, concurrency_limit) = match window {
            Some(window) => (
                format!("(a) max throughput, closed loop, window {window}"),
                &mut max,
                Some(
                    (settings.connections as usize * window as usize)
                        .max(twin_settings.concurrency_limit),
                ),
            ),
            None => (
                format!("(b) open loop at {} msg/s", settings.rate),
                &mut open,
                None,
            ),
        };
        let mut plan = plan(settings, window.is_some(), 0);
        plan.window = window.unwrap_or(1);
        if let Some(address) = spillway {
            progress(&format!("{what}: spillway serve at {address}"));
            let result = run_with_target(connect(address)?, &plan)
                .with_context(|| format!("{what}: spillway at {address}"))?;
            rows.push(TcpRow {
                system: "spillway",
                window,
                address,
                result,
                server: None,
                cross_check: Vec::new(),
            });
        }
        let twin = TwinChild::spawn(
            program,
            twin_workers,
            settings.service_ns,
            concurrency_limit,
        )?;
        let address = twin.address();
        progress(&format!("{what}: tokio twin at {address}"));
        let result = run_with_target(connect(address)?, &plan)
            .with_context(|| format!("{what}: the tokio twin"))?;
        let server = twin.stop()?;
        let cross_check = cross_check(&result, &server);
        rows.push(TcpRow {
            system: "tokio twin",
            window,
            address,
            result,
            server: Some(server),
            cross_check,
        });
    }
    Ok(TcpE2eReport {
        settings: settings.clone(),
        cores,
        twin_workers,
        twin_concurrency_limit: twin_settings.concurrency_limit,
        spillway,
        max,
        open,
    })
}

impl TcpE2eReport {
    fn row<'a>(rows: &'a [TcpRow], system: &str) -> Option<&'a TcpRow> {
        rows.iter().find(|row| row.system == system)
    }

    /// (a): `system`'s run with the most delivered msg/s, over the windows.
    pub fn best(&self, system: &str) -> Option<&TcpRow> {
        self.max
            .iter()
            .filter(|row| row.system == system)
            .max_by(|a, b| {
                a.result
                    .delivered_rate()
                    .total_cmp(&b.result.delivered_rate())
            })
    }

    /// (a): spillway's max throughput (its best window) over the twin's (its best window);
    /// `None` without spillway rows or when the twin delivered nothing.
    pub fn throughput_ratio(&self) -> Option<f64> {
        ratio(
            self.best("spillway")?.result.delivered_rate(),
            self.best("tokio twin")?.result.delivered_rate(),
        )
    }

    /// (a): spillway over the twin at `window`.
    pub fn throughput_ratio_at(&self, window: u32) -> Option<f64> {
        let at = |system: &str| {
            self.max
                .iter()
                .find(|row| row.system == system && row.window == Some(window))
                .map(|row| row.result.delivered_rate())
        };
        ratio(at("spillway")?, at("tokio twin")?)
    }

    /// (b): the twin's p99 over spillway's; `None` without spillway rows or when either
    /// delivered nothing.
    pub fn p99_ratio(&self) -> Option<f64> {
        let spillway = p99(&Self::row(&self.open, "spillway")?.result.latency_ns)?;
        let twin = p99(&Self::row(&self.open, "tokio twin")?.result.latency_ns)?;
        ratio(twin as f64, spillway as f64)
    }

    /// Whether every run reconciled (and the twin's counts agree with the client's).
    pub fn reconciled(&self) -> bool {
        self.max.iter().chain(&self.open).all(TcpRow::reconciled)
    }

    /// The side-by-side table.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let line = "-".repeat(100);
        let settings = &self.settings;
        let _ = writeln!(out, "{line}");
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
            "tokio twin: baseline-serve in a child process, {} worker(s), handler {} ns; spillway: {}",
            self.twin_workers,
            settings.service_ns,
            match self.spillway {
                Some(address) => format!("`spillway serve` at {address}, its own settings"),
                None => "not measured (give --spillway HOST:PORT of a running `spillway serve`)"
                    .to_string(),
            }
        );
        let _ = writeln!(out, "{line}");
        let _ = writeln!(
            out,
            "(a) max throughput: closed loop, each connection keeps `window` messages outstanding (sent together); delivered msg/s"
        );
        let _ = writeln!(
            out,
            "    the twin's concurrency limit is raised to connections x window here ({} in (b)), so it sheds nothing for lack of permits",
            self.twin_concurrency_limit
        );
        let _ = writeln!(
            out,
            "{:<12}{:>7}{:>14}{:>12}{:>11}{:>11}{:>11}{:>11}{:>10}  reconciled",
            "target", "window", "delivered/s", "refused", "p50", "p99", "p99.9", "max", "connect"
        );
        for row in &self.max {
            let _ = writeln!(
                out,
                "{:<12}{:>7}{}{:>9.2}s  {}",
                row.system,
                row.window.unwrap_or(1),
                closed_cells(&row.result),
                row.result.engine.connect_ns as f64 / 1e9,
                yes_no(row.reconciled()),
            );
        }
        self.reasons(&mut out, &self.max);
        for &window in &settings.tcp_windows {
            if let Some(ratio) = self.throughput_ratio_at(window) {
                let _ = writeln!(out, "spillway / twin at window {window}: {ratio:.2}x");
            }
        }
        if let (Some(ratio), Some(spillway), Some(twin)) = (
            self.throughput_ratio(),
            self.best("spillway"),
            self.best("tokio twin"),
        ) {
            let _ = writeln!(
                out,
                "spillway / twin max throughput over TCP (each at its best window: {} and {}): {ratio:.2}x (goal >= {TCP_THROUGHPUT_RATIO_GOAL}x: {})",
                spillway.window.unwrap_or(1),
                twin.window.unwrap_or(1),
                if ratio >= TCP_THROUGHPUT_RATIO_GOAL { "met" } else { "not met" }
            );
        }
        let _ = writeln!(out, "{line}");
        let _ = writeln!(
            out,
            "(b) open loop: {} msg/s offered over {} connections; latency of delivered messages from their intended send time",
            settings.rate, settings.connections
        );
        let _ = writeln!(
            out,
            "{:<12}{:>12}{:>12}{:>10}{:>11}{:>11}{:>11}{:>11}{:>11}  reconciled",
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
        for row in &self.open {
            let _ = writeln!(
                out,
                "{:<12}{}  {}",
                row.system,
                open_cells(&row.result),
                yes_no(row.reconciled()),
            );
        }
        self.reasons(&mut out, &self.open);
        if let Some(ratio) = self.p99_ratio() {
            let _ = writeln!(
                out,
                "twin p99 / spillway p99 over TCP: {ratio:.2}x (spillway lower: {})",
                if ratio > 1.0 { "yes" } else { "no" }
            );
        }
        for row in &self.open {
            if row.result.generator_fell_behind() {
                let _ = writeln!(
                    out,
                    "{}",
                    fell_behind_warning(&format!("{} (b)", row.system))
                );
            }
        }
        let _ = writeln!(out, "{line}");
        if self.reconciled() {
            let _ = writeln!(
                out,
                "counts reconcile in every run: each message has one Reply or is accounted for, and the twin's own counts agree with the client's"
            );
        } else {
            let _ = writeln!(out, "ERROR: counts do not reconcile:");
            for (what, rows) in [("(a)", &self.max), ("(b)", &self.open)] {
                for row in rows.iter() {
                    for error in row.result.reconcile_errors.iter().chain(&row.cross_check) {
                        let _ = writeln!(out, "  {what} {}: {error}", row.system);
                    }
                }
            }
        }
        out
    }

    fn reasons(&self, out: &mut String, rows: &[TcpRow]) {
        for row in rows {
            let tcp = &row.result.engine;
            let _ = writeln!(
                out,
                "  {}{}: refused by reason {}; flow signals {}; replies dropped {}; closed by Error {}; client syscalls/message {:.2}",
                row.system,
                row.window.map_or_else(String::new, |window| format!(" (window {window})")),
                refused_reasons(&row.result),
                tcp.flow_signals.total(),
                tcp.without_reply.replies_dropped,
                tcp.closed.errors_by_code.total(),
                tcp.syscalls_per_message(),
            );
        }
    }

    /// The whole run as one JSON object: settings, each row, the ratios, and each run's
    /// full loadgen report under `detail`.
    pub fn to_json(&self) -> Value {
        let settings = &self.settings;
        let rows = |rows: &[TcpRow], scenario: &str| -> Value {
            Value::Object(
                rows.iter()
                    .map(|row| {
                        let mut value = summary(&row.result);
                        value["address"] = json!(row.address.to_string());
                        value["tcp"] = json!(row.result.engine);
                        value["server"] = json!(row.server);
                        value["cross_check_errors"] = json!(row.cross_check);
                        value["reconciled"] = json!(row.reconciled());
                        let info = RunInfo {
                            scenario: scenario.to_string(),
                            target: format!("tcp://{}", row.address),
                            profile: "the server's".to_string(),
                            capacity: None,
                            overload: None,
                        };
                        value["detail"] = json!(RunReport::new(&info, &row.result));
                        let key = match row.window {
                            Some(window) => {
                                format!("{}_window_{window}", row.system.replace(' ', "_"))
                            }
                            None => row.system.replace(' ', "_"),
                        };
                        value["window"] = json!(row.window);
                        (key, value)
                    })
                    .collect(),
            )
        };
        json!({
            "transport": "tcp",
            "cores": self.cores,
            "connections": settings.connections,
            "service_ns": settings.service_ns,
            "duration_s": settings.duration_s,
            "warmup_s": settings.warmup_s,
            "twin": {
                "server": "baseline-serve (tokio multi-thread, task per connection), child process",
                "workers": self.twin_workers,
            },
            "spillway_address": self.spillway.map(|address| address.to_string()),
            "spillway_note": self.spillway.is_none().then_some("not measured: give --spillway HOST:PORT of a running `spillway serve`"),
            "max_throughput": rows(&self.max, "e2e-tcp-max-throughput"),
            "max_throughput_windows": settings.tcp_windows,
            "max_throughput_best_window": {
                "spillway": self.best("spillway").and_then(|row| row.window),
                "tokio_twin": self.best("tokio twin").and_then(|row| row.window),
            },
            "max_throughput_ratio_spillway_over_twin": self.throughput_ratio(),
            "max_throughput_ratio_by_window": settings.tcp_windows.iter().map(|&window| json!({"window": window, "ratio": self.throughput_ratio_at(window)})).collect::<Vec<_>>(),
            "twin_concurrency_limit_open_loop": self.twin_concurrency_limit,
            "open_loop": rows(&self.open, "e2e-tcp-open-loop"),
            "open_loop_offered_rate": settings.rate,
            "open_loop_ratio_p99_twin_over_spillway": self.p99_ratio(),
            "reconciled": self.reconciled(),
        })
    }
}
