//! What clients did, as seen by the mock: connections with their frames, identifies, resumes,
//! heartbeats and closes, HTTP requests, and protocol violations. Tests query it or wait on it.
//!
//! Owns: the record types and the [`Recorder`] handle (thread-safe, clonable, waitable with a
//! timeout). Does not own: judging behaviour (connections report violations here) or any
//! protocol state.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::config::FrameRecording;
use crate::wire::GatewayParams;

/// Identifies one WebSocket connection to the mock (1, 2, 3, ... in accept order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnectionId(pub u64);

/// One frame the client sent.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedFrame {
    /// When it was read.
    pub at: Instant,
    /// `op`, if the payload had an integer one.
    pub op: Option<u64>,
    /// The payload as JSON bytes (text frames as received; ETF decoded to JSON).
    pub json: Bytes,
}

/// One frame the mock sent.
#[derive(Debug, Clone, PartialEq)]
pub struct SentFrame {
    /// When it was queued on the socket.
    pub at: Instant,
    /// The opcode.
    pub op: u8,
    /// `t` of dispatches.
    pub event: Option<String>,
    /// `s` of dispatches.
    pub seq: Option<u64>,
    /// The exact uncompressed JSON text of the frame (for ETF connections, the JSON it was
    /// encoded from).
    pub json: Bytes,
}

/// Who ended a connection, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseKind {
    /// The client sent a close frame (code `None` if the frame had no code).
    ClientClose(Option<u16>),
    /// The mock sent a close frame with this code.
    ServerClose(u16),
    /// The client's TCP connection ended without a close frame.
    ClientDropped,
    /// The mock dropped the TCP connection without a close frame (a control).
    ServerDropped,
    /// The mock shut down.
    Shutdown,
}

/// How a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseRecord {
    /// When.
    pub at: Instant,
    /// Who and how.
    pub kind: CloseKind,
    /// The reason text of the close frame, if any.
    pub reason: String,
}

/// What the mock answered to an IDENTIFY.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentifyOutcome {
    /// READY sent; a new session.
    Ready {
        /// The new session's id.
        session_id: String,
    },
    /// Op 9 `false` (identify concurrency, session start limit).
    InvalidSession,
    /// Closed with this code (4004, 4010, 4013, 4014, ...).
    Closed(u16),
}

/// One IDENTIFY.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentifyRecord {
    /// The connection it came on.
    pub connection: ConnectionId,
    /// When.
    pub at: Instant,
    /// Whether the token matched (always true when the mock accepts any token).
    pub token_ok: bool,
    /// `[shard_id, num_shards]` as sent, if present and well-formed.
    pub shard: Option<[u32; 2]>,
    /// `intents` as sent.
    pub intents: Option<u64>,
    /// The full `d` as JSON, with the token replaced by `"<redacted>"`.
    pub d: Bytes,
    /// The mock's answer.
    pub outcome: IdentifyOutcome,
}

/// What the mock answered to a RESUME.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResumeOutcome {
    /// Missed dispatches replayed, then RESUMED.
    Resumed {
        /// How many dispatches were replayed before RESUMED.
        replayed: usize,
    },
    /// Op 9 `false` (unknown, expired or invalidated session, or history too short).
    InvalidSession,
    /// Closed with this code (4004, 4007).
    Closed(u16),
}

/// One RESUME.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeRecord {
    /// The connection it came on.
    pub connection: ConnectionId,
    /// When.
    pub at: Instant,
    /// Whether the token matched.
    pub token_ok: bool,
    /// `session_id` as sent.
    pub session_id: String,
    /// `seq` as sent (`None` if null or missing).
    pub seq: Option<u64>,
    /// Whether it came on the connection URL that READY's `resume_gateway_url` names.
    pub on_resume_url: bool,
    /// The mock's answer.
    pub outcome: ResumeOutcome,
}

/// One heartbeat (op 1) from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatRecord {
    /// When.
    pub at: Instant,
    /// Its `d`: the client's last sequence number, or `None` for null.
    pub seq: Option<u64>,
    /// Time since the previous heartbeat on this connection, or since HELLO for the first one.
    pub since_previous: Duration,
    /// Whether the mock had asked for it (op 1 sent and not yet answered).
    pub requested: bool,
}

/// One HTTP request to the REST part (`/gateway`, `/gateway/bot`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRecord {
    /// When.
    pub at: Instant,
    /// The method (`GET`, `POST`).
    pub method: String,
    /// Request path with query.
    pub path: String,
    /// The request body (empty for a `GET`).
    pub body: String,
    /// Response status.
    pub status: u16,
}

