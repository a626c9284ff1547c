//! What every thread of one engine shares: the settings, the clock, the circuit breaker,
//! the tenant table, each shard's [`ShardShared`], and the stop flags. The shard threads
//! see only their part of it (see `shard::thread::Surroundings`); the control plane, the
//! ingresses and the engine handle see all of it.

use crate::admission::breaker::CircuitBreaker;
use crate::admission::global::GlobalQuotas;
use crate::admission::tenants::TenantTable;
use crate::clock::Clock;
use crate::config::Config;
use crate::message::{ConnectionId, TenantId};
use crate::metrics::Stats;
use crate::shard::shared::{shard_of_connection, ShardShared};
use crate::sync::{Arc, AtomicBool, AtomicU64, Ordering};

/// State every thread of one engine shares.
pub(crate) struct EngineShared {
    pub(crate) config: Config,
    pub(crate) shards: Box<[ShardShared]>,
    pub(crate) breaker: Arc<CircuitBreaker>,
    pub(crate) tenants: Arc<TenantTable>,
    /// This process's shares of the fleet-wide tenant rates (`[global]`), which the lease
    /// thread renews.
    pub(crate) global: Arc<GlobalQuotas>,
    pub(crate) tenant_ids: Vec<TenantId>,
    pub(crate) clock: Clock,
    /// Set by `shutdown`: shards refuse new work, finish or cancel what is queued, exit.
    pub(crate) stopping: AtomicBool,
    /// Set once every shard thread has exited and been joined.
    pub(crate) stopped: AtomicBool,
    /// Submissions handed back because a ring had no room.
    pub(crate) ring_full: AtomicU64,
}

impl EngineShared {
    /// The shard that owns `connection`: a multiply-shift hash of the id, so sequential ids
    /// spread evenly and the map never changes while the engine runs.
    #[inline]
    pub(crate) fn shard_of(&self, connection: ConnectionId) -> usize {
        shard_of_connection(connection, self.shards.len())
    }

    /// Every shard's published counters, summed and per shard; the control plane adds its
    /// own latency figures (`Stats::control`).
    pub(crate) fn stats(&self) -> Stats {
        let counters: Vec<_> = self
            .shards
            .iter()
            .map(|shard| shard.published.read())
            .collect();
        Stats::collect(
            &counters,
            &self.tenant_ids,
            self.breaker.read().state(),
            // Relaxed: a statistic.
            self.ring_full.load(Ordering::Relaxed),
        )
    }
}
