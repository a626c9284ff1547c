//! The connections a shard owns: their token buckets, pending counts and queue heads, in a
//! table allocated at start-up for `connections_per_shard_max` entries.
//!
//! When the table is full, a new connection takes the place of an idle one: no pending
//! work, a full bucket, its nominal rate, not disconnected. Such a connection carries no
//! state worth keeping (a fresh entry would be identical), so evicting it loses nothing. The
//! search is bounded ([`EVICTION_SCAN_MAX`] entries from a rotating cursor); if it finds
//! none the new connection is refused with `ConnectionLimit`.
//!
//! A drained connection is closed: once its drain completes, [`ConnectionTable::remove`]
//! forgets it and its slot goes on a free list that new connections take first (a message
//! with its id later is a new connection).

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use crate::admission::tenants::TenantIndex;
use crate::bucket::TokenBucket;
use crate::message::{ConnectionId, ConnectionIdHasher, Priority, TenantId};

/// Most entries one insertion examines for an idle connection to evict.
pub(crate) const EVICTION_SCAN_MAX: usize = 64;

/// One connection's state. Sized for the 256-byte budget per idle connection (the measured
/// figure is in README).
#[derive(Debug)]
pub(crate) struct ConnectionState {
    pub(crate) id: ConnectionId,
    pub(crate) bucket: TokenBucket,
    /// The tenant of its last message and that tenant's table index, if it has settings.
    pub(crate) tenant: TenantId,
    pub(crate) tenant_index: Option<TenantIndex>,
    pub(crate) pending_messages: u32,
    pub(crate) pending_bytes: u64,
    /// Queued messages per priority, oldest first.
    pub(crate) queues: [List; Priority::COUNT],
    /// Bit `p` set while the connection is in the shard's round-robin list for priority `p`.
    pub(crate) scheduled: u8,
    /// Set by the `disconnect` action; later messages are refused.
    pub(crate) disconnected: bool,
    /// Set by a drain from the control plane while the drain runs: later messages are
    /// refused `Draining`, and the connection is not evicted. When the drain completes the
    /// entry is removed.
    pub(crate) draining: bool,
    /// The slot is on the free list: no connection, skipped by [`ConnectionTable::iter_mut`].
    free: bool,
    /// Pending-message cap set for this connection at run time; 0: the configured cap.
    pub(crate) message_cap: u32,
    /// Nominal rate set for this connection at run time; 0: the configured rate. The
    /// adaptive controller recovers towards it.
    pub(crate) nominal_rate_per_sec: u32,
    /// The adaptive controller's current rate for this connection.
    pub(crate) rate_per_sec: u32,
    /// Worst latency of its messages finished in the current adaptive interval.
    pub(crate) interval_latency_max_ns: u64,
}

impl ConnectionState {
    fn new(id: ConnectionId, rate_per_sec: u32, burst: u32) -> Self {
        Self {
            id,
            bucket: TokenBucket::new(nonzero(rate_per_sec), nonzero(burst)),
            tenant: TenantId(u32::MAX),
            tenant_index: None,
            pending_messages: 0,
            pending_bytes: 0,
            queues: [List::EMPTY; Priority::COUNT],
            scheduled: 0,
            disconnected: false,
            draining: false,
            free: false,
            message_cap: 0,
            nominal_rate_per_sec: 0,
            rate_per_sec,
            interval_latency_max_ns: 0,
        }
    }

    /// The rate the adaptive controller recovers towards: the one set for this connection
    /// at run time, or the configured one.
    pub(crate) fn nominal_rate_per_sec(&self, configured_per_sec: u32) -> u32 {
        match self.nominal_rate_per_sec {
            0 => configured_per_sec,
            set => set,
        }
    }

    /// Whether evicting it would lose nothing.
    fn is_idle(&self, now_ns: u64, nominal_per_sec: u32) -> bool {
        self.pending_messages == 0
            && !self.disconnected
            && !self.draining
            && self.message_cap == 0
            && self.nominal_rate_per_sec == 0
            && self.rate_per_sec == nominal_per_sec
            && self.bucket.available(now_ns) >= self.bucket.burst()
    }
}

fn nonzero(value: u32) -> core::num::NonZeroU32 {
    core::num::NonZeroU32::new(value.max(1)).expect("max(1) is non-zero")
}

