//! [`Client`]: one blocking TCP connection speaking `docs/PROTOCOL.md`.

use core::num::{NonZeroU32, NonZeroU64};
use core::time::Duration;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};

use bytes::Bytes;

use super::flow::FlowState;
use super::load::{LoadAdaptation, LoadSource, Pace};
use super::ClientError;
use crate::backoff::{backoff_delay, duration_ns, BackoffConfig, BackpressureStats, SplitMix64};
use crate::clock::Clock;
use crate::message::{ConnectionId, MessageId};
use crate::net::egress::FlowSignal;
use crate::net::protocol::{
    ClientFrame, Decoder, FrameLimit, FrameType, ProtocolError, ProtocolVersion, ServerFrame,
    ServerToClient, Submit,
};
use crate::outcome::{ErrorDetail, Outcome, RefusalReason};

/// A message to submit: id, tenant, priority, role and payload, exactly the fields of the
/// Submit frame (`docs/PROTOCOL.md` section 5.2). The payload is borrowed, so
/// [`Client::send_with_backpressure`] can resend it without copying.
pub type SubmitRequest<'payload> = Submit<'payload>;

/// Bytes read from the socket at a time, at least. Server frames are small but for Replies
/// with a response, so one read usually takes every frame waiting; the decoder makes room
/// for a larger frame as it arrives.
const READ_CHUNK_BYTES: usize = 4096;

/// Settings of a [`Client`]. Every wait the client makes is bounded by one of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// The bound on establishing the TCP connection, per address tried (5 s). Not zero.
    pub connect_timeout: Duration,
    /// The bound on each write, and on the handshake's wait for the Welcome (10 s). Not
    /// zero.
    pub io_timeout: Duration,
    /// The bound on [`Client::send_with_backpressure`]'s wait for each Reply (30 s).
    pub reply_timeout: Duration,
    /// The bound on the wait the server's flow signals impose before one Submit (60 s);
    /// past it, [`Client::submit`] gives up with [`ClientError::Timeout`] and sends nothing.
    pub flow_wait_max: Duration,
    /// The most Submits without a Reply taken by the caller (1000). The server's
    /// `send_buffer_replies` lowers it: a client within it never has a Reply dropped.
    pub max_in_flight: NonZeroU32,
    /// The seed of the backoff jitter; `None` seeds from the time of day and the
    /// connection, so that clients do not retry in step. Set it for repeatable runs.
    pub random_seed: Option<u64>,
    /// The protocol version to speak ([`ProtocolVersion::LATEST`], 2). Version 1 is for a
    /// server that speaks only it: its Replies carry no response and no error detail.
    pub protocol_version: ProtocolVersion,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            io_timeout: Duration::from_secs(10),
            reply_timeout: Duration::from_secs(30),
            flow_wait_max: Duration::from_secs(60),
            max_in_flight: Self::DEFAULT_MAX_IN_FLIGHT,
            random_seed: None,
            protocol_version: ProtocolVersion::LATEST,
        }
    }
}

impl ClientConfig {
    /// The default of [`ClientConfig::max_in_flight`]: 1000, the server's default
    /// `send_buffer_replies`.
    pub const DEFAULT_MAX_IN_FLIGHT: NonZeroU32 = NonZeroU32::new(1000).unwrap();

    /// Checks what the types cannot: the timeouts a socket takes are not zero. The error
    /// names the field.
    pub fn validate(&self) -> Result<(), ClientError> {
        for (field, timeout) in [
            ("connect_timeout", self.connect_timeout),
            ("io_timeout", self.io_timeout),
        ] {
            if timeout.is_zero() {
                return Err(ClientError::InvalidSetting {
                    field,
                    reason: "a socket timeout cannot be zero".into(),
                });
            }
        }
        Ok(())
    }
}

