//! Stable fuzzing of the configuration loader, `Config::from_toml_str`, through its public
//! API only.
//!
//! Documents are built from the real key set, read from what `Config::to_toml_string`
//! prints (so a new setting is fuzzed as soon as it is printed): a random profile (named
//! right, wrong, or of the wrong type), random keys with values near their printed value,
//! at range edges, far out, or of another type, the two forms of the priority thresholds, a
//! tenant list, unknown keys and tables, and sometimes damaged text (bytes inserted or
//! removed, lines repeated, the end cut); the shipped profile files are damaged the same way.
//! Properties, which any correct loader has:
//!
//! - it never panics;
//! - an error names where the problem is: in a TOML document, a key path (`[index]` in the
//!   tenant list) that is either in the document or a real setting; in text that is not TOML,
//!   a `line L, column C` position within the text (or such a path);
//! - a document it accepts is TOML, validates, round-trips through `to_toml_string` to an
//!   equal `Config`, and every value it gives is the value of that setting (so no unknown key
//!   is accepted and no given value is ignored).

#[macro_use]
mod fuzz_support;

use std::collections::BTreeSet;
use std::sync::OnceLock;

use proptest::prelude::*;
use proptest::sample::{select, Index};
use spillway::config::{Config, ConfigError, TenantConfig, WaitStrategy};
use spillway::message::{Priority, TenantId};

/// The shipped profile files, as real documents to damage.
const SHIPPED: [&str; 4] = [
    include_str!("../../config/development.toml"),
    include_str!("../../config/staging.toml"),
    include_str!("../../config/production.toml"),
    include_str!("../../config/high-throughput.toml"),
];

const THRESHOLDS: &str = "caps.priority_threshold_percent";

/// The names the enumerated settings take (documented in `config/file.rs`), by key.
fn names_of(path: &str) -> &'static [&'static str] {
    match path {
        "profile" => &["development", "staging", "production", "high-throughput"],
        "wait.strategy" => &["adaptive", "busy-spin", "spin-then-yield", "spin-then-park"],
        "caps.action" => &["refuse", "drop", "disconnect"],
        "caps.drop_policy" => &["drop-oldest", "drop-newest"],
        "egress.drop_policy" => &["drop-oldest", "drop-newest", "block", "drop-all"],
        "tenants[].priority_ceiling" => &["P0", "P1", "P2", "P3"],
        _ => &[],
    }
}

/// Every setting, as a path and the value `to_toml_string` prints for it, from a
/// configuration that prints every optional key (a wait strategy with numbers, a tenant
/// with a cap). The tenant list's keys are under `tenants[]`.
fn settings() -> Vec<(String, toml::Value)> {
    let mut config = Config::default();
    config.wait = WaitStrategy::SpinThenPark {
        spin_iterations: 256,
        yield_iterations: 64,
        park_timeout_us: 50,
    };
    config.tenants = vec![TenantConfig {
        tenant: TenantId(7),
        max_pending: Some(5000),
        priority_ceiling: Priority::P1,
    }];
    let printed: toml::Table = toml::from_str(&config.to_toml_string()).unwrap();
    let mut settings = Vec::new();
    collect_settings(&printed, "", &mut settings);
    settings
}

