//! What the `gatehouse-async-std` binary refuses that the tokio one runs.

use std::process::Command;

/// `amqp.client = "amqprs"` (issue 13, item 1): amqprs runs on tokio only, so this binary
/// stops at once with an error that says so, before connecting anywhere.
#[test]
fn the_amqprs_client_is_refused_with_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("gatehouse-async-std-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create a test directory");
    let out = Command::new(env!("CARGO_BIN_EXE_gatehouse-async-std"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DISCORD_TOKEN", "refused.token")
        .env("GATEHOUSE_AMQP_CLIENT", "amqprs")
        // Nothing listens there: the binary must not get as far as trying.
        .env("AMQP_URL", "amqp://guest:guest@127.0.0.1:9/%2f")
        .env("GATEHOUSE_API_BASE", "http://127.0.0.1:9")
        .current_dir(&dir)
        .output()
        .expect("run gatehouse-async-std");
    let _ = std::fs::remove_dir_all(&dir);
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{logs}");
    assert!(
        logs.contains("amqp.client = \"amqprs\"") && logs.contains("tokio binary"),
        "{logs}"
    );
}
