//! One shard's state and its data path, with no threads and no clock of its own: the shard
//! thread (`shard::run`) and the deterministic [`Simulation`](crate::simulation::Simulation)
//! both drive it, passing the time in.
//!
//! [`ShardCore::admit`] is the whole admission pipeline of SPEC 3 and reads top to bottom:
//! connection, intake and disconnect checks, the tenant's priority ceiling, level 3 (shed
//! while the breaker is open), level 2 (connection, role and handler-queue caps, then the
//! tenant's shared cap), level 1 (the connection's token bucket), queue. The first level
//! that says no decides the outcome; a level that is switched off is skipped.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::admission::breaker::{
    BreakerMove, BreakerReading, BreakerWindow, CircuitBreaker, Transition,
};
use crate::admission::caps::Thresholds;
use crate::admission::global::{GlobalQuotas, GlobalRefusal, ShardCredit};
use crate::admission::tenants::{TenantCharge, TenantIndex, TenantTable};
use crate::bucket::{adaptive_decide, AdaptiveSettings};
use crate::command::{
    BreakerReport, DrainResult, FullQueue, RateScope, ShardTrigger, WorkerHealth,
};
use crate::config::{BreakerConfig, CapAction, Config, Levels, QueueDropPolicy};
use crate::fault::{FaultPoint, FaultSwitch};
use crate::message::{ConnectionId, Message, MessageId, Priority, Role, TenantId};
use crate::metrics::{PublishedCounters, ShardCounters};
use crate::outcome::{
    Completion, DropReason, ErrorDetail, FailureReason, Outcome, RefusalReason, ShedReason,
};
use crate::sync::Arc;

use super::connections::{ConnectionTable, Slot};
use super::deferred::{DeferredTable, Held, Ticket};
use super::queue::{Entry, Origin, PendingQueue};

/// The caps, as per-priority thresholds computed when they are set.
#[derive(Clone, Debug)]
struct CapThresholds {
    connection_messages: Thresholds,
    connection_bytes: Thresholds,
    roles: [Thresholds; Role::COUNT],
    handler_queue: Thresholds,
}

impl CapThresholds {
    fn new(config: &Config) -> Self {
        let caps = &config.caps;
        let percent = &caps.priority_threshold_percent;
        Self {
            connection_messages: Thresholds::new(u64::from(caps.connection_messages), percent),
            connection_bytes: Thresholds::new(caps.connection_bytes, percent),
            roles: core::array::from_fn(|role| {
                Thresholds::new(u64::from(caps.role_messages[role]), percent)
            }),
            handler_queue: Thresholds::new(u64::from(caps.handler_queue), percent),
        }
    }
}

/// A message finished in the current handler batch, whose latency is taken when the batch
/// ends (one clock read per batch).
#[derive(Clone, Copy, Debug)]
struct Finished {
    connection: Slot,
    admitted_ns: u64,
    priority: Priority,
    failed: bool,
}

/// The classes a message is counted under besides the total and its tenant: its role, and
/// its priority as decided.
#[inline(always)]
fn classes(message: &Message) -> (Role, Priority) {
    (message.role, message.priority)
}

/// One shard's state.
pub(crate) struct ShardCore {
    index: usize,
    /// Shards of the engine, for the connection-to-shard map.
    shard_count: usize,
    /// The longest response a handler may answer (`net.max_response_bytes`).
    response_bytes_max: usize,
    levels: Levels,
    cap_action: CapAction,
    drop_policy: QueueDropPolicy,
    thresholds: CapThresholds,
    priority_percent: [u32; Priority::COUNT],
    backpressure_messages: usize,
    connections: ConnectionTable,
    queue: PendingQueue,
    /// Messages the handler took to answer later (`ShardContext::defer`): still admitted
    /// and pending (their connection, role and tenant counts hold them), no longer queued.
    deferred: DeferredTable,
    /// Reused by the sweeps that fail deferred messages (drain deadline, shutdown, lost).
    deferred_scratch: Vec<Held>,
    /// The ticket the handler run in progress deferred its message under, if it did.
    run_ticket: Option<Ticket>,
    /// What the handler last published of its workers, for health checks.
    worker_health: Option<WorkerHealth>,
    role_pending: [u64; Role::COUNT],
    tenants: Arc<TenantTable>,
    /// This process's shares of fleet-wide tenant rates, charged after the connection's
    /// bucket.
    global: Arc<GlobalQuotas>,
    /// The credit this shard holds of those rates (its alone).
    global_credit: ShardCredit,
    breaker: Arc<CircuitBreaker>,
    breaker_config: BreakerConfig,
    breaker_window: BreakerWindow,
    /// The breaker word this shard last acted on; a different one clears the window.
    breaker_seen: BreakerReading,
    /// Transitions this shard made, with their causes, until the shard thread sends them to
    /// the control plane (`shard::commands`): the last [`BREAKER_REPORTS_MAX`], oldest first.
    breaker_reports: VecDeque<BreakerReport>,
    /// Whether P2 and P3 are shed this batch.
    shedding: bool,
    adaptive: Option<AdaptiveSettings>,
    adaptive_interval_ns: u64,
    adaptive_next_ns: u64,
    intake_closed: bool,
    backpressure_active: bool,
    /// Mean handler time per message over recent batches (EWMA, 1/8 weight), for the
    /// retry-after of cap refusals and the size of handler batches.
    service_ns_mean: u64,
    counters: ShardCounters,
    /// Completions of messages from rings, to be routed by the shard thread.
    pub(crate) outbox: Vec<(Origin, Completion)>,
    /// Completions of messages admitted through `ShardContext::admit`.
    pub(crate) local_completions: Vec<Completion>,
    batch_finished: Vec<Finished>,
    /// Connections being drained by the control plane, until their queue is empty.
    drains: Vec<Drain>,
    /// `change_marker()` at the last publication (`u64::MAX`s before the first).
    published_marker: [u64; 5],
    /// The message admission holds while it decides, so that a panic there (a lost shard)
    /// still gives it an outcome ([`fail_lost`](Self::fail_lost)).
    in_admission: Option<InAdmission>,
    fault: Arc<FaultSwitch>,
}

/// What a lost shard needs of the message in admission to complete it.
#[derive(Clone, Copy, Debug)]
struct InAdmission {
    message: MessageId,
    connection: ConnectionId,
    role: Role,
    tenant: TenantId,
    priority: Priority,
    origin: Origin,
}

/// A drain under way: the connection refuses new work; it is done when nothing of it is
/// pending any more.
#[derive(Clone, Copy, Debug)]
struct Drain {
    connection: Slot,
    request: u64,
    /// Messages of the connection that ran (delivered or failed) since the drain began.
    finished: u64,
    /// Messages of the connection cancelled since the drain began: by the drain itself,
    /// by its deadline, or by a cancel command meanwhile.
    cancelled: u64,
    /// When what is still queued is cancelled (engine clock, ns).
    deadline_ns: u64,
    deadline_passed: bool,
}