/// The end of a list through the pending queue's slab: no slot.
pub(super) const NIL: u32 = u32::MAX;

/// A connection's queue at one priority: the ends of its list through the pending queue's
/// slab (`shard::queue`), [`NIL`] when empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct List {
    pub(super) head: u32,
    pub(super) tail: u32,
}

impl List {
    pub(crate) const EMPTY: List = List {
        head: NIL,
        tail: NIL,
    };

    pub(crate) fn is_empty(&self) -> bool {
        self.head == NIL
    }
}

/// Index of a connection's entry in the table.
pub(crate) type Slot = u32;

/// The table. Entries never move; slots are reused after eviction or removal.
#[derive(Debug)]
pub(crate) struct ConnectionTable {
    entries: Vec<ConnectionState>,
    by_id: HashMap<u64, Slot, BuildHasherDefault<ConnectionIdHasher>>,
    /// Slots of removed connections, taken first by new ones (allocated for `capacity`).
    free: Vec<Slot>,
    capacity: usize,
    evict_cursor: usize,
    rate_per_sec: u32,
    burst: u32,
}

impl ConnectionTable {
    pub(crate) fn new(capacity: usize, rate_per_sec: u32, burst: u32) -> Self {
        Self {
            entries: Vec::with_capacity(capacity),
            by_id: HashMap::with_capacity_and_hasher(capacity, BuildHasherDefault::default()),
            free: Vec::with_capacity(capacity),
            capacity,
            evict_cursor: 0,
            rate_per_sec,
            burst,
        }
    }

    /// The slot of `id`, adding it (in a free slot, or evicting an idle connection if the
    /// table is full), or `None` if the table is full of connections that are not idle. The
    /// flag says whether a connection was evicted.
    #[inline]
    pub(crate) fn find_or_insert(&mut self, id: ConnectionId, now_ns: u64) -> Option<(Slot, bool)> {
        if let Some(&slot) = self.by_id.get(&id.0) {
            return Some((slot, false));
        }
        if let Some(slot) = self.free.pop() {
            self.replace(slot, id);
            self.by_id.insert(id.0, slot);
            return Some((slot, false));
        }
        if self.entries.len() < self.capacity {
            let slot = self.entries.len() as Slot;
            self.entries
                .push(ConnectionState::new(id, self.rate_per_sec, self.burst));
            self.by_id.insert(id.0, slot);
            return Some((slot, false));
        }
        let slot = self.find_idle(now_ns)?;
        let evicted = self.replace(slot, id);
        self.by_id.remove(&evicted.id.0);
        self.by_id.insert(id.0, slot);
        Some((slot, true))
    }

    /// Forgets the connection in `slot`, which has nothing pending: a later message with its
    /// id is a new connection. The slot is reused first. (For a completed drain.)
    pub(crate) fn remove(&mut self, slot: Slot) {
        let removed = self.replace(slot, ConnectionId(0));
        debug_assert!(!removed.free && removed.pending_messages == 0);
        self.by_id.remove(&removed.id.0);
        self.entries[slot as usize].free = true;
        self.free.push(slot);
    }

    /// Puts a fresh entry for `id` in `slot` and returns the old one. The fresh entry keeps
    /// the old one's `scheduled` bits: the pending queue leaves a connection whose list was
    /// emptied out of turn (a cancel, a drop) in its round-robin ring until it comes round,
    /// so the slot is still there and must not be added a second time.
    /// Changes the configured rate: the one connections added from now on start at, and
    /// the one the adaptive controller recovers those without a rate of their own towards.
    pub(crate) fn set_configured_rate(&mut self, rate_per_sec: u32) {
        self.rate_per_sec = rate_per_sec;
    }

    fn replace(&mut self, slot: Slot, id: ConnectionId) -> ConnectionState {
        let mut fresh = ConnectionState::new(id, self.rate_per_sec, self.burst);
        fresh.scheduled = self.entries[slot as usize].scheduled;
        core::mem::replace(&mut self.entries[slot as usize], fresh)
    }

