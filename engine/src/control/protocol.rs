//! What the control thread and a shard say to each other over their pair of SPSC rings:
//! commands one way, replies the other. A shard reads its command ring before every data
//! batch, so a command waits for at most one bounded batch whatever the data load.

use core::num::NonZeroU32;

use crate::message::{ConnectionId, MessageId, Role};
use crate::shard::core::{DrainResult, RateScope};

/// A command to one shard. `request` ties the reply to the control-plane request.
#[derive(Clone, Copy, Debug)]
pub(crate) enum ShardCommand {
    /// Reply with the shard's queue depth and connection count (health checks).
    Ping { request: u64 },
    /// Drain a connection this shard owns.
    Drain {
        request: u64,
        connection: ConnectionId,
        finish_queued: bool,
    },
    /// Cancel one queued message.
    Cancel {
        request: u64,
        connection: ConnectionId,
        message: MessageId,
    },
    /// Set a role's pending-message cap on this shard.
    SetRoleCap {
        request: u64,
        role: Role,
        max_pending: u32,
    },
    /// Set one connection's pending-message cap.
    SetConnectionCap {
        request: u64,
        connection: ConnectionId,
        max_pending: u32,
    },
    /// Set the nominal rate of a connection or of a tenant's connections.
    SetRate {
        request: u64,
        scope: RateScope,
        rate_per_sec: NonZeroU32,
    },
}

/// A shard's answer.
#[derive(Clone, Copy, Debug)]
pub(crate) enum ShardReply {
    Pong {
        request: u64,
        shard: usize,
        pending_messages: u64,
        connections: u64,
        backpressure: bool,
    },
    Drained {
        request: u64,
        result: DrainResult,
    },
    Cancelled {
        request: u64,
        found: bool,
    },
    Applied {
        request: u64,
        changed: usize,
    },
}

impl ShardReply {
    pub(crate) fn request(&self) -> u64 {
        match *self {
            ShardReply::Pong { request, .. }
            | ShardReply::Drained { request, .. }
            | ShardReply::Cancelled { request, .. }
            | ShardReply::Applied { request, .. } => request,
        }
    }
}
