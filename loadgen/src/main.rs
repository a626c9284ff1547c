//! `loadgen`: drives Spillway with a named scenario and reports what happened.
//!
//! `cargo run --release -p spillway-loadgen` runs the saturation scenario (15,000
//! connections, 500K msg/s offered, 1 s warm-up then 10 s measured) against the in-process
//! engine and prints the report; `--target tcp://HOST:PORT` runs it over real sockets
//! against a server speaking `docs/PROTOCOL.md`, and several `--target`s (with `--split`)
//! against several servers at once. `--help` lists the flags.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser};
use serde::Serialize;
use spillway::config::{Config, Profile};
use spillway::message::TenantId;
use spillway_loadgen::generator::{
    calibrate_capacity, calibrate_capacity_with, run_inproc, run_with_target, Phase, RunPlan,
};
use spillway_loadgen::payload::PayloadPlan;
use spillway_loadgen::report::{self, RunInfo, RunReport};
use spillway_loadgen::scenario::{self, Offered, Scenario};
use spillway_loadgen::tcp::{self, TcpSettings, TcpSystem};

const DEFAULT_SCENARIO: &str = "saturation";
const DEFAULT_DURATION_S: f64 = 10.0;
const DEFAULT_WARMUP_S: f64 = 1.0;
const DEFAULT_PROBE_MS: u64 = 10;
const DEFAULT_PRIORITY_MIX: [u32; 4] = [1, 49, 30, 20];
/// Length of the closed-loop calibration run that measures capacity for `--overload`.
const CALIBRATION_S: f64 = 1.0;
/// What `--scenario` takes besides the scenarios' names: every scenario, in order.
const ALL_SCENARIOS: &str = "all";

