//! Fleet-wide tenant rates as the shards see them (`[global]`, issue 16): for each tenant
//! with a fleet-wide rate, this process's share of it in an atomic token bucket that every
//! shard charges, and what to do when no share is known.
//!
//! The share comes from a lease kept in Redis ([`crate::global`]): the lease thread renews
//! it every `refresh_ns` and sets the bucket's rate to the share granted; the shards never
//! wait on Redis. Each shard also tallies what the tenant *offered* here (every message that
//! reached this check, admitted or not), which is the demand the next lease asks for.
//!
//! # Overshoot
//! The shares granted by Redis never add up to more than the fleet's rate (the lease
//! script's rule, [`crate::global::lease`]). Each process's bucket admits at most
//! `share x (t + burst_ns)` in any interval `t` (GCRA's bound, [`crate::bucket`]), so the
//! fleet admits at most `rate x (t + burst_ns)` while every process holds a lease, plus, at
//! a share's decrease, what the old share admits during one Redis round trip. A process in
//! its local fallback is bounded by its fallback rate alone.

use core::num::NonZeroU32;

use crossbeam_utils::CachePadded;

use crate::bucket::TokenBucket;
use crate::config::{GlobalConfig, GlobalTenantConfig, OnUnavailable};
use crate::message::TenantId;
use crate::sync::{AtomicU64, AtomicU8, Ordering};

use super::tenants::{TenantIndex, TenantTable};

/// How a tenant's fleet-wide rate applies right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum QuotaMode {
    /// A lease is held: the buckets run at the granted share.
    Leased = 0,
    /// A lease is held with a share of zero: every message is refused.
    Exhausted = 1,
    /// Redis is unavailable (or no lease yet) under `on_unavailable = "local"`: the buckets
    /// run at the tenant's fallback rates.
    Fallback = 2,
    /// As `Fallback`, for a tenant with no fallback rates: no tenant-wide rate applies.
    Open = 3,
    /// Redis is unavailable (or no lease yet) under `on_unavailable = "refuse"`.
    Refusing = 4,
}

impl QuotaMode {
    /// Every mode, in discriminant order.
    pub const ALL: [QuotaMode; 5] = [
        QuotaMode::Leased,
        QuotaMode::Exhausted,
        QuotaMode::Fallback,
        QuotaMode::Open,
        QuotaMode::Refusing,
    ];

    /// A stable snake_case name for reports and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            QuotaMode::Leased => "leased",
            QuotaMode::Exhausted => "exhausted",
            QuotaMode::Fallback => "fallback",
            QuotaMode::Open => "open",
            QuotaMode::Refusing => "refusing",
        }
    }

    /// Whether this mode means Redis could not be asked (health reports it degraded).
    pub const fn degraded(self) -> bool {
        matches!(
            self,
            QuotaMode::Fallback | QuotaMode::Open | QuotaMode::Refusing
        )
    }

    fn from_u8(value: u8) -> QuotaMode {
        QuotaMode::ALL[value as usize]
    }
}

/// Why [`GlobalQuotas::charge`] refused a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GlobalRefusal {
    /// The share (or the fallback rate) is used up; retry after this many ns.
    Exceeded {
        /// From the bucket that refused.
        retry_after_ns: u64,
    },
    /// No share can be had and the config says refuse; retry after this many ns.
    Unavailable {
        /// The lease thread's next attempt, roughly.
        retry_after_ns: u64,
    },
}

/// What offered demand a shard tallies per tenant: messages and payload bytes.
const TALLIES: usize = 2;

/// One tenant's fleet-wide rate in this process.
#[derive(Debug)]
pub struct TenantQuota {
    tenant: TenantId,
    config: GlobalTenantConfig,
    /// A [`QuotaMode`], set by the lease thread.
    mode: AtomicU8,
    messages: TokenBucket,
    bytes: Option<TokenBucket>,
    /// The share granted now (messages, bytes per second; 0 in the modes without a lease).
    share_per_sec: [AtomicU64; TALLIES],
    /// Per shard: messages and bytes that reached this check. One writer each (the shard),
    /// on its own cache line so shards do not share one.
    offered: Box<[CachePadded<[AtomicU64; TALLIES]>]>,
}

