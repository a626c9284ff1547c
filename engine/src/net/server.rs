//! The TCP server: the engine on the network, one mio event loop per shard.
//!
//! [`TcpServer::bind`] opens one listening socket. [`TcpServer::front_end`] wraps the user's
//! [`Handler`] in a [`TcpFrontEnd`], which the engine clones onto every shard. On its shard,
//! each clone opens its own mio `Poll` the first time the shard loop calls
//! [`Handler::poll`], registers a duplicate of the listening socket in it, and from then on
//! serves the connections it accepted: thread per core, with no hand-off between threads.
//! Every shard may accept, and the kernel gives each new connection to exactly one of them;
//! a busy shard accepts less often, so new connections drift to idle ones.
//!
//! Per turn of the shard loop the front end, in this order:
//! 1. writes what is due: replies that completed since the last turn, flow signals, Pongs;
//! 2. asks its `Poll` for readiness without waiting, accepts, reads, decodes each frame and
//!    admits each Submit through [`ShardContext::admit`], which answers at once: a refusal
//!    or a shed becomes a Reply right away, an admitted message's Reply comes with its
//!    completion ([`Handler::completed`]);
//! 3. every [`NetConfig::housekeeping_interval_ns`], checks the timers: the hello and
//!    frame timeouts, closing connections past their close timeout, and flow-signal changes
//!    that only time makes (a pause running out).
//!
//! The protocol is `docs/PROTOCOL.md`; section 7.3 is the contract this module keeps for
//! every violation, and section 9 the flow signals ([`super::egress`] decides them). Every
//! closure and every lost reply is counted by reason in [`NetStats`].
//!
//! ```no_run
//! use spillway::config::Config;
//! use spillway::engine::Engine;
//! use spillway::message::Message;
//! use spillway::net::server::{ServerConfig, TcpServer};
//!
//! let server = TcpServer::bind("127.0.0.1:7878", ServerConfig::default())?;
//! let engine = Engine::builder()
//!     .config(Config::default())
//!     .handler(server.front_end(|_: &Message| Ok(())))
//!     .start()?;
//! println!("serving on {}", server.local_addr());
//! // ... later:
//! let net = server.stats();
//! let engine_stats = engine.shutdown();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_utils::CachePadded;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use crate::config::NetConfig;
use crate::handler::{Handler, HandlerError, ShardContext};
use crate::message::ConnectionIdHasher;
use crate::message::{ConnectionId, Message, MessageId};
use crate::outcome::{Completion, Outcome};
use crate::sync::Ordering;

use super::egress::{EgressDropReason, EgressHealth, EgressQueue, FlowSignal, Offer};
use super::protocol::{
    encode_error_reply, ClientFrame, ClientToServer, Decoder, ErrorCode, FrameLimit, ProtocolError,
    ServerFrame,
};
use crate::config::EgressConfig;

/// Connection ids the server gives out start here, so they never collide with the ids an
/// embedding application picks for its own in-process ingresses (which count up from 0).
pub const CONNECTION_ID_BASE: u64 = 1 << 63;

/// Bytes one read takes from a socket (a shard's one scratch buffer).
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// Token of the listening socket in every shard's `Poll`; connection `slot` is
/// `Token(slot + 1)`.
const LISTENER: Token = Token(0);
/// The shard's waker, for producers and the control plane while it sleeps in `epoll_wait`.
/// Connection tokens are slot + 1 and slots never reach it.
const WAKER: Token = Token(usize::MAX);

/// The server's settings: its limits and timers, and egress flow control. Defaults suit
/// 15,000 connections on one machine; [`ServerConfig::from_config`] takes them from an
/// engine configuration (a TOML file's `[net]` and `[egress]`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerConfig {
    /// Connection limit, frame size, timeouts and per-turn budgets.
    pub net: NetConfig,
    /// Egress flow control of every connection's replies (SPEC 4).
    pub egress: EgressConfig,
}

impl ServerConfig {
    /// The server's settings from an engine configuration: its `net` limits and timers and
    /// its `egress` flow control.
    ///
    /// ```
    /// use spillway::config::Config;
    /// use spillway::net::server::ServerConfig;
    ///
    /// let config = Config::from_toml_str("[net]\nmax_connections = 500\n").unwrap();
    /// assert_eq!(ServerConfig::from_config(&config).net.max_connections, 500);
    /// ```
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            net: config.net,
            egress: config.egress,
        }
    }

    /// The largest frame accepted, as announced in Welcome: `net.max_frame_bytes`, clamped
    /// into [`FrameLimit`]'s range (a validated configuration is already inside it).
    pub fn frame_limit(&self) -> FrameLimit {
        let bytes = self.net.max_frame_bytes.clamp(
            FrameLimit::MIN.max_frame_bytes(),
            FrameLimit::MAX.max_frame_bytes(),
        );
        FrameLimit::new(bytes).expect("clamped into range")
    }
}

/// Why the server closed a connection, each with its own counter in [`NetStats`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The client closed its side at a frame boundary and every reply was sent.
    PeerClosed,
    /// A read or write failed (reset by the peer, broken pipe).
    IoError,
    /// The server sent an Error frame with this code, then closed.
    Error(ErrorCode),
}

/// The server's counters, summed over its shards: every accepted or refused connection,
/// every closure by reason, and every reply that was not sent, by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Connections accepted and served (handshake or not).
    pub accepted: u64,
    /// Connections accepted only to be told `too_many_connections` and closed.
    pub refused_connection_limit: u64,
    /// Times a shard stopped accepting for [`NetConfig::accept_backoff_ns`] because the
    /// process had no descriptor left.
    pub accept_backoffs: u64,
    /// Connections open now.
    pub open: u64,
    /// Closed after the client's clean close.
    pub closed_peer: u64,
    /// Closed after an I/O error.
    pub closed_io_error: u64,
    /// Closed after an Error frame, by code, in [`ErrorCode::ALL`] order.
    pub closed_error: [u64; ErrorCode::ALL.len()],
    /// Frames decoded.
    pub frames_in: u64,
    /// Submits read.
    pub submits: u64,
    /// Reply frames written.
    pub replies_sent: u64,
    /// Replies dropped by a connection's egress policy, by reason, in
    /// [`EgressDropReason::ALL`] order ([`EgressDropReason::Closed`]: still queued when the
    /// connection closed).
    pub replies_dropped: [u64; EgressDropReason::COUNT],
    /// Completions for a connection that had already closed (their Reply had nowhere to go).
    pub replies_discarded: u64,
    /// Throttle, Pause and Resume frames written.
    pub flow_signals: u64,
}

