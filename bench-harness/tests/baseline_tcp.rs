//! The tokio TCP twin (`baseline_tcp`) and loadgen's TCP target against each other, on
//! loopback (127.0.0.1, port 0), each test bounded in time:
//!
//! - loadgen's TCP target drives the twin briefly (200 connections, 20K msg/s, 0.5 s): every
//!   message is reconciled on both sides, something is delivered, and the twin's own counts
//!   agree with what the client saw;
//! - the twin answers a malformed header with `Error bad_magic` and closes, Submit before
//!   Hello with `unexpected_frame`, a Ping with a Pong, and a connection over its limit with
//!   `too_many_connections`;
//! - loadgen's connect phase fails with a clear message naming how many connected.
//!
//! No timing assertions.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use spillway::config::Config;
use spillway::message::{MessageId, Priority, Role, TenantId};
use spillway::net::protocol::{
    ClientFrame, Decoder, ErrorCode, FrameLimit, ServerFrame, ServerToClient, Submit,
};
use spillway::outcome::Outcome;
use spillway_bench::baseline_tcp::{TwinServer, TwinSettings};
use spillway_loadgen::generator::{run_with_target, Phase, RunPlan};
use spillway_loadgen::report::{RunInfo, RunReport};
use spillway_loadgen::target::TargetStats;
use spillway_loadgen::tcp::{target_name, TcpSettings, TcpSystem};

/// Longest any socket read in these tests waits.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

fn settings() -> TwinSettings {
    let mut config = Config::default();
    config.shards = 1;
    let mut settings = TwinSettings::matching(&config, 2, 0);
    // Short enough that a test never waits long on a close.
    settings.close_timeout = Duration::from_secs(2);
    settings
}

fn start(settings: TwinSettings) -> TwinServer {
    TwinServer::start(settings, "127.0.0.1:0".parse().unwrap()).expect("starting the twin")
}

fn connect(address: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(address).expect("connecting");
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

fn send(stream: &mut TcpStream, frame: ClientFrame<'_>) {
    let mut bytes = Vec::new();
    frame.encode(FrameLimit::DEFAULT, &mut bytes).unwrap();
    stream.write_all(&bytes).unwrap();
}

/// A server frame, owned.
#[derive(Debug, PartialEq)]
enum Frame {
    Welcome {
        send_buffer_replies: u32,
    },
    Reply {
        message: MessageId,
        outcome: Outcome,
    },
    Pong {
        nonce: u64,
    },
    Error {
        code: ErrorCode,
        detail: String,
    },
    Other(String),
}

/// Reads until the server closes (or the read timeout) and decodes every frame.
fn read_until_closed(stream: &mut TcpStream) -> (Vec<Frame>, Result<(), String>) {
    let mut bytes = Vec::new();
    let ended = stream
        .read_to_end(&mut bytes)
        .map(|_| ())
        .map_err(|error| error.to_string());
    let mut decoder = Decoder::<ServerToClient>::new(FrameLimit::DEFAULT);
    decoder.feed(&bytes);
    let mut frames = Vec::new();
    while let Some(frame) = decoder.next_frame().expect("the twin's frames decode") {
        frames.push(match frame {
            ServerFrame::Welcome {
                send_buffer_replies,
                ..
            } => Frame::Welcome {
                send_buffer_replies: send_buffer_replies.get(),
            },
            ServerFrame::Reply {
                message_id,
                outcome,
                ..
            } => Frame::Reply {
                message: message_id,
                outcome,
            },
            ServerFrame::Pong { nonce } => Frame::Pong { nonce },
            ServerFrame::Error { code, detail } => Frame::Error {
                code,
                detail: detail.to_string(),
            },
            other => Frame::Other(format!("{other:?}")),
        });
    }
    assert_eq!(
        decoder.finish(),
        Ok(()),
        "the stream ends at a frame boundary"
    );
    (frames, ended)
}

#[test]
fn loadgen_over_tcp_against_the_twin_reconciles_on_both_sides() {
    let twin = start(settings());
    let address = twin.local_address();
    let system = TcpSystem::connect(TcpSettings::new(address, 200)).expect("connecting");
    let plan = RunPlan {
        phases: vec![
            Phase {
                connections: 200,
                rate: 20_000,
                duration_ns: 100_000_000,
                recorded: false,
            },
            Phase {
                connections: 200,
                rate: 20_000,
                duration_ns: 500_000_000,
                recorded: true,
            },
        ],
        closed_loop: false,
        window: 1,
        service_ns: 0,
        control_probe_ms: 10,
        probe_over_http: false,
        priority_weights: None,
        consumer_poll_ns: 0,
        progress: false,
        drain_timeout: Duration::from_secs(10),
        payload: Default::default(),
        tenant: TenantId(0),
    };
    let result = run_with_target(system, &plan).expect("the run");
    let twin_stats = twin.shutdown();

    assert!(
        result.reconcile_errors.is_empty(),
        "{:?}",
        result.reconcile_errors
    );
    assert_eq!(result.lost, 0);
    assert!(result.measured.delivered > 0);
    assert_eq!(result.submitted_all + result.unsent, 12_000);
    let tcp = result.engine.tcp().expect("tcp figures");
    assert_eq!(tcp.connections, 200);
    assert_eq!(tcp.submitted, result.submitted_all);
    assert_eq!(tcp.replies.submitted, result.all.submitted);
    assert_eq!(tcp.without_reply.total(), 0, "{tcp:?}");
    assert_eq!(tcp.closed.at_end, 200);
    assert_eq!(tcp.send_buffer_replies, 1_000);
    assert!(result.control.is_none());

    // The twin's own counts agree with what the client read.
    assert!(twin_stats.self_check().is_empty(), "{twin_stats:?}");
    assert_eq!(twin_stats.accepted, 200);
    assert_eq!(twin_stats.half_closed_by_client, 200);
    assert_eq!(twin_stats.counts.received, result.submitted_all);
    assert_eq!(twin_stats.tally(), result.all);
    assert_eq!(twin_stats.open, 0);

    let info = RunInfo {
        scenario: "test".into(),
        target: target_name(tcp.address.expect("one server")),
        profile: "the server's".into(),
        capacity: None,
        overload: None,
    };
    let report = RunReport::new(&info, &result);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["target"], format!("tcp://{address}"));
    assert_eq!(json["connections"], 200);
    assert_eq!(json["reconciled"], true);
    assert!(json["shards"].is_null());
    assert_eq!(json["tcp"]["connections"], 200);
    assert_eq!(json["tcp"]["without_reply"], 0);
    assert_eq!(json["tcp"]["flow_signals"]["throttle"], 0);
    assert_eq!(json["tcp"]["closed"]["errors_by_code"]["bad_magic"], 0);
    let table = report.to_table();
    assert!(table.contains("tcp: 200 connections"), "{table}");
    assert!(table.contains("counts reconcile"), "{table}");
}

