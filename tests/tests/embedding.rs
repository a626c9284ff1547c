//! The library API as an embedding program meets it (issue 13): the two classes of handler
//! failure and which one the breaker counts, the handler's error text and response in the
//! completion, whose message a completion is (tenant and priority as admitted), and the
//! handlers handed back at shutdown.

use spillway::admission::breaker::BreakerState;
use spillway::config::{Config, TenantConfig};
use spillway::engine::{Engine, Error};
use spillway::handler::{Handler, HandlerError, ShardContext};
use spillway::message::{Bytes, ConnectionId, Message, MessageId, Priority, TenantId};
use spillway::outcome::{ErrorDetail, FailureReason, Outcome};
use spillway::simulation::Simulation;
use spillway_tests::submit_all;

const MS: u64 = 1_000_000;

/// A handler that refuses every 50th message as malformed (2%), or fails it as a service
/// error when `service_fails`.
fn every_fiftieth(service_fails: bool) -> impl FnMut(&Message) -> Result<(), HandlerError> {
    move |message: &Message| {
        if message.id.0 % 50 != 0 {
            Ok(())
        } else if service_fails {
            Err(HandlerError::failed("backend down"))
        } else {
            Err(HandlerError::invalid("malformed payload"))
        }
    }
}

/// 2,000 messages through a shard whose breaker opens at a 1% error rate: returns the
/// breaker's state at the end and the failures by reason.
fn two_percent_failing(service_fails: bool) -> (BreakerState, [u64; FailureReason::COUNT]) {
    let mut config = Config::default();
    config.levels.rate_limit = false;
    config.breaker.window_requests = 1000;
    config.breaker.min_samples = 100;
    let mut simulation = Simulation::new(config, every_fiftieth(service_fails)).unwrap();
    let mut now_ns = 0;
    for batch in 0..20u64 {
        for id in batch * 100..(batch + 1) * 100 {
            let message = Message::new(ConnectionId(id % 10), MessageId(id));
            let _ = simulation.submit(now_ns, message);
        }
        simulation.run(now_ns, now_ns + MS, 100);
        now_ns += MS;
    }
    let stats = simulation.stats();
    (stats.breaker, stats.total.failed)
}

#[test]
fn a_clients_bad_input_does_not_open_the_breaker_but_a_failing_service_does() {
    let (breaker, failed) = two_percent_failing(false);
    assert_eq!(breaker, BreakerState::Closed, "2% invalid requests");
    assert_eq!(failed[FailureReason::InvalidRequest.index()], 40);
    assert_eq!(failed[FailureReason::HandlerError.index()], 0);

    let (breaker, failed) = two_percent_failing(true);
    assert_eq!(breaker, BreakerState::Open, "2% service failures");
    assert!(failed[FailureReason::HandlerError.index()] > 0);
    assert_eq!(failed[FailureReason::InvalidRequest.index()], 0);
}

#[test]
fn the_handlers_error_text_and_response_reach_the_submitter() {
    let handler = |message: &Message| match &message.payload[..] {
        b"" => Err(HandlerError::invalid("empty request")),
        b"fail" => Err(HandlerError::failed("x".repeat(1_000))),
        b"quiet" => Err(HandlerError::failed("")),
        payload => Ok(payload.to_ascii_uppercase()),
    };
    let mut simulation = Simulation::new(Config::default(), handler).unwrap();
    let payloads: [&'static [u8]; 4] = [b"", b"fail", b"quiet", b"hello"];
    for (id, payload) in payloads.into_iter().enumerate() {
        let message = Message::new(ConnectionId(1), MessageId(id as u64)).with_payload(payload);
        simulation.submit(0, message).unwrap();
    }
    simulation.run(0, MS, 10);
    let completions = simulation.take_completions();
    assert_eq!(completions.len(), 4);

    let invalid = &completions[0];
    assert_eq!(
        invalid.outcome,
        Outcome::Failed {
            reason: FailureReason::InvalidRequest
        }
    );
    assert_eq!(invalid.detail.as_ref().unwrap().as_str(), "empty request");

    let long = &completions[1];
    assert_eq!(
        long.outcome,
        Outcome::Failed {
            reason: FailureReason::HandlerError
        }
    );
    let detail = long.detail.as_ref().unwrap().as_str();
    assert_eq!(detail.len(), ErrorDetail::MAX_BYTES, "bounded");

    // No text, no detail (and no allocation for one).
    assert_eq!(completions[2].detail, None);

    let delivered = &completions[3];
    assert_eq!(delivered.outcome, Outcome::Delivered);
    assert_eq!(&delivered.response[..], b"HELLO");
    assert!(completions[..3].iter().all(|done| done.response.is_empty()));
}

#[test]
fn a_completion_says_whose_message_it_was_as_admitted() {
    let mut config = Config::default();
    config.shards = 2;
    // Tenant 7 may claim at most P2; tenant 8 has no settings.
    config.tenants = vec![TenantConfig {
        tenant: TenantId(7),
        max_pending: None,
        priority_ceiling: Priority::P2,
    }];
    let engine = Engine::builder()
        .config(config)
        .handler(|_: &Message| Ok::<(), HandlerError>(()))
        .start()
        .unwrap();
    let mut ingress = engine.ingress().unwrap();
    let messages = (0..100u64)
        .map(|id| {
            let tenant = if id % 2 == 0 { 7 } else { 8 };
            Message::new(ConnectionId(id), MessageId(id))
                .with_tenant(TenantId(tenant))
                .with_priority(Priority::P0)
        })
        .collect();
    let completions = submit_all(&mut ingress, messages);
    assert_eq!(completions.len(), 100);
    for done in &completions {
        let expected = if done.message.0 % 2 == 0 {
            (TenantId(7), Priority::P2)
        } else {
            (TenantId(8), Priority::P0)
        };
        assert_eq!((done.tenant, done.priority), expected, "{done:?}");
    }
    drop(ingress);
    assert!(engine.shutdown().reconciles());
}

/// A handler that remembers what it served.
#[derive(Clone, Default)]
struct Ledger {
    served: Vec<u64>,
}

impl Handler for Ledger {
    fn handle(
        &mut self,
        message: &Message,
        _: &mut ShardContext<'_>,
    ) -> Result<Bytes, HandlerError> {
        self.served.push(message.id.0);
        Ok(Bytes::new())
    }
}

#[test]
fn shutdown_hands_back_each_shards_handler() {
    let mut config = Config::default();
    config.shards = 2;
    let engine = Engine::builder()
        .config(config.clone())
        .handler(Ledger::default())
        .start()
        .unwrap();
    let mut ingress = engine.ingress().unwrap();
    let messages = (0..200)
        .map(|id| Message::new(ConnectionId(id), MessageId(id)))
        .collect();
    submit_all(&mut ingress, messages);
    drop(ingress);
    let (stats, handlers) = engine.shutdown_with_handlers::<Ledger>().unwrap();
    assert_eq!(handlers.len(), 2);
    let mut served: Vec<u64> = handlers
        .into_iter()
        .flatten()
        .flat_map(|ledger| ledger.served)
        .collect();
    served.sort_unstable();
    assert_eq!(served, (0..200).collect::<Vec<_>>());
    assert_eq!(stats.total.delivered, 200);

    // Asked for another type, it says so (and still shut down).
    let engine = Engine::builder()
        .config(config)
        .handler(Ledger::default())
        .start()
        .unwrap();
    let asked = engine.shutdown_with_handlers::<fn(&Message) -> Result<(), HandlerError>>();
    assert!(matches!(asked, Err(Error::HandlerType { .. })));
}
