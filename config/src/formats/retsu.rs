//! Retsu's `config.json` (veldtech/retsu `src/Retsu.Publisher/Models/ApplicationConfig.cs`),
//! translated into Gatehouse's format. Retsu reads no environment variables.
//!
//! | Retsu key | Gatehouse key |
//! |---|---|
//! | `discord.token` | `discord.token` |
//! | `discord.shard_count` | `discord.shard_count` (0: `/gateway/bot`'s recommendation) |
//! | `discord.shard_start_index`, `discord.shard_num` | `discord.shard_ids` (`shard_num` shards from the start index; absent or 0: up to the last) |
//! | `discord.intents` | `discord.intents` |
//! | `discord.use_large_bot_sharding` | none needed: Gatehouse always follows `max_concurrency` |
//! | `ignore_packets` | `profile.ignored_events` |
//! | `msg_queue.url` | `amqp.url` |
//! | `redis_url` (StackExchange form `host:port,password=...`) | `redis.url`; empty: no Redis |
//! | `sentry_url` | `sentry.url` (opt-in error reports) |
//! | `loglevel` | warned about: set `RUST_LOG` |
//!
//! Selects the retsu profile (an environment variable may still choose another).

use serde_json::Value;

use super::{set, string};
use crate::ConfigError;

/// The Gatehouse tree for a Retsu `config.json`.
pub fn translate(json: &Value, warnings: &mut Vec<String>) -> Result<toml::Table, ConfigError> {
    let Value::Object(root) = json else {
        return Err(ConfigError::File(
            "a JSON configuration must be an object (Retsu's config.json)".into(),
        ));
    };
    let mut out = toml::Table::new();
    set(&mut out, &["profile", "kind"], string("retsu"));
    let mut start = 0;
    let mut count = 0;
    for (key, value) in root {
        match (key.as_str(), value) {
            ("discord", Value::Object(discord)) => {
                for (key, value) in discord {
                    match (key.as_str(), value) {
                        ("token", Value::String(t)) => {
                            set(&mut out, &["discord", "token"], string(t.as_str()));
                        }
                        ("shard_count", v) => {
                            let n = number(v, "discord.shard_count")?;
                            if n > 0 {
                                set(&mut out, &["discord", "shard_count"], n.into());
                            }
                        }
                        ("shard_start_index", v) => start = number(v, "discord.shard_start_index")?,
                        ("shard_num", v) => count = number(v, "discord.shard_num")?,
                        ("intents", Value::Number(n)) => {
                            let bits = n.as_i64().filter(|n| *n >= 0).ok_or_else(|| {
                                ConfigError::File("discord.intents: not a bitfield".into())
                            })?;
                            set(&mut out, &["discord", "intents"], bits.into());
                        }
                        ("intents", Value::String(s)) => {
                            set(&mut out, &["discord", "intents"], string(s.as_str()));
                        }
                        ("use_large_bot_sharding", _) => {}
                        _ => unknown(warnings, &format!("discord.{key}")),
                    }
                }
            }
            ("ignore_packets", Value::Array(list)) => {
                let names = list
                    .iter()
                    .map(|v| match v {
                        Value::String(s) => Ok(string(s.as_str())),
                        _ => Err(ConfigError::File(
                            "ignore_packets: every item must be an event name".into(),
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                set(
                    &mut out,
                    &["profile", "ignored_events"],
                    toml::Value::Array(names),
                );
            }
            ("msg_queue", Value::Object(queue)) => {
                for (key, value) in queue {
                    match (key.as_str(), value) {
                        ("url", Value::String(url)) => {
                            set(&mut out, &["amqp", "url"], string(url.as_str()));
                        }
                        _ => unknown(warnings, &format!("msg_queue.{key}")),
                    }
                }
            }
            ("redis_url", Value::String(url)) if url.trim().is_empty() => {
                set(&mut out, &["redis", "enabled"], toml::Value::Boolean(false));
            }
            ("redis_url", Value::String(url)) => {
                set(&mut out, &["redis", "url"], string(url.as_str()));
            }
            ("sentry_url", Value::String(url)) => {
                set(&mut out, &["sentry", "url"], string(url.as_str()));
            }
            ("sentry_url", Value::Null) => {}
            ("loglevel" | "log_level", _) => warnings.push(format!(
                "{key} (retsu) has no effect: set RUST_LOG (for example RUST_LOG=debug)"
            )),
            ("ignored_packets", _) => warnings.push(
                "ignored_packets is not a key of Retsu's config.json (it is `ignore_packets`); \
                 it has no effect"
                    .to_owned(),
            ),
            _ => unknown(warnings, key),
        }
    }
    if start > 0 || count > 0 {
        let ids = if count > 0 {
            format!("{start}-{}", start + count - 1)
        } else {
            format!("{start}-")
        };
        set(&mut out, &["discord", "shard_ids"], string(ids));
    }
    Ok(out)
}

fn number(value: &Value, key: &str) -> Result<u32, ConfigError> {
    value
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| ConfigError::File(format!("{key}: not a non-negative integer")))
}

fn unknown(warnings: &mut Vec<String>, key: &str) {
    warnings.push(format!(
        "`{key}` in Retsu's config.json is not a key Gatehouse knows; it has no effect"
    ));
}
