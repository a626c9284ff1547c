//! `spillway::client` against a fake server: a thread on a loopback listener that speaks
//! the protocol with the codec of `spillway::net::protocol` and plays a script (the real
//! `spillway serve` is tested on its own). Each test checks what the client does and, on
//! the server's side, what it sent and when. Every socket has a 2 s timeout and every wait
//! is a few ms, so a broken client fails fast instead of hanging.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::num::{NonZeroU32, NonZeroU64};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use spillway::client::{
    BackoffConfig, Client, ClientConfig, ClientError, ClientEvent, ClientReply, LoadAdaptation,
    LoadConfig, LoadSource, Pace, SubmitRequest,
};
use spillway::message::{ConnectionId, MessageId, Priority, Role, TenantId};
use spillway::net::egress::FlowSignal;
use spillway::net::protocol::{
    ClientFrame, ClientToServer, Decoder, ErrorCode, FrameLimit, ServerFrame,
};
use spillway::outcome::{Outcome, RefusalReason, ShedReason};

/// The bound on every socket operation on both sides.
const TIMEOUT: Duration = Duration::from_secs(2);
const MS: Duration = Duration::from_millis(1);

/// A client frame, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Got {
    Hello,
    Submit {
        message_id: u64,
        tenant: u32,
        priority: Priority,
        role: Role,
        payload: Vec<u8>,
    },
    Cancel {
        message_id: u64,
    },
    Ping {
        nonce: u64,
    },
    /// The client closed its sending side at a frame boundary.
    End,
}

/// The server's end of one connection.
struct Peer {
    stream: TcpStream,
    decoder: Decoder<ClientToServer>,
}

impl Peer {
    fn accept(listener: &TcpListener) -> Peer {
        let (stream, _) = listener.accept().expect("the client connects");
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(TIMEOUT)).unwrap();
        Peer {
            stream,
            decoder: Decoder::new(FrameLimit::DEFAULT),
        }
    }

    /// The next frame from the client, within the timeout.
    fn next(&mut self) -> Got {
        loop {
            let frame = self
                .decoder
                .next_frame()
                .expect("the client sends valid frames");
            if let Some(frame) = frame {
                return match frame {
                    ClientFrame::Hello => Got::Hello,
                    ClientFrame::Submit(submit) => Got::Submit {
                        message_id: submit.message_id.0,
                        tenant: submit.tenant.0,
                        priority: submit.priority,
                        role: submit.role,
                        payload: submit.payload.to_vec(),
                    },
                    ClientFrame::Cancel { message_id } => Got::Cancel {
                        message_id: message_id.0,
                    },
                    ClientFrame::Ping { nonce } => Got::Ping { nonce },
                };
            }
            let mut bytes = [0; 4096];
            let read_bytes = self.stream.read(&mut bytes).expect("a frame within 2 s");
            if read_bytes == 0 {
                self.decoder
                    .finish()
                    .expect("the client stops at a frame boundary");
                return Got::End;
            }
            self.decoder.feed(&bytes[..read_bytes]);
        }
    }

    /// The next frame, which must be a Submit: its message id.
    fn submit(&mut self) -> u64 {
        match self.next() {
            Got::Submit { message_id, .. } => message_id,
            other => panic!("expected a submit, got {other:?}"),
        }
    }

    fn send(&mut self, frame: ServerFrame<'_>) {
        let mut bytes = Vec::new();
        frame.encode(&mut bytes);
        self.stream.write_all(&bytes).expect("write within 2 s");
    }

    fn reply(&mut self, message_id: u64, outcome: Outcome) {
        self.send(ServerFrame::Reply {
            message_id: MessageId(message_id),
            outcome,
            response: &[],
            detail: "",
        });
    }

    /// Expects the Hello and welcomes the client as connection 7, with the default frame
    /// limit and `send_buffer_replies` replies.
    fn welcome(&mut self, send_buffer_replies: u32) {
        assert_eq!(self.next(), Got::Hello);
        self.send(ServerFrame::Welcome {
            connection: ConnectionId(7),
            frame_limit: FrameLimit::DEFAULT,
            send_buffer_replies: NonZeroU32::new(send_buffer_replies).unwrap(),
        });
    }
}