/// Drives Spillway with a named scenario and reports what happened.
///
/// With no flags: the saturation scenario (15000 connections, 500K msg/s offered) against
/// the in-process engine, 1 s warm-up (run, not recorded) then 10 s measured; prints a
/// progress line every second to stderr and a table to stdout. Flags whose default is "the
/// scenario's" take the chosen scenario's setting when not given.
#[derive(Debug, Parser)]
#[command(name = "loadgen")]
struct Options {
    /// What to drive: inproc, the engine in this process, or tcp://HOST:PORT, a server
    /// speaking docs/PROTOCOL.md over one TCP connection per simulated connection.
    ///
    /// The server is `spillway serve` or spillway-bench's baseline-serve. --shards,
    /// --service-ns, --profile and --config set up the in-process engine only. Give
    /// --target tcp://HOST:PORT several times to drive several servers at once: the
    /// connections, and with them the offered rate, are split among them (--split), and the
    /// report has each server's figures and then the total.
    #[arg(
        long = "target",
        value_name = "inproc|tcp://HOST:PORT",
        env = "SPILLWAY_TARGET",
        default_value = "inproc",
        value_parser = parse_target
    )]
    targets: Vec<TargetKind>,
    /// With several --target: each target's weight, in their order (e.g. 70,20,10).
    ///
    /// Target i gets weight_i / sum of the connections (rounded so that they add up to
    /// --connections, each target at least one), and each connection keeps its rate, so
    /// the offered rate splits the same way [default: equal shares].
    #[arg(long, value_name = "W1,W2,...", value_parser = parse_split)]
    split: Option<SplitWeights>,
    /// The tenant every message is sent as.
    #[arg(long, value_name = "ID", default_value_t = 0)]
    tenant: u32,
    /// The scenario to run, or `all` to run every one in order.
    #[arg(long, value_name = "NAME|all", default_value = DEFAULT_SCENARIO, value_parser = scenario_names())]
    scenario: String,
    /// Whether `--scenario` was on the command line (else the default runs, with a note).
    #[arg(skip)]
    scenario_given: bool,
    /// Simulated connections [default: the scenario's].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    connections: Option<u32>,
    /// Offered rate, all connections together, msg/s (open loop) [default: the scenario's].
    #[arg(
        long,
        value_name = "MSGS_PER_S",
        value_parser = clap::value_parser!(u64).range(1..),
        conflicts_with = "overload"
    )]
    rate: Option<u64>,
    /// Measured time, seconds.
    #[arg(long = "duration", value_name = "SECS", default_value_t = DEFAULT_DURATION_S, value_parser = parse_positive_seconds, allow_negative_numbers = true)]
    duration_s: f64,
    /// Run but not recorded, before measuring, seconds (0: none).
    #[arg(long = "warmup", value_name = "SECS", default_value_t = DEFAULT_WARMUP_S, value_parser = parse_seconds, allow_negative_numbers = true)]
    warmup_s: f64,
    /// Engine shards, 0 = automatic [default: the config's].
    #[arg(long, value_name = "N")]
    shards: Option<usize>,
    /// Simulated handler cost per message, ns, busy wait [default: the scenario's].
    #[arg(long, value_name = "NS")]
    service_ns: Option<u64>,
    /// Offer X times the capacity measured by a 1 s closed-loop calibration run [default:
    /// the scenario's, for the overload scenarios].
    ///
    /// The calibration run has the same config, connections and handler cost; capacity is
    /// its delivered msg/s.
    #[arg(long, value_name = "X", value_parser = parse_positive_factor, allow_negative_numbers = true)]
    overload: Option<f64>,
    /// Full health check every MS during the run; 0 disables.
    #[arg(long, value_name = "MS", default_value_t = DEFAULT_PROBE_MS)]
    control_probe_ms: u64,
    /// The probe asks `GET /health` of an admin endpoint (spillway::admin) started on the
    /// in-process engine, over one keep-alive connection, as a load balancer would
    /// (inproc only)
    #[arg(long)]
    control_probe_http: bool,
    /// Each connection keeps one message outstanding and sends the next when it completes
    /// (latency from send).
    #[arg(long)]
    closed_loop: bool,
    /// With --closed-loop: messages outstanding per connection, sent together (pipelining).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1,
        value_parser = clap::value_parser!(u32).range(1..),
        requires = "closed_loop"
    )]
    window: u32,
    /// Priority weights P0,P1,P2,P3 [default: 1,49,30,20 for the priority-mix scenario;
    /// one priority for the others].
    #[arg(long, value_name = "P0,P1,P2,P3", value_parser = parse_priority_mix)]
    priority_mix: Option<[u32; 4]>,
    /// Read completions only every MS, a slow consumer [default: the scenario's].
    #[arg(long, value_name = "MS")]
    consumer_poll_ms: Option<u64>,
    /// Engine profile [default: production, or the --config file's].
    #[arg(long, value_name = "NAME", value_parser = profile_names(), conflicts_with = "config")]
    profile: Option<Profile>,
    /// Engine settings from a TOML file (it names its profile with its `profile` key).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// tcp: longest the connect phase may take, seconds.
    #[arg(
        long = "connect-timeout",
        value_name = "SECS",
        default_value_t = tcp::CONNECT_TIMEOUT_DEFAULT.as_secs_f64(),
        value_parser = parse_positive_seconds,
        allow_negative_numbers = true
    )]
    connect_timeout_s: f64,
    /// Each message carries N bytes, distinct per message (drawn from its connection and
    /// id); the report gives payload bytes per second sent and received.
    #[arg(long, value_name = "N", default_value_t = 0)]
    payload_bytes: u32,
    /// tcp: check every delivered Reply's response against its message's payload, byte for
    /// byte (for a server whose handler echoes); any mismatch fails the run.
    #[arg(long)]
    verify_echo: bool,
    /// Print exactly one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

/// `--split`'s weights, one per `--target`, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
struct SplitWeights(Vec<NonZeroU32>);

/// `--split`: comma-separated weights, each a whole number of at least 1.
fn parse_split(text: &str) -> Result<SplitWeights, String> {
    text.split(',')
        .map(|part| match part.trim().parse::<u32>() {
            Ok(0) => Err(format!(
                "{part:?}: a weight of 0 gives its target nothing; drop the target instead"
            )),
            Ok(weight) => Ok(NonZeroU32::new(weight).expect("not 0")),
            Err(error) => Err(format!("{part:?}: {error}")),
        })
        .collect::<Result<_, _>>()
        .map(SplitWeights)
}

/// What a run drives.
#[derive(Clone, Debug, PartialEq)]
enum TargetKind {
    /// The engine in this process.
    Inproc,
    /// A server at this address.
    Tcp(SocketAddr),
}

/// `--target`'s value: `inproc`, or `tcp://HOST:PORT` resolved to its first address.
fn parse_target(target: &str) -> Result<TargetKind, String> {
    match target {
        "inproc" => Ok(TargetKind::Inproc),
        target if target.starts_with("tcp://") => tcp::parse_target(target)
            .map(TargetKind::Tcp)
            .map_err(|error| format!("{error:#}")),
        other => Err(format!(
            "unknown target {other:?}; inproc or tcp://HOST:PORT"
        )),
    }
}

