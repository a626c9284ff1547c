//! `workers-vs-nats`: "clients send requests, a pool of worker processes answers them",
//! measured two ways on one machine in one run: `spillway serve --workers` with the Rust
//! echo worker (`engine/examples/workers/echo_worker.rs`), and nats-server with NATS
//! request/reply through a queue group, answered by `nats-echo-worker` (the same answer,
//! another transport).
//!
//! Both get the same load from loadgen's generator (`run_with_target`): `connections`
//! client connections, `payload_bytes`-byte payloads, every response checked byte for byte
//! against its payload; an open loop at each offered rate, then a closed loop with
//! `window` requests outstanding per connection for max throughput. Spillway's side is
//! loadgen's TCP client (`docs/PROTOCOL.md`, one generator thread over mio); NATS's is
//! [`crate::nats_peer`] (one async-nats client per connection on a tokio runtime).
//! Repetitions are interleaved (rep 1: spillway then NATS, rep 2: NATS then spillway, ...)
//! and both servers with their workers stay up for the whole run; each figure is the median
//! [min–max] of the repetitions, and each ratio the median [min–max] of the repetitions'
//! ratios.
//!
//! Known biases: everything (client, server, workers) shares the machine's cores, so a
//! system whose client costs more CPU per message leaves its server less; the NATS client
//! side hands each request to a runtime and each reply back (see [`crate::nats_peer`]).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context};
use serde::Serialize;
use spillway_loadgen::generator::{run_with_target, Phase, RunPlan};
use spillway_loadgen::payload::PayloadPlan;
use spillway_loadgen::progress::format_ns;
use spillway_loadgen::report::{RunInfo, RunReport};
use spillway_loadgen::tcp::{target_name, TcpSettings, TcpSystem};

use crate::nats_peer::{NatsSettings, NatsSystem};
use crate::stats::{spread, Summary};

/// How long a child may take to say it is ready.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a child may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a run waits for outstanding replies after its last send.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// The subject and queue group of the NATS side.
const SUBJECT: &str = "echo";
const QUEUE_GROUP: &str = "workers";

/// What `workers-vs-nats` runs.
#[derive(Clone, Debug, clap::Args, Serialize)]
pub struct Settings {
    /// Client connections to each system.
    #[arg(long, default_value_t = 1000)]
    pub connections: u32,
    /// Payload bytes per request; every response must be exactly its payload.
    #[arg(long, default_value_t = 64)]
    pub payload_bytes: u32,
    /// Echo worker processes behind each system.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Offered rates of the open-loop cells, msg/s, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "50000")]
    pub rates: Vec<u64>,
    /// Closed loop: requests each connection keeps outstanding (the max-throughput cell).
    #[arg(long, default_value_t = 8)]
    pub window: u32,
    /// Measured seconds per cell.
    #[arg(long, default_value_t = 5.0)]
    pub duration_s: f64,
    /// Unmeasured warm-up seconds before each cell.
    #[arg(long, default_value_t = 1.0)]
    pub warmup_s: f64,
    /// Repetitions of every cell, interleaved between the systems.
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Each Rust echo worker's credit (Works it may hold at once).
    #[arg(long, default_value_t = 64)]
    pub worker_credit: u32,
    /// `spillway serve --shards`; its configuration's default when not given.
    #[arg(long)]
    pub shards: Option<usize>,
    /// Threads of the NATS clients' runtime. One, as spillway's side is one loadgen
    /// thread; on 2 cores it also gave NATS its lower latency (10K msg/s: p50 20 ms with 1,
    /// 97 ms with 2) for a closed loop within noise.
    #[arg(long, default_value_t = 1)]
    pub nats_client_threads: usize,
    /// A running nats-server to use; without it one is started (and stopped) with
    /// `--nats-script start`.
    #[arg(long)]
    pub nats_url: Option<String>,
    /// The script that starts and stops nats-server.
    #[arg(long, default_value = "scripts/nats-server.sh")]
    pub nats_script: PathBuf,
    /// Where `spillway`, `examples/echo_worker` and `nats-echo-worker` are (default: the
    /// directory of this binary, e.g. target/release).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
}

