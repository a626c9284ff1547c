//! The CPU-cost worker: spins on the clock for `--cost-us` per Work (a real cost, not a
//! sleep: it keeps its core busy, like a service that computes), then answers with the
//! payload (docs/WORKERS.md). With `--wait` it sleeps for the cost instead, like a service
//! that waits on a database: the same service time, without the CPU.
//!
//! `cargo run --release -p spillway --example cpu_worker -- --connect 127.0.0.1:7879 --cost-us 50`

mod common;

use std::process::ExitCode;

use clap::Parser;
use spillway::clock::Clock;
use spillway::workers::protocol::AnswerStatus;

/// The command line.
#[derive(Parser)]
#[command(about = "A Spillway worker that burns a fixed CPU time per message, then echoes it")]
struct Options {
    #[command(flatten)]
    connect: common::Connect,
    /// CPU time spent on each message, in microseconds.
    #[arg(long, default_value_t = 100)]
    cost_us: u64,
    /// Spend the cost asleep instead of computing (one message at a time either way; the
    /// sleep lasts at least the cost, and the timer's slack more)
    #[arg(long)]
    wait: bool,
}

fn main() -> anyhow::Result<ExitCode> {
    let options = Options::parse();
    let clock = Clock::new();
    let cost_ns = options.cost_us * 1_000;
    let wait = options.wait;
    common::run(&options.connect, |work| {
        if wait {
            std::thread::sleep(std::time::Duration::from_nanos(cost_ns));
        } else {
            clock.spin_for_ns(cost_ns);
        }
        (AnswerStatus::Ok, work.payload.clone())
    })
}
