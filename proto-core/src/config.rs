//! Gatehouse's configuration model: the TOML file, the environment overlay and validation.
//!
//! Owns: the typed [`Config`], parsing it from TOML text, overlaying environment variables (read
//! through a lookup closure, so this module never touches the process environment), defaults,
//! and validation with clear messages. Also the shard selection syntax (`0-3`, `0,2,5`) and the
//! redaction of secrets in URLs for logs.
//!
//! Does not own: reading files or the environment (the runtime passes text and a closure),
//! `GET /gateway/bot` (the runtime asks; [`Config::cluster`] combines the answer with the
//! configuration), or the meaning of the profile table (see [`crate::profile`]).
//!
//! The environment overlay is a table ([`ENV_VARS`]): each entry maps one or more variable
//! names (the first is Gatehouse's own, the others are aliases, for example a predecessor's
//! name) to a key path of the file. Values from the environment win over the file.

use std::fmt;
use std::net::SocketAddr;

use crate::codec::{Compression, Encoding};
use crate::profile::{ClusterInfo, ProfileConfig};
use crate::secret::Secret;

/// The Discord API base used when none is configured.
pub const DEFAULT_API_BASE: &str = "https://discord.com/api/v10";
/// The RabbitMQ URL used when none is configured.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// The Redis URL used when none is configured.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379/";
/// The Redis key prefix used when none is configured.
pub const DEFAULT_KEY_PREFIX: &str = "gatehouse";

/// The complete, validated configuration of one Gatehouse process.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The Discord side.
    pub discord: DiscordConfig,
    /// The broker.
    pub amqp: AmqpConfig,
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
}

/// The Discord side of the configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct DiscordConfig {
    /// The bot token (without `Bot `). Empty means "no token": the runtimes run the demo.
    pub token: Secret,
    /// The HTTP API base, for `GET {api_base}/gateway/bot`.
    pub api_base: String,
    /// The intents bitfield.
    pub intents: u64,
    /// The bot's total shard count; `None` takes `/gateway/bot`'s recommendation.
    pub shard_count: Option<u32>,
    /// The shard numbers this process runs; `None` runs all of them.
    pub shard_ids: Option<Vec<u32>>,
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
    /// The AMQP URL (`amqp://` or `amqps://`), with credentials.
    pub url: SecretUrl,
}

/// The session store side of the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisConfig {
    /// The Redis URL (`redis://`, `rediss://` or `unix://`), with credentials.
    pub url: SecretUrl,
    /// The prefix of every key Gatehouse writes (see [`crate::store`]).
    pub key_prefix: String,
    /// At start, how long a shard whose session snapshot cannot be read (Redis unreachable)
    /// waits before it starts a new session anyway, losing what Discord would have replayed.
    /// `None` (the default): it waits until Redis answers. See [`crate::store_sync`].
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
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_unconfirmed_publishes: 1000,
            command_queue_capacity: 64,
            max_payload: 64 << 20,
            max_message: 64 << 20,
        }
    }
}

/// The Prometheus endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct MetricsConfig {
    /// Where to serve `/metrics`; `None` serves nothing.
    pub address: Option<SocketAddr>,
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

/// A URL that may carry credentials. `Debug` and `Display` show it with the userinfo redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(Secret);

impl SecretUrl {
    /// Wraps a URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self(Secret::new(url))
    }

    /// The URL itself, credentials included, for the one place that connects with it.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }

    /// The URL with any password replaced by `***`, for logs.
    pub fn redacted(&self) -> String {
        redact_url(self.0.expose())
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// `scheme://user:password@host/...` becomes `scheme://user:***@host/...`; a userinfo without
/// a colon (a bare token, as Redis allows) becomes `***`. URLs without userinfo are unchanged.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let authority_start = scheme_end + 3;
    let rest = &url[authority_start..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let redacted_userinfo = match userinfo.split_once(':') {
        Some((user, _password)) => format!("{user}:***"),
        None => "***".to_owned(),
    };
    format!(
        "{}{}{}",
        &url[..authority_start],
        redacted_userinfo,
        &url[authority_start + at..]
    )
}

/// Why a configuration was refused. Messages name the key or variable, never a secret value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The file is not valid TOML or has unknown or mistyped keys.
    #[error("configuration file: {0}")]
    File(String),
    /// An environment variable has a value of the wrong kind.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable.
        var: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A value is out of range or inconsistent with another.
    #[error("configuration key `{key}`: {message}")]
    Invalid {
        /// The key path, for example `discord.shard_ids`.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// What kind of value an environment variable holds.
#[derive(Clone, Copy, Debug)]
pub enum EnvKind {
    /// Any text.
    Text,
    /// A non-negative integer.
    Integer,
    /// `true`/`false` (also `1`/`0`, `yes`/`no`).
    Boolean,
    /// An integer when it parses as one, text otherwise (intents: `513` or `GUILDS,GUILD_MESSAGES`).
    IntegerOrText,
    /// Text converted to Gatehouse's form (a predecessor's spelling of a setting).
    Converted(fn(&str) -> Result<String, String>),
}

/// The environment as a lookup: `Some(value)` when the variable is set.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// A setting a predecessor spread over several variables (host and port, first and last
/// shard). Applied before [`ENV_VARS`], so Gatehouse's own names win.
#[derive(Clone, Copy, Debug)]
pub struct CompositeEnvVar {
    /// The variables it reads (for documentation and error messages).
    pub names: &'static [&'static str],
    /// The key path in the file.
    pub path: &'static [&'static str],
    /// The value, or `None` when none of the variables is set.
    pub build: fn(EnvLookup<'_>) -> Option<Result<String, String>>,
}

/// One row of the environment mapping.
#[derive(Clone, Copy, Debug)]
pub struct EnvVar {
    /// Variable names; the first is Gatehouse's own, the others are aliases, checked in order.
    pub names: &'static [&'static str],
    /// The key path in the file, for example `["discord", "token"]`.
    pub path: &'static [&'static str],
    /// The kind of value.
    pub kind: EnvKind,
}

