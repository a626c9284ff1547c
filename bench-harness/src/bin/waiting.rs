//! `waiting`: how a producer waits for its completions (polling with `yield_now`, parked in
//! `wait_completions`, async through a `CompletionStream` or `submit().await`), side by side
//! at one offered rate: delivered msg/s and CPU per message, then the CPU an idle wait
//! costs. See `spillway_bench::waiting` for what is and is not measured.
//!
//! ```text
//! cargo run --release -p spillway-bench --bin waiting -- [--rate N] [--tick-us US]
//!     [--modes poll,wait,stream,submit] [--shards N] [--connections N] [--service-ns NS]
//!     [--warmup-ms MS] [--duration-ms MS] [--idle-ms MS] [--reps N] [--json]
//! ```

use std::time::{Duration, Instant};

use anyhow::bail;
use clap::{Parser, ValueEnum};
use spillway_bench::machine;
use spillway_bench::waiting::{self, Mode, WaitingSettings};

/// One producer offers --rate msg/s, a batch per --tick-us, and waits for its completions
/// each mode's way; delivered msg/s and CPU per delivered message (its thread's and the
/// process's), then the CPU of a wait for --idle-ms with nothing coming. Median [min-max]
/// of --reps runs, the modes interleaved.
#[derive(Parser, Debug)]
#[command(name = "waiting", version)]
struct Options {
    /// Offered msg/s.
    #[arg(long, default_value_t = 500_000, value_parser = clap::value_parser!(u64).range(1..))]
    rate: u64,
    /// One batch per tick, µs.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..))]
    tick_us: u64,
    /// The ways of waiting to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "poll,wait,stream,submit")]
    modes: Vec<ModeArg>,
    /// Shards.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    shards: u64,
    /// Connections the messages go round-robin over.
    #[arg(long, default_value_t = 1_000)]
    connections: u64,
    /// Handler cost per message, ns (busy-wait).
    #[arg(long, default_value_t = 0)]
    service_ns: u64,
    /// Unmeasured lead-in of every load run, ms.
    #[arg(long, default_value_t = 300)]
    warmup_ms: u64,
    /// Measured window of every load run, ms.
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(1..))]
    duration_ms: u64,
    /// The idle wait, ms.
    #[arg(long, default_value_t = 2_000)]
    idle_ms: u64,
    /// Repetitions.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    reps: u64,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

/// A way of waiting, as the command line names it.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum ModeArg {
    /// `poll_completions` and `yield_now`.
    Poll,
    /// `wait_completions`.
    Wait,
    /// `CompletionStream`.
    Stream,
    /// `AsyncIngress::submit().await`.
    Submit,
}

impl ModeArg {
    fn mode(self) -> Mode {
        match self {
            ModeArg::Poll => Mode::Poll,
            ModeArg::Wait => Mode::Wait,
            ModeArg::Stream => Mode::Stream,
            ModeArg::Submit => Mode::Submit,
        }
    }
}

fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    let settings = WaitingSettings {
        rate_per_sec: options.rate,
        tick: Duration::from_micros(options.tick_us),
        connections: options.connections,
        shards: usize::try_from(options.shards)?,
        service_ns: options.service_ns,
        warmup: Duration::from_millis(options.warmup_ms),
        duration: Duration::from_millis(options.duration_ms),
        idle: Duration::from_millis(options.idle_ms),
        reps: usize::try_from(options.reps)?,
    };
    let modes: Vec<Mode> = options.modes.iter().map(|mode| mode.mode()).collect();
    if modes.is_empty() {
        bail!("--modes names no mode");
    }
    if machine::DEBUG_BUILD {
        eprintln!("warning: unoptimised build; run with `cargo run --release -p spillway-bench --bin waiting`");
    }
    let started = Instant::now();
    let report = waiting::run(&settings, &modes)?;
    eprintln!("[waiting] done in {:.1} s", started.elapsed().as_secs_f64());
    spillway_loadgen::report::print(&report, options.json, || report.to_table())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_consistent() {
        Options::command().debug_assert();
    }
}
