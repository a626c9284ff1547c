//! The send buffer on hand-made cases: the state boundaries, the delay ramp, each drop
//! policy, signals, pauses, health and the counters.

use super::*;

const MS: u64 = 1_000_000;

fn config_with(policy: EgressDropPolicy) -> EgressConfig {
    EgressConfig {
        drop_policy: policy,
        ..EgressConfig::default()
    }
}

/// A queue of `config` holding `count` replies, offered at time 0.
fn filled(config: EgressConfig, count: u32) -> EgressQueue<u32> {
    let mut queue = EgressQueue::new(config).unwrap();
    for item in 0..count {
        assert!(matches!(queue.offer(item, 0), Offer::Queued { .. }));
    }
    queue
}

/// `offered` replies of which `dropped` are dropped, all at `now_ns`, on a one-slot
/// drop-newest queue: each drop is an offer to the full buffer, each other offer is
/// queued after a pop.
fn with_drop_rate(config: EgressConfig, offered: u64, dropped: u64) -> EgressQueue<u64> {
    let mut queue = EgressQueue::new(EgressConfig {
        buffer_capacity: 1,
        drop_policy: EgressDropPolicy::DropNewest,
        ..config
    })
    .unwrap();
    let _ = queue.offer(0, 0);
    for item in 1..offered {
        if item > dropped {
            queue.pop(0);
        }
        let _ = queue.offer(item, 0);
    }
    let stats = queue.stats(0);
    assert_eq!(stats.dropped, dropped);
    assert_eq!(
        stats.sent + stats.dropped + u64::from(stats.buffered),
        offered
    );
    queue
}

#[test]
fn state_boundaries_at_69_9_70_89_9_90_and_100_percent() {
    let config = EgressConfig::default();
    assert_eq!(filled(config, 0).state(0), FlowState::Normal);
    assert_eq!(filled(config, 699).state(0), FlowState::Normal);
    assert_eq!(
        filled(config, 700).state(0),
        FlowState::Throttled { delay_ns: 0 }
    );
    assert_eq!(
        filled(config, 899).state(0),
        FlowState::Throttled {
            delay_ns: 497_500_000
        }
    );
    assert_eq!(
        filled(config, 900).state(0),
        FlowState::Paused { until_ns: 50 * MS }
    );
    assert_eq!(
        filled(config, 999).state(0),
        FlowState::Paused { until_ns: 50 * MS }
    );
    assert_eq!(filled(config, 1000).state(0), FlowState::Dropping);
    // The same boundaries on a small buffer: 7 of 10 throttle, 9 pause, 10 drop.
    let small = EgressConfig {
        buffer_capacity: 10,
        ..config
    };
    assert_eq!(filled(small, 6).state(0), FlowState::Normal);
    assert!(matches!(
        filled(small, 7).state(0),
        FlowState::Throttled { .. }
    ));
    assert!(matches!(
        filled(small, 9).state(0),
        FlowState::Paused { .. }
    ));
    assert_eq!(filled(small, 10).state(0), FlowState::Dropping);
}

#[test]
fn delay_interpolates_linearly_between_its_endpoints() {
    let config = EgressConfig::default();
    assert_eq!(config.throttle_delay_ns(0), 0);
    assert_eq!(config.throttle_delay_ns(700), 0);
    assert_eq!(config.throttle_delay_ns(750), 125_000_000);
    assert_eq!(config.throttle_delay_ns(800), 250_000_000);
    assert_eq!(config.throttle_delay_ns(900), 500_000_000);
    assert_eq!(config.throttle_delay_ns(1000), 500_000_000);
    let config = EgressConfig {
        throttle_delay_min_ns: 100 * MS,
        throttle_delay_max_ns: 300 * MS,
        ..config
    };
    assert_eq!(config.throttle_delay_ns(700), 100 * MS);
    assert_eq!(config.throttle_delay_ns(800), 200 * MS);
    assert_eq!(config.throttle_delay_ns(900), 300 * MS);
    // A flat ramp and the largest values do not overflow.
    let config = EgressConfig {
        buffer_capacity: 1 << 20,
        throttle_percent: 1,
        pause_percent: 100,
        throttle_delay_min_ns: 0,
        throttle_delay_max_ns: 60_000_000_000,
        ..config
    };
    config.validate().unwrap();
    // 60 s * (99 * 2^20 - 100) / (99 * 2^20), rounded down.
    assert_eq!(config.throttle_delay_ns((1 << 20) - 1), 59_999_942_201);
    assert_eq!(config.throttle_delay_ns(1 << 20), 60_000_000_000);
}

