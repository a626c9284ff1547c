//! The tokio/tower baseline driven briefly by loadgen's generator: the counts reconcile
//! (the generator's against the baseline's own, and the baseline's among themselves), every
//! submitted message gets a completion, something is delivered, and the report marks the
//! control plane as not applicable. No timing assertions.

use std::num::NonZeroU32;
use std::time::Duration;

use spillway::config::Config;
use spillway::outcome::RefusalReason;
use spillway_bench::baseline::{Baseline, BaselineSettings};
use spillway_loadgen::generator::{run_with_target, Phase, RunPlan};
use spillway_loadgen::report::{RunInfo, RunReport, NO_CONTROL_PLANE};
use spillway_loadgen::target::TargetStats;

fn plan(closed_loop: bool) -> RunPlan {
    RunPlan {
        phases: vec![
            Phase {
                connections: 100,
                rate: 20_000,
                duration_ns: 50_000_000,
                recorded: false,
            },
            Phase {
                connections: 100,
                rate: 20_000,
                duration_ns: 300_000_000,
                recorded: true,
            },
        ],
        closed_loop,
        window: 1,
        service_ns: 0,
        control_probe_ms: 10,
        probe_over_http: false,
        priority_weights: None,
        consumer_poll_ns: 0,
        progress: false,
        drain_timeout: Duration::from_secs(5),
        payload: Default::default(),
        tenant: spillway::message::TenantId(0),
    }
}

fn settings() -> BaselineSettings {
    let mut config = Config::default();
    config.shards = 1;
    BaselineSettings::matching(&config, 2, 0)
}

#[test]
fn settings_match_spillways_defaults() {
    let settings = settings();
    assert_eq!(settings.stack.workers, 1);
    assert_eq!(settings.submission_capacity, 4096);
    // The session role cap (10,000) at the P1 threshold (95%).
    assert_eq!(settings.stack.concurrency_limit, 9_500);
    assert_eq!(settings.completion_capacity, 4096 + 9_500);
    let rate = settings.stack.rate.expect("level 1 is on by default");
    assert_eq!(rate.per_connection_per_sec.get(), 500);
    assert_eq!(rate.burst.get(), 1000);
}

#[test]
fn an_open_loop_run_reconciles_and_delivers() {
    let result = run_with_target(Baseline::start(settings()).unwrap(), &plan(false)).unwrap();
    assert!(
        result.reconcile_errors.is_empty(),
        "{:?}",
        result.reconcile_errors
    );
    assert!(result.engine.self_check().is_empty());
    assert_eq!(result.lost, 0);
    assert_eq!(result.all.submitted, result.submitted_all);
    assert_eq!(result.engine.counts.received, result.submitted_all);
    assert_eq!(result.submitted_all + result.unsent, 7_000);
    assert!(result.measured.delivered > 0);
    // 200 msg/s per connection, under the quota of 500/s with a burst of 1000.
    assert_eq!(result.all.refused[RefusalReason::RateLimited.index()], 0);
    assert!(result.control.is_none());

    let info = RunInfo {
        scenario: "test".into(),
        target: "baseline".into(),
        profile: "production".into(),
        capacity: None,
        overload: None,
    };
    let report = RunReport::new(&info, &result);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["reconciled"], true);
    assert!(json["control_latency_us"].is_null());
    assert!(json["control_slo_violations"].is_null());
    assert_eq!(json["control_note"], NO_CONTROL_PLANE);
    let table = report.to_table();
    assert!(table.contains("counts reconcile"), "{table}");
    assert!(table.contains(NO_CONTROL_PLANE), "{table}");
}

#[test]
fn refusals_by_the_limiter_and_load_shed_are_counted_and_reconcile() {
    let mut settings = settings();
    // A quota of 10/s with a burst of 2 per connection refuses most of 200 msg/s per
    // connection; a concurrency limit of 1 with a handler that takes 20 µs sheds some of
    // the rest.
    settings.stack.rate = Some(spillway_bench::baseline_stack::RateSettings {
        per_connection_per_sec: NonZeroU32::new(10).unwrap(),
        burst: NonZeroU32::new(2).unwrap(),
    });
    settings.stack.concurrency_limit = 1;
    settings.stack.service_ns = 20_000;
    let mut plan = plan(false);
    plan.service_ns = 20_000;
    let result = run_with_target(Baseline::start(settings).unwrap(), &plan).unwrap();
    assert!(
        result.reconcile_errors.is_empty(),
        "{:?}",
        result.reconcile_errors
    );
    let stats = result.engine.counts;
    assert!(stats.rate_limited > 0, "{stats:?}");
    assert!(stats.delivered > 0, "{stats:?}");
    assert_eq!(
        result.all.refused[RefusalReason::RateLimited.index()],
        stats.rate_limited
    );
    assert_eq!(
        result.all.refused[RefusalReason::HandlerQueueFull.index()],
        stats.shed
    );
}

#[test]
fn a_closed_loop_run_reconciles() {
    let result = run_with_target(Baseline::start(settings()).unwrap(), &plan(true)).unwrap();
    assert!(
        result.reconcile_errors.is_empty(),
        "{:?}",
        result.reconcile_errors
    );
    assert!(result.delivered_rate() > 0.0);
}

#[test]
fn a_zero_setting_is_refused_by_name() {
    let mut settings = settings();
    settings.stack.concurrency_limit = 0;
    let error = Baseline::start(settings).err().expect("refused");
    assert!(error.to_string().contains("concurrency_limit"), "{error}");
}
