//! Helpers for the end-to-end tests: a fresh RabbitMQ vhost per test (management API), a unique
//! Redis key prefix, a Gatehouse binary as a child process, and an AMQP consumer on any
//! `async-rs` runtime.
//!
//! Owns: test isolation and clean-up, and talking to the services from the test's side. Does
//! not own any assertion (the scenarios in the parent module).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_rs::traits::{Reactor, RuntimeKit};
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, ExchangeDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties, message::Delivery};
use rabbitmq_management::{ConnectionInfo, ManagementApi};

/// A name unique to this test run.
pub fn unique(tag: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "gh-test-{tag}-{}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos % 1_000_000
    )
}

/// A fresh, empty directory under the temporary directory (left for the OS to clean).
pub fn empty_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(unique(tag));
    std::fs::create_dir_all(&dir).expect("create a test directory");
    dir
}

/// The management API of the shared RabbitMQ (127.0.0.1:15672, guest/guest).
fn management() -> ManagementApi {
    ManagementApi::for_amqp_url("amqp://guest:guest@127.0.0.1:5672/%2f", None)
        .expect("a valid management URL")
}

/// A RabbitMQ vhost that exists for one test and is deleted on drop.
pub struct Vhost {
    pub name: String,
}

impl Vhost {
    pub fn create(tag: &str) -> Self {
        let name = unique(tag);
        if let Err(e) = management().create_vhost(&name) {
            panic!("creating vhost {name}: {e}");
        }
        Self { name }
    }

    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:5672/{}", self.name)
    }

    fn connections(&self) -> Vec<ConnectionInfo> {
        management()
            .connections(&self.name)
            .expect("management API")
    }

    /// Closes the client connections of this vhost whose connection name starts with
    /// `name_prefix` (a broker outage as that client sees it). Returns how many were closed.
    pub fn close_connections(&self, name_prefix: &str) -> usize {
        let ours = |c: &ConnectionInfo| c.client_name().is_some_and(|n| n.starts_with(name_prefix));
        // The management API lists a new connection only after its next statistics round.
        let deadline = Instant::now() + Duration::from_secs(30);
        let connections = loop {
            let connections = self.connections();
            if connections.iter().any(ours) || Instant::now() > deadline {
                break connections;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let api = management();
        connections
            .iter()
            .filter(|c| ours(c))
            .filter(|c| api.close_connection(&c.name).is_ok())
            .count()
    }

    /// The queues of this vhost, as the management API reports them.
    pub fn queues(&self) -> Vec<rabbitmq_management::QueueInfo> {
        management().queues(&self.name).expect("management API")
    }

    /// Names of the client connections of this vhost once one named `name_prefix...` is
    /// listed (the management API lists a new connection only after its next statistics
    /// round), or after 30 s.
    pub fn connection_names_once(&self, name_prefix: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let names = self.connection_names();
            if names.iter().any(|n| n.starts_with(name_prefix)) || Instant::now() > deadline {
                return names;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Names of the client connections of this vhost.
    pub fn connection_names(&self) -> Vec<String> {
        self.connections()
            .iter()
            .filter_map(|c| c.client_name().map(str::to_owned))
            .collect()
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = management().delete_vhost(&self.name);
    }
}

/// Deletes every Redis key under a prefix (and `<prefix>-demo`) on drop.
pub struct RedisPrefix {
    pub prefix: String,
}

impl RedisPrefix {
    pub fn new(tag: &str) -> Self {
        Self {
            prefix: unique(tag),
        }
    }

    pub fn url() -> String {
        std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
    }

    pub fn get(&self, key_suffix: &str) -> Option<String> {
        let client = redis::Client::open(Self::url()).ok()?;
        let mut connection = client.get_connection().ok()?;
        redis::cmd("GET")
            .arg(format!("{}:{key_suffix}", self.prefix))
            .query(&mut connection)
            .ok()
    }
}

impl Drop for RedisPrefix {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(Self::url()) else {
            return;
        };
        let Ok(mut connection) = client.get_connection() else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.prefix))
            .query(&mut connection)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut connection);
        }
    }
}

/// A Gatehouse binary running as a child; killed on drop if still running.
pub struct Gatehouse {
    child: Child,
}

impl Gatehouse {
    /// Starts `binary` with a clean environment plus `env` (and `RUST_LOG` from
    /// `GATEHOUSE_TEST_LOG`, default `info`), in a fresh empty directory (so that no
    /// `gatehouse.toml`, `gateway.toml`, `config.json` or `.env` is picked up).
    pub fn start(binary: &Path, env: &[(&str, String)]) -> Self {
        Self::spawn(Self::command(binary, env), binary)
    }

    /// [`Gatehouse::start`] in `dir` (which may hold a configuration file or a `.env`).
    pub fn start_in(binary: &Path, dir: &Path, env: &[(&str, String)]) -> Self {
        let mut command = Self::command(binary, env);
        command.current_dir(dir);
        Self::spawn(command, binary)
    }