#[test]
fn stats_report_the_current_delay_only_while_throttled() {
    let config = EgressConfig::default();
    assert_eq!(filled(config, 800).stats(0).delay_ns, 250_000_000);
    assert_eq!(filled(config, 600).stats(0).delay_ns, 0);
    assert_eq!(filled(config, 950).stats(0).delay_ns, 0);
}

#[test]
fn drop_oldest_hands_back_the_oldest_and_keeps_the_newest() {
    let mut queue = filled(config_with(EgressDropPolicy::DropOldest), 1000);
    assert_eq!(
        queue.offer(1000, 5),
        Offer::Dropped {
            item: 0,
            reason: EgressDropReason::DropOldest
        }
    );
    assert_eq!(queue.len(), 1000);
    assert_eq!(queue.front(), Some(&1));
    let mut all = Vec::new();
    queue.drain_into(&mut all, usize::MAX, 5);
    assert_eq!(all.last(), Some(&1000));
    let stats = queue.stats(5);
    assert_eq!(
        stats.dropped_by_reason[EgressDropReason::DropOldest.index()],
        1
    );
    assert_eq!((stats.sent, stats.dropped), (1000, 1));
}

#[test]
fn drop_newest_hands_back_the_new_reply() {
    let mut queue = filled(config_with(EgressDropPolicy::DropNewest), 1000);
    assert_eq!(
        queue.offer(1000, 5),
        Offer::Dropped {
            item: 1000,
            reason: EgressDropReason::DropNewest
        }
    );
    assert_eq!(queue.front(), Some(&0));
    assert_eq!(queue.len(), 1000);
    assert_eq!(
        queue.stats(5).dropped_by_reason[EgressDropReason::DropNewest.index()],
        1
    );
}

#[test]
fn drop_all_clears_the_buffer_counts_every_reply_and_queues_the_new_one() {
    let mut queue = filled(config_with(EgressDropPolicy::DropAll), 1000);
    // Filling told the client to throttle, then to pause.
    assert_eq!(queue.poll_signal(0), None);
    assert_eq!(
        queue.offer(1000, 10 * MS),
        Offer::DroppedAll {
            dropped_count: 1000,
            signal: Some(FlowSignal::Resume)
        }
    );
    assert_eq!(queue.len(), 1);
    assert_eq!(queue.front(), Some(&1000));
    assert_eq!(queue.state(10 * MS), FlowState::Normal);
    let stats = queue.stats(10 * MS);
    assert_eq!(stats.dropped, 1000);
    assert_eq!(
        stats.dropped_by_reason[EgressDropReason::DropAll.index()],
        1000
    );
    assert_eq!(stats.pause_ns_total, 10 * MS);
    assert_eq!(queue.dropped_since_last_report(), 1000);
}

#[test]
fn block_hands_the_reply_back_until_there_is_room() {
    let config = EgressConfig {
        block_timeout_ns: 100 * MS,
        ..config_with(EgressDropPolicy::Block)
    };
    let mut queue = filled(config, 1000);
    let deadline_ns = 10 * MS + 100 * MS;
    assert_eq!(
        queue.offer(1000, 10 * MS),
        Offer::Blocked {
            item: 1000,
            deadline_ns
        }
    );
    // A retry keeps the first refusal's deadline.
    assert_eq!(
        queue.offer_again(1000, deadline_ns, 50 * MS),
        Offer::Blocked {
            item: 1000,
            deadline_ns
        }
    );
    assert_eq!(queue.pop(60 * MS), Some(0));
    assert!(matches!(
        queue.offer_again(1000, deadline_ns, 70 * MS),
        Offer::Queued { .. }
    ));
    // The next refusal starts a new deadline.
    assert_eq!(
        queue.offer(1001, 200 * MS),
        Offer::Blocked {
            item: 1001,
            deadline_ns: 300 * MS
        }
    );
    let stats = queue.stats(200 * MS);
    assert_eq!((stats.sent, stats.dropped, stats.buffered), (1, 0, 1000));
}