/// Older messages of one connection that drop-oldest plans to evict for a new one, and what
/// they would free.
#[derive(Clone, Copy, Debug, Default)]
struct Evictions {
    /// Made by `plan_evictions` (the drop-oldest path), even if empty.
    planned: bool,
    /// How many, per priority (the oldest ones at each).
    per_priority: [u32; Priority::COUNT],
    total: u32,
    payload_bytes: u64,
    /// Of the new message's role.
    same_role: u32,
    /// Charged to the new message's tenant.
    same_tenant: u32,
}

impl Evictions {
    const NONE: Evictions = Evictions {
        planned: false,
        per_priority: [0; Priority::COUNT],
        total: 0,
        payload_bytes: 0,
        same_role: 0,
        same_tenant: 0,
    };
}

/// Retry-after for cap refusals when no handler time has been measured yet.
const SERVICE_NS_DEFAULT: u64 = 1_000;

/// Breaker transitions a shard keeps until it can send them; beyond this the oldest is
/// dropped. The shard sends one whenever its reply ring is empty, which the control thread
/// sees to within a turn, so only a stalled control thread lets reports pile up: it then
/// gets the latest, as its own bounded history would keep.
pub(crate) const BREAKER_REPORTS_MAX: usize = 16;

impl ShardCore {
    /// A shard's state, with every table allocated now.
    pub(crate) fn new(
        index: usize,
        shard_count: usize,
        config: &Config,
        tenants: Arc<TenantTable>,
        global: Arc<GlobalQuotas>,
        breaker: Arc<CircuitBreaker>,
        fault: Arc<FaultSwitch>,
    ) -> Self {
        let rate = &config.rate;
        let adaptive = rate.adaptive.then(|| AdaptiveSettings {
            latency_threshold_ns: rate.adaptive_latency_threshold_ns,
            cut_percent: rate.adaptive_cut_percent,
            recover_percent: rate.adaptive_recover_percent,
            floor_per_sec: core::num::NonZeroU32::new(rate.adaptive_floor_per_sec.max(1))
                .expect("max(1) is non-zero"),
        });
        let handler_queue = config.caps.handler_queue as usize;
        let tenant_count = tenants.len();
        Self {
            index,
            shard_count,
            response_bytes_max: config.net.response_bytes_max() as usize,
            levels: config.levels,
            cap_action: config.caps.action,
            drop_policy: config.caps.drop_policy,
            thresholds: CapThresholds::new(config),
            priority_percent: config.caps.priority_threshold_percent,
            backpressure_messages: (handler_queue * config.caps.backpressure_percent as usize)
                .div_ceil(100),
            connections: ConnectionTable::new(
                config.connections_per_shard_max,
                rate.per_connection_per_sec,
                rate.burst,
            ),
            queue: PendingQueue::new(handler_queue, config.connections_per_shard_max),
            deferred: DeferredTable::new(handler_queue),
            deferred_scratch: Vec::new(),
            run_ticket: None,
            worker_health: None,
            role_pending: [0; Role::COUNT],
            breaker_seen: breaker.read(),
            breaker_reports: VecDeque::with_capacity(BREAKER_REPORTS_MAX),
            tenants,
            global_credit: global.shard_credit(index),
            global,
            breaker,
            breaker_config: config.breaker,
            breaker_window: BreakerWindow::new(&config.breaker),
            shedding: false,
            adaptive,
            adaptive_interval_ns: rate.adaptive_interval_ns,
            adaptive_next_ns: rate.adaptive_interval_ns,
            intake_closed: false,
            backpressure_active: false,
            service_ns_mean: SERVICE_NS_DEFAULT,
            counters: ShardCounters::new(tenant_count),
            outbox: Vec::with_capacity(config.admission_batch_max + config.handler_batch_max),
            local_completions: Vec::new(),
            batch_finished: Vec::with_capacity(config.handler_batch_max),
            drains: Vec::new(),
            published_marker: [u64::MAX; 5],
            in_admission: None,
            fault,
        }
    }

    pub(crate) fn index(&self) -> usize {
        self.index
    }

    pub(crate) fn shard_count(&self) -> usize {
        self.shard_count
    }

    /// The longest response a handler may answer; `shard::run` fails a longer one.
    pub(crate) fn response_bytes_max(&self) -> usize {
        self.response_bytes_max
    }

    /// Connections held.
    pub(crate) fn connection_count(&self) -> usize {
        self.connections.len()
    }

    /// Messages queued.
    pub(crate) fn pending(&self) -> usize {
        self.queue.len()
    }

    /// Messages the handler deferred and has not answered yet.
    pub(crate) fn deferred(&self) -> usize {
        self.deferred.len()
    }

    /// How many handlers the next batch may run so that it takes about `slice_ns` at the
    /// mean handler time: at least one, at most `max`. Cheap handlers still run `max` to a
    /// batch; slow ones run one or a few, so the loop is back at admission (where a newly
    /// arrived P0 message waits to be queued ahead of the backlog) within about a slice.
    /// `max` is `handler_batch_max`, at least 1 in a validated configuration.
    pub(crate) fn handler_batch_for(&self, slice_ns: u64, max: usize) -> usize {
        let fits = slice_ns / self.service_ns_mean.max(1);
        usize::try_from(fits).unwrap_or(usize::MAX).clamp(1, max)
    }

    /// Whether the handler queue is at or over its backpressure threshold.
    pub(crate) fn backpressure_active(&self) -> bool {
        self.backpressure_active
    }

    /// What the handler last published of its workers.
    pub(crate) fn worker_health(&self) -> Option<WorkerHealth> {
        self.worker_health
    }

    pub(crate) fn set_worker_health(&mut self, health: WorkerHealth) {
        self.worker_health = Some(health);
    }

    /// Refuse everything from now on with `ShuttingDown`.
    pub(crate) fn close_intake(&mut self) {
        self.intake_closed = true;
    }

    // ----- admission -------------------------------------------------------------------

    /// Decides one message. `Ok`: admitted and queued. `Err`: the completion it ends with now
    /// (refused, shed, or dropped as the newest at a cap, with its priority as decided);
    /// the caller delivers it.
    /// Completions of other messages that this decision drops go to the outbox.
    ///
    /// The message's outcome is counted at one point, with the decision, so a panic before
    /// that point leaves it uncounted and [`fail_lost`](Self::fail_lost) counts it once.
    #[inline]
    pub(crate) fn admit(
        &mut self,
        message: Message,
        origin: Origin,
        now_ns: u64,
    ) -> Result<(), Completion> {
        self.in_admission = Some(InAdmission {
            message: message.id,
            connection: message.connection,
            role: message.role,
            tenant: message.tenant,
            priority: message.priority,
            origin,
        });
        self.fault.pass(FaultPoint::Admission);
        let decision = self.decide(message, origin, now_ns);
        self.in_admission = None;
        decision
    }

