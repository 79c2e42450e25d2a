//! End to end into RabbitMQ (PERFORMANCE.md items 3 and 5): the mock gateway -> a `gatehouse`
//! release binary -> RabbitMQ (persistent, publisher confirms), against the broker's ceiling: a
//! plain lapin publisher sending the same bodies with the same properties and a window of 1,000
//! unconfirmed messages.
//!
//! Owns: the two scenarios and their rate computation. Does not own the services plumbing
//! (`services`).
//!
//! Both scenarios publish into a fresh vhost whose `gateway` exchange has one durable queue
//! bound with `#` and no consumer, so the broker does the same work (route, persist, confirm)
//! for both. The rate is the steady one: messages between 5% and 95% of the run, divided by
//! the time between reaching those marks (start-up, identify and the tail are left out).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Result, bail};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use mock_gateway::{Fixture, FrameRecording, MockConfig, MockGateway, ReplayRate, ShardRouting};

use crate::services::{self, Gatehouse, RedisPrefix, Sink, TOKEN, Vhost};

/// One measured run.
pub struct Run {
    pub what: String,
    pub messages: u64,
    /// Messages per second between the 5% and 95% marks.
    pub steady_rate: f64,
    /// Messages per second over the whole run (first to last message).
    pub whole_rate: f64,
    /// CPU seconds of the client (the `gatehouse` process between the marks, or this process
    /// while it publishes) per million messages.
    pub cpu_per_million: Option<f64>,
    pub load_before: String,
    pub load_after: String,
}

impl Run {
    pub fn print(&self) {
        let cpu = self
            .cpu_per_million
            .map(|c| format!(", client {c:.2} CPU-s per million"))
            .unwrap_or_default();
        println!(
            "{:<34} {:>7} msgs  steady {:>8.0} msg/s  whole {:>8.0} msg/s{cpu}  (load {} -> {})",
            self.what,
            self.messages,
            self.steady_rate,
            self.whole_rate,
            self.load_before,
            self.load_after
        );
    }
}

/// The fixture, repeated to at least `events` dispatches.
pub fn corpus(fixture: &str, events: usize) -> Result<Fixture> {
    let base = Fixture::load(fixture)?;
    if base.is_empty() {
        bail!("fixture {fixture} has no events");
    }
    Ok(base.repeated(events.div_ceil(base.len())))
}