#[test]
fn a_malformed_header_gets_bad_magic_then_the_connection_closes() {
    let twin = start(settings());
    let mut stream = connect(twin.local_address());
    stream.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let (frames, ended) = read_until_closed(&mut stream);
    assert_eq!(ended, Ok(()));
    match frames.as_slice() {
        [Frame::Error { code, detail }] => {
            assert_eq!(*code, ErrorCode::BadMagic);
            assert!(detail.contains("bad magic"), "{detail}");
        }
        other => panic!("expected one Error frame, got {other:?}"),
    }
    let stats = twin.shutdown();
    assert_eq!(stats.errors_sent.get(ErrorCode::BadMagic), 1, "{stats:?}");
}

#[test]
fn a_submit_before_hello_gets_unexpected_frame() {
    let twin = start(settings());
    let mut stream = connect(twin.local_address());
    send(
        &mut stream,
        ClientFrame::Submit(Submit {
            message_id: MessageId(1),
            tenant: TenantId(0),
            priority: Priority::P1,
            role: Role::Session,
            payload: b"",
        }),
    );
    let (frames, _) = read_until_closed(&mut stream);
    assert!(
        matches!(
            frames.as_slice(),
            [Frame::Error {
                code: ErrorCode::UnexpectedFrame,
                ..
            }]
        ),
        "{frames:?}"
    );
    let stats = twin.shutdown();
    assert_eq!(stats.counts.received, 0);
}

#[test]
fn hello_ping_and_submit_are_answered_and_a_half_close_ends_the_connection() {
    let twin = start(settings());
    let mut stream = connect(twin.local_address());
    send(&mut stream, ClientFrame::Hello);
    send(&mut stream, ClientFrame::Ping { nonce: 0xfeed });
    send(
        &mut stream,
        ClientFrame::Submit(Submit {
            message_id: MessageId(42),
            tenant: TenantId(3),
            priority: Priority::P1,
            role: Role::Session,
            payload: b"hello",
        }),
    );
    // Nothing more to submit: the Replies of what was read follow, then the close.
    stream.shutdown(Shutdown::Write).unwrap();
    let (frames, ended) = read_until_closed(&mut stream);
    assert_eq!(ended, Ok(()));
    assert_eq!(
        frames,
        vec![
            Frame::Welcome {
                send_buffer_replies: 1_000
            },
            Frame::Pong { nonce: 0xfeed },
            Frame::Reply {
                message: MessageId(42),
                outcome: Outcome::Delivered
            },
        ]
    );
    let stats = twin.shutdown();
    assert_eq!(stats.pongs, 1);
    assert_eq!(stats.counts.delivered, 1);
    assert_eq!(stats.half_closed_by_client, 1);
    assert!(stats.self_check().is_empty(), "{stats:?}");
}

#[test]
fn over_the_connection_limit_a_client_gets_too_many_connections() {
    let mut settings = settings();
    settings.max_connections = 1;
    let twin = start(settings);
    let address = twin.local_address();
    let mut first = connect(address);
    send(&mut first, ClientFrame::Hello);
    // The first is served (its Welcome is read below), so the second is over the limit.
    let mut welcome = [0u8; 24];
    first.read_exact(&mut welcome).unwrap();
    let mut second = connect(address);
    let (frames, _) = read_until_closed(&mut second);
    assert!(
        matches!(
            frames.as_slice(),
            [Frame::Error {
                code: ErrorCode::TooManyConnections,
                ..
            }]
        ),
        "{frames:?}"
    );
    // loadgen's connect phase stops with the server's refusal and how far it got.
    let error = TcpSystem::connect(TcpSettings::new(address, 3))
        .err()
        .expect("refused")
        .to_string();
    assert!(error.contains("too_many_connections"), "{error}");
    assert!(error.contains("0 of 3 connections"), "{error}");
    drop(first);
    let stats = twin.shutdown();
    assert!(stats.refused_connections >= 2, "{stats:?}");
}

#[test]
fn connecting_to_a_closed_port_fails_naming_how_many_connected() {
    // A port that was free a moment ago and has no listener now.
    let address = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let error = TcpSystem::connect(TcpSettings::new(address, 5))
        .err()
        .expect("refused")
        .to_string();
    assert!(error.contains("connecting failed"), "{error}");
    assert!(error.contains("0 of 5 connections"), "{error}");
}
