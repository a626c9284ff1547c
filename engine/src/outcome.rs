//! What became of a message: exactly one [`Completion`] per accepted submission, with an
//! [`Outcome`] that always carries a reason when the message was not delivered (SPEC 3).

use bytes::Bytes;

use crate::message::{ConnectionId, Message, MessageId, Priority, TenantId};

/// The final word on one message, posted to the submitter's completion ring (or returned
/// at once to code running on the shard).
///
/// It says whose message it was (connection, tenant, and the priority it was admitted at,
/// after the tenant's ceiling), what became of it, and what the handler said: its response
/// bytes when it delivered, its error text when it failed.
///
/// ```
/// use spillway::engine::Engine;
/// use spillway::message::{ConnectionId, Message, MessageId, TenantId};
/// use spillway::outcome::Outcome;
///
/// let engine = Engine::builder()
///     .handler(|message: &Message| Ok::<_, spillway::handler::HandlerError>(message.payload.clone()))
///     .start()
///     .unwrap();
/// let mut ingress = engine.ingress().unwrap();
/// let message = Message::new(ConnectionId(1), MessageId(9))
///     .with_tenant(TenantId(4))
///     .with_payload(b"echo".to_vec());
/// ingress.submit(message).unwrap();
/// let mut completions = Vec::new();
/// while completions.is_empty() {
///     ingress.poll_completions(&mut completions);
/// }
/// let done = &completions[0];
/// assert_eq!((done.message, done.tenant), (MessageId(9), TenantId(4)));
/// assert_eq!(done.outcome, Outcome::Delivered);
/// assert_eq!(&done.response[..], b"echo");
/// drop(ingress);
/// engine.shutdown();
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The message's identifier, as submitted.
    pub message: MessageId,
    /// The connection it was submitted on.
    pub connection: ConnectionId,
    /// The tenant it was charged to.
    pub tenant: TenantId,
    /// Its priority as admitted: the claim, lowered to the tenant's ceiling.
    pub priority: Priority,
    /// What happened to it.
    pub outcome: Outcome,
    /// The handler's answer when it delivered (possibly empty; empty otherwise). It is the
    /// handler's own buffer, not a copy.
    pub response: Bytes,
    /// The handler's error text when it failed ([`FailureReason::HandlerError`] or
    /// [`FailureReason::InvalidRequest`]), at most [`ErrorDetail::MAX_BYTES`].
    pub detail: Option<ErrorDetail>,
}

impl Completion {
    /// The completion of `message` with `outcome`, no response and no detail.
    ///
    /// ```
    /// use spillway::message::{ConnectionId, Message, MessageId, TenantId};
    /// use spillway::outcome::{Completion, Outcome};
    ///
    /// let message = Message::new(ConnectionId(3), MessageId(8)).with_tenant(TenantId(2));
    /// let completion = Completion::of(&message, Outcome::Cancelled);
    /// assert_eq!((completion.connection, completion.message), (ConnectionId(3), MessageId(8)));
    /// assert_eq!(completion.tenant, TenantId(2));
    /// assert_eq!(completion.outcome, Outcome::Cancelled);
    /// assert!(completion.response.is_empty() && completion.detail.is_none());
    /// ```
    #[inline]
    pub fn of(message: &Message, outcome: Outcome) -> Self {
        Self {
            message: message.id,
            connection: message.connection,
            tenant: message.tenant,
            priority: message.priority,
            outcome,
            response: Bytes::new(),
            detail: None,
        }
    }
}

/// A handler's error text, cut to at most [`MAX_BYTES`](Self::MAX_BYTES) on a character
/// boundary. Carried by a failed [`Completion`]; over TCP it is the Reply's detail.
///
/// ```
/// use spillway::outcome::ErrorDetail;
/// let long = "é".repeat(300); // 600 bytes
/// let detail = ErrorDetail::new(&long);
/// assert!(detail.as_str().len() <= ErrorDetail::MAX_BYTES);
/// assert!(detail.as_str().chars().all(|c| c == 'é'));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ErrorDetail(Box<str>);

impl ErrorDetail {
    /// The longest detail kept, in bytes.
    ///
    /// ```
    /// use spillway::outcome::ErrorDetail;
    /// let detail = ErrorDetail::new(&"x".repeat(1000));
    /// assert_eq!(detail.as_str().len(), ErrorDetail::MAX_BYTES);
    /// ```
    pub const MAX_BYTES: usize = 256;

    /// `text`, cut to [`MAX_BYTES`](Self::MAX_BYTES), or to the last character boundary
    /// before it.
    ///
    /// ```
    /// use spillway::outcome::ErrorDetail;
    /// // "a" then two-byte characters: byte 256 falls inside the 128th "é".
    /// let text = format!("a{}", "é".repeat(200));
    /// let detail = ErrorDetail::new(&text);
    /// assert_eq!(detail.as_str().len(), 255);
    /// assert_eq!(detail.as_str(), format!("a{}", "é".repeat(127)));
    /// ```
    pub fn new(text: &str) -> Self {
        let mut end = text.len().min(Self::MAX_BYTES);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        Self(text[..end].into())
    }

