//! The TOML form of [`Config`]: [`Config::from_toml_str`], [`Config::from_toml_file`],
//! [`Config::to_toml_string`], and the serde forms of the settings whose file form is not
//! their type's. `config/production.toml` in the repository shows every key.
//!
//! A file is read into a value tree, and so is the profile it names (production when it
//! names none); the file's tree is laid over the profile's, and the result deserialized into
//! `Config` and validated. Every error is a [`ConfigError`] whose `field` is the dotted path
//! of the key (with `[index]` in the tenant list, from `serde_path_to_error`): an unknown
//! key, a value of the wrong type, an unknown name and an out-of-range number alike. Text
//! that is not TOML at all is an error at `line L, column C`.

use core::fmt;
use core::ops::{Range, RangeInclusive};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::{self, DeserializeOwned, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_path_to_error::Segment;
use serde_value::{DeserializerError, Value};

use super::{range, span, Config, ConfigError, Profile, WaitStrategy};
use crate::message::{Priority, Role, TenantId};

/// Why a configuration file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigLoadError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but a setting in it is invalid (or it is not TOML).
    #[error(transparent)]
    Config(#[from] ConfigError),
}

impl Config {
    /// The settings of `profile`: production's ([`Config::default`]) with the profile's
    /// shipped file (see [`Profile`]) laid over them, as [`Config::from_toml_str`] lays a file
    /// over a profile.
    pub fn for_profile(profile: Profile) -> Config {
        deserialize(profile_tree(profile)).expect("the shipped profile files are valid")
    }

    /// Reads settings from TOML text: the profile it names (production by default), with
    /// each key present overriding that setting; then validates the result.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let mut file = parse(text)?;
        let ProfileKey { profile } = deserialize(file.clone())?;
        let mut tree = profile_tree(profile);
        thresholds_as_table(&mut file)?;
        arrays_are_not_tables(&tree, &file, "")?;
        lay_over(&mut tree, file);
        let config: Config = deserialize(tree)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads settings from the TOML file at `path` (see [`Config::from_toml_str`]).
    pub fn from_toml_file(path: &Path) -> Result<Config, ConfigLoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigLoadError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Config::from_toml_str(&text)?)
    }

    /// Every setting as TOML, in the layout [`Config::from_toml_str`] reads, which parses it
    /// back to an equal `Config`. Tenants without a cap print no `max_pending`.
    pub fn to_toml_string(&self) -> String {
        toml::to_string(self).expect("a Config always serializes to TOML")
    }
}

/// The one key read before the rest: which profile the file's keys override.
#[derive(Deserialize)]
pub(super) struct ProfileKey {
    #[serde(default)]
    pub(super) profile: Profile,
}

/// The value tree of `profile`'s settings: production's shipped file, which gives every
/// setting, with the profile's laid over it.
fn profile_tree(profile: Profile) -> Value {
    let mut tree = shipped_tree(Profile::Production);
    lay_over(&mut tree, shipped_tree(profile));
    tree
}

/// The value tree of `config/NAME.toml` at the repository's root, built in so that those
/// files are the one place where a profile's settings are written. The path leaves the
/// crate's directory: the crate builds inside this repository only.
fn shipped_tree(profile: Profile) -> Value {
    let text = match profile {
        Profile::Development => include_str!("../../../config/development.toml"),
        Profile::Staging => include_str!("../../../config/staging.toml"),
        Profile::Production => include_str!("../../../config/production.toml"),
        Profile::HighThroughput => include_str!("../../../config/high-throughput.toml"),
    };
    let mut tree = parse(text).expect("the shipped files are TOML");
    thresholds_as_table(&mut tree).expect("the shipped files give 4 thresholds");
    tree
}

/// The file's value tree. An integer too big for TOML (past 64 bits) is named by its key.
/// A date or time (no setting takes one) becomes its text, so that it is a value of the
/// wrong type where it stands, not a table with `toml`'s private key in it.
fn parse(text: &str) -> Result<Value, ConfigError> {
    let document = toml::de::Deserializer::parse(text).map_err(|error| ConfigError {
        field: position(text, error.span()),
        allowed: "TOML syntax".to_string(),
        got: error.message().to_string(),
    })?;
    let mut tree = serde_path_to_error::deserialize(document).map_err(|error| ConfigError {
        field: error.path().to_string(),
        allowed: "64-bit integers".to_string(),
        got: match error.inner().span().and_then(|span| text.get(span)) {
            Some(number) => format!("integer `{number}`"),
            None => error.inner().message().to_string(),
        },
    })?;
    datetimes_as_text(&mut tree);
    Ok(tree)
}