/// The two systems.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum System {
    /// `spillway serve --workers` with the Rust echo workers.
    Spillway,
    /// nats-server with the NATS echo workers.
    Nats,
}

impl System {
    /// Its column heading.
    pub fn name(self) -> &'static str {
        match self {
            System::Spillway => "spillway serve --workers",
            System::Nats => "NATS request/reply",
        }
    }
}

/// One load shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Cell {
    /// Open loop at this many msg/s.
    OpenLoop(u64),
    /// Closed loop, this many outstanding per connection.
    ClosedLoop(u32),
}

impl Cell {
    fn title(self, settings: &Settings) -> String {
        match self {
            Cell::OpenLoop(rate) => {
                format!("open loop at {} msg/s offered", thousands(rate as f64))
            }
            Cell::ClosedLoop(window) => format!(
                "closed loop, max throughput ({window} outstanding per connection, {} in flight)",
                thousands((window as u64 * settings.connections as u64) as f64)
            ),
        }
    }
}

/// One run of one cell against one system.
#[derive(Clone, Debug, Serialize)]
pub struct Record {
    /// Which repetition, from 1.
    pub rep: usize,
    /// The load shape.
    pub cell: Cell,
    /// The system.
    pub system: System,
    /// loadgen's report of the run.
    pub report: RunReport,
}

impl Record {
    /// Messages that did not come back as their echo: failed, refused, shed, dropped,
    /// lost, or not their payload.
    pub fn errors(&self) -> u64 {
        let outcomes = &self.report.outcomes;
        outcomes.failed
            + outcomes.refused
            + outcomes.shed
            + outcomes.dropped
            + self.report.lost
            + self.report.echo_mismatches.unwrap_or(0)
    }
}

/// Everything one invocation measured.
#[derive(Debug, Serialize)]
pub struct Outcome {
    /// Its settings.
    pub settings: Settings,
    /// The machine line.
    pub machine: String,
    /// nats-server's version line.
    pub nats_version: String,
    /// Every run, in the order run.
    pub records: Vec<Record>,
    /// What the servers and workers said when they stopped, and what that was checked
    /// against.
    pub stopped: Vec<String>,
    /// Where the counts disagree, or a response was not its payload; empty when all is well.
    pub problems: Vec<String>,
}

/// A child process whose output lines (stdout and stderr together) are read by threads.
struct Process {
    name: String,
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Process {
    fn spawn(name: &str, program: &Path, args: &[String]) -> anyhow::Result<Self> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {name}: {}", program.display()))?;
        let (sender, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        forward(stdout, sender.clone());
        forward(stderr, sender);
        Ok(Self {
            name: name.to_owned(),
            child,
            lines,
            seen: Vec::new(),
        })
    }

    /// Waits for a line containing `pattern`; returns the rest of the line after it.
    fn await_line(&mut self, pattern: &str) -> anyhow::Result<String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line
                        .split_once(pattern)
                        .map(|(_, rest)| rest.trim().to_owned());
                    self.seen.push(line);
                    if let Some(rest) = found {
                        return Ok(rest);
                    }
                }
                Err(_) => bail!(
                    "{} did not say {pattern:?} within {} s; it said:\n{}",
                    self.name,
                    START_TIMEOUT.as_secs(),
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// SIGTERM, then waits for the exit and every line it printed.
    fn stop(mut self) -> anyhow::Result<(ExitStatus, Vec<String>)> {
        // `kill -TERM` rather than libc::kill: no `unsafe` for a call that buys no speed. The
        // child is not yet waited for, so its id cannot have been reused.
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .context("running kill -TERM")?;
        ensure!(status.success(), "kill -TERM {} failed", self.name);
        let deadline = Instant::now() + STOP_TIMEOUT;
        let exit = loop {
            if let Some(exit) = self.child.try_wait()? {
                break exit;
            }
            ensure!(
                Instant::now() < deadline,
                "{} did not exit within {} s of SIGTERM",
                self.name,
                STOP_TIMEOUT.as_secs()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        // The readers end when the pipes close; what is left is already sent or on its way.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(1)) {
            self.seen.push(line);
        }
        Ok((exit, std::mem::take(&mut self.seen)))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // Stopped already, or abandoned on an error: never leave it running.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn forward(stream: impl Read + Send + 'static, sender: mpsc::Sender<String>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { return };
            if sender.send(line).is_err() {
                return;
            }
        }
    });
}

