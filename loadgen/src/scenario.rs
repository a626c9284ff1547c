//! The named scenarios of SPEC 8: how many connections, what rate, for how long, and what
//! else is special about each. `all` runs [`SCENARIOS`] in order.

/// How much a scenario offers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Offered {
    /// A fixed rate, messages per second, all connections together.
    Rate(u64),
    /// This many times the capacity measured by a calibration run just before (the
    /// generator's `calibrate_capacity`).
    CapacityTimes(f64),
}

/// A phase run before the measured one and not recorded (the saturation phase of
/// `recovery`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PrePhase {
    /// Connections in that phase.
    pub connections: u32,
    /// Messages per second offered in that phase.
    pub rate: u64,
    /// Seconds it lasts.
    pub seconds: f64,
}

/// One named scenario.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scenario {
    /// The name `--scenario` takes.
    pub name: &'static str,
    /// One line for reports and `--help`.
    pub description: &'static str,
    /// Simulated connections in the measured phase.
    pub connections: u32,
    /// What the measured phase offers.
    pub offered: Offered,
    /// A phase before the measured one (after warm-up), not recorded.
    pub pre_phase: Option<PrePhase>,
    /// Simulated handler cost per message unless `--service-ns` says otherwise.
    pub service_ns: u64,
    /// Whether messages carry a mix of priorities (P0 1%, P1 49%, P2 30%, P3 20% unless
    /// `--priority-mix` says otherwise) and the report breaks results down by priority.
    pub priority_mix: bool,
    /// How often the generator reads its completions, in ms; 0 = every turn of its loop.
    /// Non-zero makes a slow consumer of completions in front of a fast producer.
    pub consumer_poll_ms: u64,
}

/// Handler cost of the capacity-relative scenarios: 10 µs, so one shard's capacity is
/// about 100K msg/s and 5× capacity is still within what one generator thread can offer.
pub const OVERLOAD_SERVICE_NS: u64 = 10_000;

/// Connections of the capacity-relative scenarios.
const OVERLOAD_CONNECTIONS: u32 = 1_000;

const fn steady(
    name: &'static str,
    description: &'static str,
    connections: u32,
    rate: u64,
) -> Scenario {
    Scenario {
        name,
        description,
        connections,
        offered: Offered::Rate(rate),
        pre_phase: None,
        service_ns: 0,
        priority_mix: false,
        consumer_poll_ms: 0,
    }
}

const fn overload(name: &'static str, description: &'static str, times: f64) -> Scenario {
    Scenario {
        name,
        description,
        connections: OVERLOAD_CONNECTIONS,
        offered: Offered::CapacityTimes(times),
        pre_phase: None,
        service_ns: OVERLOAD_SERVICE_NS,
        priority_mix: false,
        consumer_poll_ms: 0,
    }
}

/// Every scenario, in the order `--scenario all` runs them.
pub const SCENARIOS: [Scenario; 12] = [
    steady("light", "100 connections, 50K msg/s", 100, 50_000),
    steady("normal", "1000 connections, 500K msg/s", 1_000, 500_000),
    steady("high", "5000 connections, 500K msg/s", 5_000, 500_000),
    steady("heavy", "10000 connections, 500K msg/s", 10_000, 500_000),
    steady(
        "saturation",
        "15000 connections, 500K msg/s",
        15_000,
        500_000,
    ),
    Scenario {
        name: "recovery",
        description: "10000 connections, 350K msg/s, after 5 s of saturation (15000, 500K)",
        connections: 10_000,
        offered: Offered::Rate(350_000),
        pre_phase: Some(PrePhase {
            connections: 15_000,
            rate: 500_000,
            seconds: 5.0,
        }),
        service_ns: 0,
        priority_mix: false,
        consumer_poll_ms: 0,
    },
    overload(
        "overload-0.5x",
        "1000 connections at 0.5x measured capacity (10 us handlers)",
        0.5,
    ),
    overload(
        "overload-1x",
        "1000 connections at 1x measured capacity (10 us handlers)",
        1.0,
    ),
    overload(
        "overload-2x",
        "1000 connections at 2x measured capacity (10 us handlers)",
        2.0,
    ),
    overload(
        "overload-5x",
        "1000 connections at 5x measured capacity (10 us handlers)",
        5.0,
    ),
    Scenario {
        name: "slow-consumer",
        description: "1000 connections, 500K msg/s, completions read only every 20 ms",
        connections: 1_000,
        offered: Offered::Rate(500_000),
        pre_phase: None,
        service_ns: 0,
        priority_mix: false,
        consumer_poll_ms: 20,
    },
    Scenario {
        name: "priority-mix",
        description: "1000 connections at 5x capacity, P0 1% P1 49% P2 30% P3 20%",
        connections: OVERLOAD_CONNECTIONS,
        offered: Offered::CapacityTimes(5.0),
        pre_phase: None,
        service_ns: OVERLOAD_SERVICE_NS,
        priority_mix: true,
        consumer_poll_ms: 0,
    },
];

/// The scenario called `name`.
pub fn find(name: &str) -> Option<Scenario> {
    SCENARIOS
        .iter()
        .find(|scenario| scenario.name == name)
        .copied()
}

/// Every scenario name, comma separated, for error messages.
pub fn names() -> String {
    SCENARIOS
        .iter()
        .map(|scenario| scenario.name)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_matches_the_spec() {
        let saturation = find("saturation").unwrap();
        assert_eq!(saturation.connections, 15_000);
        assert_eq!(saturation.offered, Offered::Rate(500_000));
        assert_eq!(find("light").unwrap().offered, Offered::Rate(50_000));
        assert_eq!(find("recovery").unwrap().offered, Offered::Rate(350_000));
        assert!(find("nope").is_none());
        assert!(names().starts_with("light, normal, high"));
    }
}
