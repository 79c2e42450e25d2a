//! One Discord gateway connection's protocol state, as a sans-IO state machine.
//!
//! Owns: the connection lifecycle (HELLO, IDENTIFY/RESUME, READY/RESUMED, op 7, op 9, close
//! codes, reconnect back-off), heartbeating and zombie detection, the per-connection send
//! limit and the queue of worker commands, sequence tracking, publisher-confirm bookkeeping and
//! session snapshots. Does not own sockets, clocks, the broker or Redis (the runtime does), frame
//! decoding (see [`crate::codec`]), routing (see [`crate::profile`]) or the process-wide identify
//! limit (see [`crate::identify`]).
//!
//! # Method groups
//! - getters: [`Shard::state`], [`Shard::session`], [`Shard::last_sequence`],
//!   [`Shard::confirmed_sequence`], [`Shard::latency`], [`Shard::timeout_reason`],
//!   [`Shard::last_disconnect`], [`Shard::unconfirmed`], [`Shard::unconfirmed_bytes`],
//!   [`Shard::should_pause_reading`],
//!   [`Shard::queued_commands`], [`Shard::config`];
//! - inputs: [`Shard::handle_connected`], [`Shard::handle_message`], [`Shard::handle_closed`],
//!   [`Shard::handle_timeout`], [`Shard::handle_identify_granted`], [`Shard::handle_published`];
//! - commands: [`Shard::send_command`], [`Shard::reconnect`], [`Shard::shutdown`],
//!   [`Shard::take_queued_commands`];
//! - outputs, in this order after every input or command: [`Shard::poll_action`] until `None`
//!   (the runtime must do each), then [`Shard::poll_event`] until `None` (for logs and metrics;
//!   nothing to do), then [`Shard::poll_timeout`].
//!
//! # What the runtime does with each action
//! - [`Action::Connect`]: open a WebSocket to the URL; call `handle_connected` when it is open,
//!   or `handle_closed(now, None)` if it fails (including a connect timeout).
//! - [`Action::Send`]: write one frame, binary when [`ShardConfig::sends_binary`] (ETF), text
//!   otherwise. [`Action::Close`]: close the socket with that code (never substitute 1000),
//!   then call `handle_closed` once it is closed.
//! - [`Action::RequestIdentify`]: ask the [`crate::identify::IdentifyScheduler`] for this
//!   shard's number; call `handle_identify_granted` when it grants. When that returns `false`
//!   the grant was not used: hand it back with [`crate::identify::IdentifyScheduler::release`].
//! - [`Action::Publish`]: publish with confirms; call `handle_published(id)` on the confirm.
//! - [`Action::PersistSession`]: store the snapshot (Redis). [`Action::Stopped`]: the shard is
//!   finished; drop any socket still open (again without 1000/1001) and stop driving it, and
//!   take the worker commands it never sent ([`Shard::take_queued_commands`]) to re-publish or
//!   dead-letter them.

mod close_code;
mod confirms;
mod events;
mod guilds;
mod heartbeat;
mod packets;
mod replay;
mod timers;

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::value::RawValue;

use crate::codec::{Compression, DecoderConfig, Encoding};
use crate::codec::{Decoder, EtfEncodeError, Payload};
use crate::profile::{DispatchContext, Publication, Router};
use crate::ratelimit::SendWindow;
use crate::rng::SeededRng;
use crate::secret::Secret;
use crate::session::SessionSnapshot;
use crate::sharding::ShardId;

pub use close_code::{CloseReaction, close_code_name};
pub use events::{EVENT_QUEUE_CAPACITY, ShardEvent};
pub use replay::ReplayLimits;
pub use timers::Timer;

use confirms::Confirms;
use events::EventQueue;
use heartbeat::Heartbeat;
use replay::Replay;
use timers::TimerTable;

/// The gateway API version the shard speaks unless [`ShardConfig::api_version`] says otherwise.
pub const API_VERSION: u8 = 10;

/// Discord's limit on one client packet, in bytes.
pub const MAX_COMMAND_BYTES: usize = 4096;

/// The defaults of [`ShardConfig::new`], which are also the configuration's defaults (the
/// `gatehouse-config` crate reads them from here), so the core's tests run with the settings
/// production uses.
pub mod defaults {
    /// IDENTIFY's `large_threshold`.
    pub const LARGE_THRESHOLD: u8 = 250;
    /// Worker commands that may wait per shard for the rate limiter (or for READY).
    pub const COMMAND_QUEUE_CAPACITY: usize = 64;
    /// Unconfirmed publications per shard at which reading pauses.
    pub const MAX_UNCONFIRMED: usize = 1000;
    /// Bytes of unconfirmed publications per process at which reading pauses (each shard of
    /// the process gets an equal share as its `max_unconfirmed_bytes`).
    pub const MAX_UNCONFIRMED_BYTES: usize = 256 << 20;
}

/// The first reconnect back-off step (after an immediate first retry).
const BACKOFF_BASE: Duration = Duration::from_secs(1);

/// The longest reconnect back-off.
const BACKOFF_MAX: Duration = Duration::from_secs(64);

/// For this many connection attempts without READY/RESUMED a resume connects to READY's
/// `resume_gateway_url`; after that to the cached gateway URL instead of READY's `resume_gateway_url` (which may be gone).
const RESUME_URL_ATTEMPTS: u32 = 3;

/// The wait before identifying afresh after INVALID_SESSION `false` (PROTOCOL.md §7).
const INVALID_SESSION_WAIT: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(5));

/// Identifies one publication of a shard, for publisher confirms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublishId(pub u64);

