//! The serde shapes of Gatehouse's configuration file before validation (every field optional,
//! unknown keys refused).
//!
//! Owns: which keys the file (and the environment overlay, which writes into the same tree) may
//! hold, and their types. Does not own: defaults and checks ([`crate::validate`]).

use proto_core::codec::{Compression, Encoding};
use proto_core::profile::ProfileConfig;
use proto_core::secret::Secret;

/// The whole file.
#[derive(serde::Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub(crate) discord: RawDiscord,
    pub(crate) amqp: RawAmqp,
    pub(crate) broker: RawBroker,
    pub(crate) redis: RawRedis,
    pub(crate) profile: ProfileConfig,
    pub(crate) limits: RawLimits,
    pub(crate) metrics: RawMetrics,
    pub(crate) demo: RawDemo,
    pub(crate) cluster: RawCluster,
    pub(crate) sentry: RawSentry,
}

/// `[cluster]`.
#[derive(serde::Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawCluster {
    pub(crate) name: Option<String>,
    pub(crate) lease_ms: Option<u64>,
}

/// `[sentry]`.
#[derive(serde::Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawSentry {
    pub(crate) url: Option<String>,
}

/// `[discord]`.
#[derive(serde::Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawDiscord {
    pub(crate) token: Option<Secret>,
    pub(crate) api_base: Option<String>,
    pub(crate) api_version: Option<u8>,
    pub(crate) intents: Option<RawIntents>,
    pub(crate) shard_count: Option<u32>,
    pub(crate) shard_ids: Option<RawShardIds>,
    pub(crate) large_threshold: Option<u8>,
    pub(crate) presence: Option<toml::Value>,
    pub(crate) compression: Option<Compression>,
    pub(crate) encoding: Option<Encoding>,
    pub(crate) seed: Option<u64>,
    pub(crate) hello_timeout_ms: Option<u64>,
    pub(crate) max_concurrency: Option<u16>,
    pub(crate) resume: Option<bool>,
    pub(crate) log_channel: Option<u64>,
}

/// Intents as a number, a list of names, or one comma-separated string.
#[derive(serde::Deserialize)]
#[serde(untagged)]
pub(crate) enum RawIntents {
    Bits(u64),
    Names(Vec<String>),
    Text(String),
}

/// Shard ids as a list or a selection string (`"0-3,8"`, `"4-"`).
#[derive(serde::Deserialize)]
#[serde(untagged)]
pub(crate) enum RawShardIds {
    List(Vec<u32>),
    Text(String),
}

/// `[amqp]`.
#[derive(serde::Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawAmqp {
    pub(crate) url: Option<String>,
    pub(crate) urls: Option<Vec<String>>,
    pub(crate) client: Option<crate::model::AmqpClient>,
}

/// `[broker]`: which output events go to and commands come from (issue 14).
#[derive(serde::Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawBroker {
    #[serde(rename = "type")]
    pub(crate) kind: Option<crate::model::BrokerKind>,
    pub(crate) stream_prefix: Option<String>,
    pub(crate) max_len: Option<u64>,
    pub(crate) command_group: Option<String>,
}

/// `[redis]`.
#[derive(serde::Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawRedis {
    pub(crate) enabled: Option<bool>,
    pub(crate) url: Option<String>,
    pub(crate) key_prefix: Option<String>,
    pub(crate) identify_anyway_after_secs: Option<u64>,
    pub(crate) sentinel_username: Option<String>,
    pub(crate) sentinel_password: Option<String>,
}

/// `[limits]`.
#[derive(serde::Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawLimits {
    pub(crate) max_unconfirmed_publishes: Option<usize>,
    pub(crate) command_queue_capacity: Option<usize>,
    pub(crate) max_payload: Option<usize>,
    pub(crate) max_message: Option<usize>,
    pub(crate) max_unconfirmed_bytes: Option<usize>,
    pub(crate) confirm_timeout_secs: Option<u64>,
}

/// `[metrics]`.
#[derive(serde::Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawMetrics {
    pub(crate) address: Option<String>,
    pub(crate) path: Option<String>,
}

/// `[demo]`.
#[derive(serde::Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawDemo {
    pub(crate) events_per_second: Option<u32>,
    pub(crate) shard_count: Option<u32>,
}
