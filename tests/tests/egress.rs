//! Egress flow control (SPEC 4) as a property: over random sequences of offers, pops, batch
//! drains, closes, signal polls and clock jumps, under each drop policy and random
//! thresholds, the send buffer never holds more than its capacity, it behaves as a simple
//! reference model of the policy (same items, same order, same drops), and after every step
//! `offered = sent + dropped + buffered`, the drops by reason sum to the drops, and the drops
//! reported to the client plus those not yet reported are all of them. Failing cases are
//! saved next to this file, in `egress.regressions`.

use std::collections::VecDeque;

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use spillway::config::{EgressConfig, EgressDropPolicy};
use spillway::net::egress::{EgressDropReason, EgressQueue, FlowSignal, FlowState, Offer};

#[derive(Clone, Debug)]
enum Step {
    Offer,
    Pop,
    Drain { max_items: usize },
    Close,
    Poll,
    Report,
    Advance { ns: u64 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        10 => Just(Step::Offer),
        4 => Just(Step::Pop),
        1 => (0usize..12).prop_map(|max_items| Step::Drain { max_items }),
        1 => Just(Step::Close),
        2 => Just(Step::Poll),
        1 => Just(Step::Report),
        3 => (0u64..80_000_000).prop_map(|ns| Step::Advance { ns }),
    ]
}

const POLICIES: [EgressDropPolicy; 4] = [
    EgressDropPolicy::DropOldest,
    EgressDropPolicy::DropNewest,
    EgressDropPolicy::Block,
    EgressDropPolicy::DropAll,
];

fn config() -> impl Strategy<Value = EgressConfig> {
    (
        0usize..POLICIES.len(),
        1u32..40,
        2u32..=100,
        0u32..100,
        0u64..600_000_000,
        1_000u64..100_000_000,
        1_000u64..100_000_000,
    )
        .prop_map(
            |(policy, capacity, pause_percent, throttle_seed, delay_max_ns, pause_ns, block_ns)| {
                EgressConfig {
                    buffer_capacity: capacity,
                    pause_percent,
                    throttle_percent: 1 + throttle_seed % (pause_percent - 1),
                    throttle_delay_min_ns: delay_max_ns / 3,
                    throttle_delay_max_ns: delay_max_ns,
                    pause_duration_ns: pause_ns,
                    drop_policy: POLICIES[policy],
                    block_timeout_ns: block_ns,
                    ..EgressConfig::default()
                }
            },
        )
}

/// The caller's side, and what the queue should hold: a plain deque run by the policy.
struct Model {
    config: EgressConfig,
    buffer: VecDeque<u64>,
    /// A reply handed back by `Offer::Blocked`, with its deadline, offered again before any
    /// new one.
    held: Option<(u64, u64)>,
    next_item: u64,
    offered: u64,
    sent: u64,
    dropped: u64,
    reported: u64,
    last_sent: Option<u64>,
    last_signal: Option<FlowSignal>,
}

impl Model {
    fn new(config: EgressConfig) -> Self {
        Self {
            config,
            buffer: VecDeque::new(),
            held: None,
            next_item: 0,
            offered: 0,
            sent: 0,
            dropped: 0,
            reported: 0,
            last_sent: None,
            last_signal: None,
        }
    }

    fn capacity(&self) -> usize {
        self.config.buffer_capacity as usize
    }

    /// What the reference expects of offering `item` at `now_ns`, which under `Block` may
    /// wait for room until `deadline_ns`.
    fn offer(&mut self, item: u64, deadline_ns: u64, now_ns: u64) -> Expected {
        if self.buffer.len() < self.capacity() {
            self.buffer.push_back(item);
            self.offered += 1;
            return Expected::Queued;
        }
        match self.config.drop_policy {
            EgressDropPolicy::DropOldest => {
                let oldest = self.buffer.pop_front().unwrap();
                self.buffer.push_back(item);
                self.offered += 1;
                self.dropped += 1;
                Expected::Dropped(oldest, EgressDropReason::DropOldest)
            }
            EgressDropPolicy::DropNewest => {
                self.offered += 1;
                self.dropped += 1;
                Expected::Dropped(item, EgressDropReason::DropNewest)
            }
            EgressDropPolicy::Block => {
                if now_ns < deadline_ns {
                    return Expected::Blocked(item, deadline_ns);
                }
                self.offered += 1;
                self.dropped += 1;
                Expected::Dropped(item, EgressDropReason::BlockTimeout)
            }
            EgressDropPolicy::DropAll => {
                let count = self.buffer.len() as u32;
                self.buffer.clear();
                self.buffer.push_back(item);
                self.offered += 1;
                self.dropped += u64::from(count);
                Expected::DroppedAll(count)
            }
        }
    }

    fn sent(&mut self, item: u64) -> Result<(), TestCaseError> {
        prop_assert_eq!(self.buffer.pop_front(), Some(item));
        // Replies leave in the order they were offered.
        prop_assert!(self.last_sent.is_none_or(|last| last < item));
        self.last_sent = Some(item);
        self.sent += 1;
        Ok(())
    }

