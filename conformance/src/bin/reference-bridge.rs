//! `reference-bridge`: a deliberately small Discord gateway bridge for the native (`gatehouse`)
//! profile, written only to judge the judge (`tests/judge_the_judge.rs`): run plainly it passes
//! the scenarios that test uses; with `--defect <name>` it has exactly one known defect, and the
//! suite must fail exactly the scenarios that cover it.
//!
//! It reads the suite's contract variables (conformance/README.md), runs each shard on a thread
//! with the mock's blocking test client (which undoes zlib-stream, zstd-stream and ETF),
//! publishes every dispatch to the topic exchange `gateway` with the native properties and
//! publisher confirms, takes commands from `gateway.commands` (`shard.<id>`, `guild.<id>`,
//! `all`; invalid ones dead-lettered with `x-gatehouse-error`), paces them under 120 frames per
//! 60 s, identifies one shard per bucket per 5 s, resumes on READY's `resume_gateway_url`, and
//! stops a shard for good after a fatal close code (exiting when no shard is left). It keeps no
//! session store in Redis: it is not Gatehouse, only a yardstick.

use std::collections::{HashMap, VecDeque};
use std::process::ExitCode;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use mock_gateway::client::{ClientError, Received, TestClient};
use serde_json::Value;

/// The defects, by their `--defect` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Defect {
    /// Publishes `serde_json`'s re-serialisation of each dispatch instead of Discord's bytes.
    Reserialise,
    /// Connects without transport compression whatever `DISCORD_COMPRESS` says.
    IgnoreCompress,
    /// Never RESUMEs: every reconnect starts a new session.
    NeverResume,
    /// RESUMEs on the cached gateway URL instead of READY's `resume_gateway_url`.
    ResumeOnCachedUrl,
    /// Reconnects (with a new session) 15 s after a fatal close code.
    ReconnectAfterFatal,
    /// Sends workers' commands at once, beyond 120 frames per 60 s.
    NoRateLimit,
    /// Identifies every shard at once, two shards of one bucket together.
    IdentifyBucketTogether,
    /// Publishes events transient (delivery mode 1).
    Transient,
    /// After a non-resumable op 9, reconnects at once, again and again (hanging up before
    /// identifying) before it identifies: the storm seen in the wild.
    StormAfterInvalidSession,
}

impl Defect {
    const ALL: [(&'static str, Defect); 9] = [
        ("reserialise", Defect::Reserialise),
        ("ignore-compress", Defect::IgnoreCompress),
        ("never-resume", Defect::NeverResume),
        ("resume-on-cached-url", Defect::ResumeOnCachedUrl),
        ("reconnect-after-fatal", Defect::ReconnectAfterFatal),
        ("no-rate-limit", Defect::NoRateLimit),
        ("identify-bucket-together", Defect::IdentifyBucketTogether),
        ("transient", Defect::Transient),
        (
            "storm-after-invalid-session",
            Defect::StormAfterInvalidSession,
        ),
    ];
}

/// The contract's variables.
struct Config {
    api_base: String,
    token: String,
    shard_count: u32,
    shard_ids: Vec<u32>,
    intents: u64,
    query: String,
    amqp_url: String,
    defect: Option<Defect>,
}

impl Config {
    fn from_env(defect: Option<Defect>) -> Result<Self, String> {
        let var = |name: &str| std::env::var(name).map_err(|_| format!("{name} is not set"));
        let number = |name: &str| -> Result<u64, String> {
            var(name)?
                .parse()
                .map_err(|e| format!("{name} is not a number: {e}"))
        };
        let mut compress = var("DISCORD_COMPRESS").unwrap_or_else(|_| "none".into());
        if defect == Some(Defect::IgnoreCompress) {
            compress = "none".into();
        }
        let version = var("DISCORD_API_VERSION").unwrap_or_else(|_| "10".into());
        let encoding = var("DISCORD_ENCODING").unwrap_or_else(|_| "json".into());
        let mut query = format!("v={version}&encoding={encoding}");
        if compress != "none" {
            query.push_str(&format!("&compress={compress}"));
        }
        Ok(Self {
            api_base: var("DISCORD_API_BASE")?,
            token: var("DISCORD_TOKEN")?,
            shard_count: number("SHARD_COUNT")? as u32,
            shard_ids: shard_ids(&var("SHARD_IDS")?)?,
            intents: number("DISCORD_INTENTS")?,
            query,
            amqp_url: var("AMQP_URL")?,
            defect,
        })
    }

