//! Waiting for completions without spinning: `Ingress::wait_completions`,
//! `Ingress::submit_timeout`, and the async adapter (`AsyncIngress`, `CompletionStream`).
//!
//! Each wait here has a long timeout (`DEADLINE`), and a wait that returns with nothing
//! fails the test: a lost wake-up shows as a failure, not as a slow run. The only timing
//! assertions are lower bounds (a timeout is not cut short).

use std::collections::HashSet;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use futures_core::Stream;
use spillway::async_ingress::{AsyncIngress, CompletionStream, SubmitError};
use spillway::config::Config;
use spillway::engine::Engine;
use spillway::message::{ConnectionId, Message, MessageId};
use spillway::outcome::{Outcome, RefusalReason};
use spillway_tests::DEADLINE;

fn config(shards: usize) -> Config {
    Config {
        shards,
        ..Config::default()
    }
}

fn message(id: u64) -> Message {
    Message::new(ConnectionId(id), MessageId(id))
}

/// A handler that holds every message until the gate opens, so that a test decides when
/// completions come. `entered` counts the handlers that have started.
#[derive(Clone, Default)]
struct Gate {
    state: Arc<(Mutex<GateState>, Condvar)>,
}

#[derive(Default)]
struct GateState {
    open: bool,
    entered: usize,
}

impl Gate {
    fn pass(&self) {
        let (state, changed) = &*self.state;
        let mut state = state.lock().unwrap();
        state.entered += 1;
        changed.notify_all();
        while !state.open {
            state = changed.wait(state).unwrap();
        }
    }

    fn open(&self) {
        let (state, changed) = &*self.state;
        state.lock().unwrap().open = true;
        changed.notify_all();
    }

    /// Blocks until `count` handlers have started.
    fn wait_entered(&self, count: usize) {
        let (state, changed) = &*self.state;
        let state = state.lock().unwrap();
        let (state, timeout) = changed
            .wait_timeout_while(state, DEADLINE, |state| state.entered < count)
            .unwrap();
        assert!(!timeout.timed_out(), "{} handlers started", state.entered);
    }

    /// Opens the gate from another thread after `delay`.
    fn open_after(&self, delay: Duration) -> std::thread::JoinHandle<()> {
        let gate = self.clone();
        std::thread::spawn(move || {
            std::thread::sleep(delay);
            gate.open();
        })
    }
}

fn gated_engine(config: Config) -> (Engine, Gate) {
    let gate = Gate::default();
    let handler_gate = gate.clone();
    let engine = Engine::builder()
        .config(config)
        .handler(move |_: &Message| {
            handler_gate.pass();
            Ok(())
        })
        .start()
        .unwrap();
    (engine, gate)
}

#[test]
fn a_wait_returns_when_a_completion_arrives() {
    let (engine, gate) = gated_engine(config(1));
    let mut ingress = engine.ingress().unwrap();
    ingress.submit(message(1)).unwrap();
    gate.wait_entered(1);
    // The producer is parked by then; the shard's completion wakes it.
    let opener = gate.open_after(Duration::from_millis(50));
    let mut completions = Vec::new();
    assert_eq!(ingress.wait_completions(&mut completions, DEADLINE), 1);
    assert_eq!(completions[0].message, MessageId(1));
    assert_eq!(completions[0].outcome, Outcome::Delivered);
    opener.join().unwrap();
    drop(ingress);
    assert!(engine.shutdown().reconciles());
}

#[test]
fn a_wait_returns_nothing_after_its_timeout_and_the_completion_later() {
    let (engine, gate) = gated_engine(config(1));
    let mut ingress = engine.ingress().unwrap();
    ingress.submit(message(1)).unwrap();
    gate.wait_entered(1);
    let mut completions = Vec::new();
    let started = Instant::now();
    assert_eq!(
        ingress.wait_completions(&mut completions, Duration::from_millis(50)),
        0
    );
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert!(completions.is_empty());
    gate.open();
    assert_eq!(ingress.wait_completions(&mut completions, DEADLINE), 1);
    // Nothing outstanding: nothing could come, so the wait does not wait.
    assert_eq!(ingress.outstanding(), 0);
    assert_eq!(ingress.wait_completions(&mut completions, DEADLINE), 0);
    drop(ingress);
    assert!(engine.shutdown().reconciles());
}