fn collect_settings(table: &toml::Table, prefix: &str, out: &mut Vec<(String, toml::Value)>) {
    for (key, value) in table {
        let path = join(prefix, key);
        match value {
            toml::Value::Table(inner) => collect_settings(inner, &path, out),
            toml::Value::Array(items) if items.iter().all(toml::Value::is_table) => {
                for item in items.iter().take(1) {
                    collect_settings(item.as_table().unwrap(), &format!("{path}[]"), out);
                }
            }
            leaf => out.push((path, leaf.clone())),
        }
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// A value as the fuzz writes it into a document.
#[derive(Clone, Debug)]
enum Value {
    Integer(i64),
    /// Written in hexadecimal (non-negative values only).
    Hex(i64),
    Float(f64),
    Boolean(bool),
    Text(String),
    Datetime,
    Array(Vec<Value>),
    Table(Vec<(String, Value)>),
}

impl Value {
    fn render(&self, out: &mut String) {
        match self {
            Value::Integer(value) => out.push_str(&value.to_string()),
            Value::Hex(value) => out.push_str(&format!("0x{value:x}")),
            Value::Float(value) if value.is_nan() => out.push_str("nan"),
            Value::Float(value) if value.is_infinite() => {
                out.push_str(if *value > 0.0 { "inf" } else { "-inf" })
            }
            Value::Float(value) => out.push_str(&format!("{value:?}")),
            Value::Boolean(value) => out.push_str(&value.to_string()),
            Value::Text(text) => render_string(text, out),
            Value::Datetime => out.push_str("1979-05-27T07:32:00Z"),
            Value::Array(items) => {
                out.push('[');
                for (index, item) in items.iter().enumerate() {
                    if index > 0 {
                        out.push_str(", ");
                    }
                    item.render(out);
                }
                out.push(']');
            }
            Value::Table(entries) => {
                out.push('{');
                for (index, (key, value)) in entries.iter().enumerate() {
                    out.push_str(if index > 0 { ", " } else { " " });
                    render_key(key, out);
                    out.push_str(" = ");
                    value.render(out);
                }
                out.push_str(" }");
            }
        }
    }
}

fn render_string(text: &str, out: &mut String) {
    out.push('"');
    for character in text.chars() {
        match character {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            character if character.is_control() => {
                out.push_str(&format!("\\u{:04X}", u32::from(character)))
            }
            character => out.push(character),
        }
    }
    out.push('"');
}

fn render_key(key: &str, out: &mut String) {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|character| character.is_ascii_alphanumeric() || "_-".contains(character));
    if bare {
        out.push_str(key);
    } else {
        render_string(key, out);
    }
}

/// A document: settings as (dotted path, value), the tenant list, and damage to its text.
#[derive(Clone, Debug)]
struct Document {
    entries: Vec<(Vec<String>, Value)>,
    tenants: Option<Tenants>,
    /// Sections written as inline tables (`wait = { ... }`) instead of `[wait]`.
    inline_sections: BTreeSet<String>,
}

#[derive(Clone, Debug)]
enum Tenants {
    /// `[[tenants]]` tables.
    Tables(Vec<Vec<(String, Value)>>),
    /// `tenants = <value>`: an inline array of tables, or something else.
    Inline(Value),
}

impl Document {
    fn render(&self) -> String {
        // Deduplicated by path, last one wins, so that the text is TOML unless damaged.
        let mut entries: Vec<(Vec<String>, Value)> = Vec::new();
        for (path, value) in &self.entries {
            entries.retain(|(other, _)| other != path);
            entries.push((path.clone(), value.clone()));
        }
        let section_of = |path: &[String]| path[..path.len() - 1].join(".");
        let mut sections: Vec<String> = Vec::new();
        for (path, _) in &entries {
            let section = section_of(path);
            if !sections.contains(&section) {
                sections.push(section);
            }
        }
        let mut out = String::new();
        let keys_of = |section: &str| -> Vec<(String, Value)> {
            entries
                .iter()
                .filter(|(path, _)| section_of(path) == section)
                .map(|(path, value)| (path.last().unwrap().clone(), value.clone()))
                .collect()
        };
        for (key, value) in keys_of("") {
            render_key(&key, &mut out);
            out.push_str(" = ");
            value.render(&mut out);
            out.push('\n');
        }
        // Inline sections are keys of the root, so they come before any header; a section
        // nested in an inline one is part of it.
        let inline_root = |section: &str| {
            self.inline_sections
                .iter()
                .find(|inline| {
                    section == inline.as_str() || section.starts_with(&format!("{inline}."))
                })
                .cloned()
        };
        for inline in &self.inline_sections {
            let mut nested: Vec<(String, Value)> = Vec::new();
            for section in &sections {
                if inline_root(section).as_deref() != Some(inline.as_str()) {
                    continue;
                }
                let inner = section[inline.len()..].trim_start_matches('.');
                let keys = keys_of(section);
                if inner.is_empty() {
                    nested.extend(keys);
                } else {
                    nested.push((inner.to_string(), Value::Table(keys)));
                }
            }
            if nested.is_empty() || inline.contains('.') {
                continue;
            }
            render_key(inline, &mut out);
            out.push_str(" = ");
            Value::Table(nested).render(&mut out);
            out.push('\n');
        }
        if let Some(Tenants::Inline(value)) = &self.tenants {
            out.push_str("tenants = ");
            value.render(&mut out);
            out.push('\n');
        }
        for section in &sections {
            if section.is_empty() || inline_root(section).is_some() {
                continue;
            }
            out.push_str(&format!("\n[{section}]\n"));
            for (key, value) in keys_of(section) {
                render_key(&key, &mut out);
                out.push_str(" = ");
                value.render(&mut out);
                out.push('\n');
            }
        }
        if let Some(Tenants::Tables(tables)) = &self.tenants {
            for table in tables {
                out.push_str("\n[[tenants]]\n");
                for (key, value) in table {
                    render_key(key, &mut out);
                    out.push_str(" = ");
                    value.render(&mut out);
                    out.push('\n');
                }
            }
        }
        out
    }
}

/// How the text of a document is damaged.
#[derive(Clone, Debug)]
enum Damage {
    Insert(Index, char),
    Remove(Index),
    RepeatLine(Index),
    Cut(Index),
}

fn damage() -> impl Strategy<Value = Vec<Damage>> {
    let significant = select(vec![
        '[', ']', '{', '}', '=', '"', '\'', '#', ',', '.', '\n', ' ', '0', 'x', '-', 'é',
    ]);
    proptest::collection::vec(
        prop_oneof![
            (any::<Index>(), significant).prop_map(|(at, character)| Damage::Insert(at, character)),
            any::<Index>().prop_map(Damage::Remove),
            any::<Index>().prop_map(Damage::RepeatLine),
            any::<Index>().prop_map(Damage::Cut),
        ],
        1..3,
    )
}

fn apply(text: &str, damage: &[Damage]) -> String {
    let mut characters: Vec<char> = text.chars().collect();
    for step in damage {
        match step {
            Damage::Insert(at, character) => {
                let at = at.index(characters.len() + 1);
                characters.insert(at, *character);
            }
            Damage::Remove(at) if !characters.is_empty() => {
                characters.remove(at.index(characters.len()));
            }
            Damage::RepeatLine(at) => {
                let text: String = characters.iter().collect();
                let mut lines: Vec<&str> = text.lines().collect();
                if !lines.is_empty() {
                    let at = at.index(lines.len());
                    lines.insert(at, lines[at]);
                }
                characters = lines.join("\n").chars().collect();
            }
            Damage::Cut(at) => {
                let at = at.index(characters.len() + 1);
                characters.truncate(at);
            }
            Damage::Remove(_) => {}
        }
    }
    characters.into_iter().collect()
}

/// Integers worth trying for a setting printed as `printed`: around it, at the edges of
/// the ranges settings have, and anywhere.
fn integer(printed: i64) -> impl Strategy<Value = Value> {
    let edges: Vec<i64> = [8, 10, 16, 20, 24, 26, 30, 31, 32, 40, 62]
        .into_iter()
        .flat_map(|bits| {
            let power = 1i64 << bits;
            [power - 1, power, power + 1]
        })
        .chain([0, 1, 2, -1, -20, 19, 99, 100, 101, i64::MAX, i64::MIN])
        .collect();
    prop_oneof![
        4 => Just(printed),
        3 => select(vec![printed - 1, printed + 1, printed / 2, printed.saturating_mul(2)]),
        3 => select(edges),
        2 => 0i64..200,
        1 => any::<i64>(),
    ]
    .prop_flat_map(|value| {
        if value >= 0 {
            prop_oneof![4 => Just(Value::Integer(value)), 1 => Just(Value::Hex(value))].boxed()
        } else {
            Just(Value::Integer(value)).boxed()
        }
    })
}

fn float(printed: f64) -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => Just(Value::Float(printed)),
        2 => select(vec![0.0, -0.0, 100.0, 100.000_001, -1e-9, 1e300, f64::NAN, f64::INFINITY])
            .prop_map(Value::Float),
        2 => (-10.0f64..110.0).prop_map(Value::Float),
        1 => (-5i64..120).prop_map(Value::Integer),
    ]
}

