//! What flows through the engine: a [`Message`] with its identifiers, [`Role`] and
//! [`Priority`].

use core::fmt;
use core::hash::Hasher;

/// The payload and response type: [`bytes::Bytes`], re-exported so that handlers need no
/// dependency of their own to name it.
pub use bytes::Bytes;

/// Identifies a connection. The engine maps it to the shard that owns the connection's
/// state; any `u64` is valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u64);

/// Identifies a tenant, the unit that per-tenant caps and priority ceilings apply to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(pub u32);

/// Identifies a message in completions and in cancel requests. Chosen by the submitter; the
/// engine does not require uniqueness, but cancel by id finds the first queued match.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub u64);

/// How urgent a message is; `P0` is served first and shed last (SPEC 3).
///
/// P0: initialize, shutdown, errors, control. P1: tool calls, resource access. P2:
/// notifications, subscriptions. P3: logging, metrics.
///
/// **Where it bites: priority is strict.** A shard always runs its highest priority with
/// work first, so a sustained stream of P0 starves P1 to P3 (they wait, then refuse at
/// their caps) for as long as it lasts. Priority is a claim; bound who may make it, with a
/// tenant's ceiling (the highest priority its messages keep) and its cap:
///
/// ```
/// use spillway::config::{Config, TenantConfig};
/// use spillway::message::{Priority, TenantId};
/// let mut config = Config::default();
/// config.tenants = vec![TenantConfig {
///     tenant: TenantId(42),
///     max_pending: Some(5_000),          // at most 5,000 of its messages pending at once
///     priority_ceiling: Priority::P1,    // its P0 claims are served as P1, counted
/// }];
/// config.validate().unwrap();
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Priority {
    /// Never shed; refused only at 100% of a cap.
    P0 = 0,
    /// Kept while the breaker is open; refused from 95% of a cap.
    P1 = 1,
    /// Shed while the breaker is open; refused from 80% of a cap.
    P2 = 2,
    /// Shed while the breaker is open; refused from 60% of a cap.
    P3 = 3,
}

impl Priority {
    /// Every priority, most urgent first.
    pub const ALL: [Priority; 4] = [Priority::P0, Priority::P1, Priority::P2, Priority::P3];
    /// Number of priorities.
    pub const COUNT: usize = 4;

    /// `0` for P0 up to `3` for P3.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The priority of index `0..4`, or `None`.
    pub const fn from_index(index: usize) -> Option<Priority> {
        match index {
            0 => Some(Priority::P0),
            1 => Some(Priority::P1),
            2 => Some(Priority::P2),
            3 => Some(Priority::P3),
            _ => None,
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "P{}", self.index())
    }
}

/// The part a message's connection plays; each role has its own pending-message cap per
/// shard (SPEC 3, level 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Role {
    /// Interactive sessions (cap 10000).
    Session = 0,
    /// Server-sent event streams (cap 5000).
    Sse = 1,
    /// Background task workers (cap 1000).
    TaskWorker = 2,
    /// Tool executors (cap 500).
    ToolExecutor = 3,
    /// Transport plumbing (cap 2000).
    Transport = 4,
    /// Anything else (cap 1000).
    Default = 5,
}

impl Role {
    /// Every role, in index order.
    pub const ALL: [Role; 6] = [
        Role::Session,
        Role::Sse,
        Role::TaskWorker,
        Role::ToolExecutor,
        Role::Transport,
        Role::Default,
    ];
    /// Number of roles.
    pub const COUNT: usize = 6;

