//! One Discord gateway connection's protocol state, as a sans-IO state machine.
//!
//! CONTRACT STUB: the API below is what the runtimes drive. Method groups (drain order in the
//! crate docs): getters; inputs `handle_*(now, ..)`; commands (`send_command`, `reconnect`,
//! `shutdown`, `handle_identify_granted`); outputs `poll_action`, `poll_timeout`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::codec::{Compression, DecoderConfig, Encoding};
use crate::profile::{Publication, Router};
use crate::secret::Secret;
use crate::session::SessionSnapshot;
use crate::sharding::ShardId;

/// Identifies one publication of a shard, for publisher confirms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublishId(pub u64);

/// Settings of one shard.
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
    /// IDENTIFY's initial `presence`, as raw JSON, if any.
    pub presence: Option<String>,
    /// The gateway URL from `/gateway/bot` (without query).
    pub gateway_url: String,
    /// Transport compression.
    pub compression: Compression,
    /// Payload encoding.
    pub encoding: Encoding,
    /// Largest decompressed payload accepted.
    pub max_payload: usize,
    /// Seed for heartbeat jitter and back-off draws.
    pub seed: u64,
    /// How many worker commands may wait for the rate limiter.
    pub command_queue_capacity: usize,
    /// A persisted session to resume, if any.
    pub session: Option<SessionSnapshot>,
    /// The profile's routing rules.
    pub router: Router,
}

impl ShardConfig {
    /// The decoder settings for this shard's connections.
    pub fn decoder(&self) -> DecoderConfig {
        DecoderConfig {
            compression: self.compression,
            encoding: self.encoding,
            max_payload: self.max_payload,
        }
    }
}

/// A WebSocket close code the runtime must send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloseCode(pub u16);

/// Everything the runtime must do. The runtime never decides anything on its own.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Open a WebSocket to this URL (query string included), then call `handle_connected`.
    Connect {
        /// The full URL.
        url: String,
    },
    /// Write one frame: text for JSON, binary for ETF.
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
}

/// One gateway connection's protocol state (stub).
#[derive(Debug)]
pub struct Shard {
    config: ShardConfig,
    out: VecDeque<Action>,
}

impl Shard {
    /// A shard that will connect (queues `Action::Connect`).
    pub fn new(config: ShardConfig, now: Instant) -> Self {
        let _ = now;
        let url = config.gateway_url.clone();
        Self {
            config,
            out: VecDeque::from([Action::Connect { url }]),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ShardConfig {
        &self.config
    }

    /// The socket opened.
    pub fn handle_connected(&mut self, now: Instant) {
        let _ = now;
    }

    /// One complete WebSocket message arrived (`binary` = its frame type).
    pub fn handle_message(&mut self, now: Instant, message: &[u8], binary: bool) {
        let _ = (now, message, binary);
    }

    /// The socket closed (with the peer's close code, if any) or failed to open.
    pub fn handle_closed(&mut self, now: Instant, code: Option<u16>) {
        let _ = (now, code);
    }

    /// Time passed; call when `poll_timeout()` is reached.
    pub fn handle_timeout(&mut self, now: Instant) {
        let _ = now;
    }

    /// The identify scheduler granted this shard an IDENTIFY.
    pub fn handle_identify_granted(&mut self, now: Instant) {
        let _ = now;
    }

    /// The broker confirmed a publication.
    pub fn handle_published(&mut self, now: Instant, id: PublishId) {
        let _ = (now, id);
    }

    /// Queue a worker command (a JSON gateway packet) for sending under the rate limit.
    pub fn send_command(&mut self, now: Instant, packet: Bytes) -> Result<(), UsageError> {
        let _ = (now, packet);
        Ok(())
    }

    /// Close the connection with a resumable code and resume.
    pub fn reconnect(&mut self, now: Instant) {
        let _ = now;
    }

    /// Close for good (with a resumable code, so a restarted process can resume).
    pub fn shutdown(&mut self, now: Instant) {
        let _ = now;
    }

    /// The next action for the runtime.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.out.pop_front()
    }

    /// When to call `handle_timeout` next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    /// The coarse state.
    pub fn state(&self) -> ShardState {
        ShardState::Connecting
    }
}

#[allow(dead_code)]
const HEARTBEAT_FALLBACK: Duration = Duration::from_secs(41);