/// The scenarios' names and `all`, each with its description for `--help`.
fn scenario_names() -> PossibleValuesParser {
    PossibleValuesParser::new(
        scenario::SCENARIOS
            .iter()
            .map(|scenario| PossibleValue::new(scenario.name).help(scenario.description))
            .chain([PossibleValue::new(ALL_SCENARIOS).help("every scenario, in order")]),
    )
}

/// The profiles by name (`Profile::name`), parsed into a `Profile`.
fn profile_names() -> impl TypedValueParser<Value = Profile> {
    PossibleValuesParser::new(Profile::ALL.map(Profile::name)).try_map(|name| name.parse())
}

/// A number of seconds, 0 or more.
fn parse_seconds(text: &str) -> Result<f64, String> {
    let seconds: f64 = text.parse().map_err(|error| format!("{error}"))?;
    if !seconds.is_finite() || seconds < 0.0 {
        return Err("must be a number of seconds, 0 or more".to_string());
    }
    Ok(seconds)
}

/// A number of seconds above 0.
fn parse_positive_seconds(text: &str) -> Result<f64, String> {
    let seconds = parse_seconds(text)?;
    if seconds == 0.0 {
        return Err("must be a positive number of seconds".to_string());
    }
    Ok(seconds)
}

/// `--overload`'s factor: finite and above 0.
fn parse_positive_factor(text: &str) -> Result<f64, String> {
    let times: f64 = text.parse().map_err(|error| format!("{error}"))?;
    if !times.is_finite() || times <= 0.0 {
        return Err("must be a positive factor".to_string());
    }
    Ok(times)
}

/// `--priority-mix`: four comma-separated weights, not all zero.
fn parse_priority_mix(text: &str) -> Result<[u32; 4], String> {
    let weights: Vec<u32> = text
        .split(',')
        .map(|part| {
            part.trim()
                .parse()
                .map_err(|error| format!("{part:?}: {error}"))
        })
        .collect::<Result<_, _>>()?;
    let weights: [u32; 4] = weights
        .try_into()
        .map_err(|_| "give four weights, P0,P1,P2,P3 (e.g. 1,49,30,20)".to_string())?;
    if weights.iter().all(|&weight| weight == 0) {
        return Err("the weights must not all be zero".to_string());
    }
    Ok(weights)
}

/// `args` (the program's name first) parsed and checked; on an error, what clap prints.
fn parse_args<I>(args: I) -> Result<Options, clap::Error>
where
    I: IntoIterator,
    I::Item: Into<OsString> + Clone,
{
    let matches = Options::command().try_get_matches_from(args)?;
    let mut options = Options::from_arg_matches(&matches)?;
    options.scenario_given = matches.value_source("scenario") == Some(ValueSource::CommandLine);
    let inproc = options.targets.contains(&TargetKind::Inproc);
    if inproc && options.targets.len() > 1 {
        return Err(Options::command().error(
            ErrorKind::ArgumentConflict,
            "--target inproc drives the engine in this process and cannot be mixed with other targets: several targets must all be tcp://HOST:PORT",
        ));
    }
    if let Some(SplitWeights(weights)) = &options.split {
        if inproc {
            return Err(Options::command().error(
                ErrorKind::ArgumentConflict,
                "--split divides the connections among servers: it needs --target tcp://HOST:PORT, once per weight",
            ));
        }
        if weights.len() != options.targets.len() {
            return Err(Options::command().error(
                ErrorKind::WrongNumberOfValues,
                format!(
                    "--split gives {} weights for {} targets: give one weight per --target, in their order",
                    weights.len(),
                    options.targets.len()
                ),
            ));
        }
    }
    if let Some(connections) = options.connections {
        if (connections as usize) < options.targets.len() {
            return Err(Options::command().error(
                ErrorKind::ValueValidation,
                format!(
                    "--connections {connections} cannot be split among {} targets: each needs at least one",
                    options.targets.len()
                ),
            ));
        }
    }
    if options.verify_echo && inproc {
        return Err(Options::command().error(
            ErrorKind::ArgumentConflict,
            "--verify-echo checks the responses of a server whose handler echoes: it needs --target tcp://HOST:PORT (the in-process engine's handler answers nothing)",
        ));
    }
    if options.control_probe_http && !inproc {
        return Err(Options::command().error(
            ErrorKind::ArgumentConflict,
            "--control-probe-http starts an admin endpoint on the in-process engine: it needs --target inproc (a TCP server has its own, probed with any HTTP client)",
        ));
    }
    Ok(options)
}

