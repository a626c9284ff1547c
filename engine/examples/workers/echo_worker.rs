//! The echo worker: answers each Work with its payload (docs/WORKERS.md).
//!
//! `cargo run --release -p spillway --example echo_worker -- --connect 127.0.0.1:7879`

mod common;

use std::process::ExitCode;

use clap::Parser;
use spillway::workers::protocol::AnswerStatus;

/// The command line.
#[derive(Parser)]
#[command(about = "A Spillway worker that answers each message with its payload")]
struct Options {
    #[command(flatten)]
    connect: common::Connect,
}

fn main() -> anyhow::Result<ExitCode> {
    let options = Options::parse();
    common::run(&options.connect, |work| {
        (AnswerStatus::Ok, work.payload.clone())
    })
}
