//! A shard's pending work: every admitted message waiting for its handler, highest priority
//! first and, within a priority, round-robin across connections (each connection with work
//! at that priority gets one message per turn, so one busy connection cannot starve the
//! others).
//!
//! Storage is a slab allocated at start-up with one slot per message the handler queue cap
//! allows; each connection threads its messages through the slab as one singly linked list
//! per priority (oldest first), and each priority has a round-robin ring of the connections
//! that have work there (each connection at most once, so the ring never outgrows the
//! connection table). Admitting, running and dropping a message are O(1) and allocate
//! nothing.

use std::collections::VecDeque;

use crate::admission::tenants::TenantIndex;
use crate::message::{Message, Priority};

use super::connections::{ConnectionTable, Slot, NIL};

/// Where a message came from, so its completion goes back there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Origin(pub(crate) u16);

impl Origin {
    /// Admitted synchronously by code on the shard; its completion goes to the handler.
    pub(crate) const LOCAL: Origin = Origin(u16::MAX);
    /// Submitted through a `SharedIngress`.
    pub(crate) const SHARED: Origin = Origin(u16::MAX - 1);
}

/// An admitted message and what the shard needs to finish it.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) message: Message,
    pub(crate) origin: Origin,
    pub(crate) admitted_ns: u64,
    pub(crate) connection: Slot,
    /// The tenant it was counted under (`None`: a tenant without settings).
    pub(crate) tenant: Option<TenantIndex>,
    /// Whether it holds a charge on that tenant's shared pending count.
    pub(crate) tenant_charged: bool,
}

/// Bytes each connection the shard can hold reserves in the round-robin rings (one slot
/// per priority).
pub(crate) const ROUND_ROBIN_BYTES_PER_CONNECTION: usize =
    Priority::COUNT * core::mem::size_of::<Slot>();

#[derive(Debug)]
struct SlabSlot {
    entry: Option<Entry>,
    /// Next slot in the same list (a connection's queue, or the free list).
    next: u32,
}

#[derive(Debug)]
pub(crate) struct PendingQueue {
    slots: Vec<SlabSlot>,
    free_head: u32,
    used: usize,
    round_robin: [VecDeque<Slot>; Priority::COUNT],
}

impl PendingQueue {
    /// Room for `capacity` messages across `connections_max` connections, all allocated now.
    pub(crate) fn new(capacity: usize, connections_max: usize) -> Self {
        let slots = (0..capacity)
            .map(|index| SlabSlot {
                entry: None,
                next: if index + 1 < capacity {
                    (index + 1) as u32
                } else {
                    NIL
                },
            })
            .collect();
        Self {
            slots,
            free_head: if capacity > 0 { 0 } else { NIL },
            used: 0,
            round_robin: core::array::from_fn(|_| VecDeque::with_capacity(connections_max)),
        }
    }

    /// Messages queued.
    pub(crate) fn len(&self) -> usize {
        self.used
    }

    /// Queues `entry` at the back of its connection's list for its priority. The caller has
    /// checked the handler-queue cap, which is the slab's size, so a slot is free.
    pub(crate) fn push(&mut self, connections: &mut ConnectionTable, entry: Entry) {
        let index = self.free_head;
        assert_ne!(
            index, NIL,
            "pending queue used beyond the handler-queue cap"
        );
        let priority = entry.message.priority.index();
        let connection_slot = entry.connection;
        let slot = &mut self.slots[index as usize];
        self.free_head = slot.next;
        slot.next = NIL;
        slot.entry = Some(entry);
        self.used += 1;
        let connection = connections.get_mut(connection_slot);
        let list = &mut connection.queues[priority];
        if list.is_empty() {
            list.head = index;
        } else {
            self.slots[list.tail as usize].next = index;
        }
        list.tail = index;
        let bit = 1u8 << priority;
        if connection.scheduled & bit == 0 {
            connection.scheduled |= bit;
            self.round_robin[priority].push_back(connection_slot);
        }
    }

    /// Takes the oldest message of `connection` at `priority`, if any.
    pub(crate) fn pop_oldest(
        &mut self,
        connections: &mut ConnectionTable,
        connection: Slot,
        priority: Priority,
    ) -> Option<Entry> {
        let list = &mut connections.get_mut(connection).queues[priority.index()];
        if list.is_empty() {
            return None;
        }
        let index = list.head;
        let slot = &mut self.slots[index as usize];
        list.head = slot.next;
        if list.head == NIL {
            list.tail = NIL;
        }
        slot.next = self.free_head;
        self.free_head = index;
        self.used -= 1;
        slot.entry.take()
    }

    /// Peeks at the message of `connection` at `priority` that has `older` messages ahead
    /// of it in its list (0: the oldest). O(`older`).
    pub(crate) fn nth_oldest(
        &self,
        connections: &ConnectionTable,
        connection: Slot,
        priority: Priority,
        older: usize,
    ) -> Option<&Entry> {
        let mut index = connections.get(connection).queues[priority.index()].head;
        for _ in 0..older {
            if index == NIL {
                return None;
            }
            index = self.slots[index as usize].next;
        }
        if index == NIL {
            return None;
        }
        self.slots[index as usize].entry.as_ref()
    }

