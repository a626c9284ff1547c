//! `fleet-quota` against a real Redis, both systems for 0.3 s at a low rate: every count
//! reconciles (the producers' against the engine's, due = decided + unsent + undecided,
//! one round trip per per-request decision), both systems refuse part of an offer well
//! above the limit, and neither admits more than its design allows: leases at most
//! `limit x (t + burst)` over the run's `t`, per-request at most `limit` per 1 s window.
//! No timing assertions.
//!
//! Ignored in a plain `cargo test`: it needs Redis at `SPILLWAY_TEST_REDIS_URL`
//! (`scripts/redis.sh start` prints one).

use spillway_bench::fleet_quota::{run_once, Run, Settings, System};

const NEEDS_REDIS: &str = "needs Redis: scripts/redis-ci.sh";

/// 100 times the limit offered: each 1 s window of the per-request counter sees more than
/// the limit whichever way the run straddles a second boundary, even when its producers
/// fall far behind (a debug build on a busy machine: a round trip of a millisecond still
/// decides 1,000 messages a second per producer).
fn settings() -> Settings {
    Settings {
        redis_url: std::env::var("SPILLWAY_TEST_REDIS_URL")
            .unwrap_or_else(|_| panic!("SPILLWAY_TEST_REDIS_URL is not set ({NEEDS_REDIS})")),
        offered: 10_000,
        producers: 2,
        limit: 100,
        duration_s: 0.3,
        warmup_s: 0.1,
        reps: 1,
        tenant: 1_660,
    }
}

/// What both systems must show.
fn check_common(run: &Run) {
    assert!(run.problems.is_empty(), "{:#?}", run.problems);
    let whole = &run.whole;
    assert_eq!(whole.undecided, 0);
    assert_eq!(
        whole.due,
        whole.admitted + whole.refused + whole.unsent,
        "{whole:?}"
    );
    assert!(whole.engine.reconciles());
    assert_eq!(whole.engine.delivered, whole.admitted, "no-op handler");
    assert!(
        whole.admitted > 0 && whole.refused > 0,
        "an offer 100x the limit is partly admitted, partly refused: {whole:?}"
    );
    assert!(run.admitted_in_window <= whole.admitted);
    assert!(run.latency.is_some());
}

#[test]
#[ignore = "needs Redis: scripts/redis-ci.sh"]
fn leases_admit_at_most_the_limit_over_the_run_plus_the_burst() {
    let settings = settings();
    let run = run_once(System::Leases, &settings, 1).unwrap();
    check_common(&run);
    let whole = &run.whole;
    let burst_ns = whole.burst_ns.expect("a leases run has a burst");
    // Every admission falls within `elapsed_ns` (the tenant's bucket was at most full, a
    // burst, when the load started): the GCRA bound at a share of at most the limit.
    let bound = f64::from(settings.limit) * (whole.elapsed_ns + burst_ns) as f64 / 1e9;
    assert!(
        whole.admitted as f64 <= bound + 1.0,
        "admitted {} over {} ns + burst {burst_ns} ns: above {bound:.0}",
        whole.admitted,
        whole.elapsed_ns
    );
    // Every refusal is the shard's, for the fleet-wide limit, and Redis saw only the
    // lease thread.
    assert_eq!(whole.redis_round_trips, 0);
    assert!(whole.admitted_by_second.is_empty());
    assert_eq!(run.redis_commands, run.redis_round_trips);
}

#[test]
#[ignore = "needs Redis: scripts/redis-ci.sh"]
fn per_request_admits_at_most_the_limit_in_each_window_with_one_round_trip_per_decision() {
    let settings = settings();
    let run = run_once(System::PerRequest, &settings, 1).unwrap();
    check_common(&run);
    let whole = &run.whole;
    assert!(!whole.admitted_by_second.is_empty());
    for (second, admitted) in &whole.admitted_by_second {
        assert!(
            *admitted <= u64::from(settings.limit),
            "window {second}: {admitted} admitted"
        );
    }
    assert_eq!(
        whole.admitted_by_second.values().sum::<u64>(),
        whole.admitted
    );
    // One round trip per decision, two commands in it; refusals never reach the engine.
    assert_eq!(whole.redis_round_trips, whole.admitted + whole.refused);
    assert_eq!(whole.engine.refused_total(), 0);
    assert_eq!(run.redis_commands, 2 * run.redis_round_trips);
    assert!(run.redis_round_trips > 0);
}
