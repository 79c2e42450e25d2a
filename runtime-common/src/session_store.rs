//! The Redis side: loading session snapshots at start and writing snapshots and shard status.
//!
//! Owns: the Redis calls (`GET`/`SET`) on a self-reconnecting connection. Does not own the key
//! layout or the value encoding (`proto_core::store`), or when to persist (the shard decides).
//! A failed write is logged and skipped: the next snapshot overwrites it, and the worst case
//! after a crash is a resume from an older sequence (more duplicates, no loss).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proto_core::config::SecretUrl;
use proto_core::session::SessionSnapshot;
use proto_core::sharding::ShardId;
use proto_core::store::{self, KeyLayout, ShardStatus};
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::runtime::Runtime;

/// A handle on the session store (cheap to clone: one multiplexed connection underneath).
#[derive(Clone)]
pub struct SessionStore {
    connection: ConnectionManager,
    keys: KeyLayout,
}

impl std::fmt::Debug for SessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionStore")
            .field("keys", &self.keys)
            .finish()
    }
}

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to Redis at {url}: {message}")]
pub struct StoreError {
    url: String,
    message: String,
}

impl SessionStore {
    /// Connects to Redis (the connection reconnects by itself afterwards).
    pub async fn connect<R: Runtime>(
        rt: &R,
        url: &SecretUrl,
        key_prefix: &str,
    ) -> Result<Self, StoreError> {
        let error = |e: redis::RedisError| StoreError {
            url: url.redacted(),
            message: e.to_string(),
        };
        let client = redis::Client::open(url.expose()).map_err(error)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(3)
            .set_max_delay(Duration::from_secs(2));
        let connection = rt.redis_connection(client, config).await.map_err(error)?;
        Ok(Self {
            connection,
            keys: KeyLayout::new(key_prefix),
        })
    }

    /// The key layout in use.
    pub fn keys(&self) -> &KeyLayout {
        &self.keys
    }

    /// The stored snapshot of `shard`, if there is a valid one for this shard count.
    pub async fn load_session(
        &mut self,
        shard: ShardId,
    ) -> redis::RedisResult<Option<SessionSnapshot>> {
        let key = self.keys.session(shard.number());
        let bytes: Option<Vec<u8>> = self.connection.get(&key).await?;
        Ok(bytes.and_then(|b| store::decode_session(&b, shard)))
    }

    /// Stores a snapshot; errors are logged.
    pub async fn save_session(&mut self, snapshot: &SessionSnapshot) {
        let key = self.keys.session(snapshot.shard.number());
        let result: redis::RedisResult<()> = self
            .connection
            .set(&key, store::encode_session(snapshot))
            .await;
        if let Err(e) = result {
            tracing::warn!(shard = snapshot.shard.number(), error = %e, "could not store the session");
        }
    }

    /// Stores a shard status (stamped with the wall clock); errors are logged.
    pub async fn save_status(&mut self, mut status: ShardStatus) {
        status.updated_at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        let key = self.keys.status(status.shard);
        let result: redis::RedisResult<()> = self
            .connection
            .set(&key, store::encode_status(&status))
            .await;
        if let Err(e) = result {
            tracing::debug!(shard = status.shard, error = %e, "could not store the shard status");
        }
    }
}
