//! The TCP server against real sockets on 127.0.0.1: the protocol's happy path, and every
//! kind of hostile input of issue #7, each checking that the server names the reason in its
//! counters and still serves a well-behaved connection afterwards.
//!
//! Every test binds port 0, bounds each socket read with a timeout, and shuts its engine
//! down before it ends.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use spillway::config::EgressConfig;
use spillway::config::{Config, NetConfig};
use spillway::engine::Engine;
use spillway::message::{MessageId, Priority, Role, TenantId};
use spillway::net::protocol::{
    ClientFrame, Decoder, ErrorCode, FrameLimit, ProtocolError, ServerFrame, ServerToClient,
    Submit, HEADER_BYTES,
};
use spillway::net::server::{NetStats, ServerConfig, TcpServer};
use spillway::outcome::Outcome;

const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A server and its engine, one shard, handlers that accept everything.
struct Running {
    server: TcpServer,
    engine: Option<Engine>,
}

impl Running {
    fn start(server_config: ServerConfig) -> Self {
        Self::start_with(
            server_config,
            Config {
                shards: 1,
                ..Config::default()
            },
        )
    }

    fn start_with(server_config: ServerConfig, config: Config) -> Self {
        let server = TcpServer::bind("127.0.0.1:0", server_config).expect("binding 127.0.0.1:0");
        let engine = Engine::builder()
            .config(config)
            .handler(server.front_end(|_: &spillway::message::Message| Ok(())))
            .start()
            .expect("starting the engine");
        Self {
            server,
            engine: Some(engine),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Waits until the server's counters satisfy `done` (they are updated by the shard).
    fn wait_for(&self, what: &str, done: impl Fn(&NetStats) -> bool) -> NetStats {
        let deadline = Instant::now() + READ_TIMEOUT;
        loop {
            let stats = self.server.stats();
            if done(&stats) {
                return stats;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {stats:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn stop(mut self) -> (NetStats, spillway::metrics::Stats) {
        let stats = self.engine.take().expect("running").shutdown();
        (self.server.stats(), stats)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(engine) = self.engine.take() {
            engine.shutdown();
        }
    }
}

/// A well-behaved client connection.
struct Client {
    stream: TcpStream,
    decoder: Decoder<ServerToClient>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).expect("connecting");
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Self {
            stream,
            decoder: Decoder::new(FrameLimit::DEFAULT),
        }
    }

    /// Connects and completes the handshake.
    fn open(addr: SocketAddr) -> Self {
        let mut client = Self::connect(addr);
        client.send(ClientFrame::Hello);
        match client.next() {
            Some(Frame::Welcome) => client,
            other => panic!("expected a Welcome, got {other:?}"),
        }
    }

    fn send(&mut self, frame: ClientFrame<'_>) {
        let mut bytes = Vec::new();
        frame.encode(FrameLimit::DEFAULT, &mut bytes).unwrap();
        self.stream.write_all(&bytes).expect("writing a frame");
    }

    fn submit(&mut self, id: u64) {
        self.send(ClientFrame::Submit(Submit {
            message_id: MessageId(id),
            tenant: TenantId(0),
            priority: Priority::P1,
            role: Role::Session,
            payload: b"hello",
        }));
    }

    /// The next frame, or `None` once the server has closed.
    fn next(&mut self) -> Option<Frame> {
        loop {
            match self.decoder.next_frame() {
                Ok(Some(frame)) => return Some(Frame::from(frame)),
                Ok(None) => {}
                // The server answers a version it does not speak with an Error in the
                // client's version (PROTOCOL.md section 3), which a version-1 decoder
                // refuses by its header; the code is the frame's first body field.
                Err(ProtocolError::UnsupportedVersion { .. }) => {
                    return Some(Frame::Error(ErrorCode::UnsupportedVersion))
                }
                Err(error) => panic!("the server sent a bad frame: {error}"),
            }
            let space = self.decoder.unfilled(4096);
            match self.stream.read(space) {
                Ok(0) => return None,
                Ok(count) => self.decoder.commit(count),
                Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(error) => panic!("reading: {error}"),
            }
        }
    }

    /// Submits `id` and expects it delivered.
    fn round_trip(&mut self, id: u64) {
        self.submit(id);
        loop {
            match self.next() {
                Some(Frame::Reply(reply_id, outcome)) => {
                    assert_eq!(reply_id, id);
                    assert_eq!(outcome, Outcome::Delivered);
                    return;
                }
                Some(Frame::Flow) => continue,
                other => panic!("expected the Reply of {id}, got {other:?}"),
            }
        }
    }

    /// Reads until the server closes; returns the Error code it sent, if any.
    fn error_then_close(&mut self) -> Option<ErrorCode> {
        while let Some(frame) = self.next() {
            if let Frame::Error(code) = frame {
                // Nothing follows an Error but the close.
                let mut rest = [0u8; 4096];
                loop {
                    match self.stream.read(&mut rest) {
                        Ok(0) => return Some(code),
                        Ok(_) => {}
                        Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => {
                            return Some(code)
                        }
                        Err(error) => panic!("reading after the Error: {error}"),
                    }
                }
            }
        }
        None
    }
}

/// What a test looks at in a server frame.
#[derive(Debug, PartialEq)]
enum Frame {
    Welcome,
    Reply(u64, Outcome),
    Flow,
    RepliesDropped(u64),
    Pong(u64),
    Error(ErrorCode),
}

impl From<ServerFrame<'_>> for Frame {
    fn from(frame: ServerFrame<'_>) -> Self {
        match frame {
            ServerFrame::Welcome { .. } => Frame::Welcome,
            ServerFrame::Reply {
                message_id,
                outcome,
            } => Frame::Reply(message_id.0, outcome),
            ServerFrame::Throttle { .. } | ServerFrame::Pause { .. } | ServerFrame::Resume => {
                Frame::Flow
            }
            ServerFrame::RepliesDropped { count } => Frame::RepliesDropped(count.get()),
            ServerFrame::Pong { nonce } => Frame::Pong(nonce),
            ServerFrame::Error { code, .. } => Frame::Error(code),
        }
    }
}

/// A raw connection that sends `bytes` (after an optional Hello) and reads until close.
fn hostile(addr: SocketAddr, hello_first: bool, bytes: &[u8]) -> Option<ErrorCode> {
    let mut client = Client::connect(addr);
    if hello_first {
        client.send(ClientFrame::Hello);
        assert_eq!(client.next(), Some(Frame::Welcome));
    }
    client.stream.write_all(bytes).expect("writing");
    client.error_then_close()
}

fn header(magic: [u8; 2], version: u8, frame_type: u8, body_bytes: u32) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER_BYTES);
    bytes.extend_from_slice(&magic);
    bytes.push(version);
    bytes.push(frame_type);
    bytes.extend_from_slice(&body_bytes.to_le_bytes());
    bytes
}

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
    let mut cut = Client::connect(running.addr());
    cut.send(ClientFrame::Hello);
    assert_eq!(cut.next(), Some(Frame::Welcome));
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
    let mut partial = Client::connect(running.addr());
    partial.send(ClientFrame::Hello);
    assert_eq!(partial.next(), Some(Frame::Welcome));
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
    let mut burst = Vec::new();
    for id in 0..200_000u64 {
        ClientFrame::Submit(Submit {
            message_id: MessageId(id),
            tenant: TenantId(0),
            priority: Priority::P1,
            role: Role::Session,
            payload: &[],
        })
        .encode(FrameLimit::DEFAULT, &mut burst)
        .unwrap();
    }
    let writer = {
        let mut stream = deaf.stream.try_clone().unwrap();
        std::thread::spawn(move || {
            let _ = stream.write_all(&burst);
        })
    };
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
