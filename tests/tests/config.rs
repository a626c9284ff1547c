//! Configuration: the defaults and profiles are valid, `Config::validate` names the field and
//! its range, every shipped profile in `config/` loads and is its profile, every setting
//! round-trips through TOML, and invalid files give errors naming the field.

use std::path::{Path, PathBuf};

use spillway::config::{
    BreakerConfig, CapAction, CapsConfig, Config, ConfigError, ConfigLoadError, ControlConfig,
    EgressConfig, EgressDropPolicy, Levels, MonitorConfig, NetConfig, Profile, QueueDropPolicy,
    RateConfig, TenantConfig, WaitStrategy, FRAME_BYTES_DEFAULT,
};
use spillway::engine::Engine;
use spillway::message::{ConnectionId, Message, MessageId, Priority, Role, TenantId};

/// The repository's `config/` directory.
fn config_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("config")
}

fn load_error(text: &str) -> ConfigError {
    Config::from_toml_str(text).unwrap_err()
}

#[test]
fn every_shipped_profile_file_loads_and_is_its_profile() {
    for profile in Profile::ALL {
        let path = config_dir().join(format!("{}.toml", profile.name()));
        let config = Config::from_toml_file(&path)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        assert_eq!(config, Config::for_profile(profile), "{}", path.display());
    }
}

