//! The user's code: a [`Handler`] runs each admitted message on the shard that owns its
//! connection, and a [`ShardContext`] lets code on the shard admit more work synchronously.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;

use crate::message::{ConnectionId, Message, MessageId};
use crate::outcome::{Completion, ErrorDetail, FailureReason, Outcome};

use super::core::ShardCore;
use super::queue::Origin;
use super::shared::{shard_of_connection, EventWaker};

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
#[error("{}: {}", if self.reason == FailureReason::InvalidRequest { "invalid request" } else { "handler failed" }, self.detail.as_ref().map_or("", ErrorDetail::as_str))]
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
    fn handle(
        &mut self,
        message: &Message,
        context: &mut ShardContext<'_>,
    ) -> Result<Bytes, HandlerError>;

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
}

impl<'a> ShardContext<'a> {
    pub(crate) fn new(core: &'a mut ShardCore, now_ns: u64) -> Self {
        Self {
            core,
            now_ns,
            event_waker: None,
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
}
