//! The TCP target: `loadgen --target tcp://HOST:PORT` drives a server that speaks
//! `docs/PROTOCOL.md` (`spillway serve`, or the tokio twin `baseline-serve` of
//! `spillway-bench`) over real sockets, one per simulated connection, with the same
//! schedules, latency, lag, reconciliation and report as the in-process engine.
//!
//! Several servers at once (`--target tcp://A --target tcp://B --split 70,30`) are one
//! client too: the connections are divided among them by a [`ConnectionSplit`] and every
//! socket sits in the same [`Poll`]; only the counting is per server
//! ([`TcpStats::targets`]). A message costs the same system calls whichever server it
//! goes to, and one `epoll_wait` serves them all.
//!
//! # Design
//!
//! One thread: the generator thread owns a mio [`Poll`] and every socket. There is no I/O
//! thread to hand messages to, so nothing is queued between threads and a message costs
//! the generator what the kernel costs it:
//!
//! - [`Target::submit`] encodes the Submit frame into its connection's write buffer and
//!   marks the connection dirty (no system call);
//! - [`Target::flush`], called by the generator once per turn after that turn's submissions,
//!   writes each dirty connection's buffer with one `write`; the messages a turn gives one
//!   connection go out in one segment;
//! - [`Target::poll_completions`] asks epoll for ready sockets without waiting, reads each
//!   readable one once into a shared scratch buffer (a short read means the socket is
//!   drained; epoll reports it again when more arrives), decodes the frames with the
//!   connection's [`Decoder<ServerToClient>`] and turns each Reply into a [`Completion`].
//!
//! On loopback every message then costs one `write` and about one `read` (and a share of an
//! `epoll_wait`) in this process, and as many in the server; those system calls, not the
//! generator's bookkeeping, bound the rate (the report counts them).
//!
//! # Credit, ids and what is counted
//!
//! The wire's message id is the generator's [`MessageId`](spillway::message::MessageId)
//! (the ordinal), and each Reply comes back with the generator's own
//! [`ConnectionId`] (the connection's index), not the id the server gave in Welcome.
//! `submit` hands a message back, as a full ring does in-process, when its connection has
//! `send_buffer_replies` (from Welcome) Submits without a Reply, or more than
//! [`WRITE_BUFFER_MAX_BYTES`] waiting to be written: a client that keeps within the credit
//! never has a Reply dropped (PROTOCOL.md section 9).
//!
//! The server's own counters are not reachable over the protocol, so [`TcpStats`] reconciles
//! what this client saw: every message submitted got exactly one Reply, or was reported in
//! a RepliesDropped, or was in flight on a connection that closed (an Error, an end of
//! stream, an I/O error), or was submitted to a connection already closed, or was still in
//! flight when the run ended; each is counted. Flow signals are counted and, the schedule
//! being open-loop, do not delay sends.
//!
//! # Set-up and shutdown
//!
//! [`TcpSystem::connect`] raises `RLIMIT_NOFILE` as far as the connections need (or fails
//! naming the numbers: `nofile::check_nofile_limit`), then opens the connections with
//! non-blocking connects, at most [`TcpSettings::connect_in_flight`] handshakes at a time so
//! that the server's listen backlog is not overrun, each sending Hello and waiting for
//! Welcome; past [`TcpSettings::connect_timeout`] it fails naming how many connected. At
//! the end [`SystemUnderTest::shutdown`] half-closes every connection (the protocol's
//! "nothing more to submit"), reads the last Replies until the server closes, and reports.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::num::NonZeroU32;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use spillway::control::Control;
use spillway::ingress::Full;
use spillway::message::{Bytes, ConnectionId, Message};
use spillway::net::protocol::{
    ClientFrame, Decoder, ErrorCode, FrameLimit, ProtocolError, ServerFrame, ServerToClient, Submit,
};
use spillway::outcome::Completion;

use crate::nofile::raise_nofile_limit;
use crate::split::ConnectionSplit;
use crate::target::{SystemUnderTest, Target};
use crate::tcp_stats::{smallest_known, TcpStats};

