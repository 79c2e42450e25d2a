//! The demo (no token): the binary starts the mock gateway itself, publishes into RabbitMQ and
//! prints a live count per event type; Ctrl-C stops it cleanly.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::{RedisPrefix, Vhost};

#[test]
fn the_demo_shows_events_flowing_and_stops_on_ctrl_c() {
    let vhost = Vhost::create("demo");
    let redis = RedisPrefix::new("demo");
    let mut child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .env("AMQP_URL", vhost.amqp_url())
        .env("REDIS_URL", RedisPrefix::url())
        .env("GATEHOUSE_REDIS_PREFIX", &redis.prefix)
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start gatehouse");
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut counted = None;
    while Instant::now() < deadline {
        let Ok(line) = lines.recv_timeout(Duration::from_secs(1)) else {
            continue;
        };
        if line.starts_with("events: ") && line.contains("READY") {
            counted = Some(line);
            break;
        }
    }
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let status = wait_with_timeout(&mut child, Duration::from_secs(30));
    let counted = counted.expect("the demo printed a count of published events");
    assert!(counted.contains("MESSAGE_CREATE"), "{counted}");
    assert!(
        status.is_some_and(|s| s.success()),
        "clean exit on Ctrl-C: {status:?}"
    );
    // The demo keeps the mock's sessions apart from real ones.
    assert!(redis.get("session:0").is_none());
}

fn wait_with_timeout(
    child: &mut std::process::Child,
    timeout: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    None
}