    /// The admission pipeline itself (see [`admit`](Self::admit)).
    #[inline(always)]
    fn decide(
        &mut self,
        mut message: Message,
        origin: Origin,
        now_ns: u64,
    ) -> Result<(), Completion> {
        let role = message.role;

        // The connection: found, added, or no room for it.
        let Some((connection, evicted)) =
            self.connections.find_or_insert(message.connection, now_ns)
        else {
            return self.decline(&message, None, refused(RefusalReason::ConnectionLimit, 0));
        };
        self.counters.connections_evicted += u64::from(evicted);
        let tenant_index = self.tenant_of(connection, message.tenant);

        // Intake closed for shutdown, or the connection disconnected by a cap.
        if self.intake_closed {
            return self.decline(
                &message,
                tenant_index,
                refused(RefusalReason::ShuttingDown, 0),
            );
        }
        if self.connections.get(connection).disconnected {
            return self.decline(
                &message,
                tenant_index,
                refused(RefusalReason::Disconnected, 0),
            );
        }
        if self.connections.get(connection).draining {
            return self.decline(&message, tenant_index, refused(RefusalReason::Draining, 0));
        }

        // Priority is a claim: the tenant's ceiling lowers it, counted.
        if let Some(tenant) = tenant_index {
            let allowed = tenant.ceiling(message.priority);
            if allowed != message.priority {
                message.priority = allowed;
                self.counters.priority_downgraded += 1;
            }
        }
        let priority = message.priority;

        // Level 3: while the breaker is open, P2 and P3 are shed.
        if self.shedding && priority >= Priority::P2 {
            let shed = Outcome::Shed {
                reason: ShedReason::CircuitOpen,
            };
            return self.decline(&message, tenant_index, shed);
        }

        // Level 2: the caps. Under drop-oldest, room is planned first and made only for a
        // message that is then admitted (see `plan_evictions`); otherwise a full cap ends
        // the decision (refuse, drop the newest, or disconnect).
        let mut tenant_charged = false;
        let mut evictions = Evictions::default();
        if self.levels.queue_caps {
            if (self.cap_action, self.drop_policy) == (CapAction::Drop, QueueDropPolicy::DropOldest)
            {
                match self.plan_evictions(connection, &message, tenant_index) {
                    Ok(plan) => evictions = plan,
                    Err(reason) => {
                        let retry_after_ns = self.drain_estimate_ns(reason, connection, &message);
                        return self.decline(
                            &message,
                            tenant_index,
                            refused(reason, retry_after_ns),
                        );
                    }
                }
            } else {
                let full_cap = match self.first_full_cap(connection, &message, &Evictions::NONE) {
                    Some(reason) => Some(reason),
                    None => {
                        match tenant_index.map(|tenant| self.tenants.try_charge(tenant, priority)) {
                            Some(TenantCharge::Full) => Some(RefusalReason::TenantQueueFull),
                            Some(TenantCharge::Charged) => {
                                tenant_charged = true;
                                None
                            }
                            Some(TenantCharge::Uncounted) | None => None,
                        }
                    }
                };
                if let Some(reason) = full_cap {
                    return match self.cap_action {
                        CapAction::Disconnect => {
                            self.disconnect(connection, now_ns);
                            self.decline(&message, tenant_index, refused(reason, 0))
                        }
                        CapAction::Drop => self.admit_and_drop_newest(&message, tenant_index),
                        CapAction::Refuse => {
                            let retry_after_ns =
                                self.drain_estimate_ns(reason, connection, &message);
                            self.decline(&message, tenant_index, refused(reason, retry_after_ns))
                        }
                    };
                }
            }
        }

        // The handler queue's storage is allocated at start for `caps.handler_queue`
        // messages: with the caps level switched off that is still a hard bound, so a full
        // queue refuses (never grows).
        if self.queue.len() - evictions.total as usize >= self.queue.capacity() {
            self.undo_tenant_charge(tenant_charged, tenant_index);
            let retry_after_ns = self.service_ns_mean;
            let refusal = refused(RefusalReason::HandlerQueueFull, retry_after_ns);
            return self.decline(&message, tenant_index, refusal);
        }

        // Level 1: the connection's token bucket. This shard owns the bucket, so the check
        // needs no compare-exchange.
        if self.levels.rate_limit {
            let bucket = &mut self.connections.get_mut(connection).bucket;
            if let Err(retry_after) = bucket.try_acquire_exclusive(now_ns, 1) {
                self.undo_tenant_charge(tenant_charged, tenant_index);
                let refusal = refused(RefusalReason::RateLimited, retry_after.wait_ns);
                return self.decline(&message, tenant_index, refusal);
            }
        }

        // The tenant's share of its fleet-wide rate (`[global]`), in a bucket all shards of
        // this process charge; set by a lease the lease thread renews, never waited for here.
        if let Err(refusal) = self.global.charge(
            &mut self.global_credit,
            tenant_index,
            message.payload.len() as u64,
            now_ns,
        ) {
            self.undo_tenant_charge(tenant_charged, tenant_index);
            let refusal = match refusal {
                GlobalRefusal::Exceeded { retry_after_ns } => {
                    refused(RefusalReason::GlobalQuotaExceeded, retry_after_ns)
                }
                GlobalRefusal::Unavailable { retry_after_ns } => {
                    refused(RefusalReason::GlobalQuotaUnavailable, retry_after_ns)
                }
            };
            return self.decline(&message, tenant_index, refusal);
        }

        // Drop-oldest's room, now that the message is sure to be admitted; then its tenant
        // charge, which another shard may have taken meanwhile (then it is refused after all).
        if evictions.total > 0 {
            self.evict(connection, &message, &evictions, now_ns);
        }
        if evictions.planned {
            if let Some(tenant) = tenant_index {
                match self.tenants.try_charge(tenant, priority) {
                    TenantCharge::Full => {
                        let retry_after_ns = self.drain_estimate_ns(
                            RefusalReason::TenantQueueFull,
                            connection,
                            &message,
                        );
                        let refusal = refused(RefusalReason::TenantQueueFull, retry_after_ns);
                        return self.decline(&message, tenant_index, refusal);
                    }
                    TenantCharge::Charged => tenant_charged = true,
                    TenantCharge::Uncounted => {}
                }
            }
        }

        // Admitted: queue it.
        let payload_bytes = message.payload.len() as u64;
        let state = self.connections.get_mut(connection);
        state.pending_messages += 1;
        state.pending_bytes += payload_bytes;
        self.role_pending[role.index()] += 1;
        self.count_decision((role, priority), tenant_index, None);
        self.queue.push(
            &mut self.connections,
            Entry {
                message,
                origin,
                admitted_ns: now_ns,
                connection,
                tenant: tenant_index,
                tenant_charged,
            },
        );
        self.after_queue_change(role, now_ns);
        Ok(())
    }

    /// Gives back the tenant charge of a message refused after it was made (a later level
    /// refused it).
    #[inline]
    fn undo_tenant_charge(&self, charged: bool, tenant: Option<TenantIndex>) {
        if let (true, Some(tenant)) = (charged, tenant) {
            self.tenants.release(tenant);
        }
    }

