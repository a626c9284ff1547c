//! The tokio baseline's TCP twin: a server speaking `docs/PROTOCOL.md`, built the way a
//! typical tokio user builds one, so that the TCP path of spillway (`spillway serve`) can be
//! compared side by side with it, both driven by loadgen's TCP target
//! (`loadgen --target tcp://...`, or `e2e --tcp`).
//!
//! Shape, per connection (the admission pieces are those of the in-process baseline, from
//! `baseline_stack`, with the same settings):
//!
//! ```text
//! TcpListener::accept --> task per connection
//!   read half --> Decoder<ClientToServer> --> Hello: Welcome
//!                                         --> Ping: Pong
//!                                         --> Submit: reserve a slot in the reply channel
//!                                               | governor keyed limiter (key: connection)
//!                                               |   no -> Reply refused(rate_limited)
//!                                               | tower LoadShed<ConcurrencyLimit<handler>>
//!                                               |   ready().await, call(), tokio::spawn(response)
//!                                               v
//!                              spawned task: handler (busy wait service_ns)
//!                                               |   Ok -> Reply delivered
//!                                               |   Overloaded -> Reply refused(handler_queue_full)
//!   write half <-- BufWriter <-- writer task <-- bounded tokio mpsc (send_buffer_replies)
//! ```
//!
//! - One tokio multi-thread runtime; a task per connection, which splits the socket into
//!   its halves (`into_split`), reads and decodes with spillway's codec, and a writer task
//!   that drains a bounded `tokio::sync::mpsc` of frames into a `BufWriter` and flushes
//!   whenever the channel is momentarily empty.
//! - Each Submit first reserves a slot in that channel (`reserve_owned`), so the messages a
//!   connection has in the server (running or with a Reply not yet written) never exceed
//!   its capacity, announced in Welcome as `send_buffer_replies`. A client that does not
//!   read stalls its own connection (the writer blocks, the reader stops reading), as TCP
//!   backpressure does in a typical tokio server; this server sends no flow signals and
//!   drops no Replies.
//! - A protocol violation is answered as PROTOCOL.md section 7.3 says: the reader stops,
//!   the Error frame (spillway's `encode_error_reply`) follows the frames already queued,
//!   the writer flushes it within the close timeout and shuts its half; the reader then
//!   discards what the client still sends until it closes (so the Error is not lost to a
//!   reset) or the close timeout passes. No Hello within the hello timeout, or a frame
//!   begun and not finished within the frame timeout, is `timeout`.
//! - At the connection limit a new connection gets `Error too_many_connections` and is
//!   closed. A client's half-close at a frame boundary gets the Replies of everything it
//!   sent, then the server closes.
//!
//! Every Submit gets exactly one count where it is decided: received, then rate limited,
//! shed (load-shed) or admitted; an admitted message ends delivered or failed.
//! [`TwinStats::self_check`] checks both sums, and `e2e --tcp` checks them against what
//! loadgen's TCP client saw.

use std::io;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use governor::DefaultKeyedRateLimiter;
use serde::{Deserialize, Serialize};
use spillway::config::Config;
use spillway::message::{ConnectionId, Message, MessageId};
use spillway::metrics::Tally;
use spillway::net::protocol::{
    encode_error_reply, ClientFrame, ClientToServer, Decoder, ErrorCode, FrameLimit, ProtocolError,
    ProtocolVersion, ServerFrame,
};
use spillway::outcome::Outcome;
use spillway_loadgen::tcp_stats::ErrorCodeCounts;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tower::{BoxError, Service};

use crate::baseline_stack::{
    self, bump, AdmissionCounters, AdmissionCounts, BaselineError, Decision, StackSettings,
    SHUTDOWN_TIMEOUT,
};

/// How long a new connection has to send Hello (spillway's default hello timeout).
pub const HELLO_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// How long a frame may take from its first byte to its last (spillway's default).
pub const FRAME_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// How long the frames before a close (an Error's, or the last Replies) may take to write.
pub const CLOSE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);
/// How often idle keys are removed from the keyed limiter, so that connections that came
/// and went do not keep their state forever.
pub const LIMITER_CLEANUP_INTERVAL: Duration = Duration::from_secs(10);
/// Bytes asked of each read: the space the decoder keeps ready per connection.
const READ_CHUNK_BYTES: usize = 4 * 1024;
/// Wait after a failed `accept` (out of descriptors, most often) before the next, as
/// typical tokio accept loops do, so that the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(10);

