//! Fleet-wide tenant quotas (issue 16): the `[global]` section of [`Config`](super::Config).
//! The quotas themselves are [`admission::global`](crate::admission::global) (what the
//! shards charge) and [`global`](crate::global) (the leases kept in Redis).

use serde::de::Deserializer;
use serde::{Deserialize, Serialize};

use super::{check, file, no_tenant_twice, range, ConfigError};
use crate::message::TenantId;

/// What a process does with a tenant's fleet-wide quota while Redis cannot be reached (or
/// before its first lease).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnUnavailable {
    /// Apply the tenant's local fallback rates (`fallback_rate_per_sec`,
    /// `fallback_bytes_per_sec`) in this process alone; with none set, no tenant-wide rate
    /// applies here (every other level still does).
    #[default]
    Local,
    /// Refuse the tenant's messages (`global_quota_unavailable`) until a lease is had again.
    Refuse,
}

/// The `[global]` section: the Redis servers that keep the leases, the lease timing, and
/// each tenant's fleet-wide rates. Off while `redis` or `tenants` is empty.
///
/// ```
/// let config = spillway::config::Config::from_toml_str(
///     r#"
///     [global]
///     redis = "redis://127.0.0.1:6379"
///     on_unavailable = "refuse"
///     [[global.tenants]]
///     tenant = 7
///     rate_per_sec = 50000
///     "#,
/// )
/// .unwrap();
/// assert!(config.global.enabled());
/// assert_eq!(config.global.tenants[0].rate_per_sec, 50_000);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalConfig {
    /// Redis URLs (`redis://HOST:PORT[/DB]`), one or a list. Standalone servers (`cluster =
    /// false`): a tenant's leases live on `redis[tenant % len]`, so every process of a fleet
    /// lists the same URLs in the same order. Empty: fleet quotas off.
    #[serde(deserialize_with = "one_or_many")]
    pub redis: Vec<String>,
    /// `redis` lists seed nodes of one Redis Cluster (any of its primaries or replicas)
    /// instead of standalone servers: each tenant's leases live on the node that owns the
    /// slot of its key (hash-tagged `{tenant:ID}`), and the client follows the cluster's
    /// `MOVED` and `ASK` redirections.
    pub cluster: bool,
    /// What happens to a tenant's messages while its quota cannot be checked.
    pub on_unavailable: OnUnavailable,
    /// How often each tenant's lease is renewed, in ns (80 ms: one Redis call per tenant and
    /// process every 80 ms, and Redis's loss noticed within that). 10 ms to 10 s.
    #[serde(deserialize_with = "range::global_refresh_ns")]
    pub refresh_ns: u64,
    /// How long a lease holds, in ns; a process that stops renewing (a dead one) gives its
    /// share back after this. At least 2 x `refresh_ns`, at most 1 min.
    #[serde(deserialize_with = "range::global_lease_ns")]
    pub lease_ns: u64,
    /// The longest wait for Redis (connect, write, read), in ns; longer is a failure and
    /// the fallback applies. 1 ms to 10 s.
    #[serde(deserialize_with = "range::global_timeout_ns")]
    pub timeout_ns: u64,
    /// The burst a process may admit at once out of its share: its share's worth of this
    /// many ns. The fleet admits at most `rate x (t + burst_ns)` in any `t`. 1 ms to 10 s.
    #[serde(deserialize_with = "range::global_burst_ns")]
    pub burst_ns: u64,
    /// The longest pause between reconnect attempts while Redis is unavailable, in ns
    /// (attempts back off from `refresh_ns` with full jitter up to this). 1 ms to 1 min.
    #[serde(deserialize_with = "range::global_backoff_ns")]
    pub reconnect_backoff_max_ns: u64,
    /// This process's name in the lease hash; absent: `HOSTNAME-PID-START`, unique per run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<String>,
    /// The tenants with fleet-wide rates; one `[[global.tenants]]` table each.
    #[serde(default)]
    pub tenants: Vec<GlobalTenantConfig>,
}

