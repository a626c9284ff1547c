//! Running handlers: a batch of queued messages, highest priority first, each to
//! completion. What the handler answers goes into the completion: its response bytes, or its
//! error's reason (`HandlerError` or `InvalidRequest`) and text; a panic is caught and fails
//! the message with `HandlerPanic`, and the shard keeps running. A response longer than
//! `net.max_response_bytes` (at most what a Reply frame carries) fails the message with
//! `ResponseTooLarge` instead, here, so the engine's own counts say so.

use std::panic::{catch_unwind, AssertUnwindSafe};

use bytes::Bytes;

use crate::outcome::{ErrorDetail, FailureReason, Outcome};

use super::core::ShardCore;
use super::handler::{Handler, ShardContext};

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
        let Some(entry) = core.next_to_run() else {
            break;
        };
        ran += 1;
        let result = catch_unwind(AssertUnwindSafe(|| {
            let mut context = ShardContext::new(&mut *core, now_ns);
            handler.handle(&entry.message, &mut context)
        }));
        let (outcome, response, detail) = match result {
            Ok(Ok(response)) if response.len() > core.response_bytes_max() => (
                Outcome::Failed {
                    reason: FailureReason::ResponseTooLarge,
                },
                Bytes::new(),
                Some(response_too_large(
                    response.len(),
                    core.response_bytes_max(),
                )),
            ),
            Ok(Ok(response)) => (Outcome::Delivered, response, None),
            Ok(Err(error)) => (
                Outcome::Failed {
                    reason: error.reason(),
                },
                Bytes::new(),
                error.into_detail(),
            ),
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

/// The detail of a response too long to deliver: how long it was, and the limit. Formatted
/// only on this failure, so a delivered message never pays for it.
fn response_too_large(response_bytes: usize, response_bytes_max: usize) -> ErrorDetail {
    ErrorDetail::new(&format!(
        "the response of {response_bytes} bytes exceeds the limit of {response_bytes_max} bytes (net.max_response_bytes)"
    ))
}