#[test]
fn config_dir_holds_exactly_the_four_profiles() {
    let mut names: Vec<String> = std::fs::read_dir(config_dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let mut expected: Vec<String> = Profile::ALL
        .iter()
        .map(|profile| format!("{}.toml", profile.name()))
        .collect();
    expected.sort();
    assert_eq!(names, expected);
}

#[test]
fn every_profile_round_trips_through_its_printed_settings() {
    for profile in Profile::ALL {
        let config = Config::for_profile(profile);
        config.validate().unwrap();
        let text = config.to_toml_string();
        assert!(text.contains(&format!("profile = \"{}\"", profile.name())));
        assert_eq!(Config::from_toml_str(&text), Ok(config), "{text}");
    }
}

#[test]
fn every_profile_starts_an_engine_that_delivers() {
    for profile in Profile::ALL {
        let mut config = Config::for_profile(profile);
        // Small allocations for a test; everything else as the profile has it.
        config.shards = 1;
        config.connections_per_shard_max = 64;
        let engine = Engine::builder()
            .config(config)
            .handler(|_: &Message| Ok(()))
            .start()
            .unwrap();
        let mut ingress = engine.ingress().unwrap();
        ingress
            .submit(Message::new(ConnectionId(1), MessageId(1)))
            .unwrap();
        let mut completions = Vec::new();
        while completions.is_empty() {
            ingress.poll_completions(&mut completions);
            std::thread::yield_now();
        }
        drop(ingress);
        let stats = engine.shutdown();
        assert_eq!(stats.total.delivered, 1, "{profile}");
    }
}

#[test]
fn a_negative_rate_is_out_of_the_fields_range() {
    let error = load_error("[rate]\nper_connection_per_sec = -5\n");
    assert_eq!(error.field, "rate.per_connection_per_sec");
    assert_eq!(error.allowed, "1..=1000000000");
    assert_eq!(error.got, "-5");
}

#[test]
fn a_burst_under_one_is_named() {
    let error = load_error("[rate]\nburst = 0\n");
    assert_eq!(error.field, "rate.burst");
    assert_eq!(
        error.to_string(),
        "rate.burst must be in 1..=4294967295, got 0"
    );
}

#[test]
fn an_unknown_profile_is_named_with_the_four_names() {
    let error = load_error("profile = \"fast\"\n");
    assert_eq!(error.field, "profile");
    for profile in Profile::ALL {
        assert!(error.allowed.contains(profile.name()), "{error}");
    }
}

#[test]
fn an_unknown_field_is_named_with_its_path() {
    let error = load_error("[rate]\nper_connection_per_sec = 10\nbogus = 1\n");
    assert_eq!(error.field, "rate.bogus");
    assert!(error.allowed.contains("per_connection_per_sec"), "{error}");
    assert!(error.to_string().contains("bogus"));
    assert_eq!(load_error("bogus = true").field, "bogus");
    assert_eq!(
        load_error("[monitor]\nintervals_ns = 1").field,
        "monitor.intervals_ns"
    );
}

#[test]
fn a_bad_enum_value_is_named_with_the_allowed_values() {
    let error = load_error("[caps]\naction = \"explode\"\n");
    assert_eq!(error.field, "caps.action");
    assert_eq!(error.allowed, "{refuse, drop, disconnect}");
    assert_eq!(error.got, "\"explode\"");
    assert_eq!(
        load_error("[caps]\ndrop_policy = \"oldest\"").field,
        "caps.drop_policy"
    );
    assert_eq!(
        load_error("[wait]\nstrategy = \"spin\"").field,
        "wait.strategy"
    );
}

#[test]
fn a_wrong_type_is_named() {
    assert_eq!(load_error("[rate]\nburst = \"lots\"").field, "rate.burst");
    assert_eq!(load_error("pinning = \"yes\"").field, "pinning");
    assert_eq!(
        load_error("[control]\npinning = 1").field,
        "control.pinning"
    );
}

#[test]
fn a_partial_file_overrides_only_what_it_names() {
    let config = Config::from_toml_str(
        "profile = \"high-throughput\"\n\
         shards = 3\n\
         [caps]\n\
         action = \"disconnect\"\n\
         [caps.role_messages]\n\
         tool_executor = 750\n\
         [monitor]\n\
         warning_percent = 70\n",
    )
    .unwrap();
    let mut expected = Config::for_profile(Profile::HighThroughput);
    expected.shards = 3;
    expected.caps.action = CapAction::Disconnect;
    expected.caps.role_messages[Role::ToolExecutor.index()] = 750;
    expected.monitor.warning_percent = 70;
    assert_eq!(config, expected);

    // Without a profile the base is production.
    let config = Config::from_toml_str("[wait]\nstrategy = \"busy-spin\"\n").unwrap();
    let mut expected = Config::default();
    expected.wait = WaitStrategy::BusySpin;
    assert_eq!(config, expected);
}

#[test]
fn a_tenant_list_loads() {
    let config = Config::from_toml_str(
        "[[tenants]]\n\
         tenant = 1\n\
         max_pending = 100\n\
         priority_ceiling = \"P2\"\n\
         \n\
         [[tenants]]\n\
         tenant = 2\n",
    )
    .unwrap();
    assert_eq!(
        config.tenants,
        vec![
            TenantConfig {
                tenant: TenantId(1),
                max_pending: Some(100),
                priority_ceiling: Priority::P2,
            },
            TenantConfig {
                tenant: TenantId(2),
                max_pending: None,
                priority_ceiling: Priority::P0,
            },
        ]
    );
    assert_eq!(config.tenant(TenantId(1)).unwrap().max_pending, Some(100));
    assert_eq!(Config::from_toml_str(&config.to_toml_string()), Ok(config));
    assert_eq!(
        load_error("[[tenants]]\ntenant = 1\nmax_pending = 0").field,
        "tenants[0].max_pending"
    );
}

#[test]
fn builder_settings_and_file_settings_are_the_same_type() {
    // A config built in code prints to a file that loads back to it.
    let mut config = Config::for_profile(Profile::Staging);
    config.shards = 2;
    config.control.drain_finishes_queued = false;
    config.monitor.interval_ns = 2_000_000_000;
    let path = std::env::temp_dir().join(format!("spillway-config-{}.toml", std::process::id()));
    std::fs::write(&path, config.to_toml_string()).unwrap();
    let loaded = Config::from_toml_file(&path);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(loaded.unwrap(), config);
}

#[test]
fn an_unreadable_file_is_an_io_error() {
    let path = config_dir().join("no-such-profile.toml");
    assert!(matches!(
        Config::from_toml_file(&path),
        Err(ConfigLoadError::Io { .. })
    ));
}

#[test]
fn egress_defaults_are_the_spec_values_in_every_profile() {
    let expected = EgressConfig {
        buffer_capacity: 1000,
        buffer_bytes: 4 << 20,
        throttle_percent: 70,
        pause_percent: 90,
        throttle_delay_min_ns: 0,
        throttle_delay_max_ns: 500_000_000,
        pause_duration_ns: 50_000_000,
        drop_policy: EgressDropPolicy::DropOldest,
        block_timeout_ns: 1_000_000_000,
        health_window_ns: 10_000_000_000,
        health_min_offered: 100,
        warning_drop_percent: 10,
        unhealthy_drop_percent: 30,
        disconnect_unhealthy: false,
    };
    assert_eq!(EgressConfig::default(), expected);
    for profile in Profile::ALL {
        assert_eq!(Config::for_profile(profile).egress, expected, "{profile}");
    }
    let text = Config::default().to_toml_string();
    assert!(text.contains("[egress]"), "{text}");
    assert!(text.contains("drop_policy = \"drop-oldest\""), "{text}");
}

#[test]
fn egress_settings_load_from_a_file() {
    let config = Config::from_toml_str(
        "[egress]\n\
         buffer_capacity = 64\n\
         drop_policy = \"block\"\n\
         block_timeout_ns = 5_000_000\n\
         disconnect_unhealthy = true\n",
    )
    .unwrap();
    let mut expected = Config::default();
    expected.egress.buffer_capacity = 64;
    expected.egress.drop_policy = EgressDropPolicy::Block;
    expected.egress.block_timeout_ns = 5_000_000;
    expected.egress.disconnect_unhealthy = true;
    assert_eq!(config, expected);
    assert_eq!(Config::from_toml_str(&config.to_toml_string()), Ok(config));
}

#[test]
fn an_invalid_egress_value_is_named() {
    let error = load_error("[egress]\nbuffer_capacity = 0\n");
    assert_eq!(error.field, "egress.buffer_capacity");
    assert_eq!(error.allowed, "1..=1048576");
    assert_eq!(error.got, "0");
    assert_eq!(
        load_error("[egress]\nthrottle_percent = 95").to_string(),
        "egress.throttle_percent must be in 1..=89, got 95"
    );
    assert_eq!(
        load_error("[egress]\ndrop_policy = \"oldest\"").field,
        "egress.drop_policy"
    );
    assert_eq!(
        load_error("[egress]\nbuffer_size = 10").field,
        "egress.buffer_size"
    );
    // The same check in code, before a queue is made.
    let mut config = Config::default();
    config.egress.unhealthy_drop_percent = 5;
    assert_eq!(
        config.validate().unwrap_err().to_string(),
        "egress.warning_drop_percent must be in 1..=5, got 10"
    );
}

// ---------------------------------------------------------------------------------------
// Validation of settings built in code.

#[test]
fn defaults_are_valid_and_are_the_spec_values() {
    let config = Config::default();
    config.validate().unwrap();
    assert_eq!(config.rate.per_connection_per_sec, 500);
    assert_eq!(config.rate.burst, 1000);
    assert_eq!(config.caps.connection_messages, 1000);
    assert_eq!(config.caps.connection_bytes, 50 << 20);
    assert_eq!(config.caps.role_messages[Role::ToolExecutor.index()], 500);
    assert_eq!(config.caps.priority_threshold_percent, [100, 95, 80, 60]);
    assert_eq!(config.breaker.window_requests, 1000);
}

#[test]
fn errors_name_the_field_and_range() {
    let mut config = Config::default();
    config.caps.priority_threshold_percent = [100, 95, 96, 60];
    assert_eq!(
        config.validate().unwrap_err().to_string(),
        "caps.priority_threshold_percent.P2 must be in 1..=95, got 96"
    );
    let mut config = Config::default();
    config.rate.burst = 0;
    assert_eq!(config.validate().unwrap_err().field, "rate.burst");
    let mut config = Config::default();
    config.caps.role_messages[Role::Sse.index()] = 0;
    assert_eq!(
        config.validate().unwrap_err().field,
        "caps.role_messages.sse"
    );
    let mut config = Config::default();
    let tenant = TenantConfig {
        tenant: TenantId(4),
        max_pending: Some(10),
        priority_ceiling: Priority::P1,
    };
    config.tenants = vec![tenant, tenant];
    assert_eq!(config.validate().unwrap_err().field, "tenants[1].tenant");
}

#[test]
fn control_and_monitor_are_validated() {
    let config = Config::default();
    assert_eq!(config.control.health_slo_ns, 100_000_000);
    assert_eq!(config.monitor.interval_ns, 5_000_000_000);
    assert_eq!(config.monitor.history, 100);
    let mut config = Config::default();
    config.control.health_slo_ns = 999;
    assert_eq!(
        config.validate().unwrap_err().to_string(),
        "control.health_slo_ns must be in 1000..=60000000000, got 999"
    );
    let mut config = Config::default();
    config.control.ring_capacity = 1;
    assert_eq!(
        config.validate().unwrap_err().field,
        "control.ring_capacity"
    );
    let mut config = Config::default();
    config.control.drain_timeout_ns = 999_999;
    assert_eq!(
        config.validate().unwrap_err().to_string(),
        "control.drain_timeout_ns must be in 1000000..=3600000000000, got 999999"
    );
    assert_eq!(
        Config::from_toml_str("[control]\ndrain_timeout_ns = -1")
            .unwrap_err()
            .to_string(),
        "control.drain_timeout_ns must be in 1000000..=3600000000000, got -1"
    );
    let mut config = Config::default();
    config.monitor.history = 0;
    assert_eq!(config.validate().unwrap_err().field, "monitor.history");
    let mut config = Config::default();
    config.monitor.interval_ns = 999_999;
    assert_eq!(config.validate().unwrap_err().field, "monitor.interval_ns");
    // warning < critical <= overload <= 100.
    let mut config = Config::default();
    config.monitor.warning_percent = 90;
    assert_eq!(
        config.validate().unwrap_err().to_string(),
        "monitor.warning_percent must be in 1..=89, got 90"
    );
    let mut config = Config::default();
    config.monitor.overload_percent = 85;
    assert_eq!(
        config.validate().unwrap_err().to_string(),
        "monitor.critical_percent must be in 1..=85, got 90"
    );
    let mut config = Config::default();
    config.monitor.overload_percent = 101;
    assert_eq!(
        config.validate().unwrap_err().field,
        "monitor.overload_percent"
    );
    let mut config = Config::default();
    config.monitor.critical_percent = 100;
    config.validate().unwrap();
}

#[test]
fn egress_defaults_are_the_spec_values_and_are_validated() {
    let egress = Config::default().egress;
    assert_eq!(egress, EgressConfig::default());
    assert_eq!(egress.buffer_capacity, 1000);
    assert_eq!((egress.throttle_percent, egress.pause_percent), (70, 90));
    assert_eq!(egress.throttle_delay_min_ns, 0);
    assert_eq!(egress.throttle_delay_max_ns, 500_000_000);
    assert_eq!(egress.pause_duration_ns, 50_000_000);
    assert_eq!(
        (egress.warning_drop_percent, egress.unhealthy_drop_percent),
        (10, 30)
    );
    assert!(!egress.disconnect_unhealthy);
    for profile in Profile::ALL {
        assert_eq!(Config::for_profile(profile).egress, egress, "{profile}");
    }
    let mut config = Config::default();
    config.egress.buffer_capacity = 0;
    assert_eq!(
        config.validate().unwrap_err().to_string(),
        "egress.buffer_capacity must be in 1..=1048576, got 0"
    );
    let mut config = Config::default();
    config.egress.throttle_percent = 90;
    assert_eq!(
        config.validate().unwrap_err().to_string(),
        "egress.throttle_percent must be in 1..=89, got 90"
    );
    let mut config = Config::default();
    config.egress.throttle_delay_min_ns = 600_000_000;
    assert_eq!(
        config.validate().unwrap_err().field,
        "egress.throttle_delay_min_ns"
    );
    let mut config = Config::default();
    config.egress.warning_drop_percent = 31;
    assert_eq!(
        config.validate().unwrap_err().to_string(),
        "egress.warning_drop_percent must be in 1..=30, got 31"
    );
    let mut config = Config::default();
    config.egress.health_window_ns = 9_999_999;
    assert_eq!(
        config.validate().unwrap_err().field,
        "egress.health_window_ns"
    );
}

#[test]
fn nan_is_in_no_range() {
    let mut config = Config::default();
    config.breaker.error_rate_max_percent = f64::NAN;
    assert_eq!(
        config.validate().unwrap_err().to_string(),
        "breaker.error_rate_max_percent must be in 0..=100, got NaN"
    );
}

#[test]
fn automatic_shard_count_leaves_a_core_for_control_on_bigger_machines() {
    let config = Config::default();
    assert_eq!(config.effective_shards(1), 1);
    assert_eq!(config.effective_shards(2), 1);
    assert_eq!(config.effective_shards(16), 15);
}

// ---------------------------------------------------------------------------------------
// The named profiles.

#[test]
fn names_round_trip_and_unknown_names_list_the_four() {
    for profile in Profile::ALL {
        assert_eq!(Profile::from_name(profile.name()), Ok(profile));
        assert_eq!(profile.name().parse::<Profile>(), Ok(profile));
    }
    let error = Profile::from_name("dev").unwrap_err();
    assert_eq!(error.field, "profile");
    assert_eq!(
        error.to_string(),
        "profile must be in {development, staging, production, high-throughput}, got \"dev\""
    );
}

#[test]
fn every_profile_is_valid_and_production_is_the_default() {
    assert_eq!(Config::for_profile(Profile::Production), Config::default());
    assert_eq!(Profile::default(), Profile::Production);
    for profile in Profile::ALL {
        let config = Config::for_profile(profile);
        assert_eq!(config.profile, profile);
        config.validate().unwrap();
    }
}

/// The `(table, key, value)` of each setting in a shipped file or a printed `Config`: the
/// files give one setting per line, under `[table]` headers; comments are skipped.
fn settings_of(text: &str) -> Vec<(String, String, String)> {
    let mut table = String::new();
    let mut settings = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(header) = line
            .strip_prefix('[')
            .and_then(|line| line.strip_suffix(']'))
        {
            table = header.to_string();
        } else if let Some((key, value)) = line.split_once(" = ") {
            if !line.starts_with('#') {
                settings.push((table.clone(), key.to_string(), value.to_string()));
            }
        }
    }
    settings
}

