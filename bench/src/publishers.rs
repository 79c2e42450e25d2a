//! The AMQP client alone, side by side (issue 13, item 1: "another AMQP client"): the plain
//! lapin publisher of `e2e` (the ceiling), lapin driven the way Gatehouse's publisher drives it,
//! and amqprs, each publishing the same bodies, routing keys and properties into the same kind
//! of sink, rounds alternating.
//!
//! Owns: the publishers (each run in a child process of this binary, `publisher-child`, so that
//! the CPU counted is the client's alone, not the benchmark's) and the rounds. Does not own the
//! measurement (`e2e::measure_client`: queue depth every 20 ms, the child's `utime + stime`
//! between the 5% and 95% marks, as for `gatehouse`) or the services (`services`).
//!
//! The clients:
//! - `lapin`: `e2e::publish_windowed` (the ceiling's loop: one `basic_publish` awaited at a
//!   time, the oldest confirm awaited when 1,000 are unconfirmed) on the runtime the benchmark
//!   process has (multi-thread, one worker), plus lapin's own I/O thread.
//! - `lapin-batched`: Gatehouse's publisher shape (`runtime_common::publisher`): 256
//!   `basic_publish` futures started together before any is awaited, on a current-thread runtime
//!   (plus lapin's I/O thread).
//! - `amqprs`: amqprs on a current-thread runtime (amqprs has no thread of its own: its reader,
//!   writer and channel dispatcher are tokio tasks). Confirms arrive through the channel's
//!   callback (`publish_ack`/`publish_nack`, single or multiple), which settles delivery tags
//!   and wakes the publisher when the window has room.
//! - `amqprs-mt`: the same on a multi-thread runtime with two workers (what `gatehouse` runs).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use amqprs::callbacks::{ChannelCallback, DefaultConnectionCallback};
use amqprs::channel::{BasicPublishArguments, Channel, ConfirmSelectArguments};
use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::{Ack, BasicProperties, Cancel, CloseChannel, FieldTable, FieldValue, Nack, Return};
use anyhow::{Context, Result, bail};
use lapin::options::BasicPublishOptions;

use crate::Args;
use crate::e2e::{self, Run};
use crate::services::{self, Sink, Vhost};

/// What amqprs' callbacks return.
type AmqprsResult<T> = std::result::Result<T, amqprs::error::Error>;

/// The command line word of the child process.
pub const CHILD_COMMAND: &str = "publisher-child";

/// Publications Gatehouse's publisher starts together (`runtime_common::publisher::MAX_BATCH`).
const BATCH: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Client {
    Lapin,
    LapinBatched,
    Amqprs,
    AmqprsMulti,
}

impl std::str::FromStr for Client {
    type Err = anyhow::Error;

    fn from_str(name: &str) -> Result<Self> {
        Ok(match name {
            "lapin" => Self::Lapin,
            "lapin-batched" => Self::LapinBatched,
            "amqprs" => Self::Amqprs,
            "amqprs-mt" => Self::AmqprsMulti,
            other => {
                bail!("unknown client {other:?}: use lapin, lapin-batched, amqprs or amqprs-mt")
            }
        })
    }
}

