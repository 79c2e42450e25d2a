//! Private Redis deployments for the end-to-end tests: a primary with a replica watched by
//! three Sentinels (each side with a password if asked: [`Passwords`]), and a three-primary
//! Redis Cluster, each made of `redis-server` processes
//! on free ports in a fresh directory, stopped (the processes this test started, by their
//! handles) on drop, even when the test fails.
//!
//! Owns: starting, waiting for and stopping those processes, and the test side's calls to
//! them (reading a key, forcing a failover). Does not own any assertion (the scenarios in the
//! parent module). The shared Redis on 6379 is not used.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::support::{empty_dir, free_local_address};

/// The name the Sentinels monitor the primary under.
pub const MASTER_NAME: &str = "gh-test-primary";

/// Whether `redis-server` can be run; if not, says why the test is skipped.
pub fn redis_server_available(test: &str) -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!(
            "SKIPPED {test}: `redis-server` is not installed (apt-get install redis-server); \
             this test starts private Redis instances"
        );
    }
    found
}

fn free_port() -> u16 {
    free_local_address()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port")
}

/// One `redis-server` process (killed on drop).
struct Server {
    port: u16,
    /// Its `requirepass` (a data node's also its `masterauth`).
    password: Option<String>,
    child: Option<Child>,
}

impl Server {
    fn start(
        dir: &Path,
        name: &str,
        args: &[String],
        sentinel_config: Option<&str>,
        password: Option<&str>,
    ) -> Self {
        let port = free_port();
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).expect("create the instance's directory");
        let mut command = Command::new("redis-server");
        match sentinel_config {
            Some(config) => {
                let path = dir.join("sentinel.conf");
                std::fs::write(
                    &path,
                    format!(
                        "port {port}\nbind 127.0.0.1\ndir {}\nlogfile {}\n{config}{}",
                        dir.display(),
                        dir.join("log").display(),
                        password.map_or(String::new(), |p| format!("requirepass {p}\n"))
                    ),
                )
                .expect("write the Sentinel's configuration");
                command.arg(path).arg("--sentinel");
            }
            None => {
                command
                    .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                    .args(["--save", "", "--appendonly", "no"])
                    .arg("--dir")
                    .arg(&dir)
                    .arg("--logfile")
                    .arg(dir.join("log"))
                    .args(args);
                if let Some(password) = password {
                    command.args(["--requirepass", password, "--masterauth", password]);
                }
            }
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let server = Self {
            port,
            password: password.map(str::to_owned),
            child: Some(child),
        };
        server.wait_until(Duration::from_secs(20), "answers PING", |c| {
            redis::cmd("PING").query::<String>(c).is_ok()
        });
        server
    }

    fn url(&self) -> String {
        let userinfo = self
            .password
            .as_ref()
            .map_or(String::new(), |p| format!(":{p}@"));
        format!("redis://{userinfo}127.0.0.1:{}/", self.port)
    }

    fn connection(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(self.url())?.get_connection_with_timeout(Duration::from_secs(2))
    }

