//! The Redis Streams output (issue 14, item 2): events appended as `@spectacles/brokers`
//! 0.9.3's `Redis` broker writes them, commands read from the streams its publishers write.
//!
//! Owns: the publisher task (one per process: batches the shards' publications into one
//! pipeline of `XADD <stream> [MAXLEN ~ n] * data <body>`, on a Redis Cluster one per hash
//! slot, and acknowledges each only when Redis replied with its entry id; a failed pipeline
//! fails its generation, and the next generation publishes everything unacknowledged again),
//! and the command reader (its own connection for the blocking `XREADGROUP`, on a Redis
//! Cluster one reader per hash slot of the command streams; the consumer group created on
//! each command stream as the library creates it, `XAUTOCLAIM` of a gone consumer's entries,
//! `XACK` once a command is settled, requeue = append again then acknowledge). The names, the
//! field and when to claim are `proto_core::stream_broker`'s; the library source followed is
//! `@spectacles/brokers` 0.9.3 `dist/src/Redis.js` (npm). Does not own what to publish again
//! (the outbox) nor what a command means (the profile).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use gatehouse_config::SecretUrl;
use proto_core::outbox::Confirm;
use proto_core::profile::{FieldValue, Publication};
use proto_core::redis_topology::key_groups;
use proto_core::shard::PublishId;
use proto_core::stream_broker::{
    BLOCK, CLAIM_MIN_IDLE, CommandReads, CommandStream, DATA_FIELD, READ_COUNT, StreamRead,
    dead_letter_stream, entry_body, stream_name,
};
use tokio::sync::{mpsc, watch};

use crate::output::{
    BoxFuture, CommandSource, INCOMING_CAPACITY, Incoming, Output, OutputClient, OutputError,
    PublishReport, ReportSender, Republish, Republished, Settle,
};
use crate::redis_link::{RedisConnection, RedisTarget, Timeouts};
use crate::runtime::Runtime;

/// Publications per pipeline.
const MAX_BATCH: usize = 256;
/// The pause after a failure before the next generation (or read) tries again.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// The settings of the Redis Streams output.
#[derive(Clone, Debug)]
pub(crate) struct StreamSettings {
    /// The Redis URL.
    pub(crate) url: SecretUrl,
    /// Put before every stream name.
    pub(crate) prefix: String,
    /// `XADD MAXLEN ~ n`, if any.
    pub(crate) max_len: Option<u64>,
}

/// One publication (or a republished command) for the publisher task.
struct Append {
    stream: String,
    /// Fields beside `data` (a dead letter's headers).
    headers: Vec<(&'static str, String)>,
    body: bytes::Bytes,
    generation: u64,
    id: PublishId,
    reply: ReportSender,
}

/// The running output: the publisher task's inbox and its announcements.
#[derive(Clone, Debug)]
pub(crate) struct RedisStreams {
    appends: mpsc::UnboundedSender<Append>,
    current: watch::Receiver<Option<Arc<dyn Output>>>,
    failures: mpsc::UnboundedSender<u64>,
    settings: StreamSettings,
    client: RedisTarget,
}

impl std::fmt::Debug for Append {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Append")
            .field("stream", &self.stream)
            .finish()
    }
}

/// One generation of the output, as the shards publish through it.
#[derive(Debug)]
struct Generation {
    generation: u64,
    prefix: String,
    appends: mpsc::UnboundedSender<Append>,
}

impl Output for Generation {
    fn generation(&self) -> u64 {
        self.generation
    }

    fn submit(&self, id: PublishId, publication: Arc<Publication>, reply: &ReportSender) -> bool {
        self.appends
            .send(Append {
                stream: stream_name(
                    &self.prefix,
                    &publication.exchange,
                    publication.routing_key(),
                ),
                headers: Vec::new(),
                body: publication.body.clone(),
                generation: self.generation,
                id,
                reply: reply.clone(),
            })
            .is_ok()
    }
}