impl NetStats {
    /// Connections closed with an Error frame of `code`.
    pub fn closed_with(&self, code: ErrorCode) -> u64 {
        self.closed_error[code.index()]
    }

    /// Every reply dropped by the egress policies, all reasons together.
    pub fn replies_dropped_total(&self) -> u64 {
        self.replies_dropped.iter().sum()
    }
}

/// One shard's counters. Written by that shard alone and read by [`TcpServer::stats`]:
/// Relaxed loads and stores suffice, since nothing else is published through them and a
/// reader only needs each value to be one the shard wrote (a sum may be a moment stale).
#[derive(Default)]
struct ShardCounters {
    accepted: AtomicU64,
    refused_connection_limit: AtomicU64,
    accept_backoffs: AtomicU64,
    closed_peer: AtomicU64,
    closed_io_error: AtomicU64,
    closed_error: [AtomicU64; ErrorCode::ALL.len()],
    frames_in: AtomicU64,
    submits: AtomicU64,
    replies_sent: AtomicU64,
    replies_dropped: [AtomicU64; EgressDropReason::COUNT],
    replies_discarded: AtomicU64,
    flow_signals: AtomicU64,
}

/// Adds `count` to a counter only this thread writes: a plain load and store, no
/// read-modify-write (see [`ShardCounters`]).
#[inline]
fn bump(counter: &AtomicU64, count: u64) {
    counter.store(counter.load(Ordering::Relaxed) + count, Ordering::Relaxed);
}

/// What every shard's front end shares.
struct Shared {
    listener: std::net::TcpListener,
    local_addr: SocketAddr,
    config: ServerConfig,
    /// Open connections, all shards together, for [`NetConfig::max_connections`]. An
    /// increment that takes it past the limit is undone at once; Relaxed is enough, as the
    /// count guards no other memory.
    open_connections: AtomicUsize,
    /// One per shard, indexed by shard; made when the first front end starts on a shard.
    counters: Box<[CachePadded<ShardCounters>]>,
}

/// A bound listening socket and the counters of every shard that serves it.
#[derive(Clone)]
pub struct TcpServer {
    shared: Arc<Shared>,
}

impl TcpServer {
    /// Binds `address` (port 0 picks a free port; see [`local_addr`](Self::local_addr)).
    /// Nothing is served until an engine runs [`front_end`](Self::front_end).
    /// Settings out of their ranges are an `InvalidInput` error naming the field.
    pub fn bind(address: impl ToSocketAddrs, config: ServerConfig) -> io::Result<Self> {
        config
            .egress
            .validate()
            .and_then(|()| config.net.validate())
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error.to_string()))?;
        let listener = std::net::TcpListener::bind(address)?;
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        Ok(Self {
            shared: Arc::new(Shared {
                listener,
                local_addr,
                config,
                open_connections: AtomicUsize::new(0),
                // One set per shard an engine may run.
                counters: (0..crate::config::SHARDS_MAX)
                    .map(|_| CachePadded::new(ShardCounters::default()))
                    .collect(),
            }),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The front end for an engine: `handler` serves every message the clients submit.
    pub fn front_end<H: Handler + Clone>(&self, handler: H) -> TcpFrontEnd<H> {
        TcpFrontEnd {
            inner: handler,
            shared: Arc::clone(&self.shared),
            shard: None,
            open_retry_ns: 0,
        }
    }

    /// The counters of every shard, summed.
    pub fn stats(&self) -> NetStats {
        let mut stats = NetStats {
            // Relaxed: a gauge. It also counts, for an instant, a connection being accepted
            // or refused at the limit.
            open: self.shared.open_connections.load(Ordering::Relaxed) as u64,
            ..NetStats::default()
        };
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        for counters in self.shared.counters.iter() {
            stats.accepted += load(&counters.accepted);
            stats.refused_connection_limit += load(&counters.refused_connection_limit);
            stats.accept_backoffs += load(&counters.accept_backoffs);
            stats.closed_peer += load(&counters.closed_peer);
            stats.closed_io_error += load(&counters.closed_io_error);
            for (sum, counter) in stats.closed_error.iter_mut().zip(&counters.closed_error) {
                *sum += load(counter);
            }
            stats.frames_in += load(&counters.frames_in);
            stats.submits += load(&counters.submits);
            stats.replies_sent += load(&counters.replies_sent);
            for (sum, counter) in stats
                .replies_dropped
                .iter_mut()
                .zip(&counters.replies_dropped)
            {
                *sum += load(counter);
            }
            stats.replies_discarded += load(&counters.replies_discarded);
            stats.flow_signals += load(&counters.flow_signals);
        }
        stats
    }
}

/// A [`Handler`] that serves TCP connections on its shard and hands every admitted message
/// to the handler it wraps. Made by [`TcpServer::front_end`]; give it to
/// [`EngineBuilder::handler`](crate::engine::EngineBuilder::handler).
pub struct TcpFrontEnd<H> {
    inner: H,
    shared: Arc<Shared>,
    /// This shard's event loop and connections, opened on the shard's first turn.
    shard: Option<ShardNet>,
    /// When opening them failed: no new try before then.
    open_retry_ns: u64,
}

impl<H: Clone> Clone for TcpFrontEnd<H> {
    /// A front end for another shard: the same handler and listener, no connections.
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
            shard: None,
            open_retry_ns: 0,
        }
    }
}

impl<H: Handler> Handler for TcpFrontEnd<H> {
    fn handle(
        &mut self,
        message: &Message,
        context: &mut ShardContext<'_>,
    ) -> Result<(), HandlerError> {
        self.inner.handle(message, context)
    }