    /// [`Gatehouse::start`], with the child's standard output as lines on the returned
    /// channel (each also echoed into the test's output).
    pub fn start_reading_stdout(
        binary: &Path,
        env: &[(&str, String)],
    ) -> (Self, mpsc::Receiver<String>) {
        let mut command = Self::command(binary, env);
        command.stdout(Stdio::piped());
        let mut gatehouse = Self::spawn(command, binary);
        let stdout = gatehouse.child.stdout.take().expect("piped stdout");
        (gatehouse, lines_of(stdout, |line| println!("{line}")))
    }

    /// [`Gatehouse::start`], with the child's log (standard error) as lines on the returned
    /// channel (each also echoed into the test's output), for tests of what the log says.
    pub fn start_reading_log(
        binary: &Path,
        env: &[(&str, String)],
    ) -> (Self, mpsc::Receiver<String>) {
        let mut command = Self::command(binary, env);
        command.stderr(Stdio::piped());
        let mut gatehouse = Self::spawn(command, binary);
        let stderr = gatehouse.child.stderr.take().expect("piped stderr");
        (gatehouse, lines_of(stderr, |line| eprintln!("{line}")))
    }

    /// [`Gatehouse::start`] with standard input piped (returned) and standard output as
    /// lines on the returned channel (not echoed: they are the output under test).
    pub fn start_piped(
        binary: &Path,
        env: &[(&str, String)],
    ) -> (Self, std::process::ChildStdin, mpsc::Receiver<String>) {
        let mut command = Self::command(binary, env);
        command.stdout(Stdio::piped()).stdin(Stdio::piped());
        let mut gatehouse = Self::spawn(command, binary);
        let stdout = gatehouse.child.stdout.take().expect("piped stdout");
        let stdin = gatehouse.child.stdin.take().expect("piped stdin");
        (gatehouse, stdin, lines_of(stdout, |_| {}))
    }

    /// Kills the process (SIGKILL: no clean shutdown) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn command(binary: &Path, env: &[(&str, String)]) -> Command {
        let mut command = Command::new(binary);
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(
                "RUST_LOG",
                std::env::var("GATEHOUSE_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .current_dir(empty_dir("cwd"));
        for (key, value) in env {
            command.env(key, value);
        }
        command
    }

    fn spawn(mut command: Command, binary: &Path) -> Self {
        Self {
            child: command
                .spawn()
                .unwrap_or_else(|e| panic!("start {}: {e}", binary.display())),
        }
    }

    /// Ctrl-C, then waits for the process to exit; returns whether it exited successfully.
    pub fn interrupt_and_wait(&mut self, timeout: Duration) -> bool {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        false
    }

    /// Whether the process has not exited yet.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Gatehouse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lines `reader` yields, on a channel filled by a thread (each passed to `echo` first).
fn lines_of(
    reader: impl std::io::Read + Send + 'static,
    echo: impl Fn(&str) + Send + 'static,
) -> mpsc::Receiver<String> {
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            echo(&line);
            let _ = lines_tx.send(line);
        }
    });
    lines
}

/// A queue bound to an exchange (declared here first, as the gateway declares it) and its
/// consumer, on the test's runtime.
pub struct Capture<K: RuntimeKit> {
    /// The runtime the consumer and the timeouts run on.
    pub rt: async_rs::Runtime<K>,
    /// The test's own AMQP connection.
    pub connection: Connection,
    /// The consumer of the bound queue.
    pub consumer: lapin::Consumer,
}

impl<K: super::Kit> Capture<K> {
    /// Declares `exchange` (topic, durable, as the native profile does), binds a fresh queue
    /// with `#`, and consumes it.
    pub async fn topic(rt: async_rs::Runtime<K>, amqp_url: &str, exchange: &str) -> Self {
        let connection =
            Connection::connect_with_runtime(amqp_url, ConnectionProperties::default(), rt.clone())
                .await
                .expect("connect to RabbitMQ");
        let channel = connection.create_channel().await.unwrap();
        channel
            .exchange_declare(
                exchange.into(),
                lapin::ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let consumer =
            crate::demo::consume_routed(&channel, exchange, &["#".to_owned()], "test", false)
                .await
                .unwrap();
        Self {
            rt,
            connection,
            consumer,
        }
    }

    /// The next delivery (acked), or `None` after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<Delivery> {
        let sleep = self.rt.sleep(timeout);
        futures_util::pin_mut!(sleep);
        let delivery = match futures_util::future::select(self.consumer.next(), sleep).await {
            futures_util::future::Either::Left((delivery, _)) => delivery?.ok()?,
            futures_util::future::Either::Right(_) => return None,
        };
        delivery.ack(BasicAckOptions::default()).await.ok()?;
        Some(delivery)
    }

