//! The floor: the least a server can do for spillway's wire protocol (`docs/PROTOCOL.md`)
//! over mio, the physical limit of this machine's kernel for the protocol's TCP path, not a
//! peer to beat. `floor-serve` runs it, and `scripts/tcp-cost.sh` sets it beside
//! `spillway serve` and the tokio twin (`baseline-serve`).
//!
//! Shape: one thread, one [`Poll`], every socket registered edge-triggered (mio's only
//! mode) for reading and writing. No admission, no queues, no flow control, no timers:
//!
//! ```text
//! epoll_wait --> listener: accept until WouldBlock, TCP_NODELAY, register
//!            --> connection: read until a short read --> Decoder<ClientToServer>
//!                  Hello  -> Welcome          (spillway's codec, encoded into
//!                  Ping   -> Pong              the connection's output buffer)
//!                  Submit -> Reply delivered, empty response
//!                  Cancel -> nothing (nothing is ever queued)
//!                then one write of the output buffer; what the socket did not take is
//!                kept and finished when it is writable again
//! ```
//!
//! - Frames are decoded and encoded by spillway's own codec (`spillway::net::protocol`),
//!   in the version the client's Hello carries (1 or 2).
//! - Accepted sockets get `TCP_NODELAY`, as spillway's and the twin's do: a Reply is small
//!   and would otherwise wait for the client's ACK (Nagle).
//! - A read that fills less than the space offered means the socket is drained (the kernel
//!   gave all it held), so the next read waits for the next readiness event instead of
//!   costing a system call that answers `WouldBlock`; loadgen's client reads the same way.
//!   The one exception is an end of stream that an event has already announced (it raises
//!   no event of its own once its bytes are read): then reading goes on to it.
//! - One write per turn per connection: whatever a turn's reads produced goes out in one
//!   `write`, as one segment on loopback when it fits.
//! - A violation the decoder finds is answered as PROTOCOL.md section 7.3 says (its Error
//!   frame after the frames already queued, then the connection closes), without the close
//!   timeout: the connection closes once its output is written, whatever the client still
//!   sends. A half-close at a frame boundary gets the Replies of everything read, then the
//!   server closes. Past [`FloorSettings::max_connections`] a new connection gets
//!   `Error too_many_connections` (one write, best effort) and is closed.
//!
//! Every buffer is bounded. A connection's decoder holds at most one read
//! ([`READ_CHUNK_BYTES`]) and one partial frame (at most the frame limit); its output at
//! most [`OUTPUT_MAX_BYTES`] plus one frame: once the output reaches that bound the
//! connection decodes no further frame and reads nothing more until the socket has taken
//! the output (TCP backpressure on a client that sends more Submits than its
//! `send_buffer_replies` credit and does not read). The connections are at most
//! [`FloorSettings::max_connections`], the events per wait [`EVENTS_CAPACITY`].

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use serde::{Deserialize, Serialize};
use spillway::message::ConnectionId;
use spillway::net::protocol::{
    encode_error_reply, ClientFrame, ClientToServer, Decoder, ErrorCode, FrameLimit,
    ProtocolVersion, ServerFrame,
};
use spillway::outcome::Outcome;
use spillway_loadgen::tcp_stats::ErrorCodeCounts;

/// Capacity of a connection's send buffer announced in Welcome, in Replies: spillway's
/// default (`egress.buffer_capacity`), far above the 16 Submits a window-16 client keeps
/// in flight, so the credit never limits the loads this server is measured under.
pub const SEND_BUFFER_REPLIES: NonZeroU32 = NonZeroU32::new(1_000).unwrap();
/// Bytes offered to each read: the most one read adds to a connection's decoder.
pub const READ_CHUNK_BYTES: usize = 16 * 1024;
/// Output a connection may hold unwritten before it decodes and reads no more (about
/// 2,300 Replies of 28 bytes; a client within its credit holds at most 1,000 and a
/// Welcome, 28,024 bytes).
pub const OUTPUT_MAX_BYTES: usize = 64 * 1024;
/// Readiness events taken per `epoll_wait`.
pub const EVENTS_CAPACITY: usize = 1_024;
/// Longest wait for events, so that a stop asked for by a signal or a deadline is seen
/// while no client sends anything.
pub const STOP_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// The listener's token; connection `slot` has `Token(slot + 1)`.
const LISTENER: Token = Token(0);

