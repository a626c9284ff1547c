//! The worker pool against in-test Rust workers on 127.0.0.1 (docs/WORKERS.md section 4):
//! answers, a worker that dies holding messages, one that hangs past the deadline, one
//! that sends garbage; every message ends with one counted outcome.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use spillway::config::Config;
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

/// Runs a worker on its own thread; returns how many Works it received.
fn worker(
    address: &WorkerAddress,
    credit: u32,
    behaviour: Behaviour,
) -> std::thread::JoinHandle<usize> {
    let WorkerAddress::Tcp(address) = address.clone() else {
        unreachable!("tests bind TCP")
    };
    std::thread::spawn(move || {
        let mut stream = TcpStream::connect(address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
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

/// An engine of one shard behind a worker pool; `setup` starts the workers, then `count`
/// messages are submitted and every completion collected.
fn run(
    answer_timeout_ns: u64,
    count: u64,
    idempotent: bool,
    setup: impl FnOnce(&WorkerAddress) -> Vec<std::thread::JoinHandle<usize>>,
) -> (Run, Vec<usize>) {
    let mut config = Config::default();
    config.shards = 1;
    config.levels.rate_limit = false;
    config.workers.answer_timeout_ns = answer_timeout_ns;
    let listener = WorkerListener::bind("127.0.0.1:0", config.workers).unwrap();
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
