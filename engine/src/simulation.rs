//! A whole shard, single-threaded and deterministic: the same admission pipeline, queues
//! and handler runs as a shard thread, driven by a clock the caller moves by hand.
//!
//! Use it to test admission behaviour exactly (the same inputs give the same outcomes, run
//! after run) and to reason about capacity: "run `n` handlers between `t` and `t + d`" is a
//! handler whose simulated cost is `d / n`.
//!
//! ```
//! use spillway::config::Config;
//! use spillway::message::{ConnectionId, Message, MessageId};
//! use spillway::outcome::Outcome;
//! use spillway::simulation::Simulation;
//!
//! let mut simulation = Simulation::new(Config::default(), |_: &Message| Ok(())).unwrap();
//! simulation.submit(0, Message::new(ConnectionId(1), MessageId(7))).unwrap();
//! simulation.run(0, 1_000, 16);
//! let completions = simulation.take_completions();
//! assert_eq!(completions[0].outcome, Outcome::Delivered);
//! assert!(simulation.stats().reconciles());
//! ```

use crate::admission::breaker::CircuitBreaker;
use crate::admission::tenants::TenantTable;
use crate::config::{Config, ConfigError};
use crate::handler::Handler;
use crate::message::{Message, TenantId};
use crate::metrics::Stats;
use crate::outcome::{Completion, Outcome};
use crate::shard::core::ShardCore;
use crate::shard::queue::Origin;
use crate::shard::run::run_handlers;
use crate::sync::Arc;

/// One shard on a hand-driven clock.
pub struct Simulation<H: Handler> {
    core: ShardCore,
    handler: H,
    breaker: Arc<CircuitBreaker>,
    tenant_ids: Vec<TenantId>,
    completions: Vec<Completion>,
}

impl<H: Handler> Simulation<H> {
    /// A simulated shard with `config` (its `shards` setting is ignored: this is one shard).
    pub fn new(config: Config, handler: H) -> Result<Self, ConfigError> {
        config.validate()?;
        let tenants = Arc::new(TenantTable::new(
            &config.tenants,
            config.caps.priority_threshold_percent,
        ));
        let tenant_ids = tenants.tenant_ids().collect();
        let breaker = Arc::new(CircuitBreaker::new());
        let core = ShardCore::new(0, 1, &config, tenants, Arc::clone(&breaker), Arc::default());
        Ok(Self {
            core,
            handler,
            breaker,
            tenant_ids,
            completions: Vec::new(),
        })
    }

    /// Submits `message` at `now_ns`, as a message from a producer's ring would arrive:
    /// returns the decision, and the completion of a message that was not admitted is also
    /// recorded at once (as it would be posted to the producer).
    pub fn submit(&mut self, now_ns: u64, message: Message) -> Result<(), Outcome> {
        let (id, connection) = (message.id, message.connection);
        let decision = self.core.admit(message, Origin::SHARED, now_ns);
        if let Err(outcome) = decision {
            self.completions.push(Completion {
                message: id,
                connection,
                outcome,
            });
        }
        self.collect();
        decision
    }

    /// Runs up to `max` queued messages starting at `now_ns`, all finishing at `end_ns`
    /// (so each costs `(end_ns - now_ns) / ran`), then does the per-batch upkeep at `end_ns`.
    /// Returns how many ran.
    pub fn run(&mut self, now_ns: u64, end_ns: u64, max: usize) -> usize {
        let ran = run_handlers(&mut self.core, &mut self.handler, max, now_ns, || end_ns);
        for completion in self.core.local_completions.drain(..) {
            self.handler.completed(&completion);
        }
        self.collect();
        self.core.maintain(end_ns);
        ran
    }

    /// The per-batch upkeep alone at `now_ns`: breaker transitions and the adaptive sweep.
    pub fn tick(&mut self, now_ns: u64) {
        self.core.maintain(now_ns);
    }

    /// Completions recorded since the last call, in order.
    pub fn take_completions(&mut self) -> Vec<Completion> {
        core::mem::take(&mut self.completions)
    }

    /// Messages queued.
    pub fn pending(&self) -> usize {
        self.core.pending()
    }

    /// The breaker, to force it open or closed as the control plane would.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// Whether the handler queue is at or over the backpressure threshold.
    pub fn backpressure(&self) -> bool {
        self.core.backpressure_active()
    }

    /// The counters now.
    pub fn stats(&mut self) -> Stats {
        let breaker = self.breaker.read().state();
        let counters = self.core.counters().clone();
        Stats::collect(&[counters], &self.tenant_ids, breaker, 0)
    }

    /// The handler, to inspect what it saw.
    pub fn handler(&self) -> &H {
        &self.handler
    }

    fn collect(&mut self) {
        self.completions
            .extend(self.core.outbox.drain(..).map(|(_, completion)| completion));
    }
}
