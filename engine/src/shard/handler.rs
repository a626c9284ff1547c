//! The user's code: a [`Handler`] runs each admitted message on the shard that owns its
//! connection, and a [`ShardContext`] lets code on the shard admit more work synchronously.

use std::os::fd::RawFd;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;

use crate::command::WorkerHealth;
use crate::message::{ConnectionId, Message, MessageId};
use crate::outcome::{Completion, ErrorDetail, FailureReason, Outcome};

use super::core::ShardCore;
use super::queue::Origin;
use super::shared::{shard_of_connection, EventWaker};

pub use super::deferred::Ticket;

/// A handler's failure to serve one message, of one of two classes, as every RPC system
/// has them: the client got the request wrong ([`invalid`](Self::invalid)), or the service
/// is failing ([`failed`](Self::failed)). The message completes [`Outcome::Failed`] with
/// [`FailureReason::InvalidRequest`] or [`FailureReason::HandlerError`], and the text as
/// the completion's `detail` (at most [`ErrorDetail::MAX_BYTES`], and no allocation when it
/// is empty). Only a failure of the service counts toward the circuit breaker's error rate
/// and the adaptive rate: a client sending malformed input cannot open the breaker for
/// everyone.
///
/// ```
/// use spillway::handler::HandlerError;
/// use spillway::outcome::FailureReason;
/// let bad_input = HandlerError::invalid("expected JSON");
/// assert_eq!(bad_input.reason(), FailureReason::InvalidRequest);
/// let outage = HandlerError::failed("database unreachable");
/// assert_eq!(outage.reason(), FailureReason::HandlerError);
/// assert_eq!(outage.to_string(), "handler failed: database unreachable");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {}", match self.reason { FailureReason::InvalidRequest => "invalid request", FailureReason::WorkerLost => "worker lost", FailureReason::WorkerTimeout => "worker timed out", _ => "handler failed" }, self.detail.as_ref().map_or("", ErrorDetail::as_str))]
pub struct HandlerError {
    reason: FailureReason,
    detail: Option<ErrorDetail>,
}

impl HandlerError {
    /// The request is the client's mistake (malformed, invalid, not allowed): not counted
    /// against the service. See the example on [`HandlerError`].
    pub fn invalid(detail: impl AsRef<str>) -> Self {
        Self::of(FailureReason::InvalidRequest, detail.as_ref())
    }

    /// The service failed to serve a valid request: counted by the breaker's error rate and
    /// the adaptive rate. See the example on [`HandlerError`].
    pub fn failed(detail: impl AsRef<str>) -> Self {
        Self::of(FailureReason::HandlerError, detail.as_ref())
    }

    /// Whoever the handler handed a deferred message to (a worker process) went away
    /// without answering it ([`FailureReason::WorkerLost`]): counted against the service.
    pub fn worker_lost(detail: impl AsRef<str>) -> Self {
        Self::of(FailureReason::WorkerLost, detail.as_ref())
    }

    /// Whoever the handler handed a deferred message to did not answer in time
    /// ([`FailureReason::WorkerTimeout`]): counted against the service.
    pub fn worker_timeout(detail: impl AsRef<str>) -> Self {
        Self::of(FailureReason::WorkerTimeout, detail.as_ref())
    }

    fn of(reason: FailureReason, detail: &str) -> Self {
        Self {
            reason,
            detail: (!detail.is_empty()).then(|| ErrorDetail::new(detail)),
        }
    }

    /// The failure reason the message completes with. See the example on [`HandlerError`].
    pub fn reason(&self) -> FailureReason {
        self.reason
    }

    /// The error text, if any: none for an empty one.
    ///
    /// ```
    /// use spillway::handler::HandlerError;
    /// use spillway::outcome::ErrorDetail;
    /// let error = HandlerError::invalid("missing field `id`");
    /// assert_eq!(error.detail().map(ErrorDetail::as_str), Some("missing field `id`"));
    /// assert_eq!(HandlerError::failed("").detail(), None);
    /// ```
    pub fn detail(&self) -> Option<&ErrorDetail> {
        self.detail.as_ref()
    }

    /// The text, moved out for the completion.
    pub(crate) fn into_detail(self) -> Option<ErrorDetail> {
        self.detail
    }
}

