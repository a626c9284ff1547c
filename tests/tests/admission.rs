//! Admission, exactly: every level of SPEC 3 on one simulated shard with a hand-driven clock
//! (`spillway::simulation::Simulation`), so each test is deterministic. Functional checks,
//! nothing timed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use spillway::admission::breaker::BreakerState;
use spillway::config::{CapAction, Config, QueueDropPolicy, TenantConfig};
use spillway::control::{BreakerCause, BreakerTransition, FullQueue, ShardTrigger, WindowFigures};
use spillway::handler::HandlerError;
use spillway::message::{ConnectionId, Message, MessageId, Priority, Role, TenantId};
use spillway::outcome::{DropReason, FailureReason, Outcome, RefusalReason, ShedReason};
use spillway::simulation::Simulation;

const MS: u64 = 1_000_000;

fn deliver_all(_: &Message) -> Result<(), HandlerError> {
    Ok(())
}

/// Caps only: no rate limit, no breaker, so a test sees exactly one level.
fn caps_only() -> Config {
    let mut config = Config::default();
    config.levels.rate_limit = false;
    config.levels.circuit_breaker = false;
    config
}

fn message(connection: u64, id: u64) -> Message {
    Message::new(ConnectionId(connection), MessageId(id))
}

fn refusal_reason(outcome: Outcome) -> Option<RefusalReason> {
    match outcome {
        Outcome::Refused { reason, .. } => Some(reason),
        _ => None,
    }
}

#[test]
fn the_1001st_pending_message_of_a_connection_is_refused_with_its_reason() {
    let mut simulation = Simulation::new(caps_only(), deliver_all).unwrap();
    // Sessions: their role cap (10000) is far above the connection's (1000).
    let session = |connection, id| {
        message(connection, id)
            .with_role(Role::Session)
            .with_priority(Priority::P0)
    };
    for id in 0..1000 {
        simulation.submit(0, session(1, id)).unwrap();
    }
    let refused = simulation.submit(0, session(1, 1000)).unwrap_err();
    assert_eq!(
        refusal_reason(refused),
        Some(RefusalReason::ConnectionQueueFull)
    );
    let Outcome::Refused { retry_after_ns, .. } = refused else {
        unreachable!()
    };
    assert!(retry_after_ns > 0, "a cap refusal says when to retry");
    // Another connection is not affected.
    simulation.submit(0, session(2, 0)).unwrap();
    // Once one message has run, the connection has room again.
    simulation.run(0, MS, 1);
    simulation.submit(MS, session(1, 1001)).unwrap();
    let stats = simulation.stats();
    assert!(stats.reconciles());
    assert_eq!(
        stats.total.refused[RefusalReason::ConnectionQueueFull.index()],
        1
    );
}

#[test]
fn priority_thresholds_keep_headroom_for_higher_priorities() {
    let mut simulation = Simulation::new(caps_only(), deliver_all).unwrap();
    let mut id = 0;
    let mut admitted_at = |simulation: &mut Simulation<_>, priority: Priority| {
        let mut admitted = 0;
        loop {
            id += 1;
            match simulation.submit(0, message(1, id).with_priority(priority)) {
                Ok(()) => admitted += 1,
                Err(outcome) => {
                    assert_eq!(
                        refusal_reason(outcome),
                        Some(RefusalReason::ConnectionQueueFull)
                    );
                    return admitted;
                }
            }
        }
    };
    // Cap 1000: P3 refused from 60%, P2 from 80%, P1 from 95%, P0 at 100%.
    assert_eq!(admitted_at(&mut simulation, Priority::P3), 600);
    assert_eq!(admitted_at(&mut simulation, Priority::P2), 200);
    assert_eq!(admitted_at(&mut simulation, Priority::P1), 150);
    assert_eq!(admitted_at(&mut simulation, Priority::P0), 50);
}

