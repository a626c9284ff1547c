//! What each message carries, and whether an echo came back intact ([`PayloadPlan`]).
//!
//! A message's payload is a function of its connection and id: `bytes` bytes drawn from a
//! SplitMix64 sequence seeded by both. Messages of one run differ (their ids do), so a
//! Reply carrying another message's payload, or one cut short, is caught; and the check
//! regenerates the expected bytes from the completion's own connection and id instead of
//! keeping each payload until its Reply comes: 15,000 connections with a window of
//! messages each cost no memory.

use spillway::client::{RandomSource, SplitMix64};
use spillway::message::{Bytes, ConnectionId, MessageId};

/// The payload each message of a run carries, and whether responses are checked against it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PayloadPlan {
    /// Bytes of payload per message (0: none).
    pub bytes: u32,
    /// Check every delivered message's response against its payload, byte for byte (for a
    /// server whose handler echoes the payload back).
    pub verify_echo: bool,
}

impl PayloadPlan {
    /// The payload of message `id` on `connection`: empty when the plan has none.
    ///
    /// ```
    /// use spillway::message::{ConnectionId, MessageId};
    /// use spillway_loadgen::payload::PayloadPlan;
    ///
    /// let plan = PayloadPlan { bytes: 13, verify_echo: true };
    /// let payload = plan.payload(ConnectionId(2), MessageId(9));
    /// assert_eq!(payload.len(), 13);
    /// assert!(plan.echoed(ConnectionId(2), MessageId(9), &payload));
    /// // Another message's payload, or this one cut short, is not its echo.
    /// assert_ne!(payload, plan.payload(ConnectionId(2), MessageId(10)));
    /// assert!(!plan.echoed(ConnectionId(3), MessageId(9), &payload));
    /// assert!(!plan.echoed(ConnectionId(2), MessageId(9), &payload[..12]));
    /// ```
    pub fn payload(&self, connection: ConnectionId, id: MessageId) -> Bytes {
        if self.bytes == 0 {
            return Bytes::new();
        }
        let length = self.bytes as usize;
        let mut payload = Vec::with_capacity(length);
        let mut draws = draws_of(connection, id);
        while payload.len() < length {
            let word = draws.next_u64().to_le_bytes();
            let take = (length - payload.len()).min(word.len());
            payload.extend_from_slice(&word[..take]);
        }
        Bytes::from(payload)
    }

    /// Whether `response` is exactly the payload of message `id` on `connection`, length
    /// included; compared as it is regenerated, without allocating.
    pub fn echoed(&self, connection: ConnectionId, id: MessageId, response: &[u8]) -> bool {
        if response.len() != self.bytes as usize {
            return false;
        }
        let mut draws = draws_of(connection, id);
        response.chunks(size_of::<u64>()).all(|chunk| {
            let word = draws.next_u64().to_le_bytes();
            chunk == &word[..chunk.len()]
        })
    }
}

/// What the check of echoed responses found, whole run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EchoCheck {
    /// Delivered messages whose response was checked.
    pub checked: u64,
    /// Those whose response was not their payload, byte for byte and length included.
    pub mismatches: u64,
}

/// The sequence message `id` on `connection` draws its bytes from. The seed is itself one
/// draw, so that two messages whose raw seeds differ by SplitMix64's increment do not get
/// the same bytes shifted by one word.
fn draws_of(connection: ConnectionId, id: MessageId) -> SplitMix64 {
    let connection_key = SplitMix64::new(connection.0).next_u64();
    SplitMix64::new(SplitMix64::new(connection_key ^ id.0).next_u64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_differ_per_message_and_check_byte_for_byte() {
        let plan = PayloadPlan {
            bytes: 64,
            verify_echo: true,
        };
        let payload = plan.payload(ConnectionId(0), MessageId(0));
        assert_eq!(payload, plan.payload(ConnectionId(0), MessageId(0)));
        for (connection, id) in [(0, 1), (1, 0), (1, 1), (7, 1_000_000)] {
            assert_ne!(
                payload,
                plan.payload(ConnectionId(connection), MessageId(id))
            );
        }
        for index in 0..payload.len() {
            let mut corrupted = payload.to_vec();
            corrupted[index] ^= 0x01;
            assert!(!plan.echoed(ConnectionId(0), MessageId(0), &corrupted));
        }
        let mut longer = payload.to_vec();
        longer.push(0);
        assert!(!plan.echoed(ConnectionId(0), MessageId(0), &longer));
        assert!(plan.echoed(ConnectionId(0), MessageId(0), &payload));
        let none = PayloadPlan::default();
        assert!(none.payload(ConnectionId(0), MessageId(0)).is_empty());
        assert!(none.echoed(ConnectionId(0), MessageId(0), b""));
        assert!(!none.echoed(ConnectionId(0), MessageId(0), b"x"));
    }
}
