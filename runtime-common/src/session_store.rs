//! The Redis side: reading session snapshots at start and writing snapshots and shard status,
//! through Redis outages.
//!
//! Owns: the Redis calls (`GET`, `MSET`) on a connection opened lazily (Redis may be down when
//! the process starts) that reconnects by itself afterwards, the start-up read loop, the writer
//! task that takes writes off the shards' loops (a slow or absent Redis must never delay a
//! heartbeat), and the log lines of Redis faults. Does not own any decision: when to read or
//! write again, what to write when Redis returns, when shards may start without their snapshot
//! and what a restart would lose are `proto_core::store_sync`'s; the key layout and the value
//! encoding are `proto_core::store`'s; when to persist is the shard's.

use std::collections::HashMap;
use std::time::Duration;

use gatehouse_config::SecretUrl;
use proto_core::profile::ProfileKind;
use proto_core::session::SessionSnapshot;
use proto_core::sharding::ShardId;
use proto_core::store::{self, KeyLayout, KeyValue, ShardStatus};
use proto_core::store_sync::{
    LoadAction, RetryPolicy, SnapshotLoad, StoreEvent, StorePolicy, StoreSync,
};
use redis::AsyncCommands;
use tokio::sync::{mpsc, oneshot};

use crate::redis_link::{RedisConnection, RedisTarget, Timeouts};
use crate::runtime::Runtime;

/// A Redis connection opened on first use, and opened again after any failure: each attempt
/// `proto_core::store_sync` asks for is one fresh try (the connection manager's own retries,
/// which would wait on a connection attempt made while Redis was still down, are off).
/// Through Sentinel, every new connection asks the Sentinels for the primary (`redis_link`).
struct RedisLink<R: Runtime> {
    rt: R,
    target: RedisTarget,
    connection: Option<RedisConnection>,
    /// For errors: their text never shows the URL's secrets.
    url: SecretUrl,
}

impl<R: Runtime> RedisLink<R> {
    async fn connection(&mut self) -> redis::RedisResult<RedisConnection> {
        if let Some(connection) = &self.connection
            && !connection.is_stale()
        {
            return Ok(connection.clone());
        }
        let timeouts = Timeouts {
            connect: Duration::from_secs(5),
            response: Duration::from_secs(5),
        };
        let connection = self.target.connect(&self.rt, timeouts).await?;
        self.connection = Some(connection.clone());
        Ok(connection)
    }

    async fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, RedisFault> {
        let result = match self.connection().await {
            Ok(mut connection) => connection.get(key).await,
            Err(e) => Err(e),
        };
        self.forget_on_error(result)
    }

    async fn set_all(&mut self, values: &[KeyValue]) -> Result<(), RedisFault> {
        let result = match self.connection().await {
            Ok(mut connection) => connection.mset(values).await,
            Err(e) => Err(e),
        };
        self.forget_on_error(result)
    }

    /// Drops the connection after a failure (the next attempt opens a new one), and turns the
    /// error into text without secrets.
    fn forget_on_error<T>(&mut self, result: redis::RedisResult<T>) -> Result<T, RedisFault> {
        result.map_err(|e| {
            self.connection = None;
            RedisFault(self.url.scrub(&e.to_string()))
        })
    }
}

/// A failed Redis call (an outage, not a configuration error), as text with the URL's secrets
/// scrubbed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
struct RedisFault(String);

/// The session store of one process: its Redis client and key layout.
pub struct SessionStore<R: Runtime> {
    link: RedisLink<R>,
    keys: KeyLayout,
}

impl<R: Runtime> std::fmt::Debug for SessionStore<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionStore")
            .field("keys", &self.keys)
            .finish()
    }
}

/// Why the store cannot be used at all (a configuration error, not an outage).
#[derive(Debug, thiserror::Error)]
#[error("cannot use Redis at {url}: {message}")]
pub struct StoreError {
    url: String,
    message: String,
}

/// What the start-up read decided.
#[derive(Debug)]
pub struct LoadedSessions {
    /// Per shard number: the snapshot to resume, or `None` to identify.
    pub sessions: HashMap<u32, Option<SessionSnapshot>>,
    /// The shards that identify because their snapshot could not be read.
    pub unread: Vec<u32>,
}