    fn completed(&mut self, completion: &Completion) {
        if completion.connection.0 < CONNECTION_ID_BASE {
            // Work the wrapped handler admitted itself.
            self.inner.completed(completion);
            return;
        }
        match self.shard.as_mut() {
            Some(net) => net.completed(completion),
            None => self.inner.completed(completion),
        }
    }

    fn poll(&mut self, context: &mut ShardContext<'_>) -> usize {
        let own = self.inner.poll(context);
        if self.shard.is_none() {
            if context.now_ns() < self.open_retry_ns {
                return own;
            }
            match ShardNet::open(&self.shared, context) {
                Ok(net) => self.shard = Some(net),
                // Without a Poll or a listener (out of descriptors, say) this shard serves no
                // sockets; the others still do. Counted as an accept backoff, and retried
                // after one, not every turn.
                Err(_) => {
                    self.open_retry_ns =
                        context.now_ns() + self.shared.config.net.accept_backoff_ns;
                    let counters = &self.shared.counters[context.shard()];
                    bump(&counters.accept_backoffs, 1);
                    return own;
                }
            }
        }
        let net = self.shard.as_mut().expect("opened above");
        own + net.turn(context)
    }

    fn wait(&mut self, timeout: Duration) -> bool {
        match self.shard.as_mut() {
            Some(net) if net.sleeps_in_epoll => net.wait(timeout),
            // The wrapped handler's own event source, if it set the waker first.
            _ => self.inner.wait(timeout),
        }
    }

    fn stopped(&mut self, context: &mut ShardContext<'_>) {
        if let Some(net) = self.shard.as_mut() {
            net.shut_down(context.now_ns());
        }
        self.shard = None;
        self.inner.stopped(context);
    }
}

/// A Reply waiting in a connection's egress queue.
#[derive(Clone, Copy, Debug)]
struct Reply {
    message_id: MessageId,
    outcome: Outcome,
}

/// A Reply held back while the `Block` policy's buffer is full, with the time by which it
/// must have found room or be dropped: `block_timeout_ns` after it began to wait, its own
/// and not the reply's ahead of it.
#[derive(Clone, Copy, Debug)]
struct Held {
    reply: Reply,
    deadline_ns: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Accepted; Hello due before the deadline.
    Handshake { deadline_ns: u64 },
    /// Serving.
    Open,
    /// Reading stopped; the last frames go out until the deadline, then it closes.
    Closing {
        deadline_ns: u64,
        reason: CloseReason,
    },
}

/// The frame timeout's clock for one partly received frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FrameTimer {
    /// The frame, by its number in the connection's stream ([`Decoder::frame_in_progress`]).
    frame: u64,
    /// When a read first found it begun and not finished.
    started_ns: u64,
}

impl FrameTimer {
    /// The timer after a read: kept while the same frame is still arriving, started anew
    /// when another one is (a frame completed and the next began), gone when none is.
    fn after_read(timer: Option<FrameTimer>, arriving: Option<u64>, now_ns: u64) -> Option<Self> {
        let frame = arriving?;
        match timer {
            Some(timer) if timer.frame == frame => Some(timer),
            _ => Some(FrameTimer {
                frame,
                started_ns: now_ns,
            }),
        }
    }
}

/// One connection, owned by its shard.
struct Connection {
    stream: TcpStream,
    id: ConnectionId,
    decoder: Decoder<ClientToServer>,
    replies: EgressQueue<Reply>,
    /// Replies the `Block` policy handed back, and those that came after them, offered
    /// again in order before any newer one.
    blocked: std::collections::VecDeque<Held>,
    /// Encoded frames, written from `written_bytes` on.
    out: Vec<u8>,
    written_bytes: usize,
    /// At most one of each is pending; a newer one replaces it (PROTOCOL.md section 8).
    pong: Option<u64>,
    signal: Option<FlowSignal>,
    phase: Phase,
    /// The client closed its side; the connection ends once every reply is out.
    read_closed: bool,
    /// The frame arriving, for the frame timeout: `None` while no frame is partly received.
    frame_timer: Option<FrameTimer>,
    /// Admitted messages whose Reply has not been queued yet.
    in_flight: u32,
    /// A Hello was read and its Welcome is not written yet.
    welcome_due: bool,
    /// An event said the peer closed its side (or the socket failed): read to the end.
    peer_hung_up: bool,
    /// Listed in `ShardNet::dirty` (something to write).
    dirty: bool,
    /// Listed in `ShardNet::read_again` (bytes may be waiting that no event will announce).
    read_pending: bool,
}

impl Connection {
    fn has_output(&self) -> bool {
        self.written_bytes < self.out.len()
            || self.pong.is_some()
            || self.signal.is_some()
            || self.welcome_due
            || !self.replies.is_empty()
    }

    fn is_closing(&self) -> bool {
        matches!(self.phase, Phase::Closing { .. })
    }
}

/// One shard's side of the server.
struct ShardNet {
    shared: Arc<Shared>,
    shard: usize,
    poll: Poll,
    events: Events,
    /// `events` came from a blocking wait (`wait`) and are the next turn's, not yet seen.
    events_waiting: bool,
    /// Its waker is the shard's: the shard may sleep in `epoll_wait` (`wait`). False when
    /// the wrapped handler set the shard's waker first.
    sleeps_in_epoll: bool,
    listener: TcpListener,
    /// Slab of connections: slot `i` is `Token(i + 1)`.
    slots: Vec<Option<Connection>>,
    free_slots: Vec<usize>,
    /// Connection id to slot, looked up per completion: the shard's multiply-shift hasher
    /// for ids, not SipHash.
    by_id: HashMap<u64, usize, BuildHasherDefault<ConnectionIdHasher>>,
    next_id: u64,
    /// Accepting is paused until then (descriptor exhaustion).
    accept_paused_until_ns: u64,
    /// More connections may be waiting than the last turn accepted.
    accept_pending: bool,
    dirty: Vec<usize>,
    /// Connections an event said are writable this turn.
    writable: Vec<usize>,
    /// Connections to read, oldest first: readable by an event, or left over by a turn's
    /// budget (edge-triggered readiness announces only new bytes, so what is left must be
    /// remembered here).
    read_again: std::collections::VecDeque<usize>,
    next_housekeeping_ns: u64,
    /// The time of the current turn: completions, which come between turns, are stamped
    /// with it (the egress queue's clock only orders its own events).
    turn_ns: u64,
    /// Every read lands here first and is then fed to the connection's decoder, which so
    /// keeps only partial frames: 15,000 connections each reading into a buffer of its own
    /// would hold 15,000 read-sized buffers.
    scratch: Box<[u8]>,
}