/// The floor's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FloorSettings {
    /// Connections served at once; more get `Error too_many_connections`.
    pub max_connections: usize,
    /// The largest frame accepted, announced in Welcome.
    pub frame_limit: FrameLimit,
    /// Announced in Welcome.
    pub send_buffer_replies: NonZeroU32,
}

impl FloorSettings {
    /// Spillway's frame limit and send buffer, and `max_connections`.
    pub fn new(max_connections: usize) -> Self {
        Self {
            max_connections,
            frame_limit: FrameLimit::DEFAULT,
            send_buffer_replies: SEND_BUFFER_REPLIES,
        }
    }
}

/// The floor's counts, as `floor-serve` prints them (one JSON line) when it stops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FloorStats {
    /// Connections accepted and served.
    pub connections: u64,
    /// Connections refused with `too_many_connections`.
    pub refused_connections: u64,
    /// `accept` calls that failed with something else than `WouldBlock`.
    pub accept_errors: u64,
    /// Submits decoded.
    pub submits: u64,
    /// Replies encoded into an output buffer: one per Submit (those of a connection that
    /// fails a write are lost with it).
    pub replies: u64,
    /// Pongs encoded.
    pub pongs: u64,
    /// Cancels decoded (ignored: nothing is queued).
    pub cancels: u64,
    /// Error frames encoded, by code.
    pub errors_sent: ErrorCodeCounts,
    /// Connections the client half-closed at a frame boundary (the normal end).
    pub half_closed_by_client: u64,
    /// Connections ended by a failed read or write.
    pub io_errors: u64,
}

/// One connection's state.
struct Connection {
    stream: TcpStream,
    id: ConnectionId,
    decoder: Decoder<ClientToServer>,
    /// Frames encoded and not yet taken by the socket.
    output: Vec<u8>,
    /// The socket may hold bytes not yet read: set by a readable event, cleared by a short
    /// read (or `WouldBlock`).
    socket_readable: bool,
    /// An event said the client closed its side (or the socket failed): the end of the
    /// stream follows the bytes still held, with no event of its own to announce it, so a
    /// short read no longer means there is nothing left to read.
    peer_closed: bool,
    /// The socket may take more bytes: cleared by a write it did not take whole, set by a
    /// writable event.
    socket_writable: bool,
    /// Whole frames were left in the decoder because the output reached its bound.
    frames_held: bool,
    /// Reading is over (end of stream, or a violation): the connection closes once its
    /// output is written.
    closing: bool,
    /// In the current turn's list of connections to serve.
    listed: bool,
}

impl Connection {
    /// Whether this connection has input to serve that no readiness event will announce:
    /// frames held back, or a socket not yet read dry, with room in the output now.
    fn input_waiting(&self) -> bool {
        !self.closing
            && (self.frames_held || self.socket_readable)
            && self.output.len() < OUTPUT_MAX_BYTES
    }
}

/// What serving a connection's input came to.
enum Served {
    /// It goes on.
    Open,
    /// A read failed: close it now, its output discarded.
    Failed,
}

/// The floor server: a bound listener and its poll. [`FloorServer::run`] serves on the
/// calling thread.
pub struct FloorServer {
    poll: Poll,
    listener: TcpListener,
    local_address: SocketAddr,
    settings: FloorSettings,
    /// Connection `slot` at index `slot`; `None` for a free slot.
    slots: Vec<Option<Connection>>,
    /// Free slots, reused before the table grows.
    free: Vec<usize>,
    open: usize,
    next_connection: u64,
    /// Slots to serve this turn, each once (its `listed` flag set).
    turn: Vec<usize>,
    /// Slots with input waiting that no event will announce: served next turn.
    again: Vec<usize>,
    stats: FloorStats,
}

