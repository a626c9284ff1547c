//! A service built on the engine, as an embedding program would write it: a handler that
//! parses each payload and answers it, two producer threads over 5,000 connections of three
//! tenants (each with a cap and a priority ceiling), health checks and drains from a control
//! thread while the load runs, then a clean shutdown that hands the handlers back and checks
//! that every message is accounted for.
//!
//! The payload is a tiny command, `sum:1,2,3` or `echo:text`; anything else is the client's
//! mistake (`HandlerError::invalid`, which the circuit breaker does not count), and one
//! message in a thousand meets a simulated outage (`HandlerError::failed`, which it does).
//!
//! `cargo run --release -p spillway --example service -- --seconds 3`
//! (`.ci/run` runs it for 1 s in a debug build and fails if anything does not add up.)

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use clap::Parser;
use spillway::config::{Config, TenantConfig};
use spillway::control::{DrainReport, HealthKind};
use spillway::engine::Engine;
use spillway::handler::{Handler, HandlerError, ShardContext};
use spillway::ingress::Ingress;
use spillway::message::{Bytes, ConnectionId, Message, MessageId, Priority, Role, TenantId};
use spillway::metrics::Tally;
use spillway::outcome::{Completion, Outcome};

/// The example's command line.
#[derive(Parser)]
#[command(
    about = "A payload-parsing service on spillway, under load, with health checks and drains"
)]
struct Options {
    /// How long the producers run, in seconds.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Connections, spread over the three tenants.
    #[arg(long, default_value_t = 5_000)]
    connections: u64,
}

/// The three tenants: id, cap on pending messages across shards, priority ceiling.
const TENANTS: [(u32, u32, Priority); 3] = [
    (1, 20_000, Priority::P0),
    (2, 5_000, Priority::P1),
    (3, 2_000, Priority::P2),
];

/// The handler: parses the command, answers it, and keeps per-shard counts that come back
/// at shutdown.
#[derive(Clone, Default)]
struct Service {
    sums: u64,
    echoes: u64,
    malformed: u64,
    outages: u64,
}

impl Handler for Service {
    fn handle(
        &mut self,
        message: &Message,
        _: &mut ShardContext<'_>,
    ) -> Result<Bytes, HandlerError> {
        if message.id.0 % 1_000 == 999 {
            self.outages += 1;
            return Err(HandlerError::failed("the backing store did not answer"));
        }
        let text = std::str::from_utf8(&message.payload)
            .map_err(|_| self.malformed("the payload is not UTF-8"))?;
        match text.split_once(':') {
            Some(("sum", numbers)) => {
                let mut sum = 0u64;
                for number in numbers.split(',') {
                    sum += number
                        .parse::<u64>()
                        .map_err(|_| self.malformed("sum takes numbers"))?;
                }
                self.sums += 1;
                Ok(Bytes::from(sum.to_string()))
            }
            Some(("echo", rest)) => {
                self.echoes += 1;
                // The answer shares the request's buffer: no copy.
                Ok(message.payload.slice(message.payload.len() - rest.len()..))
            }
            _ => Err(self.malformed("unknown command")),
        }
    }
}

impl Service {
    fn malformed(&mut self, why: &str) -> HandlerError {
        self.malformed += 1;
        HandlerError::invalid(why)
    }
}

/// What one producer saw: a tally of its completions, overall and per tenant.
#[derive(Default)]
struct Seen {
    total: Tally,
    by_tenant: BTreeMap<u32, Tally>,
    by_priority: [u64; Priority::COUNT],
    wrong_answers: u64,
}

impl Seen {
    fn count(&mut self, completions: &mut Vec<Completion>) {
        for done in completions.drain(..) {
            self.total.count_completion(done.outcome);
            self.by_tenant
                .entry(done.tenant.0)
                .or_default()
                .count_completion(done.outcome);
            if done.outcome == Outcome::Delivered {
                self.by_priority[done.priority.index()] += 1;
                // Sums of 1..=4 answer 10; echoes answer their text.
                if done.response != b"10"[..] && done.response != b"hello"[..] {
                    self.wrong_answers += 1;
                }
            }
        }
    }
}