impl ShardNet {
    /// Opens the shard's `Poll` and listener, and registers the `Poll`'s waker as the
    /// shard's (how producers and the control plane end a `wait`).
    fn open(shared: &Arc<Shared>, context: &mut ShardContext<'_>) -> io::Result<Self> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::from_std(shared.listener.try_clone()?);
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = mio::Waker::new(poll.registry(), WAKER)?;
        let sleeps_in_epoll = context.set_waker(move || {
            // An eventfd write. A failure leaves the shard to its wait timeout.
            let _ = waker.wake();
        });
        Ok(Self {
            shared: Arc::clone(shared),
            shard: context.shard(),
            poll,
            events: Events::with_capacity(shared.config.net.events_per_turn_max),
            events_waiting: false,
            sleeps_in_epoll,
            listener,
            slots: Vec::new(),
            free_slots: Vec::new(),
            by_id: HashMap::default(),
            next_id: CONNECTION_ID_BASE,
            accept_paused_until_ns: 0,
            // Connections may have queued before this shard's first turn.
            accept_pending: true,
            dirty: Vec::new(),
            writable: Vec::new(),
            read_again: std::collections::VecDeque::new(),
            next_housekeeping_ns: 0,
            turn_ns: 0,
            scratch: vec![0; READ_CHUNK_BYTES].into_boxed_slice(),
        })
    }

    fn counters(&self) -> &ShardCounters {
        &self.shared.counters[self.shard]
    }