/// What the lease thread did, for health and `/metrics` (monotonic counts).
#[derive(Debug, Default)]
pub struct LeaseStats {
    /// Leases granted by Redis.
    pub granted: AtomicU64,
    /// Lease requests that failed (Redis unavailable, slow or refusing the script).
    pub failed: AtomicU64,
    /// Redis commands sent (lease scripts, script loads, releases).
    pub redis_operations: AtomicU64,
    /// Times a tenant went from a lease to its fallback.
    pub fallbacks: AtomicU64,
    /// Times a tenant went from its fallback back to a lease.
    pub recoveries: AtomicU64,
}

/// A snapshot of [`LeaseStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeaseFigures {
    /// Leases granted by Redis.
    pub granted: u64,
    /// Lease requests that failed.
    pub failed: u64,
    /// Redis commands sent.
    pub redis_operations: u64,
    /// Times a tenant went from a lease to its fallback.
    pub fallbacks: u64,
    /// Times a tenant went from its fallback back to a lease.
    pub recoveries: u64,
}

impl LeaseStats {
    /// The counts now.
    pub fn figures(&self) -> LeaseFigures {
        // Relaxed: independent monotonic counts, read for reports.
        LeaseFigures {
            granted: self.granted.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            redis_operations: self.redis_operations.load(Ordering::Relaxed),
            fallbacks: self.fallbacks.load(Ordering::Relaxed),
            recoveries: self.recoveries.load(Ordering::Relaxed),
        }
    }
}

/// Every tenant's fleet-wide rate in this process, indexed like the [`TenantTable`].
#[derive(Debug)]
pub struct GlobalQuotas {
    /// What the lease thread did.
    pub stats: LeaseStats,
    /// By [`TenantIndex::position`]; `None` for tenants without a fleet-wide rate.
    quotas: Box<[Option<TenantQuota>]>,
    on_unavailable: OnUnavailable,
    /// `[global] refresh_ns`: the retry hint of a refusal by a zero share.
    refresh_ns: u64,
    /// The retry hint of a `global_quota_unavailable` refusal, in ns (the lease thread's
    /// current backoff).
    unavailable_retry_ns: AtomicU64,
}

impl GlobalQuotas {
    /// The quotas of `config`'s tenants, for an engine with `shards` shards whose tenant
    /// table is `table` (which must list every tenant of `config.tenants`: see
    /// [`TenantTable::new`]). Until the first lease, each tenant is as if Redis were
    /// unavailable.
    pub fn new(config: &GlobalConfig, table: &TenantTable, shards: usize) -> Self {
        let mut quotas: Vec<Option<TenantQuota>> = (0..table.len()).map(|_| None).collect();
        if config.enabled() {
            for tenant in &config.tenants {
                let index = table
                    .find(tenant.tenant)
                    .expect("the tenant table lists every [global] tenant");
                quotas[index.position()] = Some(TenantQuota::new(tenant, config, shards));
            }
        }
        let quotas = Self {
            stats: LeaseStats::default(),
            quotas: quotas.into_boxed_slice(),
            on_unavailable: config.on_unavailable,
            refresh_ns: config.refresh_ns,
            unavailable_retry_ns: AtomicU64::new(config.refresh_ns),
        };
        for quota in quotas.iter() {
            quotas.fall_back(quota);
        }
        quotas
    }

    /// Whether any tenant has a fleet-wide rate.
    pub fn enabled(&self) -> bool {
        self.quotas.iter().any(Option::is_some)
    }

    /// Every tenant with a fleet-wide rate.
    pub fn iter(&self) -> impl Iterator<Item = &TenantQuota> {
        self.quotas.iter().flatten()
    }

