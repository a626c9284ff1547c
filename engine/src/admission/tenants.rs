//! Per-tenant aggregate caps and priority ceilings, shared by all shards.
//!
//! A tenant's connections may sit on different shards, so its pending count is the one piece
//! of admission state that shards share. Each shard charges it with a compare-exchange that
//! only succeeds below the priority's threshold, so concurrent shards can never push it past
//! its cap (no overshoot, not even transiently, for a given cap), and releases it with a
//! `fetch_sub` when the message finishes. A cap lowered at run time is seen by each shard
//! soon after, not at an instant: a charge that read the old cap may still land. Tenants
//! without settings take no shared state at all.

use crate::config::TenantConfig;
use crate::message::{Priority, TenantId};
use crate::sync::{AtomicU32, AtomicU64, Ordering};

use super::caps::limit_of;

/// The tenants that have settings, fixed at start; values changeable at run time.
#[derive(Debug)]
pub struct TenantTable {
    /// Sorted by tenant id, for binary search; ids never change after start.
    entries: Box<[TenantEntry]>,
    /// `caps.priority_threshold_percent`, changeable at run time
    /// ([`set_percent`](Self::set_percent)).
    percent: [AtomicU32; Priority::COUNT],
}

#[derive(Debug)]
struct TenantEntry {
    tenant: TenantId,
    /// Pending messages across all shards. On its own cache line: shards of a busy tenant
    /// write it concurrently and must not slow the neighbours' lookups.
    pending: crossbeam_utils::CachePadded<AtomicU64>,
    /// The cap, `u64::MAX` for none.
    max_pending: AtomicU64,
    /// The most urgent priority allowed. Fixed at start (a reload cannot change it), so
    /// [`find`](TenantTable::find) copies it into the index a shard caches.
    ceiling: Priority,
    /// Whether its pending messages are counted. A tenant in the table only for its
    /// fleet-wide rate (`[global]`, no cap here or across the fleet) is not: counting would
    /// cost every admission and finish a read-modify-write on a line the shards share, for
    /// no cap. It can then never be capped at run time either. Fixed at start, and copied
    /// into the index as the ceiling is.
    counted: bool,
}

/// What [`TenantTable::try_charge`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum TenantCharge {
    /// Counted: [`TenantTable::release`] it when the message finishes.
    Charged,
    /// Admitted without a count (a tenant with no cap here or across the fleet, listed only
    /// for its fleet-wide rate): nothing to release.
    Uncounted,
    /// The cap is full for this priority: refuse.
    Full,
}

impl TenantCharge {
    /// Whether the cap let the message in.
    pub fn admitted(self) -> bool {
        self != TenantCharge::Full
    }
}

/// Index of a tenant in the table, cached by shards per connection, with the tenant's
/// settings that never change after start: admission applies the ceiling and skips the
/// count of an uncounted tenant without a look at the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TenantIndex {
    position: u32,
    ceiling: Priority,
    counted: bool,
}

impl TenantIndex {
    /// Position in [`TenantTable`] order, for per-tenant counters.
    #[inline]
    pub fn position(self) -> usize {
        self.position as usize
    }

    /// `claimed`, lowered to the tenant's ceiling.
    #[inline]
    pub fn ceiling(self, claimed: Priority) -> Priority {
        claimed.max(self.ceiling)
    }
}

impl TenantTable {
    /// A table of the configured tenants, with the caps' priority percentages; those in
    /// `uncounted` keep no pending count (and can take no cap).
    pub fn new(
        tenants: &[TenantConfig],
        uncounted: &[TenantId],
        percent: [u32; Priority::COUNT],
    ) -> Self {
        let mut sorted: Vec<&TenantConfig> = tenants.iter().collect();
        sorted.sort_by_key(|config| config.tenant);
        let entries = sorted
            .into_iter()
            .map(|config| TenantEntry {
                tenant: config.tenant,
                pending: crossbeam_utils::CachePadded::new(AtomicU64::new(0)),
                max_pending: AtomicU64::new(config.max_pending.map_or(u64::MAX, u64::from)),
                ceiling: config.priority_ceiling,
                counted: !uncounted.contains(&config.tenant),
            })
            .collect();
        Self {
            entries,
            percent: percent.map(AtomicU32::new),
        }
    }