#[test]
fn the_byte_cap_counts_payload_bytes() {
    let mut config = caps_only();
    config.caps.connection_bytes = 1000;
    let mut simulation = Simulation::new(config, deliver_all).unwrap();
    for id in 0..3 {
        let payload = message(1, id)
            .with_priority(Priority::P0)
            .with_payload(vec![0; 300]);
        simulation.submit(0, payload).unwrap();
    }
    let too_big = message(1, 3)
        .with_priority(Priority::P0)
        .with_payload(vec![0; 101]);
    assert_eq!(
        refusal_reason(simulation.submit(0, too_big).unwrap_err()),
        Some(RefusalReason::ConnectionBytesFull)
    );
    let fits = message(1, 4)
        .with_priority(Priority::P0)
        .with_payload(vec![0; 100]);
    simulation.submit(0, fits).unwrap();
}

#[test]
fn role_caps_are_per_role_on_the_shard() {
    let mut config = caps_only();
    config.caps.connection_messages = 100_000;
    let mut simulation = Simulation::new(config, deliver_all).unwrap();
    // tool_executor: 500, spread over many connections.
    for id in 0..500 {
        let tool_call = message(id % 50, id)
            .with_role(Role::ToolExecutor)
            .with_priority(Priority::P0);
        simulation.submit(0, tool_call).unwrap();
    }
    let over = message(7, 500)
        .with_role(Role::ToolExecutor)
        .with_priority(Priority::P0);
    assert_eq!(
        refusal_reason(simulation.submit(0, over).unwrap_err()),
        Some(RefusalReason::RoleQueueFull)
    );
    // Another role on the same connection still has room.
    simulation
        .submit(0, message(7, 501).with_role(Role::Session))
        .unwrap();
    let stats = simulation.stats();
    assert_eq!(
        stats.roles[Role::ToolExecutor.index()].refused[RefusalReason::RoleQueueFull.index()],
        1
    );
}

#[test]
fn tenant_cap_and_priority_ceiling() {
    let mut config = caps_only();
    config.tenants = vec![TenantConfig {
        tenant: TenantId(5),
        max_pending: Some(10),
        priority_ceiling: Priority::P2,
    }];
    let mut simulation = Simulation::new(config, deliver_all).unwrap();
    let mut admitted = 0;
    for id in 0..20 {
        // Claims P0, is lowered to P2: refused from 80% of the tenant's cap of 10.
        let claim = message(id, id)
            .with_tenant(TenantId(5))
            .with_priority(Priority::P0);
        match simulation.submit(0, claim) {
            Ok(()) => admitted += 1,
            Err(outcome) => {
                assert_eq!(
                    refusal_reason(outcome),
                    Some(RefusalReason::TenantQueueFull)
                )
            }
        }
    }
    assert_eq!(admitted, 8);
    let stats = simulation.stats();
    assert_eq!(stats.shards[0].priority_downgraded, 20);
    let (tenant, tally) = stats.tenants[0];
    assert_eq!(tenant, TenantId(5));
    assert_eq!(tally.admitted, 8);
    assert_eq!(tally.refused[RefusalReason::TenantQueueFull.index()], 12);
    assert!(stats.reconciles());
}

#[test]
fn the_token_bucket_refuses_with_its_retry_after() {
    let mut config = Config::default();
    config.rate.per_connection_per_sec = 10;
    config.rate.burst = 2;
    config.rate.adaptive_floor_per_sec = 1;
    config.levels.circuit_breaker = false;
    let mut simulation = Simulation::new(config, deliver_all).unwrap();
    simulation.submit(0, message(1, 0)).unwrap();
    simulation.submit(0, message(1, 1)).unwrap();
    let refused = simulation.submit(0, message(1, 2)).unwrap_err();
    assert_eq!(
        refused,
        Outcome::Refused {
            reason: RefusalReason::RateLimited,
            retry_after_ns: 100 * MS,
        }
    );
    simulation.submit(100 * MS, message(1, 3)).unwrap();
}

