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
use super::{Kit, TOKEN, presence_reached_shard_0};

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
    assert!(
        presence_reached_shard_0(&mock, "idle"),
        "the presence update from stdin reached the gateway"
    );
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
    // READY, the fixture, and RESUMED (a dispatch with its own sequence).
    let all = fixture.len() + 2;
    let deadline = Instant::now() + Duration::from_secs(90);
    let sent = |mock: &MockGateway| -> BTreeSet<i64> {
        mock.recorder()
            .sent_dispatches(0)
            .iter()
            .map(|b| sequence(b))
            .collect()
    };
    // Every line printed so far is read before the (costly) comparison with what the mock sent.
    while Instant::now() < deadline
        && !{
            let sent = sent(&mock);
            sent.len() >= all && sent.is_subset(&seen)
        }
    {
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(200)) {
            seen.insert(sequence(stdio_line(&line).2.as_bytes()));
            for line in lines.try_iter() {
                seen.insert(sequence(stdio_line(&line).2.as_bytes()));
            }
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

/// The test worker on `@spectacles/brokers` (`conformance/node/spectacles-brokers`),
/// installed with `npm ci` when its `node_modules` is missing.
struct NodeWorker {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    lines: mpsc::Receiver<serde_json::Value>,
}

impl NodeWorker {
    fn start(redis_url: &str, group: &str, events: &[String]) -> Self {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let dir =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../conformance/node/spectacles-brokers");
        if !dir.join("node_modules").exists() {
            let status = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir)
                .status()
                .expect("npm is installed");
            assert!(status.success(), "npm ci in {}", dir.display());
        }
        let mut child = Command::new("node")
            .arg("worker.js")
            .arg(redis_url)
            .arg(group)
            .arg(events.join(","))
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("node is installed");
        let stdout = child.stdout.take().expect("piped");
        let stdin = child.stdin.take();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                match serde_json::from_str(&line) {
                    Ok(value) => {
                        let _ = tx.send(value);
                    }
                    Err(e) => panic!("the worker printed {line:?}: {e}"),
                }
            }
        });
        let worker = Self {
            child,
            stdin,
            lines,
        };
        let ready = worker.lines.recv_timeout(Duration::from_secs(60));
        assert_eq!(
            ready.ok().map(|r| r["ready"].clone()),
            Some(true.into()),
            "the worker subscribed"
        );
        worker
    }

    /// Publishes `data` to `stream` with the library (msgpack); waits for the entry id.
    fn publish(&mut self, stream: &str, data: serde_json::Value) {
        let line = serde_json::json!({ "publish": stream, "data": data });
        let stdin = self.stdin.as_mut().expect("open");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }
}