impl Options {
    /// What each message carries, and whether responses are checked.
    fn payload(&self) -> PayloadPlan {
        PayloadPlan {
            bytes: self.payload_bytes,
            verify_echo: self.verify_echo,
        }
    }
}

fn engine_config(options: &Options) -> anyhow::Result<Config> {
    let mut config = match (&options.config, options.profile) {
        (Some(path), _) => {
            Config::from_toml_file(path).with_context(|| format!("--config {}", path.display()))?
        }
        (None, Some(profile)) => Config::for_profile(profile),
        (None, None) => Config::default(),
    };
    if let Some(shards) = options.shards {
        config.shards = shards;
    }
    config.validate().context("engine settings")?;
    Ok(config)
}

fn profile_name(config: &Config) -> String {
    config.profile.name().to_string()
}

/// What a run drives, set up: the in-process engine's settings, or the servers' addresses.
enum Driven {
    Inproc(Box<Config>),
    Tcp {
        /// One, or several that split the connections by `weights`.
        addresses: Vec<SocketAddr>,
        /// One per address; empty: equal shares.
        weights: Vec<NonZeroU32>,
        connect_timeout: Duration,
    },
}

impl Driven {
    /// The handler cost, as the progress lines state it.
    fn handler_cost(&self, service_ns: u64) -> String {
        match self {
            Driven::Inproc(_) => format!("{service_ns} ns"),
            Driven::Tcp { .. } => "the server's".to_string(),
        }
    }

    fn name(&self) -> String {
        match self {
            Driven::Inproc(_) => "inproc".to_string(),
            Driven::Tcp { addresses, .. } => tcp::target_names(addresses),
        }
    }

    /// Connects `connections` connections to the servers (split among them by the
    /// weights), and checks that their frames take `payload`'s messages (and, checking
    /// echoes, their echoes).
    fn connect(&self, connections: u32, payload: PayloadPlan) -> anyhow::Result<TcpSystem> {
        let Driven::Tcp {
            addresses,
            weights,
            connect_timeout,
        } = self
        else {
            bail!("the in-process engine has no connections to open");
        };
        let mut settings = TcpSettings::split(addresses.clone(), weights.clone(), connections);
        settings.connect_timeout = *connect_timeout;
        let system = TcpSystem::connect(settings)?;
        eprintln!(
            "tcp: {connections} connections to {} open in {:.2} s",
            self.name(),
            system.connect_time().as_secs_f64()
        );
        let limit = system.frame_limit();
        let (most, why) = if payload.verify_echo {
            (
                limit.max_payload_bytes().min(limit.max_response_bytes()),
                ", so that the echo fits a Reply",
            )
        } else {
            (limit.max_payload_bytes(), "")
        };
        if payload.bytes > most {
            bail!(
                "--payload-bytes {}: the server's frames ({} bytes) take payloads of up to {most} bytes{why}",
                payload.bytes,
                limit.max_frame_bytes()
            );
        }
        Ok(system)
    }
}

/// What `--scenario all --json` prints: every run's report, in order.
#[derive(Serialize)]
struct AllRuns<'a> {
    scenario: &'static str,
    runs: &'a [RunReport],
}