    fn has(&self, defect: Defect) -> bool {
        self.defect == Some(defect)
    }
}

/// `0,2-4` -> `[0, 2, 3, 4]`.
fn shard_ids(text: &str) -> Result<Vec<u32>, String> {
    let mut ids = Vec::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        let id = |s: &str| -> Result<u32, String> {
            s.parse().map_err(|_| format!("bad SHARD_IDS {text:?}"))
        };
        match part.split_once('-') {
            Some((a, b)) => ids.extend(id(a)?..=id(b)?),
            None => ids.push(id(part)?),
        }
    }
    Ok(ids)
}

fn log(line: impl AsRef<str>) {
    eprintln!("reference-bridge: {}", line.as_ref());
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let defect = match args.as_slice() {
        [] => None,
        [flag, name] if flag == "--defect" => match Defect::ALL.iter().find(|(n, _)| n == name) {
            Some((_, d)) => Some(*d),
            None => {
                let names: Vec<&str> = Defect::ALL.iter().map(|(n, _)| *n).collect();
                eprintln!("unknown defect {name:?} (one of: {})", names.join(", "));
                return ExitCode::from(2);
            }
        },
        _ => {
            eprintln!("usage: reference-bridge [--defect <name>]");
            return ExitCode::from(2);
        }
    };
    let config = match Config::from_env(defect) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            log(e);
            return ExitCode::from(2);
        }
    };
    log(format!("starting, defect: {defect:?}"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log(e);
            ExitCode::FAILURE
        }
    }
}

/// `GET /gateway/bot`: the gateway URL and `max_concurrency`.
fn gateway_bot(config: &Config) -> Result<(String, u32), String> {
    let body: Value = ureq::get(format!("{}/gateway/bot", config.api_base))
        .header("Authorization", format!("Bot {}", config.token))
        .call()
        .map_err(|e| format!("GET /gateway/bot: {e}"))?
        .body_mut()
        .read_json()
        .map_err(|e| format!("GET /gateway/bot: {e}"))?;
    let url = body["url"].as_str().ok_or("no url in /gateway/bot")?;
    let concurrency = body["session_start_limit"]["max_concurrency"]
        .as_u64()
        .unwrap_or(1);
    Ok((url.to_owned(), concurrency.max(1) as u32))
}

/// One dispatch to publish.
struct Event {
    shard: u32,
    session_id: String,
    seq: u64,
    name: String,
    body: Vec<u8>,
}

