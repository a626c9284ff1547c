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

use anyhow::{bail, Context};
use spillway_bench::machine;
use spillway_bench::waiting::{self, Mode, WaitingSettings};

const USAGE: &str = "\
usage: waiting [--rate N] [--tick-us US] [--modes LIST] [--shards N] [--connections N]
               [--service-ns NS] [--warmup-ms MS] [--duration-ms MS] [--idle-ms MS]
               [--reps N] [--json]

One producer offers --rate msg/s, a batch per --tick-us, and waits for its completions
each mode's way; delivered msg/s and CPU per delivered message (its thread's and the
process's), then the CPU of a wait for --idle-ms with nothing coming. Median [min-max] of
--reps runs, the modes interleaved.

  --rate N           offered msg/s (default 500000)
  --tick-us US       one batch per tick (default 1000)
  --modes LIST       comma-separated, of poll, wait, stream, submit (default all)
  --shards N         shards (default 1)
  --connections N    connections the messages go round-robin over (default 1000)
  --service-ns NS    handler cost per message (default 0)
  --warmup-ms MS     unmeasured lead-in of every load run (default 300)
  --duration-ms MS   measured window of every load run (default 2000)
  --idle-ms MS       the idle wait (default 2000)
  --reps N           repetitions (default 3)
  --json             print one JSON object
";

fn number<T: std::str::FromStr>(flag: &str, value: Option<String>) -> anyhow::Result<T> {
    let value = value.with_context(|| format!("{flag} needs a value"))?;
    value
        .parse()
        .ok()
        .with_context(|| format!("{flag} {value:?}: not a valid number"))
}

fn millis(flag: &str, value: Option<String>) -> anyhow::Result<Duration> {
    Ok(Duration::from_millis(number(flag, value)?))
}

type Parsed = (WaitingSettings, Vec<Mode>, bool);

fn parse(mut args: impl Iterator<Item = String>) -> anyhow::Result<Option<Parsed>> {
    let mut settings = WaitingSettings::default();
    let mut modes = Mode::ALL.to_vec();
    let mut json = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--json" => json = true,
            "--rate" => settings.rate_per_sec = number(&arg, args.next())?,
            "--tick-us" => settings.tick = Duration::from_micros(number(&arg, args.next())?),
            "--shards" => settings.shards = number(&arg, args.next())?,
            "--connections" => settings.connections = number(&arg, args.next())?,
            "--service-ns" => settings.service_ns = number(&arg, args.next())?,
            "--warmup-ms" => settings.warmup = millis(&arg, args.next())?,
            "--duration-ms" => settings.duration = millis(&arg, args.next())?,
            "--idle-ms" => settings.idle = millis(&arg, args.next())?,
            "--reps" => settings.reps = number(&arg, args.next())?,
            "--modes" => {
                let list = args.next().context("--modes needs a list")?;
                modes = list
                    .split(',')
                    .map(|name| match name.trim() {
                        "poll" => Ok(Mode::Poll),
                        "wait" => Ok(Mode::Wait),
                        "stream" => Ok(Mode::Stream),
                        "submit" => Ok(Mode::Submit),
                        other => bail!("--modes: {other:?} is not poll, wait, stream or submit"),
                    })
                    .collect::<anyhow::Result<_>>()?;
            }
            other => bail!("unknown argument {other:?}\n\n{USAGE}"),
        }
    }
    if settings.rate_per_sec == 0 || settings.reps == 0 || settings.shards == 0 {
        bail!("--rate, --reps and --shards must be at least 1");
    }
    if settings.tick.is_zero() || settings.duration.is_zero() {
        bail!("--tick-us and --duration-ms must be at least 1");
    }
    Ok(Some((settings, modes, json)))
}

fn main() -> anyhow::Result<()> {
    let Some((settings, modes, json)) = parse(std::env::args().skip(1))? else {
        print!("{USAGE}");
        return Ok(());
    };
    if machine::DEBUG_BUILD {
        eprintln!("warning: unoptimised build; run with `cargo run --release -p spillway-bench --bin waiting`");
    }
    let started = Instant::now();
    let report = waiting::run(&settings, &modes)?;
    eprintln!("[waiting] done in {:.1} s", started.elapsed().as_secs_f64());
    spillway_loadgen::report::print(&report, json, || report.to_table())
}
