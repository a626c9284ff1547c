//! The worker listener ([`WorkerListener`]): a TCP or Unix socket that every shard's
//! [`WorkerPool`](super::pool::WorkerPool) accepts on, the hand-off of accepted workers
//! to the shard with the fewest, and the counters every shard writes ([`WorkerStats`]).

use std::io;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};

use crossbeam_utils::CachePadded;

use crate::config::{WorkersConfig, SHARDS_MAX};
use crate::sync::Ordering;

/// Where workers connect: `HOST:PORT` for TCP, `unix:PATH` for a Unix socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkerAddress {
    /// A TCP address (loopback in practice: the protocol has no authentication).
    Tcp(std::net::SocketAddr),
    /// A Unix socket's path.
    Unix(PathBuf),
}

impl core::fmt::Display for WorkerAddress {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            WorkerAddress::Tcp(address) => write!(formatter, "{address}"),
            WorkerAddress::Unix(path) => write!(formatter, "unix:{}", path.display()),
        }
    }
}

/// The bound socket, shared by every shard (each registers a duplicate in its own poll).
pub(super) enum Listener {
    Tcp(std::net::TcpListener),
    Unix(UnixListener),
}

/// An accepted worker connection, before a shard registers it.
pub(super) enum AcceptedStream {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

/// One shard's worker counters. Written by that shard alone (a plain load and store), read
/// by [`WorkerListener::stats`]: Relaxed is enough, nothing else is published through them.
#[derive(Default)]
pub(super) struct ShardWorkerCounters {
    pub(super) connected: AtomicU64,
    pub(super) open: AtomicU64,
    pub(super) works_sent: AtomicU64,
    pub(super) answers: AtomicU64,
    pub(super) retries: AtomicU64,
    pub(super) cut_lost: AtomicU64,
    pub(super) cut_timeout: AtomicU64,
    pub(super) cut_garbage: AtomicU64,
    pub(super) refused_too_many: AtomicU64,
    pub(super) credit_total: AtomicU64,
    pub(super) credit_free: AtomicU64,
    pub(super) answer_latency_ns_sum: AtomicU64,
    pub(super) answer_latency_ns_max: AtomicU64,
}

/// Sets a counter only this shard writes.
#[inline]
pub(super) fn store(counter: &AtomicU64, value: u64) {
    counter.store(value, Ordering::Relaxed);
}

/// Adds to a counter only this shard writes: no read-modify-write needed.
#[inline]
pub(super) fn bump(counter: &AtomicU64, count: u64) {
    store(counter, counter.load(Ordering::Relaxed) + count);
}

/// What every shard's pool shares.
pub(super) struct PoolShared {
    pub(super) listener: Listener,
    pub(super) address: WorkerAddress,
    pub(super) config: WorkersConfig,
    /// Workers each shard serves now, to hand a new one to the shard with the fewest.
    /// Relaxed: a balancing hint; a stale reading only makes the spread less even.
    pub(super) workers_per_shard: Box<[AtomicUsize]>,
    /// Workers open, all shards together, for `max_workers`. Relaxed: guards no memory.
    pub(super) open_workers: AtomicUsize,
    /// Accepted workers waiting for their shard to register them. Locked only when a
    /// worker connects (rare, off the data path): the shard looks at `handoff_pending`
    /// first.
    pub(super) handoff: Box<[Mutex<Vec<AcceptedStream>>]>,
    /// Set after a push to the shard's `handoff`; the shard clears it before it locks and
    /// takes. Release on the set, Acquire on the clear: a shard that sees it set finds the
    /// pushed stream under the lock (the lock orders the rest). A set that lands after a
    /// take leaves it set for a pointless lock next turn, never a stream unseen.
    pub(super) handoff_pending: Box<[AtomicBool]>,
    pub(super) counters: Box<[CachePadded<ShardWorkerCounters>]>,
}

/// The socket workers connect to. Give [`WorkerListener::pool`] to the engine as its
/// handler (or wrap the TCP front end with it).
#[derive(Clone)]
pub struct WorkerListener {
    pub(super) shared: Arc<PoolShared>,
}

/// Why the worker address could not be used.
#[derive(Debug, thiserror::Error)]
pub enum WorkerListenError {
    /// Neither `HOST:PORT` nor `unix:PATH`.
    #[error("worker address {0:?}: expected HOST:PORT or unix:PATH")]
    BadAddress(String),
    /// A setting of `[workers]` is out of its range.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Binding failed.
    #[error("binding the worker address {address}: {source}")]
    Bind {
        /// The address.
        address: String,
        /// Why.
        source: io::Error,
    },
}

impl WorkerListener {
    /// Binds `address`: `HOST:PORT` (TCP; port 0 picks one, see
    /// [`address`](Self::address)) or `unix:PATH` (a stale socket file at `PATH` is
    /// replaced).
    pub fn bind(address: &str, config: WorkersConfig) -> Result<Self, WorkerListenError> {
        config.validate()?;
        let bind_error = |source| WorkerListenError::Bind {
            address: address.to_owned(),
            source,
        };
        let (listener, bound) = if let Some(path) = address.strip_prefix("unix:") {
            let path = PathBuf::from(path);
            // A socket file left by an earlier run would make bind fail with EADDRINUSE.
            let _ = std::fs::remove_file(&path);
            let listener = UnixListener::bind(&path).map_err(bind_error)?;
            listener.set_nonblocking(true).map_err(bind_error)?;
            (Listener::Unix(listener), WorkerAddress::Unix(path))
        } else {
            let socket: std::net::SocketAddr = address
                .parse()
                .map_err(|_| WorkerListenError::BadAddress(address.to_owned()))?;
            let listener = std::net::TcpListener::bind(socket).map_err(bind_error)?;
            listener.set_nonblocking(true).map_err(bind_error)?;
            let local = listener.local_addr().map_err(bind_error)?;
            (Listener::Tcp(listener), WorkerAddress::Tcp(local))
        };
        Ok(Self {
            shared: Arc::new(PoolShared {
                listener,
                address: bound,
                config,
                workers_per_shard: (0..SHARDS_MAX).map(|_| AtomicUsize::new(0)).collect(),
                open_workers: AtomicUsize::new(0),
                handoff: (0..SHARDS_MAX).map(|_| Mutex::new(Vec::new())).collect(),
                handoff_pending: (0..SHARDS_MAX).map(|_| AtomicBool::new(false)).collect(),
                counters: (0..SHARDS_MAX)
                    .map(|_| CachePadded::new(ShardWorkerCounters::default()))
                    .collect(),
            }),
        })
    }