/// What a closure handler may return on success: nothing (`()`, an empty response) or the
/// response's bytes (`Bytes`, `Vec<u8>`, `String`, a static slice), handed to the
/// submitter in the completion without a copy.
///
/// ```
/// use spillway::handler::IntoResponse;
/// assert!(().into_response().is_empty());
/// assert_eq!(&"ok".into_response()[..], b"ok");
/// let owned = vec![1u8, 2, 3];
/// let pointer = owned.as_ptr();
/// assert_eq!(owned.into_response().as_ptr(), pointer); // the same buffer, not a copy
/// ```
pub trait IntoResponse {
    /// The response bytes.
    fn into_response(self) -> Bytes;
}

impl IntoResponse for () {
    #[inline]
    fn into_response(self) -> Bytes {
        Bytes::new()
    }
}

impl IntoResponse for Bytes {
    #[inline]
    fn into_response(self) -> Bytes {
        self
    }
}

impl IntoResponse for Vec<u8> {
    #[inline]
    fn into_response(self) -> Bytes {
        Bytes::from(self)
    }
}

impl IntoResponse for String {
    #[inline]
    fn into_response(self) -> Bytes {
        Bytes::from(self)
    }
}

impl IntoResponse for &'static [u8] {
    #[inline]
    fn into_response(self) -> Bytes {
        Bytes::from_static(self)
    }
}

impl IntoResponse for &'static str {
    #[inline]
    fn into_response(self) -> Bytes {
        Bytes::from_static(self.as_bytes())
    }
}

/// Serves messages. Each shard runs its own clone, on its own thread, so a handler needs no
/// locks for its own state.
///
/// Closures `FnMut(&Message) -> Result<R, HandlerError>` are handlers, where `R` is the
/// response ([`IntoResponse`]: `()` for none, or bytes):
///
/// ```
/// use spillway::handler::{Handler, HandlerError};
/// use spillway::message::Message;
/// fn assert_handler(_: impl Handler) {}
/// assert_handler(|message: &Message| {
///     if message.payload.is_empty() {
///         Err(HandlerError::invalid("empty payload"))
///     } else {
///         Ok(message.payload.len().to_string())
///     }
/// });
/// assert_handler(|_: &Message| Ok::<(), HandlerError>(()));
/// ```
///
/// A handler that panics fails its message with `HandlerPanic`; the shard catches the
/// panic and keeps running.
pub trait Handler: Send + 'static {
    /// Serves one message and answers it: the response bytes (empty for none), which reach
    /// the submitter in the completion, or the error. `context` admits follow-up work on
    /// this shard.
    ///
    /// Or takes it to answer later: a handler that calls [`ShardContext::defer`] here gets a
    /// [`Ticket`] and answers through [`ShardContext::complete`] on a later turn (from
    /// [`poll`](Self::poll), say, when a worker process answers); what it returns is then
    /// ignored, unless it is an error, which finishes the message at once after all.
    fn handle(
        &mut self,
        message: &Message,
        context: &mut ShardContext<'_>,
    ) -> Result<Bytes, HandlerError>;

    /// How many more messages it can take now, for a handler that defers them
    /// ([`ShardContext::defer`]) to something with a limited capacity (workers with
    /// credit). While it says `Some(0)` the shard runs no handler: admitted messages wait in
    /// its bounded queue, highest priority first, where the caps, shedding, drains and
    /// cancels apply as to any backlog. Asked before each message; `None` (the default)
    /// means no limit, as for a handler that answers at once.
    fn capacity(&self) -> Option<usize> {
        None
    }

    /// Hears how a message admitted through [`ShardContext::admit`] finished (messages from
    /// an `Ingress` complete to their ingress instead). Does nothing by default.
    fn completed(&mut self, completion: &Completion) {
        let _ = completion;
    }

    /// Runs once per turn of the shard loop, after the control ring and before the
    /// submission rings: code that feeds the shard from outside the engine (the TCP front
    /// end of [`crate::net`] reads its sockets here) admits through `context` and gets each
    /// verdict at once. Returns how many units of work it found (frames read, bytes
    /// written...), `0` when it found none, so that the shard knows when it is idle.
    ///
    /// It must not block: the shard's control latency and every other connection wait for
    /// it. Does nothing by default.
    fn poll(&mut self, context: &mut ShardContext<'_>) -> usize {
        let _ = context;
        0
    }

    /// Sleeps in the handler's own event source, when it has one, instead of the shard
    /// parking its thread: called when the shard has found no work for a while (per its
    /// wait strategy) and would park for `timeout`. Returns `true` if it waited there,
    /// `false` (the default) if the shard should park as usual.
    ///
    /// A handler that waits here must have registered a waker with
    /// [`ShardContext::set_waker`] from [`poll`](Self::poll), and must return when it is
    /// called, when its source has work, or after about `timeout` (an epoll wait rounds it
    /// up to a millisecond). The TCP front end of [`crate::net`] blocks in its epoll here,
    /// so an idle shard leaves the core to other threads, and wakes on the first socket
    /// event or submission. What it finds is handled by the next `poll`.
    fn wait(&mut self, timeout: Duration) -> bool {
        let _ = timeout;
        false
    }

    /// The file descriptor [`wait`](Self::wait) blocks on (an epoll instance), while this
    /// handler has nothing pending that `wait` would return for at once; `None` otherwise,
    /// and by default. A handler that wraps another one with its own event source
    /// registers this descriptor in its own epoll and waits on both, so that neither's
    /// events wait out the other's timeout (an epoll instance is readable while it has
    /// events ready).
    fn wait_fd(&self) -> Option<RawFd> {
        None
    }

    /// Runs once when the shard has finished its last turn at shutdown, after the last
    /// [`completed`](Self::completed): the place to flush and close what
    /// [`poll`](Self::poll) opened. Does nothing by default.
    fn stopped(&mut self, context: &mut ShardContext<'_>) {
        let _ = context;
    }
}

