//! The TCP server against real sockets on 127.0.0.1: the protocol's happy path, every kind
//! of hostile input of issue #7, and each **Server contract** of `docs/PROTOCOL.md` (the
//! page names, next to each, the test here that checks it; the timers are checked in
//! `net_timers.rs`). Each hostile case checks that the server names the reason in its
//! counters and still serves a well-behaved connection afterwards.
//!
//! Every test binds port 0, bounds each socket read with a timeout, and shuts its engine
//! down before it ends.

mod net_support;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use net_support::{
    encode, header, hostile, one_shard, read_until_accounted, submit, submit_burst,
    write_in_background, Client, Frame, Running,
};
use spillway::config::{CapAction, Config, EgressConfig, EgressDropPolicy, NetConfig};
use spillway::handler::HandlerError;
use spillway::message::{Message, MessageId, Priority, Role, TenantId};
use spillway::net::egress::EgressDropReason;
use spillway::net::protocol::{
    ClientFrame, ErrorCode, FrameLimit, ProtocolVersion, Submit, HEADER_BYTES,
};
use spillway::net::server::{ServerConfig, CONNECTION_ID_BASE};
use spillway::outcome::{DropReason, Outcome, RefusalReason};

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
            encode(submit(1, b"")),
            ErrorCode::UnexpectedFrame,
        ),
        (
            "body length wrong for the type",
            true,
            header(*b"SW", 1, 0x04, 9),
            ErrorCode::BadLength,
        ),
        (
            "bad field value",
            true,
            {
                let mut bytes = encode(submit(1, b""));
                bytes[HEADER_BYTES + 12] = 9; // priority
                bytes
            },
            ErrorCode::BadField,
        ),
        (
            "second hello",
            true,
            encode(ClientFrame::Hello),
            ErrorCode::UnexpectedFrame,
        ),
        (
            "a server frame",
            true,
            header(*b"SW", 1, 0x82, 20),
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
    cut.stream
        .write_all(&encode(submit(1, &[7; 100]))[..50])
        .unwrap();
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
        assert_eq!(outcome.outcome, Outcome::Delivered);
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

/// A handler that takes 30 ms over a message whose payload is `slow`, so that the messages
/// after it stay queued a while.
fn slow_on_request(message: &Message) -> Result<(), HandlerError> {
    if &message.payload[..] == b"slow" {
        std::thread::sleep(Duration::from_millis(30));
    }
    Ok(())
}

#[test]
fn a_cancel_takes_back_the_first_queued_message_with_its_id_and_is_otherwise_ignored() {
    // PROTOCOL.md 5.3.
    let running = Running::start_handler(ServerConfig::default(), one_shard(), slow_on_request);
    let mut client = Client::open(running.addr());
    let mut write = encode(submit(1, b"slow"));
    for id in [2, 7, 7] {
        write.extend(encode(submit(id, b"hello")));
    }
    for message_id in [7, 99] {
        write.extend(encode(ClientFrame::Cancel {
            message_id: MessageId(message_id),
        }));
    }
    client.stream.write_all(&write).unwrap();
    let mut replies = Vec::new();
    for _ in 0..4 {
        match client.next_ignoring_flow() {
            Some(Frame::Reply(id, outcome)) => replies.push((id, outcome)),
            other => panic!("expected a Reply, got {other:?}"),
        }
    }
    replies.sort_by_key(|&(id, outcome)| (id, outcome == Outcome::Delivered));
    assert_eq!(
        replies,
        [
            (1, Outcome::Delivered),
            (2, Outcome::Delivered),
            (7, Outcome::Cancelled),
            (7, Outcome::Delivered),
        ],
        "one of the two 7s cancelled; no Reply for a Cancel, none for the unknown id 99"
    );
    // A Cancel of a message that has finished is ignored too; the connection goes on.
    client.send(ClientFrame::Cancel {
        message_id: MessageId(1),
    });
    client.round_trip(8);
    let (_, engine) = running.stop();
    assert_eq!(engine.total.cancelled, 1);
    assert!(engine.reconciles());
}

#[test]
fn a_hello_in_a_version_the_server_does_not_speak_is_refused_in_that_version() {
    // PROTOCOL.md 3: the Error's header carries the client's version.
    let running = Running::start(ServerConfig::default());
    let mut client = Client::connect(running.addr());
    client
        .stream
        .write_all(&header(*b"SW", 7, 0x01, 0))
        .unwrap();
    let mut reply = Vec::new();
    client.stream.read_to_end(&mut reply).unwrap();
    assert!(reply.len() > HEADER_BYTES + 2, "{reply:?}");
    assert_eq!(&reply[..4], &[b'S', b'W', 7, 0x88], "an Error in version 7");
    let body_bytes = u32::from_le_bytes(reply[4..8].try_into().unwrap()) as usize;
    assert_eq!(reply.len(), HEADER_BYTES + body_bytes, "nothing after it");
    assert_eq!(
        u16::from_le_bytes([reply[8], reply[9]]),
        ErrorCode::UnsupportedVersion.code()
    );
    let detail = std::str::from_utf8(&reply[10..]).unwrap();
    assert!(
        detail.contains("version 1"),
        "names the version it speaks: {detail}"
    );
    running.wait_for("the closure", |stats| {
        stats.closed_with(ErrorCode::UnsupportedVersion) == 1
    });
}

#[test]
fn the_welcome_announces_the_servers_limits_and_the_server_holds_to_them() {
    // PROTOCOL.md 5.5 and 7.2.
    let running = Running::start(ServerConfig {
        net: NetConfig {
            max_frame_bytes: 1024,
            ..NetConfig::default()
        },
        egress: EgressConfig {
            buffer_capacity: 64,
            ..EgressConfig::default()
        },
    });
    let mut connections = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..2 {
        let mut client = Client::connect(running.addr());
        client.send(ClientFrame::Hello);
        match client.next() {
            Some(Frame::Welcome {
                connection,
                max_frame_bytes,
                send_buffer_replies,
            }) => {
                assert_eq!((max_frame_bytes, send_buffer_replies), (1024, 64));
                assert!(connection >= CONNECTION_ID_BASE, "{connection}");
                connections.push(connection);
            }
            other => panic!("expected a Welcome, got {other:?}"),
        }
        clients.push(client);
    }
    assert_ne!(connections[0], connections[1]);
    let mut client = clients.pop().unwrap();
    // The largest payload, max_frame_bytes - 24, is served; one byte more is refused.
    client.send(submit(1, &[0; 1000]));
    assert_eq!(
        client.next_ignoring_flow(),
        Some(Frame::Reply(1, Outcome::Delivered))
    );
    let mut too_large = Vec::new();
    submit(2, &[0; 1001])
        .encode_in(ProtocolVersion::V1, FrameLimit::MAX, &mut too_large)
        .unwrap();
    client.stream.write_all(&too_large).unwrap();
    assert_eq!(client.error_then_close(), Some(ErrorCode::FrameTooLarge));
}

#[test]
fn a_violation_is_answered_after_the_frames_already_due_then_the_connection_closes() {
    // PROTOCOL.md 7.3: queued frames first, then the Error, then nothing but the close;
    // the closure counted under its code; the engine's counts still reconcile.
    let running = Running::start(ServerConfig::default());
    let mut client = Client::open(running.addr());
    let mut write = encode(ClientFrame::Ping { nonce: 5 });
    write.extend(b"GET / HTTP/1.1\r\n\r\n");
    client.stream.write_all(&write).unwrap();
    assert_eq!(client.next(), Some(Frame::Pong(5)));
    assert_eq!(client.next(), Some(Frame::Error(ErrorCode::BadMagic)));
    client.expect_close_after_error();
    let (net, engine) = running.stop();
    assert_eq!(net.closed_with(ErrorCode::BadMagic), 1);
    assert_eq!(net.open, 0);
    assert!(engine.reconciles());
}

#[test]
fn a_ping_that_comes_while_a_pong_is_unsent_replaces_its_nonce() {
    // PROTOCOL.md 8: at most one Pong pending; two Pings in one read get one Pong.
    let running = Running::start(ServerConfig::default());
    let mut client = Client::open(running.addr());
    let mut write = encode(ClientFrame::Ping { nonce: 1 });
    write.extend(encode(ClientFrame::Ping { nonce: 2 }));
    client.stream.write_all(&write).unwrap();
    assert_eq!(client.next(), Some(Frame::Pong(2)));
    client.round_trip(3);
}

#[test]
fn on_shutdown_every_submit_read_gets_its_reply_then_shutting_down() {
    // PROTOCOL.md 7.3, other closures: on shutdown.
    let running = Running::start_handler(ServerConfig::default(), one_shard(), slow_on_request);
    let mut client = Client::open(running.addr());
    let mut write = Vec::new();
    for id in 0..10 {
        write.extend(encode(submit(id, b"slow")));
    }
    client.stream.write_all(&write).unwrap();
    running.wait_for("every Submit read", |stats| stats.submits == 10);
    let (net, engine) = running.stop();
    let mut replied = Vec::new();
    loop {
        match client.next_ignoring_flow() {
            Some(Frame::Reply(id, outcome)) => {
                assert!(
                    matches!(
                        outcome,
                        Outcome::Delivered
                            | Outcome::Cancelled
                            | Outcome::Refused {
                                reason: RefusalReason::ShuttingDown,
                                ..
                            }
                    ),
                    "{outcome:?}"
                );
                replied.push(id);
            }
            Some(Frame::Error(code)) => {
                assert_eq!(code, ErrorCode::ShuttingDown);
                break;
            }
            other => panic!("expected Replies then the Error, got {other:?}"),
        }
    }
    client.expect_close_after_error();
    replied.sort_unstable();
    assert_eq!(replied, (0..10).collect::<Vec<_>>());
    assert_eq!(net.closed_with(ErrorCode::ShuttingDown), 1);
    assert!(engine.reconciles());
}

#[test]
fn a_reader_too_slow_for_its_send_buffer_is_disconnected_when_so_configured() {
    // PROTOCOL.md 7.3, other closures: by policy.
    let running = Running::start(ServerConfig {
        egress: EgressConfig {
            buffer_capacity: 16,
            disconnect_unhealthy: true,
            ..EgressConfig::default()
        },
        ..ServerConfig::default()
    });
    let mut good = Client::open(running.addr());
    let mut deaf = Client::open(running.addr());
    let writer = write_in_background(&deaf, submit_burst(200_000));
    running.wait_for("the disconnect", |stats| {
        stats.closed_with(ErrorCode::Disconnected) == 1
    });
    // What was queued for it comes first, then the Error, then the close.
    let mut replies = 0;
    loop {
        match deaf.next() {
            Some(Frame::Reply(..)) => replies += 1,
            Some(Frame::Error(code)) => {
                assert_eq!(code, ErrorCode::Disconnected);
                break;
            }
            Some(_) => {}
            None => panic!("closed without the Error"),
        }
    }
    assert!(replies > 0);
    deaf.expect_close_after_error();
    writer.join().unwrap();
    good.round_trip(1);
}

#[test]
fn egress_settings_changed_at_run_time_reach_connections_already_open() {
    // `TcpServer::set_egress` (a reload's egress section): a connection open before the
    // change is disconnected for its drops once `disconnect_unhealthy` is turned on, and a
    // change of the buffer's size, which clients were told, is refused.
    let running = Running::start(ServerConfig {
        egress: EgressConfig {
            buffer_capacity: 16,
            disconnect_unhealthy: false,
            ..EgressConfig::default()
        },
        ..ServerConfig::default()
    });
    let deaf = Client::open(running.addr());
    let writer = write_in_background(&deaf, submit_burst(200_000));
    running.wait_for("dropped replies", |stats| stats.replies_dropped_total() > 0);
    assert_eq!(
        running.server.stats().closed_with(ErrorCode::Disconnected),
        0
    );
    let mut egress = running.server.egress();
    egress.buffer_capacity = 32;
    let refused = running.server.set_egress(egress).unwrap_err();
    assert_eq!(refused.field, "egress.buffer_capacity");
    egress.buffer_capacity = 16;
    egress.disconnect_unhealthy = true;
    running.server.set_egress(egress).unwrap();
    running.wait_for("the disconnect", |stats| {
        stats.closed_with(ErrorCode::Disconnected) == 1
    });
    // (What the disconnected client reads is the test above's: with the writer still
    // sending, the close may reach it as a reset before the Error frame is read.)
    writer.join().unwrap();
    drop(deaf);
    let (_, engine) = running.stop();
    assert!(engine.reconciles());
}

#[test]
fn a_client_that_reads_late_is_told_to_pause_throttle_and_resume_and_of_every_dropped_reply() {
    // PROTOCOL.md 8 and 9: with the default send buffer (1000 replies) and small writes, a
    // client that reads nothing fills it; when it reads, it sees Pause (50 ms at most),
    // Throttle delays falling through the 70-90% band as the buffer drains, then Resume;
    // every Submit has a Reply or is counted in a RepliesDropped; and a Pong overtakes the
    // Replies in the send buffer.
    let running = Running::start(ServerConfig {
        net: NetConfig {
            write_buffer_bytes_max: 1024,
            ..NetConfig::default()
        },
        ..ServerConfig::default()
    });
    let mut good = Client::open(running.addr());
    let mut deaf = Client::open(running.addr());
    let count = 200_000;
    let writer = write_in_background(&deaf, submit_burst(count));
    running.wait_for("dropped replies", |stats| stats.replies_dropped_total() > 0);
    writer.join().unwrap();
    // The other connection notices nothing.
    good.round_trip(1);
    deaf.send(ClientFrame::Ping { nonce: 7 });
    let tally = read_until_accounted(&mut deaf, count);
    // The connection's last instruction comes after the last Reply it follows.
    deaf.send(ClientFrame::Ping { nonce: 8 });
    let mut frames = tally.frames;
    loop {
        match deaf.next() {
            Some(Frame::Pong(8)) => break,
            Some(frame) => frames.push(frame),
            None => panic!("closed"),
        }
    }
    let pong = frames
        .iter()
        .position(|frame| *frame == Frame::Pong(7))
        .expect("the Pong");
    assert!(
        frames[pong..]
            .iter()
            .any(|frame| matches!(frame, Frame::Reply(..))),
        "the Pong overtook queued Replies: {frames:?}"
    );
    let signals: Vec<Frame> = frames
        .iter()
        .copied()
        .filter(Frame::is_flow_signal)
        .collect();
    let last_pause = signals
        .iter()
        .rposition(|signal| matches!(signal, Frame::Pause(_)))
        .expect("a Pause");
    for signal in &signals {
        match *signal {
            Frame::Pause(duration_ns) => assert!(duration_ns > 0 && duration_ns <= 50_000_000),
            Frame::Throttle(delay_ns) => assert!(delay_ns < 500_000_000, "{delay_ns}"),
            _ => {}
        }
    }
    let draining: Vec<u64> = signals[last_pause..]
        .iter()
        .filter_map(|signal| match signal {
            Frame::Throttle(delay_ns) => Some(*delay_ns),
            _ => None,
        })
        .collect();
    // The server goes on reading Submits meanwhile, so the fill may rise a little on the
    // way down; from the top of the band to its bottom the delay falls.
    assert!(
        draining.len() >= 2 && draining[0] > draining[draining.len() - 1],
        "the delay falls as the buffer drains: {draining:?}"
    );
    assert_eq!(signals.last(), Some(&Frame::Resume), "{signals:?}");
    let (net, _) = running.stop();
    assert_eq!(net.replies_dropped_total(), tally.dropped_reported);
    assert_eq!(
        net.replies_dropped[EgressDropReason::DropOldest.index()],
        tally.dropped_reported
    );
}

#[test]
fn every_drop_policy_accounts_for_every_submit() {
    // PROTOCOL.md 9: drop_newest and drop_all, as drop_oldest above and block in
    // net_timers.rs: a Reply or a RepliesDropped count for each Submit.
    for (policy, reason) in [
        (EgressDropPolicy::DropNewest, EgressDropReason::DropNewest),
        (EgressDropPolicy::DropAll, EgressDropReason::DropAll),
    ] {
        let running = Running::start(ServerConfig {
            egress: EgressConfig {
                buffer_capacity: 64,
                drop_policy: policy,
                ..EgressConfig::default()
            },
            ..ServerConfig::default()
        });
        let mut deaf = Client::open(running.addr());
        let count = 100_000;
        let writer = write_in_background(&deaf, submit_burst(count));
        running.wait_for("dropped replies", |stats| stats.replies_dropped_total() > 0);
        writer.join().unwrap();
        let tally = read_until_accounted(&mut deaf, count);
        let (net, _) = running.stop();
        assert!(tally.dropped_reported > 0, "{policy:?}");
        assert_eq!(
            net.replies_dropped[reason.index()],
            tally.dropped_reported,
            "{policy:?}"
        );
    }
}

#[test]
fn the_disconnect_action_at_a_cap_drops_what_is_queued_and_refuses_what_follows() {
    // PROTOCOL.md 7.3, by policy, and 6.5 / 6.7: the engine's `disconnect` action ends the
    // connection's work; the socket stays open (Pings are answered) until the client goes.
    let mut config = one_shard();
    config.caps.action = CapAction::Disconnect;
    config.caps.connection_messages = 2;
    let running = Running::start_handler(ServerConfig::default(), config, slow_on_request);
    let mut client = Client::open(running.addr());
    let mut write = Vec::new();
    for (id, payload) in [(1, &b"slow"[..]), (2, b""), (3, b""), (4, b"")] {
        write.extend(encode(submit(id, payload)));
    }
    write.extend(encode(ClientFrame::Ping { nonce: 9 }));
    client.stream.write_all(&write).unwrap();
    let mut frames = Vec::new();
    while frames.len() < 5 {
        frames.push(client.next_ignoring_flow().expect("open"));
    }
    frames.sort_by_key(|frame| match frame {
        Frame::Reply(id, _) => *id,
        _ => u64::MAX,
    });
    assert_eq!(
        frames,
        [
            Frame::Reply(
                1,
                Outcome::Dropped {
                    reason: DropReason::Disconnected
                }
            ),
            Frame::Reply(
                2,
                Outcome::Dropped {
                    reason: DropReason::Disconnected
                }
            ),
            Frame::Reply(
                3,
                Outcome::Refused {
                    reason: RefusalReason::ConnectionQueueFull,
                    retry_after_ns: 0
                }
            ),
            Frame::Reply(
                4,
                Outcome::Refused {
                    reason: RefusalReason::Disconnected,
                    retry_after_ns: 0
                }
            ),
            Frame::Pong(9),
        ]
    );
    let (net, engine) = running.stop();
    assert_eq!(net.closed_with(ErrorCode::Disconnected), 0);
    assert!(engine.reconciles());
}

#[test]
fn every_test_the_protocol_page_names_beside_a_contract_exists() {
    // The page names, in brackets, the test that checks each Server contract: each must be
    // a test function here, in net_timers.rs, or among the send buffer's unit tests.
    let page = include_str!("../../docs/PROTOCOL.md");
    let sources = [
        include_str!("net.rs"),
        include_str!("net_timers.rs"),
        include_str!("../../engine/src/net/egress/tests.rs"),
    ];
    let mut named = Vec::new();
    for bracketed in page
        .split('[')
        .skip(1)
        .filter_map(|rest| rest.split_once(']'))
    {
        for name in bracketed.0.split('`').skip(1).step_by(2) {
            let is_test_name = name.matches('_').count() >= 4
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if is_test_name {
                named.push(name);
            }
        }
    }
    assert!(named.len() >= 20, "{named:?}");
    for name in named {
        let definition = format!("fn {name}()");
        assert!(
            sources.iter().any(|source| source.contains(&definition)),
            "PROTOCOL.md names {name}, which is no test"
        );
    }
}