    /// Changes the priority percentages every tenant cap applies from the next check on.
    pub fn set_percent(&self, percent: [u32; Priority::COUNT]) {
        for (slot, value) in self.percent.iter().zip(percent) {
            // Relaxed: standalone settings, each read on its own; a check that races the
            // change applies the old or the new percentage of its priority, both valid.
            slot.store(value, Ordering::Relaxed);
        }
    }

    /// The limit of a tenant capped at `max_pending` for `priority`.
    #[inline]
    fn limit(&self, max_pending: u64, priority: Priority) -> u64 {
        // Relaxed: see `set_percent`.
        limit_of(
            max_pending,
            self.percent[priority.index()].load(Ordering::Relaxed),
        )
    }

    /// Number of tenants with settings.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no tenant has settings.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The tenant ids in table order.
    pub fn tenant_ids(&self) -> impl Iterator<Item = TenantId> + '_ {
        self.entries.iter().map(|entry| entry.tenant)
    }

    /// Where `tenant` is, if it has settings.
    pub fn find(&self, tenant: TenantId) -> Option<TenantIndex> {
        self.entries
            .binary_search_by_key(&tenant, |entry| entry.tenant)
            .ok()
            .map(|position| {
                let entry = &self.entries[position];
                TenantIndex {
                    position: position as u32,
                    ceiling: entry.ceiling,
                    counted: entry.counted,
                }
            })
    }

    /// Charges one pending message to the tenant if its cap allows `priority`. Tenants
    /// without a cap are counted too, so that a cap set at run time starts from the truth;
    /// an uncounted tenant (fleet-wide rate only) passes without a charge, so there is
    /// nothing to release when its message finishes.
    #[inline(always)]
    pub fn try_charge(&self, index: TenantIndex, priority: Priority) -> TenantCharge {
        if !index.counted {
            return TenantCharge::Uncounted;
        }
        self.charge_counted(index, priority)
    }

    #[inline]
    fn charge_counted(&self, index: TenantIndex, priority: Priority) -> TenantCharge {
        let entry = &self.entries[index.position()];
        // Relaxed: the cap is a standalone setting; a change applies from the next check.
        let max_pending = entry.max_pending.load(Ordering::Relaxed);
        if max_pending == u64::MAX {
            // Relaxed: a pure count, see below.
            entry.pending.fetch_add(1, Ordering::Relaxed);
            return TenantCharge::Charged;
        }
        let limit = self.limit(max_pending, priority);
        // Relaxed is enough: the count publishes no other memory, and each charge is a
        // read-modify-write, so all charges and releases act on one total order of values;
        // a charge succeeds only if the value it replaced was below the limit.
        let charged = entry
            .pending
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |pending| {
                (pending < limit).then_some(pending + 1)
            })
            .is_ok();
        if charged {
            TenantCharge::Charged
        } else {
            TenantCharge::Full
        }
    }

    /// Whether [`try_charge`](Self::try_charge) at `priority` would succeed now if `freed`
    /// of the tenant's charges were released first: a prediction for drop-oldest, which
    /// evicts only for a message it can then admit (other shards may change the count
    /// before the charge is made).
    pub fn would_admit(&self, index: TenantIndex, priority: Priority, freed: u64) -> bool {
        if !index.counted {
            return true;
        }
        let entry = &self.entries[index.position()];
        // Relaxed: a standalone setting, and a count read for a prediction.
        let max_pending = entry.max_pending.load(Ordering::Relaxed);
        if max_pending == u64::MAX {
            return true;
        }
        let limit = self.limit(max_pending, priority);
        entry.pending.load(Ordering::Relaxed).saturating_sub(freed) < limit
    }

    /// Releases one pending message charged with [`try_charge`](Self::try_charge).
    #[inline]
    pub fn release(&self, index: TenantIndex) {
        if !index.counted {
            return;
        }
        let entry = &self.entries[index.position()];
        // Relaxed: as in `try_charge`.
        let previous = entry.pending.fetch_sub(1, Ordering::Relaxed);
        debug_assert!(previous > 0, "tenant pending count released below zero");
    }

    /// Pending messages of the tenant across shards (a snapshot).
    pub fn pending(&self, index: TenantIndex) -> u64 {
        self.entries[index.position()]
            .pending
            .load(Ordering::Relaxed)
    }

    /// The tenant's cap now, `None` if it has none.
    pub fn max_pending(&self, index: TenantIndex) -> Option<u64> {
        // Relaxed: a standalone setting.
        let max_pending = self.entries[index.position()]
            .max_pending
            .load(Ordering::Relaxed);
        (max_pending != u64::MAX).then_some(max_pending)
    }

    /// Changes the tenant's cap at run time (`None`: no cap). Messages already pending stay
    /// charged; a cap lowered below the pending count refuses until enough finish. False
    /// (and nothing changes) for a tenant whose pending messages are not counted.
    pub fn set_max_pending(&self, index: TenantIndex, max_pending: Option<u32>) -> bool {
        if !index.counted {
            return false;
        }
        let entry = &self.entries[index.position()];
        // Relaxed: a standalone setting.
        entry
            .max_pending
            .store(max_pending.map_or(u64::MAX, u64::from), Ordering::Relaxed);
        true
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn table(max_pending: Option<u32>) -> TenantTable {
        TenantTable::new(
            &[TenantConfig {
                tenant: TenantId(9),
                max_pending,
                priority_ceiling: Priority::P2,
            }],
            &[],
            [100, 95, 80, 60],
        )
    }

    #[test]
    fn charges_stop_at_each_priority_threshold() {
        let table = table(Some(10));
        let index = table.find(TenantId(9)).unwrap();
        assert_eq!(table.find(TenantId(8)), None);
        let mut admitted = 0;
        while table.try_charge(index, Priority::P3).admitted() {
            admitted += 1;
        }
        assert_eq!(admitted, 6);
        while table.try_charge(index, Priority::P0).admitted() {
            admitted += 1;
        }
        assert_eq!(admitted, 10);
        table.release(index);
        assert_eq!(table.pending(index), 9);
        assert!(table.try_charge(index, Priority::P0).admitted());
    }

    #[test]
    fn ceiling_lowers_claims_above_it() {
        let table = table(None);
        let index = table.find(TenantId(9)).unwrap();
        assert_eq!(index.ceiling(Priority::P0), Priority::P2);
        assert_eq!(index.ceiling(Priority::P3), Priority::P3);
        assert!(table.try_charge(index, Priority::P0).admitted());
        assert_eq!(table.pending(index), 1, "uncapped tenants are counted too");
        table.set_max_pending(index, Some(1));
        assert!(!table.try_charge(index, Priority::P0).admitted());
        table.release(index);
        assert!(table.try_charge(index, Priority::P0).admitted());
    }

    #[test]
    fn concurrent_charges_never_overshoot() {
        let table = std::sync::Arc::new(table(Some(1000)));
        let index = table.find(TenantId(9)).unwrap();
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let table = std::sync::Arc::clone(&table);
                std::thread::spawn(move || {
                    let mut charged = 0u64;
                    for _ in 0..10_000 {
                        if table.try_charge(index, Priority::P0).admitted() {
                            charged += 1;
                            assert!(table.pending(index) <= 1000);
                        }
                    }
                    charged
                })
            })
            .collect();
        let charged: u64 = workers
            .into_iter()
            .map(|worker| worker.join().unwrap())
            .sum();
        assert_eq!(charged, 1000);
        assert_eq!(table.pending(index), 1000);
    }

    #[test]
    fn an_uncounted_tenant_passes_without_a_count_and_takes_no_cap() {
        let table = TenantTable::new(
            &[TenantConfig {
                tenant: TenantId(3),
                max_pending: None,
                priority_ceiling: Priority::P1,
            }],
            &[TenantId(3)],
            [100, 95, 80, 60],
        );
        let index = table.find(TenantId(3)).unwrap();
        for _ in 0..10 {
            assert_eq!(
                table.try_charge(index, Priority::P0),
                TenantCharge::Uncounted
            );
        }
        assert_eq!(table.pending(index), 0, "nothing counted");
        table.release(index);
        assert_eq!(table.pending(index), 0, "and nothing released below zero");
        assert!(table.would_admit(index, Priority::P3, 0));
        assert!(
            !table.set_max_pending(index, Some(1)),
            "no count, so no cap"
        );
        assert_eq!(table.max_pending(index), None);
        assert_eq!(
            index.ceiling(Priority::P0),
            Priority::P1,
            "the ceiling holds"
        );
    }
}
