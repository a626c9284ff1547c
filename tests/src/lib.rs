//! Cross-crate integration, stress and property tests live in `tests/`; this library holds
//! the few helpers several of them share.

use std::time::{Duration, Instant};

use spillway::ingress::Ingress;
use spillway::message::Message;
use spillway::outcome::Completion;

/// Every helper gives up rather than hang.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Submits every message (retrying while the ring is full, collecting meanwhile) and
/// collects completions until each submitted message has one.
///
/// # Panics
/// If the engine has stopped, or nothing moves for [`DEADLINE`].
pub fn submit_all(ingress: &mut Ingress, messages: Vec<Message>) -> Vec<Completion> {
    let started = Instant::now();
    let total = messages.len();
    let mut completions = Vec::with_capacity(total);
    for mut message in messages {
        loop {
            match ingress.submit(message) {
                Ok(()) => break,
                Err(full) => {
                    assert!(!full.stopped, "the engine stopped");
                    message = full.message;
                    ingress.poll_completions(&mut completions);
                    assert!(started.elapsed() < DEADLINE, "stuck submitting");
                    std::thread::yield_now();
                }
            }
        }
    }
    while completions.len() < total {
        if ingress.poll_completions(&mut completions) == 0 {
            assert!(started.elapsed() < DEADLINE, "stuck collecting");
            std::thread::yield_now();
        }
    }
    completions
}
