//! Deferred completions (`ShardContext::defer` / `complete`, `Handler::capacity`): a
//! handler that takes messages to answer later, as the worker pool does, on the
//! deterministic simulation with exact figures, and on a real engine for shutdown.

use std::time::Duration;

use spillway::admission::breaker::BreakerState;
use spillway::config::Config;
use spillway::engine::Engine;
use spillway::handler::{DeferError, Handler, HandlerError, ShardContext, Ticket};
use spillway::message::{Bytes, ConnectionId, Message, MessageId, Priority};
use spillway::outcome::{FailureReason, Outcome, RefusalReason, ShedReason};
use spillway::simulation::Simulation;

const MS: u64 = 1_000_000;

/// Takes every message to answer later, up to `capacity` at once (`None`: no limit), and
/// answers them when told to.
#[derive(Clone, Default)]
struct Later {
    capacity: Option<usize>,
    held: Vec<Ticket>,
    /// Panic after deferring.
    panic_after_defer: bool,
}

impl Later {
    fn with_capacity(capacity: usize) -> Self {
        Self {
            capacity: Some(capacity),
            ..Self::default()
        }
    }
}

impl Handler for Later {
    fn handle(
        &mut self,
        _message: &Message,
        context: &mut ShardContext<'_>,
    ) -> Result<Bytes, HandlerError> {
        let ticket = context.defer().expect("handle may defer");
        assert_eq!(
            context.defer(),
            Ok(ticket),
            "the same ticket twice in one run"
        );
        if self.panic_after_defer {
            panic!("deferred, then panicked");
        }
        self.held.push(ticket);
        Ok(Bytes::new())
    }

    fn capacity(&self) -> Option<usize> {
        self.capacity
            .map(|capacity| capacity.saturating_sub(self.held.len()))
    }
}

fn config() -> Config {
    let mut config = Config::default();
    config.levels.rate_limit = false;
    config
}

fn message(id: u64) -> Message {
    Message::new(ConnectionId(1), MessageId(id)).with_priority(Priority::P0)
}

/// Answers the first `count` held messages with `result` at `now_ns`.
fn answer(
    simulation: &mut Simulation<Later>,
    now_ns: u64,
    count: usize,
    result: Result<Bytes, HandlerError>,
) {
    simulation.with_context(now_ns, |handler, context| {
        for ticket in handler.held.drain(..count) {
            context.complete(ticket, result.clone()).unwrap();
        }
    });
}

#[test]
fn without_capacity_messages_stay_queued_under_the_caps_and_in_flight_in_the_stats() {
    let mut config = config();
    config.caps.connection_messages = 10;
    let mut simulation = Simulation::new(config, Later::with_capacity(2)).unwrap();
    let refused: Vec<_> = (0..15)
        .filter_map(|id| simulation.submit(0, message(id)).err())
        .collect();
    assert_eq!(refused.len(), 5);
    assert!(refused.iter().all(|outcome| matches!(
        outcome,
        Outcome::Refused {
            reason: RefusalReason::ConnectionQueueFull,
            ..
        }
    )));
    simulation.take_completions();

    // Capacity 2: two taken, eight wait in the queue.
    assert_eq!(simulation.run(0, MS, 64), 2);
    assert_eq!((simulation.deferred(), simulation.pending()), (2, 8));
    assert_eq!(
        simulation.run(MS, 2 * MS, 64),
        0,
        "no capacity, nothing runs"
    );

    // Deferred messages still hold their connection's cap.
    assert!(matches!(
        simulation.submit(2 * MS, message(100)),
        Err(Outcome::Refused {
            reason: RefusalReason::ConnectionQueueFull,
            ..
        })
    ));
    let stats = simulation.stats();
    assert_eq!(stats.total.admitted, 10);
    assert_eq!(stats.total.in_flight(), 10);
    assert!(stats.reconciles());

    // Shedding applies to what waits, as to any backlog: a P2 is shed while the breaker is
    // forced open.
    simulation.breaker().force_open(2 * MS);
    simulation.tick(2 * MS);
    let low = Message::new(ConnectionId(2), MessageId(200)).with_priority(Priority::P2);
    assert_eq!(
        simulation.submit(2 * MS, low),
        Err(Outcome::Shed {
            reason: ShedReason::CircuitOpen
        })
    );
    simulation.breaker().force_closed(2 * MS);
    simulation.tick(2 * MS);

    // Answering frees capacity; the queue drains two by two, highest priority first.
    let mut now_ns = 3 * MS;
    let mut delivered = 0;
    while simulation.deferred() > 0 {
        answer(&mut simulation, now_ns, 2, Ok(Bytes::from_static(b"ok")));
        delivered += 2;
        simulation.run(now_ns, now_ns + MS, 64);
        now_ns += 2 * MS;
    }
    assert_eq!(delivered, 10);
    let completions = simulation.take_completions();
    let delivered_completions: Vec<_> = completions
        .iter()
        .filter(|completion| completion.outcome == Outcome::Delivered)
        .collect();
    assert_eq!(delivered_completions.len(), 10);
    assert!(delivered_completions
        .iter()
        .all(|completion| &completion.response[..] == b"ok"));
    let stats = simulation.stats();
    assert_eq!(stats.total.delivered, 10);
    assert_eq!(stats.total.in_flight(), 0);
    assert!(stats.reconciles());
}

