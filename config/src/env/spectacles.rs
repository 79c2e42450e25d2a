//! The Spectacles gateway's environment variables (spec-tacles/gateway `config/config.go` and
//! its README). Its file format (`-config gateway.toml`) is read by [`crate::formats`].
//!
//! | variable | Gatehouse key | note |
//! |---|---|---|
//! | `DISCORD_TOKEN` | `discord.token` | also Gatehouse's own name |
//! | `DISCORD_RAW_INTENTS`, `DISCORD_INTENTS` | `discord.intents` | the raw bitfield wins, as in the original |
//! | `DISCORD_SHARD_COUNT` | `discord.shard_count` | |
//! | `DISCORD_SHARD_IDS` | `discord.shard_ids` | comma list |
//! | `DISCORD_PRESENCE` | `discord.presence` | JSON |
//! | `AMQP_URL` | `amqp.url` | also Gatehouse's own name |
//! | `REDIS_URL` | `redis.url` | also Gatehouse's; `localhost:6379` (no scheme) is accepted |
//! | `SHARD_STORE_TYPE` | `redis.enabled` | `redis`, or anything else for no Redis |
//! | `SHARD_STORE_PREFIX` | `redis.key_prefix` | |
//! | `PROMETHEUS_ADDRESS` | `metrics.address` | Go's `:8080` means every interface |
//! | `PROMETHEUS_ENDPOINT` | `metrics.path` | |
//! | `BROKER_GROUP` | `profile.exchange` | spectacles profile only |
//! | `BROKER_MESSAGE_TIMEOUT` | `profile.message_timeout_ms` | Go duration; spectacles profile only |
//! | `DISCORD_EVENTS` | `profile.events`, `profile.declare_queues` | spectacles profile only |
//! | `BROKER_TYPE` | `broker.type` | `amqp`, `redis` (Redis Streams); anything else is `stdio`, as in the original |
//! | `REDIS_POOL_SIZE` | (none) | Gatehouse multiplexes one connection; warned about |

use super::{EnvKind, EnvTable, EnvVar, Unsupported, parse_go_duration_ms};
use proto_core::profile::ProfileKind;

/// The names read whatever the profile (they concern Discord, Redis and metrics).
/// `DISCORD_TOKEN`, `AMQP_URL` and `REDIS_URL` are Gatehouse's own names too, so they are in
/// [`super::gatehouse::TABLE`].
pub const TABLE: EnvTable = EnvTable {
    source: "spectacles",
    only_with: None,
    warn_elsewhere: true,
    composites: &[],
    vars: &[
        EnvVar {
            names: &["DISCORD_RAW_INTENTS", "DISCORD_INTENTS"],
            path: &["discord", "intents"],
            kind: EnvKind::IntegerOrText,
        },
        EnvVar {
            names: &["DISCORD_SHARD_COUNT"],
            path: &["discord", "shard_count"],
            kind: EnvKind::Integer,
        },
        EnvVar {
            names: &["DISCORD_SHARD_IDS"],
            path: &["discord", "shard_ids"],
            kind: EnvKind::Text,
        },
        EnvVar {
            names: &["DISCORD_PRESENCE"],
            path: &["discord", "presence"],
            kind: EnvKind::Text,
        },
        EnvVar {
            names: &["SHARD_STORE_TYPE"],
            path: &["redis", "enabled"],
            kind: EnvKind::Converted(shard_store_type),
        },
        EnvVar {
            names: &["SHARD_STORE_PREFIX"],
            path: &["redis", "key_prefix"],
            kind: EnvKind::Text,
        },
        EnvVar {
            names: &["PROMETHEUS_ADDRESS"],
            path: &["metrics", "address"],
            kind: EnvKind::Text,
        },
        EnvVar {
            names: &["PROMETHEUS_ENDPOINT"],
            path: &["metrics", "path"],
            kind: EnvKind::Text,
        },
        EnvVar {
            names: &["BROKER_TYPE"],
            path: &["broker", "type"],
            kind: EnvKind::Converted(broker_type),
        },
    ],
    unsupported: &[Unsupported {
        name: "REDIS_POOL_SIZE",
        fine: &[],
        why: "Gatehouse multiplexes one Redis connection, so there is no pool to size",
    }],
};

/// The names of the broker contract, read only with the spectacles profile.
pub const PROFILE_TABLE: EnvTable = EnvTable {
    source: "spectacles",
    only_with: Some(ProfileKind::Spectacles),
    warn_elsewhere: true,
    composites: &[],
    vars: &[
        EnvVar {
            names: &["BROKER_GROUP"],
            path: &["profile", "exchange"],
            kind: EnvKind::Text,
        },
        EnvVar {
            names: &["BROKER_MESSAGE_TIMEOUT"],
            path: &["profile", "message_timeout_ms"],
            kind: EnvKind::Converted(message_timeout),
        },
        EnvVar {
            names: &["DISCORD_EVENTS"],
            path: &["profile", "events"],
            kind: EnvKind::List,
        },
        EnvVar {
            names: &["DISCORD_EVENTS"],
            path: &["profile", "declare_queues"],
            kind: EnvKind::List,
        },
    ],
    unsupported: &[],
};

/// `SHARD_STORE_TYPE`: `redis` keeps sessions in Redis; the original treats anything else as
/// "no shard store".
fn shard_store_type(text: &str) -> Result<Option<toml::Value>, String> {
    Ok(Some(toml::Value::Boolean(
        text.eq_ignore_ascii_case("redis"),
    )))
}

/// `BROKER_TYPE` (and the file's `broker.type`): `amqp`, `redis` (Redis Streams, as
/// `@spectacles/brokers`' `Redis` broker), and anything else standard input/output, as the
/// Spectacles gateway does for every type but `amqp`.
pub(crate) fn broker_type(text: &str) -> Result<Option<toml::Value>, String> {
    let kind = match text.trim().to_ascii_lowercase().as_str() {
        "amqp" => "amqp",
        "redis" => "redis",
        _ => "stdio",
    };
    Ok(Some(toml::Value::String(kind.to_owned())))
}

/// `BROKER_MESSAGE_TIMEOUT`: a Go duration (`2m`, `1m30s`). Go's gateway treats 0 as "the
/// default"; here it means no expiration.
pub(crate) fn message_timeout(text: &str) -> Result<Option<toml::Value>, String> {
    let ms = parse_go_duration_ms(text)
        .ok_or_else(|| format!("`{text}` is not a duration like `2m`, `90s` or `1m30s`"))?;
    Ok((ms > 0).then(|| toml::Value::Integer(i64::try_from(ms).unwrap_or(i64::MAX))))
}