/// A rule of the protocol a client broke.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ViolationKind {
    /// IDENTIFY or RESUME with a token other than the configured one.
    WrongToken,
    /// IDENTIFY with a missing/malformed shard, `id >= count`, or the wrong count.
    BadShard {
        /// What was sent (raw JSON of the `shard` field).
        sent: String,
    },
    /// IDENTIFY without intents, with undefined bits, or with disallowed privileged ones.
    InvalidIntents {
        /// What was sent.
        sent: Option<u64>,
    },
    /// IDENTIFY with intents other than the configured expected ones.
    WrongIntents {
        /// What was sent.
        sent: Option<u64>,
        /// What was expected.
        expected: u64,
    },
    /// A second IDENTIFY in the same `shard % max_concurrency` bucket within the window.
    IdentifyBucket {
        /// The bucket.
        bucket: u32,
        /// Time since that bucket's previous identify.
        since_previous: Duration,
    },
    /// IDENTIFY when `session_start_limit.remaining` was 0.
    SessionStartLimitExhausted,
    /// IDENTIFY on a connection that already has a session (Discord closes 4005).
    AlreadyAuthenticated,
    /// A command other than heartbeat/identify/resume before identifying (Discord closes 4003).
    CommandBeforeIdentify {
        /// Its opcode.
        op: u64,
    },
    /// A heartbeat arrived later than the interval allows.
    HeartbeatLate {
        /// Time since the previous heartbeat (or HELLO).
        gap: Duration,
        /// What was allowed.
        allowed: Duration,
    },
    /// No heartbeat at all within the interval plus grace.
    HeartbeatTimeout,
    /// More inbound frames than allowed per window (Discord closes 4008).
    RateLimited {
        /// Frames in the window, including this one.
        frames: u32,
    },
    /// RESUME for a session id the mock never issued.
    ResumeUnknownSession {
        /// The id sent.
        session_id: String,
    },
    /// RESUME for a session the client itself had invalidated (closed with 1000/1001) or the
    /// mock had invalidated (op 9 false, fatal close).
    ResumeInvalidatedSession {
        /// The id sent.
        session_id: String,
    },
    /// RESUME with a `seq` larger than the last one sent, or missing (Discord closes 4007).
    ResumeBadSeq {
        /// What was sent.
        seq: Option<u64>,
        /// The session's last sequence.
        last: u64,
    },
    /// RESUME on a URL other than READY's `resume_gateway_url`.
    ResumeWrongUrl {
        /// The path the client connected to.
        path: String,
    },
    /// A payload larger than allowed (Discord closes 4002).
    PayloadTooLarge {
        /// Its size.
        bytes: usize,
    },
    /// A payload that does not decode, or of the wrong frame type (Discord closes 4002).
    Malformed {
        /// Why.
        detail: String,
    },
    /// An opcode a client may not send (Discord closes 4001).
    UnknownOpcode {
        /// Its value (`None` if missing or not an integer).
        op: Option<u64>,
    },
    /// A connection URL with a bad `v`, `encoding` or `compress`.
    BadQuery {
        /// Why.
        detail: String,
    },
}

/// A protocol violation found on a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Where.
    pub connection: ConnectionId,
    /// The shard of the connection, if known by then.
    pub shard: Option<u32>,
    /// When.
    pub at: Instant,
    /// What.
    pub kind: ViolationKind,
}

/// Everything recorded about one WebSocket connection.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectionRecord {
    /// Its id.
    pub id: ConnectionId,
    /// When the WebSocket handshake completed.
    pub opened_at: Instant,
    /// Path of the request (`/` or the resume path).
    pub path: String,
    /// Query string (without `?`).
    pub query: String,
    /// The parsed query, if valid.
    pub params: Option<GatewayParams>,
    /// Whether the path is the one READY's `resume_gateway_url` names.
    pub on_resume_url: bool,
    /// `[shard_id, num_shards]` once identified or resumed.
    pub shard: Option<[u32; 2]>,
    /// The session once identified or resumed.
    pub session_id: Option<String>,
    /// Frames received, in order (subject to [`FrameRecording`]).
    pub received: Vec<ReceivedFrame>,
    /// Frames sent, in order (subject to [`FrameRecording`]).
    pub sent: Vec<SentFrame>,
    /// Frames dropped from `received`/`sent` by [`FrameRecording::Last`].
    pub frames_dropped: u64,
    /// Heartbeats from the client.
    pub heartbeats: Vec<HeartbeatRecord>,
    /// How it ended (`None` while open).
    pub close: Option<CloseRecord>,
}

