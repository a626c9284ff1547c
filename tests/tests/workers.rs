//! The worker pool against in-test Rust workers on 127.0.0.1 and on a Unix socket
//! (docs/WORKERS.md section 4): answers, a worker that dies holding messages, one that
//! hangs past the deadline, one that sends garbage; every message ends with one counted
//! outcome; a full health check shows each shard's workers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use spillway::config::Config;
use spillway::control::HealthKind;
use spillway::engine::Engine;
use spillway::message::{ConnectionId, Message, MessageId};
use spillway::outcome::{Completion, FailureReason, Outcome};
use spillway::workers::protocol::{
    AnswerStatus, DispatchFrame, FrameReader, FromDispatcher, WorkerFrame,
};
use spillway::workers::{NoInner, WorkerAddress, WorkerListener};

/// What an in-test worker does with each Work.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Echo,
    /// Takes `n` Works, then closes without answering (`n` = its credit, so that it held
    /// exactly `n`).
    DieAfter(usize),
    /// Never answers.
    Hang,
    /// Answers the first Work with bytes that are not a frame.
    Garbage,
}

/// A worker's socket, of either kind.
trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// Runs a worker on its own thread; returns how many Works it received.
fn worker(
    address: &WorkerAddress,
    credit: u32,
    behaviour: Behaviour,
) -> std::thread::JoinHandle<usize> {
    let timeout = Some(Duration::from_millis(100));
    let mut stream: Box<dyn Stream> = match address {
        WorkerAddress::Tcp(address) => {
            let stream = TcpStream::connect(address).unwrap();
            stream.set_read_timeout(timeout).unwrap();
            Box::new(stream)
        }
        WorkerAddress::Unix(path) => {
            let stream = UnixStream::connect(path).unwrap();
            stream.set_read_timeout(timeout).unwrap();
            Box::new(stream)
        }
    };
    std::thread::spawn(move || {
        let mut out = Vec::new();
        WorkerFrame::Hello {
            credit,
            name: "test".into(),
        }
        .encode(&mut out);
        stream.write_all(&out).unwrap();
        let mut reader = FrameReader::<FromDispatcher>::new(1 << 20);
        let mut buffer = [0u8; 4096];
        let mut received = 0;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            let count = match stream.read(&mut buffer) {
                Ok(0) => return received,
                Ok(count) => count,
                Err(error)
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(_) => return received,
            };
            reader.feed(&buffer[..count]);
            while let Ok(Some(frame)) = reader.next_frame() {
                let DispatchFrame::Work(work) = frame else {
                    if let DispatchFrame::Error { .. } = frame {
                        return received;
                    }
                    continue;
                };
                received += 1;
                let mut out = Vec::new();
                match behaviour {
                    Behaviour::Echo => WorkerFrame::Answer {
                        work_id: work.work_id,
                        status: AnswerStatus::Ok,
                        body: work.payload,
                    }
                    .encode(&mut out),
                    Behaviour::DieAfter(n) if received >= n => return received,
                    Behaviour::DieAfter(_) | Behaviour::Hang => {}
                    Behaviour::Garbage => out.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n"),
                }
                if stream.write_all(&out).is_err() {
                    return received;
                }
            }
        }
        received
    })
}

struct Run {
    completions: Vec<Completion>,
    stats: spillway::metrics::Stats,
    workers: spillway::workers::WorkerStats,
}

/// An engine of one shard behind a worker pool on 127.0.0.1; `setup` starts the workers,
/// then `count` messages are submitted and every completion collected.
fn run(
    answer_timeout_ns: u64,
    count: u64,
    idempotent: bool,
    setup: impl FnOnce(&WorkerAddress) -> Vec<std::thread::JoinHandle<usize>>,
) -> (Run, Vec<usize>) {
    run_at("127.0.0.1:0", answer_timeout_ns, count, idempotent, setup)
}