impl<R: Runtime> SessionStore<R> {
    /// The store at `url` under `key_prefix`. Does not connect: Redis may be down now (reads
    /// and writes connect, and retry while it is). Fails only for a URL the client refuses.
    pub fn open(rt: &R, url: &SecretUrl, key_prefix: &str) -> Result<Self, StoreError> {
        let target = RedisTarget::open(url.expose()).map_err(|e| StoreError {
            url: url.redacted(),
            message: url.scrub(&e.to_string()),
        })?;
        Ok(Self {
            link: RedisLink {
                rt: rt.clone(),
                target,
                connection: None,
                url: url.clone(),
            },
            keys: KeyLayout::new(key_prefix),
        })
    }

    /// Where Redis is (cluster mode opens its own connection to it, `cluster`).
    pub(crate) fn target(&self) -> RedisTarget {
        self.link.target.clone()
    }

    /// Another handle on the same Redis and keys, with a connection of its own (cluster mode
    /// loads each shard's snapshot when it takes the shard over).
    pub(crate) fn another(&self) -> Self {
        Self {
            link: RedisLink {
                rt: self.link.rt.clone(),
                target: self.link.target.clone(),
                connection: None,
                url: self.link.url.clone(),
            },
            keys: self.keys.clone(),
        }
    }

    /// The key layout in use.
    pub fn keys(&self) -> &KeyLayout {
        &self.keys
    }

    /// Reads every shard's snapshot, retrying while Redis fails, as
    /// `proto_core::store_sync::SnapshotLoad` decides: returns once every shard is decided.
    pub async fn load_sessions(
        &mut self,
        shards: &[ShardId],
        policy: StorePolicy,
    ) -> LoadedSessions {
        let ids: HashMap<u32, ShardId> = shards.iter().map(|s| (s.number(), *s)).collect();
        let mut load = SnapshotLoad::new(ids.keys().copied(), policy, self.link.rt.now());
        loop {
            while let Some(action) = load.poll_action() {
                match action {
                    LoadAction::Read(numbers) => {
                        for number in numbers {
                            let key = self.keys.session(number);
                            match self.link.get(&key).await {
                                Ok(bytes) => {
                                    crate::status::global().redis_write(Ok::<(), RedisFault>(()));
                                    let snapshot =
                                        bytes.and_then(|b| store::decode_session(&b, ids[&number]));
                                    load.handle_read(self.link.rt.now(), number, snapshot);
                                }
                                Err(e) => {
                                    crate::status::global().redis_write(Err(&e));
                                    load.handle_read_failed(self.link.rt.now(), e.0);
                                    break;
                                }
                            }
                        }
                    }
                    LoadAction::Start { sessions, unread } => {
                        std::iter::from_fn(|| load.poll_event()).for_each(log_event);
                        return LoadedSessions {
                            sessions: sessions.into_iter().collect(),
                            unread,
                        };
                    }
                }
            }
            std::iter::from_fn(|| load.poll_event()).for_each(log_event);
            let at = load
                .poll_timeout()
                .unwrap_or_else(|| self.link.rt.now() + policy.retry.first);
            self.link.rt.sleep_until(at).await;
            load.handle_timeout(self.link.rt.now());
        }
    }

    /// Starts the writer task; shards write through the returned handle. `saved` are the
    /// snapshots the start-up read found (what Redis holds). It also keeps the predecessors'
    /// keys of the profile up to date (see `proto_core::store`).
    pub fn start_writer(
        self,
        profile: ProfileKind,
        shard_count: u32,
        retry: RetryPolicy,
        saved: Vec<SessionSnapshot>,
    ) -> StoreWriter {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut sync = StoreSync::new(self.keys, profile, retry, saved);
        sync.save_start(
            shard_count,
            crate::status::epoch_ms(self.link.rt.wall_clock()),
        );
        let rt = self.link.rt.clone();
        rt.spawn(write_loop(self.link, sync, rx));
        StoreWriter { writes: tx }
    }
}

enum Write {
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

    /// Queues a shard status (the writer stamps it with the wall clock).
    pub fn save_status(&self, status: ShardStatus) {
        let _ = self.writes.send(Write::Status(status));
    }