fn text() -> impl Strategy<Value = Value> {
    prop_oneof![
        "[a-z-]{0,12}".prop_map(Value::Text),
        any::<String>().prop_map(Value::Text),
    ]
}

/// A value of any type.
fn any_value() -> impl Strategy<Value = Value> {
    let scalar = prop_oneof![
        any::<i64>().prop_map(Value::Integer),
        any::<f64>().prop_map(Value::Float),
        any::<bool>().prop_map(Value::Boolean),
        text(),
        Just(Value::Datetime),
    ];
    scalar.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            proptest::collection::vec(("[a-z_]{1,8}", inner), 0..3).prop_map(Value::Table),
        ]
    })
}

/// A value for the setting at `path` printed as `printed`: mostly of its own type, with
/// values worth trying; sometimes of any type.
fn setting_value(path: &str, printed: &toml::Value) -> BoxedStrategy<Value> {
    let own = match printed {
        toml::Value::Integer(value) => integer(*value).boxed(),
        toml::Value::Float(value) => float(*value).boxed(),
        toml::Value::Boolean(_) => any::<bool>().prop_map(Value::Boolean).boxed(),
        toml::Value::String(name) => {
            let mut names: Vec<String> =
                names_of(path).iter().map(|name| name.to_string()).collect();
            names.push(name.clone());
            let shouted: Vec<String> = names.iter().map(|name| name.to_uppercase()).collect();
            prop_oneof![
                6 => select(names).prop_map(Value::Text),
                1 => select(shouted).prop_map(Value::Text),
                1 => text(),
            ]
            .boxed()
        }
        toml::Value::Array(_) if path == THRESHOLDS => thresholds().boxed(),
        _ => any_value().boxed(),
    };
    prop_oneof![5 => own, 1 => any_value()].boxed()
}