/// [`run`] with the worker address `address`.
fn run_at(
    address: &str,
    answer_timeout_ns: u64,
    count: u64,
    idempotent: bool,
    setup: impl FnOnce(&WorkerAddress) -> Vec<std::thread::JoinHandle<usize>>,
) -> (Run, Vec<usize>) {
    let mut config = Config::default();
    config.shards = 1;
    config.levels.rate_limit = false;
    config.workers.answer_timeout_ns = answer_timeout_ns;
    let listener = WorkerListener::bind(address, config.workers).unwrap();
    let engine = Engine::builder()
        .config(config)
        .handler(listener.pool(NoInner))
        .start()
        .unwrap();
    let workers = setup(listener.address());
    // Every worker said Hello before the load starts.
    let deadline = Instant::now() + Duration::from_secs(5);
    while listener.stats().connected < workers.len() as u64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut ingress = engine.ingress().unwrap();
    for id in 0..count {
        let message = Message::new(ConnectionId(id % 5), MessageId(id))
            .with_payload(id.to_le_bytes().to_vec())
            .with_idempotent(idempotent);
        ingress.submit(message).unwrap();
    }
    let mut completions = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while (completions.len() as u64) < count && Instant::now() < deadline {
        ingress.poll_completions(&mut completions);
    }
    drop(ingress);
    // Shutdown tells every worker `shutting_down`, which ends their threads.
    let stats = engine.shutdown();
    let worker_stats = listener.stats();
    let received = workers
        .into_iter()
        .map(|handle| handle.join().unwrap())
        .collect();
    (
        Run {
            completions,
            stats,
            workers: worker_stats,
        },
        received,
    )
}

const MS: u64 = 1_000_000;

#[test]
fn workers_answer_every_message_with_its_payload() {
    let (run, received) = run(5_000 * MS, 300, false, |address| {
        vec![
            worker(address, 4, Behaviour::Echo),
            worker(address, 8, Behaviour::Echo),
        ]
    });
    assert_eq!(run.completions.len(), 300);
    for completion in &run.completions {
        assert_eq!(completion.outcome, Outcome::Delivered);
        assert_eq!(completion.response[..], completion.message.0.to_le_bytes());
    }
    assert_eq!(received.iter().sum::<usize>(), 300);
    assert_eq!(run.workers.answers, 300);
    assert_eq!(run.stats.total.delivered, 300);
    assert!(run.stats.reconciles());
}

#[test]
fn a_worker_that_dies_fails_exactly_what_it_held_worker_lost() {
    let (run, received) = run(5_000 * MS, 200, false, |address| {
        vec![
            worker(address, 4, Behaviour::DieAfter(4)),
            worker(address, 4, Behaviour::Echo),
        ]
    });
    assert_eq!(run.completions.len(), 200);
    let lost = run
        .completions
        .iter()
        .filter(|completion| {
            completion.outcome
                == Outcome::Failed {
                    reason: FailureReason::WorkerLost,
                }
        })
        .count();
    // It answered none of the Works it received (its whole credit, 4) and closed: each
    // one fails, no other message does.
    assert_eq!((lost, received[0]), (4, 4));
    assert_eq!(run.stats.total.delivered as usize, 200 - lost);
    assert_eq!(
        run.stats.total.failed[FailureReason::WorkerLost.index()] as usize,
        lost
    );
    assert_eq!(run.workers.cut_lost, 1);
    assert!(run.stats.reconciles());
    assert_eq!(run.stats.total.in_flight(), 0);
}

#[test]
fn idempotent_messages_of_a_dead_worker_are_retried_once_on_another() {
    let (run, received) = run(5_000 * MS, 200, true, |address| {
        vec![
            worker(address, 4, Behaviour::DieAfter(4)),
            worker(address, 4, Behaviour::Echo),
        ]
    });
    assert_eq!(run.completions.len(), 200);
    assert!(run
        .completions
        .iter()
        .all(|completion| completion.outcome == Outcome::Delivered));
    assert_eq!(run.workers.retries as usize, received[0]);
    assert!(run.stats.reconciles());
}

#[test]
fn a_hung_worker_is_cut_at_the_deadline_and_what_it_held_fails_worker_timeout() {
    let (run, received) = run(50 * MS, 4, false, |address| {
        vec![worker(address, 4, Behaviour::Hang)]
    });
    assert_eq!(received, [4]);
    assert_eq!(run.completions.len(), 4);
    assert!(run.completions.iter().all(|completion| completion.outcome
        == Outcome::Failed {
            reason: FailureReason::WorkerTimeout
        }));
    assert_eq!(
        run.stats.total.failed[FailureReason::WorkerTimeout.index()],
        4
    );
    assert_eq!(run.workers.cut_timeout, 1);
    assert_eq!(run.stats.total.in_flight(), 0);
    assert!(run.stats.reconciles());
}

