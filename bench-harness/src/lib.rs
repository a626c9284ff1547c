//! Spillway measured side by side with its peers, in one process and one run.
//!
//! The measurement code lives here so that the binaries (`compare`: every figure, one
//! table or one JSON object; `e2e`; `scaling`; `baseline-serve`; `waiting`; `workers-vs-nats` and its `nats-echo-worker`; `fleet-quota`) and the criterion benches
//! (`benches/ring.rs`, `benches/bucket.rs`) run the very same loops.
//!
//! # Module map
//!
//! The modules stand in layers; each imports (`use crate::...`) only from layers below its
//! own. `with_ring_peer!` is `rings`' macro (`#[macro_export]` puts it at the crate root, so
//! `crate::with_ring_peer` counts as `rings`). `e2e` is a folder; its files import each
//! other only downward too (`settings`, then `report`, then the runs: `mod.rs` in process,
//! `tcp`).
//!
//! | layer | module | what it is | may import |
//! |---|---|---|---|
//! | 0 | [`stats`] | median, min and max over repetitions | nothing |
//! | 0 | [`machine`] | core pinning, the wait on a full or empty ring, the machine line | nothing |
//! | 0 | [`floor`] | the least a server can do for the wire protocol over mio, one thread (`floor-serve`) | nothing |
//! | 0 | [`baseline_stack`] | what both tokio/tower baselines are made of: settings, runtime, limiter, tower stack, counts | nothing |
//! | 1 | [`report`] | `compare`'s table and JSON object | `stats` |
//! | 1 | [`rings`] | the ring peers behind one trait | `machine` |
//! | 1 | [`bucket_checks`] | ns per token-bucket check, spillway against governor | `machine` |
//! | 1 | [`scaling`] | delivered throughput of the in-process engine as shards are added | `stats` |
//! | 1 | [`baseline`] | the tokio/tower baseline in process, driven by loadgen's generator | `baseline_stack` |
//! | 1 | [`waiting`] | a producer waiting for its completions: polling, parked, async; msg/s and CPU per message | `machine`, `stats` |
//! | 1 | [`nats_peer`] | NATS request/reply as a loadgen target (async-nats, one client per connection) | nothing |
//! | 1 | [`fleet_quota`] | one tenant's fleet-wide limit as the engine's Redis leases against one Redis round trip per message (Envoy's algorithm), one report | `machine`, `stats` |
//! | 1 | [`baseline_tcp`] | its TCP twin, a tokio server speaking spillway's protocol (`baseline-serve`) | `baseline_stack`, `machine` |
//! | 2 | [`ring_throughput`] | one producer, one consumer, `u64` messages | `rings`, `machine` |
//! | 2 | [`ring_latency`] | ping-pong round trips into an HDR histogram | `rings`, `machine` |
//! | 2 | [`admission`] | ns per message through one simulated shard's admission (absolute budgets) | `bucket_checks` |
//! | 2 | [`e2e`] | spillway against the baseline end to end, in process and over TCP, one report | `baseline`, `baseline_tcp`, `baseline_stack`, `machine` |
//! | 2 | [`workers_vs_nats`] | `spillway serve --workers` against NATS request/reply, same workers and load, one report | `nats_peer`, `machine`, `stats` |
//! | 3 | [`suite`] | the whole comparison as `compare` runs it, and its settings | `admission`, `bucket_checks`, `machine`, `report`, `ring_latency`, `ring_throughput`, `rings`, `stats` |
//!
//! Peers are dependencies of this crate only, never of the engine (SPEC 1).
#![warn(missing_docs)]

pub mod admission;
pub mod baseline;
pub mod baseline_stack;
pub mod baseline_tcp;
pub mod bucket_checks;
pub mod e2e;
pub mod fleet_quota;
pub mod floor;
pub mod machine;
pub mod nats_peer;
pub mod report;
pub mod ring_latency;
pub mod ring_throughput;
pub mod rings;
pub mod scaling;
pub mod stats;
pub mod suite;
pub mod waiting;
pub mod workers_vs_nats;
