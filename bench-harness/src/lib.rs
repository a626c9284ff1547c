//! Spillway measured side by side with its peers, in one process and one run.
//!
//! The measurement code lives here so that the `compare` binary (every figure, one table or
//! one JSON object) and the criterion benches (`benches/ring.rs`, `benches/bucket.rs`) run the
//! very same loops:
//!
//! - [`rings`]: the ring peers behind one trait, so that every harness loop treats spillway's
//!   SPSC ring, rtrb, crossbeam's `ArrayQueue`, crossbeam-channel and std's `sync_channel`
//!   identically (same spin, same batch size, same checks);
//! - [`ring_throughput`]: one producer thread, one consumer thread, `u64` messages;
//! - [`ring_latency`]: ping-pong round trips over two rings, into an HDR histogram;
//! - [`bucket_checks`]: nanoseconds per token-bucket check, spillway against governor;
//! - [`admission`]: nanoseconds per message through one simulated shard's admission
//!   pipeline (no peer: judged against absolute budgets);
//! - [`scaling`]: delivered throughput of the in-process engine as shards are added;
//! - [`suite`]: the whole comparison as `compare` runs it, and its settings;
//! - [`report`]: the table and the JSON object;
//! - [`machine`]: core pinning, the wait on a full or empty ring, and the machine line;
//! - [`stats`]: median, min and max over repetitions;
//! - [`baseline`]: the same workload built with tokio, governor and tower, driven by
//!   loadgen's generator for the `e2e` binary;
//! - [`baseline_tcp`]: the baseline's TCP twin, a tokio server speaking spillway's wire
//!   protocol (`baseline-serve`), for the TCP rows of `e2e --tcp`;
//! - [`e2e`]: the `e2e` run (spillway, then the baseline, at 15K connections), its settings
//!   and its report;
//! - [`e2e_tcp`]: `e2e --tcp`, the same measurements over TCP: loadgen's TCP target against
//!   the twin (in a child process) and `spillway serve`.
//!
//! Peers are dependencies of this crate only, never of the engine (SPEC 1).
#![warn(missing_docs)]

pub mod admission;
pub mod baseline;
pub mod baseline_stack;
pub mod baseline_tcp;
pub mod bucket_checks;
pub mod e2e;
pub mod machine;
pub mod report;
pub mod ring_latency;
pub mod ring_throughput;
pub mod rings;
pub mod scaling;
pub mod stats;
pub mod suite;
