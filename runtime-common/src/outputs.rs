//! Which output runs (issue 14): starting the configured one (AMQP, Redis Streams or stdio)
//! and handing the shards and the command handler their side of the broker seam.
//!
//! Owns: the choice (`broker.type`, `BROKER_TYPE`, `--stdio`), what the choice changes around
//! the output (stdio prints packets as JSON, so a profile left at its default body encoding
//! publishes JSON there), and waiting for the output at shutdown. Does not own any output's
//! connection or wire format (`broker`, `redis_streams`, `stdio`) nor what the shards and the
//! command handler do with them (`shard_task`, `commands`).

use std::time::Duration;

use gatehouse_config::{AmqpClient, BrokerKind, Config};
use proto_core::profile::{BodyEncoding, Router};
use proto_core::stream_broker::command_streams;
use tokio::sync::watch;

use crate::broker::{self, BrokerClient, BrokerSettings};
use crate::output::{CommandSource, OutputClient};
use crate::redis_streams::{RedisStreams, StreamSettings};
use crate::runtime::Runtime;
use crate::stdio::Stdio;

/// The configured output, running.
#[derive(Clone, Debug)]
pub(crate) enum Outputs {
    /// RabbitMQ, with the profile's topology.
    Amqp(BrokerClient),
    /// Redis Streams (`@spectacles/brokers`' `Redis` broker).
    Redis(Box<RedisStreams>),
    /// Standard output and input.
    Stdio(Stdio),
    /// Nowhere (benchmarks only: `null_output`).
    #[cfg(feature = "bench")]
    Null(crate::null_output::Null),
}

/// What the output changes in the configuration before anything starts: on stdio, a profile
/// whose body encoding is not configured publishes the dispatch's JSON (stdout lines carry
/// packets as JSON, never msgpack).
pub(crate) fn adjust(config: &mut Config) {
    if config.broker.kind() == BrokerKind::Stdio && config.profile.body.is_none() {
        config.profile.body = Some(BodyEncoding::Json);
    }
}

impl Outputs {
    /// Starts the output `config` selects; it runs until `stop`.
    pub(crate) fn start<R: Runtime>(
        rt: &R,
        config: &Config,
        router: &Router,
        owned: &[u32],
        stop: watch::Receiver<bool>,
    ) -> std::io::Result<Self> {
        #[cfg(feature = "bench")]
        if crate::null_output::Null::selected() {
            tracing::warn!(
                "output: none ({} is set): every event is acknowledged and dropped",
                crate::null_output::SWITCH
            );
            return Ok(Self::Null(crate::null_output::Null));
        }
        Ok(match config.broker.kind() {
            BrokerKind::Redis => Self::Redis(Box::new(
                RedisStreams::start(
                    rt,
                    StreamSettings {
                        url: config.redis.url.clone(),
                        prefix: config.broker.stream_prefix.clone(),
                        max_len: config.broker.max_len,
                    },
                    stop,
                )
                .map_err(std::io::Error::other)?,
            )),
            BrokerKind::Amqp => {
                check_amqp_client::<R>(config.amqp.client)?;
                if config.amqp.client == AmqpClient::Amqprs {
                    tracing::info!("AMQP: events are published with amqprs (amqp.client)");
                }
                Self::Amqp(broker::start(
                    rt,
                    BrokerSettings {
                        urls: config.amqp.urls.clone(),
                        topology: router.topology(),
                        connection_name: format!("gatehouse shards {owned:?}"),
                        event_router: router.needs_event_topology().then(|| router.clone()),
                        client: config.amqp.client,
                    },
                    stop,
                ))
            }
            BrokerKind::Stdio => {
                tracing::info!(
                    "output: one JSON line per event on standard output, commands from standard input"
                );
                Self::Stdio(Stdio::start()?)
            }
        })
    }

    /// The AMQP client, when the output is AMQP.
    pub(crate) fn amqp(&self) -> Option<&BrokerClient> {
        match self {
            Self::Amqp(broker) => Some(broker),
            Self::Redis(_) | Self::Stdio(_) => None,
            #[cfg(feature = "bench")]
            Self::Null(_) => None,
        }
    }

    /// The output shard `shard` publishes through.
    pub(crate) fn client(&self, shard: u32) -> OutputClient {
        match self {
            Self::Amqp(broker) => broker.output(),
            Self::Redis(streams) => streams.client(),
            Self::Stdio(stdio) => stdio.client(shard),
            #[cfg(feature = "bench")]
            Self::Null(null) => null.client(),
        }
    }

    /// Starts reading the commands this output delivers (`prefetch` at most unsettled, where
    /// the output can bound it) for the shards `owned`.
    pub(crate) fn commands<R: Runtime>(
        &self,
        rt: &R,
        config: &Config,
        router: &Router,
        owned: &[u32],
        prefetch: u16,
        stop: watch::Receiver<bool>,
    ) -> std::io::Result<CommandSource> {
        let group = config.profile.exchange_name().to_owned();
        match self {
            Self::Redis(streams) => Ok(streams.commands(
                rt,
                command_streams(&router.topology(), &config.broker.stream_prefix),
                config.broker.command_group.clone().unwrap_or(group),
                consumer_name(owned),
                stop,
            )),
            Self::Amqp(broker) => Ok(crate::amqp_commands::start(
                rt,
                broker.clone(),
                prefetch,
                stop,
            )),
            Self::Stdio(stdio) => stdio.commands(group),
            #[cfg(feature = "bench")]
            Self::Null(null) => Ok(null.commands()),
        }
    }

    /// After `stop` was set: waits (briefly) until the output closed politely.
    pub(crate) async fn closed<R: Runtime>(&self, rt: &R) {
        if let Self::Amqp(broker) = self {
            let mut links = broker.watch();
            let closed = links.wait_for(Option::is_none);
            let sleep = rt.sleep(Duration::from_millis(500));
            futures_util::pin_mut!(closed, sleep);
            futures_util::future::select(closed, sleep).await;
        }
    }
}

/// Refuses `amqp.client = "amqprs"` where it cannot run: amqprs is tokio-only, so only the
/// tokio binary (`gatehouse`, built with the `amqprs` feature) publishes with it.
pub(crate) fn check_amqp_client<R: Runtime>(client: AmqpClient) -> std::io::Result<()> {
    match client {
        AmqpClient::Lapin => Ok(()),
        AmqpClient::Amqprs if cfg!(feature = "amqprs") && R::RUNS_AMQPRS => Ok(()),
        AmqpClient::Amqprs => Err(std::io::Error::other(
            "amqp.client = \"amqprs\" (GATEHOUSE_AMQP_CLIENT) needs the tokio binary `gatehouse`: \
             amqprs runs on tokio only; this binary publishes with lapin (set amqp.client = \"lapin\" or leave it out)",
        )),
    }
}

/// The consumer name the command reader reads under: the host and the shards, the same for a
/// restarted process (so consumers do not pile up in the group with every restart; what a
/// killed one left pending is claimed after `proto_core::stream_broker::CLAIM_MIN_IDLE`).
fn consumer_name(owned: &[u32]) -> String {
    let host = crate::cluster::host_name();
    match (owned.first(), owned.last()) {
        (Some(first), Some(last)) => format!("gatehouse-{host}-{first}-{last}"),
        _ => format!("gatehouse-{host}"),
    }
}
