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
//! a share's decrease, what the old share admits during one Redis round trip, plus the
//! credit each shard may hold unspent ([`CREDIT_BATCH`] - 1 messages, taken from the bucket
//! before the interval). A process in its local fallback is bounded by its fallback rate
//! alone.

use core::num::NonZeroU32;

use crossbeam_utils::CachePadded;

use crate::bucket::TokenBucket;
use crate::config::{GlobalConfig, GlobalTenantConfig, OnUnavailable};
use crate::message::TenantId;
use crate::sync::{Arc, AtomicU64, AtomicU8, Ordering};

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

    /// The mode of a stored mode byte (see [`CREDIT_SPENDABLE`]).
    fn from_u8(value: u8) -> QuotaMode {
        QuotaMode::ALL[(value & !(CREDIT_SPENDABLE | NO_QUOTA)) as usize]
    }
}

/// Set in a tenant's stored mode byte when a shard may spend the credit it holds with no
/// other check: the mode takes tokens (leased or fallback) and the tenant has no byte
/// rate. Admission's common case then tests one bit of one load.
const CREDIT_SPENDABLE: u8 = 0x80;

/// The stored mode byte of a tenant without a fleet-wide rate: admission passes it at once.
const NO_QUOTA: u8 = 0x40;

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

/// Message tokens a shard takes from the shared bucket at once, then spends on its own
/// (one compare-exchange per this many admitted messages, instead of one each: the shared
/// bucket's cache line moves between shards that much less). A shard holds at most this
/// many less one unspent, taken from the bucket earlier.
pub const CREDIT_BATCH: u32 = 16;

/// What one shard counts of a tenant's quota, for the lease thread to read. One writer each
/// (that shard): plain loads and stores, no read-modify-write.
#[derive(Debug, Default)]
struct ShardSlot {
    /// Messages that reached the check on this shard, counted a credit batch ahead: a batch
    /// taken counts all its messages, so the count runs at most `CREDIT_BATCH` - 1 ahead
    /// (and stays so for credit dropped unspent). Monotonic, as a counter must be.
    offered_messages: AtomicU64,
    /// Their payload bytes.
    offered_bytes: AtomicU64,
    /// Messages refused by the tenant's cap on this shard (demand its pending share did not
    /// meet).
    cap_refused: AtomicU64,
}

/// What one shard holds of its tenants' fleet-wide rates: per tenant (by
/// [`TenantIndex::position`]), message tokens it took from the tenant's shared bucket and
/// has not spent yet, fewer than [`CREDIT_BATCH`]. Only its shard reads or writes it, so it
/// lives with the shard's own state, in plain integers.
#[derive(Debug)]
pub struct ShardCredit {
    shard: usize,
    held: Box<[u32]>,
}

impl ShardCredit {
    /// The credit shard `shard` holds now of the tenant at `index`.
    pub fn held(&self, index: TenantIndex) -> u32 {
        self.held[index.position()]
    }
}