async fn run(config: Arc<Config>) -> Result<(), String> {
    let for_rest = config.clone();
    let (gateway_url, max_concurrency) =
        tokio::task::spawn_blocking(move || gateway_bot(&for_rest))
            .await
            .map_err(|e| e.to_string())??;
    let amqp = |e: lapin::Error| format!("RabbitMQ: {e}");
    let connection = Connection::connect_with_runtime(
        &config.amqp_url,
        ConnectionProperties::default(),
        async_rs::Runtime::tokio_current(),
    )
    .await
    .map_err(amqp)?;
    let channel = connection.create_channel().await.map_err(amqp)?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(amqp)?;
    for exchange in ["gateway", "gateway.commands", "gateway.commands.dlx"] {
        channel
            .exchange_declare(
                exchange.into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(amqp)?;
    }
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(amqp)?;
    let mut keys: Vec<String> = config
        .shard_ids
        .iter()
        .map(|s| format!("shard.{s}"))
        .collect();
    keys.extend(["guild.*".to_owned(), "all".to_owned()]);
    for key in keys {
        channel
            .queue_bind(
                queue.name().clone(),
                "gateway.commands".into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(amqp)?;
    }
    let mut consumer = channel
        .basic_consume(
            queue.name().clone(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(amqp)?;

    let (events, event_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(publish_events(channel.clone(), config.clone(), event_rx));

    let gate = Arc::new(IdentifyGate::new(max_concurrency));
    let mut shards = HashMap::new();
    let mut threads = Vec::new();
    for &shard in &config.shard_ids {
        let (tx, rx) = mpsc::channel();
        shards.insert(shard, tx);
        let first_slot = gate.reserve(shard);
        let (config, gate, events, url) = (
            config.clone(),
            gate.clone(),
            events.clone(),
            gateway_url.clone(),
        );
        threads.push(std::thread::spawn(move || {
            ShardRunner {
                config,
                gate,
                events,
                gateway_url: url,
                shard,
                commands: rx,
            }
            .run(first_slot)
        }));
    }
    // Every shard stopped for good (fatal closes): exiting is allowed.
    let all_stopped = tokio::task::spawn_blocking(move || {
        for t in threads {
            let _ = t.join();
        }
    });
    tokio::pin!(all_stopped);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    loop {
        tokio::select! {
            _ = terminate.recv() => {
                log("SIGTERM: stopping");
                return Ok(());
            }
            _ = &mut all_stopped => {
                log("every shard stopped for good; exiting");
                return Ok(());
            }
            delivery = consumer.next() => {
                let Some(Ok(delivery)) = delivery else {
                    return Err("the command consumer ended".into());
                };
                let key = delivery.routing_key.as_str().to_owned();
                match valid_command(&delivery.data) {
                    Ok(packet) => {
                        for shard in targets(&config, &key) {
                            if let Some(tx) = shards.get(&shard) {
                                let _ = tx.send(packet.clone());
                            }
                        }
                    }
                    Err(why) => {
                        log(format!("dead-lettering a command ({key}): {why}"));
                        let mut headers = FieldTable::default();
                        headers.insert("x-gatehouse-error".into(), AMQPValue::LongString(LongString::from(why)));
                        channel
                            .basic_publish(
                                "gateway.commands.dlx".into(),
                                key.as_str().into(),
                                BasicPublishOptions::default(),
                                &delivery.data,
                                BasicProperties::default().with_headers(headers),
                            )
                            .await
                            .map_err(amqp)?
                            .await
                            .map_err(amqp)?;
                    }
                }
                delivery.ack(BasicAckOptions::default()).await.map_err(amqp)?;
            }
        }
    }
}

/// The packet of a valid command, or why it is refused (the native profile's rules).
fn valid_command(body: &[u8]) -> Result<Value, String> {
    if body.len() > 4096 {
        return Err(format!("payload of {} bytes (at most 4096)", body.len()));
    }
    let packet: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    match packet["op"].as_u64() {
        Some(3 | 4 | 8 | 31) => Ok(packet),
        other => Err(format!("opcode {other:?} may not be sent by workers")),
    }
}

/// The shards of this process a command's routing key names.
fn targets(config: &Config, key: &str) -> Vec<u32> {
    let shard = if let Some(id) = key.strip_prefix("shard.") {
        id.parse().ok()
    } else if let Some(guild) = key.strip_prefix("guild.") {
        guild
            .parse::<u64>()
            .ok()
            .map(|g| ((g >> 22) % u64::from(config.shard_count)) as u32)
    } else {
        return config.shard_ids.clone();
    };
    shard
        .into_iter()
        .filter(|s| config.shard_ids.contains(s))
        .collect()
}

/// Publishes dispatches in order, each confirmed before the next.
async fn publish_events(
    channel: Channel,
    config: Arc<Config>,
    mut events: tokio::sync::mpsc::UnboundedReceiver<Event>,
) {
    while let Some(e) = events.recv().await {
        let mut headers = FieldTable::default();
        headers.insert("x-shard-id".into(), AMQPValue::LongLongInt(e.shard.into()));
        headers.insert(
            "x-shard-count".into(),
            AMQPValue::LongLongInt(config.shard_count.into()),
        );
        headers.insert("x-sequence".into(), AMQPValue::LongLongInt(e.seq as i64));
        headers.insert(
            "x-session-id".into(),
            AMQPValue::LongString(LongString::from(e.session_id.clone())),
        );
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let properties = BasicProperties::default()
            .with_delivery_mode(if config.has(Defect::Transient) { 1 } else { 2 })
            .with_content_type("application/json".into())
            .with_message_id(format!("{}:{}", e.session_id, e.seq).into())
            .with_timestamp(now)
            .with_headers(headers);
        let published = channel
            .basic_publish(
                "gateway".into(),
                e.name.as_str().into(),
                BasicPublishOptions::default(),
                &e.body,
                properties,
            )
            .await;
        let confirmed = match published {
            Ok(confirm) => confirm.await.map(drop),
            Err(err) => Err(err),
        };
        if let Err(err) = confirmed {
            log(format!("publishing {} s={}: {err}", e.name, e.seq));
        }
    }
}

/// One IDENTIFY per bucket (`shard % max_concurrency`) per 5 s, buckets in the order reserved.
struct IdentifyGate {
    max_concurrency: u32,
    next: Mutex<HashMap<u32, Instant>>,
}

impl IdentifyGate {
    fn new(max_concurrency: u32) -> Self {
        Self {
            max_concurrency,
            next: Mutex::new(HashMap::new()),
        }
    }

    /// The moment `shard` may identify.
    fn reserve(&self, shard: u32) -> Instant {
        let bucket = shard % self.max_concurrency;
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let slot = next
            .get(&bucket)
            .copied()
            .filter(|t| *t > now)
            .unwrap_or(now);
        next.insert(bucket, slot + Duration::from_millis(5200));
        slot
    }
}

/// At most 120 frames per 60 s, part of it kept free for heartbeats.
struct Limiter {
    sent: VecDeque<Instant>,
    command_room: usize,
    off: bool,
}

impl Limiter {
    fn new(interval: Duration, off: bool) -> Self {
        let heartbeats = (60_000 / interval.as_millis().max(1)) as usize + 3;
        Self {
            sent: VecDeque::new(),
            command_room: 120usize.saturating_sub(heartbeats).max(1),
            off,
        }
    }

    fn may_send_command(&mut self) -> bool {
        while self
            .sent
            .front()
            .is_some_and(|t| t.elapsed() > Duration::from_secs(60))
        {
            self.sent.pop_front();
        }
        self.off || self.sent.len() < self.command_room
    }

    fn sent(&mut self) {
        self.sent.push_back(Instant::now());
    }
}

/// A session that can be resumed.
#[derive(Clone)]
struct Session {
    id: String,
    resume_url: String,
    seq: u64,
}

/// How a connection ended, and what comes next.
enum End {
    Resume,
    Reidentify,
    Fatal(u16),
}

struct ShardRunner {
    config: Arc<Config>,
    gate: Arc<IdentifyGate>,
    events: tokio::sync::mpsc::UnboundedSender<Event>,
    gateway_url: String,
    shard: u32,
    commands: mpsc::Receiver<Value>,
}

impl ShardRunner {
    /// Runs the shard until a fatal close (forever otherwise).
    fn run(self, first_slot: Instant) {
        let mut session: Option<Session> = None;
        let mut slot = Some(first_slot);
        loop {
            if self.config.has(Defect::NeverResume) {
                session = None;
            }
            if session.is_none() && slot.is_none() {
                slot = Some(self.gate.reserve(self.shard));
            }
            let base = match &session {
                Some(s) if !self.config.has(Defect::ResumeOnCachedUrl) => s.resume_url.clone(),
                _ => self.gateway_url.clone(),
            };
            let end = match self.connect(&base, &mut session, &mut slot) {
                Ok(end) => end,
                Err(e) => {
                    log(format!("shard {}: {e}", self.shard));
                    std::thread::sleep(Duration::from_secs(1));
                    End::Resume
                }
            };
            match end {
                End::Resume => {}
                End::Reidentify => {
                    session = None;
                    if self.config.has(Defect::StormAfterInvalidSession) {
                        self.storm(12);
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
                End::Fatal(code) if self.config.has(Defect::ReconnectAfterFatal) => {
                    log(format!(
                        "shard {}: fatal close {code}; retrying in 15 s",
                        self.shard
                    ));
                    std::thread::sleep(Duration::from_secs(15));
                    session = None;
                }
                End::Fatal(code) => {
                    log(format!("shard {}: fatal close {code}; stopped", self.shard));
                    return;
                }
            }
        }
    }

    /// `base` (the gateway or resume URL) with the query string.
    fn connection_url(&self, base: &str) -> String {
        let separator = if base.trim_start_matches("ws://").contains('/') {
            "?"
        } else {
            "/?"
        };
        format!("{base}{separator}{}", self.config.query)
    }

    /// Opens `count` connections in a row, hanging each up after HELLO.
    fn storm(&self, count: usize) {
        let url = self.connection_url(&self.gateway_url);
        for _ in 0..count {
            if let Ok(mut client) = TestClient::connect_url(&url) {
                let _ = client.recv_op(10, Duration::from_secs(2));
                client.drop_tcp();
            }
        }
    }

    fn connect(
        &self,
        base: &str,
        session: &mut Option<Session>,
        slot: &mut Option<Instant>,
    ) -> Result<End, ClientError> {
        // Wait for the identify slot before connecting: a connection must heartbeat from HELLO on.
        if session.is_none() && !self.config.has(Defect::IdentifyBucketTogether) {
            let at = slot.take().unwrap_or_else(Instant::now);
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
        }
        let mut client = TestClient::connect_url(&self.connection_url(base))?;
        let hello = client.recv_op(10, Duration::from_secs(10))?;
        let interval =
            Duration::from_millis(hello["d"]["heartbeat_interval"].as_u64().unwrap_or(41_250));
        let mut limiter = Limiter::new(interval, self.config.has(Defect::NoRateLimit));
        match session.as_ref() {
            Some(s) => client.resume(&self.config.token, &s.id, s.seq)?,
            None => {
                slot.take();
                client.identify(
                    &self.config.token,
                    [self.shard, self.config.shard_count],
                    self.config.intents,
                )?;
            }
        }
        limiter.sent();
        self.session_loop(&mut client, session, interval, &mut limiter)
    }

    fn session_loop(
        &self,
        client: &mut TestClient,
        session: &mut Option<Session>,
        interval: Duration,
        limiter: &mut Limiter,
    ) -> Result<End, ClientError> {
        let mut next_beat = Instant::now() + interval / 2;
        let mut acked = true;
        let mut pending = VecDeque::new();
        loop {
            pending.extend(self.commands.try_iter());
            while !pending.is_empty() && limiter.may_send_command() {
                let command = pending.pop_front().expect("not empty");
                client.send(&command)?;
                limiter.sent();
            }
            if Instant::now() >= next_beat {
                if !acked {
                    log(format!(
                        "shard {}: no heartbeat ACK; reconnecting",
                        self.shard
                    ));
                    let _ = client.close(4000);
                    return Ok(End::Resume);
                }
                client.heartbeat(session.as_ref().map(|s| s.seq))?;
                limiter.sent();
                acked = false;
                next_beat = Instant::now() + interval;
            }
            let wait = next_beat
                .saturating_duration_since(Instant::now())
                .clamp(Duration::from_millis(1), Duration::from_millis(50));
            let bytes = match client.recv(wait) {
                Err(ClientError::Timeout) => continue,
                Err(e) => return Err(e),
                Ok(Received::Closed(code)) => return Ok(after_close(code)),
                Ok(Received::Payload(bytes)) => bytes,
            };
            let Ok(payload) = serde_json::from_slice::<Value>(&bytes) else {
                continue;
            };
            match payload["op"].as_u64() {
                Some(0) => self.dispatch(&payload, &bytes, session),
                Some(1) => {
                    client.heartbeat(session.as_ref().map(|s| s.seq))?;
                    limiter.sent();
                }
                Some(7) => {
                    let _ = client.close(4000);
                    return Ok(End::Resume);
                }
                Some(9) => {
                    let _ = client.close(4000);
                    return Ok(if payload["d"] == Value::Bool(true) {
                        End::Resume
                    } else {
                        End::Reidentify
                    });
                }
                Some(11) => acked = true,
                _ => {}
            }
        }
    }

    /// Tracks the session and sequence, and hands the dispatch to the publisher.
    fn dispatch(&self, payload: &Value, bytes: &[u8], session: &mut Option<Session>) {
        let seq = payload["s"].as_u64().unwrap_or(0);
        let name = payload["t"].as_str().unwrap_or_default().to_owned();
        if name == "READY" {
            *session = Some(Session {
                id: payload["d"]["session_id"]
                    .as_str()
                    .unwrap_or_default()
                    .into(),
                resume_url: payload["d"]["resume_gateway_url"]
                    .as_str()
                    .unwrap_or(&self.gateway_url)
                    .into(),
                seq,
            });
        }
        let Some(s) = session.as_mut() else {
            return;
        };
        s.seq = s.seq.max(seq);
        let body = if self.config.has(Defect::Reserialise) {
            serde_json::to_vec(payload).expect("a JSON value serialises")
        } else {
            bytes.to_vec()
        };
        let _ = self.events.send(Event {
            shard: self.shard,
            session_id: s.id.clone(),
            seq,
            name,
            body,
        });
    }
}

/// What a server close code calls for (PROTOCOL.md section 8).
fn after_close(code: Option<u16>) -> End {
    match code {
        Some(code @ (4004 | 4010..=4014)) => End::Fatal(code),
        Some(4003 | 4005 | 4007 | 4009 | 1000 | 1001) => End::Reidentify,
        _ => End::Resume,
    }
}