/// Runs one scenario with the options' overrides and reports it.
fn run_scenario(
    scenario: &Scenario,
    options: &Options,
    driven: &Driven,
) -> anyhow::Result<RunReport> {
    let connections = options.connections.unwrap_or(scenario.connections);
    let service_ns = match driven {
        Driven::Inproc(_) => options.service_ns.unwrap_or(scenario.service_ns),
        Driven::Tcp { .. } => {
            if scenario.service_ns > 0 {
                eprintln!(
                    "{}: the scenario assumes a handler cost of {} ns; over TCP the server's own applies (baseline-serve --service-ns {})",
                    scenario.name, scenario.service_ns, scenario.service_ns
                );
            }
            0
        }
    };
    let overload = options.overload.or(match scenario.offered {
        Offered::CapacityTimes(times) if options.rate.is_none() => Some(times),
        _ => None,
    });
    let payload = options.payload();
    let mut capacity = None;
    let rate = match (options.rate, overload) {
        (Some(rate), _) => rate,
        (None, Some(times)) => {
            eprintln!(
                "{}: measuring capacity ({CALIBRATION_S} s closed loop, {connections} connections, handler {})...",
                scenario.name,
                driven.handler_cost(service_ns)
            );
            let measured = match driven {
                Driven::Inproc(config) => calibrate_capacity(
                    (**config).clone(),
                    connections,
                    service_ns,
                    payload.bytes,
                    CALIBRATION_S,
                )?,
                Driven::Tcp { .. } => calibrate_capacity_with(
                    driven.connect(connections, payload)?,
                    connections,
                    payload.bytes,
                    CALIBRATION_S,
                )?,
            };
            eprintln!(
                "{}: capacity {measured:.0} msg/s; offering {times}x",
                scenario.name
            );
            capacity = Some(measured);
            ((measured * times).round() as u64).max(1)
        }
        (None, None) => match scenario.offered {
            Offered::Rate(rate) => rate,
            Offered::CapacityTimes(_) => unreachable!("handled above"),
        },
    };
    let duration_s = options.duration_s;
    let warmup_s = options.warmup_s;
    let mut phases = Vec::new();
    let first = scenario
        .pre_phase
        .map_or((connections, rate), |pre| (pre.connections, pre.rate));
    if warmup_s > 0.0 {
        phases.push(Phase {
            connections: first.0,
            rate: first.1,
            duration_ns: (warmup_s * 1e9) as u64,
            recorded: false,
        });
    }
    if let Some(pre) = scenario.pre_phase {
        phases.push(Phase {
            connections: pre.connections,
            rate: pre.rate,
            duration_ns: (pre.seconds * 1e9) as u64,
            recorded: false,
        });
    }
    phases.push(Phase {
        connections,
        rate,
        duration_ns: (duration_s * 1e9) as u64,
        recorded: true,
    });
    let plan = RunPlan {
        phases,
        closed_loop: options.closed_loop,
        window: options.window,
        service_ns,
        control_probe_ms: options.control_probe_ms,
        probe_over_http: options.control_probe_http,
        priority_weights: options
            .priority_mix
            .or(scenario.priority_mix.then_some(DEFAULT_PRIORITY_MIX)),
        consumer_poll_ns: options
            .consumer_poll_ms
            .unwrap_or(scenario.consumer_poll_ms)
            * 1_000_000,
        progress: true,
        drain_timeout: Duration::from_secs(10),
        payload,
        tenant: TenantId(options.tenant),
    };
    eprintln!(
        "{}: {} connections, {} msg/s offered{}, handler {}, warm-up {} s{} then {} s measured",
        scenario.name,
        connections,
        rate,
        if options.closed_loop {
            " (ignored: closed loop)"
        } else {
            ""
        },
        driven.handler_cost(service_ns),
        warmup_s,
        scenario
            .pre_phase
            .map(|pre| format!(
                " + {} s lead-in at {} conns/{} msg/s",
                pre.seconds, pre.connections, pre.rate
            ))
            .unwrap_or_default(),
        duration_s,
    );
    let mut info = RunInfo {
        scenario: scenario.name.to_string(),
        target: driven.name(),
        profile: String::new(),
        capacity,
        overload,
    };
    match driven {
        Driven::Inproc(config) => {
            info.profile = profile_name(config);
            let result = run_inproc((**config).clone(), &plan)?;
            Ok(RunReport::new(&info, &result))
        }
        Driven::Tcp { .. } => {
            info.profile = "the server's".to_string();
            // Every phase's connections are open from the start.
            let most = plan
                .phases
                .iter()
                .map(|phase| phase.connections)
                .max()
                .unwrap_or(connections);
            let system = driven.connect(most, payload)?;
            let result = run_with_target(system, &plan)?;
            Ok(RunReport::new(&info, &result))
        }
    }
}

