//! Running handlers: a batch of queued messages, highest priority first, each to
//! completion. What the handler answers goes into the completion: its response bytes, or its
//! error's reason (`HandlerError` or `InvalidRequest`) and text; a panic is caught and fails
//! the message with `HandlerPanic`, and the shard keeps running. A response longer than
//! `net.max_response_bytes` (at most what a Reply frame carries) fails the message with
//! `ResponseTooLarge` instead, here, so the engine's own counts say so.
//!
//! A handler may instead take its message to answer later (`ShardContext::defer`): the
//! entry then moves to the shard's deferred table until `ShardContext::complete`. A
//! handler with a limited capacity (`Handler::capacity`) is run only while it has room,
//! and so is any handler while the deferred table is full: the rest stays queued.

use std::panic::{catch_unwind, AssertUnwindSafe};

use bytes::Bytes;

use crate::outcome::{FailureReason, Outcome};

use super::core::ShardCore;
use super::handler::{answer_outcome, Handler, ShardContext};

/// Runs up to `max` queued messages on `core` with `handler`. `now_ns` is the batch's time;
/// `batch_end_ns` is called once after the batch for the latencies of the messages it
/// finished. Returns how many ran.
pub(crate) fn run_handlers<H: Handler>(
    core: &mut ShardCore,
    handler: &mut H,
    max: usize,
    now_ns: u64,
    batch_end_ns: impl FnOnce() -> u64,
) -> usize {
    let mut ran = 0;
    while ran < max {
        if handler.capacity() == Some(0) || !core.can_defer() {
            break;
        }
        let Some(entry) = core.next_to_run() else {
            break;
        };
        ran += 1;
        let result = catch_unwind(AssertUnwindSafe(|| {
            let mut context = ShardContext::for_run(&mut *core, now_ns);
            handler.handle(&entry.message, &mut context)
        }));
        // Taken from the core, not the context, so that a run that deferred and then
        // panicked still gives its ticket back.
        if let Some(ticket) = core.take_run_ticket() {
            if let Ok(Ok(_)) = result {
                core.hold_deferred(ticket, entry, now_ns);
                continue;
            }
            // It deferred, then failed or panicked: finished now after all.
            core.release_deferred(ticket);
        }
        let (outcome, response, detail) = match result {
            Ok(answer) => answer_outcome(answer, core.response_bytes_max()),
            Err(_) => (
                Outcome::Failed {
                    reason: FailureReason::HandlerPanic,
                },
                Bytes::new(),
                None,
            ),
        };
        core.finish_run(entry, outcome, response, detail, now_ns);
    }
    if ran > 0 {
        core.end_batch(ran, now_ns, batch_end_ns());
    }
    ran
}
