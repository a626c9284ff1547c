//! `loadgen`: drives Spillway with a named scenario and reports what happened.
//!
//! `cargo run --release -p spillway-loadgen` runs the saturation scenario (15,000
//! connections, 500K msg/s offered, 1 s warm-up then 10 s measured) against the in-process
//! engine and prints the report; `--target tcp://HOST:PORT` runs it over real sockets
//! against a server speaking `docs/PROTOCOL.md`. `--help` lists the flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde::Serialize;
use spillway::config::{Config, Profile};
use spillway_loadgen::cli::{parse_value, split_flag};
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

const USAGE: &str = "\
usage: loadgen [FLAGS]

With no flags: the saturation scenario (15000 connections, 500K msg/s offered) against the
in-process engine, 1 s warm-up (run, not recorded) then 10 s measured; prints a progress
line every second to stderr and a table to stdout.

  --target inproc|tcp://HOST:PORT   what to drive (default inproc): the engine in this
                                    process, or a server speaking docs/PROTOCOL.md over
                                    one TCP connection per simulated connection (spillway
                                    serve, or spillway-bench's baseline-serve); --shards,
                                    --service-ns, --profile and --config set up the
                                    in-process engine only
  --scenario NAME|all               one of: SCENARIOS; or all (runs them in order)
  --connections N                   simulated connections (overrides the scenario)
  --rate MSGS_PER_S                 offered rate, all connections together (open loop)
  --duration SECS                   measured time (default 10)
  --warmup SECS                     run but not recorded, before measuring (default 1)
  --shards N                        engine shards (default: the config's, 0 = automatic)
  --service-ns NS                   simulated handler cost per message (busy wait)
  --overload X                      offer X times the capacity measured by a 1 s closed-loop
                                    calibration run with the same config, connections and
                                    handler cost (delivered msg/s)
  --control-probe-ms MS             full health check every MS during the run (default 10;
                                    0 disables)
  --closed-loop                     each connection keeps one message outstanding and sends
                                    the next when it completes (latency from send)
  --window N                        with --closed-loop: N messages outstanding per
                                    connection (default 1), sent together (pipelining)
  --priority-mix P0,P1,P2,P3        priority weights (default for priority-mix: 1,49,30,20)
  --consumer-poll-ms MS             read completions only every MS (slow consumer)
  --profile NAME                    engine profile: development, staging, production,
                                    high-throughput (default production)
  --config FILE                     engine settings from a TOML file
  --connect-timeout SECS            tcp: longest the connect phase may take (default 30)
  --payload-bytes N                 each message carries N bytes (default 0), distinct per
                                    message (drawn from its connection and id); the report
                                    gives payload bytes per second sent and received
  --verify-echo                     tcp: check every delivered Reply's response against its
                                    message's payload, byte for byte (for a server whose
                                    handler echoes); any mismatch fails the run
  --json                            print exactly one JSON object instead of the table
  --help                            this text
";

#[derive(Debug, Default)]
struct Options {
    target: Option<String>,
    scenario: Option<String>,
    connections: Option<u32>,
    rate: Option<u64>,
    duration_s: Option<f64>,
    warmup_s: Option<f64>,
    shards: Option<usize>,
    service_ns: Option<u64>,
    overload: Option<f64>,
    control_probe_ms: Option<u64>,
    closed_loop: bool,
    window: Option<u32>,
    priority_mix: Option<[u32; 4]>,
    consumer_poll_ms: Option<u64>,
    profile: Option<String>,
    config: Option<PathBuf>,
    connect_timeout_s: Option<f64>,
    payload_bytes: Option<u32>,
    verify_echo: bool,
    json: bool,
    help: bool,
}

/// What a run drives.
#[derive(Clone, Debug, PartialEq)]
enum TargetKind {
    /// The engine in this process.
    Inproc,
    /// A server at this address.
    Tcp(SocketAddr),
}

impl TargetKind {
    fn parse(target: Option<&str>) -> anyhow::Result<Self> {
        match target {
            None | Some("inproc") => Ok(TargetKind::Inproc),
            Some(target) if target.starts_with("tcp://") => Ok(TargetKind::Tcp(
                tcp::parse_target(target).context("--target")?,
            )),
            Some(other) => {
                bail!("--target: unknown target {other:?}; inproc or tcp://HOST:PORT")
            }
        }
    }
}

fn parse_seconds(flag: &str, value: &str, allow_zero: bool) -> anyhow::Result<f64> {
    let seconds: f64 = parse_value(flag, value)?;
    if !seconds.is_finite() || seconds < 0.0 || (!allow_zero && seconds == 0.0) {
        bail!("{flag}: bad value {value:?}: must be a positive number of seconds");
    }
    Ok(seconds)
}

fn parse_args(args: impl IntoIterator<Item = String>) -> anyhow::Result<Options> {
    let mut options = Options::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = split_flag(&arg);
        let takes_value = match flag.as_str() {
            "--closed-loop" | "--verify-echo" | "--json" | "--help" | "-h" => false,
            "--target" | "--scenario" | "--connections" | "--rate" | "--duration" | "--warmup"
            | "--shards" | "--service-ns" | "--overload" | "--control-probe-ms"
            | "--priority-mix" | "--consumer-poll-ms" | "--profile" | "--config"
            | "--connect-timeout" | "--window" | "--payload-bytes" => true,
            other => bail!("unknown flag {other:?} (see --help)"),
        };
        let value = if takes_value {
            match inline {
                Some(value) => value,
                None => args.next().ok_or_else(|| anyhow!("{flag} needs a value"))?,
            }
        } else {
            if inline.is_some() {
                bail!("{flag} takes no value");
            }
            String::new()
        };
        match flag.as_str() {
            "--target" => options.target = Some(value),
            "--scenario" => options.scenario = Some(value),
            "--connections" => {
                let connections: u32 = parse_value(&flag, &value)?;
                if connections == 0 {
                    bail!("--connections: must be at least 1");
                }
                options.connections = Some(connections);
            }
            "--rate" => {
                let rate: u64 = parse_value(&flag, &value)?;
                if rate == 0 {
                    bail!("--rate: must be at least 1 message per second");
                }
                options.rate = Some(rate);
            }
            "--duration" => options.duration_s = Some(parse_seconds(&flag, &value, false)?),
            "--warmup" => options.warmup_s = Some(parse_seconds(&flag, &value, true)?),
            "--shards" => options.shards = Some(parse_value(&flag, &value)?),
            "--service-ns" => options.service_ns = Some(parse_value(&flag, &value)?),
            "--overload" => {
                let times: f64 = parse_value(&flag, &value)?;
                if !times.is_finite() || times <= 0.0 {
                    bail!("--overload: bad value {value:?}: must be a positive factor");
                }
                options.overload = Some(times);
            }
            "--control-probe-ms" => options.control_probe_ms = Some(parse_value(&flag, &value)?),
            "--closed-loop" => options.closed_loop = true,
            "--window" => {
                let window: u32 = parse_value(&flag, &value)?;
                if window == 0 {
                    bail!("--window: must be at least 1 message per connection");
                }
                options.window = Some(window);
            }
            "--priority-mix" => {
                let weights: Vec<u32> = value
                    .split(',')
                    .map(|part| parse_value(&flag, part.trim()))
                    .collect::<anyhow::Result<_>>()?;
                let weights: [u32; 4] = weights.try_into().map_err(|_| {
                    anyhow!("--priority-mix: give four weights, P0,P1,P2,P3 (e.g. 1,49,30,20)")
                })?;
                if weights.iter().all(|&weight| weight == 0) {
                    bail!("--priority-mix: the weights must not all be zero");
                }
                options.priority_mix = Some(weights);
            }
            "--consumer-poll-ms" => options.consumer_poll_ms = Some(parse_value(&flag, &value)?),
            "--profile" => options.profile = Some(value),
            "--config" => options.config = Some(PathBuf::from(value)),
            "--connect-timeout" => {
                options.connect_timeout_s = Some(parse_seconds(&flag, &value, false)?)
            }
            "--payload-bytes" => options.payload_bytes = Some(parse_value(&flag, &value)?),
            "--verify-echo" => options.verify_echo = true,
            "--json" => options.json = true,
            "--help" | "-h" => options.help = true,
            other => unreachable!("{other} was checked above"),
        }
    }
    if options.rate.is_some() && options.overload.is_some() {
        bail!("--rate and --overload both set the offered rate: give one");
    }
    if options.window.is_some() && !options.closed_loop {
        bail!("--window sets the closed loop's messages per connection: add --closed-loop");
    }
    if options.profile.is_some() && options.config.is_some() {
        bail!("--profile and --config both choose the settings: give one (a file names its profile with its `profile` key)");
    }
    Ok(options)
}