/// The Reply to one Submit: its outcome, and what the handler said.
///
/// ```
/// use std::time::Duration;
/// use spillway::client::{BackoffConfig, Client, ClientConfig, SubmitRequest};
/// use spillway::config::Config;
/// use spillway::engine::Engine;
/// use spillway::handler::HandlerError;
/// use spillway::message::{Message, MessageId, Priority, Role, TenantId};
/// use spillway::net::server::{ServerConfig, TcpServer};
/// use spillway::outcome::{FailureReason, Outcome};
///
/// // A server whose handler answers `ping` with `pong` and refuses anything else.
/// let server = TcpServer::bind("127.0.0.1:0", ServerConfig::default())?;
/// let handler = server.front_end(|message: &Message| match &message.payload[..] {
///     b"ping" => Ok("pong"),
///     _ => Err(HandlerError::invalid("expected ping")),
/// });
/// let config = Config { shards: 1, ..Config::default() };
/// let engine = Engine::builder().config(config).handler(handler).start()?;
///
/// let mut client = Client::connect(server.local_addr(), ClientConfig::default())?;
/// let (tenant, priority, role) = (TenantId(0), Priority::P1, Role::Session);
/// let mut send = |id, payload| {
///     let request = SubmitRequest { message_id: MessageId(id), tenant, priority, role, payload };
///     client.send_with_backpressure(request, &BackoffConfig::default())
/// };
/// let reply = send(1, b"ping")?;
/// assert_eq!((reply.outcome, &reply.response[..]), (Outcome::Delivered, &b"pong"[..]));
/// assert_eq!(reply.detail, None);
/// let reply = send(2, b"pong")?;
/// let invalid = Outcome::Failed { reason: FailureReason::InvalidRequest };
/// assert_eq!((reply.outcome, reply.response.len()), (invalid, 0));
/// assert_eq!(reply.detail.unwrap().as_str(), "expected ping");
/// assert_eq!(client.close(Duration::from_secs(5))?.unanswered, 0);
/// engine.shutdown();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientReply {
    /// The id from the Submit.
    pub message_id: MessageId,
    /// What became of it.
    pub outcome: Outcome,
    /// The handler's response when it was delivered (possibly empty); empty otherwise, and
    /// always in protocol version 1.
    pub response: Bytes,
    /// The handler's error text when it failed with one (at most
    /// [`ErrorDetail::MAX_BYTES`]); `None` otherwise, and always in protocol version 1.
    pub detail: Option<ErrorDetail>,
}

/// What the server said, as [`Client::next_event`] hands it out. An Error frame is not an
/// event: it ends the connection and comes back as [`ClientError::Server`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientEvent {
    /// The Reply to a Submit.
    Reply(ClientReply),
    /// The server dropped `count` Replies (`docs/PROTOCOL.md` section 9): that many
    /// Submits in flight will get none, and the client no longer counts them in flight.
    RepliesDropped {
        /// Replies dropped, summed over the frames not yet taken.
        count: NonZeroU64,
    },
    /// A flow signal (Throttle, Pause, Resume), already applied to [`Client::flow`].
    Flow(FlowSignal),
    /// The answer to a [`Client::ping`].
    Pong {
        /// The Ping's nonce.
        nonce: u64,
    },
}

/// What [`Client::close`] collected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseReport {
    /// Every event not yet taken, those read after the half-close included.
    pub events: Vec<ClientEvent>,
    /// Submits that got neither a Reply nor a RepliesDropped count before the end: their
    /// outcome is unknown.
    pub unanswered: u32,
    /// Whether the server closed its side before the timeout (if not, the client closed
    /// the connection at the timeout).
    pub server_closed: bool,
}

/// What [`Client::send_batch_adaptive`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdaptiveBatch {
    /// Requests submitted, from the front of the slice given.
    pub sent: usize,
    /// The pace used: at most `pace.batch` were sent, then the client waited `pace.wait`.
    pub pace: Pace,
}

/// Where the connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ConnectionState {
    /// Both directions open.
    Open,
    /// The client shut down its sending side ([`Client::close`]) and reads what is left.
    SendClosed,
    /// Closed: by the server, by a failure, or at the end of [`Client::close`].
    Closed,
}

/// What one decoded server frame amounts to.
enum Received {
    /// The handshake's answer.
    Welcome {
        connection: ConnectionId,
        frame_limit: FrameLimit,
        send_buffer_replies: NonZeroU32,
    },
    /// Anything else but an Error (which is returned as an error).
    Event(ClientEvent),
}

/// Events read while the client waited for something else, kept for
/// [`Client::next_event`]. Bounded: the replies are at most the in-flight limit (a Submit
/// needs room among the Replies in flight *and* those kept here), and the other events are
/// merged as the server merges them (`docs/PROTOCOL.md` section 8): the newest flow signal,
/// the sum of the dropped counts, the newest Pong.
#[derive(Debug, Default)]
struct Pending {
    flow: Option<FlowSignal>,
    replies_dropped: u64,
    pong_nonce: Option<u64>,
    replies: VecDeque<ClientReply>,
}

impl Pending {
    fn push(&mut self, event: ClientEvent) {
        match event {
            ClientEvent::Reply(reply) => self.replies.push_back(reply),
            ClientEvent::RepliesDropped { count } => {
                self.replies_dropped = self.replies_dropped.saturating_add(count.get());
            }
            ClientEvent::Flow(signal) => self.flow = Some(signal),
            ClientEvent::Pong { nonce } => self.pong_nonce = Some(nonce),
        }
    }

    /// Signals first: they overtake Replies on the wire too.
    fn pop(&mut self) -> Option<ClientEvent> {
        if let Some(signal) = self.flow.take() {
            return Some(ClientEvent::Flow(signal));
        }
        if let Some(count) = NonZeroU64::new(core::mem::take(&mut self.replies_dropped)) {
            return Some(ClientEvent::RepliesDropped { count });
        }
        if let Some(nonce) = self.pong_nonce.take() {
            return Some(ClientEvent::Pong { nonce });
        }
        self.replies.pop_front().map(ClientEvent::Reply)
    }
}

