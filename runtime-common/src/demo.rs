//! Demo mode (no token), for both runtimes: the mock gateway in-process, the real pipeline
//! pointed at it ([`run`], with the `demo` feature), and the live view that consumes what
//! Gatehouse published and shows a count and a rate per event type ([`print_event_counts`]).
//!
//! Owns: starting and stopping the demo's pieces, a temporary queue (server-named, exclusive,
//! auto-delete) bound to the events exchange with `#` and with every event name the mock
//! sends (so that direct exchanges, where `#` is no wildcard, are counted too), the counting
//! ([`EventCounts`]) and the periodic print: redrawn in place on a terminal (one line per
//! event type), plain `events: ...` lines otherwise.
//!
//! The counter declares the profile's topology itself and binds its queue before the
//! pipeline starts, so it never binds to a missing exchange (RabbitMQ would close its channel
//! with NOT_FOUND, which lapin logs as an ERROR) and counts every READY.
//!
//! Does not own the mock gateway itself (`mock-gateway`) or anything of the pipeline.

use std::collections::BTreeMap;
#[cfg(feature = "demo")]
use std::future::Future;
use std::io::Write;
use std::time::Duration;

use futures_util::StreamExt;
use gatehouse_config::SecretUrl;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use proto_core::profile::Topology;
use tokio::sync::oneshot;

use crate::runtime::Runtime;

/// Runs the demo on `rt` until `shutdown` completes: starts the mock gateway (its own
/// threads) replaying recorded traffic at the configured rate, points the configuration at
/// it, prints the live counts, and runs the real pipeline against it.
#[cfg(feature = "demo")]
pub async fn run<R: Runtime>(
    rt: R,
    mut config: gatehouse_config::Config,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    use anyhow::Context;
    use mock_gateway::{MockConfig, MockGateway, ReplayRate, ShardRouting};

    let mut mock_config = MockConfig::demo();
    mock_config.shards = config.demo.shard_count;
    mock_config.rate = ReplayRate::PerSecond(f64::from(config.demo.events_per_second));
    // Every shard replays the whole recording, so every shard shows traffic.
    mock_config.routing = ShardRouting::Broadcast;
    let mut mock = MockGateway::start(mock_config).context("cannot start the mock gateway")?;
    // The count is of what RabbitMQ routes; on another output the events themselves are the
    // show (stdio: on stdout, which then holds nothing else), and the notes go to the log.
    let amqp = config.broker.kind() == gatehouse_config::BrokerKind::Amqp;
    let note = |text: String| {
        if amqp {
            println!("{text}");
        } else {
            tracing::info!("{text}");
        }
    };
    note(format!(
        "demo: no DISCORD_TOKEN set, so Gatehouse runs against a mock Discord gateway at {} \
         replaying recorded traffic ({} events/s per shard, {} shards)",
        mock.api_base(),
        config.demo.events_per_second,
        config.demo.shard_count
    ));
    note(match config.metrics.address {
        Some(address) => format!("demo: the status page is at http://{address}/"),
        None => "demo: set GATEHOUSE_METRICS_ADDRESS=127.0.0.1:9090 to open a status page at \
                 http://127.0.0.1:9090/"
            .to_owned(),
    });
    config.discord.token = proto_core::secret::Secret::new("demo-token");
    config.discord.api_base = mock.api_base();
    config.discord.shard_count = None;
    config.discord.shard_ids = None;
    // The mock's sessions must never be resumed against Discord, nor a real deployment's
    // sessions overwritten: keep them apart.
    config.redis.key_prefix = format!("{}-demo", config.redis.key_prefix);
    // A previous demo's sessions belong to a mock that is gone: resuming them only delays the
    // start by a failed connection and a back-off.
    forget_sessions(&rt, &config).await;
    if !amqp {
        let result = crate::run(rt, config, shutdown).await;
        mock.shutdown();
        return Ok(result?);
    }

    let exchange = config.profile.exchange_name().to_owned();
    let mut routing_keys: Vec<String> = ["#", "READY", "RESUMED"]
        .into_iter()
        .map(str::to_owned)
        .chain(
            mock.config()
                .fixture
                .events()
                .iter()
                .map(|e| e.name.to_string()),
        )
        .collect();
    routing_keys.sort();
    routing_keys.dedup();
    let cluster = config.cluster(config.demo.shard_count)?;
    let topology = proto_core::profile::Router::new(&config.profile, &cluster)?.topology();
    let (ready_tx, ready_rx) = oneshot::channel();
    rt.spawn(print_event_counts(
        rt.clone(),
        Counter {
            amqp_url: config.amqp.url.clone(),
            topology,
            exchange,
            routing_keys,
            terminal: std::io::IsTerminal::is_terminal(&std::io::stdout()),
        },
        ready_tx,
    ));
    // The pipeline starts once the counter's queue is bound (so the first READY is counted),
    // or after a few seconds without RabbitMQ (the pipeline then reports why it cannot
    // connect).
    let waited = rt.sleep(COUNTER_START_TIMEOUT);
    futures_util::pin_mut!(waited);
    futures_util::future::select(ready_rx, waited).await;
    let result = crate::run(rt, config, shutdown).await;
    mock.shutdown();
    Ok(result?)
}