/// How long the connect phase may take, all connections together, unless set otherwise.
pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// Handshakes (connect, Hello, Welcome) in flight at once unless set otherwise: half the
/// listen backlog of 128 that std's, mio's and tokio's `TcpListener::bind` ask for. With
/// 256 in flight a tokio server's accept queue overflowed on loopback (`ListenOverflows`
/// in `nstat`, then 1 s SYN retransmits); with 64 it did not, and 15,000 connections still
/// open in about 1.5 s, most of it the kernel's search for a free local port.
pub const CONNECT_IN_FLIGHT_DEFAULT: usize = 64;
/// How long shutdown waits for the server to close the half-closed connections.
pub const CLOSE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);
/// Bytes a connection may hold unwritten before `submit` hands messages back (about 2,700
/// Submits without payload; the credit from Welcome normally binds first).
pub const WRITE_BUFFER_MAX_BYTES: usize = 64 * 1024;
/// A write buffer that grew past this is given back once it is written out, so that a
/// burst does not leave 15,000 large buffers behind.
const WRITE_BUFFER_KEEP_BYTES: usize = 4 * 1024;
/// One read's worth: the scratch buffer every connection reads into.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Readiness events taken from epoll per call.
const EVENTS_CAPACITY: usize = 4_096;
/// Longest single wait of the connect and close phases, so their deadlines are checked.
const PHASE_POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Connection closures described on stderr as they happen; the rest are only counted.
const CLOSURES_LOGGED_MAX: u32 = 5;

const _: () = assert!(READ_CHUNK_BYTES >= FrameLimit::MIN.max_frame_bytes() as usize);

/// Resolves `tcp://HOST:PORT` (or `HOST:PORT`) to the first address it names.
pub fn parse_target(target: &str) -> anyhow::Result<SocketAddr> {
    let host_port = target.strip_prefix("tcp://").unwrap_or(target);
    if host_port.is_empty() {
        bail!("{target:?}: expected tcp://HOST:PORT");
    }
    let mut addresses = host_port
        .to_socket_addrs()
        .with_context(|| format!("{target:?}: expected tcp://HOST:PORT"))?;
    addresses
        .next()
        .ok_or_else(|| anyhow!("{target:?}: {host_port} resolves to no address"))
}

/// `tcp://ADDRESS`, as `--target` takes it and reports name the target.
pub fn target_name(address: SocketAddr) -> String {
    format!("tcp://{address}")
}

/// `tcp://A, tcp://B, ...`: the servers a client drives, as reports and messages name
/// them together.
pub fn target_names(addresses: &[SocketAddr]) -> String {
    addresses
        .iter()
        .map(|&address| target_name(address))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How to reach the server (or servers) and how many connections to open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpSettings {
    /// The servers' addresses, in target order: one, or several for a split run.
    pub addresses: Vec<SocketAddr>,
    /// Each server's weight in the split of the connections, and so of the offered rate
    /// (each connection keeps the schedule's per-connection rate), in target order; empty:
    /// equal shares. See [`ConnectionSplit`].
    pub weights: Vec<NonZeroU32>,
    /// Connections to open, all servers together: the most any phase of the run uses (the
    /// generator's connection ids `0..connections`).
    pub connections: u32,
    /// The longest the connect phase may take, all connections together.
    pub connect_timeout: Duration,
    /// Handshakes in flight at once.
    pub connect_in_flight: usize,
    /// The longest shutdown waits for the server to close the connections.
    pub close_timeout: Duration,
}

impl TcpSettings {
    /// Settings with the defaults for `connections` connections to `address`.
    pub fn new(address: SocketAddr, connections: u32) -> Self {
        Self::split(vec![address], Vec::new(), connections)
    }

    /// Settings with the defaults for `connections` connections split among the servers
    /// at `addresses` by `weights` (empty: equal shares).
    pub fn split(addresses: Vec<SocketAddr>, weights: Vec<NonZeroU32>, connections: u32) -> Self {
        Self {
            addresses,
            weights,
            connections,
            connect_timeout: CONNECT_TIMEOUT_DEFAULT,
            connect_in_flight: CONNECT_IN_FLIGHT_DEFAULT,
            close_timeout: CLOSE_TIMEOUT_DEFAULT,
        }
    }
}

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// The non-blocking connect has not completed.
    Connecting,
    /// Hello sent (or buffered); waiting for Welcome.
    Handshaking,
    /// Welcome received: Submits may go.
    Open,
    /// Shutdown half-closed it (or will once its buffer is written); waiting for the
    /// server to close.
    Closing,
    /// Closed, its socket released.
    Closed,
}

