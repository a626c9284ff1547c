//! The one-byte codes of the engine's vocabulary on the wire ([`WireCode`]: priorities,
//! roles, the reasons of each outcome) and the three fields a Reply carries an [`Outcome`]
//! in ([`OutcomeFields`]).

use crate::message::{Priority, Role};
use crate::outcome::{DropReason, FailureReason, Outcome, RefusalReason, ShedReason};

use super::errors::ProtocolError;
use super::header::FrameType;

/// A value with a stable one-byte code on the wire. The codes are fixed by
/// `docs/PROTOCOL.md`, spelled out one by one (never the declaration order of the enum),
/// and never reused for something else.
pub trait WireCode: Sized + Copy {
    /// The code on the wire.
    fn wire_code(self) -> u8;
    /// The value of `code`, or `None` for a code no version defines.
    fn from_wire_code(code: u8) -> Option<Self>;
}

impl WireCode for Priority {
    /// `0` for P0 up to `3` for P3.
    fn wire_code(self) -> u8 {
        match self {
            Priority::P0 => 0,
            Priority::P1 => 1,
            Priority::P2 => 2,
            Priority::P3 => 3,
        }
    }

    fn from_wire_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Priority::P0),
            1 => Some(Priority::P1),
            2 => Some(Priority::P2),
            3 => Some(Priority::P3),
            _ => None,
        }
    }
}

impl WireCode for Role {
    /// `0` default, `1` session, `2` sse, `3` task_worker, `4` tool_executor,
    /// `5` transport.
    fn wire_code(self) -> u8 {
        match self {
            Role::Default => 0,
            Role::Session => 1,
            Role::Sse => 2,
            Role::TaskWorker => 3,
            Role::ToolExecutor => 4,
            Role::Transport => 5,
        }
    }

    fn from_wire_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Role::Default),
            1 => Some(Role::Session),
            2 => Some(Role::Sse),
            3 => Some(Role::TaskWorker),
            4 => Some(Role::ToolExecutor),
            5 => Some(Role::Transport),
            _ => None,
        }
    }
}

impl WireCode for FailureReason {
    /// `1` handler_error, `2` handler_panic, `3` shard_lost, `4` invalid_request,
    /// `5` response_too_large.
    fn wire_code(self) -> u8 {
        match self {
            FailureReason::HandlerError => 1,
            FailureReason::HandlerPanic => 2,
            FailureReason::ShardLost => 3,
            FailureReason::InvalidRequest => 4,
            FailureReason::ResponseTooLarge => 5,
            FailureReason::WorkerLost => 6,
            FailureReason::WorkerTimeout => 7,
        }
    }

    fn from_wire_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(FailureReason::HandlerError),
            2 => Some(FailureReason::HandlerPanic),
            3 => Some(FailureReason::ShardLost),
            4 => Some(FailureReason::InvalidRequest),
            5 => Some(FailureReason::ResponseTooLarge),
            6 => Some(FailureReason::WorkerLost),
            7 => Some(FailureReason::WorkerTimeout),
            _ => None,
        }
    }
}

impl WireCode for RefusalReason {
    /// `1` rate_limited up to `12` global_quota_unavailable, in the order of `docs/PROTOCOL.md`.
    fn wire_code(self) -> u8 {
        match self {
            RefusalReason::RateLimited => 1,
            RefusalReason::ConnectionQueueFull => 2,
            RefusalReason::ConnectionBytesFull => 3,
            RefusalReason::TenantQueueFull => 4,
            RefusalReason::RoleQueueFull => 5,
            RefusalReason::HandlerQueueFull => 6,
            RefusalReason::ConnectionLimit => 7,
            RefusalReason::Disconnected => 8,
            RefusalReason::ShuttingDown => 9,
            RefusalReason::Draining => 10,
            RefusalReason::GlobalQuotaExceeded => 11,
            RefusalReason::GlobalQuotaUnavailable => 12,
        }
    }

    fn from_wire_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(RefusalReason::RateLimited),
            2 => Some(RefusalReason::ConnectionQueueFull),
            3 => Some(RefusalReason::ConnectionBytesFull),
            4 => Some(RefusalReason::TenantQueueFull),
            5 => Some(RefusalReason::RoleQueueFull),
            6 => Some(RefusalReason::HandlerQueueFull),
            7 => Some(RefusalReason::ConnectionLimit),
            8 => Some(RefusalReason::Disconnected),
            9 => Some(RefusalReason::ShuttingDown),
            10 => Some(RefusalReason::Draining),
            11 => Some(RefusalReason::GlobalQuotaExceeded),
            12 => Some(RefusalReason::GlobalQuotaUnavailable),
            _ => None,
        }
    }
}

impl WireCode for ShedReason {
    /// `1` circuit_open.
    fn wire_code(self) -> u8 {
        match self {
            ShedReason::CircuitOpen => 1,
        }
    }