/// Settings of one shard. Build it with [`ShardConfig::new`] and adjust the public fields.
#[derive(Clone, Debug)]
pub struct ShardConfig {
    /// Which shard.
    pub shard: ShardId,
    /// The bot token (without `Bot `).
    pub token: Secret,
    /// The intents bitfield.
    pub intents: u64,
    /// IDENTIFY's `large_threshold`.
    pub large_threshold: u8,
    /// IDENTIFY's initial `presence`, as raw JSON, if any. Invalid JSON is left out of IDENTIFY.
    pub presence: Option<String>,
    /// The gateway URL from `/gateway/bot` (without query; a trailing slash is fine).
    pub gateway_url: String,
    /// The gateway API version (`v=` in the URL query; default [`API_VERSION`]).
    pub api_version: u8,
    /// Transport compression.
    pub compression: Compression,
    /// Payload encoding.
    pub encoding: Encoding,
    /// Largest decompressed payload accepted.
    pub max_payload: usize,
    /// Seed for heartbeat jitter and back-off draws.
    pub seed: u64,
    /// How many worker commands may wait for the rate limiter (or for READY).
    pub command_queue_capacity: usize,
    /// A persisted session to resume, if any. Ignored when its shard id differs from `shard`.
    pub session: Option<SessionSnapshot>,
    /// The profile's routing rules.
    pub router: Router,
    /// The least time between two throttled session snapshots.
    pub persist_interval: Duration,
    /// At this many unconfirmed publications, [`Shard::should_pause_reading`] says so.
    pub max_unconfirmed: usize,
    /// At this many bytes of unconfirmed publication bodies, [`Shard::should_pause_reading`]
    /// says so (the runtime gives each shard its share of the process's bound).
    pub max_unconfirmed_bytes: usize,
    /// How long to wait for HELLO after the socket opened before reconnecting.
    pub hello_timeout: Duration,
    /// How long [`Shard::shutdown`] waits for outstanding publisher confirms.
    pub shutdown_grace: Duration,
    /// Whether dispatches are published (false: they are received and counted as handled,
    /// but not published; cluster mode's new shard set while it warms up). See
    /// [`Shard::set_publishing`].
    pub publishing: bool,
    /// While not publishing, how much of what would have been published is kept, to be
    /// published first when publishing starts (default: nothing). See
    /// [`Shard::set_publishing`].
    pub replay: ReplayLimits,
}

impl ShardConfig {
    /// A configuration with the production defaults ([`defaults`]): non-privileged intents,
    /// `large_threshold` 250, zlib-stream JSON, 64 MiB payload limit, a seed derived from the
    /// shard id, 64 queued commands, a snapshot at most every second, pause at 1,000
    /// unconfirmed publications or 256 MiB of them, 20 s for HELLO and 5 s of shutdown grace.
    pub fn new(
        shard: ShardId,
        token: Secret,
        gateway_url: impl Into<String>,
        router: Router,
    ) -> Self {
        Self {
            shard,
            token,
            intents: crate::intents::NON_PRIVILEGED,
            large_threshold: defaults::LARGE_THRESHOLD,
            presence: None,
            gateway_url: gateway_url.into(),
            api_version: API_VERSION,
            compression: Compression::ZlibStream,
            encoding: Encoding::Json,
            max_payload: DecoderConfig::default().max_payload,
            seed: u64::from(shard.number()) << 32 | u64::from(shard.total()),
            command_queue_capacity: defaults::COMMAND_QUEUE_CAPACITY,
            session: None,
            router,
            persist_interval: Duration::from_secs(1),
            max_unconfirmed: defaults::MAX_UNCONFIRMED,
            max_unconfirmed_bytes: defaults::MAX_UNCONFIRMED_BYTES,
            hello_timeout: Duration::from_secs(20),
            shutdown_grace: Duration::from_secs(5),
            publishing: true,
            replay: ReplayLimits::default(),
        }
    }

    /// The decoder settings for this shard's connections.
    pub fn decoder(&self) -> DecoderConfig {
        DecoderConfig {
            compression: self.compression,
            encoding: self.encoding,
            max_payload: self.max_payload,
        }
    }

    /// The query string appended to every gateway URL: `/?v=10&encoding=json[&compress=..]`.
    pub fn url_query(&self) -> String {
        let encoding = match self.encoding {
            Encoding::Json => "json",
            Encoding::Etf => "etf",
        };
        let compress = match self.compression {
            Compression::None => "",
            Compression::ZlibStream => "&compress=zlib-stream",
            Compression::ZstdStream => "&compress=zstd-stream",
        };
        format!("/?v={}&encoding={encoding}{compress}", self.api_version)
    }

    /// A base URL (the cached gateway URL or READY's resume URL) with the query appended.
    pub fn url_for(&self, base: &str) -> String {
        let base = base.split('?').next().unwrap_or(base).trim_end_matches('/');
        format!("{base}{}", self.url_query())
    }

    /// Whether every [`Action::Send`] of this shard is a binary WebSocket frame (ETF) rather
    /// than a text frame (JSON). The runtime asks this instead of deciding from `encoding`.
    pub fn sends_binary(&self) -> bool {
        self.encoding == Encoding::Etf
    }
}

/// A WebSocket close code the runtime must send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloseCode(pub u16);

/// Everything the runtime must do. The runtime never decides anything on its own.
///
/// `Debug` never shows the token: the IDENTIFY and RESUME frames print as `Send(<redacted ..>)`.
#[derive(Clone, PartialEq)]
pub enum Action {
    /// Open a WebSocket to this URL (query string included), then call `handle_connected`.
    Connect {
        /// The full URL.
        url: String,
    },
    /// Write one frame. The bytes are complete and final: JSON text on a JSON connection, an
    /// uncompressed ETF term (version byte 131, binary keys) on an ETF connection. Send them
    /// as a binary WebSocket frame exactly when [`ShardConfig::sends_binary`] is true
    /// (`encoding` is [`Encoding::Etf`]), as a text frame otherwise. Every frame, worker
    /// commands included, is at most [`MAX_COMMAND_BYTES`] as sent.
    Send(Bytes),
    /// Close the socket with this code; then call `handle_closed` once it is closed.
    Close(CloseCode),
    /// This shard needs to IDENTIFY: ask the identify scheduler, then call
    /// `handle_identify_granted`.
    RequestIdentify,
    /// Publish this message; report the broker's confirm with `handle_published(id)`.
    Publish {
        /// Confirm handle.
        id: PublishId,
        /// The dispatch's sequence number.
        seq: u64,
        /// The message.
        publication: Publication,
    },
    /// Persist this snapshot (throttled by the core).
    PersistSession(SessionSnapshot),
    /// The shard stopped for good (fatal close code, or shutdown finished).
    Stopped(StopReason),
}