/// Why the twin could not start.
#[derive(Debug, thiserror::Error)]
pub enum TwinError {
    /// A setting is out of range, or the tokio runtime could not be built.
    #[error(transparent)]
    Start(#[from] BaselineError),
    /// The listening socket could not be bound.
    #[error("listening on {address}: {source}")]
    Bind {
        /// The address asked for.
        address: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// The twin's settings. [`TwinSettings::matching`] derives them from spillway's
/// configuration as the in-process baseline's are derived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TwinSettings {
    /// Workers, concurrency limit (all connections together), quota and handler cost, as
    /// the in-process baseline has them.
    pub stack: StackSettings,
    /// Capacity of each connection's reply channel, announced in Welcome.
    pub send_buffer_replies: NonZeroU32,
    /// Connections served at once; more get `Error too_many_connections`.
    pub max_connections: usize,
    /// The largest frame accepted, announced in Welcome.
    pub frame_limit: FrameLimit,
    /// How long a new connection has to send Hello.
    pub hello_timeout: Duration,
    /// How long a frame may take from its first byte to its last.
    pub frame_timeout: Duration,
    /// How long closing frames may take to write.
    pub close_timeout: Duration,
}

impl TwinSettings {
    /// Settings that match spillway started with `config` and `service_ns` handlers on a
    /// machine with `cores` cores: the stack's as [`StackSettings::matching`] gives them;
    /// the reply channel holds spillway's send buffer (`egress.buffer_capacity`, 1000 by
    /// default); the connection limit is spillway's (`connections_per_shard_max` per
    /// shard); frame limit and timeouts are spillway's defaults.
    pub fn matching(config: &Config, cores: usize, service_ns: u64) -> Self {
        let stack = StackSettings::matching(config, cores, service_ns);
        Self {
            stack,
            send_buffer_replies: NonZeroU32::new(config.egress.buffer_capacity)
                .unwrap_or(NonZeroU32::MIN),
            max_connections: config
                .connections_per_shard_max
                .saturating_mul(stack.workers),
            frame_limit: FrameLimit::DEFAULT,
            hello_timeout: HELLO_TIMEOUT_DEFAULT,
            frame_timeout: FRAME_TIMEOUT_DEFAULT,
            close_timeout: CLOSE_TIMEOUT_DEFAULT,
        }
    }
}

/// The twin's counts of connections and frames, each written by the one place that
/// decides it (the messages' counts are [`AdmissionCounters`]). Relaxed throughout:
/// statistics, read after the runtime has stopped (or as a snapshot that may be mid-way).
#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    refused_connections: AtomicU64,
    open: AtomicUsize,
    accept_errors: AtomicU64,
    pongs: AtomicU64,
    cancels: AtomicU64,
    replies_unsent: AtomicU64,
    errors_sent: [AtomicU64; ErrorCode::ALL.len()],
    half_closed_by_client: AtomicU64,
    io_errors: AtomicU64,
}

/// The twin's counters at one moment; `baseline-serve` prints them as one JSON object (the
/// message counts flat beside the others) when it stops, and `e2e --tcp` reads that back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TwinStats {
    /// Connections accepted and served.
    pub accepted: u64,
    /// Connections refused with `too_many_connections`.
    pub refused_connections: u64,
    /// Connections open now.
    pub open: u64,
    /// `accept` calls that failed.
    pub accept_errors: u64,
    /// Every Submit's count (`abandoned`: read on a connection whose writer had already
    /// stopped, the client gone: no decision, no Reply).
    #[serde(flatten)]
    pub counts: AdmissionCounts,
    /// Pongs queued.
    pub pongs: u64,
    /// Cancels read (nothing is ever queued here, so each is ignored, as the protocol says
    /// of an id that is not queued).
    pub cancels: u64,
    /// Replies still queued when their connection's writer stopped (after an Error, or a
    /// failed write); Replies decided later still are dropped uncounted, with their
    /// connection.
    pub replies_unsent: u64,
    /// Error frames sent, by code.
    pub errors_sent: ErrorCodeCounts,
    /// Connections the client half-closed at a frame boundary (the normal end).
    pub half_closed_by_client: u64,
    /// Connections ended by a failed read or write.
    pub io_errors: u64,
}