    /// One turn: write what is due, take readiness, accept, read and admit, and the timers
    /// when due. Returns the units of work done (0: idle).
    fn turn(&mut self, context: &mut ShardContext<'_>) -> usize {
        let now_ns = context.now_ns();
        self.turn_ns = now_ns;
        let mut work = self.flush_dirty(now_ns);
        // Events a blocking `wait` collected are this turn's: no second system call.
        if !std::mem::take(&mut self.events_waiting)
            && self
                .poll
                .poll(&mut self.events, Some(Duration::ZERO))
                .is_err()
        {
            // EINTR and the like: the next turn polls again.
            return work;
        }
        // Reused from turn to turn, so a turn allocates nothing for its writable list.
        let mut writable = std::mem::take(&mut self.writable);
        let mut accept = self.accept_pending;
        for event in self.events.iter() {
            if event.token() == LISTENER {
                accept = true;
                continue;
            }
            if event.token() == WAKER {
                // Only ends a `wait`: what woke it is in the rings, which the shard reads.
                continue;
            }
            let slot = event.token().0 - 1;
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                if let Some(connection) = self.slots.get_mut(slot).and_then(Option::as_mut) {
                    connection.peer_hung_up |= event.is_read_closed() || event.is_error();
                    list_for_reading(&mut self.read_again, slot, connection);
                }
            }
            if event.is_writable() {
                writable.push(slot);
            }
        }
        if accept && now_ns >= self.accept_paused_until_ns {
            work += self.accept(context, now_ns);
        }
        // At most `frames_per_turn_max` frames a turn, like a bounded batch from a ring: the
        // shard's handlers run between turns, so admission cannot outrun them by thousands
        // of messages per turn (what it does not take waits in the kernel, and is read next
        // turn).
        // Connections are served in the order they became readable; those the budget does
        // not reach stay queued, in place, for the next turn.
        let mut budget = self.shared.config.net.frames_per_turn_max;
        for _ in 0..self.read_again.len() {
            if budget == 0 {
                break;
            }
            let Some(slot) = self.read_again.pop_front() else {
                break;
            };
            if let Some(connection) = self.slots.get_mut(slot).and_then(Option::as_mut) {
                connection.read_pending = false;
                work += self.read(slot, context, &mut budget);
            }
        }
        for &slot in &writable {
            work += self.flush(slot, now_ns);
        }
        writable.clear();
        self.writable = writable;
        work += self.flush_dirty(now_ns);
        if now_ns >= self.next_housekeeping_ns {
            self.next_housekeeping_ns = now_ns + self.shared.config.net.housekeeping_interval_ns;
            work += self.housekeeping(now_ns);
        }
        work
    }

    /// Blocks in `epoll_wait` for at most `timeout` (rounded up to a millisecond) or until
    /// a socket event or the waker, and keeps the events for the next turn. Returns false,
    /// without waiting, when it holds work that no event will announce (output to write,
    /// reads a turn's budget left over): the shard then parks for its usual short while.
    /// An accept paused by descriptor exhaustion is a timer, which the timeout serves.
    fn wait(&mut self, timeout: Duration) -> bool {
        if !self.dirty.is_empty() || !self.read_again.is_empty() {
            return false;
        }
        // An error (EINTR) leaves no events; the next turn polls as usual.
        self.events_waiting = self.poll.poll(&mut self.events, Some(timeout)).is_ok();
        true
    }

    /// Accepts up to the per-turn limit.
    fn accept(&mut self, context: &mut ShardContext<'_>, now_ns: u64) -> usize {
        self.accept_pending = false;
        let config = self.shared.config;
        let mut accepted = 0;
        while accepted < config.net.accepts_per_turn_max {
            let (mut stream, _) = match self.listener.accept() {
                Ok(pair) => pair,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return accepted,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) if is_descriptor_exhaustion(&error) => {
                    self.accept_paused_until_ns = now_ns + config.net.accept_backoff_ns;
                    self.accept_pending = true;
                    bump(&self.counters().accept_backoffs, 1);
                    return accepted;
                }
                // ECONNABORTED and the like: that one connection is gone; go on.
                Err(_) => continue,
            };
            accepted += 1;
            let open = self.shared.open_connections.fetch_add(1, Ordering::Relaxed);
            if open >= config.net.max_connections {
                self.shared.open_connections.fetch_sub(1, Ordering::Relaxed);
                refuse_at_limit(&mut stream);
                bump(&self.counters().refused_connection_limit, 1);
                continue;
            }
            if self.admit_connection(stream, context, now_ns).is_err() {
                self.shared.open_connections.fetch_sub(1, Ordering::Relaxed);
                bump(&self.counters().closed_io_error, 1);
            }
        }
        // The limit, not the backlog, stopped us: look again next turn without an event.
        self.accept_pending = true;
        accepted
    }

    fn admit_connection(
        &mut self,
        mut stream: TcpStream,
        context: &ShardContext<'_>,
        now_ns: u64,
    ) -> io::Result<()> {
        let config = self.shared.config;
        // Replies are small and latency matters more than packet count.
        stream.set_nodelay(true)?;
        let id = context
            .owned_connection_from(self.next_id)
            .ok_or_else(|| io::Error::other("connection ids exhausted"))?;
        self.next_id = id.0 + 1;
        let slot = self.free_slots.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        if let Err(error) = self.poll.registry().register(
            &mut stream,
            Token(slot + 1),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            self.free_slots.push(slot);
            return Err(error);
        }
        let replies = EgressQueue::new(config.egress).expect("validated in TcpServer::bind");
        self.slots[slot] = Some(Connection {
            stream,
            id,
            decoder: Decoder::new(config.frame_limit()),
            replies,
            blocked: std::collections::VecDeque::new(),
            out: Vec::new(),
            written_bytes: 0,
            pong: None,
            signal: None,
            phase: Phase::Handshake {
                deadline_ns: now_ns + config.net.hello_timeout_ns,
            },
            read_closed: false,
            frame_timer: None,
            in_flight: 0,
            welcome_due: false,
            peer_hung_up: false,
            dirty: false,
            // Bytes sent before our registration raise no edge: read once anyway.
            read_pending: true,
        });
        self.read_again.push_back(slot);
        self.by_id.insert(id.0, slot);
        let counters = self.counters();
        bump(&counters.accepted, 1);
        Ok(())
    }

    /// Reads what the connection has (up to the per-turn limit), decodes and serves every
    /// whole frame. Returns the frames served.
    fn read(&mut self, slot: usize, context: &mut ShardContext<'_>, budget: &mut usize) -> usize {
        let config = self.shared.config;
        let now_ns = context.now_ns();
        let Some(connection) = self.slots[slot].as_ref() else {
            return 0;
        };
        if connection.is_closing() || connection.read_closed || !connection.blocked.is_empty() {
            // Closing: reading stopped. Blocked (`Block` policy): no Submit is read until the
            // send buffer has room again; `flush` puts it back on the read list then.
            return 0;
        }
        // Whole frames an earlier turn's budget left in the decoder go first.
        let mut served = self.serve_frames(slot, context, budget);
        if *budget == 0 {
            self.read_later(slot);
            return served;
        }
        let Some(connection) = self.slots[slot].as_mut() else {
            return served;
        };
        if connection.is_closing() {
            return served;
        }
        let mut read_bytes = 0;
        let mut peer_closed = false;
        let mut io_failed = false;
        while read_bytes < config.net.read_bytes_per_turn_max {
            match connection.stream.read(&mut self.scratch) {
                Ok(0) => {
                    peer_closed = true;
                    break;
                }
                Ok(count) => {
                    connection.decoder.feed(&self.scratch[..count]);
                    read_bytes += count;
                    if count < self.scratch.len() && !connection.peer_hung_up {
                        // A short read emptied the socket's receive queue: asking again would
                        // only return WouldBlock (a system call per message at these rates).
                        // Bytes that arrive later raise a new edge, so nothing is missed. Not
                        // once the peer has closed: its end of stream may have come with these
                        // bytes, in the same edge, and must still be read.
                        break;
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    io_failed = true;
                    break;
                }
            }
        }
        served += self.serve_frames(slot, context, budget);
        if read_bytes >= config.net.read_bytes_per_turn_max || *budget == 0 {
            // More may be waiting than this turn takes (an end of stream is read again).
            self.read_later(slot);
            if *budget == 0 {
                return served;
            }
        }
        let Some(connection) = self.slots[slot].as_mut() else {
            return served;
        };
        if connection.is_closing() {
            return served;
        }
        if io_failed {
            self.close_now(slot, CloseReason::IoError, now_ns);
            return served;
        }
        // The frame timeout runs from a frame's first byte to its last, frame by frame.
        connection.frame_timer = FrameTimer::after_read(
            connection.frame_timer,
            connection.decoder.frame_in_progress(),
            now_ns,
        );
        if peer_closed {
            match connection.decoder.finish() {
                Ok(()) => {
                    connection.read_closed = true;
                    self.end_if_done(slot, now_ns);
                }
                Err(error) => self.close_with_protocol_error(slot, &error, now_ns),
            }
        }
        served
    }

    /// Puts the connection on the list read next turn without an event (edge-triggered
    /// readiness announces only new bytes).
    fn read_later(&mut self, slot: usize) {
        if let Some(connection) = self.slots[slot].as_mut() {
            list_for_reading(&mut self.read_again, slot, connection);
        }
    }

    /// Serves the whole frames the connection's decoder holds, at most `budget` of them
    /// (and takes them from it).
    fn serve_frames(
        &mut self,
        slot: usize,
        context: &mut ShardContext<'_>,
        budget: &mut usize,
    ) -> usize {
        let now_ns = context.now_ns();
        let mut served = 0u64;
        let mut submits = 0u64;
        let mut violation = None;
        {
            let Some(connection) = self.slots[slot].as_mut() else {
                return 0;
            };
            let Connection {
                decoder,
                replies,
                blocked,
                id,
                phase,
                pong,
                signal,
                in_flight,
                welcome_due,
                ..
            } = connection;
            loop {
                if !blocked.is_empty() || served as usize >= *budget {
                    // The `Block` policy holds the rest until the send buffer has room; the
                    // turn's budget leaves the rest for the next turn.
                    break;
                }
                let frame = match decoder.next_frame() {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break,
                    Err(error) => {
                        violation = Some(error);
                        break;
                    }
                };
                served += 1;
                match frame {
                    ClientFrame::Hello => {
                        // The Welcome goes out on the next flush, before anything else.
                        *phase = Phase::Open;
                        *welcome_due = true;
                    }
                    ClientFrame::Submit(submit) => {
                        submits += 1;
                        let message = submit.to_message(*id);
                        let message_id = message.id;
                        match context.admit(message) {
                            Ok(()) => *in_flight += 1,
                            Err(outcome) => {
                                let reply = Reply {
                                    message_id,
                                    outcome,
                                };
                                offer_reply(
                                    replies,
                                    blocked,
                                    signal,
                                    reply,
                                    now_ns,
                                    &self.shared.counters[self.shard],
                                );
                            }
                        }
                    }
                    ClientFrame::Cancel { message_id } => {
                        // Its Reply (`cancelled`) comes through `completed`; a message not
                        // queued is left alone (PROTOCOL.md section 5.3).
                        context.cancel(*id, message_id);
                    }
                    ClientFrame::Ping { nonce } => *pong = Some(nonce),
                }
            }
        }
        *budget -= served as usize;
        let counters = &self.shared.counters[self.shard];
        bump(&counters.frames_in, served);
        bump(&counters.submits, submits);
        let connection = self.slots[slot].as_mut().expect("still open");
        if served > 0 {
            mark_dirty(&mut self.dirty, slot, connection);
        }
        if let Some(error) = violation {
            self.close_with_protocol_error(slot, &error, now_ns);
        } else if matches!(connection.phase, Phase::Open) && served > 0 {
            self.check_health(slot, now_ns);
        }
        served as usize
    }

    /// A completion for one of this shard's connections: its Reply joins the send buffer.
    fn completed(&mut self, completion: &Completion) {
        let Some(&slot) = self.by_id.get(&completion.connection.0) else {
            bump(&self.counters().replies_discarded, 1);
            return;
        };
        let now_ns = self.turn_ns;
        let counters = &self.shared.counters[self.shard];
        let connection = self.slots[slot].as_mut().expect("by_id lists open slots");
        connection.in_flight = connection.in_flight.saturating_sub(1);
        if connection.is_closing() {
            // Replies of a closing connection are discarded with it (PROTOCOL.md 7.3).
            bump(&counters.replies_discarded, 1);
            return;
        }
        let reply = Reply {
            message_id: completion.message,
            outcome: completion.outcome,
        };
        offer_reply(
            &mut connection.replies,
            &mut connection.blocked,
            &mut connection.signal,
            reply,
            now_ns,
            counters,
        );
        mark_dirty(&mut self.dirty, slot, connection);
        self.check_health(slot, now_ns);
    }

    /// Closes a connection whose drop rate makes it unhealthy, when configured to.
    fn check_health(&mut self, slot: usize, now_ns: u64) {
        // Health acts only by disconnecting, and only when configured to: otherwise there
        // is nothing to compute per completion.
        if !self.shared.config.egress.disconnect_unhealthy {
            return;
        }
        let Some(connection) = self.slots[slot].as_mut() else {
            return;
        };
        if let EgressHealth::Unhealthy {
            recommend_disconnect: true,
        } = connection.replies.health(now_ns)
        {
            self.close_with(
                slot,
                ErrorCode::Disconnected,
                "reader too slow: over the unhealthy drop rate",
                now_ns,
            );
        }
    }

    fn flush_dirty(&mut self, now_ns: u64) -> usize {
        let mut dirty = std::mem::take(&mut self.dirty);
        let mut work = 0;
        for &slot in &dirty {
            if let Some(connection) = self.slots.get_mut(slot).and_then(Option::as_mut) {
                connection.dirty = false;
                work += self.flush(slot, now_ns);
            }
        }
        // Keep the allocation, unless a flush marked something dirty meanwhile.
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
        work
    }

    /// Writes what the connection has to say until the socket takes no more. Returns the
    /// frames encoded.
    fn flush(&mut self, slot: usize, now_ns: u64) -> usize {
        let config = self.shared.config;
        let counters = &self.shared.counters[self.shard];
        let Some(connection) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
            return 0;
        };
        let mut frames = 0;
        let mut failed = false;
        loop {
            if connection.written_bytes == connection.out.len() {
                connection.out.clear();
                connection.written_bytes = 0;
                frames += fill(connection, &config, counters, now_ns);
                if connection.out.is_empty() {
                    break;
                }
            }
            match connection
                .stream
                .write(&connection.out[connection.written_bytes..])
            {
                Ok(0) => {
                    failed = true;
                    break;
                }
                Ok(count) => connection.written_bytes += count,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            let reason = match connection.phase {
                Phase::Closing { reason, .. } => reason,
                _ => CloseReason::IoError,
            };
            self.close_now(slot, reason, now_ns);
            return frames;
        }
        // The `Block` policy may have room again: read what was held back.
        if !connection.blocked.is_empty() {
            retry_blocked(connection, now_ns, counters);
            if connection.blocked.is_empty() {
                list_for_reading(&mut self.read_again, slot, connection);
            }
        }
        self.end_if_done(slot, now_ns);
        frames
    }

    /// Ends a closing connection whose last frames are out, and a half-closed one whose
    /// every reply is out.
    fn end_if_done(&mut self, slot: usize, now_ns: u64) {
        let Some(connection) = self.slots[slot].as_ref() else {
            return;
        };
        let drained = !connection.has_output() && connection.blocked.is_empty();
        match connection.phase {
            Phase::Closing { reason, .. } if connection.written_bytes == connection.out.len() => {
                self.close_now(slot, reason, now_ns);
            }
            Phase::Open | Phase::Handshake { .. }
                if connection.read_closed && connection.in_flight == 0 && drained =>
            {
                self.close_now(slot, CloseReason::PeerClosed, now_ns);
            }
            _ => {}
        }
    }

    fn close_with_protocol_error(&mut self, slot: usize, error: &ProtocolError, now_ns: u64) {
        let Some(connection) = self.slots[slot].as_mut() else {
            return;
        };
        // Frames already queued go first (PROTOCOL.md 7.3): replies, then the Error.
        drain_replies_into_out(connection, now_ns, &self.shared.counters[self.shard]);
        encode_error_reply(error, &mut connection.out);
        self.begin_closing(slot, CloseReason::Error(error.code()), now_ns);
    }

    /// Queues an Error frame of `code` after what is queued, stops reading, and closes once
    /// it is written (or at the close timeout).
    fn close_with(&mut self, slot: usize, code: ErrorCode, detail: &str, now_ns: u64) {
        let Some(connection) = self.slots[slot].as_mut() else {
            return;
        };
        if connection.is_closing() {
            return;
        }
        drain_replies_into_out(connection, now_ns, &self.shared.counters[self.shard]);
        ServerFrame::Error { code, detail }.encode(&mut connection.out);
        self.begin_closing(slot, CloseReason::Error(code), now_ns);
    }

    fn begin_closing(&mut self, slot: usize, reason: CloseReason, now_ns: u64) {
        let deadline_ns = now_ns + self.shared.config.net.close_timeout_ns;
        let connection = self.slots[slot].as_mut().expect("checked by the callers");
        connection.phase = Phase::Closing {
            deadline_ns,
            reason,
        };
        // Nothing more is read, so no frame is awaited.
        connection.frame_timer = None;
        // Nothing more is read; what the client sends from now on is discarded.
        let _ = connection.stream.shutdown(Shutdown::Read);
        mark_dirty(&mut self.dirty, slot, connection);
    }

    /// Closes the socket now and counts the closure.
    fn close_now(&mut self, slot: usize, reason: CloseReason, now_ns: u64) {
        let Some(mut connection) = self.slots[slot].take() else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut connection.stream);
        let _ = connection.stream.shutdown(Shutdown::Both);
        let dropped_at_close = connection.replies.close(now_ns) + connection.blocked.len() as u64;
        self.by_id.remove(&connection.id.0);
        self.free_slots.push(slot);
        self.shared.open_connections.fetch_sub(1, Ordering::Relaxed);
        let counters = self.counters();
        bump(
            &counters.replies_dropped[EgressDropReason::Closed.index()],
            dropped_at_close,
        );
        match reason {
            CloseReason::PeerClosed => bump(&counters.closed_peer, 1),
            CloseReason::IoError => bump(&counters.closed_io_error, 1),
            CloseReason::Error(code) => bump(&counters.closed_error[code.index()], 1),
        }
    }

    /// The timers: hello and frame timeouts, close deadlines, time-made flow signals.
    fn housekeeping(&mut self, now_ns: u64) -> usize {
        let config = self.shared.config;
        let mut work = 0;
        for slot in 0..self.slots.len() {
            let Some(connection) = self.slots[slot].as_mut() else {
                continue;
            };
            match connection.phase {
                Phase::Handshake { deadline_ns } if now_ns >= deadline_ns => {
                    work += 1;
                    self.close_with(
                        slot,
                        ErrorCode::Timeout,
                        "no hello within the hello timeout",
                        now_ns,
                    );
                    continue;
                }
                Phase::Closing {
                    deadline_ns,
                    reason,
                } if now_ns >= deadline_ns => {
                    work += 1;
                    self.close_now(slot, reason, now_ns);
                    continue;
                }
                _ => {}
            }
            // Not while the server owes the connection a read (a turn's budget left its
            // bytes unread, or the `Block` policy holds its Submits back): the rest of the
            // frame may have come, unseen. The first read after that judges the frame again.
            let read_owed = connection.read_pending || !connection.blocked.is_empty();
            if let Some(timer) = connection.frame_timer.filter(|_| !read_owed) {
                if now_ns.saturating_sub(timer.started_ns) >= config.net.frame_timeout_ns {
                    work += 1;
                    self.close_with(
                        slot,
                        ErrorCode::Timeout,
                        "a frame was begun and not finished within the frame timeout",
                        now_ns,
                    );
                    continue;
                }
            }
            if let Some(signal) = connection.replies.poll_signal(now_ns) {
                connection.signal = Some(signal);
                mark_dirty(&mut self.dirty, slot, connection);
                work += 1;
            }
            if !connection.blocked.is_empty() {
                mark_dirty(&mut self.dirty, slot, connection);
            }
        }
        work
    }

    /// Shutdown: every connection gets its remaining Replies and `shutting_down`, within
    /// the close timeout, then closes.
    fn shut_down(&mut self, now_ns: u64) {
        for slot in 0..self.slots.len() {
            if self.slots[slot].is_some() {
                self.close_with(
                    slot,
                    ErrorCode::ShuttingDown,
                    "the server is shutting down",
                    now_ns,
                );
            }
        }
        let started = std::time::Instant::now();
        let close_timeout = Duration::from_nanos(self.shared.config.net.close_timeout_ns);
        while self.slots.iter().any(Option::is_some) && started.elapsed() < close_timeout {
            let _ = self
                .poll
                .poll(&mut self.events, Some(Duration::from_millis(5)));
            let now_ns = now_ns + started.elapsed().as_nanos() as u64;
            for slot in 0..self.slots.len() {
                if self.slots[slot].is_some() {
                    self.flush(slot, now_ns);
                }
            }
        }
        for slot in 0..self.slots.len() {
            if let Some(connection) = self.slots[slot].as_ref() {
                let reason = match connection.phase {
                    Phase::Closing { reason, .. } => reason,
                    _ => CloseReason::Error(ErrorCode::ShuttingDown),
                };
                self.close_now(slot, reason, now_ns);
            }
        }
    }
}