/// The environment variables Gatehouse reads, and the file keys they set.
pub const ENV_VARS: &[EnvVar] = &[
    EnvVar {
        names: &["DISCORD_TOKEN", "BOT_TOKEN", "CORDIS_AUTH"],
        path: &["discord", "token"],
        kind: EnvKind::Text,
    },
    EnvVar {
        names: &["GATEHOUSE_API_BASE", "DISCORD_API_BASE"],
        path: &["discord", "api_base"],
        kind: EnvKind::Text,
    },
    EnvVar {
        names: &[
            "GATEHOUSE_INTENTS",
            "DISCORD_INTENTS",
            "INTENTS",
            "CORDIS_WS_INTENTS",
        ],
        path: &["discord", "intents"],
        kind: EnvKind::IntegerOrText,
    },
    EnvVar {
        names: &[
            "GATEHOUSE_SHARD_COUNT",
            "SHARD_COUNT",
            "SHARDS_TOTAL",
            "CORDIS_TOTAL_SHARD_COUNT",
        ],
        path: &["discord", "shard_count"],
        kind: EnvKind::Integer,
    },
    EnvVar {
        names: &["GATEHOUSE_SHARD_IDS", "SHARD_IDS"],
        path: &["discord", "shard_ids"],
        kind: EnvKind::Text,
    },
    EnvVar {
        names: &[
            "GATEHOUSE_LARGE_THRESHOLD",
            "LARGE_THRESHOLD",
            "CORDIS_WS_LARGE_THRESHOLD",
        ],
        path: &["discord", "large_threshold"],
        kind: EnvKind::Integer,
    },
    EnvVar {
        names: &["GATEHOUSE_COMPRESSION", "DISCORD_COMPRESS"],
        path: &["discord", "compression"],
        kind: EnvKind::Text,
    },
    EnvVar {
        names: &[
            "GATEHOUSE_ENCODING",
            "DISCORD_ENCODING",
            "CORDIS_WS_ENCODING",
        ],
        path: &["discord", "encoding"],
        kind: EnvKind::Text,
    },
    EnvVar {
        names: &["CORDIS_WS_COMPRESS"],
        path: &["discord", "compression"],
        kind: EnvKind::Converted(cordis_compress),
    },
    EnvVar {
        names: &["CORDIS_AMQP_HOST"],
        path: &["amqp", "url"],
        kind: EnvKind::Converted(amqp_host_or_url),
    },
    EnvVar {
        names: &["AMQP_URL"],
        path: &["amqp", "url"],
        kind: EnvKind::Text,
    },
    EnvVar {
        names: &["REDIS_URL", "CORDIS_REDIS_URL"],
        path: &["redis", "url"],
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
        names: &["GATEHOUSE_MAX_UNCONFIRMED"],
        path: &["limits", "max_unconfirmed_publishes"],
        kind: EnvKind::Integer,
    },
];

/// Predecessors' settings spread over several variables.
pub const COMPOSITE_ENV_VARS: &[CompositeEnvVar] = &[
    CompositeEnvVar {
        names: &["SHARDS_START", "SHARDS_END"],
        path: &["discord", "shard_ids"],
        build: twilight_dispatch_shards,
    },
    CompositeEnvVar {
        names: &["CORDIS_STARTING_SHARD", "CORDIS_SHARD_COUNT"],
        path: &["discord", "shard_ids"],
        build: cordis_shards,
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
        build: redis_host_port,
    },
    CompositeEnvVar {
        names: &["PROMETHEUS_HOST", "PROMETHEUS_PORT"],
        path: &["metrics", "address"],
        build: prometheus_address,
    },
];

fn set_value(env: EnvLookup<'_>, name: &str) -> Option<String> {
    env(name)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

fn number(env: EnvLookup<'_>, name: &str) -> Option<Result<u32, String>> {
    set_value(env, name).map(|v| {
        v.parse::<u32>()
            .map_err(|_| format!("{name}: expected a non-negative integer, got {v:?}"))
    })
}

/// twilight-dispatch: `SHARDS_START`..=`SHARDS_END`.
fn twilight_dispatch_shards(env: EnvLookup<'_>) -> Option<Result<String, String>> {
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
        Ok(format!("{start}-{end}"))
    })())
}