#[test]
fn production_toml_is_the_default_and_shows_every_key() {
    let path = config_dir().join("production.toml");
    assert_eq!(Config::from_toml_file(&path).unwrap(), Config::default());
    // `FrameLimit::DEFAULT`, a const of its own, is the server's default limit.
    assert_eq!(Config::default().net.max_frame_bytes, FRAME_BYTES_DEFAULT);
    let keys = |text: &str| -> Vec<(String, String)> {
        let mut keys: Vec<_> = settings_of(text)
            .into_iter()
            .map(|(table, key, _)| (table, key))
            .collect();
        keys.sort();
        keys
    };
    let mut printed = keys(&Config::default().to_toml_string());
    // No tenants by default: the file shows a tenant's table in a comment instead.
    printed.retain(|(_, key)| key != "tenants");
    assert_eq!(keys(&std::fs::read_to_string(path).unwrap()), printed);
}

#[test]
fn every_other_profile_file_sets_only_what_differs_from_production() {
    for profile in Profile::ALL {
        if profile == Profile::Production {
            continue;
        }
        let path = config_dir().join(format!("{}.toml", profile.name()));
        for (table, key, value) in settings_of(&std::fs::read_to_string(&path).unwrap()) {
            if key == "profile" {
                continue;
            }
            let setting = format!("[{table}]\n{key} = {value}\n");
            let setting = setting.trim_start_matches("[]\n");
            assert!(
                Config::from_toml_str(setting) != Ok(Config::default()),
                "{}: {setting} is production's value",
                path.display()
            );
        }
    }
}