    /// The text.
    ///
    /// ```
    /// use spillway::outcome::ErrorDetail;
    /// assert_eq!(ErrorDetail::new("upstream timed out").as_str(), "upstream timed out");
    /// ```
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl core::fmt::Display for ErrorDetail {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// What happened to a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Admitted, and the handler returned success.
    Delivered,
    /// Admitted, and the handler failed: it returned an error (the service's, or the
    /// request's), or panicked, or its shard was lost.
    Failed {
        /// Which.
        reason: FailureReason,
    },
    /// Not admitted: a limit said no. Try again after `retry_after_ns`.
    Refused {
        /// Which limit.
        reason: RefusalReason,
        /// Nanoseconds after which a retry can succeed, as far as the engine can tell: from
        /// the token bucket for [`RefusalReason::RateLimited`], from the queue's observed
        /// drain rate for the caps, `0` where waiting does not help
        /// ([`RefusalReason::Disconnected`], [`RefusalReason::ShuttingDown`]).
        retry_after_ns: u64,
    },
    /// Not admitted: shed by priority while the circuit breaker is open.
    Shed {
        /// Why.
        reason: ShedReason,
    },
    /// Admitted, then cancelled before its handler ran (control plane, or shutdown).
    Cancelled,
    /// Admitted, then dropped by the drop policy before its handler ran.
    Dropped {
        /// Why.
        reason: DropReason,
    },
}

/// Why an admitted message failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// The handler returned an error of the service: it is failing
    /// ([`HandlerError::failed`](crate::handler::HandlerError::failed)). Counted against
    /// the service by the circuit breaker's error rate and the adaptive rate controller.
    HandlerError,
    /// The handler panicked; the shard caught it and kept running.
    HandlerPanic,
    /// The shard thread itself panicked (outside a handler) while it held the message, or
    /// the message reached a shard that had been lost so: the shard fails everything it
    /// holds and everything that reaches it afterwards, and its health says it is lost.
    ShardLost,
    /// The handler refused the request as the client's mistake (malformed, invalid:
    /// [`HandlerError::invalid`](crate::handler::HandlerError::invalid)). Not counted
    /// against the service: the circuit breaker and the adaptive rate ignore it.
    InvalidRequest,
    /// The handler answered with a response longer than
    /// [`NetConfig::response_bytes_max`](crate::config::NetConfig::response_bytes_max), at
    /// most what a Reply frame can carry: the response is discarded (the completion carries
    /// none) and the detail says how long it was. Counted against the service: its answer
    /// was unusable.
    ResponseTooLarge,
    /// The handler had handed the message on to be answered later
    /// ([`ShardContext::defer`](crate::handler::ShardContext::defer)), and whoever held it
    /// went away without an answer: a worker process that died, closed its connection,
    /// broke the worker protocol, or was still holding it when the engine shut down.
    /// Counted against the service.
    WorkerLost,
    /// The handler had handed the message on to be answered later, and no answer came
    /// within its deadline (the worker protocol's answer deadline, or a drain's deadline).
    /// Counted against the service.
    WorkerTimeout,
}

impl FailureReason {
    /// Every reason, in counter order.
    ///
    /// ```
    /// use spillway::outcome::FailureReason;
    /// assert!(FailureReason::ALL.contains(&FailureReason::InvalidRequest));
    /// for (index, reason) in FailureReason::ALL.into_iter().enumerate() {
    ///     assert_eq!(reason.index(), index);
    /// }
    /// ```
    pub const ALL: [FailureReason; 7] = [
        FailureReason::HandlerError,
        FailureReason::HandlerPanic,
        FailureReason::ShardLost,
        FailureReason::InvalidRequest,
        FailureReason::ResponseTooLarge,
        FailureReason::WorkerLost,
        FailureReason::WorkerTimeout,
    ];
    /// Number of reasons.
    pub const COUNT: usize = Self::ALL.len();

    /// Counter index.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Whether a failure for this reason counts against the service (the breaker's error
    /// rate, the adaptive rate): all but [`InvalidRequest`](Self::InvalidRequest), the
    /// client's mistake.
    ///
    /// ```
    /// use spillway::handler::HandlerError;
    /// use spillway::outcome::FailureReason;
    /// assert!(FailureReason::HandlerPanic.counts_against_service());
    /// assert!(HandlerError::failed("disk full").reason().counts_against_service());
    /// assert!(!HandlerError::invalid("bad JSON").reason().counts_against_service());
    /// ```
    pub const fn counts_against_service(self) -> bool {
        !matches!(self, FailureReason::InvalidRequest)
    }

