//! The command line and the log output of the `gatehouse` binary, as an operator meets them
//! (the same code serves `gatehouse-async-std`: `runtime_common::cli` and `logging`).

use std::process::{Command, Output};

fn gatehouse(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(std::env::temp_dir());
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("run gatehouse")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn version_and_help() {
    let version = gatehouse(&["--version"], &[]);
    assert!(version.status.success());
    assert_eq!(
        text(&version.stdout).trim(),
        format!("gatehouse {}", env!("CARGO_PKG_VERSION"))
    );
    let help = text(&gatehouse(&["--help"], &[]).stdout);
    for word in [
        "status",
        "config",
        "completions",
        "GATEHOUSE_LOG_FORMAT",
        "AMQP_URL",
    ] {
        assert!(help.contains(word), "{word} missing from:\n{help}");
    }
}

#[test]
fn config_check_prints_the_effective_configuration_without_secrets() {
    let ok = gatehouse(
        &["config", "check"],
        &[
            ("DISCORD_TOKEN", "token.that.must.not.show"),
            ("AMQP_URL", "amqp://user:hunter2@rabbit:5672/%2f"),
            ("GATEHOUSE_SHARD_IDS", "2-3"),
        ],
    );
    let out = text(&ok.stdout);
    assert!(ok.status.success(), "{out}{}", text(&ok.stderr));
    assert!(out.contains("amqp://user:***@rabbit:5672/%2f"), "{out}");
    assert!(
        !out.contains("hunter2") && !out.contains("token.that"),
        "{out}"
    );

    let bad = gatehouse(
        &["config", "check"],
        &[("GATEHOUSE_SHARD_COUNT", "2"), ("GATEHOUSE_SHARD_IDS", "5")],
    );
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("shard 5 does not exist"),
        "{}",
        text(&bad.stderr)
    );
}

#[test]
fn the_example_and_completions_are_printed() {
    let example = gatehouse(&["config", "example"], &[]);
    assert!(example.status.success());
    assert!(text(&example.stdout).contains("[amqp]"));
    let completions = gatehouse(&["completions", "zsh"], &[]);
    assert!(completions.status.success());
    assert!(text(&completions.stdout).contains("#compdef gatehouse"));
}

/// With the output not a terminal, text logs carry no escape codes; with
/// `GATEHOUSE_LOG_FORMAT=json` every line is a JSON object. (The process fails fast: nothing
/// answers at the API base.)
#[test]
fn logs_are_plain_text_off_a_terminal_and_json_on_request() {
    let env = [
        ("DISCORD_TOKEN", "t"),
        ("GATEHOUSE_API_BASE", "http://127.0.0.1:1/api/v10"),
    ];
    let plain = gatehouse(&[], &env);
    let logs = text(&plain.stderr);
    assert!(!plain.status.success());
    assert!(logs.contains("asking Discord for the gateway"), "{logs}");
    assert!(!logs.contains('\u{1b}'), "escape codes in {logs:?}");

    let json_env = [env[0], env[1], ("GATEHOUSE_LOG_FORMAT", "json")];
    let json = gatehouse(&[], &json_env);
    let lines: Vec<serde_json::Value> = text(&json.stderr)
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).expect("a JSON log line"))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "asking Discord for the gateway"),
        "{lines:?}"
    );
}