/// Lists the connection on `read_again` (once), the reading counterpart of `mark_dirty`;
/// a free function so that callers holding other parts of `ShardNet` borrowed can use it.
fn list_for_reading(
    read_again: &mut std::collections::VecDeque<usize>,
    slot: usize,
    connection: &mut Connection,
) {
    if !connection.read_pending {
        connection.read_pending = true;
        read_again.push_back(slot);
    }
}

fn mark_dirty(dirty: &mut Vec<usize>, slot: usize, connection: &mut Connection) {
    if !connection.dirty {
        connection.dirty = true;
        dirty.push(slot);
    }
}

/// Offers a Reply to the send buffer, after any the `Block` policy holds, and counts what
/// the policy drops.
fn offer_reply(
    replies: &mut EgressQueue<Reply>,
    blocked: &mut std::collections::VecDeque<Held>,
    signal: &mut Option<FlowSignal>,
    reply: Reply,
    now_ns: u64,
    counters: &ShardCounters,
) {
    if !blocked.is_empty() {
        // Behind a held reply the buffer is full: this one waits from now too.
        blocked.push_back(Held {
            reply,
            deadline_ns: now_ns.saturating_add(replies.config().block_timeout_ns),
        });
        return;
    }
    if let Some(held) = settle_offer(replies.offer(reply, now_ns), signal, counters) {
        blocked.push_back(held);
    }
}