impl fmt::Debug for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Connect { url } => f.debug_struct("Connect").field("url", url).finish(),
            Action::Send(bytes) if packets::carries_token(bytes) => {
                write!(f, "Send(<redacted {} bytes>)", bytes.len())
            }
            Action::Send(bytes) => f.debug_tuple("Send").field(bytes).finish(),
            Action::Close(code) => f.debug_tuple("Close").field(code).finish(),
            Action::RequestIdentify => f.write_str("RequestIdentify"),
            Action::Publish {
                id,
                seq,
                publication,
            } => f
                .debug_struct("Publish")
                .field("id", id)
                .field("seq", seq)
                .field("publication", publication)
                .finish(),
            Action::PersistSession(s) => f.debug_tuple("PersistSession").field(s).finish(),
            Action::Stopped(r) => f.debug_tuple("Stopped").field(r).finish(),
        }
    }
}

/// Why a shard stopped for good.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StopReason {
    /// Shut down on request.
    #[error("shut down on request")]
    Shutdown,
    /// Fatal close code from Discord.
    #[error("{name} (close code {code})")]
    Fatal {
        /// The close code.
        code: u16,
        /// Its name, for example "authentication failed".
        name: &'static str,
    },
}

/// Coarse public state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardState {
    /// Waiting to connect or connecting.
    Connecting,
    /// Connected, identifying.
    Identifying,
    /// Connected, resuming.
    Resuming,
    /// Ready and receiving dispatches.
    Active,
    /// Disconnected, will reconnect.
    Disconnected {
        /// Reconnect attempts so far.
        attempts: u32,
    },
    /// Stopped for good.
    FatallyClosed,
}

/// Mistakes of the caller, returned only by command methods (state unchanged).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    /// The packet is larger than Discord's 4096-byte limit.
    #[error("command is larger than 4096 bytes")]
    PayloadTooLarge,
    /// The queue of commands waiting for the rate limiter is full.
    #[error("command queue is full")]
    QueueFull,
    /// The shard is stopped or shutting down.
    #[error("shard is shutting down")]
    ShuttingDown,
    /// The packet cannot be converted to this connection's encoding: on an ETF connection,
    /// it is not valid JSON or an object repeats a key. (JSON connections send packets as
    /// given and never return this.)
    #[error("command cannot be encoded for the connection: {0}")]
    Unencodable(EtfEncodeError),
}

/// Why the shard's latest connection ended (for logs and metrics).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The peer closed (or the socket dropped, `code: None`).
    Closed {
        /// The close code, if any.
        code: Option<u16>,
    },
    /// The socket could not be opened.
    ConnectFailed,
    /// No ACK between two heartbeats.
    Zombie,
    /// Discord sent op 7 RECONNECT.
    ReconnectRequested,
    /// Discord sent op 9 INVALID_SESSION.
    InvalidSession {
        /// Its `d`.
        resumable: bool,
    },
    /// A message could not be decoded.
    DecodeError(String),
    /// HELLO did not arrive in time.
    HelloTimeout,
    /// The application called [`Shard::reconnect`].
    Requested,
}

/// The resumable session: READY's id and resume URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// READY's `session_id`.
    pub id: String,
    /// READY's `resume_gateway_url` (the cached gateway URL when READY had none).
    pub resume_url: String,
}

/// Where the shard is in its lifecycle (finer than [`ShardState`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// `Connect` emitted; waiting for `handle_connected`.
    Connecting,
    /// Socket open; waiting for HELLO.
    AwaitingHello,
    /// HELLO received, no session: waiting for the grant (`granted == false`) or for READY.
    Identifying { granted: bool },
    /// RESUME sent; waiting for RESUMED.
    Resuming,
    /// READY or RESUMED received.
    Active,
    /// `Close` emitted; waiting for `handle_closed`, then reconnect after at least `min_delay`.
    Closing { min_delay: Duration },
    /// Waiting for the `Reconnect` timer.
    Waiting,
    /// Shutting down: waiting for confirms (or the grace timer) before `Stopped`.
    ShuttingDown,
    /// `Stopped` emitted; every input is a no-op.
    Stopped,
}

impl Phase {
    fn socket_open(self) -> bool {
        matches!(
            self,
            Phase::AwaitingHello | Phase::Identifying { .. } | Phase::Resuming | Phase::Active
        )
    }
}

/// A worker command waiting to be sent: the packet as given (returned by
/// [`Shard::take_queued_commands`]) and the frame that goes on the wire.
#[derive(Debug)]
struct QueuedCommand {
    packet: Bytes,
    frame: Bytes,
}

/// The WebSocket frame type a message arrived in (JSON comes in text frames, compressed or ETF
/// payloads in binary ones).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// A text frame.
    Text,
    /// A binary frame.
    Binary,
}

/// One gateway connection's protocol state. Performs no I/O; see the module docs for the
/// method groups and what the runtime does with each [`Action`].
#[derive(Debug)]
pub struct Shard {
    config: ShardConfig,
    presence: Option<Box<RawValue>>,
    rng: SeededRng,
    now: Instant,
    phase: Phase,
    /// Connection attempts since the last READY/RESUMED.
    attempts: u32,
    decoder: Decoder,
    session: Option<Session>,
    last_seq: Option<u64>,
    heartbeat: Heartbeat,
    window: SendWindow,
    commands: VecDeque<QueuedCommand>,
    confirms: Confirms,
    next_publish_id: u64,
    /// Whether reading was paused (backpressure) at some time since the latest heartbeat.
    paused_since_heartbeat: bool,
    /// When the latest snapshot was emitted, and what it said.
    persisted: Option<(Instant, SessionSnapshot)>,
    timers: TimerTable,
    disconnect: Option<DisconnectReason>,
    out: VecDeque<Action>,
    events: EventQueue,
    guilds: guilds::GuildArrival,
    /// While not publishing: what would have been published lately (see `config.replay`).
    replay: Replay,
}

