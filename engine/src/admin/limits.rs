//! Run-time limits (`PUT /limits`) and live reloads: what can change without a restart,
//! validated as a whole before any of it is applied.
//!
//! Live: the role caps (`caps.role_messages`), the caps' per-priority thresholds
//! (`caps.priority_threshold_percent`), the per-connection rate
//! (`rate.per_connection_per_sec`, for every connection and those that come later), a
//! configured tenant's aggregate cap (`tenants[].max_pending`), egress flow control but
//! for the buffer's size (by reload, through the TCP server), and one connection's cap
//! or rate, or every connection of a tenant's rate (run-time only, not in a file).
//! Everything else needs a restart: a reload that changes it is refused, naming each such
//! setting, and nothing is applied.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{priority_thresholds_out_of_order, Config, EgressConfig};
use crate::control::{Control, Limit, RateTarget};
use crate::message::{ConnectionId, Role, TenantId};
use crate::net::server::TcpServer;

/// The body of `PUT /limits`: every field optional.
///
/// ```
/// let request: spillway::admin::limits::LimitsRequest = serde_json::from_str(r#"{
///     "role_messages": { "session": 5000 },
///     "rate_per_connection_per_sec": 2000,
///     "tenants": [ { "tenant": 7, "max_pending": 100, "rate_per_sec": 500 } ],
///     "connections": [ { "connection": 12, "max_pending": 10 } ]
/// }"#).unwrap();
/// assert_eq!(request.role_messages["session"], 5000);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsRequest {
    /// Role name (`session`, `sse`, `task_worker`, ...) to its pending-message cap, on
    /// every shard.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub role_messages: BTreeMap<String, u32>,
    /// Every connection's rate, messages per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_per_connection_per_sec: Option<u32>,
    /// The caps' per-priority thresholds, percent for P0 to P3 (each 1 to 100, none above
    /// the one before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_threshold_percent: Option<[u32; 4]>,
    /// Per tenant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tenants: Vec<TenantLimits>,
    /// Per connection.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub connections: Vec<ConnectionLimits>,
}

/// A tenant's limits in a [`LimitsRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantLimits {
    /// The tenant.
    pub tenant: u32,
    /// Its aggregate cap (the tenant must be configured in `[[tenants]]`; a reload can
    /// also remove a cap, by leaving it out of the file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending: Option<u32>,
    /// The rate of each of its connections, messages per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_per_sec: Option<u32>,
}

/// A connection's limits in a [`LimitsRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionLimits {
    /// The connection.
    pub connection: u64,
    /// Its own pending-message cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending: Option<u32>,
    /// Its rate, messages per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_per_sec: Option<u32>,
}

/// Why limits were not applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    /// The request or file is invalid; nothing was applied.
    #[error("{0}")]
    Invalid(String),
    /// The control plane failed part way (a timeout, a stopped engine). The changes
    /// before the failing one were applied, and are recorded in the settings; the failing
    /// one may still apply later if its command was only slow (a timeout).
    #[error("{error}; applied before it: {}", if applied.is_empty() { "nothing".to_string() } else { applied.join(", ") })]
    Control {
        /// Why the change failed.
        error: String,
        /// The changes applied before it, in words.
        applied: Vec<String>,
    },
}

/// Sends `changes` in order, recording each in `config` as soon as its command succeeded:
/// on a failure part way, `config` says what is in force (but for the failing change).
fn send_all(
    changes: &[Change],
    control: &Control,
    net: Option<&TcpServer>,
    config: &mut Config,
) -> Result<Vec<String>, LimitsError> {
    let mut applied = Vec::with_capacity(changes.len());
    for change in changes {
        if let Err(error) = change.send(control, net) {
            return Err(LimitsError::Control { error, applied });
        }
        change.record(config);
        applied.push(change.describe());
    }
    Ok(applied)
}

/// Checks `request` against `config` (ranges, role names, configured tenants) and applies
/// it through `control`, updating `config` to match. Nothing is applied unless all of it is
/// valid. Returns the request as applied, as JSON.
///
/// # Errors
/// [`LimitsError::Invalid`] naming the first bad field; [`LimitsError::Control`] if a
/// command failed.
pub fn apply(
    control: &Control,
    config: &mut Config,
    request: &LimitsRequest,
) -> Result<Value, LimitsError> {
    let commands = plan(config, request)?;
    let applied = send_all(&commands, control, None, config)?;
    tracing::info!(target: "spillway::admin", changes = ?applied, "limits applied");
    serde_json::to_value(request).map_err(|error| LimitsError::Invalid(error.to_string()))
}