/// A fake server on 127.0.0.1 that takes one connection and plays `script` on it.
fn fake_server(script: impl FnOnce(Peer) + Send + 'static) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let server = thread::spawn(move || script(Peer::accept(&listener)));
    (address, server)
}

/// A fake server that welcomes the client (send buffer of 1000), then plays `script`.
fn welcoming_server(script: impl FnOnce(Peer) + Send + 'static) -> (SocketAddr, JoinHandle<()>) {
    fake_server(|mut peer| {
        peer.welcome(1000);
        script(peer);
    })
}

fn config() -> ClientConfig {
    ClientConfig {
        connect_timeout: TIMEOUT,
        io_timeout: TIMEOUT,
        reply_timeout: TIMEOUT,
        flow_wait_max: TIMEOUT,
        random_seed: Some(1),
        ..ClientConfig::default()
    }
}

/// Backoff in ms instead of SPEC 6's 100 ms, so that the tests are quick.
fn fast_backoff(max_retries: u32) -> BackoffConfig {
    BackoffConfig {
        base_delay: MS,
        max_delay: 4 * MS,
        max_retries,
    }
}

fn request(message_id: u64) -> SubmitRequest<'static> {
    SubmitRequest {
        message_id: MessageId(message_id),
        tenant: TenantId(3),
        priority: Priority::P1,
        role: Role::Session,
        payload: b"hello",
    }
}

fn rate_limited(retry_after: Duration) -> Outcome {
    Outcome::Refused {
        reason: RefusalReason::RateLimited,
        retry_after_ns: retry_after.as_nanos() as u64,
    }
}

fn reply(message_id: u64, outcome: Outcome) -> ClientEvent {
    ClientEvent::Reply(ClientReply {
        message_id: MessageId(message_id),
        outcome,
        response: Default::default(),
        detail: None,
    })
}

#[test]
fn the_handshake_records_the_welcome_and_its_limits() {
    let (address, server) = fake_server(|mut peer| {
        assert_eq!(peer.next(), Got::Hello);
        peer.send(ServerFrame::Welcome {
            connection: ConnectionId(42),
            frame_limit: FrameLimit::new(1024).unwrap(),
            send_buffer_replies: NonZeroU32::new(2).unwrap(),
        });
        assert_eq!(peer.submit(), 1);
        assert_eq!(peer.submit(), 2);
        assert_eq!(peer.next(), Got::End, "nothing else was sent");
    });
    let mut client = Client::connect(address, config()).unwrap();
    assert_eq!(client.connection_id(), ConnectionId(42));
    assert_eq!(client.frame_limit().max_frame_bytes(), 1024);
    assert_eq!(client.send_buffer_replies().get(), 2);
    assert_eq!(client.in_flight_limit(), 2);

    // The largest payload is max_frame_bytes - 24; one more byte is refused unsent.
    let too_large = vec![0; 1001];
    let error = client
        .submit(SubmitRequest {
            payload: &too_large,
            ..request(9)
        })
        .unwrap_err();
    assert!(matches!(error, ClientError::FrameTooLarge(_)), "{error}");

    client.submit(request(1)).unwrap();
    client.submit(request(2)).unwrap();
    assert_eq!(client.in_flight(), 2);
    let error = client.submit(request(3)).unwrap_err();
    assert!(
        matches!(
            error,
            ClientError::InFlightFull {
                in_flight: 2,
                limit: 2
            }
        ),
        "{error}"
    );
    drop(client);
    server.join().unwrap();
}

#[test]
fn an_error_instead_of_the_welcome_fails_the_handshake() {
    let (address, server) = fake_server(|mut peer| {
        assert_eq!(peer.next(), Got::Hello);
        peer.send(ServerFrame::Error {
            code: ErrorCode::TooManyConnections,
            detail: "at the connection limit",
        });
    });
    let error = Client::connect(address, config()).unwrap_err();
    match error {
        ClientError::HandshakeFailed { code, ref detail } => {
            assert_eq!(code, ErrorCode::TooManyConnections);
            assert_eq!(detail, "at the connection limit");
        }
        other => panic!("expected HandshakeFailed, got {other}"),
    }
    server.join().unwrap();
}

