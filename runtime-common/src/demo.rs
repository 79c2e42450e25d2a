//! Demo mode (no token), for both runtimes: the mock gateway in-process, the real pipeline
//! pointed at it ([`run`], with the `demo` feature), and the live view that consumes what
//! Gatehouse published and prints a count per event type ([`print_event_counts`]).
//!
//! Owns: starting and stopping the demo's pieces, a temporary queue (server-named, exclusive,
//! auto-delete) bound to the events exchange with `#` and with every event name the mock
//! sends (so that direct exchanges, where `#` is no wildcard, are counted too), the counting,
//! and the periodic print.
//! Does not own the mock gateway itself (`mock-gateway`) or anything of the pipeline.

use std::collections::BTreeMap;
#[cfg(feature = "demo")]
use std::future::Future;
use std::io::Write;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use proto_core::config::SecretUrl;

use crate::runtime::Runtime;

/// Runs the demo on `rt` until `shutdown` completes: starts the mock gateway (its own
/// threads) replaying recorded traffic at the configured rate, points the configuration at
/// it, prints the live counts, and runs the real pipeline against it.
#[cfg(feature = "demo")]
pub async fn run<R: Runtime>(
    rt: R,
    mut config: proto_core::config::Config,
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
    println!(
        "demo: no DISCORD_TOKEN set, so Gatehouse runs against a mock Discord gateway at {} \
         replaying recorded traffic ({} events/s per shard, {} shards)",
        mock.api_base(),
        config.demo.events_per_second,
        config.demo.shard_count
    );
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
    rt.spawn(print_event_counts(
        rt.clone(),
        config.amqp.url.clone(),
        exchange,
        routing_keys,
        Duration::from_secs(2),
    ));
    let result = crate::run(rt, config, shutdown).await;
    mock.shutdown();
    Ok(result?)
}

/// Deletes the session snapshots under the (demo's) key prefix, best effort: if Redis is
/// unreachable the pipeline reports it right after.
#[cfg(feature = "demo")]
async fn forget_sessions<R: Runtime>(rt: &R, config: &proto_core::config::Config) {
    let Ok(client) = redis::Client::open(config.redis.url.expose()) else {
        return;
    };
    let Ok(mut connection) = rt
        .redis_connection(client, redis::aio::ConnectionManagerConfig::new())
        .await
    else {
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

/// Counts the events `exchange` routes with any of `routing_keys` (`#` is enough for a topic
/// exchange; a direct one needs the event names) and prints the table every `every` until the
/// connection ends. Retries until the exchange exists (the gateway declares it).
pub async fn print_event_counts<R: Runtime>(
    rt: R,
    amqp_url: SecretUrl,
    exchange: String,
    routing_keys: Vec<String>,
    every: Duration,
) {
    loop {
        match count(&rt, &amqp_url, &exchange, &routing_keys, every).await {
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
    amqp_url: &SecretUrl,
    exchange: &str,
    routing_keys: &[String],
    every: Duration,
) -> Result<(), String> {
    let properties =
        ConnectionProperties::default().with_connection_name("gatehouse demo counter".into());
    let connection =
        Connection::connect_with_runtime(amqp_url.expose(), properties, rt.amqp_runtime())
            .await
            .map_err(|e| e.to_string())?;
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| e.to_string())?;
    let mut consumer = consume_routed(&channel, exchange, routing_keys, "gatehouse-demo", true)
        .await
        .map_err(|e| e.to_string())?;
    println!("demo: counting the events published to exchange {exchange:?} (Ctrl-C stops)");
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut total = 0u64;
    let mut printed_total = 0u64;
    let mut next_print = Instant::now() + every;
    loop {
        let sleep = rt.sleep_until(next_print);
        let next = consumer.next();
        futures_util::pin_mut!(sleep);
        match futures_util::future::select(next, sleep).await {
            futures_util::future::Either::Left((Some(Ok(delivery)), _)) => {
                *counts.entry(delivery.routing_key.to_string()).or_default() += 1;
                total += 1;
            }
            futures_util::future::Either::Left((_, _)) => return Ok(()),
            futures_util::future::Either::Right(_) => {
                next_print += every;
                let table = counts
                    .iter()
                    .map(|(event, n)| format!("{event} {n}"))
                    .collect::<Vec<_>>()
                    .join(" | ");
                println!(
                    "events: {total} total, +{} in the last {:?}: {table}",
                    total - printed_total,
                    every
                );
                let _ = std::io::stdout().flush();
                printed_total = total;
            }
        }
    }
}

/// Declares a server-named queue (exclusive, auto-delete: it goes with the connection), binds
/// it to `exchange` with each of `routing_keys` and consumes it, for the demo's counter and the
/// end-to-end tests' capture. (A message matching several bindings reaches the queue once.)
pub(crate) async fn consume_routed(
    channel: &lapin::Channel,
    exchange: &str,
    routing_keys: &[String],
    consumer_tag: &str,
    no_ack: bool,
) -> lapin::Result<lapin::Consumer> {
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