#[test]
fn block_drops_the_reply_once_the_timeout_has_passed() {
    let config = EgressConfig {
        block_timeout_ns: 100 * MS,
        ..config_with(EgressDropPolicy::Block)
    };
    let mut queue = filled(config, 1000);
    assert!(matches!(queue.offer(1000, 0), Offer::Blocked { .. }));
    assert!(matches!(
        queue.offer_again(1000, 100 * MS, 100 * MS - 1),
        Offer::Blocked { .. }
    ));
    assert_eq!(
        queue.offer_again(1000, 100 * MS, 100 * MS),
        Offer::Dropped {
            item: 1000,
            reason: EgressDropReason::BlockTimeout
        }
    );
    let stats = queue.stats(100 * MS);
    assert_eq!(
        stats.dropped_by_reason[EgressDropReason::BlockTimeout.index()],
        1
    );
    assert_eq!(stats.dropped, 1);
    // The next reply blocks afresh.
    assert_eq!(
        queue.offer(1001, 150 * MS),
        Offer::Blocked {
            item: 1001,
            deadline_ns: 250 * MS
        }
    );
}

#[test]
fn under_block_each_held_reply_waits_for_its_own_deadline() {
    let config = EgressConfig {
        block_timeout_ns: 100 * MS,
        ..config_with(EgressDropPolicy::Block)
    };
    let mut queue = filled(config, 1000);
    assert_eq!(
        queue.offer(1000, 0),
        Offer::Blocked {
            item: 1000,
            deadline_ns: 100 * MS
        }
    );
    // A second reply the caller held behind the first since 50 ms.
    let second_deadline_ns = 50 * MS + 100 * MS;
    assert_eq!(
        queue.offer_again(1000, 100 * MS, 100 * MS),
        Offer::Dropped {
            item: 1000,
            reason: EgressDropReason::BlockTimeout
        }
    );
    // The first one's timeout does not restart the second's wait.
    assert_eq!(
        queue.offer_again(1001, second_deadline_ns, 100 * MS),
        Offer::Blocked {
            item: 1001,
            deadline_ns: second_deadline_ns
        }
    );
    assert_eq!(
        queue.offer_again(1001, second_deadline_ns, second_deadline_ns),
        Offer::Dropped {
            item: 1001,
            reason: EgressDropReason::BlockTimeout
        }
    );
    assert_eq!(queue.stats(150 * MS).dropped, 2);
}

#[test]
fn close_drops_what_is_buffered_with_its_own_reason() {
    let mut queue = filled(EgressConfig::default(), 950);
    assert_eq!(queue.close(20 * MS), 950);
    assert!(queue.is_empty());
    let stats = queue.stats(30 * MS);
    assert_eq!(
        stats.dropped_by_reason[EgressDropReason::Closed.index()],
        950
    );
    assert_eq!(stats.pause_ns_total, 20 * MS);
    assert_eq!(stats.state, FlowState::Normal);
    // Not the client's doing: no effect on its health.
    assert_eq!(queue.health(30 * MS), EgressHealth::Healthy);
}

#[test]
fn health_thresholds_at_9_9_10_30_and_30_1_percent() {
    let config = EgressConfig::default();
    assert_eq!(
        with_drop_rate(config, 1000, 99).health(0),
        EgressHealth::Healthy
    );
    assert_eq!(
        with_drop_rate(config, 1000, 100).health(0),
        EgressHealth::Warning
    );
    assert_eq!(
        with_drop_rate(config, 1000, 300).health(0),
        EgressHealth::Warning
    );
    assert_eq!(
        with_drop_rate(config, 1000, 301).health(0),
        EgressHealth::Unhealthy {
            recommend_disconnect: false
        }
    );
    let disconnecting = EgressConfig {
        disconnect_unhealthy: true,
        ..config
    };
    assert_eq!(
        with_drop_rate(disconnecting, 1000, 301).health(0),
        EgressHealth::Unhealthy {
            recommend_disconnect: true
        }
    );
}