/// One tenant's fleet-wide rate in this process.
#[derive(Debug)]
pub struct TenantQuota {
    /// Where it is in the tenant table, whose cap its pending share sets.
    index: TenantIndex,
    /// The tenant's own `[[tenants]]` cap at start: a pending share never raises it.
    local_max_pending: Option<u64>,
    /// The pending share under the current lease (0 without one or without a fleet cap).
    pending_share: AtomicU64,
    config: GlobalTenantConfig,
    /// Every tenant's stored mode byte (a [`QuotaMode`] with [`CREDIT_SPENDABLE`]), set by
    /// the lease thread; this tenant's is at its index's position.
    modes: std::sync::Arc<[AtomicU8]>,
    messages: TokenBucket,
    bytes: Option<TokenBucket>,
    /// The share granted now (messages, bytes per second; 0 in the modes without a lease).
    share_per_sec: [AtomicU64; 2],
    /// Per shard, on its own cache line so that shards do not share one.
    shards: Box<[CachePadded<ShardSlot>]>,
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
    /// The tenant table, whose caps the fleet-wide pending shares set.
    table: Arc<TenantTable>,
    /// By [`TenantIndex::position`]; `None` for tenants without a fleet-wide rate.
    quotas: Box<[Option<TenantQuota>]>,
    /// By [`TenantIndex::position`], every tenant's stored mode byte ([`NO_QUOTA`] for
    /// those without a fleet-wide rate): one flat array, so that admission reads one byte
    /// where the quota's own fields would take two more loads. (std's `Arc`, under loom
    /// too: it only shares the storage, fixed at start; the bytes are `crate::sync`'s.)
    modes: std::sync::Arc<[AtomicU8]>,
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
    pub fn new(config: &GlobalConfig, table: &Arc<TenantTable>, shards: usize) -> Self {
        let modes: std::sync::Arc<[AtomicU8]> =
            (0..table.len()).map(|_| AtomicU8::new(NO_QUOTA)).collect();
        let mut quotas: Vec<Option<TenantQuota>> = (0..table.len()).map(|_| None).collect();
        if config.enabled() {
            for tenant in &config.tenants {
                let index = table
                    .find(tenant.tenant)
                    .expect("the tenant table lists every [global] tenant");
                quotas[index.position()] = Some(TenantQuota::new(
                    tenant,
                    config,
                    index,
                    table.max_pending(index),
                    shards,
                    std::sync::Arc::clone(&modes),
                ));
            }
        }
        let quotas = Self {
            stats: LeaseStats::default(),
            table: Arc::clone(table),
            quotas: quotas.into_boxed_slice(),
            modes,
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

    /// The credit a shard keeps: one for each shard, owned by it.
    pub fn shard_credit(&self, shard: usize) -> ShardCredit {
        ShardCredit {
            shard,
            held: vec![0; self.modes.len()].into_boxed_slice(),
        }
    }

    /// Charges one message of `payload_bytes` to its tenant's fleet-wide rate, from the
    /// shard that holds `credit`, at `now_ns`. Tenants without one pass at the cost of a
    /// load and a branch.
    ///
    /// Inlined into admission for its common case, a leased tenant without a byte rate
    /// spending credit its shard already holds: one load of the mode byte, one load and one
    /// store of the shard's own credit. Everything else is out of line
    /// ([`charge_rest`](Self::charge_rest)).
    #[inline(always)]
    pub fn charge(
        &self,
        credit: &mut ShardCredit,
        tenant: Option<TenantIndex>,
        payload_bytes: u64,
        now_ns: u64,
    ) -> Result<(), GlobalRefusal> {
        let Some(index) = tenant else {
            return Ok(());
        };
        // Relaxed: the mode is a standalone setting; the lease thread sets a bucket's rate
        // before the mode that uses it, and a check that sees the new mode with the old
        // rate (or the reverse) is one that raced the change by a moment: the share it
        // charges was valid a lease earlier.
        let mode = self.modes[index.position()].load(Ordering::Relaxed);
        if mode & CREDIT_SPENDABLE != 0 {
            // A message spending credit was counted as offered with its batch.
            let held = &mut credit.held[index.position()];
            if *held > 0 {
                *held -= 1;
                return Ok(());
            }
        } else if mode == NO_QUOTA {
            return Ok(());
        }
        self.charge_rest(
            credit,
            index,
            QuotaMode::from_u8(mode),
            payload_bytes,
            now_ns,
        )
    }

    /// [`charge`](Self::charge) when no credit is at hand, the tenant has a byte rate, or
    /// no lease applies.
    #[inline(never)]
    fn charge_rest(
        &self,
        credit: &mut ShardCredit,
        index: TenantIndex,
        mode: QuotaMode,
        payload_bytes: u64,
        now_ns: u64,
    ) -> Result<(), GlobalRefusal> {
        let Some(quota) = self.quotas[index.position()].as_ref() else {
            return Ok(());
        };
        let shard = credit.shard;
        let held = &mut credit.held[index.position()];
        quota.tally_bytes(shard, payload_bytes);
        if let QuotaMode::Leased | QuotaMode::Fallback = mode {
            return quota.take(shard, held, payload_bytes, now_ns);
        }
        // No token taken: the message is counted on its own, and a refusal drops the credit
        // taken under a share that no longer applies.
        quota.tally_messages(shard, 1);
        match mode {
            QuotaMode::Refusing => {
                *held = 0;
                Err(GlobalRefusal::Unavailable {
                    // Relaxed: a hint.
                    retry_after_ns: self.unavailable_retry_ns.load(Ordering::Relaxed),
                })
            }
            // A zero share may grow at the next renewal.
            QuotaMode::Exhausted => {
                *held = 0;
                Err(GlobalRefusal::Exceeded {
                    retry_after_ns: self.refresh_ns,
                })
            }
            // Open: no tenant-wide rate here. (Leased and Fallback returned above.)
            QuotaMode::Open | QuotaMode::Leased | QuotaMode::Fallback => Ok(()),
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
        if quota.config.max_pending.is_some() {
            // The tenant's own cap, lowered to its fallback cap under `local`. (Under
            // `refuse` every message is refused before the cap matters.)
            let fallback = match self.on_unavailable {
                OnUnavailable::Local => quota.config.fallback_max_pending.map(u64::from),
                OnUnavailable::Refuse => None,
            };
            self.set_tenant_cap(quota, lowest(quota.local_max_pending, fallback));
            quota.pending_share.store(0, Ordering::Relaxed);
        }
        quota.set_mode(mode);
    }

    /// Records a message refused by the tenant's cap on `shard` (the cap a fleet-wide
    /// pending share sets): demand the next lease asks for. A refusal path only.
    pub fn note_cap_refusal(&self, shard: usize, tenant: Option<TenantIndex>) {
        let Some(quota) = tenant.and_then(|index| self.quotas[index.position()].as_ref()) else {
            return;
        };
        if quota.config.max_pending.is_some() {
            let slot = &quota.shards[shard];
            // Relaxed load and store: the shard's own slot (see `TenantQuota::tally_messages`).
            let refused = slot.cap_refused.load(Ordering::Relaxed);
            slot.cap_refused.store(refused + 1, Ordering::Relaxed);
        }
    }

    /// The tenant's pending messages in this process now, and its cap refusals so far over
    /// every shard: what its pending demand is estimated from.
    pub fn pending_demand(&self, quota: &TenantQuota) -> (u64, u64) {
        let refused = quota
            .shards
            .iter()
            // Relaxed: counts read for an estimate; each has one writer.
            .map(|slot| slot.cap_refused.load(Ordering::Relaxed))
            .sum();
        (self.table.pending(quota.index), refused)
    }

    /// Applies a granted pending share: the tenant's cap here becomes the share (never above
    /// its own `[[tenants]]` cap). Messages already pending stay; a cap below them refuses
    /// until enough finish.
    pub fn apply_pending_share(&self, quota: &TenantQuota, share: u64) {
        quota.pending_share.store(share, Ordering::Relaxed);
        self.set_tenant_cap(quota, lowest(quota.local_max_pending, Some(share)));
    }

    fn set_tenant_cap(&self, quota: &TenantQuota, cap: Option<u64>) {
        let cap = cap.map(|cap| u32::try_from(cap).unwrap_or(u32::MAX));
        if self.table.max_pending(quota.index) != cap.map(u64::from) {
            // Counted: a tenant with a fleet-wide cap is never rate-only.
            let counted = self.table.set_max_pending(quota.index, cap);
            debug_assert!(counted, "a fleet-capped tenant keeps its count");
        }
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

/// The lower of two optional caps (`None`: no cap).
fn lowest(first: Option<u64>, second: Option<u64>) -> Option<u64> {
    match (first, second) {
        (Some(first), Some(second)) => Some(first.min(second)),
        (cap, None) | (None, cap) => cap,
    }
}

impl TenantQuota {
    fn new(
        config: &GlobalTenantConfig,
        global: &GlobalConfig,
        index: TenantIndex,
        local_max_pending: Option<u64>,
        shards: usize,
        modes: std::sync::Arc<[AtomicU8]>,
    ) -> Self {
        // The burst window `τ` is fixed at construction as `burst x T`; built at the fleet's
        // rate with that rate's `burst_ns` worth, `τ = burst_ns` at any share set later.
        let bucket = |rate_per_sec: u32| {
            let rate = NonZeroU32::new(rate_per_sec).unwrap_or(NonZeroU32::MIN);
            let burst = (u128::from(rate.get()) * u128::from(global.burst_ns) / 1_000_000_000)
                .clamp(1, u128::from(u32::MAX)) as u32;
            TokenBucket::new(rate, NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN))
        };
        Self {
            index,
            local_max_pending,
            pending_share: AtomicU64::new(0),
            config: *config,
            modes,
            messages: bucket(config.rate_per_sec),
            bytes: config.bytes_per_sec.map(bucket),
            share_per_sec: [AtomicU64::new(0), AtomicU64::new(0)],
            shards: (0..shards)
                .map(|_| CachePadded::new(ShardSlot::default()))
                .collect(),
        }
    }

    /// Which tenant.
    pub fn tenant(&self) -> TenantId {
        self.config.tenant
    }

    /// Its settings.
    pub fn config(&self) -> &GlobalTenantConfig {
        &self.config
    }

    /// How its rate applies now.
    pub fn mode(&self) -> QuotaMode {
        // Relaxed: a snapshot for reports and the lease thread.
        QuotaMode::from_u8(self.modes[self.index.position()].load(Ordering::Relaxed))
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

    /// The pending share under the current lease (0 without one, or without a fleet cap).
    pub fn pending_share(&self) -> u64 {
        // Relaxed: a snapshot for reports.
        self.pending_share.load(Ordering::Relaxed)
    }

    /// Messages and payload bytes that reached the check here so far, over every shard (a
    /// snapshot; the lease thread takes differences).
    pub fn offered(&self) -> (u64, u64) {
        self.shards.iter().fold((0, 0), |(messages, bytes), slot| {
            // Relaxed: counts read for a rate estimate; each has one writer.
            (
                messages + slot.offered_messages.load(Ordering::Relaxed),
                bytes + slot.offered_bytes.load(Ordering::Relaxed),
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
        let takes_tokens = matches!(mode, QuotaMode::Leased | QuotaMode::Fallback);
        let spendable = if takes_tokens && self.bytes.is_none() {
            CREDIT_SPENDABLE
        } else {
            0
        };
        // Relaxed: see `GlobalQuotas::charge`.
        self.modes[self.index.position()].store(mode as u8 | spendable, Ordering::Relaxed);
    }

    /// Adds `messages` to the shard's offered count. Relaxed load and store, not a
    /// read-modify-write: the shard is the only writer of its slot, and readers only need
    /// some recent value.
    #[inline]
    fn tally_messages(&self, shard: usize, messages: u64) {
        let slot = &self.shards[shard];
        let offered = slot.offered_messages.load(Ordering::Relaxed);
        slot.offered_messages
            .store(offered + messages, Ordering::Relaxed);
    }

    /// Adds a message's payload to the shard's offered bytes, when the tenant has a byte
    /// rate (as `tally_messages`).
    #[inline]
    fn tally_bytes(&self, shard: usize, payload_bytes: u64) {
        if self.bytes.is_some() {
            let slot = &self.shards[shard];
            let bytes = slot.offered_bytes.load(Ordering::Relaxed);
            slot.offered_bytes
                .store(bytes + payload_bytes, Ordering::Relaxed);
        }
    }

    /// Takes one message's tokens for shard `shard`, which holds `held` credit of this
    /// tenant: from that credit, else a batch from the shared bucket (counted as offered
    /// all at once), else one token alone.
    #[inline]
    fn take(
        &self,
        shard: usize,
        held: &mut u32,
        payload_bytes: u64,
        now_ns: u64,
    ) -> Result<(), GlobalRefusal> {
        if *held > 0 {
            *held -= 1;
        } else if self.messages.try_acquire(now_ns, CREDIT_BATCH).is_ok() {
            *held = CREDIT_BATCH - 1;
            self.tally_messages(shard, u64::from(CREDIT_BATCH));
        } else {
            // Fewer than a batch left (or a burst smaller than one): one at a time.
            self.tally_messages(shard, 1);
            self.messages
                .try_acquire(now_ns, 1)
                .map_err(|refusal| GlobalRefusal::Exceeded {
                    retry_after_ns: refusal.wait_ns,
                })?;
        }
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

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::config::{Config, TenantConfig};
    use crate::message::Priority;

    const TENANT: TenantId = TenantId(7);

    /// Quotas for `shards` shards: tenant 7 at 10,000/s across the fleet, a 100 ms burst,
    /// `on_unavailable` and a fallback rate as given.
    fn setup(
        shards: usize,
        on_unavailable: OnUnavailable,
        fallback: Option<u32>,
    ) -> (GlobalQuotas, TenantIndex) {
        let mut config = Config::default().global;
        config.redis = vec!["redis://127.0.0.1:1".to_string()];
        config.on_unavailable = on_unavailable;
        config.burst_ns = 100_000_000;
        config.tenants = vec![GlobalTenantConfig {
            fallback_rate_per_sec: fallback,
            ..GlobalTenantConfig::new(TENANT, 10_000)
        }];
        let table = TenantTable::new(
            &[TenantConfig {
                tenant: TENANT,
                max_pending: None,
                priority_ceiling: Priority::P0,
            }],
            &[],
            [100, 95, 80, 60],
        );
        let index = table.find(TENANT).unwrap();
        (GlobalQuotas::new(&config, &Arc::new(table), shards), index)
    }

    fn admitted_at(
        quotas: &GlobalQuotas,
        credit: &mut ShardCredit,
        index: TenantIndex,
        now_ns: u64,
    ) -> u64 {
        let mut admitted = 0;
        while quotas.charge(credit, Some(index), 0, now_ns).is_ok() {
            admitted += 1;
            assert!(admitted <= 1_000_000, "never refused");
        }
        admitted
    }

    #[test]
    fn a_share_admits_its_burst_at_once_then_its_rate_whatever_the_credit_batches() {
        let (quotas, index) = setup(1, OnUnavailable::Refuse, None);
        let quota = quotas.iter().next().unwrap();
        assert_eq!(quota.mode(), QuotaMode::Refusing, "no lease yet");
        quota.apply_share(1_000, None);
        let mut credit = quotas.shard_credit(0);
        // 100 ms of 1,000/s: 100 at once (six batches of 16, then four one at a time).
        assert_eq!(admitted_at(&quotas, &mut credit, index, 0), 100);
        // One more per ms after that.
        assert_eq!(admitted_at(&quotas, &mut credit, index, 10_000_000), 10);
        assert_eq!(quota.offered().0, 112, "refusals are demand too");
        // Tenants without a fleet-wide rate pass untouched.
        assert_eq!(quotas.charge(&mut credit, None, 0, 0), Ok(()));
    }

    #[test]
    fn shards_charging_at_once_admit_exactly_the_burst_together() {
        let (quotas, index) = setup(4, OnUnavailable::Refuse, None);
        quotas.iter().next().unwrap().apply_share(100_000, None);
        // 100 ms of 100,000/s: 10,000 tokens, shared by four shards taking batches.
        let total: u64 = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|shard| {
                    let quotas = &quotas;
                    scope.spawn(move || {
                        admitted_at(quotas, &mut quotas.shard_credit(shard), index, 0)
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|worker| worker.join().unwrap())
                .sum()
        });
        assert_eq!(total, 10_000);
    }

    #[test]
    fn each_mode_decides_as_documented_and_a_refusing_mode_drops_the_credit() {
        let (quotas, index) = setup(1, OnUnavailable::Local, Some(500));
        let quota = quotas.iter().next().unwrap();
        // Local fallback with a fallback rate: 500/s, 100 ms burst = 50 at once.
        assert_eq!(quota.mode(), QuotaMode::Fallback);
        assert!(quotas.degraded());
        let mut credit = quotas.shard_credit(0);
        assert_eq!(admitted_at(&quotas, &mut credit, index, 0), 50);

        // A lease: the share applies; one message leaves 15 of a batch as credit.
        quota.apply_share(10_000, None);
        assert!(!quotas.degraded());
        assert_eq!(quota.share_per_sec(), (10_000, 0));
        let later_ns = 1_000_000_000;
        assert!(quotas.charge(&mut credit, Some(index), 0, later_ns).is_ok());
        assert_eq!(credit.held(index), CREDIT_BATCH - 1);
        // A zero share refuses, credit or not, and drops that credit.
        quota.apply_share(0, None);
        assert_eq!(quota.mode(), QuotaMode::Exhausted);
        assert!(matches!(
            quotas.charge(&mut credit, Some(index), 0, later_ns),
            Err(GlobalRefusal::Exceeded { .. })
        ));
        assert_eq!(credit.held(index), 0);

        // Redis lost under "refuse": every message refused with the reconnect hint.
        let (refusing, index) = setup(1, OnUnavailable::Refuse, None);
        refusing.set_unavailable_retry_ns(123);
        assert_eq!(
            refusing.charge(&mut refusing.shard_credit(0), Some(index), 0, 0),
            Err(GlobalRefusal::Unavailable {
                retry_after_ns: 123
            })
        );
        // Under "local" without fallback rates: nothing tenant-wide applies.
        let (open, index) = setup(1, OnUnavailable::Local, None);
        assert_eq!(open.iter().next().unwrap().mode(), QuotaMode::Open);
        assert_eq!(admitted_at_most(&open, index, 100_000), 100_000);
    }

    #[test]
    fn a_tenant_with_settings_but_no_fleet_rate_passes_and_holds_no_credit() {
        let mut config = Config::default().global;
        config.redis = vec!["redis://127.0.0.1:1".to_string()];
        config.tenants = vec![GlobalTenantConfig::new(TENANT, 1)];
        let capped = |tenant| TenantConfig {
            tenant,
            max_pending: Some(10),
            priority_ceiling: Priority::P0,
        };
        let table = Arc::new(TenantTable::new(
            &[capped(TenantId(3)), capped(TENANT)],
            &[],
            [100, 100, 100, 100],
        ));
        let quotas = GlobalQuotas::new(&config, &table, 1);
        let mut credit = quotas.shard_credit(0);
        let other = table.find(TenantId(3)).unwrap();
        assert_eq!(admitted_at_most(&quotas, other, 1_000), 1_000);
        assert_eq!(credit.held(other), 0);
        // The fleet-rated tenant beside it, with no lease yet and no fallback: open.
        let fleet = table.find(TENANT).unwrap();
        assert_eq!(quotas.charge(&mut credit, Some(fleet), 0, 0), Ok(()));
        assert_eq!(quotas.iter().next().unwrap().offered(), (1, 0));
    }

    fn admitted_at_most(quotas: &GlobalQuotas, index: TenantIndex, tries: u64) -> u64 {
        let mut credit = quotas.shard_credit(0);
        (0..tries)
            .filter(|_| quotas.charge(&mut credit, Some(index), 0, 0).is_ok())
            .count() as u64
    }

    #[test]
    fn a_pending_share_sets_the_tenant_cap_never_above_its_own_and_the_fallback_restores_it() {
        let mut config = Config::default().global;
        config.redis = vec!["redis://127.0.0.1:1".to_string()];
        config.tenants = vec![GlobalTenantConfig {
            max_pending: Some(1_000),
            fallback_max_pending: Some(50),
            ..GlobalTenantConfig::new(TENANT, 10_000)
        }];
        let table = Arc::new(TenantTable::new(
            &[TenantConfig {
                tenant: TENANT,
                max_pending: Some(300),
                priority_ceiling: Priority::P0,
            }],
            &[],
            [100, 100, 100, 100],
        ));
        let index = table.find(TENANT).unwrap();
        let quotas = GlobalQuotas::new(&config, &table, 2);
        let quota = quotas.iter().next().unwrap();
        // No lease yet, under "local": the lower of its own cap and the fallback cap.
        assert_eq!(table.max_pending(index), Some(50));
        quotas.apply_pending_share(quota, 200);
        assert_eq!(
            (table.max_pending(index), quota.pending_share()),
            (Some(200), 200)
        );
        // A share above the tenant's own cap does not raise it.
        quotas.apply_pending_share(quota, 700);
        assert_eq!(table.max_pending(index), Some(300));
        quotas.fall_back(quota);
        assert_eq!(
            (table.max_pending(index), quota.pending_share()),
            (Some(50), 0)
        );

        // Demand: what is pending here, and the cap's refusals on every shard.
        assert!(table.try_charge(index, Priority::P0).admitted());
        quotas.note_cap_refusal(0, Some(index));
        quotas.note_cap_refusal(1, Some(index));
        quotas.note_cap_refusal(1, None);
        assert_eq!(quotas.pending_demand(quota), (1, 2));
    }
}