/// One connection's socket and buffers.
struct Connection {
    /// `None` once closed.
    stream: Option<TcpStream>,
    state: State,
    decoder: Decoder<ServerToClient>,
    /// Bytes to write are `out[out_start..]`.
    out: Vec<u8>,
    out_start: usize,
    /// The last write found the socket full; the rest waits for a writable event.
    write_blocked: bool,
    /// In the dirty list (something to write since the last flush).
    dirty: bool,
    /// Submits without a Reply (nor a RepliesDropped that stands for one).
    in_flight: u32,
    /// `send_buffer_replies` from Welcome; 0 until then.
    credit: u32,
    /// The server's frame limit from Welcome.
    limit: FrameLimit,
    /// Shutdown has half-closed it (sent FIN): nothing more is written.
    half_closed: bool,
    /// Its server's index in the client's targets (and counts).
    target: usize,
}

impl Connection {
    fn new(stream: TcpStream, target: usize) -> Self {
        Self {
            target,
            stream: Some(stream),
            state: State::Connecting,
            decoder: Decoder::new(FrameLimit::DEFAULT),
            out: Vec::new(),
            out_start: 0,
            write_blocked: false,
            dirty: false,
            in_flight: 0,
            credit: 0,
            limit: FrameLimit::DEFAULT,
            half_closed: false,
        }
    }

    fn unwritten_bytes(&self) -> usize {
        self.out.len() - self.out_start
    }
}

/// Why a connection closed.
#[derive(Debug)]
enum Closure {
    /// The server sent an Error frame.
    Error {
        /// Its code.
        code: ErrorCode,
        /// Its detail, for the log.
        detail: String,
    },
    /// The server's bytes broke the protocol (found by this client's decoder).
    Violation(ProtocolError),
    /// The server ended the stream at a frame boundary without an Error.
    EndOfStream,
    /// A connect, read or write failed (refused, reset, broken pipe, ...).
    Io(io::Error),
    /// Shutdown gave up waiting for the server to close it.
    CloseTimeout,
}

/// Everything the client owns, shared by the [`TcpSystem`] and its [`TcpTarget`] on the
/// generator thread.
struct Client {
    poll: Poll,
    events: Events,
    /// The servers, in target order.
    addresses: Vec<SocketAddr>,
    /// Which server each connection goes to.
    split: ConnectionSplit,
    connections: Vec<Connection>,
    /// Indices of connections with something to write since the last flush.
    dirty: Vec<u32>,
    /// Every read lands here first, then is fed to the connection's decoder.
    scratch: Vec<u8>,
    /// Replies decoded outside `poll_completions` (during shutdown), handed out by the
    /// next call.
    pending: Vec<Completion>,
    /// Submitted, not yet completed or accounted for.
    outstanding: usize,
    /// Connections not closed.
    open: usize,
    /// Connections that completed the handshake.
    welcomed: usize,
    /// The first refusal during the handshake, which ends the connect phase.
    handshake_refusal: Option<String>,
    closures_logged: u32,
    /// Per server, in target order: what was counted on its connections.
    stats: Vec<TcpStats>,
    /// `epoll_wait` calls, which serve every server at once: only the total counts them.
    epoll_waits: u64,
}

impl Client {
    fn new(addresses: Vec<SocketAddr>, split: ConnectionSplit) -> io::Result<Self> {
        let connections = split.connections() as usize;
        Ok(Self {
            poll: Poll::new()?,
            events: Events::with_capacity(EVENTS_CAPACITY),
            stats: addresses
                .iter()
                .map(|&address| TcpStats::new(address))
                .collect(),
            epoll_waits: 0,
            addresses,
            split,
            connections: Vec::with_capacity(connections),
            dirty: Vec::with_capacity(connections),
            scratch: vec![0; READ_CHUNK_BYTES],
            pending: Vec::new(),
            outstanding: 0,
            open: 0,
            welcomed: 0,
            handshake_refusal: None,
            closures_logged: 0,
        })
    }

    /// The sum of every server's counts (each server's kept in it when there are
    /// several), with the event loop's `epoll_wait` calls.
    fn final_stats(&self) -> TcpStats {
        let mut total = TcpStats::total_of(self.stats.clone());
        total.syscalls.epoll_wait = self.epoll_waits;
        total
    }

    /// Per server, in target order, the messages in flight on its connections (which add
    /// up to `outstanding`).
    fn outstanding_by_target(&self) -> Vec<usize> {
        let mut outstanding = vec![0; self.addresses.len()];
        for connection in &self.connections {
            outstanding[connection.target] += connection.in_flight as usize;
        }
        outstanding
    }

