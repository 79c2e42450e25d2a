//! Demo mode (no token): the mock gateway in-process replaying recorded traffic, the real
//! pipeline pointed at it, and a live count per event type of what reached RabbitMQ.

use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use mock_gateway::{MockConfig, MockGateway, ReplayRate, ShardRouting};
use proto_core::config::Config;
use proto_core::secret::Secret;

use crate::tokio_runtime::TokioRuntime;

pub(crate) async fn run(
    mut config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
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
    config.discord.token = Secret::new("demo-token");
    config.discord.api_base = mock.api_base();
    config.discord.shard_count = None;
    config.discord.shard_ids = None;
    // The mock's sessions must never be resumed against Discord: keep them apart.
    config.redis.key_prefix = format!("{}-demo", config.redis.key_prefix);

    let exchange = config.profile.exchange_name().to_owned();
    tokio::spawn(runtime_common::demo::print_event_counts(
        TokioRuntime,
        config.amqp.url.clone(),
        exchange,
        Duration::from_secs(2),
    ));
    let result = runtime_common::run(TokioRuntime, config, shutdown).await;
    mock.shutdown();
    Ok(result?)
}