/// Offers the replies the `Block` policy held back, oldest first, while the buffer takes
/// them (or its block timeout drops them).
fn retry_blocked(connection: &mut Connection, now_ns: u64, counters: &ShardCounters) {
    while let Some(Held { reply, deadline_ns }) = connection.blocked.pop_front() {
        let offer = connection.replies.offer_again(reply, deadline_ns, now_ns);
        if let Some(held) = settle_offer(offer, &mut connection.signal, counters) {
            connection.blocked.push_front(held);
            return;
        }
    }
}

/// Books what an offer did: drops counted by reason, a flow signal now due kept in
/// `signal`. Returns the reply the `Block` policy handed back, if it did.
fn settle_offer(
    offer: Offer<Reply>,
    signal: &mut Option<FlowSignal>,
    counters: &ShardCounters,
) -> Option<Held> {
    match offer {
        Offer::Queued { signal: due } => {
            if due.is_some() {
                *signal = due;
            }
        }
        Offer::Dropped { reason, .. } => bump(&counters.replies_dropped[reason.index()], 1),
        Offer::Blocked { item, deadline_ns } => {
            return Some(Held {
                reply: item,
                deadline_ns,
            })
        }
        Offer::DroppedAll {
            dropped_count,
            signal: due,
        } => {
            bump(
                &counters.replies_dropped[EgressDropReason::DropAll.index()],
                u64::from(dropped_count),
            );
            if due.is_some() {
                *signal = due;
            }
        }
    }
    None
}