/// Cordis: `CORDIS_SHARD_COUNT` shards from `CORDIS_STARTING_SHARD` (default 0).
fn cordis_shards(env: EnvLookup<'_>) -> Option<Result<String, String>> {
    let count = number(env, "CORDIS_SHARD_COUNT")?;
    Some((|| {
        let count = count?;
        let start = number(env, "CORDIS_STARTING_SHARD")
            .transpose()?
            .unwrap_or(0);
        if count == 0 {
            return Err("CORDIS_SHARD_COUNT must be at least 1".to_owned());
        }
        Ok(format!("{start}-{}", start + count - 1))
    })())
}

/// Percent-encodes the characters that would break a URL's userinfo.
fn userinfo_escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            ':' | '@' | '/' | '%' | '?' | '#' => format!("%{:02X}", c as u32),
            c => c.to_string(),
        })
        .collect()
}

/// twilight-dispatch: `RABBIT_HOST`, `RABBIT_PORT`, `RABBIT_USERNAME`, `RABBIT_PASSWORD`.
fn rabbit_url(env: EnvLookup<'_>) -> Option<Result<String, String>> {
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
    Some(Ok(format!(
        "amqp://{}:{}@{host}:{port}/%2f",
        userinfo_escape(&user),
        userinfo_escape(&password)
    )))
}

/// twilight-dispatch: `REDIS_HOST`, `REDIS_PORT`.
fn redis_host_port(env: EnvLookup<'_>) -> Option<Result<String, String>> {
    let host = set_value(env, "REDIS_HOST");
    let port = set_value(env, "REDIS_PORT");
    if host.is_none() && port.is_none() {
        return None;
    }
    Some(Ok(format!(
        "redis://{}:{}/",
        host.unwrap_or_else(|| "127.0.0.1".into()),
        port.unwrap_or_else(|| "6379".into())
    )))
}

/// twilight-dispatch: `PROMETHEUS_HOST`, `PROMETHEUS_PORT`.
fn prometheus_address(env: EnvLookup<'_>) -> Option<Result<String, String>> {
    let host = set_value(env, "PROMETHEUS_HOST");
    let port = set_value(env, "PROMETHEUS_PORT");
    if host.is_none() && port.is_none() {
        return None;
    }
    Some(Ok(format!(
        "{}:{}",
        host.unwrap_or_else(|| "127.0.0.1".into()),
        port.unwrap_or_else(|| "9000".into())
    )))
}

/// Cordis: `CORDIS_WS_COMPRESS` (`true`/`false`) as a compression name.
fn cordis_compress(text: &str) -> Result<String, String> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok("zlib-stream".into()),
        "false" | "0" | "no" => Ok("none".into()),
        _ => Err(format!("expected true or false, got {text:?}")),
    }
}

/// Cordis: `CORDIS_AMQP_HOST` is a host (or a whole URL).
fn amqp_host_or_url(text: &str) -> Result<String, String> {
    Ok(if text.contains("://") {
        text.to_owned()
    } else {
        format!("amqp://{text}")
    })
}

impl Config {
    /// The configuration from TOML text (empty text is fine) with the environment on top.
    ///
    /// `env` looks a variable up (`|name| std::env::var(name).ok()` in a binary); an empty value
    /// counts as unset.
    pub fn load(
        toml_text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut table: toml::Table =
            toml::from_str(toml_text).map_err(|e| ConfigError::File(e.to_string()))?;
        apply_env(&mut table, &env)?;
        let raw: raw::RawConfig = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::File(e.to_string()))?;
        let mut config = raw.validate()?;
        config
            .profile
            .apply_predecessor_env(&env)
            .map_err(|e| invalid("profile", e.to_string()))?;
        Ok(config)
    }

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
            None => (0..shard_count).collect(),
        };
        Ok(ClusterInfo { shard_count, owned })
    }
}

fn apply_env(
    table: &mut toml::Table,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    for composite in COMPOSITE_ENV_VARS {
        if let Some(value) = (composite.build)(env) {
            let var = composite.names[0];
            let value = value.map_err(|message| ConfigError::Env { var, message })?;
            set_path(table, composite.path, toml::Value::String(value))
                .map_err(|message| ConfigError::Env { var, message })?;
        }
    }
    for var in ENV_VARS {
        let found = var
            .names
            .iter()
            .find_map(|&name| env(name).filter(|v| !v.is_empty()).map(|v| (name, v)));
        let Some((name, value)) = found else { continue };
        let value = env_value(name, var.kind, value.trim())?;
        set_path(table, var.path, value)
            .map_err(|message| ConfigError::Env { var: name, message })?;
    }
    Ok(())
}

fn env_value(name: &'static str, kind: EnvKind, text: &str) -> Result<toml::Value, ConfigError> {
    let integer = || -> Result<toml::Value, ConfigError> {
        text.parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(toml::Value::Integer)
            .ok_or_else(|| ConfigError::Env {
                var: name,
                message: format!("expected a non-negative integer, got {text:?}"),
            })
    };
    match kind {
        EnvKind::Text => Ok(toml::Value::String(text.to_owned())),
        EnvKind::Integer => integer(),
        EnvKind::IntegerOrText => {
            Ok(integer().unwrap_or_else(|_| toml::Value::String(text.to_owned())))
        }
        EnvKind::Converted(convert) => convert(text)
            .map(toml::Value::String)
            .map_err(|message| ConfigError::Env { var: name, message }),
        EnvKind::Boolean => match text.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(toml::Value::Boolean(true)),
            "false" | "0" | "no" | "off" => Ok(toml::Value::Boolean(false)),
            _ => Err(ConfigError::Env {
                var: name,
                message: format!("expected true or false, got {text:?}"),
            }),
        },
    }
}

