//! Spillway: a lock-free, thread-per-core data-plane engine that keeps a server fast under
//! overload.
//!
//! This crate is built up concept by concept; each module is one of them:
//!
//! - [`ring`]: the bounded queues every cross-thread hand-off goes through: a lock-free
//!   single-producer/single-consumer ring written for this project ([`ring::spsc`]) and a
//!   bounded multi-producer ring ([`ring::Mpmc`]). A full ring is a typed answer that hands
//!   the item back, never a block and never a silent drop.
//! - [`bucket`]: the per-connection token bucket (GCRA on one atomic), with the rate
//!   changeable at run time from another thread, and the adaptive rate controller.
//! - [`clock`]: monotonic nanoseconds from quanta, read once per batch by the data path and
//!   passed in explicitly, so that tests drive time by hand.
//! - [`net`]: the TCP front end: its wire protocol ([`net::protocol`], specified in
//!   `docs/PROTOCOL.md`) and the egress flow control of each connection's replies
//!   ([`net::egress`]).
//! - [`client`]: a client for that protocol over a blocking TCP connection, with SPEC 6's
//!   sender side: `send_with_backpressure` (exponential backoff with full jitter, honouring
//!   `retry_after` and the flow signals) and batch pacing by CPU load.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

pub mod admission;
pub mod bucket;
pub mod client;
pub mod clock;
pub mod config;
pub mod control;
pub mod engine;
pub mod handler;
pub mod ingress;
pub mod message;
pub mod metrics;
pub mod monitor;
pub mod net;
pub mod outcome;
pub mod ring;
pub(crate) mod shard;
pub mod simulation;
pub(crate) mod wait;

pub(crate) mod sync;
