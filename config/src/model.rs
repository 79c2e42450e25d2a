//! The typed, validated configuration of one Gatehouse process, and its defaults.
//!
//! Owns: the settings every part of the process reads ([`Config`] and its sections) and their
//! defaults (the shard's own come from `proto_core::shard::defaults`, so there is one set).
//! Does not own: where values come from ([`crate::load`]) or how they are checked
//! ([`crate::validate`]).

use std::net::SocketAddr;
use std::time::Duration;

use proto_core::codec::{Compression, Encoding};
use proto_core::profile::{ClusterInfo, ProfileConfig, ProfileKind};
use proto_core::secret::Secret;
use proto_core::shard::defaults;

use crate::error::{ConfigError, invalid};
use crate::secret_url::SecretUrl;

/// The Discord API base used when none is configured.
pub const DEFAULT_API_BASE: &str = "https://discord.com/api/v10";
/// The RabbitMQ URL used when none is configured.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// The Redis URL used when none is configured.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379/";
/// The Redis key prefix used when none is configured (the spectacles and twilight-dispatch
/// profiles have their predecessors' defaults, see [`default_key_prefix`]).
pub const DEFAULT_KEY_PREFIX: &str = "gatehouse";
/// Where the Prometheus text is served when no path is configured.
pub const DEFAULT_METRICS_PATH: &str = "/metrics";
/// How long a shard waits for HELLO when nothing else is configured.
pub const DEFAULT_HELLO_TIMEOUT: Duration = Duration::from_secs(20);

/// The Redis key prefix of a profile when none is configured: the Spectacles gateway's example
/// uses `gateway`; twilight-dispatch's keys are bare (`gateway_sessions`), so its prefix is empty.
pub fn default_key_prefix(profile: ProfileKind) -> &'static str {
    match profile {
        ProfileKind::Spectacles => "gateway",
        ProfileKind::TwilightDispatch => "",
        ProfileKind::Gatehouse | ProfileKind::Cordis | ProfileKind::Retsu => DEFAULT_KEY_PREFIX,
    }
}

/// The Discord encoding of a profile when none is configured: ETF for Cordis (its spec's
/// default), JSON otherwise.
pub fn default_encoding(profile: ProfileKind) -> Encoding {
    match profile {
        ProfileKind::Cordis => Encoding::Etf,
        _ => Encoding::Json,
    }
}

/// The complete, validated configuration of one Gatehouse process.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The Discord side.
    pub discord: DiscordConfig,
    /// The broker.
    pub amqp: AmqpConfig,
    /// Which output (AMQP, Redis Streams, stdio) and its settings.
    pub broker: BrokerConfig,
    /// The session store.
    pub redis: RedisConfig,
    /// The broker wire contract.
    pub profile: ProfileConfig,
    /// Memory and flow limits.
    pub limits: Limits,
    /// The Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// Demo mode (used when no token is configured).
    pub demo: DemoConfig,
    /// Cluster mode (several processes sharing the bot's shards through Redis).
    pub cluster: ClusterConfig,
    /// Opt-in error reports.
    pub sentry: SentryConfig,
}

/// Cluster mode: processes with the same name (and Redis, and key prefix) share the bot's
/// shards through leases in Redis (see `proto_core::cluster`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The cluster's name; `None` runs without leases (the shards of `discord.shard_ids`, or
    /// all of them, unconditionally).
    pub name: Option<String>,
    /// A shard lease's expiry in milliseconds: how fast a dead process's shards are taken
    /// over, and how long a process cut off from Redis may still run them.
    pub lease_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            name: None,
            lease_ms: 10_000,
        }
    }
}

/// Opt-in error reports to Sentry (Retsu's `sentry_url`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SentryConfig {
    /// The DSN (`https://<key>@<host>/<project>`); `None` sends nothing.
    pub url: Option<SecretUrl>,
}