    fn from_wire_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(ShedReason::CircuitOpen),
            _ => None,
        }
    }
}

impl WireCode for DropReason {
    /// `1` evicted_for_newer, `2` dropped_newest, `3` disconnected.
    fn wire_code(self) -> u8 {
        match self {
            DropReason::EvictedForNewer => 1,
            DropReason::DroppedNewest => 2,
            DropReason::Disconnected => 3,
        }
    }

    fn from_wire_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(DropReason::EvictedForNewer),
            2 => Some(DropReason::DroppedNewest),
            3 => Some(DropReason::Disconnected),
            _ => None,
        }
    }
}

/// Reply outcome code: the handler returned success. Reason `0`.
pub const OUTCOME_DELIVERED: u8 = 1;
/// Reply outcome code: the handler failed; reason a [`FailureReason`] code.
pub const OUTCOME_FAILED: u8 = 2;
/// Reply outcome code: not admitted; reason a [`RefusalReason`] code, with `retry_after_ns`.
pub const OUTCOME_REFUSED: u8 = 3;
/// Reply outcome code: shed while the breaker is open; reason a [`ShedReason`] code.
pub const OUTCOME_SHED: u8 = 4;
/// Reply outcome code: cancelled before its handler ran. Reason `0`.
pub const OUTCOME_CANCELLED: u8 = 5;
/// Reply outcome code: dropped by the drop policy; reason a [`DropReason`] code.
pub const OUTCOME_DROPPED: u8 = 6;

/// An [`Outcome`] as the three fields of a Reply body. `reason_code` is `0` for the
/// outcomes without a reason and `retry_after_ns` is `0` unless the message was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutcomeFields {
    /// One of the `OUTCOME_*` codes.
    pub outcome_code: u8,
    /// The reason's [`WireCode`], or `0`.
    pub reason_code: u8,
    /// A refusal's `retry_after_ns`, or `0`.
    pub retry_after_ns: u64,
}

impl OutcomeFields {
    /// The fields that carry `outcome`.
    pub fn from_outcome(outcome: Outcome) -> Self {
        let (outcome_code, reason_code, retry_after_ns) = match outcome {
            Outcome::Delivered => (OUTCOME_DELIVERED, 0, 0),
            Outcome::Failed { reason } => (OUTCOME_FAILED, reason.wire_code(), 0),
            Outcome::Refused {
                reason,
                retry_after_ns,
            } => (OUTCOME_REFUSED, reason.wire_code(), retry_after_ns),
            Outcome::Shed { reason } => (OUTCOME_SHED, reason.wire_code(), 0),
            Outcome::Cancelled => (OUTCOME_CANCELLED, 0, 0),
            Outcome::Dropped { reason } => (OUTCOME_DROPPED, reason.wire_code(), 0),
        };
        Self {
            outcome_code,
            reason_code,
            retry_after_ns,
        }
    }

    /// The outcome these fields carry, or [`ProtocolError::BadField`] naming the first field
    /// that is wrong: an unknown `outcome` code, a `reason` unknown for that outcome (or not
    /// `0` where it has none), a non-zero `retry_after_ns` on anything but a refusal.
    pub fn to_outcome(self) -> Result<Outcome, ProtocolError> {
        let bad = |field: &'static str, value: u64| ProtocolError::BadField {
            frame_type: FrameType::Reply,
            field,
            value,
        };
        let reason = self.reason_code;
        let outcome = match self.outcome_code {
            OUTCOME_DELIVERED if reason == 0 => Outcome::Delivered,
            OUTCOME_FAILED => Outcome::Failed {
                reason: FailureReason::from_wire_code(reason)
                    .ok_or_else(|| bad("reason", reason.into()))?,
            },
            OUTCOME_REFUSED => {
                return Ok(Outcome::Refused {
                    reason: RefusalReason::from_wire_code(reason)
                        .ok_or_else(|| bad("reason", reason.into()))?,
                    retry_after_ns: self.retry_after_ns,
                })
            }
            OUTCOME_SHED => Outcome::Shed {
                reason: ShedReason::from_wire_code(reason)
                    .ok_or_else(|| bad("reason", reason.into()))?,
            },
            OUTCOME_CANCELLED if reason == 0 => Outcome::Cancelled,
            OUTCOME_DROPPED => Outcome::Dropped {
                reason: DropReason::from_wire_code(reason)
                    .ok_or_else(|| bad("reason", reason.into()))?,
            },
            OUTCOME_DELIVERED | OUTCOME_CANCELLED => return Err(bad("reason", reason.into())),
            unknown => return Err(bad("outcome", unknown.into())),
        };
        if self.retry_after_ns != 0 {
            return Err(bad("retry_after_ns", self.retry_after_ns));
        }
        Ok(outcome)
    }
}
