//! The listening socket ([`TcpServer`]) that every shard shares, and the accept loop by
//! which a shard takes new connections: up to its per-turn limit, refusing those over the
//! connection limit and backing off when the process is out of descriptors.

use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;

use crossbeam_utils::CachePadded;
use mio::net::TcpStream;
use mio::{Interest, Token};

use crate::config::{ConfigError, EgressConfig};
use crate::handler::{Handler, ShardContext};
use crate::net::egress::EgressQueue;
use crate::net::protocol::{Decoder, ErrorCode, ProtocolVersion, ServerFrame};
use crate::sync::Ordering;

use super::connection::{Connection, Phase, Reply};
use super::shard::ShardNet;
use super::shared::Shared;
use super::stats::{bump, ShardCounters};
use super::{ServerConfig, TcpFrontEnd};
#[cfg(doc)]
use crate::config::NetConfig;

/// A bound listening socket and the counters of every shard that serves it.
#[derive(Clone)]
pub struct TcpServer {
    pub(super) shared: Arc<Shared>,
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
                stopping: AtomicBool::new(false),
                egress: std::sync::Mutex::new(config.egress),
                egress_generation: crate::sync::AtomicU64::new(0),
                // One set per shard an engine may run.
                counters: (0..crate::config::SHARDS_MAX)
                    .map(|_| CachePadded::new(ShardCounters::default()))
                    .collect(),
            }),
        })
    }

    /// Changes the egress flow control of every connection, open or to come, within one
    /// housekeeping tick of each shard (`net.housekeeping_interval_ns`): the throttle and
    /// pause thresholds and timings, the drop policy, the block timeout and the health
    /// settings. The buffer's size (`buffer_capacity`, `buffer_bytes`) cannot change: each
    /// client was told it in its Welcome.
    ///
    /// # Errors
    /// The setting out of range, or the buffer size changed; nothing is applied.
    pub fn set_egress(&self, egress: EgressConfig) -> Result<(), ConfigError> {
        egress.validate()?;
        let mut current = self
            .shared
            .egress
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for (field, now, asked) in [
            (
                "egress.buffer_capacity",
                u64::from(current.buffer_capacity),
                u64::from(egress.buffer_capacity),
            ),
            (
                "egress.buffer_bytes",
                current.buffer_bytes,
                egress.buffer_bytes,
            ),
        ] {
            if now != asked {
                return Err(ConfigError {
                    field: field.to_string(),
                    allowed: format!("{now} (clients were told it; it changes at a restart)"),
                    got: asked.to_string(),
                });
            }
        }
        *current = egress;
        // Release: a shard that Acquire-loads the new generation and then locks sees the
        // settings (the lock orders them too; the generation only says when to look).
        self.shared
            .egress_generation
            .fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// The egress settings in force ([`set_egress`](Self::set_egress)).
    pub fn egress(&self) -> EgressConfig {
        *self
            .shared
            .egress
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The first step of a graceful stop, taken before
    /// [`Engine::shutdown`](crate::engine::Engine::shutdown): the listening socket stops
    /// listening, so the kernel refuses new connections (and resets those it had
    /// completed but no shard had accepted yet), while the open ones are served on; and
    /// from now on each Reply is written out as soon as its message completes, since
    /// the shards stop turning while the engine finishes (or cancels) what is queued.
    /// `Engine::shutdown` then writes every connection's remaining Replies and
    /// `Error shutting_down`, and closes it, within `net.close_timeout_ns`.
    ///
    /// Linux semantics: `shutdown(2)` of a listening socket takes it out of the listening
    /// state for every descriptor that refers to it (each shard holds a duplicate).
    /// Calling it again does no harm.
    ///
    /// ```no_run
    /// use spillway::engine::Engine;
    /// use spillway::message::Message;
    /// use spillway::net::server::{ServerConfig, TcpServer};
    ///
    /// let server = TcpServer::bind("127.0.0.1:7878", ServerConfig::default())?;
    /// let engine = Engine::builder().handler(server.front_end(|_: &Message| Ok(()))).start()?;
    /// // ... at SIGTERM:
    /// server.begin_stop()?;
    /// let stats = engine.shutdown();
    /// assert!(stats.reconciles());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn begin_stop(&self) -> io::Result<()> {
        // Relaxed: the flag guards no other memory. A shard reads it in `completed`; one
        // that read it late would only write its Replies at the end of the stop instead,
        // and `Engine::shutdown`'s Release store of its own flag, which every shard reads
        // with Acquire before it stops turning, comes after this store.
        self.shared.stopping.store(true, Ordering::Relaxed);
        // SAFETY: the descriptor is the listener's, which `self.shared` owns and keeps open
        // for the whole call; shutdown(2) reads and writes no memory of this process.
        let result = unsafe { libc::shutdown(self.shared.listener.as_raw_fd(), libc::SHUT_RD) };
        if result == 0 {
            return Ok(());
        }
        match io::Error::last_os_error() {
            // Already shut down (a second call): a socket no longer listening says ENOTCONN.
            error if error.raw_os_error() == Some(libc::ENOTCONN) => Ok(()),
            error => Err(error),
        }
    }

    /// Whether [`begin_stop`](Self::begin_stop) was called.
    pub fn is_stopping(&self) -> bool {
        // Relaxed: a flag read on its own (see `begin_stop`).
        self.shared.stopping.load(Ordering::Relaxed)
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
}

impl ShardNet {
    /// Accepts up to the per-turn limit.
    pub(super) fn accept(&mut self, context: &mut ShardContext<'_>, now_ns: u64) -> usize {
        self.accept_pending = false;
        let config = self.shared.config;
        let mut accepted = 0;
        while accepted < config.net.accepts_per_turn_max {
            let (mut stream, _) = match self.listener.accept() {
                Ok(pair) => pair,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return accepted,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                // The listener no longer listens (`TcpServer::begin_stop`): nothing more
                // will come, and no event announces it again.
                Err(error) if error.raw_os_error() == Some(libc::EINVAL) => return accepted,
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

    pub(super) fn admit_connection(
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
        let replies = EgressQueue::sized(self.egress, Reply::frame_bytes)
            .expect("validated in TcpServer::bind or set_egress");
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
}

/// Tells a connection over the limit why it is refused, without waiting: a fresh socket's
/// send buffer is empty, so the few bytes go out at once or not at all. In version 1, as
/// every Error before a Hello: the client's version is not known, and every client reads
/// an Error in any version.
pub(super) fn refuse_at_limit(stream: &mut TcpStream) {
    let mut frame = Vec::new();
    ServerFrame::Error {
        code: ErrorCode::TooManyConnections,
        detail: "the server is at its connection limit",
    }
    .encode_in(ProtocolVersion::V1, &mut frame);
    let _ = stream.write(&frame);
    let _ = stream.shutdown(Shutdown::Both);
}

pub(super) fn is_descriptor_exhaustion(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE) | Some(libc::ENFILE)
    )
}