impl Client {
    fn name(self) -> &'static str {
        match self {
            Self::Lapin => "lapin",
            Self::LapinBatched => "lapin-batched",
            Self::Amqprs => "amqprs",
            Self::AmqprsMulti => "amqprs-mt",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Lapin => "plain lapin (1 worker + lapin thread)",
            Self::LapinBatched => "lapin, batches of 256, current_thread",
            Self::Amqprs => "amqprs, current_thread",
            Self::AmqprsMulti => "amqprs, multi_thread (2 workers)",
        }
    }

    /// The child's runtime.
    fn runtime(self) -> std::io::Result<tokio::runtime::Runtime> {
        let mut builder = match self {
            Self::LapinBatched | Self::Amqprs => tokio::runtime::Builder::new_current_thread(),
            Self::Lapin => {
                let mut b = tokio::runtime::Builder::new_multi_thread();
                b.worker_threads(1);
                b
            }
            Self::AmqprsMulti => {
                let mut b = tokio::runtime::Builder::new_multi_thread();
                b.worker_threads(2);
                b
            }
        };
        builder.enable_all().build()
    }

    async fn publish(
        self,
        url: &str,
        bodies: &[(String, Vec<u8>)],
        window: usize,
        mandatory: bool,
    ) -> Result<Settled> {
        match self {
            Self::Lapin | Self::LapinBatched => {
                let (connection, channel) =
                    e2e::lapin_confirm_channel(url, lapin::ConnectionProperties::default()).await?;
                let options = BasicPublishOptions {
                    mandatory,
                    ..BasicPublishOptions::default()
                };
                let confirms = if self == Self::Lapin {
                    e2e::publish_windowed(&channel, bodies, window, options).await?
                } else {
                    publish_batched(&channel, bodies, window, options).await?
                };
                let _ = connection.close(200, "done".into()).await;
                Ok(Settled {
                    acked: confirms.acked,
                    nacked: confirms.nacked,
                    returned: confirms.returned,
                })
            }
            Self::Amqprs | Self::AmqprsMulti => {
                publish_amqprs(url, bodies, window, mandatory).await
            }
        }
    }
}

/// Lapin driven as Gatehouse's publisher drives it: `BATCH` publishes started together, then
/// awaited together; before a batch, the oldest confirms are awaited until the batch fits in
/// `window`.
async fn publish_batched(
    channel: &lapin::Channel,
    bodies: &[(String, Vec<u8>)],
    window: usize,
    options: BasicPublishOptions,
) -> Result<e2e::Confirms> {
    let mut outstanding: VecDeque<lapin::PublisherConfirm> = VecDeque::with_capacity(window);
    let mut confirms = e2e::Confirms::default();
    let batch = BATCH.min(window);
    for (n, chunk) in bodies.chunks(batch).enumerate() {
        while outstanding.len() + chunk.len() > window {
            let confirm = outstanding.pop_front().expect("non-empty");
            confirms.handle(&confirm.await?);
        }
        let publishes = chunk.iter().enumerate().map(|(j, (event, body))| {
            let seq = (n * batch + j) as i64 + 2;
            channel.basic_publish(
                "gateway".into(),
                event.as_str().into(),
                options,
                body,
                e2e::lapin_properties(seq),
            )
        });
        for started in futures_util::future::join_all(publishes).await {
            outstanding.push_back(started?);
        }
    }
    while let Some(confirm) = outstanding.pop_front() {
        confirms.handle(&confirm.await?);
    }
    Ok(confirms)
}

/// What the broker answered, in messages.
#[derive(Debug, Default)]
struct Settled {
    acked: u64,
    nacked: u64,
    returned: u64,
}

/// Counts shared by amqprs' channel callback (which settles) and the publisher (which waits).
#[derive(Default)]
pub struct ConfirmCounts {
    pub acked: AtomicU64,
    pub nacked: AtomicU64,
    pub returned: AtomicU64,
    /// Woken after every ack or nack frame.
    changed: tokio::sync::Notify,
    /// When recording (`guarantees`): each settled tag with `true` for an ack, and the message
    /// id of each returned message, in the order the broker sent them.
    pub answers: Option<std::sync::Mutex<Answers>>,
}

/// What `ConfirmCounts::answers` records.
#[derive(Debug, Default)]
pub struct Answers {
    pub settled: Vec<(u64, bool)>,
    pub returned_ids: Vec<String>,
}

impl ConfirmCounts {
    /// Counts that also record every answer.
    pub fn recording() -> Self {
        Self {
            answers: Some(Default::default()),
            ..Self::default()
        }
    }

    fn settled(&self) -> u64 {
        self.acked.load(Ordering::Acquire) + self.nacked.load(Ordering::Acquire)
    }