/// Depth samples `(time, messages)` until `expected` messages are in the queue, or nothing
/// arrived for `stall`.
async fn watch_depth(
    sink: &Sink,
    expected: u64,
    stall: Duration,
    mut on_sample: impl FnMut(Instant, u64),
) -> Result<Vec<(Instant, u64)>> {
    let mut samples = Vec::new();
    let mut last_change = Instant::now();
    let mut last = 0;
    loop {
        let depth = sink.depth().await?;
        let now = Instant::now();
        on_sample(now, depth);
        samples.push((now, depth));
        if depth != last {
            last = depth;
            last_change = now;
        }
        if depth >= expected || now.duration_since(last_change) > stall {
            return Ok(samples);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Time of the first sample at or above `mark`.
fn reached(samples: &[(Instant, u64)], mark: u64) -> Option<(Instant, u64)> {
    samples.iter().copied().find(|(_, n)| *n >= mark)
}

fn rates(samples: &[(Instant, u64)], total: u64) -> (f64, f64) {
    let lo = reached(samples, total / 20);
    let hi = reached(samples, total - total / 20);
    let steady = match (lo, hi) {
        (Some((t0, n0)), Some((t1, n1))) if t1 > t0 => {
            (n1 - n0) as f64 / t1.duration_since(t0).as_secs_f64()
        }
        _ => f64::NAN,
    };
    let first = reached(samples, 1);
    let last = samples.last().copied();
    let whole = match (first, last) {
        (Some((t0, n0)), Some((t1, n1))) if t1 > t0 => {
            (n1 - n0) as f64 / t1.duration_since(t0).as_secs_f64()
        }
        _ => f64::NAN,
    };
    (steady, whole)
}

/// Settings of one end-to-end run through `gatehouse`.
pub struct GatehouseRun<'a> {
    pub binary: &'a Path,
    pub fixture: &'a Fixture,
    pub shards: u32,
    pub compress: &'a str,
    /// `GATEHOUSE_PROFILE` (`gatehouse`: the native one, `twilight-dispatch`, ...).
    pub profile: &'a str,
    /// `GATEHOUSE_AMQP_CLIENT`: `lapin` (the default) or `amqprs`.
    pub client: &'a str,
    pub log_dir: &'a Path,
}

/// The mock's settings for a run: Discord-like, but every shard identifies in one round, no
/// frame recording, a small resume history, zlib level 1.
pub fn mock_config(shards: u32, fixture: Fixture) -> MockConfig {
    let mut config = MockConfig::default();
    config.token = Some(TOKEN.to_owned());
    config.shards = shards;
    config.required_shard_count = Some(shards);
    config.max_concurrency = shards.max(1);
    config.session_start_total = 1_000_000;
    config.fixture = fixture;
    config.rate = ReplayRate::AsFastAsClientReads;
    config.routing = ShardRouting::Broadcast;
    config.history_limit_bytes = 1 << 20;
    config.zlib_level = 1;
    config.record_frames = FrameRecording::None;
    config
}

pub fn gatehouse_env(
    mock: &MockGateway,
    shards: u32,
    compress: &str,
    vhost: &Vhost,
    redis: &RedisPrefix,
) -> Vec<(&'static str, String)> {
    vec![
        ("DISCORD_TOKEN", TOKEN.to_owned()),
        ("DISCORD_API_BASE", mock.api_base()),
        ("SHARD_COUNT", shards.to_string()),
        ("DISCORD_COMPRESS", compress.to_owned()),
        ("AMQP_URL", vhost.amqp_url()),
        ("REDIS_URL", RedisPrefix::url()),
        ("REDIS_KEY_PREFIX", redis.prefix.clone()),
    ]
}

/// Queue depth and the client's CPU between the 5% and 95% marks, until `expected` messages
/// arrived (or none for 60 s): `(messages, steady rate, whole rate, CPU-s per million)`.
pub async fn measure_client(
    sink: &Sink,
    expected: u64,
    pid: u32,
) -> Result<(u64, f64, f64, Option<f64>)> {
    let (lo, hi) = (expected / 20, expected - expected / 20);
    let (mut cpu_lo, mut cpu_hi) = (None, None);
    let samples = watch_depth(sink, expected, Duration::from_secs(60), |_, n| {
        if n >= lo && cpu_lo.is_none() {
            cpu_lo = Some((n, services::cpu_seconds(pid)));
        }
        if n >= hi && cpu_hi.is_none() {
            cpu_hi = Some((n, services::cpu_seconds(pid)));
        }
    })
    .await?;
    let messages = samples.last().map_or(0, |s| s.1);
    let (steady_rate, whole_rate) = rates(&samples, expected);
    let cpu_per_million = match (cpu_lo, cpu_hi) {
        (Some((n0, c0)), Some((n1, c1))) if n1 > n0 => Some((c1 - c0) / (n1 - n0) as f64 * 1e6),
        _ => None,
    };
    Ok((messages, steady_rate, whole_rate, cpu_per_million))
}

/// mock -> gatehouse -> RabbitMQ; every shard replays the whole fixture (plus READY).
pub async fn through_gatehouse(settings: &GatehouseRun<'_>) -> Result<Run> {
    let vhost = Vhost::create("e2e");
    let redis = RedisPrefix::new("e2e");
    let sink = Sink::declare(&vhost.amqp_url(), "gateway").await?;
    let per_shard = settings.fixture.len() as u64 + 1;
    let expected = per_shard * u64::from(settings.shards);
    let mock = MockGateway::start(mock_config(settings.shards, settings.fixture.clone()))?;
    let load_before = services::load_average();
    let log: PathBuf = settings.log_dir.join(format!(
        "gatehouse-e2e-{}-shards-{}-{}.log",
        settings.shards, settings.profile, settings.client
    ));
    let mut env = gatehouse_env(&mock, settings.shards, settings.compress, &vhost, &redis);
    env.push(("GATEHOUSE_PROFILE", settings.profile.to_owned()));
    env.push(("GATEHOUSE_AMQP_CLIENT", settings.client.to_owned()));
    let gatehouse = Gatehouse::start(settings.binary, &env, &log)?;
    let (messages, steady_rate, whole_rate, cpu_per_million) =
        measure_client(&sink, expected, gatehouse.pid()).await?;
    let load_after = services::load_average();
    drop(gatehouse);
    drop(mock);
    if messages < expected {
        eprintln!(
            "warning: only {messages} of {expected} messages arrived (see {})",
            log.display()
        );
    }
    Ok(Run {
        what: match settings.client {
            "lapin" => format!(
                "gatehouse {}, {} shard(s), {}",
                settings.profile, settings.shards, settings.compress
            ),
            client => format!(
                "gatehouse {} ({client}), {} shard(s), {}",
                settings.profile, settings.shards, settings.compress
            ),
        },
        messages,
        steady_rate,
        whole_rate,
        cpu_per_million,
        load_before,
        load_after,
    })
}

/// mock -> a twilight-dispatch-style pipeline (twilight-gateway + lapin, transient, no
/// confirms; `twilight::run_dispatch_pipeline`, a child process) -> RabbitMQ, one shard, into
/// the same kind of sink as `through_gatehouse`. The compression is the build's
/// (`twilight-zlib`: zlib-stream).
#[cfg(feature = "twilight")]
pub async fn through_twilight_dispatch(fixture: &Fixture) -> Result<Run> {
    let vhost = Vhost::create("e2e-twilight");
    let sink = Sink::declare(&vhost.amqp_url(), "gateway").await?;
    let expected = fixture.len() as u64 + 1;
    let mut config = mock_config(1, fixture.clone());
    config.token = None;
    config.required_shard_count = None;
    let mock = MockGateway::start(config)?;
    let load_before = services::load_average();
    let child = crate::twilight::start_dispatch_pipeline(&mock.ws_url(), &vhost.amqp_url())?;
    let (messages, steady_rate, whole_rate, cpu_per_million) =
        measure_client(&sink, expected, child.pid()).await?;
    let load_after = services::load_average();
    drop(child);
    drop(mock);
    if messages < expected {
        eprintln!("warning: only {messages} of {expected} messages arrived");
    }
    Ok(Run {
        what: format!(
            "twilight-dispatch style, 1 shard, {}",
            crate::twilight::COMPRESSION
        ),
        messages,
        steady_rate,
        whole_rate,
        cpu_per_million,
        load_before,
        load_after,
    })
}

/// The bodies and routing keys a native-profile gateway would publish for one shard's replay:
/// `{"t":..,"s":..,"op":0,"d":..}` with sequences from 2 (READY is 1).
pub fn dispatch_bodies(fixture: &Fixture) -> Vec<(String, Vec<u8>)> {
    fixture
        .events()
        .iter()
        .enumerate()
        .map(|(i, event)| {
            let mut body =
                format!("{{\"t\":\"{}\",\"s\":{},\"op\":0,\"d\":", event.name, i + 2).into_bytes();
            body.extend_from_slice(&event.d);
            body.push(b'}');
            (event.name.to_string(), body)
        })
        .collect()
}

/// The session id the plain publishers put into message ids and `x-session-id`.
pub const SESSION: &str = "0123456789abcdef0123456789abcdef";

/// The native profile's properties for the event with sequence `seq` (one shard of one):
/// persistent, `application/json`, `<session>:<seq>` as message id, the four `x-` headers and
/// the time in seconds.
pub fn lapin_properties(seq: i64) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert("x-shard-id".into(), AMQPValue::LongLongInt(0));
    headers.insert("x-shard-count".into(), AMQPValue::LongLongInt(1));
    headers.insert("x-sequence".into(), AMQPValue::LongLongInt(seq));
    headers.insert("x-session-id".into(), AMQPValue::LongString(SESSION.into()));
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(format!("{SESSION}:{seq}").into())
        .with_timestamp(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
        )
        .with_headers(headers)
}

/// What a publisher's confirms said.
#[derive(Debug, Default)]
pub struct Confirms {
    /// `(time, confirmed so far)` at every confirm handled, starting at `(start, 0)`.
    pub marks: Vec<(Instant, u64)>,
    pub acked: u64,
    pub nacked: u64,
    /// Acked, but returned first (mandatory, no queue bound).
    pub returned: u64,
}

impl Confirms {
    /// Counts one confirm and marks the time.
    pub fn handle(&mut self, confirmation: &lapin::Confirmation) {
        match confirmation {
            lapin::Confirmation::Nack(_) => self.nacked += 1,
            lapin::Confirmation::Ack(Some(_)) => {
                self.acked += 1;
                self.returned += 1;
            }
            lapin::Confirmation::Ack(None) | lapin::Confirmation::NotRequested => self.acked += 1,
        }
        self.marks.push((Instant::now(), self.acked + self.nacked));
    }
}

/// The plain lapin publisher: `bodies` (with their routing keys) to the `gateway` exchange
/// on `channel` (in confirm mode), one `basic_publish` awaited at a time, at most `window`
/// unconfirmed (the oldest confirm is awaited when the window is full).
pub async fn publish_windowed(
    channel: &lapin::Channel,
    bodies: &[(String, Vec<u8>)],
    window: usize,
    options: BasicPublishOptions,
) -> Result<Confirms> {
    let mut outstanding = VecDeque::with_capacity(window);
    let mut confirms = Confirms {
        marks: vec![(Instant::now(), 0)],
        ..Confirms::default()
    };
    for (i, (event, body)) in bodies.iter().enumerate() {
        let properties = lapin_properties(i as i64 + 2);
        if outstanding.len() >= window {
            let confirm: lapin::PublisherConfirm = outstanding.pop_front().expect("non-empty");
            confirms.handle(&confirm.await?);
        }
        let confirm = channel
            .basic_publish(
                "gateway".into(),
                event.as_str().into(),
                options,
                body,
                properties,
            )
            .await?;
        outstanding.push_back(confirm);
    }
    while let Some(confirm) = outstanding.pop_front() {
        confirms.handle(&confirm.await?);
    }
    Ok(confirms)
}

/// A lapin connection to `url` and a channel on it in confirm mode.
pub async fn lapin_confirm_channel(
    url: &str,
    properties: ConnectionProperties,
) -> Result<(Connection, lapin::Channel)> {
    let connection =
        Connection::connect_with_runtime(url, properties, async_rs::Runtime::tokio_current())
            .await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok((connection, channel))
}

/// The broker's ceiling: one lapin connection and confirm channel publishing `bodies` to the
/// `gateway` exchange with the native profile's properties, at most `window` unconfirmed.
pub async fn plain_lapin(bodies: &[(String, Vec<u8>)], window: usize) -> Result<Run> {
    let vhost = Vhost::create("ceiling");
    let sink = Sink::declare(&vhost.amqp_url(), "gateway").await?;
    let (_connection, channel) =
        lapin_confirm_channel(&vhost.amqp_url(), ConnectionProperties::default()).await?;
    let total = bodies.len() as u64;
    let load_before = services::load_average();
    let cpu_started = services::cpu_seconds(std::process::id());
    let started = Instant::now();
    let confirms =
        publish_windowed(&channel, bodies, window, BasicPublishOptions::default()).await?;
    if confirms.nacked > 0 {
        bail!("nack");
    }
    let cpu = services::cpu_seconds(std::process::id()) - cpu_started;
    let load_after = services::load_average();
    let depth = sink.depth().await?;
    if depth != total {
        eprintln!("warning: the sink queue holds {depth} of {total}");
    }
    let (steady_rate, _) = rates(&confirms.marks, total);
    let whole_rate = total as f64 / started.elapsed().as_secs_f64();
    Ok(Run {
        what: format!("plain lapin, window {window}"),
        messages: total,
        steady_rate,
        whole_rate,
        cpu_per_million: Some(cpu / total as f64 * 1e6),
        load_before,
        load_after,
    })
}

/// Cumulative histogram buckets: `(upper bound in seconds, observations at or below it)`.
pub type Buckets = Vec<(f64, u64)>;

/// What `latency_at_rate` read from `gatehouse`'s metrics endpoint.
pub struct LatencyRun {
    /// `gatehouse_publish_latency_seconds`: frame arrival -> broker confirm.
    pub confirm: Buckets,
    /// `gatehouse_publish_handoff_seconds`: frame arrival -> frames written by lapin.
    pub handoff: Buckets,
    pub load_before: String,
    pub load_after: String,
}

/// The cumulative buckets of histogram `name` in a Prometheus text page.
pub fn histogram_buckets(text: &str, name: &str) -> Buckets {
    let prefix = format!("{name}_bucket{{le=\"");
    let mut buckets = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(prefix.as_str()) else {
            continue;
        };
        let Some((bound, count)) = rest.split_once("\"}") else {
            continue;
        };
        let bound = if bound == "+Inf" {
            f64::INFINITY
        } else {
            bound.parse().unwrap_or(f64::NAN)
        };
        buckets.push((bound, count.trim().parse().unwrap_or(0)));
    }
    buckets
}

