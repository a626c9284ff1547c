//! The threaded engine end to end: shards on their own threads, producers on theirs.
//! Functional and bounded in time and count; nothing here is a timing assertion.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use spillway::config::{Config, TenantConfig};
use spillway::engine::Engine;
use spillway::handler::HandlerError;
use spillway::message::{ConnectionId, Message, MessageId, Priority, Role, TenantId};
use spillway::outcome::{Completion, FailureReason, Outcome, RefusalReason};
use spillway_tests::{submit_all, DEADLINE};

fn config(shards: usize) -> Config {
    Config {
        shards,
        ..Config::default()
    }
}

fn assert_one_completion_each(completions: &[Completion], expected: impl Iterator<Item = u64>) {
    let mut seen: HashMap<u64, usize> = HashMap::new();
    for completion in completions {
        *seen.entry(completion.message.0).or_default() += 1;
    }
    let mut count = 0;
    for id in expected {
        assert_eq!(seen.get(&id), Some(&1), "message {id}");
        count += 1;
    }
    assert_eq!(
        seen.len(),
        count,
        "completions for messages never submitted"
    );
}

#[test]
fn a_panicking_handler_fails_its_message_and_the_shard_keeps_running() {
    let engine = Engine::builder()
        .config(config(2))
        .handler(|message: &Message| {
            if message.id.0 % 10 == 3 {
                panic!("handler bug on {}", message.id.0);
            }
            Ok(())
        })
        .start()
        .unwrap();
    let mut ingress = engine.ingress().unwrap();
    let messages = (0..100)
        .map(|id| Message::new(ConnectionId(id), MessageId(id)))
        .collect();
    let completions = submit_all(&mut ingress, messages);
    assert_one_completion_each(&completions, 0..100);
    for completion in &completions {
        let expected = if completion.message.0 % 10 == 3 {
            Outcome::Failed {
                reason: FailureReason::HandlerPanic,
            }
        } else {
            Outcome::Delivered
        };
        assert_eq!(completion.outcome, expected);
    }
    drop(ingress);
    let stats = engine.shutdown();
    assert_eq!(stats.total.failed[FailureReason::HandlerPanic.index()], 10);
    assert_eq!(stats.total.delivered, 90);
    assert!(stats.reconciles());
}

#[test]
fn a_tenant_cap_across_shards_is_never_exceeded_under_concurrent_producers() {
    const CAP: u64 = 100;
    let mut config = config(2);
    config.levels.rate_limit = false;
    config.levels.circuit_breaker = false;
    config.handler_batch_max = 1;
    config.tenants = vec![TenantConfig {
        tenant: TenantId(1),
        max_pending: Some(CAP as u32),
        priority_ceiling: Priority::P0,
    }];
    // Slow handlers: messages stay pending while the producers pile on.
    let engine = Engine::builder()
        .config(config)
        .handler(|_: &Message| {
            std::thread::sleep(Duration::from_micros(200));
            Ok::<(), HandlerError>(())
        })
        .start()
        .unwrap();
    let control = engine.control();
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = {
        let watching = Arc::clone(&watching);
        std::thread::spawn(move || {
            let mut samples = 0u64;
            let mut highest = 0;
            while watching.load(Ordering::Relaxed) {
                let pending = control.tenant_pending(TenantId(1)).unwrap();
                assert!(
                    pending <= CAP,
                    "tenant pending {pending} over its cap {CAP}"
                );
                highest = highest.max(pending);
                samples += 1;
            }
            (samples, highest)
        })
    };
    let producers: Vec<_> = (0..3u64)
        .map(|producer| {
            let mut ingress = engine.ingress().unwrap();
            std::thread::spawn(move || {
                let messages = (0..2_000u64)
                    .map(|index| {
                        let id = producer * 10_000 + index;
                        // Many connections, so the tenant's traffic lands on both shards.
                        Message::new(ConnectionId(id % 64), MessageId(id))
                            .with_tenant(TenantId(1))
                            .with_priority(Priority::P0)
                    })
                    .collect();
                submit_all(&mut ingress, messages)
            })
        })
        .collect();
    let mut tenant_refusals = 0;
    for producer in producers {
        for completion in producer.join().unwrap() {
            if let Outcome::Refused { reason, .. } = completion.outcome {
                assert_eq!(reason, RefusalReason::TenantQueueFull);
                tenant_refusals += 1;
            }
        }
    }
    watching.store(false, Ordering::Relaxed);
    let (samples, highest) = watcher.join().unwrap();
    assert!(samples > 0);
    assert!(
        tenant_refusals > 0,
        "the cap never bound: the test proved nothing"
    );
    assert!(highest <= CAP);
    let owners: std::collections::HashSet<usize> = (0..64)
        .map(|id| engine.shard_of(ConnectionId(id)))
        .collect();
    assert_eq!(
        owners.len(),
        2,
        "the tenant's connections must span both shards"
    );
    let stats = engine.shutdown();
    for shard in &stats.shards {
        assert!(
            shard.total.submitted > 0,
            "shard {} saw none of it",
            shard.shard
        );
    }
    assert_eq!(
        stats.tenants[0].1.refused[RefusalReason::TenantQueueFull.index()],
        tenant_refusals
    );
    assert!(stats.reconciles());
}

