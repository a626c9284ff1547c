//! The admission pipeline: nanoseconds per message through one shard's real admission path
//! (`ShardCore::admit`, driven by [`spillway::simulation::Simulation`]) with all three levels
//! on, 15,000 connections, against the absolute budget of the issue (at most 50 ns per
//! message; the design documents' figures are about 2 µs for the bucket check and 5 µs for
//! the breaker evaluation).
//!
//! Setup: `Config::default()` (level 1: 500 msg/s per connection, burst 1000, adaptive; level
//! 2: the connection, byte, role and handler-queue caps; level 3: the breaker, evaluated once
//! per handler batch), one `Simulation` with a no-op handler, connections `0..15_000`, every
//! message role `Session`, priority P1, tenant 0, no payload. Two tenant setups
//! ([`TenantSetup`]): tenant 0 without settings (the default config's path: no tenant lookup,
//! no shared count), and tenant 0 configured with a cap of 2^30 pending messages and ceiling
//! P0, so that every admission also takes the tenant path (its ceiling, carried in the
//! shard's cached tenant index, and the compare-exchange charge on the cross-shard count,
//! and its release when the message finishes). That cap is far above the at most [`BATCH`] messages ever pending here, so it
//! never refuses. A third setup gives tenant 0 a fleet-wide rate (`[global]`) with a leased
//! share far above the offered rate, so every admission also charges the process-wide
//! bucket that the shards share (issue 16's "admission cost with global quotas on").
//!
//! Each run: a fresh simulation; a warm-up of one message per connection, run to completion,
//! so the connection table holds all 15,000 before timing; then `messages` submits in
//! batches of [`BATCH`], connections in a fixed pseudo-random order (xorshift64 shuffles of
//! the ids, seed [`ORDER_SEED`], repeated), each batch followed by `run(now, now, BATCH)`,
//! which runs the handlers, posts the completions and does the per-batch upkeep (breaker
//! evaluation, adaptive sweep when due), so the queue never holds more than one batch. The
//! simulated clock moves [`NS_PER_MESSAGE`] per message: 6.7 M messages/s in all, about 444
//! per connection per second, under the 500/s rate, so every timed message must be
//! admitted; the run fails if one is not, or if one does not complete `Delivered`.
//!
//! Two figures per run, both total time / messages, timed with `Instant` per batch:
//! - **admission**: the batch of `submit` calls alone (the figure);
//! - **full path**: the submits plus the `run` that follows (handler run, completion,
//!   per-batch upkeep): the whole single-shard path with a no-op handler.
//!
//! Known bias: `Simulation::submit` also builds the `Message` (a few stores; the payload is
//! empty, so nothing is allocated) and, after every decision, drains the core's outbox into
//! the simulation's completion `Vec` (cheap when nothing is refused, as here), which a shard
//! thread does once per batch instead; `run` appends completions to a `Vec` (one allocation
//! per batch, taken and checked outside the timer) where a shard thread would post them to
//! completion rings. `Instant::now()` costs about 16 ns on the 2-core development VM; two reads
//! fall inside each batch's figure, about 0.5 ns per message.
//! The figures are throughput costs on a loop that does nothing else, with the connection
//! table (15,000 entries) warm in whatever cache holds it, not latencies under real traffic.
//! No refusal path is measured: every message is admitted.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use spillway::config::{Config, GlobalTenantConfig, TenantConfig};
use spillway::message::{ConnectionId, Message, MessageId, Priority, Role, TenantId};
use spillway::outcome::Outcome;
use spillway::simulation::Simulation;

use crate::bucket_checks::KeyOrder;

/// The budget for admission with all three levels on, nanoseconds per message.
pub const ADMISSION_BUDGET_NS: f64 = 50.0;

/// The budget for an idle connection's memory, bytes.
pub const CONNECTION_BUDGET_BYTES: f64 = 256.0;

/// Connections the shard holds (ids `0..CONNECTIONS`).
pub const CONNECTIONS: u32 = 15_000;

/// Messages submitted between two handler runs.
pub const BATCH: usize = 64;

/// Simulated time between two submitted messages: with [`CONNECTIONS`] connections visited
/// in turn, each connection sees one message per `CONNECTIONS × NS_PER_MESSAGE` = 2.25 ms,
/// about 444 per second, under the default 500 per second.
pub const NS_PER_MESSAGE: u64 = 150;

