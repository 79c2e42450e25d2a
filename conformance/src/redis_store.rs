//! Redis as the suite sees it: the keys an implementation wrote under the scenario's prefix, their
//! values, and their removal afterwards.
//!
//! Owns one connection and one key prefix. It does not know any profile's key layout (the
//! scenarios that check layouts do).

use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;

/// A Redis error with context.
#[derive(Debug, thiserror::Error)]
#[error("Redis, {what}: {source}")]
pub struct RedisError {
    what: String,
    source: redis::RedisError,
}

fn ctx<T>(what: impl Into<String>, r: redis::RedisResult<T>) -> Result<T, RedisError> {
    r.map_err(|source| RedisError {
        what: what.into(),
        source,
    })
}

/// The Redis type of `key` (`TYPE`): "string", "hash", "none", ...
async fn key_type(connection: &mut MultiplexedConnection, key: &str) -> Result<String, RedisError> {
    ctx(
        format!("TYPE {key}"),
        redis::cmd("TYPE").arg(key).query_async(connection).await,
    )
}

/// The value of the string key `key` (`GET`), invalid UTF-8 replaced.
async fn get_string(
    connection: &mut MultiplexedConnection,
    key: &str,
) -> Result<String, RedisError> {
    let bytes: Vec<u8> = ctx(format!("GET {key}"), connection.get(key).await)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// A key and its value, read as a string where possible.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The full key, prefix included.
    pub key: String,
    /// The Redis type (`string`, `hash`, ...).
    pub kind: String,
    /// The value: the string, or for hashes `field=value` lines, or for other types a summary.
    pub value: String,
}

/// The keys under one prefix.
#[derive(Clone)]
pub struct RedisStore {
    connection: MultiplexedConnection,
    prefix: String,
}

impl RedisStore {
    /// Connects. `prefix` must not contain Redis glob characters (`*?[]\`).
    pub async fn connect(redis_url: &str, prefix: &str) -> Result<Self, RedisError> {
        assert!(
            !prefix.contains(['*', '?', '[', ']', '\\']),
            "Redis prefix {prefix:?} has glob characters"
        );
        let client = ctx("parsing REDIS_URL", redis::Client::open(redis_url))?;
        let connection = ctx(
            "connecting",
            client.get_multiplexed_async_connection().await,
        )?;
        Ok(Self {
            connection,
            prefix: prefix.to_owned(),
        })
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Every key under the prefix, sorted.
    pub async fn keys(&self) -> Result<Vec<String>, RedisError> {
        let mut connection = self.connection.clone();
        let pattern = format!("{}*", self.prefix);
        let mut keys = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = ctx(
                "SCAN",
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(500)
                    .query_async(&mut connection)
                    .await,
            )?;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    /// Every key under the prefix with its value.
    pub async fn entries(&self) -> Result<Vec<Entry>, RedisError> {
        let mut connection = self.connection.clone();
        let mut entries = Vec::new();
        for key in self.keys().await? {
            let kind = key_type(&mut connection, &key).await?;
            let value = match kind.as_str() {
                "string" => get_string(&mut connection, &key).await?,
                "hash" => {
                    let pairs: Vec<(String, String)> =
                        ctx(format!("HGETALL {key}"), connection.hgetall(&key).await)?;
                    pairs
                        .into_iter()
                        .map(|(f, v)| format!("{f}={v}"))
                        .collect::<Vec<_>>()
                        .join("\n")
                }
                other => format!("<{other}>"),
            };
            entries.push(Entry { key, kind, value });
        }
        Ok(entries)
    }

    /// The string value of `prefix + suffix`, if it is a string key.
    pub async fn get(&self, suffix: &str) -> Result<Option<String>, RedisError> {
        let mut connection = self.connection.clone();
        let key = format!("{}{suffix}", self.prefix);
        let kind = key_type(&mut connection, &key).await?;
        if kind != "string" {
            return Ok(None);
        }
        get_string(&mut connection, &key).await.map(Some)
    }

    /// Sets field `field` of the hash `prefix + suffix`.
    pub async fn hash_set(&self, suffix: &str, field: &str, value: &str) -> Result<(), RedisError> {
        let mut connection = self.connection.clone();
        let key = format!("{}{suffix}", self.prefix);
        ctx(
            format!("HSET {key}"),
            redis::cmd("HSET")
                .arg(&key)
                .arg(field)
                .arg(value)
                .query_async::<()>(&mut connection)
                .await,
        )
    }

    /// Field `field` of the hash `prefix + suffix`, if set.
    pub async fn hash_get(&self, suffix: &str, field: &str) -> Result<Option<String>, RedisError> {
        let mut connection = self.connection.clone();
        let key = format!("{}{suffix}", self.prefix);
        ctx(
            format!("HGET {key}"),
            redis::cmd("HGET")
                .arg(&key)
                .arg(field)
                .query_async(&mut connection)
                .await,
        )
    }

    /// Deletes every key under the prefix; returns how many.
    pub async fn delete_all(&self) -> Result<usize, RedisError> {
        let keys = self.keys().await?;
        if keys.is_empty() {
            return Ok(0);
        }
        let mut connection = self.connection.clone();
        let mut deleted = 0;
        for batch in keys.chunks(500) {
            let n: usize = ctx("DEL", connection.del(batch).await)?;
            deleted += n;
        }
        Ok(deleted)
    }
}
