//! What `e2e` runs: its settings and their defaults, its command line, spillway's
//! configuration for the run, and the plan of each run.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::builder::RangedU64ValueParser;
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};
use spillway::config::{Config, SHARDS_MAX};
use spillway_loadgen::generator::{Phase, RunPlan};

use crate::baseline_tcp::ServeOptions;

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
/// two depths of pipelining. (`--windows`' default says the same, as `--help` shows it:
/// `flags_parse_and_bad_ones_are_named` checks that they agree.)
pub const TCP_WINDOWS_DEFAULT: [u32; 3] = [1, 4, 16];
/// The deepest window `--windows` accepts.
pub const WINDOW_MAX: u32 = 1_000;
/// Most time a run waits for outstanding completions after its last send (loadgen's).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest measured phase or warm-up `e2e` accepts, s: the whole run (four runs, each
/// with its warm-up and drain) stays bounded.
pub const PHASE_S_MAX: f64 = 600.0;
/// The subcommand that runs the baseline's TCP twin (`e2e serve-baseline --listen ADDR`),
/// as `baseline-serve` does; `--tcp` starts it that way as a child process.
pub const SERVE_SUBCOMMAND: &str = "serve-baseline";

/// What `e2e` runs: the flags the in-process and the TCP runs share.
#[derive(Clone, Debug, PartialEq, clap::Args)]
pub struct E2eSettings {
    /// Simulated connections of both measurements.
    #[arg(long, value_name = "N", default_value_t = CONNECTIONS_DEFAULT, value_parser = clap::value_parser!(u32).range(1..))]
    pub connections: u32,
    /// Offered rate of the open-loop measurement, msg/s.
    #[arg(long, value_name = "MSGS_PER_S", default_value_t = RATE_DEFAULT, value_parser = clap::value_parser!(u64).range(1..))]
    pub rate: u64,
    /// Measured seconds of each run.
    #[arg(long = "duration", value_name = "SECS", default_value_t = DURATION_S_DEFAULT, value_parser = parse_measured_seconds, allow_negative_numbers = true)]
    pub duration_s: f64,
    /// Warm-up seconds before each run, run but not recorded.
    #[arg(long = "warmup", value_name = "SECS", default_value_t = WARMUP_S_DEFAULT, value_parser = parse_warmup_seconds, allow_negative_numbers = true)]
    pub warmup_s: f64,
    /// Handler cost per message, ns, busy wait (0 as loadgen's saturation scenario); with
    /// --tcp, the twin's.
    #[arg(long, value_name = "NS", default_value_t = 0)]
    pub service_ns: u64,
    /// Spillway's shards and the baseline's worker threads (with --tcp, the twin's workers)
    /// [default: spillway's automatic choice for this machine].
    #[arg(long, value_name = "N", value_parser = RangedU64ValueParser::<usize>::new().range(1..=SHARDS_MAX as u64))]
    pub shards: Option<usize>,
    /// Spillway's health-check probe interval, ms; 0 disables it.
    #[arg(long, value_name = "MS", default_value_t = CONTROL_PROBE_MS_DEFAULT)]
    pub control_probe_ms: u64,
    /// With --tcp (implies it): the closed loop's messages outstanding per connection, one
    /// run per window and server.
    ///
    /// Max throughput is each server's best; the twin's concurrency limit is raised to
    /// connections x window, so it sheds nothing for lack of permits and its capacity, not
    /// its limit, is measured.
    #[arg(
        long = "windows",
        value_name = "W1,W2,...",
        value_delimiter = ',',
        default_value = "1,4,16",
        value_parser = parse_window
    )]
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

/// Runs spillway, then a tokio/tower baseline (tokio multi-thread runtime, governor keyed
/// limiter per connection, bounded tokio mpsc, tower load-shed + concurrency-limit),
/// driven by loadgen's generator and measured the same way.
///
/// (a) max throughput: closed loop at N connections, delivered msg/s; (b) open loop at
/// RATE msg/s over N connections: achieved rate, refused, latency p50/p99/p99.9/max,
/// generator lag p99. Prints both rows and the ratios (spillway/baseline throughput,
/// baseline p99/spillway p99). Four runs, each WARMUP + DURATION seconds plus the drain;
/// progress goes to stderr.
#[derive(Debug, clap::Parser)]
#[command(name = "e2e", args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    subcommand: Option<Subcommand>,
    #[command(flatten)]
    settings: E2eSettings,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// The TCP rows instead: loadgen's TCP target (real sockets, one per connection)
    /// against the tokio twin and, with --spillway, against spillway's server.
    ///
    /// The twin is baseline-serve, started by e2e as a child process (`e2e
    /// serve-baseline`); --shards sets its workers, --service-ns its handler cost.
    #[arg(long)]
    tcp: bool,
    /// With --tcp (implies it): also measure `spillway serve` running at HOST:PORT, with
    /// its own settings (start it with the same handler cost); without it only the twin is
    /// measured.
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_spillway)]
    spillway: Option<SocketAddr>,
}