fn set_path(table: &mut toml::Table, path: &[&str], value: toml::Value) -> Result<(), String> {
    let (last, parents) = path.split_last().expect("env paths are never empty");
    let mut current = table;
    for (depth, key) in parents.iter().enumerate() {
        let entry = current
            .entry((*key).to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry
            .as_table_mut()
            .ok_or_else(|| format!("the file's `{}` is not a table", path[..=depth].join(".")))?;
    }
    current.insert((*last).to_owned(), value);
    Ok(())
}

/// Parses a shard selection: ranges and single numbers separated by commas, for example `0-3`,
/// `0,2,5` or `0-3,8`. The result is sorted and free of duplicates.
pub fn parse_shard_ids(text: &str) -> Result<Vec<u32>, String> {
    let mut ids = Vec::new();
    for part in text.split(',').map(str::trim) {
        if part.is_empty() {
            return Err(format!("empty item in shard selection {text:?}"));
        }
        let number = |s: &str| {
            s.trim()
                .parse::<u32>()
                .map_err(|_| format!("{s:?} is not a shard number (in {text:?})"))
        };
        match part.split_once('-') {
            Some((start, end)) => {
                let (start, end) = (number(start)?, number(end)?);
                if start > end {
                    return Err(format!("range {part:?} runs backwards"));
                }
                if end - start >= 1 << 20 {
                    return Err(format!("range {part:?} is too large"));
                }
                ids.extend(start..=end);
            }
            None => ids.push(number(part)?),
        }
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// Intents from a list of names or numbers (each item as [`crate::intents::parse`] accepts,
/// for example `GUILDS`, `guildMessages`, `nonPrivileged` or `513`), combined with OR.
pub fn parse_intent_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<u64, String> {
    let mut bits = 0;
    for name in names {
        bits |= crate::intents::parse(name).map_err(|e| e.to_string())?;
    }
    Ok(bits)
}

/// The file's shape before validation (every field optional).
mod raw {
    use super::*;

    #[derive(serde::Deserialize, Default)]
    #[serde(default, deny_unknown_fields)]
    pub(super) struct RawConfig {
        discord: RawDiscord,
        amqp: RawAmqp,
        redis: RawRedis,
        profile: ProfileConfig,
        limits: RawLimits,
        metrics: RawMetrics,
        demo: RawDemo,
    }

    #[derive(serde::Deserialize, Default)]
    #[serde(default, deny_unknown_fields)]
    struct RawDiscord {
        token: Option<Secret>,
        api_base: Option<String>,
        intents: Option<RawIntents>,
        shard_count: Option<u32>,
        shard_ids: Option<RawShardIds>,
        large_threshold: Option<u8>,
        presence: Option<toml::Value>,
        compression: Option<Compression>,
        encoding: Option<Encoding>,
        seed: Option<u64>,
    }

    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum RawIntents {
        Bits(u64),
        Names(Vec<String>),
        Text(String),
    }

    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum RawShardIds {
        List(Vec<u32>),
        Text(String),
    }

    #[derive(serde::Deserialize, Default)]
    #[serde(default, deny_unknown_fields)]
    struct RawAmqp {
        url: Option<String>,
    }

    #[derive(serde::Deserialize, Default)]
    #[serde(default, deny_unknown_fields)]
    struct RawRedis {
        url: Option<String>,
        key_prefix: Option<String>,
        identify_anyway_after_secs: Option<u64>,
    }

    #[derive(serde::Deserialize, Default)]
    #[serde(default, deny_unknown_fields)]
    struct RawLimits {
        max_unconfirmed_publishes: Option<usize>,
        command_queue_capacity: Option<usize>,
        max_payload: Option<usize>,
        max_message: Option<usize>,
    }

    #[derive(serde::Deserialize, Default)]
    #[serde(default, deny_unknown_fields)]
    struct RawMetrics {
        address: Option<String>,
    }

    #[derive(serde::Deserialize, Default)]
    #[serde(default, deny_unknown_fields)]
    struct RawDemo {
        events_per_second: Option<u32>,
        shard_count: Option<u32>,
    }

    impl RawConfig {
        pub(super) fn validate(self) -> Result<Config, ConfigError> {
            Ok(Config {
                discord: self.discord.validate()?,
                amqp: AmqpConfig {
                    url: url_setting(
                        "amqp.url",
                        self.amqp.url,
                        DEFAULT_AMQP_URL,
                        &["amqp", "amqps"],
                    )?,
                },
                redis: RedisConfig {
                    url: url_setting(
                        "redis.url",
                        self.redis.url,
                        DEFAULT_REDIS_URL,
                        &["redis", "rediss", "unix", "redis+unix"],
                    )?,
                    key_prefix: {
                        let prefix = self
                            .redis
                            .key_prefix
                            .unwrap_or_else(|| DEFAULT_KEY_PREFIX.to_owned());
                        if prefix.is_empty() || prefix.chars().any(char::is_whitespace) {
                            return Err(invalid(
                                "redis.key_prefix",
                                "must be non-empty and contain no whitespace",
                            ));
                        }
                        prefix
                    },
                    identify_anyway_after: self
                        .redis
                        .identify_anyway_after_secs
                        .map(std::time::Duration::from_secs),
                },
                profile: self.profile,
                limits: self.limits.validate()?,
                metrics: MetricsConfig {
                    address: match self.metrics.address {
                        None => None,
                        Some(a) if a.is_empty() => None,
                        Some(a) => Some(a.parse().map_err(|_| {
                            invalid(
                                "metrics.address",
                                format!("{a:?} is not an address like 127.0.0.1:9000"),
                            )
                        })?),
                    },
                },
                demo: {
                    let defaults = DemoConfig::default();
                    let demo = DemoConfig {
                        events_per_second: self
                            .demo
                            .events_per_second
                            .unwrap_or(defaults.events_per_second),
                        shard_count: self.demo.shard_count.unwrap_or(defaults.shard_count),
                    };
                    if demo.events_per_second == 0 || demo.shard_count == 0 {
                        return Err(invalid("demo", "rates and counts must be at least 1"));
                    }
                    demo
                },
            })
        }
    }

    impl RawDiscord {
        fn validate(self) -> Result<DiscordConfig, ConfigError> {
            let token = self.token.unwrap_or_default();
            let token = match token.expose().strip_prefix("Bot ") {
                Some(bare) => Secret::new(bare.trim()),
                None => Secret::new(token.expose().trim()),
            };
            let api_base = self
                .api_base
                .unwrap_or_else(|| DEFAULT_API_BASE.to_owned())
                .trim_end_matches('/')
                .to_owned();
            if !(api_base.starts_with("https://") || api_base.starts_with("http://")) {
                return Err(invalid(
                    "discord.api_base",
                    format!("{:?} is not an http(s) URL", redact_url(&api_base)),
                ));
            }
            let intents = match self.intents {
                None => crate::intents::NON_PRIVILEGED,
                Some(RawIntents::Bits(bits)) => bits,
                Some(RawIntents::Names(names)) => {
                    parse_intent_names(names.iter().map(String::as_str))
                        .map_err(|e| invalid("discord.intents", e))?
                }
                Some(RawIntents::Text(text)) => crate::intents::parse(&text)
                    .map_err(|e| invalid("discord.intents", e.to_string()))?,
            };
            if intents & !crate::intents::ALL != 0 {
                return Err(invalid(
                    "discord.intents",
                    format!(
                        "{intents} sets undefined bits ({:#x}); Discord closes with 4013",
                        intents & !crate::intents::ALL
                    ),
                ));
            }
            if self.shard_count == Some(0) {
                return Err(invalid("discord.shard_count", "must be at least 1"));
            }
            let shard_ids = match self.shard_ids {
                None => None,
                Some(RawShardIds::List(mut ids)) => {
                    ids.sort_unstable();
                    ids.dedup();
                    Some(ids)
                }
                Some(RawShardIds::Text(text)) => {
                    Some(parse_shard_ids(&text).map_err(|e| invalid("discord.shard_ids", e))?)
                }
            };
            if shard_ids.as_ref().is_some_and(Vec::is_empty) {
                return Err(invalid("discord.shard_ids", "selects no shard"));
            }
            if let (Some(count), Some(ids)) = (self.shard_count, &shard_ids)
                && let Some(bad) = ids.iter().find(|&&id| id >= count)
            {
                return Err(invalid(
                    "discord.shard_ids",
                    format!("shard {bad} does not exist with a shard count of {count}"),
                ));
            }
            let large_threshold = self.large_threshold.unwrap_or(250);
            if !(50..=250).contains(&large_threshold) {
                return Err(invalid(
                    "discord.large_threshold",
                    format!("{large_threshold} is outside 50..=250"),
                ));
            }
            let presence = match self.presence {
                None => None,
                Some(toml::Value::String(json)) => {
                    let value: serde_json::Value = serde_json::from_str(&json)
                        .map_err(|e| invalid("discord.presence", format!("not valid JSON: {e}")))?;
                    if !value.is_object() {
                        return Err(invalid("discord.presence", "must be a JSON object"));
                    }
                    Some(json)
                }
                Some(toml::Value::Table(table)) => Some(
                    serde_json::to_string(&table)
                        .map_err(|e| invalid("discord.presence", e.to_string()))?,
                ),
                Some(_) => {
                    return Err(invalid(
                        "discord.presence",
                        "must be a table or a JSON object in a string",
                    ));
                }
            };
            Ok(DiscordConfig {
                token,
                api_base,
                intents,
                shard_count: self.shard_count,
                shard_ids,
                large_threshold,
                presence,
                compression: self.compression.unwrap_or_default(),
                encoding: self.encoding.unwrap_or_default(),
                seed: self.seed,
            })
        }
    }

    impl RawLimits {
        fn validate(self) -> Result<Limits, ConfigError> {
            let defaults = Limits::default();
            let limits = Limits {
                max_unconfirmed_publishes: self
                    .max_unconfirmed_publishes
                    .unwrap_or(defaults.max_unconfirmed_publishes),
                command_queue_capacity: self
                    .command_queue_capacity
                    .unwrap_or(defaults.command_queue_capacity),
                max_payload: self.max_payload.unwrap_or(defaults.max_payload),
                max_message: self.max_message.unwrap_or(defaults.max_message),
            };
            if limits.max_unconfirmed_publishes == 0 {
                return Err(invalid(
                    "limits.max_unconfirmed_publishes",
                    "must be at least 1",
                ));
            }
            if limits.command_queue_capacity == 0 {
                return Err(invalid(
                    "limits.command_queue_capacity",
                    "must be at least 1",
                ));
            }
            if limits.max_payload < 1 << 20 || limits.max_message < 1 << 20 {
                return Err(invalid(
                    "limits.max_payload",
                    "max_payload and max_message must be at least 1 MiB (a GUILD_CREATE can be 2.8 MB)",
                ));
            }
            Ok(limits)
        }
    }

    fn url_setting(
        key: &'static str,
        value: Option<String>,
        default: &str,
        schemes: &[&str],
    ) -> Result<SecretUrl, ConfigError> {
        let url = value.unwrap_or_else(|| default.to_owned());
        let scheme = url.split_once("://").map(|(s, _)| s);
        if !scheme.is_some_and(|s| schemes.contains(&s)) {
            return Err(invalid(
                key,
                format!(
                    "{:?} does not start with {}",
                    redact_url(&url),
                    schemes
                        .iter()
                        .map(|s| format!("{s}://"))
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
            ));
        }
        Ok(SecretUrl::new(url))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn conformance_contract_names_are_understood() {
        // The neutral names the conformance suite sets for any implementation.
        let config = Config::load(
            "",
            env(&[
                ("DISCORD_TOKEN", "t"),
                ("DISCORD_API_BASE", "http://127.0.0.1:9/api/v10"),
                ("SHARD_COUNT", "4"),
                ("SHARD_IDS", "1-2"),
                ("DISCORD_INTENTS", "513"),
                ("DISCORD_COMPRESS", "zstd-stream"),
                ("DISCORD_ENCODING", "etf"),
                ("REDIS_KEY_PREFIX", "conformance:x:1:"),
                ("BROKER_PROFILE", "spectacles"),
                ("BROKER_BODY_ENCODING", "json"),
            ]),
        )
        .unwrap();
        assert_eq!(config.discord.api_base, "http://127.0.0.1:9/api/v10");
        assert_eq!(config.discord.shard_count, Some(4));
        assert_eq!(config.discord.shard_ids, Some(vec![1, 2]));
        assert_eq!(config.discord.intents, 513);
        assert_eq!(config.discord.compression, Compression::ZstdStream);
        assert_eq!(config.discord.encoding, Encoding::Etf);
        assert_eq!(config.redis.key_prefix, "conformance:x:1:");
        assert_eq!(config.profile.kind, crate::profile::ProfileKind::Spectacles);
        assert_eq!(
            config.profile.body,
            Some(crate::profile::BodyEncoding::Json)
        );
    }

    #[test]
    fn empty_file_and_environment_give_the_defaults() {
        let config = Config::load("", env(&[])).unwrap();
        assert!(!config.discord.has_token());
        assert_eq!(config.discord.api_base, DEFAULT_API_BASE);
        assert_eq!(config.amqp.url.expose(), DEFAULT_AMQP_URL);
        assert_eq!(config.redis.url.expose(), DEFAULT_REDIS_URL);
        assert_eq!(config.redis.key_prefix, "gatehouse");
        assert_eq!(config.redis.identify_anyway_after, None);
        assert_eq!(config.discord.intents, 53_575_421);
        assert_eq!(config.discord.shard_count, None);
        assert_eq!(config.discord.shard_ids, None);
        assert_eq!(config.limits, Limits::default());
        assert_eq!(config.metrics.address, None);
        assert_eq!(config.profile, ProfileConfig::default());
    }

    #[test]
    fn file_values_are_read() {
        let text = r#"
            [discord]
            token = "Bot abc.def"
            api_base = "http://127.0.0.1:9999/api/v10/"
            intents = ["GUILDS", "guildMessages", "MESSAGE_CONTENT"]
            shard_count = 8
            shard_ids = "0-3,6"
            large_threshold = 100
            compression = "zstd-stream"
            encoding = "etf"
            presence = { status = "idle", afk = false, since = 0, activities = [] }

            [amqp]
            url = "amqps://user:pw@broker:5671/vhost"

            [redis]
            key_prefix = "gh-test"
            identify_anyway_after_secs = 900

            [profile]
            kind = "spectacles"

            [limits]
            max_unconfirmed_publishes = 50

            [metrics]
            address = "127.0.0.1:9102"
        "#;
        let config = Config::load(text, env(&[])).unwrap();
        assert_eq!(config.discord.token.expose(), "abc.def");
        assert_eq!(config.discord.api_base, "http://127.0.0.1:9999/api/v10");
        assert_eq!(config.discord.intents, 1 | 512 | 32768);
        assert_eq!(config.discord.shard_ids, Some(vec![0, 1, 2, 3, 6]));
        assert_eq!(config.discord.large_threshold, 100);
        assert_eq!(config.discord.compression, Compression::ZstdStream);
        assert_eq!(config.discord.encoding, Encoding::Etf);
        let presence: serde_json::Value =
            serde_json::from_str(config.discord.presence.as_deref().unwrap()).unwrap();
        assert_eq!(presence["status"], "idle");
        assert_eq!(config.redis.key_prefix, "gh-test");
        assert_eq!(
            config.redis.identify_anyway_after,
            Some(std::time::Duration::from_secs(900))
        );
        assert_eq!(config.profile.kind, crate::profile::ProfileKind::Spectacles);
        assert_eq!(config.limits.max_unconfirmed_publishes, 50);
        assert_eq!(
            config.metrics.address,
            Some("127.0.0.1:9102".parse().unwrap())
        );
    }

    #[test]
    fn environment_wins_over_the_file() {
        let text = "[discord]\ntoken = \"from-file\"\nshard_count = 2\n";
        let config = Config::load(
            text,
            env(&[
                ("DISCORD_TOKEN", "from-env"),
                ("GATEHOUSE_SHARD_COUNT", "16"),
                ("GATEHOUSE_SHARD_IDS", "0,2,5"),
                ("GATEHOUSE_INTENTS", "513"),
                ("AMQP_URL", "amqp://u:p@h:5672/v"),
                ("REDIS_URL", "redis://:pw@h:6379/2"),
                ("GATEHOUSE_API_BASE", "http://127.0.0.1:1234/api/v10"),
                ("GATEHOUSE_PROFILE", "cordis"),
            ]),
        )
        .unwrap();
        assert_eq!(config.discord.token.expose(), "from-env");
        assert_eq!(config.discord.shard_count, Some(16));
        assert_eq!(config.discord.shard_ids, Some(vec![0, 2, 5]));
        assert_eq!(config.discord.intents, 513);
        assert_eq!(config.amqp.url.expose(), "amqp://u:p@h:5672/v");
        assert_eq!(config.discord.api_base, "http://127.0.0.1:1234/api/v10");
        assert_eq!(config.profile.kind, crate::profile::ProfileKind::Cordis);
    }

    #[test]
    fn aliases_apply_and_the_canonical_name_wins() {
        let config = Config::load("", env(&[("BOT_TOKEN", "alias")])).unwrap();
        assert_eq!(config.discord.token.expose(), "alias");
        let config = Config::load(
            "",
            env(&[("BOT_TOKEN", "alias"), ("DISCORD_TOKEN", "canonical")]),
        )
        .unwrap();
        assert_eq!(config.discord.token.expose(), "canonical");
        let config = Config::load("", env(&[("DISCORD_TOKEN", ""), ("BOT_TOKEN", "b")])).unwrap();
        assert_eq!(config.discord.token.expose(), "b", "empty counts as unset");
    }

    #[test]
    fn predecessors_names_apply() {
        let config = Config::load(
            "",
            env(&[
                ("BOT_TOKEN", "t"),
                ("SHARDS_START", "2"),
                ("SHARDS_END", "4"),
                ("SHARDS_TOTAL", "8"),
                ("RABBIT_HOST", "rabbit"),
                ("RABBIT_PASSWORD", "p@ss"),
                ("REDIS_HOST", "cache"),
                ("PROMETHEUS_PORT", "9102"),
            ]),
        )
        .unwrap();
        assert_eq!(config.discord.shard_ids, Some(vec![2, 3, 4]));
        assert_eq!(config.discord.shard_count, Some(8));
        assert_eq!(
            config.amqp.url.expose(),
            "amqp://guest:p%40ss@rabbit:5672/%2f"
        );
        assert_eq!(config.redis.url.expose(), "redis://cache:6379/");
        assert_eq!(
            config.metrics.address,
            Some("127.0.0.1:9102".parse().unwrap())
        );

        let config = Config::load(
            "",
            env(&[
                ("CORDIS_AUTH", "t"),
                ("CORDIS_STARTING_SHARD", "4"),
                ("CORDIS_SHARD_COUNT", "2"),
                ("CORDIS_TOTAL_SHARD_COUNT", "6"),
                ("CORDIS_WS_COMPRESS", "false"),
                ("CORDIS_WS_ENCODING", "etf"),
                ("CORDIS_AMQP_HOST", "broker"),
                ("CORDIS_WS_INTENTS", "guilds,guildMessages"),
            ]),
        )
        .unwrap();
        assert_eq!(config.discord.token.expose(), "t");
        assert_eq!(config.discord.shard_ids, Some(vec![4, 5]));
        assert_eq!(config.discord.compression, Compression::None);
        assert_eq!(config.discord.encoding, Encoding::Etf);
        assert_eq!(config.amqp.url.expose(), "amqp://broker");
        assert_eq!(config.discord.intents, 513);

        // Gatehouse's own names win over the predecessors'.
        let config = Config::load(
            "",
            env(&[
                ("SHARDS_START", "0"),
                ("SHARDS_END", "1"),
                ("GATEHOUSE_SHARD_IDS", "7"),
            ]),
        )
        .unwrap();
        assert_eq!(config.discord.shard_ids, Some(vec![7]));

        let err = Config::load("", env(&[("SHARDS_START", "1")])).unwrap_err();
        assert!(err.to_string().contains("SHARDS_END"), "{err}");

        // A profile's own predecessor names (here Spectacles' BROKER_GROUP) apply too.
        let config = Config::load(
            "",
            env(&[
                ("GATEHOUSE_PROFILE", "spectacles"),
                ("BROKER_GROUP", "mygroup"),
            ]),
        )
        .unwrap();
        assert_eq!(config.profile.exchange.as_deref(), Some("mygroup"));
    }

    #[test]
    fn intent_names_and_groups() {
        assert_eq!(parse_intent_names(["all"]).unwrap(), crate::intents::ALL);
        assert_eq!(parse_intent_names(["privileged"]).unwrap(), 2 | 256 | 32768);
        assert_eq!(parse_intent_names(["nonPrivileged"]).unwrap(), 53_575_421);
        assert_eq!(
            parse_intent_names(["guildMessages", "GUILD_BANS", "DIRECT_MESSAGES"]).unwrap(),
            512 | 4 | 4096
        );
        let config =
            Config::load("", env(&[("GATEHOUSE_INTENTS", "GUILDS, GUILD_MESSAGES")])).unwrap();
        assert_eq!(config.discord.intents, 513);
        assert!(
            parse_intent_names(["GUILDZ"])
                .unwrap_err()
                .contains("GUILDZ")
        );
    }

    #[test]
    fn shard_selection_syntax() {
        assert_eq!(parse_shard_ids("0-3").unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(parse_shard_ids("5, 0,2").unwrap(), vec![0, 2, 5]);
        assert_eq!(parse_shard_ids("0-1,1-2").unwrap(), vec![0, 1, 2]);
        assert!(parse_shard_ids("3-1").is_err());
        assert!(parse_shard_ids("a").is_err());
        assert!(parse_shard_ids("1,,2").is_err());
        assert!(parse_shard_ids("0-4294967295").is_err());
    }

    #[test]
    fn cluster_combines_configuration_and_recommendation() {
        let config = Config::load("", env(&[])).unwrap();
        let cluster = config.cluster(3).unwrap();
        assert_eq!(cluster.shard_count, 3);
        assert_eq!(cluster.owned, vec![0, 1, 2]);

        let config = Config::load("", env(&[("GATEHOUSE_SHARD_IDS", "4")])).unwrap();
        let err = config.cluster(3).unwrap_err();
        assert!(err.to_string().contains("shard 4 does not exist"), "{err}");

        let config = Config::load("", env(&[("GATEHOUSE_SHARD_COUNT", "8")])).unwrap();
        assert_eq!(config.cluster(1).unwrap().owned.len(), 8);
    }

    #[test]
    fn validation_errors_are_messages_not_panics() {
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case<'_>] = &[
            ("[discord]\nshard_count = 0", &[], "discord.shard_count"),
            (
                "[discord]\nshard_count = 2\nshard_ids = [3]",
                &[],
                "shard 3",
            ),
            ("[discord]\nlarge_threshold = 10", &[], "50..=250"),
            ("[discord]\nintents = 131072", &[], "undefined bits"),
            ("[discord]\nbogus = 1", &[], "bogus"),
            ("[discord", &[], "configuration file"),
            (
                "",
                &[("GATEHOUSE_SHARD_COUNT", "many")],
                "GATEHOUSE_SHARD_COUNT",
            ),
            ("", &[("AMQP_URL", "http://x")], "amqp://"),
            ("[metrics]\naddress = \"nowhere\"", &[], "metrics.address"),
            ("[limits]\nmax_unconfirmed_publishes = 0", &[], "at least 1"),
            ("discord = 3", &[("DISCORD_TOKEN", "t")], "not a table"),
        ];
        for (text, vars, needle) in cases {
            let err = Config::load(text, env(vars)).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn secrets_never_show_in_debug_or_errors() {
        let config = Config::load(
            "",
            env(&[
                ("DISCORD_TOKEN", "tok.en.value"),
                ("AMQP_URL", "amqp://user:hunter2@host:5672/%2f"),
                ("REDIS_URL", "redis://:redispw@host:6379/"),
            ]),
        )
        .unwrap();
        let debug = format!("{config:?}");
        for secret in ["tok.en.value", "hunter2", "redispw"] {
            assert!(!debug.contains(secret), "{debug}");
        }
        assert!(debug.contains("amqp://user:***@host:5672/%2f"), "{debug}");
        let err = Config::load("", env(&[("AMQP_URL", "http://user:hunter2@host/")]))
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn url_redaction() {
        assert_eq!(redact_url("amqp://u:p@h/v"), "amqp://u:***@h/v");
        assert_eq!(redact_url("redis://tok@h:1/"), "redis://***@h:1/");
        assert_eq!(redact_url("redis://h:1/"), "redis://h:1/");
        assert_eq!(redact_url("amqp://h/v?x=a@b"), "amqp://h/v?x=a@b");
        assert_eq!(redact_url("not a url"), "not a url");
        assert_eq!(redact_url("amqp://u:p@ss@h/"), "amqp://u:***@h/");
    }
}