#[test]
fn a_submit_gets_its_reply_and_ping_and_cancel_go_through() {
    let (address, server) = welcoming_server(|mut peer| {
        assert_eq!(
            peer.next(),
            Got::Submit {
                message_id: 1,
                tenant: 3,
                priority: Priority::P1,
                role: Role::Session,
                payload: b"hello".to_vec(),
            }
        );
        assert_eq!(peer.next(), Got::Cancel { message_id: 1 });
        assert_eq!(peer.next(), Got::Ping { nonce: 99 });
        peer.send(ServerFrame::Pong { nonce: 99 });
        peer.reply(1, Outcome::Cancelled);
        assert_eq!(peer.next(), Got::End);
    });
    let mut client = Client::connect(address, config()).unwrap();
    assert_eq!(client.connection_id(), ConnectionId(7));
    client.submit(request(1)).unwrap();
    assert_eq!(client.in_flight(), 1);
    client.cancel(MessageId(1)).unwrap();
    client.ping(99).unwrap();
    assert_eq!(
        client.next_event(TIMEOUT).unwrap(),
        Some(ClientEvent::Pong { nonce: 99 })
    );
    assert_eq!(
        client.next_event(TIMEOUT).unwrap(),
        Some(reply(1, Outcome::Cancelled))
    );
    assert_eq!(client.in_flight(), 0);
    // Nothing more: an empty wait is a `None`, not an error.
    assert_eq!(client.next_event(5 * MS).unwrap(), None);
    assert_eq!(client.next_event(Duration::ZERO).unwrap(), None);
    drop(client);
    server.join().unwrap();
}

#[test]
fn a_refusal_is_retried_no_sooner_than_its_retry_after() {
    const RETRY_AFTER: Duration = Duration::from_millis(20);
    let (address, server) = welcoming_server(|mut peer| {
        assert_eq!(peer.submit(), 5);
        // Timed from before the write, so that it is no later than the client's reading.
        let refused_at = Instant::now();
        peer.reply(5, rate_limited(RETRY_AFTER));
        assert_eq!(peer.submit(), 5, "the same message, again");
        assert!(refused_at.elapsed() >= RETRY_AFTER, "resubmitted too soon");
        peer.reply(5, Outcome::Delivered);
        assert_eq!(peer.next(), Got::End);
    });
    let mut client = Client::connect(address, config()).unwrap();
    let start = Instant::now();
    let outcome = client
        .send_with_backpressure(request(5), &fast_backoff(3))
        .unwrap();
    assert_eq!(outcome.outcome, Outcome::Delivered);
    assert!(start.elapsed() >= RETRY_AFTER);
    let stats = client.backpressure_stats();
    assert_eq!(stats.calls, 1);
    assert_eq!(stats.attempts, 2);
    assert_eq!(stats.waits, 1);
    assert_eq!(stats.successes_after_waiting, 1);
    assert_eq!(stats.failures, 0);
    assert!(Duration::from_nanos(stats.waited_ns) >= RETRY_AFTER);
    assert_eq!(client.in_flight(), 0);
    drop(client);
    server.join().unwrap();
}

