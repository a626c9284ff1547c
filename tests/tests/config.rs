//! Configuration from files: every shipped profile in `config/` loads and is its profile,
//! every profile round-trips through TOML, and invalid files give errors naming the field.

use std::path::PathBuf;

use spillway::config::{
    CapAction, Config, ConfigError, ConfigLoadError, Profile, TenantConfig, WaitStrategy,
};
use spillway::config::{EgressConfig, EgressDropPolicy};
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