    /// Publishes one message (persistent, confirmed) on a fresh channel, as a worker would.
    pub async fn publish(&self, exchange: &str, routing_key: &str, body: &[u8]) {
        let channel = self.connection.create_channel().await.unwrap();
        channel
            .confirm_select(lapin::options::ConfirmSelectOptions::default())
            .await
            .unwrap();
        let confirm = channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                lapin::options::BasicPublishOptions::default(),
                body,
                lapin::BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack(), "the broker took the message");
    }

    /// Takes up to `max` messages from `queue` (waiting up to `timeout` for them).
    pub async fn drain_queue(
        &self,
        queue: &str,
        max: usize,
        timeout: Duration,
    ) -> Vec<lapin::message::BasicGetMessage> {
        let channel = self.connection.create_channel().await.unwrap();
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while out.len() < max && Instant::now() < deadline {
            match channel
                .basic_get(
                    queue.into(),
                    lapin::options::BasicGetOptions { no_ack: true },
                )
                .await
            {
                Ok(Some(message)) => out.push(message),
                _ => {
                    self.rt.sleep(Duration::from_millis(100)).await;
                }
            }
        }
        out
    }
}

/// Has the mock send `count` dispatches `GH_TEST_EVENT` (`{"n":0}`, `{"n":1}`, ...) on
/// shard 0: events that arrive only after what a test did before.
pub fn inject_test_events(mock: &mock_gateway::MockGateway, count: usize) {
    for n in 0..count {
        mock.control()
            .shard(0)
            .inject_dispatch("GH_TEST_EVENT", format!("{{\"n\":{n}}}"))
            .expect("inject a dispatch");
    }
}

/// The AMQP header `name` of a delivery, as an integer.
pub fn header_int(delivery: &Delivery, name: &str) -> Option<i64> {
    match delivery.properties.headers().as_ref()?.inner().get(name)? {
        lapin::types::AMQPValue::LongLongInt(i) => Some(*i),
        lapin::types::AMQPValue::LongInt(i) => Some(i64::from(*i)),
        _ => None,
    }
}

/// The AMQP header `name` of a message, as a string.
pub fn header_str(properties: &lapin::BasicProperties, name: &str) -> Option<String> {
    match properties.headers().as_ref()?.inner().get(name)? {
        lapin::types::AMQPValue::LongString(s) => Some(s.to_string()),
        lapin::types::AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

/// A free address on 127.0.0.1 (free when asked; good enough for tests).
pub fn free_local_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// The body of `GET url`, retried for a few seconds while the server starts.
pub fn http_get(url: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match ureq::get(url).call() {
            Ok(mut response) => return response.body_mut().read_to_string().unwrap(),
            Err(e) if Instant::now() > deadline => panic!("GET {url}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// A Redis database (1..=15) of the shared Redis held by this test alone: stream names are
/// event names (`@spectacles/brokers` names them so, and its ioredis `keyPrefix` does not
/// reach `XGROUP`), so a test of the Redis Streams output needs a database to itself. Held
/// through a lock key in database 0 (`SET NX EX`), taken only while empty; every key in it is
/// deleted and the lock released on drop.
pub struct RedisDb {
    /// The database's number.
    pub db: u8,
    lock: String,
    owner: String,
}

impl RedisDb {
    /// Takes the first free, empty database (waits up to 2 minutes for one).
    pub fn take(tag: &str) -> Self {
        let owner = unique(tag);
        let client = redis::Client::open(RedisPrefix::url()).expect("Redis URL");
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            let mut zero = client.get_connection().expect("Redis is running");
            for db in 1..=15u8 {
                let lock = format!("gh-test-redis-db-lock:{db}");
                let taken: Option<String> = redis::cmd("SET")
                    .arg(&lock)
                    .arg(&owner)
                    .arg("NX")
                    .arg("EX")
                    .arg(600)
                    .query(&mut zero)
                    .unwrap_or(None);
                if taken.is_none() {
                    continue;
                }
                let held = Self {
                    db,
                    lock,
                    owner: owner.clone(),
                };
                let size: u64 = redis::cmd("DBSIZE")
                    .query(&mut held.connection())
                    .unwrap_or(1);
                if size == 0 {
                    return held;
                }
                // Someone else's data: leave it alone (drop releases only the lock).
                held.release();
                std::mem::forget(held);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!("no free Redis database for the test");
    }

    /// The URL of the database.
    pub fn url(&self) -> String {
        format!(
            "{}{}",
            RedisPrefix::url().trim_end_matches('/'),
            format_args!("/{}", self.db)
        )
    }

    /// A connection to the database.
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .expect("Redis is running")
    }

    fn release(&self) {
        let Ok(client) = redis::Client::open(RedisPrefix::url()) else {
            return;
        };
        if let Ok(mut zero) = client.get_connection() {
            let held: Option<String> = redis::cmd("GET")
                .arg(&self.lock)
                .query(&mut zero)
                .unwrap_or(None);
            if held.as_deref() == Some(self.owner.as_str()) {
                let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&self.lock).query(&mut zero);
            }
        }
    }
}

impl Drop for RedisDb {
    fn drop(&mut self) {
        let mut connection = self.connection();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("*")
            .query(&mut connection)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut connection);
        }
        self.release();
    }
}