/// 100 connections offer 2x what the handler can run, for one simulated second: about
/// half is refused, and two runs give the same outcomes in the same order.
fn overload_at_twice_capacity() -> (Vec<Outcome>, f64) {
    let mut config = Config::default();
    config.rate.per_connection_per_sec = 100_000;
    config.rate.burst = 200_000;
    config.levels.circuit_breaker = false;
    let mut simulation = Simulation::new(config, deliver_all).unwrap();
    // Capacity: one message per 10 us (100K/s); offered: one per 5 us (200K/s).
    let service_ns = 10_000;
    let offered_gap_ns = 5_000;
    let mut outcomes = Vec::new();
    let mut handler_free_at_ns = 0;
    for id in 0..200_000u64 {
        let now_ns = id * offered_gap_ns;
        while handler_free_at_ns + service_ns <= now_ns && simulation.pending() > 0 {
            simulation.run(handler_free_at_ns, handler_free_at_ns + service_ns, 1);
            handler_free_at_ns += service_ns;
        }
        if simulation.pending() == 0 {
            // An idle handler does not bank time.
            handler_free_at_ns = handler_free_at_ns.max(now_ns);
        }
        let _ = simulation.submit(now_ns, message(id % 100, id));
        outcomes.extend(simulation.take_completions().iter().map(|c| c.outcome));
    }
    let stats = simulation.stats();
    assert!(stats.reconciles());
    let refused = stats.total.refused_total() as f64 / stats.total.submitted as f64;
    (outcomes, refused)
}

#[test]
fn refusal_at_twice_capacity_is_half_and_reproducible() {
    let (first, refused) = overload_at_twice_capacity();
    let (second, _) = overload_at_twice_capacity();
    assert_eq!(first, second, "same inputs, same outcomes");
    assert!(
        (refused - 0.5).abs() < 0.03,
        "refused {:.3} of offered at 2x capacity",
        refused
    );
}

#[test]
fn the_breaker_opens_probes_reopens_and_closes() {
    let mut config = Config::default();
    config.levels.rate_limit = false;
    config.breaker.window_requests = 100;
    config.breaker.min_samples = 20;
    config.breaker.recovery_timeout_ns = 1_000 * MS;
    config.breaker.good_period_ns = 500 * MS;
    let failing = Arc::new(AtomicBool::new(true));
    let fail = Arc::clone(&failing);
    let handler = move |_: &Message| {
        if fail.load(Ordering::Relaxed) {
            Err(HandlerError::failed("backend down"))
        } else {
            Ok(())
        }
    };
    let mut simulation = Simulation::new(config, handler).unwrap();
    let mut now_ns = 0;
    let mut id = 0;
    let mut traffic = |simulation: &mut Simulation<_>, now_ns: u64, count: u64| {
        for _ in 0..count {
            id += 1;
            let _ = simulation.submit(now_ns, message(id % 10, id).with_priority(Priority::P1));
        }
        simulation.run(now_ns, now_ns + MS, count as usize);
    };

    // Failing handler: error rate far over 1% -> open.
    traffic(&mut simulation, now_ns, 30);
    assert_eq!(simulation.stats().breaker, BreakerState::Open);
    assert_eq!(simulation.stats().shards[0].breaker_trips, 1);

    // Recovery timeout -> half-open; the probe traffic still fails -> open again.
    now_ns += 1_000 * MS + MS;
    simulation.tick(now_ns);
    assert_eq!(simulation.stats().breaker, BreakerState::HalfOpen);
    traffic(&mut simulation, now_ns, 30);
    assert_eq!(simulation.stats().breaker, BreakerState::Open);

    // Backend healthy again: half-open after the timeout, closed after the good period.
    failing.store(false, Ordering::Relaxed);
    now_ns += 1_000 * MS + MS;
    simulation.tick(now_ns);
    assert_eq!(simulation.stats().breaker, BreakerState::HalfOpen);
    traffic(&mut simulation, now_ns, 30);
    now_ns += 500 * MS + MS;
    simulation.tick(now_ns);
    assert_eq!(simulation.stats().breaker, BreakerState::Closed);
    let stats = simulation.stats();
    assert!(stats.total.failed[FailureReason::HandlerError.index()] >= 60);
    assert!(stats.reconciles());

    // Each move with what made it: two trips by error rate (every message failed), the
    // recovery timeouts, and the good period with the probe's window.
    let moves: Vec<(BreakerState, BreakerState, ShardTrigger)> = simulation
        .take_breaker_transitions()
        .into_iter()
        .map(|transition| match transition.cause {
            BreakerCause::Shard { shard: 0, trigger } => (transition.from, transition.to, trigger),
            other => panic!("a shard's move: {other:?}"),
        })
        .collect();
    let all_failed = |samples| {
        ShardTrigger::ErrorRate(WindowFigures {
            samples,
            failed: samples,
            error_rate_percent: 100.0,
            error_rate_max_percent: 1.0,
            p95_latency_ns: MS,
            p95_latency_max_ns: 200 * MS,
        })
    };
    // Each trip happened as its traffic's run ended, 1 ms after it began.
    let recovery = ShardTrigger::RecoveryTimeout {
        open_for_ns: 1_000 * MS,
        recovery_timeout_ns: 1_000 * MS,
    };
    use BreakerState::{Closed, HalfOpen, Open};
    assert_eq!(
        moves,
        [
            (Closed, Open, all_failed(30)),
            (Open, HalfOpen, recovery),
            (HalfOpen, Open, all_failed(30)),
            (Open, HalfOpen, recovery),
            (
                HalfOpen,
                Closed,
                ShardTrigger::GoodPeriod {
                    half_open_for_ns: 500 * MS + MS,
                    good_period_ns: 500 * MS,
                    window: WindowFigures {
                        samples: 30,
                        failed: 0,
                        error_rate_percent: 0.0,
                        error_rate_max_percent: 1.0,
                        p95_latency_ns: MS,
                        p95_latency_max_ns: 200 * MS,
                    },
                },
            ),
        ]
    );
}