impl Drop for NodeWorker {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn from_hex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

/// The environment of a gateway on Redis Streams (database `redis_url`), sessions there too.
fn streams_env(mock: &MockGateway, redis_url: &str, profile: &str) -> Vec<(&'static str, String)> {
    vec![
        ("DISCORD_TOKEN", TOKEN.to_owned()),
        ("GATEHOUSE_API_BASE", mock.api_base()),
        ("GATEHOUSE_PROFILE", profile.to_owned()),
        ("BROKER_TYPE", "redis".to_owned()),
        ("REDIS_URL", redis_url.to_owned()),
        ("GATEHOUSE_REDIS_PREFIX", "gh-test-session".to_owned()),
        ("GATEHOUSE_SHARD_COUNT", "1".to_owned()),
    ]
}

/// `BROKER_TYPE=redis` with the spectacles profile, and a worker on `@spectacles/brokers`
/// 0.9.3's `Redis` broker: it receives READY and every fixture event from the stream of its
/// name, the `data` byte for byte what the profile publishes on AMQP (msgpack of `d`) and
/// decoding to the dispatch's `d`; the commands it publishes with the library, to the shard's
/// stream (`0`) and to `SEND` by guild, reach the shard.
pub async fn redis_streams_reach_spectacles_workers_and_their_commands_reach_the_shard<K: Kit>(
    _rt: async_rs::Runtime<K>,
    binary: &Path,
) {
    let db = super::support::RedisDb::take("streams");
    let fixture = Fixture::basic();
    let mut config = MockConfig::for_tests(TOKEN);
    config.fixture = fixture.clone();
    let mock = MockGateway::start(config).expect("start the mock gateway");
    let mut events: Vec<String> = vec!["READY".into()];
    for event in fixture.events() {
        if !events.iter().any(|e| **e == *event.name) {
            events.push(event.name.to_string());
        }
    }
    let mut worker = NodeWorker::start(&db.url(), "workers", &events);
    let mut gatehouse = Gatehouse::start(binary, &streams_env(&mock, &db.url(), "spectacles"));

    let expected = fixture.len() + 1;
    let mut received: Vec<serde_json::Value> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while received.len() < expected && Instant::now() < deadline {
        if let Ok(line) = worker.lines.recv_timeout(Duration::from_millis(200)) {
            received.push(line);
        }
    }
    let sent = mock.recorder().sent_dispatches(0);
    assert_eq!(
        received.len(),
        sent.len(),
        "every dispatch reached the worker once"
    );
    for event in &events {
        let sent: Vec<(Vec<u8>, serde_json::Value)> = sent
            .iter()
            .filter_map(|bytes| {
                #[derive(serde::Deserialize)]
                struct Dispatch<'a> {
                    t: &'a str,
                    #[serde(borrow)]
                    d: &'a serde_json::value::RawValue,
                }
                let dispatch: Dispatch<'_> = serde_json::from_slice(bytes).unwrap();
                (dispatch.t == event.as_str()).then(|| {
                    let d = dispatch.d.get().as_bytes();
                    (
                        proto_core::profile::msgpack::json_to_msgpack(d).unwrap(),
                        serde_json::from_slice(d).unwrap(),
                    )
                })
            })
            .collect();
        let got: Vec<(Vec<u8>, serde_json::Value)> = received
            .iter()
            .filter(|line| line["event"] == event.as_str())
            .map(|line| {
                (
                    from_hex(line["raw"].as_str().unwrap()),
                    line["data"].clone(),
                )
            })
            .collect();
        assert_eq!(got.len(), sent.len(), "{event}: as many as sent");
        for ((raw, data), (expected_raw, expected_data)) in got.iter().zip(&sent) {
            assert_eq!(raw, expected_raw, "{event}: the data field byte for byte");
            assert_eq!(data, expected_data, "{event}: decodes to the dispatch's d");
        }
    }

    let status = |status: &str| serde_json::json!({"op": 3, "d": {"since": null, "activities": [], "status": status, "afk": false}});
    worker.publish("0", status("idle"));
    worker.publish(
        "SEND",
        serde_json::json!({"guild_id": "81384788765712384", "packet": status("dnd")}),
    );
    for wanted in ["idle", "dnd"] {
        assert!(
            presence_reached_shard_0(&mock, wanted),
            "the worker's `{wanted}` presence reached the shard"
        );
    }
    assert!(
        gatehouse.interrupt_and_wait(Duration::from_secs(30)),
        "clean exit on Ctrl-C"
    );
    // Both commands were acknowledged in the gateway's group (nothing left pending).
    assert_nothing_pending(&mut db.connection(), &["0", "SEND"]);
}