#[test]
fn profiles_order_from_relaxed_to_strict_where_they_should() {
    let development = Config::for_profile(Profile::Development);
    let staging = Config::for_profile(Profile::Staging);
    let production = Config::for_profile(Profile::Production);
    let high = Config::for_profile(Profile::HighThroughput);
    assert!(development.rate.per_connection_per_sec > production.rate.per_connection_per_sec);
    assert!(development.caps.connection_messages > production.caps.connection_messages);
    assert!(development.breaker.p95_latency_max_ns > production.breaker.p95_latency_max_ns);
    // Staging admits exactly what production admits.
    assert_eq!(staging.rate, production.rate);
    assert_eq!(staging.caps, production.caps);
    assert_eq!(staging.levels, production.levels);
    assert!(high.ring_capacity > production.ring_capacity);
    assert!(high.admission_batch_max > production.admission_batch_max);
    assert!(high.rate.per_connection_per_sec > production.rate.per_connection_per_sec);
    assert_eq!(high.wait, WaitStrategy::Adaptive);
    for config in [&development, &staging, &high] {
        assert_eq!(config.levels, production.levels, "{:?}", config.profile);
    }
}

// ---------------------------------------------------------------------------------------
// The TOML form: loading, printing, and the error of each kind of mistake.

/// A configuration with a value other than its profile's everywhere it can.
fn everything_changed() -> Config {
    let mut config = Config::for_profile(Profile::Staging);
    config.shards = 3;
    config.pinning = true;
    config.wait = WaitStrategy::SpinThenPark {
        spin_iterations: 7,
        yield_iterations: 8,
        park_timeout_us: 9,
    };
    config.ring_capacity = 1024;
    config.admission_batch_max = 17;
    config.handler_batch_max = 18;
    config.connections_per_shard_max = 19;
    config.levels = Levels {
        rate_limit: false,
        queue_caps: false,
        circuit_breaker: false,
    };
    config.rate = RateConfig {
        per_connection_per_sec: 21,
        burst: 22,
        adaptive: false,
        adaptive_latency_threshold_ns: 23,
        adaptive_cut_percent: 24,
        adaptive_recover_percent: 25,
        adaptive_floor_per_sec: 20,
        adaptive_interval_ns: 27_000_000,
    };
    config.caps = CapsConfig {
        connection_messages: 31,
        connection_bytes: 32,
        role_messages: [33, 34, 35, 36, 37, 38],
        handler_queue: 39,
        backpressure_percent: 40,
        priority_threshold_percent: [99, 98, 50, 1],
        action: CapAction::Drop,
        drop_policy: QueueDropPolicy::DropNewest,
    };
    config.tenants = vec![
        TenantConfig {
            tenant: TenantId(0),
            max_pending: None,
            priority_ceiling: Priority::P3,
        },
        TenantConfig {
            tenant: TenantId(u32::MAX),
            max_pending: Some(1 << 30),
            priority_ceiling: Priority::P0,
        },
    ];
    config.breaker = BreakerConfig {
        p95_latency_max_ns: 41,
        error_rate_max_percent: 0.125,
        window_requests: 42,
        min_samples: 42,
        recovery_timeout_ns: 43,
        good_period_ns: 44,
        trip_on_full_queue: false,
    };
    config.shutdown_finishes_queued = false;
    config.control = ControlConfig {
        health_slo_ns: 51_000,
        ring_capacity: 52,
        drain_finishes_queued: false,
        drain_timeout_ns: 53_000_000,
        pinning: false,
        nice: 5,
    };
    config.monitor = MonitorConfig {
        interval_ns: 61_000_000,
        history: 62,
        warning_percent: 63,
        critical_percent: 64,
        overload_percent: 64,
    };
    config.egress = EgressConfig {
        buffer_capacity: 71,
        buffer_bytes: 71_000,
        throttle_percent: 50,
        pause_percent: 100,
        throttle_delay_min_ns: 72,
        throttle_delay_max_ns: 73,
        pause_duration_ns: 74_000,
        drop_policy: EgressDropPolicy::Block,
        block_timeout_ns: 75_000,
        health_window_ns: 76_000_000,
        health_min_offered: 77,
        warning_drop_percent: 78,
        unhealthy_drop_percent: 79,
        disconnect_unhealthy: true,
    };
    config.net = NetConfig {
        max_connections: 81,
        max_frame_bytes: 8_200,
        max_response_bytes: Some(8_172),
        hello_timeout_ns: 83_000_000,
        frame_timeout_ns: 84_000_000,
        close_timeout_ns: 85_000_000,
        accept_backoff_ns: 86_000,
        accepts_per_turn_max: 87,
        read_bytes_per_turn_max: 88_000,
        frames_per_turn_max: 89,
        write_buffer_bytes_max: 90_000,
        events_per_turn_max: 91,
        housekeeping_interval_ns: 92_000_000,
    };
    config
}