fn run(options: &Options) -> anyhow::Result<bool> {
    let addresses: Vec<SocketAddr> = options
        .targets
        .iter()
        .filter_map(|target| match target {
            TargetKind::Tcp(address) => Some(*address),
            TargetKind::Inproc => None,
        })
        .collect();
    // `parse_args` lets inproc stand only alone.
    let driven = if addresses.is_empty() {
        Driven::Inproc(Box::new(engine_config(options)?))
    } else {
        let ignored: Vec<&str> = [
            ("--shards", options.shards.is_some()),
            ("--service-ns", options.service_ns.is_some()),
            ("--profile", options.profile.is_some()),
            ("--config", options.config.is_some()),
        ]
        .into_iter()
        .filter_map(|(flag, given)| given.then_some(flag))
        .collect();
        if !ignored.is_empty() {
            eprintln!(
                "loadgen: {}: in-process engine settings, ignored with a tcp target (the server runs with its own)",
                ignored.join(", ")
            );
        }
        Driven::Tcp {
            addresses,
            weights: options
                .split
                .clone()
                .map(|SplitWeights(weights)| weights)
                .unwrap_or_default(),
            connect_timeout: Duration::from_secs_f64(options.connect_timeout_s),
        }
    };
    let name = options.scenario.as_str();
    let scenarios: Vec<Scenario> = if name == ALL_SCENARIOS {
        scenario::SCENARIOS.to_vec()
    } else {
        vec![scenario::find(name).ok_or_else(|| {
            anyhow!(
                "--scenario: unknown scenario {name:?}; one of: {}, {ALL_SCENARIOS}",
                scenario::names()
            )
        })?]
    };
    if !options.scenario_given {
        eprintln!("no --scenario given: running {DEFAULT_SCENARIO} (the default)");
    }
    let mut all_passed = true;
    let mut reports = Vec::new();
    for scenario in &scenarios {
        let report = run_scenario(scenario, options, &driven)?;
        if !report.reconciled {
            all_passed = false;
            eprintln!(
                "ERROR: {}: counts do not reconcile: {}",
                scenario.name,
                report.reconcile_errors.join("; ")
            );
        }
        if let Some(failure) = report.echo_failure() {
            all_passed = false;
            eprintln!("ERROR: {}: {failure}", scenario.name);
        }
        if options.json {
            reports.push(report);
        } else {
            print!("{}", report.to_table());
        }
    }
    if options.json {
        if name == ALL_SCENARIOS {
            let all = AllRuns {
                scenario: ALL_SCENARIOS,
                runs: &reports,
            };
            report::print_json(&all)?;
        } else {
            report::print_json(reports.first().expect("one run"))?;
        }
    }
    Ok(all_passed)
}

