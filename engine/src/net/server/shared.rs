//! What every shard's front end of one server shares: the listening socket, the settings,
//! the open-connection count and each shard's counters.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize};

use crossbeam_utils::CachePadded;

use super::stats::ShardCounters;
use super::ServerConfig;

/// What every shard's front end shares.
pub(super) struct Shared {
    pub(super) listener: std::net::TcpListener,
    pub(super) local_addr: SocketAddr,
    pub(super) config: ServerConfig,
    /// Open connections, all shards together, for [`NetConfig::max_connections`](crate::config::NetConfig::max_connections). An
    /// increment that takes it past the limit is undone at once; Relaxed is enough, as the
    /// count guards no other memory.
    pub(super) open_connections: AtomicUsize,
    /// Set by [`TcpServer::begin_stop`](super::TcpServer::begin_stop): the listener no
    /// longer listens, and each Reply is written as soon as its message completes.
    pub(super) stopping: AtomicBool,
    /// One per shard, indexed by shard; made when the first front end starts on a shard.
    pub(super) counters: Box<[CachePadded<ShardCounters>]>,
}
