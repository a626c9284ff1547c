//! What the control thread and a shard say to each other over their pair of SPSC rings:
//! commands one way, replies the other. A shard reads its command ring before every data
//! batch, so a command waits for at most one bounded batch whatever the data load.
//!
//! Vocabulary: both the control plane and the shard speak it, so it lives below both.

use core::num::NonZeroU32;

use crate::message::{ConnectionId, MessageId, Role, TenantId};

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
        /// When what is still queued is cancelled (engine clock, ns).
        deadline_ns: u64,
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
        /// The shard thread panicked outside a handler and now fails what reaches it.
        lost: bool,
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

/// How a drain ended: messages that ran to completion and messages cancelled, and whether
/// its deadline cancelled what was left.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct DrainResult {
    pub(crate) finished: u64,
    pub(crate) cancelled: u64,
    pub(crate) deadline_passed: bool,
}

/// Which connections a rate change applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RateScope {
    Connection(ConnectionId),
    Tenant(TenantId),
}

/// The command types, in the order the control thread serves them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CommandKind {
    /// Force the breaker open or closed, or reset it.
    Breaker,
    /// Liveness, readiness or full health.
    Health,
    /// Drain a connection.
    Drain,
    /// Cancel a queued message.
    Cancel,
    /// Change a cap at run time.
    SetLimit,
    /// Change a rate at run time.
    SetRate,
    /// Register, remove or message a named component.
    Component,
}

impl CommandKind {
    /// Every kind, in serving order.
    pub const ALL: [CommandKind; 7] = [
        CommandKind::Breaker,
        CommandKind::Health,
        CommandKind::Drain,
        CommandKind::Cancel,
        CommandKind::SetLimit,
        CommandKind::SetRate,
        CommandKind::Component,
    ];
    /// Number of kinds.
    pub const COUNT: usize = Self::ALL.len();

    /// Position in serving order.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// A stable snake_case name for reports.
    pub const fn name(self) -> &'static str {
        match self {
            CommandKind::Breaker => "breaker",
            CommandKind::Health => "health",
            CommandKind::Drain => "drain",
            CommandKind::Cancel => "cancel",
            CommandKind::SetLimit => "set_limit",
            CommandKind::SetRate => "set_rate",
            CommandKind::Component => "component",
        }
    }
}