impl TwinStats {
    /// The outcomes in spillway's terms (submitted = received).
    pub fn tally(&self) -> Tally {
        self.counts.tally()
    }

    /// Where the counts disagree with each other; empty when they reconcile (once every
    /// connection has ended: a snapshot taken mid-run may catch a message between two
    /// counts).
    pub fn self_check(&self) -> Vec<String> {
        self.counts.self_check("baseline-serve")
    }
}

/// What the writer task writes.
#[derive(Debug)]
enum Outgoing {
    Welcome {
        connection: ConnectionId,
        frame_limit: FrameLimit,
        send_buffer_replies: NonZeroU32,
    },
    Reply {
        message: MessageId,
        outcome: Outcome,
    },
    Pong {
        nonce: u64,
    },
    /// A violation found by the decoder: the last frame.
    Violation(ProtocolError),
    /// An error decided by the server (timeout): the last frame.
    Error {
        code: ErrorCode,
        detail: &'static str,
    },
}

/// What every connection task shares.
struct Shared {
    settings: TwinSettings,
    counters: Arc<Counters>,
    admission: Arc<AdmissionCounters>,
    limiter: Option<DefaultKeyedRateLimiter<u64>>,
}

/// SIGINT and SIGTERM, taken over by [`TwinServer::stop_signals`].
pub struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

/// The running twin: a tokio runtime with its accept loop.
pub struct TwinServer {
    runtime: tokio::runtime::Runtime,
    local_address: SocketAddr,
    counters: Arc<Counters>,
    admission: Arc<AdmissionCounters>,
}

impl TwinServer {
    /// Builds the runtime, binds `listen` (port 0 picks a free port; see
    /// [`TwinServer::local_address`]) and starts accepting.
    pub fn start(settings: TwinSettings, listen: SocketAddr) -> Result<Self, TwinError> {
        settings
            .stack
            .validate(&[("max_connections", settings.max_connections)])?;
        let stack = baseline_stack::start(&settings.stack, "baseline-serve")?;
        let bind_error = |source| TwinError::Bind {
            address: listen,
            source,
        };
        let listener = stack
            .runtime
            .block_on(TcpListener::bind(listen))
            .map_err(bind_error)?;
        let local_address = listener.local_addr().map_err(bind_error)?;
        let counters = Arc::new(Counters::default());
        let shared = Arc::new(Shared {
            settings,
            counters: Arc::clone(&counters),
            admission: Arc::clone(&stack.counters),
            limiter: stack.limiter,
        });
        if shared.limiter.is_some() {
            stack.runtime.spawn(clean_limiter(Arc::clone(&shared)));
        }
        stack
            .runtime
            .spawn(accept_loop(listener, stack.service, shared));
        Ok(Self {
            runtime: stack.runtime,
            local_address,
            counters,
            admission: stack.counters,
        })
    }

    /// The address it listens on.
    pub fn local_address(&self) -> SocketAddr {
        self.local_address
    }