/// A connection with timeouts that fit a blocking read of [`BLOCK`].
async fn connect<R: Runtime>(rt: &R, target: &RedisTarget) -> redis::RedisResult<RedisConnection> {
    let timeouts = Timeouts {
        connect: Duration::from_secs(5),
        response: BLOCK + Duration::from_secs(5),
    };
    target.connect(rt, timeouts).await
}

/// The Redis URL cannot be used (the text scrubbed of its secrets).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct BadUrl(String);

/// Why the publisher drops its connection and publishes again (logged).
#[derive(Debug, thiserror::Error)]
enum AppendFailure {
    /// A shard reported an acknowledgement overdue on this connection.
    #[error("a shard saw an acknowledgement overdue")]
    Overdue,
    /// The pipeline failed (Redis's text, scrubbed of the URL's secrets).
    #[error("{0}")]
    Redis(String),
}

impl RedisStreams {
    /// Starts the publisher task; it runs until `stop`.
    pub(crate) fn start<R: Runtime>(
        rt: &R,
        settings: StreamSettings,
        stop: watch::Receiver<bool>,
    ) -> Result<Self, BadUrl> {
        let client = RedisTarget::open(settings.url.expose())
            .map_err(|e| BadUrl(settings.url.scrub(&e.to_string())))?;
        let (appends, inbox) = mpsc::unbounded_channel();
        let (announce, current) = watch::channel(None);
        let (failures, failed) = mpsc::unbounded_channel();
        rt.spawn(publish(
            rt.clone(),
            client.clone(),
            settings.clone(),
            appends.clone(),
            inbox,
            announce,
            failed,
            stop,
        ));
        Ok(Self {
            appends,
            current,
            failures,
            settings,
            client,
        })
    }

    /// The shards' view of the output.
    pub(crate) fn client(&self) -> OutputClient {
        OutputClient::new(self.current.clone(), self.failures.clone())
    }

    /// Starts the command reader on `streams` in consumer group `group` as consumer
    /// `consumer`; it runs until `stop`.
    pub(crate) fn commands<R: Runtime>(
        &self,
        rt: &R,
        streams: Vec<CommandStream>,
        group: String,
        consumer: String,
        stop: watch::Receiver<bool>,
    ) -> CommandSource {
        let (tx, incoming) = mpsc::channel(INCOMING_CAPACITY);
        if streams.is_empty() {
            tracing::info!("the profile reads no commands from Redis Streams");
        }
        // On a Redis Cluster one reader per hash slot of the command streams (`XREADGROUP`
        // over streams of several slots fails); elsewhere one reader for them all.
        for slot in key_groups(
            self.client.is_cluster(),
            streams.iter().map(|s| s.stream.as_str()),
        ) {
            let reader = Reader {
                rt: rt.clone(),
                client: self.client.clone(),
                streams: slot.iter().map(|&i| streams[i].clone()).collect(),
                group: group.clone(),
                consumer: consumer.clone(),
                republish: self.clone(),
            };
            rt.spawn(reader.run(tx.clone(), stop.clone()));
        }
        CommandSource {
            incoming,
            republish: Arc::new(self.clone()),
        }
    }
}

static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

