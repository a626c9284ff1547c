//! The accounting of SPEC 3 as a property: over random sequences of submissions, handler
//! runs, clock jumps and breaker commands, under random cap actions and drop policies, the
//! counters reconcile after every step, and once everything has run, every submitted
//! message has exactly one completion. Failing cases are saved under `proptest-regressions/`.

use std::collections::HashMap;

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use spillway::config::{CapAction, Config, QueueDropPolicy, TenantConfig};
use spillway::handler::HandlerError;
use spillway::message::{ConnectionId, Message, MessageId, Priority, Role, TenantId};
use spillway::simulation::Simulation;

#[derive(Clone, Debug)]
enum Step {
    Submit {
        connection: u64,
        tenant: u32,
        role: usize,
        priority: usize,
        payload_bytes: usize,
    },
    Run {
        handlers: usize,
        cost_ns: u64,
    },
    Advance {
        ns: u64,
    },
    ForceOpen,
    Reset,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (0u64..12, 0u32..3, 0usize..6, 0usize..4, 0usize..40).prop_map(
            |(connection, tenant, role, priority, payload_bytes)| Step::Submit {
                connection,
                tenant,
                role,
                priority,
                payload_bytes,
            }
        ),
        3 => (0usize..8, 0u64..300_000_000).prop_map(|(handlers, cost_ns)| Step::Run { handlers, cost_ns }),
        1 => (0u64..2_000_000_000).prop_map(|ns| Step::Advance { ns }),
        1 => Just(Step::ForceOpen),
        1 => Just(Step::Reset),
    ]
}

fn config() -> impl Strategy<Value = Config> {
    (0usize..4, any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
        |(action, rate_limit, queue_caps, circuit_breaker)| {
            let mut config = Config::default();
            config.levels.rate_limit = rate_limit;
            config.levels.queue_caps = queue_caps;
            config.levels.circuit_breaker = circuit_breaker;
            config.rate.per_connection_per_sec = 20;
            config.rate.burst = 5;
            config.rate.adaptive_floor_per_sec = 2;
            config.caps.connection_messages = 6;
            config.caps.connection_bytes = 100;
            config.caps.role_messages = [20, 10, 8, 6, 10, 8];
            config.caps.handler_queue = 30;
            config.breaker.window_requests = 20;
            config.breaker.min_samples = 5;
            config.breaker.recovery_timeout_ns = 1_000_000_000;
            config.breaker.good_period_ns = 500_000_000;
            (config.caps.action, config.caps.drop_policy) = match action {
                0 => (CapAction::Refuse, QueueDropPolicy::DropOldest),
                1 => (CapAction::Drop, QueueDropPolicy::DropOldest),
                2 => (CapAction::Drop, QueueDropPolicy::DropNewest),
                _ => (CapAction::Disconnect, QueueDropPolicy::DropOldest),
            };
            config.tenants = vec![TenantConfig {
                tenant: TenantId(1),
                max_pending: Some(7),
                priority_ceiling: Priority::P1,
            }];
            config
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 200,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn counters_reconcile_at_every_step_and_each_message_completes_once(
        config in config(),
        steps in proptest::collection::vec(step(), 1..250),
    ) {
        // Every seventh message fails, every eleventh panics.
        let handler = |message: &Message| {
            if message.id.0 % 11 == 0 {
                panic!("simulated handler bug");
            }
            if message.id.0 % 7 == 0 {
                return Err(HandlerError("simulated failure".into()));
            }
            Ok(())
        };
        quiet_simulated_panics();
        let mut simulation = Simulation::new(config, handler).unwrap();
        let mut now_ns = 0u64;
        let mut next_id = 1u64;
        let mut completions: HashMap<u64, usize> = HashMap::new();
        for step in steps {
            match step {
                Step::Submit { connection, tenant, role, priority, payload_bytes } => {
                    let message = Message::new(ConnectionId(connection), MessageId(next_id))
                        .with_tenant(TenantId(tenant))
                        .with_role(Role::ALL[role])
                        .with_priority(Priority::ALL[priority])
                        .with_payload(vec![0; payload_bytes]);
                    next_id += 1;
                    let _ = simulation.submit(now_ns, message);
                }
                Step::Run { handlers, cost_ns } => {
                    simulation.run(now_ns, now_ns + cost_ns, handlers);
                    now_ns += cost_ns;
                }
                Step::Advance { ns } => {
                    now_ns += ns;
                    simulation.tick(now_ns);
                }
                Step::ForceOpen => simulation.breaker().force_open(now_ns),
                Step::Reset => simulation.breaker().reset(now_ns),
            }
            for completion in simulation.take_completions() {
                *completions.entry(completion.message.0).or_default() += 1;
            }
            let stats = simulation.stats();
            prop_assert!(stats.reconciles(), "{:?}", stats.total);
            prop_assert_eq!(
                stats.total.submitted - stats.total.in_flight(),
                completions.values().sum::<usize>() as u64
            );
            prop_assert_eq!(stats.total.in_flight(), simulation.pending() as u64);
        }
        // Drain: every message ends with exactly one completion.
        while simulation.pending() > 0 {
            simulation.run(now_ns, now_ns + 1_000, 64);
            now_ns += 1_000;
        }
        for completion in simulation.take_completions() {
            *completions.entry(completion.message.0).or_default() += 1;
        }
        prop_assert_eq!(completions.len() as u64, next_id - 1);
        prop_assert!(completions.values().all(|&count| count == 1));
    }
}

/// The handler's deliberate panics are caught by the shard; keep them out of the output.
fn quiet_simulated_panics() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let simulated = info
                .payload()
                .downcast_ref::<&str>()
                .is_some_and(|text| text.starts_with("simulated"));
            if !simulated {
                default_hook(info);
            }
        }));
    });
}
