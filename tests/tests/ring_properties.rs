//! Property tests of the SPSC and MPMC rings against a `VecDeque` model: for random
//! sequences of single and batch operations, every answer (accepted, refused, popped) matches
//! the model, so order is FIFO and nothing is lost or duplicated; items left in a ring are
//! dropped exactly once when its last half goes. Failing cases are saved by proptest under
//! `proptest-regressions/`.

use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use spillway::ring::{spsc, Mpmc};

#[derive(Clone, Debug)]
enum Operation {
    Push,
    PushSlice(usize),
    PushIter(usize),
    Pop,
    PopInto(usize),
    PopSlice(usize),
    PopEach(usize),
}

fn operation() -> impl Strategy<Value = Operation> {
    prop_oneof![
        Just(Operation::Push),
        (0usize..40).prop_map(Operation::PushSlice),
        (0usize..40).prop_map(Operation::PushIter),
        Just(Operation::Pop),
        (0usize..40).prop_map(Operation::PopInto),
        (0usize..40).prop_map(Operation::PopSlice),
        (0usize..40).prop_map(Operation::PopEach),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn spsc_matches_a_bounded_fifo_model(
        capacity in 1usize..33,
        operations in proptest::collection::vec(operation(), 1..300),
    ) {
        let (mut producer, mut consumer) = spsc::channel::<u64>(capacity);
        let mut model = VecDeque::new();
        let mut next_value = 0u64;
        for operation in operations {
            match operation {
                Operation::Push => {
                    let accepted = producer.push(next_value).is_ok();
                    prop_assert_eq!(accepted, model.len() < capacity);
                    if accepted {
                        model.push_back(next_value);
                        next_value += 1;
                    }
                }
                Operation::PushSlice(count) | Operation::PushIter(count) => {
                    let values: Vec<u64> = (next_value..next_value + count as u64).collect();
                    let pushed = if matches!(operation, Operation::PushSlice(_)) {
                        producer.push_slice(&values)
                    } else {
                        let mut items = values.iter().copied();
                        let pushed = producer.push_iter(&mut items);
                        // What did not fit is still in the iterator, in order.
                        prop_assert_eq!(items.next(), values.get(pushed).copied());
                        pushed
                    };
                    prop_assert_eq!(pushed, count.min(capacity - model.len()));
                    model.extend(&values[..pushed]);
                    next_value += pushed as u64;
                }
                Operation::Pop => prop_assert_eq!(consumer.pop(), model.pop_front()),
                Operation::PopInto(max) => {
                    let mut out = vec![u64::MAX];
                    let popped = consumer.pop_into(&mut out, max);
                    let expected: Vec<u64> = model.drain(..max.min(model.len())).collect();
                    prop_assert_eq!(popped, expected.len());
                    prop_assert_eq!(&out[1..], &expected[..]);
                }
                Operation::PopSlice(length) if length % 2 == 1 => {
                    // Odd lengths go through the slice view: runs must be oldest first, and
                    // the second non-empty only when the first reaches the buffer's end.
                    let (popped, seen) = consumer.pop_slices(length, |first, second| {
                        first.iter().chain(second).copied().collect::<Vec<u64>>()
                    });
                    let expected: Vec<u64> = model.drain(..length.min(model.len())).collect();
                    prop_assert_eq!(popped, expected.len());
                    prop_assert_eq!(seen, expected);
                }
                Operation::PopSlice(length) => {
                    let mut out = vec![u64::MAX; length];
                    let popped = consumer.pop_slice(&mut out);
                    let expected: Vec<u64> = model.drain(..length.min(model.len())).collect();
                    prop_assert_eq!(&out[..popped], &expected[..]);
                    prop_assert!(out[popped..].iter().all(|&untouched| untouched == u64::MAX));
                }
                Operation::PopEach(max) => {
                    let mut seen = Vec::new();
                    let popped = consumer.pop_each(max, |value| seen.push(value));
                    let expected: Vec<u64> = model.drain(..max.min(model.len())).collect();
                    prop_assert_eq!(popped, expected.len());
                    prop_assert_eq!(seen, expected);
                }
            }
            prop_assert_eq!(producer.len(), model.len());
            prop_assert_eq!(consumer.len(), model.len());
            prop_assert_eq!(consumer.is_empty(), model.is_empty());
            prop_assert_eq!(producer.is_full(), model.len() == capacity);
        }
    }

    #[test]
    fn spsc_drops_every_item_exactly_once(
        capacity in 1usize..17,
        pushes in 0usize..40,
        pops in 0usize..40,
        producer_dropped_first in any::<bool>(),
    ) {
        let drops = Rc::new(Cell::new(0usize));
        let (mut producer, mut consumer) = spsc::channel(capacity);
        let mut created = 0;
        for _ in 0..pushes {
            created += 1;
            // A refused item comes back in Err and is dropped here, also counted.
            let _ = producer.push(DropCounter(Rc::clone(&drops)));
        }
        for _ in 0..pops {
            drop(consumer.pop());
        }
        if producer_dropped_first {
            drop(producer);
            drop(consumer);
        } else {
            drop(consumer);
            drop(producer);
        }
        prop_assert_eq!(drops.get(), created);
    }

    #[test]
    fn mpmc_matches_a_bounded_fifo_model(
        capacity in 1usize..33,
        operations in proptest::collection::vec(operation(), 1..300),
    ) {
        let ring = Mpmc::new(capacity);
        let mut model = VecDeque::new();
        let mut next_value = 0u64;
        for operation in operations {
            match operation {
                Operation::Push => {
                    let accepted = ring.push(next_value).is_ok();
                    prop_assert_eq!(accepted, model.len() < capacity);
                    if accepted {
                        model.push_back(next_value);
                        next_value += 1;
                    }
                }
                Operation::PushSlice(count) | Operation::PushIter(count) => {
                    let mut items = next_value..next_value + count as u64;
                    let room = capacity - model.len();
                    let pushed = match ring.push_iter(&mut items) {
                        Ok(pushed) => {
                            prop_assert!(count <= room);
                            pushed
                        }
                        Err((pushed, refused)) => {
                            prop_assert_eq!(refused, next_value + pushed as u64);
                            pushed
                        }
                    };
                    prop_assert_eq!(pushed, count.min(room));
                    model.extend(next_value..next_value + pushed as u64);
                    next_value += pushed as u64;
                }
                Operation::Pop => prop_assert_eq!(ring.pop(), model.pop_front()),
                Operation::PopInto(max) | Operation::PopSlice(max) | Operation::PopEach(max) => {
                    let mut out = Vec::new();
                    let popped = ring.pop_into(&mut out, max);
                    let expected: Vec<u64> = model.drain(..max.min(model.len())).collect();
                    prop_assert_eq!(popped, expected.len());
                    prop_assert_eq!(out, expected);
                }
            }
            prop_assert_eq!(ring.len(), model.len());
        }
    }
}

struct DropCounter(Rc<Cell<usize>>);

impl Drop for DropCounter {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}
