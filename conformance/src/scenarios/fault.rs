//! What every `fault-*` scenario shares: a steady **load** of dispatches per shard, each with a
//! unique marker in `d`; a **counter** that plays the profile's worker on durable queues bound to
//! every event the profile publishes and counts the markers that reach them; a sampler of the
//! implementation's **peak RSS**; the **figures** (sent, delivered, missing, late, duplicated,
//! peak RSS) with the verdict "nothing missing"; the **duration scale**; and the checks several
//! fault scenarios make of the mock's recording (a shard that stayed connected and kept
//! heartbeating, a RESUME after a fault).
//!
//! Owns the zero-loss judgement, and telling late from lost: events still missing after the
//! normal wait ([`drain`]) are counted for as long as they may still be on their way (the
//! workers still receive, or a client has not read its session to the end yet; at most
//! [`LATE_GRACE`]); those that come then are *late* (reported, not a failure), those that never
//! come are *missing* (a failure). The faults themselves live in the `fault_*` scenario files;
//! the proxy in [`crate::proxy`], private RabbitMQ/Redis in [`crate::private_services`].

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties, ExchangeKind};
use serde::Serialize;
use tokio::sync::watch;

use crate::body::Value;
use crate::broker::ExchangeType;
use crate::gateway::{self, Control, IdentifyOutcome, Recording, ResumeOutcome, ViolationKind};
use crate::profiles::{BodyEncoding, Profile, Subscription};
use crate::scenario::{Context, Failure};
use crate::scenarios::commands::guild_on_shard;
use crate::scenarios::start_and_wait_ready;

/// The environment variable that scales every fault duration (load, outage, stall): `1` (the
/// default) runs the full scenarios of issue 9 (a 10 s cut, a 60 s stall...), `0.25` a quarter.
pub const SCALE_ENV: &str = "CONFORMANCE_FAULT_SCALE";

/// If set, every fault scenario appends its figures to this file as one JSON line.
pub const FIGURES_ENV: &str = "CONFORMANCE_FAULT_FIGURES";

/// The event the load is made of (a real event name, so no bridge has a reason to drop it).
pub const LOAD_EVENT: &str = "MESSAGE_CREATE";

/// Load dispatches per second and shard at full scale. Shortened runs send faster (see
/// [`load_rate`]), so a fault sees as many events as in the full run.
pub const LOAD_RATE: f64 = 50.0;

/// The most dispatches per second and shard a shortened run sends.
pub const MAX_LOAD_RATE: f64 = 400.0;

/// Dispatches per second and shard at the current scale: [`LOAD_RATE`] divided by the scale
/// (durations shrink, the number of events during a fault does not), at most [`MAX_LOAD_RATE`].
pub fn load_rate() -> f64 {
    (LOAD_RATE / scale().min(1.0)).min(MAX_LOAD_RATE)
}

/// The shards the fault scenarios run (two, so "every shard" means more than one).
pub const SHARDS: u32 = 2;

/// How long, after the load stops, every sent event has to reach the workers at full scale
/// (shortened runs: [`drain`]).
pub const DRAIN: Duration = Duration::from_secs(90);

/// [`DRAIN`] at the current scale, at least 45 s (ample for a few thousand events that a
/// healed broker link has to publish again).
pub fn drain() -> Duration {
    DRAIN.mul_f64(scale().min(1.0)).max(Duration::from_secs(45))
}

/// The longest the counting goes on after [`drain`] while events are still missing and may be
/// on their way (an overloaded machine: the processes, the broker or the workers behind).
/// Independent of the scale: how far behind a busy machine is does not shrink with it.
pub const LATE_GRACE: Duration = Duration::from_secs(120);

/// After [`drain`], the missing events count as lost (the counting stops) once the workers
/// received nothing for this long while every session's client had acknowledged its
/// session's latest dispatch (it read everything the mock has for it; a session waiting for
/// a RESUME has not: [`gateway::sessions_behind`]). Longer than a publication's back-off
/// after a nack or a failed link, and several heartbeat intervals.
pub const QUIET: Duration = Duration::from_secs(15);

/// The duration scale from [`SCALE_ENV`] (default 1, clamped to 0.05 ..= 10).
pub fn scale() -> f64 {
    std::env::var(SCALE_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v > 0.0)
        .map_or(1.0, |v| v.clamp(0.05, 10.0))
}

/// `full` at the current [`scale`] (at least one second).
pub fn scaled(full: Duration) -> Duration {
    full.mul_f64(scale()).max(Duration::from_secs(1))
}

/// A scenario budget: `fixed` (start-up, drain) plus `faulty` at the current scale, plus
/// [`LATE_GRACE`] (the counting of late events, only when some are missing after the drain).
pub fn budget(fixed: Duration, faulty: Duration) -> Duration {
    fixed + faulty.mul_f64(scale()) + LATE_GRACE
}