impl FloorServer {
    /// Binds `listen` (port 0 picks a free port; see [`FloorServer::local_address`]) and
    /// registers the listener.
    pub fn bind(listen: SocketAddr, settings: FloorSettings) -> io::Result<Self> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(listen)?;
        let local_address = listener.local_addr()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(Self {
            poll,
            listener,
            local_address,
            settings,
            slots: Vec::new(),
            free: Vec::new(),
            open: 0,
            next_connection: 1,
            turn: Vec::new(),
            again: Vec::new(),
            stats: FloorStats::default(),
        })
    }

    /// The address it listens on.
    pub fn local_address(&self) -> SocketAddr {
        self.local_address
    }

    /// The counts so far.
    pub fn stats(&self) -> FloorStats {
        self.stats
    }

    /// Serves until `stop` is set or `deadline` passes (each seen within
    /// [`STOP_POLL_INTERVAL`]), then returns the counts. Connections still open are closed
    /// when the server is dropped.
    ///
    /// # Errors
    /// When `epoll_wait` fails (other than by a signal's interruption).
    pub fn run(&mut self, stop: &AtomicBool, deadline: Option<Instant>) -> io::Result<FloorStats> {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        // Relaxed: a flag set by a signal handler or another thread, read again each turn;
        // nothing else is published through it.
        while !stop.load(Ordering::Relaxed) && deadline.is_none_or(|end| Instant::now() < end) {
            let timeout = if self.again.is_empty() {
                STOP_POLL_INTERVAL
            } else {
                Duration::ZERO
            };
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            }
            self.turn_once(&events);
        }
        Ok(self.stats)
    }

    /// One turn: accepts, marks each ready connection, then serves each listed connection
    /// once (the ready ones and those left with input last turn).
    fn turn_once(&mut self, events: &Events) {
        let mut pending = std::mem::take(&mut self.again);
        for slot in pending.drain(..) {
            self.list(slot);
        }
        self.again = pending;
        for event in events {
            if event.token() == LISTENER {
                self.accept_all();
                continue;
            }
            let slot = event.token().0 - 1;
            let Some(connection) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            if event.is_readable() {
                connection.socket_readable = true;
            }
            if event.is_read_closed() || event.is_error() {
                connection.socket_readable = true;
                connection.peer_closed = true;
            }
            if event.is_writable() || event.is_write_closed() || event.is_error() {
                connection.socket_writable = true;
            }
            self.list(slot);
        }
        let mut turn = std::mem::take(&mut self.turn);
        for slot in turn.drain(..) {
            self.serve(slot);
        }
        self.turn = turn;
    }

    /// Puts `slot` on this turn's list unless it is there already.
    fn list(&mut self, slot: usize) {
        if let Some(connection) = self.slots.get_mut(slot).and_then(Option::as_mut) {
            if !connection.listed {
                connection.listed = true;
                self.turn.push(slot);
            }
        }
    }

    /// Accepts every connection waiting (edge-triggered: until `WouldBlock`).
    fn accept_all(&mut self) {
        loop {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    // Out of descriptors most often; the connection waits in the backlog
                    // and is taken at the next accept event.
                    self.stats.accept_errors += 1;
                    return;
                }
            };
            // Replies are small: no Nagle delay waiting for the client's ACK.
            let _ = stream.set_nodelay(true);
            if self.open >= self.settings.max_connections {
                self.refuse(stream);
                continue;
            }
            self.admit(stream);
        }
    }

    /// Answers a connection over the limit with `Error too_many_connections` (one write,
    /// best effort) and closes it.
    fn refuse(&mut self, mut stream: TcpStream) {
        let mut frame = Vec::new();
        ServerFrame::Error {
            code: ErrorCode::TooManyConnections,
            detail: "the server is at its connection limit",
        }
        .encode_in(ProtocolVersion::V1, &mut frame);
        let _ = stream.write(&frame);
        let _ = stream.shutdown(Shutdown::Write);
        self.stats.refused_connections += 1;
        self.stats.errors_sent.count(ErrorCode::TooManyConnections);
    }

    /// Registers a new connection in a free slot.
    fn admit(&mut self, mut stream: TcpStream) {
        let slot = self.free.pop().unwrap_or(self.slots.len());
        let interest = Interest::READABLE | Interest::WRITABLE;
        if self
            .poll
            .registry()
            .register(&mut stream, Token(slot + 1), interest)
            .is_err()
        {
            self.free.push(slot);
            self.stats.io_errors += 1;
            return;
        }
        let connection = Connection {
            stream,
            id: ConnectionId(self.next_connection),
            decoder: Decoder::new(self.settings.frame_limit),
            output: Vec::new(),
            // Registration reports what is already there as an event.
            socket_readable: false,
            peer_closed: false,
            socket_writable: true,
            frames_held: false,
            closing: false,
            listed: false,
        };
        self.next_connection += 1;
        if slot == self.slots.len() {
            self.slots.push(Some(connection));
        } else {
            self.slots[slot] = Some(connection);
        }
        self.open += 1;
        self.stats.connections += 1;
    }

    /// Serves one connection for this turn: its input (reads and frames), then one write;
    /// closes it when it is done; lists it for next turn if input is left.
    fn serve(&mut self, slot: usize) {
        let settings = self.settings;
        let Some(connection) = self.slots[slot].as_mut() else {
            return;
        };
        connection.listed = false;
        if let Served::Failed = serve_input(connection, &settings, &mut self.stats) {
            self.stats.io_errors += 1;
            self.close(slot);
            return;
        }
        if !connection.output.is_empty() && connection.socket_writable {
            match connection.stream.write(&connection.output) {
                Ok(written) if written == connection.output.len() => connection.output.clear(),
                Ok(written) => {
                    connection.output.drain(..written);
                    connection.socket_writable = false;
                }
                Err(error)
                    if matches!(
                        error.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) =>
                {
                    connection.socket_writable = false;
                }
                Err(_) => {
                    self.stats.io_errors += 1;
                    self.close(slot);
                    return;
                }
            }
        }
        if connection.closing && connection.output.is_empty() {
            let _ = connection.stream.shutdown(Shutdown::Write);
            self.close(slot);
        } else if connection.input_waiting() {
            self.again.push(slot);
        }
    }

    /// Deregisters and drops the connection in `slot`, freeing the slot.
    fn close(&mut self, slot: usize) {
        if let Some(mut connection) = self.slots[slot].take() {
            let _ = self.poll.registry().deregister(&mut connection.stream);
            self.free.push(slot);
            self.open -= 1;
        }
    }
}

