//! From the file's shape ([`crate::raw`]) to a [`Config`]: defaults (some depend on the
//! profile), the predecessors' value forms (a Redis URL without scheme, StackExchange's
//! `host:port,password=...`, Go's `:8080`), and checks with messages that name the key.
//!
//! Owns: every rule a value must satisfy. Does not own: where values come from
//! ([`crate::load`]).

use std::time::Duration;

use proto_core::percent::percent_encode;
use proto_core::profile::ProfileKind;
use proto_core::redis_topology::RedisTopology;
use proto_core::secret::Secret;
use proto_core::shard::defaults;

use crate::error::{ConfigError, invalid};
use crate::model::*;
use crate::raw::*;
use crate::secret_url::{SecretUrl, redact_url};

/// The topology a Redis URL names (one server, Sentinel, Redis Cluster), or why its
/// Sentinel or Cluster form is malformed (see `proto_core::redis_topology`).
fn redis_topology(url: &str) -> Result<RedisTopology, ConfigError> {
    RedisTopology::parse(url).map_err(|e| invalid("redis.url", e.to_string()))
}

/// `redis.sentinel_username` and `redis.sentinel_password` (for Sentinels that require a
/// password; kept apart from the URL where a secret store hands them out) added to the
/// Sentinel URL's query, where `proto_core::redis_topology` reads them, percent-encoded. With
/// any other URL they are refused; given in the URL as well, the URL is refused (twice).
fn with_sentinel_credentials(
    url: Option<String>,
    username: Option<String>,
    password: Option<String>,
) -> Result<Option<String>, ConfigError> {
    let given: Vec<(&'static str, &str, String)> = [
        ("redis.sentinel_username", "sentinel_username", username),
        ("redis.sentinel_password", "sentinel_password", password),
    ]
    .into_iter()
    .filter_map(|(key, name, value)| Some((key, name, value?)))
    .collect();
    let Some(&(key, _, _)) = given.last() else {
        return Ok(url);
    };
    let Some(mut url) = url.filter(|u| {
        u.split_once("://")
            .is_some_and(|(scheme, _)| scheme.to_ascii_lowercase().ends_with("+sentinel"))
    }) else {
        return Err(invalid(
            key,
            "applies to Sentinels only: redis.url must be a redis+sentinel:// URL",
        ));
    };
    let fragment = url.find('#').map(|at| url.split_off(at));
    for (_, name, value) in &given {
        let separator = match url.find('?') {
            None => "?",
            Some(_) if url.ends_with(['?', '&']) => "",
            Some(_) => "&",
        };
        url.push_str(&format!("{separator}{name}={}", percent_encode(value)));
    }
    url.push_str(&fragment.unwrap_or_default());
    Ok(Some(url))
}

