//! The Redis side: loading session snapshots at start and writing snapshots and shard status.
//!
//! Owns: the Redis calls (`GET`/`SET`) on a self-reconnecting connection, and the writer task
//! that takes writes off the shards' loops (a slow or absent Redis must never delay a
//! heartbeat): shards hand it values, it keeps only the latest per key and writes them. Does
//! not own the key layout or the value encoding (`proto_core::store`), or when to persist (the
//! shard decides). A failed write is logged and skipped: the next snapshot overwrites it, and
//! the worst case after a crash is a resume from an older sequence (more duplicates, no loss).

use std::collections::BTreeMap;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gatehouse_config::SecretUrl;
use proto_core::profile::ProfileKind;
use proto_core::session::SessionSnapshot;
use proto_core::sharding::ShardId;
use proto_core::store::{self, KeyLayout, PredecessorKeys, ShardStatus};
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{mpsc, oneshot};

use crate::runtime::Runtime;

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

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
            message: url.scrub(&e.to_string()),
        };
        let client = crate::tls::redis_client(url.expose()).map_err(error)?;
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

    /// Starts the writer task on `rt`; shards write through the returned handle. It also
    /// keeps the predecessors' keys of the profile up to date (see `proto_core::store`).
    pub fn start_writer<R: Runtime>(
        self,
        rt: &R,
        profile: ProfileKind,
        shard_count: u32,
    ) -> StoreWriter {
        let (tx, rx) = mpsc::unbounded_channel();
        let predecessor = PredecessorKeys::new(profile, self.keys.prefix());
        let start = predecessor.on_start(shard_count, unix_millis());
        for (key, value) in start {
            let _ = tx.send(Write::Value { key, value });
        }
        rt.spawn(write_loop(self, predecessor, rx));
        StoreWriter { writes: tx }
    }
}

enum Write {
    Value { key: String, value: Vec<u8> },
    Session(SessionSnapshot),
    Status(ShardStatus),
    Flush(oneshot::Sender<()>),
}

/// The shards' handle on the writer task: every call returns at once.
#[derive(Clone, Debug)]
pub struct StoreWriter {
    writes: mpsc::UnboundedSender<Write>,
}

impl StoreWriter {
    /// A writer that keeps nothing, for a process without Redis: sessions live only in the
    /// shards' memory, so a restart identifies every shard afresh.
    pub fn discarding() -> Self {
        let (writes, _) = mpsc::unbounded_channel();
        Self { writes }
    }

    /// Queues a session snapshot.
    pub fn save_session(&self, snapshot: &SessionSnapshot) {
        let _ = self.writes.send(Write::Session(snapshot.clone()));
    }

    /// Queues a shard status (stamped with the wall clock now).
    pub fn save_status(&self, mut status: ShardStatus) {
        status.updated_at_ms = unix_millis();
        let _ = self.writes.send(Write::Status(status));
    }

    /// Waits until everything queued before this call was written (or failed).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.writes.send(Write::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

async fn write_loop(
    mut store: SessionStore,
    mut predecessor: PredecessorKeys,
    mut writes: mpsc::UnboundedReceiver<Write>,
) {
    let mut pending: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut flushes = Vec::new();
    while let Some(first) = writes.recv().await {
        let mut next = Some(first);
        // Take everything queued so far, keeping only the latest value per key.
        while let Some(write) = next {
            match write {
                Write::Value { key, value } => {
                    pending.insert(key, value);
                }
                Write::Session(snapshot) => {
                    pending.insert(
                        store.keys.session(snapshot.shard.number()),
                        store::encode_session(&snapshot),
                    );
                    pending.extend(predecessor.on_session(&snapshot));
                }
                Write::Status(status) => {
                    pending.insert(
                        store.keys.status(status.shard),
                        store::encode_status(&status),
                    );
                    pending.extend(predecessor.on_status(&status));
                }
                Write::Flush(done) => flushes.push(done),
            }
            next = writes.try_recv().ok();
        }
        for (key, value) in std::mem::take(&mut pending) {
            let result: redis::RedisResult<()> = store.connection.set(&key, value).await;
            if let Err(e) = &result {
                tracing::warn!(key, error = %e, "could not write to Redis");
            }
            crate::metrics::record_redis_write(result.map_err(|e| e.to_string()));
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}