impl<F, R> Handler for F
where
    F: FnMut(&Message) -> Result<R, HandlerError> + Send + 'static,
    R: IntoResponse,
{
    #[inline]
    fn handle(
        &mut self,
        message: &Message,
        _context: &mut ShardContext<'_>,
    ) -> Result<Bytes, HandlerError> {
        self(message).map(IntoResponse::into_response)
    }
}

/// What code running on a shard can do there: admit work with an immediate verdict.
pub struct ShardContext<'a> {
    pub(crate) core: &'a mut ShardCore,
    pub(crate) now_ns: u64,
    /// The shard's waker slot, offered to [`Handler::poll`] only.
    event_waker: Option<&'a OnceLock<EventWaker>>,
    /// Set for [`Handler::handle`] only: the message being run may be deferred.
    deferrable: bool,
}

/// Why a deferred message could not be finished or deferred.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DeferError {
    /// [`ShardContext::defer`] was called outside [`Handler::handle`].
    #[error("only a handler run may defer its message")]
    NotInHandle,
    /// The ticket's message was finished already (answered, or failed by a drain's
    /// deadline or shutdown), or the ticket belongs to another shard.
    #[error("the ticket names no message held on this shard")]
    StaleTicket,
}

impl<'a> ShardContext<'a> {
    pub(crate) fn new(core: &'a mut ShardCore, now_ns: u64) -> Self {
        Self {
            core,
            now_ns,
            event_waker: None,
            deferrable: false,
        }
    }

    /// A context for [`Handler::handle`], whose message may be deferred.
    pub(crate) fn for_run(core: &'a mut ShardCore, now_ns: u64) -> Self {
        Self {
            deferrable: true,
            ..Self::new(core, now_ns)
        }
    }

    /// A context for [`Handler::poll`] on a shard thread, which may set the shard's waker.
    pub(crate) fn with_waker_slot(
        core: &'a mut ShardCore,
        now_ns: u64,
        event_waker: &'a OnceLock<EventWaker>,
    ) -> Self {
        Self {
            event_waker: Some(event_waker),
            ..Self::new(core, now_ns)
        }
    }

