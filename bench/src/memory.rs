//! Memory per idle shard (PERFORMANCE.md item 4): one `gatehouse` process holding N connected,
//! idle shards (READY, then nothing but heartbeats), its `VmRSS` once every shard has
//! identified and settled.
//!
//! Owns: the idle-shards scenario. Per-shard memory is the difference of two runs
//! (N large and N small) divided by the difference in shards, so the process's fixed cost
//! (runtime, AMQP and Redis connections, metrics) cancels out.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use mock_gateway::{Fixture, MockGateway};

use crate::e2e::{gatehouse_env, mock_config};
use crate::services::{self, Gatehouse, RedisPrefix, Sink, Vhost};

/// One measurement.
pub struct Idle {
    pub shards: u32,
    pub compress: String,
    pub rss_kib: u64,
    /// CPU used while idle (user + system), in percent of one core, over the readings.
    pub cpu_percent: f64,
    pub heartbeating: usize,
    pub load: String,
}

/// Starts `gatehouse` with `shards` idle shards and reads its RSS after `settle`.
pub async fn idle_shards(
    binary: &Path,
    shards: u32,
    compress: &str,
    settle: Duration,
    log_dir: &Path,
) -> Result<Idle> {
    let vhost = Vhost::create("memory");
    let redis = RedisPrefix::new("memory");
    let _sink = Sink::declare(&vhost.amqp_url(), "gateway").await?;
    let mut config = mock_config(shards, Fixture::empty());
    // One thread per connection: wake up rarely.
    config.poll_interval = Duration::from_millis(500);
    config.heartbeat_interval = Duration::from_secs(10);
    let mock = MockGateway::start(config)?;
    let log = log_dir.join(format!("gatehouse-memory-{shards}-{compress}.log"));
    let gatehouse = Gatehouse::start(
        binary,
        &gatehouse_env(&mock, shards, compress, &vhost, &redis),
        &log,
    )?;
    let deadline = Instant::now() + Duration::from_secs(600);
    let recorder = mock.recorder();
    loop {
        let identified = recorder.identifies().len();
        if identified >= shards as usize {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {identified} of {shards} shards identified");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(settle).await;
    let heartbeating = recorder.read(|r| {
        r.connections
            .iter()
            .filter(|c| !c.heartbeats.is_empty())
            .count()
    });
    let mut readings = Vec::new();
    let (ticks_before, started) = (services::cpu_ticks(gatehouse.pid()), Instant::now());
    for _ in 0..5 {
        readings.extend(services::rss_kib(gatehouse.pid()));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Idle CPU over the five readings and a further 15 s (`/proc/<pid>/stat`, 100 ticks/s).
    tokio::time::sleep(Duration::from_secs(15)).await;
    let ticks = services::cpu_ticks(gatehouse.pid())
        .zip(ticks_before)
        .map_or(0, |(after, before)| after.saturating_sub(before));
    let cpu_percent = ticks as f64 / started.elapsed().as_secs_f64();
    readings.sort_unstable();
    let rss_kib = readings.get(readings.len() / 2).copied().unwrap_or(0);
    let violations = recorder.violations();
    if !violations.is_empty() {
        eprintln!(
            "warning: {} protocol violations, first: {:?}",
            violations.len(),
            violations[0].kind
        );
    }
    Ok(Idle {
        shards,
        compress: compress.to_owned(),
        rss_kib,
        cpu_percent,
        heartbeating,
        load: services::load_average(),
    })
}
