//! The control plane end to end: commands served by the control thread, reaching shards
//! through their control rings ahead of the data backlog. Functional and bounded; nothing
//! here asserts a duration.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use spillway::admission::breaker::BreakerState;
use spillway::config::{Config, TenantConfig};
use spillway::control::{
    BreakerCause, BreakerTransition, BreakerTransitionCounts, CancelOutcome, CommandKind, Control,
    ControlError, FullQueue, HealthKind, Limit, RateTarget, ShardTrigger,
};
use spillway::engine::Engine;
use spillway::handler::HandlerError;
use spillway::ingress::Ingress;
use spillway::message::{ConnectionId, Message, MessageId, Priority, Role, TenantId};
use spillway::monitor::{AlertLevel, QueueId, QueueSample};
use spillway::outcome::{Completion, Outcome, RefusalReason};

const DEADLINE: Duration = Duration::from_secs(60);

/// One shard, no rate limit, a handler that takes `service` per message.
fn slow_engine(service: Duration, configure: impl FnOnce(&mut Config)) -> Engine {
    engine_with(configure, move |_: &Message| {
        std::thread::sleep(service);
        Ok::<(), HandlerError>(())
    })
}

/// One shard, no rate limit, `configure`'s changes, and `handler`.
fn engine_with(
    configure: impl FnOnce(&mut Config),
    handler: impl Fn(&Message) -> Result<(), HandlerError> + Clone + Send + 'static,
) -> Engine {
    let mut config = Config::default();
    config.shards = 1;
    config.levels.rate_limit = false;
    configure(&mut config);
    Engine::builder()
        .config(config)
        .handler(handler)
        .start()
        .unwrap()
}

fn session(connection: u64, id: u64) -> Message {
    Message::new(ConnectionId(connection), MessageId(id))
        .with_role(Role::Session)
        .with_priority(Priority::P0)
}

fn submit(ingress: &mut Ingress, message: Message) {
    ingress.submit(message).expect("ring has room");
}