impl Shard {
    /// A shard that will connect: queues [`Action::Connect`], to READY's resume URL when
    /// `config.session` holds a snapshot of this shard (the first connection then RESUMEs).
    pub fn new(config: ShardConfig, now: Instant) -> Self {
        let presence = config
            .presence
            .as_deref()
            .and_then(packets::parse_presence)
            // On ETF it must also convert (no repeated keys); else it is left out like invalid JSON.
            .filter(|p| packets::to_wire(config.encoding, Bytes::from(p.get().to_owned())).is_ok());
        let restored = config.session.clone().filter(|s| s.is_for(config.shard));
        let mut confirms = Confirms::default();
        confirms.new_session(restored.as_ref().map_or(0, |s| s.sequence));
        let mut shard = Self {
            rng: SeededRng::new(config.seed),
            decoder: Decoder::new(config.decoder()),
            presence,
            now,
            phase: Phase::Connecting,
            attempts: 0,
            last_seq: restored.as_ref().map(|s| s.sequence),
            session: restored.map(|s| Session {
                id: s.session_id,
                resume_url: s.resume_url,
            }),
            heartbeat: Heartbeat::default(),
            window: SendWindow::default(),
            commands: VecDeque::new(),
            confirms,
            next_publish_id: 0,
            paused_since_heartbeat: false,
            persisted: None,
            timers: TimerTable::default(),
            disconnect: None,
            out: VecDeque::new(),
            events: EventQueue::default(),
            guilds: guilds::GuildArrival::default(),
            replay: Replay::default(),
            config,
        };
        shard.connect();
        shard
    }

    // ----- getters -----

    /// The configuration.
    pub fn config(&self) -> &ShardConfig {
        &self.config
    }

    /// Whether READY (or a RESUMED) came and every guild READY listed as unavailable has
    /// arrived (see [`ShardEvent::GuildsArrived`]).
    pub fn guilds_arrived(&self) -> bool {
        self.guilds.arrived()
    }

    /// Whether dispatches are published now.
    pub fn publishing(&self) -> bool {
        self.config.publishing
    }

    /// Starts or stops publishing dispatches at `now` (cluster mode: a new shard set warms up
    /// without publishing, then publishes once the cluster switched to it). Dispatches
    /// received while not publishing count as handled: their sequence is confirmed at once.
    /// But what they would have published within [`ShardConfig::replay`] (the last `window`
    /// before `now`, at most `max_events` and `max_bytes`, the newest kept) is published
    /// first when publishing starts, as [`Action::Publish`] with fresh ids: the old set may
    /// have closed before reading them. A session's start (READY, RESUMED, the GUILD_CREATEs
    /// until [`Shard::guilds_arrived`]) is not kept. These may duplicate what the old set published
    /// (workers deduplicate on the event's own id). Their confirms count for backpressure
    /// and shutdown but never move the confirmed sequence (already past them).
    pub fn set_publishing(&mut self, now: Instant, publishing: bool) {
        let now = self.clock(now);
        let was = self.config.publishing;
        self.config.publishing = publishing;
        if !publishing || was || matches!(self.phase, Phase::ShuttingDown | Phase::Stopped) {
            self.replay.clear();
            return;
        }
        let limits = self.config.replay;
        let (mut replayed, mut from_seq) = (0, None);
        for (seq, publication) in self.replay.take(&limits, now) {
            replayed += 1;
            from_seq.get_or_insert(seq);
            let id = self.next_publish_id;
            self.next_publish_id += 1;
            self.confirms.replayed(id, publication.body.len());
            self.out.push_back(Action::Publish {
                id: PublishId(id),
                seq,
                publication,
            });
        }
        self.paused_since_heartbeat |= self.over_limits();
        self.events
            .push(ShardEvent::PublishingStarted { replayed, from_seq });
    }

    /// The coarse state.
    pub fn state(&self) -> ShardState {
        match self.phase {
            Phase::Connecting | Phase::AwaitingHello => ShardState::Connecting,
            Phase::Identifying { .. } => ShardState::Identifying,
            Phase::Resuming => ShardState::Resuming,
            Phase::Active => ShardState::Active,
            Phase::Closing { .. } | Phase::Waiting | Phase::ShuttingDown => {
                ShardState::Disconnected {
                    attempts: self.attempts,
                }
            }
            Phase::Stopped => ShardState::FatallyClosed,
        }
    }

    /// The resumable session, if any.
    pub fn session(&self) -> Option<&Session> {
        self.session.as_ref()
    }

    /// The latest non-null sequence received (what RESUME and heartbeats carry).
    pub fn last_sequence(&self) -> Option<u64> {
        self.last_seq
    }

    /// The highest sequence such that it and every dispatch before it in this session were
    /// confirmed by the broker (or dropped by the profile).
    pub fn confirmed_sequence(&self) -> u64 {
        self.confirms.confirmed_seq()
    }

    /// The round trip of the latest acknowledged heartbeat.
    pub fn latency(&self) -> Option<Duration> {
        self.heartbeat.latency()
    }

    /// When the latest heartbeat ACK arrived (the `now` of that `handle_*` call).
    pub fn last_ack(&self) -> Option<Instant> {
        self.heartbeat.last_ack()
    }

    /// Which timer [`Shard::poll_timeout`] is for.
    pub fn timeout_reason(&self) -> Option<Timer> {
        self.timers.next().map(|(t, _)| t)
    }

    /// Why the latest connection ended.
    pub fn last_disconnect(&self) -> Option<&DisconnectReason> {
        self.disconnect.as_ref()
    }

    /// Publications not yet confirmed by the broker.
    pub fn unconfirmed(&self) -> usize {
        self.confirms.unconfirmed()
    }

    /// Bytes of the bodies of publications not yet confirmed by the broker.
    pub fn unconfirmed_bytes(&self) -> usize {
        self.confirms.unconfirmed_bytes()
    }

    /// Whether the runtime must stop reading this shard's socket until confirms catch up: the
    /// one backpressure rule, which the runtime follows exactly (it reads exactly when this is
    /// false). Holds while `max_unconfirmed` publications or `max_unconfirmed_bytes` bytes of
    /// them are unconfirmed, except while a new connection waits for HELLO (which must be read
    /// for the connection to live). Changes on `handle_message`, `handle_published` and
    /// `handle_connected`. A missing heartbeat ACK is not taken for a zombie connection when
    /// reading was paused at any time since the heartbeat went out (the ACK may sit unread).
    pub fn should_pause_reading(&self) -> bool {
        self.phase != Phase::AwaitingHello && self.over_limits()
    }