/// The priority thresholds: an array of four (ordered or not), of another length, or a
/// table keyed by priority (in either case, or an unknown key).
fn thresholds() -> impl Strategy<Value = Value> {
    let percent = prop_oneof![3 => 1i64..=100, 1 => -5i64..120];
    prop_oneof![
        3 => proptest::collection::vec(1i64..=100, 4).prop_map(|mut percents| {
            percents.sort_unstable_by(|a, b| b.cmp(a));
            Value::Array(percents.into_iter().map(Value::Integer).collect())
        }),
        1 => proptest::collection::vec(percent.clone().prop_map(Value::Integer), 0..6)
            .prop_map(Value::Array),
        2 => proptest::collection::vec(
            (select(vec!["P0", "P1", "P2", "P3", "p2", "P4", "high"]), percent),
            0..4,
        )
        .prop_map(|entries| {
            let mut table: Vec<(String, Value)> = Vec::new();
            for (key, percent) in entries {
                if table.iter().all(|(other, _)| other != key) {
                    table.push((key.to_string(), Value::Integer(percent)));
                }
            }
            Value::Table(table)
        }),
    ]
}

/// A key no setting has: a known one misspelt, or a made-up one.
fn unknown_key(known: Vec<String>) -> impl Strategy<Value = String> {
    prop_oneof![
        (select(known), any::<Index>()).prop_map(|(key, at)| {
            let mut key: Vec<char> = key.chars().collect();
            let at = at.index(key.len());
            key.remove(at);
            key.into_iter().collect()
        }),
        "[a-z_]{1,10}",
    ]
}