/// No rate limit; the breaker judges windows of exactly 100 messages.
fn window_of_100() -> Config {
    let mut config = Config::default();
    config.levels.rate_limit = false;
    config.breaker.window_requests = 100;
    config.breaker.min_samples = 100;
    config
}

#[test]
fn a_trip_by_error_rate_gives_the_window_s_failures_size_rate_and_limit() {
    let config = window_of_100();
    // Every 50th message fails: 2 in 100 (2%, over the 1% limit), all quick.
    let handler = |message: &Message| {
        if message.id.0 % 50 == 0 {
            Err(HandlerError::failed("backend hiccup"))
        } else {
            Ok(())
        }
    };
    let mut simulation = Simulation::new(config, handler).unwrap();
    for id in 0..100 {
        simulation.submit(0, message(id % 10, id)).unwrap();
    }
    simulation.run(0, 2 * MS, 100);
    assert_eq!(simulation.stats().breaker, BreakerState::Open);
    assert_eq!(
        simulation.take_breaker_transitions(),
        [BreakerTransition {
            at_ns: 2 * MS,
            from: BreakerState::Closed,
            to: BreakerState::Open,
            cause: BreakerCause::Shard {
                shard: 0,
                trigger: ShardTrigger::ErrorRate(WindowFigures {
                    samples: 100,
                    failed: 2,
                    error_rate_percent: 2.0,
                    error_rate_max_percent: 1.0,
                    p95_latency_ns: 2 * MS,
                    p95_latency_max_ns: 200 * MS,
                }),
            },
        }]
    );
    assert_eq!(simulation.stats().shards[0].breaker_trips, 1);
}