    /// Charges one message of `payload_bytes` to its tenant's fleet-wide rate, from shard
    /// `shard`, at `now_ns`. Tenants without one pass at the cost of one branch.
    #[inline]
    pub fn charge(
        &self,
        shard: usize,
        tenant: Option<TenantIndex>,
        payload_bytes: u64,
        now_ns: u64,
    ) -> Result<(), GlobalRefusal> {
        let Some(quota) = tenant.and_then(|index| self.quotas[index.position()].as_ref()) else {
            return Ok(());
        };
        quota.tally(shard, payload_bytes);
        // Relaxed: the mode is a standalone setting; the lease thread sets a bucket's rate
        // before the mode that uses it, and a check that sees the new mode with the old
        // rate (or the reverse) is one that raced the change by a moment: the share it
        // charges was valid a lease earlier.
        match QuotaMode::from_u8(quota.mode.load(Ordering::Relaxed)) {
            QuotaMode::Open => Ok(()),
            QuotaMode::Refusing => Err(GlobalRefusal::Unavailable {
                // Relaxed: a hint.
                retry_after_ns: self.unavailable_retry_ns.load(Ordering::Relaxed),
            }),
            // A zero share may grow at the next renewal.
            QuotaMode::Exhausted => Err(GlobalRefusal::Exceeded {
                retry_after_ns: self.refresh_ns,
            }),
            QuotaMode::Leased | QuotaMode::Fallback => quota.take(payload_bytes, now_ns),
        }
    }

    /// Puts the tenant on its fallback (Redis unavailable or no lease yet): its fallback
    /// rates under `local`, refusal under `refuse`.
    pub fn fall_back(&self, quota: &TenantQuota) {
        let mode = match self.on_unavailable {
            OnUnavailable::Refuse => QuotaMode::Refusing,
            OnUnavailable::Local => {
                let messages = quota.config.fallback_rate_per_sec;
                let bytes = quota.config.fallback_bytes_per_sec;
                if messages.is_none() && bytes.is_none() {
                    QuotaMode::Open
                } else {
                    // A fallback for one of the two leaves the other unlimited here.
                    quota.set_rates(
                        messages.map_or(u64::from(u32::MAX), u64::from),
                        bytes.map_or(u64::from(u32::MAX), u64::from),
                    );
                    QuotaMode::Fallback
                }
            }
        };
        quota.share_per_sec[0].store(0, Ordering::Relaxed);
        quota.share_per_sec[1].store(0, Ordering::Relaxed);
        quota.set_mode(mode);
    }

    /// Sets the retry hint given with `global_quota_unavailable` refusals.
    pub fn set_unavailable_retry_ns(&self, retry_ns: u64) {
        // Relaxed: a hint, read on its own.
        self.unavailable_retry_ns.store(retry_ns, Ordering::Relaxed);
    }

    /// Whether any tenant's quota is on its fallback now (health says degraded).
    pub fn degraded(&self) -> bool {
        self.iter().any(|quota| quota.mode().degraded())
    }
}

