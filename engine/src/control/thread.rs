//! The control-plane thread's loop. Each turn: collect shard replies (finishing requests),
//! serve waiting requests highest kind first, resend commands that found a shard's ring
//! full, sample the queues when the monitor is due, then wait.
//!
//! A shard never has more commands outstanding than its reply ring holds, less the room kept
//! for its breaker reports (the thread counts them), so a shard can always answer without
//! blocking. Breaker transitions go into the history as they are learnt: forced ones and
//! the monitor's trips here, a shard's from its report.

use std::collections::{HashMap, VecDeque};

use hdrhistogram::Histogram;

use crate::admission::breaker::{BreakerReading, BreakerState};
use crate::config::priority_thresholds_out_of_order;
use crate::message::Role;
use crate::monitor::{shard_samples, AlertLevel, QueueId, QueueSample};
use crate::ring::spsc;
use crate::shared::EngineShared;
use crate::sync::Ordering;
use crate::wait::Waiter;

use super::log::{BreakerLog, RefusalLog};
use super::{
    Answer, BreakerCause, BreakerTransition, CancelOutcome, Command, CommandKind, CommandLatency,
    ComponentHandler, ControlDesk, ControlError, ControlShared, ControlStats, DrainReport,
    GlobalQuotaHealth, Health, HealthKind, Hosted, Limit, RateTarget, Request, ShardHealth,
};
use crate::command::{RateScope, ShardCommand, ShardReply, BREAKER_REPORT_ROOM};

/// Requests served per turn before the thread looks at shard replies again, so that a
/// flood of one kind cannot hold answers back.
const REQUESTS_PER_TURN_MAX: usize = 64;
/// The control thread's own waker in its poll (above every hosted service's token).
const WAKER: mio::Token = mio::Token(usize::MAX - 1);
/// Events taken per poll.
const EVENTS_PER_POLL: usize = 256;
/// Histogram range: 1 ns to 1 hour, 3 significant digits.
const LATENCY_MAX_NS: u64 = 3_600_000_000_000;

/// The control thread's end of one shard's rings.
pub(crate) struct ControlLink {
    pub(crate) commands: spsc::Producer<ShardCommand>,
    pub(crate) replies: spsc::Consumer<ShardReply>,
}

/// Per command kind, the latency from request to answer.
pub(crate) struct LatencyBook {
    histograms: Vec<Histogram<u64>>,
    slo_violations: u64,
}

impl LatencyBook {
    pub(crate) fn new() -> Self {
        Self {
            histograms: (0..CommandKind::COUNT)
                .map(|_| {
                    Histogram::new_with_bounds(1, LATENCY_MAX_NS, 3)
                        .expect("bounds are valid constants")
                })
                .collect(),
            slo_violations: 0,
        }
    }

    fn record(&mut self, kind: CommandKind, latency_ns: u64, slo_ns: u64) {
        self.histograms[kind.index()].saturating_record(latency_ns.max(1));
        if kind == CommandKind::Health && latency_ns > slo_ns {
            self.slo_violations += 1;
        }
    }

    pub(crate) fn stats(&self) -> ControlStats {
        let latency = CommandKind::ALL
            .into_iter()
            .zip(&self.histograms)
            .filter(|(_, histogram)| !histogram.is_empty())
            .map(|(command, histogram)| CommandLatency {
                command,
                count: histogram.len(),
                p50_ns: histogram.value_at_quantile(0.50),
                p95_ns: histogram.value_at_quantile(0.95),
                p99_ns: histogram.value_at_quantile(0.99),
                p999_ns: histogram.value_at_quantile(0.999),
                max_ns: histogram.max(),
            })
            .collect();
        ControlStats {
            latency,
            slo_violations: self.slo_violations,
            // Filled from the breaker history by `ControlShared::stats`.
            breaker_transitions: Default::default(),
        }
    }
}

