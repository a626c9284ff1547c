//! `e2e --tcp`: the TCP rows. loadgen's TCP target (one generator thread, real sockets on
//! loopback, one per simulated connection) drives the tokio baseline's TCP twin
//! (`baseline_tcp`) and, given its address, `spillway serve`, each measured as the
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

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use spillway_loadgen::generator::{run_with_target, RunResult};
use spillway_loadgen::report::{RunInfo, RunReport};
use spillway_loadgen::target::TargetStats;
use spillway_loadgen::tcp::{target_name, TcpSettings, TcpSystem};
use spillway_loadgen::tcp_stats::TcpStats;

use super::report::{E2eReport, E2eRow, ServerSide, Setup, System};
pub use super::settings::SERVE_SUBCOMMAND;
use super::settings::{plan, spillway_config, E2eSettings};
use crate::baseline_stack::StackSettings;
use crate::baseline_tcp::TwinStats;
use crate::machine;

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

/// The twin's counts against what the client read.
fn cross_check(result: &RunResult<TcpStats>, server: &TwinStats) -> Vec<String> {
    let mut errors = server.self_check();
    let without_reply = result.engine.without_reply();
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
) -> anyhow::Result<E2eReport> {
    let config = spillway_config(settings)?;
    let cores = machine::cores();
    let twin_stack = StackSettings::matching(&config, cores, settings.service_ns);
    let connect =
        |address: SocketAddr| TcpSystem::connect(TcpSettings::new(address, settings.connections));
    let info = |address: SocketAddr, scenario: &str| RunInfo {
        scenario: scenario.to_string(),
        target: target_name(address),
        profile: "the server's".to_string(),
        capacity: None,
        overload: None,
    };
    // (a) window by window, then (b).
    let runs = settings
        .tcp_windows
        .iter()
        .map(|&window| Some(window))
        .chain([None]);
    let mut max = Vec::new();
    let mut open = Vec::new();
    for window in runs {
        let (what, scenario, rows, concurrency_limit) = match window {
            Some(window) => (
                format!("(a) max throughput, closed loop, window {window}"),
                "e2e-tcp-max-throughput",
                &mut max,
                Some(
                    (settings.connections as usize * window as usize)
                        .max(twin_stack.concurrency_limit),
                ),
            ),
            None => (
                format!("(b) open loop at {} msg/s", settings.rate),
                "e2e-tcp-open-loop",
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
            rows.push(E2eRow {
                system: System::Spillway,
                window,
                report: RunReport::new(&info(address, scenario), &result),
                server: Some(ServerSide {
                    address,
                    counts: None,
                    cross_check: Vec::new(),
                }),
            });
        }
        let twin = TwinChild::spawn(
            program,
            twin_stack.workers,
            settings.service_ns,
            concurrency_limit,
        )?;
        let address = twin.address();
        progress(&format!("{what}: tokio twin at {address}"));
        let result = run_with_target(connect(address)?, &plan)
            .with_context(|| format!("{what}: the tokio twin"))?;
        let counts = twin.stop()?;
        rows.push(E2eRow {
            system: System::TokioTwin,
            window,
            report: RunReport::new(&info(address, scenario), &result),
            server: Some(ServerSide {
                address,
                counts: Some(counts),
                cross_check: cross_check(&result, &counts),
            }),
        });
    }
    Ok(E2eReport {
        settings: settings.clone(),
        cores,
        setup: Setup::Tcp {
            twin_workers: twin_stack.workers,
            twin_concurrency_limit: twin_stack.concurrency_limit,
            spillway,
        },
        max,
        open,
    })
}
