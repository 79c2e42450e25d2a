//! twilight-dispatch's environment variables (chamburr/twilight-dispatch `src/config.rs` and
//! `.env.example`; a `.env` file is read too, see [`crate::formats::dotenv`]).
//!
//! | variable | Gatehouse key | note |
//! |---|---|---|
//! | `BOT_TOKEN` | `discord.token` | |
//! | `SHARDS_START`, `SHARDS_END` | `discord.shard_ids` | inclusive range |
//! | `SHARDS_TOTAL` | `discord.shard_count` | |
//! | `SHARDS_CONCURRENCY` | `discord.max_concurrency` | instead of `/gateway/bot`'s |
//! | `RESUME` | `discord.resume` | `false`: identify afresh at start |
//! | `INTENTS` | `discord.intents` | |
//! | `LARGE_THRESHOLD` | `discord.large_threshold` | |
//! | `STATUS`, `ACTIVITY_TYPE`, `ACTIVITY_NAME` | `discord.presence` | |
//! | `RABBIT_HOST`, `RABBIT_PORT`, `RABBIT_USERNAME`, `RABBIT_PASSWORD` | `amqp.url` | |
//! | `REDIS_HOST`, `REDIS_PORT` | `redis.url` | |
//! | `PROMETHEUS_HOST`, `PROMETHEUS_PORT` | `metrics.address` | |
//! | `DEFAULT_QUEUE` (older: `DECLARE_QUEUE`) | `profile.default_queue` | twilight-dispatch profile only |
//! | `LOG_CHANNEL` | `discord.log_channel` | shard state changes posted to that channel |
//! | `SHARDS_WAIT`, `CLUSTERS`, `STATE_*` | (none) | warned about (see the README) |

use proto_core::profile::ProfileKind;

use super::{
    CompositeEnvVar, EnvKind, EnvLookup, EnvTable, EnvVar, Unsupported, number, set_value,
    userinfo_escape,
};

const STATE_WHY: &str = "Gatehouse keeps no cache of Discord's state (the Cordis spec forbids \
    implicit caching), so the original's optional `old` field is never produced";

/// The names read whatever the profile (they concern Discord, RabbitMQ, Redis and metrics).
pub const TABLE: EnvTable = EnvTable {
    source: "twilight-dispatch",
    only_with: None,
    warn_elsewhere: true,
    composites: &[
        CompositeEnvVar {
            names: &["SHARDS_START", "SHARDS_END"],
            path: &["discord", "shard_ids"],
            build: shards,
        },
        CompositeEnvVar {
            names: &["STATUS", "ACTIVITY_TYPE", "ACTIVITY_NAME"],
            path: &["discord", "presence"],
            build: presence,
        },
        CompositeEnvVar {
            names: &[
                "RABBIT_HOST",
                "RABBIT_PORT",
                "RABBIT_USERNAME",
                "RABBIT_PASSWORD",
            ],
            path: &["amqp", "url"],
            build: rabbit_url,
        },
        CompositeEnvVar {
            names: &["REDIS_HOST", "REDIS_PORT"],
            path: &["redis", "url"],
            build: redis_url,
        },
        CompositeEnvVar {
            names: &["PROMETHEUS_HOST", "PROMETHEUS_PORT"],
            path: &["metrics", "address"],
            build: prometheus_address,
        },
    ],
    vars: &[
        EnvVar {
            names: &["BOT_TOKEN"],
            path: &["discord", "token"],
            kind: EnvKind::Text,
        },
        EnvVar {
            names: &["SHARDS_TOTAL"],
            path: &["discord", "shard_count"],
            kind: EnvKind::Integer,
        },
        EnvVar {
            names: &["SHARDS_CONCURRENCY"],
            path: &["discord", "max_concurrency"],
            kind: EnvKind::Integer,
        },
        EnvVar {
            names: &["RESUME"],
            path: &["discord", "resume"],
            kind: EnvKind::Boolean,
        },
        EnvVar {
            names: &["LOG_CHANNEL"],
            path: &["discord", "log_channel"],
            kind: EnvKind::Integer,
        },
        EnvVar {
            names: &["INTENTS"],
            path: &["discord", "intents"],
            kind: EnvKind::IntegerOrText,
        },
        EnvVar {
            names: &["LARGE_THRESHOLD"],
            path: &["discord", "large_threshold"],
            kind: EnvKind::Integer,
        },
    ],
    unsupported: &[
        Unsupported {
            name: "SHARDS_WAIT",
            fine: &[],
            why: "Gatehouse spaces identifies by Discord's rule (one bucket per 5 s, \
                  `max_concurrency` shards per bucket)",
        },
        Unsupported {
            name: "CLUSTERS",
            fine: &["1"],
            why: "Gatehouse runs the shards of a process as one group with one identify queue; \
                  start more processes with their own SHARDS_START/SHARDS_END instead",
        },
        Unsupported {
            name: "STATE_ENABLED",
            fine: &["false"],
            why: STATE_WHY,
        },
        Unsupported {
            name: "STATE_MEMBER",
            fine: &["false"],
            why: STATE_WHY,
        },
        Unsupported {
            name: "STATE_MEMBER_TTL",
            fine: &[],
            why: STATE_WHY,
        },
        Unsupported {
            name: "STATE_MESSAGE",
            fine: &["false"],
            why: STATE_WHY,
        },
        Unsupported {
            name: "STATE_MESSAGE_TTL",
            fine: &[],
            why: STATE_WHY,
        },
        Unsupported {
            name: "STATE_PRESENCE",
            fine: &["false"],
            why: STATE_WHY,
        },
    ],
};

