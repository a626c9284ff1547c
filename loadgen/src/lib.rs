//! Spillway's load generator (SPEC 8).
//!
//! # Module map
//!
//! The modules stand in layers; each imports (`use crate::...`) only from layers below its
//! own, never from its own layer or above. Layer 0 is vocabulary that imports nothing from
//! this crate.
//!
//! | layer | module | what it is | may import |
//! |---|---|---|---|
//! | 0 | [`schedule`] | the open-loop send schedule (intended send times) | nothing |
//! | 0 | [`scenario`] | the named scenarios of SPEC 8 | nothing |
//! | 0 | [`nofile`] | the descriptor limit a run with many sockets needs | nothing |
//! | 0 | [`tcp_stats`] | what the TCP client counts ([`tcp_stats::TcpStats`]) | nothing |
//! | 0 | [`progress`] | the progress line, and the `1.23 ms` time format | nothing |
//! | 0 | [`payload`] | each message's payload, and the check of an echoed response | nothing |
//! | 0 | [`split`] | which of several targets each connection goes to (`--split`) | nothing |
//! | 1 | [`target`] | what the generator drives: `Target`, `SystemUnderTest`, `TargetStats` | `tcp_stats`, `split` |
//! | 2 | [`tcp`] | the TCP target: real sockets over mio against `docs/PROTOCOL.md`, to one server or several | `target`, `tcp_stats`, `nofile`, `split` |
//! | 2 | [`generator`] | the open and closed loops, the in-process engine, the probe, calibration | `target`, `schedule`, `progress`, `payload`, `split`, `tcp_stats` |
//! | 3 | [`report`] | the final report: one type, written as the table or the JSON object | `generator`, `target`, `tcp`, `tcp_stats`, `progress` |
//!
//! The `loadgen` binary (`main.rs`) sits above them all and uses the crate by its name.
#![warn(missing_docs)]

pub mod generator;
pub mod nofile;
pub mod payload;
pub mod progress;
pub mod report;
pub mod scenario;
pub mod schedule;
pub mod split;
pub mod target;
pub mod tcp;
pub mod tcp_stats;
