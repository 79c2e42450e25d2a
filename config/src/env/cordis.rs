//! Cordis' environment variables: the `CORDIS_*` names of the gateway service 0.x and the
//! first spec (cordis-lib/spec), and the unprefixed names of the service 1.x (yargs `.env()`,
//! `services/gateway/src/args.ts`), which are read only with the cordis profile.
//!
//! | variable (0.x / 1.x) | Gatehouse key | note |
//! |---|---|---|
//! | `CORDIS_AUTH` / `AUTH` | `discord.token` | |
//! | `CORDIS_AMQP_HOST` / `AMQP_HOST` | `amqp.url` | a host, or a whole URL |
//! | `CORDIS_REDIS_URL` | `redis.url` | optional in Cordis: without it, sessions stay in memory |
//! | `CORDIS_STARTING_SHARD` / `STARTING_SHARD` | `discord.shard_ids` | first shard (default 0) |
//! | `CORDIS_SHARD_COUNT` / `SHARD_COUNT` | `discord.shard_ids` | shards of this process; alone with 1.x names it is the neutral total |
//! | `CORDIS_TOTAL_SHARD_COUNT` / `TOTAL_SHARD_COUNT` | `discord.shard_count` | |
//! | `CORDIS_WS_COMPRESS` / `WS_COMPRESS` | `discord.compression` | default true |
//! | `CORDIS_WS_ENCODING` / `WS_ENCODING` | `discord.encoding` | default `etf` with this profile |
//! | `CORDIS_WS_LARGE_THRESHOLD` / `WS_LARGE_THRESHOLD` | `discord.large_threshold` | |
//! | `CORDIS_WS_INTENTS` / `WS_INTENTS` | `discord.intents` | also `all`, `privileged`, `nonPrivileged` |
//! | `CORDIS_WS_HELLO_TIMEOUT` / `WS_HELLO_TIMEOUT` | `discord.hello_timeout_ms` | milliseconds |
//! | `CORDIS_DEBUG` / `DEBUG` | (none) | warned about: set `RUST_LOG=debug` |
//! | `CORDIS_WS_{OPEN,READY,GUILD,RECONNECT}_TIMEOUT` | (none) | warned about (see the README) |

use proto_core::profile::ProfileKind;

use super::{CompositeEnvVar, EnvKind, EnvLookup, EnvTable, EnvVar, Unsupported, number};

const TIMEOUTS_WHY: &str = "Gatehouse's shard has its own connection timers (20 s for HELLO unless \
    WS_HELLO_TIMEOUT is set, Discord's heartbeat for the rest) and no guild cache to wait for";

const DEBUG_WHY: &str = "set RUST_LOG=debug (or gatehouse=debug) for debug logs";

/// The rows both generations share, with the names prefixed by `$p` (`"CORDIS_"` for 0.x,
/// `""` for 1.x): one mapping, written once; then the rows of one generation only.
macro_rules! shared_vars {
    ($p:literal $(, $only:expr)*) => {
        &[
            EnvVar {
                names: &[concat!($p, "AUTH")],
                path: &["discord", "token"],
                kind: EnvKind::Text,
            },
            EnvVar {
                names: &[concat!($p, "AMQP_HOST")],
                path: &["amqp", "url"],
                kind: EnvKind::Converted(amqp_host_or_url),
            },
            EnvVar {
                names: &[concat!($p, "TOTAL_SHARD_COUNT")],
                path: &["discord", "shard_count"],
                kind: EnvKind::Integer,
            },
            EnvVar {
                names: &[concat!($p, "WS_COMPRESS")],
                path: &["discord", "compression"],
                kind: EnvKind::Converted(compress),
            },
            EnvVar {
                names: &[concat!($p, "WS_ENCODING")],
                path: &["discord", "encoding"],
                kind: EnvKind::Text,
            },
            EnvVar {
                names: &[concat!($p, "WS_LARGE_THRESHOLD")],
                path: &["discord", "large_threshold"],
                kind: EnvKind::Integer,
            },
            EnvVar {
                names: &[concat!($p, "WS_INTENTS")],
                path: &["discord", "intents"],
                kind: EnvKind::IntegerOrText,
            },
            EnvVar {
                names: &[concat!($p, "WS_HELLO_TIMEOUT")],
                path: &["discord", "hello_timeout_ms"],
                kind: EnvKind::Integer,
            },
            $($only,)*
        ]
    };
}