    /// Worker commands waiting for READY/RESUMED or the send window (after a shutdown or a
    /// fatal stop: the ones that will never be sent, see [`Shard::take_queued_commands`]).
    pub fn queued_commands(&self) -> usize {
        self.commands.len()
    }

    /// The current heartbeat interval (from HELLO), while connected.
    pub fn heartbeat_interval(&self) -> Option<Duration> {
        self.heartbeat.interval()
    }

    // ----- inputs -----

    /// The socket opened (after [`Action::Connect`]). Resets the per-connection decoder and
    /// send window and waits for HELLO (arms [`Timer::HelloDeadline`]). Outputs: none.
    pub fn handle_connected(&mut self, now: Instant) {
        let now = self.clock(now);
        if self.phase != Phase::Connecting {
            return;
        }
        self.decoder.reset();
        self.window.reset();
        self.heartbeat.reset();
        self.phase = Phase::AwaitingHello;
        self.timers
            .set(Timer::HelloDeadline, now + self.config.hello_timeout);
    }

    /// One complete WebSocket message of frame type `kind` arrived.
    ///
    /// Outputs: `Send` (heartbeat, RESUME, queued commands), `RequestIdentify`, `Publish`,
    /// `PersistSession`, `Close` (op 7, op 9, undecodable input).
    pub fn handle_message(&mut self, now: Instant, message: &[u8], kind: FrameKind) {
        let now = self.clock(now);
        if !self.phase.socket_open() {
            return;
        }
        match self.decoder.decode(message, kind == FrameKind::Binary) {
            Ok(Some(payload)) => self.handle_payload(now, &payload),
            Ok(None) => {}
            Err(e) => {
                self.begin_close(DisconnectReason::DecodeError(e.to_string()), Duration::ZERO)
            }
        }
    }

    /// The socket closed (with the peer's close code, if any) or failed to open (`None` while
    /// connecting). After the shard's own [`Action::Close`] the code is ignored and the shard
    /// follows its plan. Outputs: `Connect` (or a `Reconnect` timer), `Stopped`.
    pub fn handle_closed(&mut self, now: Instant, code: Option<u16>) {
        let now = self.clock(now);
        match self.phase {
            Phase::Stopped | Phase::ShuttingDown | Phase::Waiting => {}
            Phase::Closing { min_delay } => self.schedule_reconnect(now, min_delay),
            Phase::Connecting => {
                self.disconnect = Some(DisconnectReason::ConnectFailed);
                self.schedule_reconnect(now, Duration::ZERO);
            }
            Phase::AwaitingHello | Phase::Identifying { .. } | Phase::Resuming | Phase::Active => {
                self.end_connection();
                self.disconnect = Some(DisconnectReason::Closed { code });
                match CloseReaction::from_close_code(code) {
                    CloseReaction::Resume => self.schedule_reconnect(now, Duration::ZERO),
                    CloseReaction::Reidentify => {
                        self.forget_session();
                        self.schedule_reconnect(now, Duration::ZERO);
                    }
                    CloseReaction::Stop { code, name } => {
                        self.stop(StopReason::Fatal { code, name });
                    }
                }
            }
        }
    }

