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
use crate::admission::global::GlobalQuotas;
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
    tenants: Arc<TenantTable>,
    /// The fleet-wide tenant rates; no lease thread runs here, so a test or bench sets the
    /// shares itself ([`TenantQuota::apply_share`](crate::admission::global::TenantQuota::apply_share)).
    global: Arc<GlobalQuotas>,
    tenant_ids: Vec<TenantId>,
    completions: Vec<Completion>,
    /// `control.drain_timeout_ns`: a drain's deadline, as the control plane sets it.
    drain_timeout_ns: u64,
}

impl<H: Handler> Simulation<H> {
    /// A simulated shard with `config` (its `shards` setting is ignored: this is one shard).
    pub fn new(config: Config, handler: H) -> Result<Self, ConfigError> {
        config.validate()?;
        let tenants = Arc::new(TenantTable::new(
            &config.tenant_settings(),
            &config.rate_only_tenants(),
            config.caps.priority_threshold_percent,
        ));
        let tenant_ids = tenants.tenant_ids().collect();
        let global = Arc::new(GlobalQuotas::new(&config.global, &tenants, 1));
        let breaker = Arc::new(CircuitBreaker::new());
        let core = ShardCore::new(
            0,
            1,
            &config,
            Arc::clone(&tenants),
            Arc::clone(&global),
            Arc::clone(&breaker),
            Arc::default(),
        );
        Ok(Self {
            core,
            handler,
            breaker,
            tenants,
            global,
            drain_timeout_ns: config.control.drain_timeout_ns,
            tenant_ids,
            completions: Vec::new(),
        })
    }