/// The names both generations recognise without supporting them, prefixed by `$p`.
macro_rules! shared_unsupported {
    ($p:literal) => {
        &[
            Unsupported {
                name: concat!($p, "DEBUG"),
                fine: &["false", "0"],
                why: DEBUG_WHY,
            },
            Unsupported {
                name: concat!($p, "WS_OPEN_TIMEOUT"),
                fine: &[],
                why: TIMEOUTS_WHY,
            },
            Unsupported {
                name: concat!($p, "WS_READY_TIMEOUT"),
                fine: &[],
                why: TIMEOUTS_WHY,
            },
            Unsupported {
                name: concat!($p, "WS_GUILD_TIMEOUT"),
                fine: &[],
                why: TIMEOUTS_WHY,
            },
            Unsupported {
                name: concat!($p, "WS_RECONNECT_TIMEOUT"),
                fine: &[],
                why: TIMEOUTS_WHY,
            },
        ]
    };
}

/// The 0.x names (`CORDIS_*`), read whatever the profile.
pub const TABLE: EnvTable = EnvTable {
    source: "cordis",
    only_with: None,
    warn_elsewhere: true,
    composites: &[CompositeEnvVar {
        names: &["CORDIS_STARTING_SHARD", "CORDIS_SHARD_COUNT"],
        path: &["discord", "shard_ids"],
        build: prefixed_shards,
    }],
    vars: shared_vars!(
        "CORDIS_",
        EnvVar {
            names: &["CORDIS_REDIS_URL"],
            path: &["redis", "url"],
            kind: EnvKind::Text,
        }
    ),
    unsupported: shared_unsupported!("CORDIS_"),
};

/// The names of the broker contract with the cordis profile: none (the `CORDIS_*` names concern
/// the connection); kept so that the table list shows every source.
pub const PROFILE_TABLE: EnvTable = EnvTable {
    source: "cordis",
    only_with: Some(ProfileKind::Cordis),
    warn_elsewhere: true,
    composites: &[],
    vars: &[],
    unsupported: &[],
};

/// The 1.x names (unprefixed), read only with the cordis profile: names like `AUTH` and `DEBUG`
/// are too generic to read otherwise.
pub const UNPREFIXED_TABLE: EnvTable = EnvTable {
    source: "cordis 1.x",
    only_with: Some(ProfileKind::Cordis),
    warn_elsewhere: false,
    composites: &[CompositeEnvVar {
        names: &["STARTING_SHARD", "SHARD_COUNT", "TOTAL_SHARD_COUNT"],
        path: &["discord", "shard_ids"],
        build: unprefixed_shards,
    }],
    vars: shared_vars!(""),
    unsupported: shared_unsupported!(""),
};

/// Whether Cordis 1.x's shard names are in use, which makes `SHARD_COUNT` mean "the shards of
/// this process" rather than the neutral total (see [`super::gatehouse`]).
pub(crate) fn uses_unprefixed_shard_names(env: EnvLookup<'_>) -> bool {
    ["STARTING_SHARD", "TOTAL_SHARD_COUNT"]
        .iter()
        .any(|name| super::set_value(env, name).is_some())
}

fn prefixed_shards(env: EnvLookup<'_>) -> Option<Result<toml::Value, String>> {
    shards(env, "CORDIS_STARTING_SHARD", "CORDIS_SHARD_COUNT")
}

fn unprefixed_shards(env: EnvLookup<'_>) -> Option<Result<toml::Value, String>> {
    if !uses_unprefixed_shard_names(env) {
        return None;
    }
    shards(env, "STARTING_SHARD", "SHARD_COUNT")
}

/// `count` shards from `starting` (default 0); `starting` alone runs every shard from it on
/// (`"4-"`: up to the last of the total, configured or recommended).
fn shards(
    env: EnvLookup<'_>,
    starting: &'static str,
    count: &'static str,
) -> Option<Result<toml::Value, String>> {
    let start = number(env, starting);
    let count_value = number(env, count);
    if start.is_none() && count_value.is_none() {
        return None;
    }
    Some((|| {
        let start = start.transpose()?.unwrap_or(0);
        let text = match count_value.transpose()? {
            Some(0) => return Err(format!("{count} must be at least 1")),
            Some(n) => format!("{start}-{}", start + n - 1),
            None => format!("{start}-"),
        };
        Ok(toml::Value::String(text))
    })())
}

/// `WS_COMPRESS` (`true`/`false`) as a compression name.
fn compress(text: &str) -> Result<Option<toml::Value>, String> {
    match super::parse_bool(text) {
        Some(true) => Ok(Some("zlib-stream".into())),
        Some(false) => Ok(Some("none".into())),
        None => Err(format!("expected true or false, got {text:?}")),
    }
}

/// `AMQP_HOST` is a host (or a whole URL).
fn amqp_host_or_url(text: &str) -> Result<Option<toml::Value>, String> {
    Ok(Some(toml::Value::String(if text.contains("://") {
        text.to_owned()
    } else {
        format!("amqp://{text}")
    })))
}