    /// Registers how to wake this shard while it sleeps in the handler's event source (see
    /// [`Handler::wait`]): producers and the control plane call `wake` after giving the
    /// shard work while it sleeps. Set once per shard; returns `false` if one was set
    /// already, or if called outside [`Handler::poll`] or off an engine's shard thread.
    pub fn set_waker(&mut self, wake: impl Fn() + Send + Sync + 'static) -> bool {
        self.event_waker
            .is_some_and(|slot| slot.set(Box::new(wake)).is_ok())
    }

    /// Number of shards in the engine.
    pub fn shard_count(&self) -> usize {
        self.core.shard_count()
    }

    /// Whether this shard owns `connection` (the engine's connection-to-shard map): only
    /// messages of connections it owns may be admitted here.
    pub fn owns(&self, connection: ConnectionId) -> bool {
        shard_of_connection(connection, self.core.shard_count()) == self.core.index()
    }

    /// The first connection id at or after `from` that this shard owns (ids are spread
    /// evenly, so this looks at about [`shard_count`](Self::shard_count) ids), or `None` if
    /// none is left before `u64::MAX`. Code that opens connections on the shard (the TCP
    /// front end) names them with it.
    pub fn owned_connection_from(&self, from: u64) -> Option<ConnectionId> {
        (from..u64::MAX)
            .map(ConnectionId)
            .find(|&candidate| self.owns(candidate))
    }

    /// The shard's index.
    pub fn shard(&self) -> usize {
        self.core.index()
    }

    /// The time of the current batch, in ns on the engine clock.
    pub fn now_ns(&self) -> u64 {
        self.now_ns
    }

    /// Publishes this shard's worker figures, which full health checks report
    /// ([`ShardHealth::workers`]) until the next publication. A worker pool calls it each
    /// turn; a plain store into the shard's own state, read by the shard when it answers a
    /// health check.
    ///
    /// [`ShardHealth::workers`]: crate::control::ShardHealth::workers
    pub fn publish_workers(&mut self, health: WorkerHealth) {
        self.core.set_worker_health(health);
    }

    /// Admits `message` on this shard, through every admission level, and returns the
    /// verdict at once: `Ok` if admitted (its completion comes to [`Handler::completed`]),
    /// otherwise the refusal, shed or drop. The message must belong to a connection this
    /// shard owns; the engine's connection-to-shard map decides which that is.
    pub fn admit(&mut self, message: Message) -> Result<(), Outcome> {
        self.core
            .admit(message, Origin::LOCAL, self.now_ns)
            .map_err(|completion| completion.outcome)
    }

    /// Cancels the queued message `message` of `connection` (one this shard owns): true if
    /// it was queued, and then it completes [`Outcome::Cancelled`]; false if it is not
    /// queued (unknown, running or already run), and nothing is touched.
    pub fn cancel(&mut self, connection: ConnectionId, message: MessageId) -> bool {
        self.core.cancel(connection, message, self.now_ns)
    }

