//! What the tests of the TCP server share: a running server and engine on 127.0.0.1:0, a
//! well-behaved client that reads frames with a bounded timeout, and raw-byte helpers.
//!
//! Each test binary (`net`, `net_timers`) uses a different part of it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use spillway::config::Config;
use spillway::engine::Engine;
use spillway::handler::Handler;
use spillway::message::{Message, MessageId, Priority, Role, TenantId};
use spillway::net::protocol::{
    ClientFrame, Decoder, ErrorCode, FrameLimit, ProtocolError, ProtocolVersion, ServerFrame,
    ServerToClient, Submit, HEADER_BYTES,
};
use spillway::net::server::{NetStats, ServerConfig, TcpServer};
use spillway::outcome::Outcome;

/// The longest any socket read or counter wait may take before the test fails.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A server and its engine, one shard unless the configuration says otherwise.
pub struct Running {
    pub server: TcpServer,
    engine: Option<Engine>,
}

impl Running {
    /// One shard, a handler that accepts everything.
    pub fn start(server_config: ServerConfig) -> Self {
        Self::start_with(server_config, one_shard())
    }

    pub fn start_with(server_config: ServerConfig, config: Config) -> Self {
        Self::start_handler(server_config, config, |_: &Message| Ok(()))
    }

    pub fn start_handler<H: Handler + Clone>(
        server_config: ServerConfig,
        config: Config,
        handler: H,
    ) -> Self {
        let server = TcpServer::bind("127.0.0.1:0", server_config).expect("binding 127.0.0.1:0");
        let engine = Engine::builder()
            .config(config)
            .handler(server.front_end(handler))
            .start()
            .expect("starting the engine");
        Self {
            server,
            engine: Some(engine),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Waits until the server's counters satisfy `done` (they are updated by the shard).
    pub fn wait_for(&self, what: &str, done: impl Fn(&NetStats) -> bool) -> NetStats {
        self.wait_up_to(READ_TIMEOUT, what, done)
    }

    /// [`Running::wait_for`] with its own deadline.
    pub fn wait_up_to(
        &self,
        limit: Duration,
        what: &str,
        done: impl Fn(&NetStats) -> bool,
    ) -> NetStats {
        let deadline = Instant::now() + limit;
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

    /// Shuts the engine down (the server's connections with it) and returns both counters.
    pub fn stop(mut self) -> (NetStats, spillway::metrics::Stats) {
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

/// An engine configuration with one shard, so every connection shares one event loop.
pub fn one_shard() -> Config {
    Config {
        shards: 1,
        ..Config::default()
    }
}

/// A client connection that decodes what the server sends.
pub struct Client {
    pub stream: TcpStream,
    decoder: Decoder<ServerToClient>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).expect("connecting");
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Self {
            stream,
            decoder: Decoder::new(FrameLimit::DEFAULT),
        }
    }

    /// Connects and completes the handshake.
    pub fn open(addr: SocketAddr) -> Self {
        let mut client = Self::connect(addr);
        client.send(ClientFrame::Hello);
        match client.next() {
            Some(Frame::Welcome { .. }) => client,
            other => panic!("expected a Welcome, got {other:?}"),
        }
    }

    pub fn send(&mut self, frame: ClientFrame<'_>) {
        self.stream
            .write_all(&encode(frame))
            .expect("writing a frame");
    }

    pub fn submit(&mut self, id: u64) {
        self.send(submit(id, b"hello"));
    }

    /// The next frame, or `None` once the server has closed.
    pub fn next(&mut self) -> Option<Frame> {
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

    /// The next frame that is not a flow signal.
    pub fn next_ignoring_flow(&mut self) -> Option<Frame> {
        loop {
            match self.next() {
                Some(frame) if frame.is_flow_signal() => continue,
                other => return other,
            }
        }
    }

    /// Submits `id` and expects it delivered.
    pub fn round_trip(&mut self, id: u64) {
        self.submit(id);
        match self.next_ignoring_flow() {
            Some(Frame::Reply(reply_id, Outcome::Delivered)) if reply_id == id => {}
            other => panic!("expected the Reply of {id}, delivered; got {other:?}"),
        }
    }

    /// Reads until the server closes; returns the Error code it sent, if any.
    pub fn error_then_close(&mut self) -> Option<ErrorCode> {
        while let Some(frame) = self.next() {
            if let Frame::Error(code) = frame {
                self.expect_close_after_error();
                return Some(code);
            }
        }
        None
    }

    /// Nothing follows an Error but the close.
    pub fn expect_close_after_error(&mut self) {
        let mut rest = [0u8; 4096];
        match self.stream.read(&mut rest) {
            Ok(0) => {}
            Ok(count) => panic!("{count} bytes after the Error"),
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(error) => panic!("reading after the Error: {error}"),
        }
    }
}

/// What a test looks at in a server frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Frame {
    Welcome {
        connection: u64,
        max_frame_bytes: u32,
        send_buffer_replies: u32,
    },
    Reply(u64, Outcome),
    Throttle(u64),
    Pause(u64),
    Resume,
    RepliesDropped(u64),
    Pong(u64),
    Error(ErrorCode),
}

impl Frame {
    pub fn is_flow_signal(&self) -> bool {
        matches!(self, Frame::Throttle(_) | Frame::Pause(_) | Frame::Resume)
    }
}

impl From<ServerFrame<'_>> for Frame {
    fn from(frame: ServerFrame<'_>) -> Self {
        match frame {
            ServerFrame::Welcome {
                connection,
                frame_limit,
                send_buffer_replies,
            } => Frame::Welcome {
                connection: connection.0,
                max_frame_bytes: frame_limit.max_frame_bytes(),
                send_buffer_replies: send_buffer_replies.get(),
            },
            ServerFrame::Reply {
                message_id,
                outcome,
                ..
            } => Frame::Reply(message_id.0, outcome),
            ServerFrame::Throttle { delay_ns } => Frame::Throttle(delay_ns),
            ServerFrame::Pause { duration_ns } => Frame::Pause(duration_ns),
            ServerFrame::Resume => Frame::Resume,
            ServerFrame::RepliesDropped { count } => Frame::RepliesDropped(count.get()),
            ServerFrame::Pong { nonce } => Frame::Pong(nonce),
            ServerFrame::Error { code, .. } => Frame::Error(code),
        }
    }
}

/// A Submit of `id` for tenant 0, P1, role session.
pub fn submit(id: u64, payload: &[u8]) -> ClientFrame<'_> {
    ClientFrame::Submit(Submit {
        message_id: MessageId(id),
        tenant: TenantId(0),
        priority: Priority::P1,
        role: Role::Session,
        payload,
    })
}

/// The bytes of `frame`, in protocol version 1: the client of these tests speaks it, as the
/// raw-byte cases are written in it (the server speaks 1 and 2; `net_v2.rs` tests 2).
pub fn encode(frame: ClientFrame<'_>) -> Vec<u8> {
    let mut bytes = Vec::new();
    frame
        .encode_in(ProtocolVersion::V1, FrameLimit::DEFAULT, &mut bytes)
        .unwrap();
    bytes
}

/// A raw connection that sends `bytes` (after an optional Hello) and reads until close.
pub fn hostile(addr: SocketAddr, hello_first: bool, bytes: &[u8]) -> Option<ErrorCode> {
    let mut client = Client::connect(addr);
    if hello_first {
        client.send(ClientFrame::Hello);
        assert!(matches!(client.next(), Some(Frame::Welcome { .. })));
    }
    client.stream.write_all(bytes).expect("writing");
    client.error_then_close()
}

pub fn header(magic: [u8; 2], version: u8, frame_type: u8, body_bytes: u32) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER_BYTES);
    bytes.extend_from_slice(&magic);
    bytes.push(version);
    bytes.push(frame_type);
    bytes.extend_from_slice(&body_bytes.to_le_bytes());
    bytes
}

