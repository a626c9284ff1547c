//! The comparison's results as a readable table or as one JSON object.
//!
//! A report is sections of rows; a row is one case with spillway's figure, one peer's figure
//! and the ratio spillway / peer of their medians. Whether a ratio above 1 is good depends on
//! the unit ([`Unit::higher_is_better`]); the table says it in words ("2.10x faster"), the
//! JSON gives both the raw ratio and the direction.
//!
//! Known bias: none added here; the figures are formatted, not changed. Ratios are of medians
//! only, so they say nothing about the spread; min and max are printed beside every median.

use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::stats::Summary;

/// What a figure counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Millions of messages per second (higher is better).
    MillionMessagesPerSec,
    /// Nanoseconds of latency (lower is better).
    Nanoseconds,
    /// Nanoseconds per token-bucket check (lower is better).
    NanosecondsPerCheck,
    /// Nanoseconds per clock reading (lower is better).
    NanosecondsPerRead,
}

impl Unit {
    /// Short label, as in the table and the JSON.
    pub fn label(self) -> &'static str {
        match self {
            Unit::MillionMessagesPerSec => "Mmsg/s",
            Unit::Nanoseconds => "ns",
            Unit::NanosecondsPerCheck => "ns/check",
            Unit::NanosecondsPerRead => "ns/read",
        }
    }

    /// Whether more is better (throughput) or less (times).
    pub fn higher_is_better(self) -> bool {
        matches!(self, Unit::MillionMessagesPerSec)
    }

    fn format(self, value: f64) -> String {
        match self {
            Unit::MillionMessagesPerSec | Unit::NanosecondsPerCheck | Unit::NanosecondsPerRead => {
                if value >= 100.0 {
                    format!("{value:.0}")
                } else if value >= 10.0 {
                    format!("{value:.1}")
                } else {
                    format!("{value:.2}")
                }
            }
            Unit::Nanoseconds => format!("{value:.0}"),
        }
    }
}

/// One side of a row: who, and the summary of its repetitions.
#[derive(Clone, Debug)]
pub struct Figure {
    /// The implementation measured, with any qualifier ("governor direct, QuantaClock").
    pub name: String,
    /// Median, min, max and samples over the repetitions.
    pub summary: Summary,
    /// What the samples count.
    pub unit: Unit,
    /// Admitted and total checks over all repetitions, for bucket rows.
    pub admitted: Option<Admitted>,
    /// Further per-repetition counts that explain the figure (e.g. how often a ring was found
    /// full or empty), as (name, one value per repetition); in the JSON, and summed up in
    /// the table.
    pub counts: Vec<(String, Vec<u64>)>,
}

/// Admitted checks out of all checks, summed over repetitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admitted {
    /// Checks admitted.
    pub admitted: u64,
    /// Checks made.
    pub checks: u64,
}

/// A goal for a row's ratio (spillway / peer, of medians).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    /// The ratio must be at least this.
    RatioAtLeast(f64),
    /// The ratio must be at most this.
    RatioAtMost(f64),
}

impl Target {
    /// The rule in words, e.g. `>= 3`.
    pub fn rule(self) -> String {
        match self {
            Target::RatioAtLeast(bound) => format!(">= {bound}"),
            Target::RatioAtMost(bound) => format!("<= {bound}"),
        }
    }

    /// Whether `ratio` meets the target.
    pub fn is_met(self, ratio: f64) -> bool {
        match self {
            Target::RatioAtLeast(bound) => ratio >= bound,
            Target::RatioAtMost(bound) => ratio <= bound,
        }
    }
}

/// spillway against one peer in one case.
#[derive(Clone, Debug)]
pub struct Row {
    /// The case ("cap 1024, batched 64").
    pub case: String,
    /// spillway's figure.
    pub spillway: Figure,
    /// The peer's figure, in the same unit.
    pub peer: Figure,
    /// The goal for the ratio, where there is one.
    pub target: Option<Target>,
}

impl Row {
    /// spillway's median over the peer's.
    pub fn ratio(&self) -> f64 {
        self.spillway.summary.median / self.peer.summary.median
    }

    /// How many times better spillway is (above 1) or worse (below 1), whatever the unit.
    pub fn spillway_advantage(&self) -> f64 {
        if self.spillway.unit.higher_is_better() {
            self.ratio()
        } else {
            1.0 / self.ratio()
        }
    }

    /// Whether the target is met, where there is one.
    pub fn target_met(&self) -> Option<bool> {
        self.target.map(|target| target.is_met(self.ratio()))
    }
}