/// The names of the broker contract, read only with the twilight-dispatch profile.
pub const PROFILE_TABLE: EnvTable = EnvTable {
    source: "twilight-dispatch",
    only_with: Some(ProfileKind::TwilightDispatch),
    warn_elsewhere: true,
    composites: &[],
    vars: &[EnvVar {
        names: &["DEFAULT_QUEUE", "DECLARE_QUEUE"],
        path: &["profile", "default_queue"],
        kind: EnvKind::Boolean,
    }],
    unsupported: &[],
};

/// `SHARDS_START`..=`SHARDS_END`.
fn shards(env: EnvLookup<'_>) -> Option<Result<toml::Value, String>> {
    let start = number(env, "SHARDS_START");
    let end = number(env, "SHARDS_END");
    if start.is_none() && end.is_none() {
        return None;
    }
    Some((|| {
        let start = start.transpose()?.unwrap_or(0);
        let end = end
            .transpose()?
            .ok_or("SHARDS_START is set but SHARDS_END is not")?;
        Ok(toml::Value::String(format!("{start}-{end}")))
    })())
}

/// `STATUS` (`online`, `idle`, `dnd`, `invisible`), `ACTIVITY_TYPE` (a number, 0 = playing)
/// and `ACTIVITY_NAME` as IDENTIFY's presence.
fn presence(env: EnvLookup<'_>) -> Option<Result<toml::Value, String>> {
    let status = set_value(env, "STATUS");
    let kind = number(env, "ACTIVITY_TYPE");
    let name = set_value(env, "ACTIVITY_NAME");
    if status.is_none() && kind.is_none() && name.is_none() {
        return None;
    }
    Some((|| {
        let kind = kind.transpose()?.unwrap_or(0);
        let activities = match name {
            Some(name) => serde_json::json!([{ "type": kind, "name": name }]),
            None => serde_json::json!([]),
        };
        let presence = serde_json::json!({
            "status": status.unwrap_or_else(|| "online".into()).to_ascii_lowercase(),
            "activities": activities,
            "afk": false,
            "since": null,
        });
        Ok(toml::Value::String(presence.to_string()))
    })())
}

/// `RABBIT_HOST`, `RABBIT_PORT`, `RABBIT_USERNAME`, `RABBIT_PASSWORD`.
fn rabbit_url(env: EnvLookup<'_>) -> Option<Result<toml::Value, String>> {
    let names = [
        "RABBIT_HOST",
        "RABBIT_PORT",
        "RABBIT_USERNAME",
        "RABBIT_PASSWORD",
    ];
    if names.iter().all(|n| set_value(env, n).is_none()) {
        return None;
    }
    let host = set_value(env, "RABBIT_HOST").unwrap_or_else(|| "127.0.0.1".into());
    let port = set_value(env, "RABBIT_PORT").unwrap_or_else(|| "5672".into());
    let user = set_value(env, "RABBIT_USERNAME").unwrap_or_else(|| "guest".into());
    let password = set_value(env, "RABBIT_PASSWORD").unwrap_or_else(|| "guest".into());
    Some(Ok(toml::Value::String(format!(
        "amqp://{}:{}@{host}:{port}/%2f",
        userinfo_escape(&user),
        userinfo_escape(&password)
    ))))
}

/// `REDIS_HOST`, `REDIS_PORT`.
fn redis_url(env: EnvLookup<'_>) -> Option<Result<toml::Value, String>> {
    host_port(env, ["REDIS_HOST", "REDIS_PORT"], "6379")
        .map(|hp| hp.map(|hp| toml::Value::String(format!("redis://{hp}/"))))
}

/// `PROMETHEUS_HOST`, `PROMETHEUS_PORT`.
fn prometheus_address(env: EnvLookup<'_>) -> Option<Result<toml::Value, String>> {
    host_port(env, ["PROMETHEUS_HOST", "PROMETHEUS_PORT"], "9000")
        .map(|hp| hp.map(toml::Value::String))
}

fn host_port(
    env: EnvLookup<'_>,
    [host, port]: [&str; 2],
    default_port: &str,
) -> Option<Result<String, String>> {
    let host = set_value(env, host);
    let port = set_value(env, port);
    if host.is_none() && port.is_none() {
        return None;
    }
    Some(Ok(format!(
        "{}:{}",
        host.unwrap_or_else(|| "127.0.0.1".into()),
        port.unwrap_or_else(|| default_port.into())
    )))
}