/// The Discord side of the configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct DiscordConfig {
    /// The bot token (without `Bot `). Empty means "no token": the runtimes run the demo.
    pub token: Secret,
    /// The HTTP API base, for `GET {api_base}/gateway/bot`.
    pub api_base: String,
    /// The gateway API version (`v=` of the gateway URL; default
    /// `proto_core::shard::API_VERSION`).
    pub api_version: u8,
    /// The intents bitfield.
    pub intents: u64,
    /// The bot's total shard count; `None` takes `/gateway/bot`'s recommendation.
    pub shard_count: Option<u32>,
    /// The shard numbers this process runs; `None` runs all of them (from `first_shard`).
    pub shard_ids: Option<Vec<u32>>,
    /// With no `shard_ids`: run the shards from this one to the last (`"4-"`; Cordis'
    /// `STARTING_SHARD` alone). `None` means 0.
    pub first_shard: Option<u32>,
    /// IDENTIFY's `large_threshold` (50..=250).
    pub large_threshold: u8,
    /// IDENTIFY's initial presence, as a JSON object.
    pub presence: Option<String>,
    /// Transport compression.
    pub compression: Compression,
    /// Payload encoding.
    pub encoding: Encoding,
    /// Seed for the shards' jitter; `None` lets the runtime draw one.
    pub seed: Option<u64>,
    /// How long to wait for HELLO after the socket opened before reconnecting.
    pub hello_timeout: Duration,
    /// Shards identifying at once per 5 s bucket, instead of `/gateway/bot`'s
    /// `max_concurrency` (twilight-dispatch's `SHARDS_CONCURRENCY`).
    pub max_concurrency: Option<u16>,
    /// Resume the sessions stored in Redis at start-up (twilight-dispatch's `RESUME`); `false`
    /// identifies every shard afresh.
    pub resume: bool,
    /// Post shard state changes to this Discord channel (twilight-dispatch's `LOG_CHANNEL`):
    /// the one REST call besides `GET /gateway/bot`, made only when configured.
    pub log_channel: Option<u64>,
}

impl DiscordConfig {
    /// Whether a token is configured (otherwise the runtimes run the demo).
    pub fn has_token(&self) -> bool {
        !self.token.is_empty()
    }
}

/// The broker side of the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AmqpConfig {
    /// The first AMQP URL (`amqp://` or `amqps://`), with credentials: the one address when
    /// only one is configured.
    pub url: SecretUrl,
    /// Every AMQP address, in the configured order (`urls[0]` is `url`): a RabbitMQ cluster's
    /// nodes, tried round-robin when a connection fails or is lost
    /// (`proto_core::broker_failover`). `amqp.urls = [..]`, or several URLs separated by
    /// commas in `amqp.url` / `AMQP_URL`.
    pub urls: Vec<SecretUrl>,
    /// Which AMQP client publishes the events (`amqp.client`, `GATEHOUSE_AMQP_CLIENT`).
    pub client: AmqpClient,
}

/// The AMQP client events are published with (issue 13, item 1). Commands, forwarded commands,
/// dead letters and the topology stay on lapin either way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AmqpClient {
    /// lapin, as always (both binaries).
    #[default]
    Lapin,
    /// amqprs over a second connection of its own (the tokio binary `gatehouse` only).
    Amqprs,
}

/// Which output events are published to and commands read from (`[broker]`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BrokerKind {
    /// RabbitMQ (`amqp.url`), the profile's topology.
    #[default]
    Amqp,
    /// Redis Streams at `redis.url`, as `@spectacles/brokers`' `Redis` broker reads and
    /// writes them: one stream per event, commands from the streams workers publish to.
    Redis,
    /// One JSON line per event on standard output, commands as JSON lines on standard input.
    Stdio,
}

/// The output's settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BrokerConfig {
    /// Which output; `None` when nothing chose one (then AMQP, or stdio with `--stdio`).
    pub kind: Option<BrokerKind>,
    /// Redis Streams: a prefix put before every stream name (what ioredis' `keyPrefix` does
    /// for the workers); empty by default, as `@spectacles/brokers` names streams by event.
    pub stream_prefix: String,
    /// Redis Streams: trim each event stream to about this many entries (`XADD MAXLEN ~`);
    /// `None` keeps everything.
    pub max_len: Option<u64>,
    /// Redis Streams: the consumer group commands are read in; `None`: the profile's group
    /// (its exchange name, `gateway` by default).
    pub command_group: Option<String>,
}

impl BrokerConfig {
    /// The output in effect: the configured one, AMQP when none is.
    pub fn kind(&self) -> BrokerKind {
        self.kind.unwrap_or_default()
    }
}