/// A client of `spillway serve` over one blocking TCP connection (`docs/PROTOCOL.md`).
///
/// [`Client::connect`] does the handshake. [`Client::submit`] sends a Submit, first waiting
/// as the server's flow signals ask ([`FlowState`]); [`Client::next_event`] reads what the
/// server sends back. [`Client::send_with_backpressure`] does both for one message and
/// retries refusals with backoff (SPEC 6); [`Client::send_batch_adaptive`] paces submissions
/// by the machine's CPU load (SPEC 6).
///
/// Every wait is bounded ([`ClientConfig`]), and while the client waits for anything (a
/// Reply, a backoff, a pause) it keeps reading the socket, as the protocol asks, keeping
/// what it reads for [`Client::next_event`]. It keeps at most
/// `min(send_buffer_replies, max_in_flight)` Submits without a Reply taken by the caller
/// ([`ClientError::InFlightFull`] beyond), so the server never has to drop its Replies.
///
/// Blocking and single-threaded: writes do not read, so a server that stops reading while
/// this client writes (the `block` drop policy) stalls the write until `io_timeout`. A
/// client that keeps to its in-flight limit never meets that.
///
/// ```no_run
/// use std::time::Duration;
/// use spillway::client::{BackoffConfig, Client, ClientConfig, SubmitRequest};
/// use spillway::message::{MessageId, Priority, Role, TenantId};
/// use spillway::outcome::Outcome;
///
/// let mut client = Client::connect("127.0.0.1:7400", ClientConfig::default())?;
/// let request = SubmitRequest {
///     message_id: MessageId(1),
///     tenant: TenantId(0),
///     priority: Priority::P1,
///     role: Role::Session,
///     payload: b"hello",
/// };
/// let reply = client.send_with_backpressure(request, &BackoffConfig::default())?;
/// match reply.outcome {
///     Outcome::Delivered => println!("delivered: {:?}", reply.response),
///     other => println!("final outcome: {other:?}, {:?}", reply.detail),
/// }
/// let report = client.close(Duration::from_secs(1))?;
/// assert_eq!(report.unanswered, 0);
/// # Ok::<(), spillway::client::ClientError>(())
/// ```
///
/// [`FlowState`]: super::FlowState
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    decoder: Decoder<ServerToClient>,
    /// The frame being written; reused, so a Submit allocates only when it is the largest
    /// so far.
    write_buffer: Vec<u8>,
    clock: Clock,
    config: ClientConfig,
    state: ConnectionState,
    /// From the Welcome.
    connection: ConnectionId,
    /// From the Welcome: the largest frame the server reads.
    frame_limit: FrameLimit,
    /// From the Welcome.
    send_buffer_replies: NonZeroU32,
    flow: FlowState,
    /// Submits written whose Reply has not been read and that no RepliesDropped covered.
    /// At most the in-flight limit.
    in_flight: u32,
    pending: Pending,
    /// Replies the server reported dropped, in all.
    replies_dropped: u64,
    stats: BackpressureStats,
    random: SplitMix64,
}