#[test]
fn deferred_latencies_reach_the_breaker_as_synchronous_ones_do() {
    let run = |answer_after_ns: u64| {
        let mut config = config();
        config.breaker.window_requests = 10;
        config.breaker.min_samples = 10;
        config.breaker.p95_latency_max_ns = 10 * MS;
        let mut simulation = Simulation::new(config, Later::default()).unwrap();
        for id in 0..10 {
            simulation.submit(0, message(id)).unwrap();
        }
        assert_eq!(simulation.run(0, 1_000, 64), 10);
        answer(&mut simulation, answer_after_ns, 10, Ok(Bytes::new()));
        simulation.tick(answer_after_ns);
        (
            simulation.stats().breaker,
            simulation.take_breaker_transitions(),
        )
    };
    // Answered within the threshold: closed.
    let (state, transitions) = run(5 * MS);
    assert_eq!(state, BreakerState::Closed);
    assert!(transitions.is_empty());
    // Answered after 20 ms: every latency (admission to answer) is 20 ms, p95 over 10 ms.
    let (state, transitions) = run(20 * MS);
    assert_eq!(state, BreakerState::Open);
    assert_eq!(transitions.len(), 1);
    let text = format!("{:?}", transitions[0]);
    assert!(text.contains("P95Latency"), "{text}");
    assert!(text.contains("20000000"), "{text}");
}

#[test]
fn deferred_failures_count_against_the_service_but_invalid_requests_do_not() {
    let run = |error: HandlerError| {
        let mut config = config();
        config.breaker.window_requests = 10;
        config.breaker.min_samples = 10;
        let mut simulation = Simulation::new(config, Later::default()).unwrap();
        for id in 0..10 {
            simulation.submit(0, message(id)).unwrap();
        }
        simulation.run(0, 1_000, 64);
        answer(&mut simulation, MS, 10, Err(error));
        simulation.tick(MS);
        let stats = simulation.stats();
        assert!(stats.reconciles());
        (stats.breaker, stats.total.failed)
    };
    let (state, failed) = run(HandlerError::worker_lost("gone"));
    assert_eq!(state, BreakerState::Open);
    assert_eq!(failed[FailureReason::WorkerLost.index()], 10);
    let (state, failed) = run(HandlerError::invalid("bad"));
    assert_eq!(state, BreakerState::Closed);
    assert_eq!(failed[FailureReason::InvalidRequest.index()], 10);
}

#[test]
fn a_drain_waits_for_a_deferred_message_and_its_deadline_fails_it() {
    let mut config = config();
    config.control.drain_timeout_ns = 100 * MS;
    let mut simulation = Simulation::new(config, Later::default()).unwrap();
    simulation.submit(0, message(1)).unwrap();
    simulation.run(0, 1_000, 64);
    assert_eq!(simulation.deferred(), 1);
    // Nothing is queued, but the deferred message is pending: the drain waits for it.
    assert_eq!(simulation.drain(MS, ConnectionId(1), true), None);
    assert!(simulation.take_drained(2 * MS).is_empty());
    answer(&mut simulation, 3 * MS, 1, Ok(Bytes::new()));
    let drained = simulation.take_drained(3 * MS);
    assert_eq!(drained.len(), 1);
    assert_eq!((drained[0].finished, drained[0].cancelled), (1, 0));
    assert!(!drained[0].deadline_passed);

    // Again on a fresh connection, unanswered: the deadline fails it WorkerTimeout.
    let other = Message::new(ConnectionId(2), MessageId(2)).with_priority(Priority::P0);
    simulation.submit(10 * MS, other).unwrap();
    simulation.run(10 * MS, 11 * MS, 64);
    let late = *simulation.handler().held.last().unwrap();
    assert_eq!(simulation.drain(11 * MS, ConnectionId(2), true), None);
    assert!(simulation.take_drained(50 * MS).is_empty());
    let drained = simulation.take_drained(111 * MS);
    assert_eq!(drained.len(), 1);
    assert!(drained[0].deadline_passed);
    assert_eq!((drained[0].finished, drained[0].cancelled), (1, 0));
    let completions = simulation.take_completions();
    let failed = completions
        .iter()
        .find(|completion| completion.message == MessageId(2))
        .unwrap();
    assert_eq!(
        failed.outcome,
        Outcome::Failed {
            reason: FailureReason::WorkerTimeout
        }
    );
    // The answer that comes after finishes nothing.
    let result = simulation.with_context(120 * MS, |_, context| {
        context.complete(late, Ok(Bytes::new()))
    });
    assert_eq!(result, Err(DeferError::StaleTicket));
    let stats = simulation.stats();
    assert_eq!(stats.total.delivered, 1);
    assert_eq!(stats.total.failed[FailureReason::WorkerTimeout.index()], 1);
    assert_eq!(stats.total.in_flight(), 0);
    assert!(stats.reconciles());
}