/// `spillway serve --workers` and its echo workers.
struct SpillwaySide {
    serve: Process,
    workers: Vec<Process>,
    address: SocketAddr,
}

impl SpillwaySide {
    fn start(settings: &Settings, bin_dir: &Path) -> anyhow::Result<Self> {
        let mut args: Vec<String> = [
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "127.0.0.1:0",
            // No admin endpoint: the measured set-up is the data path alone.
            "--admin",
            "off",
        ]
        .map(String::from)
        .into();
        if let Some(shards) = settings.shards {
            args.extend(["--shards".to_owned(), shards.to_string()]);
        }
        let mut serve = Process::spawn("spillway serve", &bin_dir.join("spillway"), &args)?;
        // Log lines: the address is the first word after the words, its fields follow.
        let workers_at = serve.await_line("workers connect to")?;
        let workers_at = workers_at
            .split_whitespace()
            .next()
            .ok_or_else(|| anyhow!("spillway serve said `workers connect to` without an address"))?
            .to_owned();
        let listening = serve.await_line("listening on")?;
        let address: SocketAddr = listening
            .split_whitespace()
            .next()
            .and_then(|address| address.parse().ok())
            .ok_or_else(|| anyhow!("spillway serve said `listening on {listening}`"))?;
        let mut workers = Vec::with_capacity(settings.workers);
        for index in 1..=settings.workers {
            let name = format!("rust-echo-{index}");
            let args = [
                "--name",
                &name,
                "--credit",
                &settings.worker_credit.to_string(),
                "--connect",
                &workers_at,
            ]
            .map(String::from);
            let mut worker =
                Process::spawn(&name, &bin_dir.join("examples").join("echo_worker"), &args)?;
            // The Welcome: spillway has the worker and its credit.
            worker.await_line("of spillway at")?;
            workers.push(worker);
        }
        Ok(Self {
            serve,
            workers,
            address,
        })
    }

