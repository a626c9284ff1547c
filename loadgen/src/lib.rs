//! Spillway's load generator.
//!
//! Built so far: [`schedule`], the open-loop send schedule (each simulated connection sends on
//! its own fixed period, the connections' phases spread evenly, as wrk2 does), which gives
//! every message the *intended* send time that coordinated-omission-corrected latency is
//! measured from. The generator loop, targets and reports build on it (issue 6).
#![warn(missing_docs)]

pub mod schedule;
