//! End to end, for every runtime binary: the mock gateway -> a real Gatehouse binary (a child
//! process) -> RabbitMQ (a fresh vhost per test) and Redis (a unique key prefix per test).
//!
//! Owns: the end-to-end scenarios, written once. Each runtime crate runs all of them against
//! its own binary with [`end_to_end_tests!`](crate::end_to_end_tests), the test side (AMQP
//! consumer, timeouts) on that runtime's `async-rs` kit. Does not own protocol behaviour (the
//! core's deterministic tests prove it); these prove the wiring: sockets, broker, Redis,
//! signals. Compiled with the `test-support` feature only (the crates' dev-dependencies).
//!
//! Needs RabbitMQ with the management API on 127.0.0.1 and Redis (`scripts/services.sh`).

pub mod outputs;
pub mod redis_ha;
pub mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use async_rs::traits::{Reactor, RuntimeKit};
use mock_gateway::{Fixture, FrameRecording, MockConfig, MockGateway, ReplayRate};
pub use outputs::*;
use support::{Capture, Gatehouse, RedisPrefix, Vhost, header_int};

/// The end-to-end tests for one runtime binary, as `#[test]`-style async functions:
/// `end_to_end_tests!(#[tokio::test] async_rs::Runtime::tokio_current(), "path/to/binary");`.
/// The attribute is the runtime's test attribute; the runtime expression gives the `async-rs`
/// runtime the test side runs on. A new scenario goes into this module and into the list
/// below, and so runs against every runtime binary. The demo scenario runs when the calling
/// crate's `demo` feature is on; the rate measurement only with `--ignored`.
#[macro_export]
macro_rules! end_to_end_tests {
    (#[$test:meta] $rt:expr, $binary:expr) => {
        $crate::end_to_end_tests!(@each #[$test] $rt, $binary;
            every_dispatch_arrives_in_order_byte_identical,
            unroutable_events_are_returned_not_acked,
            a_restarted_process_resumes_with_the_persisted_sequence,
            a_broker_connection_loss_loses_no_event,
            commands_reach_the_shard_and_bad_ones_are_dead_lettered,
            quorum_queues_carry_commands_and_dead_letters,
            stdio_passes_packets_through_and_takes_commands_from_stdin,
            stdio_loses_nothing_when_killed_and_restarted,
            redis_streams_reach_spectacles_workers_and_their_commands_reach_the_shard,
            redis_streams_lose_nothing_when_killed_and_restarted,
            redis_streams_run_through_sentinel,
            redis_streams_run_on_a_redis_cluster,
            sessions_survive_a_sentinel_failover,
            cluster_mode_runs_on_a_redis_cluster,
            a_changed_shard_count_reshards_the_cluster,
        );
        #[$test]
        #[ignore = "measurement; run explicitly in release with --ignored --nocapture"]
        async fn end_to_end_rate() {
            $crate::e2e::end_to_end_rate($rt, ::std::path::Path::new($binary)).await
        }

        #[cfg(feature = "demo")]
        #[$test]
        async fn the_status_page_renders_the_shards_in_a_browser() {
            $crate::e2e::the_status_page_renders_the_shards_in_a_browser(
                $rt,
                ::std::path::Path::new($binary),
            )
            .await
        }

        #[cfg(feature = "demo")]
        #[$test]
        async fn the_demo_shows_events_flowing_and_stops_on_ctrl_c() {
            $crate::e2e::the_demo_shows_events_flowing_and_stops_on_ctrl_c(
                $rt,
                ::std::path::Path::new($binary),
            )
            .await
        }
    };
    (@each #[$test:meta] $rt:expr, $binary:expr; $($scenario:ident,)*) => {
        $(
            #[$test]
            async fn $scenario() {
                $crate::e2e::$scenario($rt, ::std::path::Path::new($binary)).await
            }
        )*
    };
}

/// The publish-path scenarios again with `GATEHOUSE_AMQP_CLIENT=amqprs` (issue 13, item 1), for
/// the binary that runs amqprs (the tokio one):
/// `amqprs_end_to_end_tests!(#[tokio::test] async_rs::Runtime::tokio_current(), "path/to/binary");`.
#[macro_export]
macro_rules! amqprs_end_to_end_tests {
    (#[$test:meta] $rt:expr, $binary:expr) => {
        $crate::end_to_end_tests!(@each #[$test] $rt, $binary;
            every_dispatch_arrives_in_order_byte_identical_amqprs,
            unroutable_events_are_returned_not_acked_amqprs,
            a_broker_connection_loss_loses_no_event_amqprs,
            commands_reach_the_shard_and_bad_ones_are_dead_lettered_amqprs,
        );
    };
}

const TOKEN: &str = "e2e-test-token";

/// The AMQP client a scenario runs the binary with (`GATEHOUSE_AMQP_CLIENT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Client {
    /// The default: nothing set.
    Lapin,
    /// `GATEHOUSE_AMQP_CLIENT=amqprs`: events over a second connection, amqprs'.
    Amqprs,
}

impl Client {
    /// The environment that selects it.
    fn env(self) -> Vec<(&'static str, String)> {
        match self {
            Self::Lapin => Vec::new(),
            Self::Amqprs => vec![("GATEHOUSE_AMQP_CLIENT", "amqprs".to_owned())],
        }
    }
}