/// Reloads: applies what differs between `config` and `new` through `control` when all of
/// it can change live, and makes `config` the new settings; returns each change in words.
///
/// # Errors
/// [`LimitsError::Invalid`] naming every setting that differs and needs a restart (nothing
/// was applied); [`LimitsError::Control`] if a command failed.
pub fn reload(
    control: &Control,
    net: Option<&TcpServer>,
    config: &mut Config,
    new: &Config,
) -> Result<Vec<String>, LimitsError> {
    let changes = reload_changes(config, new)?;
    let described = send_all(&changes, control, net, config)?;
    // Everything else in `new` equals `config` already (or the reload was refused).
    *config = new.clone();
    tracing::info!(target: "spillway::admin", changes = ?described, "configuration reloaded");
    Ok(described)
}

/// What a reload of `old` to `new` changes live, or an error naming every setting it
/// changes that cannot change live.
fn reload_changes(old: &Config, new: &Config) -> Result<Vec<Change>, LimitsError> {
    let mut live_applied = new.clone();
    // Take every live setting from `old`: whatever still differs is not live.
    live_applied.caps.role_messages = old.caps.role_messages;
    live_applied.rate.per_connection_per_sec = old.rate.per_connection_per_sec;
    live_applied.caps.priority_threshold_percent = old.caps.priority_threshold_percent;
    // Egress flow control is live but for the buffer's size, which clients were told.
    live_applied.egress = EgressConfig {
        buffer_capacity: new.egress.buffer_capacity,
        buffer_bytes: new.egress.buffer_bytes,
        ..old.egress
    };
    let same_tenants = old.tenants.len() == new.tenants.len()
        && old
            .tenants
            .iter()
            .zip(&new.tenants)
            .all(|(a, b)| a.tenant == b.tenant);
    if same_tenants {
        for (tenant, before) in live_applied.tenants.iter_mut().zip(&old.tenants) {
            tenant.max_pending = before.max_pending;
        }
    }
    let mut not_live = Vec::new();
    differing_paths(
        "",
        &to_value(old)?,
        &to_value(&live_applied)?,
        &mut not_live,
    );
    if !not_live.is_empty() {
        return Err(LimitsError::Invalid(format!(
            "these settings cannot change without a restart: {}; nothing was applied",
            not_live.join(", ")
        )));
    }
    let mut changes = Vec::new();
    for role in Role::ALL {
        let cap = new.caps.role_messages[role.index()];
        if cap != old.caps.role_messages[role.index()] {
            changes.push(Change::Role(role, cap));
        }
    }
    if new.rate.per_connection_per_sec != old.rate.per_connection_per_sec {
        changes.push(Change::AllRates(new.rate.per_connection_per_sec));
    }
    if new.caps.priority_threshold_percent != old.caps.priority_threshold_percent {
        changes.push(Change::PriorityPercent(new.caps.priority_threshold_percent));
    }
    if new.egress != old.egress {
        changes.push(Change::Egress(new.egress));
    }
    for (tenant, before) in new.tenants.iter().zip(&old.tenants) {
        if tenant.max_pending != before.max_pending {
            changes.push(Change::TenantCap(tenant.tenant, tenant.max_pending));
        }
    }
    Ok(changes)
}

fn to_value(config: &Config) -> Result<Value, LimitsError> {
    serde_json::to_value(config).map_err(|error| LimitsError::Invalid(error.to_string()))
}

/// Appends the dotted path of every leaf where `a` and `b` differ.
fn differing_paths(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                differing_paths(&child, value, b.get(key).unwrap_or(&Value::Null), out);
            }
            for key in b.keys().filter(|key| !a.contains_key(*key)) {
                out.push(if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                });
            }
        }
        (a, b) if a != b => out.push(path.to_string()),
        _ => {}
    }
}

/// One validated change.
enum Change {
    Role(Role, u32),
    AllRates(u32),
    PriorityPercent([u32; 4]),
    Egress(EgressConfig),
    TenantCap(TenantId, Option<u32>),
    TenantRate(TenantId, u32),
    ConnectionCap(ConnectionId, u32),
    ConnectionRate(ConnectionId, u32),
}

