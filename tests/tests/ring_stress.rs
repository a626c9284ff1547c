//! Cross-thread stress of the SPSC ring, bounded in count: a producer and a consumer on two
//! threads with batch sizes that vary from call to call, across capacities including 1 and
//! sizes that are not powers of two. Checks order and completeness, not speed.

use spillway::ring::spsc;

fn transfer(capacity: usize, count: u64, seed: u64) {
    let (mut producer, mut consumer) = spsc::channel::<u64>(capacity);
    let sender = std::thread::spawn(move || {
        let mut random = seed;
        let mut next = 0;
        while next < count {
            random ^= random << 13;
            random ^= random >> 7;
            random ^= random << 17;
            let batch = 1 + random % 9;
            let pushed = if random & 1 == 0 {
                producer.push_iter(&mut (next..(next + batch).min(count))) as u64
            } else {
                u64::from(producer.push(next).is_ok())
            };
            next += pushed;
            if pushed == 0 {
                std::thread::yield_now();
            }
        }
    });
    let mut expected = 0;
    let mut buffer = [0u64; 7];
    let mut round = 0u64;
    while expected < count {
        round += 1;
        let popped = if round % 3 == 0 {
            let popped = consumer.pop_slice(&mut buffer);
            for &value in &buffer[..popped] {
                assert_eq!(value, expected);
                expected += 1;
            }
            popped
        } else {
            consumer.pop_each(5, |value| {
                assert_eq!(value, expected);
                expected += 1;
            })
        };
        if popped == 0 {
            std::thread::yield_now();
        }
    }
    assert_eq!(consumer.pop(), None);
    sender.join().unwrap();
}

#[test]
fn transfers_are_fifo_and_complete_at_every_capacity() {
    for (capacity, seed) in [(1, 3), (2, 5), (3, 7), (100, 11), (1024, 13)] {
        transfer(capacity, 100_000, seed);
    }
}
