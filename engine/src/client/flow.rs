//! The client's side of egress flow control (`docs/PROTOCOL.md` section 9): what Throttle,
//! Pause and Resume frames mean for the next Submit, as plain data with the clock passed in.

use crate::net::egress::FlowSignal;

/// The pacing the server's flow signals ask of a client (`docs/PROTOCOL.md` section 9,
/// "What a client does"): a delay `d` to wait after each Submit before the next, and a
/// pause deadline `p` before which no Submit may go.
///
/// | signal | effect |
/// |---|---|
/// | Throttle `delay_ns` | `d = delay_ns`, clear `p` |
/// | Pause `duration_ns` | `p = now + duration_ns` (`d` kept for after the pause) |
/// | Resume | `d = 0`, clear `p` |
///
/// Plain data: every method that depends on time takes `now_ns`, monotonic nanoseconds
/// from [`Clock::now_ns`](crate::clock::Clock::now_ns) (or a test's hand-made reading),
/// and the struct never reads a clock itself. Sums saturate at `u64::MAX`, which is 584
/// years of nanoseconds: a deadline that far is "never" for every practical purpose.
///
/// ```
/// use spillway::client::FlowState;
/// use spillway::net::egress::FlowSignal;
///
/// let mut flow = FlowState::new();
/// flow.on_submit(1_000);
/// assert_eq!(flow.next_submit_at_ns(), 1_000); // full speed
///
/// flow.apply(FlowSignal::Throttle { delay_ns: 500 }, 1_100);
/// assert_eq!(flow.next_submit_at_ns(), 1_500); // 500 ns after the last Submit
///
/// flow.apply(FlowSignal::Pause { duration_ns: 2_000 }, 1_200);
/// assert_eq!(flow.next_submit_at_ns(), 3_200); // not before the pause ends
/// assert_eq!(flow.wait_ns(1_200), 2_000);
///
/// flow.apply(FlowSignal::Resume, 1_300);
/// assert_eq!(flow.wait_ns(1_300), 0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowState {
    /// `d`: the wait after each Submit before the next, in ns; 0 at full speed.
    delay_ns: u64,
    /// `p`: no Submit before this reading of the clock, in ns; `None` when not paused.
    pause_until_ns: Option<u64>,
    /// When the last Submit was written, in ns; `None` before the first.
    last_submit_ns: Option<u64>,
}

impl FlowState {
    /// Full speed: no delay, no pause, no Submit yet.
    pub const fn new() -> Self {
        Self {
            delay_ns: 0,
            pause_until_ns: None,
            last_submit_ns: None,
        }
    }

    /// Applies a flow signal received at `now_ns`, per the table above.
    pub fn apply(&mut self, signal: FlowSignal, now_ns: u64) {
        match signal {
            FlowSignal::Throttle { delay_ns } => {
                self.delay_ns = delay_ns;
                self.pause_until_ns = None;
            }
            FlowSignal::Pause { duration_ns } => {
                self.pause_until_ns = Some(now_ns.saturating_add(duration_ns));
            }
            FlowSignal::Resume => {
                self.delay_ns = 0;
                self.pause_until_ns = None;
            }
        }
    }

    /// Records that a Submit was written at `now_ns`: the next one waits `d` from here.
    pub fn on_submit(&mut self, now_ns: u64) {
        self.last_submit_ns = Some(now_ns);
    }

    /// The earliest clock reading at which the next Submit may be written: `d` after the
    /// last Submit, and not before the pause deadline. `0` when nothing holds it back.
    pub fn next_submit_at_ns(&self) -> u64 {
        let after_delay_ns = self
            .last_submit_ns
            .map_or(0, |last_ns| last_ns.saturating_add(self.delay_ns));
        after_delay_ns.max(self.pause_until_ns.unwrap_or(0))
    }

    /// How long a Submit wanted at `now_ns` must wait, in ns; `0` if it may go now.
    pub fn wait_ns(&self, now_ns: u64) -> u64 {
        self.next_submit_at_ns().saturating_sub(now_ns)
    }

    /// The current delay `d`, in ns.
    pub fn delay_ns(&self) -> u64 {
        self.delay_ns
    }

    /// The pause deadline `p`, if a Pause was received and not cleared since (it may have
    /// passed already: see [`FlowState::is_paused`]).
    pub fn pause_until_ns(&self) -> Option<u64> {
        self.pause_until_ns
    }