    /// Opens `settings.connections` connections and completes each handshake.
    fn connect_all(&mut self, settings: &TcpSettings) -> anyhow::Result<()> {
        let wanted = settings.connections as usize;
        let started = Instant::now();
        let deadline = started + settings.connect_timeout;
        let servers = target_names(&self.addresses);
        let in_flight_max = settings.connect_in_flight.max(1);
        while self.welcomed < wanted {
            let handshaking = self.connections.len() - self.welcomed;
            let mut to_start = in_flight_max
                .saturating_sub(handshaking)
                .min(wanted - self.connections.len());
            while to_start > 0 {
                let index = self.connections.len();
                let target = self
                    .split
                    .target_of(index as u64)
                    .expect("the split covers every connection");
                let address = self.addresses[target];
                let mut stream = match TcpStream::connect(address) {
                    Ok(stream) => stream,
                    Err(error) => bail!(
                        "connection {} to {address}: connecting failed: {error} ({} of {wanted} connections to {servers} had completed the handshake)",
                        index + 1,
                        self.welcomed
                    ),
                };
                self.poll
                    .registry()
                    .register(
                        &mut stream,
                        Token(index),
                        Interest::READABLE | Interest::WRITABLE,
                    )
                    .context("registering a socket with epoll")?;
                self.connections.push(Connection::new(stream, target));
                self.open += 1;
                to_start -= 1;
            }
            let now = Instant::now();
            if now >= deadline {
                bail!(
                    "connecting to {servers} timed out after {:.1} s: {} of {wanted} connections completed the handshake ({} in progress)",
                    settings.connect_timeout.as_secs_f64(),
                    self.welcomed,
                    self.connections.len() - self.welcomed
                );
            }
            self.poll_once(Some(PHASE_POLL_INTERVAL.min(deadline - now)), None)
                .context("waiting for connections")?;
            if let Some(refusal) = self.handshake_refusal.take() {
                bail!(
                    "{refusal} ({} of {wanted} connections to {servers} had completed the handshake)",
                    self.welcomed
                );
            }
        }
        let connect_ns = started.elapsed().as_nanos() as u64;
        for stats in &mut self.stats {
            stats.connect_ns = connect_ns;
        }
        Ok(())
    }

