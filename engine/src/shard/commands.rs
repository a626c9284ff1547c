//! The shard's side of the control rings: answers the commands waiting in its ring (before
//! every data batch), sends the breaker transitions it made, and reports drains as they
//! finish.

use crate::command::{DrainResult, ShardCommand, ShardReply, BREAKER_REPORT_ROOM};
use crate::config::range::CONTROL_RING_CAPACITY;
use crate::ring::spsc;

use super::core::ShardCore;

// The control thread keeps `ring_capacity - BREAKER_REPORT_ROOM` commands outstanding at
// most: at least one for the smallest ring.
const _: () = assert!(BREAKER_REPORT_ROOM < *CONTROL_RING_CAPACITY.start());

/// The shard's side: answers every command waiting in its ring, then sends the breaker
/// transitions it made since the last call. Called by the shard thread before each data
/// batch, right after its per-batch upkeep (where transitions are decided). Returns whether
/// it told the control thread anything (it should be woken).
pub(crate) fn serve_shard_commands(
    core: &mut ShardCore,
    commands: &mut spsc::Consumer<ShardCommand>,
    replies: &mut spsc::Producer<ShardReply>,
    now_ns: u64,
) -> bool {
    let mut any = false;
    while let Some(command) = commands.pop() {
        any = true;
        let reply = match command {
            ShardCommand::Ping { request } => Some(ShardReply::Pong {
                request,
                shard: core.index(),
                pending_messages: core.pending() as u64,
                connections: core.connection_count() as u64,
                backpressure: core.backpressure_active(),
                lost: false,
                workers: core.worker_health(),
            }),
            ShardCommand::Drain {
                request,
                connection,
                finish_queued,
                deadline_ns,
            } => core
                .begin_drain(connection, finish_queued, request, deadline_ns, now_ns)
                .map(|result| ShardReply::Drained { request, result }),
            ShardCommand::Cancel {
                request,
                connection,
                message,
            } => Some(ShardReply::Cancelled {
                request,
                found: core.cancel(connection, message, now_ns),
            }),
            ShardCommand::SetRoleCap {
                request,
                role,
                max_pending,
            } => {
                core.set_role_cap(role, max_pending);
                Some(ShardReply::Applied {
                    request,
                    changed: 1,
                })
            }
            ShardCommand::SetPriorityPercent { request, percent } => {
                core.set_priority_percent(percent);
                Some(ShardReply::Applied {
                    request,
                    changed: 1,
                })
            }
            ShardCommand::SetConnectionCap {
                request,
                connection,
                max_pending,
            } => Some(ShardReply::Applied {
                request,
                changed: usize::from(core.set_connection_cap(connection, max_pending, now_ns)),
            }),
            ShardCommand::SetRate {
                request,
                scope,
                rate_per_sec,
            } => Some(ShardReply::Applied {
                request,
                changed: core.set_rate(scope, rate_per_sec, now_ns),
            }),
        };
        if let Some(reply) = reply {
            // Room is guaranteed: the control thread never has more commands outstanding
            // to this shard than the reply ring holds, less the breaker reports' room.
            let _ = replies.push(reply);
        }
    }
    any | send_breaker_reports(core, replies)
}

/// Sends breaker transitions while the reply ring holds fewer than [`BREAKER_REPORT_ROOM`]
/// replies (`len` may only overstate what is unread), so reports never take an answer's
/// room; the rest wait in the core for a later turn. Returns whether it sent any.
fn send_breaker_reports(core: &mut ShardCore, replies: &mut spsc::Producer<ShardReply>) -> bool {
    let mut sent = false;
    while replies.len() < BREAKER_REPORT_ROOM {
        let Some(report) = core.next_breaker_report() else {
            break;
        };
        // Room: fewer than BREAKER_REPORT_ROOM (<= the capacity) replies are in the ring.
        let _ = replies.push(ShardReply::BreakerMoved(report));
        sent = true;
    }
    sent
}

/// Sends the replies of drains that finished since the last call.
pub(crate) fn report_finished_drains(
    core: &mut ShardCore,
    now_ns: u64,
    replies: &mut spsc::Producer<ShardReply>,
    scratch: &mut Vec<(u64, DrainResult)>,
) -> bool {
    scratch.clear();
    core.finished_drains(now_ns, scratch);
    for &(request, result) in scratch.iter() {
        let _ = replies.push(ShardReply::Drained { request, result });
    }
    !scratch.is_empty()
}

/// A lost shard's answers: it is down (`lost` in its Pong), holds nothing to drain or
/// cancel, and applies no limit. Called by the lost shard's loop.
pub(crate) fn serve_commands_when_lost(
    shard: usize,
    commands: &mut spsc::Consumer<ShardCommand>,
    replies: &mut spsc::Producer<ShardReply>,
) -> bool {
    let mut any = false;
    while let Some(command) = commands.pop() {
        any = true;
        let reply = match command {
            ShardCommand::Ping { request } => ShardReply::Pong {
                request,
                shard,
                pending_messages: 0,
                connections: 0,
                backpressure: false,
                lost: true,
                workers: None,
            },
            ShardCommand::Drain { request, .. } => ShardReply::Drained {
                request,
                result: DrainResult::default(),
            },
            ShardCommand::Cancel { request, .. } => ShardReply::Cancelled {
                request,
                found: false,
            },
            ShardCommand::SetRoleCap { request, .. }
            | ShardCommand::SetPriorityPercent { request, .. }
            | ShardCommand::SetConnectionCap { request, .. }
            | ShardCommand::SetRate { request, .. } => ShardReply::Applied {
                request,
                changed: 0,
            },
        };
        // Room is guaranteed, as in `serve_shard_commands`.
        let _ = replies.push(reply);
    }
    any
}