    /// Stops spillway (its workers exit when it says it is shutting down); returns its
    /// summary lines, and the problems found in them.
    fn stop(self, delivered: u64) -> anyhow::Result<(Vec<String>, Vec<String>)> {
        let mut problems = Vec::new();
        let (status, lines) = self.serve.stop()?;
        if !status.success() {
            problems.push(format!("spillway serve exited with {status}"));
        }
        // The summary is on stdout: its first line, then indented ones; the log events on
        // stderr (timestamped) come in between in any order.
        let mut summary: Vec<String> = lines
            .iter()
            .skip_while(|line| !line.contains("spillway serve: stopped"))
            .filter(|line| line.starts_with("spillway serve:") || line.starts_with("  "))
            .filter(|line| !line.contains("workers:"))
            .cloned()
            .collect();
        if !summary.iter().any(|line| line.contains("reconciles: true")) {
            problems.push("spillway serve's counts do not reconcile".to_owned());
        }
        // The summary's workers line (stdout) says `N answers`; the log's events say
        // `answers=N`. The counts only grow, so the largest is the final one.
        let answers = lines
            .iter()
            .filter(|line| line.contains("workers:"))
            .filter_map(|line| count_before(line, " answers"))
            .max()
            .unwrap_or(0);
        summary.push(format!(
            "spillway's workers answered {answers} in all; the clients read {delivered} echoes"
        ));
        if answers != delivered {
            problems.push(format!(
                "spillway's workers answered {answers}; the clients read {delivered} echoes"
            ));
        }
        for mut worker in self.workers {
            // The worker exits 0 once spillway has said it is shutting down.
            let deadline = Instant::now() + STOP_TIMEOUT;
            loop {
                if let Some(status) = worker.child.try_wait()? {
                    if !status.success() {
                        problems.push(format!("{} exited with {status}", worker.name));
                    }
                    break;
                }
                if Instant::now() >= deadline {
                    problems.push(format!(
                        "{} did not exit after spillway stopped",
                        worker.name
                    ));
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok((summary, problems))
    }
}

/// nats-server (started here unless given) and its echo workers.
struct NatsSide {
    url: String,
    /// The script and the directory of the instance started here.
    started: Option<(PathBuf, PathBuf)>,
    workers: Vec<Process>,
    version: String,
}

impl NatsSide {
    fn start(settings: &Settings, bin_dir: &Path) -> anyhow::Result<Self> {
        let version = Command::new("nats-server")
            .arg("--version")
            .output()
            .ok()
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
            .unwrap_or_default();
        let (url, started) = match &settings.nats_url {
            Some(url) => (url.clone(), None),
            None => {
                let dir =
                    std::env::temp_dir().join(format!("workers-vs-nats.{}", std::process::id()));
                let output = Command::new(&settings.nats_script)
                    .args(["start", "--dir"])
                    .arg(&dir)
                    .stderr(Stdio::inherit())
                    .output()
                    .with_context(|| format!("running {} start", settings.nats_script.display()))?;
                ensure!(
                    output.status.success(),
                    "{} start failed: {}",
                    settings.nats_script.display(),
                    output.status
                );
                let url = String::from_utf8_lossy(&output.stdout).trim().to_owned();
                (url, Some((settings.nats_script.clone(), dir)))
            }
        };
        let mut side = Self {
            url,
            started,
            workers: Vec::new(),
            version: if version.is_empty() {
                "nats-server (version unknown)".to_owned()
            } else {
                version
            },
        };
        for index in 1..=settings.workers {
            let name = format!("nats-echo-{index}");
            let args = [
                "--url",
                &side.url,
                "--subject",
                SUBJECT,
                "--queue",
                QUEUE_GROUP,
                "--name",
                &name,
            ]
            .map(String::from);
            let mut worker = Process::spawn(&name, &bin_dir.join("nats-echo-worker"), &args)?;
            worker.await_line("answering")?;
            side.workers.push(worker);
        }
        Ok(side)
    }

    /// Stops the workers (and the server, when started here); returns their last lines and
    /// the problems found in them.
    fn stop(mut self, delivered: u64) -> anyhow::Result<(Vec<String>, Vec<String>)> {
        let mut problems = Vec::new();
        let mut said = Vec::new();
        let mut answered = 0;
        for worker in std::mem::take(&mut self.workers) {
            let name = worker.name.clone();
            let (status, lines) = worker.stop()?;
            if !status.success() {
                problems.push(format!(
                    "{name} exited with {status}: {}",
                    lines.join(" / ")
                ));
            }
            if let Some(line) = lines.iter().rev().find(|line| line.contains("answered")) {
                answered += line
                    .rsplit_once("answered ")
                    .and_then(|(_, count)| count.trim_end_matches(')').parse::<u64>().ok())
                    .unwrap_or(0);
                said.push(line.clone());
            }
        }
        // A request that timed out may still be answered later, and each connection's first
        // request (before its run) is not counted: the workers answered more than the
        // clients read, never fewer.
        if answered < delivered {
            problems.push(format!(
                "the NATS workers answered {answered}; the clients read {delivered} echoes"
            ));
        }
        said.push(format!(
            "NATS workers answered {answered} in all; the clients read {delivered} echoes (and, not counted, one request per connection before each run)"
        ));
        Ok((said, problems))
    }
}

impl Drop for NatsSide {
    fn drop(&mut self) {
        self.workers.clear();
        if let Some((script, dir)) = self.started.take() {
            let _ = Command::new(script)
                .args(["stop", "--dir"])
                .arg(dir)
                .status();
        }
    }
}

/// The number just before `suffix` in `line` (`... 1234 answers ...`).
fn count_before(line: &str, suffix: &str) -> Option<u64> {
    let (before, _) = line.split_once(suffix)?;
    before.rsplit(' ').next()?.parse().ok()
}

fn plan(settings: &Settings, cell: Cell) -> RunPlan {
    let (closed_loop, rate, window) = match cell {
        Cell::OpenLoop(rate) => (false, rate, 1),
        // The rate is unused in a closed loop.
        Cell::ClosedLoop(window) => (true, 1, window),
    };
    let phase = |seconds: f64, recorded| Phase {
        connections: settings.connections,
        rate,
        duration_ns: (seconds * 1e9) as u64,
        recorded,
    };
    let mut phases = Vec::with_capacity(2);
    if settings.warmup_s > 0.0 {
        phases.push(phase(settings.warmup_s, false));
    }
    phases.push(phase(settings.duration_s, true));
    RunPlan {
        phases,
        closed_loop,
        window,
        service_ns: 0,
        control_probe_ms: 0,
        probe_over_http: false,
        priority_weights: None,
        consumer_poll_ns: 0,
        progress: false,
        drain_timeout: DRAIN_TIMEOUT,
        payload: PayloadPlan {
            bytes: settings.payload_bytes,
            verify_echo: true,
        },
        tenant: spillway::message::TenantId(0),
    }
}

/// Runs every cell `settings.reps` times against both systems; `progress` gets a line
/// before each run.
///
/// # Errors
/// When a server or worker cannot be started, or a run cannot connect.
pub fn run(settings: &Settings, mut progress: impl FnMut(&str)) -> anyhow::Result<Outcome> {
    ensure!(settings.reps > 0, "--reps must be at least 1");
    ensure!(settings.workers > 0, "--workers must be at least 1");
    ensure!(settings.connections > 0, "--connections must be at least 1");
    let bin_dir = match &settings.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()
            .context("finding this binary")?
            .parent()
            .context("this binary's directory")?
            .to_path_buf(),
    };
    // This process holds one end of every client connection.
    spillway_loadgen::nofile::raise_nofile_limit(u64::from(settings.connections))?;
    let cores = crate::machine::cores();
    let machine = format!(
        "{} cores ({}), {}",
        cores,
        crate::machine::cpu_model().unwrap_or_else(|| "CPU model unknown".to_owned()),
        if crate::machine::DEBUG_BUILD {
            "DEBUG build: these figures mean nothing"
        } else {
            "release build"
        }
    );
    let spillway = SpillwaySide::start(settings, &bin_dir)?;
    let nats = NatsSide::start(settings, &bin_dir)?;
    progress(&format!(
        "spillway serve at {} with {} echo workers; {} at {} with {} echo workers",
        spillway.address, settings.workers, nats.version, nats.url, settings.workers
    ));

    let cells: Vec<Cell> = settings
        .rates
        .iter()
        .map(|&rate| Cell::OpenLoop(rate))
        .chain([Cell::ClosedLoop(settings.window)])
        .collect();
    let mut records = Vec::new();
    let mut delivered_all: BTreeMap<System, u64> = BTreeMap::new();
    for rep in 1..=settings.reps {
        for &cell in &cells {
            let order = if rep % 2 == 1 {
                [System::Spillway, System::Nats]
            } else {
                [System::Nats, System::Spillway]
            };
            for system in order {
                progress(&format!(
                    "rep {rep}/{}: {}: {}",
                    settings.reps,
                    cell.title(settings),
                    system.name()
                ));
                let plan = plan(settings, cell);
                let (report, delivered) = match system {
                    System::Spillway => {
                        let target = TcpSystem::connect(TcpSettings::new(
                            spillway.address,
                            settings.connections,
                        ))?;
                        let result = run_with_target(target, &plan)
                            .with_context(|| format!("spillway, {}", cell.title(settings)))?;
                        let info = info(target_name(spillway.address), cell);
                        (RunReport::new(&info, &result), result.all.delivered)
                    }
                    System::Nats => {
                        let target = NatsSystem::connect(NatsSettings {
                            url: nats.url.clone(),
                            subject: SUBJECT.to_owned(),
                            connections: settings.connections,
                            threads: settings.nats_client_threads,
                            request_timeout: Duration::from_secs(5),
                        })?;
                        let result = run_with_target(target, &plan)
                            .with_context(|| format!("NATS, {}", cell.title(settings)))?;
                        let info = info(nats.url.clone(), cell);
                        (RunReport::new(&info, &result), result.all.delivered)
                    }
                };
                *delivered_all.entry(system).or_default() += delivered;
                records.push(Record {
                    rep,
                    cell,
                    system,
                    report,
                });
            }
        }
    }

    let mut problems = Vec::new();
    for record in &records {
        let what = format!(
            "rep {} {:?} {}",
            record.rep,
            record.cell,
            record.system.name()
        );
        if let Some(failure) = record.report.echo_failure() {
            problems.push(format!("{what}: {failure}"));
        }
        if !record.report.reconciled {
            problems.push(format!(
                "{what}: counts do not reconcile: {}",
                record.report.reconcile_errors.join("; ")
            ));
        }
    }
    let nats_version = nats.version.clone();
    let (mut stopped, spillway_problems) =
        spillway.stop(delivered_all.get(&System::Spillway).copied().unwrap_or(0))?;
    let (nats_said, nats_problems) =
        nats.stop(delivered_all.get(&System::Nats).copied().unwrap_or(0))?;
    stopped.extend(nats_said);
    problems.extend(spillway_problems);
    problems.extend(nats_problems);
    Ok(Outcome {
        settings: settings.clone(),
        machine,
        nats_version,
        records,
        stopped,
        problems,
    })
}

fn info(target: String, cell: Cell) -> RunInfo {
    RunInfo {
        scenario: match cell {
            Cell::OpenLoop(_) => "workers-vs-nats-open-loop",
            Cell::ClosedLoop(_) => "workers-vs-nats-max-throughput",
        }
        .to_owned(),
        target,
        profile: "the server's".to_owned(),
        capacity: None,
        overload: None,
    }
}

/// `1,234,567`.
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.round());
    let (sign, digits) = digits
        .strip_prefix('-')
        .map_or(("", digits.as_str()), |rest| ("-", rest));
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    format!("{sign}{out}")
}

