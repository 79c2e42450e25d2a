//! The mock's configuration: what it accepts, what it replays and how fast, and how strict its
//! timers are.
//!
//! Owns: [`MockConfig`] and its option types, with defaults that behave like Discord, and the
//! intent bits Discord defines. Does not
//! own: run-time changes (see `control`).

use std::time::Duration;

use crate::fixtures::Fixture;

/// Intent bits Discord defines for bots (PROTOCOL.md section 12).
pub const DEFINED_INTENTS: u64 = 0x331_FFFF;
/// GUILD_MEMBERS | GUILD_PRESENCES | MESSAGE_CONTENT.
pub const PRIVILEGED_INTENTS: u64 = (1 << 1) | (1 << 8) | (1 << 15);

/// How fast the fixture's dispatches are sent after READY (or after RESUMED).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReplayRate {
    /// A whole pass over the fixture is queued at once, right after READY.
    AllAtOnce,
    /// One dispatch at a time, the next one as soon as the previous one has been handed to the
    /// kernel: the client's reading speed sets the pace (for benchmarks).
    AsFastAsClientReads,
    /// This many dispatches per second.
    PerSecond(f64),
}

/// Which shards get which fixture events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardRouting {
    /// As Discord: an event with a guild goes to `(guild_id >> 22) % num_shards`, an event
    /// without one only to shard 0; READY lists the fixture's guilds of that shard.
    ByGuild,
    /// Every shard replays every event (benchmarks with many shards).
    Broadcast,
}

/// How much of the traffic the recorder keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameRecording {
    /// Every frame in both directions (tests).
    All,
    /// The last `n` frames of each direction, and the last `n` heartbeats, per connection
    /// (long runs).
    Last(usize),
    /// No frames (benchmarks); identifies, resumes, heartbeats, closes and violations are
    /// still recorded.
    None,
}