/// The publisher task: connects, announces a generation, appends in pipelines; a failed
/// pipeline (or a shard's failure report) starts the next generation after a pause.
#[allow(clippy::too_many_arguments)]
async fn publish<R: Runtime>(
    rt: R,
    client: RedisTarget,
    settings: StreamSettings,
    appends: mpsc::UnboundedSender<Append>,
    mut inbox: mpsc::UnboundedReceiver<Append>,
    announce: watch::Sender<Option<Arc<dyn Output>>>,
    mut failed: mpsc::UnboundedReceiver<u64>,
    mut stop: watch::Receiver<bool>,
) {
    use futures_util::future::{Either, select};
    let mut connection = None;
    let mut generation = 0;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while !*stop.borrow() {
        let Some(conn) = connection.clone() else {
            match connect(&rt, &client).await {
                Ok(conn) => {
                    tracing::info!(url = %settings.url, "publishing to Redis Streams");
                    connection = Some(conn);
                    generation = NEXT_GENERATION.fetch_add(1, Ordering::Relaxed);
                    announce.send_replace(Some(Arc::new(Generation {
                        generation,
                        prefix: settings.prefix.clone(),
                        appends: appends.clone(),
                    })));
                }
                Err(e) => {
                    tracing::warn!(url = %settings.url, error = %settings.url.scrub(&e.to_string()), "cannot connect to Redis for the event streams");
                    pause(&rt, &mut stop).await;
                }
            }
            continue;
        };
        let next = {
            let received = inbox.recv_many(&mut batch, MAX_BATCH);
            let failure = failed.recv();
            let stopped = stop.wait_for(|s| *s);
            futures_util::pin_mut!(received, failure, stopped);
            match select(select(received, failure), stopped).await {
                Either::Left((Either::Left((0, _)), _)) | Either::Right(_) => break,
                Either::Left((Either::Left(_), _)) => None,
                Either::Left((Either::Right((failure, _)), _)) => Some(failure),
            }
        };
        let failure = match next {
            Some(failure) => failure
                .filter(|g| *g == generation)
                .map(|_| AppendFailure::Overdue),
            None => append(&conn, &settings, generation, &mut batch).await.err(),
        };
        if let Some(reason) = failure {
            tracing::warn!(%reason, generation, "appending to Redis Streams failed; publishing again");
            announce.send_replace(None);
            connection = None;
            pause(&rt, &mut stop).await;
        }
    }
    announce.send_replace(None);
}

/// Waits [`RETRY_DELAY`] or until `stop`.
async fn pause<R: Runtime>(rt: &R, stop: &mut watch::Receiver<bool>) {
    let sleep = rt.sleep(RETRY_DELAY);
    let stopped = stop.wait_for(|s| *s);
    futures_util::pin_mut!(sleep, stopped);
    futures_util::future::select(sleep, stopped).await;
}

/// Appends `batch` in one pipeline and reports each append (acknowledged only with Redis's
/// reply); appends of another generation are reported failed unsent, to be sent again.
async fn append(
    conn: &RedisConnection,
    settings: &StreamSettings,
    generation: u64,
    batch: &mut Vec<Append>,
) -> Result<(), AppendFailure> {
    let (current, stale): (Vec<Append>, Vec<Append>) =
        batch.drain(..).partition(|a| a.generation == generation);
    for append in stale {
        let _ = append.reply.send(PublishReport {
            link: append.generation,
            id: append.id,
            result: Err(OutputError::Superseded("Redis")),
        });
    }
    if current.is_empty() {
        return Ok(());
    }
    let mut failure = None;
    // On a Redis Cluster one pipeline per hash slot (a pipeline over several fails whole).
    for group in key_groups(conn.is_cluster(), current.iter().map(|a| a.stream.as_str())) {
        let mut pipe = redis::pipe();
        for append in group.iter().map(|&i| &current[i]) {
            let mut cmd = xadd(settings.max_len, &append.stream, &append.body);
            for (name, value) in &append.headers {
                cmd.arg(*name).arg(value);
            }
            pipe.add_command(cmd);
        }
        let result: Result<Vec<redis::Value>, String> = pipe
            .query_async(&mut conn.clone())
            .await
            .map_err(|e| settings.url.scrub(&e.to_string()));
        let outcome = result
            .as_ref()
            .map(|_| Confirm::Ack)
            .map_err(|e| OutputError::Client(e.clone()));
        for append in group.iter().map(|&i| &current[i]) {
            let _ = append.reply.send(PublishReport {
                link: append.generation,
                id: append.id,
                result: outcome.clone(),
            });
        }
        if let Err(e) = result {
            failure.get_or_insert(AppendFailure::Redis(e));
        }
    }
    failure.map_or(Ok(()), Err)
}

/// `XADD <stream> [MAXLEN ~ n] * data <body>`.
fn xadd(max_len: Option<u64>, stream: &str, body: &[u8]) -> redis::Cmd {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(stream);
    if let Some(n) = max_len {
        cmd.arg("MAXLEN").arg("~").arg(n);
    }
    cmd.arg("*").arg(DATA_FIELD).arg(body);
    cmd
}