/// How long the demo waits for its counter before starting the pipeline anyway.
#[cfg(feature = "demo")]
const COUNTER_START_TIMEOUT: Duration = Duration::from_secs(5);

/// Deletes the session snapshots under the (demo's) key prefix, best effort: if Redis is
/// unreachable the pipeline reports it right after.
#[cfg(feature = "demo")]
async fn forget_sessions<R: Runtime>(rt: &R, config: &gatehouse_config::Config) {
    let Ok(target) = crate::redis_link::RedisTarget::open(config.redis.url.expose()) else {
        return;
    };
    let timeouts = crate::redis_link::Timeouts {
        connect: Duration::from_secs(5),
        response: Duration::from_secs(5),
    };
    let Ok(mut connection) = target.connect(rt, timeouts).await else {
        return;
    };
    let keys = proto_core::store::KeyLayout::new(config.redis.key_prefix.clone());
    let sessions: Vec<String> = (0..config.demo.shard_count)
        .map(|shard| keys.session(shard))
        .collect();
    let deleted: redis::RedisResult<()> = redis::cmd("DEL")
        .arg(sessions)
        .query_async(&mut connection)
        .await;
    if let Err(e) = deleted {
        tracing::debug!(error = %e, "cannot forget the previous demo's sessions");
    }
}

/// What the demo's counter consumes and how it prints.
#[derive(Debug)]
pub struct Counter {
    /// The broker.
    pub amqp_url: SecretUrl,
    /// The profile's topology, declared before binding (the same declarations the gateway
    /// makes, so they agree).
    pub topology: Topology,
    /// The events exchange.
    pub exchange: String,
    /// The routing keys to bind (`#` is enough for a topic exchange; a direct one needs the
    /// event names).
    pub routing_keys: Vec<String>,
    /// Redraw a table in place (a terminal) or print plain lines.
    pub terminal: bool,
}

