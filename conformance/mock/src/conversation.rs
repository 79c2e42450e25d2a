//! What Discord answers to what, on one gateway connection: a sans-IO type fed with the client's
//! messages, controls and the time, answering with [`Action`]s for the I/O loop to carry out.
//!
//! Owns: HELLO (or op 7 in its place), the heartbeat rules (ACKs, late heartbeats, the timeout
//! close 4009), the IDENTIFY checks (token 4004, shard 4010, intents 4013/4014, session start
//! limit and buckets), READY, RESUME (replay, 4007, op 9), the per-connection close codes
//! (4001-4008), the 120/60 s inbound limit and the replay of the session's history. Does not own:
//! sockets, threads, compression or the recorder (see `connection`), sessions and identify limits
//! (see `session`), encodings (see `wire`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use tungstenite::Message;

use crate::config::{DEFINED_INTENTS, MockConfig, PRIVILEGED_INTENTS};
use crate::frames::{self, Templates};
use crate::recorder::{
    CloseKind, ConnectionId, HeartbeatRecord, IdentifyOutcome, IdentifyRecord, ReceivedFrame,
    ResumeOutcome, ResumeRecord, Violation, ViolationKind,
};
use crate::session::{
    ConnCommand, IdentifyRefusal, ResumeDecision, SessionTable, close_invalidates,
};
use crate::wire::{self, DecodeProblem, Encoding, ParamError};

/// Client opcodes Discord accepts besides heartbeat (1), identify (2) and resume (6).
const CLIENT_COMMANDS: &[u64] = &[3, 4, 8, 31, 43];

/// What the conversation reads but does not own: the mock's configuration, frame templates and
/// the session table shared by all connections (locked only while a decision needs it).
pub(crate) struct World<'a> {
    pub(crate) config: &'a MockConfig,
    pub(crate) templates: &'a Templates,
    pub(crate) resume_url: &'a str,
    pub(crate) sessions: &'a Mutex<SessionTable>,
}

impl World<'_> {
    fn sessions(&self) -> MutexGuard<'_, SessionTable> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A frame to send.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    pub(crate) json: Bytes,
    pub(crate) op: u8,
    pub(crate) event: Option<Arc<str>>,
    pub(crate) seq: Option<u64>,
}

/// What the I/O loop does next, in order.
#[derive(Debug)]
pub(crate) enum Action {
    /// Send this frame.
    Send(Outgoing),
    /// Send a close frame with this code and reason (nothing is sent after it).
    Close(u16, String),
    /// Record this protocol violation.
    Violation(Violation),
    /// Record a frame the client sent (only when frames are recorded).
    Received(ReceivedFrame),
    /// Record a heartbeat.
    Heartbeat(HeartbeatRecord),
    /// Record an IDENTIFY.
    Identify(IdentifyRecord),
    /// Record a RESUME.
    Resume(ResumeRecord),
    /// The connection now carries this session for this shard.
    SessionStarted { session_id: String, shard: [u32; 2] },
    /// Another connection resumed the session of this one: tell it.
    Supersede(ConnectionId),
}

/// One connection's gateway conversation.
pub(crate) struct Conversation {
    id: ConnectionId,
    path: String,
    encoding: Encoding,
    on_resume_url: bool,
    record_frames: bool,

    session: Option<String>,
    shard: Option<[u32; 2]>,
    sent_up_to: u64,
    replay_wake: Option<Instant>,

    last_heartbeat: Instant,
    heartbeat_timed_out: bool,
    heartbeat_requested: bool,
    acks: bool,
    inbound_window: VecDeque<Instant>,
    closing: bool,

    actions: Vec<Action>,
}

impl Conversation {
    /// A connection opened at `now` on `path` with `encoding`; `record_frames` says whether the
    /// client's frames are recorded.
    pub(crate) fn new(
        id: ConnectionId,
        path: String,
        encoding: Encoding,
        on_resume_url: bool,
        record_frames: bool,
        config: &MockConfig,
        now: Instant,
    ) -> Self {
        Self {
            id,
            path,
            encoding,
            on_resume_url,
            record_frames,
            session: None,
            shard: None,
            sent_up_to: 0,
            replay_wake: None,
            last_heartbeat: now,
            heartbeat_timed_out: false,
            heartbeat_requested: false,
            acks: config.ack_heartbeats,
            inbound_window: VecDeque::new(),
            closing: false,
            actions: Vec::new(),
        }
    }