    /// Takes the message being handled to answer it later, through
    /// [`complete`](Self::complete) with the returned ticket, on this shard (from a later
    /// [`Handler::poll`], or another run). Meanwhile it stays admitted (in flight in the
    /// stats, held against its connection's, role's and tenant's caps), a drain of its
    /// connection waits for it, and a drain's deadline fails it `WorkerTimeout`; at
    /// shutdown the engine waits for it as long as a drain would
    /// (`control.drain_timeout_ns`), then fails it `WorkerLost`. Calling it twice in one
    /// run gives the same ticket. The shard holds at most `caps.handler_queue` deferred
    /// messages, and runs no handler while it holds that many.
    ///
    /// Only [`Handler::handle`] may defer: elsewhere it is [`DeferError::NotInHandle`].
    ///
    /// ```
    /// use bytes::Bytes;
    /// use spillway::config::Config;
    /// use spillway::handler::{Handler, HandlerError, ShardContext, Ticket};
    /// use spillway::message::{ConnectionId, Message, MessageId};
    /// use spillway::outcome::Outcome;
    /// use spillway::simulation::Simulation;
    ///
    /// /// Answers each message on the next poll, one at a time.
    /// #[derive(Default)]
    /// struct Later(Vec<Ticket>);
    /// impl Handler for Later {
    ///     fn handle(&mut self, _: &Message, context: &mut ShardContext<'_>) -> Result<Bytes, HandlerError> {
    ///         self.0.push(context.defer().unwrap());
    ///         Ok(Bytes::new())
    ///     }
    ///     fn capacity(&self) -> Option<usize> {
    ///         Some(1 - self.0.len())
    ///     }
    ///     fn poll(&mut self, context: &mut ShardContext<'_>) -> usize {
    ///         let answered = self.0.len();
    ///         for ticket in self.0.drain(..) {
    ///             context.complete(ticket, Ok(Bytes::from_static(b"later"))).unwrap();
    ///         }
    ///         answered
    ///     }
    /// }
    ///
    /// let mut simulation = Simulation::new(Config::default(), Later::default()).unwrap();
    /// for id in 0..2 {
    ///     simulation.submit(0, Message::new(ConnectionId(1), MessageId(id))).unwrap();
    /// }
    /// assert_eq!(simulation.run(0, 1_000, 16), 1); // one taken: no capacity for the second
    /// assert_eq!((simulation.pending(), simulation.deferred()), (1, 1));
    /// simulation.poll(2_000); // answers it
    /// let done = simulation.take_completions();
    /// assert_eq!((done[0].outcome, &done[0].response[..]), (Outcome::Delivered, &b"later"[..]));
    /// assert!(simulation.stats().reconciles());
    /// ```
    pub fn defer(&mut self) -> Result<Ticket, DeferError> {
        if !self.deferrable {
            return Err(DeferError::NotInHandle);
        }
        // `run_handlers` runs a handler only while the table has room.
        Ok(self
            .core
            .run_ticket()
            .expect("a handler runs only while a message can be deferred"))
    }

    /// Finishes the deferred message `ticket` names with the handler's answer, as if
    /// [`Handler::handle`] had returned it now: the completion goes to its submitter, and its
    /// latency (from admission until now) goes to the circuit breaker's window and its
    /// connection's adaptive rate, as for a message answered at once.
    /// [`DeferError::StaleTicket`] if it was finished already (then nothing changes).
    pub fn complete(
        &mut self,
        ticket: Ticket,
        result: Result<Bytes, HandlerError>,
    ) -> Result<(), DeferError> {
        let (outcome, response, detail) = answer_outcome(result, self.core.response_bytes_max());
        if self
            .core
            .complete_deferred(ticket, outcome, response, detail, self.now_ns)
        {
            Ok(())
        } else {
            Err(DeferError::StaleTicket)
        }
    }

    /// The deferred message `ticket` names, and when its handler took it (engine clock,
    /// ns), while it is held: what a handler needs to hand it on again (a retry on another
    /// worker) without keeping a copy of its own.
    pub fn deferred_message(&self, ticket: Ticket) -> Option<(&Message, u64)> {
        self.core.deferred_message(ticket)
    }

    /// Messages deferred on this shard and not finished yet.
    pub fn deferred_count(&self) -> usize {
        self.core.deferred()
    }
}

/// What a handler's answer makes of its message, now (a run) or later (a deferred
/// completion): delivered with its response, failed with its error's reason and text, or
/// failed `ResponseTooLarge` when the response is longer than `response_bytes_max`.
pub(super) fn answer_outcome(
    answer: Result<Bytes, HandlerError>,
    response_bytes_max: usize,
) -> (Outcome, Bytes, Option<ErrorDetail>) {
    match answer {
        Ok(response) if response.len() > response_bytes_max => (
            Outcome::Failed {
                reason: FailureReason::ResponseTooLarge,
            },
            Bytes::new(),
            Some(response_too_large(response.len(), response_bytes_max)),
        ),
        Ok(response) => (Outcome::Delivered, response, None),
        Err(error) => (
            Outcome::Failed {
                reason: error.reason(),
            },
            Bytes::new(),
            error.into_detail(),
        ),
    }
}

/// The detail of a response too long to deliver: how long it was, and the limit. Formatted
/// only on this failure, so a delivered message never pays for it.
fn response_too_large(response_bytes: usize, response_bytes_max: usize) -> ErrorDetail {
    ErrorDetail::new(&format!(
        "the response of {response_bytes} bytes exceeds the limit of {response_bytes_max} bytes (net.max_response_bytes)"
    ))
}
