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

/// The bytes of a worked-example line of docs/PROTOCOL.md or docs/WORKERS.md: hex pairs
/// separated by spaces or `|`, then optionally a quoted UTF-8 string (with `\"` for a
/// quote) that ends the frame.
///
/// # Panics
/// On anything else: the page's example is malformed.
pub fn example_bytes(line: &str) -> Vec<u8> {
    let (hex, text) = match line.split_once('"') {
        Some((hex, text)) => (hex, Some(text)),
        None => (line, None),
    };
    let mut bytes: Vec<u8> = hex
        .split(|c: char| c.is_whitespace() || c == '|')
        .filter(|pair| !pair.is_empty())
        .map(|pair| u8::from_str_radix(pair, 16).expect("a hex pair"))
        .collect();
    if let Some(text) = text {
        let text = text.strip_suffix('"').expect("a closing quote");
        bytes.extend_from_slice(text.replace("\\\"", "\"").as_bytes());
    }
    bytes
}