/// A group of rows with a title and notes on how they were measured.
#[derive(Clone, Debug)]
pub struct Section {
    /// The section's title.
    pub title: String,
    /// How it was measured, in a sentence each.
    pub notes: Vec<String>,
    /// Its rows.
    pub rows: Vec<Row>,
}

/// Everything a `compare` run found.
#[derive(Clone, Debug)]
pub struct Report {
    /// The machine and the run's settings, as key/value lines (also in the JSON).
    pub machine: Vec<(String, Value)>,
    /// The results.
    pub sections: Vec<Section>,
}

fn figure_text(figure: &Figure) -> String {
    let unit = figure.unit;
    format!(
        "{} ({}–{}) {}",
        unit.format(figure.summary.median),
        unit.format(figure.summary.min),
        unit.format(figure.summary.max),
        unit.label()
    )
}

fn figure_json(figure: &Figure) -> Value {
    let mut value = json!({
        "name": figure.name,
        "unit": figure.unit.label(),
        "median": figure.summary.median,
        "min": figure.summary.min,
        "max": figure.summary.max,
        "samples": figure.summary.samples,
    });
    if let Some(admitted) = figure.admitted {
        value["admitted"] = json!(admitted.admitted);
        value["checks"] = json!(admitted.checks);
    }
    for (name, per_rep) in &figure.counts {
        value[format!("{name}_per_rep")] = json!(per_rep);
    }
    value
}

