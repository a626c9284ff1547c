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
    /// The egress settings in force, changed at run time by
    /// [`TcpServer::set_egress`](super::TcpServer::set_egress); each shard copies them on
    /// its next housekeeping tick after `egress_generation` moved. A lock, not atomics: a
    /// shard takes it only after a change (rare), to copy a few words.
    pub(super) egress: std::sync::Mutex<crate::config::EgressConfig>,
    /// Bumped (Release) after each change of `egress`; shards compare it with the one they
    /// applied (Acquire).
    pub(super) egress_generation: crate::sync::AtomicU64,
    /// One per shard, indexed by shard; made when the first front end starts on a shard.
    pub(super) counters: Box<[CachePadded<ShardCounters>]>,
}