/// Configuration of a [`crate::MockGateway`]. Construct with [`MockConfig::default`] and set fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MockConfig {
    /// TCP port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// The bot token IDENTIFY/RESUME and `/gateway/bot` must carry; `None` accepts any.
    pub token: Option<String>,
    /// Recommended shard count returned by `/gateway/bot`.
    pub shards: u32,
    /// If set, IDENTIFY must use exactly this shard count (else close 4010).
    pub required_shard_count: Option<u32>,
    /// `session_start_limit.max_concurrency`: identify buckets per window.
    pub max_concurrency: u32,
    /// `session_start_limit.total`.
    pub session_start_total: u32,
    /// `session_start_limit.reset_after`: length of the session-start window.
    pub session_start_reset_after: Duration,
    /// The identify concurrency window: one IDENTIFY per bucket per this long (Discord: 5 s).
    pub identify_window: Duration,
    /// If set, IDENTIFY must carry exactly these intents (else close 4013).
    pub expected_intents: Option<u64>,
    /// Privileged intents the application may use (GUILD_MEMBERS, GUILD_PRESENCES,
    /// MESSAGE_CONTENT); asking for others closes 4014. Default: all three.
    pub allowed_privileged_intents: u64,
    /// `heartbeat_interval` sent in HELLO.
    pub heartbeat_interval: Duration,
    /// Extra time after `heartbeat_interval` before a missing heartbeat closes the connection.
    /// `None`: half the interval plus one second.
    pub heartbeat_grace: Option<Duration>,
    /// Close with 4009 when no heartbeat arrives in time (the violation is recorded either way).
    pub close_on_heartbeat_timeout: bool,
    /// A heartbeat later than `heartbeat_interval` plus this is recorded as a `HeartbeatLate`
    /// violation. `None`: a quarter of the interval plus 250 ms.
    pub heartbeat_late_slack: Option<Duration>,
    /// Answer heartbeats with ACKs (false: every connection starts as a zombie).
    pub ack_heartbeats: bool,
    /// Inbound frames allowed per `rate_limit_window` (Discord: 120 per 60 s); more closes 4008.
    pub rate_limit_frames: u32,
    /// See `rate_limit_frames`.
    pub rate_limit_window: Duration,
    /// Largest client payload accepted (Discord: 4096 bytes); larger closes 4002.
    pub max_client_payload: usize,
    /// The dispatches replayed after READY.
    pub fixture: Fixture,
    /// Replay pace.
    pub rate: ReplayRate,
    /// Start over at the end of the fixture (sequence numbers keep increasing).
    pub loop_replay: bool,
    /// Sessions start with replay paused (only injected dispatches are sent until resumed).
    pub start_paused: bool,
    /// Which shards replay which events.
    pub routing: ShardRouting,
    /// How long a session stays resumable after its connection went away without invalidating it.
    pub resume_window: Duration,
    /// Dispatch history kept per session for resuming, in bytes (oldest dropped first; a RESUME
    /// from before the oldest kept dispatch gets op 9).
    pub history_limit_bytes: usize,
    /// zlib compression level (0-9) for `zlib-stream`.
    pub zlib_level: u32,
    /// Largest WebSocket message for `zlib-stream`; longer compressed payloads are split.
    pub zlib_max_message: usize,
    /// Frames kept by the recorder.
    pub record_frames: FrameRecording,
    /// How long a connection thread waits for input before it looks at controls and timers again.
    pub poll_interval: Duration,
    /// `POST /channels/{id}/messages`: answer the first this many with 429 (`retry_after`
    /// 0.05 s), to test a client's rate-limit handling.
    pub rate_limit_channel_messages: u32,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            port: 0,
            token: None,
            shards: 1,
            required_shard_count: None,
            max_concurrency: 1,
            session_start_total: 1000,
            session_start_reset_after: Duration::from_secs(24 * 3600),
            identify_window: Duration::from_secs(5),
            expected_intents: None,
            allowed_privileged_intents: PRIVILEGED_INTENTS,
            heartbeat_interval: Duration::from_millis(41_250),
            heartbeat_grace: None,
            close_on_heartbeat_timeout: true,
            heartbeat_late_slack: None,
            ack_heartbeats: true,
            rate_limit_frames: 120,
            rate_limit_window: Duration::from_secs(60),
            max_client_payload: 4096,
            fixture: Fixture::basic(),
            rate: ReplayRate::AllAtOnce,
            loop_replay: false,
            start_paused: false,
            routing: ShardRouting::ByGuild,
            resume_window: Duration::from_secs(180),
            history_limit_bytes: 64 << 20,
            zlib_level: 6,
            zlib_max_message: 64 << 10,
            record_frames: FrameRecording::All,
            poll_interval: Duration::from_millis(20),
            rate_limit_channel_messages: 0,
        }
    }
}

impl MockConfig {
    /// Settings for tests: the given token, a short heartbeat interval (500 ms) with a long
    /// timeout (10 s grace, so a slow test machine does not hit 4009), no identify window,
    /// 5 ms control latency.
    pub fn for_tests(token: &str) -> Self {
        Self {
            token: Some(token.to_owned()),
            heartbeat_interval: Duration::from_millis(500),
            heartbeat_grace: Some(Duration::from_secs(10)),
            identify_window: Duration::ZERO,
            poll_interval: Duration::from_millis(5),
            ..Self::default()
        }
    }

    /// Settings for the product's demo mode: any token, the basic session looping at a gentle
    /// rate forever, bounded recording.
    pub fn demo() -> Self {
        Self {
            rate: ReplayRate::PerSecond(2.0),
            loop_replay: true,
            record_frames: FrameRecording::Last(256),
            ..Self::default()
        }
    }

    pub(crate) fn heartbeat_deadline(&self) -> Duration {
        self.heartbeat_interval
            + self
                .heartbeat_grace
                .unwrap_or(self.heartbeat_interval / 2 + Duration::from_secs(1))
    }

    pub(crate) fn heartbeat_late_after(&self) -> Duration {
        self.heartbeat_interval
            + self
                .heartbeat_late_slack
                .unwrap_or(self.heartbeat_interval / 4 + Duration::from_millis(250))
    }
}