    /// Polls `check` on a fresh connection until it holds; panics after `timeout`.
    fn wait_until(
        &self,
        timeout: Duration,
        what: &str,
        mut check: impl FnMut(&mut redis::Connection) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(mut c) = self.connection()
                && check(&mut c)
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("redis on port {} never {what}", self.port);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn info_field(connection: &mut redis::Connection, section: &str, field: &str) -> Option<String> {
    let info: String = redis::cmd("INFO").arg(section).query(connection).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_owned())
}

/// The passwords of a [`SentinelDeployment`] (`None`: no password).
#[derive(Clone, Debug, Default)]
pub struct Passwords {
    /// The data nodes' `requirepass` and `masterauth` (and the Sentinels' `auth-pass`).
    pub data: Option<String>,
    /// The Sentinels' own `requirepass` (they also use it with one another).
    pub sentinels: Option<String>,
}

/// A primary, its replica and three Sentinels (quorum 2, a primary counts as down after one
/// second), on 127.0.0.1.
pub struct SentinelDeployment {
    servers: Vec<Server>,
    sentinels: Vec<Server>,
    passwords: Passwords,
    _dir: PathBuf,
}

impl SentinelDeployment {
    /// Starts it with `passwords` and waits until the replica is in sync and every Sentinel
    /// knows the replica and the two other Sentinels (so that both a forced and an automatic
    /// failover work).
    pub fn start(passwords: Passwords) -> Self {
        let dir = empty_dir("sentinel");
        let data = passwords.data.as_deref();
        let primary = Server::start(&dir, "primary", &[], None, data);
        let replica = Server::start(
            &dir,
            "replica",
            &[
                "--replicaof".into(),
                "127.0.0.1".into(),
                primary.port.to_string(),
            ],
            None,
            data,
        );
        replica.wait_until(Duration::from_secs(20), "synced with its primary", |c| {
            info_field(c, "replication", "master_link_status").as_deref() == Some("up")
        });
        let config = format!(
            "sentinel monitor {MASTER_NAME} 127.0.0.1 {} 2\n\
             sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
             sentinel failover-timeout {MASTER_NAME} 10000\n\
             sentinel parallel-syncs {MASTER_NAME} 1\n{}",
            primary.port,
            data.map_or(String::new(), |p| format!(
                "sentinel auth-pass {MASTER_NAME} {p}\n"
            ))
        );
        let sentinels: Vec<Server> = (0..3)
            .map(|i| {
                Server::start(
                    &dir,
                    &format!("sentinel{i}"),
                    &[],
                    Some(&config),
                    passwords.sentinels.as_deref(),
                )
            })
            .collect();
        for sentinel in &sentinels {
            sentinel.wait_until(
                Duration::from_secs(30),
                "knew the replica and the other Sentinels",
                |c| {
                    let replicas: Vec<redis::Value> = redis::cmd("SENTINEL")
                        .arg("REPLICAS")
                        .arg(MASTER_NAME)
                        .query(c)
                        .unwrap_or_default();
                    let others: Vec<redis::Value> = redis::cmd("SENTINEL")
                        .arg("SENTINELS")
                        .arg(MASTER_NAME)
                        .query(c)
                        .unwrap_or_default();
                    replicas.len() == 1 && others.len() == 2
                },
            );
        }
        Self {
            servers: vec![primary, replica],
            sentinels,
            passwords,
            _dir: dir,
        }
    }

    /// `redis+sentinel://[:<data password>@]127.0.0.1:<s1>,…/<master-name>
    /// [?sentinel_password=<the Sentinels' password>]`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        let userinfo = self
            .passwords
            .data
            .as_ref()
            .map_or(String::new(), |p| format!(":{p}@"));
        let query = self
            .passwords
            .sentinels
            .as_ref()
            .map_or(String::new(), |p| format!("?sentinel_password={p}"));
        format!(
            "redis+sentinel://{userinfo}{}/{MASTER_NAME}{query}",
            hosts.join(",")
        )
    }

    /// A connection to the server on `port`.
    pub fn connection(&self, port: u16) -> redis::Connection {
        self.server(port).connection().expect("the server answers")
    }

    /// Every string value on the server on `port` (`KEYS *`, then `GET` each).
    pub fn string_values(&self, port: u16) -> Vec<String> {
        let mut c = self.connection(port);
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("*")
            .query(&mut c)
            .unwrap_or_default();
        keys.iter()
            .filter_map(|key| redis::cmd("GET").arg(key).query(&mut c).ok())
            .collect()
    }

    /// The port the Sentinels name as the primary now.
    pub fn primary_port(&self) -> Option<u16> {
        let mut c = self.sentinels[0].connection().ok()?;
        let (_, port): (String, u16) = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(MASTER_NAME)
            .query(&mut c)
            .ok()?;
        Some(port)
    }

    fn server(&self, port: u16) -> &Server {
        self.servers
            .iter()
            .find(|s| s.port == port)
            .expect("one of ours")
    }

    /// `GET key` on the server on `port`.
    pub fn get(&self, port: u16, key: &str) -> Option<String> {
        let mut c = self.server(port).connection().ok()?;
        redis::cmd("GET").arg(key).query(&mut c).ok()?
    }

    /// Whether the server on `port` answers `ROLE` as a primary.
    pub fn is_primary(&self, port: u16) -> bool {
        self.server(port).connection().is_ok_and(|mut c| {
            redis::cmd("ROLE")
                .query::<Vec<redis::Value>>(&mut c)
                .ok()
                .and_then(|r| r.into_iter().next())
                == Some(redis::Value::BulkString(b"master".to_vec()))
        })
    }