impl Client {
    /// Connects to `address` (each address it resolves to in turn, within
    /// `connect_timeout` each) and does the handshake: Hello in
    /// [`ClientConfig::protocol_version`], then the Welcome, within `io_timeout`. An Error
    /// instead of the Welcome is [`ClientError::HandshakeFailed`] (a server that does not
    /// speak the version answers `unsupported_version`: connect again with version 1).
    pub fn connect(address: impl ToSocketAddrs, config: ClientConfig) -> Result<Self, ClientError> {
        config.validate()?;
        let mut last_error = None;
        for socket_address in address.to_socket_addrs()? {
            match TcpStream::connect_timeout(&socket_address, config.connect_timeout) {
                Ok(stream) => return Self::handshake(stream, config),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error
            .unwrap_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the address resolved to nothing",
                )
            })
            .into())
    }

    /// Does the handshake on a connected stream, as [`Client::connect`] does after
    /// connecting.
    pub fn handshake(stream: TcpStream, config: ClientConfig) -> Result<Self, ClientError> {
        config.validate()?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(config.io_timeout))?;
        let seed = config
            .random_seed
            .unwrap_or_else(|| time_seed(stream.local_addr().ok()));
        let mut client = Self {
            stream,
            // The Welcome and an Error are at most 266 bytes: the smallest limit takes them.
            // The Welcome raises it to the server's, which bounds Replies with a response.
            decoder: Decoder::with_version(FrameLimit::MIN, config.protocol_version),
            write_buffer: Vec::new(),
            clock: Clock::new(),
            config,
            state: ConnectionState::Open,
            connection: ConnectionId(0),
            frame_limit: FrameLimit::MIN,
            send_buffer_replies: NonZeroU32::MIN,
            flow: FlowState::new(),
            in_flight: 0,
            pending: Pending::default(),
            replies_dropped: 0,
            stats: BackpressureStats::default(),
            random: SplitMix64::new(seed),
        };
        client.write_frame(ClientFrame::Hello)?;
        let deadline_ns = client.deadline_ns(config.io_timeout);
        loop {
            match client.next_received(deadline_ns)? {
                Some(Received::Welcome {
                    connection,
                    frame_limit,
                    send_buffer_replies,
                }) => {
                    client.connection = connection;
                    client.frame_limit = frame_limit;
                    client.decoder.set_limit(frame_limit);
                    client.send_buffer_replies = send_buffer_replies;
                    return Ok(client);
                }
                // The decoder lets nothing but a Welcome or an Error come first.
                Some(Received::Event(event)) => client.pending.push(event),
                None => {
                    client.shut();
                    return Err(ClientError::Timeout {
                        operation: "the server's welcome",
                        waited: config.io_timeout,
                    });
                }
            }
        }
    }

    /// Sends one Submit. First it waits as the server's flow signals ask (the throttle
    /// delay after the previous Submit, the end of a pause), reading the socket meanwhile,
    /// for at most `flow_wait_max`. Nothing is sent on an error, except that a write that
    /// fails may have sent part of the frame (the connection is then closed).
    ///
    /// The Reply comes later, from [`Client::next_event`]. Fails with
    /// [`ClientError::InFlightFull`] when as many Submits are unanswered or unread as the
    /// client allows, and [`ClientError::FrameTooLarge`] when the payload exceeds the
    /// server's limit (`max_frame_bytes - 24` bytes).
    pub fn submit(&mut self, request: SubmitRequest<'_>) -> Result<(), ClientError> {
        self.ensure_open()?;
        let limit = self.in_flight_limit();
        let unread = self.unread();
        if unread >= limit {
            return Err(ClientError::InFlightFull {
                in_flight: unread,
                limit,
            });
        }
        self.write_buffer.clear();
        ClientFrame::Submit(request).encode_in(
            self.config.protocol_version,
            self.frame_limit,
            &mut self.write_buffer,
        )?;
        self.wait_for_flow()?;
        self.write_buffered()?;
        self.flow.on_submit(self.clock.now_ns());
        self.in_flight += 1;
        Ok(())
    }

    /// Asks the server to cancel the first queued message of this connection with this id
    /// (`docs/PROTOCOL.md` section 5.3). Not held back by flow signals; its effect shows in
    /// that message's Reply (`cancelled`, if it had not started).
    pub fn cancel(&mut self, message_id: MessageId) -> Result<(), ClientError> {
        self.ensure_open()?;
        self.write_frame(ClientFrame::Cancel { message_id })
    }

    /// Sends a Ping; its Pong comes from [`Client::next_event`]. Not held back by flow
    /// signals.
    pub fn ping(&mut self, nonce: u64) -> Result<(), ClientError> {
        self.ensure_open()?;
        self.write_frame(ClientFrame::Ping { nonce })
    }

    /// The next event: one kept from an earlier wait, else the next one read within
    /// `timeout` (`Ok(None)` if none came). [`Duration::ZERO`] takes only what has already
    /// been read. Flow signals are applied to [`Client::flow`] as they are read, whether
    /// taken here or not. An Error frame from the server is [`ClientError::Server`].
    pub fn next_event(&mut self, timeout: Duration) -> Result<Option<ClientEvent>, ClientError> {
        if let Some(event) = self.pending.pop() {
            return Ok(Some(event));
        }
        let deadline_ns = self.deadline_ns(timeout);
        self.read_event_until(deadline_ns)
    }

    /// Submits `request` and waits for its Reply, retrying while it is refused or shed
    /// (SPEC 6): before retry `n` (from 0) it waits
    /// [`backoff_delay`](crate::backoff::backoff_delay)`(config, n, retry_after)`, full jitter
    /// under `min(max_delay, base_delay * 2^n)` and never less than the refusal's
    /// `retry_after_ns`, reading the socket meanwhile.
    ///
    /// Returns the final Reply: delivered (with the handler's response), failed (with its
    /// error text, if any), cancelled or dropped. Gives up with
    /// [`ClientError::GaveUp`] after `max_retries` retries, and with
    /// [`ClientError::NotRetryable`] at once on a refusal that waiting does not help
    /// (`disconnected`, `shutting_down`). Other Replies and events that arrive meanwhile
    /// are kept for [`Client::next_event`]. Each wait for the Reply is bounded by
    /// `reply_timeout`; if the server reports dropped Replies and this one's can no longer
    /// come, the error is [`ClientError::ReplyLost`]. Counted in
    /// [`Client::backpressure_stats`].
    pub fn send_with_backpressure(
        &mut self,
        request: SubmitRequest<'_>,
        config: &BackoffConfig,
    ) -> Result<ClientReply, ClientError> {
        self.stats.calls += 1;
        let result = self.retry_until_final(request, config);
        if result.is_err() {
            self.stats.failures += 1;
        }
        result
    }

    /// Submits the next batch of `requests` at the pace `adaptation` picks for the
    /// machine's CPU load (SPEC 6): the first `pace.batch` of them (fewer if the slice is
    /// shorter or the in-flight limit leaves less room), then waits `pace.wait`, reading
    /// the socket meanwhile. Call it again with the requests not yet sent, taking events
    /// with [`Client::next_event`] between calls to make room. `adaptation` is sampled on
    /// this client's clock; keep one per client. On an error, the requests before the one
    /// that failed were sent ([`Client::in_flight`] tells how many are unanswered).
    pub fn send_batch_adaptive<S: LoadSource>(
        &mut self,
        requests: &[SubmitRequest<'_>],
        adaptation: &mut LoadAdaptation<S>,
    ) -> Result<AdaptiveBatch, ClientError> {
        self.ensure_open()?;
        let pace = adaptation.pace(self.clock.now_ns());
        let room = self.in_flight_limit().saturating_sub(self.unread());
        let sent = requests
            .len()
            .min(pace.batch.get() as usize)
            .min(room as usize);
        for request in &requests[..sent] {
            self.submit(*request)?;
        }
        let deadline_ns = self.deadline_ns(pace.wait);
        self.wait_until(deadline_ns)?;
        Ok(AdaptiveBatch { sent, pace })
    }

    /// Ends the connection cleanly: shuts down the sending side (TCP half-close) and reads
    /// until the server, having sent the Reply of every Submit it read, closes, or until
    /// `timeout`. Returns every event not yet taken. Afterwards every call answers
    /// [`ClientError::Closed`]. On a connection already closed it returns what was kept.
    pub fn close(&mut self, timeout: Duration) -> Result<CloseReport, ClientError> {
        if self.state == ConnectionState::Open {
            if let Err(error) = self.stream.shutdown(Shutdown::Write) {
                self.shut();
                return Err(error.into());
            }
            self.state = ConnectionState::SendClosed;
        }
        let mut server_closed = self.state == ConnectionState::Closed;
        if !server_closed {
            let deadline_ns = self.deadline_ns(timeout);
            match self.wait_until(deadline_ns) {
                Ok(()) => self.shut(),
                Err(ClientError::Closed) => server_closed = true,
                Err(error) => return Err(error),
            }
        }
        let mut events = Vec::new();
        while let Some(event) = self.pending.pop() {
            events.push(event);
        }
        Ok(CloseReport {
            events,
            unanswered: self.in_flight,
            server_closed,
        })
    }

    /// The id the server gave this connection in its Welcome.
    pub fn connection_id(&self) -> ConnectionId {
        self.connection
    }

    /// The largest frame the server reads, from its Welcome; a Submit payload may have up
    /// to [`FrameLimit::max_payload_bytes`].
    pub fn frame_limit(&self) -> FrameLimit {
        self.frame_limit
    }

    /// The protocol version this connection speaks ([`ClientConfig::protocol_version`]).
    ///
    /// ```
    /// use spillway::client::{BackoffConfig, Client, ClientConfig, SubmitRequest};
    /// use spillway::config::Config;
    /// use spillway::engine::Engine;
    /// use spillway::message::{Message, MessageId, Priority, Role, TenantId};
    /// use spillway::net::protocol::ProtocolVersion;
    /// use spillway::net::server::{ServerConfig, TcpServer};
    /// use spillway::outcome::Outcome;
    ///
    /// let server = TcpServer::bind("127.0.0.1:0", ServerConfig::default())?;
    /// let handler = server.front_end(|_: &Message| Ok("a response"));
    /// let config = Config { shards: 1, ..Config::default() };
    /// let engine = Engine::builder().config(config).handler(handler).start()?;
    ///
    /// let protocol_version = ProtocolVersion::V1;
    /// let config = ClientConfig { protocol_version, ..ClientConfig::default() };
    /// let mut client = Client::connect(server.local_addr(), config)?;
    /// assert_eq!(client.protocol_version(), ProtocolVersion::V1);
    /// let (message_id, tenant) = (MessageId(1), TenantId(0));
    /// let (priority, role) = (Priority::P1, Role::Session);
    /// let request = SubmitRequest { message_id, tenant, priority, role, payload: b"hello" };
    /// let reply = client.send_with_backpressure(request, &BackoffConfig::default())?;
    /// // Delivered, but a version-1 Reply carries no response.
    /// assert_eq!((reply.outcome, reply.response.len()), (Outcome::Delivered, 0));
    /// drop(client);
    /// engine.shutdown();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn protocol_version(&self) -> ProtocolVersion {
        self.config.protocol_version
    }

    /// The capacity of the server's send buffer for this connection, in Replies, from its
    /// Welcome.
    pub fn send_buffer_replies(&self) -> NonZeroU32 {
        self.send_buffer_replies
    }

    /// The most Submits without a Reply taken by the caller:
    /// `min(send_buffer_replies, max_in_flight)`.
    pub fn in_flight_limit(&self) -> u32 {
        self.send_buffer_replies
            .get()
            .min(self.config.max_in_flight.get())
    }

    /// Submits whose Reply has not been read from the socket (and that no RepliesDropped
    /// covered).
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    /// The pacing the server's flow signals ask for now.
    pub fn flow(&self) -> &FlowState {
        &self.flow
    }

    /// Replies the server reported dropped since the connection began.
    pub fn replies_dropped(&self) -> u64 {
        self.replies_dropped
    }

    /// What [`Client::send_with_backpressure`] has done on this client.
    pub fn backpressure_stats(&self) -> BackpressureStats {
        self.stats
    }

    /// The server's address.
    pub fn peer_addr(&self) -> Result<SocketAddr, ClientError> {
        Ok(self.stream.peer_addr()?)
    }

    /// The loop of [`Client::send_with_backpressure`], without the counting of calls and
    /// failures.
    fn retry_until_final(
        &mut self,
        request: SubmitRequest<'_>,
        config: &BackoffConfig,
    ) -> Result<ClientReply, ClientError> {
        let message_id = request.message_id;
        let mut waited = Duration::ZERO;
        let mut attempts: u32 = 0;
        loop {
            self.submit(request)?;
            attempts += 1;
            self.stats.attempts += 1;
            let reply = self.await_reply(message_id)?;
            let outcome = reply.outcome;
            let retry_after_ns = match outcome {
                Outcome::Refused {
                    reason: RefusalReason::Disconnected | RefusalReason::ShuttingDown,
                    ..
                } => {
                    return Err(ClientError::NotRetryable {
                        message_id,
                        attempts,
                        last_outcome: outcome,
                        waited,
                    })
                }
                Outcome::Refused { retry_after_ns, .. } => retry_after_ns,
                Outcome::Shed { .. } => 0,
                Outcome::Delivered
                | Outcome::Failed { .. }
                | Outcome::Cancelled
                | Outcome::Dropped { .. } => {
                    if attempts > 1 {
                        self.stats.successes_after_waiting += 1;
                    }
                    return Ok(reply);
                }
            };
            // `attempts - 1` retries made so far.
            let retry = attempts - 1;
            if retry >= config.max_retries {
                return Err(ClientError::GaveUp {
                    message_id,
                    attempts,
                    last_outcome: outcome,
                    waited,
                });
            }
            let delay = backoff_delay(
                config,
                retry,
                Duration::from_nanos(retry_after_ns),
                &mut self.random,
            );
            self.stats.waits += 1;
            let start_ns = self.clock.now_ns();
            self.wait_until(start_ns.saturating_add(duration_ns(delay)))?;
            let spent_ns = self.clock.now_ns().saturating_sub(start_ns);
            waited = waited.saturating_add(Duration::from_nanos(spent_ns));
            self.stats.waited_ns = self.stats.waited_ns.saturating_add(spent_ns);
        }
    }

    /// Reads until the Reply to `message_id`, keeping everything else for
    /// [`Client::next_event`].
    fn await_reply(&mut self, message_id: MessageId) -> Result<ClientReply, ClientError> {
        let deadline_ns = self.deadline_ns(self.config.reply_timeout);
        loop {
            match self.read_event_until(deadline_ns)? {
                Some(ClientEvent::Reply(reply)) if reply.message_id == message_id => {
                    return Ok(reply)
                }
                Some(event) => {
                    self.pending.push(event);
                    // This message was in flight: if nothing is now, its Reply was dropped.
                    if self.in_flight == 0 {
                        return Err(ClientError::ReplyLost { message_id });
                    }
                }
                None => {
                    return Err(ClientError::Timeout {
                        operation: "the reply to a submit",
                        waited: self.config.reply_timeout,
                    })
                }
            }
        }
    }

    /// Waits until the flow state lets a Submit go, reading meanwhile (a newer signal may
    /// move the time), for at most `flow_wait_max`.
    fn wait_for_flow(&mut self) -> Result<(), ClientError> {
        let start_ns = self.clock.now_ns();
        let limit_ns = start_ns.saturating_add(duration_ns(self.config.flow_wait_max));
        loop {
            let now_ns = self.clock.now_ns();
            let ready_ns = self.flow.next_submit_at_ns();
            if now_ns >= ready_ns {
                return Ok(());
            }
            if now_ns >= limit_ns {
                return Err(ClientError::Timeout {
                    operation: "the server's flow control to allow a submit",
                    waited: Duration::from_nanos(now_ns - start_ns),
                });
            }
            self.wait_until(ready_ns.min(limit_ns))?;
        }
    }

    /// Reads until `deadline_ns`, keeping every event for [`Client::next_event`].
    fn wait_until(&mut self, deadline_ns: u64) -> Result<(), ClientError> {
        while let Some(event) = self.read_event_until(deadline_ns)? {
            self.pending.push(event);
        }
        Ok(())
    }

    /// The next event read from the socket by `deadline_ns`, or `None`.
    fn read_event_until(&mut self, deadline_ns: u64) -> Result<Option<ClientEvent>, ClientError> {
        match self.next_received(deadline_ns)? {
            Some(Received::Event(event)) => Ok(Some(event)),
            Some(Received::Welcome { .. }) => {
                // The decoder refuses a second Welcome; this is its answer, kept in case.
                self.shut();
                Err(ProtocolError::UnexpectedFrame {
                    frame_type: FrameType::Welcome,
                    expected: "no second welcome",
                }
                .into())
            }
            None => Ok(None),
        }
    }

    /// The next frame decoded, reading from the socket as needed until `deadline_ns`;
    /// `None` if none was whole by then.
    fn next_received(&mut self, deadline_ns: u64) -> Result<Option<Received>, ClientError> {
        loop {
            if let Some(received) = self.decode_buffered()? {
                return Ok(Some(received));
            }
            if !self.fill_until(deadline_ns)? {
                return Ok(None);
            }
        }
    }

    /// Decodes and applies the next whole frame among the bytes read, if there is one.
    fn decode_buffered(&mut self) -> Result<Option<Received>, ClientError> {
        let frame = match self.decoder.next_frame() {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(None),
            Err(error) => {
                self.shut();
                return Err(error.into());
            }
        };
        let event = match frame {
            ServerFrame::Welcome {
                connection,
                frame_limit,
                send_buffer_replies,
            } => {
                return Ok(Some(Received::Welcome {
                    connection,
                    frame_limit,
                    send_buffer_replies,
                }))
            }
            ServerFrame::Error { code, detail } => {
                let detail = detail.to_owned();
                let handshake_done = self.decoder.handshake_done();
                self.shut();
                return Err(if handshake_done {
                    ClientError::Server { code, detail }
                } else {
                    ClientError::HandshakeFailed { code, detail }
                });
            }
            ServerFrame::Reply {
                message_id,
                outcome,
                response,
                detail,
            } => ClientEvent::Reply(ClientReply {
                message_id,
                outcome,
                // A copy out of the read buffer, which the next read reuses.
                response: Bytes::copy_from_slice(response),
                detail: (!detail.is_empty()).then(|| ErrorDetail::new(detail)),
            }),
            ServerFrame::Throttle { delay_ns } => {
                ClientEvent::Flow(FlowSignal::Throttle { delay_ns })
            }
            ServerFrame::Pause { duration_ns } => {
                ClientEvent::Flow(FlowSignal::Pause { duration_ns })
            }
            ServerFrame::Resume => ClientEvent::Flow(FlowSignal::Resume),
            ServerFrame::RepliesDropped { count } => ClientEvent::RepliesDropped { count },
            ServerFrame::Pong { nonce } => ClientEvent::Pong { nonce },
        };
        match &event {
            ClientEvent::Reply(reply) => {
                if self.in_flight == 0 {
                    let message_id = reply.message_id;
                    self.shut();
                    return Err(ClientError::UnexpectedReply { message_id });
                }
                self.in_flight -= 1;
            }
            ClientEvent::RepliesDropped { count } => {
                let covered = u32::try_from(count.get()).unwrap_or(u32::MAX);
                self.in_flight = self.in_flight.saturating_sub(covered);
                self.replies_dropped = self.replies_dropped.saturating_add(count.get());
            }
            ClientEvent::Flow(signal) => self.flow.apply(*signal, self.clock.now_ns()),
            ClientEvent::Pong { .. } => {}
        }
        Ok(Some(Received::Event(event)))
    }

    /// One read from the socket, waiting until `deadline_ns` at most: `true` if it read
    /// something (or was interrupted), `false` at the deadline. The end of the stream is
    /// [`ClientError::Closed`] (or [`ClientError::Protocol`] if it cut a frame).
    fn fill_until(&mut self, deadline_ns: u64) -> Result<bool, ClientError> {
        if self.state == ConnectionState::Closed {
            return Err(ClientError::Closed);
        }
        let now_ns = self.clock.now_ns();
        if now_ns >= deadline_ns {
            return Ok(false);
        }
        let wait = Duration::from_nanos(deadline_ns - now_ns);
        if let Err(error) = self.stream.set_read_timeout(Some(wait)) {
            self.shut();
            return Err(error.into());
        }
        let unfilled = self.decoder.unfilled(READ_CHUNK_BYTES);
        match self.stream.read(unfilled) {
            Ok(0) => {
                self.shut();
                self.decoder.finish()?;
                Err(ClientError::Closed)
            }
            Ok(read_bytes) => {
                self.decoder.commit(read_bytes);
                Ok(true)
            }
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(false)
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => Ok(true),
            Err(error) => {
                self.shut();
                Err(error.into())
            }
        }
    }

    /// Encodes and writes a frame that is not a Submit.
    fn write_frame(&mut self, frame: ClientFrame<'_>) -> Result<(), ClientError> {
        self.write_buffer.clear();
        frame.encode_in(
            self.config.protocol_version,
            self.frame_limit,
            &mut self.write_buffer,
        )?;
        self.write_buffered()
    }

    /// Writes the encoded frame, within `io_timeout`. A failed write closes the connection:
    /// part of the frame may be on the wire.
    fn write_buffered(&mut self) -> Result<(), ClientError> {
        match self.stream.write_all(&self.write_buffer) {
            Ok(()) => Ok(()),
            Err(error) => {
                self.shut();
                Err(
                    if matches!(
                        error.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) {
                        ClientError::Timeout {
                            operation: "a write to the server",
                            waited: self.config.io_timeout,
                        }
                    } else {
                        error.into()
                    },
                )
            }
        }
    }

    /// `Closed` unless both directions are open.
    fn ensure_open(&self) -> Result<(), ClientError> {
        match self.state {
            ConnectionState::Open => Ok(()),
            ConnectionState::SendClosed | ConnectionState::Closed => Err(ClientError::Closed),
        }
    }

    /// Submits that count against the in-flight limit: unanswered, or answered and kept.
    fn unread(&self) -> u32 {
        let kept = u32::try_from(self.pending.replies.len()).unwrap_or(u32::MAX);
        self.in_flight.saturating_add(kept)
    }

    /// `timeout` from now on the client's clock, in ns.
    fn deadline_ns(&self, timeout: Duration) -> u64 {
        self.clock.now_ns().saturating_add(duration_ns(timeout))
    }

    /// Closes both directions; later calls answer [`ClientError::Closed`].
    fn shut(&mut self) {
        // Already closed by the peer is fine: the socket is going away either way.
        let _ = self.stream.shutdown(Shutdown::Both);
        self.state = ConnectionState::Closed;
    }
}

