//! Judging the judge: the suite must fail a bridge with a known defect in exactly the scenarios
//! that cover that defect, say why in words that name it, and pass the same bridge without the
//! defect. The bridge is `reference-bridge` (src/bin/reference-bridge.rs), a small native-profile
//! bridge with one `--defect` switch per defect; this test runs the suite against it (against the
//! real RabbitMQ and Redis of `AMQP_URL` / `REDIS_URL`, as every suite test does).
//!
//! Each defect's run holds the scenarios that cover it (each must FAIL, its reason containing
//! the defect's telltale words) and neighbours that must still PASS (so a defect does not
//! spill over into unrelated verdicts); the run without a defect holds every scenario the
//! reference bridge implements. All runs go at once, so the whole test takes about as long as
//! its slowest run (the 15 s delayed reconnect after a fatal close).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One run of the suite against the reference bridge.
struct Case {
    /// A name for the run (its report and log directory).
    label: &'static str,
    /// `--defect` (None: the bridge as it should be).
    defect: Option<&'static str>,
    /// Variables set in the `--impl` command, overriding the suite's (`DISCORD_API_VERSION=9`).
    impl_env: &'static str,
    /// `--api-version` for the suite (None: its default, 10).
    api_version: Option<u8>,
    /// Scenarios that must fail.
    fail: &'static [&'static str],
    /// Words every failure's reason must contain (case-insensitive).
    because: &'static str,
    /// Scenarios that must pass.
    pass: &'static [&'static str],
}

const RESUMES: &[&str] = &[
    "reconnect-op7",
    "invalid-session-resumable",
    "zombie-connection",
    "close-without-frame",
    "close-4000",
    "close-4001",
    "close-4002",
];

const FATAL: &[&str] = &[
    "close-4004",
    "close-4010",
    "close-4011",
    "close-4012",
    "close-4013",
    "close-4014",
];

/// Every scenario the reference bridge implements (the native profile without Redis sessions
/// and fault scenarios).
const EVERYTHING: &[&str] = &[
    "handshake",
    "heartbeat-request",
    "identify-concurrency",
    "topology",
    "topology-commands",
    "passthrough",
    "passthrough-zlib-stream",
    "passthrough-zstd-stream",
    "passthrough-etf",
    "commands",
    "bad-commands",
    "rate-limit",
    "reconnect-op7",
    "invalid-session-resumable",
    "invalid-session-not-resumable",
    "zombie-connection",
    "close-without-frame",
    "close-4000",
    "close-4001",
    "close-4002",
    "close-4003",
    "close-4005",
    "close-4007",
    "close-4009",
    "close-4008",
    "close-1000",
    "close-4004",
    "close-4010",
    "close-4011",
    "close-4012",
    "close-4013",
    "close-4014",
];

fn cases() -> Vec<Case> {
    let resumes_and_4008: &'static [&'static str] = Box::leak(
        RESUMES
            .iter()
            .copied()
            .chain(["close-4008"])
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    );
    vec![
        Case {
            label: "none",
            defect: None,
            impl_env: "",
            api_version: None,
            fail: &[],
            because: "",
            pass: EVERYTHING,
        },
        Case {
            label: "reserialise",
            defect: Some("reserialise"),
            impl_env: "",
            api_version: None,
            fail: &[
                "passthrough",
                "passthrough-zlib-stream",
                "passthrough-zstd-stream",
            ],
            because: "byte-identical",
            pass: &["passthrough-etf", "commands"],
        },
        Case {
            label: "ignore-compress",
            defect: Some("ignore-compress"),
            impl_env: "",
            api_version: None,
            fail: &["passthrough-zlib-stream", "passthrough-zstd-stream"],
            because: "DISCORD_COMPRESS",
            pass: &["passthrough", "passthrough-etf"],
        },
        Case {
            label: "never-resume",
            defect: Some("never-resume"),
            impl_env: "",
            api_version: None,
            fail: RESUMES,
            because: "instead of RESUME",
            pass: &[
                "invalid-session-not-resumable",
                "close-4003",
                "close-4008",
                "close-1000",
            ],
        },
        Case {
            label: "resume-on-cached-url",
            defect: Some("resume-on-cached-url"),
            impl_env: "",
            api_version: None,
            fail: resumes_and_4008,
            because: "resume_gateway_url",
            pass: &["invalid-session-not-resumable", "close-4003", "close-1000"],
        },
        Case {
            label: "reconnect-after-fatal",
            defect: Some("reconnect-after-fatal"),
            impl_env: "",
            api_version: None,
            fail: FATAL,
            because: "fatal close",
            pass: &["close-4000", "close-4003"],
        },
        Case {
            label: "no-rate-limit",
            defect: Some("no-rate-limit"),
            impl_env: "",
            api_version: None,
            fail: &["rate-limit"],
            because: "rate limit",
            pass: &["commands", "bad-commands"],
        },
        Case {
            label: "identify-bucket-together",
            defect: Some("identify-bucket-together"),
            impl_env: "",
            api_version: None,
            fail: &["identify-concurrency"],
            because: "per bucket",
            pass: &["handshake"],
        },
        Case {
            label: "transient",
            defect: Some("transient"),
            impl_env: "",
            api_version: None,
            fail: &[
                "passthrough",
                "passthrough-zlib-stream",
                "passthrough-zstd-stream",
                "passthrough-etf",
            ],
            because: "delivery mode",
            pass: &["topology", "commands"],
        },
        // Not one of the eight: a storm of connections after a non-resumable op 9 (the
        // predecessor's defect) is named as such.
        Case {
            label: "storm-after-invalid-session",
            defect: Some("storm-after-invalid-session"),
            impl_env: "",
            api_version: None,
            fail: &["invalid-session-not-resumable"],
            because: "reconnect storm",
            pass: &["invalid-session-resumable"],
        },
        // The contract names the gateway version: v9 passes when the run asks for 9 ...
        Case {
            label: "api-v9",
            defect: None,
            impl_env: "",
            api_version: Some(9),
            fail: &[],
            because: "",
            pass: &["handshake"],
        },
        // ... and fails when the run asks for 10 (the default).
        Case {
            label: "v9-under-v10",
            defect: None,
            impl_env: "DISCORD_API_VERSION=9",
            api_version: None,
            fail: &["handshake"],
            because: "DISCORD_API_VERSION is 10",
            pass: &["close-4000"],
        },
    ]
}