/// Encodes what is due into the (empty) write buffer: the Welcome after a Hello, then the
/// frames that do not wait behind Replies (Pong, the flow signal, RepliesDropped), then
/// Replies up to the buffer's limit. Returns the frames encoded.
fn fill(
    connection: &mut Connection,
    config: &ServerConfig,
    counters: &ShardCounters,
    now_ns: u64,
) -> usize {
    let mut frames = 0;
    if connection.is_closing() {
        // Its last frames were queued when it began closing.
        return 0;
    }
    if connection.welcome_due {
        connection.welcome_due = false;
        ServerFrame::Welcome {
            connection: connection.id,
            frame_limit: config.frame_limit(),
            send_buffer_replies: core::num::NonZeroU32::new(config.egress.buffer_capacity)
                .expect("validated: at least 1"),
        }
        .encode(&mut connection.out);
        frames += 1;
    }
    if let Some(nonce) = connection.pong.take() {
        ServerFrame::Pong { nonce }.encode(&mut connection.out);
        frames += 1;
    }
    if let Some(signal) = connection.signal.take() {
        let frame = match signal {
            FlowSignal::Throttle { delay_ns } => ServerFrame::Throttle { delay_ns },
            FlowSignal::Pause { duration_ns } => ServerFrame::Pause { duration_ns },
            FlowSignal::Resume => ServerFrame::Resume,
        };
        frame.encode(&mut connection.out);
        bump(&counters.flow_signals, 1);
        frames += 1;
    }
    if let Some(count) = core::num::NonZeroU64::new(connection.replies.dropped_since_last_report())
    {
        ServerFrame::RepliesDropped { count }.encode(&mut connection.out);
        frames += 1;
    }
    let replies = encode_replies(connection, now_ns, config.net.write_buffer_bytes_max);
    if replies > 0 {
        bump(&counters.replies_sent, replies);
        if let Some(signal) = connection.replies.poll_signal(now_ns) {
            // Written on the next fill, ahead of any later Reply.
            connection.signal = Some(signal);
        }
    }
    frames + replies as usize
}

/// Moves every queued Reply (and a pending Pong or signal) into the write buffer, for a
/// connection about to get its last frame.
fn drain_replies_into_out(connection: &mut Connection, now_ns: u64, counters: &ShardCounters) {
    if let Some(nonce) = connection.pong.take() {
        ServerFrame::Pong { nonce }.encode(&mut connection.out);
    }
    connection.signal = None;
    let replies = encode_replies(connection, now_ns, usize::MAX);
    bump(&counters.replies_sent, replies);
}

/// Encodes queued Replies into the write buffer while it holds under `out_bytes_max`;
/// returns how many.
fn encode_replies(connection: &mut Connection, now_ns: u64, out_bytes_max: usize) -> u64 {
    let mut replies = 0;
    while connection.out.len() < out_bytes_max {
        let Some(reply) = connection.replies.pop(now_ns) else {
            break;
        };
        ServerFrame::Reply {
            message_id: reply.message_id,
            outcome: reply.outcome,
        }
        .encode(&mut connection.out);
        replies += 1;
    }
    replies
}

/// Tells a connection over the limit why it is refused, without waiting: a fresh socket's
/// send buffer is empty, so the few bytes go out at once or not at all.
fn refuse_at_limit(stream: &mut TcpStream) {
    let mut frame = Vec::new();
    ServerFrame::Error {
        code: ErrorCode::TooManyConnections,
        detail: "the server is at its connection limit",
    }
    .encode(&mut frame);
    let _ = stream.write(&frame);
    let _ = stream.shutdown(Shutdown::Both);
}

fn is_descriptor_exhaustion(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE) | Some(libc::ENFILE)
    )
}