/// `e2e`'s subcommands.
#[derive(Debug, clap::Subcommand)]
enum Subcommand {
    /// The tokio TCP twin, as baseline-serve runs it.
    #[command(name = SERVE_SUBCOMMAND)]
    ServeBaseline(ServeOptions),
}

/// What the command line asked for.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Run both measurements.
    Run {
        /// What to run.
        settings: E2eSettings,
        /// One JSON object instead of the table.
        json: bool,
    },
    /// Run both measurements over TCP (`e2e::tcp`).
    RunTcp {
        /// What to run.
        settings: E2eSettings,
        /// Where `spillway serve` runs, if it is to be measured.
        spillway: Option<SocketAddr>,
        /// One JSON object instead of the table.
        json: bool,
    },
    /// Serve as the baseline's TCP twin (`e2e serve-baseline`).
    ServeBaseline(ServeOptions),
}

/// `--spillway`'s address: `HOST:PORT`, with or without `tcp://`.
fn parse_spillway(text: &str) -> Result<SocketAddr, String> {
    spillway_loadgen::tcp::parse_target(text).map_err(|error| format!("{error:#}"))
}

/// A number of seconds in 0..=[`PHASE_S_MAX`].
fn parse_warmup_seconds(text: &str) -> Result<f64, String> {
    let seconds: f64 = text.parse().map_err(|error| format!("{error}"))?;
    if !seconds.is_finite() || seconds < 0.0 {
        return Err("must be a number of seconds, 0 or more".to_string());
    }
    if seconds > PHASE_S_MAX {
        return Err(format!("at most {PHASE_S_MAX} seconds"));
    }
    Ok(seconds)
}

/// A number of seconds above 0, at most [`PHASE_S_MAX`].
fn parse_measured_seconds(text: &str) -> Result<f64, String> {
    let seconds = parse_warmup_seconds(text)?;
    if seconds == 0.0 {
        return Err("must be a positive number of seconds".to_string());
    }
    Ok(seconds)
}

/// One of `--windows`' windows: 1 to [`WINDOW_MAX`] messages (spaces around it allowed).
fn parse_window(text: &str) -> Result<u32, String> {
    let window: u32 = text
        .trim()
        .parse()
        .map_err(|error| format!("{text:?}: {error}"))?;
    if window == 0 || window > WINDOW_MAX {
        return Err(format!("each window must be 1 to {WINDOW_MAX} messages"));
    }
    Ok(window)
}