/// Serves what the connection has: the frames held back first, then reads until a short
/// read, decoding every whole frame after each, until the output reaches its bound.
fn serve_input(
    connection: &mut Connection,
    settings: &FloorSettings,
    stats: &mut FloorStats,
) -> Served {
    loop {
        decode_frames(connection, settings, stats);
        if connection.closing
            || connection.frames_held
            || !connection.socket_readable
            || connection.output.len() >= OUTPUT_MAX_BYTES
        {
            return Served::Open;
        }
        let buffer = connection.decoder.unfilled(READ_CHUNK_BYTES);
        let offered = buffer.len();
        match connection.stream.read(buffer) {
            Ok(0) => {
                connection.socket_readable = false;
                connection.closing = true;
                match connection.decoder.finish() {
                    Ok(()) => stats.half_closed_by_client += 1,
                    Err(error) => {
                        let version = connection.decoder.version().unwrap_or(ProtocolVersion::V1);
                        encode_error_reply(&error, version, &mut connection.output);
                        stats.errors_sent.count(error.code());
                    }
                }
                return Served::Open;
            }
            Ok(read) => {
                connection.decoder.commit(read);
                // A short read took all the socket held; the next bytes raise an event, but an
                // end of stream already announced does not: it is read next.
                connection.socket_readable = read == offered || connection.peer_closed;
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                connection.socket_readable = false;
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Served::Failed,
        }
    }
}

/// Decodes the whole frames the decoder holds and encodes their answers, until none is
/// left, the output reaches its bound ([`Connection::frames_held`]) or a violation ends
/// the reading (its Error frame encoded last).
fn decode_frames(connection: &mut Connection, settings: &FloorSettings, stats: &mut FloorStats) {
    connection.frames_held = false;
    while !connection.closing {
        if connection.output.len() >= OUTPUT_MAX_BYTES {
            connection.frames_held = connection.decoder.buffered_bytes() > 0;
            return;
        }
        let frame = match connection.decoder.next_frame() {
            Ok(Some(frame)) => frame,
            Ok(None) => return,
            Err(error) => {
                let version = connection.decoder.version().unwrap_or(ProtocolVersion::V1);
                encode_error_reply(&error, version, &mut connection.output);
                stats.errors_sent.count(error.code());
                connection.closing = true;
                return;
            }
        };
        let answer = match frame {
            ClientFrame::Hello => Some(ServerFrame::Welcome {
                connection: connection.id,
                frame_limit: settings.frame_limit,
                send_buffer_replies: settings.send_buffer_replies,
            }),
            ClientFrame::Submit(submit) => {
                stats.submits += 1;
                stats.replies += 1;
                Some(ServerFrame::Reply {
                    message_id: submit.message_id,
                    outcome: Outcome::Delivered,
                    response: &[],
                    detail: "",
                })
            }
            ClientFrame::Ping { nonce } => {
                stats.pongs += 1;
                Some(ServerFrame::Pong { nonce })
            }
            ClientFrame::Cancel { .. } => {
                stats.cancels += 1;
                None
            }
        };
        if let Some(answer) = answer {
            // The decoder knows the version once it has decoded the Hello.
            let version = connection
                .decoder
                .version()
                .unwrap_or(ProtocolVersion::LATEST);
            answer.encode_in(version, &mut connection.output);
        }
    }
}

/// The floor server, the least a server can do for spillway's wire protocol over mio
/// (docs/PROTOCOL.md): one thread, one epoll loop; Hello gets Welcome, Ping gets Pong,
/// every Submit gets a `delivered` Reply with an empty response; no admission, no queues,
/// no flow control. A physical limit to set spillway and the tokio twin beside, not a peer.
///
/// Prints `listening on ADDR` on stdout once bound (port 0 picks one); on SIGINT, SIGTERM
/// or after --duration-s prints its counters as one JSON line on stdout and exits. Drive
/// it with `loadgen --target tcp://ADDR`.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct ServeOptions {
    /// Address to listen on (e.g. 127.0.0.1:7979; port 0 for any).
    #[arg(long, value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Stop after this many seconds, as at a signal [default: at a signal only].
    #[arg(long, value_name = "S", value_parser = clap::value_parser!(u64).range(1..))]
    pub duration_s: Option<u64>,
    /// Connections served at once [default: what the descriptor limit allows]; more get
    /// Error too_many_connections.
    #[arg(long, value_name = "N", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_connections: Option<usize>,
}

