//! End to end, the outputs beside AMQP (issue 14): stdio and Redis Streams with the real
//! binary against the mock gateway.
//!
//! Owns: the scenarios of each output (passthrough byte-exact, commands, kill and restart with
//! nothing missing). Does not own the helpers (`support`).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mock_gateway::{Fixture, MockConfig, MockGateway, ReplayRate};

use super::support::{Gatehouse, RedisPrefix};
use super::{Kit, TOKEN};

/// The environment of a gateway on stdio (Spectacles' `BROKER_TYPE`), sessions in Redis.
fn stdio_env(mock: &MockGateway, redis: &RedisPrefix) -> Vec<(&'static str, String)> {
    vec![
        ("DISCORD_TOKEN", TOKEN.to_owned()),
        ("GATEHOUSE_API_BASE", mock.api_base()),
        ("BROKER_TYPE", "stdio".to_owned()),
        ("REDIS_URL", RedisPrefix::url()),
        ("GATEHOUSE_REDIS_PREFIX", redis.prefix.clone()),
        ("GATEHOUSE_SHARD_COUNT", "1".to_owned()),
    ]
}

/// One stdout line split into its shard, event and the packet's bytes; panics on anything
/// else (stdout holds event lines only: logs go to stderr).
pub fn stdio_line(line: &str) -> (u64, String, String) {
    let value: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON on stdout ({e}): {line}"));
    let shard = value["shard"].as_u64().expect("a shard number");
    let event = value["event"].as_str().expect("an event name").to_owned();
    let prefix = format!(
        "{{\"shard\":{shard},\"event\":{},\"packet\":",
        serde_json::to_string(&event).unwrap()
    );
    let packet = line
        .strip_prefix(&prefix)
        .and_then(|rest| rest.strip_suffix('}'))
        .unwrap_or_else(|| panic!("not a stdio event line: {line}"));
    (shard, event, packet.to_owned())
}

/// The sequence of a dispatch's bytes.
fn sequence(packet: &[u8]) -> i64 {
    serde_json::from_slice::<serde_json::Value>(packet).unwrap()["s"]
        .as_i64()
        .expect("a dispatch has a sequence")
}

/// Takes stdout lines until `done(lines so far)` or `timeout`.
fn read_lines(
    lines: &mpsc::Receiver<String>,
    timeout: Duration,
    mut done: impl FnMut(&[String]) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut read = Vec::new();
    while !done(&read) && Instant::now() < deadline {
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(200)) {
            read.push(line);
        }
    }
    read
}