/// The `q` quantile of cumulative buckets, interpolated linearly inside its bucket (as
/// Prometheus' `histogram_quantile` does), with the bucket's bounds: `(estimate, lower, upper)`
/// in seconds.
pub fn bucket_quantile(buckets: &[(f64, u64)], q: f64) -> Option<(f64, f64, f64)> {
    let total = buckets.last()?.1;
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let (mut lower, mut below) = (0.0, 0u64);
    for &(bound, count) in buckets {
        if count as f64 >= rank {
            if !bound.is_finite() {
                return Some((lower, lower, bound));
            }
            let inside = (count - below) as f64;
            let share = if inside > 0.0 {
                (rank - below as f64) / inside
            } else {
                1.0
            };
            return Some((lower + (bound - lower) * share, lower, bound));
        }
        (lower, below) = (bound, count);
    }
    None
}

/// Added latency at a fixed rate: the mock sends `rate` dispatches per second on one shard,
/// and `gatehouse`'s own histograms (`gatehouse_publish_latency_seconds`: from the frame's
/// arrival to the broker's confirm; `gatehouse_publish_handoff_seconds`: to lapin's hand-off)
/// are read from its metrics endpoint at the end. With `durable` false the sink queue is
/// transient, so the broker confirms without a disk sync.
pub async fn latency_at_rate(
    binary: &Path,
    fixture: &Fixture,
    rate: f64,
    compress: &str,
    durable: bool,
    log_dir: &Path,
) -> Result<LatencyRun> {
    let vhost = Vhost::create("latency");
    let redis = RedisPrefix::new("latency");
    let sink = Sink::declare_with(&vhost.amqp_url(), "gateway", durable).await?;
    let mut config = mock_config(1, fixture.clone());
    config.rate = ReplayRate::PerSecond(rate);
    config.poll_interval = Duration::from_millis(1);
    let expected = fixture.len() as u64 + 1;
    let mock = MockGateway::start(config)?;
    let metrics_address = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
        probe.local_addr()?
    };
    let mut env = gatehouse_env(&mock, 1, compress, &vhost, &redis);
    env.push(("GATEHOUSE_METRICS_ADDRESS", metrics_address.to_string()));
    let load_before = services::load_average();
    let _gatehouse = Gatehouse::start(binary, &env, &log_dir.join("gatehouse-latency.log"))?;
    watch_depth(&sink, expected, Duration::from_secs(30), |_, _| {}).await?;
    let load_after = services::load_average();
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .new_agent();
    let text = agent
        .get(&format!("http://{metrics_address}/metrics"))
        .call()?
        .body_mut()
        .read_to_string()?;
    let confirm = histogram_buckets(&text, "gatehouse_publish_latency_seconds");
    if confirm.is_empty() {
        bail!("no latency histogram in {text}");
    }
    let handoff = histogram_buckets(&text, "gatehouse_publish_handoff_seconds");
    Ok(LatencyRun {
        confirm,
        handoff,
        load_before,
        load_after,
    })
}