    /// The slab's size: the handler-queue cap.
    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Removes the first queued message of `connection` at `priority` for which `matches`
    /// holds (cancel by id). O(messages of that connection at that priority).
    pub(crate) fn remove_where(
        &mut self,
        connections: &mut ConnectionTable,
        connection: Slot,
        priority: Priority,
        mut matches: impl FnMut(&Entry) -> bool,
    ) -> Option<Entry> {
        let list = connections.get(connection).queues[priority.index()];
        let mut previous = NIL;
        let mut index = list.head;
        // Bounded by the list's length, at most the connection's cap.
        while index != NIL {
            let next = self.slots[index as usize].next;
            if self.slots[index as usize]
                .entry
                .as_ref()
                .is_some_and(&mut matches)
            {
                let list = &mut connections.get_mut(connection).queues[priority.index()];
                if previous == NIL {
                    list.head = next;
                } else {
                    self.slots[previous as usize].next = next;
                }
                if list.tail == index {
                    list.tail = previous;
                }
                let slot = &mut self.slots[index as usize];
                slot.next = self.free_head;
                self.free_head = index;
                self.used -= 1;
                return slot.entry.take();
            }
            previous = index;
            index = next;
        }
        None
    }

    /// Takes the next message to run: the highest priority with work, and within it the
    /// next connection in round-robin order.
    pub(crate) fn pop_next(&mut self, connections: &mut ConnectionTable) -> Option<Entry> {
        for priority in Priority::ALL {
            let ring = priority.index();
            // Bounded: each connection is in the ring at most once, and every pass either
            // returns or removes a connection whose list was emptied by a drop.
            while let Some(connection) = self.round_robin[ring].pop_front() {
                let state = connections.get_mut(connection);
                state.scheduled &= !(1 << ring);
                let Some(entry) = self.pop_oldest(connections, connection, priority) else {
                    continue;
                };
                let state = connections.get_mut(connection);
                if !state.queues[ring].is_empty() {
                    state.scheduled |= 1 << ring;
                    self.round_robin[ring].push_back(connection);
                }
                return Some(entry);
            }
        }
        None
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::message::{ConnectionId, MessageId};

    fn entry(
        connections: &mut ConnectionTable,
        connection: u64,
        id: u64,
        priority: Priority,
    ) -> Entry {
        let (slot, _) = connections
            .find_or_insert(ConnectionId(connection), 0)
            .unwrap();
        Entry {
            message: Message::new(ConnectionId(connection), MessageId(id)).with_priority(priority),
            origin: Origin::LOCAL,
            admitted_ns: 0,
            connection: slot,
            tenant: None,
            tenant_charged: false,
        }
    }

    #[test]
    fn highest_priority_first_then_round_robin_across_connections() {
        let mut connections = ConnectionTable::new(8, 100, 100);
        let mut queue = PendingQueue::new(16, 8);
        for (connection, id, priority) in [
            (1, 10, Priority::P2),
            (1, 11, Priority::P2),
            (1, 12, Priority::P2),
            (2, 20, Priority::P2),
            (3, 30, Priority::P0),
            (2, 21, Priority::P2),
        ] {
            let entry = entry(&mut connections, connection, id, priority);
            queue.push(&mut connections, entry);
        }
        let order: Vec<u64> = core::iter::from_fn(|| queue.pop_next(&mut connections))
            .map(|entry| entry.message.id.0)
            .collect();
        assert_eq!(order, [30, 10, 20, 11, 21, 12]);
        assert_eq!(queue.len(), 0);
    }

    #[test]
    fn removing_by_id_keeps_the_list_intact() {
        let mut connections = ConnectionTable::new(8, 100, 100);
        let mut queue = PendingQueue::new(8, 8);
        for id in 0..4 {
            let entry = entry(&mut connections, 1, id, Priority::P1);
            queue.push(&mut connections, entry);
        }
        let slot = connections.find(ConnectionId(1)).unwrap();
        for id in [3, 1] {
            let removed = queue
                .remove_where(&mut connections, slot, Priority::P1, |entry| {
                    entry.message.id.0 == id
                })
                .unwrap();
            assert_eq!(removed.message.id.0, id);
        }
        assert!(queue
            .remove_where(&mut connections, slot, Priority::P1, |entry| entry
                .message
                .id
                .0
                == 3)
            .is_none());
        let entry = entry(&mut connections, 1, 4, Priority::P1);
        queue.push(&mut connections, entry);
        let order: Vec<u64> = core::iter::from_fn(|| queue.pop_next(&mut connections))
            .map(|entry| entry.message.id.0)
            .collect();
        assert_eq!(order, [0, 2, 4]);
    }

    #[test]
    fn dropping_the_oldest_keeps_the_list_and_free_slots_intact() {
        let mut connections = ConnectionTable::new(8, 100, 100);
        let mut queue = PendingQueue::new(4, 8);
        for id in 0..4 {
            let entry = entry(&mut connections, 1, id, Priority::P1);
            queue.push(&mut connections, entry);
        }
        let slot = connections.find(ConnectionId(1)).unwrap();
        let oldest = queue
            .pop_oldest(&mut connections, slot, Priority::P1)
            .unwrap();
        assert_eq!(oldest.message.id.0, 0);
        // The freed slot is reusable and the new message goes to the back.
        let entry = entry(&mut connections, 1, 4, Priority::P1);
        queue.push(&mut connections, entry);
        let order: Vec<u64> = core::iter::from_fn(|| queue.pop_next(&mut connections))
            .map(|entry| entry.message.id.0)
            .collect();
        assert_eq!(order, [1, 2, 3, 4]);
    }
}
