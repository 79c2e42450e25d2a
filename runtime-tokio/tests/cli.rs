//! The command line and the log output of the `gatehouse` binary, as an operator meets them
//! (the same code serves `gatehouse-async-std`: `runtime_common::cli` and `logging`).

use std::process::{Command, Output};

/// A fresh, empty working directory (the binary looks for gatehouse.toml, gateway.toml,
/// config.json and .env there).
fn empty_dir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "gatehouse-cli-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a test directory");
    dir
}

fn gatehouse(args: &[&str], env: &[(&str, &str)]) -> Output {
    gatehouse_in(&empty_dir(), args, env)
}

fn gatehouse_in(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(dir);
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

/// Issue 9 item 9: query strings (`?password=`) and passwords containing `/ ? #` never show,
/// neither in the effective configuration nor in an error.
#[test]
fn passwords_in_queries_and_with_url_delimiters_never_show() {
    let env = [
        ("AMQP_URL", "amqp://user:se/cr?et#1@127.0.0.1:1/%2f"),
        ("REDIS_URL", "redis://127.0.0.1:1/0?password=hunter2"),
    ];
    let check = gatehouse(&["config", "check"], &env);
    let out = text(&check.stdout) + &text(&check.stderr);
    assert!(check.status.success(), "{out}");
    for secret in ["se/cr", "cr?et", "et#1", "hunter2"] {
        assert!(!out.contains(secret), "{secret} in {out}");
    }
    assert!(out.contains("redis://127.0.0.1:1/0?password=***"), "{out}");
    // `status` reaches Redis and fails: the error must not quote the password either.
    let status = gatehouse(&["status"], &env);
    let err = text(&status.stderr);
    assert!(!status.status.success());
    assert!(!err.contains("hunter2"), "{err}");
}

/// Issue 11: a predecessor's variable that Gatehouse recognises but does not support is logged
/// as a warning naming it, never silently ignored.
#[test]
fn recognised_but_unsupported_names_are_warned_about() {
    let out = gatehouse(
        &["config", "check"],
        &[
            ("SHARDS_WAIT", "5"),
            ("CLUSTERS", "2"),
            ("CORDIS_DEBUG", "true"),
            ("CORDIS_WS_READY_TIMEOUT", "1000"),
            ("REDIS_POOL_SIZE", "5"),
            ("DEBUG", "true"),
        ],
    );
    let logs = text(&out.stderr);
    assert!(out.status.success(), "{logs}");
    for name in [
        "SHARDS_WAIT",
        "CLUSTERS",
        "CORDIS_DEBUG",
        "CORDIS_WS_READY_TIMEOUT",
        "REDIS_POOL_SIZE",
    ] {
        assert!(
            logs.lines().any(|l| l.contains("WARN") && l.contains(name)),
            "no warning naming {name}:\n{logs}"
        );
    }
    // Cordis 1.x's generic `DEBUG` is read (and warned about) only with the cordis profile.
    assert!(!logs.contains("DEBUG (cordis 1.x)"), "{logs}");
    let cordis = gatehouse(
        &["config", "check"],
        &[("GATEHOUSE_PROFILE", "cordis"), ("DEBUG", "true")],
    );
    assert!(text(&cordis.stderr).contains("DEBUG (cordis 1.x)"));
}

/// Issue 14: Spectacles' `BROKER_TYPE` selects the output (`redis`; anything but `amqp` and
/// `redis` is stdio, as in the Spectacles gateway), and `--stdio` selects stdio only when no
/// other broker is configured.
#[test]
fn broker_type_selects_the_output() {
    for (value, kind) in [
        ("stdio", "Stdio"),
        ("redis", "Redis"),
        ("whatever", "Stdio"),
        ("amqp", "Amqp"),
    ] {
        let out = gatehouse(&["config", "check"], &[("BROKER_TYPE", value)]);
        let (stdout, logs) = (text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "{logs}");
        assert!(broker_kind(&stdout).contains(kind), "{value}: {stdout}");
        assert!(!logs.contains("BROKER_TYPE"), "{logs}");
    }
    let out = gatehouse(&["--stdio", "config", "check"], &[]);
    assert!(broker_kind(&text(&out.stdout)).contains("Stdio"));
    let out = gatehouse(&["--stdio", "config", "check"], &[("BROKER_TYPE", "redis")]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--stdio"),
        "{}",
        text(&out.stderr)
    );
}

/// The `broker: BrokerConfig { kind: ... }` part of `config check`'s output.
fn broker_kind(check: &str) -> String {
    let start = check
        .find("broker: BrokerConfig")
        .expect("the broker section");
    check[start..].lines().take(4).collect()
}

/// twilight-dispatch's setup: a `.env` file in the working directory (the process
/// environment wins over it).
#[test]
fn a_dotenv_file_is_read() {
    let dir = empty_dir();
    std::fs::write(
        dir.join(".env"),
        "# twilight-dispatch\nBOT_TOKEN=from.dotenv\nSHARDS_START=2\nSHARDS_END=3\n\
         SHARDS_TOTAL=4\nLARGE_THRESHOLD=100\n",
    )
    .unwrap();
    let out = gatehouse_in(&dir, &["config", "check"], &[("LARGE_THRESHOLD", "60")]);
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{shown}{}", text(&out.stderr));
    assert!(
        shown.contains("shard_count: Some(\n            4"),
        "{shown}"
    );
    assert!(shown.contains("large_threshold: 60"), "{shown}");
    assert!(
        !shown.contains("from.dotenv"),
        "the token is redacted: {shown}"
    );
    assert!(shown.contains("2,\n                3"), "{shown}");
}