#[test]
fn a_wait_returns_when_the_engine_shuts_down() {
    let mut config = config(1);
    config.shutdown_finishes_queued = false;
    let (engine, gate) = gated_engine(config);
    let mut ingress = engine.ingress().unwrap();
    for id in 0..4 {
        ingress.submit(message(id)).unwrap();
    }
    gate.wait_entered(1);
    // The producer waits on its own thread for all four; the shutdown cancels the three
    // queued behind the gated one, which then completes once the gate opens.
    let producer = std::thread::spawn(move || {
        let mut completions = Vec::new();
        while ingress.outstanding() > 0 {
            assert!(
                ingress.wait_completions(&mut completions, DEADLINE) > 0,
                "a wait timed out"
            );
        }
        (ingress, completions)
    });
    let opener = gate.open_after(Duration::from_millis(100));
    let stats = engine.shutdown();
    opener.join().unwrap();
    let (mut ingress, mut completions) = producer.join().unwrap();
    // The gated one runs; those queued behind it run too if the shard reaches them in the
    // turn the gate opened, else the shutdown cancels them.
    assert_eq!(completions.len(), 4);
    for completion in &completions {
        assert!(
            matches!(completion.outcome, Outcome::Delivered | Outcome::Cancelled),
            "{:?}",
            completion.outcome
        );
    }
    // Stopped: a wait returns at once, and a submission comes back.
    let started = Instant::now();
    assert_eq!(ingress.wait_completions(&mut completions, DEADLINE), 0);
    assert!(started.elapsed() < DEADLINE);
    assert!(ingress.submit(message(9)).unwrap_err().stopped);
    assert!(stats.reconciles());
}

