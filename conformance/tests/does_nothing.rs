//! The suite must fail an implementation that does nothing: `conformance run --impl /bin/true`
//! exits non-zero and reports failed scenarios (against the real RabbitMQ and Redis of
//! `AMQP_URL` / `REDIS_URL`).

use std::process::Command;

#[test]
fn an_implementation_that_does_nothing_fails() {
    let dir = std::env::temp_dir().join(format!("conformance-test-{}", std::process::id()));
    let report = dir.join("report.json");
    let junit = dir.join("report.xml");
    let output = Command::new(env!("CARGO_BIN_EXE_conformance"))
        .args([
            "run",
            "--impl",
            "/bin/true",
            "--profile",
            "gatehouse",
            "--jobs",
            "2",
        ])
        .arg("--report")
        .arg(&report)
        .arg("--report")
        .arg(&junit)
        .arg("--log-dir")
        .arg(dir.join("logs"))
        .output()
        .expect("the conformance binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(1),
        "expected exit code 1 (failures)\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("FAIL"), "no FAIL in the table:\n{stdout}");
    assert!(
        stdout.contains("0 passed"),
        "a scenario passed against /bin/true:\n{stdout}"
    );

    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("the JSON report exists"))
            .expect("the JSON report parses");
    let outcomes = json["outcomes"].as_array().expect("outcomes");
    assert!(
        outcomes.len() > 10,
        "too few scenarios ran: {}",
        outcomes.len()
    );
    for o in outcomes {
        assert_eq!(o["verdict"], "fail", "{o}");
        assert!(o["reason"].as_str().is_some_and(|r| !r.is_empty()), "{o}");
    }
    let xml = std::fs::read_to_string(&junit).expect("the JUnit report exists");
    assert!(xml.contains(&format!("failures=\"{}\"", outcomes.len())));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn list_names_every_scenario_once() {
    let output = Command::new(env!("CARGO_BIN_EXE_conformance"))
        .arg("list")
        .output()
        .expect("the conformance binary runs");
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let names: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for required in [
        "handshake",
        "passthrough",
        "commands",
        "bad-commands",
        "zombie-connection",
        "reconnect-op7",
        "invalid-session-resumable",
        "invalid-session-not-resumable",
        "identify-concurrency",
        "close-4004",
    ] {
        assert!(
            names.contains(&required),
            "{required} missing from:\n{stdout}"
        );
    }
    let mut sorted = names.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), names.len(), "duplicate scenario names");
}

/// `list --profile cordis --requirement required` is what a faithful Cordis 1.x gateway must pass:
/// the Discord protocol and the events side, not commands or a session store (Gatehouse
/// extensions for Cordis), and `list` names both groups per profile.
#[test]
fn list_separates_required_from_extension_per_profile() {
    let list = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_conformance"))
            .arg("list")
            .args(args)
            .output()
            .expect("the conformance binary runs");
        assert!(output.status.success());
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let names = |text: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect()
    };
    let cordis_required = names(&list(&["--profile", "cordis", "--requirement", "required"]));
    for name in [
        "handshake",
        "topology",
        "passthrough",
        "passthrough-etf",
        "close-4004",
    ] {
        assert!(cordis_required.iter().any(|n| n == name), "{name} missing");
    }
    for name in [
        "commands",
        "rate-limit",
        "topology-commands",
        "redis-session",
        "fault-sigkill",
    ] {
        assert!(
            !cordis_required.iter().any(|n| n == name),
            "{name} is required of Cordis"
        );
    }
    let cordis_extension = names(&list(&[
        "--profile",
        "cordis",
        "--requirement",
        "extension",
    ]));
    assert!(cordis_extension.iter().any(|n| n == "commands"));
    let native_required = names(&list(&[
        "--profile",
        "gatehouse",
        "--requirement",
        "required",
    ]));
    assert!(native_required.iter().any(|n| n == "redis-session"));
    assert!(native_required.iter().any(|n| n == "fault-sigkill"));
    let all = list(&[]);
    let redis = all
        .lines()
        .find(|l| l.starts_with("redis-session "))
        .expect("redis-session is listed");
    assert!(
        redis.contains(
            "required: gatehouse, spectacles, twilight-dispatch; extension: cordis, retsu"
        ),
        "{redis}"
    );
}

/// An implementation that exits is failed with its exit status, what the mock saw and the end of
/// its log, not only "exited".
#[test]
fn an_exit_is_explained_with_the_log_tail() {
    let dir = std::env::temp_dir().join(format!("conformance-exit-{}", std::process::id()));
    let report = dir.join("report.json");
    let output = Command::new(env!("CARGO_BIN_EXE_conformance"))
        .args(["run", "--profile", "gatehouse", "--scenario", "handshake"])
        .args([
            "--impl",
            "echo 'cannot parse SHARD_IDS: conformance-marker' >&2; exit 3",
        ])
        .arg("--report")
        .arg(&report)
        .arg("--log-dir")
        .arg(dir.join("logs"))
        .output()
        .expect("the conformance binary runs");
    assert_eq!(output.status.code(), Some(1));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("the JSON report exists"))
            .expect("the JSON report parses");
    let reason = json["outcomes"][0]["reason"].as_str().expect("a reason");
    for part in [
        "exited (exit status: 3)",
        "never requested /gateway/bot",
        "the last lines of its log",
        "cannot parse SHARD_IDS: conformance-marker",
    ] {
        assert!(reason.contains(part), "{part:?} missing from: {reason}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
