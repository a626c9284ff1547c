//! The control-plane handle. So far it carries the breaker commands of SPEC 5 (force open,
//! force closed, reset to automatic) and reads state; the control-plane thread with its
//! priority rings, health checks, drains and cancels builds on it.

use crate::admission::breaker::BreakerState;
use crate::engine::{breaker_state, EngineShared};
use crate::metrics::Stats;
use crate::sync::Arc;

/// A handle to the engine's control commands. Cheap to clone; any thread may use it.
#[derive(Clone)]
pub struct Control {
    engine: Arc<EngineShared>,
}

impl Control {
    pub(crate) fn new(engine: Arc<EngineShared>) -> Self {
        Self { engine }
    }

    /// Holds the circuit breaker open: P2 and P3 are shed until [`reset`](Self::reset).
    /// Shards see it at their next batch.
    pub fn force_open(&self) {
        self.engine.breaker.force_open(self.engine.clock.now_ns());
    }

    /// Holds the circuit breaker closed until [`reset`](Self::reset).
    pub fn force_closed(&self) {
        self.engine.breaker.force_closed(self.engine.clock.now_ns());
    }

    /// Returns the breaker to automatic control, closed.
    pub fn reset(&self) {
        self.engine.breaker.reset(self.engine.clock.now_ns());
    }

    /// The breaker's state now.
    pub fn breaker_state(&self) -> BreakerState {
        breaker_state(&self.engine)
    }

    /// Messages of `tenant` pending across all shards now, if the tenant has settings:
    /// the shared count its cap is charged against.
    pub fn tenant_pending(&self, tenant: crate::message::TenantId) -> Option<u64> {
        let index = self.engine.tenants.find(tenant)?;
        Some(self.engine.tenants.pending(index))
    }

    /// Every counter (see [`Engine::stats`](crate::engine::Engine::stats)).
    pub fn stats(&self) -> Stats {
        self.engine.stats()
    }
}

impl core::fmt::Debug for Control {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        formatter
            .debug_struct("Control")
            .field("breaker", &self.breaker_state())
            .finish()
    }
}