/// Shuffles of the connection ids in the order, repeated as often as a run needs.
pub const ORDER_ROUNDS: u32 = 8;

/// Seed of the connection order (fixed so runs compare).
pub const ORDER_SEED: u64 = 0xAD01_7155_10F1_5EED;

/// The fleet-wide rate and leased share of [`TenantSetup::FleetRate`]: far above the 6.7 M
/// messages per simulated second, so the shared bucket never refuses but is charged for
/// every message (one compare-exchange per credit batch of 16, the shard's held credit
/// for the others).
pub const FLEET_SHARE_PER_SEC: u32 = 1_000_000_000;

/// The tenant pending cap of [`TenantSetup::Capped`]: validation's maximum, far above the at
/// most [`BATCH`] messages pending in these runs.
pub const TENANT_CAP: u32 = 1 << 30;

/// Whether the messages' tenant has settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TenantSetup {
    /// `Config::default()`: tenant 0 has no settings (no tenant lookup, no shared count).
    Unconfigured,
    /// Tenant 0 configured with a pending cap of [`TENANT_CAP`] and ceiling P0: every
    /// admission charges (compare-exchange) and every finish releases the tenant's count.
    Capped,
    /// Tenant 0 with a fleet-wide rate (`[global]`, issue 16) whose leased share is
    /// [`FLEET_SHARE_PER_SEC`]: every admission also takes the tenant path and charges
    /// the process-wide shared bucket (through the shard's credit, refilled from the
    /// bucket one batch and one compare-exchange at a time).
    FleetRate,
}

impl TenantSetup {
    /// Every setup, in report order.
    pub const ALL: [TenantSetup; 3] = [
        TenantSetup::Unconfigured,
        TenantSetup::Capped,
        TenantSetup::FleetRate,
    ];

    /// The setup in words, for the report.
    pub fn describe(self) -> String {
        match self {
            TenantSetup::Unconfigured => "tenant 0 without settings".to_owned(),
            TenantSetup::Capped => "tenant 0 capped (2^30 pending), ceiling P0".to_owned(),
            TenantSetup::FleetRate => {
                "tenant 0 with a fleet-wide rate ([global]), leased share 1e9/s".to_owned()
            }
        }
    }

    /// `Config::default()` with this tenant setup.
    pub fn config(self) -> Config {
        let mut config = Config::default();
        if self == TenantSetup::FleetRate {
            // The simulation runs no lease thread, so Redis is never asked: the share is
            // set by hand (`run`), as a lease would set it.
            config.global.redis = vec!["redis://127.0.0.1:1".to_owned()];
            config.global.tenants = vec![GlobalTenantConfig::new(TenantId(0), FLEET_SHARE_PER_SEC)];
        }
        if self == TenantSetup::Capped {
            config.tenants = vec![TenantConfig {
                tenant: TenantId(0),
                max_pending: Some(TENANT_CAP),
                priority_ceiling: Priority::P0,
            }];
        }
        config
    }
}

/// What one timed run did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdmissionRun {
    /// Messages submitted while timing.
    pub messages: u64,
    /// Of those, admitted.
    pub admitted: u64,
    /// Of those, completed `Delivered`.
    pub delivered: u64,
    /// Time in `submit` calls.
    pub submit: Duration,
    /// Time in `submit` calls and the handler runs after them.
    pub full_path: Duration,
}

impl AdmissionRun {
    /// Admission alone, nanoseconds per message.
    pub fn admission_ns_per_message(&self) -> f64 {
        self.submit.as_nanos() as f64 / self.messages as f64
    }

    /// Admission, handler run and completion, nanoseconds per message.
    pub fn full_path_ns_per_message(&self) -> f64 {
        self.full_path.as_nanos() as f64 / self.messages as f64
    }
}

/// The fixed connection order of every run.
pub fn order() -> KeyOrder {
    KeyOrder::shuffled(CONNECTIONS, ORDER_ROUNDS, ORDER_SEED)
}

