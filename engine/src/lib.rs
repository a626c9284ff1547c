//! Spillway: a lock-free, thread-per-core data-plane engine that keeps a server fast under
//! overload.
//!
//! Start at [`engine::Engine`] (the front door), [`handler::Handler`] (your code, run on
//! the shards) and [`config::Config`] (every setting). A message goes: an
//! [`ingress::Ingress`] puts it on the ring of the shard that owns its connection; the
//! shard's loop (`shard::thread`) admits or refuses it (`shard::core`, through the levels of
//! [`admission`] and [`bucket`]), queues it, runs your handler on it (`shard::run`) and
//! posts exactly one [`outcome::Completion`] back; the [`control`] plane talks to every
//! shard over its own rings between data batches.
//!
//! # Module map
//!
//! The modules stand in layers; each imports only from the modules its row lists, all in
//! lower layers or its own (never in a cycle). `tests/tests/layering.rs` checks this table
//! against every `crate::` path in the code.
//!
//! | layer | module | what it is | may import |
//! |---|---|---|---|
//! | 0 vocabulary | [`message`] | the vocabulary of work: connection, message and tenant ids, priorities, roles, the message itself, the connection-id hasher | - |
//! | 0 vocabulary | [`outcome`] | how a message ended (delivered, failed, refused, shed, cancelled, dropped) and why | `message` |
//! | 0 vocabulary | [`config`] | every setting, its default, its allowed range and its TOML form (`spillway check-config`) | `message` |
//! | 0 vocabulary | `command` | what the control plane and a shard say to each other: commands, replies, drain results, breaker reports and their figures, a shard's worker figures | `message` |
//! | 1 primitives | `sync` | the one switch between std's atomics and loom's | - |
//! | 1 primitives | [`clock`] | monotonic nanoseconds from quanta, read once per batch | - |
//! | 1 primitives | [`ring`] | the bounded rings: SPSC written here, MPMC from crossbeam | `sync` |
//! | 1 primitives | [`bucket`] | the atomic token bucket (GCRA) and its adaptive rate controller | `sync` |
//! | 1 primitives | `backoff` | exponential backoff with full jitter and its random source: the client's retries, the lease thread's reconnects | - |
//! | 1 primitives | `log_limit` | rate limits on log events: at most a few per interval, the rest counted and summarised | - |
//! | 1 primitives | `fault` | panics injected at named points of a shard thread, for tests (feature `fault-injection`) | - |
//! | 1 primitives | `wait` | how an idle thread waits (spin, yield, park) and how it is woken; the doorbell a producer waits on | `config`, `sync` |
//! | 2 admission levels | [`admission`] | the admission levels shared across shards: circuit breaker, priority caps, tenant counts, fleet-wide tenant rates (this process's share) | `bucket`, `command`, `config`, `message`, `sync` |
//! | 2 admission levels | [`metrics`] | the counters of SPEC 3, per shard and published for readers (`Stats`) | `admission`, `command`, `message`, `outcome`, `sync` |
//! | 3 shard | `shard` | one data shard: its connections, queues, admission pipeline, handler runs and thread; the `Handler` API (re-exported as `handler`) | `admission`, `bucket`, `clock`, `command`, `config`, `fault`, `message`, `metrics`, `outcome`, `ring`, `sync`, `wait` |
//! | 4 engine state | `shared` | what every thread of one engine shares: settings, clock, breaker, tenants, shard mailboxes, stop flags | `admission`, `clock`, `config`, `message`, `metrics`, `shard`, `sync` |
//! | 5 control plane | [`monitor`] | the overload monitor: queue depths against caps, alerts, history | `log_limit`, `message`, `metrics` |
//! | 5 control plane | [`global`] | fleet-wide tenant quotas: rate leases kept in Redis (one Lua script), the thread that renews them and sets the shards' shared buckets | `admission`, `backoff`, `config`, `control`, `log_limit`, `message`, `sync` |
//! | 5 control plane | [`control`] | the control plane: its thread, the `Control` handle, command latencies | `admission`, `command`, `config`, `log_limit`, `message`, `metrics`, `monitor`, `outcome`, `ring`, `shared`, `sync`, `wait` |
//! | 6 front door | [`ingress`] | how producers hand work to shards and hear back (`Ingress`, `SharedIngress`), and wait for it | `config`, `message`, `outcome`, `ring`, `shard`, `shared`, `sync`, `wait` |
//! | 6 front door | [`engine`] | the front door: `Engine::builder`, start, stats, shutdown | `admission`, `clock`, `command`, `config`, `control`, `fault`, `global`, `ingress`, `message`, `metrics`, `monitor`, `ring`, `shard`, `shared`, `sync`, `wait` |
//! | 6 front door | [`simulation`] | one shard on a hand-driven clock, for exact tests | `admission`, `command`, `config`, `control`, `message`, `metrics`, `outcome`, `shard`, `sync` |
//! | 7 edges | [`net`] | the TCP front end: wire protocol, egress flow control, the server | `config`, `log_limit`, `message`, `outcome`, `shard`, `sync` |
//! | 7 edges | [`client`] | a client of that protocol with `send_with_backpressure` | `backoff`, `clock`, `message`, `net`, `outcome` |
//! | 7 edges | [`workers`] | worker mode: the worker protocol and the `WorkerPool` handler that dispatches admitted messages to worker processes | `command`, `config`, `log_limit`, `message`, `outcome`, `shard`, `sync` |
//! | 8 operator | [`admin`] | the admin HTTP endpoint: Prometheus metrics, health and readiness, drain, breaker, config, run-time limits and reloads | `admission`, `config`, `control`, `message`, `metrics`, `net`, `outcome`, `workers` |
//! | 7 edges | `async_ingress` | submit and `.await` a completion, or read completions as a `Stream` (feature `tokio`) | `ingress`, `message`, `outcome` |

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

pub mod admin;
pub mod admission;
#[cfg(feature = "tokio")]
pub mod async_ingress;
pub(crate) mod backoff;
pub mod bucket;
pub mod client;
pub mod clock;
pub(crate) mod command;
pub mod config;
pub mod control;
pub mod engine;
#[cfg(feature = "fault-injection")]
pub mod fault;
#[cfg(not(feature = "fault-injection"))]
pub(crate) mod fault;
pub mod global;
pub mod ingress;
pub(crate) mod log_limit;
pub mod message;
pub mod metrics;
pub mod monitor;
pub mod net;
pub mod outcome;
pub mod ring;
pub(crate) mod shard;
pub use shard::handler;
pub(crate) mod shared;
pub mod simulation;
pub(crate) mod wait;
pub mod workers;

pub(crate) mod sync;
