//! Smoke test of the `e2e` binary with tiny settings (100 connections, 20K msg/s, 0.2 s per
//! run, no warm-up): all four runs complete and reconcile, it prints one JSON object with
//! both rows of each measurement and the ratios, the baseline's control fields say "not
//! applicable" instead of zeros, and bad flags are refused. No timing is asserted: debug
//! builds on a shared machine say nothing about speed.

use std::process::Command;

use serde_json::Value;

#[test]
fn a_tiny_run_prints_both_rows_and_the_ratios() {
    let output = Command::new(env!("CARGO_BIN_EXE_e2e"))
        .args([
            "--duration",
            "0.2",
            "--warmup",
            "0",
            "--connections",
            "100",
            "--rate",
            "20000",
            "--shards",
            "1",
            "--json",
        ])
        .output()
        .expect("running e2e");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let json: Value = serde_json::from_slice(&output.stdout).expect("one JSON object");
    assert_eq!(json["reconciled"], true, "{json:#}");
    assert_eq!(json["spillway"]["shards"], 1);
    assert_eq!(json["baseline"]["workers"], 1);
    for section in ["max_throughput", "open_loop"] {
        for target in ["spillway", "baseline"] {
            let row = &json[section][target];
            assert_eq!(row["reconciled"], true, "{section}.{target}");
            assert!(row["delivered"].as_u64().unwrap() > 0, "{section}.{target}");
            assert!(row["latency_us"]["p99"].is_number(), "{section}.{target}");
        }
    }
    assert!(json["max_throughput"]["ratio_spillway_over_baseline"].is_number());
    assert!(json["open_loop"]["ratio_p99_baseline_over_spillway"].is_number());
    assert!(json["open_loop"]["spillway"]["control_p99_us"].is_number());
    assert!(json["open_loop"]["baseline"]["control_p99_us"].is_null());
    assert!(json["open_loop"]["baseline"]["control_note"].is_string());
    let detail = &json["detail"]["open_loop_baseline"];
    assert_eq!(detail["target"], "baseline");
    assert!(detail["control_latency_us"].is_null());
    assert!(detail["breaker_final"].is_null());
}

#[test]
fn bad_flags_are_refused() {
    let output = Command::new(env!("CARGO_BIN_EXE_e2e"))
        .args(["--duration", "0"])
        .output()
        .expect("running e2e");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--duration"), "{stderr}");
}