/// One setting of the real key set with a value, as a dotted path.
fn setting(settings: &[(String, toml::Value)]) -> impl Strategy<Value = (Vec<String>, Value)> {
    let settings: Vec<(String, toml::Value)> = settings
        .iter()
        .filter(|(path, _)| !path.starts_with("tenants[]") && path != "profile")
        .cloned()
        .collect();
    select(settings).prop_flat_map(|(path, printed)| {
        let keys: Vec<String> = path.split('.').map(str::to_string).collect();
        setting_value(&path, &printed).prop_map(move |value| (keys.clone(), value))
    })
}

/// A key that is not a setting, somewhere in the tree (at the root, in a section, or as a
/// section of its own).
fn unknown_entry(
    settings: &[(String, toml::Value)],
) -> impl Strategy<Value = (Vec<String>, Value)> {
    let sections: Vec<String> = settings
        .iter()
        .filter_map(|(path, _)| {
            path.rsplit_once('.')
                .map(|(section, _)| section.to_string())
        })
        .filter(|section| !section.starts_with("tenants"))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let known: Vec<String> = settings
        .iter()
        .map(|(path, _)| path.rsplit('.').next().unwrap().to_string())
        .collect();
    (
        proptest::option::of(select(sections)),
        unknown_key(known),
        any_value(),
    )
        .prop_map(|(section, key, value)| {
            let mut path: Vec<String> = section
                .map(|section| section.split('.').map(str::to_string).collect())
                .unwrap_or_default();
            path.push(key);
            (path, value)
        })
}

fn profile() -> impl Strategy<Value = Option<Value>> {
    proptest::option::weighted(
        0.7,
        prop_oneof![
            6 => select(names_of("profile").to_vec()).prop_map(|name| Value::Text(name.to_string())),
            1 => text(),
            1 => any_value(),
        ],
    )
}

fn tenant_table(settings: &[(String, toml::Value)]) -> impl Strategy<Value = Vec<(String, Value)>> {
    let keys: Vec<(String, toml::Value)> = settings
        .iter()
        .filter_map(|(path, printed)| {
            path.strip_prefix("tenants[].")
                .map(|key| (key.to_string(), printed.clone()))
        })
        .collect();
    let entry = select(keys).prop_flat_map(|(key, printed)| {
        let path = format!("tenants[].{key}");
        setting_value(&path, &printed).prop_map(move |value| (key.clone(), value))
    });
    (
        proptest::collection::vec(entry, 0..4),
        proptest::option::weighted(0.1, ("[a-z_]{1,8}", any_value())),
        0i64..5,
    )
        .prop_map(|(mut entries, unknown, tenant)| {
            // Most tenants name their id, a small one so that ids repeat now and then.
            if entries.iter().all(|(key, _)| key != "tenant") && tenant > 0 {
                entries.push(("tenant".to_string(), Value::Integer(tenant)));
            }
            entries.extend(unknown);
            let mut unique: Vec<(String, Value)> = Vec::new();
            for (key, value) in entries {
                unique.retain(|(other, _)| *other != key);
                unique.push((key, value));
            }
            unique
        })
}

fn document() -> impl Strategy<Value = Document> {
    let settings = settings();
    let sections: Vec<String> = ["wait", "rate", "caps", "breaker", "net"]
        .into_iter()
        .map(str::to_string)
        .collect();
    (
        profile(),
        proptest::collection::vec(setting(&settings), 0..10),
        proptest::option::weighted(0.15, unknown_entry(&settings)),
        proptest::option::weighted(
            0.4,
            prop_oneof![
                4 => proptest::collection::vec(tenant_table(&settings), 0..4).prop_map(Tenants::Tables),
                1 => proptest::collection::vec(tenant_table(&settings), 0..3).prop_map(|tables| {
                    Tenants::Inline(Value::Array(tables.into_iter().map(Value::Table).collect()))
                }),
                1 => any_value().prop_map(Tenants::Inline),
            ],
        ),
        proptest::collection::btree_set(select(sections), 0..2),
    )
        .prop_map(|(profile, mut entries, unknown, tenants, inline_sections)| {
            if let Some(profile) = profile {
                entries.insert(0, (vec!["profile".to_string()], profile));
            }
            entries.extend(unknown);
            Document {
                entries,
                tenants,
                inline_sections,
            }
        })
}