#[test]
fn no_verdict_before_the_minimum_offers_and_old_drops_leave_the_window() {
    let config = EgressConfig::default();
    // 99 offers, 90 dropped: too few to judge.
    assert_eq!(
        with_drop_rate(config, 99, 90).health(0),
        EgressHealth::Healthy
    );
    let mut queue = with_drop_rate(config, 100, 90);
    assert!(matches!(queue.health(0), EgressHealth::Unhealthy { .. }));
    // The window is 10 s in 1 s slots: at 9.999 s the drops at 0 still count, at 10 s
    // they are gone.
    assert!(matches!(
        queue.health(10_000 * MS - 1),
        EgressHealth::Unhealthy { .. }
    ));
    assert_eq!(queue.health(10_000 * MS), EgressHealth::Healthy);
    // New clean traffic dilutes what is left in the window.
    queue.pop(5_000 * MS);
    for item in 0..900 {
        let _ = queue.offer(item, 5_000 * MS);
        queue.pop(5_000 * MS);
    }
    // 1000 offers, 90 dropped: 9%.
    assert_eq!(queue.health(5_000 * MS), EgressHealth::Healthy);
}

#[test]
fn counters_reconcile_under_every_policy() {
    for policy in [
        EgressDropPolicy::DropOldest,
        EgressDropPolicy::DropNewest,
        EgressDropPolicy::Block,
        EgressDropPolicy::DropAll,
    ] {
        let config = EgressConfig {
            buffer_capacity: 20,
            block_timeout_ns: 2_000,
            ..config_with(policy)
        };
        let mut queue = EgressQueue::new(config).unwrap();
        let mut offered = 0u64;
        let mut reported = 0u64;
        let mut held = None;
        let mut batch = Vec::new();
        for step in 0..500u64 {
            let now_ns = step * 1_000;
            let offer = match held.take() {
                Some((item, deadline_ns)) => queue.offer_again(item, deadline_ns, now_ns),
                None => queue.offer(step, now_ns),
            };
            match offer {
                Offer::Blocked { item, deadline_ns } => held = Some((item, deadline_ns)),
                _ => offered += 1,
            }
            if step % 4 == 0 {
                queue.pop(now_ns);
            }
            if step % 50 == 0 {
                queue.drain_into(&mut batch, 4, now_ns);
                reported += queue.dropped_since_last_report();
            }
            let stats = queue.stats(now_ns);
            assert!(stats.buffered <= stats.buffer_capacity);
            assert_eq!(
                stats.sent + stats.dropped + u64::from(stats.buffered),
                offered,
                "{policy:?}"
            );
            assert_eq!(stats.dropped, stats.dropped_by_reason.iter().sum::<u64>());
        }
        let stats = queue.stats(500_000);
        assert!(stats.dropped > 0, "{policy:?}");
        assert_eq!(reported + queue.dropped_since_last_report(), stats.dropped);
    }
}

#[test]
fn the_buffer_starts_small_and_never_grows_past_its_capacity() {
    let mut queue = EgressQueue::new(config_with(EgressDropPolicy::DropOldest)).unwrap();
    assert!(queue.reserved_slots() < 100);
    for item in 0..5000u32 {
        let _ = queue.offer(item, u64::from(item));
        assert!(queue.len() <= 1000);
    }
    // VecDeque grows by doubling: at most the next power of two over the capacity.
    assert!(queue.reserved_slots() <= 1024, "{}", queue.reserved_slots());
}

#[test]
fn signals_are_handed_out_once_when_the_instruction_changes() {
    let config = EgressConfig::default();
    let mut queue = filled(config, 699);
    assert_eq!(queue.poll_signal(0), None);
    assert_eq!(
        queue.offer(699, 0),
        Offer::Queued {
            signal: Some(FlowSignal::Throttle { delay_ns: 0 })
        }
    );
    assert_eq!(queue.poll_signal(0), None);
    // The delay steps by a tenth of its range (50 ms = 20 replies) before it is re-sent.
    for item in 700..719 {
        assert_eq!(queue.offer(item, 0), Offer::Queued { signal: None });
    }
    assert_eq!(
        queue.offer(719, 0),
        Offer::Queued {
            signal: Some(FlowSignal::Throttle { delay_ns: 50 * MS })
        }
    );
    // Down by less than a step: nothing to say.
    queue.pop(0);
    assert_eq!(queue.poll_signal(0), None);
    // Back under 70%: resume, once.
    let mut batch = Vec::new();
    queue.drain_into(&mut batch, 100, 0);
    assert_eq!(queue.poll_signal(0), Some(FlowSignal::Resume));
    assert_eq!(queue.poll_signal(0), None);
    let stats = queue.stats(0);
    assert_eq!((stats.throttle_events, stats.pause_events), (2, 0));
}