    /// The tenant table index for this connection's tenant, cached per connection.
    #[inline]
    fn tenant_of(&mut self, connection: Slot, tenant: TenantId) -> Option<TenantIndex> {
        // The tenant is recorded even when no tenant has settings: a rate change for a
        // tenant finds its connections by it.
        let state = self.connections.get_mut(connection);
        if state.tenant != tenant {
            state.tenant = tenant;
            state.tenant_index = if self.tenants.is_empty() {
                None
            } else {
                self.tenants.find(tenant)
            };
        }
        state.tenant_index
    }

    /// The first of this shard's caps that `message` does not fit under, in SPEC order,
    /// once the messages `freed` plans to evict are gone ([`Evictions::NONE`]: as things are).
    #[inline]
    fn first_full_cap(
        &self,
        connection: Slot,
        message: &Message,
        freed: &Evictions,
    ) -> Option<RefusalReason> {
        let priority = message.priority;
        let state = self.connections.get(connection);
        let thresholds = &self.thresholds;
        let connection_messages = match state.message_cap {
            0 => thresholds.connection_messages,
            // Set at run time for this connection: computed per check, only for it.
            cap => Thresholds::new(u64::from(cap), &self.priority_percent),
        };
        let pending_messages = u64::from(state.pending_messages) - u64::from(freed.total);
        if !connection_messages.admits(pending_messages, 1, priority) {
            return Some(RefusalReason::ConnectionQueueFull);
        }
        let payload_bytes = message.payload.len() as u64;
        if !thresholds.connection_bytes.admits(
            state.pending_bytes - freed.payload_bytes,
            payload_bytes,
            priority,
        ) {
            return Some(RefusalReason::ConnectionBytesFull);
        }
        let role = message.role.index();
        let role_pending = self.role_pending[role] - u64::from(freed.same_role);
        if !thresholds.roles[role].admits(role_pending, 1, priority) {
            return Some(RefusalReason::RoleQueueFull);
        }
        let queued = self.queue.len() as u64 - u64::from(freed.total);
        if !thresholds.handler_queue.admits(queued, 1, priority) {
            return Some(RefusalReason::HandlerQueueFull);
        }
        None
    }

    /// How long until the cap that refused `message` has drained enough to take it, at this
    /// shard's recent handler time per message. An estimate: other traffic may fill it first.
    fn drain_estimate_ns(&self, reason: RefusalReason, connection: Slot, message: &Message) -> u64 {
        let priority = message.priority;
        let state = self.connections.get(connection);
        let (pending, limit) = match reason {
            RefusalReason::ConnectionQueueFull => (
                u64::from(state.pending_messages),
                self.thresholds.connection_messages.limit(priority),
            ),
            RefusalReason::RoleQueueFull => {
                let role = message.role.index();
                (
                    self.role_pending[role],
                    self.thresholds.roles[role].limit(priority),
                )
            }
            RefusalReason::HandlerQueueFull => (
                self.queue.len() as u64,
                self.thresholds.handler_queue.limit(priority),
            ),
            // Bytes and the tenant's cross-shard count: estimate one message's turn.
            _ => (1, 1),
        };
        (pending + 1).saturating_sub(limit).max(1) * self.service_ns_mean
    }

    /// Drop-oldest's plan for `message`: which older messages of its connection to evict so
    /// that it fits under every cap, found without touching anything. For each full cap in
    /// turn it takes the connection's oldest message, at the lowest priority not above the
    /// new one's, that frees room there (one of the same role for the role cap, one charged
    /// to the same tenant for the tenant cap, one with a payload for the byte cap). `Err`
    /// names the cap that no eviction clears: nothing is evicted and the message is refused.
    /// Bounded: each pass plans one more eviction of the connection's pending messages.
    fn plan_evictions(
        &self,
        connection: Slot,
        message: &Message,
        tenant_index: Option<TenantIndex>,
    ) -> Result<Evictions, RefusalReason> {
        let mut plan = Evictions {
            planned: true,
            ..Evictions::NONE
        };
        loop {
            let full_cap =
                self.first_full_cap(connection, message, &plan)
                    .or_else(|| match tenant_index {
                        Some(tenant)
                            if !self.tenants.would_admit(
                                tenant,
                                message.priority,
                                u64::from(plan.same_tenant),
                            ) =>
                        {
                            Some(RefusalReason::TenantQueueFull)
                        }
                        _ => None,
                    });
            let Some(reason) = full_cap else {
                return Ok(plan);
            };
            let candidate = Priority::ALL
                .into_iter()
                .rev()
                .take_while(|&priority| priority >= message.priority)
                .find_map(|priority| {
                    let older = plan.per_priority[priority.index()] as usize;
                    let oldest =
                        self.queue
                            .nth_oldest(&self.connections, connection, priority, older)?;
                    let frees_room = match reason {
                        RefusalReason::RoleQueueFull => oldest.message.role == message.role,
                        RefusalReason::TenantQueueFull => {
                            oldest.tenant_charged && oldest.tenant == tenant_index
                        }
                        RefusalReason::ConnectionBytesFull => !oldest.message.payload.is_empty(),
                        _ => true,
                    };
                    frees_room.then_some((priority, oldest))
                });
            let Some((priority, oldest)) = candidate else {
                return Err(reason);
            };
            plan.per_priority[priority.index()] += 1;
            plan.total += 1;
            plan.payload_bytes += oldest.message.payload.len() as u64;
            plan.same_role += u32::from(oldest.message.role == message.role);
            plan.same_tenant += u32::from(oldest.tenant_charged && oldest.tenant == tenant_index);
        }
    }

    /// Carries out `plan` (see [`plan_evictions`](Self::plan_evictions)): its messages end
    /// `Dropped(EvictedForNewer)`.
    fn evict(&mut self, connection: Slot, message: &Message, plan: &Evictions, now_ns: u64) {
        for priority in Priority::ALL {
            for _ in 0..plan.per_priority[priority.index()] {
                let entry = self
                    .queue
                    .pop_oldest(&mut self.connections, connection, priority)
                    .expect("planned from what is queued");
                self.finish(
                    entry,
                    Outcome::Dropped {
                        reason: DropReason::EvictedForNewer,
                    },
                );
                self.after_queue_change(message.role, now_ns);
            }
        }
    }

    /// `disconnect`: drops everything the connection has queued and refuses what follows.
    fn disconnect(&mut self, connection: Slot, now_ns: u64) {
        self.connections.get_mut(connection).disconnected = true;
        for priority in Priority::ALL {
            while let Some(entry) =
                self.queue
                    .pop_oldest(&mut self.connections, connection, priority)
            {
                let role = entry.message.role;
                self.finish(
                    entry,
                    Outcome::Dropped {
                        reason: DropReason::Disconnected,
                    },
                );
                self.after_queue_change(role, now_ns);
            }
        }
    }

