//! The health verdict by drop rate ([`EgressHealth`]) and the rolling window of offers and
//! drops it is computed over.

#[cfg(doc)]
use super::EgressConfig;
use super::HEALTH_WINDOW_SLOTS;

/// The health of a connection by its drop rate over the window (SPEC 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EgressHealth {
    /// Drop rate under `warning_drop_percent`, or fewer than `health_min_offered` offers in
    /// the window.
    Healthy,
    /// Drop rate from `warning_drop_percent` up to `unhealthy_drop_percent`.
    Warning,
    /// Drop rate over `unhealthy_drop_percent`.
    Unhealthy {
        /// The configuration says to disconnect unhealthy clients
        /// ([`EgressConfig::disconnect_unhealthy`]).
        recommend_disconnect: bool,
    },
}

/// Offers and drops in one slot of the health window.
#[derive(Clone, Copy, Debug, Default)]
struct HealthSlot {
    /// `now_ns / slot_ns` of the counts below; a slot of another period is stale.
    period: u64,
    offered: u64,
    dropped: u64,
}

/// A rolling count of offers and drops over the last `HEALTH_WINDOW_SLOTS` slots of time.
#[derive(Clone, Debug)]
pub(super) struct HealthWindow {
    /// Length of a slot, in ns: at least 1 ms (the window is at least 10 ms).
    slot_ns: u64,
    slots: [HealthSlot; HEALTH_WINDOW_SLOTS],
}

impl HealthWindow {
    pub(super) fn new(window_ns: u64) -> Self {
        Self {
            slot_ns: (window_ns / HEALTH_WINDOW_SLOTS as u64).max(1),
            slots: [HealthSlot::default(); HEALTH_WINDOW_SLOTS],
        }
    }

    pub(super) fn record(&mut self, now_ns: u64, offered: u64, dropped: u64) {
        let period = now_ns / self.slot_ns;
        let slot = &mut self.slots[(period % HEALTH_WINDOW_SLOTS as u64) as usize];
        if slot.period != period {
            *slot = HealthSlot {
                period,
                offered: 0,
                dropped: 0,
            };
        }
        slot.offered += offered;
        slot.dropped += dropped;
    }

    /// `(offered, dropped)` in the slots of the window that ends at `now_ns`.
    pub(super) fn totals(&self, now_ns: u64) -> (u64, u64) {
        let current = now_ns / self.slot_ns;
        self.slots
            .iter()
            .filter(|slot| {
                slot.period <= current && current - slot.period < HEALTH_WINDOW_SLOTS as u64
            })
            .fold((0, 0), |(offered, dropped), slot| {
                (offered + slot.offered, dropped + slot.dropped)
            })
    }
}