#[test]
fn pauses_follow_each_other_while_the_buffer_stays_full_enough() {
    // Filling handed out a Throttle at 70% and one per 20 replies after: 10 in all.
    let mut queue = filled(EgressConfig::default(), 899);
    assert_eq!(queue.stats(0).throttle_events, 10);
    assert_eq!(queue.poll_signal(0), None);
    assert_eq!(
        queue.offer(899, 10 * MS),
        Offer::Queued {
            signal: Some(FlowSignal::Pause {
                duration_ns: 50 * MS
            })
        }
    );
    assert_eq!(
        queue.state(10 * MS),
        FlowState::Paused { until_ns: 60 * MS }
    );
    // Full: still the same pause.
    for item in 900..1000 {
        assert_eq!(queue.offer(item, 20 * MS), Offer::Queued { signal: None });
    }
    assert_eq!(queue.state(20 * MS), FlowState::Dropping);
    assert_eq!(queue.poll_signal(59 * MS), None);
    // The pause ran out with the buffer still full: a new one.
    assert_eq!(
        queue.poll_signal(70 * MS),
        Some(FlowSignal::Pause {
            duration_ns: 40 * MS
        })
    );
    assert_eq!(queue.poll_signal(70 * MS), None);
    queue.pop(80 * MS);
    assert_eq!(
        queue.state(80 * MS),
        FlowState::Paused { until_ns: 110 * MS }
    );
    assert_eq!(queue.poll_signal(80 * MS), None);
    // Down to 80%: throttle again; the stretch of pausing lasted 10 ms to 90 ms.
    let mut batch = Vec::new();
    queue.drain_into(&mut batch, 199, 90 * MS);
    assert_eq!(
        queue.poll_signal(90 * MS),
        Some(FlowSignal::Throttle { delay_ns: 250 * MS })
    );
    let stats = queue.stats(200 * MS);
    assert_eq!(stats.pause_ns_total, 80 * MS);
    assert_eq!((stats.throttle_events, stats.pause_events), (11, 2));
    assert_eq!(stats.sent, 200);
    // Pausing again starts a new stretch, counted from its own start.
    for item in 0..100 {
        let _ = queue.offer(item, 300 * MS);
    }
    assert_eq!(
        queue.state(300 * MS),
        FlowState::Paused { until_ns: 350 * MS }
    );
    assert_eq!(queue.stats(320 * MS).pause_ns_total, 100 * MS);
}

#[test]
fn an_invalid_config_is_refused_with_the_field_named() {
    let config = EgressConfig {
        pause_percent: 1,
        ..EgressConfig::default()
    };
    let error = EgressQueue::<u8>::new(config).unwrap_err();
    assert_eq!(
        error.to_string(),
        "egress.pause_percent must be in 2..=100, got 1"
    );
    let config = EgressConfig {
        block_timeout_ns: 0,
        ..EgressConfig::default()
    };
    assert_eq!(
        EgressQueue::<u8>::new(config).unwrap_err().field,
        "egress.block_timeout_ns"
    );
}

#[test]
fn drop_reason_names_are_distinct_and_indices_follow_all() {
    for (index, reason) in EgressDropReason::ALL.into_iter().enumerate() {
        assert_eq!(reason.index(), index);
    }
    let mut names = EgressDropReason::ALL.map(EgressDropReason::name).to_vec();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), EgressDropReason::COUNT);
}

/// A queue of `policy` bounded at 100 replies and 2000 bytes (the smallest bound is 1 KiB),
/// each item twice as many bytes as its value: the values below are thousandths of the bound.
fn sized(policy: EgressDropPolicy) -> EgressQueue<u64> {
    EgressQueue::sized(
        EgressConfig {
            buffer_capacity: 100,
            buffer_bytes: 2000,
            drop_policy: policy,
            ..EgressConfig::default()
        },
        |item| *item * 2,
    )
    .unwrap()
}

