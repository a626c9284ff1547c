//! The TCP server against real sockets on 127.0.0.1: the protocol's happy path, and every
//! kind of hostile input of issue #7, each checking that the server names the reason in its
//! counters and still serves a well-behaved connection afterwards.
//!
//! Every test binds port 0, bounds each socket read with a timeout, and shuts its engine
//! down before it ends.

mod net_support;

use std::io::Write;
use std::net::Shutdown;
use std::time::{Duration, Instant};

use net_support::{
    header, hostile, submit_burst, write_in_background, Client, Frame, Running, READ_TIMEOUT,
};
use spillway::config::{Config, EgressConfig, NetConfig};
use spillway::message::{MessageId, Priority, Role, TenantId};
use spillway::net::protocol::{ClientFrame, ErrorCode, FrameLimit, Submit};
use spillway::net::server::ServerConfig;
use spillway::outcome::Outcome;

#[test]
fn a_submit_gets_exactly_one_reply_and_ping_gets_pong() {
    let running = Running::start(ServerConfig::default());
    let mut client = Client::open(running.addr());
    for id in 0..100 {
        client.round_trip(id);
    }
    client.send(ClientFrame::Ping { nonce: 42 });
    assert_eq!(client.next(), Some(Frame::Pong(42)));
    // A clean half-close: the server answers what it read, then closes.
    client.submit(100);
    client.stream.shutdown(Shutdown::Write).unwrap();
    assert_eq!(client.next(), Some(Frame::Reply(100, Outcome::Delivered)));
    assert_eq!(client.next(), None);
    running.wait_for("the peer close", |stats| stats.closed_peer == 1);
    let (net, engine) = running.stop();
    assert_eq!(net.submits, 101);
    assert_eq!(net.replies_sent, 101);
    assert_eq!(engine.total.delivered, 101);
    assert!(engine.reconciles());
}