/// The payload of message `id`: mostly valid commands, one in fifty malformed.
fn payload(id: u64) -> &'static [u8] {
    match id % 50 {
        0 => b"sum:1,two,3",
        1 => b"launch:rocket",
        n if n % 2 == 0 => b"sum:1,2,3,4",
        _ => b"echo:hello",
    }
}

/// One producer: submits as fast as the engine takes messages, honouring backpressure, and
/// reads its completions, until `running` turns false; then collects the rest.
fn produce(mut ingress: Ingress, first_id: u64, connections: u64, running: &AtomicBool) -> Seen {
    let mut seen = Seen::default();
    let mut completions = Vec::new();
    let mut id = first_id;
    while running.load(Ordering::Relaxed) {
        let connection = id % connections;
        let (tenant, _, _) = TENANTS[(connection % 3) as usize];
        let mut message = Message::new(ConnectionId(connection), MessageId(id))
            .with_tenant(TenantId(tenant))
            .with_role(Role::Session)
            .with_priority(Priority::ALL[(id % 4) as usize])
            .with_payload(payload(id));
        id += 2;
        loop {
            match ingress.submit(message) {
                Ok(()) => break,
                Err(full) if full.stopped => return seen,
                Err(full) => {
                    // The ring is full: make room by reading completions, then retry.
                    // This producer saturates the engine on purpose, so it polls; one
                    // with other work would park in `wait_completions` instead.
                    message = full.message;
                    ingress.poll_completions(&mut completions);
                    seen.count(&mut completions);
                }
            }
        }
        if id % 128 < 2 {
            ingress.poll_completions(&mut completions);
            seen.count(&mut completions);
        }
    }
    // Collect the rest, parked between completions.
    while ingress.outstanding() > 0 {
        ingress.wait_completions(&mut completions, Duration::from_millis(100));
        seen.count(&mut completions);
    }
    seen
}

fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    let mut config = Config::default();
    config.shards = 2;
    config.tenants = TENANTS
        .iter()
        .map(|&(tenant, max_pending, ceiling)| TenantConfig {
            tenant: TenantId(tenant),
            max_pending: Some(max_pending),
            priority_ceiling: ceiling,
        })
        .collect();
    config.validate().context("the example's settings")?;
    let engine = Engine::builder()
        .config(config)
        .handler(Service::default())
        .start()?;

    let running = AtomicBool::new(true);
    let started = Instant::now();
    let (seen, health_checks, drains) = std::thread::scope(|scope| -> anyhow::Result<_> {
        let producers: Vec<_> = (0..2)
            .map(|first_id| {
                let ingress = engine.ingress()?;
                let running = &running;
                Ok(scope.spawn(move || produce(ingress, first_id, options.connections, running)))
            })
            .collect::<anyhow::Result<_>>()?;

        // The control side while the load runs: a readiness check every 10 ms, a drain of
        // one connection every 100 ms.
        let control = engine.control();
        let mut health_checks = Vec::new();
        let mut drains: Vec<DrainReport> = Vec::new();
        let deadline = started + Duration::from_secs_f64(options.seconds);
        let mut next_drain = started;
        while Instant::now() < deadline {
            let asked = Instant::now();
            let health = control.health(HealthKind::Readiness)?;
            health_checks.push((asked.elapsed(), health.live));
            if Instant::now() >= next_drain {
                let connection = ConnectionId(7 + 97 * drains.len() as u64);
                drains.push(control.drain(connection)?);
                next_drain += Duration::from_millis(100);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        running.store(false, Ordering::Relaxed);
        let mut seen = Vec::new();
        for producer in producers {
            seen.push(producer.join().expect("a producer panicked"));
        }
        Ok((seen, health_checks, drains))
    })?;
    let elapsed = started.elapsed();
    let breaker_history = engine.control().breaker_history();
    let (stats, handlers) = engine.shutdown_with_handlers::<Service>()?;

    // Every message once: what the producers read adds up to the engine's own counters.
    let mut total = Tally::default();
    let mut by_tenant: BTreeMap<u32, Tally> = BTreeMap::new();
    let mut by_priority = [0u64; Priority::COUNT];
    let mut wrong_answers = 0;
    for producer in &seen {
        total.add(&producer.total);
        for (tenant, tally) in &producer.by_tenant {
            by_tenant.entry(*tenant).or_default().add(tally);
        }
        for (sum, count) in by_priority.iter_mut().zip(producer.by_priority) {
            *sum += count;
        }
        wrong_answers += producer.wrong_answers;
    }
    let served = handlers
        .iter()
        .flatten()
        .fold(Service::default(), |sum, shard| Service {
            sums: sum.sums + shard.sums,
            echoes: sum.echoes + shard.echoes,
            malformed: sum.malformed + shard.malformed,
            outages: sum.outages + shard.outages,
        });

    println!(
        "{} messages in {:.2} s: {:.0} msg/s delivered",
        total.submitted,
        elapsed.as_secs_f64(),
        total.delivered as f64 / elapsed.as_secs_f64()
    );
    println!(
        "delivered {}, failed {} (invalid request {}, service failure {}), refused {}, shed {}, cancelled {}, dropped {}",
        total.delivered,
        total.failed_total(),
        total.failed[spillway::outcome::FailureReason::InvalidRequest.index()],
        total.failed[spillway::outcome::FailureReason::HandlerError.index()],
        total.refused_total(),
        total.shed_total(),
        total.cancelled,
        total.dropped_total()
    );
    for (tenant, tally) in &by_tenant {
        println!(
            "tenant {tenant}: submitted {}, delivered {}, refused {}",
            tally.submitted,
            tally.delivered,
            tally.refused_total()
        );
    }
    println!(
        "delivered by priority as admitted: P0 {}, P1 {}, P2 {}, P3 {}",
        by_priority[0], by_priority[1], by_priority[2], by_priority[3]
    );
    println!(
        "handlers: {} sums, {} echoes, {} malformed, {} outages",
        served.sums, served.echoes, served.malformed, served.outages
    );
    let mut latencies: Vec<Duration> = health_checks.iter().map(|(latency, _)| *latency).collect();
    latencies.sort_unstable();
    println!(
        "{} readiness checks (all live: {}), p50 {:?}, max {:?}; {} drains, {} messages finished and {} cancelled by them; breaker at end {:?}",
        latencies.len(),
        health_checks.iter().all(|(_, live)| *live),
        latencies.get(latencies.len() / 2).copied().unwrap_or_default(),
        latencies.last().copied().unwrap_or_default(),
        drains.len(),
        drains.iter().map(|report| report.finished).sum::<u64>(),
        drains.iter().map(|report| report.cancelled).sum::<u64>(),
        stats.breaker
    );

    // Why the breaker moved, if it did: the count by cause, and the latest transition with
    // the figures its cause judged.
    let moves = stats.control.breaker_transitions;
    if moves.total() > 0 {
        println!("breaker transitions by cause: {moves:?}");
    }
    if let Some(last) = breaker_history.last() {
        println!(
            "last breaker transition: {:?} -> {:?} because {:?}",
            last.from, last.to, last.cause
        );
    }

    ensure!(stats.reconciles(), "the engine's counters do not reconcile");
    ensure!(
        total == stats.total,
        "the producers' completions {total:?} differ from the engine's counters {:?}",
        stats.total
    );
    ensure!(wrong_answers == 0, "{wrong_answers} wrong answers");
    ensure!(
        served.sums + served.echoes == total.delivered,
        "the handlers answered {} but {} were delivered",
        served.sums + served.echoes,
        total.delivered
    );
    ensure!(
        by_tenant
            .keys()
            .copied()
            .eq(TENANTS.map(|(tenant, _, _)| tenant)),
        "completions name other tenants: {:?}",
        by_tenant.keys()
    );
    ensure!(
        by_priority[Priority::P0.index()] > 0 && by_priority[Priority::P3.index()] > 0,
        "every priority should be served somewhere"
    );
    println!("counts reconcile: every message has one completion, and they add up to the engine's counters");
    Ok(())
}