/// Forwarded commands are appended like events (to the target shard's stream); dead letters
/// to the stream named by the dead-letter exchange (never back to the command stream), with
/// their headers (`x-gatehouse-error`: why) as fields beside `data`. Acknowledged with Redis's
/// reply.
impl Republish for RedisStreams {
    fn publish(
        &self,
        publication: Publication,
        kind: Republished,
    ) -> BoxFuture<Result<(), OutputError>> {
        let generation = self.current.borrow().as_ref().map(|o| o.generation());
        let (reply, mut report) = crate::lazy_channel::unbounded();
        let (stream, headers) = match kind {
            Republished::Forward => (
                stream_name(
                    &self.settings.prefix,
                    &publication.exchange,
                    publication.routing_key(),
                ),
                Vec::new(),
            ),
            Republished::DeadLetter => (
                dead_letter_stream(&self.settings.prefix, &publication.exchange),
                publication
                    .properties
                    .headers
                    .iter()
                    .map(|(name, value)| (*name, header_text(value)))
                    .collect(),
            ),
        };
        let sent = generation.map(|generation| {
            self.appends.send(Append {
                stream,
                headers,
                body: publication.body.clone(),
                generation,
                id: PublishId(0),
                reply,
            })
        });
        Box::pin(async move {
            match sent {
                Some(Ok(())) => {}
                _ => return Err(OutputError::NotConnected("Redis")),
            }
            match report.recv().await {
                Some(PublishReport { result: Ok(_), .. }) => Ok(()),
                Some(PublishReport { result: Err(e), .. }) => Err(e),
                None => Err(OutputError::Stopped("the Redis publisher stopped")),
            }
        })
    }
}

/// A header's value as a field's text.
fn header_text(value: &FieldValue) -> String {
    match value {
        FieldValue::Int(i) => i.to_string(),
        FieldValue::Str(s) => s.clone(),
        FieldValue::Bool(b) => b.to_string(),
    }
}

/// One stream entry: its id and fields.
type Entry = (String, Vec<(Vec<u8>, Vec<u8>)>);

/// The command reader.
struct Reader<R: Runtime> {
    rt: R,
    client: RedisTarget,
    streams: Vec<CommandStream>,
    group: String,
    consumer: String,
    republish: RedisStreams,
}