/// The broker's own confirm latency at a fixed rate: a plain lapin publisher sends `bodies` at
/// `rate` per second (paced every millisecond) with the native properties and records, for
/// each message, the time from `basic_publish` to its confirm. Returns the sorted latencies.
/// With `transient`, the messages are transient (delivery mode 1) and so is the queue.
pub async fn plain_lapin_latency(
    bodies: &[(String, Vec<u8>)],
    rate: f64,
    transient: bool,
) -> Result<Vec<Duration>> {
    let vhost = Vhost::create("ceiling-latency");
    let _sink = Sink::declare_with(&vhost.amqp_url(), "gateway", !transient).await?;
    let connection = Connection::connect_with_runtime(
        &vhost.amqp_url(),
        ConnectionProperties::default(),
        async_rs::Runtime::tokio_current(),
    )
    .await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, lapin::PublisherConfirm)>();
    let waiter = tokio::spawn(async move {
        let mut latencies = Vec::new();
        while let Some((sent, confirm)) = rx.recv().await {
            let _ = confirm.await;
            latencies.push(sent.elapsed());
        }
        latencies
    });
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut next = 0usize;
    while next < bodies.len() {
        tick.tick().await;
        let due = ((started.elapsed().as_secs_f64() * rate) as usize).min(bodies.len());
        while next < due {
            let (event, body) = &bodies[next];
            let seq = next as i64 + 2;
            let mut headers = FieldTable::default();
            headers.insert("x-shard-id".into(), AMQPValue::LongLongInt(0));
            headers.insert("x-shard-count".into(), AMQPValue::LongLongInt(1));
            headers.insert("x-sequence".into(), AMQPValue::LongLongInt(seq));
            let properties = BasicProperties::default()
                .with_delivery_mode(if transient { 1 } else { 2 })
                .with_content_type("application/json".into())
                .with_message_id(format!("s:{seq}").into())
                .with_timestamp(0)
                .with_headers(headers);
            let sent = Instant::now();
            let confirm = channel
                .basic_publish(
                    "gateway".into(),
                    event.as_str().into(),
                    BasicPublishOptions::default(),
                    body,
                    properties,
                )
                .await?;
            let _ = tx.send((sent, confirm));
            next += 1;
        }
    }
    drop(tx);
    let mut latencies = waiter.await?;
    latencies.sort_unstable();
    Ok(latencies)
}
