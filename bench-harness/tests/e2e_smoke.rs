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

/// `e2e --tcp` with tiny settings: the twin runs as a child process, and a second twin
/// started here stands in for `spillway serve` (`--spillway`); every run reconciles, the
/// twin's own counts agree with the client's, and both rows and the ratios are printed.
#[test]
fn a_tiny_tcp_run_measures_both_servers_and_reconciles() {
    use spillway::config::Config;
    use spillway_bench::baseline_tcp::{TwinServer, TwinSettings};

    let mut config = Config::default();
    config.shards = 1;
    let stand_in = TwinServer::start(
        TwinSettings::matching(&config, 2, 0),
        "127.0.0.1:0".parse().unwrap(),
    )
    .expect("starting the stand-in server");
    let output = Command::new(env!("CARGO_BIN_EXE_e2e"))
        .args([
            "--tcp",
            "--spillway",
            &format!("tcp://{}", stand_in.local_address()),
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
            "--windows",
            "1,4",
            "--json",
        ])
        .output()
        .expect("running e2e --tcp");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let json: Value = serde_json::from_slice(&output.stdout).expect("one JSON object");
    assert_eq!(json["transport"], "tcp");
    assert_eq!(json["reconciled"], true, "{json:#}");
    assert_eq!(json["twin"]["workers"], 1);
    let rows = [
        ("max_throughput", "spillway_window_1", "tokio_twin_window_1"),
        ("max_throughput", "spillway_window_4", "tokio_twin_window_4"),
        ("open_loop", "spillway", "tokio_twin"),
    ];
    for (section, spillway, twin) in rows {
        for target in [spillway, twin] {
            let row = &json[section][target];
            assert_eq!(row["reconciled"], true, "{section}.{target}: {row:#}");
            assert!(row["delivered"].as_u64().unwrap() > 0, "{section}.{target}");
            assert_eq!(row["tcp"]["connections"], 100, "{section}.{target}");
            assert_eq!(
                row["detail"]["target"],
                format!("tcp://{}", row["address"].as_str().unwrap())
            );
        }
        let twin = &json[section][twin];
        assert_eq!(twin["server"]["accepted"], 100, "{section}");
        assert_eq!(
            twin["cross_check_errors"].as_array().map(Vec::len),
            Some(0),
            "{section}"
        );
        assert!(json[section][spillway]["server"].is_null());
    }
    assert_eq!(json["max_throughput"]["spillway_window_4"]["window"], 4);
    let windows: Vec<u64> = json["max_throughput_windows"]
        .as_array()
        .expect("the windows")
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    assert_eq!(windows, [1, 4]);
    assert!(json["max_throughput_ratio_spillway_over_twin"].is_number());
    assert!(json["open_loop_ratio_p99_twin_over_spillway"].is_number());
    let stand_in = stand_in.shutdown();
    // All three runs against the stand-in half-closed their 100 connections at the end.
    assert_eq!(stand_in.half_closed_by_client, 300);
}
