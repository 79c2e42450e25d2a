//! Drop-in replacement, per predecessor (issue 11): the `gatehouse` binary started with exactly
//! that predecessor's example configuration (its file, its variable names) must run the shards,
//! send the intents, declare the topology and write the Redis keys the predecessor would.
//!
//! What a test has to change in an example, and nothing else: the token (a test token), where
//! Discord is (`GATEHOUSE_API_BASE`, the mock gateway), and where RabbitMQ, Redis and the
//! metrics endpoint are (a fresh vhost, a private Redis server, a free port), so that tests
//! never share state. The profile is named with `GATEHOUSE_PROFILE` where the predecessor's
//! configuration cannot say it (its file format says it for Spectacles and Retsu).
//!
//! Isolation: a fresh vhost of the shared RabbitMQ when its management API answers (as for the
//! other end-to-end tests), otherwise a private RabbitMQ node; a private Redis server per test
//! (so the predecessors' default key names, which have no per-test prefix, never collide).
//! The topology is checked over AMQP, the way the predecessors' workers meet it: the exchange
//! exists (passive declaration) and a declaration with the type and durability their worker
//! libraries use succeeds (a mismatch would close the channel with 406).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use conformance::private_services::{PrivateRabbit, PrivateRedis};
use lapin::options::{BasicGetOptions, ExchangeDeclareOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties, ExchangeKind};
use mock_gateway::{MockConfig, MockGateway};
use runtime_common::e2e::support::{Gatehouse, Vhost, empty_dir, free_local_address, http_get};

const BINARY: &str = env!("CARGO_BIN_EXE_gatehouse");
const TOKEN: &str = "drop-in-test-token";
const WAIT: Duration = Duration::from_secs(60);

/// Where the broker of one run is.
enum Broker {
    /// A vhost of the shared RabbitMQ (created through its management API).
    Shared(Vhost),
    /// A private node (when the shared one has no management API to create a vhost with).
    Private(PrivateRabbit),
}

impl Broker {
    async fn new(tag: &str) -> Self {
        if std::net::TcpStream::connect("127.0.0.1:15672").is_ok() {
            Self::Shared(Vhost::create(tag))
        } else {
            Self::Private(
                PrivateRabbit::start(tag)
                    .await
                    .expect("a private RabbitMQ node"),
            )
        }
    }

    fn amqp_url(&self) -> String {
        match self {
            Self::Shared(vhost) => vhost.amqp_url(),
            Self::Private(node) => node.amqp_url(),
        }
    }
}

/// One predecessor's run: the mock gateway, a broker, a private Redis, a working directory.
struct Run {
    mock: MockGateway,
    broker: Broker,
    redis: PrivateRedis,
    dir: std::path::PathBuf,
}

impl Run {
    async fn new(tag: &str, recommended_shards: u32) -> Self {
        Self::with_mock(tag, recommended_shards, |_| {}).await
    }

    async fn with_mock(tag: &str, recommended_shards: u32, adjust: fn(&mut MockConfig)) -> Self {
        let mut config = MockConfig::for_tests(TOKEN);
        config.shards = recommended_shards;
        config.max_concurrency = 16;
        adjust(&mut config);
        let mock = MockGateway::start(config).expect("start the mock gateway");
        let mut redis = PrivateRedis::new(tag).expect("a private Redis");
        redis.start().await.expect("start the private Redis");
        Self {
            mock,
            broker: Broker::new(tag).await,
            redis,
            dir: empty_dir(tag),
        }
    }

