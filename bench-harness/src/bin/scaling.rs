//! `scaling`: the engine's delivered throughput as shards are added (1, 2, 4, 8, 14 by
//! default), with a fixed simulated handler cost; see `spillway_bench::scaling` for what is
//! and is not measured. Prints a table, or with `--json` one JSON object.
//!
//! ```text
//! cargo run --profile bench -p spillway-bench --bin scaling -- [--shards 1,2,4,8,14]
//!     [--producers N] [--connections N] [--service-ns NS] [--window N] [--warmup-ms MS]
//!     [--duration-ms MS] [--reps N] [--no-pin] [--json]
//! ```

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;
use spillway_bench::machine;
use spillway_bench::scaling::{self, ScalingSettings, RATE_PER_CONNECTION_PER_SEC};

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

    let cores = machine::cores();
    let cpu = machine::cpu_model().unwrap_or_else(|| "unknown CPU".to_owned());
    let base = points
        .first()
        .and_then(|point| point.delivered())
        .map(|summary| (points[0].shards, summary.median));
    let mut rows = Vec::new();
    for point in &points {
        let summary = point.delivered().context("a point with no repetitions")?;
        let speedup = base.map(|(base_shards, base_rate)| {
            (
                summary.median / base_rate,
                summary.median / base_rate * base_shards as f64 / point.shards as f64,
            )
        });
        rows.push((point, summary, speedup));
    }
    if json {
        let object = json!({
            "machine": { "cores": cores, "cpu": cpu },
            "producers": settings.producers,
            "connections": settings.connections,
            "service_ns": settings.service_ns,
            "window_per_shard": settings.window_per_shard,
            "rate_per_connection_per_sec": RATE_PER_CONNECTION_PER_SEC,
            "warmup_ms": settings.warmup.as_millis() as u64,
            "duration_ms": settings.duration.as_millis() as u64,
            "reps": settings.reps,
            "points": rows.iter().map(|(point, summary, speedup)| json!({
                "shards": point.shards,
                "threads": point.shards + settings.producers + 1,
                "pinned": point.runs.iter().all(|run| run.pinned),
                "delivered_per_sec": { "median": summary.median, "min": summary.min, "max": summary.max },
                "not_delivered": point.runs.iter().map(|run| run.not_delivered).sum::<u64>(),
                "speedup": speedup.map(|(speedup, _)| speedup),
                "efficiency": speedup.map(|(_, efficiency)| efficiency),
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&object)?);
        return Ok(());
    }
    let mut table = String::new();
    writeln!(
        table,
        "machine: {cores} cores, {cpu}\nhandler: busy-wait {} ns/message; {} producer threads; {} connections; window {} per producer per shard; per-connection rate {} msg/s (not binding)\nmedian of {} repetitions (min-max), {} ms measured after {} ms warm-up each\n",
        settings.service_ns,
        settings.producers,
        settings.connections,
        settings.window_per_shard,
        RATE_PER_CONNECTION_PER_SEC,
        settings.reps,
        settings.duration.as_millis(),
        settings.warmup.as_millis()
    )?;
    writeln!(
        table,
        "| shards | threads | pinned | delivered M msg/s | speedup vs {} | efficiency | not delivered |",
        base.map_or(1, |(shards, _)| shards)
    )?;
    writeln!(table, "|---:|---:|:---:|---:|---:|---:|---:|")?;
    for (point, summary, speedup) in &rows {
        let (speedup, efficiency) = speedup.unwrap_or((f64::NAN, f64::NAN));
        writeln!(
            table,
            "| {} | {} | {} | {:.2} ({:.2}-{:.2}) | {:.2}x | {:.0}% | {} |",
            point.shards,
            point.shards + settings.producers + 1,
            if point.runs.iter().all(|run| run.pinned) {
                "yes"
            } else {
                "no"
            },
            summary.median / 1e6,
            summary.min / 1e6,
            summary.max / 1e6,
            speedup,
            efficiency * 100.0,
            point.runs.iter().map(|run| run.not_delivered).sum::<u64>()
        )?;
    }
    print!("{table}");
    Ok(())
}