#[test]
fn concurrent_producers_get_exactly_one_completion_per_message_and_counts_reconcile() {
    let mut config = config(2);
    config.rate.per_connection_per_sec = 2_000;
    config.rate.burst = 50;
    config.caps.connection_messages = 40;
    let engine = Engine::builder()
        .config(config)
        .handler(|message: &Message| {
            if message.id.0 % 97 == 0 {
                Err(HandlerError::failed("every 97th fails"))
            } else {
                Ok(())
            }
        })
        .start()
        .unwrap();
    let stats_reader = {
        let control = engine.control();
        std::thread::spawn(move || {
            // Snapshots taken while traffic flows must reconcile too.
            for _ in 0..2_000 {
                assert!(control.stats().reconciles());
            }
        })
    };
    let producers: Vec<_> = (0..3u64)
        .map(|producer| {
            let mut ingress = engine.ingress().unwrap();
            std::thread::spawn(move || {
                let messages: Vec<_> = (0..20_000u64)
                    .map(|index| {
                        let id = producer * 1_000_000 + index;
                        Message::new(ConnectionId(index % 300), MessageId(id))
                            .with_role(Role::ALL[(index % 6) as usize])
                            .with_priority(Priority::ALL[(index % 4) as usize])
                    })
                    .collect();
                let completions = submit_all(&mut ingress, messages);
                assert_one_completion_each(
                    &completions,
                    (0..20_000).map(|index| producer * 1_000_000 + index),
                );
                completions.len()
            })
        })
        .collect();
    let shared = engine.shared_ingress();
    let mut shared_completions = Vec::new();
    let mut submitted_shared = 0;
    for id in 0..5_000u64 {
        let mut message = Message::new(ConnectionId(1_000 + id % 50), MessageId(9_000_000 + id));
        loop {
            match shared.submit(message) {
                Ok(()) => {
                    submitted_shared += 1;
                    break;
                }
                Err(full) => {
                    message = full.message;
                    shared.poll_completions(&mut shared_completions);
                    std::thread::yield_now();
                }
            }
        }
    }
    let started = Instant::now();
    while shared_completions.len() < submitted_shared {
        shared.poll_completions(&mut shared_completions);
        assert!(started.elapsed() < DEADLINE);
        std::thread::yield_now();
    }
    assert_one_completion_each(&shared_completions, 9_000_000..9_005_000);
    let completed: usize = producers
        .into_iter()
        .map(|producer| producer.join().unwrap())
        .sum();
    stats_reader.join().unwrap();
    let stats = engine.shutdown();
    assert_eq!(stats.total.submitted as usize, completed + submitted_shared);
    assert_eq!(stats.total.in_flight(), 0);
    assert!(stats.total.refused_total() > 0, "the limits never bound");
    assert!(stats.reconciles());
}

#[test]
fn shutdown_with_work_in_flight_loses_nothing() {
    let mut config = config(2);
    config.levels.rate_limit = false;
    // No cap may bind before shutdown does: the shards admit between slow handlers, so with
    // the default role cap a slow machine refused some as
    // `role_queue_full`, which is not what this test is about.
    config.caps.role_messages = [config.caps.handler_queue; Role::COUNT];
    let engine = Engine::builder()
        .config(config)
        .handler(|_: &Message| {
            std::thread::sleep(Duration::from_micros(50));
            Ok::<(), HandlerError>(())
        })
        .start()
        .unwrap();
    let mut ingress = engine.ingress().unwrap();
    let mut accepted = Vec::new();
    for id in 0..3_000u64 {
        let message = Message::new(ConnectionId(id % 100), MessageId(id));
        if ingress.submit(message).is_ok() {
            accepted.push(id);
        }
    }
    // Shut down while most of it is still queued.
    let stats = engine.shutdown();
    assert_eq!(stats.total.in_flight(), 0);
    assert!(stats.reconciles());
    // Every accepted message has exactly one completion: delivered, or refused because it
    // reached its shard after intake closed.
    let mut completions = Vec::new();
    ingress.poll_completions(&mut completions);
    assert_one_completion_each(&completions, accepted.iter().copied());
    for completion in &completions {
        assert!(
            matches!(
                completion.outcome,
                Outcome::Delivered
                    | Outcome::Refused {
                        reason: RefusalReason::ShuttingDown,
                        ..
                    }
            ),
            "{:?}",
            completion.outcome
        );
    }
    // After shutdown the ingress hands messages straight back.
    let late = ingress.submit(Message::new(ConnectionId(1), MessageId(99_999)));
    assert!(late.unwrap_err().stopped);
}