/// One figure of a run, and how to write it.
struct Figure {
    name: &'static str,
    value: fn(&Record) -> f64,
    text: fn(f64) -> String,
    /// Whether more is better (throughput) or fewer (latency, errors).
    higher_is_better: bool,
}

fn latency_text(ns: f64) -> String {
    format_ns(ns as u64)
}

fn count_text(count: f64) -> String {
    thousands(count)
}

const FIGURES: [Figure; 6] = [
    Figure {
        name: "sent msg/s",
        value: |record| record.report.achieved_rate,
        text: count_text,
        higher_is_better: true,
    },
    Figure {
        name: "delivered msg/s",
        value: |record| record.report.delivered_rate,
        text: count_text,
        higher_is_better: true,
    },
    Figure {
        name: "latency p50",
        value: |record| record.report.latency_us.p50.0 as f64,
        text: latency_text,
        higher_is_better: false,
    },
    Figure {
        name: "latency p99",
        value: |record| record.report.latency_us.p99.0 as f64,
        text: latency_text,
        higher_is_better: false,
    },
    Figure {
        name: "latency p99.9",
        value: |record| record.report.latency_us.p999.0 as f64,
        text: latency_text,
        higher_is_better: false,
    },
    Figure {
        name: "errors (failed, refused, lost, not the echo)",
        value: |record| record.errors() as f64,
        text: count_text,
        higher_is_better: false,
    },
];