#[test]
fn it_gives_up_after_max_retries_with_a_typed_error() {
    let (address, server) = welcoming_server(|mut peer| {
        for attempt in 0..4 {
            assert_eq!(peer.submit(), 8, "attempt {attempt}");
            if attempt % 2 == 0 {
                peer.reply(8, rate_limited(Duration::from_micros(500)));
            } else {
                peer.reply(
                    8,
                    Outcome::Shed {
                        reason: ShedReason::CircuitOpen,
                    },
                );
            }
        }
        assert_eq!(peer.next(), Got::End, "no fifth attempt");
    });
    let mut client = Client::connect(address, config()).unwrap();
    let error = client
        .send_with_backpressure(request(8), &fast_backoff(3))
        .unwrap_err();
    match error {
        ClientError::GaveUp {
            message_id,
            attempts,
            last_outcome,
            waited,
        } => {
            assert_eq!(message_id, MessageId(8));
            assert_eq!(attempts, 4, "the first try and 3 retries");
            assert_eq!(
                last_outcome,
                Outcome::Shed {
                    reason: ShedReason::CircuitOpen
                }
            );
            // Two of the three waits answered a refusal with a 500 µs retry_after.
            assert!(waited >= Duration::from_millis(1), "{waited:?}");
        }
        ref other => panic!("expected GaveUp, got {other}"),
    }
    let text = error.to_string();
    assert!(
        text.contains("gave up on message 8 after 4 attempts") && text.contains("shed"),
        "{text}"
    );
    let stats = client.backpressure_stats();
    assert_eq!((stats.attempts, stats.waits), (4, 3));
    assert_eq!((stats.successes_after_waiting, stats.failures), (0, 1));
    drop(client);
    server.join().unwrap();
}

#[test]
fn a_refusal_that_waiting_does_not_help_stops_at_once() {
    let (address, server) = welcoming_server(|mut peer| {
        assert_eq!(peer.submit(), 4);
        peer.reply(
            4,
            Outcome::Refused {
                reason: RefusalReason::ShuttingDown,
                retry_after_ns: 0,
            },
        );
        assert_eq!(peer.next(), Got::End);
    });
    let mut client = Client::connect(address, config()).unwrap();
    let error = client
        .send_with_backpressure(request(4), &fast_backoff(50))
        .unwrap_err();
    assert!(
        matches!(error, ClientError::NotRetryable { attempts: 1, .. }),
        "{error}"
    );
    assert_eq!(client.backpressure_stats().waits, 0);
    drop(client);
    server.join().unwrap();
}

#[test]
fn other_replies_that_arrive_meanwhile_are_kept() {
    let (address, server) = welcoming_server(|mut peer| {
        assert_eq!(peer.submit(), 1);
        assert_eq!(peer.submit(), 2);
        // Replies come in any order; 1's arrives while the client waits for 2's.
        peer.reply(1, Outcome::Delivered);
        peer.send(ServerFrame::Pong { nonce: 3 });
        peer.reply(2, Outcome::Delivered);
        assert_eq!(peer.next(), Got::End);
    });
    let mut client = Client::connect(address, config()).unwrap();
    client.submit(request(1)).unwrap();
    let outcome = client
        .send_with_backpressure(request(2), &fast_backoff(3))
        .unwrap();
    assert_eq!(outcome.outcome, Outcome::Delivered);
    assert_eq!(client.in_flight(), 0);
    assert_eq!(
        client.next_event(Duration::ZERO).unwrap(),
        Some(ClientEvent::Pong { nonce: 3 })
    );
    assert_eq!(
        client.next_event(Duration::ZERO).unwrap(),
        Some(reply(1, Outcome::Delivered))
    );
    assert_eq!(client.next_event(Duration::ZERO).unwrap(), None);
    assert_eq!(client.backpressure_stats().successes_after_waiting, 0);
    drop(client);
    server.join().unwrap();
}

#[test]
fn a_throttle_spaces_the_next_submit_and_resume_lifts_it() {
    const DELAY: Duration = Duration::from_millis(30);
    let (address, server) = welcoming_server(|mut peer| {
        assert_eq!(peer.submit(), 1);
        peer.send(ServerFrame::Throttle {
            delay_ns: DELAY.as_nanos() as u64,
        });
        peer.reply(1, Outcome::Delivered);
        assert_eq!(peer.submit(), 2);
        peer.send(ServerFrame::Resume);
        peer.reply(2, Outcome::Delivered);
        assert_eq!(peer.next(), Got::End);
    });
    let mut client = Client::connect(address, config()).unwrap();
    let start = Instant::now();
    client.submit(request(1)).unwrap();
    assert_eq!(
        client.next_event(TIMEOUT).unwrap(),
        Some(ClientEvent::Flow(FlowSignal::Throttle {
            delay_ns: DELAY.as_nanos() as u64
        }))
    );
    assert_eq!(client.flow().delay_ns(), DELAY.as_nanos() as u64);
    assert_eq!(
        client.next_event(TIMEOUT).unwrap(),
        Some(reply(1, Outcome::Delivered))
    );
    client.submit(request(2)).unwrap();
    assert!(
        start.elapsed() >= DELAY,
        "the second submit waited the throttle delay after the first"
    );
    assert_eq!(
        client.next_event(TIMEOUT).unwrap(),
        Some(ClientEvent::Flow(FlowSignal::Resume))
    );
    assert_eq!(client.flow().delay_ns(), 0, "full speed again");
    assert_eq!(client.flow().pause_until_ns(), None);
    assert_eq!(
        client.next_event(TIMEOUT).unwrap(),
        Some(reply(2, Outcome::Delivered))
    );
    drop(client);
    server.join().unwrap();
}