/// Admits follow-up work on its own shard, then waits at a gate: so at shutdown there is
/// queued work that the shard has admitted but not run.
#[derive(Clone)]
struct FanOutThenWait {
    entered: Arc<AtomicBool>,
    gate: Arc<AtomicBool>,
    completed: Arc<std::sync::atomic::AtomicUsize>,
}

impl spillway::handler::Handler for FanOutThenWait {
    fn handle(
        &mut self,
        message: &Message,
        context: &mut spillway::handler::ShardContext<'_>,
    ) -> Result<spillway::message::Bytes, HandlerError> {
        if message.id.0 == 0 {
            for id in 1..=500 {
                let follow_up = Message::new(ConnectionId(id % 10), MessageId(id));
                assert_eq!(context.admit(follow_up), Ok(()));
            }
            self.entered.store(true, Ordering::Relaxed);
            while !self.gate.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_micros(100));
            }
        }
        Ok(spillway::message::Bytes::new())
    }

    fn completed(&mut self, completion: &Completion) {
        assert_eq!(completion.outcome, Outcome::Cancelled);
        self.completed.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn shutdown_can_cancel_what_is_queued_instead() {
    let mut config = config(1);
    config.levels.rate_limit = false;
    config.shutdown_finishes_queued = false;
    config.handler_batch_max = 1;
    let handler = FanOutThenWait {
        entered: Arc::new(AtomicBool::new(false)),
        gate: Arc::new(AtomicBool::new(false)),
        completed: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
    };
    let engine = Engine::builder()
        .config(config)
        .handler(handler.clone())
        .start()
        .unwrap();
    let mut ingress = engine.ingress().unwrap();
    ingress
        .submit(Message::new(ConnectionId(0), MessageId(0)))
        .unwrap();
    let started = Instant::now();
    while !handler.entered.load(Ordering::Relaxed) {
        assert!(started.elapsed() < DEADLINE);
        std::thread::sleep(Duration::from_micros(100));
    }
    let releaser = {
        let gate = Arc::clone(&handler.gate);
        std::thread::spawn(move || {
            // Shutdown is requested meanwhile; the handler then returns.
            std::thread::sleep(Duration::from_millis(50));
            gate.store(true, Ordering::Relaxed);
        })
    };
    let stats = engine.shutdown();
    releaser.join().unwrap();
    assert!(stats.reconciles());
    assert_eq!(stats.total.in_flight(), 0);
    assert_eq!(stats.total.delivered, 1);
    assert_eq!(
        stats.total.cancelled, 500,
        "queued work was cancelled, not run"
    );
    assert_eq!(handler.completed.load(Ordering::Relaxed), 500);
    let mut completions = Vec::new();
    ingress.poll_completions(&mut completions);
    assert_one_completion_each(&completions, 0..1);
}

#[test]
fn one_producer_overloading_a_shard_gets_counted_refusals_not_a_blocked_ring() {
    // Admission runs between bounded handler batches, so it keeps up with the producer;
    // the queue fills to its caps and the excess is refused with a reason and a
    // retry-after. (The ingress's credit covers the submission ring plus the handler
    // queue, so admitted work waiting in the queue does not block the producer first.)
    let mut config = config(1);
    config.levels.rate_limit = false;
    config.handler_batch_max = 8;
    let engine = Engine::builder()
        .config(config)
        .handler(|_: &Message| {
            std::thread::sleep(Duration::from_micros(50));
            Ok::<(), HandlerError>(())
        })
        .start()
        .unwrap();
    let mut ingress = engine.ingress().unwrap();
    let messages = (0..15_000u64)
        .map(|id| {
            Message::new(ConnectionId(id % 20), MessageId(id))
                .with_role(Role::Session)
                .with_priority(Priority::P1)
        })
        .collect();
    let completions = submit_all(&mut ingress, messages);
    assert_one_completion_each(&completions, 0..15_000);
    let role_refusals = completions
        .iter()
        .filter(|completion| {
            matches!(
                completion.outcome,
                Outcome::Refused {
                    reason: RefusalReason::RoleQueueFull,
                    retry_after_ns,
                } if retry_after_ns > 0
            )
        })
        .count();
    assert!(role_refusals > 1_000, "only {role_refusals} refusals");
    drop(ingress);
    let stats = engine.shutdown();
    assert!(stats.reconciles());
}

#[test]
fn messages_from_an_ingress_dropped_right_after_submitting_are_all_counted() {
    // Found by review: a shard must not drop a link between seeing its ring empty and
    // seeing its producer gone, or the last message pushed in between is lost uncounted.
    let engine = Engine::builder()
        .config(config(2))
        .handler(|_: &Message| Ok::<(), HandlerError>(()))
        .start()
        .unwrap();
    let mut accepted = 0u64;
    for round in 0..300u64 {
        let mut ingress = engine.ingress().unwrap();
        for index in 0..5 {
            let id = round * 10 + index;
            if ingress
                .submit(Message::new(ConnectionId(id), MessageId(id)))
                .is_ok()
            {
                accepted += 1;
            }
        }
        // Dropped at once: its completions are never read, but every message still runs.
        drop(ingress);
    }
    // Ingress indices are reused only once every shard has let go of the old link.
    let started = Instant::now();
    while engine.stats().total.submitted < accepted {
        assert!(
            started.elapsed() < DEADLINE,
            "accepted messages went missing"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let stats = engine.shutdown();
    assert_eq!(stats.total.submitted, accepted);
    assert!(stats.reconciles());
}

#[test]
fn a_p0_message_arriving_behind_a_slow_backlog_runs_next_not_after_the_batch() {
    // One shard, 1 ms handlers, 200 P1 messages queued. A P0 message submitted while they
    // run must be admitted between handlers (the shard's admission pass every
    // ADMISSION_INTERVAL_NS of handler time) and run next: at most the handler running when
    // it arrived and one more may finish first. With fixed batches of 64 handlers it
    // waited for the rest of the batch.
    const BACKLOG: u64 = 200;
    let mut config = config(1);
    config.levels.rate_limit = false;
    config.levels.circuit_breaker = false;
    let engine = Engine::builder()
        .config(config)
        .handler(|_: &Message| {
            std::thread::sleep(Duration::from_millis(1));
            Ok::<(), HandlerError>(())
        })
        .start()
        .unwrap();
    let mut ingress = engine.ingress().unwrap();
    for id in 0..BACKLOG {
        let message =
            Message::new(ConnectionId(id % 10), MessageId(id)).with_priority(Priority::P1);
        ingress
            .submit(message)
            .expect("the ring has room for the backlog");
    }
    let mut completions = Vec::new();
    let started = Instant::now();
    while completions.is_empty() {
        ingress.poll_completions(&mut completions);
        assert!(started.elapsed() < DEADLINE, "the backlog never started");
        std::thread::sleep(Duration::from_micros(100));
    }
    // Everything that finished before the P0 was submitted has been read by now.
    ingress.poll_completions(&mut completions);
    let finished_before = completions.len();
    assert!(
        (finished_before as u64) < BACKLOG / 2,
        "the backlog ran too far before the P0 could be submitted: {finished_before}"
    );
    let urgent = MessageId(1_000_000);
    ingress
        .submit(Message::new(ConnectionId(99), urgent).with_priority(Priority::P0))
        .unwrap();
    while !completions
        .iter()
        .any(|completion| completion.message == urgent)
    {
        ingress.poll_completions(&mut completions);
        assert!(
            started.elapsed() < DEADLINE,
            "the P0 message never completed"
        );
        std::thread::sleep(Duration::from_micros(100));
    }
    let position = completions
        .iter()
        .position(|completion| completion.message == urgent)
        .unwrap();
    let overtaken_by = position - finished_before;
    assert!(
        overtaken_by <= 2,
        "{overtaken_by} backlog messages finished between the P0's submission and its completion"
    );
    assert_eq!(completions[position].outcome, Outcome::Delivered);
    drop(ingress);
    engine.shutdown();
}

#[test]
fn an_ingress_made_just_before_shutdown_still_gets_one_completion_per_message() {
    // The shard picks up a new ingress's rings at the top of its loop and learns of
    // shutdown a little later in the same turn. An ingress registered between the two, with
    // shutdown following at once, must still be adopted (or left to its ingress), not lost
    // with its messages. A busy-spinning shard turns fastest, so it meets that window most
    // often; each round is a fresh engine.
    const ROUNDS: u64 = 600;
    let started = Instant::now();
    for round in 0..ROUNDS {
        let mut config = config(1);
        config.wait = spillway::config::WaitStrategy::BusySpin;
        let engine = Engine::builder()
            .config(config)
            .handler(|_: &Message| Ok::<(), HandlerError>(()))
            .start()
            .unwrap();
        let mut ingress = engine.ingress().unwrap();
        ingress
            .submit(Message::new(ConnectionId(round), MessageId(round)))
            .unwrap();
        let stats = engine.shutdown();
        assert!(stats.reconciles());
        let mut completions = Vec::new();
        ingress.poll_completions(&mut completions);
        assert_one_completion_each(&completions, round..round + 1);
        assert!(started.elapsed() < DEADLINE, "stuck after {round} rounds");
    }
}