/// Killed (SIGKILL) mid-stream on Redis Streams and started again: every dispatch the mock
/// sent is in its event's stream at least once (the native profile's body carries `s`); a
/// command published while no gateway ran, and one a dead consumer left pending (claimed),
/// reach the shard; a bad command is dead-lettered to its own stream with the reason; every
/// command ends acknowledged.
pub async fn redis_streams_lose_nothing_when_killed_and_restarted<K: Kit>(
    _rt: async_rs::Runtime<K>,
    binary: &Path,
) {
    let db = super::support::RedisDb::take("streams-kill");
    let fixture = Fixture::basic().repeated(20);
    let mut config = MockConfig::for_tests(TOKEN);
    config.fixture = fixture.clone();
    config.rate = ReplayRate::PerSecond(40.0);
    let mock = MockGateway::start(config).expect("start the mock gateway");
    let events = event_streams(&fixture);
    let in_streams =
        |db: &super::support::RedisDb| -> BTreeSet<i64> { appended(&mut db.connection(), &events) };

    let mut first = Gatehouse::start(binary, &streams_env(&mock, &db.url(), "gatehouse"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while in_streams(&db).len() < 30 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(in_streams(&db).len() >= 30, "events flowed before the kill");
    first.kill();
    let mut connection = db.connection();
    let xadd = |connection: &mut redis::Connection, body: &str| -> String {
        xadd_command(connection, "shard.0", body)
    };
    // A command a consumer took and never acknowledged (it died): pending in the group, idle
    // for a minute (`XCLAIM ... IDLE` sets that), so the restarted gateway claims it.
    let stuck = xadd(&mut connection, &presence("dnd"));
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("gateway")
        .arg("a-dead-consumer")
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg("shard.0")
        .arg(">")
        .query(&mut connection)
        .unwrap();
    let _: redis::Value = redis::cmd("XCLAIM")
        .arg("shard.0")
        .arg("gateway")
        .arg("a-dead-consumer")
        .arg(0)
        .arg(&stuck)
        .arg("IDLE")
        .arg(60_000)
        .query(&mut connection)
        .unwrap();
    // A command published while no gateway runs waits in its stream (the group remembers
    // where the gateway stopped reading).
    xadd(&mut connection, &presence("idle"));

    let mut second = Gatehouse::start(binary, &streams_env(&mock, &db.url(), "gatehouse"));
    mock.recorder()
        .wait_resume(1, Duration::from_secs(30))
        .expect("the restarted process resumes");
    // READY, the fixture, and RESUMED (a dispatch with its own sequence).
    let all = fixture.len() + 2;
    let sent = |mock: &MockGateway| -> BTreeSet<i64> {
        mock.recorder()
            .sent_dispatches(0)
            .iter()
            .map(|b| sequence(b))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline
        && !(sent(&mock).len() >= all && sent(&mock).is_subset(&in_streams(&db)))
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    let sent = sent(&mock);
    assert!(sent.len() >= all, "the mock sent the whole fixture");
    let seen = in_streams(&db);
    let missing: Vec<_> = sent.difference(&seen).collect();
    assert!(missing.is_empty(), "never appended: {missing:?}");
    assert_eq!(
        mock.recorder().identifies().len(),
        1,
        "resumed, not identified again"
    );

    // The native profile's commands on Redis: `shard.0` (published during the outage) reaches
    // the shard; a bad one goes to the dead-letter stream with the reason, never back to the
    // command stream.
    xadd(&mut connection, "not json at all");
    for wanted in ["idle", "dnd"] {
        assert!(
            presence_reached_shard_0(&mock, wanted),
            "the `{wanted}` command reached the shard after the restart"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut dead: Vec<redis::Value> = Vec::new();
    while dead.is_empty() && Instant::now() < deadline {
        dead = redis::cmd("XRANGE")
            .arg("gateway.commands.dlx")
            .arg("-")
            .arg("+")
            .query(&mut connection)
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(dead.len(), 1, "the bad command was dead-lettered: {dead:?}");
    let dead = format!("{:?}", dead[0]);
    assert!(dead.contains("x-gatehouse-error"), "{dead}");
    let commands: u64 = redis::cmd("XLEN")
        .arg("shard.0")
        .query(&mut connection)
        .unwrap();
    assert_eq!(commands, 3, "nothing went back to the command stream");
    assert_nothing_pending(&mut connection, &["shard.0"]);
    assert!(second.interrupt_and_wait(Duration::from_secs(30)));
}

/// The streams the native profile appends a fixture's dispatches to: one per event name, and
/// READY and RESUMED.
fn event_streams(fixture: &Fixture) -> BTreeSet<String> {
    let mut events = BTreeSet::from(["READY".to_owned(), "RESUMED".to_owned()]);
    events.extend(fixture.events().iter().map(|e| e.name.to_string()));
    events
}

/// The sequences of every dispatch in `events`' streams (the native profile's body carries
/// `s`), read with `XRANGE` on `connection`.
fn appended(
    connection: &mut dyn redis::ConnectionLike,
    events: &BTreeSet<String>,
) -> BTreeSet<i64> {
    let mut seen = BTreeSet::new();
    for event in events {
        let entries: redis::Value = redis::cmd("XRANGE")
            .arg(event)
            .arg("-")
            .arg("+")
            .query(connection)
            .unwrap();
        let redis::Value::Array(entries) = entries else {
            continue;
        };
        for entry in entries {
            let redis::Value::Array(parts) = entry else {
                continue;
            };
            let Some(redis::Value::Array(fields)) = parts.get(1) else {
                continue;
            };
            if let [
                redis::Value::BulkString(name),
                redis::Value::BulkString(data),
            ] = &fields[..]
            {
                assert_eq!(name, b"data");
                seen.insert(sequence(data));
            }
        }
    }
    seen
}

/// A presence update (op 3) with `status`, as a worker sends it.
fn presence(status: &str) -> String {
    format!(r#"{{"op":3,"d":{{"since":null,"activities":[],"status":"{status}","afk":false}}}}"#)
}

/// `XADD <stream> * data <body>`, as a worker publishes a command; returns the entry id.
fn xadd_command(connection: &mut dyn redis::ConnectionLike, stream: &str, body: &str) -> String {
    redis::cmd("XADD")
        .arg(stream)
        .arg("*")
        .arg("data")
        .arg(body)
        .query(connection)
        .unwrap()
}

/// Waits (up to 90 s) until every dispatch the mock sent on shard 0, at least `min`, is in
/// its event's stream as `connect` reads them; returns what is missing.
fn missing_from_streams<C: redis::ConnectionLike>(
    mock: &MockGateway,
    events: &BTreeSet<String>,
    min: usize,
    mut connect: impl FnMut() -> redis::RedisResult<C>,
) -> Vec<i64> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let sent: BTreeSet<i64> = mock
            .recorder()
            .sent_dispatches(0)
            .iter()
            .map(|b| sequence(b))
            .collect();
        let seen = connect()
            .map(|mut c| appended(&mut c, events))
            .unwrap_or_default();
        let missing: Vec<i64> = sent.difference(&seen).copied().collect();
        if (sent.len() >= min && missing.is_empty()) || Instant::now() >= deadline {
            assert!(sent.len() >= min, "the mock sent {} of {min}", sent.len());
            return missing;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Issue 10 item 8: the Redis Streams output through Sentinel. Every dispatch arrives in its
/// event's stream on the primary the Sentinels name, and a worker's command appended to the
/// command stream (`shard.0`) reaches the shard; after `SENTINEL FAILOVER` (the old primary
/// demoted, its clients disconnected) new dispatches arrive on the new primary and a command
/// appended there reaches the shard too: the publisher and the command reader both find the
/// new primary through the Sentinels. Private `redis-server` instances; skipped without them.
pub async fn redis_streams_run_through_sentinel<K: Kit>(_rt: async_rs::Runtime<K>, binary: &Path) {
    if !super::redis_ha::redis_server_available("redis_streams_run_through_sentinel") {
        return;
    }
    let deployment = super::redis_ha::SentinelDeployment::start(Default::default());
    let fixture = Fixture::basic();
    let mut config = MockConfig::for_tests(TOKEN);
    config.fixture = fixture.clone();
    let mock = MockGateway::start(config).expect("start the mock gateway");
    let events = event_streams(&fixture);
    let mut gatehouse =
        Gatehouse::start(binary, &streams_env(&mock, &deployment.url(), "gatehouse"));

    let primary = deployment.primary_port().expect("a primary");
    let missing = missing_from_streams(&mock, &events, fixture.len() + 1, || {
        Ok::<_, redis::RedisError>(deployment.connection(primary))
    });
    assert!(missing.is_empty(), "never appended: {missing:?}");
    xadd_command(
        &mut deployment.connection(primary),
        "shard.0",
        &presence("idle"),
    );
    assert!(
        presence_reached_shard_0(&mock, "idle"),
        "the command from the stream reached the shard"
    );

    let new_primary = deployment.failover();
    // Until the Sentinels demote the old primary it still takes writes that its resync from
    // the new one then drops (Redis's asynchronous failover; RELIABILITY.md): dispatches are
    // injected once it is a replica.
    let deadline = Instant::now() + Duration::from_secs(60);
    while deployment.is_primary(primary) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !deployment.is_primary(primary),
        "the Sentinels demote the old primary"
    );
    super::support::inject_test_events(&mock, 5);
    let mut events = events;
    events.insert("GH_TEST_EVENT".to_owned());
    let missing = missing_from_streams(&mock, &events, fixture.len() + 6, || {
        Ok::<_, redis::RedisError>(deployment.connection(new_primary))
    });
    assert!(
        missing.is_empty(),
        "never appended on the new primary: {missing:?}"
    );
    xadd_command(
        &mut deployment.connection(new_primary),
        "shard.0",
        &presence("dnd"),
    );
    assert!(
        presence_reached_shard_0(&mock, "dnd"),
        "a command appended on the new primary reached the shard"
    );
    assert!(gatehouse.interrupt_and_wait(Duration::from_secs(30)));
}

/// Issue 10 item 8: the Redis Streams output on a Redis Cluster, with stream names as the
/// workers use them (no hash tag): the event streams and the command streams (`shard.0`,
/// `all`) lie in several hash slots, so the publisher sends one pipeline per slot and reads
/// each slot's command streams apart. Every dispatch arrives in its event's stream, and
/// commands appended to `shard.0` and to `all` reach the shard. Private `redis-server`
/// instances; skipped without them.
pub async fn redis_streams_run_on_a_redis_cluster<K: Kit>(
    _rt: async_rs::Runtime<K>,
    binary: &Path,
) {
    use proto_core::redis_topology::hash_slot;
    if !super::redis_ha::redis_server_available("redis_streams_run_on_a_redis_cluster") {
        return;
    }
    let deployment = super::redis_ha::ClusterDeployment::start();
    let fixture = Fixture::basic();
    let mut config = MockConfig::for_tests(TOKEN);
    config.fixture = fixture.clone();
    let mock = MockGateway::start(config).expect("start the mock gateway");
    let events = event_streams(&fixture);
    let slots: BTreeSet<u16> = events.iter().map(|e| hash_slot(e.as_bytes())).collect();
    assert!(slots.len() > 1, "the event streams lie in several slots");
    assert_ne!(
        hash_slot(b"shard.0"),
        hash_slot(b"all"),
        "so do the command streams"
    );
    let mut gatehouse =
        Gatehouse::start(binary, &streams_env(&mock, &deployment.url(), "gatehouse"));

    let missing = missing_from_streams(&mock, &events, fixture.len() + 1, || {
        deployment.connection()
    });
    assert!(missing.is_empty(), "never appended: {missing:?}");
    let mut connection = deployment.connection().expect("a cluster connection");
    xadd_command(&mut connection, "shard.0", &presence("idle"));
    xadd_command(&mut connection, "all", &presence("dnd"));
    for wanted in ["idle", "dnd"] {
        assert!(
            presence_reached_shard_0(&mock, wanted),
            "the `{wanted}` command from its stream reached the shard"
        );
    }
    assert!(gatehouse.interrupt_and_wait(Duration::from_secs(30)));
    assert_nothing_pending(&mut connection, &["shard.0", "all"]);
}

/// Every command entry of `streams` was acknowledged in the gateway's group (`XPENDING`).
fn assert_nothing_pending(connection: &mut dyn redis::ConnectionLike, streams: &[&str]) {
    for stream in streams {
        let pending: redis::Value = redis::cmd("XPENDING")
            .arg(stream)
            .arg("gateway")
            .query(connection)
            .unwrap();
        let redis::Value::Array(summary) = pending else {
            panic!("XPENDING {stream}: {pending:?}");
        };
        assert_eq!(
            summary.first(),
            Some(&redis::Value::Int(0)),
            "{stream}: every command acknowledged"
        );
    }
}