impl<R: Runtime> Reader<R> {
    async fn run(self, tx: mpsc::Sender<Incoming>, mut stop: watch::Receiver<bool>) {
        use futures_util::future::{Either, select};
        let names: Vec<&str> = self.streams.iter().map(|s| s.stream.as_str()).collect();
        tracing::info!(streams = ?names, group = self.group, consumer = self.consumer, "reading commands from Redis Streams");
        let mut reads = CommandReads::new();
        let mut connections = None;
        while !*stop.borrow() && !tx.is_closed() {
            let (read_conn, ack_conn) = match connections.clone() {
                Some(c) => c,
                None => match self.open().await {
                    Ok(c) => {
                        connections = Some(c.clone());
                        c
                    }
                    Err(e) => {
                        let url = &self.republish.settings.url;
                        tracing::warn!(error = %url.scrub(&e.to_string()), "cannot read commands from Redis Streams");
                        pause(&self.rt, &mut stop).await;
                        continue;
                    }
                },
            };
            let read = {
                let read = self.read(&read_conn, reads.next(self.rt.now()));
                let stopped = stop.wait_for(|s| *s);
                futures_util::pin_mut!(read, stopped);
                match select(read, stopped).await {
                    Either::Left((read, _)) => read,
                    Either::Right(_) => return,
                }
            };
            match read {
                Ok(entries) => {
                    for (stream, (id, fields)) in entries {
                        let Some(command) = self.streams.get(stream) else {
                            continue;
                        };
                        let settle = Arc::new(EntrySettle {
                            conn: ack_conn.clone(),
                            stream: command.stream.clone(),
                            group: self.group.clone(),
                            id: id.clone(),
                            body: entry_body(&fields).map(<[u8]>::to_vec),
                        });
                        let Some(body) = settle.body.clone() else {
                            tracing::warn!(
                                stream = command.stream,
                                id,
                                "a command entry without a `data` field; acknowledged and dropped"
                            );
                            settle.ack().await;
                            continue;
                        };
                        let incoming = Incoming {
                            exchange: command.exchange.clone(),
                            routing_key: command.routing_key.clone(),
                            queue: command.stream.clone(),
                            body,
                            settle,
                        };
                        if tx.send(incoming).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    let url = &self.republish.settings.url;
                    tracing::warn!(error = %url.scrub(&e.to_string()), "reading commands from Redis Streams failed; trying again");
                    connections = None;
                    pause(&self.rt, &mut stop).await;
                }
            }
        }
    }

    /// Two connections (the blocking reads hold theirs) and the consumer group on every
    /// command stream (`XGROUP CREATE <stream> <group> 0 MKSTREAM`, as the library creates it;
    /// "already exists" is fine).
    async fn open(&self) -> redis::RedisResult<(RedisConnection, RedisConnection)> {
        let mut read = connect(&self.rt, &self.client).await?;
        let ack = connect(&self.rt, &self.client).await?;
        for command in &self.streams {
            let created: redis::RedisResult<()> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&command.stream)
                .arg(&self.group)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut read)
                .await;
            match created {
                Err(e) if e.code() != Some("BUSYGROUP") => return Err(e),
                _ => {}
            }
        }
        Ok((read, ack))
    }

    /// Claims or reads; returns the entries with the index of their stream.
    async fn read(
        &self,
        conn: &RedisConnection,
        what: StreamRead,
    ) -> redis::RedisResult<Vec<(usize, Entry)>> {
        let mut conn = conn.clone();
        let mut out = Vec::new();
        match what {
            StreamRead::Claim => {
                for (index, command) in self.streams.iter().enumerate() {
                    let reply: redis::Value = redis::cmd("XAUTOCLAIM")
                        .arg(&command.stream)
                        .arg(&self.group)
                        .arg(&self.consumer)
                        .arg(CLAIM_MIN_IDLE.as_millis() as u64)
                        .arg("0-0")
                        .arg("COUNT")
                        .arg(100)
                        .query_async(&mut conn)
                        .await?;
                    let entries = match reply {
                        redis::Value::Array(parts) => parts.into_iter().nth(1).map(entries),
                        _ => None,
                    };
                    let entries = entries.unwrap_or_default();
                    if !entries.is_empty() {
                        tracing::info!(
                            stream = command.stream,
                            claimed = entries.len(),
                            "claimed commands a gone consumer left pending"
                        );
                    }
                    out.extend(entries.into_iter().map(|e| (index, e)));
                }
            }
            StreamRead::New => {
                let mut cmd = redis::cmd("XREADGROUP");
                cmd.arg("GROUP")
                    .arg(&self.group)
                    .arg(&self.consumer)
                    .arg("COUNT")
                    .arg(READ_COUNT)
                    .arg("BLOCK")
                    .arg(BLOCK.as_millis() as u64)
                    .arg("STREAMS");
                for command in &self.streams {
                    cmd.arg(&command.stream);
                }
                for _ in &self.streams {
                    cmd.arg(">");
                }
                let reply: redis::Value = cmd.query_async(&mut conn).await?;
                for (stream, value) in keyed(reply) {
                    if let Some(index) = self.streams.iter().position(|s| s.stream == stream) {
                        out.extend(entries(value).into_iter().map(|e| (index, e)));
                    }
                }
            }
        }
        Ok(out)
    }
}

/// A stream entry's settlement: `XACK`, or append again and then `XACK` (at least once: a
/// crash between the two leaves both, never neither).
#[derive(Clone)]
struct EntrySettle {
    conn: RedisConnection,
    stream: String,
    group: String,
    id: String,
    body: Option<Vec<u8>>,
}