/// How `toml` hands a date or time to serde: a table with this one key.
const TOML_DATETIME_KEY: &str = "$__toml_private_datetime";

fn datetimes_as_text(value: &mut Value) {
    match value {
        Value::Map(map) => {
            let datetime = match map.iter().next() {
                Some((Value::String(key), Value::String(text)))
                    if map.len() == 1 && key == TOML_DATETIME_KEY =>
                {
                    Some(text.clone())
                }
                _ => None,
            };
            match datetime {
                Some(text) => *value = Value::String(text),
                None => map.values_mut().for_each(datetimes_as_text),
            }
        }
        Value::Seq(items) => items.iter_mut().for_each(datetimes_as_text),
        _ => {}
    }
}

/// `line L, column C` (1-based) of where `span` starts, for text that is not TOML.
fn position(text: &str, span: Option<Range<usize>>) -> String {
    let Some(span) = span else {
        return "file".to_string();
    };
    let before = text.get(..span.start).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    format!("line {line}, column {column}")
}

/// The list of tenants, whose items are tables.
const TENANTS: &str = "tenants";
/// The key naming a [`WaitStrategy`]'s table.
const STRATEGY: &str = "strategy";
/// `caps.priority_threshold_percent`, which a file may give as an array or a table.
const THRESHOLDS: [&str; 2] = ["caps", "priority_threshold_percent"];