    /// The port of the other data server.
    pub fn other(&self, port: u16) -> u16 {
        self.servers
            .iter()
            .find(|s| s.port != port)
            .expect("two servers")
            .port
    }

    /// Waits until the Sentinels name the server on `port` and it answers as the primary
    /// (panics after a minute).
    pub fn wait_for_primary(&self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.primary_port() == Some(port) && self.is_primary(port) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the failover to port {port} did not complete");
    }

    /// `SENTINEL FAILOVER`: the replica becomes the primary, the old primary its replica.
    /// Returns the new primary's port once the failover completed.
    pub fn failover(&self) -> u16 {
        let old = self.primary_port().expect("a primary");
        let new = self.other(old);
        let mut c = self.sentinels[0].connection().expect("a Sentinel");
        let () = redis::cmd("SENTINEL")
            .arg("FAILOVER")
            .arg(MASTER_NAME)
            .query(&mut c)
            .expect("SENTINEL FAILOVER");
        self.wait_for_primary(new);
        new
    }

    /// Waits until the replica on `port` holds `value` under `key` (replicated).
    pub fn wait_replicated(&self, port: u16, key: &str, value: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.get(port, key).as_deref() == Some(value) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{key} never reached the replica on port {port}");
    }

    /// Kills the server on `port` (SIGKILL).
    pub fn kill(&mut self, port: u16) {
        if let Some(server) = self.servers.iter_mut().find(|s| s.port == port) {
            server.kill();
        }
    }
}

/// A Redis Cluster of three primaries (no replicas).
pub struct ClusterDeployment {
    nodes: Vec<Server>,
    _dir: PathBuf,
}

impl ClusterDeployment {
    /// Starts the nodes, joins them (`redis-cli --cluster create`) and waits until every node
    /// reports `cluster_state:ok`.
    pub fn start() -> Self {
        let dir = empty_dir("cluster");
        let nodes: Vec<Server> = (0..3)
            .map(|i| {
                let bus = free_port();
                Server::start(
                    &dir,
                    &format!("node{i}"),
                    &[
                        "--cluster-enabled".into(),
                        "yes".into(),
                        "--cluster-port".into(),
                        bus.to_string(),
                        "--cluster-config-file".into(),
                        dir.join(format!("node{i}.conf")).display().to_string(),
                        "--cluster-node-timeout".into(),
                        "2000".into(),
                    ],
                    None,
                    None,
                )
            })
            .collect();
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for node in &nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        let status = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run redis-cli --cluster create");
        assert!(status.success(), "redis-cli --cluster create failed");
        for node in &nodes {
            node.wait_until(Duration::from_secs(30), "reported cluster_state:ok", |c| {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(c)
                    .unwrap_or_default();
                info.lines().any(|l| l.trim() == "cluster_state:ok")
            });
        }
        Self { nodes, _dir: dir }
    }

    /// `redis+cluster://127.0.0.1:<p1>,127.0.0.1:<p2>` (two of the three: the client learns
    /// the third).
    pub fn url(&self) -> String {
        format!(
            "redis+cluster://127.0.0.1:{},127.0.0.1:{}",
            self.nodes[0].port, self.nodes[1].port
        )
    }

    /// A cluster connection (it follows the keys to their nodes).
    pub fn connection(&self) -> redis::RedisResult<redis::cluster::ClusterConnection> {
        let nodes: Vec<String> = self.nodes.iter().map(Server::url).collect();
        redis::cluster::ClusterClient::new(nodes)?.get_connection()
    }

    /// `GET key` through a cluster connection.
    pub fn get(&self, key: &str) -> Option<String> {
        let mut c = self.connection().ok()?;
        redis::cmd("GET").arg(key).query(&mut c).ok()?
    }

    /// How many keys each node holds (`DBSIZE`).
    pub fn key_counts(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .map(|n| {
                n.connection()
                    .ok()
                    .and_then(|mut c| redis::cmd("DBSIZE").query(&mut c).ok())
                    .unwrap_or(0)
            })
            .collect()
    }
}
