//! The shard's side of the control rings: answers the commands waiting in its ring (before
//! every data batch) and reports drains as they finish.

use crate::command::{DrainResult, ShardCommand, ShardReply};
use crate::ring::spsc;

use super::core::ShardCore;

/// The shard's side: answers every command waiting in its ring. Called by the shard
/// thread before each data batch.
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
            // to this shard than the reply ring holds.
            let _ = replies.push(reply);
        }
    }
    any
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
