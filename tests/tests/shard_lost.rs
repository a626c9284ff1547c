//! A shard thread that panics outside a handler (in its own loop, in admission, in the
//! handler's `poll`, which is where the TCP front end reads its sockets) is lost, but loses
//! no message: every message it held or receives afterwards ends `Failed(ShardLost)`, its
//! completion reaches its ingress, health reports the shard lost through the control
//! plane, the other shards go on, and the counters reconcile exactly, message by message.
//!
//! The panics are injected with the `fault-injection` feature's hooks
//! (`Engine::inject_panic`), or by a test handler whose `poll` panics. Bounded in time and
//! count; nothing here is a timing assertion.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use spillway::client::{Client, ClientConfig, ClientEvent, ClientReply, SubmitRequest};
use spillway::config::Config;
use spillway::control::HealthKind;
use spillway::engine::Engine;
use spillway::fault::FaultPoint;
use spillway::handler::{Handler, HandlerError, ShardContext};
use spillway::ingress::Ingress;
use spillway::message::{ConnectionId, Message, MessageId, Priority, Role, TenantId};
use spillway::metrics::{Stats, Tally};
use spillway::net::server::{ServerConfig, TcpServer};
use spillway::outcome::{Completion, FailureReason, Outcome};
use spillway_tests::{submit_all, DEADLINE};

const SHARD_LOST: Outcome = Outcome::Failed {
    reason: FailureReason::ShardLost,
};

/// One or two shards, no rate limit and no breaker (so every message is admitted unless
/// its shard is lost), and a handler cost that keeps a queue.
fn config(shards: usize) -> Config {
    let mut config = Config {
        shards,
        ..Config::default()
    };
    config.levels.rate_limit = false;
    config.levels.circuit_breaker = false;
    config
}

/// A handler that takes about `cost` per message.
fn busy(cost: Duration) -> impl Handler + Clone {
    move |_: &Message| {
        let start = Instant::now();
        while start.elapsed() < cost {
            std::hint::spin_loop();
        }
        Ok::<(), HandlerError>(())
    }
}

/// Submits messages `ids` on connections `connection_of(id)` and collects their
/// completions.
fn submit_and_collect(
    ingress: &mut Ingress,
    ids: std::ops::Range<u64>,
    connection_of: impl Fn(u64) -> u64,
) -> Vec<Completion> {
    let messages = ids
        .map(|id| Message::new(ConnectionId(connection_of(id)), MessageId(id)))
        .collect();
    submit_all(ingress, messages)
}

/// Exactly one completion per id, and the engine's counters equal the tally of those
/// completions, field by field (so no message is counted twice or missed).
fn assert_reconciled_message_by_message(completions: &[Completion], total: u64, stats: &Stats) {
    let mut seen: HashMap<u64, usize> = HashMap::new();
    let mut tally = Tally::default();
    for completion in completions {
        *seen.entry(completion.message.0).or_default() += 1;
        tally.count_completion(completion.outcome);
    }
    assert_eq!(seen.len() as u64, total, "one completion per message");
    assert!(
        seen.values().all(|&count| count == 1),
        "a message completed twice"
    );
    assert!(stats.reconciles(), "{stats:?}");
    assert_eq!(
        stats.total, tally,
        "the engine's counters against the completions"
    );
}

fn lost_count(completions: &[Completion]) -> usize {
    completions
        .iter()
        .filter(|completion| completion.outcome == SHARD_LOST)
        .count()
}

