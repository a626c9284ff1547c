//! The comparison's results as a readable table or as one JSON object.
//!
//! A report is sections of rows; a row is one case with spillway's figure, one peer's figure
//! and the ratio spillway / peer of their medians. Whether a ratio above 1 is good depends on
//! the unit ([`Unit::higher_is_better`]); the table says it in words ("2.10x faster"), the
//! JSON gives both the raw ratio and the direction.
//!
//! A section may also hold absolute rows ([`AbsoluteRow`]): one spillway figure with no peer,
//! judged, where it has one, against a fixed budget in its own unit ([`Budget`], e.g. at most
//! 50 ns per message). The table prints them after the comparison rows with the budget in
//! place of the peer; the JSON lists them under `absolute_rows`, a key present only in
//! sections that have such rows.
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
    /// Nanoseconds per message through a pipeline (lower is better).
    NanosecondsPerMessage,
    /// Bytes of memory per connection (lower is better).
    BytesPerConnection,
}

impl Unit {
    /// Short label, as in the table and the JSON.
    pub fn label(self) -> &'static str {
        match self {
            Unit::MillionMessagesPerSec => "Mmsg/s",
            Unit::Nanoseconds => "ns",
            Unit::NanosecondsPerCheck => "ns/check",
            Unit::NanosecondsPerRead => "ns/read",
            Unit::NanosecondsPerMessage => "ns/message",
            Unit::BytesPerConnection => "B/connection",
        }
    }

    /// Whether more is better (throughput) or less (times).
    pub fn higher_is_better(self) -> bool {
        matches!(self, Unit::MillionMessagesPerSec)
    }

    fn format(self, value: f64) -> String {
        match self {
            Unit::MillionMessagesPerSec
            | Unit::NanosecondsPerCheck
            | Unit::NanosecondsPerRead
            | Unit::NanosecondsPerMessage => {
                if value >= 100.0 {
                    format!("{value:.0}")
                } else if value >= 10.0 {
                    format!("{value:.1}")
                } else {
                    format!("{value:.2}")
                }
            }
            Unit::Nanoseconds | Unit::BytesPerConnection => format!("{value:.0}"),
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

/// A fixed goal for a figure's median, in the figure's own unit (no peer involved).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Budget {
    /// The median must be at most this.
    AtMost(f64),
}

impl Budget {
    /// The bound.
    pub fn bound(self) -> f64 {
        match self {
            Budget::AtMost(bound) => bound,
        }
    }

    /// The rule in words with its unit, e.g. `<= 50 ns/message`.
    pub fn rule(self, unit: Unit) -> String {
        match self {
            Budget::AtMost(bound) => format!("<= {bound} {}", unit.label()),
        }
    }

    /// Whether `median` meets the budget.
    pub fn is_met(self, median: f64) -> bool {
        match self {
            Budget::AtMost(bound) => median <= bound,
        }
    }
}

/// spillway alone in one case: one figure, judged against a budget where there is one.
#[derive(Clone, Debug)]
pub struct AbsoluteRow {
    /// The case ("admission, tenant 0 without settings").
    pub case: String,
    /// spillway's figure.
    pub spillway: Figure,
    /// The goal for its median, where there is one.
    pub budget: Option<Budget>,
}

impl AbsoluteRow {
    /// spillway's median over the budget's bound, where there is a budget.
    pub fn fraction_of_budget(&self) -> Option<f64> {
        self.budget
            .map(|budget| self.spillway.summary.median / budget.bound())
    }

    /// Whether the budget is met, where there is one.
    pub fn budget_met(&self) -> Option<bool> {
        self.budget
            .map(|budget| budget.is_met(self.spillway.summary.median))
    }
}

/// A group of rows with a title and notes on how they were measured.
#[derive(Clone, Debug)]
pub struct Section {
    /// The section's title.
    pub title: String,
    /// How it was measured, in a sentence each.
    pub notes: Vec<String>,
    /// Its rows, spillway against a peer.
    pub rows: Vec<Row>,
    /// Its rows with no peer, judged against absolute budgets.
    pub absolute_rows: Vec<AbsoluteRow>,
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

/// Writes `lines` as columns padded to their widest cell, with a rule under the header.
fn write_grid(out: &mut String, lines: &[Vec<String>]) {
    let mut widths = vec![0usize; lines.first().map_or(0, Vec::len)];
    for line in lines {
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
}

/// The spillway-against-peer table of a section with rows, and its counts.
fn write_comparison(out: &mut String, section: &Section) {
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
    write_grid(out, &lines);
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

/// The absolute-budget table of a section with such rows, and its admitted counts.
fn write_absolute(out: &mut String, section: &Section) {
    let header = [
        "case",
        "spillway",
        "spillway median (min–max)",
        "budget",
        "median/budget",
        "target",
    ];
    let mut lines: Vec<Vec<String>> = vec![header.into_iter().map(str::to_owned).collect()];
    for row in &section.absolute_rows {
        let figure = &row.spillway;
        // A figure of one sample (a constant, or one repetition) has no spread to show.
        let value = if figure.summary.samples.len() == 1 {
            format!(
                "{} {}",
                figure.unit.format(figure.summary.median),
                figure.unit.label()
            )
        } else {
            figure_text(figure)
        };
        let (budget, fraction, verdict) = match (row.budget, row.fraction_of_budget()) {
            (Some(budget), Some(fraction)) => (
                budget.rule(figure.unit),
                format!("{fraction:.3}"),
                if budget.is_met(figure.summary.median) {
                    "met"
                } else {
                    "MISSED"
                }
                .to_owned(),
            ),
            _ => (String::new(), String::new(), String::new()),
        };
        lines.push(vec![
            row.case.clone(),
            figure.name.clone(),
            value,
            budget,
            fraction,
            verdict,
        ]);
    }
    write_grid(out, &lines);
    let counted: Vec<&AbsoluteRow> = section
        .absolute_rows
        .iter()
        .filter(|row| row.spillway.admitted.is_some())
        .collect();
    if !counted.is_empty() {
        let _ = writeln!(out, "   admitted / submitted, all reps:");
        for row in counted {
            if let Some(counts) = row.spillway.admitted {
                let _ = writeln!(
                    out,
                    "     {}: {} {}/{}",
                    row.case, row.spillway.name, counts.admitted, counts.checks
                );
            }
        }
    }
}

impl Report {
    /// The report as one JSON object: the machine and settings, then every section with
    /// every figure (median, min, max, samples, unit), each ratio and each target, and, in
    /// sections that have them, the absolute rows (`absolute_rows`: figure, budget, met).
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
                let mut value =
                    json!({ "title": section.title, "notes": section.notes, "rows": rows });
                if !section.absolute_rows.is_empty() {
                    let absolute: Vec<Value> = section
                        .absolute_rows
                        .iter()
                        .map(|row| {
                            json!({
                                "case": row.case,
                                "spillway": figure_json(&row.spillway),
                                "higher_is_better": row.spillway.unit.higher_is_better(),
                                "budget": row.budget.map(|budget| json!({
                                    "rule": format!("median {}", budget.rule(row.spillway.unit)),
                                    "bound": budget.bound(),
                                    "unit": row.spillway.unit.label(),
                                    "median_over_budget": row.fraction_of_budget(),
                                    "met": budget.is_met(row.spillway.summary.median),
                                })),
                            })
                        })
                        .collect();
                    value["absolute_rows"] = json!(absolute);
                }
                value
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
            if !section.rows.is_empty() {
                write_comparison(&mut out, section);
            }
            if !section.absolute_rows.is_empty() {
                write_absolute(&mut out, section);
            }
        }
        out
    }
}

/// `name count` for every counter that is not zero, in counter order: the reasons behind a
/// [`Tally`](spillway::metrics::Tally)'s refused, shed or dropped counts, for one line of
/// a report.
pub(crate) fn nonzero_counts<'a>(
    names: impl IntoIterator<Item = &'static str> + 'a,
    counts: &'a [u64],
) -> impl Iterator<Item = String> + 'a {
    names
        .into_iter()
        .zip(counts)
        .filter(|(_, &count)| count > 0)
        .map(|(name, count)| format!("{name} {count}"))
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
                absolute_rows: Vec::new(),
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
        // Sections without absolute rows keep their JSON shape.
        assert!(value["sections"][0].get("absolute_rows").is_none());
    }

    #[test]
    fn absolute_rows_are_judged_on_the_median_against_their_budget() {
        let within = AbsoluteRow {
            case: "admission".to_owned(),
            spillway: figure(
                "spillway submit",
                &[40.0, 30.0, 60.0],
                Unit::NanosecondsPerMessage,
            ),
            budget: Some(Budget::AtMost(50.0)),
        };
        assert_eq!(within.budget_met(), Some(true));
        assert_eq!(within.fraction_of_budget(), Some(0.8));
        let over = AbsoluteRow {
            case: "memory".to_owned(),
            spillway: figure("spillway", &[300.0], Unit::BytesPerConnection),
            budget: Some(Budget::AtMost(256.0)),
        };
        assert_eq!(over.budget_met(), Some(false));
        let unjudged = AbsoluteRow {
            case: "full path".to_owned(),
            spillway: figure(
                "spillway submit + run",
                &[90.0],
                Unit::NanosecondsPerMessage,
            ),
            budget: None,
        };
        assert_eq!(unjudged.budget_met(), None);
        let report = Report {
            machine: vec![],
            sections: vec![Section {
                title: "a".to_owned(),
                notes: vec![],
                rows: vec![],
                absolute_rows: vec![within, over, unjudged],
            }],
        };
        let table = report.to_table();
        assert!(
            table.contains("| 40.0 (30.0–60.0) ns/message | <= 50 ns/message    | 0.800 "),
            "{table}"
        );
        assert!(
            table
                .lines()
                .any(|line| line.starts_with("admission ") && line.ends_with("| met")),
            "{table}"
        );
        assert!(table.contains("300 B/connection"), "{table}");
        assert!(table.contains("<= 256 B/connection"), "{table}");
        assert!(table.contains("MISSED"), "{table}");
        // No comparison table for a section without comparison rows.
        assert!(!table.contains("spillway/peer"), "{table}");
        let value = report.to_json();
        let rows = &value["sections"][0]["absolute_rows"];
        assert_eq!(rows[0]["spillway"]["median"], 40.0);
        assert_eq!(rows[0]["budget"]["bound"], 50.0);
        assert_eq!(rows[0]["budget"]["met"], true);
        assert_eq!(rows[0]["budget"]["rule"], "median <= 50 ns/message");
        assert_eq!(rows[1]["budget"]["met"], false);
        assert!(rows[2]["budget"].is_null());
        assert_eq!(
            value["sections"][0]["rows"].as_array().map(Vec::len),
            Some(0)
        );
    }
}