/// Lays the file's tree over the profile's: a table merges into the profile's key by key,
/// except a `[wait]` naming another strategy, which replaces the profile's (one strategy's
/// numbers mean nothing to another); any other value, an array such as `[[tenants]]`
/// included, replaces the profile's.
fn lay_over(base: &mut Value, file: Value) {
    match (base, file) {
        (Value::Map(base), Value::Map(file)) if !switches_strategy(base, &file) => {
            for (key, value) in file {
                match base.get_mut(&key) {
                    Some(slot) => lay_over(slot, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, file) => *base = file,
    }
}

/// serde takes an array for a struct (its fields in order), so a file's array where the
/// profile has a table (`rate = [...]`), or as a tenant (`tenants = [[0]]`), is refused here,
/// naming its key, before it could be read field by field.
fn arrays_are_not_tables(base: &Value, file: &Value, path: &str) -> Result<(), ConfigError> {
    let not_a_table = |path: String, items: &Vec<Value>| ConfigError {
        field: path,
        allowed: "tables".to_string(),
        got: format!("an array of {} values", items.len()),
    };
    let (Value::Map(base), Value::Map(file)) = (base, file) else {
        return Ok(());
    };
    for (key, value) in file {
        let Value::String(name) = key else { continue };
        let path = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}.{name}")
        };
        match (base.get(key), value) {
            (Some(Value::Map(_)), Value::Seq(items)) => return Err(not_a_table(path, items)),
            (Some(base), file) => arrays_are_not_tables(base, file, &path)?,
            (None, _) => {}
        }
        if name == TENANTS {
            if let Value::Seq(tenants) = value {
                for (index, tenant) in tenants.iter().enumerate() {
                    if let Value::Seq(items) = tenant {
                        return Err(not_a_table(format!("{path}[{index}]"), items));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Whether the file's table names a `strategy` other than the profile's.
fn switches_strategy(base: &BTreeMap<Value, Value>, file: &BTreeMap<Value, Value>) -> bool {
    let key = Value::String(STRATEGY.to_string());
    file.get(&key)
        .is_some_and(|named| base.get(&key) != Some(named))
}

/// Makes `caps.priority_threshold_percent` the table keyed `P0`..`P3` (an array of four
/// gives them in order; `p0`..`p3` are the same keys), so that a file's table overrides the
/// profile's thresholds priority by priority and an error names the priority.
fn thresholds_as_table(tree: &mut Value) -> Result<(), ConfigError> {
    let Some(thresholds) = THRESHOLDS.iter().try_fold(tree, |tree, key| match tree {
        Value::Map(table) => table.get_mut(&Value::String(key.to_string())),
        _ => None,
    }) else {
        return Ok(());
    };
    let name = |priority: Priority| Value::String(priority.to_string());
    *thresholds = match core::mem::replace(thresholds, Value::Unit) {
        Value::Seq(items) if items.len() == Priority::COUNT => {
            Value::Map(Priority::ALL.map(name).into_iter().zip(items).collect())
        }
        Value::Seq(items) => {
            return Err(ConfigError {
                field: THRESHOLDS.join("."),
                allowed: "arrays of 4 percentages (P0 to P3)".to_string(),
                got: format!("an array of {} values", items.len()),
            })
        }
        Value::Map(table) => Value::Map(
            table
                .into_iter()
                .map(|(key, value)| {
                    let priority = match &key {
                        Value::String(text) => Priority::ALL
                            .into_iter()
                            .find(|priority| text.eq_ignore_ascii_case(&priority.to_string())),
                        _ => None,
                    };
                    (priority.map_or(key, name), value)
                })
                .collect(),
        ),
        other => other,
    };
    Ok(())
}

/// Deserializes `tree`, naming the key of any error by its path.
pub(super) fn deserialize<T: DeserializeOwned>(tree: Value) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(tree).map_err(|error| {
        let path = error.path().clone();
        let (key, allowed, got) = match error.into_inner() {
            DeserializerError::InvalidType(got, expected) => {
                (None, kinds(&expected), got.to_unexpected().to_string())
            }
            DeserializerError::InvalidValue(got, expected) => {
                (None, expected, got.to_unexpected().to_string())
            }
            DeserializerError::InvalidLength(length, expected) => {
                (None, expected, format!("an array of {length} values"))
            }
            DeserializerError::UnknownVariant(name, names) => {
                (None, one_of(names), format!("{name:?}"))
            }
            DeserializerError::UnknownField(key, keys) => (
                Some(key),
                one_of(keys),
                "an unknown key".to_string(),
            ),
            // A profile gives every setting but a tenant's id, so that is the one missing.
            DeserializerError::MissingField(key) => (
                Some(key.to_string()),
                format!("{} (required)", span(&range::TENANT_ID)),
                "nothing".to_string(),
            ),
            other => (None, "a valid value".to_string(), other.to_string()),
        };
        // The path ends at an unknown key; a missing key, or a key refused after its table
        // was read, is named after the table's path (the root's is ".").
        let table = Some(path.to_string()).filter(|path| path != ".");
        let at_key = |key: &String| {
            matches!(path.iter().next_back(), Some(Segment::Map { key: last }) if last == key)
        };
        let field = match (table, key.filter(|key| !at_key(key))) {
            (Some(table), Some(key)) => format!("{table}.{key}"),
            (table, key) => table.or(key).unwrap_or_default(),
        };
        ConfigError {
            field,
            allowed,
            got,
        }
    })
}

/// `{a, b, c}`: the allowed values of a field that takes one of a few names or keys.
fn one_of(names: &[&str]) -> String {
    format!("{{{}}}", names.join(", "))
}

/// The kind of TOML value a serde visitor expects, in the words of the messages.
fn kinds(expected: &str) -> String {
    match expected {
        "a boolean" => "{true, false}",
        "f64" => "numbers",
        "i64" => "integers",
        // serde_value's words for an enum (a name, here).
        "string or map" => "strings",
        "a sequence" => "arrays",
        struct_name if struct_name.starts_with("struct ") => "tables",
        other => other,
    }
    .to_string()
}

/// An array setting that a file gives as a table with a key per element, `names[i]` for
/// element `i`, each a number within `range`.
struct Named<const N: usize> {
    names: &'static [&'static str; N],
    range: &'static RangeInclusive<u32>,
    expecting: &'static str,
}

impl<'de, const N: usize> Visitor<'de> for Named<N> {
    type Value = [u32; N];

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.expecting)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut table: A) -> Result<[u32; N], A::Error> {
        let mut values = [None; N];
        while let Some(key) = table.next_key::<String>()? {
            let Some(index) = self.names.iter().position(|name| *name == key) else {
                return Err(de::Error::unknown_field(&key, self.names));
            };
            values[index] = Some(table.next_value_seed(InRange(self.range))?);
        }
        let mut array = [0; N];
        for ((slot, value), name) in array.iter_mut().zip(values).zip(self.names) {
            *slot = value.ok_or_else(|| de::Error::missing_field(name))?;
        }
        Ok(array)
    }
}

/// A number of a `Named` table.
struct InRange(&'static RangeInclusive<u32>);

impl<'de> DeserializeSeed<'de> for InRange {
    type Value = u32;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<u32, D::Error> {
        range::fitting(deserializer, self.0)
    }
}

/// `caps.role_messages` as a table keyed by [`Role::name`].
pub(super) mod role_messages {
    use super::*;

    const ROLES: [&str; Role::COUNT] = {
        let mut names = [""; Role::COUNT];
        let mut index = 0;
        while index < Role::COUNT {
            names[index] = Role::ALL[index].name();
            index += 1;
        }
        names
    };

    pub(crate) fn serialize<S: Serializer>(
        caps: &[u32; Role::COUNT],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_map(ROLES.iter().zip(caps))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<[u32; Role::COUNT], D::Error> {
        deserializer.deserialize_map(Named {
            names: &ROLES,
            range: &range::CAP_MESSAGES,
            expecting: "tables",
        })
    }
}

/// `caps.priority_threshold_percent`, printed as an array in P0..P3 order, read as the
/// table that [`thresholds_as_table`] makes of an array or a table.
pub(super) fn thresholds<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<[u32; Priority::COUNT], D::Error> {
    deserializer.deserialize_map(Named {
        names: &["P0", "P1", "P2", "P3"],
        range: &range::PERCENT,
        expecting: "arrays of 4 percentages (P0 to P3) and tables with keys P0 to P3",
    })
}

/// A tenant id: any `u32`.
#[derive(Serialize, Deserialize)]
#[serde(remote = "TenantId")]
pub(super) struct TenantIdNumber(#[serde(deserialize_with = "range::tenant_id")] u32);

/// A priority by its name, `P0` to `P3`.
#[derive(Serialize, Deserialize)]
#[serde(remote = "Priority")]
pub(super) enum PriorityName {
    P0,
    P1,
    P2,
    P3,
}

/// A tenant's priority ceiling when its table names none: P0, no ceiling.
pub(super) fn no_ceiling() -> Priority {
    Priority::P0
}

/// How a file gives a [`WaitStrategy`]: the `[wait]` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitTable {
    strategy: Strategy,
    #[serde(default, deserialize_with = "range::wait_iterations")]
    spin_iterations: Option<u32>,
    #[serde(default, deserialize_with = "range::wait_iterations")]
    yield_iterations: Option<u32>,
    #[serde(default, deserialize_with = "range::park_timeout_us")]
    park_timeout_us: Option<u32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Strategy {
    Adaptive,
    BusySpin,
    SpinThenYield,
    SpinThenPark,
}

/// The keys of the `[wait]` table, in order: each strategy takes the first one, two or
/// four of them.
static WAIT_KEYS: [&str; 4] = [
    STRATEGY,
    "spin_iterations",
    "yield_iterations",
    "park_timeout_us",
];

impl<'de> Deserialize<'de> for WaitStrategy {
    /// Numbers a file leaves out come from the profile when the file names the profile's
    /// strategy (the tables merge), else from what `Adaptive` uses for that strategy; a number the strategy does
    /// not take is an unknown key.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let table = WaitTable::deserialize(deserializer)?;
        let (spins, yields, park) = (
            table.spin_iterations,
            table.yield_iterations,
            table.park_timeout_us,
        );
        // A strategy's numbers a file leaves out are what `Adaptive` uses for it.
        let WaitStrategy::SpinThenYield {
            spin_iterations: yield_spins,
        } = WaitStrategy::ADAPTIVE_DEDICATED
        else {
            unreachable!("adaptive's dedicated strategy spins then yields")
        };
        let WaitStrategy::SpinThenPark {
            spin_iterations: park_spins,
            yield_iterations: park_yields,
            park_timeout_us,
        } = WaitStrategy::ADAPTIVE_OVERSUBSCRIBED
        else {
            unreachable!("adaptive's oversubscribed strategy parks")
        };
        let (strategy, keys_taken) = match table.strategy {
            Strategy::Adaptive => (WaitStrategy::Adaptive, 1),
            Strategy::BusySpin => (WaitStrategy::BusySpin, 1),
            Strategy::SpinThenYield => (
                WaitStrategy::SpinThenYield {
                    spin_iterations: spins.unwrap_or(yield_spins),
                },
                2,
            ),
            Strategy::SpinThenPark => (
                WaitStrategy::SpinThenPark {
                    spin_iterations: spins.unwrap_or(park_spins),
                    yield_iterations: yields.unwrap_or(park_yields),
                    park_timeout_us: park.unwrap_or(park_timeout_us),
                },
                4,
            ),
        };
        // Whether each of WAIT_KEYS is in the table (`strategy` always is).
        let given = [true, spins.is_some(), yields.is_some(), park.is_some()];
        let taken = &WAIT_KEYS[..keys_taken];
        if let Some(extra) = (keys_taken..WAIT_KEYS.len()).find(|&index| given[index]) {
            return Err(de::Error::unknown_field(WAIT_KEYS[extra], taken));
        }
        Ok(strategy)
    }
}