    /// Index `0..6`, in [`Role::ALL`] order.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The configuration name: `session`, `sse`, `task_worker`, `tool_executor`,
    /// `transport`, `default`.
    pub const fn name(self) -> &'static str {
        match self {
            Role::Session => "session",
            Role::Sse => "sse",
            Role::TaskWorker => "task_worker",
            Role::ToolExecutor => "tool_executor",
            Role::Transport => "transport",
            Role::Default => "default",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// One unit of work.
///
/// The payload is [`Bytes`]: a `Vec<u8>`, a `Bytes` split from a read buffer, or a
/// `&'static [u8]` becomes the payload without a copy, and the handler reads the same bytes.
///
/// ```
/// use spillway::message::{ConnectionId, Message, MessageId, Priority, Role, TenantId};
/// let message = Message::new(ConnectionId(7), MessageId(1))
///     .with_tenant(TenantId(3))
///     .with_role(Role::Session)
///     .with_priority(Priority::P1)
///     .with_payload(b"hello".to_vec());
/// assert_eq!(message.payload.len(), 5);
///
/// // A slice of a larger buffer, shared rather than copied.
/// let buffer = bytes::Bytes::from(b"GET /a GET /b".to_vec());
/// let second = Message::new(ConnectionId(7), MessageId(2)).with_payload(buffer.slice(7..));
/// assert_eq!(&second.payload[..], b"GET /b");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The connection it arrived on; decides the owning shard.
    pub connection: ConnectionId,
    /// The tenant it is charged to.
    pub tenant: TenantId,
    /// The role of its connection.
    pub role: Role,
    /// The priority it claims (may be lowered by the tenant's ceiling).
    pub priority: Priority,
    /// The submitter's identifier, echoed in its completion.
    pub id: MessageId,
    /// The bytes the handler gets; counted against the per-connection byte cap.
    pub payload: Bytes,
    /// The submitter says serving it twice does no harm: a handler that hands it on to a
    /// worker process (`spillway serve --workers`) may then retry it once on another worker
    /// when the first one is lost while holding it. `false` unless set.
    pub idempotent: bool,
}

impl Message {
    /// A message for `connection` with tenant 0, role `default`, priority P1 and no payload.
    pub fn new(connection: ConnectionId, id: MessageId) -> Self {
        Self {
            connection,
            tenant: TenantId(0),
            role: Role::Default,
            priority: Priority::P1,
            id,
            payload: Bytes::new(),
            idempotent: false,
        }
    }

    /// Sets the tenant.
    pub fn with_tenant(mut self, tenant: TenantId) -> Self {
        self.tenant = tenant;
        self
    }

    /// Sets the role.
    pub fn with_role(mut self, role: Role) -> Self {
        self.role = role;
        self
    }

    /// Sets the priority claimed.
    pub fn with_priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// Sets the payload. See the example on [`Message`].
    pub fn with_payload(mut self, payload: impl Into<Bytes>) -> Self {
        self.payload = payload.into();
        self
    }

    /// Marks it idempotent (or not): safe to serve twice, so it may be retried once on
    /// another worker when the worker holding it is lost.
    pub fn with_idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = idempotent;
        self
    }
}

/// The hasher of every table keyed by connection id (or another small integer key).
///
/// Connection ids are arbitrary `u64`s chosen by users; a multiply-shift (Fibonacci) hash
/// spreads sequential and strided ids alike, at a fraction of SipHash's cost. Not for keys an
/// attacker picks to collide: ids are the server's or the embedding program's own.
///
/// ```
/// use std::collections::HashMap;
/// use std::hash::BuildHasherDefault;
/// use spillway::message::ConnectionIdHasher;
/// let mut by_id: HashMap<u64, &str, BuildHasherDefault<ConnectionIdHasher>> = HashMap::default();
/// by_id.insert(7, "seven");
/// assert_eq!(by_id[&7], "seven");
/// ```
#[derive(Default)]
pub struct ConnectionIdHasher(u64);

impl Hasher for ConnectionIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte) ^ self.0.rotate_left(8));
        }
    }

    fn write_u64(&mut self, value: u64) {
        // 2^64 / φ, odd: multiplying by it spreads consecutive keys over the high bits.
        self.0 = (value ^ self.0).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn write_u32(&mut self, value: u32) {
        self.write_u64(u64::from(value));
    }
}
