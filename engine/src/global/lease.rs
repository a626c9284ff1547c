//! Leases of a tenant's fleet-wide rates, kept in Redis (issue 16; the design follows
//! Google's Doorman: a process holds a *share of the rate* for a lease period, not a count of
//! tokens).
//!
//! One Lua script, run with `EVALSHA`, is the whole protocol. Each tenant has one hash,
//! `spillway:{tenant:ID}:leases` (hash-tagged, so a Redis Cluster keeps it in one slot), with
//! per process and per resource what it wants (its measured demand), what it has (its
//! granted share) and when its lease expires. A call, atomically in Redis:
//! 1. drops the processes whose lease has expired (a dead process's share returns to the
//!    pool within one lease period);
//! 2. records the caller's demand;
//! 3. computes the max-min fair allocation of the capacity over every live process's demand
//!    (each gets its demand or an equal share of what is left, whichever is less; capacity
//!    left when every demand is met is split equally as headroom);
//! 4. grants the caller `min(its allocation, capacity - what the others have)`, so the
//!    shares granted never add up to more than the capacity: a process whose allocation grew
//!    gets the room only once the others have given it up at their own next lease.

use core::time::Duration;

use crate::message::TenantId;

/// What a lease shares out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Resource {
    /// Messages per second.
    Messages,
    /// Payload bytes per second.
    Bytes,
}

impl Resource {
    /// The name used in the Redis hash's fields and in reports.
    pub const fn name(self) -> &'static str {
        match self {
            Resource::Messages => "messages",
            Resource::Bytes => "bytes",
        }
    }
}

/// One resource of a lease request: the fleet's capacity and this process's demand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Demand {
    /// Which resource.
    pub resource: Resource,
    /// The tenant's fleet-wide limit, per second.
    pub capacity_per_sec: u64,
    /// This process's measured demand, per second.
    pub wants_per_sec: u64,
}

/// A granted lease: each resource's share, in the order the demands were given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The share of each resource this process may use, per second, in request order.
    pub granted_per_sec: Vec<u64>,
    /// How long the grant holds from the moment the request was sent.
    pub expires_in: Duration,
}

/// Why a lease could not be had.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// A configured URL is not a Redis URL.
    #[error("invalid Redis URL {url:?}: {detail}")]
    Url {
        /// The URL as configured.
        url: String,
        /// The client's complaint.
        detail: String,
    },
    /// Redis did not answer within the timeout.
    #[error("Redis at {url} did not answer within {timeout:?}")]
    Timeout {
        /// The server asked.
        url: String,
        /// The configured timeout.
        timeout: Duration,
    },
    /// Connecting to, writing to or reading from Redis failed.
    #[error("Redis at {url} is unavailable: {detail}")]
    Unavailable {
        /// The server asked.
        url: String,
        /// The client's error.
        detail: String,
    },
    /// Redis answered with an error or an answer the script cannot give.
    #[error("Redis at {url} refused the lease script: {detail}")]
    Script {
        /// The server asked.
        url: String,
        /// Redis's error text.
        detail: String,
    },
}

/// The tenant's hash key: the `{...}` hash tag keeps everything of one tenant in one
/// Redis Cluster slot.
pub fn tenant_key(tenant: TenantId) -> String {
    format!("spillway:{{tenant:{}}}:leases", tenant.0)
}