/// The median of per-repetition counts (the lower middle one for an even number).
fn median_count(per_rep: &[u64]) -> u64 {
    let mut sorted = per_rep.to_vec();
    sorted.sort_unstable();
    sorted
        .get(sorted.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or(0)
}

fn advantage_text(row: &Row) -> String {
    let advantage = row.spillway_advantage();
    let word = match (row.spillway.unit.higher_is_better(), advantage >= 1.0) {
        (true, true) => "higher",
        (true, false) => "lower",
        (false, true) => "faster",
        (false, false) => "slower",
    };
    let times = if advantage >= 1.0 {
        advantage
    } else {
        1.0 / advantage
    };
    format!("{times:.2}x {word}")
}

impl Report {
    /// The report as one JSON object: the machine and settings, then every section with
    /// every figure (median, min, max, samples, unit), each ratio and each target.
    pub fn to_json(&self) -> Value {
        let machine: serde_json::Map<String, Value> = self.machine.iter().cloned().collect();
        let sections: Vec<Value> = self
            .sections
            .iter()
            .map(|section| {
                let rows: Vec<Value> = section
                    .rows
                    .iter()
                    .map(|row| {
                        json!({
                            "case": row.case,
                            "spillway": figure_json(&row.spillway),
                            "peer": figure_json(&row.peer),
                            "ratio_spillway_over_peer": row.ratio(),
                            "higher_is_better": row.spillway.unit.higher_is_better(),
                            "spillway_advantage": row.spillway_advantage(),
                            "target": row.target.map(|target| json!({
                                "rule": format!("ratio {}", target.rule()),
                                "met": target.is_met(row.ratio()),
                            })),
                        })
                    })
                    .collect();
                json!({ "title": section.title, "notes": section.notes, "rows": rows })
            })
            .collect();
        json!({ "machine": machine, "sections": sections })
    }

    /// The report as a table per section, preceded by the machine line.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let machine: Vec<String> = self
            .machine
            .iter()
            .map(|(key, value)| match value {
                Value::String(text) => format!("{key}: {text}"),
                other => format!("{key}: {other}"),
            })
            .collect();
        let _ = writeln!(out, "{}", machine.join(" | "));
        for section in &self.sections {
            let _ = writeln!(out, "\n== {} ==", section.title);
            for note in &section.notes {
                let _ = writeln!(out, "   {note}");
            }
            // spillway's own column only where its figures differ by more than the name
            // "spillway" (the bucket section's access modes).
            let name_column = section
                .rows
                .iter()
                .any(|row| row.spillway.name != section.rows[0].spillway.name);
            let mut header = vec!["case"];
            if name_column {
                header.push("spillway");
            }
            header.extend([
                "spillway median (min–max)",
                "peer",
                "peer median (min–max)",
                "spillway/peer",
                "spillway is",
                "target",
            ]);
            let mut lines: Vec<Vec<String>> = vec![header.into_iter().map(str::to_owned).collect()];
            for row in &section.rows {
                let target = match row.target {
                    None => String::new(),
                    Some(target) => format!(
                        "{} {}",
                        target.rule(),
                        if target.is_met(row.ratio()) {
                            "met"
                        } else {
                            "MISSED"
                        }
                    ),
                };
                let mut line = vec![row.case.clone()];
                if name_column {
                    line.push(row.spillway.name.clone());
                }
                line.extend([
                    figure_text(&row.spillway),
                    row.peer.name.clone(),
                    figure_text(&row.peer),
                    format!("{:.3}", row.ratio()),
                    advantage_text(row),
                    target,
                ]);
                lines.push(line);
            }
            let mut widths = vec![0usize; lines[0].len()];
            for line in &lines {
                for (width, cell) in widths.iter_mut().zip(line) {
                    *width = (*width).max(cell.chars().count());
                }
            }
            for (index, line) in lines.iter().enumerate() {
                let cells: Vec<String> = line
                    .iter()
                    .zip(&widths)
                    .map(|(cell, &width)| format!("{cell:<width$}"))
                    .collect();
                let _ = writeln!(out, "{}", cells.join(" | ").trim_end());
                if index == 0 {
                    let rule: Vec<String> = widths.iter().map(|&width| "-".repeat(width)).collect();
                    let _ = writeln!(out, "{}", rule.join("-+-"));
                }
            }
            let mut explained: Vec<(&str, &Figure)> = Vec::new();
            for row in &section.rows {
                for figure in [&row.spillway, &row.peer] {
                    let already = explained
                        .iter()
                        .any(|(case, seen)| *case == row.case && seen.name == figure.name);
                    if !figure.counts.is_empty() && !already {
                        explained.push((&row.case, figure));
                    }
                }
            }
            if !explained.is_empty() {
                let _ = writeln!(out, "   counts, median per rep:");
                for (case, figure) in explained {
                    let counts: Vec<String> = figure
                        .counts
                        .iter()
                        .map(|(name, per_rep)| format!("{name} {}", median_count(per_rep)))
                        .collect();
                    let _ = writeln!(
                        out,
                        "     {case}: {} at {} {}: {}",
                        figure.name,
                        figure.unit.format(figure.summary.median),
                        figure.unit.label(),
                        counts.join(", ")
                    );
                }
            }
            let counted: Vec<&Row> = section
                .rows
                .iter()
                .filter(|row| row.spillway.admitted.is_some() || row.peer.admitted.is_some())
                .collect();
            if !counted.is_empty() {
                let _ = writeln!(out, "   admitted / checked, all reps:");
                for row in counted {
                    let counts = |figure: &Figure| {
                        figure.admitted.map_or("-".to_owned(), |counts| {
                            format!("{}/{}", counts.admitted, counts.checks)
                        })
                    };
                    let _ = writeln!(
                        out,
                        "     {}: {} {}, {} {}",
                        row.case,
                        row.spillway.name,
                        counts(&row.spillway),
                        row.peer.name,
                        counts(&row.peer)
                    );
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figure(name: &str, samples: &[f64], unit: Unit) -> Figure {
        Figure {
            name: name.to_owned(),
            summary: Summary::of(samples).unwrap(),
            unit,
            admitted: None,
            counts: Vec::new(),
        }
    }

    #[test]
    fn ratios_and_targets_follow_the_unit() {
        let faster_ring = Row {
            case: "c".to_owned(),
            spillway: figure("spillway", &[300.0], Unit::MillionMessagesPerSec),
            peer: figure("peer", &[100.0], Unit::MillionMessagesPerSec),
            target: Some(Target::RatioAtLeast(3.0)),
        };
        assert_eq!(faster_ring.ratio(), 3.0);
        assert_eq!(faster_ring.target_met(), Some(true));
        assert_eq!(advantage_text(&faster_ring), "3.00x higher");
        let slower_bucket = Row {
            case: "c".to_owned(),
            spillway: figure("spillway", &[6.0], Unit::NanosecondsPerCheck),
            peer: figure("peer", &[10.0], Unit::NanosecondsPerCheck),
            target: Some(Target::RatioAtMost(0.5)),
        };
        assert_eq!(slower_bucket.target_met(), Some(false));
        assert_eq!(advantage_text(&slower_bucket), "1.67x faster");
        let report = Report {
            machine: vec![("cores".to_owned(), json!(2))],
            sections: vec![Section {
                title: "t".to_owned(),
                notes: vec![],
                rows: vec![faster_ring, slower_bucket],
            }],
        };
        let table = report.to_table();
        assert!(table.contains("<= 0.5 MISSED"), "{table}");
        assert!(table.contains(">= 3 met"), "{table}");
        let value = report.to_json();
        assert_eq!(
            value["sections"][0]["rows"][0]["ratio_spillway_over_peer"],
            3.0
        );
        assert_eq!(value["sections"][0]["rows"][1]["target"]["met"], false);
        assert_eq!(value["machine"]["cores"], 2);
    }
}