    /// Takes over SIGINT and SIGTERM (from now on they no longer end the process), for
    /// [`TwinServer::wait_for`].
    pub fn stop_signals(&self) -> io::Result<StopSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        let _runtime = self.runtime.enter();
        Ok(StopSignals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// Blocks until one of `signals` arrives (what `baseline-serve` waits for).
    pub fn wait_for(&self, signals: &mut StopSignals) {
        self.runtime.block_on(std::future::poll_fn(|context| {
            if signals.interrupt.poll_recv(context).is_ready()
                || signals.terminate.poll_recv(context).is_ready()
            {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        }));
    }

    /// Stops the runtime (every connection ends at its next await) and returns the final
    /// counters.
    pub fn shutdown(self) -> TwinStats {
        self.runtime.shutdown_timeout(SHUTDOWN_TIMEOUT);
        let counters = &self.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        TwinStats {
            accepted: load(&counters.accepted),
            refused_connections: load(&counters.refused_connections),
            open: counters.open.load(Ordering::Relaxed) as u64,
            accept_errors: load(&counters.accept_errors),
            counts: self.admission.snapshot(),
            pongs: load(&counters.pongs),
            cancels: load(&counters.cancels),
            replies_unsent: load(&counters.replies_unsent),
            errors_sent: ErrorCodeCounts::from(std::array::from_fn(|index| {
                load(&counters.errors_sent[index])
            })),
            half_closed_by_client: load(&counters.half_closed_by_client),
            io_errors: load(&counters.io_errors),
        }
    }
}

/// Removes limiter keys whose buckets have refilled (connections long gone or idle).
async fn clean_limiter(shared: Arc<Shared>) {
    let mut interval = tokio::time::interval(LIMITER_CLEANUP_INTERVAL);
    loop {
        interval.tick().await;
        if let Some(limiter) = &shared.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

/// Accepts connections; one task each, with its own clone of the tower stack (the clones
/// share the concurrency limit's semaphore), or `too_many_connections` past the limit.
async fn accept_loop<S>(listener: TcpListener, service: S, shared: Arc<Shared>)
where
    S: Service<Message, Response = (), Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let mut next_connection = 1u64;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                bump(&shared.counters.accept_errors);
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                continue;
            }
        };
        // Replies are small and latency matters: no Nagle delay.
        let _ = stream.set_nodelay(true);
        let open = shared.counters.open.fetch_add(1, Ordering::Relaxed);
        if open >= shared.settings.max_connections {
            shared.counters.open.fetch_sub(1, Ordering::Relaxed);
            bump(&shared.counters.refused_connections);
            tokio::spawn(refuse(stream, Arc::clone(&shared)));
            continue;
        }
        bump(&shared.counters.accepted);
        let id = next_connection;
        next_connection += 1;
        tokio::spawn(serve_connection(
            stream,
            id,
            service.clone(),
            Arc::clone(&shared),
        ));
    }
}

/// Answers a connection over the limit with `Error too_many_connections` and closes it.
async fn refuse(mut stream: TcpStream, shared: Arc<Shared>) {
    let mut frame = Vec::new();
    ServerFrame::Error {
        code: ErrorCode::TooManyConnections,
        detail: "the server is at its connection limit",
    }
    .encode(&mut frame);
    bump(&shared.counters.errors_sent[ErrorCode::TooManyConnections.index()]);
    let close_timeout = shared.settings.close_timeout;
    let _ = tokio::time::timeout(close_timeout, async {
        stream.write_all(&frame).await?;
        stream.shutdown().await?;
        // Wait for the client to close, so that the Error is not lost to a reset.
        let mut sink = [0u8; 256];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<(), io::Error>(())
    })
    .await;
}

