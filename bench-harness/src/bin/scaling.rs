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

use clap::builder::RangedU64ValueParser;
use clap::Parser;
use spillway_bench::machine;
use spillway_bench::scaling::{self, MachineReport, ScalingReport, ScalingSettings};

/// Delivered msg/s of the in-process engine at each shard count, every handler
/// busy-waiting --service-ns per message, driven by --producers threads that keep --window
/// messages per shard outstanding each.
#[derive(Debug, Parser)]
#[command(name = "scaling")]
struct Options {
    /// Comma-separated shard counts, one point each, in order.
    // The default is `ScalingSettings::default()`'s, written as the flag takes it
    // (`defaults_are_the_settings_defaults` checks that they agree).
    #[arg(
        long = "shards",
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "1,2,4,8,14",
        value_parser = parse_shard_count
    )]
    shard_counts: Vec<usize>,
    /// Producer threads, each with its own Ingress.
    #[arg(long, value_name = "N", default_value_t = ScalingSettings::default().producers, value_parser = count_parser())]
    producers: usize,
    /// Simulated connections, split across the producers.
    #[arg(long, value_name = "N", default_value_t = ScalingSettings::default().connections, value_parser = clap::value_parser!(u32).range(1..))]
    connections: u32,
    /// Handler cost per message, ns.
    #[arg(long, value_name = "NS", default_value_t = ScalingSettings::default().service_ns)]
    service_ns: u64,
    /// Outstanding messages per producer per shard.
    #[arg(long = "window", value_name = "N", default_value_t = ScalingSettings::default().window_per_shard)]
    window_per_shard: usize,
    /// Unmeasured lead-in of every repetition, ms.
    #[arg(long, value_name = "MS", default_value_t = millis(ScalingSettings::default().warmup))]
    warmup_ms: u64,
    /// Measured window of every repetition, ms.
    #[arg(
        long,
        value_name = "MS",
        default_value_t = millis(ScalingSettings::default().duration),
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    duration_ms: u64,
    /// Repetitions per shard count, a fresh engine each.
    #[arg(long, value_name = "N", default_value_t = ScalingSettings::default().reps, value_parser = count_parser())]
    reps: usize,
    /// Leave shards unpinned.
    #[arg(long)]
    no_pin: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

impl Options {
    fn settings(&self) -> ScalingSettings {
        ScalingSettings {
            shard_counts: self.shard_counts.clone(),
            producers: self.producers,
            connections: self.connections,
            service_ns: self.service_ns,
            window_per_shard: self.window_per_shard,
            warmup: Duration::from_millis(self.warmup_ms),
            duration: Duration::from_millis(self.duration_ms),
            reps: self.reps,
            pinning: !self.no_pin,
        }
    }
}

/// A count of 1 or more.
fn count_parser() -> RangedU64ValueParser<usize> {
    RangedU64ValueParser::new().range(1..)
}

/// `duration` in whole milliseconds, as the `-ms` flags take it.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// One of `--shards`' counts: 1 or more (spaces around it allowed).
fn parse_shard_count(text: &str) -> Result<usize, String> {
    text.trim()
        .parse::<usize>()
        .ok()
        .filter(|&shards| shards >= 1)
        .ok_or_else(|| format!("{text:?} is not a count >= 1"))
}

fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    let settings = options.settings();
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
    spillway_loadgen::report::print(&report, options.json, || report.to_table())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn parse(flags: &[&str]) -> Result<Options, clap::Error> {
        Options::try_parse_from(std::iter::once("scaling").chain(flags.iter().copied()))
    }

    #[test]
    fn cli_is_consistent() {
        Options::command().debug_assert();
    }

    #[test]
    fn defaults_are_the_settings_defaults() {
        let options = parse(&[]).unwrap();
        assert_eq!(options.settings(), ScalingSettings::default());
        assert!(!options.json);
    }

    #[test]
    fn flags_parse_and_bad_ones_are_named() {
        let options = parse(&[
            "--shards",
            "1, 2,4",
            "--producers",
            "3",
            "--connections=100",
            "--service-ns",
            "0",
            "--window",
            "64",
            "--warmup-ms",
            "0",
            "--duration-ms",
            "100",
            "--reps",
            "1",
            "--no-pin",
            "--json",
        ])
        .unwrap();
        assert!(options.json);
        assert_eq!(
            options.settings(),
            ScalingSettings {
                shard_counts: vec![1, 2, 4],
                producers: 3,
                connections: 100,
                service_ns: 0,
                window_per_shard: 64,
                warmup: Duration::ZERO,
                duration: Duration::from_millis(100),
                reps: 1,
                pinning: false,
            }
        );
        let message = parse(&["--bogus"]).unwrap_err().to_string();
        assert!(
            message.contains("unexpected argument '--bogus'"),
            "{message}"
        );
        let message = parse(&["--shards", "1,0"]).unwrap_err().to_string();
        assert!(
            message.contains("--shards") && message.contains("count >= 1"),
            "{message}"
        );
        for bad in [
            &["--shards"][..],
            &["--shards", "1,,2"],
            &["--producers", "0"],
            &["--connections", "0"],
            &["--reps", "0"],
            &["--duration-ms", "0"],
            &["--window", "many"],
            &["--json=1"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