    /// Whether a pause holds Submits back at `now_ns`.
    pub fn is_paused(&self, now_ns: u64) -> bool {
        self.pause_until_ns
            .is_some_and(|pause_until_ns| now_ns < pause_until_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn starts_at_full_speed() {
        let flow = FlowState::new();
        assert_eq!(flow, FlowState::default());
        assert_eq!(flow.delay_ns(), 0);
        assert_eq!(flow.pause_until_ns(), None);
        assert_eq!(flow.wait_ns(0), 0);
        assert_eq!(flow.wait_ns(u64::MAX), 0);
    }

    #[test]
    fn throttle_sets_the_delay_after_each_submit_and_clears_a_pause() {
        let mut flow = FlowState::new();
        flow.apply(
            FlowSignal::Pause {
                duration_ns: 50 * MS,
            },
            0,
        );
        flow.apply(FlowSignal::Throttle { delay_ns: 10 * MS }, MS);
        assert_eq!(flow.pause_until_ns(), None);
        assert_eq!(flow.delay_ns(), 10 * MS);
        // No Submit yet: nothing to wait after.
        assert_eq!(flow.wait_ns(MS), 0);
        flow.on_submit(2 * MS);
        assert_eq!(flow.next_submit_at_ns(), 12 * MS);
        assert_eq!(flow.wait_ns(2 * MS), 10 * MS);
        assert_eq!(flow.wait_ns(11 * MS), MS);
        assert_eq!(flow.wait_ns(12 * MS), 0);
        // An idle client owes nothing: the delay runs from the last Submit.
        assert_eq!(flow.wait_ns(100 * MS), 0);
    }

    #[test]
    fn a_newer_throttle_replaces_the_delay() {
        let mut flow = FlowState::new();
        flow.on_submit(0);
        flow.apply(FlowSignal::Throttle { delay_ns: 10 * MS }, 0);
        flow.apply(FlowSignal::Throttle { delay_ns: 3 * MS }, 0);
        assert_eq!(flow.next_submit_at_ns(), 3 * MS);
    }

    #[test]
    fn pause_holds_submits_until_its_deadline_then_the_delay_applies_again() {
        let mut flow = FlowState::new();
        flow.apply(FlowSignal::Throttle { delay_ns: 5 * MS }, 0);
        flow.on_submit(10 * MS);
        flow.apply(
            FlowSignal::Pause {
                duration_ns: 50 * MS,
            },
            12 * MS,
        );
        assert_eq!(flow.pause_until_ns(), Some(62 * MS));
        assert_eq!(flow.delay_ns(), 5 * MS, "a pause keeps d for afterwards");
        assert!(flow.is_paused(12 * MS));
        assert!(flow.is_paused(62 * MS - 1));
        assert!(!flow.is_paused(62 * MS));
        assert_eq!(flow.wait_ns(12 * MS), 50 * MS);
        assert_eq!(flow.wait_ns(62 * MS), 0);
        // After the pause, Submits go on at delay d.
        flow.on_submit(62 * MS);
        assert_eq!(flow.next_submit_at_ns(), 67 * MS);
    }

    #[test]
    fn a_newer_pause_moves_the_deadline_from_its_own_arrival() {
        let mut flow = FlowState::new();
        flow.apply(
            FlowSignal::Pause {
                duration_ns: 50 * MS,
            },
            0,
        );
        flow.apply(
            FlowSignal::Pause {
                duration_ns: 50 * MS,
            },
            40 * MS,
        );
        assert_eq!(flow.pause_until_ns(), Some(90 * MS));
        // A shorter pause arriving later can also bring it forward: p = now + duration.
        flow.apply(FlowSignal::Pause { duration_ns: MS }, 41 * MS);
        assert_eq!(flow.pause_until_ns(), Some(42 * MS));
    }

    #[test]
    fn resume_clears_the_delay_and_the_pause() {
        let mut flow = FlowState::new();
        flow.apply(FlowSignal::Throttle { delay_ns: 5 * MS }, 0);
        flow.apply(
            FlowSignal::Pause {
                duration_ns: 50 * MS,
            },
            0,
        );
        flow.on_submit(0);
        flow.apply(FlowSignal::Resume, MS);
        assert_eq!(flow.delay_ns(), 0);
        assert_eq!(flow.pause_until_ns(), None);
        assert!(!flow.is_paused(MS));
        assert_eq!(flow.wait_ns(MS), 0);
    }

    #[test]
    fn deadlines_saturate_instead_of_wrapping() {
        let mut flow = FlowState::new();
        flow.apply(
            FlowSignal::Pause {
                duration_ns: u64::MAX,
            },
            10,
        );
        assert_eq!(flow.pause_until_ns(), Some(u64::MAX));
        flow.apply(FlowSignal::Throttle { delay_ns: u64::MAX }, 10);
        flow.on_submit(10);
        assert_eq!(flow.next_submit_at_ns(), u64::MAX);
    }
}