/// `count` empty Submits with ids `0..count`, back to back.
pub fn submit_burst(count: u64) -> Vec<u8> {
    let mut burst = Vec::new();
    for id in 0..count {
        burst.extend(encode(submit(id, &[])));
    }
    burst
}

/// Writes `bytes` from another thread, so that the test's own thread may stay deaf (read
/// nothing) while the server's replies pile up. A write the server refuses by closing ends
/// the thread quietly.
pub fn write_in_background(client: &Client, bytes: Vec<u8>) -> std::thread::JoinHandle<()> {
    let mut stream = client.stream.try_clone().unwrap();
    std::thread::spawn(move || {
        let _ = stream.write_all(&bytes);
    })
}

/// Everything a client read while it accounted for its Submits.
#[derive(Debug, Default)]
pub struct Tally {
    pub replies: u64,
    pub dropped_reported: u64,
    pub frames: Vec<Frame>,
}

/// Reads until every one of `submits` Submits is accounted for by a Reply or a
/// RepliesDropped count (PROTOCOL.md section 8), keeping every non-Reply frame in order
/// (with a `Reply` placeholder where replies came, collapsed).
pub fn read_until_accounted(client: &mut Client, submits: u64) -> Tally {
    let mut tally = Tally::default();
    let deadline = Instant::now() + READ_TIMEOUT * 4;
    while tally.replies + tally.dropped_reported < submits {
        assert!(
            Instant::now() < deadline,
            "not accounted in time: {tally:?}"
        );
        match client.next() {
            Some(Frame::Reply(..)) => {
                tally.replies += 1;
                if !matches!(tally.frames.last(), Some(Frame::Reply(..))) {
                    tally.frames.push(Frame::Reply(0, Outcome::Delivered));
                }
            }
            Some(Frame::RepliesDropped(count)) => {
                tally.dropped_reported += count;
                tally.frames.push(Frame::RepliesDropped(count));
            }
            Some(frame @ Frame::Error(_)) => panic!("cut while accounting: {frame:?} {tally:?}"),
            Some(frame) => tally.frames.push(frame),
            None => panic!("closed while accounting: {tally:?}"),
        }
    }
    tally
}