    /// Where workers connect (the port chosen, for port 0).
    pub fn address(&self) -> &WorkerAddress {
        &self.shared.address
    }

    /// The worker counters of every shard, summed.
    pub fn stats(&self) -> WorkerStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let mut stats = WorkerStats::default();
        for counters in self.shared.counters.iter() {
            stats.connected += load(&counters.connected);
            stats.open += load(&counters.open);
            stats.works_sent += load(&counters.works_sent);
            stats.answers += load(&counters.answers);
            stats.retries += load(&counters.retries);
            stats.cut_lost += load(&counters.cut_lost);
            stats.cut_timeout += load(&counters.cut_timeout);
            stats.cut_garbage += load(&counters.cut_garbage);
            stats.refused_too_many += load(&counters.refused_too_many);
            stats.credit_total += load(&counters.credit_total);
            stats.credit_free += load(&counters.credit_free);
            stats.answer_latency_ns_sum += load(&counters.answer_latency_ns_sum);
            stats.answer_latency_ns_max = stats
                .answer_latency_ns_max
                .max(load(&counters.answer_latency_ns_max));
        }
        stats
    }
}

/// The worker pool's counters, summed over shards (each a moment stale at most).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Workers that said Hello, ever.
    pub connected: u64,
    /// Worker connections open now.
    pub open: u64,
    /// Work frames sent (retries included).
    pub works_sent: u64,
    /// Answers received.
    pub answers: u64,
    /// Idempotent messages sent to a second worker after the first was lost.
    pub retries: u64,
    /// Workers cut because they went away (closed, reset).
    pub cut_lost: u64,
    /// Workers cut for holding a Work past the answer deadline.
    pub cut_timeout: u64,
    /// Workers cut for breaking the protocol (garbage, out-of-order frames, bad credit).
    pub cut_garbage: u64,
    /// Connections told `too_many_workers`.
    pub refused_too_many: u64,
    /// Credit the open workers declared, all together.
    pub credit_total: u64,
    /// Of it, free now (not holding a Work).
    pub credit_free: u64,
    /// Sum of answer latencies (Work sent to Answer read), ns: with `answers`, the mean.
    pub answer_latency_ns_sum: u64,
    /// The longest answer latency, ns.
    pub answer_latency_ns_max: u64,
}

impl WorkerStats {
    /// Mean answer latency, ns (0 before the first answer).
    pub fn answer_latency_ns_mean(&self) -> u64 {
        self.answer_latency_ns_sum
            .checked_div(self.answers)
            .unwrap_or(0)
    }
}