#[test]
fn every_setting_round_trips_through_toml() {
    let config = everything_changed();
    config.validate().unwrap();
    assert_eq!(Config::from_toml_str(&config.to_toml_string()), Ok(config));
    for strategy in [
        WaitStrategy::Adaptive,
        WaitStrategy::BusySpin,
        WaitStrategy::SpinThenYield { spin_iterations: 0 },
    ] {
        let mut config = everything_changed();
        config.wait = strategy;
        assert_eq!(Config::from_toml_str(&config.to_toml_string()), Ok(config));
    }
    for policy in [
        EgressDropPolicy::DropOldest,
        EgressDropPolicy::DropNewest,
        EgressDropPolicy::Block,
        EgressDropPolicy::DropAll,
    ] {
        let mut config = everything_changed();
        config.egress.drop_policy = policy;
        assert_eq!(Config::from_toml_str(&config.to_toml_string()), Ok(config));
    }
    for profile in Profile::ALL {
        let config = Config::for_profile(profile);
        assert_eq!(Config::from_toml_str(&config.to_toml_string()), Ok(config));
    }
}

#[test]
fn egress_settings_load_and_errors_name_the_field() {
    let config = Config::from_toml_str(
        "[egress]\n\
         buffer_capacity = 200\n\
         drop_policy = \"drop-all\"\n\
         disconnect_unhealthy = true\n",
    )
    .unwrap();
    let mut expected = Config::default();
    expected.egress.buffer_capacity = 200;
    expected.egress.drop_policy = EgressDropPolicy::DropAll;
    expected.egress.disconnect_unhealthy = true;
    assert_eq!(config, expected);
    assert_eq!(
        load_error("[egress]\nbuffer_capacity = -1").to_string(),
        "egress.buffer_capacity must be in 1..=1048576, got -1"
    );
    assert_eq!(
        load_error("[egress]\ndrop_policy = \"drop-some\"").to_string(),
        "egress.drop_policy must be in {drop-oldest, drop-newest, block, drop-all}, \
         got \"drop-some\""
    );
    // Ranges that depend on another field are checked once both are known.
    assert_eq!(
        load_error("[egress]\npause_percent = 60").to_string(),
        "egress.throttle_percent must be in 1..=59, got 70"
    );
    assert_eq!(
        load_error("[egress]\nthrottle_delay_min_ns = 600_000_000").to_string(),
        "egress.throttle_delay_min_ns must be in 0..=500000000, got 600000000"
    );
    assert_eq!(
        load_error("[egress]\npause_ns = 1").field,
        "egress.pause_ns"
    );
    assert_eq!(
        load_error("[egress]\ndisconnect_unhealthy = \"yes\"").field,
        "egress.disconnect_unhealthy"
    );
}