/// A request waiting for shard replies.
struct Pending {
    request: Request,
    /// Shards that still owe a reply.
    remaining: usize,
    state: PendingState,
}

enum PendingState {
    Health {
        kind: HealthKind,
        shards: Vec<ShardHealth>,
    },
    Drain {
        connection: crate::message::ConnectionId,
    },
    Cancel,
    Applied {
        changed: usize,
    },
}

struct ControlLoop<'a> {
    engine: &'a EngineShared,
    control: &'a ControlShared,
    links: Vec<ControlLink>,
    /// Commands a shard's full ring could not take yet, in order.
    backlog: Vec<VecDeque<ShardCommand>>,
    /// Commands sent to each shard and not yet answered: at most `commands_outstanding_max`.
    outstanding: Vec<usize>,
    pending: HashMap<u64, Pending>,
    next_request: u64,
    components: HashMap<String, ComponentHandler>,
    /// Role caps as last set, for the monitor.
    role_caps: [u64; Role::COUNT],
    /// The ring capacity less [`BREAKER_REPORT_ROOM`] (at least 1: see `shard::commands`).
    commands_outstanding_max: usize,
    /// Breaker transitions are logged here as they are learnt, within a rate limit.
    breaker_log: BreakerLog,
    /// Refusals and sheds, summarised from the monitor's reading of the counters.
    refusal_log: RefusalLog,
}

pub(crate) fn run(
    engine: &EngineShared,
    control: &ControlShared,
    links: Vec<ControlLink>,
    mut waiter: Waiter,
) {
    let _ = control.nice.set(raise_priority(engine.config.control.nice));
    let shards = links.len();
    let config = &engine.config;
    let mut state = ControlLoop {
        engine,
        control,
        backlog: (0..shards).map(|_| VecDeque::new()).collect(),
        outstanding: vec![0; shards],
        links,
        pending: HashMap::new(),
        next_request: 1,
        components: HashMap::new(),
        role_caps: config.caps.role_messages.map(u64::from),
        commands_outstanding_max: config.control.ring_capacity - BREAKER_REPORT_ROOM,
        breaker_log: BreakerLog::new(),
        refusal_log: RefusalLog::default(),
    };
    // The thread waits in an event loop, not a park: a hosted service's sockets (the admin
    // endpoint's) wake it there as handles and shards do, through the loop's waker. Without
    // a poll (the system refused one) it parks, and nothing can be hosted.
    let mut poll = mio::Poll::new()
        .and_then(|poll| {
            let waker = mio::Waker::new(poll.registry(), WAKER)?;
            let _ = control.sleeper.event_waker.set(waker);
            Ok(poll)
        })
        .map_err(|error| {
            tracing::error!(target: "spillway::control", %error, "no event loop for the control thread: it parks, and the admin endpoint cannot be served");
        })
        .ok();
    let mut events = mio::Events::with_capacity(EVENTS_PER_POLL);
    let mut hosted: Option<Box<dyn Hosted>> = None;
    let mut monitor_due_ns = engine.clock.now_ns() + config.monitor.interval_ns;
    loop {
        // Acquire: pairs with the Release store in `Engine::stop`, made after every shard
        // thread was joined.
        if control.stopping.load(Ordering::Acquire) {
            state.stop();
            return;
        }
        if let Some(poll) = &poll {
            state.take_hosted(&mut hosted, poll.registry());
        }
        let mut busy = state.collect_replies();
        let mut served = 0;
        while served < REQUESTS_PER_TURN_MAX {
            // Highest kind first: the inboxes are in serving order.
            let Some(request) = control.inboxes.iter().find_map(|inbox| inbox.pop()) else {
                break;
            };
            state.serve(request);
            served += 1;
        }
        busy |= served > 0;
        busy |= state.flush_backlog();
        let now_ns = engine.clock.now_ns();
        if now_ns >= monitor_due_ns {
            monitor_due_ns = now_ns + config.monitor.interval_ns;
            state.sample_queues(now_ns);
        }
        state.breaker_log.flush(now_ns);
        if let (Some(service), Some(poll)) = (&mut hosted, &mut poll) {
            // Its sockets' events since the last turn, without waiting: a zero-timeout
            // poll, only while something is hosted.
            if events.is_empty() {
                poll_now(poll, &mut events, Some(std::time::Duration::ZERO));
            }
            busy |= service.turn(&events, &mut state);
            if service.stopped() {
                hosted = None;
            }
        }
        events.clear();
        if busy {
            waiter.found_work();
        } else {
            let wait_max = hosted.as_ref().map(|service| service.wait_max());
            waiter.idle(
                &control.sleeper.sleeping,
                || {
                    control.stopping.load(Ordering::Relaxed)
                        || control.hosting.load(Ordering::Relaxed)
                        || control.inboxes.iter().any(|inbox| !inbox.is_empty())
                        || state.links.iter().any(|link| !link.replies.is_empty())
                },
                |timeout| match &mut poll {
                    Some(poll) => poll_now(
                        poll,
                        &mut events,
                        Some(wait_max.map_or(timeout, |wait_max| timeout.min(wait_max))),
                    ),
                    None => std::thread::park_timeout(timeout),
                },
            );
        }
    }
}

