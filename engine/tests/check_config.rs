//! The `spillway` command line, and `spillway check-config FILE`: exit status and output.

use std::path::PathBuf;
use std::process::{Command, Output};

fn spillway(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spillway"))
        .args(args)
        .output()
        .expect("the spillway binary runs")
}

fn shipped(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../config")
        .join(name)
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn a_shipped_profile_is_valid_and_its_settings_are_printed() {
    for profile in ["development", "staging", "production", "high-throughput"] {
        let file = shipped(&format!("{profile}.toml"));
        let output = spillway(&["check-config", &file]);
        let stdout = String::from_utf8(output.stdout).unwrap();
        assert_eq!(output.status.code(), Some(0), "{stdout}");
        let (first, settings) = stdout.split_once('\n').unwrap();
        assert_eq!(first, format!("{file}: valid (profile {profile})"));
        // The rest is every effective setting, in the file layout.
        let config = spillway::config::Config::from_toml_str(settings).unwrap();
        assert_eq!(config.profile.name(), profile);
        for key in [
            "[rate]",
            "[caps.role_messages]",
            "[control]",
            "[monitor]",
            "burst =",
        ] {
            assert!(settings.contains(key), "{key} missing from:\n{settings}");
        }
    }
}

#[test]
fn an_invalid_file_exits_1_naming_the_field() {
    let path = std::env::temp_dir().join(format!("spillway-bad-{}.toml", std::process::id()));
    std::fs::write(&path, "profile = \"staging\"\n[rate]\nburst = 0\n").unwrap();
    let output = spillway(&["check-config", path.to_str().unwrap()]);
    std::fs::remove_file(&path).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("rate.burst must be in 1..=4294967295, got 0"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
}

#[test]
fn a_missing_file_exits_1() {
    let output = spillway(&["check-config", "/nonexistent/spillway.toml"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("/nonexistent/spillway.toml"), "{stderr}");
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    let output = spillway(&["--help"]);
    assert_eq!(output.status.code(), Some(0));
    let usage = String::from_utf8(output.stdout).unwrap();
    assert!(usage.contains("check-config"), "{usage}");
    assert!(usage.contains("serve"), "{usage}");

    let output = spillway(&["--version"]);
    assert_eq!(output.status.code(), Some(0));
    let version = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        version.trim(),
        format!("spillway {}", env!("CARGO_PKG_VERSION"))
    );

    let output = spillway(&[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8(output.stderr).unwrap().contains("Usage"));

    let output = spillway(&["frobnicate"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("unrecognized subcommand 'frobnicate'"),
        "{stderr}"
    );

    let output = spillway(&["check-config"]);
    assert_eq!(output.status.code(), Some(2));
    let output = spillway(&["check-config", "a.toml", "b.toml"]);
    assert_eq!(output.status.code(), Some(2));

    let output = spillway(&["serve", "--shards", "many"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("invalid value 'many' for '--shards <N>'"),
        "{stderr}"
    );
    let output = spillway(&["serve", "--frobnicate"]);
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn serve_help_shows_each_flag_with_its_default_and_environment_variable() {
    let output = spillway(&["serve", "--help"]);
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8(output.stdout).unwrap();
    for flag in [
        "--listen <ADDR>",
        "--config <FILE>",
        "--shards <N>",
        "--service-ns <NS>",
        "--max-connections <N>",
        "--duration-s <S>",
        "--workers <ADDR>",
        "--stop-deadline-s <S>",
        "--log-format <FORMAT>",
        "[default: 127.0.0.1:7878]",
        "[env: SPILLWAY_LISTEN=]",
        "[env: SPILLWAY_CONFIG=]",
        "[env: SPILLWAY_LOG_FORMAT=]",
        "[default: text]",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}