impl Change {
    fn describe(&self) -> String {
        match *self {
            Change::Role(role, cap) => format!("caps.role_messages.{} = {cap}", role.name()),
            Change::AllRates(rate) => format!("rate.per_connection_per_sec = {rate}"),
            Change::PriorityPercent(percent) => {
                format!("caps.priority_threshold_percent = {percent:?}")
            }
            Change::Egress(egress) => format!(
                "egress: throttle at {}%, pause at {}%, drop policy {:?}",
                egress.throttle_percent, egress.pause_percent, egress.drop_policy
            ),
            Change::TenantCap(tenant, Some(cap)) => {
                format!("tenant {} max_pending = {cap}", tenant.0)
            }
            Change::TenantCap(tenant, None) => format!("tenant {} max_pending = none", tenant.0),
            Change::TenantRate(tenant, rate) => {
                format!("tenant {} rate_per_sec = {rate}", tenant.0)
            }
            Change::ConnectionCap(connection, cap) => {
                format!("connection {} max_pending = {cap}", connection.0)
            }
            Change::ConnectionRate(connection, rate) => {
                format!("connection {} rate_per_sec = {rate}", connection.0)
            }
        }
    }

    fn send(&self, control: &Control, net: Option<&TcpServer>) -> Result<(), String> {
        let result = match *self {
            // Without a TCP front end nothing reads the egress settings: recorded only.
            Change::Egress(egress) => {
                return match net {
                    Some(server) => server.set_egress(egress).map_err(|error| error.to_string()),
                    None => Ok(()),
                }
            }
            Change::Role(role, max_pending) => control.set_limit(Limit::Role { role, max_pending }),
            Change::AllRates(rate) => control.set_rate(RateTarget::AllConnections, rate),
            Change::PriorityPercent(percent) => {
                control.set_limit(Limit::PriorityThresholds { percent })
            }
            Change::TenantCap(tenant, max_pending) => control.set_limit(Limit::Tenant {
                tenant,
                max_pending,
            }),
            Change::TenantRate(tenant, rate) => control.set_rate(RateTarget::Tenant(tenant), rate),
            Change::ConnectionCap(connection, max_pending) => {
                control.set_limit(Limit::Connection {
                    connection,
                    max_pending,
                })
            }
            Change::ConnectionRate(connection, rate) => {
                control.set_rate(RateTarget::Connection(connection), rate)
            }
        };
        result.map_err(|error| error.to_string())
    }

    /// Writes the change into the settings `GET /config` shows (run-time-only changes,
    /// for one connection or a tenant's rate, have no place there).
    fn record(&self, config: &mut Config) {
        match *self {
            Change::Role(role, cap) => config.caps.role_messages[role.index()] = cap,
            Change::AllRates(rate) => config.rate.per_connection_per_sec = rate,
            Change::PriorityPercent(percent) => config.caps.priority_threshold_percent = percent,
            Change::Egress(egress) => config.egress = egress,
            Change::TenantCap(tenant, cap) => {
                if let Some(settings) = config.tenants.iter_mut().find(|t| t.tenant == tenant) {
                    settings.max_pending = cap;
                }
            }
            Change::TenantRate(..) | Change::ConnectionCap(..) | Change::ConnectionRate(..) => {}
        }
    }
}

