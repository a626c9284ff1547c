//! The TCP front end's per-connection building blocks: plain data structures that the shard
//! owning a connection keeps for it, with time passed in, so that each one is tested on its
//! own with a fake clock.
//!
//! - [`egress`]: flow control of a connection's reply stream (SPEC 4): the bounded send
//!   buffer, the Normal / Throttled / Paused / Dropping states its fill puts the client in,
//!   the drop policies, and the health verdict by drop rate.

pub mod egress;
