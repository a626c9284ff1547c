//! Embedding Spillway in a server: a handler that does the work, a producer thread per
//! source of messages with its own `Ingress`, and a loop that submits, honours
//! backpressure, and reads completions. Run with `cargo run --release --example embed`.

use std::time::{Duration, Instant};

use spillway::config::Config;
use spillway::engine::Engine;
use spillway::handler::HandlerError;
use spillway::message::{ConnectionId, Message, MessageId, Priority, Role, TenantId};
use spillway::outcome::Outcome;

fn main() -> anyhow::Result<()> {
    // 1. Settings: production defaults, two shards.
    let mut config = Config::default();
    config.shards = 2;

    // 2. The handler runs on the shard that owns the message's connection.
    let engine = Engine::builder()
        .config(config)
        .handler(|message: &Message| {
            if message.payload.is_empty() {
                return Err(HandlerError::invalid("empty request"));
            }
            // ... serve the request ...
            Ok(())
        })
        .start()?;

    // 3. One producer thread with its own Ingress (rings to and from every shard).
    let mut ingress = engine.ingress()?;
    let mut completions = Vec::new();
    let mut tally = Tally::default();
    let started = Instant::now();
    for id in 0..100_000u64 {
        let mut message = Message::new(ConnectionId(id % 50), MessageId(id))
            .with_tenant(TenantId(0))
            .with_role(Role::Session)
            .with_priority(if id % 100 == 0 {
                Priority::P0
            } else {
                Priority::P2
            })
            .with_payload(b"request".to_vec());
        // A full ring hands the message back: read completions to make room, then retry.
        loop {
            match ingress.submit(message) {
                Ok(()) => break,
                Err(full) if full.stopped => anyhow::bail!("engine stopped"),
                Err(full) => {
                    message = full.message;
                    ingress.poll_completions(&mut completions);
                    tally.count(completions.drain(..).map(|completion| completion.outcome));
                }
            }
        }
        if id % 64 == 0 {
            ingress.poll_completions(&mut completions);
            tally.count(completions.drain(..).map(|completion| completion.outcome));
        }
    }

    // 4. Collect what is still in flight, then shut down: nothing is lost.
    while ingress.outstanding() > 0 {
        ingress.poll_completions(&mut completions);
        tally.count(completions.drain(..).map(|completion| completion.outcome));
    }
    drop(ingress);
    let stats = engine.shutdown();
    println!(
        "{} messages in {:.1?}: {} delivered, {} refused (longest retry-after {:?}), {} other; \
         engine counters reconcile: {}",
        stats.total.submitted,
        started.elapsed(),
        tally.delivered,
        tally.refused,
        Duration::from_nanos(tally.longest_retry_after_ns),
        tally.other,
        stats.reconciles()
    );
    Ok(())
}

/// What the producer heard back.
#[derive(Default)]
struct Tally {
    delivered: u64,
    refused: u64,
    other: u64,
    longest_retry_after_ns: u64,
}

impl Tally {
    fn count(&mut self, outcomes: impl Iterator<Item = Outcome>) {
        for outcome in outcomes {
            match outcome {
                Outcome::Delivered => self.delivered += 1,
                Outcome::Refused { retry_after_ns, .. } => {
                    // A real client would wait `retry_after_ns` before sending again.
                    self.refused += 1;
                    self.longest_retry_after_ns = self.longest_retry_after_ns.max(retry_after_ns);
                }
                _ => self.other += 1,
            }
        }
    }
}