#[test]
fn net_settings_load_and_errors_name_the_field() {
    let config = Config::from_toml_str(
        "[net]\n\
         max_connections = 500\n\
         max_frame_bytes = 4096\n\
         hello_timeout_ns = 2_000_000_000\n\
         frames_per_turn_max = 64\n",
    )
    .unwrap();
    let mut expected = Config::default();
    expected.net.max_connections = 500;
    expected.net.max_frame_bytes = 4096;
    expected.net.hello_timeout_ns = 2_000_000_000;
    expected.net.frames_per_turn_max = 64;
    assert_eq!(config, expected);
    let server = spillway::net::server::ServerConfig::from_config(&config);
    assert_eq!(server.net, config.net);
    assert_eq!(server.frame_limit().max_frame_bytes(), 4096);
    assert_eq!(server.egress, config.egress);
    assert_eq!(
        load_error("[net]\nmax_connections = 0").to_string(),
        "net.max_connections must be in 1..=16777216, got 0"
    );
    assert_eq!(
        load_error("[net]\nmax_frame_bytes = 100").to_string(),
        "net.max_frame_bytes must be in 512..=16777216, got 100"
    );
    assert_eq!(
        load_error("[net]\nframe_timeout_ns = -5").to_string(),
        "net.frame_timeout_ns must be in 1000000..=3600000000000, got -5"
    );
    assert_eq!(
        load_error("[net]\nevents_per_turn_max = 100000").field,
        "net.events_per_turn_max"
    );
    assert_eq!(load_error("[net]\nlisten = 1").field, "net.listen");
    // The builder side checks the same ranges.
    let mut config = Config::default();
    config.net.write_buffer_bytes_max = 10;
    assert_eq!(
        config.validate().unwrap_err().field,
        "net.write_buffer_bytes_max"
    );
}

#[test]
fn an_empty_file_is_production_and_a_profile_alone_is_that_profile() {
    assert_eq!(Config::from_toml_str(""), Ok(Config::default()));
    for profile in Profile::ALL {
        let text = format!("profile = {:?}", profile.name());
        assert_eq!(
            Config::from_toml_str(&text),
            Ok(Config::for_profile(profile))
        );
    }
}

#[test]
fn a_threshold_table_and_a_role_table_override_only_what_they_name() {
    let config = Config::from_toml_str(
        "profile = \"development\"\n\
         [caps]\n\
         action = \"disconnect\"\n\
         priority_threshold_percent = { P3 = 40 }\n\
         [caps.role_messages]\n\
         sse = 123\n",
    )
    .unwrap();
    let mut expected = Config::for_profile(Profile::Development);
    expected.caps.action = CapAction::Disconnect;
    expected.caps.priority_threshold_percent[Priority::P3.index()] = 40;
    expected.caps.role_messages[Role::Sse.index()] = 123;
    assert_eq!(config, expected);
}