    /// Time passed; call when `poll_timeout()` is reached. Early calls are no-ops.
    /// Outputs: `Send` (heartbeat, commands), `Close` (zombie, HELLO timeout), `Connect`,
    /// `PersistSession`, `Stopped` (shutdown grace over).
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock(now);
        for timer in Timer::ALL {
            if !self.timers.is_expired(timer, now) {
                continue;
            }
            self.timers.clear(timer);
            match timer {
                Timer::ShutdownGrace => self.finish_shutdown(),
                Timer::HelloDeadline => {
                    if self.phase == Phase::AwaitingHello {
                        self.begin_close(DisconnectReason::HelloTimeout, Duration::ZERO);
                    }
                }
                Timer::Heartbeat => self.heartbeat_due(now),
                Timer::Reconnect => {
                    if self.phase == Phase::Waiting {
                        self.connect();
                    }
                }
                Timer::CommandWindow => self.flush_commands(now),
                Timer::Persist => self.persist(now),
            }
        }
    }

    /// The identify scheduler granted this shard an IDENTIFY. Sends it if the shard is still
    /// waiting for one on its current connection and returns `true`. A stale grant (the
    /// connection it was asked for is gone, or the shard resumed, stopped or already
    /// identified) is not used and returns `false`: the runtime should then give the slot back
    /// with [`crate::identify::IdentifyScheduler::release`], or a session start of the daily
    /// budget and the bucket's 5 s are wasted. (If the shard needs an IDENTIFY later it emits
    /// a new [`Action::RequestIdentify`].) Outputs: `Send`.
    pub fn handle_identify_granted(&mut self, now: Instant) -> bool {
        let now = self.clock(now);
        if self.phase != (Phase::Identifying { granted: false }) {
            return false;
        }
        let fields = packets::IdentifyFields {
            shard: self.config.shard,
            intents: self.config.intents,
            large_threshold: self.config.large_threshold,
            presence: self.presence.as_deref(),
        };
        let packet = packets::identify(&self.config.token, &fields);
        self.send_priority(now, packet);
        self.phase = Phase::Identifying { granted: true };
        true
    }

    /// The broker confirmed a publication. Advances the confirmed sequence and, throttled,
    /// emits `PersistSession`; during shutdown the last confirm finishes it (`Stopped`).
    pub fn handle_published(&mut self, now: Instant, id: PublishId) {
        let now = self.clock(now);
        if self.phase == Phase::Stopped {
            return;
        }
        if self.confirms.confirm(id.0) {
            self.confirmed_advanced(now);
        }
        if self.phase == Phase::ShuttingDown && self.confirms.unconfirmed() == 0 {
            self.finish_shutdown();
        }
    }

    // ----- commands -----

    /// Queues a worker command (one JSON gateway packet, whatever the profile or the
    /// connection's encoding) for sending under the rate limit. On an ETF connection it is
    /// converted to ETF here, and the 4096-byte limit applies to the converted frame (the
    /// bytes actually sent). It is sent at once when the shard is active and the window has
    /// room, otherwise it waits (in order) for READY/RESUMED and the window. `Err` leaves the
    /// shard unchanged: `ShuttingDown`, `Unencodable` (ETF only), `PayloadTooLarge`,
    /// `QueueFull`, checked in that order.
    pub fn send_command(&mut self, now: Instant, packet: Bytes) -> Result<(), UsageError> {
        let now = self.clock(now);
        if matches!(self.phase, Phase::ShuttingDown | Phase::Stopped) {
            return Err(UsageError::ShuttingDown);
        }
        let frame = packets::to_wire(self.config.encoding, packet.clone())
            .map_err(UsageError::Unencodable)?;
        if frame.len() > MAX_COMMAND_BYTES {
            return Err(UsageError::PayloadTooLarge);
        }
        if self.commands.len() >= self.config.command_queue_capacity
            && !(self.commands.is_empty()
                && self.phase == Phase::Active
                && self.window.can_send_command(now))
        {
            return Err(UsageError::QueueFull);
        }
        self.commands.push_back(QueuedCommand { packet, frame });
        self.flush_commands(now);
        Ok(())
    }

    /// Closes the connection with a resumable code and resumes (worker-requested reconnect).
    /// While waiting to reconnect, connects at once; while connecting or closing, does
    /// nothing. Outputs: `Close` or `Connect`.
    pub fn reconnect(&mut self, now: Instant) {
        let _ = self.clock(now);
        match self.phase {
            Phase::AwaitingHello | Phase::Identifying { .. } | Phase::Resuming | Phase::Active => {
                self.begin_close(DisconnectReason::Requested, Duration::ZERO);
            }
            Phase::Waiting => {
                self.timers.clear(Timer::Reconnect);
                self.connect();
            }
            // Already (re)connecting, closing or finished.
            Phase::Connecting | Phase::Closing { .. } | Phase::ShuttingDown | Phase::Stopped => {}
        }
    }

    /// Stops for good, keeping the session resumable: closes with [`CloseCode::RESUME`],
    /// waits up to `shutdown_grace` for outstanding confirms (keep feeding `handle_published`
    /// and `handle_timeout`), then emits `PersistSession` (if there is a session) and
    /// `Stopped(Shutdown)`. Queued worker commands are not sent any more and not dropped
    /// either: they stay until [`Shard::take_queued_commands`] takes them (at once, or when
    /// `Stopped` arrives) so the runtime can re-publish or dead-letter them.
    pub fn shutdown(&mut self, now: Instant) {
        let now = self.clock(now);
        match self.phase {
            Phase::ShuttingDown | Phase::Stopped => return,
            Phase::Connecting
            | Phase::AwaitingHello
            | Phase::Identifying { .. }
            | Phase::Resuming
            | Phase::Active => self.out.push_back(Action::Close(CloseCode::RESUME)),
            Phase::Closing { .. } | Phase::Waiting => {}
        }
        self.end_connection();
        self.timers.clear_all();
        self.phase = Phase::ShuttingDown;
        if self.confirms.unconfirmed() == 0 {
            self.finish_shutdown();
        } else {
            self.timers
                .set(Timer::ShutdownGrace, now + self.config.shutdown_grace);
        }
    }

    /// Removes and returns the worker commands not sent yet, oldest first, each exactly the
    /// packet given to [`Shard::send_command`] (JSON, even on an ETF connection). After
    /// [`Shard::shutdown`] or a fatal stop ([`Action::Stopped`]) they will never be sent:
    /// take them then, to re-publish them for another process or dead-letter them. On a live
    /// shard this cancels them. Outputs: none.
    pub fn take_queued_commands(&mut self) -> Vec<Bytes> {
        self.timers.clear(Timer::CommandWindow);
        self.commands.drain(..).map(|c| c.packet).collect()
    }

    // ----- outputs -----

    /// The next action for the runtime. Drain it after every input and command.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.out.pop_front()
    }

    /// The next noteworthy happening, for logs and metrics; the runtime need not act on it.
    /// Drain it after `poll_action` returned `None` and before reading `poll_timeout`. Inputs
    /// and commands add events ([`ShardEvent`] says which); at most
    /// [`EVENT_QUEUE_CAPACITY`] wait, the oldest being discarded beyond that.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ShardEvent> {
        self.events.pop()
    }

    /// When to call `handle_timeout` next (never earlier than the latest `now` seen). Any
    /// input or command can change it; read it after draining `poll_action` and
    /// `poll_event`.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next().map(|(_, at)| at.max(self.now))
    }

    // ----- internals -----

    /// Whether the unconfirmed publications reach a limit (see [`Shard::should_pause_reading`]).
    fn over_limits(&self) -> bool {
        self.confirms.unconfirmed() >= self.config.max_unconfirmed
            || self.confirms.unconfirmed_bytes() >= self.config.max_unconfirmed_bytes
    }

    /// Clamps time so it never goes backwards.
    fn clock(&mut self, now: Instant) -> Instant {
        self.now = self.now.max(now);
        self.now
    }

    fn handle_payload(&mut self, now: Instant, payload: &Payload) {
        match payload.op {
            0 => self.handle_dispatch(now, payload),
            1 => self.requested_heartbeat(now),
            7 => self.begin_close(DisconnectReason::ReconnectRequested, Duration::ZERO),
            9 => self.invalid_session(packets::invalid_session_resumable(payload.data())),
            10 => self.hello(now, payload),
            11 => {
                self.heartbeat.acked(now);
                self.release_idle_queues();
            }
            // Unknown opcodes are ignored, as twilight does; the runtime may log them.
            op => self.events.push(ShardEvent::UnknownOpcode { op }),
        }
    }

    /// Gives back what the action and event queues grew to, each if drained. Done on a
    /// heartbeat ACK, an idle shard's only message (about every 41 s), so a busy shard's
    /// queues are not allocated again for every dispatch, and an idle one holds nothing
    /// (BENCHMARKS.md section 4, memory per idle shard: 768 bytes for four actions).
    fn release_idle_queues(&mut self) {
        if self.out.is_empty() {
            self.out = VecDeque::new();
        }
        self.events.release_if_empty();
    }

    fn hello(&mut self, now: Instant, payload: &Payload) {
        if self.phase != Phase::AwaitingHello {
            return; // A second HELLO on one connection changes nothing.
        }
        self.timers.clear(Timer::HelloDeadline);
        let interval = self
            .heartbeat
            .start(packets::hello_interval(payload.data()));
        self.window.set_heartbeat_interval(interval);
        let jitter = interval.mul_f64(self.rng.next_f64());
        self.timers.set(Timer::Heartbeat, now + jitter);
        // Reading may pause from here on (it could not while waiting for HELLO).
        self.paused_since_heartbeat = self.over_limits();
        match &self.session {
            Some(session) => {
                let seq = self.last_seq.unwrap_or(0);
                let packet = packets::resume(&self.config.token, &session.id, seq);
                self.send_priority(now, packet);
                self.phase = Phase::Resuming;
            }
            None => {
                self.out.push_back(Action::RequestIdentify);
                self.phase = Phase::Identifying { granted: false };
            }
        }
    }

    fn handle_dispatch(&mut self, now: Instant, payload: &Payload) {
        if let Some(s) = payload.s {
            self.last_seq = Some(s);
        }
        let seq = self.last_seq.unwrap_or(0);
        let mut became_active = false;
        let mut new_session = false;
        // A session's start (READY, RESUMED, and the GUILD_CREATEs of the guilds READY listed)
        // is never replayed: workers have those guilds from the old set.
        let replayable = match payload.event_name() {
            Some("READY" | "RESUMED") => false,
            Some("GUILD_CREATE" | "GUILD_DELETE") => self.guilds.arrived(),
            _ => true,
        };
        match payload.event_name() {
            Some("READY") => {
                let Some(ready) = packets::ready_fields(payload.data()) else {
                    // Without a session id the session cannot be used or resumed: start over.
                    let reason = DisconnectReason::DecodeError("READY without session_id".into());
                    self.forget_session();
                    self.begin_close(reason, Duration::ZERO);
                    return;
                };
                let resume_url = ready
                    .resume_gateway_url
                    .unwrap_or_else(|| self.config.gateway_url.clone());
                let session = Session {
                    id: ready.session_id,
                    resume_url,
                };
                self.events.push(ShardEvent::Ready {
                    session: session.clone(),
                });
                if self.guilds.ready(payload.data()) {
                    self.events.push(ShardEvent::GuildsArrived);
                }
                self.session = Some(session);
                // A new session numbers its dispatches from scratch.
                self.confirms.new_session(0);
                new_session = true;
                became_active = true;
            }
            Some("RESUMED") => {
                became_active = self.session.is_some();
                if became_active {
                    self.events.push(ShardEvent::Resumed {
                        sequence: self.last_seq,
                    });
                    if self.guilds.resumed() {
                        self.events.push(ShardEvent::GuildsArrived);
                    }
                }
            }
            event => {
                if self.guilds.dispatch(event, payload.data()) {
                    self.events.push(ShardEvent::GuildsArrived);
                }
            }
        }
        if became_active && self.phase.socket_open() {
            self.phase = Phase::Active;
            self.attempts = 0;
        }
        self.publish(payload, seq, replayable);
        if new_session {
            self.persist(now);
        }
        if became_active {
            self.flush_commands(now);
        }
    }

    fn publish(&mut self, payload: &Payload, seq: u64, replayable: bool) {
        let session_id = self.session.as_ref().map_or("", |s| s.id.as_str());
        let ctx = DispatchContext {
            shard: self.config.shard,
            session_id,
        };
        if !self.config.publishing {
            if replayable
                && !self.config.replay.window.is_zero()
                && let Ok(Some(publication)) = self.config.router.try_route_dispatch(&ctx, payload)
            {
                self.replay
                    .keep(&self.config.replay, self.now, seq, publication);
            }
            if self.confirms.skipped(seq) {
                self.confirmed_advanced(self.now);
            }
            return;
        }
        let routed = self.config.router.try_route_dispatch(&ctx, payload);
        let routed = routed.unwrap_or_else(|reason| {
            // Not publishable (for example not transcodable to msgpack): handled as dropped,
            // so the sequence still advances, and reported for the logs.
            self.events.push(ShardEvent::DispatchDropped {
                seq,
                event: payload.event_name().unwrap_or_default().to_owned(),
                reason,
            });
            None
        });
        match routed {
            Some(publication) => {
                let id = self.next_publish_id;
                self.next_publish_id += 1;
                self.confirms.published(id, seq, publication.body.len());
                self.paused_since_heartbeat |= self.over_limits();
                self.out.push_back(Action::Publish {
                    id: PublishId(id),
                    seq,
                    publication,
                });
            }
            None => {
                if self.confirms.skipped(seq) {
                    self.confirmed_advanced(self.now);
                }
            }
        }
    }

    fn invalid_session(&mut self, resumable: bool) {
        let reason = DisconnectReason::InvalidSession { resumable };
        if resumable && self.session.is_some() {
            self.begin_close(reason, Duration::ZERO);
        } else {
            self.forget_session();
            let (low, high) = INVALID_SESSION_WAIT;
            let wait = self.rng.duration_between(low, high);
            self.begin_close(reason, wait);
        }
    }

    fn heartbeat_due(&mut self, now: Instant) {
        if !self.phase.socket_open() {
            return;
        }
        let Some(interval) = self.heartbeat.interval() else {
            return;
        };
        // While the runtime does not read the socket (backpressure), no ACK can arrive: that is
        // not a zombie. Keep heartbeating so Discord keeps the session.
        let paused = self.paused_since_heartbeat || self.should_pause_reading();
        if self.heartbeat.awaiting_ack() && !paused {
            self.begin_close(DisconnectReason::Zombie, Duration::ZERO);
            return;
        }
        if !self.window.can_send_priority(now) {
            // Cannot happen with the reservation; still, never exceed the limit.
            if let Some(at) = self.window.next_priority_slot(now) {
                self.timers.set(Timer::Heartbeat, at);
            }
            return;
        }
        self.send_priority(now, packets::heartbeat(self.last_seq));
        self.heartbeat.sent_periodic(now);
        self.paused_since_heartbeat = self.should_pause_reading();
        self.timers.set(Timer::Heartbeat, now + interval);
    }

    fn requested_heartbeat(&mut self, now: Instant) {
        // Answer at once without touching the periodic schedule. It uses the command budget,
        // so a server asking too often can never eat the permits of periodic heartbeats.
        if self.window.can_send_command(now) {
            self.window.record(now);
            let frame = self.own_frame(packets::heartbeat(self.last_seq));
            self.out.push_back(Action::Send(frame));
            self.heartbeat.sent_requested(now);
        }
    }

    fn send_priority(&mut self, now: Instant, packet: Bytes) {
        self.window.record(now);
        let frame = self.own_frame(packet);
        self.out.push_back(Action::Send(frame));
    }

    /// The wire form of one of the shard's own packets (HEARTBEAT, IDENTIFY, RESUME). They
    /// always convert: the shard writes them with serde, and a configured presence that would
    /// not convert is left out in `new`.
    fn own_frame(&self, packet: Bytes) -> Bytes {
        match packets::to_wire(self.config.encoding, packet.clone()) {
            Ok(frame) => frame,
            Err(e) => {
                debug_assert!(false, "the shard's own packet does not convert: {e}");
                packet
            }
        }
    }

    fn flush_commands(&mut self, now: Instant) {
        self.timers.clear(Timer::CommandWindow);
        if self.phase != Phase::Active {
            return;
        }
        while !self.commands.is_empty() && self.window.can_send_command(now) {
            if let Some(command) = self.commands.pop_front() {
                self.window.record(now);
                self.out.push_back(Action::Send(command.frame));
            }
        }
        if !self.commands.is_empty()
            && let Some(at) = self.window.next_command_slot(now)
        {
            self.timers.set(Timer::CommandWindow, at);
        }
    }

    fn confirmed_advanced(&mut self, now: Instant) {
        if self.session.is_none() || self.timers.is_set(Timer::Persist) {
            return;
        }
        match &self.persisted {
            Some((at, _)) if now < *at + self.config.persist_interval => {
                self.timers
                    .set(Timer::Persist, *at + self.config.persist_interval);
            }
            _ => self.persist(now),
        }
    }

    /// Emits a snapshot of the current session if it differs from the last one.
    fn persist(&mut self, now: Instant) {
        self.timers.clear(Timer::Persist);
        let Some(snapshot) = self.snapshot() else {
            return;
        };
        if self.persisted.as_ref().is_some_and(|(_, s)| *s == snapshot) {
            return;
        }
        self.out.push_back(Action::PersistSession(snapshot.clone()));
        self.persisted = Some((now, snapshot));
    }

    /// The snapshot a restarted process would resume from.
    pub fn snapshot(&self) -> Option<SessionSnapshot> {
        let session = self.session.as_ref()?;
        Some(SessionSnapshot {
            shard: self.config.shard,
            session_id: session.id.clone(),
            sequence: self.confirms.confirmed_seq(),
            resume_url: session.resume_url.clone(),
        })
    }

    /// Emits `Close` with the resumable code and remembers what to do once closed.
    fn begin_close(&mut self, reason: DisconnectReason, min_delay: Duration) {
        self.end_connection();
        self.disconnect = Some(reason);
        self.out.push_back(Action::Close(CloseCode::RESUME));
        self.phase = Phase::Closing { min_delay };
    }

    /// Clears everything that belongs to one connection.
    fn end_connection(&mut self) {
        for t in [Timer::Heartbeat, Timer::HelloDeadline, Timer::CommandWindow] {
            self.timers.clear(t);
        }
        self.heartbeat.reset();
    }

    fn forget_session(&mut self) {
        self.session = None;
        self.last_seq = None;
    }

    fn schedule_reconnect(&mut self, now: Instant, min_delay: Duration) {
        self.attempts = self.attempts.saturating_add(1);
        let delay = self.backoff(self.attempts).max(min_delay);
        if let Some(reason) = self.disconnect.clone() {
            self.events.push(ShardEvent::Reconnecting {
                reason,
                attempt: self.attempts,
                delay,
                resume: self.session.is_some(),
            });
        }
        if delay.is_zero() {
            self.connect();
        } else {
            self.phase = Phase::Waiting;
            self.timers.set(Timer::Reconnect, now + delay);
        }
    }

    /// Attempt 1 reconnects at once; then 1 s, 2 s, 4 s .. up to 64 s, each drawn in
    /// `[half, full)` from the seeded generator.
    fn backoff(&mut self, attempt: u32) -> Duration {
        if attempt <= 1 {
            return Duration::ZERO;
        }
        let exp = (attempt - 2).min(16);
        let full = BACKOFF_BASE.saturating_mul(1 << exp).min(BACKOFF_MAX);
        self.rng.duration_between(full / 2, full)
    }

    fn connect(&mut self) {
        self.timers.clear(Timer::Reconnect);
        let base = match &self.session {
            Some(s) if self.attempts <= RESUME_URL_ATTEMPTS => s.resume_url.as_str(),
            _ => self.config.gateway_url.as_str(),
        };
        let url = self.config.url_for(base);
        self.out.push_back(Action::Connect { url });
        self.phase = Phase::Connecting;
    }

    fn finish_shutdown(&mut self) {
        if self.phase != Phase::ShuttingDown {
            return;
        }
        if let Some(snapshot) = self.snapshot() {
            self.out.push_back(Action::PersistSession(snapshot));
        }
        self.stop(StopReason::Shutdown);
    }

    fn stop(&mut self, reason: StopReason) {
        // Queued commands stay for `take_queued_commands`; nothing sends them any more.
        self.timers.clear_all();
        self.phase = Phase::Stopped;
        self.out.push_back(Action::Stopped(reason));
    }
}
