//! The `e2e` run: spillway and the tokio/tower baseline (`baseline`), one after the other in
//! one process, driven by loadgen's generator and measured the same way (the same
//! schedules, coordinated-omission-corrected latency, generator lag, reconciliation and
//! per-run report), then side by side with the ratios; with `--tcp` ([`tcp`]) the same
//! measurements over real sockets against the baseline's TCP twin and `spillway serve`.
//! Both transports fill one report type ([`E2eReport`]).
//!
//! Two measurements, each run for spillway and then for the baseline:
//!
//! - **(a) max throughput** at `connections` (15,000 by default): a closed loop, as loadgen's
//!   `calibrate_capacity` measures capacity. Each connection keeps one message outstanding
//!   and sends the next as soon as the previous one completes, whatever the outcome, so the
//!   system always has work; the figure is delivered messages per second over the measured
//!   phase, by the clock. Refusals count against it: a refused message is resent at once,
//!   and only deliveries count.
//! - **(b) open loop** at `rate` (500K msg/s by default) over the same connections: each
//!   connection sends on its own schedule; achieved rate, refusals, latency of delivered
//!   messages from their intended send time (p50/p99/p99.9/max), generator lag p99.
//!
//! Ratios: (a) spillway delivered/s over the baseline's; (b) the baseline's p99 over
//! spillway's. The goals (issue #6): at least 3x the baseline's throughput in (a), a lower
//! p99 than the baseline in (b); the report says whether this run met them.
//!
//! Both systems get the same cores: the baseline's runtime has as many workers as spillway
//! has shards (`BaselineSettings::matching`); spillway also runs its control thread and,
//! with the probe on, a probe thread asking for a health check every `control_probe_ms`.
//!
//! Known bias: the generator is one thread in the same process as the system it drives and
//! shares the machine's cores with it; on a machine with two cores, the generator, the one
//! shard (or worker) and everything else share two cores. Runs are sequential, so
//! whichever runs second finds caches and the allocator warmed by the first; the warm-up
//! phase of each run is there to even that out.
//!
//! Inside: [`settings`] (what runs, the command line, the plans) below [`report`] (the one
//! report type) below the runs, in process (here) and over TCP ([`tcp`]).

pub mod report;
pub mod settings;
pub mod tcp;

use anyhow::Context;
use spillway_loadgen::generator::{run_inproc, run_with_target};
use spillway_loadgen::report::{RunInfo, RunReport};

pub use report::{
    E2eReport, E2eRow, ServerSide, Setup, System, TCP_THROUGHPUT_RATIO_GOAL, THROUGHPUT_RATIO_GOAL,
};
pub use settings::{plan, spillway_config, Cli, Command, E2eSettings};

use crate::baseline::{Baseline, BaselineSettings};
use crate::machine;

/// Runs (a) then (b) in process, spillway first each time; `progress` gets a line before
/// each run.
///
/// # Errors
/// When spillway's settings are invalid, or a system cannot start or run.
pub fn run(settings: &E2eSettings, mut progress: impl FnMut(&str)) -> anyhow::Result<E2eReport> {
    let config = spillway_config(settings)?;
    let cores = machine::cores();
    let baseline = BaselineSettings::matching(&config, cores, settings.service_ns);
    let info = |system: System, scenario: &str| RunInfo {
        scenario: scenario.to_string(),
        target: match system {
            System::Spillway => "inproc",
            _ => "baseline",
        }
        .to_string(),
        profile: config.profile.name().to_string(),
        capacity: None,
        overload: None,
    };
    let mut max = Vec::new();
    let mut open = Vec::new();
    for closed_loop in [true, false] {
        let (what, scenario, rows) = if closed_loop {
            (
                "(a) max throughput, closed loop".to_string(),
                "e2e-max-throughput",
                &mut max,
            )
        } else {
            (
                format!("(b) open loop at {} msg/s", settings.rate),
                "e2e-open-loop",
                &mut open,
            )
        };
        let plan = plan(settings, closed_loop, settings.control_probe_ms);
        let window = closed_loop.then_some(plan.window);
        for system in [System::Spillway, System::Baseline] {
            progress(&format!("{what}: {}", system.name()));
            let context = || format!("{} {}", &what[..3], system.name());
            let report = match system {
                System::Spillway => RunReport::new(
                    &info(system, scenario),
                    &run_inproc(config.clone(), &plan).with_context(context)?,
                ),
                _ => RunReport::new(
                    &info(system, scenario),
                    &run_with_target(Baseline::start(baseline)?, &plan).with_context(context)?,
                ),
            };
            rows.push(E2eRow {
                system,
                window,
                report,
                server: None,
            });
        }
    }
    Ok(E2eReport {
        settings: settings.clone(),
        cores,
        setup: Setup::InProcess { baseline },
        max,
        open,
    })
}