/// Polls once; an error other than an interruption is logged (the loop goes on: a turn
/// sees no events, and the next poll tries again).
fn poll_now(poll: &mut mio::Poll, events: &mut mio::Events, timeout: Option<std::time::Duration>) {
    if let Err(error) = poll.poll(events, timeout) {
        if error.kind() != std::io::ErrorKind::Interrupted {
            tracing::warn!(target: "spillway::control", %error, "control thread poll failed");
        }
    }
}

impl ControlDesk for ControlLoop<'_> {
    fn submit(&mut self, command: Command) -> std::sync::mpsc::Receiver<Answer> {
        let (answer, receiver) = std::sync::mpsc::sync_channel(1);
        let received_ns = self.engine.clock.now_ns();
        self.serve(Request {
            command,
            answer,
            received_ns,
        });
        receiver
    }
}

impl ControlLoop<'_> {
    /// Takes a service given to `Control::host` into the loop, in place of the one there.
    fn take_hosted(&mut self, hosted: &mut Option<Box<dyn Hosted>>, registry: &mio::Registry) {
        // Acquire: pairs with the Release store in `Control::host`, made after the service
        // was put in the slot.
        if !self.control.hosting.load(Ordering::Acquire) {
            return;
        }
        // Relaxed: the lock below orders the slot's contents.
        self.control.hosting.store(false, Ordering::Relaxed);
        let taken = self
            .control
            .hosted
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(mut service) = taken {
            match service.register(registry) {
                Ok(()) => *hosted = Some(service),
                Err(error) => {
                    tracing::error!(target: "spillway::control", %error, "a hosted service could not register its sockets; it is dropped");
                }
            }
        }
    }

    fn serve(&mut self, request: Request) {
        let engine = self.engine;
        let now_ns = engine.clock.now_ns();
        match &request.command {
            Command::ForceOpen => {
                let replaced = engine.breaker.force_open(now_ns);
                self.record_forced(
                    replaced,
                    BreakerState::ForcedOpen,
                    BreakerCause::ForcedOpen,
                    now_ns,
                );
                self.answer(request, Answer::Done);
            }
            Command::ForceClosed => {
                let replaced = engine.breaker.force_closed(now_ns);
                self.record_forced(
                    replaced,
                    BreakerState::ForcedClosed,
                    BreakerCause::ForcedClosed,
                    now_ns,
                );
                self.answer(request, Answer::Done);
            }
            Command::Reset => {
                let replaced = engine.breaker.reset(now_ns);
                self.record_forced(replaced, BreakerState::Closed, BreakerCause::Reset, now_ns);
                self.answer(request, Answer::Done);
            }
            &Command::Health(kind) => {
                let request_id = self.request_id();
                for shard in 0..self.links.len() {
                    self.send(
                        shard,
                        ShardCommand::Ping {
                            request: request_id,
                        },
                    );
                }
                self.wait(
                    request_id,
                    request,
                    self.links.len(),
                    PendingState::Health {
                        kind,
                        shards: Vec::with_capacity(self.links.len()),
                    },
                );
            }
            &Command::Drain(connection) => {
                let request_id = self.request_id();
                let shard = engine.shard_of(connection);
                self.send(
                    shard,
                    ShardCommand::Drain {
                        request: request_id,
                        connection,
                        finish_queued: engine.config.control.drain_finishes_queued,
                        deadline_ns: now_ns.saturating_add(engine.config.control.drain_timeout_ns),
                    },
                );
                self.wait(request_id, request, 1, PendingState::Drain { connection });
            }
            &Command::Cancel(connection, message) => {
                let request_id = self.request_id();
                let shard = engine.shard_of(connection);
                self.send(
                    shard,
                    ShardCommand::Cancel {
                        request: request_id,
                        connection,
                        message,
                    },
                );
                self.wait(request_id, request, 1, PendingState::Cancel);
            }
            &Command::SetLimit(limit) => self.set_limit(request, limit),
            &Command::SetRate(target, rate_per_sec) => {
                let request_id = self.request_id();
                let (shards, scope): (Vec<usize>, RateScope) = match target {
                    RateTarget::Connection(connection) => (
                        vec![engine.shard_of(connection)],
                        RateScope::Connection(connection),
                    ),
                    RateTarget::Tenant(tenant) => {
                        ((0..self.links.len()).collect(), RateScope::Tenant(tenant))
                    }
                    RateTarget::AllConnections => ((0..self.links.len()).collect(), RateScope::All),
                };
                for &shard in &shards {
                    self.send(
                        shard,
                        ShardCommand::SetRate {
                            request: request_id,
                            scope,
                            rate_per_sec,
                        },
                    );
                }
                self.wait(
                    request_id,
                    request,
                    shards.len(),
                    PendingState::Applied { changed: 0 },
                );
            }
            Command::Register(..) | Command::Unregister(_) | Command::Send(..) => {
                self.component(request)
            }
        }
    }

    /// Records a forcing command's transition, if it changed the state.
    fn record_forced(
        &mut self,
        replaced: BreakerReading,
        to: BreakerState,
        cause: BreakerCause,
        now_ns: u64,
    ) {
        if replaced.state() == to {
            return;
        }
        self.record_transition(BreakerTransition {
            at_ns: now_ns,
            from: replaced.state(),
            to,
            cause,
        });
    }

    fn record_transition(&mut self, transition: BreakerTransition) {
        self.breaker_log
            .record(self.engine.clock.now_ns(), transition);
        if let Ok(mut history) = self.control.breaker_history.lock() {
            history.record(transition);
        }
    }

    /// Sends `command()` to every shard and answers `request` once all have applied it.
    fn apply_on_every_shard(
        &mut self,
        request: Request,
        request_id: u64,
        command: impl Fn() -> ShardCommand,
    ) {
        for shard in 0..self.links.len() {
            self.send(shard, command());
        }
        let shards = self.links.len();
        self.wait(
            request_id,
            request,
            shards,
            PendingState::Applied { changed: 0 },
        );
    }

    fn set_limit(&mut self, request: Request, limit: Limit) {
        let engine = self.engine;
        let request_id = self.request_id();
        match limit {
            Limit::Tenant {
                tenant,
                max_pending,
            } => {
                // The tenant count is shared by all shards: set it here, no shard hop.
                // A tenant with only a fleet-wide rate keeps no count to cap: as unknown.
                let answer = match engine.tenants.find(tenant) {
                    Some(index) if engine.tenants.set_max_pending(index, max_pending) => {
                        Answer::Done
                    }
                    _ => Answer::Error(ControlError::UnknownTenant(tenant.0)),
                };
                self.answer(request, answer);
            }
            Limit::Role { role, max_pending } => {
                if max_pending == 0 {
                    let error = invalid_cap(max_pending);
                    self.answer(request, Answer::Error(error));
                    return;
                }
                self.role_caps[role.index()] = u64::from(max_pending);
                self.apply_on_every_shard(request, request_id, || ShardCommand::SetRoleCap {
                    request: request_id,
                    role,
                    max_pending,
                });
            }
            Limit::PriorityThresholds { percent } => {
                // In order, as the file's validation has it, so a more urgent message never
                // meets a lower limit.
                if priority_thresholds_out_of_order(&percent).is_some() {
                    let error = ControlError::Invalid {
                        field: "priority_threshold_percent",
                        allowed: "1..=100 each, P0 to P3 not increasing",
                        got: format!("{percent:?}"),
                    };
                    self.answer(request, Answer::Error(error));
                    return;
                }
                // The tenant table is shared: set here; the shards' caps by command.
                engine.tenants.set_percent(percent);
                self.apply_on_every_shard(request, request_id, || {
                    ShardCommand::SetPriorityPercent {
                        request: request_id,
                        percent,
                    }
                });
            }
            Limit::Connection {
                connection,
                max_pending,
            } => {
                if max_pending == 0 {
                    let error = invalid_cap(max_pending);
                    self.answer(request, Answer::Error(error));
                    return;
                }
                let shard = engine.shard_of(connection);
                self.send(
                    shard,
                    ShardCommand::SetConnectionCap {
                        request: request_id,
                        connection,
                        max_pending,
                    },
                );
                self.wait(request_id, request, 1, PendingState::Applied { changed: 0 });
            }
        }
    }

    fn component(&mut self, request: Request) {
        let answer = match &request.command {
            Command::Register(name, _) if self.components.contains_key(name) => {
                Answer::Error(ControlError::ComponentExists(name.clone()))
            }
            Command::Unregister(name) => {
                self.components.remove(name);
                Answer::Done
            }
            Command::Send(name, message) => match self.components.get_mut(name) {
                Some(handler) => Answer::Bytes(handler(message)),
                None => Answer::Error(ControlError::UnknownComponent(name.clone())),
            },
            _ => Answer::Done,
        };
        let Request {
            command,
            answer: sender,
            received_ns,
        } = request;
        if let (Command::Register(name, handler), Answer::Done) = (command, &answer) {
            self.components.insert(name, handler);
        }
        self.record(CommandKind::Component, received_ns);
        let _ = sender.send(answer);
    }

    fn request_id(&mut self) -> u64 {
        let id = self.next_request;
        self.next_request += 1;
        id
    }

    /// Sends `command` to `shard`, or queues it if the shard owes as many replies as its
    /// reply ring holds (or its command ring is full).
    fn send(&mut self, shard: usize, command: ShardCommand) {
        if !self.backlog[shard].is_empty()
            || self.outstanding[shard] >= self.commands_outstanding_max
        {
            self.backlog[shard].push_back(command);
            return;
        }
        match self.links[shard].commands.push(command) {
            Ok(()) => {
                self.outstanding[shard] += 1;
                self.engine.shards[shard].wake_if_sleeping_fenced();
            }
            Err(command) => self.backlog[shard].push_back(command),
        }
    }

    fn flush_backlog(&mut self) -> bool {
        let mut sent = false;
        for shard in 0..self.links.len() {
            while self.outstanding[shard] < self.commands_outstanding_max {
                let Some(command) = self.backlog[shard].pop_front() else {
                    break;
                };
                if let Err(command) = self.links[shard].commands.push(command) {
                    self.backlog[shard].push_front(command);
                    break;
                }
                self.outstanding[shard] += 1;
                self.engine.shards[shard].wake_if_sleeping_fenced();
                sent = true;
            }
        }
        sent
    }

    fn wait(&mut self, request_id: u64, request: Request, remaining: usize, state: PendingState) {
        self.pending.insert(
            request_id,
            Pending {
                request,
                remaining,
                state,
            },
        );
    }

    fn collect_replies(&mut self) -> bool {
        let mut any = false;
        for shard in 0..self.links.len() {
            while let Some(reply) = self.links[shard].replies.pop() {
                any = true;
                if let ShardReply::BreakerMoved(report) = reply {
                    // Not an answer: nothing was outstanding for it.
                    self.record_transition(BreakerTransition::from_report(report));
                    continue;
                }
                self.outstanding[shard] -= 1;
                self.on_reply(reply);
            }
        }
        any
    }

    fn on_reply(&mut self, reply: ShardReply) {
        let Some(request_id) = reply.request() else {
            return;
        };
        let Some(pending) = self.pending.get_mut(&request_id) else {
            return;
        };
        match (reply, &mut pending.state) {
            (
                ShardReply::Pong {
                    shard,
                    pending_messages,
                    connections,
                    backpressure,
                    lost,
                    workers,
                    ..
                },
                PendingState::Health { shards, .. },
            ) => shards.push(ShardHealth {
                shard,
                pending_messages,
                connections,
                backpressure,
                lost,
                workers,
            }),
            (ShardReply::Applied { changed, .. }, PendingState::Applied { changed: total }) => {
                *total += changed;
            }
            _ => {}
        }
        pending.remaining -= 1;
        let cancel = match reply {
            ShardReply::Cancelled { found, .. } => Some(found),
            _ => None,
        };
        let drained = match reply {
            ShardReply::Drained { result, .. } => Some(result),
            _ => None,
        };
        if pending.remaining > 0 {
            return;
        }
        let Some(pending) = self.pending.remove(&request_id) else {
            return;
        };
        let answer = match pending.state {
            PendingState::Health { kind, mut shards } => {
                shards.sort_by_key(|shard| shard.shard);
                Answer::Health(self.health(kind, shards))
            }
            PendingState::Drain { connection } => {
                let result = drained.unwrap_or_default();
                Answer::Drained(DrainReport {
                    connection,
                    finished: result.finished,
                    cancelled: result.cancelled,
                    deadline_passed: result.deadline_passed,
                })
            }
            PendingState::Cancel => Answer::Cancel(if cancel == Some(true) {
                CancelOutcome::Cancelled
            } else {
                CancelOutcome::NotFound
            }),
            PendingState::Applied { changed } => {
                if changed == 0 {
                    if let Command::SetLimit(Limit::Connection { connection, .. }) =
                        pending.request.command
                    {
                        self.answer(
                            pending.request,
                            Answer::Error(ControlError::NoRoom(connection.0)),
                        );
                        return;
                    }
                }
                Answer::Done
            }
        };
        self.answer(pending.request, answer);
    }

    fn health(&self, kind: HealthKind, shards: Vec<ShardHealth>) -> Health {
        let engine = self.engine;
        let breaker = engine.breaker.read().state();
        let alert_level = self
            .control
            .monitor
            .lock()
            .map_or(AlertLevel::Normal, |monitor| monitor.level());
        let lost_shards: Vec<usize> = shards
            .iter()
            .filter(|shard| shard.lost)
            .map(|shard| shard.shard)
            .collect();
        let live = shards.len() == self.links.len() && lost_shards.is_empty();
        let ready = live
            // Relaxed: a status read; shutdown does not depend on it.
            && !engine.stopping.load(Ordering::Relaxed)
            && !matches!(breaker, BreakerState::Open | BreakerState::ForcedOpen)
            && alert_level < AlertLevel::Overload;
        let global = &engine.global;
        Health {
            kind,
            live,
            ready,
            breaker,
            alert_level,
            lost_shards,
            degraded: global.degraded(),
            global: if kind == HealthKind::Full {
                global
                    .iter()
                    .map(|quota| GlobalQuotaHealth {
                        tenant: quota.tenant(),
                        mode: quota.mode(),
                        share_per_sec: quota.share_per_sec().0,
                        pending_share: quota.pending_share(),
                    })
                    .collect()
            } else {
                Vec::new()
            },
            shards: if kind == HealthKind::Full {
                shards
            } else {
                Vec::new()
            },
        }
    }

    fn answer(&mut self, request: Request, answer: Answer) {
        self.record(request.command.kind(), request.received_ns);
        // The caller may have given up (timeout); its answer is then dropped.
        let _ = request.answer.send(answer);
    }

    fn record(&self, kind: CommandKind, received_ns: u64) {
        let latency_ns = self.engine.clock.now_ns().saturating_sub(received_ns);
        if let Ok(mut book) = self.control.latency.lock() {
            book.record(kind, latency_ns, self.engine.config.control.health_slo_ns);
        }
    }

    /// One monitor round: every shard's handler and role queues and every capped tenant,
    /// from the counters the shards publish. An overload trips the breaker.
    fn sample_queues(&mut self, now_ns: u64) {
        let engine = self.engine;
        let stats = engine.stats();
        self.refusal_log.sample(now_ns, &stats.total);
        let mut samples = shard_samples(
            &stats,
            u64::from(engine.config.caps.handler_queue),
            &self.role_caps,
        );
        for (position, tenant) in engine.tenant_ids.iter().enumerate() {
            let index = engine
                .tenants
                .find(*tenant)
                .expect("tenant ids come from the table");
            debug_assert_eq!(index.position(), position);
            samples.push(QueueSample {
                queue: QueueId::Tenant { tenant: *tenant },
                depth: engine.tenants.pending(index),
                cap: engine.tenants.max_pending(index).unwrap_or(0),
            });
        }
        let overloaded = {
            let Ok(mut monitor) = self.control.monitor.lock() else {
                return;
            };
            monitor.sample(now_ns, samples);
            let overloaded = monitor.overloaded().next().map(|status| status.sample);
            overloaded
        };
        let Some(sample) = overloaded else {
            return;
        };
        if !engine.config.levels.circuit_breaker {
            return;
        }
        if let Some(moved) = engine.breaker.trip_full_queue(now_ns) {
            self.record_transition(BreakerTransition {
                at_ns: moved.to.since_ns(),
                from: moved.from.state(),
                to: moved.to.state(),
                cause: BreakerCause::Overload(sample),
            });
        }
    }

    /// Answers everything still waiting with `Stopped`, and closes the inboxes.
    fn stop(&mut self) {
        self.breaker_log.finish();
        if let Ok(mut monitor) = self.control.monitor.lock() {
            monitor.finish_log();
        }
        let mut closed = self
            .control
            .closed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *closed = true;
        for (_, pending) in self.pending.drain() {
            let _ = pending
                .request
                .answer
                .send(Answer::Error(ControlError::Stopped));
        }
        for inbox in self.control.inboxes.iter() {
            while let Some(request) = inbox.pop() {
                let _ = request.answer.send(Answer::Error(ControlError::Stopped));
            }
        }
    }
}

/// Asks the scheduler to favour this thread (`nice` in -20..=19; 0 asks nothing). Returns
/// the niceness in force if the request was granted.
pub(crate) fn raise_priority(nice: i32) -> Option<i32> {
    if nice == 0 {
        return None;
    }
    #[cfg(target_os = "linux")]
    {
        // On Linux, PRIO_PROCESS with who = 0 applies to the calling thread alone.
        // SAFETY: setpriority takes only integers and touches no memory of this process.
        let result = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
        (result == 0).then_some(nice)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

fn invalid_cap(max_pending: u32) -> ControlError {
    ControlError::Invalid {
        field: "max_pending",
        allowed: "1..=16777216",
        got: max_pending.to_string(),
    }
}