impl EntrySettle {
    async fn xack(&self) -> redis::RedisResult<()> {
        redis::cmd("XACK")
            .arg(&self.stream)
            .arg(&self.group)
            .arg(&self.id)
            .query_async(&mut self.conn.clone())
            .await
    }
}

impl Settle for EntrySettle {
    fn ack(&self) -> BoxFuture<()> {
        let this = self.clone();
        Box::pin(async move {
            if let Err(e) = this.xack().await {
                // Left pending: claimed again later (at least once).
                tracing::warn!(error = %e, stream = this.stream, "cannot acknowledge a command entry");
            }
        })
    }

    fn requeue(&self) -> BoxFuture<()> {
        let this = self.clone();
        Box::pin(async move {
            let body = this.body.clone().unwrap_or_default();
            let appended: redis::RedisResult<redis::Value> = xadd(None, &this.stream, &body)
                .query_async(&mut this.conn.clone())
                .await;
            let result = match appended {
                Ok(_) => this.xack().await,
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, stream = this.stream, "cannot requeue a command entry; it stays pending");
            }
        })
    }
}

/// A reply keyed by stream: RESP2's `[[name, value], ...]` or RESP3's map; nil is empty.
fn keyed(reply: redis::Value) -> Vec<(String, redis::Value)> {
    let pairs: Vec<(redis::Value, redis::Value)> = match reply {
        redis::Value::Map(pairs) => pairs,
        redis::Value::Array(items) => items
            .into_iter()
            .filter_map(|item| match item {
                redis::Value::Array(mut pair) if pair.len() == 2 => {
                    let value = pair.pop()?;
                    Some((pair.pop()?, value))
                }
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    pairs
        .into_iter()
        .filter_map(|(name, value)| Some((text(name)?, value)))
        .collect()
}

/// `[[id, [field, value, ...]], ...]` as entries (a deleted entry's nil fields are none).
fn entries(value: redis::Value) -> Vec<Entry> {
    let redis::Value::Array(items) = value else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|item| {
            let redis::Value::Array(mut parts) = item else {
                return None;
            };
            if parts.len() != 2 {
                return None;
            }
            let fields = parts.pop()?;
            let id = text(parts.pop()?)?;
            let fields = match fields {
                redis::Value::Array(flat) => flat
                    .chunks(2)
                    .filter_map(|pair| Some((bytes(&pair[0])?, bytes(pair.get(1)?)?)))
                    .collect(),
                redis::Value::Map(pairs) => pairs
                    .iter()
                    .filter_map(|(k, v)| Some((bytes(k)?, bytes(v)?)))
                    .collect(),
                _ => Vec::new(),
            };
            Some((id, fields))
        })
        .collect()
}

fn bytes(value: &redis::Value) -> Option<Vec<u8>> {
    match value {
        redis::Value::BulkString(b) => Some(b.clone()),
        redis::Value::SimpleString(s) => Some(s.as_bytes().to_vec()),
        _ => None,
    }
}

fn text(value: redis::Value) -> Option<String> {
    bytes(&value).and_then(|b| String::from_utf8(b).ok())
}

#[cfg(test)]
mod tests {
    use super::{entries, keyed};
    use redis::Value;

    fn bulk(s: &[u8]) -> Value {
        Value::BulkString(s.to_vec())
    }

    #[test]
    fn a_read_reply_gives_streams_and_entries() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk(b"SEND"),
            Value::Array(vec![
                Value::Array(vec![
                    bulk(b"1-0"),
                    Value::Array(vec![bulk(b"data"), bulk(b"\x81")]),
                ]),
                Value::Array(vec![bulk(b"2-0"), Value::Nil]),
            ]),
        ])]);
        let mut streams = keyed(reply);
        assert_eq!(streams.len(), 1);
        let (name, value) = streams.pop().unwrap();
        assert_eq!(name, "SEND");
        let entries = entries(value);
        assert_eq!(entries[0].0, "1-0");
        assert_eq!(entries[0].1, vec![(b"data".to_vec(), b"\x81".to_vec())]);
        assert_eq!(entries[1].1, Vec::new());
        assert!(keyed(Value::Nil).is_empty());
    }
}