#[test]
fn a_worker_sending_garbage_is_cut_and_the_others_go_on() {
    let (run, received) = run(5_000 * MS, 100, false, |address| {
        vec![
            worker(address, 2, Behaviour::Garbage),
            worker(address, 4, Behaviour::Echo),
        ]
    });
    assert_eq!(run.completions.len(), 100);
    assert_eq!(run.workers.cut_garbage, 1);
    let lost = run.stats.total.failed[FailureReason::WorkerLost.index()] as usize;
    assert_eq!(lost, received[0]);
    assert_eq!(run.stats.total.delivered as usize, 100 - lost);
    assert!(run.stats.reconciles());
}

#[test]
fn a_worker_on_a_unix_socket_answers_every_message() {
    let directory = std::env::temp_dir().join(format!("spillway-workers-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let path = directory.join("workers.sock");
    let address = format!("unix:{}", path.display());
    let (run, received) = run_at(&address, 5_000 * MS, 200, false, |address| {
        assert_eq!(address, &WorkerAddress::Unix(path.clone()));
        vec![worker(address, 8, Behaviour::Echo)]
    });
    std::fs::remove_dir_all(&directory).unwrap();
    assert_eq!(received, [200]);
    assert_eq!(run.completions.len(), 200);
    for completion in &run.completions {
        assert_eq!(completion.outcome, Outcome::Delivered);
        assert_eq!(completion.response[..], completion.message.0.to_le_bytes());
    }
    assert_eq!(run.workers.answers, 200);
    assert!(run.stats.reconciles());
}

#[test]
fn a_full_health_check_shows_each_shards_workers() {
    let mut config = Config::default();
    config.shards = 2;
    config.levels.rate_limit = false;
    let listener = WorkerListener::bind("127.0.0.1:0", config.workers).unwrap();
    let engine = Engine::builder()
        .config(config)
        .handler(listener.pool(NoInner))
        .start()
        .unwrap();
    // One at a time, so that each goes to the shard with none.
    let mut workers = Vec::new();
    for credit in [4, 8] {
        workers.push(worker(listener.address(), credit, Behaviour::Echo));
        let deadline = Instant::now() + Duration::from_secs(5);
        while listener.stats().connected < workers.len() as u64 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let mut ingress = engine.ingress().unwrap();
    let count = 100;
    for id in 0..count {
        ingress
            .submit(Message::new(ConnectionId(id), MessageId(id)).with_payload(vec![1; 8]))
            .unwrap();
    }
    let mut completions = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while (completions.len() as u64) < count && Instant::now() < deadline {
        ingress.wait_completions(&mut completions, Duration::from_millis(10));
    }
    assert_eq!(completions.len() as u64, count);
    let control = engine.control();
    // A shard publishes its figures once per turn: wait for the turn after the last answer.
    let deadline = Instant::now() + Duration::from_secs(5);
    let health = loop {
        let health = control.health(HealthKind::Full).unwrap();
        let answers: u64 = health
            .shards
            .iter()
            .filter_map(|shard| shard.workers)
            .map(|workers| workers.answers)
            .sum();
        if answers == count || Instant::now() > deadline {
            break health;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    assert_eq!(health.shards.len(), 2);
    let figures: Vec<_> = health
        .shards
        .iter()
        .map(|shard| {
            shard
                .workers
                .expect("a worker pool publishes on every shard")
        })
        .collect();
    // One worker on each shard, holding nothing once every message is answered.
    let mut credits: Vec<_> = figures.iter().map(|workers| workers.credit_total).collect();
    credits.sort_unstable();
    assert_eq!(credits, [4, 8]);
    for workers in &figures {
        assert_eq!(workers.open, 1);
        assert_eq!(workers.credit_free, workers.credit_total);
        if workers.answers > 0 {
            assert!(workers.answer_latency_ns_mean > 0);
            assert!(workers.answer_latency_ns_max >= workers.answer_latency_ns_mean);
        }
    }
    assert_eq!(
        figures.iter().map(|workers| workers.answers).sum::<u64>(),
        count
    );
    // Liveness and readiness checks carry no shard figures.
    assert!(control
        .health(HealthKind::Liveness)
        .unwrap()
        .shards
        .is_empty());
    drop(ingress);
    engine.shutdown();
    for handle in workers {
        handle.join().unwrap();
    }
}

#[test]
fn a_handler_that_is_no_worker_pool_shows_no_workers() {
    let engine = Engine::builder()
        .handler(|_: &Message| Ok(()))
        .start()
        .unwrap();
    let health = engine.control().health(HealthKind::Full).unwrap();
    assert!(!health.shards.is_empty());
    assert!(health.shards.iter().all(|shard| shard.workers.is_none()));
    engine.shutdown();
}