#[test]
fn a_trip_by_p95_latency_gives_the_p95_and_its_limit() {
    let mut config = window_of_100();
    config.breaker.p95_latency_max_ns = 90 * MS;
    let mut simulation = Simulation::new(config, deliver_all).unwrap();
    // Message i is admitted at i ms and all finish at 100 ms: latencies 100, 99, ..., 1 ms.
    // The p95 (rank 95 of 100) is 95 ms, over the 90 ms limit; nothing failed.
    for id in 0..100 {
        simulation.submit(id * MS, message(id % 10, id)).unwrap();
    }
    simulation.run(99 * MS, 100 * MS, 100);
    assert_eq!(simulation.stats().breaker, BreakerState::Open);
    assert_eq!(
        simulation.take_breaker_transitions(),
        [BreakerTransition {
            at_ns: 100 * MS,
            from: BreakerState::Closed,
            to: BreakerState::Open,
            cause: BreakerCause::Shard {
                shard: 0,
                trigger: ShardTrigger::P95Latency(WindowFigures {
                    samples: 100,
                    failed: 0,
                    error_rate_percent: 0.0,
                    error_rate_max_percent: 1.0,
                    p95_latency_ns: 95 * MS,
                    p95_latency_max_ns: 90 * MS,
                }),
            },
        }]
    );
}

#[test]
fn an_open_breaker_sheds_p2_and_p3_and_keeps_p0_and_p1() {
    let mut simulation = Simulation::new(Config::default(), deliver_all).unwrap();
    simulation.breaker().force_open(0);
    simulation.tick(0);
    let mut results = Vec::new();
    for priority in Priority::ALL {
        results.push(simulation.submit(
            0,
            message(1, priority.index() as u64).with_priority(priority),
        ));
    }
    let shed = Err(Outcome::Shed {
        reason: ShedReason::CircuitOpen,
    });
    assert_eq!(results, [Ok(()), Ok(()), shed, shed]);
    simulation.breaker().reset(1);
    simulation.tick(1);
    simulation
        .submit(1, message(1, 9).with_priority(Priority::P3))
        .unwrap();
}

#[test]
fn a_full_handler_queue_trips_the_breaker() {
    let mut config = Config::default();
    config.levels.rate_limit = false;
    config.caps.handler_queue = 50;
    config.caps.connection_messages = 1_000;
    let mut simulation = Simulation::new(config, deliver_all).unwrap();
    for id in 0..50 {
        simulation
            .submit(0, message(1, id).with_priority(Priority::P0))
            .unwrap();
    }
    assert_eq!(simulation.stats().breaker, BreakerState::Open);
    assert!(simulation.backpressure());
    assert_eq!(
        simulation.take_breaker_transitions(),
        [BreakerTransition {
            at_ns: 0,
            from: BreakerState::Closed,
            to: BreakerState::Open,
            cause: BreakerCause::Shard {
                shard: 0,
                trigger: ShardTrigger::QueueFull {
                    queue: FullQueue::Handler,
                    pending: 50,
                    cap: 50,
                },
            },
        }]
    );
}

#[test]
fn a_full_role_queue_trip_names_the_role() {
    let mut config = Config::default();
    config.levels.rate_limit = false;
    config.caps.role_messages[Role::Session.index()] = 5;
    let mut simulation = Simulation::new(config, deliver_all).unwrap();
    for id in 0..5 {
        let session = message(id, id)
            .with_role(Role::Session)
            .with_priority(Priority::P0);
        simulation.submit(7 * MS, session).unwrap();
    }
    assert_eq!(
        simulation.take_breaker_transitions(),
        [BreakerTransition {
            at_ns: 7 * MS,
            from: BreakerState::Closed,
            to: BreakerState::Open,
            cause: BreakerCause::Shard {
                shard: 0,
                trigger: ShardTrigger::QueueFull {
                    queue: FullQueue::Role(Role::Session),
                    pending: 5,
                    cap: 5,
                },
            },
        }]
    );
}