    /// Waits until at most `limit` of `published` are unsettled.
    pub async fn wait_until_unsettled_at_most(&self, published: u64, limit: u64) {
        while published - self.settled() > limit {
            self.changed.notified().await;
        }
    }
}

/// amqprs' confirm bookkeeping (amqprs hands the raw `basic.ack`/`basic.nack` frames to the
/// channel callback; the delivery tags are the client's to track): tags from `lowest` on,
/// whether each is settled. A multiple ack or nack settles every unsettled tag up to its own.
pub struct ConfirmTracker {
    lowest: u64,
    settled: VecDeque<bool>,
    counts: Arc<ConfirmCounts>,
}

impl ConfirmTracker {
    pub fn new(counts: Arc<ConfirmCounts>) -> Self {
        Self {
            lowest: 1,
            settled: VecDeque::new(),
            counts,
        }
    }

    fn settle(&mut self, tag: u64, multiple: bool, ack: bool) {
        let first = if multiple { self.lowest } else { tag };
        let mut newly = 0;
        for t in first.max(self.lowest)..=tag {
            let index = (t - self.lowest) as usize;
            if self.settled.len() <= index {
                self.settled.resize(index + 1, false);
            }
            if !self.settled[index] {
                self.settled[index] = true;
                newly += 1;
                if let Some(answers) = &self.counts.answers {
                    let mut answers = answers.lock().expect("not poisoned");
                    answers.settled.push((t, ack));
                }
            }
        }
        while self.settled.front() == Some(&true) {
            self.settled.pop_front();
            self.lowest += 1;
        }
        let counter = if ack {
            &self.counts.acked
        } else {
            &self.counts.nacked
        };
        counter.fetch_add(newly, Ordering::Release);
        self.counts.changed.notify_one();
    }
}

#[async_trait::async_trait]
impl ChannelCallback for ConfirmTracker {
    async fn close(&mut self, _channel: &Channel, close: CloseChannel) -> AmqprsResult<()> {
        eprintln!("amqprs: the broker closed the channel: {close}");
        Ok(())
    }

    async fn cancel(&mut self, _channel: &Channel, _cancel: Cancel) -> AmqprsResult<()> {
        Ok(())
    }

    async fn flow(&mut self, _channel: &Channel, _active: bool) -> AmqprsResult<bool> {
        Ok(true)
    }

    async fn publish_ack(&mut self, _channel: &Channel, ack: Ack) {
        self.settle(ack.delivery_tag(), ack.mutiple(), true);
    }

    async fn publish_nack(&mut self, _channel: &Channel, nack: Nack) {
        self.settle(nack.delivery_tag(), nack.multiple(), false);
    }

    async fn publish_return(
        &mut self,
        _channel: &Channel,
        _return: Return,
        properties: BasicProperties,
        _body: Vec<u8>,
    ) {
        // basic.return carries no delivery tag: the broker acks the message after returning
        // it, so here it is only counted (and its message id recorded when asked).
        self.counts.returned.fetch_add(1, Ordering::Relaxed);
        if let Some(answers) = &self.counts.answers {
            let id = properties.message_id().cloned().unwrap_or_default();
            answers.lock().expect("not poisoned").returned_ids.push(id);
        }
    }
}

/// The native properties (as `e2e::lapin_properties`) in amqprs' types.
fn amqprs_properties(seq: i64) -> BasicProperties {
    let mut headers = FieldTable::new();
    let name = |n: &str| -> amqprs::FieldName { n.try_into().expect("a short string") };
    headers.insert(name("x-shard-id"), FieldValue::l(0));
    headers.insert(name("x-shard-count"), FieldValue::l(1));
    headers.insert(name("x-sequence"), FieldValue::l(seq));
    headers.insert(name("x-session-id"), FieldValue::from(e2e::SESSION));
    let mut properties = BasicProperties::default();
    properties
        .with_delivery_mode(amqprs::DELIVERY_MODE_PERSISTENT)
        .with_content_type("application/json")
        .with_message_id(&format!("{}:{seq}", e2e::SESSION))
        .with_timestamp(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
        )
        .with_headers(headers);
    properties
}