#[test]
fn wait_numbers_come_from_the_base_or_the_defaults() {
    // Development spins then parks for up to 1000 us; a file changing only the spins
    // keeps the rest.
    let config =
        Config::from_toml_str("profile = \"development\"\n[wait]\nspin_iterations = 5\n").unwrap();
    assert_eq!(
        config.wait,
        WaitStrategy::SpinThenPark {
            spin_iterations: 5,
            yield_iterations: 64,
            park_timeout_us: 1000,
        }
    );
    let config =
        Config::from_toml_str("[wait]\nstrategy = \"spin-then-park\"\nyield_iterations = 3")
            .unwrap();
    assert_eq!(
        config.wait,
        WaitStrategy::SpinThenPark {
            // The numbers the adaptive strategy parks with on an oversubscribed machine.
            spin_iterations: 256,
            yield_iterations: 3,
            park_timeout_us: 50,
        }
    );
    let config = Config::from_toml_str("[wait]\nstrategy = \"spin-then-yield\"").unwrap();
    assert_eq!(
        config.wait,
        // The spins of the adaptive strategy on a machine with a core per thread.
        WaitStrategy::SpinThenYield {
            spin_iterations: 4096
        }
    );
    assert_eq!(
        load_error("[wait]\nspin_iterations = 5").field,
        "wait.spin_iterations"
    );
    // A number the strategy does not take is an unknown key of its table.
    assert_eq!(
        load_error("[wait]\nstrategy = \"spin-then-yield\"\npark_timeout_us = 5").to_string(),
        "wait.park_timeout_us must be in {strategy, spin_iterations}, got an unknown key"
    );
    assert_eq!(
        load_error("[wait]\nstrategy = \"spin-then-park\"\npark_timeout_us = 0").to_string(),
        "wait.park_timeout_us must be in 1..=1000000, got 0"
    );
}

#[test]
fn numbers_are_range_checked_before_they_are_narrowed() {
    assert_eq!(
        load_error("[rate]\nper_connection_per_sec = -5").to_string(),
        "rate.per_connection_per_sec must be in 1..=1000000000, got -5"
    );
    assert_eq!(
        load_error("[rate]\nburst = 0").to_string(),
        "rate.burst must be in 1..=4294967295, got 0"
    );
    assert_eq!(
        load_error("[rate]\nburst = 4294967296").to_string(),
        "rate.burst must be in 1..=4294967295, got 4294967296"
    );
    assert_eq!(
        load_error("shards = -1").to_string(),
        "shards must be in 0..=256, got -1"
    );
    assert_eq!(
        load_error("[[tenants]]\ntenant = -1").to_string(),
        "tenants[0].tenant must be in 0..=4294967295, got -1"
    );
    assert_eq!(
        load_error("[breaker]\nerror_rate_max_percent = nan").to_string(),
        "breaker.error_rate_max_percent must be in 0..=100, got NaN"
    );
    assert_eq!(
        load_error("[caps]\npriority_threshold_percent = [100, 95, 96, 60]").to_string(),
        "caps.priority_threshold_percent.P2 must be in 1..=95, got 96"
    );
    // Ranges that depend on another field are checked once both are known.
    assert_eq!(
        load_error("[rate]\nper_connection_per_sec = 40").to_string(),
        "rate.adaptive_floor_per_sec must be in 1..=40, got 50"
    );
}

#[test]
fn unknown_keys_are_named_with_their_path_and_the_known_keys() {
    assert_eq!(
        load_error("[rate]\nbogus = 1").to_string(),
        "rate.bogus must be in {per_connection_per_sec, burst, adaptive, \
         adaptive_latency_threshold_ns, adaptive_cut_percent, adaptive_recover_percent, \
         adaptive_floor_per_sec, adaptive_interval_ns}, got an unknown key"
    );
    assert_eq!(load_error("shard = 1").field, "shard");
    assert_eq!(load_error("[bogus]\nx = 1").field, "bogus");
    assert_eq!(load_error("rate.bogus = 1").field, "rate.bogus");
    assert_eq!(load_error("[rate]\nbogus.deeper = 1").field, "rate.bogus");
    assert_eq!(
        load_error("[caps.role_messages]\nsesion = 1").field,
        "caps.role_messages.sesion"
    );
    assert_eq!(
        load_error("[caps.priority_threshold_percent]\nP4 = 1").field,
        "caps.priority_threshold_percent.P4"
    );
    assert_eq!(
        load_error("[[tenants]]\ntenant = 1\n[[tenants]]\ntenant = 2\nceiling = \"P1\"").field,
        "tenants[1].ceiling"
    );
}