/// Waits until health reports `shard` lost (the shard raises the flag as it starts
/// failing what it held).
fn wait_until_lost(engine: &Engine, shard: usize) -> spillway::control::Health {
    let started = Instant::now();
    loop {
        let health = engine.control().health(HealthKind::Full).expect("health");
        if health.lost_shards.contains(&shard) {
            return health;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "shard {shard} never reported lost"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_panic_in_the_shard_loop_fails_what_it_held_and_everything_after() {
    let engine = Engine::builder()
        .config(config(1))
        .handler(busy(Duration::from_micros(50)))
        .start()
        .unwrap();
    let mut ingress = engine.ingress().unwrap();
    // A few turns in, with a queue of slow messages behind.
    engine.inject_panic(0, FaultPoint::ShardLoop, 20);
    let mut completions = submit_and_collect(&mut ingress, 0..3_000, |id| id % 50);
    let health = wait_until_lost(&engine, 0);
    assert!(!health.live && !health.ready);
    assert_eq!(health.shards.len(), 1);
    assert!(health.shards[0].lost);
    // After the loss every message fails at once, none is delivered.
    let after = submit_and_collect(&mut ingress, 3_000..4_000, |id| id % 50);
    assert_eq!(lost_count(&after), 1_000);
    completions.extend(after);
    let delivered = completions
        .iter()
        .filter(|completion| completion.outcome == Outcome::Delivered)
        .count();
    assert!(delivered > 0, "some ran before the panic");
    assert!(
        lost_count(&completions) > 1_000,
        "some were queued at the panic"
    );
    drop(ingress);
    let stats = engine.shutdown();
    assert_reconciled_message_by_message(&completions, 4_000, &stats);
    assert_eq!(
        stats.total.failed[FailureReason::ShardLost.index()],
        lost_count(&completions) as u64
    );
}

#[test]
fn a_panic_in_admission_fails_the_message_in_hand_too() {
    let mut config = config(1);
    // Queue everything the test sends, so the shard holds a long queue when it is lost.
    config.caps.connection_messages = 10_000;
    let engine = Engine::builder()
        .config(config)
        .handler(busy(Duration::from_micros(20)))
        .start()
        .unwrap();
    let mut ingress = engine.ingress().unwrap();
    engine.inject_panic(0, FaultPoint::Admission, 500);
    let completions = submit_and_collect(&mut ingress, 0..2_000, |id| id % 10);
    wait_until_lost(&engine, 0);
    // Message 500 was in admission when the shard panicked: it fails, it is not lost.
    let in_hand = completions
        .iter()
        .find(|completion| completion.message == MessageId(500))
        .expect("the message in admission has a completion");
    assert_eq!(in_hand.outcome, SHARD_LOST);
    // The 500 before it were admitted (some ran), the ones after it all fail.
    assert!(completions
        .iter()
        .filter(|completion| completion.message.0 > 500)
        .all(|completion| completion.outcome == SHARD_LOST));
    drop(ingress);
    let stats = engine.shutdown();
    assert_reconciled_message_by_message(&completions, 2_000, &stats);
}

/// A handler whose `poll` admits work of its own on the shard (as the TCP front end does)
/// and panics on its `panic_on_poll`-th call on shard 0.
#[derive(Clone)]
struct PanickingFrontEnd {
    polls: u64,
    panic_on_poll: u64,
    next_local_id: u64,
}

impl Handler for PanickingFrontEnd {
    fn handle(
        &mut self,
        _: &Message,
        _: &mut ShardContext<'_>,
    ) -> Result<spillway::message::Bytes, HandlerError> {
        Ok(spillway::message::Bytes::new())
    }

    fn poll(&mut self, context: &mut ShardContext<'_>) -> usize {
        if context.shard() != 0 {
            return 0;
        }
        self.polls += 1;
        if self.polls < 50 {
            // Local work, as a front end admits for its sockets.
            let connection = context
                .owned_connection_from(1_000_000 + self.polls)
                .expect("shard 0 owns some id");
            self.next_local_id += 1;
            let _ = context.admit(Message::new(connection, MessageId(self.next_local_id)));
            return 1;
        }
        if self.polls == self.panic_on_poll {
            panic!("the front end's poll panics");
        }
        0
    }
}

#[test]
fn a_panic_in_a_handlers_poll_loses_its_shard_only() {
    let engine = Engine::builder()
        .config(config(2))
        .handler(PanickingFrontEnd {
            polls: 0,
            panic_on_poll: 60,
            next_local_id: 0,
        })
        .start()
        .unwrap();
    let health = wait_until_lost(&engine, 0);
    assert_eq!(health.lost_shards, vec![0]);
    assert_eq!(health.shards.len(), 2);
    assert!(!health.shards[1].lost);
    let mut ingress = engine.ingress().unwrap();
    let completions = submit_and_collect(&mut ingress, 0..2_000, |id| id);
    for completion in &completions {
        let expected = if engine.shard_of(completion.connection) == 0 {
            SHARD_LOST
        } else {
            Outcome::Delivered
        };
        assert_eq!(completion.outcome, expected, "{completion:?}");
    }
    assert!(lost_count(&completions) > 0 && lost_count(&completions) < 2_000);
    drop(ingress);
    let stats = engine.shutdown();
    // The front end's 49 local messages were counted too; whatever they did not finish
    // before the panic failed with the shard.
    assert!(stats.reconciles(), "{stats:?}");
    assert_eq!(stats.total.submitted, 2_000 + 49);
    assert_eq!(stats.total.finished(), stats.total.admitted);
}

fn request(id: u64) -> SubmitRequest<'static> {
    SubmitRequest {
        message_id: MessageId(id),
        tenant: TenantId(0),
        priority: Priority::P1,
        role: Role::Session,
        payload: b"x",
    }
}

#[test]
fn a_panic_in_the_tcp_front_ends_admission_cuts_that_shards_clients_only() {
    let server = TcpServer::bind("127.0.0.1:0", ServerConfig::default()).unwrap();
    let engine = Engine::builder()
        .config(config(2))
        .handler(server.front_end(|_: &Message| Ok(())))
        .start()
        .unwrap();
    // Connect until each shard has a client (the server names a connection on its shard).
    let mut clients: Vec<(usize, Client)> = Vec::new();
    let started = Instant::now();
    while !(clients.iter().any(|(shard, _)| *shard == 0)
        && clients.iter().any(|(shard, _)| *shard == 1))
    {
        let client = Client::connect(server.local_addr(), ClientConfig::default()).unwrap();
        clients.push((engine.shard_of(client.connection_id()), client));
        assert!(
            started.elapsed() < DEADLINE,
            "no connection landed on each shard"
        );
    }
    // The next message shard 0 admits panics with it in hand, inside the front end's poll.
    engine.inject_panic(0, FaultPoint::Admission, 0);
    for (index, (_, client)) in clients.iter_mut().enumerate() {
        client.submit(request(index as u64)).unwrap();
    }
    wait_until_lost(&engine, 0);
    for (shard, client) in &mut clients {
        let event = client.next_event(Duration::from_secs(5));
        if *shard == 1 {
            // The other shard's clients are served as before.
            assert!(
                matches!(
                    event,
                    Ok(Some(ClientEvent::Reply(ClientReply {
                        outcome: Outcome::Delivered,
                        ..
                    })))
                ),
                "{event:?}"
            );
        } else {
            // Shard 0's sockets were closed with its front end: no Reply, an error.
            assert!(event.is_err(), "{event:?}");
        }
    }
    let stats = engine.shutdown();
    assert!(stats.reconciles(), "{stats:?}");
    // The message in hand, counted once, as failed.
    assert_eq!(stats.total.failed[FailureReason::ShardLost.index()], 1);
    assert_eq!(stats.shards[0].total.submitted, 1);
}