    /// `drop_newest`: the message counts as admitted and completes as dropped at once.
    fn admit_and_drop_newest(
        &mut self,
        message: &Message,
        tenant_index: Option<TenantIndex>,
    ) -> Result<(), Completion> {
        let dropped = Outcome::Dropped {
            reason: DropReason::DroppedNewest,
        };
        self.count_decision(classes(message), tenant_index, None);
        self.count_finish(classes(message), tenant_index, dropped);
        Err(Completion::of(message, dropped))
    }

    /// Counts a refusal or shed and returns its completion for the caller to deliver.
    #[inline]
    fn decline(
        &mut self,
        message: &Message,
        tenant_index: Option<TenantIndex>,
        outcome: Outcome,
    ) -> Result<(), Completion> {
        self.count_decision(classes(message), tenant_index, Some(outcome));
        if let Outcome::Refused {
            reason: RefusalReason::TenantQueueFull,
            ..
        } = outcome
        {
            // Demand the tenant's fleet-wide cap share did not meet, for its next lease.
            self.global.note_cap_refusal(self.index, tenant_index);
        }
        Err(Completion::of(message, outcome))
    }

    #[inline(always)]
    fn count_decision(
        &mut self,
        (role, priority): (Role, Priority),
        tenant: Option<TenantIndex>,
        outcome: Option<Outcome>,
    ) {
        let tenant_tally = self.tenant_tally(tenant);
        self.counters.total.count_decision(outcome);
        self.counters.roles[role.index()].count_decision(outcome);
        self.counters.priorities[priority.index()].count_decision(outcome);
        self.counters.tenants[tenant_tally].count_decision(outcome);
    }

    #[inline(always)]
    fn count_finish(
        &mut self,
        (role, priority): (Role, Priority),
        tenant: Option<TenantIndex>,
        outcome: Outcome,
    ) {
        let tenant_tally = self.tenant_tally(tenant);
        self.counters.total.count_finish(outcome);
        self.counters.roles[role.index()].count_finish(outcome);
        self.counters.priorities[priority.index()].count_finish(outcome);
        self.counters.tenants[tenant_tally].count_finish(outcome);
    }

    /// Per-tenant counters: the tenant's own if it has settings, else the shared "other".
    #[inline(always)]
    fn tenant_tally(&self, tenant: Option<TenantIndex>) -> usize {
        tenant.map_or(self.counters.tenants.len() - 1, TenantIndex::position)
    }

    /// Backpressure edge and the breaker's full-queue trip, after the queue changed.
    #[inline]
    fn after_queue_change(&mut self, role: Role, now_ns: u64) {
        let pending = self.queue.len();
        let active = pending >= self.backpressure_messages;
        if active && !self.backpressure_active {
            self.counters.backpressure_raised += 1;
        }
        self.backpressure_active = active;
        if !(self.levels.circuit_breaker && self.breaker_config.trip_on_full_queue) {
            return;
        }
        if let Some((queue, pending, cap)) = self.full_queue(role) {
            if let Some(moved) = self.breaker.trip_full_queue(now_ns) {
                self.counters.breaker_trips += 1;
                let trigger = ShardTrigger::QueueFull {
                    queue,
                    pending,
                    cap,
                };
                self.report_breaker_move(moved, trigger);
            }
        }
    }

    /// The queue at 100% of its cap, if any, with its depth and cap: the handler queue, or
    /// the queue of `role` (the role of the message that just changed it).
    #[inline]
    fn full_queue(&self, role: Role) -> Option<(FullQueue, u64, u64)> {
        let pending = self.queue.len() as u64;
        let cap = self.thresholds.handler_queue.cap();
        if pending >= cap {
            return Some((FullQueue::Handler, pending, cap));
        }
        let pending = self.role_pending[role.index()];
        let cap = self.thresholds.roles[role.index()].cap();
        (pending >= cap).then_some((FullQueue::Role(role), pending, cap))
    }

    /// Keeps a transition this shard made for the control plane's history. Off the data
    /// path: only the shard whose compare-exchange moved the breaker gets here.
    #[cold]
    fn report_breaker_move(&mut self, moved: BreakerMove, trigger: ShardTrigger) {
        if self.breaker_reports.len() == BREAKER_REPORTS_MAX {
            self.breaker_reports.pop_front();
        }
        self.breaker_reports.push_back(BreakerReport {
            shard: self.index,
            from_word: moved.from.word(),
            to_word: moved.to.word(),
            trigger,
        });
    }

    /// The oldest breaker transition not yet sent to the control plane.
    pub(crate) fn next_breaker_report(&mut self) -> Option<BreakerReport> {
        self.breaker_reports.pop_front()
    }

    // ----- running handlers ------------------------------------------------------------

    /// The next queued message to run, highest priority first, fairly across connections
    /// within a priority (see `shard::run`, which runs it).
    pub(crate) fn next_to_run(&mut self) -> Option<Entry> {
        self.queue.pop_next(&mut self.connections)
    }

    /// Ends a message that ran with `outcome`: releases what it held, counts it, sends its
    /// completion, and keeps it for the batch's latency figures ([`end_batch`](Self::end_batch)).
    pub(crate) fn finish_run(
        &mut self,
        entry: Entry,
        outcome: Outcome,
        response: Bytes,
        detail: Option<ErrorDetail>,
        now_ns: u64,
    ) {
        // A request the handler refused as the client's mistake says nothing about the
        // service: it feeds neither the breaker's window nor the adaptive rate.
        if counts_against_service(outcome) {
            self.batch_finished.push(Finished {
                connection: entry.connection,
                admitted_ns: entry.admitted_ns,
                priority: entry.message.priority,
                failed: outcome != Outcome::Delivered,
            });
        }
        let role = entry.message.role;
        self.finish_with(entry, outcome, response, detail);
        self.after_queue_change(role, now_ns);
    }

    /// Closes a batch of `ran` messages that started at `start_ns` and ended at `end_ns`:
    /// the mean handler time, and each finished message's latency for the breaker's window
    /// and its connection's adaptive rate.
    pub(crate) fn end_batch(&mut self, ran: usize, start_ns: u64, end_ns: u64) {
        if ran > 0 {
            let end_ns = end_ns.max(start_ns);
            let per_message_ns = (end_ns - start_ns) / ran as u64;
            self.service_ns_mean = (self.service_ns_mean * 7 + per_message_ns.max(1)).div_ceil(8);
            for index in 0..self.batch_finished.len() {
                let finished = self.batch_finished[index];
                let latency_ns = end_ns.saturating_sub(finished.admitted_ns);
                self.record_latency(
                    finished.connection,
                    finished.priority,
                    latency_ns,
                    finished.failed,
                );
            }
        }
        self.batch_finished.clear();
    }

