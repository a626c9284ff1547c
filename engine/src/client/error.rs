//! Everything a [`Client`](super::Client) call can fail with.

use core::fmt;
use core::time::Duration;

use crate::message::MessageId;
use crate::net::protocol::{ErrorCode, FrameTooLarge, ProtocolError};
use crate::outcome::Outcome;

/// Why a [`Client`](super::Client) call failed. After [`ClientError::Io`],
/// [`ClientError::Protocol`], [`ClientError::Server`], [`ClientError::Closed`] and a
/// [`ClientError::Timeout`] while writing, the connection is closed and every later call
/// answers [`ClientError::Closed`]; after the others it can still be used.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket failed (connect, read or write).
    #[error("i/o error on the connection: {0}")]
    Io(#[from] std::io::Error),
    /// The server sent bytes that break `docs/PROTOCOL.md`; the client closed the
    /// connection.
    #[error("the server broke the protocol: {0}")]
    Protocol(#[from] ProtocolError),
    /// The server sent an Error frame (`docs/PROTOCOL.md` section 5.12) and closed the
    /// connection.
    #[error("the server closed the connection with error {code} ({}): {detail}", code.code())]
    Server {
        /// The error code.
        code: ErrorCode,
        /// The server's explanation, for people.
        detail: String,
    },
    /// The server answered the Hello with an Error frame instead of a Welcome (at its
    /// connection limit, shutting down, or a version it does not speak).
    #[error("the server refused the handshake with error {code} ({}): {detail}", code.code())]
    HandshakeFailed {
        /// The error code.
        code: ErrorCode,
        /// The server's explanation, for people.
        detail: String,
    },
    /// [`Client::send_with_backpressure`](super::Client::send_with_backpressure) was refused
    /// or shed on every attempt, up to its retry bound.
    #[error(
        "gave up on message {} after {attempts} attempts and {waited:?} of backoff; the last \
         outcome was {}",
        .message_id.0,
        OutcomeText(*.last_outcome)
    )]
    GaveUp {
        /// The message.
        message_id: MessageId,
        /// Submissions made: the first and every retry.
        attempts: u32,
        /// The last answer: a refusal or a shed.
        last_outcome: Outcome,
        /// Time spent in backoff waits.
        waited: Duration,
    },
    /// [`Client::send_with_backpressure`](super::Client::send_with_backpressure) got a
    /// refusal that waiting does not help (`disconnected`, `shutting_down`:
    /// `docs/PROTOCOL.md` section 6.3), so it stopped retrying.
    #[error(
        "message {} was {} on attempt {attempts} after {waited:?} of backoff; waiting does not \
         help",
        .message_id.0,
        OutcomeText(*.last_outcome)
    )]
    NotRetryable {
        /// The message.
        message_id: MessageId,
        /// Submissions made, the last included.
        attempts: u32,
        /// The refusal.
        last_outcome: Outcome,
        /// Time spent in backoff waits before it.
        waited: Duration,
    },
    /// A Submit's payload does not fit under the server's `max_frame_bytes`; nothing was
    /// sent.
    #[error("the submit does not fit the server's frame limit: {0}")]
    FrameTooLarge(#[from] FrameTooLarge),
    /// The connection is closed: by the server (end of stream, or after an Error), by an
    /// earlier failure, or by [`Client::close`](super::Client::close).
    #[error("the connection is closed")]
    Closed,
    /// Something took longer than its bound.
    #[error("timed out after {waited:?} waiting for {operation}")]
    Timeout {
        /// What was awaited.
        operation: &'static str,
        /// How long.
        waited: Duration,
    },
    /// As many Submits are unanswered (or answered and not yet taken with
    /// [`Client::next_event`](super::Client::next_event)) as the client allows; take
    /// events, then submit again. Nothing was sent.
    #[error(
        "{in_flight} submits are in flight or unread, the limit ({limit}); read replies first"
    )]
    InFlightFull {
        /// Submits without a Reply taken by the caller.
        in_flight: u32,
        /// The limit: the smaller of the server's `send_buffer_replies` and
        /// [`ClientConfig::max_in_flight`](super::ClientConfig::max_in_flight).
        limit: u32,
    },
    /// The server dropped Replies (RepliesDropped) and this message's Reply was surely
    /// among them: its outcome is unknown (`docs/PROTOCOL.md` section 9).
    #[error("the reply to message {} was dropped by the server; its outcome is unknown", .message_id.0)]
    ReplyLost {
        /// The message.
        message_id: MessageId,
    },
    /// The server sent a Reply while no Submit was unanswered, which breaks "exactly one
    /// Reply per Submit"; the client closed the connection.
    #[error("the server sent a reply to message {} with no submit unanswered", .message_id.0)]
    UnexpectedReply {
        /// The id in the Reply.
        message_id: MessageId,
    },
    /// A setting is out of its range.
    #[error("invalid setting {field}: {reason}")]
    InvalidSetting {
        /// The field's name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// An [`Outcome`] in words, with its reason's wire name: `refused (rate_limited, retry
/// after 2ms)`, `shed (circuit_open)`, `delivered`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutcomeText(pub Outcome);

impl fmt::Display for OutcomeText {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Outcome::Delivered => formatter.write_str("delivered"),
            Outcome::Failed { reason } => write!(formatter, "failed ({})", reason.name()),
            Outcome::Refused {
                reason,
                retry_after_ns,
            } => write!(
                formatter,
                "refused ({}, retry after {:?})",
                reason.name(),
                Duration::from_nanos(retry_after_ns)
            ),
            Outcome::Shed { reason } => write!(formatter, "shed ({})", reason.name()),
            Outcome::Cancelled => formatter.write_str("cancelled"),
            Outcome::Dropped { reason } => write!(formatter, "dropped ({})", reason.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::{RefusalReason, ShedReason};

    #[test]
    fn outcomes_read_with_their_reasons() {
        let refused = Outcome::Refused {
            reason: RefusalReason::RateLimited,
            retry_after_ns: 2_000_000,
        };
        assert_eq!(
            OutcomeText(refused).to_string(),
            "refused (rate_limited, retry after 2ms)"
        );
        assert_eq!(
            OutcomeText(Outcome::Shed {
                reason: ShedReason::CircuitOpen
            })
            .to_string(),
            "shed (circuit_open)"
        );
        assert_eq!(OutcomeText(Outcome::Delivered).to_string(), "delivered");
    }

    #[test]
    fn give_up_names_the_attempts_the_last_outcome_and_the_wait() {
        let error = ClientError::GaveUp {
            message_id: MessageId(7),
            attempts: 51,
            last_outcome: Outcome::Refused {
                reason: RefusalReason::ConnectionQueueFull,
                retry_after_ns: 0,
            },
            waited: Duration::from_millis(1500),
        };
        assert_eq!(
            error.to_string(),
            "gave up on message 7 after 51 attempts and 1.5s of backoff; the last outcome was \
             refused (connection_queue_full, retry after 0ns)"
        );
    }

    #[test]
    fn server_errors_name_the_code() {
        let error = ClientError::Server {
            code: ErrorCode::ShuttingDown,
            detail: "bye".into(),
        };
        assert_eq!(
            error.to_string(),
            "the server closed the connection with error shutting_down (11): bye"
        );
    }
}
