//! The Spectacles gateway's configuration file (`-config gateway.toml`; spec-tacles/gateway
//! `config/config.go` and its README), translated into Gatehouse's format.
//!
//! | Spectacles key | Gatehouse key |
//! |---|---|
//! | `token` | `discord.token` |
//! | `events` | `profile.events` and `profile.declare_queues` |
//! | `intents` (names; `GUILD_EMOJIS` included), `rawintents` | `discord.intents` (the raw bitfield wins) |
//! | `shards.count`, `shards.ids` | `discord.shard_count`, `discord.shard_ids` |
//! | `broker.group`, `broker.message_timeout` | `profile.exchange`, `profile.message_timeout_ms` |
//! | `broker.type` | `broker.type`: `amqp`, `redis`, anything else `stdio` (as the original) |
//! | `prometheus.address` (`:8080`), `prometheus.endpoint` | `metrics.address`, `metrics.path` |
//! | `shard_store.type`, `shard_store.prefix` | `redis.enabled` (`redis`), `redis.key_prefix` |
//! | `presence` (with the old `game`) | `discord.presence` (with `activities`) |
//! | `amqp.url`, `redis.url` (`localhost:6379`) | `amqp.url`, `redis.url` |
//! | `redis.pool_size` | warned about (one multiplexed connection) |
//!
//! Selects the spectacles profile (an environment variable may still choose another).

use super::{set, string};
use crate::ConfigError;

/// Keys only the Spectacles format has at the top level.
const OWN_KEYS: &[&str] = &[
    "token",
    "events",
    "intents",
    "rawintents",
    "raw_intents",
    "shards",
    "broker",
    "prometheus",
    "shard_store",
    "presence",
];

/// Keys of Gatehouse's `[broker]` that the Spectacles gateway's has not.
const GATEHOUSE_BROKER_KEYS: &[&str] = &["stream_prefix", "max_len", "command_group"];

/// Whether a TOML file is the Spectacles gateway's rather than Gatehouse's.
pub fn looks_like(table: &toml::Table) -> bool {
    // Gatehouse's own `[broker]` (issue 14) has keys the Spectacles one has not.
    let gatehouse_broker = table
        .get("broker")
        .and_then(toml::Value::as_table)
        .is_some_and(|b| GATEHOUSE_BROKER_KEYS.iter().any(|k| b.contains_key(*k)));
    let own = table.keys().any(|k| {
        let k = k.to_ascii_lowercase();
        OWN_KEYS.contains(&k.as_str()) && !(k == "broker" && gatehouse_broker)
    });
    let pool_size = table
        .get("redis")
        .and_then(|r| r.get("pool_size"))
        .is_some();
    let gatehouse = ["discord", "profile", "limits", "metrics", "demo"]
        .iter()
        .any(|k| table.contains_key(*k));
    (own || pool_size) && !gatehouse
}

/// The Gatehouse tree for a Spectacles file.
pub fn translate(
    file: toml::Table,
    warnings: &mut Vec<String>,
) -> Result<toml::Table, ConfigError> {
    let mut out = toml::Table::new();
    set(&mut out, &["profile", "kind"], string("spectacles"));
    let mut raw_intents = None;
    for (key, value) in file {
        let section = key.to_ascii_lowercase();
        match (section.as_str(), value) {
            ("token", v) => set(&mut out, &["discord", "token"], v),
            ("events", v) => {
                set(&mut out, &["profile", "events"], v.clone());
                set(&mut out, &["profile", "declare_queues"], v);
            }
            ("intents", v) => set(&mut out, &["discord", "intents"], v),
            ("rawintents" | "raw_intents", v) => raw_intents = Some(v),
            ("presence", toml::Value::Table(presence)) => {
                set(&mut out, &["discord", "presence"], presence_of(presence));
            }
            (_, toml::Value::Table(sub)) => {
                for (key, v) in sub {
                    let key = key.to_ascii_lowercase();
                    translate_key(&mut out, warnings, &section, &key, v)?;
                }
            }
            (key, _) => unknown(warnings, key),
        }
    }
    if let Some(raw) = raw_intents.filter(|v| v.as_integer() != Some(0)) {
        set(&mut out, &["discord", "intents"], raw);
    }
    Ok(out)
}

/// The keys of the file's tables that map one to one.
const KEYS: &[(&str, &str, &[&str])] = &[
    ("shards", "count", &["discord", "shard_count"]),
    ("shards", "ids", &["discord", "shard_ids"]),
    ("broker", "group", &["profile", "exchange"]),
    ("prometheus", "address", &["metrics", "address"]),
    ("prometheus", "endpoint", &["metrics", "path"]),
    ("shard_store", "prefix", &["redis", "key_prefix"]),
    ("amqp", "url", &["amqp", "url"]),
    ("redis", "url", &["redis", "url"]),
];

/// One key `section.key` of the file.
fn translate_key(
    out: &mut toml::Table,
    warnings: &mut Vec<String>,
    section: &str,
    key: &str,
    value: toml::Value,
) -> Result<(), ConfigError> {
    if let Some((_, _, path)) = KEYS.iter().find(|(s, k, _)| *s == section && *k == key) {
        set(out, path, value);
        return Ok(());
    }
    match (section, key, value) {
        ("broker", "type", toml::Value::String(t)) => {
            let kind = crate::env::spectacles::broker_type(&t).map_err(ConfigError::File)?;
            if let Some(kind) = kind {
                set(out, &["broker", "type"], kind);
            }
        }
        ("broker", "message_timeout" | "messagetimeout", toml::Value::String(d)) => {
            let ms = crate::env::spectacles::message_timeout(&d)
                .map_err(|e| ConfigError::File(format!("broker.message_timeout: {e}")))?;
            if let Some(ms) = ms {
                set(out, &["profile", "message_timeout_ms"], ms);
            }
        }
        ("shard_store", "type", toml::Value::String(t)) => set(
            out,
            &["redis", "enabled"],
            toml::Value::Boolean(t.eq_ignore_ascii_case("redis")),
        ),
        ("redis", "pool_size" | "poolsize", _) => warnings.push(
            "redis.pool_size (spectacles) has no effect: Gatehouse multiplexes one Redis \
             connection"
                .to_owned(),
        ),
        _ => unknown(warnings, &format!("{section}.{key}")),
    }
    Ok(())
}

fn unknown(warnings: &mut Vec<String>, key: &str) {
    warnings.push(format!(
        "`{key}` in the Spectacles configuration file is not a key Gatehouse knows; it has no effect"
    ));
}

/// Spectacles' presence (`status`, `afk`, `since`, and the old single `game`) as a presence
/// of the current gateway (`activities`).
fn presence_of(mut presence: toml::Table) -> toml::Value {
    let game = presence.remove("game");
    let activities = presence
        .entry("activities")
        .or_insert_with(|| toml::Value::Array(Vec::new()));
    if let (Some(game), toml::Value::Array(list)) = (game, activities) {
        list.push(game);
    }
    presence.entry("afk").or_insert(toml::Value::Boolean(false));
    presence.entry("status").or_insert_with(|| string("online"));
    toml::Value::Table(presence)
}