    /// One finished message's latency (admission to answer), for the breaker's window, its
    /// connection's adaptive rate and, when it was delivered, its priority's histogram.
    #[inline]
    fn record_latency(
        &mut self,
        connection: Slot,
        priority: Priority,
        latency_ns: u64,
        failed: bool,
    ) {
        self.breaker_window.record(latency_ns, failed);
        if !failed {
            self.counters.latency[priority.index()].record(latency_ns);
        }
        let state = self.connections.get_mut(connection);
        state.interval_latency_max_ns = state.interval_latency_max_ns.max(latency_ns);
    }

    // ----- deferred messages (`ShardContext::defer`) -----------------------------------

    /// Whether a handler run may defer one more message.
    pub(crate) fn can_defer(&self) -> bool {
        self.deferred.has_room()
    }

    /// The ticket of the message the current handler run defers, reserved on the first
    /// call of the run (`None`: the table is full, which `run_handlers` checks before each
    /// run).
    pub(crate) fn run_ticket(&mut self) -> Option<Ticket> {
        if self.run_ticket.is_none() {
            self.run_ticket = self.deferred.reserve();
        }
        self.run_ticket
    }

    /// The ticket the handler run that just returned (or panicked) reserved, if any.
    pub(crate) fn take_run_ticket(&mut self) -> Option<Ticket> {
        self.run_ticket.take()
    }

    /// Keeps `entry`, whose handler run deferred it under `ticket` and began at `taken_ns`.
    pub(crate) fn hold_deferred(&mut self, ticket: Ticket, entry: Entry, taken_ns: u64) {
        self.deferred.fill(ticket, Held { entry, taken_ns });
    }

    /// Gives back the ticket of a run that did not defer after all.
    pub(crate) fn release_deferred(&mut self, ticket: Ticket) {
        self.deferred.release(ticket);
    }

    /// The deferred message `ticket` names, and when its handler took it, if it is still
    /// held.
    pub(crate) fn deferred_message(&self, ticket: Ticket) -> Option<(&Message, u64)> {
        self.deferred
            .get(ticket)
            .map(|held| (&held.entry.message, held.taken_ns))
    }

    /// Finishes the deferred message `ticket` names with `outcome` at `now_ns`: its latency
    /// from admission goes to the breaker's window and its connection's adaptive rate, as a
    /// message run at once does (unless the outcome does not count against the service).
    /// False if the ticket is stale (its message was finished otherwise).
    pub(crate) fn complete_deferred(
        &mut self,
        ticket: Ticket,
        outcome: Outcome,
        response: Bytes,
        detail: Option<ErrorDetail>,
        now_ns: u64,
    ) -> bool {
        let Some(held) = self.deferred.take(ticket) else {
            return false;
        };
        self.finish_held(held, outcome, response, detail, now_ns);
        true
    }

    fn finish_held(
        &mut self,
        held: Held,
        outcome: Outcome,
        response: Bytes,
        detail: Option<ErrorDetail>,
        now_ns: u64,
    ) {
        if counts_against_service(outcome) {
            let latency_ns = now_ns.saturating_sub(held.entry.admitted_ns);
            self.record_latency(
                held.entry.connection,
                held.entry.message.priority,
                latency_ns,
                outcome != Outcome::Delivered,
            );
        }
        let role = held.entry.message.role;
        self.finish_with(held.entry, outcome, response, detail);
        self.after_queue_change(role, now_ns);
    }

    /// Fails every deferred message (of `connection` only, if given) with `reason` and
    /// `detail`; returns how many.
    fn fail_deferred(
        &mut self,
        connection: Option<Slot>,
        reason: FailureReason,
        detail: &str,
        now_ns: u64,
    ) -> usize {
        let mut held = core::mem::take(&mut self.deferred_scratch);
        match connection {
            Some(connection) => self.deferred.take_of_connection(connection, &mut held),
            None => self.deferred.take_all(&mut held),
        }
        let failed = held.len();
        for one in held.drain(..) {
            let detail = (!detail.is_empty()).then(|| ErrorDetail::new(detail));
            self.finish_held(
                one,
                Outcome::Failed { reason },
                Bytes::new(),
                detail,
                now_ns,
            );
        }
        self.deferred_scratch = held;
        failed
    }

    /// Fails every deferred message `WorkerLost` (shutdown: nobody will hear the answer).
    pub(crate) fn fail_all_deferred(&mut self, detail: &str, now_ns: u64) -> usize {
        self.fail_deferred(None, FailureReason::WorkerLost, detail, now_ns)
    }

    /// Releases what `entry` held, counts how it ended, and sends its completion.
    #[inline]
    fn finish(&mut self, entry: Entry, outcome: Outcome) {
        self.finish_with(entry, outcome, Bytes::new(), None);
    }

    /// [`finish`](Self::finish), with what the handler answered.
    fn finish_with(
        &mut self,
        entry: Entry,
        outcome: Outcome,
        response: Bytes,
        detail: Option<ErrorDetail>,
    ) {
        let role = entry.message.role;
        let state = self.connections.get_mut(entry.connection);
        state.pending_messages -= 1;
        state.pending_bytes -= entry.message.payload.len() as u64;
        self.role_pending[role.index()] -= 1;
        if let (true, Some(tenant)) = (entry.tenant_charged, entry.tenant) {
            self.tenants.release(tenant);
        }
        if state.draining {
            // Every drain under way on this connection counts how its messages end.
            for drain in &mut self.drains {
                if drain.connection == entry.connection {
                    if outcome == Outcome::Cancelled {
                        drain.cancelled += 1;
                    } else {
                        drain.finished += 1;
                    }
                }
            }
        }
        self.count_finish(classes(&entry.message), entry.tenant, outcome);
        let completion = Completion {
            response,
            detail,
            ..Completion::of(&entry.message, outcome)
        };
        if entry.origin == Origin::LOCAL {
            self.local_completions.push(completion);
        } else {
            self.outbox.push((entry.origin, completion));
        }
    }

    /// After the shard thread panicked outside a handler (a lost shard): the message that
    /// was in admission, if any, and every queued message end `Failed(ShardLost)`, counted.
    /// Queued completions go to the outbox (or `local_completions`) as usual; the one in
    /// admission is returned with its origin, for the caller to post straight to its ring
    /// (its ingress never counted it in flight).
    pub(crate) fn fail_lost(&mut self, now_ns: u64) -> Option<(Origin, Completion)> {
        let in_admission = self.in_admission.take().map(|held| {
            let completion = Completion {
                message: held.message,
                connection: held.connection,
                tenant: held.tenant,
                priority: held.priority,
                outcome: SHARD_LOST,
                response: Bytes::new(),
                detail: None,
            };
            self.count_lost((held.role, held.priority), held.tenant);
            (held.origin, completion)
        });
        while let Some(entry) = self.queue.pop_next(&mut self.connections) {
            let role = entry.message.role;
            self.finish(entry, SHARD_LOST);
            self.after_queue_change(role, now_ns);
        }
        self.fail_deferred(None, FailureReason::ShardLost, "", now_ns);
        in_admission
    }