/// Decrements the open-connection count when the connection's task ends, however it ends.
struct OpenGuard(Arc<Counters>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One connection: a writer task on the write half, the reader here.
async fn serve_connection<S>(stream: TcpStream, id: u64, service: S, shared: Arc<Shared>)
where
    S: Service<Message, Response = (), Error = BoxError> + Send + 'static,
    S::Future: Send + 'static,
{
    let _open = OpenGuard(Arc::clone(&shared.counters));
    let (read_half, write_half) = stream.into_split();
    let capacity = shared.settings.send_buffer_replies.get() as usize;
    let (sender, receiver) = mpsc::channel(capacity);
    let writer = tokio::spawn(write_loop(
        write_half,
        receiver,
        Arc::clone(&shared.counters),
        shared.settings.close_timeout,
    ));
    read_loop(read_half, id, sender, service, &shared).await;
    let _ = writer.await;
}

/// Reads and decodes the client's frames until the end of the stream, a violation or a
/// timeout; each Submit goes through the limiter and the tower stack.
async fn read_loop<S>(
    mut read_half: OwnedReadHalf,
    id: u64,
    sender: mpsc::Sender<Outgoing>,
    mut service: S,
    shared: &Shared,
) where
    S: Service<Message, Response = (), Error = BoxError> + Send + 'static,
    S::Future: Send + 'static,
{
    let settings = &shared.settings;
    let counters = &shared.counters;
    // It speaks the newest version only: a Hello in another is refused.
    let mut decoder =
        Decoder::<ClientToServer>::with_version(settings.frame_limit, ProtocolVersion::LATEST);
    let accepted_at = Instant::now();
    // When the frame now partly received began to arrive.
    let mut partial_since: Option<Instant> = None;
    loop {
        let deadline = if decoder.handshake_done() {
            partial_since.map(|since| since + settings.frame_timeout)
        } else {
            Some(accepted_at + settings.hello_timeout)
        };
        let buffer = decoder.unfilled(READ_CHUNK_BYTES);
        let read = match deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, read_half.read(buffer)).await
            {
                Ok(read) => read,
                Err(_elapsed) => {
                    let detail = if decoder.handshake_done() {
                        "a frame was begun and not finished within the frame timeout"
                    } else {
                        "no hello within the hello timeout"
                    };
                    let last = Outgoing::Error {
                        code: ErrorCode::Timeout,
                        detail,
                    };
                    close_with(last, &mut read_half, &sender, settings.close_timeout).await;
                    return;
                }
            },
            None => read_half.read(buffer).await,
        };
        let read = match read {
            Ok(read) => read,
            Err(_) => {
                bump(&counters.io_errors);
                return;
            }
        };
        if read == 0 {
            match decoder.finish() {
                // A half-close at a frame boundary: the Replies of what was read follow,
                // then the writer closes once every sender is gone.
                Ok(()) => bump(&counters.half_closed_by_client),
                Err(error) => {
                    close_with(
                        Outgoing::Violation(error),
                        &mut read_half,
                        &sender,
                        settings.close_timeout,
                    )
                    .await;
                }
            }
            return;
        }
        decoder.commit(read);
        let mut completed = 0u32;
        loop {
            // Owned before any await, so that the decoder is free again.
            let request = match decoder.next_frame() {
                Ok(Some(ClientFrame::Hello)) => Request::Hello,
                Ok(Some(ClientFrame::Submit(submit))) => {
                    Request::Submit(submit.to_message(ConnectionId(id)))
                }
                Ok(Some(ClientFrame::Cancel { .. })) => Request::Cancel,
                Ok(Some(ClientFrame::Ping { nonce })) => Request::Ping(nonce),
                Ok(None) => break,
                Err(error) => {
                    close_with(
                        Outgoing::Violation(error),
                        &mut read_half,
                        &sender,
                        settings.close_timeout,
                    )
                    .await;
                    return;
                }
            };
            completed += 1;
            let queued = match request {
                Request::Hello => sender
                    .send(Outgoing::Welcome {
                        connection: ConnectionId(id),
                        frame_limit: settings.frame_limit,
                        send_buffer_replies: settings.send_buffer_replies,
                    })
                    .await
                    .is_ok(),
                Request::Ping(nonce) => {
                    bump(&counters.pongs);
                    sender.send(Outgoing::Pong { nonce }).await.is_ok()
                }
                Request::Cancel => {
                    bump(&counters.cancels);
                    true
                }
                Request::Submit(message) => submit(message, &sender, shared, &mut service).await,
            };
            if !queued {
                // The writer is gone (the client stopped reading and the write failed).
                return;
            }
        }
        partial_since = match (decoder.buffered_bytes(), completed) {
            (0, _) => None,
            // The rest is a frame begun in this read.
            (_, 1..) => Some(Instant::now()),
            (_, 0) => partial_since.or_else(|| Some(Instant::now())),
        };
    }
}

/// A decoded client frame, owned.
enum Request {
    Hello,
    Submit(Message),
    Cancel,
    Ping(u64),
}

/// One Submit: a slot for its Reply, then the decision (the limiter, then the tower
/// stack). Returns `false` when the writer is gone or the stack is broken.
async fn submit<S>(
    message: Message,
    sender: &mpsc::Sender<Outgoing>,
    shared: &Shared,
    service: &mut S,
) -> bool
where
    S: Service<Message, Response = (), Error = BoxError> + Send + 'static,
    S::Future: Send + 'static,
{
    shared.admission.received();
    let id = message.id;
    // The Reply's slot, taken before the work: at most `send_buffer_replies` messages of
    // this connection are in the server at once.
    let Ok(permit) = sender.clone().reserve_owned().await else {
        shared.admission.abandoned();
        return false;
    };
    let reply = move |outcome| Outgoing::Reply {
        message: id,
        outcome,
    };
    match baseline_stack::decide(message, shared.limiter.as_ref(), service, &shared.admission).await
    {
        Decision::RateLimited(outcome) => {
            permit.send(reply(outcome));
            true
        }
        Decision::Running(outcome) => {
            tokio::spawn(async move { permit.send(reply(outcome.await)) });
            true
        }
        Decision::Broken => false,
    }
}

