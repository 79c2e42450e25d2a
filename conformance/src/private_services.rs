//! Private RabbitMQ nodes and Redis servers that one fault scenario starts, breaks and stops, so
//! that the shared services are never stopped, restarted or alarmed.
//!
//! Each instance gets free loopback ports, its own node name (RabbitMQ) and its own directory
//! (data, logs, the Erlang cookie), so scenarios can run in parallel with each other and with the
//! shared services. Every instance is stopped when its handle is dropped, and
//! [`stop_all`] stops whatever is left when the suite is interrupted.
//!
//! Owns these processes. It does not decide when to break them (the fault scenarios do) and does
//! not talk AMQP or Redis beyond checking that they answer.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// Process groups of the private services still running (for an interrupted suite).
static RUNNING: Mutex<Option<HashMap<i32, PathBuf>>> = Mutex::new(None);
static NEXT: AtomicU64 = AtomicU64::new(1);

fn register(pgid: i32, dir: &Path) {
    RUNNING
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get_or_insert_with(HashMap::new)
        .insert(pgid, dir.to_owned());
}

fn unregister(pgid: i32) {
    if let Some(map) = RUNNING
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_mut()
    {
        map.remove(&pgid);
    }
}

/// Kills every private service still running and removes its directory (an interrupted suite).
pub fn stop_all() {
    let left: Vec<(i32, PathBuf)> = RUNNING
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
        .map(|m| m.into_iter().collect())
        .unwrap_or_default();
    for (pgid, dir) in left {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// What went wrong with a private service.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ServiceError(String);

fn err(what: impl Into<String>) -> ServiceError {
    ServiceError(what.into())
}

/// A free loopback port (bound and released: another process could take it in between, which
/// the start-up check then reports).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn private_dir(kind: &str, label: &str) -> std::io::Result<PathBuf> {
    let slug: String = label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let dir = std::env::temp_dir().join(format!(
        "conformance-{kind}-{}-{}-{slug}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn spawn_in_group(mut cmd: Command, log: &Path) -> std::io::Result<(Child, i32)> {
    use std::os::unix::process::CommandExt;
    let out = std::fs::File::create(log)?;
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0);
    let child = cmd.spawn()?;
    let pgid = i32::try_from(child.id()).unwrap_or(0);
    Ok((child, pgid))
}

fn port_answers(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(300),
    )
    .is_ok()
}

// ------------------------------------------------------------------------------------- Redis

/// A private `redis-server` on a free loopback port. Its data survives [`PrivateRedis::stop`] +
/// [`PrivateRedis::start`] (saved on shutdown, loaded on start), as with a restarted Redis
/// that persists.
pub struct PrivateRedis {
    port: u16,
    dir: PathBuf,
    child: Option<(Child, i32)>,
}

impl PrivateRedis {
    /// Picks a port and a directory; does not start the server (see [`PrivateRedis::start`]), so
    /// a scenario can begin with Redis down.
    pub fn new(label: &str) -> Result<Self, ServiceError> {
        let port = free_port().map_err(|e| err(format!("no free port for Redis: {e}")))?;
        let dir = private_dir("redis", label)
            .map_err(|e| err(format!("cannot create a directory for Redis: {e}")))?;
        Ok(Self {
            port,
            dir,
            child: None,
        })
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Whether the server is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts the server and waits until it answers PING (at most 20 s).
    pub async fn start(&mut self) -> Result<(), ServiceError> {
        if self.child.is_some() {
            return Ok(());
        }
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--dbfilename", "dump.rdb"])
            .arg("--dir")
            .arg(&self.dir);
        let (child, pgid) = spawn_in_group(cmd, &self.dir.join("redis.log"))
            .map_err(|e| err(format!("cannot start redis-server (is it installed?): {e}")))?;
        register(pgid, &self.dir);
        self.child = Some((child, pgid));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.ping().await {
                return Ok(());
            }
            if let Some((child, _)) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                unregister(pgid);
                return Err(err(format!(
                    "the private redis-server on port {} exited ({status}); see {}",
                    self.port,
                    self.dir.join("redis.log").display()
                )));
            }
            if Instant::now() >= deadline {
                return Err(err(format!(
                    "the private redis-server on port {} does not answer",
                    self.port
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn ping(&self) -> bool {
        let Ok(client) = redis::Client::open(self.url()) else {
            return false;
        };
        let Ok(Ok(mut conn)) = tokio::time::timeout(
            Duration::from_secs(2),
            client.get_multiplexed_async_connection(),
        )
        .await
        else {
            return false;
        };
        let pong: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut conn).await;
        pong.is_ok()
    }

    /// Stops the server, saving its data first (`SHUTDOWN SAVE`; SIGKILL if it lingers).
    pub async fn stop(&mut self) {
        let Some((mut child, pgid)) = self.child.take() else {
            return;
        };
        if let Ok(client) = redis::Client::open(self.url())
            && let Ok(Ok(mut conn)) = tokio::time::timeout(
                Duration::from_secs(2),
                client.get_multiplexed_async_connection(),
            )
            .await
        {
            let _: redis::RedisResult<()> = tokio::time::timeout(
                Duration::from_secs(5),
                redis::cmd("SHUTDOWN").arg("SAVE").query_async(&mut conn),
            )
            .await
            .unwrap_or(Ok(()));
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        let _ = child.wait();
        unregister(pgid);
        // The port must be free again before a restart binds it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && port_answers(self.port) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if let Some((mut child, pgid)) = self.child.take() {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
            let _ = child.wait();
            unregister(pgid);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------- RabbitMQ

/// The directory of RabbitMQ's own scripts (Debian keeps the real ones there; the ones on PATH
/// switch to the `rabbitmq` user when run as root, which cannot write our directory).
fn rabbitmq_bin(name: &str) -> PathBuf {
    let debian = Path::new("/usr/lib/rabbitmq/bin").join(name);
    if debian.exists() {
        debian
    } else {
        PathBuf::from(name)
    }
}

/// A private RabbitMQ node (guest/guest on a free loopback port, no plugins), started by the
/// suite and stopped when dropped. Starting takes about 10 s.
pub struct PrivateRabbit {
    node: String,
    port: u16,
    dir: PathBuf,
    child: Option<(Child, i32)>,
}

impl PrivateRabbit {
    /// Whether RabbitMQ's server scripts are installed (tests that need private nodes skip
    /// with a message otherwise).
    pub fn available() -> bool {
        let server = rabbitmq_bin("rabbitmq-server");
        server.is_absolute() && server.exists()
            || std::env::var_os("PATH").is_some_and(|path| {
                std::env::split_paths(&path).any(|dir| dir.join("rabbitmq-server").exists())
            })
    }

    /// Starts a node and waits until it accepts AMQP connections (at most 90 s).
    pub async fn start(label: &str) -> Result<Self, ServiceError> {
        Self::start_with_cookie(label, None).await
    }

    /// Starts a node that can join a cluster: nodes started with the same Erlang `cookie` may
    /// cluster ([`PrivateRabbit::join`]).
    pub async fn start_with_cookie(
        label: &str,
        cookie: Option<&str>,
    ) -> Result<Self, ServiceError> {
        let port = free_port().map_err(|e| err(format!("no free port: {e}")))?;
        let dist_port = free_port().map_err(|e| err(format!("no free port: {e}")))?;
        let dir = private_dir("rabbitmq", label)
            .map_err(|e| err(format!("cannot create a directory for RabbitMQ: {e}")))?;
        let home = dir.join("home");
        std::fs::create_dir_all(&home).map_err(|e| err(e.to_string()))?;
        if let Some(cookie) = cookie {
            use std::os::unix::fs::PermissionsExt;
            let path = home.join(".erlang.cookie");
            std::fs::write(&path, cookie)
                .and_then(|()| {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400))
                })
                .map_err(|e| err(format!("cannot write the Erlang cookie: {e}")))?;
        }
        std::fs::write(dir.join("rabbitmq.conf"), "loopback_users = none\n")
            .and_then(|()| std::fs::write(dir.join("enabled_plugins"), "[].\n"))
            .and_then(|()| std::fs::write(dir.join("rabbitmq-env.conf"), ""))
            .map_err(|e| err(format!("cannot write the node's configuration: {e}")))?;
        let node = format!(
            "conformance-{}-{}@localhost",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let mut this = Self {
            node,
            port,
            dir,
            child: None,
        };
        let mut cmd = Command::new(rabbitmq_bin("rabbitmq-server"));
        this.node_env(&mut cmd);
        cmd.env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", port.to_string())
            .env("RABBITMQ_DIST_PORT", dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", this.dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", this.dir.join("log"))
            .env("RABBITMQ_CONFIG_FILE", this.dir.join("rabbitmq.conf"))
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                this.dir.join("enabled_plugins"),
            )
            .env("RABBITMQ_PID_FILE", this.dir.join("pid"))
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            );
        let (child, pgid) = spawn_in_group(cmd, &this.dir.join("server.log")).map_err(|e| {
            err(format!(
                "cannot start rabbitmq-server (is it installed?): {e}"
            ))
        })?;
        register(pgid, &this.dir);
        this.child = Some((child, pgid));
        this.wait_amqp(Duration::from_secs(90)).await?;
        Ok(this)
    }

    fn node_env(&self, cmd: &mut Command) {
        cmd.env("HOME", self.dir.join("home"))
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_CONF_ENV_FILE", self.dir.join("rabbitmq-env.conf"))
            .env("ERL_EPMD_ADDRESS", "127.0.0.1");
    }

    /// The node's name (for `rabbitmqctl -n`).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The AMQP address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `amqp://guest:guest@127.0.0.1:PORT/%2f`.
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Waits until an AMQP connection succeeds.
    pub async fn wait_amqp(&mut self, timeout: Duration) -> Result<(), ServiceError> {
        let deadline = Instant::now() + timeout;
        loop {
            let attempt = tokio::time::timeout(
                Duration::from_secs(5),
                lapin::Connection::connect_with_runtime(
                    &self.amqp_url(),
                    lapin::ConnectionProperties::default(),
                    async_rs::Runtime::tokio_current(),
                ),
            )
            .await;
            if let Ok(Ok(conn)) = attempt {
                let _ = conn.close(200, "".into()).await;
                return Ok(());
            }
            if let Some((child, pgid)) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                unregister(*pgid);
                self.child = None;
                return Err(err(format!(
                    "the private RabbitMQ node {} exited ({status}); see {}",
                    self.node,
                    self.dir.join("server.log").display()
                )));
            }
            if Instant::now() >= deadline {
                return Err(err(format!(
                    "the private RabbitMQ node {} does not accept AMQP within {timeout:?}",
                    self.node
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Makes this node a member of `other`'s cluster (both started with the same cookie):
    /// `stop_app`, `join_cluster`, `start_app`, then waits for AMQP again.
    pub async fn join(&mut self, other: &PrivateRabbit) -> Result<(), ServiceError> {
        self.ctl(&["stop_app"]).await?;
        self.ctl(&["join_cluster", other.node()]).await?;
        self.ctl(&["start_app"]).await?;
        self.wait_amqp(Duration::from_secs(60)).await
    }

    /// Kills the node at once (SIGKILL to its process group: a crashed machine, as its
    /// clients and cluster peers see it). Its directory stays until the handle is dropped.
    pub fn kill(&mut self) {
        if let Some((mut child, pgid)) = self.child.take() {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
            let _ = child.wait();
            unregister(pgid);
        }
    }

    /// Runs `rabbitmqctl -n <node> <args>`.
    pub async fn ctl(&self, args: &[&str]) -> Result<String, ServiceError> {
        let mut cmd = tokio::process::Command::new(rabbitmq_bin("rabbitmqctl"));
        cmd.arg("-q").arg("-n").arg(&self.node).args(args);
        cmd.env("HOME", self.dir.join("home"))
            .env("RABBITMQ_CONF_ENV_FILE", self.dir.join("rabbitmq-env.conf"))
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
            .await
            .map_err(|_| err(format!("rabbitmqctl {args:?} took over 60 s")))?
            .map_err(|e| err(format!("cannot run rabbitmqctl: {e}")))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(err(format!(
                "rabbitmqctl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }
}

impl Drop for PrivateRabbit {
    fn drop(&mut self) {
        if let Some((mut child, pgid)) = self.child.take() {
            // The Erlang VM is in the group; `rabbitmqctl shutdown` would be gentler but needs a
            // runtime and seconds. Nothing of the node is kept, so a kill is enough.
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
            let _ = child.wait();
            unregister(pgid);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
