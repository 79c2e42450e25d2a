//! twilight-gateway beside Gatehouse (PERFORMANCE.md item 4): one process holding N idle
//! twilight-gateway shards connected to the mock, its resident memory measured like
//! `memory`'s. Built only with the `twilight` (no compression) or `twilight-zlib` feature.
//!
//! Owns: the twilight client (`twilight-shards`, run as a child process so that its memory is
//! its own) and the scenario around it, and the twilight-dispatch-style pipeline (issue 13,
//! item 2: `twilight-dispatch-pipeline`, a child of `e2e --twilight-dispatch yes`). Does not
//! own the mock settings (`e2e::mock_config`).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use futures_util::StreamExt;
use mock_gateway::{Fixture, MockGateway};
use twilight_gateway::queue::InMemoryQueue;
use twilight_gateway::{
    ConfigBuilder, EventType, EventTypeFlags, Intents, Message, Shard, ShardId,
};

use crate::e2e::mock_config;
use crate::gateway_side::Rate;
use crate::services;

/// The compression this build's twilight-gateway asks for.
pub const COMPRESSION: &str = if cfg!(feature = "twilight-zlib") {
    "zlib-stream"
} else {
    "none"
};

/// The child: `shards` twilight shards on `url`, each reading raw messages until killed.
pub async fn run_shards(url: String, shards: u32) -> Result<()> {
    let mut tasks = Vec::new();
    for number in 0..shards {
        // A max_concurrency of 0 makes the in-memory queue a no-op: every shard identifies at
        // once, as the mock allows.
        let config = ConfigBuilder::new(services::TOKEN.to_owned(), Intents::GUILDS)
            .proxy_url(url.clone())
            .queue(InMemoryQueue::new(0, 0, Duration::ZERO, 0))
            .build();
        let mut shard = Shard::with_config(ShardId::new(number, shards), config);
        tasks.push(tokio::spawn(async move {
            while let Some(message) = shard.next().await {
                drop(message);
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    Ok(())
}

pub struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// RSS (KiB) of a child holding `shards` idle twilight shards, and how many heartbeated.
pub async fn idle_shards(shards: u32, settle: Duration) -> Result<(u64, usize)> {
    let mut config = mock_config(shards, Fixture::empty());
    config.token = None;
    config.required_shard_count = None;
    config.poll_interval = Duration::from_millis(500);
    config.heartbeat_interval = Duration::from_secs(10);
    let mock = MockGateway::start(config)?;
    let child = Command::new(std::env::current_exe()?)
        .args([
            "twilight-shards",
            "--url",
            &mock.ws_url(),
            "--shards",
            &shards.to_string(),
        ])
        .stdin(Stdio::null())
        .spawn()?;
    let child = ChildGuard(child);
    let recorder = mock.recorder();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let identified = recorder.identifies().len();
        if identified >= shards as usize {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {identified} of {shards} twilight shards identified");
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
    for _ in 0..5 {
        readings.extend(services::rss_kib(child.0.id()));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    readings.sort_unstable();
    let violations = recorder.violations();
    if !violations.is_empty() {
        eprintln!(
            "warning: {} protocol violations, first: {:?}",
            violations.len(),
            violations[0].kind
        );
    }
    Ok((
        readings.get(readings.len() / 2).copied().unwrap_or(0),
        heartbeating,
    ))
}

/// Whether twilight-model knows the dispatch `name`: `next_event` silently skips the others
/// (`twilight_gateway::parse` returns `Ok(None)` for them, whatever the flags).
pub fn knows(name: &str) -> bool {
    EventType::try_from(name).is_ok()
}

/// The child of `twilight-rate`: one shard on `url` reading `events` dispatches in `typed`
/// (`next_event`, every event type deserialised) or raw (`next`, text messages) mode; prints
/// its own events/s and CPU seconds per million events between the 5% and 95% marks. In typed
/// mode an event twilight's models reject (the fixture has trimmed payloads) counts as read.
pub async fn run_rate_client(url: String, events: u64, typed: bool) -> Result<()> {
    let config = ConfigBuilder::new(services::TOKEN.to_owned(), Intents::GUILDS)
        .proxy_url(url)
        .queue(InMemoryQueue::new(0, 0, Duration::ZERO, 0))
        .build();
    let mut shard = Shard::with_config(ShardId::ONE, config);
    let pid = std::process::id();
    let (lo, hi) = (events / 20, events - events / 20);
    let mut count = 0u64;
    let mut rejected = 0u64;
    let mut marks = None;
    let mut start = None;
    loop {
        let got = if typed {
            match twilight_gateway::StreamExt::next_event(&mut shard, EventTypeFlags::all()).await {
                Some(Ok(_)) => true,
                // Events of the fixture that twilight's models reject still cost the parse.
                Some(Err(_)) => {
                    rejected += 1;
                    true
                }
                None => break,
            }
        } else {
            match shard.next().await {
                Some(Ok(Message::Text(_))) => true,
                Some(Ok(_)) => false,
                Some(Err(e)) => bail!("twilight: {e}"),
                None => break,
            }
        };
        if got {
            count += 1;
        }
        if count == lo && start.is_none() {
            start = Some((Instant::now(), services::cpu_seconds(pid)));
        }
        if count == hi {
            let (t0, c0) = start.expect("lo < hi");
            marks = Some((t0.elapsed(), services::cpu_seconds(pid) - c0));
            break;
        }
    }
    let Some((elapsed, cpu)) = marks else {
        bail!("the stream ended after {count} messages");
    };
    let n = (hi - lo) as f64;
    // For the parent (`rate`).
    println!("RATE {} {}", n / elapsed.as_secs_f64(), cpu / n * 1e6);
    println!(
        "twilight-gateway {} {}: {:.0} events/s, {:.2} CPU-s per million events ({rejected} rejected by its models; load {})",
        if typed {
            "typed next_event"
        } else {
            "raw messages"
        },
        COMPRESSION,
        n / elapsed.as_secs_f64(),
        cpu / n * 1e6,
        services::load_average()
    );
    Ok(())
}

/// One twilight shard reading the mock's replay as fast as it can (in a child process, so its
/// CPU is its own). In typed mode the child counts only the events `next_event` delivers: the
/// dispatches twilight-model knows (see [`knows`]); it skips the others without a word, so
/// counting to the fixture's length never ends.
pub fn rate(fixture: &Fixture, typed: bool) -> Result<Rate> {
    let mut config = mock_config(1, fixture.clone());
    config.token = None;
    config.required_shard_count = None;
    let events = if typed {
        fixture.events().iter().filter(|e| knows(&e.name)).count()
    } else {
        fixture.len()
    };
    let mock = MockGateway::start(config)?;
    let load_before = services::load_average();
    let output = Command::new(std::env::current_exe()?)
        .args([
            "twilight-client",
            "--url",
            &mock.ws_url(),
            "--events",
            &events.to_string(),
            "--mode",
            if typed { "typed" } else { "raw" },
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()?;
    let load_after = services::load_average();
    let stdout = String::from_utf8_lossy(&output.stdout);
    for line in stdout.lines().filter(|l| !l.starts_with("RATE ")) {
        println!("{line}");
    }
    if !output.status.success() {
        bail!("twilight client: {}", output.status);
    }
    let numbers: Vec<f64> = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RATE "))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let [events_per_second, cpu_per_million] = numbers[..] else {
        bail!("twilight client printed no rate");
    };
    Ok(Rate {
        events_per_second,
        cpu_per_million,
        load_before,
        load_after,
    })
}

/// twilight-dispatch's envelope (`src/models.rs` `PayloadInfo`): `d` is parsed into a value
/// and written out again; `s` is dropped; its `old` needs a cache and is never set here.
#[derive(serde::Deserialize, serde::Serialize)]
struct PayloadInfo {
    op: u8,
    t: Option<String>,
    d: serde_json::Value,
}

/// The child of `e2e --twilight-dispatch yes`: one twilight-gateway shard on `url` publishing
/// every dispatch to `amqp_url` the way chamburr/twilight-dispatch does (`src/handler.rs`
/// `outgoing`): one task per event that parses the raw payload into `PayloadInfo`, serialises
/// it again and `basic_publish`es it to the `gateway` exchange with the event name as routing
/// key and default properties (transient), on a channel without publisher confirms; a publish
/// error is only logged. (twilight-dispatch parses with `simd_json`; this uses `serde_json`,
/// the parser the bench already has.) Runs until killed.
pub async fn run_dispatch_pipeline(url: String, amqp_url: String) -> Result<()> {
    use lapin::options::BasicPublishOptions;
    use lapin::{BasicProperties, Connection, ConnectionProperties};

    let connection = Connection::connect_with_runtime(
        &amqp_url,
        ConnectionProperties::default(),
        async_rs::Runtime::tokio_current(),
    )
    .await?;
    let channel = connection.create_channel().await?;
    let config = ConfigBuilder::new(services::TOKEN.to_owned(), Intents::GUILDS)
        .proxy_url(url)
        .queue(InMemoryQueue::new(0, 0, Duration::ZERO, 0))
        .build();
    let mut shard = Shard::with_config(ShardId::ONE, config);
    while let Some(message) = shard.next().await {
        let text = match message {
            Ok(Message::Text(text)) => text,
            Ok(_) => continue,
            Err(e) => bail!("twilight: {e}"),
        };
        let channel = channel.clone();
        tokio::spawn(async move {
            let Ok(payload) = serde_json::from_str::<PayloadInfo>(&text) else {
                eprintln!("could not decode a payload");
                return;
            };
            let Some(kind) = payload.t.as_deref() else {
                return;
            };
            let Ok(body) = serde_json::to_vec(&payload) else {
                eprintln!("could not serialise a payload");
                return;
            };
            if let Err(e) = channel
                .basic_publish(
                    "gateway".into(),
                    kind.into(),
                    BasicPublishOptions::default(),
                    &body,
                    BasicProperties::default(),
                )
                .await
            {
                eprintln!("failed to publish an event: {e}");
            }
        });
    }
    Ok(())
}

/// The pipeline's child process for one e2e run (killed on drop).
pub fn start_dispatch_pipeline(ws_url: &str, amqp_url: &str) -> Result<ChildGuard> {
    let child = Command::new(std::env::current_exe()?)
        .args([
            "twilight-dispatch-pipeline",
            "--url",
            ws_url,
            "--amqp",
            amqp_url,
        ])
        .stdin(Stdio::null())
        .spawn()?;
    Ok(ChildGuard(child))
}

impl ChildGuard {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}