    /// Counts a message that reached a lost shard: admitted (it was the shard's to serve)
    /// and failed `ShardLost`, so the reconciliation holds message by message.
    pub(crate) fn count_lost(&mut self, classes: (Role, Priority), tenant: TenantId) {
        let tenant_index = self.tenants.find(tenant);
        self.count_decision(classes, tenant_index, None);
        self.count_finish(classes, tenant_index, SHARD_LOST);
    }

    /// Cancels everything queued (shutdown without finishing).
    pub(crate) fn cancel_all(&mut self, now_ns: u64) {
        while let Some(entry) = self.queue.pop_next(&mut self.connections) {
            let role = entry.message.role;
            self.finish(entry, Outcome::Cancelled);
            self.after_queue_change(role, now_ns);
        }
    }

    // ----- control-plane operations (off the data path, between batches) ---------------

    /// Starts draining `connection`: it refuses new messages with `Draining`; what it has
    /// queued runs (`finish_queued`) or is cancelled now. Returns the result at once if
    /// nothing is left pending; otherwise [`finished_drains`](Self::finished_drains)
    /// reports it when the last message finishes. A completed drain closes the connection:
    /// its slot is freed, and a later message with its id is a new connection.
    pub(crate) fn begin_drain(
        &mut self,
        connection: crate::message::ConnectionId,
        finish_queued: bool,
        request: u64,
        deadline_ns: u64,
        now_ns: u64,
    ) -> Option<DrainResult> {
        let Some(slot) = self.connections.find(connection) else {
            // Unknown here: nothing pending, nothing to close.
            return Some(DrainResult::default());
        };
        self.connections.get_mut(slot).draining = true;
        // Counted here, not by `finish`: this drain is not in `drains` yet (earlier drains
        // of the connection count these too).
        let cancelled = if finish_queued {
            0
        } else {
            self.cancel_queued_of(slot, now_ns)
        };
        let drain = Drain {
            connection: slot,
            request,
            finished: 0,
            cancelled,
            deadline_ns,
            deadline_passed: false,
        };
        // With nothing pending it is done now, unless an earlier drain of the connection is
        // still to be reported: then both complete together in `finished_drains`, so the slot
        // is freed only once no drain refers to it.
        let earlier = self.drains.iter().any(|other| other.connection == slot);
        if self.connections.get(slot).pending_messages == 0 && !earlier {
            self.connections.remove(slot);
            return Some(drain.result());
        }
        self.drains.push(drain);
        None
    }

    /// Cancels every message `connection` has queued, oldest first at each priority;
    /// returns how many.
    fn cancel_queued_of(&mut self, connection: Slot, now_ns: u64) -> u64 {
        let mut cancelled = 0;
        for priority in Priority::ALL {
            while let Some(entry) =
                self.queue
                    .pop_oldest(&mut self.connections, connection, priority)
            {
                let role = entry.message.role;
                self.finish(entry, Outcome::Cancelled);
                self.after_queue_change(role, now_ns);
                cancelled += 1;
            }
        }
        cancelled
    }

    /// Drains that completed since the last call, with their request ids: those whose
    /// connection has nothing queued any more, and those past their deadline at `now_ns`,
    /// whose queued messages are cancelled now.
    pub(crate) fn finished_drains(&mut self, now_ns: u64, out: &mut Vec<(u64, DrainResult)>) {
        if self.drains.is_empty() {
            return;
        }
        // Every drain past its deadline while its connection still has messages queued is
        // marked first, so that two drains of one connection agree whichever comes first;
        // then those messages are cancelled (`finish` counts them into each drain).
        for index in 0..self.drains.len() {
            let drain = self.drains[index];
            if now_ns >= drain.deadline_ns
                && self.connections.get(drain.connection).pending_messages > 0
            {
                self.drains[index].deadline_passed = true;
            }
        }
        for index in 0..self.drains.len() {
            let drain = self.drains[index];
            if drain.deadline_passed && self.connections.get(drain.connection).pending_messages > 0
            {
                self.cancel_queued_of(drain.connection, now_ns);
                // What the handler took and has not answered can no longer be waited for:
                // it fails, counted (`finish` counts it into each drain as finished).
                self.fail_deferred(
                    Some(drain.connection),
                    FailureReason::WorkerTimeout,
                    "drain deadline passed",
                    now_ns,
                );
            }
        }
        // Every drain of one connection completes in this same pass (they wait on the same
        // pending count); the first closes the connection, and the fresh entry it leaves is
        // not draining, so the others do not close it again.
        let connections = &mut self.connections;
        self.drains.retain(|drain| {
            let done = connections.get(drain.connection).pending_messages == 0;
            if done {
                out.push((drain.request, drain.result()));
                if connections.get(drain.connection).draining {
                    connections.remove(drain.connection);
                }
            }
            !done
        });
    }

    /// Cancels the queued message `message` of `connection`, ahead of the data queue.
    /// False if it is not queued (unknown, already run, or never admitted): nothing else is
    /// touched.
    pub(crate) fn cancel(
        &mut self,
        connection: crate::message::ConnectionId,
        message: crate::message::MessageId,
        now_ns: u64,
    ) -> bool {
        let Some(slot) = self.connections.find(connection) else {
            return false;
        };
        for priority in Priority::ALL {
            let removed = self
                .queue
                .remove_where(&mut self.connections, slot, priority, |entry| {
                    entry.message.id == message
                });
            if let Some(entry) = removed {
                let role = entry.message.role;
                self.finish(entry, Outcome::Cancelled);
                self.after_queue_change(role, now_ns);
                return true;
            }
        }
        false
    }

    /// Sets the caps' priority percentages on this shard from the next message on: every
    /// cap keeps its size and gets the new per-priority limits (a connection's own cap is
    /// computed with them when it is checked).
    pub(crate) fn set_priority_percent(&mut self, percent: [u32; Priority::COUNT]) {
        self.priority_percent = percent;
        let caps = &mut self.thresholds;
        caps.connection_messages = caps.connection_messages.with_percent(&percent);
        caps.connection_bytes = caps.connection_bytes.with_percent(&percent);
        for role in &mut caps.roles {
            *role = role.with_percent(&percent);
        }
        caps.handler_queue = caps.handler_queue.with_percent(&percent);
    }

    /// Sets the pending-message cap of `role` on this shard from the next message on.
    pub(crate) fn set_role_cap(&mut self, role: Role, max_pending: u32) {
        self.thresholds.roles[role.index()] =
            Thresholds::new(u64::from(max_pending), &self.priority_percent);
    }

    /// Sets `connection`'s own pending-message cap from the next message on (adding the
    /// connection if the shard does not hold it yet). False if there is no room for it.
    pub(crate) fn set_connection_cap(
        &mut self,
        connection: crate::message::ConnectionId,
        max_pending: u32,
        now_ns: u64,
    ) -> bool {
        let Some((slot, _)) = self.connections.find_or_insert(connection, now_ns) else {
            return false;
        };
        self.connections.get_mut(slot).message_cap = max_pending;
        true
    }