#[test]
fn wrong_types_and_names_are_errors_on_the_field() {
    assert_eq!(
        load_error("[rate]\nburst = \"ten\"").to_string(),
        "rate.burst must be in integers, got string \"ten\""
    );
    assert_eq!(
        load_error("[levels]\nrate_limit = 1").to_string(),
        "levels.rate_limit must be in {true, false}, got integer `1`"
    );
    assert_eq!(load_error("rate = 5").field, "rate");
    assert_eq!(load_error("[rate]\nburst = 1e99").field, "rate.burst");
    assert_eq!(
        load_error("[rate]\nburst = 99999999999999999999").field,
        "rate.burst"
    );
    assert_eq!(
        load_error("[caps]\naction = \"explode\"").to_string(),
        "caps.action must be in {refuse, drop, disconnect}, got \"explode\""
    );
    assert_eq!(
        load_error("[caps]\ndrop_policy = \"drop-all\"").field,
        "caps.drop_policy"
    );
    assert_eq!(
        load_error("[wait]\nstrategy = \"spin\"").to_string(),
        "wait.strategy must be in {adaptive, busy-spin, spin-then-yield, spin-then-park}, \
         got \"spin\""
    );
    assert_eq!(
        load_error("[[tenants]]\ntenant = 1\npriority_ceiling = \"P4\"").to_string(),
        "tenants[0].priority_ceiling must be in {P0, P1, P2, P3}, got \"P4\""
    );
    assert_eq!(
        load_error("[caps]\npriority_threshold_percent = [100, 90]").field,
        "caps.priority_threshold_percent"
    );
    assert_eq!(
        load_error("[caps]\npriority_threshold_percent = [100, 90, \"x\", 10]").field,
        "caps.priority_threshold_percent.P2"
    );
    assert_eq!(
        load_error("profile = \"dev\"").to_string(),
        "profile must be in {development, staging, production, high-throughput}, got \"dev\""
    );
    assert_eq!(load_error("profile = 3").field, "profile");
}

#[test]
fn text_that_is_not_toml_names_the_position() {
    let error = load_error("shards = 1\n[rate\n");
    assert!(error.field.starts_with("line 2, column "), "{error}");
    assert_eq!(error.allowed, "TOML syntax");
    // A key given twice is a syntax error too.
    assert!(error_field_starts("shards = 1\nshards = 2", "line 2"));
}

fn error_field_starts(text: &str, prefix: &str) -> bool {
    load_error(text).field.starts_with(prefix)
}

#[test]
fn tenants_load_and_replace_the_profiles_list() {
    let config = Config::from_toml_str(
        "[[tenants]]\n\
         tenant = 7\n\
         max_pending = 5000\n\
         priority_ceiling = \"P1\"\n\
         [[tenants]]\n\
         tenant = 8\n",
    )
    .unwrap();
    assert_eq!(
        config.tenants,
        vec![
            TenantConfig {
                tenant: TenantId(7),
                max_pending: Some(5000),
                priority_ceiling: Priority::P1,
            },
            TenantConfig {
                tenant: TenantId(8),
                max_pending: None,
                priority_ceiling: Priority::P0,
            },
        ]
    );
    assert_eq!(
        load_error("[[tenants]]\nmax_pending = 3").to_string(),
        "tenants[0].tenant must be in 0..=4294967295 (required), got nothing"
    );
    assert_eq!(
        load_error("[[tenants]]\ntenant = 1\n[[tenants]]\ntenant = 1").field,
        "tenants[1].tenant"
    );
    assert_eq!(Config::from_toml_str("tenants = []").unwrap().tenants, []);
}

#[test]
fn a_missing_file_is_an_io_error_naming_it() {
    let path = Path::new("/nonexistent/spillway.toml");
    let error = Config::from_toml_file(path).unwrap_err();
    assert!(matches!(&error, ConfigLoadError::Io { path: p, .. } if p == path));
    assert!(error
        .to_string()
        .starts_with("cannot read /nonexistent/spillway.toml: "));
}

/// A date or time (TOML has them; no setting takes one) is a value of the wrong type where
/// it stands, named by its key, never by `toml`'s private name for it (the stable fuzz run
/// found `tenants = [1979-05-27T07:32:00Z]` reported at `tenants[0].$__toml_private_datetime`).
#[test]
fn a_date_is_a_wrong_type_at_its_key() {
    for (text, field) in [
        ("shards = 1979-05-27T07:32:00Z", "shards"),
        ("[[tenants]]\ntenant = 1979-05-27", "tenants[0].tenant"),
        ("tenants = [07:32:00]", "tenants[0]"),
        ("[rate]\nburst = 1979-05-27T07:32:00", "rate.burst"),
    ] {
        let error = Config::from_toml_str(text).unwrap_err();
        assert_eq!(error.field, field, "{text}: {error}");
        assert!(!error.to_string().contains("$__toml"), "{text}: {error}");
    }
}

/// serde reads a struct from an array (its fields in order); the loader does not: a table's
/// place takes a table (the stable fuzz run found `tenants = [[0]]` loaded as tenant 0).
#[test]
fn an_array_in_a_tables_place_is_refused_at_its_key() {
    for (text, field) in [
        ("tenants = [[0]]", "tenants[0]"),
        (
            "rate = [500, 1000, true, 100000000, 10, 5, 50, 1000000000]",
            "rate",
        ),
        (
            "[caps]\nrole_messages = [1, 2, 3, 4, 5, 6]",
            "caps.role_messages",
        ),
    ] {
        let error = Config::from_toml_str(text).unwrap_err();
        assert_eq!(error.field, field, "{text}: {error}");
        assert_eq!(error.allowed, "tables", "{text}: {error}");
    }
    // The thresholds may be an array: four percentages, P0 to P3.
    Config::from_toml_str("[caps]\npriority_threshold_percent = [100, 95, 80, 60]").unwrap();
}
