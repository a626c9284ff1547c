//! `compare`: spillway and its peers measured side by side, in one process and one run.
//!
//! Measures SPSC ring throughput (capacities 1024 and 65536, one message per call and batches
//! of 64) and round-trip latency against rtrb, crossbeam's ArrayQueue, crossbeam-channel and
//! std's sync_channel, and token-bucket checks against governor (clock per check, amortised
//! clock, two threads on one bucket, 15,000 keyed buckets); then spillway's admission pipeline
//! (one simulated shard, 15,000 connections, all three levels on) and its memory per
//! connection against absolute budgets. Prints a table, or with `--json` one JSON object on
//! stdout with every figure, every spillway/peer ratio and every budget; progress goes to
//! stderr. Run it optimised, with the workspace's LTO bench profile:
//!
//! ```text
//! cargo run --profile bench -p spillway-bench --bin compare -- [--json] [--quick] [--reps N] [--messages N]
//! ```
//!
//! Known bias: see each measurement module (`ring_throughput`, `ring_latency`,
//! `bucket_checks`, `admission`); on a machine with two cores, anything else running shares a
//! core with a measured thread, which shows as spread (min–max).

use std::time::Instant;

use clap::Parser;
use spillway_bench::suite::{self, Options};

fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    let settings = options.settings();
    if spillway_bench::machine::DEBUG_BUILD {
        eprintln!(
            "warning: unoptimised build; run with `cargo run --profile bench -p spillway-bench --bin compare`"
        );
    }
    let started = Instant::now();
    let report = suite::run(&settings, |line| eprintln!("[compare] {line}"))?;
    eprintln!("[compare] done in {:.1} s", started.elapsed().as_secs_f64());
    spillway_loadgen::report::print(&report, options.json, || report.to_table())
}
