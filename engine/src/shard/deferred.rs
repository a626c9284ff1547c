//! Messages a handler took and will answer later ([`ShardContext::defer`]): each is held
//! here, under a [`Ticket`], from the handler run that deferred it until
//! [`ShardContext::complete`] (or a failure: a drain's deadline, shutdown, a lost shard)
//! finishes it.
//!
//! A slab of slots, each with a generation that changes whenever the slot is freed, so a
//! ticket names one message once: an answer that comes after its message was finished
//! otherwise (a late worker, after a drain's deadline) finds a newer generation and is told
//! so, never finishing another message. The table holds at most `caps.handler_queue`
//! messages, the same bound as the queue they come from: a shard whose table is full runs
//! no more handlers until one is answered, and the queue keeps the rest (with its caps).
//!
//! [`ShardContext::defer`]: super::handler::ShardContext::defer
//! [`ShardContext::complete`]: super::handler::ShardContext::complete

use super::connections::Slot;
use super::queue::Entry;

/// Names one deferred message on its shard, from [`ShardContext::defer`] to
/// [`ShardContext::complete`]. Copy it freely; once its message is finished every copy is
/// stale, and a stale ticket finishes nothing.
///
/// [`ShardContext::defer`]: super::handler::ShardContext::defer
/// [`ShardContext::complete`]: super::handler::ShardContext::complete
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ticket {
    /// The slot in the shard's table, `0 .. caps.handler_queue`.
    slot: u32,
    /// The slot's generation when the ticket was given; wraps after 2^32 uses of one slot.
    generation: u32,
}

impl Ticket {
    /// A number unique among the tickets outstanding on one shard (slot and generation
    /// together), for protocols that must name the message to someone else.
    pub fn to_u64(self) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(self.slot)
    }

    /// The ticket [`to_u64`](Self::to_u64) gave.
    pub fn from_u64(value: u64) -> Self {
        Self {
            slot: value as u32,
            generation: (value >> 32) as u32,
        }
    }
}

/// A deferred message and when its handler took it.
#[derive(Debug)]
pub(crate) struct Held {
    pub(crate) entry: Entry,
    /// When the handler run that deferred it began (engine clock, ns).
    pub(crate) taken_ns: u64,
}

#[derive(Debug)]
enum State {
    Free,
    /// Given out by `defer` during a handler run, filled when the run returns.
    Reserved,
    Held(Held),
}

#[derive(Debug)]
struct DeferredSlot {
    generation: u32,
    state: State,
}

/// The shard's deferred messages.
#[derive(Debug)]
pub(crate) struct DeferredTable {
    slots: Vec<DeferredSlot>,
    /// Free slot indices; slots grow on demand up to `capacity`.
    free: Vec<u32>,
    /// Slots reserved or held.
    used: usize,
    capacity: usize,
}

impl DeferredTable {
    /// Room for `capacity` messages (`caps.handler_queue`). Slots are made as they are first
    /// needed, so a shard whose handler never defers spends nothing on them.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            used: 0,
            capacity,
        }
    }

    /// Messages held or reserved.
    pub(crate) fn len(&self) -> usize {
        self.used
    }

    /// Whether another message may be deferred.
    pub(crate) fn has_room(&self) -> bool {
        self.used < self.capacity
    }

    /// A slot for a message being deferred, or `None` when the table is full.
    pub(crate) fn reserve(&mut self) -> Option<Ticket> {
        if !self.has_room() {
            return None;
        }
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.slots.push(DeferredSlot {
                    generation: 0,
                    state: State::Free,
                });
                // At most `capacity` (`caps.handler_queue`, at most 2^24) slots.
                (self.slots.len() - 1) as u32
            }
        };
        let place = &mut self.slots[slot as usize];
        debug_assert!(matches!(place.state, State::Free));
        place.state = State::Reserved;
        self.used += 1;
        Some(Ticket {
            slot,
            generation: place.generation,
        })
    }

    /// Puts the message of the run that reserved `ticket` in its slot.
    pub(crate) fn fill(&mut self, ticket: Ticket, held: Held) {
        let place = &mut self.slots[ticket.slot as usize];
        debug_assert!(place.generation == ticket.generation);
        debug_assert!(matches!(place.state, State::Reserved));
        place.state = State::Held(held);
    }

    /// Gives back a reservation whose run did not defer after all (it failed or panicked).
    pub(crate) fn release(&mut self, ticket: Ticket) {
        let place = &mut self.slots[ticket.slot as usize];
        if place.generation == ticket.generation && matches!(place.state, State::Reserved) {
            self.free_slot(ticket.slot);
        }
    }

    /// The message `ticket` holds, if it is current.
    pub(crate) fn get(&self, ticket: Ticket) -> Option<&Held> {
        match self.slots.get(ticket.slot as usize) {
            Some(DeferredSlot {
                generation,
                state: State::Held(held),
            }) if *generation == ticket.generation => Some(held),
            _ => None,
        }
    }

    /// Takes the message `ticket` holds, if it is current.
    pub(crate) fn take(&mut self, ticket: Ticket) -> Option<Held> {
        self.get(ticket)?;
        self.take_slot(ticket.slot)
    }

    /// Takes every message held for `connection`.
    pub(crate) fn take_of_connection(&mut self, connection: Slot, out: &mut Vec<Held>) {
        for slot in 0..self.slots.len() {
            if matches!(&self.slots[slot].state, State::Held(held) if held.entry.connection == connection)
            {
                out.extend(self.take_slot(slot as u32));
            }
        }
    }

    /// Takes every message held.
    pub(crate) fn take_all(&mut self, out: &mut Vec<Held>) {
        for slot in 0..self.slots.len() {
            if matches!(self.slots[slot].state, State::Held(_)) {
                out.extend(self.take_slot(slot as u32));
            }
        }
    }

    fn take_slot(&mut self, slot: u32) -> Option<Held> {
        let place = &mut self.slots[slot as usize];
        let State::Held(held) = core::mem::replace(&mut place.state, State::Free) else {
            return None;
        };
        place.state = State::Reserved;
        self.free_slot(slot);
        Some(held)
    }

    fn free_slot(&mut self, slot: u32) {
        let place = &mut self.slots[slot as usize];
        place.state = State::Free;
        place.generation = place.generation.wrapping_add(1);
        self.used -= 1;
        self.free.push(slot);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_names_its_message_once_and_the_table_keeps_its_bound() {
        let mut table = DeferredTable::new(2);
        let first = table.reserve().unwrap();
        let second = table.reserve().unwrap();
        assert!(table.reserve().is_none(), "bounded by its capacity");
        table.release(second);
        assert_eq!(table.len(), 1);
        let again = table.reserve().unwrap();
        assert_ne!(
            again, second,
            "a freed slot comes back with a new generation"
        );
        assert_eq!(Ticket::from_u64(again.to_u64()), again);
        table.release(first);
        // A stale ticket finds nothing.
        assert!(table.get(first).is_none());
        assert!(table.take(second).is_none());
        assert_eq!(table.len(), 1);
    }
}