    /// `host:port` of the private Redis.
    fn redis_address(&self) -> String {
        self.redis
            .url()
            .trim_start_matches("redis://")
            .trim_end_matches('/')
            .to_owned()
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.dir.join(name), text).expect("write the example configuration");
    }

    fn start(&self, env: &[(&str, String)]) -> Gatehouse {
        let mut all = vec![("GATEHOUSE_API_BASE", self.mock.api_base())];
        all.extend(env.iter().cloned());
        Gatehouse::start_in(Path::new(BINARY), &self.dir, &all)
    }

    /// The identifies of `n` distinct shards, by shard: (`[shard, count]`, intents, `d`).
    fn identified(&self, n: usize) -> BTreeMap<u32, (u32, u64, serde_json::Value)> {
        let recorder = self.mock.recorder();
        let found = recorder.wait_for(WAIT, |r| {
            let shards: BTreeMap<u32, _> = r
                .identifies
                .iter()
                .filter_map(|i| {
                    let [shard, count] = i.shard?;
                    let d = serde_json::from_slice(&i.d).ok()?;
                    Some((shard, (count, i.intents.unwrap_or(0), d)))
                })
                .collect();
            (shards.len() >= n).then_some(shards)
        });
        found.unwrap_or_else(|| {
            panic!(
                "{n} shards did not identify: {:?}",
                recorder
                    .identifies()
                    .iter()
                    .map(|i| i.shard)
                    .collect::<Vec<_>>()
            )
        })
    }

    /// The query of the live connection of `shard` (`v=..&encoding=..`).
    fn query(&self, shard: u32) -> String {
        let recorder = self.mock.recorder();
        recorder
            .wait_for(WAIT, |r| r.live_connection(shard).map(|c| c.query.clone()))
            .expect("a live connection")
    }

    /// Every string key of the private Redis, once `ready` holds for them (or the time is up).
    fn redis_keys(
        &self,
        ready: impl Fn(&BTreeMap<String, String>) -> bool,
    ) -> BTreeMap<String, String> {
        let client = redis::Client::open(self.redis.url()).expect("Redis URL");
        let deadline = Instant::now() + WAIT;
        loop {
            let mut connection = client
                .get_connection()
                .expect("connect to the private Redis");
            let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut connection).unwrap();
            let mut values = BTreeMap::new();
            for key in keys {
                if let Ok(value) = redis::cmd("GET").arg(&key).query::<String>(&mut connection) {
                    values.insert(key, value);
                }
            }
            if ready(&values) || Instant::now() > deadline {
                return values;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    async fn connection(&self) -> Connection {
        Connection::connect_with_runtime(
            &self.broker.amqp_url(),
            ConnectionProperties::default(),
            async_rs::Runtime::tokio_current(),
        )
        .await
        .expect("connect to RabbitMQ")
    }

    /// Waits until the exchange `name` exists, then declares it as a predecessor's worker does
    /// (`kind`, `durable`): an error (406) means the gateway declared something else.
    async fn assert_exchange(&self, name: &str, kind: ExchangeKind, durable: bool) {
        let connection = self.connection().await;
        let deadline = Instant::now() + WAIT;
        loop {
            let channel = connection.create_channel().await.unwrap();
            let passive = ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            };
            let found = channel
                .exchange_declare(name.into(), kind.clone(), passive, FieldTable::default())
                .await;
            if found.is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the exchange {name} was not declared"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let channel = connection.create_channel().await.unwrap();
        let options = ExchangeDeclareOptions {
            durable,
            ..Default::default()
        };
        channel
            .exchange_declare(name.into(), kind.clone(), options, FieldTable::default())
            .await
            .unwrap_or_else(|e| {
                panic!("declaring {name} as {kind:?}, durable {durable}, as workers do: {e}")
            });
        let _ = connection.close(200, "".into()).await;
    }

    /// The message count of queue `name` once it holds at least `min` messages; `None` when it
    /// does not exist (or stays short) within the time.
    async fn queue_messages(&self, name: &str, min: u32) -> Option<u32> {
        let connection = self.connection().await;
        let deadline = Instant::now() + WAIT;
        let mut last = None;
        while Instant::now() < deadline {
            let channel = connection.create_channel().await.unwrap();
            let passive = QueueDeclareOptions {
                passive: true,
                ..Default::default()
            };
            last = channel
                .queue_declare(name.into(), passive, FieldTable::default())
                .await
                .ok()
                .map(|q| q.message_count());
            if last.is_some_and(|n| n >= min) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let _ = connection.close(200, "".into()).await;
        last
    }

    /// Whether queue `name` exists now.
    async fn queue_exists(&self, name: &str) -> bool {
        let connection = self.connection().await;
        let channel = connection.create_channel().await.unwrap();
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let exists = channel
            .queue_declare(name.into(), passive, FieldTable::default())
            .await
            .is_ok();
        let _ = connection.close(200, "".into()).await;
        exists
    }

    /// One message of queue `name` (taken off it).
    async fn get_one(&self, name: &str) -> Option<lapin::message::BasicGetMessage> {
        let connection = self.connection().await;
        let channel = connection.create_channel().await.unwrap();
        let message = channel
            .basic_get(name.into(), BasicGetOptions { no_ack: true })
            .await
            .ok()
            .flatten();
        let _ = connection.close(200, "".into()).await;
        message
    }
}

/// The Spectacles gateway README's `gateway.toml`, exactly (only the addresses of the test's
/// services substituted: AMQP URL, Redis address in the documented `host:port` form, the
/// Prometheus port), with the token and `DISCORD_EVENTS` from the README's Docker example.
const SPECTACLES_GATEWAY_TOML: &str =
    include_str!("../../fixtures/predecessors/spectacles-gateway.toml");

#[tokio::test]
async fn spectacles_gateway_toml_and_environment() {
    let run = Run::new("dropin-spectacles", 1).await;
    let metrics = free_local_address();
    let port = metrics.rsplit(':').next().unwrap().to_owned();
    run.write(
        "gateway.toml",
        &SPECTACLES_GATEWAY_TOML
            .replace("\":8080\"", &format!("\":{port}\""))
            .replace(
                "\"amqp://localhost\"",
                &format!("{:?}", run.broker.amqp_url()),
            )
            .replace("\"localhost:6379\"", &format!("{:?}", run.redis_address())),
    );
    let mut gatehouse = run.start(&[
        ("DISCORD_TOKEN", TOKEN.to_owned()),
        ("DISCORD_EVENTS", "MESSAGE_CREATE".to_owned()),
    ]);

    // [shards] count = 2, ids = [0, 1], whatever Discord recommends (1 here).
    let shards = run.identified(2);
    assert_eq!(shards.keys().copied().collect::<Vec<_>>(), [0, 1]);
    assert!(
        shards
            .values()
            .all(|(count, intents, _)| *count == 2 && *intents == 0)
    );
    // Topology: the group exchange (direct, durable, as @spectacles/brokers declares it) and
    // the event's queue, holding the fixture's MESSAGE_CREATEs with the 2 minute expiration.
    run.assert_exchange("gateway", ExchangeKind::Direct, true)
        .await;
    let messages = run.queue_messages("gateway:MESSAGE_CREATE", 1).await;
    assert!(
        messages.is_some_and(|n| n >= 1),
        "gateway:MESSAGE_CREATE: {messages:?}"
    );
    let message = run
        .get_one("gateway:MESSAGE_CREATE")
        .await
        .expect("a MESSAGE_CREATE");
    assert_eq!(
        message
            .delivery
            .properties
            .expiration()
            .as_ref()
            .map(|e| e.as_str()),
        Some("120000")
    );
    // The shard store: `<prefix><shard>session` and `<prefix><shard>seq`, prefix `gateway`.
    let keys =
        run.redis_keys(|k| k.contains_key("gateway0session") && k.contains_key("gateway1seq"));
    for key in [
        "gateway0session",
        "gateway0seq",
        "gateway1session",
        "gateway1seq",
    ] {
        assert!(keys.contains_key(key), "{key} missing from {keys:?}");
    }
    // Prometheus at `address` + `endpoint`.
    assert!(http_get(&format!("http://127.0.0.1:{port}/metrics")).contains("gatehouse_"));
    assert!(gatehouse.interrupt_and_wait(Duration::from_secs(30)));
}

#[tokio::test]
async fn cordis_environment() {
    let run = Run::new("dropin-cordis", 3).await;
    // The Cordis spec's names; STARTING_SHARD alone runs every shard from it on.
    let mut gatehouse = run.start(&[
        ("GATEHOUSE_PROFILE", "cordis".to_owned()),
        ("CORDIS_AUTH", TOKEN.to_owned()),
        ("CORDIS_AMQP_HOST", run.broker.amqp_url()),
        ("CORDIS_REDIS_URL", run.redis.url()),
        ("CORDIS_STARTING_SHARD", "1".to_owned()),
        (
            "CORDIS_WS_INTENTS",
            "guilds,guildMessages,guildEmojis".to_owned(),
        ),
    ]);
    let shards = run.identified(2);
    assert_eq!(shards.keys().copied().collect::<Vec<_>>(), [1, 2]);
    assert!(
        shards
            .values()
            .all(|(count, intents, _)| *count == 3 && *intents == 1 | 512 | 8)
    );
    assert!(
        !run.mock
            .recorder()
            .identifies()
            .iter()
            .any(|i| i.shard == Some([0, 3]))
    );
    // The spec's default encoding: ETF; compression on.
    let query = run.query(1);
    assert!(
        query.contains("encoding=etf") && query.contains("compress=zlib-stream"),
        "{query}"
    );
    // Topology: `gateway` direct and not durable (as @cordis/brokers declares it);
    // `gateway_commands` fanout, durable.
    run.assert_exchange("gateway", ExchangeKind::Direct, false)
        .await;
    run.assert_exchange("gateway_commands", ExchangeKind::Fanout, true)
        .await;
    let keys = run.redis_keys(|k| k.contains_key("gatehouse:session:1"));
    assert!(keys.contains_key("gatehouse:session:1"), "{keys:?}");
    assert!(gatehouse.interrupt_and_wait(Duration::from_secs(30)));
}

#[tokio::test]
async fn cordis_1x_unprefixed_environment() {
    let run = Run::new("dropin-cordis1", 4).await;
    // The Cordis gateway service 1.x (yargs `.env()`): unprefixed names.
    let mut gatehouse = run.start(&[
        ("GATEHOUSE_PROFILE", "cordis".to_owned()),
        ("AUTH", TOKEN.to_owned()),
        ("AMQP_HOST", run.broker.amqp_url()),
        ("STARTING_SHARD", "2".to_owned()),
        ("SHARD_COUNT", "2".to_owned()),
        ("TOTAL_SHARD_COUNT", "4".to_owned()),
        ("WS_ENCODING", "json".to_owned()),
        ("WS_INTENTS", "guilds".to_owned()),
        ("REDIS_URL", run.redis.url()),
    ]);
    let shards = run.identified(2);
    assert_eq!(shards.keys().copied().collect::<Vec<_>>(), [2, 3]);
    assert!(
        shards
            .values()
            .all(|(count, intents, _)| *count == 4 && *intents == 1)
    );
    assert!(run.query(2).contains("encoding=json"));
    run.assert_exchange("gateway", ExchangeKind::Direct, false)
        .await;
    assert!(gatehouse.interrupt_and_wait(Duration::from_secs(30)));
}

/// twilight-dispatch's `.env.example`, exactly, as `.env` in the working directory (only the
/// addresses substituted; RABBIT_* has no vhost, so the test's vhost comes in as AMQP_URL).
const TWILIGHT_DISPATCH_ENV_EXAMPLE: &str =
    include_str!("../../fixtures/predecessors/twilight-dispatch.env.example");

#[tokio::test]
async fn twilight_dispatch_dotenv() {
    let run = Run::new("dropin-twilight", 1).await;
    let metrics = free_local_address();
    let metrics_port = metrics.rsplit(':').next().unwrap().to_owned();
    let redis_port = run.redis_address().rsplit(':').next().unwrap().to_owned();
    run.write(
        ".env",
        &TWILIGHT_DISPATCH_ENV_EXAMPLE
            .replace("BOT_TOKEN=\n", &format!("BOT_TOKEN={TOKEN}\n"))
            .replace("REDIS_PORT=6379", &format!("REDIS_PORT={redis_port}"))
            .replace(
                "PROMETHEUS_PORT=8005",
                &format!("PROMETHEUS_PORT={metrics_port}"),
            ),
    );
    let mut gatehouse = run.start(&[
        ("GATEHOUSE_PROFILE", "twilight-dispatch".to_owned()),
        ("AMQP_URL", run.broker.amqp_url()),
    ]);
    let shards = run.identified(2);
    assert_eq!(shards.keys().copied().collect::<Vec<_>>(), [0, 1]);
    for (count, intents, d) in shards.values() {
        assert_eq!((*count, *intents), (2, 32767));
        assert_eq!(d["large_threshold"], 250);
        assert_eq!(d["presence"]["status"], "online");
        assert_eq!(d["presence"]["activities"][0]["name"], "Testing");
        assert_eq!(d["presence"]["activities"][0]["type"], 0);
    }
    // Topology: `gateway` topic durable; DECLARE_QUEUE's `gateway.recv` bound with `#`;
    // the command queue `gateway.send`.
    run.assert_exchange("gateway", ExchangeKind::Topic, true)
        .await;
    assert!(run.queue_exists("gateway.send").await, "no gateway.send");
    let received = run.queue_messages("gateway.recv", 2).await;
    assert!(
        received.is_some_and(|n| n >= 2),
        "gateway.recv (bound with #): {received:?}"
    );
    // The original's bare keys, its timestamp format and its status names.
    let keys = run.redis_keys(|k| {
        k.get("gateway_statuses")
            .is_some_and(|s| s.matches("Connected").count() == 2 && s.contains("\"latency\":"))
            && k.get("gateway_sessions")
                .is_some_and(|s| s.contains("\"1\""))
    });
    assert_eq!(
        keys.get("gateway_shards").map(String::as_str),
        Some("2"),
        "{keys:?}"
    );
    let started: String = serde_json::from_str(&keys["gateway_started"]).expect("a JSON string");
    assert_eq!(
        started.len(),
        "2024-01-02T03:04:05.678000000".len(),
        "{started}"
    );
    assert_eq!(&started[10..11], "T");
    let statuses: serde_json::Value = serde_json::from_str(&keys["gateway_statuses"]).unwrap();
    for status in statuses.as_array().unwrap() {
        assert_eq!(status["status"], "Connected", "{statuses}");
        assert!(
            status["latency"].is_u64() && status["last_ack"].is_string(),
            "{statuses}"
        );
    }
    let sessions: serde_json::Value = serde_json::from_str(&keys["gateway_sessions"]).unwrap();
    assert!(sessions["0"]["session_id"].is_string() && sessions["1"]["sequence"].is_u64());
    // Its metric names, at PROMETHEUS_HOST:PROMETHEUS_PORT.
    let text = http_get(&format!("http://{metrics}/metrics"));
    for name in ["gateway_shards 2", "gateway_statuses{type=\"Connected\"} 2"] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    assert!(gatehouse.interrupt_and_wait(Duration::from_secs(30)));
}

#[tokio::test]
async fn retsu_config_json() {
    let run = Run::new("dropin-retsu", 1).await;
    // Retsu's ApplicationConfig keys, with the StackExchange.Redis form of `redis_url`.
    run.write(
        "config.json",
        &serde_json::json!({
            "discord": {
                "token": TOKEN,
                "shard_count": 4,
                "shard_start_index": 2,
                "shard_num": 2,
                "intents": 513,
                "use_large_bot_sharding": false
            },
            "ignore_packets": ["PRESENCE_UPDATE"],
            "loglevel": 2,
            "msg_queue": { "url": run.broker.amqp_url() },
            "redis_url": format!("{},abortConnect=false", run.redis_address()),
            "sentry_url": null
        })
        .to_string(),
    );
    let mut gatehouse = run.start(&[]);
    let shards = run.identified(2);
    assert_eq!(shards.keys().copied().collect::<Vec<_>>(), [2, 3]);
    assert!(
        shards
            .values()
            .all(|(count, intents, _)| *count == 4 && *intents == 513)
    );
    run.assert_exchange("gateway", ExchangeKind::Direct, true)
        .await;
    run.assert_exchange("gateway-command", ExchangeKind::Fanout, true)
        .await;
    // One `gateway:<EVENT>` queue per event published; none for an ignored one.
    let messages = run.queue_messages("gateway:MESSAGE_CREATE", 1).await;
    assert!(
        messages.is_some_and(|n| n >= 1),
        "gateway:MESSAGE_CREATE: {messages:?}"
    );
    // GUILD_DELETE comes after PRESENCE_UPDATE in the fixture.
    let last = run.queue_messages("gateway:GUILD_DELETE", 1).await;
    assert!(
        last.is_some_and(|n| n >= 1),
        "gateway:GUILD_DELETE: {last:?}"
    );
    assert!(!run.queue_exists("gateway:PRESENCE_UPDATE").await);
    let keys = run.redis_keys(|k| k.contains_key("gatehouse:session:3"));
    assert!(keys.contains_key("gatehouse:session:2"), "{keys:?}");
    assert!(gatehouse.interrupt_and_wait(Duration::from_secs(30)));
}

/// Redis is optional (Retsu: "recommended"): with an empty `redis_url` the process runs with its
/// sessions in memory, and does not even try the (here unreachable) Redis address.
#[tokio::test]
async fn retsu_without_redis() {
    let run = Run::new("dropin-retsu-noredis", 1).await;
    run.write(
        "config.json",
        &serde_json::json!({
            "discord": { "token": TOKEN, "shard_count": 1, "intents": 513 },
            "msg_queue": { "url": run.broker.amqp_url() },
            "redis_url": ""
        })
        .to_string(),
    );
    let mut gatehouse = run.start(&[("REDIS_URL", "redis://127.0.0.1:1/".to_owned())]);
    let shards = run.identified(1);
    assert_eq!(shards.keys().copied().collect::<Vec<_>>(), [0]);
    run.assert_exchange("gateway", ExchangeKind::Direct, true)
        .await;
    assert!(gatehouse.is_running(), "runs without Redis");
    assert!(gatehouse.interrupt_and_wait(Duration::from_secs(30)));
}

/// twilight-dispatch's `LOG_CHANNEL`: shard state changes are posted to that channel through the
/// REST API, and a 429 is waited out and retried (the mock rate-limits the first post).
#[tokio::test]
async fn twilight_dispatch_log_channel() {
    let run = Run::with_mock("dropin-logchannel", 1, |config| {
        config.rate_limit_channel_messages = 1;
    })
    .await;
    let mut gatehouse = run.start(&[
        ("GATEHOUSE_PROFILE", "twilight-dispatch".to_owned()),
        ("BOT_TOKEN", TOKEN.to_owned()),
        ("LOG_CHANNEL", "81384788765712384".to_owned()),
        ("AMQP_URL", run.broker.amqp_url()),
        ("REDIS_URL", run.redis.url()),
    ]);
    let posts = run.mock.recorder().wait_for(WAIT, |r| {
        let posts: Vec<_> = r
            .http
            .iter()
            .filter(|h| {
                h.method == "POST" && h.path.ends_with("/channels/81384788765712384/messages")
            })
            .cloned()
            .collect();
        posts
            .iter()
            .any(|p| p.status == 200 && p.body.contains("Shard 0 active"))
            .then_some(posts)
    });
    let posts = posts.expect("the shard's state changes are posted to the log channel");
    assert_eq!(posts[0].status, 429, "the mock rate-limits the first post");
    assert_eq!(
        posts[1].body, posts[0].body,
        "the rate-limited post is retried"
    );
    let embed: serde_json::Value = serde_json::from_str(&posts[0].body).unwrap();
    assert!(
        embed["embeds"][0]["title"]
            .as_str()
            .unwrap()
            .starts_with("Shard 0 ")
    );
    assert!(gatehouse.interrupt_and_wait(Duration::from_secs(30)));
}

/// A local HTTP endpoint that records each request's path and body (Sentry's envelope
/// endpoint, here).
fn recording_endpoint() -> (u16, std::sync::mpsc::Receiver<(String, String)>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut data = Vec::new();
            let mut chunk = [0u8; 8192];
            // The head, then Content-Length bytes of body.
            let (head_end, length) = loop {
                let Ok(n) = stream.read(&mut chunk) else {
                    break (None, 0);
                };
                if n == 0 {
                    break (None, 0);
                }
                data.extend_from_slice(&chunk[..n]);
                if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    break (Some(end + 4), length);
                }
            };
            let Some(start) = head_end else { continue };
            while data.len() < start + length {
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => data.extend_from_slice(&chunk[..n]),
                }
            }
            let head = String::from_utf8_lossy(&data[..start]).into_owned();
            let path = head
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_owned();
            let body = String::from_utf8_lossy(&data[start..]).into_owned();
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
            );
            let _ = tx.send((path, body));
        }
    });
    (port, rx)
}

/// Retsu's `sentry_url`: an error ends the run (here Discord refuses the token) and is reported
/// to Sentry as an envelope.
#[tokio::test]
async fn retsu_sentry_url_reports_errors() {
    let run = Run::new("dropin-sentry", 1).await;
    let (port, requests) = recording_endpoint();
    run.write(
        "config.json",
        &serde_json::json!({
            "discord": { "token": "not-the-mocks-token", "shard_count": 1 },
            "msg_queue": { "url": run.broker.amqp_url() },
            "redis_url": run.redis_address(),
            "sentry_url": format!("http://publickey@127.0.0.1:{port}/1")
        })
        .to_string(),
    );
    let _gatehouse = run.start(&[]);
    let (path, body) = requests
        .recv_timeout(WAIT)
        .expect("an error report reaches the Sentry endpoint");
    assert_eq!(path, "/api/1/envelope/");
    assert!(
        body.contains("Unauthorized") || body.contains("401"),
        "{body}"
    );
    assert!(
        !body.contains("not-the-mocks-token"),
        "the token never leaves: {body}"
    );
}