/// An amqprs connection named `name` to `url` (`amqp://guest:guest@127.0.0.1:5672/<vhost>`, the
/// benchmark's) and a channel on it in confirm mode whose answers go to `counts`.
pub async fn amqprs_confirm_channel(
    url: &str,
    name: &str,
    counts: Arc<ConfirmCounts>,
) -> Result<(Connection, Channel)> {
    let vhost = url.rsplit('/').next().context("no vhost in the URL")?;
    let mut arguments = OpenConnectionArguments::new("127.0.0.1", 5672, "guest", "guest");
    arguments.virtual_host(vhost).connection_name(name);
    let connection = Connection::open(&arguments).await?;
    connection
        .register_callback(DefaultConnectionCallback)
        .await?;
    let channel = connection.open_channel(None).await?;
    channel
        .register_callback(ConfirmTracker::new(counts))
        .await?;
    channel
        .confirm_select(ConfirmSelectArguments::default())
        .await?;
    Ok((connection, channel))
}

/// amqprs: one connection, one confirm channel, at most `window` unsettled.
async fn publish_amqprs(
    url: &str,
    bodies: &[(String, Vec<u8>)],
    window: usize,
    mandatory: bool,
) -> Result<Settled> {
    // The benchmark's URLs are `amqp://guest:guest@127.0.0.1:5672/<vhost>`.
    let counts = Arc::new(ConfirmCounts::default());
    let (connection, channel) = amqprs_confirm_channel(url, "publisher", counts.clone()).await?;
    let window = window as u64;
    let mut published = 0u64;
    for (i, (event, body)) in bodies.iter().enumerate() {
        counts
            .wait_until_unsettled_at_most(published, window - 1)
            .await;
        let arguments = BasicPublishArguments {
            exchange: "gateway".to_owned(),
            routing_key: event.clone(),
            mandatory,
            immediate: false,
        };
        channel
            .basic_publish(amqprs_properties(i as i64 + 2), body.clone(), arguments)
            .await?;
        published += 1;
    }
    counts.wait_until_unsettled_at_most(published, 0).await;
    let _ = channel.close().await;
    let _ = connection.close().await;
    Ok(Settled {
        acked: counts.acked.load(Ordering::Acquire),
        nacked: counts.nacked.load(Ordering::Acquire),
        returned: counts.returned.load(Ordering::Acquire),
    })
}

/// `publisher-child --client <name> --url <amqp url> --events N --window W --fixture F
/// --mandatory yes|no`: publishes, prints what the broker answered, fails on a nack or a
/// missing confirm.
pub fn child(args: &Args) -> Result<()> {
    let client: Client = args.get("client", "lapin").parse()?;
    let url = args.get("url", "");
    let window: usize = args.number("window", 1000)?;
    let mandatory = args.get("mandatory", "no") == "yes";
    let corpus = e2e::corpus(
        &args.get("fixture", "basic"),
        args.number("events", 60_000)?,
    )?;
    let bodies = e2e::dispatch_bodies(&corpus);
    let settled = client
        .runtime()?
        .block_on(client.publish(&url, &bodies, window, mandatory))?;
    println!(
        "{:<34} {} publisher: the broker acked {} ({} of them returned), nacked {}",
        "",
        client.name(),
        settled.acked,
        settled.returned,
        settled.nacked
    );
    if settled.nacked > 0 || settled.acked + settled.nacked != bodies.len() as u64 {
        bail!("{} published, {settled:?}", bodies.len());
    }
    Ok(())
}

/// Settings of `publishers`.
pub struct Rounds {
    pub clients: String,
    pub rounds: usize,
    pub events: usize,
    pub window: usize,
    pub fixture: String,
    pub mandatory: bool,
    /// Where `perf record -F 999 -g` writes one profile per child (none: no profiling).
    pub perf_dir: Option<PathBuf>,
}