    /// Waits until everything queued before this call was written, or the next attempt
    /// failed. Skips the back-off of a failing Redis (the process is about to stop).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.writes.send(Write::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

async fn write_loop<R: Runtime>(
    mut link: RedisLink<R>,
    mut sync: StoreSync,
    mut writes: mpsc::UnboundedReceiver<Write>,
) {
    use futures_util::future::{Either, select};
    let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
    let mut open = true;
    loop {
        while let Ok(write) = writes.try_recv() {
            take(&link.rt, &mut sync, write, &mut flushes);
        }
        if let Some(batch) = sync.poll_write(link.rt.now()) {
            let result = link.set_all(&batch).await;
            let now = link.rt.now();
            match &result {
                Ok(()) => sync.handle_written(now),
                Err(e) => sync.handle_write_failed(now, e.0.clone()),
            }
            std::iter::from_fn(|| sync.poll_event()).for_each(log_event);
            if result.is_err() {
                answer(&mut flushes);
            }
            crate::metrics::record_redis_write(result);
            continue;
        }
        std::iter::from_fn(|| sync.poll_event()).for_each(log_event);
        if sync.is_settled() {
            answer(&mut flushes);
            if !open {
                return;
            }
        }
        let timeout = sync.poll_timeout();
        let sleep = async {
            match timeout {
                Some(at) => link.rt.sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let receiving = open;
        let next = async {
            if receiving {
                writes.recv().await
            } else {
                std::future::pending().await
            }
        };
        futures_util::pin_mut!(sleep, next);
        match select(next, sleep).await {
            Either::Left((Some(write), _)) => take(&link.rt, &mut sync, write, &mut flushes),
            Either::Left((None, _)) => open = false,
            Either::Right(_) => {}
        }
    }
}

fn answer(flushes: &mut Vec<oneshot::Sender<()>>) {
    for done in flushes.drain(..) {
        let _ = done.send(());
    }
}

fn take<R: Runtime>(
    rt: &R,
    sync: &mut StoreSync,
    write: Write,
    flushes: &mut Vec<oneshot::Sender<()>>,
) {
    match write {
        Write::Session(snapshot) => sync.save_session(&snapshot),
        Write::Status(mut status) => {
            status.updated_at_ms = crate::status::epoch_ms(rt.wall_clock());
            sync.save_status(&status);
        }
        Write::Flush(done) => {
            sync.expedite();
            flushes.push(done);
        }
    }
}

/// Logs a store event: each outage once when it starts (with what a restart would lose) and
/// once when it ends.
fn log_event(event: StoreEvent) {
    match event {
        StoreEvent::ReadFailing {
            reason,
            shards,
            retry_in,
            identify_anyway_in,
        } => match identify_anyway_in {
            None => tracing::warn!(
                error = %reason,
                ?shards,
                ?retry_in,
                "cannot read the session snapshots from Redis: these shards wait for it and \
                 connect once it answers (a new session would lose what Discord replays on a \
                 RESUME); set redis.identify_anyway_after_secs to start new sessions after an \
                 outage of that length"
            ),
            Some(after) => tracing::warn!(
                error = %reason,
                ?shards,
                ?retry_in,
                identify_anyway_in = ?after,
                "cannot read the session snapshots from Redis: these shards wait for it, and \
                 start new sessions if it is still unreachable then \
                 (redis.identify_anyway_after_secs)"
            ),
        },
        StoreEvent::ReadRecovered { after, failures } => tracing::info!(
            ?after,
            failures,
            "Redis answers again: starting the shards with their session snapshots"
        ),
        StoreEvent::IdentifyingAnyway { shards, waited } => tracing::error!(
            ?shards,
            ?waited,
            "Redis is still unreachable: these shards start new sessions without their \
             snapshots (redis.identify_anyway_after_secs); the events Discord would have \
             replayed to their old sessions are lost"
        ),
        StoreEvent::WritesFailing {
            reason,
            retry_in,
            at_risk,
        } => {
            let restart = if at_risk.is_empty() {
                "a restart now would resume every shard from its current sequence: nothing lost"
                    .to_owned()
            } else {
                at_risk
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            tracing::warn!(
                error = %reason,
                ?retry_in,
                restart = %restart,
                "cannot write to Redis: retrying with back-off, the latest snapshots are \
                 written once it answers; until then a restarted Gatehouse waits for Redis, \
                 then resumes from what Redis holds (see `restart`)"
            );
        }
        StoreEvent::WritesRecovered {
            after,
            failures,
            written,
        } => tracing::info!(
            ?after,
            failures,
            written,
            "Redis answers again: the latest snapshots are written"
        ),
    }
}