#[test]
fn each_malformed_frame_gets_its_error_and_the_server_keeps_serving() {
    let running = Running::start(ServerConfig::default());
    let addr = running.addr();
    let mut good = Client::open(addr);

    let cases: Vec<(&str, bool, Vec<u8>, ErrorCode)> = vec![
        (
            "malformed header",
            true,
            header(*b"XX", 1, 0x02, 16),
            ErrorCode::BadMagic,
        ),
        (
            "wrong version",
            true,
            header(*b"SW", 9, 0x02, 16),
            ErrorCode::UnsupportedVersion,
        ),
        (
            "unknown frame type",
            true,
            header(*b"SW", 1, 0x7f, 0),
            ErrorCode::UnknownFrameType,
        ),
        (
            "oversized length",
            true,
            header(*b"SW", 1, 0x02, u32::MAX - 8),
            ErrorCode::FrameTooLarge,
        ),
        (
            "submit before hello",
            false,
            {
                let mut bytes = Vec::new();
                ClientFrame::Ping { nonce: 1 }
                    .encode(FrameLimit::DEFAULT, &mut bytes)
                    .unwrap();
                bytes
            },
            ErrorCode::UnexpectedFrame,
        ),
        (
            "random bytes",
            false,
            (0..4096u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect(),
            ErrorCode::BadMagic,
        ),
    ];
    for (round, (name, hello_first, bytes, expected)) in cases.into_iter().enumerate() {
        assert_eq!(hostile(addr, hello_first, &bytes), Some(expected), "{name}");
        let stats = running.wait_for(name, |stats| stats.closed_with(expected) >= 1);
        assert!(stats.closed_with(expected) >= 1, "{name}: {stats:?}");
        // The well-behaved connection noticed nothing.
        good.round_trip(round as u64);
    }
    let (net, _) = running.stop();
    assert_eq!(net.closed_with(ErrorCode::BadMagic), 2);
}

#[test]
fn a_frame_cut_short_then_closed_is_counted_as_truncated() {
    let running = Running::start(ServerConfig::default());
    let mut good = Client::open(running.addr());
    let mut cut = Client::open(running.addr());
    let mut submit = Vec::new();
    ClientFrame::Submit(Submit {
        message_id: MessageId(1),
        tenant: TenantId(0),
        priority: Priority::P1,
        role: Role::Session,
        payload: &[7; 100],
    })
    .encode(FrameLimit::DEFAULT, &mut submit)
    .unwrap();
    cut.stream.write_all(&submit[..50]).unwrap();
    cut.stream.shutdown(Shutdown::Write).unwrap();
    assert_eq!(cut.error_then_close(), Some(ErrorCode::Truncated));
    running.wait_for("the truncated close", |stats| {
        stats.closed_with(ErrorCode::Truncated) == 1
    });
    good.round_trip(1);
}

#[test]
fn a_partial_frame_held_open_is_cut_by_the_frame_timeout() {
    let running = Running::start(ServerConfig {
        net: NetConfig {
            frame_timeout_ns: 200_000_000,
            hello_timeout_ns: 200_000_000,
            ..NetConfig::default()
        },
        ..ServerConfig::default()
    });
    let mut good = Client::open(running.addr());
    let started = Instant::now();
    let mut partial = Client::open(running.addr());
    partial
        .stream
        .write_all(&header(*b"SW", 1, 0x02, 16)[..5])
        .unwrap();
    // A connection that never says Hello is cut by the hello timeout the same way.
    let mut silent = Client::connect(running.addr());
    assert_eq!(partial.error_then_close(), Some(ErrorCode::Timeout));
    assert_eq!(silent.error_then_close(), Some(ErrorCode::Timeout));
    assert!(started.elapsed() >= Duration::from_millis(200));
    // Keep the good one busy past the timeouts: an idle connection with no partial frame
    // is never cut.
    good.round_trip(1);
    let (net, _) = running.stop();
    assert_eq!(net.closed_with(ErrorCode::Timeout), 2);
}

#[test]
fn connections_beyond_the_limit_are_refused_cleanly() {
    let running = Running::start(ServerConfig {
        net: NetConfig {
            max_connections: 3,
            ..NetConfig::default()
        },
        ..ServerConfig::default()
    });
    let mut open: Vec<Client> = (0..3).map(|_| Client::open(running.addr())).collect();
    for _ in 0..2 {
        let mut extra = Client::connect(running.addr());
        assert_eq!(
            extra.error_then_close(),
            Some(ErrorCode::TooManyConnections)
        );
    }
    let stats = running.wait_for("the refusals", |stats| stats.refused_connection_limit == 2);
    assert_eq!(stats.open, 3);
    for (id, client) in open.iter_mut().enumerate() {
        client.round_trip(id as u64);
    }
    // A slot frees when a connection goes.
    drop(open.pop());
    running.wait_for("the close", |stats| stats.open == 2);
    Client::open(running.addr()).round_trip(9);
}

#[test]
fn a_client_that_never_reads_loses_replies_counted_and_told() {
    let running = Running::start(ServerConfig {
        egress: EgressConfig {
            buffer_capacity: 64,
            ..EgressConfig::default()
        },
        ..ServerConfig::default()
    });
    let mut good = Client::open(running.addr());
    let mut deaf = Client::open(running.addr());
    // Far more replies than the kernel's socket buffers and the send buffer hold together.
    let writer = write_in_background(&deaf, submit_burst(200_000));
    let stats = running.wait_for("dropped replies", |stats| stats.replies_dropped_total() > 0);
    assert!(
        stats.flow_signals > 0,
        "the client was told to slow down: {stats:?}"
    );
    good.round_trip(1);
    // Now read: the RepliesDropped frame tells how many were lost.
    let mut told = 0;
    let deadline = Instant::now() + READ_TIMEOUT;
    while told == 0 && Instant::now() < deadline {
        if let Some(Frame::RepliesDropped(count)) = deaf.next() {
            told += count;
        }
    }
    assert!(told > 0, "the client was told of its dropped replies");
    writer.join().unwrap();
}

#[test]
fn the_client_library_backs_off_on_a_real_refusal_and_gets_through() {
    // One message per 50 ms per connection, no burst: back-to-back sends are refused with
    // a retry_after, which send_with_backpressure honours.
    let mut config = Config {
        shards: 2,
        ..Config::default()
    };
    config.rate.per_connection_per_sec = 20;
    config.rate.burst = 1;
    config.rate.adaptive = false;
    config.rate.adaptive_floor_per_sec = 20;
    let running = Running::start_with(ServerConfig::default(), config);
    let mut client = spillway::client::Client::connect(
        running.addr(),
        spillway::client::ClientConfig::default(),
    )
    .expect("connecting with the client library");
    let backoff = spillway::client::BackoffConfig {
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(200),
        max_retries: 20,
    };
    let started = Instant::now();
    for id in 0..3 {
        let outcome = client
            .send_with_backpressure(
                Submit {
                    message_id: MessageId(id),
                    tenant: TenantId(0),
                    priority: Priority::P1,
                    role: Role::Session,
                    payload: b"paced",
                },
                &backoff,
            )
            .expect("delivered within the retries");
        assert_eq!(outcome, Outcome::Delivered);
    }
    // Three messages at 20/s with no burst take at least two intervals.
    assert!(
        started.elapsed() >= Duration::from_millis(90),
        "{:?}",
        started.elapsed()
    );
    let stats = client.backpressure_stats();
    assert!(stats.waits >= 2, "{stats:?}");
    let (_, engine) = running.stop();
    assert!(engine.total.refused_total() >= 2);
    assert_eq!(engine.total.delivered, 3);
}