impl ConnectionRecord {
    /// True while the connection is open.
    pub fn is_open(&self) -> bool {
        self.close.is_none()
    }

    /// The dispatches (op 0) sent on this connection, exact JSON bytes, in send order.
    pub fn sent_dispatches(&self) -> Vec<Bytes> {
        self.sent
            .iter()
            .filter(|f| f.op == 0)
            .map(|f| f.json.clone())
            .collect()
    }

    /// Intervals between consecutive heartbeats.
    pub fn heartbeat_intervals(&self) -> Vec<Duration> {
        self.heartbeats
            .iter()
            .skip(1)
            .map(|h| h.since_previous)
            .collect()
    }
}

/// All records. Read it through [`Recorder::read`] / [`Recorder::wait_for`].
#[derive(Debug, Default, Clone)]
#[non_exhaustive]
pub struct Recording {
    /// Connections in accept order (`connections[i].id == ConnectionId(i + 1)`).
    pub connections: Vec<ConnectionRecord>,
    /// Identifies of all connections, in order.
    pub identifies: Vec<IdentifyRecord>,
    /// Resumes of all connections, in order.
    pub resumes: Vec<ResumeRecord>,
    /// Violations of all connections, in order.
    pub violations: Vec<Violation>,
    /// REST requests.
    pub http: Vec<HttpRecord>,
}

impl Recording {
    /// A connection by id.
    pub fn connection(&self, id: ConnectionId) -> Option<&ConnectionRecord> {
        let index = usize::try_from(id.0).ok()?.checked_sub(1)?;
        self.connections.get(index)
    }

    /// Connections that were (or are) identified or resumed as `shard`.
    pub fn shard_connections(&self, shard: u32) -> impl Iterator<Item = &ConnectionRecord> {
        self.connections
            .iter()
            .filter(move |c| c.shard.is_some_and(|s| s[0] == shard))
    }

    /// The open connection of `shard`, if any (the latest one).
    pub fn live_connection(&self, shard: u32) -> Option<&ConnectionRecord> {
        self.shard_connections(shard).filter(|c| c.is_open()).last()
    }

    /// Every dispatch sent to `shard`, over all its connections, exact JSON bytes in send order
    /// (dispatches replayed by a RESUME appear again).
    pub fn sent_dispatches(&self, shard: u32) -> Vec<Bytes> {
        self.shard_connections(shard)
            .flat_map(|c| c.sent_dispatches())
            .collect()
    }

    /// Closes of all connections, in connection order.
    pub fn closes(&self) -> Vec<(ConnectionId, CloseRecord)> {
        self.connections
            .iter()
            .filter_map(|c| c.close.clone().map(|r| (c.id, r)))
            .collect()
    }
}

pub(crate) struct RecorderInner {
    recording: Mutex<Recording>,
    changed: Condvar,
    frames: FrameRecording,
}

/// Read access to what the mock recorded. Clone freely; all clones see the same records.
#[derive(Clone)]
pub struct Recorder {
    inner: Arc<RecorderInner>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").finish_non_exhaustive()
    }
}