/// A seed that differs from client to client: the time of day in ns, mixed with the local
/// address (its port tells apart clients made in the same nanosecond).
fn time_seed(local: Option<SocketAddr>) -> u64 {
    let port = local.map_or(0, |address| u64::from(address.port()));
    crate::backoff::time_seed(port << 48)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::ShedReason;

    #[test]
    fn pending_hands_out_signals_first_and_merges_them_as_the_server_does() {
        let mut pending = Pending::default();
        let reply = |id| {
            ClientEvent::Reply(ClientReply {
                message_id: MessageId(id),
                outcome: Outcome::Delivered,
                response: Bytes::new(),
                detail: None,
            })
        };
        pending.push(reply(1));
        pending.push(ClientEvent::Flow(FlowSignal::Throttle { delay_ns: 5 }));
        pending.push(ClientEvent::Pong { nonce: 1 });
        pending.push(reply(2));
        pending.push(ClientEvent::Flow(FlowSignal::Resume));
        pending.push(ClientEvent::Pong { nonce: 2 });
        for count in [2, 3] {
            pending.push(ClientEvent::RepliesDropped {
                count: NonZeroU64::new(count).unwrap(),
            });
        }
        let shed = ClientReply {
            message_id: MessageId(3),
            outcome: Outcome::Shed {
                reason: ShedReason::CircuitOpen,
            },
            response: Bytes::new(),
            detail: None,
        };
        pending.push(ClientEvent::Reply(shed.clone()));
        let mut taken = Vec::new();
        while let Some(event) = pending.pop() {
            taken.push(event);
        }
        assert_eq!(
            taken,
            [
                ClientEvent::Flow(FlowSignal::Resume),
                ClientEvent::RepliesDropped {
                    count: NonZeroU64::new(5).unwrap()
                },
                ClientEvent::Pong { nonce: 2 },
                reply(1),
                reply(2),
                ClientEvent::Reply(shed),
            ]
        );
    }

    #[test]
    fn zero_socket_timeouts_are_invalid() {
        let mut config = ClientConfig::default();
        assert!(config.validate().is_ok());
        config.io_timeout = Duration::ZERO;
        assert!(matches!(
            config.validate(),
            Err(ClientError::InvalidSetting {
                field: "io_timeout",
                ..
            })
        ));
    }

    #[test]
    fn seeds_differ_by_port() {
        let a: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:1001".parse().unwrap();
        // The clock moves between calls too; the port alone already separates them.
        assert_ne!(time_seed(Some(a)) >> 48, time_seed(Some(b)) >> 48);
    }
}