/// Producers that submit and wait without pause while the engine shuts down: whichever
/// way each message ends (run, cancelled, refused by the stopping shard, or refused by
/// the ingress because it reached the ring after the shard's last look), each gets one
/// completion, and no wait is left parked by the stop.
#[test]
fn producers_waiting_through_a_shutdown_get_every_completion() {
    let engine = Engine::builder()
        .config(config(2))
        .handler(|_: &Message| Ok(()))
        .start()
        .unwrap();
    let producers: Vec<_> = (0..2u64)
        .map(|producer| {
            let mut ingress = engine.ingress().unwrap();
            std::thread::spawn(move || {
                let mut completions = Vec::new();
                let mut submitted = 0u64;
                loop {
                    let id = producer << 32 | submitted;
                    match ingress.submit_timeout(message(id), DEADLINE) {
                        Ok(()) => submitted += 1,
                        Err(full) => {
                            assert!(full.stopped, "a submission timed out");
                            break;
                        }
                    }
                    if submitted % 8 == 0 {
                        assert!(ingress.wait_completions(&mut completions, DEADLINE) > 0);
                    }
                }
                while ingress.outstanding() > 0 {
                    assert!(ingress.wait_completions(&mut completions, DEADLINE) > 0);
                }
                ingress.poll_completions(&mut completions);
                (submitted, completions)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let stats = engine.shutdown();
    for producer in producers {
        let (submitted, completions) = producer.join().unwrap();
        assert!(submitted > 0);
        assert_eq!(completions.len() as u64, submitted);
        let ids: HashSet<u64> = completions.iter().map(|done| done.message.0).collect();
        assert_eq!(ids.len() as u64, submitted, "a message completed twice");
    }
    assert!(stats.reconciles());
}

/// Ping-pong, one message at a time, so that every completion finds its producer parked or
/// about to park: the race the doorbell's handshake settles, many times over, on two
/// shards and from two producers at once (their wake-ups race each other's too).
#[test]
fn no_wake_up_is_lost_over_many_rounds() {
    const ROUNDS: u64 = 5_000;
    let engine = Engine::builder()
        .config(config(2))
        .handler(|_: &Message| Ok(()))
        .start()
        .unwrap();
    std::thread::scope(|scope| {
        for producer in 0..2u64 {
            let mut ingress = engine.ingress().unwrap();
            scope.spawn(move || {
                let mut completions = Vec::new();
                for round in 0..ROUNDS {
                    let id = producer * ROUNDS + round;
                    ingress.submit(message(id)).unwrap();
                    completions.clear();
                    assert_eq!(
                        ingress.wait_completions(&mut completions, DEADLINE),
                        1,
                        "round {round}: the wait ended without the completion"
                    );
                    assert_eq!(completions[0].message, MessageId(id));
                }
            });
        }
    });
    assert!(engine.shutdown().reconciles());
}

#[test]
fn submit_timeout_waits_for_room_and_gives_up_at_its_timeout() {
    let mut config = config(1);
    config.ring_capacity = 4;
    let (engine, gate) = gated_engine(config);
    let mut ingress = engine.ingress().unwrap();
    // One in the handler, held there: the shard takes nothing more, and four fill its ring.
    ingress.submit(message(0)).unwrap();
    gate.wait_entered(1);
    for id in 1..=4 {
        ingress.submit(message(id)).unwrap();
    }
    let started = Instant::now();
    let full = ingress
        .submit_timeout(message(5), Duration::from_millis(50))
        .unwrap_err();
    assert!(!full.stopped);
    assert_eq!(full.message.id, MessageId(5));
    assert!(started.elapsed() >= Duration::from_millis(50));

    // Parked until the shard takes from its ring again.
    let opener = gate.open_after(Duration::from_millis(50));
    ingress.submit_timeout(full.message, DEADLINE).unwrap();
    opener.join().unwrap();
    let mut completions = Vec::new();
    while ingress.outstanding() > 0 {
        assert!(ingress.wait_completions(&mut completions, DEADLINE) > 0);
    }
    let ids: HashSet<u64> = completions.iter().map(|done| done.message.0).collect();
    assert_eq!(ids, (0..=5).collect());
    drop(ingress);
    assert!(engine.shutdown().reconciles());
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap()
}

#[test]
fn async_submissions_from_many_tasks_each_get_their_own_completion() {
    const TASKS: u64 = 64;
    const PER_TASK: u64 = 100;
    let engine = Engine::builder()
        .config(config(2))
        .handler(|message: &Message| Ok(message.id.0.to_le_bytes().to_vec()))
        .start()
        .unwrap();
    let ingress = AsyncIngress::new(engine.ingress().unwrap());
    runtime().block_on(async {
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let ingress = ingress.clone();
                tokio::spawn(async move {
                    for round in 0..PER_TASK {
                        let id = task * PER_TASK + round;
                        let completion = ingress.submit(message(id)).await.unwrap();
                        assert_eq!(completion.message, MessageId(id));
                        assert_eq!(completion.outcome, Outcome::Delivered);
                        assert_eq!(&completion.response[..], id.to_le_bytes());
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
    assert_eq!(ingress.in_flight(), 0);
    drop(ingress);
    let stats = engine.shutdown();
    assert_eq!(stats.total.delivered, TASKS * PER_TASK);
    assert!(stats.reconciles());
}

#[test]
fn an_async_submission_to_a_full_ring_hands_the_message_back() {
    let mut config = config(1);
    config.ring_capacity = 4;
    let (engine, gate) = gated_engine(config);
    let ingress = AsyncIngress::new(engine.ingress().unwrap());
    let runtime = runtime();
    let first = runtime.spawn(ingress.submit(message(0)));
    gate.wait_entered(1);
    let waiting: Vec<_> = (1..=4)
        .map(|id| runtime.spawn(ingress.submit(message(id))))
        .collect();
    // Until all four sit in the ring, a fifth could still fit.
    let deadline = Instant::now() + DEADLINE;
    while ingress.in_flight() < 5 {
        assert!(Instant::now() < deadline, "the submissions did not go in");
        std::thread::yield_now();
    }
    match runtime.block_on(ingress.submit(message(5))) {
        Err(SubmitError::Full(full)) => {
            assert!(!full.stopped);
            assert_eq!(full.message.id, MessageId(5));
        }
        other => panic!("expected a full ring, got {other:?}"),
    }
    // A duplicate of a message in flight is refused and handed back too.
    let duplicate = runtime.block_on(ingress.submit(message(3))).unwrap_err();
    assert!(matches!(duplicate, SubmitError::DuplicateId(_)));
    assert_eq!(duplicate.into_message().id, MessageId(3));

    gate.open();
    for task in std::iter::once(first).chain(waiting) {
        let completion = runtime.block_on(task).unwrap().unwrap();
        assert_eq!(completion.outcome, Outcome::Delivered);
    }
    drop(ingress);
    assert!(engine.shutdown().reconciles());
}

/// The task the shards wake gives up (its future is dropped): the wait passes to another
/// task, which still hears of its completion.
#[test]
fn a_dropped_async_submission_hands_the_wait_over() {
    let (engine, gate) = gated_engine(config(1));
    let ingress = AsyncIngress::new(engine.ingress().unwrap());
    let runtime = runtime();
    let kept = runtime.spawn(ingress.submit(message(1)));
    gate.wait_entered(1);
    // Polled last, so its task is the one the doorbell holds; then it times out.
    let dropped = runtime.block_on(async {
        tokio::time::timeout(Duration::from_millis(50), ingress.submit(message(2))).await
    });
    assert!(
        dropped.is_err(),
        "the gate was shut: no completion could come"
    );
    gate.open();
    let completion = runtime.block_on(kept).unwrap().unwrap();

    assert_eq!(completion.message, MessageId(1));
    // The dropped one's completion is thrown away when it comes; its id is free after.
    let deadline = Instant::now() + DEADLINE;
    loop {
        match runtime.block_on(ingress.submit(message(2))) {
            Ok(completion) => {
                assert_eq!(completion.outcome, Outcome::Delivered);
                break;
            }
            Err(SubmitError::DuplicateId(_)) => {
                assert!(
                    Instant::now() < deadline,
                    "the abandoned completion never came"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(other) => panic!("{other}"),
        }
    }
    drop(ingress);
    assert!(engine.shutdown().reconciles());
}

#[test]
fn a_completion_stream_yields_each_completion_and_ends_after_shutdown() {
    const MESSAGES: u64 = 1_000;
    let engine = Engine::builder()
        .config(config(2))
        .handler(|_: &Message| Ok(()))
        .start()
        .unwrap();
    let mut stream = CompletionStream::new(engine.ingress().unwrap());
    let runtime = runtime();
    let mut seen = HashSet::new();
    let mut next_id = 0;
    runtime.block_on(async {
        while seen.len() < MESSAGES as usize {
            // Submit until the ring pushes back, then read what came.
            while next_id < MESSAGES {
                match stream.submit(message(next_id)) {
                    Ok(()) => next_id += 1,
                    Err(full) => {
                        assert!(!full.stopped);
                        break;
                    }
                }
            }
            let completion = next(&mut stream).await.expect("the engine runs");
            assert_eq!(completion.outcome, Outcome::Delivered);
            assert!(seen.insert(completion.message.0), "a second completion");
        }
    });
    // One more, refused at shutdown or run before it; then the stream ends.
    stream.submit(message(MESSAGES)).unwrap();
    let stats = engine.shutdown();
    let (last, end) =
        runtime.block_on(async { (next(&mut stream).await, next(&mut stream).await) });
    let last = last.expect("the last message's completion");
    assert!(matches!(
        last.outcome,
        Outcome::Delivered
            | Outcome::Refused {
                reason: RefusalReason::ShuttingDown,
                ..
            }
    ));
    assert!(end.is_none());
    assert!(stats.reconciles());
}

async fn next(stream: &mut CompletionStream) -> Option<spillway::outcome::Completion> {
    poll_fn(|context| Pin::new(&mut *stream).poll_next(context)).await
}