#[test]
fn shutdown_fails_what_is_still_deferred_worker_lost() {
    let mut simulation = Simulation::new(config(), Later::with_capacity(3)).unwrap();
    for id in 0..5 {
        simulation.submit(0, message(id)).unwrap();
    }
    simulation.run(0, 1_000, 64);
    assert_eq!((simulation.deferred(), simulation.pending()), (3, 2));
    assert_eq!(simulation.abandon_deferred(MS), 3);
    let stats = simulation.stats();
    assert_eq!(stats.total.failed[FailureReason::WorkerLost.index()], 3);
    assert_eq!(stats.total.in_flight(), 2, "the two still queued");
    assert!(stats.reconciles());
}

#[test]
fn a_run_that_defers_then_panics_fails_handler_panic_and_keeps_no_ticket() {
    let handler = Later {
        panic_after_defer: true,
        ..Later::default()
    };
    let mut simulation = Simulation::new(config(), handler).unwrap();
    simulation.submit(0, message(1)).unwrap();
    simulation.run(0, 1_000, 64);
    assert_eq!(simulation.deferred(), 0);
    let stats = simulation.stats();
    assert_eq!(stats.total.failed[FailureReason::HandlerPanic.index()], 1);
    assert!(stats.reconciles());
    // Outside a run nothing may be deferred.
    let outside = simulation.with_context(MS, |_, context| context.defer());
    assert_eq!(outside, Err(DeferError::NotInHandle));
}

/// Defers every message and answers it on a later poll, or never (`answers: false`).
#[derive(Clone)]
struct Worker {
    answers: bool,
    held: Vec<Ticket>,
}

impl Handler for Worker {
    fn handle(
        &mut self,
        _message: &Message,
        context: &mut ShardContext<'_>,
    ) -> Result<Bytes, HandlerError> {
        self.held.push(context.defer().unwrap());
        Ok(Bytes::new())
    }

    fn capacity(&self) -> Option<usize> {
        Some(4usize.saturating_sub(self.held.len()))
    }

    fn poll(&mut self, context: &mut ShardContext<'_>) -> usize {
        if !self.answers {
            return 0;
        }
        let answered = self.held.len();
        for ticket in self.held.drain(..) {
            let payload = context
                .deferred_message(ticket)
                .map(|(message, _)| message.payload.clone())
                .unwrap();
            context.complete(ticket, Ok(payload)).unwrap();
        }
        answered
    }
}

fn run_engine(answers: bool, count: u64) -> (Vec<Outcome>, spillway::metrics::Stats) {
    let mut config = config();
    config.shards = 2;
    config.control.drain_timeout_ns = 20 * MS;
    let engine = Engine::builder()
        .config(config)
        .handler(Worker {
            answers,
            held: Vec::new(),
        })
        .start()
        .unwrap();
    let mut ingress = engine.ingress().unwrap();
    for id in 0..count {
        let message =
            Message::new(ConnectionId(id % 7), MessageId(id)).with_payload(vec![id as u8]);
        ingress.submit(message).unwrap();
    }
    let mut completions = Vec::new();
    if answers {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while (completions.len() as u64) < count && std::time::Instant::now() < deadline {
            ingress.poll_completions(&mut completions);
        }
        assert!(completions
            .iter()
            .all(|completion| completion.response[..] == [completion.message.0 as u8]));
    } else {
        // Every message admitted (held or queued) before the shutdown begins.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while engine.stats().total.admitted < count && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    drop(ingress);
    let stats = engine.shutdown();
    (
        completions
            .iter()
            .map(|completion| completion.outcome)
            .collect(),
        stats,
    )
}

#[test]
fn an_engine_serves_deferred_answers_from_poll() {
    let (outcomes, stats) = run_engine(true, 200);
    assert_eq!(outcomes.len(), 200);
    assert!(outcomes
        .iter()
        .all(|outcome| *outcome == Outcome::Delivered));
    assert_eq!(stats.total.delivered, 200);
    assert!(stats.reconciles());
    assert_eq!(stats.total.in_flight(), 0);
}

#[test]
fn an_engine_shutting_down_fails_unanswered_deferred_messages_after_the_drain_timeout() {
    let (_, stats) = run_engine(false, 40);
    // Four held per shard (capacity), the rest queued: held ones fail WorkerLost, queued
    // ones are cancelled at the deadline.
    let total = &stats.total;
    assert_eq!(total.admitted, 40);
    assert_eq!(total.in_flight(), 0);
    let lost = total.failed[FailureReason::WorkerLost.index()];
    assert!((1..=8).contains(&lost), "lost {lost}");
    assert_eq!(lost + total.cancelled, 40);
    assert!(stats.reconciles());
}
