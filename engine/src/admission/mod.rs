//! The three admission levels of SPEC 3, each a small piece the shard's data path calls in
//! order (`shard::core::ShardCore::admit` reads top to bottom: priority ceiling, breaker,
//! caps, token bucket, tenant charge):
//!
//! - level 1, rate: [`crate::bucket::TokenBucket`] per connection, with its adaptive
//!   controller;
//! - level 2, caps: [`caps`] (priority-aware thresholds) and [`tenants`] (aggregate caps
//!   charged across shards without overshoot);
//! - level 3, the circuit breaker: [`breaker`].

pub mod breaker;
pub mod caps;
pub mod global;
pub mod tenants;