/// The session store side of the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisConfig {
    /// Whether sessions are kept in Redis. Without Redis they live in memory, and a restart
    /// identifies every shard afresh (a start-up line warns).
    pub enabled: bool,
    /// The Redis URL (`redis://`, `rediss://`, `unix://`, a Sentinel URL
    /// `redis+sentinel://…/<master-name>` or a Redis Cluster URL `redis+cluster://…`; see
    /// `proto_core::redis_topology`), with credentials.
    pub url: SecretUrl,
    /// The prefix of every key Gatehouse writes (see `proto_core::store`). With a Redis
    /// Cluster URL, the configured prefix wrapped in a hash tag (`{gatehouse}`), so that every
    /// key lands in one hash slot (`proto_core::redis_topology::cluster_key_prefix`).
    pub key_prefix: String,
    /// At start, how long a shard whose session snapshot cannot be read (Redis unreachable)
    /// waits before it starts a new session anyway, losing what Discord would have replayed.
    /// `None` (the default): it waits until Redis answers. See `proto_core::store_sync`.
    pub identify_anyway_after: Option<std::time::Duration>,
}

/// Memory and flow limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Stop reading a shard's socket while this many of its publications are unconfirmed.
    pub max_unconfirmed_publishes: usize,
    /// Worker commands that may wait per shard for the gateway rate limiter.
    pub command_queue_capacity: usize,
    /// Largest decompressed payload accepted from Discord, in bytes.
    pub max_payload: usize,
    /// Largest WebSocket message accepted, in bytes (a real GUILD_CREATE is about 2.8 MB).
    pub max_message: usize,
    // --- The publish path (issue 9) ---
    /// Stop reading while this many bytes of publications are unconfirmed in the process
    /// (each shard of the process gets an equal share).
    pub max_unconfirmed_bytes: usize,
    /// A publication not confirmed within this many seconds fails the broker link (it is
    /// closed and everything unconfirmed is published again on the next one).
    pub confirm_timeout_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_unconfirmed_publishes: defaults::MAX_UNCONFIRMED,
            command_queue_capacity: defaults::COMMAND_QUEUE_CAPACITY,
            max_payload: proto_core::codec::DecoderConfig::default().max_payload,
            max_message: 64 << 20,
            max_unconfirmed_bytes: defaults::MAX_UNCONFIRMED_BYTES,
            confirm_timeout_secs: proto_core::outbox::DEFAULT_CONFIRM_TIMEOUT.as_secs(),
        }
    }
}

/// The Prometheus endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Where to serve `/metrics`; `None` serves nothing.
    pub address: Option<SocketAddr>,
    /// The path of the Prometheus text (default `/metrics`; Spectacles' `PROMETHEUS_ENDPOINT`).
    pub path: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            address: None,
            path: DEFAULT_METRICS_PATH.to_owned(),
        }
    }
}

/// Demo mode: a mock gateway in-process replaying recorded traffic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DemoConfig {
    /// How many dispatches per second the mock sends.
    pub events_per_second: u32,
    /// How many shards the demo runs.
    pub shard_count: u32,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            events_per_second: 20,
            shard_count: 2,
        }
    }
}

impl Config {
    /// Which shards exist and which this process owns, given `/gateway/bot`'s recommended
    /// shard count (used when `discord.shard_count` is not set).
    pub fn cluster(&self, recommended_shards: u32) -> Result<ClusterInfo, ConfigError> {
        let shard_count = self.discord.shard_count.unwrap_or(recommended_shards);
        if shard_count == 0 {
            return Err(invalid(
                "discord.shard_count",
                "the shard count is 0 (neither configured nor recommended by /gateway/bot)",
            ));
        }
        let owned = match &self.discord.shard_ids {
            Some(ids) => {
                if let Some(bad) = ids.iter().find(|&&id| id >= shard_count) {
                    return Err(invalid(
                        "discord.shard_ids",
                        format!("shard {bad} does not exist with a shard count of {shard_count}"),
                    ));
                }
                ids.clone()
            }
            None => {
                let first = self.discord.first_shard.unwrap_or(0);
                if first >= shard_count {
                    return Err(invalid(
                        "discord.shard_ids",
                        format!(
                            "the first shard {first} does not exist with a shard count of {shard_count}"
                        ),
                    ));
                }
                (first..shard_count).collect()
            }
        };
        ClusterInfo::new(shard_count, owned).map_err(|e| invalid("discord.shard_ids", e.0))
    }
}
