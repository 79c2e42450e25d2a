//! Gatehouse's own environment variables, and the neutral names of the conformance contract
//! (`SHARD_COUNT`, `SHARD_IDS`, `DISCORD_API_BASE`, ...), which any implementation reads.
//!
//! Applied last, so these names win over every predecessor's.

use super::{CompositeEnvVar, EnvKind, EnvLookup, EnvTable, EnvVar, number};

/// Gatehouse's names.
pub const TABLE: EnvTable = EnvTable {
    source: "gatehouse",
    only_with: None,
    warn_elsewhere: true,
    composites: &[CompositeEnvVar {
        names: &["GATEHOUSE_SHARD_COUNT", "SHARD_COUNT"],
        path: &["discord", "shard_count"],
        build: shard_count,
    }],
    vars: &[
        EnvVar {
            names: &["DISCORD_TOKEN"],
            path: &["discord", "token"],
            kind: EnvKind::Text,
        },
        EnvVar {
            names: &["GATEHOUSE_API_BASE", "DISCORD_API_BASE"],
            path: &["discord", "api_base"],
            kind: EnvKind::Text,
        },
        EnvVar {
            names: &["GATEHOUSE_API_VERSION", "DISCORD_API_VERSION"],
            path: &["discord", "api_version"],
            kind: EnvKind::Integer,
        },
        EnvVar {
            names: &["GATEHOUSE_INTENTS"],
            path: &["discord", "intents"],
            kind: EnvKind::IntegerOrText,
        },
        EnvVar {
            names: &["GATEHOUSE_SHARD_IDS", "SHARD_IDS"],
            path: &["discord", "shard_ids"],
            kind: EnvKind::Text,
        },
        EnvVar {
            names: &["GATEHOUSE_LARGE_THRESHOLD"],
            path: &["discord", "large_threshold"],
            kind: EnvKind::Integer,
        },
        EnvVar {
            names: &["GATEHOUSE_COMPRESSION", "DISCORD_COMPRESS"],
            path: &["discord", "compression"],
            kind: EnvKind::Text,
        },
        EnvVar {
            names: &["GATEHOUSE_ENCODING", "DISCORD_ENCODING"],
            path: &["discord", "encoding"],
            kind: EnvKind::Text,
        },
        EnvVar {
            names: &["AMQP_URL"],
            path: &["amqp", "url"],
            kind: EnvKind::Text,
        },
        EnvVar {
            names: &["GATEHOUSE_AMQP_CLIENT"],
            path: &["amqp", "client"],
            kind: EnvKind::Text,
        },
        EnvVar {
            names: &["GATEHOUSE_QUEUE_TYPE"],
            path: &["profile", "queue_type"],
            kind: EnvKind::Text,
        },
        EnvVar {
            names: &["GATEHOUSE_BROKER_TYPE"],
            path: &["broker", "type"],
            kind: EnvKind::Text,
        },
        EnvVar {
            names: &["GATEHOUSE_BROKER_STREAM_PREFIX"],
            path: &["broker", "stream_prefix"],
            kind: EnvKind::Text,
        },
        EnvVar {
            names: &["GATEHOUSE_BROKER_MAX_LEN"],
            path: &["broker", "max_len"],
            kind: EnvKind::Integer,
        },
        EnvVar {
            names: &["REDIS_URL"],
            path: &["redis", "url"],
            kind: EnvKind::Text,
        },
        EnvVar {
            names: &["GATEHOUSE_REDIS_SENTINEL_USERNAME"],
            path: &["redis", "sentinel_username"],
            kind: EnvKind::Text,
        },
        EnvVar {
            names: &["GATEHOUSE_REDIS_SENTINEL_PASSWORD"],
            path: &["redis", "sentinel_password"],
            kind: EnvKind::Text,
        },
        EnvVar {
            names: &["GATEHOUSE_REDIS_PREFIX", "REDIS_KEY_PREFIX"],
            path: &["redis", "key_prefix"],
            kind: EnvKind::Text,
        },
        EnvVar {
            names: &["GATEHOUSE_REDIS_IDENTIFY_ANYWAY_AFTER_SECS"],
            path: &["redis", "identify_anyway_after_secs"],
            kind: EnvKind::Integer,
        },
        EnvVar {
            names: &["GATEHOUSE_PROFILE", "BROKER_PROFILE"],
            path: &["profile", "kind"],
            kind: EnvKind::Text,
        },
        EnvVar {
            names: &["GATEHOUSE_BODY_ENCODING", "BROKER_BODY_ENCODING"],
            path: &["profile", "body"],
            kind: EnvKind::Text,
        },
        EnvVar {
            names: &["GATEHOUSE_EXCHANGE"],
            path: &["profile", "exchange"],
            kind: EnvKind::Text,
        },
        EnvVar {
            names: &["GATEHOUSE_METRICS_ADDRESS"],
            path: &["metrics", "address"],
            kind: EnvKind::Text,
        },
        EnvVar {
            names: &["GATEHOUSE_CLUSTER"],
            path: &["cluster", "name"],
            kind: EnvKind::Text,
        },
        EnvVar {
            names: &["GATEHOUSE_CLUSTER_LEASE_MS"],
            path: &["cluster", "lease_ms"],
            kind: EnvKind::Integer,
        },
        EnvVar {
            names: &["SENTRY_DSN"],
            path: &["sentry", "url"],
            kind: EnvKind::Text,
        },
        EnvVar {
            names: &["GATEHOUSE_MAX_UNCONFIRMED"],
            path: &["limits", "max_unconfirmed_publishes"],
            kind: EnvKind::Integer,
        },
        EnvVar {
            names: &["GATEHOUSE_MAX_UNCONFIRMED_BYTES"],
            path: &["limits", "max_unconfirmed_bytes"],
            kind: EnvKind::Integer,
        },
        EnvVar {
            names: &["GATEHOUSE_CONFIRM_TIMEOUT_SECS"],
            path: &["limits", "confirm_timeout_secs"],
            kind: EnvKind::Integer,
        },
    ],
    unsupported: &[],
};

/// `GATEHOUSE_SHARD_COUNT`, or the neutral `SHARD_COUNT` (the total), except where Cordis 1.x's
/// shard names are in use: there `SHARD_COUNT` means the shards of this process (see
/// [`super::cordis`]).
fn shard_count(env: EnvLookup<'_>) -> Option<Result<toml::Value, String>> {
    let count = number(env, "GATEHOUSE_SHARD_COUNT").or_else(|| {
        if super::cordis::uses_unprefixed_shard_names(env) {
            None
        } else {
            number(env, "SHARD_COUNT")
        }
    })?;
    Some(count.map(|n| toml::Value::Integer(n.into())))
}