/// One timed run of `messages` messages (at least 1) through a fresh simulated shard; see
/// the module documentation.
///
/// # Errors
/// When the configuration is refused, or a message is not admitted or not delivered, or the
/// shard's counters do not reconcile afterwards: the figure would not be of the admitted path.
pub fn run(messages: u64, tenants: TenantSetup, order: &KeyOrder) -> anyhow::Result<AdmissionRun> {
    let keys = order.keys();
    if keys.is_empty() || order.connections() != CONNECTIONS {
        bail!("the connection order must cover 0..{CONNECTIONS}");
    }
    let mut simulation = Simulation::new(tenants.config(), |_: &Message| Ok(()))
        .context("the default configuration was refused")?;
    for quota in simulation.global_quotas().iter() {
        quota.apply_share(u64::from(FLEET_SHARE_PER_SEC), None);
    }
    let mut now_ns = 0u64;
    let mut next_id = 0u64;
    let mut cursor = 0usize;
    let message = |connection: u32, id: u64| {
        Message::new(ConnectionId(u64::from(connection)), MessageId(id))
            .with_role(Role::Session)
            .with_priority(Priority::P1)
    };

    // Warm-up, untimed: every connection once, in id order, so the table holds them all.
    for first in (0..CONNECTIONS).step_by(BATCH) {
        for connection in first..(first + BATCH as u32).min(CONNECTIONS) {
            if let Err(outcome) = simulation.submit(now_ns, message(connection, next_id)) {
                bail!("warm-up message for connection {connection} was not admitted: {outcome:?}");
            }
            now_ns += NS_PER_MESSAGE;
            next_id += 1;
        }
        simulation.run(now_ns, now_ns, BATCH);
        simulation.take_completions();
    }

    let mut run = AdmissionRun {
        messages,
        admitted: 0,
        delivered: 0,
        submit: Duration::ZERO,
        full_path: Duration::ZERO,
    };
    let mut remaining = messages;
    while remaining > 0 {
        let batch = remaining.min(BATCH as u64);
        remaining -= batch;
        let started = Instant::now();
        for _ in 0..batch {
            let connection = keys[cursor];
            cursor += 1;
            if cursor == keys.len() {
                cursor = 0;
            }
            if simulation
                .submit(now_ns, message(connection, next_id))
                .is_ok()
            {
                run.admitted += 1;
            }
            now_ns += NS_PER_MESSAGE;
            next_id += 1;
        }
        let submitted = Instant::now();
        simulation.run(now_ns, now_ns, BATCH);
        let finished = Instant::now();
        run.submit += submitted - started;
        run.full_path += finished - started;
        for completion in simulation.take_completions() {
            if completion.outcome == Outcome::Delivered {
                run.delivered += 1;
            } else {
                bail!(
                    "message {:?} on connection {:?} completed {:?}, not Delivered",
                    completion.message,
                    completion.connection,
                    completion.outcome
                );
            }
        }
    }

    let stats = simulation.stats();
    let shard = stats
        .shards
        .first()
        .context("the simulation has no shard")?;
    if run.admitted != run.messages || run.delivered != run.messages {
        bail!(
            "{} of {} timed messages admitted, {} delivered: the offered rate is meant to stay \
             under every limit",
            run.admitted,
            run.messages,
            run.delivered
        );
    }
    if !stats.reconciles()
        || stats.total.refused_total() + stats.total.shed_total() != 0
        || shard.connections != u64::from(CONNECTIONS)
        || shard.connections_evicted != 0
        || simulation.pending() != 0
    {
        bail!(
            "unexpected shard state after the run: {} connections ({} evicted), {} pending, \
             {} refused, {} shed, reconciles {}",
            shard.connections,
            shard.connections_evicted,
            simulation.pending(),
            stats.total.refused_total(),
            stats.total.shed_total(),
            stats.reconciles()
        );
    }
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_timed_message_is_admitted_and_delivered_in_both_setups() {
        let order = KeyOrder::shuffled(CONNECTIONS, 1, ORDER_SEED);
        for tenants in TenantSetup::ALL {
            // Not a multiple of the batch, and past the end of the order once.
            let run = run(15_100, tenants, &order).unwrap();
            assert_eq!(
                (run.messages, run.admitted, run.delivered),
                (15_100, 15_100, 15_100)
            );
            assert!(run.full_path >= run.submit);
        }
    }

    #[test]
    fn the_offered_rate_stays_under_the_default_rate() {
        let per_connection_per_sec = 1e9 / (f64::from(CONNECTIONS) * NS_PER_MESSAGE as f64);
        let limit = Config::default().rate.per_connection_per_sec;
        assert!(per_connection_per_sec < f64::from(limit));
    }

    #[test]
    fn a_wrong_order_is_an_error() {
        let order = KeyOrder::shuffled(100, 1, ORDER_SEED);
        assert!(run(10, TenantSetup::Unconfigured, &order).is_err());
    }
}