#[test]
fn a_pause_holds_the_next_submit_back() {
    const PAUSE: Duration = Duration::from_millis(40);
    let (address, server) = welcoming_server(|mut peer| {
        let paused_at = Instant::now();
        peer.send(ServerFrame::Pause {
            duration_ns: PAUSE.as_nanos() as u64,
        });
        // A Ping is not held back by a pause.
        assert_eq!(peer.next(), Got::Ping { nonce: 1 });
        assert_eq!(peer.submit(), 1);
        assert!(paused_at.elapsed() >= PAUSE, "submitted during the pause");
        peer.reply(1, Outcome::Delivered);
        assert_eq!(peer.next(), Got::End);
    });
    let mut client = Client::connect(address, config()).unwrap();
    let start = Instant::now();
    assert_eq!(
        client.next_event(TIMEOUT).unwrap(),
        Some(ClientEvent::Flow(FlowSignal::Pause {
            duration_ns: PAUSE.as_nanos() as u64
        }))
    );
    client.ping(1).unwrap();
    client.submit(request(1)).unwrap();
    assert!(start.elapsed() >= PAUSE);
    assert_eq!(
        client.next_event(TIMEOUT).unwrap(),
        Some(reply(1, Outcome::Delivered))
    );
    drop(client);
    server.join().unwrap();
}

#[test]
fn an_error_frame_surfaces_as_a_server_error_and_closes_the_client() {
    let (address, server) = welcoming_server(|mut peer| {
        assert_eq!(peer.submit(), 1);
        peer.send(ServerFrame::Error {
            code: ErrorCode::Disconnected,
            detail: "too slow a reader",
        });
    });
    let mut client = Client::connect(address, config()).unwrap();
    client.submit(request(1)).unwrap();
    match client.next_event(TIMEOUT) {
        Err(ClientError::Server { code, detail }) => {
            assert_eq!(code, ErrorCode::Disconnected);
            assert_eq!(detail, "too slow a reader");
        }
        other => panic!("expected a server error, got {other:?}"),
    }
    assert!(matches!(
        client.submit(request(2)),
        Err(ClientError::Closed)
    ));
    assert!(matches!(client.next_event(MS), Err(ClientError::Closed)));
    server.join().unwrap();
}

#[test]
fn bytes_that_break_the_protocol_close_the_client() {
    let (address, server) = welcoming_server(|mut peer| {
        peer.stream
            .write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            .unwrap();
        assert_eq!(peer.next(), Got::End, "the client closes");
    });
    let mut client = Client::connect(address, config()).unwrap();
    let error = client.next_event(TIMEOUT).unwrap_err();
    assert!(matches!(error, ClientError::Protocol(_)), "{error}");
    assert!(matches!(client.ping(1), Err(ClientError::Closed)));
    server.join().unwrap();
}

#[test]
fn a_dropped_reply_makes_the_outcome_unknown() {
    let (address, server) = welcoming_server(|mut peer| {
        assert_eq!(peer.submit(), 6);
        peer.send(ServerFrame::RepliesDropped {
            count: NonZeroU64::new(1).unwrap(),
        });
        assert_eq!(peer.next(), Got::End);
    });
    let mut client = Client::connect(address, config()).unwrap();
    let error = client
        .send_with_backpressure(request(6), &fast_backoff(3))
        .unwrap_err();
    assert!(
        matches!(
            error,
            ClientError::ReplyLost {
                message_id: MessageId(6)
            }
        ),
        "{error}"
    );
    assert_eq!(client.replies_dropped(), 1);
    assert_eq!(client.in_flight(), 0);
    assert_eq!(client.backpressure_stats().failures, 1);
    assert_eq!(
        client.next_event(Duration::ZERO).unwrap(),
        Some(ClientEvent::RepliesDropped {
            count: NonZeroU64::new(1).unwrap()
        })
    );
    drop(client);
    server.join().unwrap();
}