impl Options {
    /// What `--target` names, if the other flags suit it.
    fn target_kind(&self) -> anyhow::Result<TargetKind> {
        let target = TargetKind::parse(self.target.as_deref())?;
        if self.verify_echo && target == TargetKind::Inproc {
            bail!("--verify-echo checks the responses of a server whose handler echoes: it needs --target tcp://HOST:PORT (the in-process engine's handler answers nothing)");
        }
        Ok(target)
    }

    /// What each message carries, and whether responses are checked.
    fn payload(&self) -> PayloadPlan {
        PayloadPlan {
            bytes: self.payload_bytes.unwrap_or(0),
            verify_echo: self.verify_echo,
        }
    }
}

fn engine_config(options: &Options) -> anyhow::Result<Config> {
    let mut config = match (&options.config, &options.profile) {
        (Some(path), _) => {
            Config::from_toml_file(path).with_context(|| format!("--config {}", path.display()))?
        }
        (None, Some(name)) => Config::for_profile(Profile::from_name(name).context("--profile")?),
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

/// What a run drives, set up: the in-process engine's settings, or the server's address.
enum Driven {
    Inproc(Box<Config>),
    Tcp {
        address: SocketAddr,
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
            Driven::Tcp { address, .. } => tcp::target_name(*address),
        }
    }

    /// Connects `connections` connections to the server, and checks that its frames take
    /// `payload`'s messages (and, checking echoes, their echoes).
    fn connect(
        address: SocketAddr,
        connections: u32,
        timeout: Duration,
        payload: PayloadPlan,
    ) -> anyhow::Result<TcpSystem> {
        let mut settings = TcpSettings::new(address, connections);
        settings.connect_timeout = timeout;
        let system = TcpSystem::connect(settings)?;
        eprintln!(
            "tcp: {connections} connections to {address} open in {:.2} s",
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
                Driven::Tcp {
                    address,
                    connect_timeout,
                } => calibrate_capacity_with(
                    Driven::connect(*address, connections, *connect_timeout, payload)?,
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
    let duration_s = options.duration_s.unwrap_or(DEFAULT_DURATION_S);
    let warmup_s = options.warmup_s.unwrap_or(DEFAULT_WARMUP_S);
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
        window: options.window.unwrap_or(1),
        service_ns,
        control_probe_ms: options.control_probe_ms.unwrap_or(DEFAULT_PROBE_MS),
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
        Driven::Tcp {
            address,
            connect_timeout,
        } => {
            info.profile = "the server's".to_string();
            // Every phase's connections are open from the start.
            let most = plan
                .phases
                .iter()
                .map(|phase| phase.connections)
                .max()
                .unwrap_or(connections);
            let system = Driven::connect(*address, most, *connect_timeout, payload)?;
            let result = run_with_target(system, &plan)?;
            Ok(RunReport::new(&info, &result))
        }
    }
}

fn run(options: &Options, target: TargetKind) -> anyhow::Result<bool> {
    let driven = match target {
        TargetKind::Inproc => Driven::Inproc(Box::new(engine_config(options)?)),
        TargetKind::Tcp(address) => {
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
                address,
                connect_timeout: options
                    .connect_timeout_s
                    .map_or(tcp::CONNECT_TIMEOUT_DEFAULT, Duration::from_secs_f64),
            }
        }
    };
    let name = options.scenario.as_deref().unwrap_or(DEFAULT_SCENARIO);
    let scenarios: Vec<Scenario> = if name == "all" {
        scenario::SCENARIOS.to_vec()
    } else {
        vec![scenario::find(name).ok_or_else(|| {
            anyhow!(
                "--scenario: unknown scenario {name:?}; one of: {}, all",
                scenario::names()
            )
        })?]
    };
    if options.scenario.is_none() {
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
        if name == "all" {
            let all = AllRuns {
                scenario: "all",
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
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(error) => {
            eprintln!("loadgen: {error:#}");
            return ExitCode::from(2);
        }
    };
    if options.help {
        print!("{}", USAGE.replace("SCENARIOS", &scenario::names()));
        return ExitCode::SUCCESS;
    }
    let target = match options.target_kind() {
        Ok(target) => target,
        Err(error) => {
            eprintln!("loadgen: {error:#}");
            return ExitCode::from(2);
        }
    };
    match run(&options, target) {
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

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|arg| arg.to_string()).collect()
    }

    #[test]
    fn flags_parse_and_bad_ones_are_named() {
        let options = parse_args(args(&[
            "--scenario=light",
            "--rate",
            "1000",
            "--closed-loop",
            "--priority-mix",
            "1,2,3,4",
        ]))
        .unwrap();
        assert_eq!(options.scenario.as_deref(), Some("light"));
        assert_eq!(options.rate, Some(1000));
        assert!(options.closed_loop);
        assert_eq!(options.priority_mix, Some([1, 2, 3, 4]));
        let error = parse_args(args(&["--bogus"])).unwrap_err().to_string();
        assert!(error.contains("unknown flag \"--bogus\""), "{error}");
        let error = parse_args(args(&["--rate", "fast"]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("--rate: bad value \"fast\""), "{error}");
        assert!(parse_args(args(&["--duration"])).is_err());
        let options = parse_args(args(&[
            "--target",
            "tcp://127.0.0.1:7878",
            "--connect-timeout=5",
        ]))
        .unwrap();
        assert_eq!(
            TargetKind::parse(options.target.as_deref()).unwrap(),
            TargetKind::Tcp("127.0.0.1:7878".parse().unwrap())
        );
        assert_eq!(options.connect_timeout_s, Some(5.0));
        assert_eq!(TargetKind::parse(None).unwrap(), TargetKind::Inproc);
        assert_eq!(
            TargetKind::parse(Some("inproc")).unwrap(),
            TargetKind::Inproc
        );
        let error = TargetKind::parse(Some("udp://x")).unwrap_err().to_string();
        assert!(error.contains("unknown target"), "{error}");
        assert!(TargetKind::parse(Some("tcp://127.0.0.1")).is_err());
        assert!(parse_args(args(&["--rate", "5", "--overload", "2"])).is_err());
    }

    #[test]
    fn echo_verification_needs_a_tcp_target() {
        let options = parse_args(args(&[
            "--target=tcp://127.0.0.1:7878",
            "--payload-bytes",
            "64",
            "--verify-echo",
        ]))
        .unwrap();
        assert!(options.target_kind().is_ok());
        assert_eq!(
            options.payload(),
            PayloadPlan {
                bytes: 64,
                verify_echo: true
            }
        );
        let options = parse_args(args(&["--payload-bytes=16", "--verify-echo"])).unwrap();
        let error = options.target_kind().unwrap_err().to_string();
        assert!(error.contains("--verify-echo"), "{error}");
        assert!(error.contains("--target tcp://HOST:PORT"), "{error}");
        let options = parse_args(args(&["--payload-bytes=16"])).unwrap();
        assert_eq!(options.target_kind().unwrap(), TargetKind::Inproc);
        assert!(parse_args(args(&["--verify-echo=yes"])).is_err());
        let error = parse_args(args(&["--payload-bytes", "-1"]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("--payload-bytes: bad value"), "{error}");
    }
}