// ------------------------------------------------------------------------------------ load

/// The steady load: [`load_rate`] dispatches per second on each shard, injected into the shard's
/// current session (so a disconnected shard gets them on RESUME, as from Discord), each with a
/// unique `nonce`.
pub struct Load {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
    sent: Arc<Mutex<Vec<String>>>,
    refused: Arc<AtomicU64>,
    /// When each tick was sent (tick `n` at index `n - 1`), to line missing events up with
    /// the implementation's logs.
    ticks: Arc<Mutex<Vec<std::time::SystemTime>>>,
}

impl Load {
    /// Starts injecting on `shards`; markers start with `prefix`.
    pub fn start(control: Control, shards: Vec<u32>, prefix: String) -> Self {
        // The bot's shards: at least the loaded ones (guild ids route to them).
        let count = shards.iter().max().map_or(1, |max| max + 1);
        Self::spawn(load_rate(), move |n| {
            shards
                .iter()
                .map(|&shard| {
                    let marker = format!("{prefix}{shard}:{n}");
                    let guild = guild_on_shard(shard, count.max(SHARDS));
                    let d = load_d(guild, u64::from(shard), n, &marker);
                    let sent = control.shard(shard).inject_dispatch(LOAD_EVENT, d).is_ok();
                    (marker, sent)
                })
                .collect()
        })
    }

    /// Starts injecting into guilds `0 << 22 ..= (guilds - 1) << 22` as Discord routes them:
    /// to every session that owns the guild, whatever its shard count (a re-shard runs two
    /// shard sets at once). Markers start with `prefix`.
    ///
    /// Each guild gets [`LOAD_RATE`] at every scale, not [`load_rate`]: what this load meets
    /// (a re-shard: identify, warm-up, switch, retiring) takes as long in a shortened run as in
    /// a full one, so sending faster would not keep the number of events per fault, only
    /// multiply it (16 guilds at a quarter's 200/s were 3,200 events/s, 320,000 per run, with
    /// both sets publishing: a debug build's suite and three processes on two cores fell
    /// minutes behind, and the run measured the machine, not the re-shard).
    pub fn by_guild(control: Control, guilds: u64, prefix: String) -> Self {
        Self::spawn(LOAD_RATE, move |n| {
            (0..guilds)
                .map(|g| {
                    let marker = format!("{prefix}g{g}:{n}");
                    let guild = (g << 22) | 1;
                    let d = load_d(guild, g, n, &marker);
                    let sent = control.inject_guild_dispatch(guild, LOAD_EVENT, d).is_ok();
                    (marker, sent)
                })
                .collect()
        })
    }

