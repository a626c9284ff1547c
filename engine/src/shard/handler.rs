//! The user's code: a [`Handler`] runs each admitted message on the shard that owns its
//! connection, and a [`ShardContext`] lets code on the shard admit more work synchronously.

use std::sync::OnceLock;
use std::time::Duration;

use crate::message::{ConnectionId, Message, MessageId};
use crate::outcome::{Completion, Outcome};

use super::core::ShardCore;
use super::queue::Origin;
use super::shared::{shard_of_connection, EventWaker};

/// A handler's refusal of one message; the message completes
/// [`Outcome::Failed`] with
/// [`FailureReason::HandlerError`](crate::outcome::FailureReason::HandlerError).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("handler failed: {0}")]
pub struct HandlerError(pub String);

/// Serves messages. Each shard runs its own clone, on its own thread, so a handler needs no
/// locks for its own state.
///
/// Closures `FnMut(&Message) -> Result<(), HandlerError>` are handlers:
///
/// ```
/// use spillway::handler::{Handler, HandlerError};
/// use spillway::message::Message;
/// fn assert_handler(_: impl Handler) {}
/// assert_handler(|message: &Message| {
///     if message.payload.is_empty() {
///         Err(HandlerError("empty payload".into()))
///     } else {
///         Ok(())
///     }
/// });
/// ```
///
/// A handler that panics fails its message with `HandlerPanic`; the shard catches the
/// panic and keeps running.
pub trait Handler: Send + 'static {
    /// Serves one message. `context` admits follow-up work on this shard.
    fn handle(
        &mut self,
        message: &Message,
        context: &mut ShardContext<'_>,
    ) -> Result<(), HandlerError>;

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

impl<F> Handler for F
where
    F: FnMut(&Message) -> Result<(), HandlerError> + Send + 'static,
{
    fn handle(
        &mut self,
        message: &Message,
        _context: &mut ShardContext<'_>,
    ) -> Result<(), HandlerError> {
        self(message)
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
        self.core.admit(message, Origin::LOCAL, self.now_ns)
    }

    /// Cancels the queued message `message` of `connection` (one this shard owns): true if
    /// it was queued, and then it completes [`Outcome::Cancelled`]; false if it is not
    /// queued (unknown, running or already run), and nothing is touched.
    pub fn cancel(&mut self, connection: ConnectionId, message: MessageId) -> bool {
        self.core.cancel(connection, message, self.now_ns)
    }
}