/// Validates all of `request`; the changes in request order.
fn plan(config: &Config, request: &LimitsRequest) -> Result<Vec<Change>, LimitsError> {
    use crate::config::range::{CAP_MESSAGES, RATE_PER_SEC, TENANT_PENDING};
    let invalid = |field: String, allowed: String, got: String| {
        LimitsError::Invalid(format!("{field} must be {allowed}, got {got}"))
    };
    let check = |field: String, value: u32, range: &core::ops::RangeInclusive<u32>| {
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(invalid(
                field,
                format!("in {}..={}", range.start(), range.end()),
                value.to_string(),
            ))
        }
    };
    let mut changes = Vec::new();
    for (name, &cap) in &request.role_messages {
        let role = Role::ALL
            .into_iter()
            .find(|role| role.name() == name)
            .ok_or_else(|| {
                let names: Vec<_> = Role::ALL.iter().map(|role| role.name()).collect();
                invalid(
                    "role_messages".to_string(),
                    format!("keyed by a role ({})", names.join(", ")),
                    format!("{name:?}"),
                )
            })?;
        changes.push(Change::Role(
            role,
            check(format!("role_messages.{name}"), cap, &CAP_MESSAGES)?,
        ));
    }
    if let Some(rate) = request.rate_per_connection_per_sec {
        changes.push(Change::AllRates(check(
            "rate_per_connection_per_sec".to_string(),
            rate,
            &RATE_PER_SEC,
        )?));
    }
    if let Some(percent) = request.priority_threshold_percent {
        if let Some((priority, allowed)) = priority_thresholds_out_of_order(&percent) {
            return Err(invalid(
                format!("priority_threshold_percent[{}]", priority.index()),
                format!("in {allowed:?} (at most the priority before)"),
                percent[priority.index()].to_string(),
            ));
        }
        changes.push(Change::PriorityPercent(percent));
    }
    for (index, tenant) in request.tenants.iter().enumerate() {
        let id = TenantId(tenant.tenant);
        if let Some(cap) = tenant.max_pending {
            if config.tenant(id).is_none() {
                return Err(invalid(
                    format!("tenants[{index}].tenant"),
                    "a tenant configured in [[tenants]] to change its cap".to_string(),
                    tenant.tenant.to_string(),
                ));
            }
            let cap = check(
                format!("tenants[{index}].max_pending"),
                cap,
                &TENANT_PENDING,
            )?;
            changes.push(Change::TenantCap(id, Some(cap)));
        }
        if let Some(rate) = tenant.rate_per_sec {
            let rate = check(
                format!("tenants[{index}].rate_per_sec"),
                rate,
                &RATE_PER_SEC,
            )?;
            changes.push(Change::TenantRate(id, rate));
        }
    }
    for (index, connection) in request.connections.iter().enumerate() {
        let id = ConnectionId(connection.connection);
        if let Some(cap) = connection.max_pending {
            let cap = check(
                format!("connections[{index}].max_pending"),
                cap,
                &CAP_MESSAGES,
            )?;
            changes.push(Change::ConnectionCap(id, cap));
        }
        if let Some(rate) = connection.rate_per_sec {
            let rate = check(
                format!("connections[{index}].rate_per_sec"),
                rate,
                &RATE_PER_SEC,
            )?;
            changes.push(Change::ConnectionRate(id, rate));
        }
    }
    Ok(changes)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_reload_names_every_setting_that_needs_a_restart() {
        let old = Config::default();
        let mut new = old.clone();
        new.shards = old.shards + 3;
        new.net.max_connections = 7;
        new.caps.role_messages[0] = 123;
        let error = reload_changes(&old, &new).err().unwrap().to_string();
        assert!(error.contains("shards"), "{error}");
        assert!(error.contains("net.max_connections"), "{error}");
        assert!(!error.contains("role_messages"), "{error}");
    }

    #[test]
    fn a_live_reload_lists_only_what_changed() {
        let old = Config::default();
        let mut new = old.clone();
        new.caps.role_messages[Role::Sse.index()] = 77;
        new.rate.per_connection_per_sec = 4321;
        let changes: Vec<String> = reload_changes(&old, &new)
            .unwrap()
            .iter()
            .map(Change::describe)
            .collect();
        assert_eq!(
            changes,
            [
                format!("caps.role_messages.{} = 77", Role::Sse.name()),
                "rate.per_connection_per_sec = 4321".to_string()
            ]
        );
    }

    #[test]
    fn bad_limits_are_refused_whole() {
        let config = Config::default();
        let request = LimitsRequest {
            role_messages: [("session".to_string(), 10), ("nope".to_string(), 10)]
                .into_iter()
                .collect(),
            ..LimitsRequest::default()
        };
        let error = plan(&config, &request).err().unwrap().to_string();
        assert!(error.contains("\"nope\""), "{error}");
        let request = LimitsRequest {
            tenants: vec![TenantLimits {
                tenant: 9,
                max_pending: Some(5),
                rate_per_sec: None,
            }],
            ..LimitsRequest::default()
        };
        let error = plan(&config, &request).err().unwrap().to_string();
        assert!(error.contains("tenants[0].tenant"), "{error}");
        let request = LimitsRequest {
            rate_per_connection_per_sec: Some(0),
            ..LimitsRequest::default()
        };
        let error = plan(&config, &request).err().unwrap().to_string();
        assert!(error.contains("rate_per_connection_per_sec"), "{error}");
    }
}