    /// Sets the nominal rate of one connection, of every connection of a tenant that this
    /// shard holds, or of every connection and the default of those added later, from the
    /// next message on. Returns how many connections changed.
    pub(crate) fn set_rate(
        &mut self,
        scope: RateScope,
        rate_per_sec: core::num::NonZeroU32,
        now_ns: u64,
    ) -> usize {
        let apply = |state: &mut super::connections::ConnectionState| {
            state.nominal_rate_per_sec = rate_per_sec.get();
            state.rate_per_sec = rate_per_sec.get();
            state.bucket.set_rate(rate_per_sec);
        };
        match scope {
            RateScope::Connection(connection) => {
                match self.connections.find_or_insert(connection, now_ns) {
                    Some((slot, _)) => {
                        apply(self.connections.get_mut(slot));
                        1
                    }
                    None => 0,
                }
            }
            RateScope::Tenant(tenant) => {
                let mut changed = 0;
                for state in self.connections.iter_mut() {
                    if state.tenant == tenant {
                        apply(state);
                        changed += 1;
                    }
                }
                changed
            }
            RateScope::All => {
                // The configured rate itself changes: every connection follows it again
                // (a rate set for one connection or tenant before is replaced), and stays
                // evictable, as one on the configured rate is.
                self.connections.set_configured_rate(rate_per_sec.get());
                let mut changed = 0;
                for state in self.connections.iter_mut() {
                    apply(state);
                    state.nominal_rate_per_sec = 0;
                    changed += 1;
                }
                changed
            }
        }
    }

    // ----- once per loop ---------------------------------------------------------------

    /// The work that is per batch, not per message: follow the breaker (and move it if
    /// this shard's window says so), and run the adaptive rate sweep when it is due.
    pub(crate) fn maintain(&mut self, now_ns: u64) {
        let reading = self.breaker.read();
        if reading != self.breaker_seen {
            self.breaker_window.clear();
            self.breaker_seen = reading;
        }
        if self.levels.circuit_breaker {
            let verdict = self.breaker_window.verdict();
            if let Some(moved) =
                self.breaker
                    .evaluate(reading, verdict, now_ns, &self.breaker_config)
            {
                // This shard moved it: it says why, from the window it judged (which the
                // new state starts without).
                let trigger = match moved.transition {
                    Transition::Tripped => {
                        self.counters.breaker_trips += 1;
                        let window = self.breaker_window.take_figures();
                        if window.p95_latency_ns > window.p95_latency_max_ns {
                            ShardTrigger::P95Latency(window)
                        } else {
                            ShardTrigger::ErrorRate(window)
                        }
                    }
                    Transition::Probing => ShardTrigger::RecoveryTimeout {
                        open_for_ns: moved.held_ns(),
                        recovery_timeout_ns: self.breaker_config.recovery_timeout_ns,
                    },
                    Transition::Recovered => ShardTrigger::GoodPeriod {
                        half_open_for_ns: moved.held_ns(),
                        good_period_ns: self.breaker_config.good_period_ns,
                        window: self.breaker_window.take_figures(),
                    },
                };
                self.report_breaker_move(moved, trigger);
                self.breaker_seen = self.breaker.read();
                self.breaker_window.clear();
            }
        }
        // With the level off, only a state forced by the control plane sheds.
        let state = self.breaker_seen.state();
        self.shedding = state.sheds()
            && (self.levels.circuit_breaker
                || state == crate::admission::breaker::BreakerState::ForcedOpen);

        if let Some(settings) = self.adaptive {
            if self.levels.rate_limit && now_ns >= self.adaptive_next_ns {
                self.adaptive_next_ns = now_ns + self.adaptive_interval_ns;
                self.adjust_rates(&settings);
            }
        }
    }

    /// One adaptive interval for every connection: cut where its latency was over the
    /// threshold, recover elsewhere. O(connections) once per interval (1 s by default).
    fn adjust_rates(&mut self, settings: &AdaptiveSettings) {
        let configured_per_sec = self.connections.configured_rate_per_sec();
        for state in self.connections.iter_mut() {
            let decision = adaptive_decide(
                settings,
                state.nominal_rate_per_sec(configured_per_sec),
                state.rate_per_sec,
                state.interval_latency_max_ns,
            );
            state.interval_latency_max_ns = 0;
            if let Some(rate_per_sec) = decision.new_rate() {
                state.rate_per_sec = rate_per_sec;
                state.bucket.set_rate(
                    core::num::NonZeroU32::new(rate_per_sec).expect("adaptive rates are >= 1"),
                );
            }
        }
    }

    /// Publishes the counters (with current gauges) for `Stats` readers.
    pub(crate) fn publish(&mut self, published: &PublishedCounters, scratch: &mut Vec<u64>) {
        published.publish(self.counters(), scratch);
        self.published_marker = self.change_marker();
    }

    /// Whether anything a `Stats` reader sees changed since the last publication.
    pub(crate) fn counters_changed(&self) -> bool {
        self.change_marker() != self.published_marker
    }

    /// Every count only grows, so these sums change whenever any counter does; the gauges
    /// are compared as they are.
    fn change_marker(&self) -> [u64; 5] {
        let total = &self.counters.total;
        [
            total.submitted + total.finished(),
            self.counters.priority_downgraded
                + self.counters.backpressure_raised
                + self.counters.connections_evicted
                + self.counters.breaker_trips,
            self.queue.len() as u64,
            self.connections.len() as u64,
            u64::from(self.backpressure_active),
        ]
    }

    /// Records the submissions waiting in this shard's rings, for the next publication
    /// (the shard thread reads its rings; the core does not own them).
    pub(crate) fn set_ring_messages(&mut self, messages: u64) {
        self.counters.ring_messages = messages;
    }

    /// This shard's counters as they are now, gauges refreshed (for `publish`, and for the
    /// single-threaded simulation).
    pub(crate) fn counters(&mut self) -> &ShardCounters {
        self.counters.pending_messages = self.queue.len() as u64;
        self.counters.connections = self.connections.len() as u64;
        self.counters.backpressure_active = u64::from(self.backpressure_active);
        &self.counters
    }
}

impl Drain {
    fn result(&self) -> DrainResult {
        DrainResult {
            finished: self.finished,
            cancelled: self.cancelled,
            deadline_passed: self.deadline_passed,
        }
    }
}

/// How every message of a lost shard ends.
const SHARD_LOST: Outcome = Outcome::Failed {
    reason: FailureReason::ShardLost,
};

fn refused(reason: RefusalReason, retry_after_ns: u64) -> Outcome {
    Outcome::Refused {
        reason,
        retry_after_ns,
    }
}

/// Whether a finished message's latency and result feed the breaker's window and the
/// adaptive rate: all but a failure that is the client's mistake (`InvalidRequest`).
fn counts_against_service(outcome: Outcome) -> bool {
    match outcome {
        Outcome::Failed { reason } => reason.counts_against_service(),
        _ => true,
    }
}