    /// A signal is never the same instruction twice in a row, except a new pause.
    fn signal(&mut self, signal: FlowSignal) -> Result<(), TestCaseError> {
        match (self.last_signal, signal) {
            (Some(FlowSignal::Resume), FlowSignal::Resume) => {
                prop_assert!(false, "Resume twice in a row")
            }
            (Some(FlowSignal::Throttle { delay_ns: last }), FlowSignal::Throttle { delay_ns }) => {
                prop_assert_ne!(last, delay_ns)
            }
            (None, FlowSignal::Resume) => prop_assert!(false, "Resume before any other signal"),
            _ => {}
        }
        if let FlowSignal::Pause { duration_ns } = signal {
            prop_assert!(duration_ns > 0 && duration_ns <= self.config.pause_duration_ns);
        }
        self.last_signal = Some(signal);
        Ok(())
    }
}

#[derive(Debug, PartialEq)]
enum Expected {
    Queued,
    Dropped(u64, EgressDropReason),
    Blocked(u64, u64),
    DroppedAll(u32),
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn buffer_stays_bounded_and_counters_reconcile_under_every_policy(
        config in config(),
        steps in proptest::collection::vec(step(), 1..400),
    ) {
        let mut queue = EgressQueue::new(config).unwrap();
        let mut model = Model::new(config);
        let mut now_ns = 0u64;
        let mut batch = Vec::new();
        for step in steps {
            match step {
                Step::Offer => {
                    let (item, deadline_ns, offer) = match model.held.take() {
                        Some((item, deadline_ns)) => {
                            (item, deadline_ns, queue.offer_again(item, deadline_ns, now_ns))
                        }
                        None => {
                            model.next_item += 1;
                            let item = model.next_item;
                            // A new reply waits for room from now.
                            let deadline_ns = now_ns + config.block_timeout_ns;
                            (item, deadline_ns, queue.offer(item, now_ns))
                        }
                    };
                    let expected = model.offer(item, deadline_ns, now_ns);
                    let (got, signal) = match offer {
                        Offer::Queued { signal } => (Expected::Queued, signal),
                        Offer::Dropped { item, reason } => (Expected::Dropped(item, reason), None),
                        Offer::Blocked { item, deadline_ns } => {
                            model.held = Some((item, deadline_ns));
                            (Expected::Blocked(item, deadline_ns), None)
                        }
                        Offer::DroppedAll { dropped_count, signal } => {
                            (Expected::DroppedAll(dropped_count), signal)
                        }
                        Offer::DroppedOldest { .. } => {
                            return Err(TestCaseError::fail("items without a size evict one at a time"));
                        }
                    };
                    prop_assert_eq!(got, expected);
                    if let Some(signal) = signal {
                        model.signal(signal)?;
                    }
                }
                Step::Pop => {
                    let front = queue.front().copied();
                    let popped = queue.pop(now_ns);
                    prop_assert_eq!(popped, front);
                    prop_assert_eq!(popped, model.buffer.front().copied());
                    if let Some(item) = popped {
                        model.sent(item)?;
                    }
                }
                Step::Drain { max_items } => {
                    batch.clear();
                    let count = queue.drain_into(&mut batch, max_items, now_ns);
                    prop_assert_eq!(count, batch.len());
                    prop_assert_eq!(count, max_items.min(model.buffer.len()));
                    for &item in &batch {
                        model.sent(item)?;
                    }
                }
                Step::Close => {
                    let dropped = queue.close(now_ns);
                    prop_assert_eq!(dropped, model.buffer.len() as u64);
                    model.dropped += dropped;
                    model.buffer.clear();
                }
                Step::Poll => {
                    if let Some(signal) = queue.poll_signal(now_ns) {
                        model.signal(signal)?;
                    }
                    // Each signal is handed out once.
                    prop_assert_eq!(queue.poll_signal(now_ns), None);
                }
                Step::Report => model.reported += queue.dropped_since_last_report(),
                Step::Advance { ns } => now_ns += ns,
            }

            let stats = queue.stats(now_ns);
            prop_assert!(queue.len() <= config.buffer_capacity as usize);
            prop_assert_eq!(queue.len(), model.buffer.len());
            prop_assert_eq!(stats.buffered as usize, queue.len());
            prop_assert_eq!(stats.buffer_capacity, config.buffer_capacity);
            prop_assert_eq!(stats.sent, model.sent);
            prop_assert_eq!(stats.dropped, model.dropped);
            prop_assert_eq!(
                stats.sent + stats.dropped + u64::from(stats.buffered),
                model.offered
            );
            prop_assert_eq!(stats.dropped, stats.dropped_by_reason.iter().sum::<u64>());
            prop_assert_eq!(
                stats.state == FlowState::Dropping,
                queue.len() == config.buffer_capacity as usize
            );
            prop_assert_eq!(queue.state(now_ns), stats.state);
        }
        prop_assert_eq!(
            model.reported + queue.dropped_since_last_report(),
            queue.stats(now_ns).dropped
        );
    }
}