    /// Runs `inject(n)` for tick `n`, `rate` ticks per second: the markers it sent, and whether
    /// the mock took each.
    fn spawn(
        rate: f64,
        mut inject: impl FnMut(u64) -> Vec<(String, bool)> + Send + 'static,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(AtomicU64::new(0));
        let ticks = Arc::new(Mutex::new(Vec::new()));
        let task = {
            let (stop, sent, refused, ticks) =
                (stop.clone(), sent.clone(), refused.clone(), ticks.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut n: u64 = 0;
                while !stop.load(Ordering::SeqCst) {
                    tick.tick().await;
                    n += 1;
                    ticks
                        .lock()
                        .expect("load lock")
                        .push(std::time::SystemTime::now());
                    for (marker, ok) in inject(n) {
                        if ok {
                            sent.lock().expect("load lock").push(marker);
                        } else {
                            refused.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            })
        };
        Self {
            stop,
            task,
            sent,
            refused,
            ticks,
        }
    }

    /// How many events were injected so far.
    pub fn sent_count(&self) -> usize {
        self.sent.lock().expect("load lock").len()
    }

    /// Stops the load; returns every marker sent and how many injections the mock refused (no
    /// live session: the shard's session was invalidated).
    pub async fn stop(self) -> (Vec<String>, u64) {
        self.stop_with_ticks().await.0
    }

    /// [`Load::stop`], with when each tick was sent (tick `n` at index `n - 1`).
    pub async fn stop_with_ticks(self) -> ((Vec<String>, u64), Vec<std::time::SystemTime>) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.task.await;
        let sent = std::mem::take(&mut *self.sent.lock().expect("load lock"));
        let ticks = std::mem::take(&mut *self.ticks.lock().expect("load lock"));
        ((sent, self.refused.load(Ordering::SeqCst)), ticks)
    }
}

fn load_d(guild: u64, salt: u64, n: u64, marker: &str) -> Vec<u8> {
    format!(
        r#"{{"id":"{id}","channel_id":"{channel}","guild_id":"{guild}","author":{{"id":"80351110224678912","username":"load","discriminator":"0"}},"content":"fault load {n}","nonce":"{marker}","tts":false,"mentions":[],"attachments":[],"embeds":[]}}"#,
        id = 1_100_000_000_000_000_000u64 + n * 64 + salt,
        channel = guild + 1,
    )
    .into_bytes()
}

/// The load marker in a body as the profile's worker decodes it (`d`, the dispatch, a
/// twilight-dispatch envelope or a Cordis `{type, data}`), if it starts with `prefix`.
pub fn marker_in(body: &[u8], encoding: BodyEncoding, prefix: &str) -> Option<String> {
    let value = match body.first() {
        Some(b'{') => Value::from_json(body).ok()?,
        _ => match encoding {
            BodyEncoding::Msgpack => Value::from_msgpack(body).ok()?,
            BodyEncoding::Json => return None,
        },
    };
    let nonce = [
        value.get("nonce"),
        value.get("d").and_then(|d| d.get("nonce")),
        value.get("data").and_then(|d| d.get("nonce")),
    ]
    .into_iter()
    .flatten()
    .find_map(Value::as_str)?;
    nonce.starts_with(prefix).then(|| nonce.to_owned())
}

// --------------------------------------------------------------------------------- counter

/// The workers: durable queues bound to every event the profile publishes, consumed (with a
/// reconnect after any broker trouble) and counted by load marker.
pub struct Counter {
    state: Arc<Mutex<CounterState>>,
    paused: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct CounterState {
    seen: HashMap<String, u32>,
    /// Load events received, duplicates included.
    deliveries: u64,
    /// When a load event arrived for the first time, the latest.
    last_new_at: Option<Instant>,
    /// Consuming on every queue right now.
    consuming: bool,
    /// Consumer sessions started (1 after the first successful declare).
    sessions: u32,
    last_error: Option<String>,
}

/// The durable queue of the profiles whose workers bind one queue (wildcard or per event).
const COUNTER_QUEUE: &str = "conformance.fault.events";

impl Counter {
    /// Starts consuming on `amqp_url` (the worker's own connection, never through a fault).
    pub fn start(
        amqp_url: String,
        profile: Profile,
        encoding: BodyEncoding,
        events: Vec<String>,
        prefix: String,
    ) -> Self {
        let state = Arc::new(Mutex::new(CounterState::default()));
        let (paused, paused_rx) = watch::channel(false);
        let task = {
            let state = state.clone();
            tokio::spawn(async move {
                let mut paused_rx = paused_rx;
                loop {
                    if *paused_rx.borrow_and_update() {
                        if paused_rx.changed().await.is_err() {
                            return;
                        }
                        continue;
                    }
                    let result = consume(
                        &amqp_url,
                        profile,
                        encoding,
                        &events,
                        &prefix,
                        &state,
                        &mut paused_rx,
                    )
                    .await;
                    let failed = {
                        let mut s = state.lock().expect("counter lock");
                        s.consuming = false;
                        let failed = result.is_err();
                        if let Err(e) = result {
                            s.last_error = Some(e);
                        }
                        failed
                    };
                    if failed {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            })
        };
        Self {
            state,
            paused,
            task,
        }
    }

    /// Waits until the queues are declared, bound and consumed.
    pub async fn wait_consuming(&self, timeout: Duration) -> Result<(), Failure> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let s = self.state.lock().expect("counter lock");
                if s.consuming {
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    return Err(Failure::error(format!(
                        "the suite's workers could not consume within {timeout:?}: {}",
                        s.last_error.as_deref().unwrap_or("no error reported")
                    )));
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Closes the workers' connection (messages stay in the durable queues) until
    /// [`Counter::resume`].
    pub fn pause(&self) {
        let _ = self.paused.send(true);
    }

    /// Reconnects, declares and binds again, and consumes.
    pub fn resume(&self) {
        let _ = self.paused.send(false);
    }

    /// How many times each marker arrived.
    fn seen(&self) -> HashMap<String, u32> {
        self.state.lock().expect("counter lock").seen.clone()
    }

    fn has_all(&self, sent: &[String]) -> bool {
        let s = self.state.lock().expect("counter lock");
        // Markers are unique: fewer seen than sent cannot hold them all. The look-up of every
        // marker is left for when it may succeed (called every 200 ms while events are late,
        // with hundreds of thousands sent, it took most of the suite's CPU).
        s.seen.len() >= sent.len() && sent.iter().all(|m| s.seen.contains_key(m))
    }

    /// Load events received so far, duplicates included, and when the latest new one came.
    fn progress(&self) -> (u64, Option<Instant>) {
        let s = self.state.lock().expect("counter lock");
        (s.deliveries, s.last_new_at)
    }

    fn last_error(&self) -> Option<String> {
        self.state.lock().expect("counter lock").last_error.clone()
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lapin_kind(kind: ExchangeType) -> ExchangeKind {
    match kind {
        ExchangeType::Direct => ExchangeKind::Direct,
        ExchangeType::Topic => ExchangeKind::Topic,
        ExchangeType::Fanout => ExchangeKind::Fanout,
        ExchangeType::Headers => ExchangeKind::Headers,
    }
}

/// One consumer session: connect, declare what the profile's worker declares (durable queues),
/// consume until the connection fails (`Err`) or the counter is paused (`Ok`).
async fn consume(
    amqp_url: &str,
    profile: Profile,
    encoding: BodyEncoding,
    events: &[String],
    prefix: &str,
    state: &Mutex<CounterState>,
    paused: &mut watch::Receiver<bool>,
) -> Result<(), String> {
    let e = |what: &str| {
        let what = what.to_owned();
        move |err: lapin::Error| format!("{what}: {err}")
    };
    let conn = tokio::time::timeout(
        Duration::from_secs(10),
        Connection::connect_with_runtime(
            amqp_url,
            ConnectionProperties::default(),
            async_rs::Runtime::tokio_current(),
        ),
    )
    .await
    .map_err(|_| "connecting: timed out".to_owned())?
    .map_err(e("connecting"))?;
    let channel = conn
        .create_channel()
        .await
        .map_err(e("opening a channel"))?;
    channel
        .basic_qos(500, BasicQosOptions::default())
        .await
        .map_err(e("qos"))?;
    let spec = profile.events_exchange();
    channel
        .exchange_declare(
            spec.name.into(),
            lapin_kind(spec.kind),
            ExchangeDeclareOptions {
                durable: spec.durable,
                auto_delete: spec.auto_delete,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(e("declaring the events exchange"))?;
    let mut bindings: Vec<(String, String)> = Vec::new();
    match profile.subscription() {
        Subscription::Wildcard => bindings.push((COUNTER_QUEUE.into(), "#".into())),
        Subscription::OwnQueueBoundPerEvent => {
            for event in events {
                bindings.push((COUNTER_QUEUE.into(), event.clone()));
            }
        }
        Subscription::NamedQueuePerEvent => {
            for event in events {
                bindings.push((format!("{}:{event}", spec.name), event.clone()));
            }
        }
    }
    let mut queues: Vec<String> = Vec::new();
    for (queue, key) in &bindings {
        if !queues.contains(queue) {
            channel
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions::durable(),
                    FieldTable::default(),
                )
                .await
                .map_err(e("declaring a queue"))?;
            queues.push(queue.clone());
        }
        channel
            .queue_bind(
                queue.as_str().into(),
                spec.name.into(),
                key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(e("binding a queue"))?;
    }
    let mut consumers = Vec::new();
    for queue in &queues {
        consumers.push(
            channel
                .basic_consume(
                    queue.as_str().into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(e("consuming"))?,
        );
    }
    {
        let mut s = state.lock().expect("counter lock");
        s.consuming = true;
        s.sessions += 1;
    }
    let mut merged = futures_util::stream::select_all(consumers);
    loop {
        tokio::select! {
            next = merged.next() => match next {
                Some(Ok(delivery)) => {
                    if let Some(marker) = marker_in(&delivery.data, encoding, prefix) {
                        let mut guard = state.lock().expect("counter lock");
                        let s = &mut *guard;
                        s.deliveries += 1;
                        let count = s.seen.entry(marker).or_default();
                        *count += 1;
                        if *count == 1 {
                            s.last_new_at = Some(Instant::now());
                        }
                    }
                    delivery
                        .ack(BasicAckOptions::default())
                        .await
                        .map_err(e("acknowledging"))?;
                }
                Some(Err(err)) => return Err(format!("consuming: {err}")),
                None => return Err("the consumer ended".into()),
            },
            changed = paused.changed() => {
                if changed.is_err() || *paused.borrow() {
                    let _ = conn.close(200, "".into()).await;
                    return Ok(());
                }
            }
        }
    }
}

// ------------------------------------------------------------------------------ peak RSS

/// Samples the peak resident memory (`VmHWM`) of every process of the implementation (found by
/// its unique `REDIS_KEY_PREFIX` in `/proc/<pid>/environ`, so the `sh -c` wrapper, its child
/// and any restart are all covered) twice a second.
pub struct RssSampler {
    peak_kib: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    /// Starts sampling processes whose environment holds `needle` (`NAME=value`).
    pub fn start(needle: String) -> Self {
        let peak_kib = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (peak, stop) = (peak_kib.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut needle = needle.into_bytes();
                needle.push(0);
                while !stop.load(Ordering::SeqCst) {
                    for kib in sample(&needle) {
                        peak.fetch_max(kib, Ordering::SeqCst);
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
            })
        };
        Self {
            peak_kib,
            stop,
            thread: Some(thread),
        }
    }

    /// The highest `VmHWM` seen, in KiB (0 if no process was found).
    pub fn peak_kib(&self) -> u64 {
        self.peak_kib.load(Ordering::SeqCst)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `VmHWM` in KiB of every process whose environment contains `needle` (with its NUL).
fn sample(needle: &[u8]) -> Vec<u64> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if !environ.windows(needle.len()).any(|w| w == needle) {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        if let Some(kib) = status.lines().find_map(|l| {
            l.strip_prefix("VmHWM:")
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        }) {
            out.push(kib);
        }
    }
    out
}

// ------------------------------------------------------------------------------ the run

/// The figures of one fault scenario run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Figures {
    /// The scenario.
    pub scenario: String,
    /// The profile.
    pub profile: String,
    /// The duration scale in force.
    pub scale: f64,
    /// Load events the mock sent (injected into a live session).
    pub sent: usize,
    /// Distinct load events that reached a worker queue.
    pub delivered: usize,
    /// Sent and never delivered (after the late ones were waited for).
    pub missing: usize,
    /// Delivered, but only after the normal wait ([`drain`]): the machine was behind.
    pub late: usize,
    /// How long after the load stopped the last load event arrived for the first time
    /// (seconds; negative: before it stopped).
    pub last_arrival_s: f64,
    /// Extra deliveries of events already delivered.
    pub duplicated: usize,
    /// Peak RSS of the implementation's processes, KiB.
    pub peak_rss_kib: u64,
    /// Injections the mock refused (the shard's session had been invalidated).
    pub refused: u64,
    /// Whether the scenario passed.
    pub passed: bool,
    /// Why not.
    pub problems: Vec<String>,
}

impl Figures {
    /// One line for logs and failure messages.
    pub fn summary(&self) -> String {
        let late = if self.late > 0 {
            format!(", late {}", self.late)
        } else {
            String::new()
        };
        format!(
            "sent {}, delivered {}, missing {}{late}, duplicated {}, peak RSS {:.1} MiB, last arrival {:+.1} s after the load",
            self.sent,
            self.delivered,
            self.missing,
            self.duplicated,
            self.peak_rss_kib as f64 / 1024.0,
            self.last_arrival_s
        )
    }
}

/// A fault scenario in progress: the workers, the load and the memory sampler.
pub struct FaultRun {
    /// The load (until [`FaultRun::finish`]).
    pub load: Option<Load>,
    /// The workers.
    pub counter: Counter,
    rss: RssSampler,
    /// Problems noticed during the fault (reported with the figures).
    pub problems: Vec<String>,
}

/// Every event the profile publishes in these scenarios: READY, RESUMED, the fixture's events
/// and the load's.
pub fn published_events(ctx: &Context) -> Vec<String> {
    let mut events: Vec<String> = vec!["READY".into(), "RESUMED".into(), LOAD_EVENT.into()];
    for e in ctx.gateway.config().fixture.events() {
        if !events.iter().any(|n| **n == *e.name) {
            events.push(e.name.to_string());
        }
    }
    events
}

/// The marker prefix of this scenario run (unique: the run's Redis key prefix is).
pub fn marker_prefix(ctx: &Context) -> String {
    format!("load:{}", ctx.env.redis_key_prefix)
}

impl FaultRun {
    /// Starts the workers on `worker_amqp_url` (waiting until they consume), starts the
    /// implementation, waits for READY on every shard, and starts the load and the sampler.
    pub async fn begin(ctx: &mut Context, worker_amqp_url: &str) -> Result<Self, Failure> {
        let counter = Self::workers(ctx, worker_amqp_url).await?;
        let rss = Self::sampler(ctx);
        start_and_wait_ready(ctx).await?;
        Ok(Self::with(ctx, counter, rss))
    }

    /// The workers alone (for scenarios that start the implementation themselves).
    pub async fn workers(ctx: &Context, worker_amqp_url: &str) -> Result<Counter, Failure> {
        let counter = Counter::start(
            worker_amqp_url.to_owned(),
            ctx.profile,
            ctx.body_encoding,
            published_events(ctx),
            marker_prefix(ctx),
        );
        counter.wait_consuming(Duration::from_secs(30)).await?;
        Ok(counter)
    }

    /// The memory sampler of this scenario's implementation.
    pub fn sampler(ctx: &Context) -> RssSampler {
        RssSampler::start(format!(
            "{}={}",
            crate::contract::REDIS_KEY_PREFIX,
            ctx.env.redis_key_prefix
        ))
    }

    /// Starts the load, once the implementation is up.
    pub fn with(ctx: &Context, counter: Counter, rss: RssSampler) -> Self {
        let load = Load::start(
            ctx.gateway.control(),
            ctx.setup.shard_ids.clone(),
            marker_prefix(ctx),
        );
        Self::with_load(counter, rss, load)
    }

    /// The run with a load of the caller's.
    pub fn with_load(counter: Counter, rss: RssSampler, load: Load) -> Self {
        Self {
            load: Some(load),
            counter,
            rss,
            problems: Vec::new(),
        }
    }

    /// Records a problem (the scenario goes on, to report its figures).
    pub fn problem(&mut self, problem: impl Into<String>) {
        self.problems.push(problem.into());
    }

    /// Records `result`'s failure as a problem.
    pub fn note(&mut self, result: Result<(), Failure>) {
        if let Err(f) = result {
            let exited = |p: &String| p.contains("exited");
            // An exit is reported once, however many waits it ended.
            if !(exited(&f.message) && self.problems.iter().any(exited)) {
                self.problems.push(f.message);
            }
        }
    }

    /// Stops the load, waits (at most [`drain`]) until every sent event reached the workers,
    /// then, if some are missing, for as long as they may still come (see [`LATE_GRACE`]),
    /// then a little longer for duplicates, and judges: pass only with nothing missing and no
    /// problem (late events are reported, not a failure). The figures go to stderr and, with
    /// [`FIGURES_ENV`], to a JSON-lines file.
    pub async fn finish(mut self, ctx: &mut Context) -> Result<Figures, Failure> {
        let ((sent, refused), ticks) = match self.load.take() {
            Some(load) => load.stop_with_ticks().await,
            None => ((Vec::new(), 0), Vec::new()),
        };
        let stopped = Instant::now();
        let deadline = stopped + drain();
        let mut exited = false;
        while Instant::now() < deadline && !self.counter.has_all(&sent) {
            if !ctx.is_running() {
                // Nothing more will come; give in-flight messages a moment.
                tokio::time::sleep(Duration::from_secs(3)).await;
                exited = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let on_time = self.counter.seen();
        let counted_on = if exited || sent.iter().all(|m| on_time.contains_key(m)) {
            None
        } else {
            Some(self.wait_for_late(ctx, &sent).await)
        };
        tokio::time::sleep(Duration::from_secs(2)).await;
        let seen = self.counter.seen();
        let missing: Vec<&String> = sent.iter().filter(|m| !seen.contains_key(*m)).collect();
        let delivered = sent.len() - missing.len();
        let late = sent
            .iter()
            .filter(|m| seen.contains_key(*m) && !on_time.contains_key(*m))
            .count();
        let last_arrival_s = self.counter.progress().1.map_or(0.0, |at| {
            if at >= stopped {
                (at - stopped).as_secs_f64()
            } else {
                -(stopped - at).as_secs_f64()
            }
        });
        let duplicated: usize = seen.values().map(|n| (*n as usize).saturating_sub(1)).sum();
        if sent.is_empty() {
            self.problems.push("the mock sent no load events".into());
        }
        if let Err(f) = ctx.check_running()
            && !self.problems.iter().any(|p| p.contains("exited"))
        {
            self.problems.push(f.message);
        }
        let mut unique: Vec<String> = Vec::new();
        for p in self.problems.drain(..) {
            if !unique.contains(&p) {
                unique.push(p);
            }
        }
        self.problems = unique;
        let mut figures = Figures {
            scenario: ctx.env.scenario.clone(),
            profile: ctx.profile.name().to_owned(),
            scale: scale(),
            sent: sent.len(),
            delivered,
            missing: missing.len(),
            late,
            last_arrival_s,
            duplicated,
            peak_rss_kib: self.rss.peak_kib(),
            refused,
            passed: false,
            problems: Vec::new(),
        };
        if !missing.is_empty() {
            let first: Vec<&str> = missing.iter().take(5).map(|m| short(m)).collect();
            let mut text = format!(
                "{} of {} events never reached a worker queue (first: {})",
                missing.len(),
                sent.len(),
                first.join(", ")
            );
            if let Some(counted_on) = &counted_on {
                text.push_str(&format!(
                    "; after the normal wait of {:.0?}, {counted_on}",
                    drain()
                ));
            }
            if let Some(e) = self.counter.last_error() {
                text.push_str(&format!("; the workers' last broker error: {e}"));
            }
            let groups = missing_by_source(&missing, &ticks);
            eprintln!("missing events by source: {groups}");
            text.push_str(&format!("; by source: {groups}"));
            self.problems.insert(0, text);
        }
        if late > 0 {
            eprintln!(
                "{late} events arrived late (after the normal wait of {:.0?}): {}",
                drain(),
                counted_on.as_deref().unwrap_or("")
            );
        }
        if refused > 0 {
            self.problems.push(format!(
                "{refused} load events could not be sent: the shard's session had been invalidated"
            ));
        }
        figures.passed = self.problems.is_empty();
        figures.problems = self.problems.clone();
        report(&figures);
        if figures.passed {
            Ok(figures)
        } else {
            Err(Failure::fail(format!(
                "{} ({})",
                self.problems.join("; "),
                figures.summary()
            )))
        }
    }

    /// After the normal wait, with events still missing: counts on while they may still come
    /// (the workers received something within [`QUIET`], or a session's client has not
    /// acknowledged its session's latest dispatch yet: [`gateway::sessions_behind`]), at most
    /// [`LATE_GRACE`]. Says how it ended, for the report: every event came (they were late),
    /// or the counting stopped (what is still missing is lost, or the machine was behind by
    /// more than the grace).
    async fn wait_for_late(&self, ctx: &mut Context, sent: &[String]) -> String {
        let started = Instant::now();
        let control = ctx.gateway.control();
        let recorder = ctx.gateway.recorder();
        let mut deliveries = self.counter.progress().0;
        let mut quiet_since = started;
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = Instant::now();
            let more = (now - started).as_secs_f64();
            if self.counter.has_all(sent) {
                return format!("every event arrived within {more:.1} s more");
            }
            if !ctx.is_running() {
                tokio::time::sleep(Duration::from_secs(3)).await;
                return format!("the implementation exited {more:.1} s later");
            }
            let received = self.counter.progress().0;
            let sessions = control.sessions();
            let behind = recorder.read(|r| gateway::sessions_behind(&sessions, r));
            if received != deliveries || !behind.is_empty() {
                deliveries = received;
                quiet_since = now;
            }
            if now - quiet_since >= QUIET {
                return format!(
                    "counted {more:.0} s more, until the workers had received nothing for {QUIET:.0?} while every session's client had read it to the end: lost"
                );
            }
            if now - started >= LATE_GRACE {
                let still = if behind.is_empty() {
                    "the workers were still receiving".to_owned()
                } else {
                    format!("clients were still behind ({})", behind.join(", "))
                };
                return format!(
                    "counted {LATE_GRACE:.0?} more and gave up while {still}: late or lost"
                );
            }
        }
    }
}

/// The missing markers grouped by source (the load's shard or `g<guild>`): how many, and
/// the first and last tick with its wall-clock time (UTC), e.g.
/// `g2 x12 ticks 40 (13:02:01.250) ..= 51 (13:02:04.000)`.
fn missing_by_source(missing: &[&String], ticks: &[std::time::SystemTime]) -> String {
    let mut groups: BTreeMap<String, (usize, u64, u64)> = BTreeMap::new();
    for marker in missing {
        let Some((head, n)) = short(marker).split_once(':') else {
            continue;
        };
        let Ok(n) = n.parse::<u64>() else { continue };
        let entry = groups.entry(head.to_owned()).or_insert((0, n, n));
        entry.0 += 1;
        entry.1 = entry.1.min(n);
        entry.2 = entry.2.max(n);
    }
    let at = |n: u64| {
        let Some(t) = ticks.get((n as usize).wrapping_sub(1)) else {
            return "?".to_owned();
        };
        let ms = t
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let day = ms % 86_400_000;
        format!(
            "{:02}:{:02}:{:02}.{:03}",
            day / 3_600_000,
            day / 60_000 % 60,
            day / 1000 % 60,
            day % 1000
        )
    };
    groups
        .iter()
        .map(|(head, (count, first, last))| {
            format!(
                "{head} x{count} ticks {first} ({}) ..= {last} ({})",
                at(*first),
                at(*last)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `<shard>:<n>` of a marker.
fn short(marker: &str) -> &str {
    let mut parts = marker.rsplitn(3, ':');
    let _ = parts.next();
    let _ = parts.next();
    parts
        .next()
        .map_or(marker, |head| &marker[head.len() + 1..])
}

fn report(figures: &Figures) {
    eprintln!(
        "  figures {} [{}] scale {}: {}{}",
        figures.scenario,
        figures.profile,
        figures.scale,
        figures.summary(),
        if figures.passed { "" } else { " (FAILED)" }
    );
    if let Ok(path) = std::env::var(FIGURES_ENV)
        && !path.is_empty()
        && let Ok(line) = serde_json::to_string(figures)
    {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
        {
            let _ = writeln!(f, "{line}");
        }
    }
}

// ------------------------------------------------------------------- recording checks

/// The live connection of each shard now.
pub fn live_connections(rec: &Recording, shards: &[u32]) -> Vec<(u32, Option<u64>)> {
    shards
        .iter()
        .map(|&s| (s, rec.live_connection(s).map(|c| c.id.0)))
        .collect()
}

/// Checks that between `from` and `to` every shard kept the connection it had at `from`
/// (`before`), never closed it, opened no other, and heartbeated on it at `interval` (no gap
/// longer than the mock's lateness limit, no heartbeat violation).
pub fn stayed_connected(
    rec: &Recording,
    before: &[(u32, Option<u64>)],
    from: Instant,
    to: Instant,
    interval: Duration,
) -> Vec<String> {
    let mut problems = Vec::new();
    let allowed = interval + gateway::late_slack(interval);
    for &(shard, conn) in before {
        let Some(conn) = conn else {
            problems.push(format!(
                "shard {shard} had no live connection when the fault began"
            ));
            continue;
        };
        let Some(record) = rec.connections.iter().find(|c| c.id.0 == conn) else {
            continue;
        };
        if let Some(close) = &record.close
            && close.at <= to
        {
            problems.push(format!(
                "shard {shard}: its gateway connection ended during the fault ({:?}, {:.1} s in)",
                close.kind,
                close.at.saturating_duration_since(from).as_secs_f64()
            ));
            continue;
        }
        let others = rec
            .shard_connections(shard)
            .filter(|c| c.id.0 != conn && c.opened_at > from && c.opened_at <= to)
            .count();
        if others > 0 {
            problems.push(format!(
                "shard {shard}: {others} new gateway connection(s) during the fault"
            ));
        }
        let mut last = from;
        let mut worst = Duration::ZERO;
        for hb in record
            .heartbeats
            .iter()
            .filter(|h| h.at > from && h.at <= to)
        {
            worst = worst.max(hb.at - last);
            last = hb.at;
        }
        worst = worst.max(to.saturating_duration_since(last));
        if worst > allowed {
            problems.push(format!(
                "shard {shard}: no heartbeat for {:.1} s during the fault (interval {:.1} s)",
                worst.as_secs_f64(),
                interval.as_secs_f64()
            ));
        }
    }
    let late = rec
        .violations
        .iter()
        .filter(|v| v.at > from && v.at <= to)
        .filter(|v| {
            matches!(
                v.kind,
                ViolationKind::HeartbeatLate { .. } | ViolationKind::HeartbeatTimeout
            )
        })
        .count();
    if late > 0 {
        problems.push(format!(
            "{late} heartbeat violation(s) (late or missing) during the fault"
        ));
    }
    problems
}

/// Waits until `shard` RESUMEd successfully after `at`; a new session (IDENTIFY) for the shard
/// first is a problem (Discord's replay of the missed events would be lost).
pub async fn expect_resume(
    ctx: &mut Context,
    shard: u32,
    at: Instant,
    why: &str,
    timeout: Duration,
) -> Result<(), Failure> {
    let recorder = ctx.gateway.recorder();
    let outcome = ctx
        .wait_for(
            &format!("shard {shard} to RESUME after {why}"),
            timeout,
            |_| recorder.read(|r| first_reconnect(r, shard, at)),
        )
        .await?;
    match outcome {
        Reconnect::Resumed => Ok(()),
        Reconnect::Identified => Err(Failure::fail(format!(
            "after {why} shard {shard} started a new session (IDENTIFY) instead of resuming: Discord's replay of the missed events is lost"
        ))),
        Reconnect::Refused(o) => Err(Failure::fail(format!(
            "after {why} shard {shard}'s RESUME was refused: {o:?}"
        ))),
    }
}

enum Reconnect {
    Resumed,
    Identified,
    Refused(ResumeOutcome),
}

fn first_reconnect(rec: &Recording, shard: u32, at: Instant) -> Option<Reconnect> {
    let sessions: Vec<&str> = rec
        .identifies
        .iter()
        .filter(|i| i.shard.is_some_and(|s| s[0] == shard))
        .filter_map(|i| match &i.outcome {
            IdentifyOutcome::Ready { session_id } => Some(session_id.as_str()),
            _ => None,
        })
        .collect();
    let identify = rec
        .identifies
        .iter()
        .find(|i| i.at > at && i.shard.is_some_and(|s| s[0] == shard));
    let resume = rec
        .resumes
        .iter()
        .find(|r| r.at > at && sessions.contains(&r.session_id.as_str()));
    match (identify, resume) {
        (Some(i), Some(r)) if i.at < r.at => Some(Reconnect::Identified),
        (Some(_), None) => Some(Reconnect::Identified),
        (_, Some(r)) => Some(match &r.outcome {
            ResumeOutcome::Resumed { .. } => Reconnect::Resumed,
            other => Reconnect::Refused(other.clone()),
        }),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_found_in_every_profile_body() {
        let d = load_d(guild_on_shard(1, SHARDS), 1, 7, "load:p:1:7");
        let frame = format!(
            r#"{{"t":"MESSAGE_CREATE","s":9,"op":0,"d":{}}}"#,
            String::from_utf8_lossy(&d)
        );
        let d_json: serde_json::Value = serde_json::from_slice(&d).unwrap();
        let cordis = serde_json::json!({"type": "MESSAGE_CREATE", "data": d_json});
        let bodies = [
            (frame.into_bytes(), BodyEncoding::Json),
            (d.clone(), BodyEncoding::Json),
            (crate::body::json_to_msgpack(&d_json), BodyEncoding::Msgpack),
            (crate::body::json_to_msgpack(&cordis), BodyEncoding::Msgpack),
        ];
        for (body, encoding) in bodies {
            assert_eq!(
                marker_in(&body, encoding, "load:p:").as_deref(),
                Some("load:p:1:7")
            );
            assert_eq!(marker_in(&body, encoding, "load:other:"), None);
        }
        assert_eq!(short("load:conformance:run:3:1:7"), "1:7");
    }
}
