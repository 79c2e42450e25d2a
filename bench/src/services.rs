//! The benchmark's side of the services and the machine: a fresh RabbitMQ vhost per run
//! (management API), Redis key clean-up, a `gatehouse` child process, and readings from `/proc`
//! (load average, CPU time, resident memory).
//!
//! Owns: isolation and measurement plumbing. Does not own any scenario (see `e2e`, `memory`).

use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};

/// The token the mock accepts.
pub const TOKEN: &str = "bench-token";

/// Isolation is the end-to-end tests' own: a vhost per run (deleted on drop), a unique Redis key
/// prefix (its keys deleted on drop).
pub(crate) use runtime_common::e2e::support::{RedisPrefix, Vhost};

/// The benchmark's own AMQP connection in a vhost, with the native profile's event exchange
/// (topic, durable) and one durable queue bound to it with `#` and no consumer: every message
/// is persisted and stays, and the queue's depth counts them.
pub struct Sink {
    #[allow(dead_code, reason = "kept open for the channel")]
    pub connection: Connection,
    pub channel: Channel,
    pub queue: String,
}

/// A connection to `amqp_url` and a channel on it, with the durable topic `exchange` declared.
pub async fn topic_exchange(amqp_url: &str, exchange: &str) -> Result<(Connection, Channel)> {
    let connection = Connection::connect_with_runtime(
        amqp_url,
        ConnectionProperties::default(),
        async_rs::Runtime::tokio_current(),
    )
    .await?;
    let channel = connection.create_channel().await?;
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
        .await?;
    Ok((connection, channel))
}

impl Sink {
    pub async fn declare(amqp_url: &str, exchange: &str) -> Result<Self> {
        Self::declare_with(amqp_url, exchange, true).await
    }

    /// The same with a queue that is `durable` or not. RabbitMQ writes a persistent message
    /// to disk only in a durable queue: with a transient queue the broker confirms without a
    /// disk sync, whatever the messages' delivery mode.
    pub async fn declare_with(amqp_url: &str, exchange: &str, durable: bool) -> Result<Self> {
        let (connection, channel) = topic_exchange(amqp_url, exchange).await?;
        let queue = "bench.sink".to_owned();
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    durable,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_bind(
                queue.as_str().into(),
                exchange.into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(Self {
            connection,
            channel,
            queue,
        })
    }

    /// Messages in the queue (a passive declare).
    pub async fn depth(&self) -> Result<u64> {
        let queue = self
            .channel
            .queue_declare(
                self.queue.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        Ok(u64::from(queue.message_count()))
    }
}

/// A `gatehouse` binary as a child process (output into a log file); killed on drop.
pub struct Gatehouse {
    pub child: Child,
}

impl Gatehouse {
    pub fn start(binary: &Path, env: &[(&str, String)], log: &Path) -> Result<Self> {
        let log_file = std::fs::File::create(log)?;
        let mut command = Command::new(binary);
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(
                "RUST_LOG",
                std::env::var("GATEHOUSE_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .current_dir(std::env::temp_dir());
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        Ok(Self { child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Gatehouse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The 1-minute load average.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// User plus system CPU time of a process, in seconds (`/proc/<pid>/stat`, 100 ticks per
/// second as on every Linux this runs on).
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // Fields after the command name (which is in parentheses and may hold spaces).
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return f64::NAN;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime 15.
    let ticks = |i: usize| fields.get(i - 3).and_then(|f| f.parse::<f64>().ok());
    match (ticks(14), ticks(15)) {
        (Some(u), Some(s)) => (u + s) / 100.0,
        _ => f64::NAN,
    }
}

/// `VmRSS` of a process in KiB.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): utime is the 14th field, stime
    // the 15th, counted from 1; after `) ` they are the 12th and 13th.
    let rest = stat.rsplit_once(") ")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// The resident memory of process `pid` (`VmRSS`) in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
