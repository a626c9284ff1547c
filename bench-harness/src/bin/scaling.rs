//! `scaling`: the engine's delivered throughput as shards are added (1, 2, 4, 8, 14 by
//! default), with a fixed simulated handler cost; see `spillway_bench::scaling` for what is
//! and is not measured. Prints a table, or with `--json` one JSON object.
//!
//! ```text
//! cargo run --profile bench -p spillway-bench --bin scaling -- [--shards 1,2,4,8,14]
//!     [--producers N] [--connections N] [--service-ns NS] [--window N] [--warmup-ms MS]
//!     [--duration-ms MS] [--reps N] [--no-pin] [--json]
//! ```

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use spillway_bench::machine;
use spillway_bench::scaling::{self, MachineReport, ScalingReport, ScalingSettings};

const USAGE: &str = "\
usage: scaling [--shards LIST] [--producers N] [--connections N] [--service-ns NS]
               [--window N] [--warmup-ms MS] [--duration-ms MS] [--reps N] [--no-pin] [--json]

Delivered msg/s of the in-process engine at each shard count, every handler busy-waiting
--service-ns per message, driven by --producers threads that keep --window messages per shard
outstanding each.

  --shards LIST      comma-separated shard counts (default 1,2,4,8,14)
  --producers N      producer threads, each with its own Ingress (default 2)
  --connections N    simulated connections, split across the producers (default 15000)
  --service-ns NS    handler cost per message (default 1000)
  --window N         outstanding messages per producer per shard (default 512)
  --warmup-ms MS     unmeasured lead-in of every repetition (default 500)
  --duration-ms MS   measured window of every repetition (default 2000)
  --reps N           repetitions per shard count, a fresh engine each (default 3)
  --no-pin           leave shards unpinned
  --json             print one JSON object
";

fn number<T: std::str::FromStr>(flag: &str, value: Option<String>) -> anyhow::Result<T> {
    let value = value.with_context(|| format!("{flag} needs a value"))?;
    value
        .parse()
        .ok()
        .with_context(|| format!("{flag} {value:?}: not a valid number"))
}

fn parse(
    mut args: impl Iterator<Item = String>,
) -> anyhow::Result<Option<(ScalingSettings, bool)>> {
    let mut settings = ScalingSettings::default();
    let mut json = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--json" => json = true,
            "--no-pin" => settings.pinning = false,
            "--shards" => {
                let list = args.next().context("--shards needs a list")?;
                settings.shard_counts = list
                    .split(',')
                    .map(|part| {
                        part.trim()
                            .parse::<usize>()
                            .ok()
                            .filter(|&shards| shards >= 1)
                            .with_context(|| format!("--shards: {part:?} is not a count >= 1"))
                    })
                    .collect::<anyhow::Result<_>>()?;
            }
            "--producers" => settings.producers = number(&arg, args.next())?,
            "--connections" => settings.connections = number(&arg, args.next())?,
            "--service-ns" => settings.service_ns = number(&arg, args.next())?,
            "--window" => settings.window_per_shard = number(&arg, args.next())?,
            "--warmup-ms" => settings.warmup = Duration::from_millis(number(&arg, args.next())?),
            "--duration-ms" => {
                settings.duration = Duration::from_millis(number(&arg, args.next())?)
            }
            "--reps" => settings.reps = number(&arg, args.next())?,
            other => bail!("unknown argument {other:?}\n\n{USAGE}"),
        }
    }
    if settings.producers == 0 || settings.connections == 0 || settings.reps == 0 {
        bail!("--producers, --connections and --reps must be at least 1");
    }
    if settings.duration.is_zero() {
        bail!("--duration-ms must be at least 1");
    }
    Ok(Some((settings, json)))
}

fn main() -> anyhow::Result<()> {
    let Some((settings, json)) = parse(std::env::args().skip(1))? else {
        print!("{USAGE}");
        return Ok(());
    };
    if machine::DEBUG_BUILD {
        eprintln!("warning: unoptimised build; run with `cargo run --profile bench -p spillway-bench --bin scaling`");
    }
    let started = Instant::now();
    let points = scaling::run(&settings, |line| eprintln!("[scaling] {line}"))?;
    eprintln!("[scaling] done in {:.1} s", started.elapsed().as_secs_f64());

    let machine = MachineReport {
        cores: machine::cores(),
        cpu: machine::cpu_model().unwrap_or_else(|| "unknown CPU".to_owned()),
    };
    let report = ScalingReport::new(&settings, machine, &points)?;
    spillway_loadgen::report::print(&report, json, || report.to_table())
}