/// Runs `floor-serve`: binds, prints `listening on ADDR` to `out`, serves until SIGINT,
/// SIGTERM or `--duration-s`, then prints the counters as one JSON line to `out`. The
/// connection limit is at most what the descriptor limit allows (raised first as far as
/// the hard limit lets it).
///
/// # Errors
/// When the descriptor limit cannot be read or raised, the address cannot be bound, the
/// signals cannot be taken over, or the poll fails.
pub fn serve(options: &ServeOptions, out: &mut impl io::Write) -> anyhow::Result<FloorStats> {
    use anyhow::Context;
    use signal_hook::consts::{SIGINT, SIGTERM};
    use spillway_loadgen::nofile::{nofile_limits, raise_nofile_limit, NOFILE_SPARE};
    let hard = nofile_limits().context("reading RLIMIT_NOFILE")?.hard;
    let allowed = usize::try_from(hard.saturating_sub(NOFILE_SPARE))
        .unwrap_or(usize::MAX)
        .max(1);
    let max_connections = options.max_connections.unwrap_or(allowed).min(allowed);
    raise_nofile_limit(max_connections as u64)?;
    let mut server = FloorServer::bind(options.listen, FloorSettings::new(max_connections))
        .with_context(|| format!("listening on {}", options.listen))?;
    // Before saying where it listens: whoever waits for that line may signal at once.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("taking over SIGINT and SIGTERM")?;
    }
    writeln!(out, "listening on {}", server.local_address()).context("writing to stdout")?;
    out.flush().context("writing to stdout")?;
    eprintln!(
        "floor-serve: one thread, at most {max_connections} connections, send buffer {} replies",
        SEND_BUFFER_REPLIES
    );
    let deadline = options
        .duration_s
        .map(|seconds| Instant::now() + Duration::from_secs(seconds));
    let stats = server.run(&stop, deadline).context("polling")?;
    let line = serde_json::to_string(&stats).context("encoding the counters")?;
    writeln!(out, "{line}").context("writing to stdout")?;
    out.flush().context("writing to stdout")?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::net::TcpStream as StdTcpStream;
    use std::thread::{self, JoinHandle};

    use spillway::client::{Client, ClientConfig, ClientEvent, SubmitRequest};
    use spillway::message::{MessageId, Priority, Role, TenantId};
    use spillway::net::protocol::{ServerToClient, Submit};

    use super::*;

    /// How long a test waits for the server's answers before it fails.
    const TEST_TIMEOUT: Duration = Duration::from_secs(10);

    /// A floor server on 127.0.0.1:0 serving on a thread of its own until dropped.
    struct Running {
        address: SocketAddr,
        stop: Arc<AtomicBool>,
        thread: Option<JoinHandle<FloorStats>>,
    }

    impl Running {
        fn start() -> Self {
            Self::with_max_connections(16)
        }

        fn with_max_connections(max_connections: usize) -> Self {
            let listen = "127.0.0.1:0".parse().unwrap();
            let settings = FloorSettings::new(max_connections);
            let mut server = FloorServer::bind(listen, settings).unwrap();
            let address = server.local_address();
            let stop = Arc::new(AtomicBool::new(false));
            let flag = Arc::clone(&stop);
            let thread = thread::spawn(move || server.run(&flag, None).unwrap());
            Self {
                address,
                stop,
                thread: Some(thread),
            }
        }

        /// Stops the server and returns its counts.
        fn stop(mut self) -> FloorStats {
            self.stop.store(true, Ordering::Relaxed);
            self.thread.take().unwrap().join().unwrap()
        }
    }

    impl Drop for Running {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }

    fn submit(id: u64) -> Submit<'static> {
        SubmitRequest {
            message_id: MessageId(id),
            tenant: TenantId(0),
            priority: Priority::P1,
            role: Role::Session,
            payload: b"floor",
        }
    }

    /// Every Reply in `events`, by id; fails on a duplicate id or another outcome.
    fn delivered_ids(events: impl IntoIterator<Item = ClientEvent>) -> BTreeSet<u64> {
        let mut ids = BTreeSet::new();
        for event in events {
            if let ClientEvent::Reply(reply) = event {
                assert_eq!(reply.outcome, Outcome::Delivered, "{reply:?}");
                assert!(reply.response.is_empty(), "{reply:?}");
                assert!(ids.insert(reply.message_id.0), "two Replies for {reply:?}");
            }
        }
        ids
    }

    #[test]
    fn pipelined_submits_each_get_one_delivered_reply_with_their_id() {
        const SUBMITS: u64 = 500;
        let server = Running::start();
        let mut client = Client::connect(server.address, ClientConfig::default()).unwrap();
        assert_eq!(client.send_buffer_replies(), SEND_BUFFER_REPLIES);
        // All sent before any Reply is read: the server sees them pipelined.
        for id in 1..=SUBMITS {
            client.submit(submit(id)).unwrap();
        }
        client.ping(77).unwrap();
        let report = client.close(TEST_TIMEOUT).unwrap();
        assert!(report.server_closed, "the server closes after a half-close");
        assert_eq!(report.unanswered, 0);
        assert!(report.events.contains(&ClientEvent::Pong { nonce: 77 }));
        let ids = delivered_ids(report.events);
        assert_eq!(ids, (1..=SUBMITS).collect::<BTreeSet<_>>());
        let stats = server.stop();
        assert_eq!(
            (stats.connections, stats.submits, stats.replies, stats.pongs),
            (1, SUBMITS, SUBMITS, 1)
        );
        assert_eq!(stats.half_closed_by_client, 1);
        assert_eq!(stats.errors_sent.total(), 0);
    }

    #[test]
    fn a_client_far_past_its_credit_that_reads_late_still_gets_every_reply() {
        // Far more than OUTPUT_MAX_BYTES of Replies: the server holds frames back and
        // picks them up again as the socket takes its output.
        const SUBMITS: u64 = 20_000;
        let server = Running::start();
        let mut wire = Vec::new();
        ClientFrame::Hello
            .encode(FrameLimit::DEFAULT, &mut wire)
            .unwrap();
        for id in 1..=SUBMITS {
            ClientFrame::Submit(submit(id))
                .encode(FrameLimit::DEFAULT, &mut wire)
                .unwrap();
        }
        let mut stream = StdTcpStream::connect(server.address).unwrap();
        stream.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
        let mut writer = stream.try_clone().unwrap();
        let sender = thread::spawn(move || {
            writer.write_all(&wire).unwrap();
            writer.shutdown(Shutdown::Write).unwrap();
        });
        // Reads late: the server's output meets its bound and the socket's meanwhile.
        thread::sleep(Duration::from_millis(200));
        let mut received = Vec::new();
        stream.read_to_end(&mut received).unwrap();
        sender.join().unwrap();
        let mut decoder = Decoder::<ServerToClient>::new(FrameLimit::DEFAULT);
        decoder.feed(&received);
        assert!(matches!(
            decoder.next_frame(),
            Ok(Some(ServerFrame::Welcome { .. }))
        ));
        let mut next_id = 1;
        while let Some(frame) = decoder.next_frame().unwrap() {
            let ServerFrame::Reply {
                message_id,
                outcome,
                ..
            } = frame
            else {
                panic!("expected a Reply, got {frame:?}");
            };
            // One connection's Replies come in the order of its Submits here.
            assert_eq!((message_id.0, outcome), (next_id, Outcome::Delivered));
            next_id += 1;
        }
        assert_eq!(next_id, SUBMITS + 1);
        assert_eq!(decoder.finish(), Ok(()));
        let stats = server.stop();
        assert_eq!((stats.submits, stats.replies), (SUBMITS, SUBMITS));
    }

    /// Reads `stream` until the server closes it, and checks that it sent one frame, an
    /// Error: returns its code.
    fn the_error_before_close(stream: &mut StdTcpStream) -> ErrorCode {
        stream.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
        let mut received = Vec::new();
        stream.read_to_end(&mut received).unwrap();
        let mut decoder = Decoder::<ServerToClient>::new(FrameLimit::DEFAULT);
        decoder.feed(&received);
        let code = match decoder.next_frame() {
            Ok(Some(ServerFrame::Error { code, .. })) => code,
            other => panic!("expected an Error frame, got {other:?}"),
        };
        assert_eq!(decoder.next_frame(), Ok(None), "nothing follows the Error");
        assert_eq!(decoder.finish(), Ok(()));
        code
    }

    #[test]
    fn a_connection_past_the_limit_is_told_too_many_connections_and_closed() {
        let server = Running::with_max_connections(1);
        let first = Client::connect(server.address, ClientConfig::default()).unwrap();
        let mut second = StdTcpStream::connect(server.address).unwrap();
        assert_eq!(
            the_error_before_close(&mut second),
            ErrorCode::TooManyConnections
        );
        drop(first);
        let stats = server.stop();
        assert_eq!((stats.connections, stats.refused_connections), (1, 1));
        assert_eq!(stats.errors_sent.get(ErrorCode::TooManyConnections), 1);
    }

    #[test]
    fn a_submit_before_hello_is_answered_unexpected_frame_then_closed() {
        let server = Running::start();
        let mut wire = Vec::new();
        ClientFrame::Submit(submit(1))
            .encode(FrameLimit::DEFAULT, &mut wire)
            .unwrap();
        let mut stream = StdTcpStream::connect(server.address).unwrap();
        stream.write_all(&wire).unwrap();
        assert_eq!(
            the_error_before_close(&mut stream),
            ErrorCode::UnexpectedFrame
        );
        let stats = server.stop();
        assert_eq!(stats.errors_sent.get(ErrorCode::UnexpectedFrame), 1);
        assert_eq!(stats.submits, 0);
    }
}