/// Runs the suite for `case`; returns `(scenario, verdict, reason)` per scenario, or why not.
fn run(case: &Case, dir: &Path) -> Result<BTreeMap<String, (String, String)>, String> {
    let label = case.label;
    let report = dir.join(format!("{label}.json"));
    let mut implementation = format!(
        "{} {}",
        case.impl_env,
        env!("CARGO_BIN_EXE_reference-bridge")
    );
    if let Some(defect) = case.defect {
        implementation.push_str(&format!(" --defect {defect}"));
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_conformance"));
    cmd.args(["run", "--profile", "gatehouse", "--jobs", "4", "--impl"])
        .arg(&implementation)
        .arg("--report")
        .arg(&report)
        .arg("--log-dir")
        .arg(dir.join(label));
    if let Some(version) = case.api_version {
        cmd.args(["--api-version", &version.to_string()]);
    }
    for scenario in case.fail.iter().chain(case.pass) {
        cmd.args(["--scenario", scenario]);
    }
    let output = cmd
        .output()
        .map_err(|e| format!("cannot run conformance: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let json: serde_json::Value = std::fs::read(&report)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| {
            format!(
                "no report from the run (exit {:?})\n{stdout}\n{}",
                output.status.code(),
                String::from_utf8_lossy(&output.stderr)
            )
        })?;
    Ok(json["outcomes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| {
            let field = |k: &str| o[k].as_str().unwrap_or_default().to_owned();
            (field("scenario"), (field("verdict"), field("reason")))
        })
        .collect())
}

/// What is wrong with a run's verdicts, if anything.
fn judge(case: &Case, outcomes: &BTreeMap<String, (String, String)>) -> Vec<String> {
    let label = case.label;
    let mut problems = Vec::new();
    for (expected, names) in [("fail", case.fail), ("pass", case.pass)] {
        for name in names {
            match outcomes.get(*name) {
                None => problems.push(format!("{label}: {name} did not run")),
                Some((verdict, reason)) if verdict != expected => problems.push(format!(
                    "{label}: {name} is {verdict}, expected {expected}: {reason}"
                )),
                Some((_, reason))
                    if expected == "fail"
                        && !reason.to_lowercase().contains(&case.because.to_lowercase()) =>
                {
                    problems.push(format!(
                        "{label}: {name} failed without naming the defect ({:?} missing): {reason}",
                        case.because
                    ))
                }
                Some(_) => {}
            }
        }
    }
    problems
}

#[test]
fn each_defect_fails_exactly_the_scenarios_that_cover_it() {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("conformance-judge-{}", std::process::id()));
    let cases = cases();
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = cases
            .iter()
            .map(|case| {
                let dir = &dir;
                scope.spawn(move || run(case, dir))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a run thread"))
            .collect()
    });
    let mut problems = Vec::new();
    for (case, result) in cases.iter().zip(results) {
        match result {
            Ok(outcomes) => problems.extend(judge(case, &outcomes)),
            Err(e) => problems.push(format!("{}: {e}", case.label)),
        }
    }
    assert!(
        problems.is_empty(),
        "the suite judged the reference bridge wrongly (logs in {}):\n{}",
        dir.display(),
        problems.join("\n")
    );
    let _ = std::fs::remove_dir_all(&dir);
}