    /// Submits `message` at `now_ns`, as a message from a producer's ring would arrive:
    /// returns the decision, and the completion of a message that was not admitted is also
    /// recorded at once (as it would be posted to the producer).
    pub fn submit(&mut self, now_ns: u64, message: Message) -> Result<(), Outcome> {
        let decision = match self.core.admit(message, Origin::SHARED, now_ns) {
            Ok(()) => Ok(()),
            Err(completion) => {
                let outcome = completion.outcome;
                self.completions.push(completion);
                Err(outcome)
            }
        };
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

    /// Calls the handler's [`poll`](Handler::poll) at `now_ns`, as the shard thread does
    /// once per turn: where a handler that defers its messages answers them
    /// ([`ShardContext::complete`](crate::handler::ShardContext::complete)). Returns what
    /// `poll` returned.
    pub fn poll(&mut self, now_ns: u64) -> usize {
        let found = self.handler.poll(&mut crate::handler::ShardContext::new(
            &mut self.core,
            now_ns,
        ));
        for completion in self.core.local_completions.drain(..) {
            self.handler.completed(&completion);
        }
        self.collect();
        found
    }

    /// Messages the handler deferred and has not answered yet (in flight in the stats).
    pub fn deferred(&self) -> usize {
        self.core.deferred()
    }

    /// What shutdown does at its deadline (`control.drain_timeout_ns` after the stop) when
    /// the handler still holds deferred messages: each fails `WorkerLost`, counted. Returns
    /// how many.
    pub fn abandon_deferred(&mut self, now_ns: u64) -> usize {
        let failed = self
            .core
            .fail_all_deferred("the engine shut down before the answer came", now_ns);
        self.collect();
        failed
    }

    /// Calls `with` with a context on this shard at `now_ns`, as code running on the shard
    /// has it (to complete a deferred message with a ticket kept outside the handler, say).
    pub fn with_context<R>(
        &mut self,
        now_ns: u64,
        with: impl FnOnce(&mut H, &mut crate::handler::ShardContext<'_>) -> R,
    ) -> R {
        let result = with(
            &mut self.handler,
            &mut crate::handler::ShardContext::new(&mut self.core, now_ns),
        );
        for completion in self.core.local_completions.drain(..) {
            self.handler.completed(&completion);
        }
        self.collect();
        result
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

    /// The breaker transitions this shard made since the last call, oldest first, each with
    /// its cause and figures, as [`Control::breaker_history`](crate::control::Control::breaker_history)
    /// shows them (as shard 0). The shard keeps the last 16 until they are taken. Forcing the
    /// breaker through [`breaker`](Self::breaker) is the control plane's part and is not
    /// recorded here.
    ///
    /// ```
    /// use spillway::admission::breaker::BreakerState;
    /// use spillway::config::Config;
    /// use spillway::message::{ConnectionId, Message, MessageId, Priority};
    /// use spillway::simulation::Simulation;
    ///
    /// let mut config = Config::default();
    /// config.levels.rate_limit = false;
    /// config.caps.handler_queue = 4;
    /// let mut simulation = Simulation::new(config, |_: &Message| Ok(())).unwrap();
    /// for id in 0..4 {
    ///     let urgent = Message::new(ConnectionId(id), MessageId(id)).with_priority(Priority::P0);
    ///     simulation.submit(3_000, urgent).unwrap(); // the 4th fills the queue: a trip
    /// }
    /// let transitions = simulation.take_breaker_transitions();
    /// assert_eq!(transitions.len(), 1);
    /// let trip = transitions[0];
    /// assert_eq!((trip.from, trip.to), (BreakerState::Closed, BreakerState::Open));
    /// assert_eq!(trip.at_ns, 3_000);
    /// assert!(simulation.take_breaker_transitions().is_empty()); // taken
    /// ```
    pub fn take_breaker_transitions(&mut self) -> Vec<crate::control::BreakerTransition> {
        core::iter::from_fn(|| self.core.next_breaker_report())
            .map(crate::control::BreakerTransition::from_report)
            .collect()
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

    /// The handler, to change what it will do.
    pub fn handler_mut(&mut self) -> &mut H {
        &mut self.handler
    }

    // The control plane's commands, as the shard serves them between batches
    // (`control::thread::serve_shard_commands`), at `now_ns`.

    /// Cancels the queued message `message` of `connection`: true if it was queued (it
    /// completes `Cancelled`), false if not (unknown, already run, or never admitted), in
    /// which case nothing changes.
    pub fn cancel(
        &mut self,
        now_ns: u64,
        connection: crate::message::ConnectionId,
        message: crate::message::MessageId,
    ) -> bool {
        let found = self.core.cancel(connection, message, now_ns);
        self.collect();
        found
    }

    /// Starts draining `connection`: its later messages are refused `Draining`, and what it
    /// has queued runs (`finish_queued`) or is cancelled now. Returns the report at once when
    /// nothing of it is left pending (a connection the shard does not hold is not marked);
    /// otherwise [`take_drained`](Self::take_drained) returns it once the last one finished,
    /// or once `control.drain_timeout_ns` has passed since `now_ns` (what is still queued is
    /// then cancelled). An earlier drain of the connection that finished but was not taken
    /// yet makes this one wait for `take_drained` too: they complete together.
    ///
    /// A completed drain closes the connection, as
    /// [`Control::drain`](crate::control::Control::drain) does: the shard forgets it, and a
    /// later message with its id is a new connection.
    pub fn drain(
        &mut self,
        now_ns: u64,
        connection: crate::message::ConnectionId,
        finish_queued: bool,
    ) -> Option<crate::control::DrainReport> {
        // The connection's id is the request id, so a finished drain names its connection.
        let deadline_ns = now_ns.saturating_add(self.drain_timeout_ns);
        let done =
            self.core
                .begin_drain(connection, finish_queued, connection.0, deadline_ns, now_ns);
        self.collect();
        done.map(|result| drain_report(connection, result))
    }

    /// The drains that finished by `now_ns` since the last call: the last message of the
    /// connection ran, was cancelled or dropped, or the drain's deadline passed (what was
    /// still queued is cancelled now; those completions come with the next
    /// [`take_completions`](Self::take_completions)).
    pub fn take_drained(&mut self, now_ns: u64) -> Vec<crate::control::DrainReport> {
        let mut finished = Vec::new();
        self.core.finished_drains(now_ns, &mut finished);
        self.collect();
        finished
            .into_iter()
            .map(|(request, result)| drain_report(crate::message::ConnectionId(request), result))
            .collect()
    }

    /// Sets the pending-message cap of `role` from the next message on. The control plane
    /// refuses 0; here a cap of 0 refuses every message of the role.
    pub fn set_role_cap(&mut self, role: crate::message::Role, max_pending: u32) {
        self.core.set_role_cap(role, max_pending);
    }

    /// Sets `connection`'s own pending-message cap from the next message on, adding the
    /// connection if the shard does not hold it yet; false if there is no room for it. The
    /// control plane refuses 0; here 0 restores the configured cap.
    pub fn set_connection_cap(
        &mut self,
        now_ns: u64,
        connection: crate::message::ConnectionId,
        max_pending: u32,
    ) -> bool {
        self.core
            .set_connection_cap(connection, max_pending, now_ns)
    }

    /// Sets the aggregate cap of `tenant` (`None`: no cap); false if the tenant has no
    /// settings (or only a fleet-wide rate, [`Config::rate_only_tenants`]), so no cap to
    /// change. Messages already pending stay charged.
    pub fn set_tenant_cap(&mut self, tenant: TenantId, max_pending: Option<u32>) -> bool {
        self.tenants
            .find(tenant)
            .is_some_and(|index| self.tenants.set_max_pending(index, max_pending))
    }

    /// Pending messages charged to `tenant`, `None` if it has no settings.
    pub fn tenant_pending(&self, tenant: TenantId) -> Option<u64> {
        self.tenants
            .find(tenant)
            .map(|index| self.tenants.pending(index))
    }

    /// The fleet-wide tenant rates (`[global]`): a simulation runs no lease thread, so each
    /// tenant stays on its fallback until its share is set by hand, as a lease would set it.
    ///
    /// ```
    /// use spillway::config::{Config, GlobalTenantConfig};
    /// use spillway::message::{ConnectionId, Message, MessageId, TenantId};
    /// use spillway::simulation::Simulation;
    /// let mut config = Config::default();
    /// config.global.redis = vec!["redis://127.0.0.1:1".into()];
    /// config.global.tenants = vec![GlobalTenantConfig::new(TenantId(7), 1000)];
    /// let mut simulation = Simulation::new(config, |_: &Message| Ok(())).unwrap();
    /// let quota = simulation.global_quotas().iter().next().unwrap();
    /// quota.apply_share(0, None); // a lease with a zero share
    /// let message = Message::new(ConnectionId(1), MessageId(1)).with_tenant(TenantId(7));
    /// assert!(simulation.submit(0, message).is_err());
    /// ```
    pub fn global_quotas(&self) -> &GlobalQuotas {
        &self.global
    }

    /// Sets the nominal rate of one connection (adding it if the shard does not hold it
    /// yet), of every connection of a tenant the shard holds, or of every connection and
    /// those added later, from the next message on.
    /// Returns how many connections changed.
    pub fn set_rate(
        &mut self,
        now_ns: u64,
        target: crate::control::RateTarget,
        rate_per_sec: core::num::NonZeroU32,
    ) -> usize {
        let scope = match target {
            crate::control::RateTarget::Connection(connection) => {
                crate::command::RateScope::Connection(connection)
            }
            crate::control::RateTarget::Tenant(tenant) => crate::command::RateScope::Tenant(tenant),
            crate::control::RateTarget::AllConnections => crate::command::RateScope::All,
        };
        self.core.set_rate(scope, rate_per_sec, now_ns)
    }

    fn collect(&mut self) {
        self.completions
            .extend(self.core.outbox.drain(..).map(|(_, completion)| completion));
    }
}

/// A drain's report for `connection`, from the shard's answer.
fn drain_report(
    connection: crate::message::ConnectionId,
    result: crate::command::DrainResult,
) -> crate::control::DrainReport {
    crate::control::DrainReport {
        connection,
        finished: result.finished,
        cancelled: result.cancelled,
        deadline_passed: result.deadline_passed,
    }
}