/// One tenant's fleet-wide rates, one `[[global.tenants]]` table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalTenantConfig {
    /// Which tenant.
    #[serde(with = "file::TenantIdNumber")]
    pub tenant: TenantId,
    /// Messages per second across the fleet. 1 to 1e9.
    #[serde(deserialize_with = "range::rate_per_sec")]
    pub rate_per_sec: u32,
    /// Payload bytes per second across the fleet; absent: no byte rate. 1 to 2^32 - 1.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "range::global_bytes_per_sec"
    )]
    pub bytes_per_sec: Option<u32>,
    /// Messages of the tenant pending at once across the fleet (a cap, shared like the
    /// rates: each process holds a share of it as its own tenant cap); absent: none.
    /// 1 to 2^30.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "range::tenant_pending"
    )]
    pub max_pending: Option<u32>,
    /// With `on_unavailable = "local"`: this process's own cap on the tenant's pending
    /// messages while Redis is unavailable; absent: only its `[[tenants]]` cap, if any.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "range::tenant_pending"
    )]
    pub fallback_max_pending: Option<u32>,
    /// With `on_unavailable = "local"`: this process's own message rate for the tenant while
    /// Redis is unavailable; absent: none.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "range::rate_per_sec"
    )]
    pub fallback_rate_per_sec: Option<u32>,
    /// With `on_unavailable = "local"`: this process's own byte rate for the tenant while
    /// Redis is unavailable; absent: none.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "range::global_bytes_per_sec"
    )]
    pub fallback_bytes_per_sec: Option<u32>,
}

impl GlobalTenantConfig {
    /// A tenant with a fleet-wide message rate and nothing else.
    pub const fn new(tenant: TenantId, rate_per_sec: u32) -> Self {
        Self {
            tenant,
            rate_per_sec,
            bytes_per_sec: None,
            max_pending: None,
            fallback_max_pending: None,
            fallback_rate_per_sec: None,
            fallback_bytes_per_sec: None,
        }
    }
}

impl GlobalConfig {
    /// Whether fleet quotas are on: a Redis URL and at least one tenant.
    pub fn enabled(&self) -> bool {
        !self.redis.is_empty() && !self.tenants.is_empty()
    }

    /// The tenant's fleet-wide settings, if it has any.
    pub fn tenant(&self, tenant: TenantId) -> Option<&GlobalTenantConfig> {
        self.tenants.iter().find(|config| config.tenant == tenant)
    }

    /// Checks every field against its range; the first bad one is named (`global.FIELD`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_fields!(self, "global.";
            refresh_ns in range::GLOBAL_REFRESH_NS;
            lease_ns in self.refresh_ns.saturating_mul(2)..=*range::GLOBAL_LEASE_NS.end();
            timeout_ns in range::GLOBAL_TIMEOUT_NS;
            burst_ns in range::GLOBAL_BURST_NS;
            reconnect_backoff_max_ns in range::GLOBAL_BACKOFF_NS;
        );
        for (index, url) in self.redis.iter().enumerate() {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return Err(ConfigError {
                    field: format!("global.redis[{index}]"),
                    allowed: "redis://HOST:PORT[/DB] or rediss://...".to_string(),
                    got: format!("{url:?}"),
                });
            }
        }
        if let Some(process) = &self.process {
            if process.is_empty() || process.len() > 200 || process.contains(':') {
                return Err(ConfigError {
                    field: "global.process".to_string(),
                    allowed: "1 to 200 bytes without ':'".to_string(),
                    got: format!("{process:?}"),
                });
            }
        }
        for (index, tenant) in self.tenants.iter().enumerate() {
            check(
                &format!("global.tenants[{index}].rate_per_sec"),
                tenant.rate_per_sec,
                range::RATE_PER_SEC,
            )?;
            for (name, cap) in [
                ("max_pending", tenant.max_pending),
                ("fallback_max_pending", tenant.fallback_max_pending),
            ] {
                if let Some(cap) = cap {
                    check(
                        &format!("global.tenants[{index}].{name}"),
                        cap,
                        range::TENANT_PENDING,
                    )?;
                }
            }
        }
        no_tenant_twice(
            "global.tenants",
            &self
                .tenants
                .iter()
                .map(|tenant| tenant.tenant)
                .collect::<Vec<_>>(),
        )
    }
}

/// `redis = "URL"` or `redis = ["URL", ...]`.
fn one_or_many<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged, expecting = "a Redis URL or a list of them")]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(url) => vec![url],
        OneOrMany::Many(urls) => urls,
    })
}