/// The name prefix of the connection the binary publishes events on, with `client`.
fn events_connection(client: Client) -> &'static str {
    match client {
        Client::Lapin => "gatehouse",
        Client::Amqprs => "gatehouse shards [0] events (amqprs)",
    }
}

/// What the test side needs of an `async-rs` runtime.
pub trait Kit: RuntimeKit + Send + Sync + Clone + 'static {}
impl<K: RuntimeKit + Send + Sync + Clone + 'static> Kit for K {}

fn gatehouse_env(
    mock: &MockGateway,
    vhost: &Vhost,
    redis: &RedisPrefix,
) -> Vec<(&'static str, String)> {
    vec![
        ("DISCORD_TOKEN", TOKEN.to_owned()),
        ("GATEHOUSE_API_BASE", mock.api_base()),
        ("AMQP_URL", vhost.amqp_url()),
        ("REDIS_URL", RedisPrefix::url()),
        ("GATEHOUSE_REDIS_PREFIX", redis.prefix.clone()),
        ("GATEHOUSE_SHARD_COUNT", "1".to_owned()),
    ]
}

/// Receives deliveries into `received` until every dispatch the mock sent on shard 0 (at least
/// `min` of them) has arrived at least once, or the time is up.
async fn capture_until_complete<K: Kit>(
    capture: &mut Capture<K>,
    mock: &MockGateway,
    min: usize,
    received: &mut Vec<lapin::message::Delivery>,
) {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut distinct: BTreeSet<i64> = received
        .iter()
        .filter_map(|d| header_int(d, "x-sequence"))
        .collect();
    while Instant::now() < deadline {
        let sent = mock.recorder().sent_dispatches(0).len();
        if sent >= min && distinct.len() >= sent {
            break;
        }
        if let Some(delivery) = capture.next(Duration::from_secs(2)).await {
            distinct.extend(header_int(&delivery, "x-sequence"));
            received.push(delivery);
        }
    }
}

/// [`capture_until_complete`] from nothing.
async fn capture_all<K: Kit>(
    capture: &mut Capture<K>,
    mock: &MockGateway,
    min: usize,
) -> Vec<lapin::message::Delivery> {
    let mut received = Vec::new();
    capture_until_complete(capture, mock, min, &mut received).await;
    received
}

/// READY and every fixture dispatch reach RabbitMQ once, in sequence order, byte for byte as
/// the mock sent them, persistent; Ctrl-C stops the process cleanly.
pub async fn every_dispatch_arrives_in_order_byte_identical<K: Kit>(
    rt: async_rs::Runtime<K>,
    binary: &Path,
) {
    every_dispatch_in_order(rt, binary, Client::Lapin).await;
}

/// The same with the events published by amqprs: on a connection of its own, beside lapin's.
pub async fn every_dispatch_arrives_in_order_byte_identical_amqprs<K: Kit>(
    rt: async_rs::Runtime<K>,
    binary: &Path,
) {
    every_dispatch_in_order(rt, binary, Client::Amqprs).await;
}

async fn every_dispatch_in_order<K: Kit>(rt: async_rs::Runtime<K>, binary: &Path, client: Client) {
    let vhost = Vhost::create("e2e");
    let redis = RedisPrefix::new("e2e");
    let fixture = Fixture::basic();
    let mut config = MockConfig::for_tests(TOKEN);
    config.fixture = fixture.clone();
    let mock = MockGateway::start(config).expect("start the mock gateway");
    let mut capture = Capture::topic(rt, &vhost.amqp_url(), "gateway").await;
    let metrics_address = support::free_local_address();
    let mut env = gatehouse_env(&mock, &vhost, &redis);
    env.push(("GATEHOUSE_METRICS_ADDRESS", metrics_address.clone()));
    env.extend(client.env());
    let mut gatehouse = Gatehouse::start(binary, &env);

    // READY plus every fixture event.
    let received = capture_all(&mut capture, &mock, fixture.len() + 1).await;
    let sent = mock.recorder().sent_dispatches(0);
    assert!(
        sent.len() > fixture.len(),
        "the mock sent {} dispatches",
        sent.len()
    );
    assert_eq!(received.len(), sent.len(), "every dispatch published once");
    for (i, (delivery, sent)) in received.iter().zip(&sent).enumerate() {
        assert_eq!(
            delivery.data.as_slice(),
            sent.as_ref(),
            "dispatch {i} differs from what the mock sent"
        );
    }
    let first: serde_json::Value = serde_json::from_slice(&received[0].data).unwrap();
    assert_eq!(first["t"], "READY");
    assert_eq!(received[0].routing_key.as_str(), "READY");
    let sequences: Vec<i64> = received
        .iter()
        .filter_map(|d| header_int(d, "x-sequence"))
        .collect();
    assert!(
        sequences.windows(2).all(|w| w[0] < w[1]),
        "in sequence order: {sequences:?}"
    );
    assert_eq!(
        received[0].properties.delivery_mode(),
        &Some(2),
        "persistent per the native profile"
    );
    let names = vhost.connection_names_once(events_connection(client));
    assert_eq!(
        names
            .iter()
            .any(|n| n.starts_with(events_connection(Client::Amqprs))),
        client == Client::Amqprs,
        "the events connection matches the client: {names:?}"
    );
    assert!(
        gatehouse.interrupt_and_wait(Duration::from_secs(30)),
        "clean exit on Ctrl-C"
    );
}