/// Ends a connection on a violation or a timeout: queues `last` after the frames already
/// queued (the writer writes it, flushes and shuts its half), then discards what the
/// client still sends until it closes or the close timeout passes, so that the client
/// reads the Error instead of a reset.
async fn close_with(
    last: Outgoing,
    read_half: &mut OwnedReadHalf,
    sender: &mpsc::Sender<Outgoing>,
    close_timeout: Duration,
) {
    let deadline = Instant::now() + close_timeout;
    if tokio::time::timeout_at(deadline, sender.send(last))
        .await
        .is_err()
    {
        return;
    }
    let mut sink = [0u8; 1024];
    let _ = tokio::time::timeout_at(deadline, async {
        while read_half.read(&mut sink).await? > 0 {}
        Ok::<(), io::Error>(())
    })
    .await;
}

/// Writes frames from the channel through a `BufWriter`, flushing whenever the channel is
/// momentarily empty. Ends after an Error frame (flushed within the close timeout), on a
/// failed write, or when every sender is gone (then it shuts its half: the client reads
/// the end of the stream).
async fn write_loop(
    write_half: OwnedWriteHalf,
    mut receiver: mpsc::Receiver<Outgoing>,
    counters: Arc<Counters>,
    close_timeout: Duration,
) {
    let mut writer = BufWriter::new(write_half);
    let mut frame = Vec::with_capacity(64);
    while let Some(first) = receiver.recv().await {
        let mut next = Some(first);
        while let Some(outgoing) = next {
            frame.clear();
            let last = encode(&outgoing, &mut frame);
            if let Some(code) = last {
                bump(&counters.errors_sent[code.index()]);
            }
            if writer.write_all(&frame).await.is_err() {
                bump(&counters.io_errors);
                count_unsent(&mut receiver, &counters);
                return;
            }
            if last.is_some() {
                let _ = tokio::time::timeout(close_timeout, async {
                    writer.flush().await?;
                    writer.shutdown().await
                })
                .await;
                count_unsent(&mut receiver, &counters);
                return;
            }
            next = receiver.try_recv().ok();
        }
        if writer.flush().await.is_err() {
            bump(&counters.io_errors);
            count_unsent(&mut receiver, &counters);
            return;
        }
    }
    let _ = tokio::time::timeout(close_timeout, writer.shutdown()).await;
}

