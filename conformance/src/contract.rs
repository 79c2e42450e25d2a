//! The implementer's contract: the environment variables the suite sets for the implementation
//! under test, and the limits it is held to (start-up time, stop signal and grace).
//!
//! This module owns the variable *names* and how their values are written. It does not start the
//! process (see [`crate::process`]) and does not decide scenario settings (see
//! [`crate::scenario::Setup`]). conformance/README.md documents the same list for implementers;
//! keep the two in step.

use std::time::Duration;

use crate::profiles::{BodyEncoding, Profile};

/// `http://127.0.0.1:PORT/api/v10`: the base of the mock's HTTP API. The implementation fetches
/// `GET {DISCORD_API_BASE}/gateway/bot` (header `Authorization: Bot <token>`) and connects to the
/// returned `url` with `?v=<DISCORD_API_VERSION>&encoding=<DISCORD_ENCODING>[&compress=<DISCORD_COMPRESS>]`.
pub const DISCORD_API_BASE: &str = "DISCORD_API_BASE";
/// The Discord API version the implementation must connect with (`v=` in the gateway URL; the
/// REST base ends in `/api/v<version>`). The suite reads it from its own environment (or
/// `--api-version`) and passes it on; default [`DEFAULT_API_VERSION`]. Discord still documents 9
/// as available; the Cordis 1.x service connects with 9.
pub const DISCORD_API_VERSION: &str = "DISCORD_API_VERSION";
/// The gateway version the suite expects unless told otherwise.
pub const DEFAULT_API_VERSION: u8 = 10;
/// The bot token (no `Bot ` prefix). The mock closes with 4004 on any other token.
pub const DISCORD_TOKEN: &str = "DISCORD_TOKEN";
/// The bot's total shard count.
pub const SHARD_COUNT: &str = "SHARD_COUNT";
/// The shard ids this process runs: a comma list of ids and inclusive ranges (`0,1`, `0-3`).
pub const SHARD_IDS: &str = "SHARD_IDS";
/// The gateway intents bitfield, decimal.
pub const DISCORD_INTENTS: &str = "DISCORD_INTENTS";
/// Transport compression: `none`, `zlib-stream` or `zstd-stream`.
pub const DISCORD_COMPRESS: &str = "DISCORD_COMPRESS";
/// Gateway encoding: `json` or `etf`.
pub const DISCORD_ENCODING: &str = "DISCORD_ENCODING";
/// `amqp://user:pass@host:port/<vhost>`: the scenario's own RabbitMQ virtual host.
pub const AMQP_URL: &str = "AMQP_URL";
/// `redis://host:port/<db>`.
pub const REDIS_URL: &str = "REDIS_URL";
/// Every Redis key the implementation writes must start with this prefix.
pub const REDIS_KEY_PREFIX: &str = "REDIS_KEY_PREFIX";
/// The broker profile: `gatehouse`, `spectacles`, `cordis`, `twilight-dispatch` or `retsu`.
pub const BROKER_PROFILE: &str = "BROKER_PROFILE";
/// The body encoding of events and commands where the profile offers a choice (Spectacles,
/// Cordis): `json` or `msgpack`. Always set; for the other profiles it is `json`.
pub const BROKER_BODY_ENCODING: &str = "BROKER_BODY_ENCODING";
/// The scenario being run (informational, for the implementation's logs).
pub const CONFORMANCE_SCENARIO: &str = "CONFORMANCE_SCENARIO";

/// Every variable name the suite sets, in documentation order.
pub const ALL: [&str; 14] = [
    DISCORD_API_BASE,
    DISCORD_API_VERSION,
    DISCORD_TOKEN,
    SHARD_COUNT,
    SHARD_IDS,
    DISCORD_INTENTS,
    DISCORD_COMPRESS,
    DISCORD_ENCODING,
    AMQP_URL,
    REDIS_URL,
    REDIS_KEY_PREFIX,
    BROKER_PROFILE,
    BROKER_BODY_ENCODING,
    CONFORMANCE_SCENARIO,
];