fn main() -> ExitCode {
    let options = parse_args(std::env::args_os()).unwrap_or_else(|error| error.exit());
    match run(&options) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("loadgen: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `flags` parsed as the command line, the program's name put first.
    fn parse(flags: &[&str]) -> Result<Options, clap::Error> {
        parse_args(std::iter::once("loadgen").chain(flags.iter().copied()))
    }

    /// The message clap would print for `flags`.
    fn error(flags: &[&str]) -> String {
        parse(flags).unwrap_err().to_string()
    }

    #[test]
    fn cli_is_consistent() {
        Options::command().debug_assert();
    }

    #[test]
    fn no_flags_give_the_defaults() {
        let options = parse(&[]).unwrap();
        assert_eq!(options.targets, [TargetKind::Inproc]);
        assert_eq!((&options.split, options.tenant), (&None, 0));
        assert_eq!(options.scenario, DEFAULT_SCENARIO);
        assert!(!options.scenario_given);
        assert_eq!(options.duration_s, DEFAULT_DURATION_S);
        assert_eq!(options.warmup_s, DEFAULT_WARMUP_S);
        assert_eq!(options.control_probe_ms, DEFAULT_PROBE_MS);
        assert_eq!(options.window, 1);
        assert_eq!(
            Duration::from_secs_f64(options.connect_timeout_s),
            tcp::CONNECT_TIMEOUT_DEFAULT
        );
        assert_eq!((options.connections, options.rate), (None, None));
        assert_eq!((options.profile, &options.config), (None, &None));
        assert_eq!(options.payload(), PayloadPlan::default());
        assert!(!options.closed_loop && !options.json);
    }

    #[test]
    fn flags_parse_and_bad_ones_are_named() {
        let options = parse(&[
            "--scenario=light",
            "--rate",
            "1000",
            "--closed-loop",
            "--window=4",
            "--priority-mix",
            "1, 2,3,4",
            "--profile",
            "high-throughput",
            "--warmup",
            "0",
        ])
        .unwrap();
        assert_eq!(options.scenario, "light");
        assert!(options.scenario_given);
        assert_eq!(options.rate, Some(1000));
        assert!(options.closed_loop);
        assert_eq!(options.window, 4);
        assert_eq!(options.priority_mix, Some([1, 2, 3, 4]));
        assert_eq!(options.profile, Some(Profile::HighThroughput));
        assert_eq!(options.warmup_s, 0.0);
        assert_eq!(parse(&["--scenario", "all"]).unwrap().scenario, "all");
        let message = error(&["--bogus"]);
        assert!(
            message.contains("unexpected argument '--bogus'"),
            "{message}"
        );
        let message = error(&["--rate", "fast"]);
        assert!(
            message.contains("'fast'") && message.contains("--rate"),
            "{message}"
        );
        let message = error(&["--scenario", "nope"]);
        assert!(
            message.contains("--scenario") && message.contains("saturation"),
            "{message}"
        );
        let message = error(&["--priority-mix", "1,2,3"]);
        assert!(message.contains("give four weights"), "{message}");
        let message = error(&["--priority-mix", "0,0,0,0"]);
        assert!(message.contains("not all be zero"), "{message}");
        let message = error(&["--duration", "-1"]);
        assert!(
            message.contains("--duration") && message.contains("0 or more"),
            "{message}"
        );
        let message = error(&["--profile", "fast"]);
        assert!(
            message.contains("--profile") && message.contains("production"),
            "{message}"
        );
        for bad in [
            &["--duration"][..],
            &["--duration", "0"],
            &["--duration", "-1"],
            &["--duration", "inf"],
            &["--connect-timeout", "0"],
            &["--connections", "0"],
            &["--rate", "0"],
            &["--overload", "0"],
            &["--overload", "NaN"],
            &["--priority-mix", "1,2,x,4"],
            &["--rate", "5", "--overload", "2"],
            &["--window", "2"],
            &["--closed-loop", "--window", "0"],
            &["--profile", "staging", "--config", "x.toml"],
            &["--json=yes"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    /// The command lines README.md, docs/ and scripts/ give (scripts' variables filled in).
    #[test]
    fn documented_invocations_parse() {
        for flags in [
            &[][..],
            &["--json"],
            &["--scenario", "priority-mix", "--overload", "0.1"],
            &[
                "--scenario",
                "overload-5x",
                "--config",
                "config/production.toml",
            ],
            &["--scenario", "light", "--duration", "10", "--json"],
            &["--scenario", "saturation", "--duration", "5"],
            &["--scenario", "overload-2x", "--duration", "60", "--json"],
            &["--closed-loop", "--window", "16"],
            &[
                "--target",
                "tcp://127.0.0.1:7878",
                "--scenario",
                "saturation",
                "--duration",
                "5",
                "--warmup",
                "1",
            ],
            &[
                "--target",
                "tcp://127.0.0.1:7878",
                "--scenario",
                "light",
                "--connections",
                "1000",
                "--closed-loop",
                "--window",
                "16",
                "--duration",
                "5",
                "--warmup",
                "1",
                "--payload-bytes",
                "64",
                "--verify-echo",
            ],
            &[
                "--target",
                "tcp://127.0.0.1:7878",
                "--scenario",
                "light",
                "--connections",
                "15000",
                "--rate",
                "100000",
                "--duration",
                "10",
                "--warmup",
                "2",
                "--payload-bytes",
                "64",
                "--verify-echo",
            ],
            &[
                "--target",
                "tcp://127.0.0.1:7001",
                "--target",
                "tcp://127.0.0.1:7002",
                "--target",
                "tcp://127.0.0.1:7003",
                "--split",
                "70,20,10",
                "--tenant",
                "7",
                "--scenario",
                "light",
                "--rate",
                "150000",
                "--duration",
                "10",
            ],
            &[
                "--target",
                "tcp://127.0.0.1:7878",
                "--scenario",
                "priority-mix",
                "--overload",
                "5",
                "--connections",
                "1000",
                "--duration",
                "5",
                "--warmup",
                "1",
            ],
        ] {
            if let Err(error) = parse(flags) {
                panic!("{flags:?}: {error}");
            }
        }
    }

    #[test]
    fn targets_parse() {
        let options = parse(&["--target", "tcp://127.0.0.1:7878", "--connect-timeout=5"]).unwrap();
        assert_eq!(
            options.targets,
            [TargetKind::Tcp("127.0.0.1:7878".parse().unwrap())]
        );
        assert_eq!(options.connect_timeout_s, 5.0);
        assert_eq!(parse_target("inproc").unwrap(), TargetKind::Inproc);
        let message = error(&["--target", "udp://x"]);
        assert!(message.contains("unknown target"), "{message}");
        assert!(parse(&["--target", "tcp://127.0.0.1"]).is_err());
    }

    /// `weights` as `--split` holds them.
    fn weights(weights: &[u32]) -> SplitWeights {
        SplitWeights(
            weights
                .iter()
                .map(|&weight| NonZeroU32::new(weight).unwrap())
                .collect(),
        )
    }

    #[test]
    fn several_targets_parse_with_a_split_and_a_tenant() {
        let options = parse(&[
            "--target",
            "tcp://127.0.0.1:7001",
            "--target=tcp://127.0.0.1:7002",
            "--target",
            "tcp://127.0.0.1:7003",
            "--split",
            "70, 20,10",
            "--tenant",
            "42",
        ])
        .unwrap();
        assert_eq!(
            options.targets,
            ["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"]
                .map(|address| TargetKind::Tcp(address.parse().unwrap()))
        );
        assert_eq!(options.split, Some(weights(&[70, 20, 10])));
        assert_eq!(options.tenant, 42);
        // Without --split: equal shares, decided when connecting.
        let options = parse(&[
            "--target=tcp://127.0.0.1:7001",
            "--target=tcp://127.0.0.1:7002",
        ])
        .unwrap();
        assert_eq!((options.targets.len(), &options.split), (2, &None));
        // A split of one is no split, but not wrong.
        assert!(parse(&["--target=tcp://127.0.0.1:7001", "--split=3"]).is_ok());
        assert!(parse(&["--tenant", "-1"]).is_err());
        assert!(parse(&["--tenant", "4294967296"]).is_err());
    }

    #[test]
    fn a_bad_split_is_a_clap_error_that_says_why() {
        let two = [
            "--target=tcp://127.0.0.1:7001",
            "--target=tcp://127.0.0.1:7002",
        ];
        let with = |split: &str| {
            let mut flags = two.to_vec();
            flags.extend(["--split", split]);
            parse(&flags).unwrap_err()
        };
        let error = with("70,20,10");
        assert_eq!(error.kind(), ErrorKind::WrongNumberOfValues);
        let message = error.to_string();
        assert!(
            message.contains("--split gives 3 weights for 2 targets"),
            "{message}"
        );
        let message = with("70").to_string();
        assert!(
            message.contains("--split gives 1 weights for 2 targets"),
            "{message}"
        );
        let error = with("75,0");
        assert_eq!(error.kind(), ErrorKind::ValueValidation);
        let message = error.to_string();
        assert!(
            message.contains("--split") && message.contains("a weight of 0"),
            "{message}"
        );
        for bad in ["75,-25", "75,x", "75,,25", "", "1.5,2"] {
            let error = with(bad);
            assert_eq!(error.kind(), ErrorKind::ValueValidation, "{bad:?}");
            assert!(error.to_string().contains("--split"), "{bad:?}: {error}");
        }
        // inproc mixed with servers, or split.
        let error = parse(&["--target=inproc", "--target=tcp://127.0.0.1:7001"]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::ArgumentConflict);
        assert!(
            error
                .to_string()
                .contains("cannot be mixed with other targets"),
            "{error}"
        );
        let error = parse(&["--target=tcp://127.0.0.1:7001", "--target=inproc"]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::ArgumentConflict);
        let error = parse(&["--split", "1"]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::ArgumentConflict);
        assert!(error.to_string().contains("--split divides"), "{error}");
        let mut flags = two.to_vec();
        flags.extend(["--connections", "1"]);
        let message = parse(&flags).unwrap_err().to_string();
        assert!(
            message.contains("--connections 1 cannot be split among 2 targets"),
            "{message}"
        );
        // The checks that need a tcp target hold for several.
        let mut flags = two.to_vec();
        flags.extend(["--payload-bytes=8", "--verify-echo"]);
        assert!(parse(&flags).is_ok());
        let mut flags = two.to_vec();
        flags.push("--control-probe-http");
        assert!(parse(&flags).is_err());
    }

    #[test]
    fn echo_verification_needs_a_tcp_target() {
        let options = parse(&[
            "--target=tcp://127.0.0.1:7878",
            "--payload-bytes",
            "64",
            "--verify-echo",
        ])
        .unwrap();
        assert_eq!(
            options.payload(),
            PayloadPlan {
                bytes: 64,
                verify_echo: true
            }
        );
        let message = error(&["--payload-bytes=16", "--verify-echo"]);
        assert!(message.contains("--verify-echo"), "{message}");
        assert!(message.contains("--target tcp://HOST:PORT"), "{message}");
        let options = parse(&["--payload-bytes=16"]).unwrap();
        assert_eq!(options.targets, [TargetKind::Inproc]);
        assert!(parse(&["--verify-echo=yes"]).is_err());
        assert!(parse(&["--payload-bytes", "-1"]).is_err());
    }
}