/// Counts the events the counter's exchange routes and prints them (every second on a
/// terminal, every 2 s otherwise) until the connection ends. Sends on `ready` once its queue
/// is bound. Retries until RabbitMQ answers.
pub async fn print_event_counts<R: Runtime>(rt: R, counter: Counter, ready: oneshot::Sender<()>) {
    let mut ready = Some(ready);
    loop {
        match count(&rt, &counter, &mut ready).await {
            Ok(()) => return,
            Err(e) => {
                tracing::debug!(error = %e, "demo counter not ready; retrying");
                rt.sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn count<R: Runtime>(
    rt: &R,
    counter: &Counter,
    ready: &mut Option<oneshot::Sender<()>>,
) -> Result<(), crate::broker::BrokerError> {
    let properties =
        ConnectionProperties::default().with_connection_name("gatehouse demo counter".into());
    let connection = Connection::connect_with_config(
        counter.amqp_url.expose(),
        properties,
        crate::tls::amqp(),
        rt.amqp_runtime(),
    )
    .await?;
    let channel = connection.create_channel().await?;
    crate::broker::declare_topology(&channel, &counter.topology).await?;
    let mut consumer = consume_routed(
        &channel,
        &counter.exchange,
        &counter.routing_keys,
        "gatehouse-demo",
        true,
    )
    .await?;
    if let Some(ready) = ready.take() {
        let _ = ready.send(());
    }
    println!(
        "demo: counting the events published to exchange {:?} (Ctrl-C stops)",
        counter.exchange
    );
    let every = if counter.terminal {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(2)
    };
    let mut counts = EventCounts::default();
    let mut drawn_lines = 0;
    let mut next_print = rt.now() + every;
    loop {
        let sleep = rt.sleep_until(next_print);
        let next = consumer.next();
        futures_util::pin_mut!(sleep);
        match futures_util::future::select(next, sleep).await {
            futures_util::future::Either::Left((Some(Ok(delivery)), _)) => {
                counts.record(delivery.routing_key.as_str());
            }
            futures_util::future::Either::Left((_, _)) => return Ok(()),
            futures_util::future::Either::Right(_) => {
                next_print += every;
                let mut out = std::io::stdout().lock();
                let text = if counter.terminal {
                    let table = counts.table(every);
                    // Move up over the previous table and clear it, then draw the new one.
                    let redraw = if drawn_lines > 0 {
                        format!("\x1b[{drawn_lines}F\x1b[J")
                    } else {
                        String::new()
                    };
                    drawn_lines = table.lines().count();
                    redraw + &table
                } else {
                    counts.line(every) + "\n"
                };
                let _ = out.write_all(text.as_bytes());
                let _ = out.flush();
                counts.next_interval();
            }
        }
    }
}

/// The demo's counts per event type, with the counts at the start of the current interval
/// (for rates). Pure: printing and timing are the caller's.
#[derive(Debug, Default)]
pub struct EventCounts {
    counts: BTreeMap<String, (u64, u64)>,
    total: u64,
    total_before: u64,
}

impl EventCounts {
    /// Counts one event.
    pub fn record(&mut self, event: &str) {
        match self.counts.get_mut(event) {
            Some((count, _)) => *count += 1,
            None => {
                self.counts.insert(event.to_owned(), (1, 0));
            }
        }
        self.total += 1;
    }

    /// Starts a new interval (after printing).
    pub fn next_interval(&mut self) {
        for (count, before) in self.counts.values_mut() {
            *before = *count;
        }
        self.total_before = self.total;
    }

    /// One plain line: `events: N total, +M in the last 2s: EVENT n | ...`.
    pub fn line(&self, interval: Duration) -> String {
        let table = self
            .counts
            .iter()
            .map(|(event, (n, _))| format!("{event} {n}"))
            .collect::<Vec<_>>()
            .join(" | ");
        format!(
            "events: {} total, +{} in the last {:?}: {table}",
            self.total,
            self.total - self.total_before,
            interval
        )
    }

    /// A table, one line per event type with its count and rate over `interval`, and a total.
    pub fn table(&self, interval: Duration) -> String {
        let seconds = interval.as_secs_f64().max(f64::EPSILON);
        let width = self
            .counts
            .keys()
            .map(String::len)
            .max()
            .unwrap_or(0)
            .max(5);
        let mut table = format!("{:<width$} {:>10} {:>10}\n", "event", "count", "per s");
        for (event, (count, before)) in &self.counts {
            let rate = (count - before) as f64 / seconds;
            table.push_str(&format!("{event:<width$} {count:>10} {rate:>10.1}\n"));
        }
        let rate = (self.total - self.total_before) as f64 / seconds;
        table.push_str(&format!(
            "{:<width$} {:>10} {rate:>10.1}\n",
            "total", self.total
        ));
        table
    }
}

/// Declares a private queue (exclusive, deleted with its connection) bound to `exchange` with
/// each of `routing_keys`. (A message matching several bindings reaches the queue once.)
pub(crate) async fn bind_private_queue(
    channel: &lapin::Channel,
    exchange: &str,
    routing_keys: &[String],
) -> lapin::Result<lapin::Queue> {
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    for key in routing_keys {
        channel
            .queue_bind(
                queue.name().clone(),
                exchange.into(),
                key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(queue)
}

/// Consumes a private queue bound to `exchange` with each of `routing_keys`
/// ([`bind_private_queue`]), for the demo's counter and the end-to-end tests' capture.
pub(crate) async fn consume_routed(
    channel: &lapin::Channel,
    exchange: &str,
    routing_keys: &[String],
    consumer_tag: &str,
    no_ack: bool,
) -> lapin::Result<lapin::Consumer> {
    let queue = bind_private_queue(channel, exchange, routing_keys).await?;
    channel
        .basic_consume(
            queue.name().clone(),
            consumer_tag.into(),
            BasicConsumeOptions {
                no_ack,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts() -> EventCounts {
        let mut counts = EventCounts::default();
        for event in ["READY", "MESSAGE_CREATE", "READY"] {
            counts.record(event);
        }
        counts.next_interval();
        for _ in 0..4 {
            counts.record("MESSAGE_CREATE");
        }
        counts
    }

    #[test]
    fn plain_lines_carry_every_count() {
        assert_eq!(
            counts().line(Duration::from_secs(2)),
            "events: 7 total, +4 in the last 2s: MESSAGE_CREATE 5 | READY 2"
        );
    }

    #[test]
    fn the_table_has_a_line_per_event_with_its_rate() {
        let table = counts().table(Duration::from_secs(2));
        let lines: Vec<Vec<&str>> = table
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(lines[1], ["MESSAGE_CREATE", "5", "2.0"], "{table}");
        assert_eq!(lines[2], ["READY", "2", "0.0"], "{table}");
        assert_eq!(lines[3], ["total", "7", "2.0"], "{table}");
        assert_eq!(lines.len(), 4);
    }
}
