//! Bounded rings: the only way work crosses threads in Spillway.
//!
//! - [`spsc`]: lock-free single-producer/single-consumer, for hand-offs between two fixed
//!   threads (a producer's `Ingress` to a shard, a shard to the control plane and back).
//! - [`Mpmc`]: bounded multi-producer/multi-consumer, for where many threads produce.
//!
//! Both answer a full ring by handing the item back (`Err(item)`), so the caller decides:
//! retry, refuse upstream with a reason, or count a drop. Neither ever grows or blocks.

mod mpmc;
pub mod spsc;

pub use mpmc::Mpmc;
