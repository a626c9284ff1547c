//! The user's code: a [`Handler`] runs each admitted message on the shard that owns its
//! connection, and a [`ShardContext`] lets code on the shard admit more work synchronously.

use crate::message::Message;
use crate::outcome::{Completion, Outcome};
use crate::shard::core::ShardCore;
use crate::shard::queue::Origin;

/// A handler's refusal of one message; the message completes
/// [`Outcome::Failed`](crate::outcome::Outcome::Failed) with
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
}

impl ShardContext<'_> {
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
}