impl Recorder {
    pub(crate) fn new(frames: FrameRecording) -> Self {
        Self {
            inner: Arc::new(RecorderInner {
                recording: Mutex::new(Recording::default()),
                changed: Condvar::new(),
                frames,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Recording> {
        self.inner
            .recording
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the current records. `f` runs under the recorder's lock: do not call
    /// [`crate::Control`] methods from it (they wait for connection threads, which need the lock).
    pub fn read<T>(&self, f: impl FnOnce(&Recording) -> T) -> T {
        f(&self.lock())
    }

    /// A copy of all records.
    pub fn snapshot(&self) -> Recording {
        self.lock().clone()
    }

    /// Waits until `f` returns `Some`, re-checking after every change; `None` on timeout.
    /// As with [`Self::read`], `f` runs under the lock and must not use controls.
    pub fn wait_for<T>(
        &self,
        timeout: Duration,
        mut f: impl FnMut(&Recording) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let mut guard = self.lock();
        loop {
            if let Some(value) = f(&guard) {
                return Some(value);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            guard = self
                .inner
                .changed
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits until `predicate` holds; false on timeout.
    pub fn wait_until(
        &self,
        timeout: Duration,
        mut predicate: impl FnMut(&Recording) -> bool,
    ) -> bool {
        self.wait_for(timeout, |r| predicate(r).then_some(()))
            .is_some()
    }

    /// Identifies so far.
    pub fn identifies(&self) -> Vec<IdentifyRecord> {
        self.read(|r| r.identifies.clone())
    }

    /// Resumes so far.
    pub fn resumes(&self) -> Vec<ResumeRecord> {
        self.read(|r| r.resumes.clone())
    }

    /// Violations so far.
    pub fn violations(&self) -> Vec<Violation> {
        self.read(|r| r.violations.clone())
    }

    /// See [`Recording::sent_dispatches`].
    pub fn sent_dispatches(&self, shard: u32) -> Vec<Bytes> {
        self.read(|r| r.sent_dispatches(shard))
    }

    /// Waits for the `n`-th (1-based) identify.
    pub fn wait_identify(&self, n: usize, timeout: Duration) -> Option<IdentifyRecord> {
        self.wait_for(timeout, |r| r.identifies.get(n.checked_sub(1)?).cloned())
    }

    /// Waits for the `n`-th (1-based) resume.
    pub fn wait_resume(&self, n: usize, timeout: Duration) -> Option<ResumeRecord> {
        self.wait_for(timeout, |r| r.resumes.get(n.checked_sub(1)?).cloned())
    }

    /// Waits until `shard` has an open, identified (or resumed) connection; returns its id.
    pub fn wait_live(&self, shard: u32, timeout: Duration) -> Option<ConnectionId> {
        self.wait_for(timeout, |r| r.live_connection(shard).map(|c| c.id))
    }

    /// Waits until at least `count` dispatches were sent to `shard`; returns them all.
    pub fn wait_dispatches(
        &self,
        shard: u32,
        count: usize,
        timeout: Duration,
    ) -> Option<Vec<Bytes>> {
        self.wait_for(timeout, |r| {
            let sent = r.sent_dispatches(shard);
            (sent.len() >= count).then_some(sent)
        })
    }

    /// Waits until connection `id` is closed; returns how.
    pub fn wait_closed(&self, id: ConnectionId, timeout: Duration) -> Option<CloseRecord> {
        self.wait_for(timeout, |r| r.connection(id)?.close.clone())
    }

    /// Waits for the first violation matching `predicate`.
    pub fn wait_violation(
        &self,
        timeout: Duration,
        mut predicate: impl FnMut(&ViolationKind) -> bool,
    ) -> Option<Violation> {
        self.wait_for(timeout, |r| {
            r.violations.iter().find(|v| predicate(&v.kind)).cloned()
        })
    }

    // ---- writers (crate-internal) ----

    pub(crate) fn update<T>(&self, f: impl FnOnce(&mut Recording) -> T) -> T {
        let value = f(&mut self.lock());
        self.inner.changed.notify_all();
        value
    }

    /// Registers a new connection; its id is assigned here, under the lock, so that
    /// `connections[i].id == ConnectionId(i + 1)` holds however threads race.
    pub(crate) fn open_connection(
        &self,
        make: impl FnOnce(ConnectionId) -> ConnectionRecord,
    ) -> ConnectionId {
        self.update(|r| {
            let id = ConnectionId(r.connections.len() as u64 + 1);
            r.connections.push(make(id));
            id
        })
    }

    pub(crate) fn with_connection(&self, id: ConnectionId, f: impl FnOnce(&mut ConnectionRecord)) {
        self.update(|r| {
            if let Some(index) = usize::try_from(id.0).ok().and_then(|i| i.checked_sub(1))
                && let Some(c) = r.connections.get_mut(index)
            {
                f(c);
            }
        });
    }

    pub(crate) fn frames_mode(&self) -> FrameRecording {
        self.inner.frames
    }

    pub(crate) fn push_frames(
        &self,
        id: ConnectionId,
        received: Vec<ReceivedFrame>,
        sent: Vec<SentFrame>,
    ) {
        if received.is_empty() && sent.is_empty() {
            return;
        }
        let mode = self.inner.frames;
        self.with_connection(id, |c| {
            c.received.extend(received);
            c.sent.extend(sent);
            if let FrameRecording::Last(n) = mode {
                if c.received.len() > n {
                    let excess = c.received.len() - n;
                    c.received.drain(..excess);
                    c.frames_dropped += excess as u64;
                }
                if c.sent.len() > n {
                    let excess = c.sent.len() - n;
                    c.sent.drain(..excess);
                    c.frames_dropped += excess as u64;
                }
            }
        });
    }

    pub(crate) fn violation(&self, violation: Violation) {
        tracing::debug!(connection = violation.connection.0, kind = ?violation.kind, "protocol violation");
        self.update(|r| r.violations.push(violation));
    }
}