    /// One `epoll_wait` (waiting at most `timeout`) and the handling of every event it
    /// returned. Replies go to `completions`, or to `pending` when there is none. Returns
    /// the Replies decoded.
    fn poll_once(
        &mut self,
        timeout: Option<Duration>,
        mut completions: Option<&mut Vec<Completion>>,
    ) -> io::Result<usize> {
        let Client {
            poll,
            events,
            connections,
            scratch,
            pending,
            outstanding,
            welcomed,
            stats: per_target,
            epoll_waits,
            ..
        } = self;
        *epoll_waits += 1;
        match poll.poll(events, timeout) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::Interrupted => return Ok(0),
            Err(error) => return Err(error),
        }
        // Closures are applied once the event list is no longer borrowed.
        let mut closures: Vec<(usize, Closure)> = Vec::new();
        let mut decoded = 0;
        for event in events.iter() {
            let index = event.token().0;
            let Some(connection) = connections.get_mut(index) else {
                continue;
            };
            let stats = &mut per_target[connection.target];
            stats.syscalls.events += 1;
            if connection.stream.is_none() {
                continue;
            }
            if connection.state == State::Connecting {
                match connect_result(connection) {
                    ConnectProgress::Pending => continue,
                    ConnectProgress::Connected => {
                        connection.state = State::Handshaking;
                        // Hello is far below every frame limit: encoding cannot fail.
                        let _ = ClientFrame::Hello.encode(FrameLimit::MIN, &mut connection.out);
                        if let Err(error) = write_out(connection, stats) {
                            closures.push((index, Closure::Io(error)));
                            continue;
                        }
                    }
                    ConnectProgress::Failed(error) => {
                        closures.push((index, Closure::Io(error)));
                        continue;
                    }
                }
            }
            if event.is_writable() && connection.write_blocked {
                connection.write_blocked = false;
                if let Err(error) = write_out(connection, stats) {
                    closures.push((index, Closure::Io(error)));
                    continue;
                }
            }
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                let sink: &mut Vec<Completion> = match completions.as_deref_mut() {
                    Some(completions) => completions,
                    None => pending,
                };
                let before = sink.len();
                let closure = read_connection(
                    index,
                    connection,
                    scratch,
                    sink,
                    stats,
                    outstanding,
                    welcomed,
                );
                decoded += sink.len() - before;
                if let Some(closure) = closure {
                    closures.push((index, closure));
                }
            }
        }
        for (index, closure) in closures {
            self.close(index, closure);
        }
        Ok(decoded)
    }

    /// Writes every dirty connection's buffer once.
    fn flush(&mut self) {
        let mut failed = Vec::new();
        for index in self.dirty.drain(..) {
            let connection = &mut self.connections[index as usize];
            connection.dirty = false;
            if connection.write_blocked || connection.stream.is_none() {
                continue;
            }
            if let Err(error) = write_out(connection, &mut self.stats[connection.target]) {
                failed.push((index as usize, error));
            }
        }
        for (index, error) in failed {
            self.close(index, Closure::Io(error));
        }
    }

    /// Closes connection `index`: every message in flight on it is accounted for without
    /// a Reply, and the closure is counted by its cause. A closure during the handshake
    /// ends the connect phase with its description.
    fn close(&mut self, index: usize, closure: Closure) {
        let connection = &mut self.connections[index];
        let Some(mut stream) = connection.stream.take() else {
            return;
        };
        // Dropping the socket removes it from the epoll set as well; deregistering first
        // is what mio asks for, and a failure to do so changes nothing.
        let _ = self.poll.registry().deregister(&mut stream);
        drop(stream);
        let was = connection.state;
        connection.state = State::Closed;
        connection.out = Vec::new();
        connection.out_start = 0;
        connection.decoder = Decoder::new(FrameLimit::MIN);
        let in_flight = u64::from(connection.in_flight);
        connection.in_flight = 0;
        self.open -= 1;
        self.outstanding -= in_flight as usize;
        let address = self.addresses[connection.target];
        let stats = &mut self.stats[connection.target];
        let description = match &closure {
            Closure::Error { code, detail } => {
                stats.closed.errors_by_code.count(*code);
                format!("the server sent Error {code}: {detail}")
            }
            Closure::Violation(error) => {
                stats.closed.violations_by_code.count(error.code());
                format!("the server broke the protocol: {error}")
            }
            Closure::EndOfStream if was == State::Closing => {
                stats.closed.at_end += 1;
                String::new()
            }
            Closure::EndOfStream => {
                stats.closed.without_error += 1;
                "the server closed it without an Error".to_string()
            }
            Closure::Io(error) => {
                stats.closed.io_errors += 1;
                error.to_string()
            }
            Closure::CloseTimeout => {
                stats.closed.close_timeouts += 1;
                String::new()
            }
        };
        match was {
            State::Connecting | State::Handshaking => {
                if self.handshake_refusal.is_none() {
                    self.handshake_refusal = Some(format!(
                        "connection {} to {address}: {}: {description}",
                        index + 1,
                        if was == State::Connecting {
                            "connecting failed"
                        } else {
                            "the handshake failed"
                        }
                    ));
                }
            }
            State::Closing => {
                // Whatever shutdown found still in flight never got its Reply.
                stats.without_reply.in_flight_at_end += in_flight;
            }
            State::Open => {
                stats.without_reply.unanswered_on_close += in_flight;
                if self.closures_logged < CLOSURES_LOGGED_MAX {
                    self.closures_logged += 1;
                    eprintln!(
                        "loadgen: tcp connection {index} to {address} closed: {description}; {in_flight} messages in flight{}",
                        if self.closures_logged == CLOSURES_LOGGED_MAX {
                            " (further closures are only counted)"
                        } else {
                            ""
                        }
                    );
                }
            }
            State::Closed => {}
        }
    }

    /// The end of a run: writes what is buffered, half-closes every connection once its
    /// buffer is out (the protocol's "nothing more to submit"), reads the last Replies into
    /// `pending` until the server closes each or `timeout` passes, then closes what is left.
    fn close_all(&mut self, timeout: Duration) {
        self.flush();
        for connection in &mut self.connections {
            if connection.stream.is_some() {
                connection.state = State::Closing;
            }
        }
        let deadline = Instant::now() + timeout;
        loop {
            for index in 0..self.connections.len() {
                let connection = &mut self.connections[index];
                if connection.half_closed || connection.unwritten_bytes() > 0 {
                    continue;
                }
                let Some(stream) = &connection.stream else {
                    continue;
                };
                connection.half_closed = true;
                // The server sends the Replies of every Submit it has read, then closes
                // (PROTOCOL.md section 7.3).
                if let Err(error) = stream.shutdown(Shutdown::Write) {
                    self.close(index, Closure::Io(error));
                }
            }
            let now = Instant::now();
            if self.open == 0 || now >= deadline {
                break;
            }
            if self
                .poll_once(Some(PHASE_POLL_INTERVAL.min(deadline - now)), None)
                .is_err()
            {
                break;
            }
        }
        for index in 0..self.connections.len() {
            self.close(index, Closure::CloseTimeout);
        }
    }
}