/// `BROKER_TYPE=stdio`: READY and every fixture dispatch as one JSON line each on stdout, in
/// order, the packet byte for byte as the mock sent it; nothing else on stdout. A command line
/// on stdin reaches the shard; a bad one is skipped; the end of stdin does not stop the
/// gateway; Ctrl-C does.
pub async fn stdio_passes_packets_through_and_takes_commands_from_stdin<K: Kit>(
    _rt: async_rs::Runtime<K>,
    binary: &Path,
) {
    let redis = RedisPrefix::new("stdio");
    let fixture = Fixture::basic();
    let mut config = MockConfig::for_tests(TOKEN);
    config.fixture = fixture.clone();
    let mock = MockGateway::start(config).expect("start the mock gateway");
    let (mut gatehouse, mut stdin, lines) =
        Gatehouse::start_piped(binary, &stdio_env(&mock, &redis));

    let expected = fixture.len() + 1;
    let read = read_lines(&lines, Duration::from_secs(60), |l| l.len() >= expected);
    let sent = mock.recorder().sent_dispatches(0);
    assert_eq!(read.len(), sent.len(), "one line per dispatch: {read:?}");
    for (i, (line, sent)) in read.iter().zip(&sent).enumerate() {
        let (shard, event, packet) = stdio_line(line);
        assert_eq!(shard, 0);
        assert_eq!(packet.as_bytes(), sent.as_ref(), "dispatch {i} differs");
        let t: serde_json::Value = serde_json::from_slice(sent).unwrap();
        assert_eq!(t["t"].as_str(), Some(event.as_str()));
    }

    let presence = r#"{"op":3,"d":{"since":null,"activities":[],"status":"idle","afk":false}}"#;
    writeln!(stdin, "this is not a command").unwrap();
    writeln!(stdin, r#"{{"event":"shard.0","packet":{presence}}}"#).unwrap();
    stdin.flush().unwrap();
    drop(stdin);
    let received = mock
        .recorder()
        .wait_for(Duration::from_secs(30), |recording| {
            recording
                .shard_connections(0)
                .flat_map(|c| c.received.iter())
                .find(|f| f.op == Some(3))
                .map(|f| f.json.clone())
        })
        .expect("the presence update from stdin reached the gateway");
    let received: serde_json::Value = serde_json::from_slice(&received).unwrap();
    assert_eq!(received["d"]["status"], "idle");
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        gatehouse.is_running(),
        "the end of stdin does not stop the gateway"
    );
    assert!(
        gatehouse.interrupt_and_wait(Duration::from_secs(30)),
        "clean exit on Ctrl-C"
    );
    // Nothing but event lines was written to stdout, before or after.
    for line in read
        .iter()
        .chain(lines.try_iter().collect::<Vec<_>>().iter())
    {
        stdio_line(line);
    }
}

/// Killed (SIGKILL) mid-stream on stdio and started again: the second process resumes the
/// session Redis holds, and every dispatch the mock sent was printed at least once (what was
/// not flushed before the kill was not acknowledged, so the saved sequence never passed it).
pub async fn stdio_loses_nothing_when_killed_and_restarted<K: Kit>(
    _rt: async_rs::Runtime<K>,
    binary: &Path,
) {
    let redis = RedisPrefix::new("stdio-kill");
    let fixture = Fixture::basic().repeated(20);
    let mut config = MockConfig::for_tests(TOKEN);
    config.fixture = fixture.clone();
    config.rate = ReplayRate::PerSecond(40.0);
    let mock = MockGateway::start(config).expect("start the mock gateway");

    let (mut first, _stdin, lines) = Gatehouse::start_piped(binary, &stdio_env(&mock, &redis));
    let mut seen = BTreeSet::new();
    for line in read_lines(&lines, Duration::from_secs(60), |l| l.len() >= 30) {
        seen.insert(sequence(stdio_line(&line).2.as_bytes()));
    }
    assert!(seen.len() >= 30, "events flowed before the kill");
    first.kill();
    for line in lines.try_iter() {
        seen.insert(sequence(stdio_line(&line).2.as_bytes()));
    }

    let (mut second, _stdin, lines) = Gatehouse::start_piped(binary, &stdio_env(&mock, &redis));
    mock.recorder()
        .wait_resume(1, Duration::from_secs(30))
        .expect("the restarted process resumes");
    let all = fixture.len() + 1;
    let deadline = Instant::now() + Duration::from_secs(90);
    let sent = |mock: &MockGateway| -> BTreeSet<i64> {
        mock.recorder()
            .sent_dispatches(0)
            .iter()
            .map(|b| sequence(b))
            .collect()
    };
    while Instant::now() < deadline && !(sent(&mock).len() >= all && sent(&mock).is_subset(&seen)) {
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(200)) {
            seen.insert(sequence(stdio_line(&line).2.as_bytes()));
        }
    }
    let sent = sent(&mock);
    assert!(sent.len() >= all, "the mock sent the whole fixture");
    let missing: Vec<_> = sent.difference(&seen).collect();
    assert!(missing.is_empty(), "never printed: {missing:?}");
    assert_eq!(
        mock.recorder().identifies().len(),
        1,
        "resumed, not identified again"
    );
    assert!(second.interrupt_and_wait(Duration::from_secs(30)));
}