impl TenantQuota {
    fn new(config: &GlobalTenantConfig, global: &GlobalConfig, shards: usize) -> Self {
        // The burst window `τ` is fixed at construction as `burst x T`; built at the fleet's
        // rate with that rate's `burst_ns` worth, `τ = burst_ns` at any share set later.
        let bucket = |rate_per_sec: u32| {
            let rate = NonZeroU32::new(rate_per_sec).unwrap_or(NonZeroU32::MIN);
            let burst = (u128::from(rate.get()) * u128::from(global.burst_ns) / 1_000_000_000)
                .clamp(1, u128::from(u32::MAX)) as u32;
            TokenBucket::new(rate, NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN))
        };
        Self {
            tenant: config.tenant,
            config: *config,
            mode: AtomicU8::new(QuotaMode::Open as u8),
            messages: bucket(config.rate_per_sec),
            bytes: config.bytes_per_sec.map(bucket),
            share_per_sec: [AtomicU64::new(0), AtomicU64::new(0)],
            offered: (0..shards)
                .map(|_| CachePadded::new([AtomicU64::new(0), AtomicU64::new(0)]))
                .collect(),
        }
    }

    /// Which tenant.
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    /// Its settings.
    pub fn config(&self) -> &GlobalTenantConfig {
        &self.config
    }

    /// How its rate applies now.
    pub fn mode(&self) -> QuotaMode {
        // Relaxed: a snapshot for reports and the lease thread.
        QuotaMode::from_u8(self.mode.load(Ordering::Relaxed))
    }

    /// The share granted by the current lease: messages and bytes per second (0 without a
    /// lease, and bytes 0 without a byte rate).
    pub fn share_per_sec(&self) -> (u64, u64) {
        // Relaxed: snapshots for reports.
        (
            self.share_per_sec[0].load(Ordering::Relaxed),
            self.share_per_sec[1].load(Ordering::Relaxed),
        )
    }

    /// Messages and payload bytes that reached the check here so far, over every shard (a
    /// snapshot; the lease thread takes differences).
    pub fn offered(&self) -> (u64, u64) {
        self.offered
            .iter()
            .fold((0, 0), |(messages, bytes), tally| {
                // Relaxed: counts read for a rate estimate; each has one writer.
                (
                    messages + tally[0].load(Ordering::Relaxed),
                    bytes + tally[1].load(Ordering::Relaxed),
                )
            })
    }

    /// Applies a granted lease: the buckets run at the shares from now on.
    pub fn apply_share(&self, messages_per_sec: u64, bytes_per_sec: Option<u64>) {
        self.share_per_sec[0].store(messages_per_sec, Ordering::Relaxed);
        self.share_per_sec[1].store(bytes_per_sec.unwrap_or(0), Ordering::Relaxed);
        let exhausted = messages_per_sec == 0 || bytes_per_sec == Some(0);
        if exhausted {
            self.set_mode(QuotaMode::Exhausted);
            return;
        }
        self.set_rates(
            messages_per_sec,
            bytes_per_sec.unwrap_or(u64::from(u32::MAX)),
        );
        self.set_mode(QuotaMode::Leased);
    }

    fn set_rates(&self, messages_per_sec: u64, bytes_per_sec: u64) {
        let rate = |per_sec: u64| {
            NonZeroU32::new(per_sec.clamp(1, u64::from(u32::MAX)) as u32).unwrap_or(NonZeroU32::MIN)
        };
        self.messages.set_rate(rate(messages_per_sec));
        if let Some(bytes) = &self.bytes {
            bytes.set_rate(rate(bytes_per_sec));
        }
    }

    fn set_mode(&self, mode: QuotaMode) {
        // Relaxed: see `GlobalQuotas::charge`.
        self.mode.store(mode as u8, Ordering::Relaxed);
    }

    #[inline]
    fn tally(&self, shard: usize, payload_bytes: u64) {
        let tally = &self.offered[shard];
        // Relaxed load and store, not a read-modify-write: the shard is the only writer of
        // its tally, and readers only need some recent value.
        tally[0].store(tally[0].load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        if self.bytes.is_some() {
            tally[1].store(
                tally[1].load(Ordering::Relaxed) + payload_bytes,
                Ordering::Relaxed,
            );
        }
    }

    #[inline]
    fn take(&self, payload_bytes: u64, now_ns: u64) -> Result<(), GlobalRefusal> {
        self.messages
            .try_acquire(now_ns, 1)
            .map_err(|refusal| GlobalRefusal::Exceeded {
                retry_after_ns: refusal.wait_ns,
            })?;
        if let Some(bytes) = &self.bytes {
            // A message refused for bytes has spent its message token: a little stricter
            // than exact, never looser.
            let payload = u32::try_from(payload_bytes).unwrap_or(u32::MAX);
            bytes
                .try_acquire(now_ns, payload)
                .map_err(|refusal| GlobalRefusal::Exceeded {
                    retry_after_ns: refusal.wait_ns,
                })?;
        }
        Ok(())
    }
}