/// `publishers`: every client of `settings.clients` once per round, in order; each row with its
/// CPU per message against the round's `lapin` row.
pub async fn compare(settings: &Rounds) -> Result<()> {
    let clients: Vec<Client> = settings
        .clients
        .split(',')
        .map(|c| c.trim().parse::<Client>())
        .collect::<Result<_>>()?;
    let expected = e2e::corpus(&settings.fixture, settings.events)?.len() as u64;
    for round in 1..=settings.rounds {
        println!("-- round {round}");
        let mut lapin_cpu = None;
        for &client in &clients {
            let run = run_child(client, settings, expected, round).await?;
            run.print();
            match (client, run.cpu_per_million, lapin_cpu) {
                (Client::Lapin, cpu, _) => lapin_cpu = cpu,
                (_, Some(cpu), Some(base)) => println!(
                    "{:<34} {:.2}x plain lapin's CPU per message",
                    "",
                    cpu / base
                ),
                _ => {}
            }
        }
    }
    Ok(())
}

/// One client in a child process, into a fresh vhost's sink.
async fn run_child(client: Client, settings: &Rounds, expected: u64, round: usize) -> Result<Run> {
    let vhost = Vhost::create("publishers");
    let url = vhost.amqp_url();
    let sink = Sink::declare(&url, "gateway").await?;
    let load_before = services::load_average();
    let mut child = Command::new(std::env::current_exe()?)
        .args([
            CHILD_COMMAND,
            "--client",
            client.name(),
            "--url",
            url.as_str(),
        ])
        .args(["--events", settings.events.to_string().as_str()])
        .args(["--window", settings.window.to_string().as_str()])
        .args(["--fixture", settings.fixture.as_str()])
        .args(["--mandatory", if settings.mandatory { "yes" } else { "no" }])
        .stdin(Stdio::null())
        .spawn()
        .context("start the publisher child")?;
    let pid = child.id();
    let mut perf = match &settings.perf_dir {
        Some(dir) => {
            // From the first message on: the child's set-up (the corpus) is not the client's.
            while sink.depth().await? == 0 {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "the {} publisher ended before publishing: {status}",
                        client.name()
                    );
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Some(start_perf(dir, client, round, pid)?)
        }
        None => None,
    };
    let (messages, steady_rate, whole_rate, cpu_per_million) =
        e2e::measure_client(&sink, expected, pid).await?;
    let load_after = services::load_average();
    let status = match wait_for(&mut child, Duration::from_secs(60)).await {
        Ok(status) => status,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
    };
    if let Some(perf) = perf.as_mut() {
        // perf ends with the process it records; SIGINT in case it did not.
        if wait_for(perf, Duration::from_secs(5)).await.is_err() {
            let _ = Command::new("kill")
                .arg("-INT")
                .arg(perf.id().to_string())
                .status();
            let _ = wait_for(perf, Duration::from_secs(10)).await;
        }
    }
    if !status.success() {
        bail!("the {} publisher failed: {status}", client.name());
    }
    if messages < expected {
        eprintln!("warning: only {messages} of {expected} messages arrived");
    }
    Ok(Run {
        what: client.describe().to_owned(),
        messages,
        steady_rate,
        whole_rate,
        cpu_per_million,
        load_before,
        load_after,
    })
}

/// `perf record -F 999 -g` of process `pid` into `<dir>/<client>-<round>.perf.data`.
fn start_perf(dir: &Path, client: Client, round: usize, pid: u32) -> Result<std::process::Child> {
    std::fs::create_dir_all(dir)?;
    let output = dir.join(format!("{}-{round}.perf.data", client.name()));
    Command::new("perf")
        .args(["record", "-F", "999", "-g", "-p"])
        .arg(pid.to_string())
        .arg("-o")
        .arg(&output)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start perf record")
}

/// Waits up to `limit` for `child` to exit (polling, so the runtime's one worker stays free).
async fn wait_for(
    child: &mut std::process::Child,
    limit: Duration,
) -> Result<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if std::time::Instant::now() > deadline {
            bail!("process {} still running after {limit:?}", child.id());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
