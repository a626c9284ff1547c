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

use serde::{Serialize, Serializer};

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

    /// `value` in this unit's precision.
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

impl Serialize for Unit {
    /// Its label.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.label())
    }
}

/// One side of a row: who, and the summary of its repetitions. JSON: `name`, `unit`, the
/// summary's `median`, `min`, `max` and `samples`, `admitted` and `checks` where counted,
/// and `NAME_per_rep` for each further count.
#[derive(Clone, Debug, Serialize)]
pub struct Figure {
    /// The implementation measured, with any qualifier ("governor direct, QuantaClock").
    pub name: String,
    /// What the samples count.
    pub unit: Unit,
    /// Median, min, max and samples over the repetitions.
    #[serde(flatten)]
    pub summary: Summary,
    /// Admitted and total checks over all repetitions, for bucket rows.
    #[serde(flatten)]
    pub admitted: Option<Admitted>,
    /// Further per-repetition counts that explain the figure (e.g. how often a ring was found
    /// full or empty), as (name, one value per repetition); in the JSON, and summed up in
    /// the table.
    #[serde(flatten, serialize_with = "per_rep")]
    pub counts: Vec<(String, Vec<u64>)>,
}

/// Each count under `NAME_per_rep`.
fn per_rep<S: Serializer>(counts: &[(String, Vec<u64>)], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_map(
        counts
            .iter()
            .map(|(name, per_rep)| (format!("{name}_per_rep"), per_rep)),
    )
}

/// Admitted checks out of all checks, summed over repetitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
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

impl Serialize for Row {
    /// `case`, both figures, the ratio (`ratio_spillway_over_peer`), its direction
    /// (`higher_is_better`, `spillway_advantage`) and the target (`rule`, `met`) or `null`.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Verdict {
            rule: String,
            met: bool,
        }
        #[derive(Serialize)]
        struct Written<'a> {
            case: &'a str,
            spillway: &'a Figure,
            peer: &'a Figure,
            ratio_spillway_over_peer: f64,
            higher_is_better: bool,
            spillway_advantage: f64,
            target: Option<Verdict>,
        }
        Written {
            case: &self.case,
            spillway: &self.spillway,
            peer: &self.peer,
            ratio_spillway_over_peer: self.ratio(),
            higher_is_better: self.spillway.unit.higher_is_better(),
            spillway_advantage: self.spillway_advantage(),
            target: self.target.map(|target| Verdict {
                rule: format!("ratio {}", target.rule()),
                met: target.is_met(self.ratio()),
            }),
        }
        .serialize(serializer)
    }
}

impl Serialize for AbsoluteRow {
    /// `case`, the figure, `higher_is_better`, and the budget (`rule`, `bound`, `unit`,
    /// `median_over_budget`, `met`) or `null`.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Verdict {
            rule: String,
            bound: f64,
            unit: Unit,
            median_over_budget: Option<f64>,
            met: bool,
        }
        #[derive(Serialize)]
        struct Written<'a> {
            case: &'a str,
            spillway: &'a Figure,
            higher_is_better: bool,
            budget: Option<Verdict>,
        }
        let unit = self.spillway.unit;
        Written {
            case: &self.case,
            spillway: &self.spillway,
            higher_is_better: unit.higher_is_better(),
            budget: self.budget.map(|budget| Verdict {
                rule: format!("median {}", budget.rule(unit)),
                bound: budget.bound(),
                unit,
                median_over_budget: self.fraction_of_budget(),
                met: budget.is_met(self.spillway.summary.median),
            }),
        }
        .serialize(serializer)
    }
}

/// A group of rows with a title and notes on how they were measured. JSON: `title`,
/// `notes`, `rows`, and `absolute_rows` only in sections that have such rows.
#[derive(Clone, Debug, Serialize)]
pub struct Section {
    /// The section's title.
    pub title: String,
    /// How it was measured, in a sentence each.
    pub notes: Vec<String>,
    /// Its rows, spillway against a peer.
    pub rows: Vec<Row>,
    /// Its rows with no peer, judged against absolute budgets.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub absolute_rows: Vec<AbsoluteRow>,
}

/// The machine a `compare` run ran on and the run's settings: the table's first line and
/// the JSON's `machine` object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RunSetup {
    /// Cores this process may use.
    pub cores: usize,
    /// The CPU's model name.
    pub cpu: String,
    /// How the measured threads were pinned, in words.
    pub pinned: String,
    /// Whether every thread that asked to be pinned was.
    pub pinned_ok: bool,
    /// How a thread waits on a full or empty ring.
    pub wait_on_full_or_empty: &'static str,
    /// Repetitions of every measurement.
    pub reps: u32,
    /// Messages per throughput run.
    pub messages: u64,
    /// Recorded round trips per latency run.
    pub round_trips: u64,
    /// Checks per single-thread bucket run.
    pub bucket_checks: u64,
    /// Checks per thread in a two-thread bucket run.
    pub two_thread_checks_per_thread: u64,
    /// Checks per keyed bucket run.
    pub keyed_checks: u64,
    /// Timed messages per admission-pipeline run.
    pub admission_messages: u64,
    /// Whether these are the `--quick` counts.
    pub quick: bool,
    /// Optimised, or not (then the figures mean nothing).
    pub build: &'static str,
}

impl RunSetup {
    /// `key: value | key: value ...`, as the table's first line.
    fn line(&self) -> String {
        format!(
            "cores: {} | cpu: {} | pinned: {} | pinned_ok: {} | wait_on_full_or_empty: {} | reps: {} | messages: {} | round_trips: {} | bucket_checks: {} | two_thread_checks_per_thread: {} | keyed_checks: {} | admission_messages: {} | quick: {} | build: {}",
            self.cores,
            self.cpu,
            self.pinned,
            self.pinned_ok,
            self.wait_on_full_or_empty,
            self.reps,
            self.messages,
            self.round_trips,
            self.bucket_checks,
            self.two_thread_checks_per_thread,
            self.keyed_checks,
            self.admission_messages,
            self.quick,
            self.build
        )
    }
}

/// Everything a `compare` run found: the table ([`Report::to_table`]) and the JSON object
/// (its `Serialize`: the machine and settings, then every section with every figure, each
/// ratio and each target, and, in sections that have them, the absolute rows).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The machine and the run's settings.
    pub machine: RunSetup,
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
    /// The report as a table per section, preceded by the machine line.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{}", self.machine.line());
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
            machine: RunSetup {
                cores: 2,
                ..RunSetup::default()
            },
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
        let value = serde_json::to_value(&report).unwrap();
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
            machine: RunSetup::default(),
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
        let value = serde_json::to_value(&report).unwrap();
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