    #[cold]
    fn find_idle(&mut self, now_ns: u64) -> Option<Slot> {
        for _ in 0..EVICTION_SCAN_MAX.min(self.entries.len()) {
            let slot = self.evict_cursor;
            self.evict_cursor = (self.evict_cursor + 1) % self.entries.len();
            if self.entries[slot].is_idle(now_ns, self.rate_per_sec) {
                return Some(slot as Slot);
            }
        }
        None
    }

    /// The slot of `id`, if the shard holds it.
    pub(crate) fn find(&self, id: ConnectionId) -> Option<Slot> {
        self.by_id.get(&id.0).copied()
    }

    #[inline(always)]
    pub(crate) fn get(&self, slot: Slot) -> &ConnectionState {
        &self.entries[slot as usize]
    }

    #[inline(always)]
    pub(crate) fn get_mut(&mut self, slot: Slot) -> &mut ConnectionState {
        &mut self.entries[slot as usize]
    }

    /// The configured per-connection rate, for connections without one of their own.
    pub(crate) fn configured_rate_per_sec(&self) -> u32 {
        self.rate_per_sec
    }

    /// Connections held.
    pub(crate) fn len(&self) -> usize {
        self.entries.len() - self.free.len()
    }

    /// Every held connection, for the adaptive sweep.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut ConnectionState> {
        self.entries.iter_mut().filter(|state| !state.free)
    }

    /// Bytes this table reserves per connection: the entry, and the index's share (key,
    /// value and hashbrown's control byte, at its 7/8 maximum load), for the per-connection
    /// memory figure.
    pub(crate) fn bytes_per_connection() -> usize {
        let entry = core::mem::size_of::<ConnectionState>();
        let index = (core::mem::size_of::<(u64, Slot)>() + 1) * 8 / 7 + 1;
        entry + index
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn full_table_evicts_only_idle_connections() {
        let mut table = ConnectionTable::new(2, 10, 20);
        let (first, _) = table.find_or_insert(ConnectionId(1), 0).unwrap();
        table.find_or_insert(ConnectionId(2), 0).unwrap();
        table.get_mut(first).pending_messages = 1;
        // Connection 2 is idle: it goes.
        let (slot, evicted) = table.find_or_insert(ConnectionId(3), 0).unwrap();
        assert!(evicted);
        assert_ne!(slot, first);
        assert_eq!(table.find(ConnectionId(2)), None);
        assert_eq!(table.find(ConnectionId(3)), Some(slot));
        // Connection 3's bucket is drained: not idle; 1 has pending work: no room.
        table
            .get_mut(slot)
            .bucket
            .try_acquire_exclusive(0, 20)
            .unwrap();
        assert_eq!(table.find_or_insert(ConnectionId(4), 0), None);
        // Two seconds later 3's bucket is full again.
        assert!(table
            .find_or_insert(ConnectionId(4), 2_000_000_000)
            .is_some());
    }

    #[test]
    fn a_removed_connection_frees_its_slot_for_the_next_new_one() {
        let mut table = ConnectionTable::new(2, 10, 20);
        let (first, _) = table.find_or_insert(ConnectionId(1), 0).unwrap();
        let (second, _) = table.find_or_insert(ConnectionId(2), 0).unwrap();
        // Neither is idle (pending work, a drained bucket): no room for a third.
        table.get_mut(first).pending_messages = 1;
        table
            .get_mut(second)
            .bucket
            .try_acquire_exclusive(0, 20)
            .unwrap();
        assert_eq!(table.find_or_insert(ConnectionId(3), 0), None);
        table.remove(second);
        assert_eq!(table.len(), 1);
        assert_eq!(table.find(ConnectionId(2)), None);
        assert_eq!(table.iter_mut().count(), 1);
        // The third takes the freed slot, fresh, without evicting anyone.
        assert_eq!(
            table.find_or_insert(ConnectionId(3), 0),
            Some((second, false))
        );
        assert_eq!(table.get(second).bucket.available(0), 20);
        // And 2 is new again once there is room.
        table.get_mut(first).pending_messages = 0;
        table.remove(first);
        assert_eq!(
            table.find_or_insert(ConnectionId(2), 0),
            Some((first, false))
        );
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn idle_connection_state_fits_the_256_byte_budget() {
        assert!(
            ConnectionTable::bytes_per_connection() <= 256,
            "{} bytes",
            ConnectionTable::bytes_per_connection()
        );
    }
}
