//! Control-plane latency while the data path is saturated: a producer thread offers more
//! than the shard can run (every handler costs about 1 µs of busy work), so the queues sit
//! at their caps and excess is refused, while a probe thread runs a full health check every
//! 10 ms and times each from call to answer. Prints the throughput, the outcome counts and
//! the health-check latency percentiles (the caller's view and the control plane's own).
//!
//! `cargo run --release -p spillway --example control_under_load [SECONDS]`

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use spillway::clock::Clock;
use spillway::config::Config;
use spillway::control::{CommandKind, HealthKind};
use spillway::engine::Engine;
use spillway::message::{ConnectionId, Message, MessageId, Priority, Role};

/// Simulated handler cost.
const SERVICE_NS: u64 = 1_000;
/// One health check every this long.
const PROBE_INTERVAL: Duration = Duration::from_millis(10);

fn main() -> anyhow::Result<()> {
    let seconds: u64 = match std::env::args().nth(1) {
        Some(text) => text.parse()?,
        None => 5,
    };
    let mut config = Config::default();
    config.rate.per_connection_per_sec = 1_000_000;
    config.rate.burst = 2_000_000;
    let clock = Clock::new();
    let engine = Engine::builder()
        .config(config)
        .handler(move |_: &Message| {
            // Busy work standing for the handler's cost.
            let until_ns = clock.now_ns() + SERVICE_NS;
            while clock.now_ns() < until_ns {
                std::hint::spin_loop();
            }
            Ok(())
        })
        .start()?;

    let running = Arc::new(AtomicBool::new(true));
    let producer = {
        let running = Arc::clone(&running);
        let mut ingress = engine.ingress()?;
        std::thread::spawn(move || {
            let mut completions = Vec::new();
            let mut id = 0u64;
            while running.load(Ordering::Relaxed) {
                let message = Message::new(ConnectionId(id % 1_000), MessageId(id))
                    .with_role(Role::Session)
                    .with_priority(Priority::P1);
                if ingress.submit(message).is_ok() {
                    id += 1;
                } else {
                    ingress.poll_completions(&mut completions);
                    completions.clear();
                }
            }
            while ingress.outstanding() > 0 {
                ingress.poll_completions(&mut completions);
                completions.clear();
            }
        })
    };

    let control = engine.control();
    let mut caller_ns = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let started = Instant::now();
    let mut deepest_queue = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        let asked = Instant::now();
        let health = control.health(HealthKind::Full)?;
        caller_ns.saturating_record(asked.elapsed().as_nanos() as u64);
        deepest_queue = deepest_queue.max(health.shards[0].pending_messages);
        std::thread::sleep(PROBE_INTERVAL);
    }
    running.store(false, Ordering::Relaxed);
    producer.join().expect("producer thread");
    let elapsed = started.elapsed();
    let stats = engine.shutdown();

    let total = &stats.total;
    println!(
        "{} shard(s), {:.1} s: offered {} msg, delivered {} ({:.0} msg/s), refused {}, deepest queue seen by a health check {}",
        stats.shards.len(),
        elapsed.as_secs_f64(),
        total.submitted,
        total.delivered,
        total.delivered as f64 / elapsed.as_secs_f64(),
        total.refused_total(),
        deepest_queue,
    );
    println!(
        "health check, caller's view ({} checks): p50 {:.1} us, p99 {:.1} us, p99.9 {:.1} us, max {:.1} us",
        caller_ns.len(),
        caller_ns.value_at_quantile(0.50) as f64 / 1e3,
        caller_ns.value_at_quantile(0.99) as f64 / 1e3,
        caller_ns.value_at_quantile(0.999) as f64 / 1e3,
        caller_ns.max() as f64 / 1e3,
    );
    if let Some(latency) = stats
        .control
        .latency
        .iter()
        .find(|latency| latency.command == CommandKind::Health)
    {
        println!(
            "health check, control plane's view: p50 {:.1} us, p95 {:.1} us, p99 {:.1} us, max {:.1} us; SLO violations {}",
            latency.p50_ns as f64 / 1e3,
            latency.p95_ns as f64 / 1e3,
            latency.p99_ns as f64 / 1e3,
            latency.max_ns as f64 / 1e3,
            stats.control.slo_violations,
        );
    }
    println!("counters reconcile: {}", stats.reconciles());
    Ok(())
}