    /// A stable snake_case name for reports.
    pub const fn name(self) -> &'static str {
        match self {
            FailureReason::HandlerError => "handler_error",
            FailureReason::HandlerPanic => "handler_panic",
            FailureReason::ShardLost => "shard_lost",
            FailureReason::InvalidRequest => "invalid_request",
            FailureReason::ResponseTooLarge => "response_too_large",
            FailureReason::WorkerLost => "worker_lost",
            FailureReason::WorkerTimeout => "worker_timeout",
        }
    }
}

/// Why a message was refused. Each has its own counter in [`Stats`](crate::metrics::Stats).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefusalReason {
    /// The connection's token bucket is empty (level 1).
    RateLimited,
    /// The connection has its cap of pending messages (level 2).
    ConnectionQueueFull,
    /// The connection has its cap of pending payload bytes (level 2).
    ConnectionBytesFull,
    /// The tenant has its aggregate cap of pending messages across shards (level 2).
    TenantQueueFull,
    /// The shard has its cap of pending messages of this role (level 2).
    RoleQueueFull,
    /// The shard's handler queue is at its cap (level 2).
    HandlerQueueFull,
    /// The shard tracks its maximum number of connections and none is idle enough to evict.
    ConnectionLimit,
    /// The connection was disconnected by the `disconnect` action at a cap.
    Disconnected,
    /// The engine is shutting down and takes no new work.
    ShuttingDown,
    /// The connection is being drained by the control plane (or was, and is closed).
    Draining,
    /// The tenant has used this process's share of its fleet-wide rate (`[global]`; or,
    /// with Redis unavailable and `on_unavailable = "local"`, its local fallback rate).
    GlobalQuotaExceeded,
    /// The tenant's fleet-wide quota cannot be checked (Redis unavailable) and
    /// `[global] on_unavailable = "refuse"`.
    GlobalQuotaUnavailable,
}

impl RefusalReason {
    /// Every reason, in counter order.
    pub const ALL: [RefusalReason; 12] = [
        RefusalReason::RateLimited,
        RefusalReason::ConnectionQueueFull,
        RefusalReason::ConnectionBytesFull,
        RefusalReason::TenantQueueFull,
        RefusalReason::RoleQueueFull,
        RefusalReason::HandlerQueueFull,
        RefusalReason::ConnectionLimit,
        RefusalReason::Disconnected,
        RefusalReason::ShuttingDown,
        RefusalReason::Draining,
        RefusalReason::GlobalQuotaExceeded,
        RefusalReason::GlobalQuotaUnavailable,
    ];
    /// Number of reasons.
    pub const COUNT: usize = Self::ALL.len();

    /// Counter index, in [`RefusalReason::ALL`] order.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// A stable snake_case name for reports.
    pub const fn name(self) -> &'static str {
        match self {
            RefusalReason::RateLimited => "rate_limited",
            RefusalReason::ConnectionQueueFull => "connection_queue_full",
            RefusalReason::ConnectionBytesFull => "connection_bytes_full",
            RefusalReason::TenantQueueFull => "tenant_queue_full",
            RefusalReason::RoleQueueFull => "role_queue_full",
            RefusalReason::HandlerQueueFull => "handler_queue_full",
            RefusalReason::ConnectionLimit => "connection_limit",
            RefusalReason::Disconnected => "disconnected",
            RefusalReason::ShuttingDown => "shutting_down",
            RefusalReason::Draining => "draining",
            RefusalReason::GlobalQuotaExceeded => "global_quota_exceeded",
            RefusalReason::GlobalQuotaUnavailable => "global_quota_unavailable",
        }
    }
}

/// Why a message was shed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ShedReason {
    /// The circuit breaker is open (or forced open) and the message's priority is shed
    /// (P2 and P3).
    CircuitOpen,
}

impl ShedReason {
    /// Every reason, in counter order.
    pub const ALL: [ShedReason; 1] = [ShedReason::CircuitOpen];
    /// Number of reasons.
    pub const COUNT: usize = Self::ALL.len();

    /// Counter index.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// A stable snake_case name for reports.
    pub const fn name(self) -> &'static str {
        match self {
            ShedReason::CircuitOpen => "circuit_open",
        }
    }
}

/// Why an admitted message was dropped before its handler ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Evicted to make room for a newer message (`drop` action, `drop_oldest` policy).
    EvictedForNewer,
    /// The incoming message itself was dropped at a cap (`drop` action, `drop_newest`).
    DroppedNewest,
    /// Its connection was disconnected (`disconnect` action) while it was queued.
    Disconnected,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 3] = [
        DropReason::EvictedForNewer,
        DropReason::DroppedNewest,
        DropReason::Disconnected,
    ];
    /// Number of reasons.
    pub const COUNT: usize = Self::ALL.len();

    /// Counter index.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// A stable snake_case name for reports.
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::EvictedForNewer => "evicted_for_newer",
            DropReason::DroppedNewest => "dropped_newest",
            DropReason::Disconnected => "disconnected",
        }
    }
}