impl Command {
    /// Parses `e2e`'s command line, `args` with the program's name first: `--windows` and
    /// `--spillway` imply `--tcp`.
    ///
    /// # Errors
    /// On an unknown flag, a missing or malformed value, or a value out of range: clap's
    /// error, which `exit` prints (or, for `--help`, the help).
    pub fn parse_from<I>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator,
        I::Item: Into<OsString> + Clone,
    {
        let matches = Cli::command().try_get_matches_from(args)?;
        let windows_given = matches.value_source("tcp_windows") == Some(ValueSource::CommandLine);
        let cli = Cli::from_arg_matches(&matches)?;
        if let Some(Subcommand::ServeBaseline(options)) = cli.subcommand {
            return Ok(Command::ServeBaseline(options));
        }
        if cli.tcp || windows_given || cli.spillway.is_some() {
            return Ok(Command::RunTcp {
                settings: cli.settings,
                spillway: cli.spillway,
                json: cli.json,
            });
        }
        Ok(Command::Run {
            settings: cli.settings,
            json: cli.json,
        })
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
        probe_over_http: false,
        priority_weights: None,
        consumer_poll_ns: 0,
        progress: true,
        drain_timeout: DRAIN_TIMEOUT,
        payload: Default::default(),
        tenant: spillway::message::TenantId(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `flags` parsed as `e2e`'s command line, the program's name put first.
    fn parse(flags: &[&str]) -> Result<Command, clap::Error> {
        Command::parse_from(std::iter::once("e2e").chain(flags.iter().copied()))
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_parse_and_bad_ones_are_named() {
        assert_eq!(
            parse(&[]).unwrap(),
            Command::Run {
                settings: E2eSettings::default(),
                json: false
            }
        );
        let Command::Run { settings, json } = parse(&[
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
        ])
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
        let Command::RunTcp { settings, .. } = parse(&["--windows", "1, 8,64"]).unwrap() else {
            panic!("--windows implies --tcp");
        };
        assert_eq!(settings.tcp_windows, [1, 8, 64]);
        // The default windows, given, still imply --tcp.
        assert!(matches!(
            parse(&["--windows=1,4,16"]).unwrap(),
            Command::RunTcp { .. }
        ));
        let message = parse(&["--bogus"]).unwrap_err().to_string();
        assert!(
            message.contains("unexpected argument '--bogus'"),
            "{message}"
        );
        let message = parse(&["--windows", "1001"]).unwrap_err().to_string();
        assert!(
            message.contains("--windows") && message.contains("1 to 1000"),
            "{message}"
        );
        let message = parse(&["--duration", "1e9"]).unwrap_err().to_string();
        assert!(
            message.contains("--duration") && message.contains("at most"),
            "{message}"
        );
        for bad in [
            &["--duration"][..],
            &["--duration", "0"],
            &["--warmup", "-1"],
            &["--rate", "fast"],
            &["--rate", "0"],
            &["--shards", "0"],
            &["--shards", "100000"],
            &["--connections", "0"],
            &["--json=1"],
            &["--windows", "0"],
            &["--windows", "4,,8"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tcp_flags_choose_the_tcp_rows() {
        let Command::RunTcp {
            settings,
            spillway,
            json,
        } = parse(&["--tcp", "--connections", "10"]).unwrap()
        else {
            panic!("expected a tcp run");
        };
        assert_eq!(settings.connections, 10);
        assert_eq!(spillway, None);
        assert!(!json);
        // --spillway implies --tcp.
        let Command::RunTcp { spillway, .. } =
            parse(&["--spillway", "tcp://127.0.0.1:7878"]).unwrap()
        else {
            panic!("expected a tcp run");
        };
        assert_eq!(spillway, Some("127.0.0.1:7878".parse().unwrap()));
        assert!(parse(&["--spillway"]).is_err());
        assert!(parse(&["--spillway", "nowhere"]).is_err());
        assert!(parse(&["--tcp=1"]).is_err());
        assert!(matches!(
            parse(&["--rate", "5"]).unwrap(),
            Command::Run { .. }
        ));
    }

    /// The command lines README.md and docs/results give, and the one `e2e --tcp` starts
    /// its twin with (`tcp::TwinChild::spawn`).
    #[test]
    fn documented_invocations_parse() {
        for flags in [
            &[][..],
            &["--shards", "1"],
            &["--tcp", "--spillway", "127.0.0.1:7878", "--shards", "1"],
            &["--tcp", "--windows", "1,4,16"],
            &[
                SERVE_SUBCOMMAND,
                "--listen",
                "127.0.0.1:0",
                "--workers",
                "1",
                "--service-ns",
                "0",
                "--concurrency-limit",
                "15000",
            ],
        ] {
            if let Err(error) = parse(flags) {
                panic!("{flags:?}: {error}");
            }
        }
    }

    #[test]
    fn serve_baseline_takes_the_twins_flags() {
        assert_eq!(
            parse(&[
                SERVE_SUBCOMMAND,
                "--listen",
                "127.0.0.1:0",
                "--workers",
                "2",
                "--service-ns",
                "0",
                "--concurrency-limit",
                "64",
            ])
            .unwrap(),
            Command::ServeBaseline(ServeOptions {
                listen: "127.0.0.1:0".parse().unwrap(),
                workers: Some(2),
                service_ns: 0,
                max_connections: None,
                concurrency_limit: Some(64),
            })
        );
        assert!(parse(&[SERVE_SUBCOMMAND]).is_err());
        assert!(parse(&[SERVE_SUBCOMMAND, "--listen", "127.0.0.1:0", "--tcp"]).is_err());
        assert!(parse(&["--tcp", SERVE_SUBCOMMAND, "--listen", "127.0.0.1:0"]).is_err());
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