/// How long after its start the implementation has to send its first IDENTIFY (or RESUME).
pub const STARTUP_BUDGET: Duration = Duration::from_secs(30);
/// How long the implementation has to exit after SIGTERM before it gets SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// Transport compression requested from the implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// No transport compression.
    None,
    /// `compress=zlib-stream`.
    ZlibStream,
    /// `compress=zstd-stream`.
    ZstdStream,
}

impl Compression {
    /// The value written to [`DISCORD_COMPRESS`].
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::ZlibStream => "zlib-stream",
            Self::ZstdStream => "zstd-stream",
        }
    }
}

/// Gateway encoding requested from the implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// `encoding=json`.
    Json,
    /// `encoding=etf`.
    Etf,
}

impl Encoding {
    /// The value written to [`DISCORD_ENCODING`].
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Etf => "etf",
        }
    }
}

/// The values of every variable for one scenario run.
#[derive(Clone, Debug)]
pub struct ImplEnv {
    /// [`DISCORD_API_BASE`].
    pub api_base: String,
    /// [`DISCORD_API_VERSION`].
    pub api_version: u8,
    /// [`DISCORD_TOKEN`].
    pub token: String,
    /// [`SHARD_COUNT`].
    pub shard_count: u32,
    /// [`SHARD_IDS`].
    pub shard_ids: Vec<u32>,
    /// [`DISCORD_INTENTS`].
    pub intents: u64,
    /// [`DISCORD_COMPRESS`].
    pub compress: Compression,
    /// [`DISCORD_ENCODING`].
    pub encoding: Encoding,
    /// [`AMQP_URL`].
    pub amqp_url: String,
    /// [`REDIS_URL`].
    pub redis_url: String,
    /// [`REDIS_KEY_PREFIX`].
    pub redis_key_prefix: String,
    /// [`BROKER_PROFILE`].
    pub profile: Profile,
    /// [`BROKER_BODY_ENCODING`].
    pub body_encoding: BodyEncoding,
    /// [`CONFORMANCE_SCENARIO`].
    pub scenario: String,
}

impl ImplEnv {
    /// The `(name, value)` pairs to set on the child process.
    pub fn vars(&self) -> Vec<(&'static str, String)> {
        vec![
            (DISCORD_API_BASE, self.api_base.clone()),
            (DISCORD_API_VERSION, self.api_version.to_string()),
            (DISCORD_TOKEN, self.token.clone()),
            (SHARD_COUNT, self.shard_count.to_string()),
            (SHARD_IDS, format_shard_ids(&self.shard_ids)),
            (DISCORD_INTENTS, self.intents.to_string()),
            (DISCORD_COMPRESS, self.compress.as_str().to_owned()),
            (DISCORD_ENCODING, self.encoding.as_str().to_owned()),
            (AMQP_URL, self.amqp_url.clone()),
            (REDIS_URL, self.redis_url.clone()),
            (REDIS_KEY_PREFIX, self.redis_key_prefix.clone()),
            (BROKER_PROFILE, self.profile.name().to_owned()),
            (BROKER_BODY_ENCODING, self.body_encoding.as_str().to_owned()),
            (CONFORMANCE_SCENARIO, self.scenario.clone()),
        ]
    }
}

/// Writes shard ids as the shortest list of ids and inclusive ranges: `[0,1,2,3]` → `0-3`,
/// `[0,2]` → `0,2`, `[0,1]` → `0,1`.
pub fn format_shard_ids(ids: &[u32]) -> String {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        parts.push(match end - start {
            0 => start.to_string(),
            1 => format!("{start},{end}"),
            _ => format!("{start}-{end}"),
        });
        i += 1;
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_ids_are_written_as_ids_and_ranges() {
        assert_eq!(format_shard_ids(&[0]), "0");
        assert_eq!(format_shard_ids(&[0, 1]), "0,1");
        assert_eq!(format_shard_ids(&[3, 2, 1, 0]), "0-3");
        assert_eq!(format_shard_ids(&[0, 2, 3, 4, 7]), "0,2-4,7");
    }
}