#[test]
fn drop_oldest_evicts_the_oldest_of_the_lowest_priority() {
    let mut config = caps_only();
    config.caps.connection_messages = 3;
    config.caps.priority_threshold_percent = [100, 100, 100, 100];
    config.caps.action = CapAction::Drop;
    config.caps.drop_policy = QueueDropPolicy::DropOldest;
    let mut simulation = Simulation::new(config, deliver_all).unwrap();
    simulation
        .submit(0, message(1, 0).with_priority(Priority::P1))
        .unwrap();
    simulation
        .submit(0, message(1, 1).with_priority(Priority::P3))
        .unwrap();
    simulation
        .submit(0, message(1, 2).with_priority(Priority::P3))
        .unwrap();
    simulation
        .submit(0, message(1, 3).with_priority(Priority::P2))
        .unwrap();
    let dropped: Vec<_> = simulation.take_completions();
    assert_eq!(dropped.len(), 1);
    assert_eq!(dropped[0].message, MessageId(1));
    assert_eq!(
        dropped[0].outcome,
        Outcome::Dropped {
            reason: DropReason::EvictedForNewer
        }
    );
    // Nothing queued at or below P0's importance... a P0 evicts the remaining P3 first.
    simulation
        .submit(0, message(1, 4).with_priority(Priority::P0))
        .unwrap();
    assert_eq!(simulation.take_completions()[0].message, MessageId(2));
    let stats = simulation.stats();
    assert_eq!(stats.total.dropped[DropReason::EvictedForNewer.index()], 2);
    assert_eq!(stats.total.in_flight(), 3);
    assert!(stats.reconciles());
}

#[test]
fn drop_newest_drops_the_incoming_message() {
    let mut config = caps_only();
    config.caps.connection_messages = 2;
    config.caps.action = CapAction::Drop;
    config.caps.drop_policy = QueueDropPolicy::DropNewest;
    let mut simulation = Simulation::new(config, deliver_all).unwrap();
    simulation
        .submit(0, message(1, 0).with_priority(Priority::P0))
        .unwrap();
    simulation
        .submit(0, message(1, 1).with_priority(Priority::P0))
        .unwrap();
    assert_eq!(
        simulation.submit(0, message(1, 2).with_priority(Priority::P0)),
        Err(Outcome::Dropped {
            reason: DropReason::DroppedNewest
        })
    );
    let stats = simulation.stats();
    assert_eq!(stats.total.admitted, 3);
    assert_eq!(stats.total.dropped_total(), 1);
    assert!(stats.reconciles());
}

#[test]
fn disconnect_drops_the_queue_and_refuses_what_follows() {
    let mut config = caps_only();
    config.caps.connection_messages = 2;
    config.caps.action = CapAction::Disconnect;
    let mut simulation = Simulation::new(config, deliver_all).unwrap();
    simulation
        .submit(0, message(1, 0).with_priority(Priority::P0))
        .unwrap();
    simulation
        .submit(0, message(1, 1).with_priority(Priority::P0))
        .unwrap();
    let at_cap = simulation.submit(0, message(1, 2).with_priority(Priority::P0));
    assert_eq!(
        refusal_reason(at_cap.unwrap_err()),
        Some(RefusalReason::ConnectionQueueFull)
    );
    let later = simulation.submit(0, message(1, 3).with_priority(Priority::P0));
    assert_eq!(
        refusal_reason(later.unwrap_err()),
        Some(RefusalReason::Disconnected)
    );
    let completions = simulation.take_completions();
    let dropped = completions
        .iter()
        .filter(|completion| {
            completion.outcome
                == Outcome::Dropped {
                    reason: DropReason::Disconnected,
                }
        })
        .count();
    assert_eq!(dropped, 2);
    assert_eq!(simulation.pending(), 0);
    // Other connections carry on.
    simulation.submit(0, message(2, 4)).unwrap();
    assert!(simulation.stats().reconciles());
}

#[test]
fn a_panicking_handler_fails_its_message_and_the_shard_keeps_running() {
    let handler = |message: &Message| {
        if message.id.0 == 1 {
            panic!("handler bug");
        }
        Ok(())
    };
    let mut simulation = Simulation::new(caps_only(), handler).unwrap();
    for id in 0..3 {
        simulation.submit(0, message(1, id)).unwrap();
    }
    assert_eq!(simulation.run(0, MS, 10), 3);
    let outcomes: Vec<_> = simulation
        .take_completions()
        .into_iter()
        .map(|completion| (completion.message.0, completion.outcome))
        .collect();
    assert_eq!(
        outcomes,
        [
            (0, Outcome::Delivered),
            (
                1,
                Outcome::Failed {
                    reason: FailureReason::HandlerPanic
                }
            ),
            (2, Outcome::Delivered),
        ]
    );
}