#[test]
fn bytes_fill_the_buffer_as_replies_do_and_the_fuller_of_the_two_sets_the_state() {
    let mut queue = sized(EgressDropPolicy::DropNewest);
    // 3 replies of 1000 possible bytes: 69.9% by bytes is Normal, 70% Throttled.
    assert_eq!(queue.offer(600, 0), Offer::Queued { signal: None });
    assert_eq!(queue.offer(99, 0), Offer::Queued { signal: None });
    assert_eq!(queue.state(0), FlowState::Normal);
    assert_eq!(queue.buffered_bytes(), 1398);
    assert!(matches!(
        queue.offer(1, 0),
        Offer::Queued {
            signal: Some(FlowSignal::Throttle { .. })
        }
    ));
    assert!(matches!(queue.state(0), FlowState::Throttled { .. }));
    // 90% of the bytes: Paused, with 4 replies of 100 buffered.
    assert!(matches!(
        queue.offer(200, 0),
        Offer::Queued {
            signal: Some(FlowSignal::Pause { .. })
        }
    ));
    assert_eq!(queue.len(), 4);
    // 100 more bytes fill it exactly: Dropping; one byte more is dropped by the policy.
    assert_eq!(queue.offer(100, 0), Offer::Queued { signal: None });
    assert_eq!(queue.state(0), FlowState::Dropping);
    assert_eq!(
        queue.offer(1, 0),
        Offer::Dropped {
            item: 1,
            reason: EgressDropReason::DropNewest
        }
    );
    let stats = queue.stats(0);
    assert_eq!((stats.buffered, stats.buffered_bytes), (5, 2000));
    assert!((stats.fill_percent() - 100.0).abs() < 1e-9);
    // Popping gives the bytes back.
    assert_eq!(queue.pop(0), Some(600));
    assert_eq!(queue.buffered_bytes(), 800);
    let mut out = Vec::new();
    assert_eq!(queue.drain_into(&mut out, 2, 0), 2);
    assert_eq!(queue.buffered_bytes(), 600);
    assert_eq!(queue.close(0), 2);
    assert_eq!(queue.buffered_bytes(), 0);
}

#[test]
fn drop_oldest_evicts_as_many_as_the_new_replys_bytes_need() {
    let mut queue = sized(EgressDropPolicy::DropOldest);
    for item in [300, 300, 300] {
        let _ = queue.offer(item, 0);
    }
    // 900 bytes: 101 more do not fit; the oldest 300 goes.
    assert_eq!(
        queue.offer(101, 0),
        Offer::Dropped {
            item: 300,
            reason: EgressDropReason::DropOldest
        }
    );
    assert_eq!(queue.buffered_bytes(), 1402);
    // 950 needs the room of all three.
    assert!(matches!(
        queue.offer(950, 0),
        Offer::DroppedOldest {
            dropped_count: 3,
            ..
        }
    ));
    assert_eq!((queue.len(), queue.buffered_bytes()), (1, 1900));
    let stats = queue.stats(0);
    assert_eq!(
        stats.dropped_by_reason[EgressDropReason::DropOldest.index()],
        4
    );
    assert_eq!(queue.dropped_since_last_report(), 4);
}

#[test]
fn an_empty_buffer_takes_one_reply_of_any_size_and_block_waits_for_room_by_bytes() {
    let mut queue = sized(EgressDropPolicy::Block);
    assert_eq!(
        queue.offer(5000, 0),
        Offer::Queued {
            signal: Some(FlowSignal::Pause {
                duration_ns: EgressConfig::default().pause_duration_ns
            })
        }
    );
    assert_eq!(queue.state(0), FlowState::Dropping);
    assert!(matches!(queue.offer(1, 0), Offer::Blocked { item: 1, .. }));
    assert_eq!(queue.pop(0), Some(5000));
    assert!(matches!(queue.offer(1, 0), Offer::Queued { .. }));
    // Items without a size are bounded by their count alone.
    let mut unsized_queue: EgressQueue<u64> = EgressQueue::new(EgressConfig {
        buffer_capacity: 2,
        buffer_bytes: 1024,
        ..EgressConfig::default()
    })
    .unwrap();
    for item in [1 << 40, 1 << 41] {
        assert!(matches!(unsized_queue.offer(item, 0), Offer::Queued { .. }));
    }
    assert_eq!(unsized_queue.buffered_bytes(), 0);
}