/// The breaker's history once it holds `count` transitions (a shard's reaches the control
/// thread a little after the move).
fn breaker_history(control: &Control, count: usize) -> Vec<BreakerTransition> {
    let started = Instant::now();
    loop {
        let history = control.breaker_history();
        if history.len() >= count {
            return history;
        }
        assert!(started.elapsed() < DEADLINE, "history: {history:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn collect_until(ingress: &mut Ingress, completions: &mut Vec<Completion>, count: usize) {
    let started = Instant::now();
    while completions.len() < count {
        if ingress.poll_completions(completions) == 0 {
            assert!(started.elapsed() < DEADLINE, "stuck collecting completions");
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

#[test]
fn a_health_check_is_answered_before_a_deep_backlog_drains() {
    // 3000 queued messages at 200 us each: 0.6 s of backlog on the only shard.
    let engine = slow_engine(Duration::from_micros(200), |config| {
        config.handler_batch_max = 8;
    });
    let mut ingress = engine.ingress().unwrap();
    for id in 0..3000 {
        submit(&mut ingress, session(id % 10, id));
    }
    // Let the shard admit the backlog.
    let started = Instant::now();
    while engine.stats().shards[0].pending_messages < 2500 {
        assert!(started.elapsed() < DEADLINE);
        std::thread::sleep(Duration::from_millis(1));
    }
    let health = engine.control().health(HealthKind::Full).unwrap();
    assert!(health.live);
    // Answered while most of the backlog is still queued: the check did not wait for it.
    assert!(
        health.shards[0].pending_messages > 1000,
        "answered only after the backlog drained: {:?}",
        health.shards[0]
    );
    let stats = engine.stats();
    let health_latency = stats
        .control
        .latency
        .iter()
        .find(|latency| latency.command == CommandKind::Health)
        .expect("health latency recorded");
    assert_eq!(health_latency.count, 1);
    drop(ingress);
    engine.shutdown();
}

fn is_draining(outcome: Outcome) -> bool {
    matches!(
        outcome,
        Outcome::Refused {
            reason: RefusalReason::Draining,
            ..
        }
    )
}

#[test]
fn drain_refuses_new_work_finishes_the_queue_then_closes_the_connection() {
    let engine = slow_engine(Duration::from_millis(3), |config| {
        config.handler_batch_max = 1;
    });
    // 100 queued at 3 ms each: the drain runs about 300 ms, a window wide enough for the
    // loop below to see a refusal even on a loaded machine (20 gave 60 ms, which a
    // descheduled test thread could miss).
    const QUEUED: u64 = 100;
    let mut ingress = engine.ingress().unwrap();
    for id in 0..QUEUED {
        submit(&mut ingress, session(1, id));
    }
    submit(&mut ingress, session(2, 100_000));
    let started = Instant::now();
    while engine.stats().total.admitted < QUEUED + 1 {
        assert!(started.elapsed() < DEADLINE);
        std::thread::sleep(Duration::from_micros(200));
    }
    let drain = {
        let control = engine.control();
        std::thread::spawn(move || control.drain(ConnectionId(1)))
    };
    // While the drain runs (about 300 ms of queue), new messages of connection 1 are refused
    // `draining`: send one at a time until one is.
    let mut completions = Vec::new();
    let mut id = QUEUED;
    let refused_while_draining = loop {
        submit(&mut ingress, session(1, id));
        id += 1;
        let started = Instant::now();
        while !completions
            .iter()
            .any(|completion: &Completion| completion.message == MessageId(id - 1))
            && started.elapsed() < Duration::from_millis(1)
        {
            ingress.poll_completions(&mut completions);
        }
        if let Some(refused) = completions
            .iter()
            .find(|completion| is_draining(completion.outcome))
        {
            break refused.message;
        }
        assert!(
            !drain.is_finished(),
            "no message was refused while draining"
        );
    };
    let report = drain.join().unwrap().unwrap();
    assert_eq!(report.connection, ConnectionId(1));
    assert_eq!(report.cancelled, 0);
    assert!(report.finished > 0, "{report:?}");
    // Drained and closed: the shard forgot connection 1, so a message with its id after the
    // drain is a new connection's, and served.
    let connections = engine.control().health(HealthKind::Full).unwrap().shards[0].connections;
    assert_eq!(connections, 1, "only connection 2 is held");
    submit(&mut ingress, session(1, 1_000));
    submit(&mut ingress, session(2, 100_001));
    collect_until(
        &mut ingress,
        &mut completions,
        (id - QUEUED) as usize + QUEUED as usize + 1 + 2,
    );
    let outcome_of = |message: u64| {
        completions
            .iter()
            .find(|completion| completion.message == MessageId(message))
            .unwrap()
            .outcome
    };
    assert_eq!(outcome_of(1_000), Outcome::Delivered, "the id is new again");
    assert_eq!(outcome_of(100_001), Outcome::Delivered);
    assert!(is_draining(outcome_of(refused_while_draining.0)));
    let delivered_on_1 = completions
        .iter()
        .filter(|completion| {
            completion.message.0 < QUEUED && completion.outcome == Outcome::Delivered
        })
        .count();
    assert_eq!(
        delivered_on_1, QUEUED as usize,
        "a drain finishes what was queued"
    );
    drop(ingress);
    assert!(engine.shutdown().reconciles());
}

#[test]
fn drained_connections_free_their_slots_so_new_connections_keep_being_served() {
    // The shard holds 4 connections; 12 are opened and drained one after another, then 2
    // more come (one of them reusing a drained id). Drained connections used to keep their
    // slots for ever: the 5th was refused `connection_limit`.
    const TABLE: usize = 4;
    const DRAINED: u64 = 3 * TABLE as u64;
    let engine = slow_engine(Duration::from_micros(500), |config| {
        config.connections_per_shard_max = TABLE;
    });
    let control = engine.control();
    let mut ingress = engine.ingress().unwrap();
    let mut completions = Vec::new();
    let mut submitted = 0u64;
    for connection in 0..DRAINED {
        for _ in 0..3 {
            submit(&mut ingress, session(connection, submitted));
            submitted += 1;
        }
        // Drain once the shard has decided all three (so the drain finds them).
        let started = Instant::now();
        loop {
            let total = engine.stats().total;
            if total.admitted + total.refused_total() == submitted {
                assert_eq!(
                    total.refused_total(),
                    0,
                    "connection {connection}: {total:?}"
                );
                break;
            }
            assert!(started.elapsed() < DEADLINE, "connection {connection}");
            std::thread::sleep(Duration::from_micros(200));
        }
        let report = control.drain(ConnectionId(connection)).unwrap();
        assert_eq!((report.cancelled, report.deadline_passed), (0, false));
        // Whether the drain still found some of the three queued depends on timing here;
        // `a_drain_refuses_while_it_runs_then_closes_the_connection_whose_id_is_new_again`
        // (tests/admission.rs, on the simulation) checks those figures exactly.
        assert!(report.finished <= 3, "{report:?}");
        let health = control.health(HealthKind::Full).unwrap();
        assert!(
            health.shards[0].connections < TABLE as u64,
            "the drained connection still holds a slot: {health:?}"
        );
    }
    assert_eq!(
        control.health(HealthKind::Full).unwrap().shards[0].connections,
        0
    );
    for connection in [DRAINED + 1, 0] {
        submit(&mut ingress, session(connection, submitted));
        submitted += 1;
    }
    collect_until(&mut ingress, &mut completions, submitted as usize);
    assert!(
        completions
            .iter()
            .all(|completion| completion.outcome == Outcome::Delivered),
        "{:?}",
        completions
            .iter()
            .find(|completion| completion.outcome != Outcome::Delivered)
    );
    assert_eq!(
        control.health(HealthKind::Full).unwrap().shards[0].connections,
        2
    );
    drop(ingress);
    let stats = engine.shutdown();
    assert!(stats.reconciles(), "{stats:?}");
    assert_eq!(stats.total.submitted, submitted);
    assert_eq!(stats.total.delivered, submitted);
    assert_eq!(stats.total.refused_total(), 0);
    assert_eq!(stats.shards[0].connections_evicted, 0, "freed, not evicted");
}

#[test]
fn cancel_removes_a_queued_message_and_leaves_everything_else_alone() {
    let engine = slow_engine(Duration::from_millis(2), |config| {
        config.handler_batch_max = 1;
    });
    let mut ingress = engine.ingress().unwrap();
    for id in 0..50 {
        submit(&mut ingress, session(1, id));
    }
    let started = Instant::now();
    while engine.stats().total.admitted < 50 {
        assert!(started.elapsed() < DEADLINE);
        std::thread::sleep(Duration::from_micros(200));
    }
    let control = engine.control();
    // The last one is still far back in the queue.
    assert_eq!(
        control.cancel(ConnectionId(1), MessageId(49)).unwrap(),
        CancelOutcome::Cancelled
    );
    // Twice: it is no longer queued.
    assert_eq!(
        control.cancel(ConnectionId(1), MessageId(49)).unwrap(),
        CancelOutcome::NotFound
    );
    // A message that never existed, on a connection the shard does not know.
    assert_eq!(
        control.cancel(ConnectionId(77), MessageId(1)).unwrap(),
        CancelOutcome::NotFound
    );
    let mut completions = Vec::new();
    collect_until(&mut ingress, &mut completions, 50);
    // One that already ran: not found, and nothing else touched.
    assert_eq!(
        control.cancel(ConnectionId(1), MessageId(0)).unwrap(),
        CancelOutcome::NotFound
    );
    let cancelled: Vec<_> = completions
        .iter()
        .filter(|completion| completion.outcome == Outcome::Cancelled)
        .map(|completion| completion.message)
        .collect();
    assert_eq!(cancelled, [MessageId(49)]);
    drop(ingress);
    let stats = engine.shutdown();
    assert_eq!(stats.total.cancelled, 1);
    assert_eq!(stats.total.delivered, 49);
    assert!(stats.reconciles());
}

#[test]
fn set_limit_and_set_rate_change_the_next_batches_decisions() {
    let engine = slow_engine(Duration::from_millis(5), |config| {
        config.handler_batch_max = 1;
        config.tenants = vec![TenantConfig {
            tenant: TenantId(9),
            max_pending: None,
            priority_ceiling: Priority::P0,
        }];
    });
    let control = engine.control();
    control
        .set_limit(Limit::Role {
            role: Role::ToolExecutor,
            max_pending: 3,
        })
        .unwrap();
    assert_eq!(
        control.set_limit(Limit::Tenant {
            tenant: TenantId(8),
            max_pending: Some(1),
        }),
        Err(ControlError::UnknownTenant(8))
    );
    control
        .set_limit(Limit::Tenant {
            tenant: TenantId(9),
            max_pending: Some(2),
        })
        .unwrap();
    control
        .set_rate(RateTarget::Connection(ConnectionId(5)), 1)
        .unwrap();
    assert!(matches!(
        control.set_rate(RateTarget::Tenant(TenantId(9)), 0),
        Err(ControlError::Invalid {
            field: "rate_per_sec",
            ..
        })
    ));

    let mut ingress = engine.ingress().unwrap();
    for id in 0..10 {
        let tool_call = Message::new(ConnectionId(100 + id), MessageId(id))
            .with_role(Role::ToolExecutor)
            .with_priority(Priority::P0);
        submit(&mut ingress, tool_call);
    }
    for id in 10..15 {
        submit(&mut ingress, session(200 + id, id).with_tenant(TenantId(9)));
    }
    let mut completions = Vec::new();
    collect_until(&mut ingress, &mut completions, 15);
    let refused = |reason: RefusalReason| {
        completions
            .iter()
            .filter(|completion| {
                matches!(completion.outcome, Outcome::Refused { reason: r, .. } if r == reason)
            })
            .count()
    };
    // At most 3 tool calls pending at once, at most 2 of tenant 9's messages.
    assert!(
        refused(RefusalReason::RoleQueueFull) >= 6,
        "{completions:?}"
    );
    assert!(
        refused(RefusalReason::TenantQueueFull) >= 2,
        "{completions:?}"
    );
    drop(ingress);
    let stats = engine.shutdown();
    assert!(stats.reconciles());
}

#[test]
fn set_rate_applies_to_the_next_messages_of_that_connection() {
    let engine = slow_engine(Duration::ZERO, |config| {
        config.levels.rate_limit = true;
        config.rate.adaptive = false;
    });
    // The default burst window is 2 s (1000 at 500/s); at 1 msg/s that is 2 messages.
    engine
        .control()
        .set_rate(RateTarget::Connection(ConnectionId(5)), 1)
        .unwrap();
    let mut ingress = engine.ingress().unwrap();
    for id in 0..5 {
        submit(&mut ingress, session(5, id));
    }
    for id in 5..10 {
        submit(&mut ingress, session(6, id));
    }
    let mut completions = Vec::new();
    collect_until(&mut ingress, &mut completions, 10);
    let rate_limited = |connection: u64| {
        completions
            .iter()
            .filter(|completion| {
                completion.connection == ConnectionId(connection)
                    && matches!(
                        completion.outcome,
                        Outcome::Refused {
                            reason: RefusalReason::RateLimited,
                            ..
                        }
                    )
            })
            .count()
    };
    assert_eq!(rate_limited(5), 3);
    assert_eq!(rate_limited(6), 0);
    drop(ingress);
    engine.shutdown();
}

#[test]
fn the_monitor_alerts_on_a_filling_queue_and_a_full_queue_opens_the_breaker() {
    // The shard trips the breaker when an admission leaves a queue at 100% of its cap. If
    // it admitted the ten messages over two turns with a handler run between them, the
    // queue would peak at 9 of 10 and never trip, so a gate holds the shard inside the
    // first (session) handler until all ten transport messages wait in the ring; it then
    // admits them in one batch.
    let gate_open = Arc::new(AtomicBool::new(false));
    let gated_handler_entered = Arc::new(AtomicBool::new(false));
    let (gate, entered) = (Arc::clone(&gate_open), Arc::clone(&gated_handler_entered));
    let engine = engine_with(
        |config| {
            config.handler_batch_max = 1;
            config.caps.role_messages[Role::Transport.index()] = 10;
            config.caps.connection_messages = 1000;
            config.monitor.interval_ns = 1_000_000;
        },
        move |message: &Message| {
            if message.role == Role::Session {
                // Relaxed: the flags carry no data (the rings publish the messages with
                // their own orderings); each side only has to see the other's flag.
                entered.store(true, Ordering::Relaxed);
                while !gate.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_micros(100));
                }
            } else {
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok::<(), HandlerError>(())
        },
    );
    let mut ingress = engine.ingress().unwrap();
    submit(&mut ingress, session(100, 100));
    let started = Instant::now();
    while !gated_handler_entered.load(Ordering::Relaxed) {
        assert!(started.elapsed() < DEADLINE, "the gated handler never ran");
        std::thread::sleep(Duration::from_micros(200));
    }
    for id in 0..10 {
        let transport = Message::new(ConnectionId(id), MessageId(id))
            .with_role(Role::Transport)
            .with_priority(Priority::P0);
        submit(&mut ingress, transport);
    }
    gate_open.store(true, Ordering::Relaxed);
    let control = engine.control();
    // The shard publishes after each handler batch, so the monitor sees the queue at 9 of
    // 10 (critical) at the highest; the shard itself opens the breaker at 10 of 10.
    while !control
        .alerts()
        .iter()
        .any(|alert| alert.level >= AlertLevel::Warning)
    {
        assert!(
            started.elapsed() < DEADLINE,
            "no alert: {:?}",
            control.queues()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let alerts = control.alerts();
    let transport_queue = QueueId::Role {
        shard: 0,
        role: Role::Transport,
    };
    assert!(alerts.iter().all(|alert| alert.queue == transport_queue));
    assert_eq!(control.queues_of_role(Role::Transport).len(), 1);
    // A full queue opened the breaker (the shard trips it at 100%, the monitor too).
    assert_eq!(control.breaker_state(), BreakerState::Open);
    // The shard did, and says which queue, how deep and its cap.
    let history = breaker_history(&control, 1);
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(
        (history[0].from, history[0].to, history[0].cause),
        (
            BreakerState::Closed,
            BreakerState::Open,
            BreakerCause::Shard {
                shard: 0,
                trigger: ShardTrigger::QueueFull {
                    queue: FullQueue::Role(Role::Transport),
                    pending: 10,
                    cap: 10,
                },
            },
        )
    );
    // The stats count it by cause.
    let counts = control.stats().control.breaker_transitions;
    assert_eq!((counts.queue_full, counts.total()), (1, 1), "{counts:?}");
    let health = control.health(HealthKind::Readiness).unwrap();
    assert!(health.live && !health.ready);
    drop(ingress);
    engine.shutdown();
}

/// Sets its flag when dropped, on a panic too.
struct ReleaseOnDrop(Arc<AtomicBool>);

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        // Relaxed: a flag with no data behind it.
        self.0.store(true, Ordering::Relaxed);
    }
}

#[test]
fn an_overloaded_tenant_queue_trips_the_breaker_through_the_monitor_which_names_it() {
    // Tenant 7 may have 5 messages pending across shards. The handler holds the first until
    // the breaker opens, so the tenant's count stays at 5 of 5 until the monitor (sampling
    // every ms) sees it at overload and trips the breaker; no shard queue is near its cap.
    // All 5 must be admitted before the first is held (a held handler stops admission), so
    // a gate message holds the shard while the 5 are put in its ring, and lets it go: the
    // shard then takes all 5 in one admission batch.
    let release = Arc::new(AtomicBool::new(false));
    let released = Arc::clone(&release);
    let in_gate = Arc::new(AtomicBool::new(false));
    let gate_open = Arc::new(AtomicBool::new(false));
    let (entered, opened) = (Arc::clone(&in_gate), Arc::clone(&gate_open));
    let engine = engine_with(
        |config| {
            config.monitor.interval_ns = 1_000_000;
            config.tenants = vec![TenantConfig {
                tenant: TenantId(7),
                max_pending: Some(5),
                priority_ceiling: Priority::P0,
            }];
        },
        move |message: &Message| {
            // Relaxed throughout: flags with no data behind them.
            let wait_for = if message.tenant == TenantId(7) {
                &released
            } else {
                entered.store(true, Ordering::Relaxed);
                &opened
            };
            while !wait_for.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_micros(100));
            }
            Ok::<(), HandlerError>(())
        },
    );
    let control = engine.control();
    let mut ingress = engine.ingress().unwrap();
    submit(&mut ingress, session(100, 100));
    let started = Instant::now();
    while !in_gate.load(Ordering::Relaxed) {
        assert!(started.elapsed() < DEADLINE, "the gate message never ran");
        std::thread::sleep(Duration::from_millis(1));
    }
    for id in 0..5 {
        submit(&mut ingress, session(id, id).with_tenant(TenantId(7)));
    }
    gate_open.store(true, Ordering::Relaxed);
    // Released however this ends: a failed wait below must fail the test, not leave the
    // handler holding its shard (shutdown would wait for it for ever).
    let _release_on_exit = ReleaseOnDrop(Arc::clone(&release));
    let history = breaker_history(&control, 1);
    release.store(true, Ordering::Relaxed);
    let mut completions = Vec::new();
    collect_until(&mut ingress, &mut completions, 6);
    assert!(completions
        .iter()
        .all(|completion| completion.outcome == Outcome::Delivered));
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(
        (history[0].from, history[0].to, history[0].cause),
        (
            BreakerState::Closed,
            BreakerState::Open,
            BreakerCause::Overload(QueueSample {
                queue: QueueId::Tenant {
                    tenant: TenantId(7)
                },
                depth: 5,
                cap: 5,
            }),
        )
    );
    let counts = control.stats().control.breaker_transitions;
    assert_eq!(counts.overload, 1, "{counts:?}");
    drop(ingress);
    assert!(engine.shutdown().reconciles());
}

#[test]
fn breaker_commands_components_and_latency_per_command_type() {
    let engine = slow_engine(Duration::ZERO, |_| {});
    let control = engine.control();
    control.force_open().unwrap();
    assert_eq!(control.breaker_state(), BreakerState::ForcedOpen);
    control.force_closed().unwrap();
    assert_eq!(control.breaker_state(), BreakerState::ForcedClosed);
    control.reset().unwrap();
    assert_eq!(control.breaker_state(), BreakerState::Closed);
    // Each command is in the history with its cause, in order; a reset of a closed breaker
    // moves nothing and adds nothing.
    control.reset().unwrap();
    let history = control.breaker_history();
    let moves: Vec<_> = history
        .iter()
        .map(|transition| (transition.from, transition.to, transition.cause))
        .collect();
    assert_eq!(
        moves,
        [
            (
                BreakerState::Closed,
                BreakerState::ForcedOpen,
                BreakerCause::ForcedOpen
            ),
            (
                BreakerState::ForcedOpen,
                BreakerState::ForcedClosed,
                BreakerCause::ForcedClosed
            ),
            (
                BreakerState::ForcedClosed,
                BreakerState::Closed,
                BreakerCause::Reset
            ),
        ]
    );
    assert!(history
        .windows(2)
        .all(|pair| pair[0].at_ns <= pair[1].at_ns));
    let counts = control.stats().control.breaker_transitions;
    assert_eq!(
        counts,
        BreakerTransitionCounts {
            forced_open: 1,
            forced_closed: 1,
            reset: 1,
            ..BreakerTransitionCounts::default()
        }
    );

    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let component = control
        .register("cache", move |message: &[u8]| {
            counted.fetch_add(1, Ordering::Relaxed);
            message.iter().rev().copied().collect()
        })
        .unwrap();
    assert!(matches!(
        control.register("cache", |_: &[u8]| Vec::new()),
        Err(ControlError::ComponentExists(_))
    ));
    assert_eq!(control.send("cache", b"abc").unwrap(), b"cba");
    drop(component);
    // Removed when its handle went away.
    let started = Instant::now();
    while control.send("cache", b"x").is_ok() {
        assert!(started.elapsed() < DEADLINE);
    }
    assert!(matches!(
        control.send("cache", b"x"),
        Err(ControlError::UnknownComponent(_))
    ));
    assert_eq!(calls.load(Ordering::Relaxed), 1);

    for _ in 0..10 {
        control.health(HealthKind::Liveness).unwrap();
    }
    let stats = engine.shutdown();
    let kinds: Vec<_> = stats
        .control
        .latency
        .iter()
        .map(|latency| (latency.command, latency.count))
        .collect();
    assert!(kinds.contains(&(CommandKind::Breaker, 4)), "{kinds:?}");
    assert!(kinds.contains(&(CommandKind::Health, 10)), "{kinds:?}");
    for latency in &stats.control.latency {
        assert!(latency.p50_ns <= latency.p99_ns && latency.p99_ns <= latency.max_ns);
    }
    // After shutdown the handle says so at once.
    assert_eq!(
        control.health(HealthKind::Liveness),
        Err(ControlError::Stopped)
    );
}

/// A handler with an event source of its own (a condition variable standing in for the TCP
/// front end's epoll): the shard sleeps in it rather than parking, and is woken through the
/// waker the handler registered. Its wait ignores the shard's timeout and lasts up to
/// `OWN_SOURCE_WAIT`, so a wake-up that does not come shows as a stall, not a short delay.
#[derive(Clone, Default)]
struct SleepsInItsOwnSource {
    source: Arc<OwnSource>,
}

#[derive(Default)]
struct OwnSource {
    state: std::sync::Mutex<OwnSourceState>,
    wakeups: std::sync::Condvar,
}

#[derive(Default)]
struct OwnSourceState {
    registered: bool,
    woken: bool,
    /// Waits begun, and those ended by the waker rather than by `OWN_SOURCE_WAIT`.
    waits: u64,
    woken_waits: u64,
}

const OWN_SOURCE_WAIT: Duration = Duration::from_secs(30);

impl spillway::handler::Handler for SleepsInItsOwnSource {
    fn handle(
        &mut self,
        _: &Message,
        _: &mut spillway::handler::ShardContext<'_>,
    ) -> Result<spillway::message::Bytes, HandlerError> {
        Ok(spillway::message::Bytes::new())
    }

    fn poll(&mut self, context: &mut spillway::handler::ShardContext<'_>) -> usize {
        let mut state = self.source.state.lock().unwrap();
        if !state.registered {
            let source = Arc::clone(&self.source);
            state.registered = context.set_waker(move || {
                source.state.lock().unwrap().woken = true;
                source.wakeups.notify_all();
            });
            assert!(state.registered, "the first waker of a shard is taken");
            assert!(!context.set_waker(|| ()), "a shard has one waker");
        }
        0
    }

    fn wait(&mut self, _timeout: Duration) -> bool {
        let mut state = self.source.state.lock().unwrap();
        state.waits += 1;
        self.source.wakeups.notify_all();
        let (mut state, _) = self
            .source
            .wakeups
            .wait_timeout_while(state, OWN_SOURCE_WAIT, |state| !state.woken)
            .unwrap();
        if std::mem::take(&mut state.woken) {
            state.woken_waits += 1;
        }
        true
    }
}

#[test]
fn a_shard_sleeping_in_its_handlers_event_source_is_woken_by_a_command_and_by_shutdown() {
    let mut config = Config::default();
    config.shards = 1;
    // Straight to sleep when idle.
    config.wait = spillway::config::WaitStrategy::SpinThenPark {
        spin_iterations: 0,
        yield_iterations: 0,
        park_timeout_us: 50,
    };
    let handler = SleepsInItsOwnSource::default();
    let engine = Engine::builder()
        .config(config)
        .handler(handler.clone())
        .start()
        .unwrap();
    let source = Arc::clone(&handler.source);
    let started = Instant::now();
    {
        let state = source.state.lock().unwrap();
        let (state, _) = source
            .wakeups
            .wait_timeout_while(state, DEADLINE, |state| state.waits == 0)
            .unwrap();
        assert!(state.waits > 0, "the idle shard never slept in the source");
    }
    // The shard is asleep in the source (or about to be): a command that needs it must
    // wake it there, through the waker, not wait out OWN_SOURCE_WAIT.
    let health = engine.control().health(HealthKind::Full).unwrap();
    assert_eq!(health.shards.len(), 1);
    assert!(
        source.state.lock().unwrap().woken_waits > 0,
        "the health check was answered without a wake-up"
    );
    assert!(
        started.elapsed() < OWN_SOURCE_WAIT,
        "the shard slept through the command"
    );
    // Shutdown wakes it too.
    let stats = engine.shutdown();
    assert!(stats.reconciles());
    assert!(
        started.elapsed() < OWN_SOURCE_WAIT,
        "the shard slept through shutdown"
    );
    assert!(source.state.lock().unwrap().woken_waits > 0);
}

/// A handler that busy-waits about `cost` per message (a sleep would hand the core to the
/// producer and understate the overload).
fn busy_handler(cost: Duration) -> impl Fn(&Message) -> Result<(), HandlerError> + Clone {
    move |_: &Message| {
        let start = Instant::now();
        while start.elapsed() < cost {
            std::hint::spin_loop();
        }
        Ok(())
    }
}

#[test]
fn a_drain_under_overload_ends_at_its_deadline_with_an_outcome_for_every_queued_message() {
    // 100 connections share one shard whose handler takes 20 us; a producer submits as
    // fast as it can (checked below to be at least 5x what the shard delivers). Fair
    // service gives the drained connection a hundredth of the handlers, so its ~190 queued
    // messages would take about 0.4 s: the 100 ms deadline cancels the rest.
    const CONNECTIONS: u64 = 100;
    const DRAINED: ConnectionId = ConnectionId(0);
    let engine = engine_with(
        |config| {
            config.control.drain_timeout_ns = 100_000_000;
            // The handler queue (20,000) is the cap that binds, not the role's.
            config.caps.role_messages[Role::Default.index()] = 20_000;
        },
        busy_handler(Duration::from_micros(20)),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let mut ingress = engine.ingress().unwrap();
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut completions = Vec::new();
            let mut offered = 0u64;
            let mut id = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let message = Message::new(ConnectionId(id % CONNECTIONS), MessageId(id));
                if ingress.submit(message).is_ok() {
                    offered += 1;
                    id += 1;
                } else {
                    ingress.poll_completions(&mut completions);
                }
            }
            collect_until(&mut ingress, &mut completions, offered as usize);
            (offered, completions)
        })
    };
    // Overload until the drained connection has a queue.
    let started = Instant::now();
    while engine.stats().shards[0].pending_messages < 15_000 {
        assert!(started.elapsed() < DEADLINE, "the queue never filled");
        std::thread::sleep(Duration::from_millis(1));
    }
    let before = engine.stats();
    let report = engine.control().drain(DRAINED).expect("the drain ends");
    let after = engine.stats();
    stop.store(true, Ordering::Relaxed);
    let (offered, completions) = producer.join().unwrap();

    assert!(report.deadline_passed, "{report:?}");
    assert!(report.cancelled > 0 && report.finished > 0, "{report:?}");
    // The overload held while the drain ran: submissions at least 5x the deliveries.
    let submitted_during = after.total.submitted - before.total.submitted;
    let delivered_during = after.total.delivered - before.total.delivered;
    assert!(
        submitted_during >= 5 * delivered_during,
        "{submitted_during} submitted, {delivered_during} delivered during the drain"
    );
    // Every message has exactly one completion; the drained connection's cancellations
    // are exactly the drain's (nothing else cancels here), and once it began draining its
    // later messages were refused `Draining`.
    let mut ids: Vec<u64> = completions.iter().map(|done| done.message.0).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len() as u64, offered);
    assert_eq!(completions.len() as u64, offered);
    let drained: Vec<&Completion> = completions
        .iter()
        .filter(|done| done.connection == DRAINED)
        .collect();
    let cancelled = drained
        .iter()
        .filter(|done| done.outcome == Outcome::Cancelled)
        .count();
    assert_eq!(cancelled as u64, report.cancelled);
    assert!(drained.iter().any(|done| matches!(
        done.outcome,
        Outcome::Refused {
            reason: RefusalReason::Draining,
            ..
        }
    )));
    let stats = engine.shutdown();
    assert!(stats.reconciles(), "{stats:?}");
    assert_eq!(stats.total.submitted, offered);
}
