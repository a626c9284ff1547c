//! Smoke test of the `compare` run: every measurement completes with tiny counts and its
//! correctness checks hold (sums, echoes, admitted counts, every admission-pipeline message
//! admitted); the binary prints one JSON object
//! and refuses unknown flags. No timing is asserted: debug builds on a shared machine say
//! nothing about speed.

use std::process::Command;

use serde_json::Value;
use spillway_bench::suite::{self, Settings};

#[test]
fn quick_run_completes_with_every_section_and_ratio() {
    let report = suite::run(&Settings::quick(), |_| {}).expect("quick run");
    let titles: Vec<&str> = report.sections.iter().map(|s| s.title.as_str()).collect();
    assert_eq!(titles.len(), 5, "{titles:?}");
    // 2 capacities x 4 peers per throughput section, 2 percentiles x 4 peers; bucket rows:
    // 3 single-thread cases x 2 access modes, 4 two-thread, 1 clock, 2 access modes x 2 keyed
    // peers; the admission section has no peer rows.
    let row_counts: Vec<usize> = report.sections.iter().map(|s| s.rows.len()).collect();
    assert_eq!(row_counts, [8, 8, 8, 15, 0]);
    // Absolute rows: admission and full path per tenant setup (3), then memory per connection.
    let absolute_counts: Vec<usize> = report
        .sections
        .iter()
        .map(|s| s.absolute_rows.len())
        .collect();
    assert_eq!(absolute_counts, [0, 0, 0, 0, 7]);
    for row in report.sections.iter().flat_map(|s| &s.rows) {
        assert!(row.ratio().is_finite() && row.ratio() > 0.0, "{}", row.case);
        // Both sides of every bucket row got the same quota and admitted the same checks.
        if let (Some(spillway), Some(peer)) = (row.spillway.admitted, row.peer.admitted) {
            assert_eq!(spillway.checks, peer.checks, "{}", row.case);
            assert_eq!(spillway.admitted, peer.admitted, "{}", row.case);
        }
    }
    // Each bucket target is judged on one access mode: CAS for the clock-per-check row, the
    // owner-thread path for the amortised and keyed rows.
    let judged: Vec<(&str, bool)> = report.sections[3]
        .rows
        .iter()
        .filter(|row| row.target.is_some())
        .map(|row| {
            (
                row.case.as_str(),
                row.spillway.name.contains("try_acquire_exclusive"),
            )
        })
        .collect();
    assert_eq!(
        judged,
        [
            ("1 thread, clock read per check, admitted", false),
            ("1 thread, amortised clock, admitted", true),
            ("15000 keyed, random order, amortised clock", true),
        ]
    );
    // Admission: every timed message of every rep admitted (the run checks delivery too);
    // the admission rows carry the 50 ns budget, the full-path rows none, memory 256 B.
    let admission = &report.sections[4];
    assert!(
        admission.title.starts_with("Admission pipeline"),
        "{}",
        admission.title
    );
    let settings = Settings::quick();
    let budgets: Vec<(&str, Option<f64>)> = admission
        .absolute_rows
        .iter()
        .map(|row| {
            if let Some(admitted) = row.spillway.admitted {
                assert_eq!(
                    admitted.checks,
                    settings.admission_messages * u64::from(settings.reps),
                    "{}",
                    row.case
                );
                assert_eq!(admitted.admitted, admitted.checks, "{}", row.case);
            }
            assert!(row.spillway.summary.median > 0.0, "{}", row.case);
            (
                row.case.split(',').next().unwrap_or(""),
                row.budget.map(|budget| budget.bound()),
            )
        })
        .collect();
    assert_eq!(
        budgets,
        [
            ("admission", Some(50.0)),
            ("admission + handler + completion", None),
            // The configured-tenant and fleet-rate rows are reported without the budget.
            ("admission", None),
            ("admission + handler + completion", None),
            ("admission", None),
            ("admission + handler + completion", None),
            ("memory per idle connection", Some(256.0)),
        ]
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["sections"].as_array().map(Vec::len), Some(5));
    let memory = &json["sections"][4]["absolute_rows"][6];
    assert_eq!(memory["spillway"]["unit"], "B/connection");
    assert!(memory["budget"]["met"].is_boolean());
    assert!(json["sections"][3].get("absolute_rows").is_none());
    let table = report.to_table();
    assert!(table.contains("spillway/peer"));
    assert!(table.contains("<= 50 ns/message"), "{table}");
    assert!(table.contains("<= 256 B/connection"), "{table}");
    // The bucket table names spillway's access mode on every row.
    assert!(
        table.contains("| spillway try_acquire_exclusive (owner thread"),
        "{table}"
    );
}

#[test]
fn binary_prints_one_json_object_and_rejects_unknown_flags() {
    let output = Command::new(env!("CARGO_BIN_EXE_compare"))
        .args(["--quick", "--json"])
        .output()
        .expect("running compare");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let value: Value = serde_json::from_slice(&output.stdout).expect("stdout is one JSON object");
    assert!(value["machine"]["cores"].as_u64().is_some());
    let first = &value["sections"][0]["rows"][0];
    for key in ["median", "min", "max", "unit"] {
        assert!(!first["spillway"][key].is_null(), "missing {key}");
    }
    assert!(first["ratio_spillway_over_peer"].as_f64().is_some());
    let admission = value["sections"]
        .as_array()
        .and_then(|sections| sections.last())
        .expect("sections");
    let budget_row = &admission["absolute_rows"][0];
    assert!(budget_row["spillway"]["median"].as_f64().is_some());
    assert_eq!(budget_row["budget"]["bound"], 50.0);
    assert!(budget_row["budget"]["met"].is_boolean());

    let refused = Command::new(env!("CARGO_BIN_EXE_compare"))
        .arg("--fastest")
        .output()
        .expect("running compare");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("unexpected argument '--fastest'"));
}