/// With no queue bound for the events the broker returns every one of them (mandatory): each
/// is counted as returned (`gatehouse_publish_confirms_total{result="unroutable"}`: an ack
/// taken for a plain one would not be), and the shard goes on (the native profile confirms
/// unroutable events).
pub async fn unroutable_events_are_returned_not_acked<K: Kit>(
    rt: async_rs::Runtime<K>,
    binary: &Path,
) {
    unroutable_returned(rt, binary, Client::Lapin).await;
}

/// The same with amqprs publishing: its returns carry no delivery tag and are matched to their
/// publications by message id.
pub async fn unroutable_events_are_returned_not_acked_amqprs<K: Kit>(
    rt: async_rs::Runtime<K>,
    binary: &Path,
) {
    unroutable_returned(rt, binary, Client::Amqprs).await;
}

async fn unroutable_returned<K: Kit>(rt: async_rs::Runtime<K>, binary: &Path, client: Client) {
    let vhost = Vhost::create("unroutable");
    let redis = RedisPrefix::new("unroutable");
    let fixture = Fixture::basic();
    let mut config = MockConfig::for_tests(TOKEN);
    config.fixture = fixture.clone();
    let mock = MockGateway::start(config).expect("start the mock gateway");
    let metrics_address = support::free_local_address();
    let mut env = gatehouse_env(&mock, &vhost, &redis);
    env.push(("GATEHOUSE_METRICS_ADDRESS", metrics_address.clone()));
    env.extend(client.env());
    let mut gatehouse = Gatehouse::start(binary, &env);

    let count = |text: &str, series: &str| -> u64 {
        text.lines()
            .find_map(|line| line.strip_prefix(series))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .map_or(0, |value| value as u64)
    };
    let expected = fixture.len() as u64 + 1;
    let url = format!("http://{metrics_address}/metrics");
    let mut metrics = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        metrics = support::http_get(&url);
        if count(
            &metrics,
            "gatehouse_publish_confirms_total{result=\"unroutable\"}",
        ) >= expected
        {
            break;
        }
        rt.sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        count(
            &metrics,
            "gatehouse_publish_confirms_total{result=\"unroutable\"}"
        ),
        expected,
        "READY and every fixture event returned: {metrics}"
    );
    assert!(gatehouse.is_running());
    assert!(gatehouse.interrupt_and_wait(Duration::from_secs(30)));
}

/// After a clean stop the session snapshot in Redis holds the last confirmed sequence, and a
/// restarted process sends RESUME with it (no second IDENTIFY).
pub async fn a_restarted_process_resumes_with_the_persisted_sequence<K: Kit>(
    rt: async_rs::Runtime<K>,
    binary: &Path,
) {
    let vhost = Vhost::create("resume");
    let redis = RedisPrefix::new("resume");
    let fixture = Fixture::basic();
    let mut config = MockConfig::for_tests(TOKEN);
    config.fixture = fixture.clone();
    let mock = MockGateway::start(config).expect("start the mock gateway");
    let mut capture = Capture::topic(rt, &vhost.amqp_url(), "gateway").await;

    let mut first = Gatehouse::start(binary, &gatehouse_env(&mock, &vhost, &redis));
    let received = capture_all(&mut capture, &mock, fixture.len() + 1).await;
    let last_sequence = received
        .last()
        .and_then(|d| header_int(d, "x-sequence"))
        .expect("dispatches arrived");
    assert!(
        first.interrupt_and_wait(Duration::from_secs(30)),
        "clean exit on Ctrl-C"
    );
    let stored = redis.get("session:0").expect("a session snapshot in Redis");
    let stored: serde_json::Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(
        stored["sequence"], last_sequence,
        "the snapshot holds the last confirmed sequence"
    );

    let mut second = Gatehouse::start(binary, &gatehouse_env(&mock, &vhost, &redis));
    let resume = mock
        .recorder()
        .wait_resume(1, Duration::from_secs(30))
        .expect("the restarted process sends RESUME");
    assert_eq!(resume.seq, Some(last_sequence as u64));
    assert_eq!(mock.recorder().identifies().len(), 1, "no second IDENTIFY");
    assert!(second.interrupt_and_wait(Duration::from_secs(30)));
}

/// Killing the gateway's AMQP connection mid-stream loses nothing: every dispatch arrives at
/// least once, first arrivals in sequence order.
pub async fn a_broker_connection_loss_loses_no_event<K: Kit>(
    rt: async_rs::Runtime<K>,
    binary: &Path,
) {
    connection_loss(rt, binary, Client::Lapin).await;
}

/// The same with amqprs publishing: the broker closes the amqprs events connection only; the
/// link is lost (lapin's connection is closed and both reconnect) and nothing is lost.
pub async fn a_broker_connection_loss_loses_no_event_amqprs<K: Kit>(
    rt: async_rs::Runtime<K>,
    binary: &Path,
) {
    connection_loss(rt, binary, Client::Amqprs).await;
}