    /// Takes the actions decided so far, oldest first.
    pub(crate) fn drain(&mut self) -> std::vec::Drain<'_, Action> {
        self.actions.drain(..)
    }

    /// Whether the connection carries a session (so replay frames may be due).
    pub(crate) fn has_session(&self) -> bool {
        self.session.is_some()
    }

    /// Whether a close was decided.
    #[cfg(test)]
    pub(crate) fn closing(&self) -> bool {
        self.closing
    }

    // ---------------------------------------------------------------- opening

    /// The first frame after the handshake: HELLO, or op 7 when `reconnect_instead`.
    pub(crate) fn open(&mut self, now: Instant, reconnect_instead: bool, world: &World<'_>) {
        self.last_heartbeat = now;
        if reconnect_instead {
            self.send(frames::reconnect(), 7, None, None);
        } else {
            let interval = world.config.heartbeat_interval.as_millis() as u64;
            self.send(world.templates.hello(interval), 10, None, None);
        }
    }

    /// The WebSocket URL's query was refused: 4012 for a bad version, 4002 otherwise.
    pub(crate) fn bad_query(&mut self, now: Instant, problem: &ParamError, world: &World<'_>) {
        let code = match problem {
            ParamError::Version(_) => 4012,
            _ => 4002,
        };
        self.violation(
            now,
            ViolationKind::BadQuery {
                detail: problem.to_string(),
            },
        );
        self.close(now, code, &problem.to_string(), world);
    }

    // ---------------------------------------------------------------- timers and controls

    /// How long the I/O loop may wait for input before calling [`Self::tick`] or
    /// [`Self::due`] again.
    pub(crate) fn idle_wait(&self, now: Instant, config: &MockConfig) -> Duration {
        let mut wait = config.poll_interval;
        let deadline = self.last_heartbeat + config.heartbeat_deadline();
        if !self.heartbeat_timed_out {
            wait = wait.min(deadline.saturating_duration_since(now));
        }
        if let Some(wake) = self.replay_wake {
            wait = wait.min(wake.saturating_duration_since(now));
        }
        wait.max(Duration::from_millis(1))
    }

    /// The heartbeat timeout: no heartbeat within interval + grace closes 4009 (if configured).
    pub(crate) fn tick(&mut self, now: Instant, world: &World<'_>) {
        if self.heartbeat_timed_out {
            return;
        }
        let allowed = world.config.heartbeat_deadline();
        if now.saturating_duration_since(self.last_heartbeat) > allowed {
            self.heartbeat_timed_out = true;
            self.violation(now, ViolationKind::HeartbeatTimeout);
            if world.config.close_on_heartbeat_timeout {
                self.close(now, 4009, "Session timed out", world);
            }
        }
    }

    /// Queues the dispatches of the session that are due. Returns whether any were.
    pub(crate) fn due(&mut self, now: Instant, world: &World<'_>) -> bool {
        let pull = world
            .sessions()
            .pull(world.config, self.id, self.sent_up_to, now);
        self.replay_wake = pull.wake_at;
        let queued = !pull.frames.is_empty();
        for entry in pull.frames {
            self.sent_up_to = entry.seq;
            self.send(entry.json, 0, Some(entry.event), Some(entry.seq));
        }
        queued
    }

    /// A run-time control (all but `DropTcp`, which only the I/O loop can carry out).
    pub(crate) fn command(&mut self, now: Instant, command: ConnCommand, world: &World<'_>) {
        match command {
            ConnCommand::SendReconnect => self.send(frames::reconnect(), 7, None, None),
            ConnCommand::SendInvalidSession(resumable) => {
                self.send(frames::invalid_session(resumable), 9, None, None);
                if !resumable && self.session.take().is_some() {
                    world.sessions().invalidate_live(self.id, now);
                    self.shard = None;
                }
            }
            ConnCommand::Close(code, reason) => self.close(now, code, &reason, world),
            ConnCommand::DropAcks(drop) => self.acks = !drop,
            ConnCommand::RequestHeartbeat => {
                self.heartbeat_requested = true;
                self.send(frames::heartbeat_request(), 1, None, None);
            }
            ConnCommand::DropTcp => {}
            ConnCommand::Superseded => {
                // The session now belongs to another connection: leave it alone.
                self.session = None;
                self.close(now, 4000, "session resumed on another connection", world);
            }
        }
    }

    // ---------------------------------------------------------------- input

    /// A message too large for the WebSocket layer to read: 4002.
    pub(crate) fn too_large(&mut self, now: Instant, bytes: usize, world: &World<'_>) {
        self.violation(now, ViolationKind::PayloadTooLarge { bytes });
        self.close(now, 4002, "Decode error", world);
    }

    /// A text or binary message from the client.
    pub(crate) fn receive(&mut self, now: Instant, message: &Message, world: &World<'_>) {
        if self.closing {
            return;
        }
        let config = world.config;
        // 120 frames per 60 s.
        self.inbound_window.push_back(now);
        let window = config.rate_limit_window;
        while self
            .inbound_window
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > window)
        {
            self.inbound_window.pop_front();
        }
        let frames_in_window = self.inbound_window.len() as u32;
        if frames_in_window > config.rate_limit_frames {
            self.record_received(now, message, None);
            self.violation(
                now,
                ViolationKind::RateLimited {
                    frames: frames_in_window,
                },
            );
            self.close(now, 4008, "Rate limited.", world);
            return;
        }
        let value = match wire::decode_inbound(self.encoding, message, config.max_client_payload) {
            Ok(value) => value,
            Err(problem) => {
                self.record_received(now, message, None);
                let kind = match &problem {
                    DecodeProblem::TooLarge(bytes) => {
                        ViolationKind::PayloadTooLarge { bytes: *bytes }
                    }
                    other => ViolationKind::Malformed {
                        detail: other.to_string(),
                    },
                };
                self.violation(now, kind);
                self.close(now, 4002, "Error while decoding payload.", world);
                return;
            }
        };
        self.record_received(now, message, Some(&value));
        let op = value.get("op").and_then(Value::as_u64);
        let d = value.get("d").unwrap_or(&Value::Null);
        match op {
            Some(1) => self.on_heartbeat(now, d, world),
            Some(2) => self.on_identify(now, d, world),
            Some(6) => self.on_resume(now, d, world),
            Some(op) if CLIENT_COMMANDS.contains(&op) => {
                if self.session.is_none() {
                    self.violation(now, ViolationKind::CommandBeforeIdentify { op });
                    self.close(now, 4003, "Not authenticated.", world);
                }
            }
            other => {
                self.violation(now, ViolationKind::UnknownOpcode { op: other });
                self.close(now, 4001, "Unknown opcode.", world);
            }
        }
    }

    fn record_received(&mut self, at: Instant, message: &Message, value: Option<&Value>) {
        if !self.record_frames {
            return;
        }
        let json = match (message, value) {
            (Message::Text(text), _) => Bytes::copy_from_slice(text.as_bytes()),
            (_, Some(value)) => Bytes::from(serde_json::to_vec(value).unwrap_or_default()),
            (Message::Binary(bytes), None) => bytes.clone(),
            _ => Bytes::new(),
        };
        let op = value.and_then(|v| v.get("op")).and_then(Value::as_u64);
        self.actions
            .push(Action::Received(ReceivedFrame { at, op, json }));
    }

    fn on_heartbeat(&mut self, now: Instant, d: &Value, world: &World<'_>) {
        let since_previous = now.saturating_duration_since(self.last_heartbeat);
        let allowed = world.config.heartbeat_late_after();
        let requested = std::mem::take(&mut self.heartbeat_requested);
        if since_previous > allowed && !self.heartbeat_timed_out {
            self.violation(
                now,
                ViolationKind::HeartbeatLate {
                    gap: since_previous,
                    allowed,
                },
            );
        }
        self.last_heartbeat = now;
        self.heartbeat_timed_out = false;
        self.actions.push(Action::Heartbeat(HeartbeatRecord {
            at: now,
            seq: d.as_u64(),
            since_previous,
            requested,
        }));
        if self.acks {
            self.send(frames::heartbeat_ack(), 11, None, None);
        }
    }

    fn token_ok(config: &MockConfig, token: Option<&str>) -> bool {
        match (&config.token, token) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(expected), Some(given)) => expected == given,
        }
    }

    /// The `d` object of an IDENTIFY or RESUME (`op_name`), or `None` after closing the
    /// connection: 4005 if it is already authenticated, 4002 if `d` is not an object.
    fn authentication_object<'d>(
        &mut self,
        now: Instant,
        d: &'d Value,
        op_name: &str,
        world: &World<'_>,
    ) -> Option<&'d serde_json::Map<String, Value>> {
        if self.session.is_some() {
            self.violation(now, ViolationKind::AlreadyAuthenticated);
            self.close(now, 4005, "Already authenticated.", world);
            return None;
        }
        let Some(object) = d.as_object() else {
            self.violation(
                now,
                ViolationKind::Malformed {
                    detail: format!("{op_name} d is not an object"),
                },
            );
            self.close(now, 4002, "Error while decoding payload.", world);
            return None;
        };
        Some(object)
    }

    fn on_identify(&mut self, now: Instant, d: &Value, world: &World<'_>) {
        let Some(object) = self.authentication_object(now, d, "identify", world) else {
            return;
        };
        let token_ok = Self::token_ok(world.config, object.get("token").and_then(Value::as_str));
        let intents = object.get("intents").and_then(Value::as_u64);
        let shard_value = object.get("shard");
        let shard = parse_shard(shard_value, world.config.required_shard_count);
        let mut redacted = object.clone();
        if redacted.contains_key("token") {
            redacted.insert("token".into(), Value::String("<redacted>".into()));
        }
        let outcome = self.decide_identify(now, token_ok, shard, shard_value, intents, world);
        self.actions.push(Action::Identify(IdentifyRecord {
            connection: self.id,
            at: now,
            token_ok,
            shard: shard.ok(),
            intents,
            d: Bytes::from(serde_json::to_vec(&redacted).unwrap_or_default()),
            outcome,
        }));
    }

    /// Closes with `code` after recording `kind`; the outcome of an IDENTIFY refused that way.
    fn refuse(
        &mut self,
        now: Instant,
        kind: ViolationKind,
        code: u16,
        reason: &str,
        world: &World<'_>,
    ) -> IdentifyOutcome {
        self.violation(now, kind);
        self.close(now, code, reason, world);
        IdentifyOutcome::Closed(code)
    }

    fn decide_identify(
        &mut self,
        now: Instant,
        token_ok: bool,
        shard: Result<[u32; 2], ()>,
        shard_value: Option<&Value>,
        intents: Option<u64>,
        world: &World<'_>,
    ) -> IdentifyOutcome {
        let config = world.config;
        if !token_ok {
            let kind = ViolationKind::WrongToken;
            return self.refuse(now, kind, 4004, "Authentication failed.", world);
        }
        let Ok(shard) = shard else {
            let sent = shard_value
                .map(Value::to_string)
                .unwrap_or_else(|| "null".into());
            let kind = ViolationKind::BadShard { sent };
            return self.refuse(now, kind, 4010, "Invalid shard.", world);
        };
        let invalid = "Invalid intent(s).";
        match intents {
            None => {
                let kind = ViolationKind::InvalidIntents { sent: None };
                return self.refuse(now, kind, 4013, invalid, world);
            }
            Some(bits) if bits & !DEFINED_INTENTS != 0 => {
                let kind = ViolationKind::InvalidIntents { sent: Some(bits) };
                return self.refuse(now, kind, 4013, invalid, world);
            }
            Some(bits) if config.expected_intents.is_some_and(|e| e != bits) => {
                let expected = config.expected_intents.unwrap_or_default();
                let kind = ViolationKind::WrongIntents {
                    sent: Some(bits),
                    expected,
                };
                return self.refuse(now, kind, 4013, invalid, world);
            }
            Some(bits) if bits & PRIVILEGED_INTENTS & !config.allowed_privileged_intents != 0 => {
                let kind = ViolationKind::InvalidIntents { sent: Some(bits) };
                return self.refuse(now, kind, 4014, "Disallowed intent(s).", world);
            }
            Some(_) => {}
        }
        let mut sessions = world.sessions();
        match sessions.admit_identify(config, shard[0], now) {
            Err(refusal) => {
                drop(sessions);
                self.violation(
                    now,
                    match refusal {
                        IdentifyRefusal::Exhausted => ViolationKind::SessionStartLimitExhausted,
                        IdentifyRefusal::Bucket {
                            bucket,
                            since_previous,
                        } => ViolationKind::IdentifyBucket {
                            bucket,
                            since_previous,
                        },
                    },
                );
                self.send(frames::invalid_session(false), 9, None, None);
                IdentifyOutcome::InvalidSession
            }
            Ok(()) => {
                let session_id = sessions.create_session(
                    config,
                    world.templates,
                    world.resume_url,
                    self.id,
                    shard,
                    now,
                );
                drop(sessions);
                self.start_session(session_id.clone(), shard, 0);
                IdentifyOutcome::Ready { session_id }
            }
        }
    }

    fn start_session(&mut self, session_id: String, shard: [u32; 2], sent_up_to: u64) {
        self.session = Some(session_id.clone());
        self.shard = Some(shard);
        self.sent_up_to = sent_up_to;
        self.replay_wake = None;
        self.actions
            .push(Action::SessionStarted { session_id, shard });
    }

    fn on_resume(&mut self, now: Instant, d: &Value, world: &World<'_>) {
        let Some(object) = self.authentication_object(now, d, "resume", world) else {
            return;
        };
        let token_ok = Self::token_ok(world.config, object.get("token").and_then(Value::as_str));
        let session_id = object
            .get("session_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let seq = object.get("seq").and_then(Value::as_u64);
        if !self.on_resume_url {
            let path = self.path.clone();
            self.violation(now, ViolationKind::ResumeWrongUrl { path });
        }
        let outcome = if !token_ok {
            self.violation(now, ViolationKind::WrongToken);
            self.close(now, 4004, "Authentication failed.", world);
            ResumeOutcome::Closed(4004)
        } else {
            let decision = world
                .sessions()
                .resume(world.config, self.id, &session_id, seq, now);
            self.decide_resume(now, decision, &session_id, seq, world)
        };
        self.actions.push(Action::Resume(ResumeRecord {
            connection: self.id,
            at: now,
            token_ok,
            session_id,
            seq,
            on_resume_url: self.on_resume_url,
            outcome,
        }));
    }

    fn decide_resume(
        &mut self,
        now: Instant,
        decision: ResumeDecision,
        session_id: &str,
        seq: Option<u64>,
        world: &World<'_>,
    ) -> ResumeOutcome {
        let unknown = match decision {
            ResumeDecision::Resumed {
                shard,
                replayed,
                previous,
            } => {
                if let Some(previous) = previous {
                    self.actions.push(Action::Supersede(previous));
                }
                self.start_session(session_id.to_owned(), shard, seq.unwrap_or_default());
                return ResumeOutcome::Resumed { replayed };
            }
            ResumeDecision::BadSeq { last } => {
                self.violation(now, ViolationKind::ResumeBadSeq { seq, last });
                self.close(now, 4007, "Invalid seq.", world);
                return ResumeOutcome::Closed(4007);
            }
            ResumeDecision::Unknown => Some(ViolationKind::ResumeUnknownSession {
                session_id: session_id.to_owned(),
            }),
            ResumeDecision::Invalidated => Some(ViolationKind::ResumeInvalidatedSession {
                session_id: session_id.to_owned(),
            }),
            ResumeDecision::Expired | ResumeDecision::HistoryTooShort => None,
        };
        if let Some(kind) = unknown {
            self.violation(now, kind);
        }
        self.send(frames::invalid_session(false), 9, None, None);
        ResumeOutcome::InvalidSession
    }

    // ---------------------------------------------------------------- closing

    /// Decides a close: nothing is sent after it; a fatal code invalidates the session.
    fn close(&mut self, now: Instant, code: u16, reason: &str, world: &World<'_>) {
        if self.closing {
            return;
        }
        self.closing = true;
        if self.session.is_some() {
            world
                .sessions()
                .detach(self.id, close_invalidates(code), now);
        }
        self.actions.push(Action::Close(code, reason.to_owned()));
    }

    /// The connection is gone (closed as `kind`): release the session, invalidated by a
    /// client 1000/1001 close or a fatal server close.
    pub(crate) fn end(&mut self, now: Instant, kind: &CloseKind, world: &World<'_>) {
        let invalidate = match kind {
            CloseKind::ClientClose(Some(code)) => close_invalidates(*code),
            CloseKind::ServerClose(code) => close_invalidates(*code),
            _ => false,
        };
        world.sessions().detach(self.id, invalidate, now);
    }

    fn send(&mut self, json: Bytes, op: u8, event: Option<Arc<str>>, seq: Option<u64>) {
        if !self.closing {
            self.actions.push(Action::Send(Outgoing {
                json,
                op,
                event,
                seq,
            }));
        }
    }

    fn violation(&mut self, at: Instant, kind: ViolationKind) {
        self.actions.push(Action::Violation(Violation {
            connection: self.id,
            shard: self.shard.map(|s| s[0]),
            at,
            kind,
        }));
    }
}

fn parse_shard(value: Option<&Value>, required_count: Option<u32>) -> Result<[u32; 2], ()> {
    let Some(value) = value else {
        return Ok([0, 1]);
    };
    let pair = value.as_array().filter(|a| a.len() == 2).ok_or(())?;
    let id = pair[0]
        .as_u64()
        .and_then(|v| u32::try_from(v).ok())
        .ok_or(())?;
    let count = pair[1]
        .as_u64()
        .and_then(|v| u32::try_from(v).ok())
        .ok_or(())?;
    if count == 0 || id >= count || required_count.is_some_and(|r| r != count) {
        return Err(());
    }
    Ok([id, count])
}

#[cfg(test)]
mod tests;
