//! Spillway's load generator (SPEC 8).
//!
//! - [`schedule`]: the open-loop send schedule (each simulated connection sends on its own
//!   fixed period, the connections' phases spread evenly, as wrk2 does), which gives every
//!   message the *intended* send time that coordinated-omission-corrected latency is
//!   measured from;
//! - [`scenario`]: the named scenarios (light ... saturation, recovery, overload, slow
//!   consumer, priority mix);
//! - [`target`]: what the generator drives (spillway's `Ingress`, or any other system
//!   under test measured the same way);
//! - [`tcp`]: the TCP target, real sockets over mio against a server speaking
//!   `docs/PROTOCOL.md`, and the descriptor limit it needs;
//! - [`generator`]: the open and closed loops, the in-process engine, the control-plane
//!   probe and the capacity calibration;
//! - [`report`]: the progress line, the final table and the JSON object.
#![warn(missing_docs)]
// `report::json` builds one large `json!` object.
#![recursion_limit = "256"]

pub mod cli;
pub mod generator;
pub mod report;
pub mod scenario;
pub mod schedule;
pub mod target;
pub mod tcp;