/// Counts the Replies still queued when the writer stops, then closes the channel (later
/// Replies fail to send and are dropped with their tasks).
fn count_unsent(receiver: &mut mpsc::Receiver<Outgoing>, counters: &Counters) {
    receiver.close();
    while let Ok(outgoing) = receiver.try_recv() {
        if matches!(outgoing, Outgoing::Reply { .. }) {
            counters.replies_unsent.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Encodes one frame into `out`; returns the error code when it is a closing Error.
fn encode(outgoing: &Outgoing, out: &mut Vec<u8>) -> Option<ErrorCode> {
    match *outgoing {
        Outgoing::Welcome {
            connection,
            frame_limit,
            send_buffer_replies,
        } => {
            ServerFrame::Welcome {
                connection,
                frame_limit,
                send_buffer_replies,
            }
            .encode(out);
            None
        }
        Outgoing::Reply { message, outcome } => {
            ServerFrame::Reply {
                message_id: message,
                outcome,
                response: &[],
                detail: "",
            }
            .encode(out);
            None
        }
        Outgoing::Pong { nonce } => {
            ServerFrame::Pong { nonce }.encode(out);
            None
        }
        Outgoing::Violation(error) => {
            encode_error_reply(&error, ProtocolVersion::LATEST, out);
            Some(error.code())
        }
        Outgoing::Error { code, detail } => {
            ServerFrame::Error { code, detail }.encode(out);
            Some(code)
        }
    }
}

/// The tokio/tower baseline's TCP twin, a tokio server speaking spillway's wire protocol
/// (docs/PROTOCOL.md): its options, as `baseline-serve` and `e2e serve-baseline` take them.
///
/// Task per connection, governor keyed limiter per connection, tower load-shed +
/// concurrency-limit around a busy-wait handler, replies through a bounded mpsc per
/// connection. Settings match spillway's defaults for this machine, as the in-process
/// baseline's. Prints `listening on ADDR` on stdout once bound (port 0 picks one); on SIGINT
/// or SIGTERM prints its counters as one JSON line on stdout and exits. Drive it with
/// `loadgen --target tcp://ADDR`.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct ServeOptions {
    /// Address to listen on (e.g. 127.0.0.1:7979; port 0 for any).
    #[arg(long, value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Tokio worker threads [default: spillway's shard count here]; the concurrency limit
    /// scales with it as spillway's caps do with shards.
    #[arg(long, value_name = "N", value_parser = count_parser())]
    pub workers: Option<usize>,
    /// Simulated handler cost per message, ns, busy wait.
    #[arg(long, value_name = "NS", default_value_t = 0)]
    pub service_ns: u64,
    /// Connections served at once [default: spillway's limit, at most what the descriptor
    /// limit allows]; more get Error too_many_connections.
    #[arg(long, value_name = "N", value_parser = count_parser())]
    pub max_connections: Option<usize>,
    /// Messages admitted and unfinished at once, past which load-shed refuses [default:
    /// spillway's matching queue caps, 9,500 per worker].
    #[arg(long, value_name = "N", value_parser = count_parser())]
    pub concurrency_limit: Option<usize>,
}

/// A count of 1 or more.
fn count_parser() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(1..)
}

/// The settings `baseline-serve` runs with for `options` on a machine with `cores` cores,
/// before the descriptor limit is applied.
pub fn serve_settings(options: &ServeOptions, cores: usize) -> TwinSettings {
    let mut config = Config::default();
    if let Some(workers) = options.workers {
        config.shards = workers;
    }
    let mut settings = TwinSettings::matching(&config, cores, options.service_ns);
    if let Some(max_connections) = options.max_connections {
        settings.max_connections = max_connections;
    }
    if let Some(concurrency_limit) = options.concurrency_limit {
        settings.stack.concurrency_limit = concurrency_limit;
    }
    settings
}

/// Runs `baseline-serve`: binds, prints `listening on ADDR` to `out`, serves until SIGINT or
/// SIGTERM, then prints the counters as one JSON line to `out`. The connection limit is
/// lowered to what the descriptor limit allows (raised first as far as the hard limit
/// lets it), with a note on stderr.
///
/// # Errors
/// When the settings are invalid, the address cannot be bound, or the signals cannot be
/// taken over.
pub fn serve(options: &ServeOptions, out: &mut impl io::Write) -> anyhow::Result<TwinStats> {
    use anyhow::Context;
    use spillway_loadgen::nofile::{nofile_limits, raise_nofile_limit, NOFILE_SPARE};
    let mut settings = serve_settings(options, crate::machine::cores());
    let hard = nofile_limits().context("reading RLIMIT_NOFILE")?.hard;
    let allowed = usize::try_from(hard.saturating_sub(NOFILE_SPARE)).unwrap_or(usize::MAX);
    if settings.max_connections > allowed {
        eprintln!(
            "baseline-serve: the hard limit on open files is {hard}: serving at most {allowed} connections instead of {} (raise it with `ulimit -Hn` as root for more)",
            settings.max_connections
        );
        settings.max_connections = allowed.max(1);
    }
    raise_nofile_limit(settings.max_connections as u64)?;
    let server = TwinServer::start(settings, options.listen)?;
    // Before saying where it listens: whoever waits for that line may signal at once.
    let mut signals = server
        .stop_signals()
        .context("taking over SIGINT and SIGTERM")?;
    writeln!(out, "listening on {}", server.local_address()).context("writing to stdout")?;
    out.flush().context("writing to stdout")?;
    eprintln!(
        "baseline-serve: {} worker(s), concurrency limit {}, {}, handler {} ns, send buffer {} replies, at most {} connections",
        settings.stack.workers,
        settings.stack.concurrency_limit,
        settings.stack.rate_text(),
        settings.stack.service_ns,
        settings.send_buffer_replies,
        settings.max_connections
    );
    server.wait_for(&mut signals);
    let stats = server.shutdown();
    let line = serde_json::to_string(&stats).context("encoding the counters")?;
    writeln!(out, "{line}").context("writing to stdout")?;
    out.flush().context("writing to stdout")?;
    Ok(stats)
}