impl RawConfig {
    /// The validated configuration, and warnings about values that were accepted but adapted.
    pub(crate) fn validate(self, warnings: &mut Vec<String>) -> Result<Config, ConfigError> {
        let kind = self.profile.kind;
        let discord = self.discord.validate(kind)?;
        let amqp = amqp_urls(self.amqp, warnings)?;
        // Cordis uses Redis only "if provided": without a URL, the cordis profile runs without.
        let enabled_by_default = kind != ProfileKind::Cordis || self.redis.url.is_some();
        let redis_url = self
            .redis
            .url
            .map(|url| redis_url_form(&url, warnings))
            .transpose()?;
        let redis_url = with_sentinel_credentials(
            redis_url,
            self.redis.sentinel_username,
            self.redis.sentinel_password,
        )?;
        let topology = redis_url.as_deref().map(redis_topology).transpose()?;
        let redis = RedisConfig {
            enabled: self.redis.enabled.unwrap_or(enabled_by_default),
            url: url_setting(
                "redis.url",
                redis_url,
                DEFAULT_REDIS_URL,
                &[
                    "redis",
                    "rediss",
                    "unix",
                    "redis+unix",
                    "redis+sentinel",
                    "rediss+sentinel",
                    "redis+cluster",
                    "rediss+cluster",
                ],
            )?,
            key_prefix: {
                let prefix = self
                    .redis
                    .key_prefix
                    .unwrap_or_else(|| default_key_prefix(kind).to_owned());
                if prefix.chars().any(char::is_whitespace) {
                    return Err(invalid("redis.key_prefix", "must contain no whitespace"));
                }
                // On a Redis Cluster every key of the deployment goes under one hash tag;
                // elsewhere the prefix stays as configured (the predecessors' key names).
                match &topology {
                    Some(topology) => topology.key_prefix(&prefix),
                    None => prefix,
                }
            },
            identify_anyway_after: self
                .redis
                .identify_anyway_after_secs
                .map(std::time::Duration::from_secs),
        };
        if self.broker.max_len == Some(0) {
            return Err(invalid(
                "broker.max_len",
                "must be at least 1 (leave it out to keep every entry)",
            ));
        }
        if let Some(prefix) = &self.broker.stream_prefix
            && prefix.chars().any(char::is_whitespace)
        {
            return Err(invalid(
                "broker.stream_prefix",
                "must contain no whitespace",
            ));
        }
        let broker = BrokerConfig {
            kind: self.broker.kind,
            stream_prefix: self.broker.stream_prefix.unwrap_or_default(),
            max_len: self.broker.max_len,
            command_group: self.broker.command_group.filter(|g| !g.is_empty()),
        };
        Ok(Config {
            discord,
            amqp,
            broker,
            profile: self.profile,
            limits: self.limits.validate()?,
            metrics: self.metrics.validate()?,
            sentry: SentryConfig {
                url: match self.sentry.url.filter(|u| !u.trim().is_empty()) {
                    None => None,
                    Some(url) => Some(url_setting(
                        "sentry.url",
                        Some(url),
                        "",
                        &["https", "http"],
                    )?),
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
            cluster: self.cluster.validate(redis.enabled)?,
            redis,
        })
    }
}

impl RawCluster {
    fn validate(self, redis_enabled: bool) -> Result<ClusterConfig, ConfigError> {
        let name = self.name.filter(|n| !n.is_empty());
        if let Some(name) = &name {
            if name
                .chars()
                .any(|c| c.is_whitespace() || c == ':' || c == '*')
            {
                return Err(invalid(
                    "cluster.name",
                    "must contain no whitespace, `:` or `*`",
                ));
            }
            if !redis_enabled {
                return Err(invalid(
                    "cluster.name",
                    "cluster mode keeps its leases in Redis: it needs redis.enabled",
                ));
            }
        }
        let lease_ms = self.lease_ms.unwrap_or(ClusterConfig::default().lease_ms);
        if !(300..=600_000).contains(&lease_ms) {
            return Err(invalid("cluster.lease_ms", "must be 300..=600000"));
        }
        Ok(ClusterConfig { name, lease_ms })
    }
}

impl RawDiscord {
    fn validate(
        self,
        kind: proto_core::profile::ProfileKind,
    ) -> Result<DiscordConfig, ConfigError> {
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
        let api_version = self.api_version.unwrap_or(proto_core::shard::API_VERSION);
        if !(6..=10).contains(&api_version) {
            return Err(invalid(
                "discord.api_version",
                format!("{api_version} is not a gateway version Discord serves (6..=10)"),
            ));
        }
        let intents = match self.intents {
            None => proto_core::intents::NON_PRIVILEGED,
            Some(RawIntents::Bits(bits)) => bits,
            Some(RawIntents::Names(names)) => {
                proto_core::intents::parse_names(names.iter().map(String::as_str))
                    .map_err(|e| invalid("discord.intents", e.to_string()))?
            }
            Some(RawIntents::Text(text)) => proto_core::intents::parse(&text)
                .map_err(|e| invalid("discord.intents", e.to_string()))?,
        };
        if intents & !proto_core::intents::ALL != 0 {
            return Err(invalid(
                "discord.intents",
                format!(
                    "{intents} sets undefined bits ({:#x}); Discord closes with 4013",
                    intents & !proto_core::intents::ALL
                ),
            ));
        }
        if self.shard_count == Some(0) {
            return Err(invalid("discord.shard_count", "must be at least 1"));
        }
        let (shard_ids, first_shard) = match self.shard_ids {
            None => (None, None),
            Some(RawShardIds::List(mut ids)) => {
                ids.sort_unstable();
                ids.dedup();
                (Some(ids), None)
            }
            Some(RawShardIds::Text(text)) => match open_range(&text) {
                Some(first) => (None, Some(first)),
                None => (
                    Some(
                        proto_core::sharding::parse_shard_ids(&text)
                            .map_err(|e| invalid("discord.shard_ids", e))?,
                    ),
                    None,
                ),
            },
        };
        if shard_ids.as_ref().is_some_and(Vec::is_empty) {
            return Err(invalid("discord.shard_ids", "selects no shard"));
        }
        if let Some(count) = self.shard_count {
            let highest = shard_ids
                .as_ref()
                .and_then(|ids| ids.last().copied())
                .or(first_shard);
            if let Some(bad) = highest.filter(|&id| id >= count) {
                return Err(invalid(
                    "discord.shard_ids",
                    format!("shard {bad} does not exist with a shard count of {count}"),
                ));
            }
        }
        let large_threshold = self.large_threshold.unwrap_or(defaults::LARGE_THRESHOLD);
        if !(50..=250).contains(&large_threshold) {
            return Err(invalid(
                "discord.large_threshold",
                format!("{large_threshold} is outside 50..=250"),
            ));
        }
        let hello_timeout = match self.hello_timeout_ms {
            None => DEFAULT_HELLO_TIMEOUT,
            Some(0) => return Err(invalid("discord.hello_timeout_ms", "must be at least 1")),
            Some(ms) => Duration::from_millis(ms),
        };
        if self.max_concurrency == Some(0) {
            return Err(invalid("discord.max_concurrency", "must be at least 1"));
        }
        Ok(DiscordConfig {
            token,
            api_base,
            api_version,
            intents,
            shard_count: self.shard_count,
            shard_ids,
            first_shard,
            large_threshold,
            presence: presence(self.presence)?,
            compression: self.compression.unwrap_or_default(),
            encoding: self.encoding.unwrap_or(default_encoding(kind)),
            seed: self.seed,
            hello_timeout,
            max_concurrency: self.max_concurrency,
            resume: self.resume.unwrap_or(true),
            log_channel: self.log_channel.filter(|&id| id > 0),
        })
    }
}

/// `"4-"`: from shard 4 to the last.
fn open_range(text: &str) -> Option<u32> {
    text.trim().strip_suffix('-')?.trim().parse().ok()
}

fn presence(value: Option<toml::Value>) -> Result<Option<String>, ConfigError> {
    Ok(match value {
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
    })
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
            max_unconfirmed_bytes: self
                .max_unconfirmed_bytes
                .unwrap_or(defaults.max_unconfirmed_bytes),
            confirm_timeout_secs: self
                .confirm_timeout_secs
                .unwrap_or(defaults.confirm_timeout_secs),
        };
        if limits.max_unconfirmed_bytes < 1 << 20 {
            return Err(invalid(
                "limits.max_unconfirmed_bytes",
                "must be at least 1 MiB",
            ));
        }
        if limits.confirm_timeout_secs == 0 {
            return Err(invalid("limits.confirm_timeout_secs", "must be at least 1"));
        }
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

impl RawMetrics {
    fn validate(self) -> Result<MetricsConfig, ConfigError> {
        let address = match self.address.as_deref().map(str::trim) {
            None | Some("") => None,
            // Go's `:8080` listens on every interface.
            Some(a) => {
                let a = if a.starts_with(':') {
                    format!("0.0.0.0{a}")
                } else {
                    a.to_owned()
                };
                Some(a.parse().map_err(|_| {
                    invalid(
                        "metrics.address",
                        format!("{a:?} is not an address like 127.0.0.1:9000 or :9000"),
                    )
                })?)
            }
        };
        let path = self
            .path
            .filter(|p| !p.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_METRICS_PATH.to_owned());
        if !path.starts_with('/') || path.contains(char::is_whitespace) {
            return Err(invalid(
                "metrics.path",
                format!("{path:?} is not a path like /metrics"),
            ));
        }
        Ok(MetricsConfig { address, path })
    }
}

/// The Redis URL forms of the predecessors, as `redis://` URLs: `localhost:6379` (Spectacles'
/// documented form: no scheme) and StackExchange.Redis' `host:port,password=...,ssl=true,
/// defaultDatabase=2` (Retsu's). A URL with a scheme is returned as is.
pub(crate) fn redis_url_form(url: &str, warnings: &mut Vec<String>) -> Result<String, ConfigError> {
    let url = url.trim();
    if url.contains("://") {
        return Ok(url.to_owned());
    }
    let mut parts = url.split(',').map(str::trim);
    let endpoint = parts.next().unwrap_or_default();
    if endpoint.is_empty() || endpoint.contains('=') {
        return Err(invalid(
            "redis.url",
            "a Redis address without scheme must start with host:port",
        ));
    }
    let (mut user, mut password, mut tls, mut database) = (None, None, false, None);
    for part in parts.filter(|p| !p.is_empty()) {
        let (key, value) = part.split_once('=').unwrap_or((part, ""));
        match key.to_ascii_lowercase().as_str() {
            "password" => password = Some(value.to_owned()),
            "user" => user = Some(value.to_owned()),
            "ssl" => tls = value.eq_ignore_ascii_case("true"),
            "defaultdatabase" => {
                database = Some(
                    value
                        .parse::<u32>()
                        .map_err(|_| invalid("redis.url", "defaultDatabase must be a number"))?,
                );
            }
            // Client-side tuning of StackExchange.Redis that has no counterpart here.
            _ if !key.contains(':') => warnings.push(format!(
                "redis.url: the StackExchange.Redis option `{key}` has no effect in Gatehouse"
            )),
            _ => warnings.push(format!(
                "redis.url: only the first endpoint is used; `{part}` is ignored"
            )),
        }
    }
    let endpoint = if endpoint.contains(':') {
        endpoint.to_owned()
    } else {
        format!("{endpoint}:6379")
    };
    let userinfo = match (user, password) {
        (None, None) => String::new(),
        (user, password) => format!(
            "{}:{}@",
            crate::env::userinfo_escape(user.as_deref().unwrap_or_default()),
            crate::env::userinfo_escape(password.as_deref().unwrap_or_default())
        ),
    };
    Ok(format!(
        "{}://{userinfo}{endpoint}/{}",
        if tls { "rediss" } else { "redis" },
        database.unwrap_or(0)
    ))
}

/// `amqp.url` (one URL, or several separated by commas) or `amqp.urls` (a list); `url` wins
/// when both are set (the environment's `AMQP_URL` writes `url`), with a warning.
fn amqp_urls(raw: RawAmqp, warnings: &mut Vec<String>) -> Result<AmqpConfig, ConfigError> {
    let schemes = &["amqp", "amqps"];
    let client = raw.client.unwrap_or_default();
    let (key, texts) = match (raw.url, raw.urls) {
        (Some(url), urls) => {
            if urls.is_some() {
                warnings.push(
                    "amqp.urls is ignored: amqp.url (or AMQP_URL) is set too, and wins".to_owned(),
                );
            }
            ("amqp.url", split_amqp_urls(&url))
        }
        (None, Some(urls)) => {
            if urls.is_empty() {
                return Err(invalid(
                    "amqp.urls",
                    "the list is empty (leave it out for the default URL)",
                ));
            }
            ("amqp.urls", urls)
        }
        (None, None) => ("amqp.url", vec![DEFAULT_AMQP_URL.to_owned()]),
    };
    let urls = texts
        .into_iter()
        .map(|url| url_setting(key, Some(url), DEFAULT_AMQP_URL, schemes))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(AmqpConfig {
        url: urls[0].clone(),
        urls,
        client,
    })
}

/// Several AMQP URLs in one value (`AMQP_URL=amqp://a:5672,amqp://b:5673`): split at each
/// comma that is followed (after blanks) by `amqp://` or `amqps://`, so that a comma inside a
/// URL (a password may hold one) never splits it. One URL comes back whole, unchanged.
pub(crate) fn split_amqp_urls(text: &str) -> Vec<String> {
    let mut urls = Vec::new();
    let mut start = 0;
    for (comma, _) in text.match_indices(',') {
        let next = text[comma + 1..].trim_start().to_ascii_lowercase();
        if next.starts_with("amqp://") || next.starts_with("amqps://") {
            urls.push(text[start..comma].trim().to_owned());
            start = comma + 1;
        }
    }
    if urls.is_empty() {
        return vec![text.to_owned()];
    }
    urls.push(text[start..].trim().to_owned());
    urls
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
        // Without `://` the value cannot be redacted reliably, so it is not shown.
        let shown = if url.contains("://") {
            format!("{:?}", redact_url(&url))
        } else {
            "the value".to_owned()
        };
        return Err(invalid(
            key,
            format!(
                "{shown} does not start with {}",
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