async fn connection_loss<K: Kit>(rt: async_rs::Runtime<K>, binary: &Path, client: Client) {
    let vhost = Vhost::create("outage");
    let redis = RedisPrefix::new("outage");
    let fixture = Fixture::basic().repeated(20);
    let mut config = MockConfig::for_tests(TOKEN);
    config.fixture = fixture.clone();
    config.rate = ReplayRate::PerSecond(40.0);
    let mock = MockGateway::start(config).expect("start the mock gateway");
    let mut capture = Capture::topic(rt, &vhost.amqp_url(), "gateway").await;
    let mut env = gatehouse_env(&mock, &vhost, &redis);
    env.extend(client.env());
    let mut gatehouse = Gatehouse::start(binary, &env);

    let mut received = Vec::new();
    while received.len() < 20 {
        let delivery = capture
            .next(Duration::from_secs(30))
            .await
            .expect("events flow");
        received.push(delivery);
    }
    let closed = vhost.close_connections(events_connection(client));
    assert_eq!(closed, 1, "closed the gateway's events connection");
    capture_until_complete(&mut capture, &mock, fixture.len() + 1, &mut received).await;

    let sent = mock.recorder().sent_dispatches(0);
    let sent_sequences: BTreeSet<i64> = sent
        .iter()
        .map(|b| {
            serde_json::from_slice::<serde_json::Value>(b).unwrap()["s"]
                .as_i64()
                .unwrap()
        })
        .collect();
    let mut seen = BTreeSet::new();
    let mut first_seen = Vec::new();
    for delivery in &received {
        let s = header_int(delivery, "x-sequence").expect("x-sequence header");
        if seen.insert(s) {
            first_seen.push(s);
        }
    }
    assert_eq!(seen, sent_sequences, "every dispatch arrived at least once");
    assert!(
        first_seen.windows(2).all(|w| w[0] < w[1]),
        "first arrivals are in sequence order"
    );
    assert!(gatehouse.interrupt_and_wait(Duration::from_secs(30)));
}

/// Worker commands reach the right shard of the gateway; malformed and forbidden ones are
/// dead-lettered with a reason while the gateway keeps running.
pub async fn commands_reach_the_shard_and_bad_ones_are_dead_lettered<K: Kit>(
    rt: async_rs::Runtime<K>,
    binary: &Path,
) {
    commands_and_dead_letters(rt, binary, "commands", None, Client::Lapin).await;
}

/// The same with amqprs publishing the events (commands, forwarded commands and dead letters
/// stay on lapin's connection).
pub async fn commands_reach_the_shard_and_bad_ones_are_dead_lettered_amqprs<K: Kit>(
    rt: async_rs::Runtime<K>,
    binary: &Path,
) {
    commands_and_dead_letters(rt, binary, "commands-amqprs", None, Client::Amqprs).await;
}

/// With `GATEHOUSE_QUEUE_TYPE=quorum` the command queue and the dead-letter queue Gatehouse
/// declares are quorum queues (the management API says so), and commands and dead letters
/// still flow through them as in the classic case.
pub async fn quorum_queues_carry_commands_and_dead_letters<K: Kit>(
    rt: async_rs::Runtime<K>,
    binary: &Path,
) {
    commands_and_dead_letters(rt, binary, "quorum", Some("quorum"), Client::Lapin).await;
}