/// How a non-blocking connect stands.
enum ConnectProgress {
    Pending,
    Connected,
    Failed(io::Error),
}

/// Whether a non-blocking connect has completed, as mio documents it: an error from
/// `take_error`, else connected once `peer_addr` answers.
fn connect_result(connection: &Connection) -> ConnectProgress {
    let Some(stream) = &connection.stream else {
        return ConnectProgress::Pending;
    };
    match stream.take_error() {
        Ok(Some(error)) | Err(error) => return ConnectProgress::Failed(error),
        Ok(None) => {}
    }
    match stream.peer_addr() {
        Ok(_) => match stream.set_nodelay(true) {
            Ok(()) => ConnectProgress::Connected,
            Err(error) => ConnectProgress::Failed(error),
        },
        Err(error)
            if error.kind() == io::ErrorKind::NotConnected
                || error.raw_os_error() == Some(libc::EINPROGRESS) =>
        {
            ConnectProgress::Pending
        }
        Err(error) => ConnectProgress::Failed(error),
    }
}

/// Writes as much of the connection's buffer as the socket takes; a full socket marks it
/// blocked (its writable event resumes it). An error is for the caller to close on.
fn write_out(connection: &mut Connection, stats: &mut TcpStats) -> io::Result<()> {
    let Some(stream) = connection.stream.as_mut() else {
        return Ok(());
    };
    while connection.out_start < connection.out.len() {
        stats.syscalls.write += 1;
        match stream.write(&connection.out[connection.out_start..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => {
                connection.out_start += written;
                stats.bytes_written += written as u64;
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                stats.syscalls.write_blocked += 1;
                connection.write_blocked = true;
                return Ok(());
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    connection.out.clear();
    connection.out_start = 0;
    if connection.out.capacity() > WRITE_BUFFER_KEEP_BYTES {
        connection.out = Vec::new();
    }
    Ok(())
}

/// Reads what connection `index` has and handles every whole frame: Replies become
/// completions in `sink`. Returns why the connection must close, if it must.
fn read_connection(
    index: usize,
    connection: &mut Connection,
    scratch: &mut [u8],
    sink: &mut Vec<Completion>,
    stats: &mut TcpStats,
    outstanding: &mut usize,
    welcomed: &mut usize,
) -> Option<Closure> {
    loop {
        let stream = connection.stream.as_mut()?;
        stats.syscalls.read += 1;
        let read = match stream.read(scratch) {
            Ok(0) => {
                return Some(match connection.decoder.finish() {
                    Ok(()) => Closure::EndOfStream,
                    Err(error) => Closure::Violation(error),
                });
            }
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return None,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Some(Closure::Io(error)),
        };
        stats.bytes_read += read as u64;
        connection.decoder.feed(&scratch[..read]);
        if let Some(closure) = decode_frames(index, connection, sink, stats, outstanding, welcomed)
        {
            return Some(closure);
        }
        if read < scratch.len() {
            // A short read drained the socket; epoll reports it again when more arrives.
            return None;
        }
    }
}

/// Handles every whole frame the connection's decoder holds.
fn decode_frames(
    index: usize,
    connection: &mut Connection,
    sink: &mut Vec<Completion>,
    stats: &mut TcpStats,
    outstanding: &mut usize,
    welcomed: &mut usize,
) -> Option<Closure> {
    loop {
        let frame = match connection.decoder.next_frame() {
            Ok(Some(frame)) => frame,
            Ok(None) => return None,
            Err(error) => return Some(Closure::Violation(error)),
        };
        match frame {
            ServerFrame::Welcome {
                frame_limit,
                send_buffer_replies,
                ..
            } => {
                connection.credit = send_buffer_replies.get();
                connection.limit = frame_limit;
                // Replies with a response may be as large as the server's frames.
                connection.decoder.set_limit(frame_limit);
                connection.state = State::Open;
                *welcomed += 1;
                stats.connections += 1;
                stats.send_buffer_replies =
                    smallest_known(stats.send_buffer_replies, connection.credit);
                stats.max_frame_bytes =
                    smallest_known(stats.max_frame_bytes, frame_limit.max_frame_bytes());
            }
            ServerFrame::Reply {
                message_id,
                outcome,
                response,
                ..
            } => {
                if connection.in_flight == 0 {
                    stats.unexpected_replies += 1;
                    continue;
                }
                connection.in_flight -= 1;
                *outstanding -= 1;
                stats.replies.count_completion(outcome);
                // A Reply does not carry the tenant and priority back; the
                // recorder redraws a message's priority from its id, and the generator sends
                // every message of a run as one tenant.
                let mut completion = Completion::of(
                    &Message::new(ConnectionId(index as u64), message_id),
                    outcome,
                );
                // The response borrows the decoder's buffer, which the next read reuses: the
                // completion keeps a copy (none when empty), which the generator counts and,
                // with `--verify-echo`, checks.
                if !response.is_empty() {
                    completion.response = Bytes::copy_from_slice(response);
                }
                sink.push(completion);
            }
            ServerFrame::Throttle { .. } => stats.flow_signals.throttle += 1,
            ServerFrame::Pause { .. } => stats.flow_signals.pause += 1,
            ServerFrame::Resume => stats.flow_signals.resume += 1,
            ServerFrame::RepliesDropped { count } => {
                stats.replies_dropped_frames += 1;
                let in_flight = u64::from(connection.in_flight);
                let dropped = count.get().min(in_flight);
                stats.replies_dropped_excess += count.get() - dropped;
                stats.without_reply.replies_dropped += dropped;
                // `dropped <= in_flight`, a u32.
                connection.in_flight -= dropped as u32;
                *outstanding -= dropped as usize;
            }
            ServerFrame::Pong { .. } => stats.pongs += 1,
            ServerFrame::Error { code, detail } => {
                return Some(Closure::Error {
                    code,
                    detail: detail.to_string(),
                });
            }
        }
    }
}

/// A running TCP client: every connection open and welcomed. It is the
/// [`SystemUnderTest`] of a TCP run; [`SystemUnderTest::shutdown`] closes the connections
/// and returns the [`TcpStats`].
pub struct TcpSystem {
    client: Rc<RefCell<Client>>,
    settings: TcpSettings,
    target_taken: bool,
}

impl TcpSystem {
    /// Raises the descriptor limit as far as needed (failing with the numbers if the hard
    /// limit is too low), then opens `settings.connections` connections, split among the
    /// servers by the settings' weights, and completes each handshake, within
    /// `settings.connect_timeout`.
    ///
    /// # Errors
    /// When the settings name no server, more weights than servers (or fewer, but some),
    /// or fewer connections than servers; when the descriptor limit is too low, a
    /// connection is refused (the message names the server's Error and how many had
    /// connected), or the connect phase times out.
    pub fn connect(settings: TcpSettings) -> anyhow::Result<Self> {
        if settings.connections == 0 {
            bail!("a tcp run needs at least one connection");
        }
        let split = match settings.weights.as_slice() {
            [] => ConnectionSplit::even(settings.addresses.len(), settings.connections),
            weights if weights.len() == settings.addresses.len() => {
                ConnectionSplit::new(weights, settings.connections)
            }
            weights => bail!(
                "{} weights for {} servers: give one per server",
                weights.len(),
                settings.addresses.len()
            ),
        }
        .with_context(|| {
            format!(
                "splitting the connections among {}",
                target_names(&settings.addresses)
            )
        })?;
        raise_nofile_limit(u64::from(settings.connections))?;
        let mut client = Client::new(settings.addresses.clone(), split)
            .context("creating the epoll instance")?;
        client.connect_all(&settings)?;
        Ok(Self {
            client: Rc::new(RefCell::new(client)),
            settings,
            target_taken: false,
        })
    }

    /// How long connecting took.
    pub fn connect_time(&self) -> Duration {
        Duration::from_nanos(self.client.borrow().stats[0].connect_ns)
    }

    /// The smallest frame limit any Welcome from any server announced: every Submit's
    /// payload must fit its [`FrameLimit::max_payload_bytes`] (a larger one is counted
    /// `too_large` and not sent), and an echo of it its [`FrameLimit::max_response_bytes`].
    pub fn frame_limit(&self) -> FrameLimit {
        let smallest = self.client.borrow().stats.iter().fold(0, |known, stats| {
            smallest_known(known, stats.max_frame_bytes)
        });
        FrameLimit::new(smallest).unwrap_or(FrameLimit::MIN)
    }
}

impl SystemUnderTest for TcpSystem {
    type Target = TcpTarget;
    type Stats = TcpStats;

    fn target(&mut self) -> anyhow::Result<TcpTarget> {
        if self.target_taken {
            bail!("the tcp target was already taken");
        }
        self.target_taken = true;
        Ok(TcpTarget {
            client: Rc::clone(&self.client),
        })
    }

    /// The server's threads are not visible over the protocol: 0.
    fn workers(&self) -> usize {
        0
    }

    fn pinned(&self) -> bool {
        false
    }

    fn control(&self) -> Option<Control> {
        None
    }

    fn split(&self) -> Option<ConnectionSplit> {
        let client = self.client.borrow();
        (client.addresses.len() > 1).then(|| client.split.clone())
    }

    /// The sum over every server, each one's own in [`TcpStats::targets`] when there are
    /// several.
    fn shutdown(self) -> TcpStats {
        let mut client = self.client.borrow_mut();
        client.close_all(self.settings.close_timeout);
        client.final_stats()
    }
}

/// The generator's handle on the TCP client (see the [module](self) for the design).
pub struct TcpTarget {
    client: Rc<RefCell<Client>>,
}

impl Target for TcpTarget {
    fn submit(&mut self, message: Message) -> Result<(), Full<Message>> {
        let mut client = self.client.borrow_mut();
        let client = &mut *client;
        let index = message.connection.0 as usize;
        let Some(connection) = client.connections.get_mut(index) else {
            // The generator never uses more connections than the run connected.
            return Err(Full {
                message,
                stopped: true,
            });
        };
        let stats = &mut client.stats[connection.target];
        if connection.state != State::Open {
            if client.open == 0 {
                return Err(Full {
                    message,
                    stopped: true,
                });
            }
            stats.submitted += 1;
            stats.without_reply.unsent_after_close += 1;
            return Ok(());
        }
        if connection.in_flight >= connection.credit {
            stats.handed_back.credit_full += 1;
            return Err(Full {
                message,
                stopped: false,
            });
        }
        if connection.unwritten_bytes() > WRITE_BUFFER_MAX_BYTES {
            stats.handed_back.write_buffer_full += 1;
            return Err(Full {
                message,
                stopped: false,
            });
        }
        let frame = ClientFrame::Submit(Submit {
            message_id: message.id,
            tenant: message.tenant,
            priority: message.priority,
            role: message.role,
            payload: &message.payload,
        });
        stats.submitted += 1;
        if frame.encode(connection.limit, &mut connection.out).is_err() {
            stats.without_reply.too_large += 1;
            return Ok(());
        }
        connection.in_flight += 1;
        client.outstanding += 1;
        if !connection.dirty {
            connection.dirty = true;
            client.dirty.push(index as u32);
        }
        Ok(())
    }

    fn flush(&mut self) {
        self.client.borrow_mut().flush();
    }

    fn poll_completions(&mut self, completions: &mut Vec<Completion>) -> usize {
        let mut client = self.client.borrow_mut();
        let mut read = client.pending.len();
        completions.append(&mut client.pending);
        if client.open > 0 {
            // An epoll failure leaves the events unread; the run's drain timeout and
            // reconciliation report what never came.
            read += client
                .poll_once(Some(Duration::ZERO), Some(completions))
                .unwrap_or(0);
        }
        read
    }

    fn outstanding(&self) -> usize {
        self.client.borrow().outstanding
    }

    fn outstanding_by_target(&self) -> Vec<usize> {
        let client = self.client.borrow();
        if client.addresses.len() > 1 {
            client.outstanding_by_target()
        } else {
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!(
            parse_target("tcp://127.0.0.1:7878").unwrap(),
            "127.0.0.1:7878".parse().unwrap()
        );
        assert_eq!(
            parse_target("127.0.0.1:9").unwrap(),
            "127.0.0.1:9".parse().unwrap()
        );
        assert_eq!(
            parse_target(&target_name("127.0.0.1:9".parse().unwrap())).unwrap(),
            "127.0.0.1:9".parse().unwrap()
        );
        assert!(parse_target("tcp://").is_err());
        assert!(parse_target("tcp://127.0.0.1").is_err());
        assert!(parse_target("tcp://127.0.0.1:notaport").is_err());
    }

    #[test]
    fn a_connect_phase_past_its_timeout_fails_naming_how_many_connected() {
        // The kernel completes the TCP handshakes for a listener that never accepts, so the
        // connections hang waiting for a Welcome that never comes.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut settings = TcpSettings::new(listener.local_addr().unwrap(), 3);
        settings.connect_timeout = Duration::from_millis(300);
        let started = Instant::now();
        let error = TcpSystem::connect(settings).err().expect("timed out");
        assert!(started.elapsed() < Duration::from_secs(5));
        let text = error.to_string();
        assert!(text.contains("timed out after 0.3 s"), "{text}");
        assert!(
            text.contains("0 of 3 connections completed the handshake (3 in progress)"),
            "{text}"
        );
    }
}
