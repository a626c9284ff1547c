//! What `e2e` runs: its settings and their defaults, its command line, spillway's
//! configuration for the run, and the plan of each run.

use std::time::Duration;

use anyhow::{bail, Context};
use spillway::config::Config;
use spillway_loadgen::cli::{parse_value, split_flag};
use spillway_loadgen::generator::{Phase, RunPlan};

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
    /// Run both measurements over TCP (`e2e::tcp`).
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
        payload: Default::default(),
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