/// `2.67x`; below 0.1, `1/385` (a p50 of 35 us against 13 ms is not `0.00x`).
fn ratio_text(ratio: f64) -> String {
    if ratio > 0.0 && ratio < 0.1 {
        format!("1/{:.0}", 1.0 / ratio)
    } else {
        format!("{ratio:.2}x")
    }
}

/// The table: one section per cell, a row per figure, median [min–max] per system and the
/// ratio spillway / NATS (per repetition, then summarised).
pub fn table(outcome: &Outcome) -> String {
    let settings = &outcome.settings;
    let mut out = format!(
        "workers-vs-nats: {} client connections, {} B payloads (every echo checked byte for byte), {} echo workers each, {} s measured after {} s warm-up, {} reps interleaved: median [min–max]\nmachine: {}\npeer: {}\n",
        thousands(settings.connections as f64),
        settings.payload_bytes,
        settings.workers,
        settings.duration_s,
        settings.warmup_s,
        settings.reps,
        outcome.machine,
        outcome.nats_version,
    );
    let mut cells: Vec<Cell> = outcome.records.iter().map(|record| record.cell).collect();
    cells.sort();
    cells.dedup();
    for cell in cells {
        out.push_str(&format!(
            "\n{}\n| | {} | {} | spillway / NATS |\n|---|---|---|---|\n",
            cell.title(settings),
            System::Spillway.name(),
            System::Nats.name()
        ));
        let of = |system: System| -> Vec<&Record> {
            let mut records: Vec<&Record> = outcome
                .records
                .iter()
                .filter(|record| record.cell == cell && record.system == system)
                .collect();
            records.sort_by_key(|record| record.rep);
            records
        };
        let (spillway, nats) = (of(System::Spillway), of(System::Nats));
        for figure in &FIGURES {
            if figure.name == "sent msg/s" && matches!(cell, Cell::ClosedLoop(_)) {
                continue;
            }
            let values = |records: &[&Record]| {
                records
                    .iter()
                    .map(|record| (figure.value)(record))
                    .collect::<Vec<_>>()
            };
            let (ours, theirs) = (values(&spillway), values(&nats));
            let cell_text = |samples: &[f64]| spread(samples, figure.text);
            let ratios: Vec<f64> = ours
                .iter()
                .zip(&theirs)
                .filter(|(_, &theirs)| theirs > 0.0)
                .map(|(&ours, &theirs)| ours / theirs)
                .collect();
            let ratio = Summary::of(&ratios).map_or_else(
                || "n/a".to_owned(),
                |summary| {
                    let better = if figure.higher_is_better {
                        summary.median > 1.0
                    } else {
                        summary.median < 1.0
                    };
                    let text = summary.text(ratio_text);
                    if better {
                        format!("**{text}**")
                    } else {
                        text
                    }
                },
            );
            out.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                figure.name,
                cell_text(&ours),
                cell_text(&theirs),
                ratio
            ));
        }
    }
    out.push_str("\nlatency: from each message's intended send time (open loop) or send (closed loop) to its reply, HDR; ratio in bold where spillway is better.\n");
    if !outcome.stopped.is_empty() {
        out.push_str("\nwhen stopped:\n");
        for line in &outcome.stopped {
            out.push_str(&format!("  {line}\n"));
        }
    }
    if outcome.problems.is_empty() {
        out.push_str("\nevery response was its payload, byte for byte; every count reconciles\n");
    } else {
        out.push_str("\nPROBLEMS:\n");
        for problem in &outcome.problems {
            out.push_str(&format!("  {problem}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(-50000.0), "-50,000");
    }

    #[test]
    fn small_ratios_are_written_as_fractions() {
        assert_eq!(ratio_text(2.666), "2.67x");
        assert_eq!(ratio_text(0.4), "0.40x");
        assert_eq!(ratio_text(0.0026), "1/385");
        assert_eq!(ratio_text(0.0), "0.00x");
    }

    #[test]
    fn count_before_reads_the_number_before_a_word() {
        let line = "  workers: 0 open (4 ever), credit 256 free of 256, 10 works sent, 1234 answers (mean 5 ns, max 9 ns)";
        assert_eq!(count_before(line, " answers"), Some(1234));
        assert_eq!(count_before("no number answers", " answers"), None);
    }
}