#[test]
fn the_adaptive_controller_cuts_a_slow_connection() {
    let mut config = Config::default();
    config.levels.circuit_breaker = false;
    config.rate.per_connection_per_sec = 100;
    config.rate.burst = 200;
    config.rate.adaptive_interval_ns = 1_000 * MS;
    let mut simulation = Simulation::new(config, deliver_all).unwrap();
    // One message whose latency (admission to completion) is 150 ms.
    simulation.submit(0, message(1, 0)).unwrap();
    simulation.run(0, 150 * MS, 1);
    simulation.tick(1_000 * MS);
    // Rate now 90/s; the burst window stays 2 s (200 at 100/s), worth 2 s / ceil(1e9/90) ns
    // = 179 messages at the new rate.
    let window_messages = 2_000_000_000 / 1_000_000_000u64.div_ceil(90);
    let mut admitted = 0;
    for id in 1..=200 {
        if simulation.submit(1_000 * MS, message(1, id)).is_ok() {
            admitted += 1;
        }
    }
    assert_eq!(admitted, window_messages);
    assert_eq!(window_messages, 179);
}

#[test]
fn with_the_caps_level_off_the_handler_queue_still_refuses_when_full() {
    // Found by the reconciliation property test: the queue's storage is a hard bound that
    // no kill switch removes.
    let mut config = Config::default();
    config.levels = spillway::config::Levels {
        rate_limit: false,
        queue_caps: false,
        circuit_breaker: false,
    };
    config.caps.handler_queue = 5;
    let mut simulation = Simulation::new(config, deliver_all).unwrap();
    for id in 0..5 {
        simulation.submit(0, message(1, id)).unwrap();
    }
    assert_eq!(
        refusal_reason(simulation.submit(0, message(2, 5)).unwrap_err()),
        Some(RefusalReason::HandlerQueueFull)
    );
    assert!(simulation.stats().reconciles());
}

#[test]
fn a_drain_refuses_while_it_runs_then_closes_the_connection_whose_id_is_new_again() {
    let mut config = caps_only();
    config.connections_per_shard_max = 2;
    let mut simulation = Simulation::new(config, deliver_all).unwrap();
    for id in 0..3 {
        simulation.submit(0, message(1, id)).unwrap();
    }
    simulation.submit(0, message(2, 10)).unwrap();
    assert_eq!(simulation.drain(0, ConnectionId(1), true), None, "3 queued");
    let refused = simulation.submit(0, message(1, 3)).unwrap_err();
    assert_eq!(refusal_reason(refused), Some(RefusalReason::Draining));
    // The table is full (1 draining, 2 busy): no room for a third connection yet.
    let refused = simulation.submit(0, message(3, 20)).unwrap_err();
    assert_eq!(
        refusal_reason(refused),
        Some(RefusalReason::ConnectionLimit)
    );
    simulation.run(0, MS, 16);
    let reports = simulation.take_drained(MS);
    assert_eq!(reports.len(), 1);
    assert_eq!((reports[0].finished, reports[0].cancelled), (3, 0));
    // Closed: its slot is free (taken without evicting anyone), and its id is a new
    // connection's, served.
    assert_eq!(simulation.stats().shards[0].connections, 1);
    simulation.submit(MS, message(1, 4)).unwrap();
    simulation.run(MS, 2 * MS, 16);
    let outcomes: Vec<(u64, Outcome)> = simulation
        .take_completions()
        .into_iter()
        .map(|completion| (completion.message.0, completion.outcome))
        .filter(|&(id, _)| id == 4)
        .collect();
    assert_eq!(outcomes, [(4, Outcome::Delivered)]);
    let stats = simulation.stats();
    assert!(stats.reconciles());
    assert_eq!(stats.shards[0].connections, 2);
    assert_eq!(stats.shards[0].connections_evicted, 0);
}