/// A path as the settings list spells it: tenant indexes as `[]`.
fn generic(path: &str) -> String {
    let mut out = String::new();
    let mut in_index = false;
    for character in path.chars() {
        match character {
            '[' => {
                in_index = true;
                out.push('[');
            }
            ']' => {
                in_index = false;
                out.push(']');
            }
            _ if in_index => {}
            character => out.push(character),
        }
    }
    out
}

/// Every key path in a TOML document: tables, keys, array items as `path[index]`.
fn paths_in(table: &toml::Table, prefix: &str, out: &mut BTreeSet<String>) {
    for (key, value) in table {
        let path = join(prefix, key);
        out.insert(path.clone());
        match value {
            toml::Value::Table(inner) => paths_in(inner, &path, out),
            toml::Value::Array(items) => {
                for (index, item) in items.iter().enumerate() {
                    let item_path = format!("{path}[{index}]");
                    out.insert(item_path.clone());
                    if let toml::Value::Table(inner) = item {
                        paths_in(inner, &item_path, out);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Whether `field` is `line L, column C` with `L` a line of `text`.
fn is_position(field: &str, text: &str) -> bool {
    let Some((line, column)) = field
        .strip_prefix("line ")
        .and_then(|rest| rest.split_once(", column "))
    else {
        return false;
    };
    match (line.parse::<usize>(), column.parse::<usize>()) {
        (Ok(line), Ok(column)) => line >= 1 && column >= 1 && line <= text.split('\n').count() + 1,
        _ => false,
    }
}

/// Whether every key of the dotted `field` (indexes aside) is written in `text`: the best
/// that can be said of a key path in text that does not parse.
fn is_key_path_of(field: &str, text: &str) -> bool {
    !field.is_empty()
        && generic(field)
            .split('.')
            .all(|key| text.contains(key.trim_end_matches("[]")))
}

/// The error names a key path that is a setting or is in the document.
fn names_a_key(
    error: &ConfigError,
    settings: &BTreeSet<String>,
    document: &BTreeSet<String>,
) -> bool {
    document.contains(&error.field) || settings.contains(&generic(&error.field))
}

/// The value of `path` in a printed configuration (an array item by `[index]`).
fn printed_at<'a>(printed: &'a toml::Table, path: &[String]) -> Option<&'a toml::Value> {
    let (first, rest) = path.split_first()?;
    let mut value = printed.get(first)?;
    for key in rest {
        value = match key.parse::<usize>() {
            Ok(index) => value.as_array()?.get(index)?,
            Err(_) => value.as_table()?.get(key)?,
        };
    }
    Some(value)
}

/// Every value the document gives is the loaded configuration's, as printed.
fn values_taken(
    given: &toml::Table,
    printed: &toml::Table,
    prefix: &mut Vec<String>,
) -> Result<(), TestCaseError> {
    for (key, value) in given {
        prefix.push(key.clone());
        match value {
            toml::Value::Table(inner) if prefix.join(".") == THRESHOLDS => {
                // The table form: keys name priorities (either case), printed as an array.
                for (priority, percent) in inner {
                    let index = ["p0", "p1", "p2", "p3"]
                        .iter()
                        .position(|name| name.eq_ignore_ascii_case(priority));
                    prop_assert!(index.is_some(), "{} accepted in {}", priority, THRESHOLDS);
                    prefix.push(index.unwrap().to_string());
                    prop_assert_eq!(printed_at(printed, prefix), Some(percent), "{:?}", prefix);
                    prefix.pop();
                }
            }
            toml::Value::Table(inner) => values_taken(inner, printed, prefix)?,
            toml::Value::Array(items) if items.iter().any(toml::Value::is_table) => {
                let printed_items = printed_at(printed, prefix).and_then(toml::Value::as_array);
                prop_assert_eq!(
                    printed_items.map(Vec::len),
                    Some(items.len()),
                    "{:?}",
                    prefix
                );
                for (index, item) in items.iter().enumerate() {
                    prefix.push(index.to_string());
                    let item = item.as_table();
                    prop_assert!(item.is_some(), "a non-table item accepted in {:?}", prefix);
                    values_taken(item.unwrap(), printed, prefix)?;
                    prefix.pop();
                }
            }
            given_value => {
                let printed_value = printed_at(printed, prefix);
                let same = match (given_value, printed_value) {
                    // An integer given for a number is printed as a float.
                    (toml::Value::Integer(given), Some(toml::Value::Float(printed))) => {
                        *given as f64 == *printed
                    }
                    (given, printed) => Some(given) == printed,
                };
                prop_assert!(
                    same,
                    "{:?}: gave {:?}, loaded {:?}",
                    prefix,
                    given_value,
                    printed_value
                );
            }
        }
        prefix.pop();
    }
    Ok(())
}

/// The properties, for one text.
fn check(text: &str, settings: &BTreeSet<String>) -> Result<(), TestCaseError> {
    let parsed = toml::from_str::<toml::Table>(text);
    match Config::from_toml_str(text) {
        Ok(config) => {
            let given = match parsed {
                Ok(given) => given,
                Err(error) => {
                    return Err(TestCaseError::fail(format!(
                        "accepted text that is not TOML ({error}): {text:?}"
                    )))
                }
            };
            prop_assert_eq!(config.validate(), Ok(()));
            let printed_text = config.to_toml_string();
            prop_assert_eq!(
                Config::from_toml_str(&printed_text),
                Ok(config),
                "{}",
                printed_text
            );
            let printed: toml::Table = toml::from_str(&printed_text).unwrap();
            values_taken(&given, &printed, &mut Vec::new())?;
        }
        Err(error) => {
            prop_assert!(
                error.to_string().starts_with(&error.field),
                "the message does not start with the field: {}",
                error
            );
            match parsed {
                Ok(given) => {
                    let mut paths = BTreeSet::new();
                    paths_in(&given, "", &mut paths);
                    prop_assert!(
                        names_a_key(&error, settings, &paths),
                        "{:?} names no key of the document or setting; document:\n{}",
                        error,
                        text
                    );
                }
                Err(_) => {
                    // The loader's TOML reader checks some values only as it reads them, so
                    // an error in a key it reads first may come before the syntax error.
                    prop_assert!(
                        is_position(&error.field, text) || is_key_path_of(&error.field, text),
                        "{:?} for text that is not TOML names no position or key in it; text:\n{}",
                        error,
                        text
                    );
                }
            }
        }
    }
    Ok(())
}

/// The settings' paths as errors name them: the printed ones (and the sections holding
/// them), the thresholds' priorities.
fn setting_paths() -> &'static BTreeSet<String> {
    static PATHS: OnceLock<BTreeSet<String>> = OnceLock::new();
    PATHS.get_or_init(|| {
        let mut paths = BTreeSet::new();
        for (path, _) in settings() {
            let mut prefix = String::new();
            for part in path.split('.') {
                prefix = join(&prefix, part);
                paths.insert(prefix.clone());
            }
        }
        for priority in ["P0", "P1", "P2", "P3"] {
            paths.insert(format!("{THRESHOLDS}.{priority}"));
        }
        paths.insert("tenants".to_string());
        paths
    })
}

proptest! {
    #![proptest_config(fuzz_support::config(regressions_file!("fuzz_config")))]

    #[test]
    fn documents_load_or_name_the_key_at_fault(
        document in document(),
        damage in proptest::option::weighted(0.2, damage()),
    ) {
        let mut text = document.render();
        if let Some(damage) = damage {
            text = apply(&text, &damage);
        }
        check(&text, setting_paths())?;
    }

    #[test]
    fn damaged_shipped_profiles_load_or_name_the_place_at_fault(
        shipped in select(SHIPPED.to_vec()),
        damage in damage(),
    ) {
        check(&apply(shipped, &damage), setting_paths())?;
    }
}