#[test]
fn a_reply_that_never_comes_times_out() {
    let (address, server) = welcoming_server(|mut peer| {
        assert_eq!(peer.submit(), 1);
        assert_eq!(peer.next(), Got::End);
    });
    let mut client = Client::connect(
        address,
        ClientConfig {
            reply_timeout: 10 * MS,
            ..config()
        },
    )
    .unwrap();
    let error = client
        .send_with_backpressure(request(1), &fast_backoff(3))
        .unwrap_err();
    assert!(matches!(error, ClientError::Timeout { .. }), "{error}");
    drop(client);
    server.join().unwrap();
}

#[test]
fn close_half_closes_and_collects_the_remaining_replies() {
    let (address, server) = welcoming_server(|mut peer| {
        assert_eq!(peer.submit(), 1);
        assert_eq!(peer.submit(), 2);
        assert_eq!(peer.next(), Got::End, "the client half-closed");
        // The server answers every Submit it read, then closes.
        peer.reply(2, Outcome::Delivered);
        peer.reply(
            1,
            Outcome::Dropped {
                reason: spillway::outcome::DropReason::EvictedForNewer,
            },
        );
    });
    let mut client = Client::connect(address, config()).unwrap();
    client.submit(request(1)).unwrap();
    client.submit(request(2)).unwrap();
    let report = client.close(TIMEOUT).unwrap();
    assert!(report.server_closed);
    assert_eq!(report.unanswered, 0);
    assert_eq!(
        report.events,
        [
            reply(2, Outcome::Delivered),
            reply(
                1,
                Outcome::Dropped {
                    reason: spillway::outcome::DropReason::EvictedForNewer
                }
            ),
        ]
    );
    assert!(matches!(
        client.submit(request(3)),
        Err(ClientError::Closed)
    ));
    server.join().unwrap();
}

/// A machine load that never changes.
struct FixedLoad(f64);

impl LoadSource for FixedLoad {
    fn load_percent(&mut self) -> Option<f64> {
        Some(self.0)
    }
}

#[test]
fn batches_follow_the_cpu_load() {
    let (address, server) = welcoming_server(|mut peer| {
        for message_id in 0..7 {
            assert_eq!(peer.submit(), message_id);
            peer.reply(message_id, Outcome::Delivered);
        }
        assert_eq!(peer.next(), Got::End);
    });
    let mut client = Client::connect(address, config()).unwrap();
    let load_config = LoadConfig {
        high_load_pace: Pace::new(5, 2 * MS).unwrap(),
        medium_load_pace: Pace::new(10, 2 * MS).unwrap(),
        low_load_pace: Pace::new(20, 2 * MS).unwrap(),
        ..LoadConfig::default()
    };
    let mut adaptation = LoadAdaptation::with_source(load_config, FixedLoad(95.0)).unwrap();
    let requests: Vec<_> = (0..7).map(request).collect();
    let first = client
        .send_batch_adaptive(&requests, &mut adaptation)
        .unwrap();
    assert_eq!(first.sent, 5, "over 80% load per core: batches of 5");
    let second = client
        .send_batch_adaptive(&requests[first.sent..], &mut adaptation)
        .unwrap();
    assert_eq!(second.sent, 2);
    let mut replies = 0;
    while replies < 7 {
        match client.next_event(TIMEOUT).unwrap() {
            Some(ClientEvent::Reply(ClientReply { outcome, .. })) => {
                assert_eq!(outcome, Outcome::Delivered);
                replies += 1;
            }
            other => panic!("expected a reply, got {other:?}"),
        }
    }
    drop(client);
    server.join().unwrap();
}