async fn commands_and_dead_letters<K: Kit>(
    rt: async_rs::Runtime<K>,
    binary: &Path,
    tag: &str,
    queue_type: Option<&str>,
    client: Client,
) {
    let vhost = Vhost::create(tag);
    let redis = RedisPrefix::new(tag);
    let mut config = MockConfig::for_tests(TOKEN);
    config.fixture = Fixture::basic();
    let mock = MockGateway::start(config).expect("start the mock gateway");
    let mut capture = Capture::topic(rt, &vhost.amqp_url(), "gateway").await;
    let mut env = gatehouse_env(&mock, &vhost, &redis);
    if let Some(queue_type) = queue_type {
        env.push(("GATEHOUSE_QUEUE_TYPE", queue_type.to_owned()));
    }
    env.extend(client.env());
    let mut gatehouse = Gatehouse::start(binary, &env);
    // READY arrived: the shard is active and the command topology is declared.
    capture.next(Duration::from_secs(30)).await.expect("READY");

    let presence = br#"{"op":3,"d":{"since":null,"activities":[],"status":"idle","afk":false}}"#;
    capture
        .publish("gateway.commands", "shard.0", b"not json at all")
        .await;
    capture
        .publish("gateway.commands", "shard.0", br#"{"op":2,"d":{}}"#)
        .await;
    capture
        .publish("gateway.commands", "shard.0", presence)
        .await;

    assert!(
        presence_reached_shard_0(&mock, "idle"),
        "the presence update reached the gateway"
    );

    let dead = capture
        .drain_queue("gateway.commands.dlx", 2, Duration::from_secs(30))
        .await;
    assert_eq!(dead.len(), 2, "both bad commands were dead-lettered");
    for message in &dead {
        let error = support::header_str(&message.delivery.properties, "x-gatehouse-error");
        assert!(error.is_some_and(|e| !e.is_empty()), "a reason is attached");
    }
    let identifies = mock.recorder().read(|r| {
        r.shard_connections(0)
            .flat_map(|c| c.received.iter())
            .filter(|f| f.op == Some(2))
            .count()
    });
    assert_eq!(identifies, 1, "the worker's IDENTIFY was not sent");
    assert!(
        gatehouse.is_running(),
        "bad commands do not stop the gateway"
    );
    // The queues Gatehouse declared (the capture's own queue is server-named and exclusive).
    let declared: Vec<(String, String)> = vhost
        .queues()
        .into_iter()
        .filter(|q| q.name.starts_with("gateway.commands"))
        .map(|q| (q.name, q.queue_type))
        .collect();
    assert_eq!(
        declared.len(),
        2,
        "the command and dead-letter queues: {declared:?}"
    );
    let expected = queue_type.unwrap_or("classic");
    for (name, kind) in &declared {
        assert_eq!(kind, expected, "{name} is a {expected} queue");
    }
    assert!(gatehouse.interrupt_and_wait(Duration::from_secs(30)));
}

/// With no token the binary runs the demo: it starts the mock gateway itself, publishes into
/// RabbitMQ and prints a live count per event type (plain lines: standard output is no
/// terminal here) that counts the READY of every shard; Ctrl-C stops it cleanly, and the
/// demo's sessions stay apart from real ones.
pub async fn the_demo_shows_events_flowing_and_stops_on_ctrl_c<K: Kit>(
    rt: async_rs::Runtime<K>,
    binary: &Path,
) {
    let vhost = Vhost::create("demo");
    let redis = RedisPrefix::new("demo");
    let env = [
        ("RUST_LOG", "warn".to_owned()),
        ("AMQP_URL", vhost.amqp_url()),
        ("REDIS_URL", RedisPrefix::url()),
        ("GATEHOUSE_REDIS_PREFIX", redis.prefix.clone()),
    ];
    let (mut gatehouse, lines) = Gatehouse::start_reading_stdout(binary, &env);

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut counted = None;
    while counted.is_none() && Instant::now() < deadline {
        match lines.try_recv() {
            // The demo runs 2 shards: both READYs are counted.
            Ok(line) if line.starts_with("events: ") && line.contains("| READY 2 ") => {
                counted = Some(line);
            }
            Ok(_) => {}
            Err(std::sync::mpsc::TryRecvError::Empty) => {
                rt.sleep(Duration::from_millis(100)).await;
            }
            Err(std::sync::mpsc::TryRecvError::Disconnected) => break,
        }
    }
    let stopped = gatehouse.interrupt_and_wait(Duration::from_secs(30));
    let counted = counted.expect("the demo printed a count of published events with 2 READYs");
    assert!(counted.contains("MESSAGE_CREATE"), "{counted}");
    assert!(stopped, "clean exit on Ctrl-C");
    assert!(
        redis.get("session:0").is_none(),
        "the demo keeps the mock's sessions apart from real ones"
    );
}

/// The status page in a real headless browser (Debian's `chromium-headless-shell`, or the
/// browser named by `GATEHOUSE_TEST_BROWSER`; scripts/test.sh installs it) during a demo run:
/// once `/readyz` says ready, the DOM the browser rendered has a row per shard, each active
/// with its sequence. The HTML source has no rows (the page's script draws them), so this
/// checks the rendering, not the markup. With two AMQP addresses (the second never reached),
/// both are listed, redacted, the first marked connected. With
/// `GATEHOUSE_TEST_SCREENSHOT=path` it also saves a screenshot there (how
/// docs/status-page.png was made).
pub async fn the_status_page_renders_the_shards_in_a_browser<K: Kit>(
    rt: async_rs::Runtime<K>,
    binary: &Path,
) {
    let browser = std::env::var("GATEHOUSE_TEST_BROWSER")
        .unwrap_or_else(|_| "chromium-headless-shell".to_owned());
    let vhost = Vhost::create("page");
    let redis = RedisPrefix::new("page");
    let address = support::free_local_address();
    let spare = "amqp://guest:spare-pw@127.0.0.1:1/%2f";
    let env = [
        ("AMQP_URL", format!("{},{spare}", vhost.amqp_url())),
        ("REDIS_URL", RedisPrefix::url()),
        ("GATEHOUSE_REDIS_PREFIX", redis.prefix.clone()),
        ("GATEHOUSE_METRICS_ADDRESS", address.clone()),
    ];
    let mut gatehouse = Gatehouse::start(binary, &env);
    let base = format!("http://{address}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut ready = String::new();
    while Instant::now() < deadline {
        ready = support::http_get(&format!("{base}/readyz"));
        if ready == "ready\n" {
            break;
        }
        rt.sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(ready, "ready\n", "the demo became ready");
    let source = support::http_get(&format!("{base}/"));
    assert!(
        !source.contains("<tr data-shard"),
        "the rows are drawn by the page's script"
    );

    let run_browser = |extra: &[String]| {
        let output = std::process::Command::new(&browser)
            .args(["--no-sandbox", "--disable-gpu", "--virtual-time-budget=3000"])
            .args(extra)
            .arg(format!("{base}/"))
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run {browser} ({e}): install chromium-headless-shell (scripts/test.sh does)")
            });
        assert!(output.status.success(), "{browser}: {:?}", output.status);
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let dom = run_browser(&["--dump-dom".to_owned()]);
    if let Ok(path) = std::env::var("GATEHOUSE_TEST_SCREENSHOT") {
        run_browser(&[
            "--hide-scrollbars".to_owned(),
            "--window-size=1000,720".to_owned(),
            format!("--screenshot={path}"),
        ]);
    }
    let stopped = gatehouse.interrupt_and_wait(Duration::from_secs(30));

    for shard in 0..2 {
        let row_start = dom
            .find(&format!("<tr data-shard=\"{shard}\">"))
            .unwrap_or_else(|| panic!("no row for shard {shard} in the rendered page:\n{dom}"));
        let row = &dom[row_start..];
        let row = &row[..row.find("</tr>").expect("a complete row")];
        let cells: Vec<&str> = row
            .split("<td")
            .skip(1)
            .map(|cell| {
                let text = &cell[cell.find('>').expect("a cell") + 1..];
                &text[..text.find("</td>").unwrap_or(text.len())]
            })
            .collect();
        assert_eq!(cells.len(), 7, "{row}");
        assert_eq!(cells[0], shard.to_string(), "{row}");
        assert_eq!(cells[1], "active", "{row}");
        assert!(
            cells[4].parse::<u64>().is_ok_and(|seq| seq > 0),
            "a sequence: {row}"
        );
    }
    assert!(
        dom.contains("RabbitMQ") && dom.contains(">connected<"),
        "{dom}"
    );
    let first = gatehouse_config::redact_url(&vhost.amqp_url());
    assert!(
        dom.contains(&format!("{first} (connected)<")),
        "the connected address marked: {dom}"
    );
    assert!(
        dom.contains(">amqp://guest:***@127.0.0.1:1/%2f<") && !dom.contains("spare-pw"),
        "the spare address listed, redacted: {dom}"
    );
    assert!(stopped, "clean exit on Ctrl-C");
}

/// A rough end-to-end rate (not a benchmark suite; timing is printed, never asserted): the
/// mock gateway as fast as the client reads -> the binary -> RabbitMQ (persistent, confirms),
/// `GATEHOUSE_THROUGHPUT_EVENTS` events (default 50,000). Run it in release:
/// `cargo test --release -p <runtime crate> --test end_to_end end_to_end_rate -- --ignored
/// --nocapture`.
pub async fn end_to_end_rate<K: Kit>(rt: async_rs::Runtime<K>, binary: &Path) {
    let events: usize = std::env::var("GATEHOUSE_THROUGHPUT_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let vhost = Vhost::create("rate");
    let redis = RedisPrefix::new("rate");
    let basic = Fixture::basic();
    let mut config = MockConfig::for_tests(TOKEN);
    config.fixture = basic.repeated(events / basic.len() + 1);
    config.rate = ReplayRate::AsFastAsClientReads;
    config.record_frames = FrameRecording::None;
    let mock = MockGateway::start(config).expect("start the mock gateway");
    // A plain counting consumer on a queue bound before the gateway starts.
    let mut capture = Capture::topic(rt, &vhost.amqp_url(), "gateway").await;
    let _gatehouse = Gatehouse::start(binary, &gatehouse_env(&mock, &vhost, &redis));
    capture.next(Duration::from_secs(30)).await.expect("READY");
    let started = Instant::now();
    let mut received = 1;
    while received < events {
        if capture.next(Duration::from_secs(10)).await.is_none() {
            break;
        }
        received += 1;
    }
    let elapsed = started.elapsed();
    println!(
        "end to end ({}): {received} events in {elapsed:?} = {:.0} events/s",
        binary.display(),
        received as f64 / elapsed.as_secs_f64()
    );
}

/// The session snapshot (`sequence`) stored under `key` on the Sentinel deployment's server
/// on `port`.
fn stored_sequence(deployment: &redis_ha::SentinelDeployment, port: u16, key: &str) -> Option<i64> {
    let stored = deployment.get(port, key)?;
    serde_json::from_str::<serde_json::Value>(&stored).ok()?["sequence"].as_i64()
}

/// `gatehouse status` with `env`: its standard output (panics if it fails).
fn status_output(binary: &Path, env: &[(&str, String)]) -> String {
    let mut command = std::process::Command::new(binary);
    command
        .arg("status")
        .env_clear()
        .current_dir(support::empty_dir("status"));
    for (key, value) in env {
        command.env(key, value);
    }
    let out = command.output().expect("run gatehouse status");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "gatehouse status failed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Polls `check` every 100 ms for up to a minute (a liveness wait, not a timed assertion).
async fn eventually<K: Kit>(rt: &async_rs::Runtime<K>, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        rt.sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Issue 10 item 8, Sentinel: with a `redis+sentinel://` URL, Gatehouse stores its session on
/// the primary the Sentinels name; after a failover (`SENTINEL FAILOVER`: the replica is
/// promoted, the old primary demoted) it keeps writing to the new primary; after that one
/// dies (SIGKILL, the Sentinels promote the other), a restarted process finds its snapshot
/// through the Sentinels and RESUMEs. The Sentinels require a password (`requirepass`, given
/// as `?sentinel_password=`) and the data nodes another (the URL's userinfo); neither appears
/// in the log, `gatehouse status` or Redis. Private `redis-server` instances; skipped without
/// them.
pub async fn sessions_survive_a_sentinel_failover<K: Kit>(rt: async_rs::Runtime<K>, binary: &Path) {
    if !redis_ha::redis_server_available("sessions_survive_a_sentinel_failover") {
        return;
    }
    let secret = "s3cret-9f2";
    let mut deployment = redis_ha::SentinelDeployment::start(redis_ha::Passwords {
        data: Some(format!("primary-{secret}")),
        sentinels: Some(format!("sentinel-{secret}")),
    });
    let vhost = Vhost::create("sentinel");
    let prefix = support::unique("sentinel");
    let session_key = format!("{prefix}:session:0");
    let fixture = Fixture::basic();
    let mut config = MockConfig::for_tests(TOKEN);
    config.fixture = fixture.clone();
    let mock = MockGateway::start(config).expect("start the mock gateway");
    let mut capture = Capture::topic(rt.clone(), &vhost.amqp_url(), "gateway").await;
    let env = vec![
        ("DISCORD_TOKEN", TOKEN.to_owned()),
        ("GATEHOUSE_API_BASE", mock.api_base()),
        ("AMQP_URL", vhost.amqp_url()),
        ("REDIS_URL", deployment.url()),
        ("GATEHOUSE_REDIS_PREFIX", prefix.clone()),
        ("GATEHOUSE_SHARD_COUNT", "1".to_owned()),
    ];

    let (mut first, first_log) = Gatehouse::start_reading_log(binary, &env);
    let mut received = capture_all(&mut capture, &mock, fixture.len() + 1).await;
    let last = |received: &[lapin::message::Delivery]| {
        received
            .iter()
            .filter_map(|d| header_int(d, "x-sequence"))
            .max()
            .expect("dispatches arrived")
    };
    let before = last(&received);
    let old_primary = deployment
        .primary_port()
        .expect("the Sentinels name a primary");
    assert!(
        eventually(&rt, || stored_sequence(
            &deployment,
            old_primary,
            &session_key
        ) == Some(before))
        .await,
        "the snapshot reaches the first primary"
    );

    let new_primary = deployment.failover();
    assert!(
        eventually(&rt, || !deployment.is_primary(old_primary)).await,
        "the Sentinels demote the old primary"
    );
    support::inject_test_events(&mock, 5);
    capture_until_complete(&mut capture, &mock, fixture.len() + 6, &mut received).await;
    let after = last(&received);
    assert!(after > before, "dispatches flowed after the failover");
    assert!(
        eventually(&rt, || stored_sequence(
            &deployment,
            new_primary,
            &session_key
        ) == Some(after))
        .await,
        "Gatehouse writes the snapshot to the new primary"
    );
    assert!(first.interrupt_and_wait(Duration::from_secs(30)));
    let status = status_output(binary, &env);
    assert!(
        status.contains("stopped"),
        "`gatehouse status` through Sentinel:\n{status}"
    );

    // The new primary dies; the Sentinels promote the old one (its replica since the
    // failover, holding the snapshot by replication).
    let stored = deployment
        .get(new_primary, &session_key)
        .expect("a snapshot");
    deployment.wait_replicated(old_primary, &session_key, &stored);
    deployment.kill(new_primary);
    deployment.wait_for_primary(old_primary);

    let (mut second, second_log) = Gatehouse::start_reading_log(binary, &env);
    let resume = mock
        .recorder()
        .wait_resume(1, Duration::from_secs(60))
        .expect("the restarted process sends RESUME");
    assert_eq!(resume.seq, Some(after as u64));
    assert_eq!(mock.recorder().identifies().len(), 1, "no second IDENTIFY");
    let status_key = format!("{prefix}:status:0");
    assert!(
        eventually(&rt, || deployment.get(old_primary, &status_key).is_some()
            && deployment.get(old_primary, &status_key).is_some_and(|s| s
                .contains("\"active\"")
                || s.contains("\"resuming\"")))
        .await,
        "the restarted process writes its status to the promoted primary"
    );
    assert!(second.interrupt_and_wait(Duration::from_secs(30)));
    let log: Vec<String> = first_log.try_iter().chain(second_log.try_iter()).collect();
    assert!(
        log.iter()
            .any(|l| l.contains("connected to the Redis primary")),
        "the log names the primary the Sentinels gave"
    );
    let stored = deployment.string_values(old_primary);
    assert!(!stored.is_empty(), "the deployment's keys");
    for text in log.iter().chain(&stored).chain([&status]) {
        assert!(!text.contains(secret), "a password shown: {text}");
    }
}

/// Issue 10 item 8, Redis Cluster: with a `redis+cluster://` URL, cluster mode
/// (`GATEHOUSE_CLUSTER`: leases, identify claims, placement, their multi-key scripts) runs two
/// shards on a three-primary Redis Cluster, every key of the deployment under one hash tag
/// (so on one node); after a clean stop, the next process of the cluster RESUMEs both.
/// Private `redis-server` instances; skipped without them.
pub async fn cluster_mode_runs_on_a_redis_cluster<K: Kit>(rt: async_rs::Runtime<K>, binary: &Path) {
    if !redis_ha::redis_server_available("cluster_mode_runs_on_a_redis_cluster") {
        return;
    }
    let deployment = redis_ha::ClusterDeployment::start();
    let vhost = Vhost::create("rcluster");
    let prefix = support::unique("rcluster");
    let fixture = Fixture::basic();
    let mut config = MockConfig::for_tests(TOKEN);
    config.fixture = fixture.clone();
    config.shards = 2;
    let mock = MockGateway::start(config).expect("start the mock gateway");
    let mut capture = Capture::topic(rt.clone(), &vhost.amqp_url(), "gateway").await;
    let env = vec![
        ("DISCORD_TOKEN", TOKEN.to_owned()),
        ("GATEHOUSE_API_BASE", mock.api_base()),
        ("AMQP_URL", vhost.amqp_url()),
        ("REDIS_URL", deployment.url()),
        ("GATEHOUSE_REDIS_PREFIX", prefix.clone()),
        ("GATEHOUSE_CLUSTER", "green".to_owned()),
        ("GATEHOUSE_CLUSTER_LEASE_MS", "3000".to_owned()),
    ];

    let mut first = Gatehouse::start(binary, &env);
    assert!(
        eventually(&rt, || mock.recorder().identifies().len() == 2).await,
        "both shards identify"
    );
    // Every dispatch of both shards arrives (as (shard, sequence)).
    let sent = |shard: u32| mock.recorder().sent_dispatches(shard).len();
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline
        && (sent(0) == 0 || sent(1) == 0 || seen.len() < sent(0) + sent(1))
    {
        if let Some(delivery) = capture.next(Duration::from_secs(2)).await
            && let (Some(shard), Some(seq)) = (
                header_int(&delivery, "x-shard-id"),
                header_int(&delivery, "x-sequence"),
            )
        {
            seen.insert((shard, seq));
        }
    }
    assert_eq!(
        seen.len(),
        sent(0) + sent(1),
        "every dispatch of both shards arrived"
    );
    assert!(first.interrupt_and_wait(Duration::from_secs(30)));
    for shard in 0..2 {
        let last = seen
            .iter()
            .filter(|(s, _)| *s == i64::from(shard))
            .map(|(_, seq)| *seq)
            .max()
            .expect("dispatches of the shard");
        let key = format!("{{{prefix}}}:cluster:green:set:2:session:{shard}");
        let stored = deployment
            .get(&key)
            .expect("the shard's snapshot, under the tag");
        let stored: serde_json::Value = serde_json::from_str(&stored).unwrap();
        assert_eq!(stored["sequence"], last, "shard {shard}'s snapshot");
    }
    let status = status_output(binary, &env);
    assert_eq!(
        status.matches("stopped").count(),
        2,
        "`gatehouse status` on the Redis Cluster shows both shards:\n{status}"
    );
    let counts = deployment.key_counts();
    assert_eq!(
        counts.iter().filter(|n| **n > 0).count(),
        1,
        "every key of the deployment is on one node: {counts:?}"
    );

    let mut second = Gatehouse::start(binary, &env);
    let resumed = mock
        .recorder()
        .wait_resume(2, Duration::from_secs(60))
        .expect("the next process RESUMEs both shards");
    assert!(resumed.seq.is_some());
    assert_eq!(mock.recorder().identifies().len(), 2, "no new IDENTIFY");
    assert!(second.interrupt_and_wait(Duration::from_secs(30)));
}

/// Whether shard 0 sent a presence update (op 3) with status `wanted` within 30 s.
pub(crate) fn presence_reached_shard_0(mock: &MockGateway, wanted: &str) -> bool {
    mock.recorder()
        .wait_for(Duration::from_secs(30), |recording| {
            recording
                .shard_connections(0)
                .flat_map(|c| c.received.iter())
                .filter(|f| f.op == Some(3))
                .find(|f| {
                    serde_json::from_slice::<serde_json::Value>(&f.json).unwrap()["d"]["status"]
                        == wanted
                })
                .map(|_| ())
        })
        .is_some()
}

/// Issue 10 item 5, "or a changed shard count in cluster mode": a process of a cluster that
/// runs 1 shard, started with `SHARD_COUNT=2`, asks for the re-shard itself (the `target` in
/// Redis); alone in the cluster, it brings the 2 shards up beside the old one, switches once
/// both are READY with their guilds (`current` becomes 2), and closes the old set. Without
/// the rule the cluster's count wins and nothing changes.
pub async fn a_changed_shard_count_reshards_the_cluster<K: Kit>(
    rt: async_rs::Runtime<K>,
    binary: &Path,
) {
    let redis = RedisPrefix::new("reshard-config");
    let vhost = Vhost::create("reshard-config");
    let mut config = MockConfig::for_tests(TOKEN);
    config.fixture = Fixture::basic();
    config.shards = 1;
    let mock = MockGateway::start(config).expect("start the mock gateway");
    let env = |count: &str| {
        vec![
            ("DISCORD_TOKEN", TOKEN.to_owned()),
            ("GATEHOUSE_API_BASE", mock.api_base()),
            ("AMQP_URL", vhost.amqp_url()),
            ("REDIS_URL", RedisPrefix::url()),
            ("GATEHOUSE_REDIS_PREFIX", redis.prefix.clone()),
            ("GATEHOUSE_CLUSTER", "blue".to_owned()),
            ("GATEHOUSE_CLUSTER_LEASE_MS", "3000".to_owned()),
            ("SHARD_COUNT", count.to_owned()),
        ]
    };
    let counts_key = format!("{}:cluster:blue:shards", redis.prefix);
    let count = |field: &str| -> Option<String> {
        let client = redis::Client::open(RedisPrefix::url()).ok()?;
        let mut connection = client.get_connection().ok()?;
        redis::cmd("HGET")
            .arg(&counts_key)
            .arg(field)
            .query(&mut connection)
            .ok()?
    };

    let mut first = Gatehouse::start(binary, &env("1"));
    assert!(
        eventually(&rt, || mock.recorder().identifies().len() == 1).await,
        "the one shard identifies"
    );
    assert_eq!(count("current").as_deref(), Some("1"));
    assert!(first.interrupt_and_wait(Duration::from_secs(30)));

    let mut second = Gatehouse::start(binary, &env("2"));
    assert!(
        eventually(&rt, || count("current").as_deref() == Some("2")).await,
        "the configured count becomes the cluster's (target {:?})",
        count("target")
    );
    let new_set: BTreeSet<u32> = mock
        .recorder()
        .identifies()
        .iter()
        .filter_map(|i| i.shard)
        .filter(|[_, of]| *of == 2)
        .map(|[shard, _]| shard)
        .collect();
    assert_eq!(
        new_set,
        BTreeSet::from([0, 1]),
        "both shards of 2 identified"
    );
    assert!(second.interrupt_and_wait(Duration::from_secs(30)));
}
