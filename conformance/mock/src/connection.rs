//! One client connection: the HTTP request, and for a WebSocket the whole gateway conversation
//! (HELLO, heartbeats, IDENTIFY/RESUME, replay, controls, closes), on its own thread.
//!
//! Owns: the per-connection protocol rules Discord enforces (close codes 4001-4014, the
//! 120/60 s inbound limit, heartbeat timeout) and the I/O loop over a blocking `TcpStream` with
//! short timeouts (so the thread also reacts to controls and timers). Does not own: sessions and
//! identify limits (see `session`), encodings (see `wire`), records (see `recorder`).

use std::collections::VecDeque;
use std::io;
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::{Error as WsError, Message, WebSocket};

use crate::config::FrameRecording;
use crate::frames;
use crate::http;
use crate::recorder::{
    CloseKind, CloseRecord, ConnectionId, ConnectionRecord, HeartbeatRecord, IdentifyOutcome,
    IdentifyRecord, ReceivedFrame, ResumeOutcome, ResumeRecord, SentFrame, Violation,
    ViolationKind,
};
use crate::server::{RESUME_PATH, Shared};
use crate::session::{ConnCommand, Envelope, IdentifyRefusal, ResumeDecision, close_invalidates};
use crate::wire::{self, DecodeProblem, GatewayParams, Outbound};

/// Intent bits Discord defines for bots (PROTOCOL.md section 12).
pub const DEFINED_INTENTS: u64 = 0x331_FFFF;
/// GUILD_MEMBERS | GUILD_PRESENCES | MESSAGE_CONTENT.
pub const PRIVILEGED_INTENTS: u64 = (1 << 1) | (1 << 8) | (1 << 15);

/// Client opcodes Discord accepts besides heartbeat (1), identify (2) and resume (6).
const CLIENT_COMMANDS: &[u64] = &[3, 4, 8, 31, 43];

/// How long the mock waits for the client's answer to its close frame.
const CLOSE_LINGER: Duration = Duration::from_millis(500);
/// In a busy replay, how often the mock still looks for input.
const BUSY_INPUT_CHECK: Duration = Duration::from_millis(1);

/// Handles one accepted TCP connection until it ends.
pub(crate) fn serve(shared: Arc<Shared>, mut stream: TcpStream) {
    if shared.shutdown.load(Ordering::SeqCst) {
        return;
    }
    let _ = stream.set_nodelay(true);
    let request = match http::read_request(&mut stream, Duration::from_secs(5)) {
        Ok(request) => request,
        Err(e) => {
            tracing::debug!(error = %e, "mock gateway: bad or missing HTTP request");
            return;
        }
    };
    if !request.is_websocket_upgrade() {
        if let Err(e) = http::serve_rest(&shared, &mut stream, &request) {
            tracing::debug!(error = %e, "mock gateway: REST response failed");
        }
        return;
    }
    if let Err(e) = http::accept_upgrade(&mut stream, &request) {
        tracing::debug!(error = %e, "mock gateway: upgrade failed");
        return;
    }
    let params = GatewayParams::parse(&request.query);
    let on_resume_url = request.path.starts_with(RESUME_PATH);
    let now = Instant::now();
    // The control channel is registered while the record is created, so a test that sees the
    // connection in the recorder can always reach it with a control.
    let (sender, receiver) = mpsc::channel();
    let id = shared.recorder.open_connection(|id| {
        shared.state().connections.insert(id, sender);
        ConnectionRecord {
            id,
            opened_at: now,
            path: request.path.clone(),
            query: request.query.clone(),
            params: params.clone().ok(),
            on_resume_url,
            shard: None,
            session_id: None,
            received: Vec::new(),
            sent: Vec::new(),
            frames_dropped: 0,
            heartbeats: Vec::new(),
            close: None,
        }
    });

    let max_message = shared
        .config
        .max_client_payload
        .saturating_mul(4)
        .max(1 << 20);
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    let ws =
        WebSocket::from_partially_read(stream, request.leftover, Role::Server, Some(ws_config));
    let mut conn = Connection::new(
        shared.clone(),
        id,
        ws,
        params.clone().unwrap_or_default(),
        on_resume_url,
        receiver,
        now,
    );
    match params {
        Ok(_) => conn.run(),
        Err(problem) => {
            let code = match problem {
                wire::ParamError::Version(_) => 4012,
                _ => 4002,
            };
            conn.violation(ViolationKind::BadQuery {
                detail: problem.to_string(),
            });
            conn.close(code, &problem.to_string());
            conn.finish_close();
        }
    }
    conn.end();
}

#[derive(PartialEq, Eq, Debug)]
enum Flow {
    Continue,
    Stop,
}

struct Connection {
    shared: Arc<Shared>,
    id: ConnectionId,
    ws: WebSocket<TcpStream>,
    params: GatewayParams,
    outbound: Outbound,
    on_resume_url: bool,
    commands: Receiver<Envelope>,
    applied: Vec<mpsc::Sender<()>>,

    session: Option<String>,
    shard: Option<[u32; 2]>,
    sent_up_to: u64,
    replay_wake: Option<Instant>,

    last_heartbeat: Instant,
    heartbeat_timed_out: bool,
    heartbeat_requested: bool,
    acks: bool,
    inbound_window: VecDeque<Instant>,

    write_pending: bool,
    closing_since: Option<Instant>,
    close_record: Option<CloseRecord>,
    nonblocking: bool,
    last_input_check: Instant,

    pending_received: Vec<ReceivedFrame>,
    pending_sent: Vec<SentFrame>,
    outbox: Vec<Outgoing>,
    pending_close: Option<(u16, String)>,
    scratch: Vec<Message>,
}

/// A frame queued for sending.
struct Outgoing {
    json: Bytes,
    op: u8,
    event: Option<Arc<str>>,
    seq: Option<u64>,
}

enum ReadOutcome {
    Message(Message),
    Nothing,
    Closed,
}

impl Connection {
    fn new(
        shared: Arc<Shared>,
        id: ConnectionId,
        ws: WebSocket<TcpStream>,
        params: GatewayParams,
        on_resume_url: bool,
        commands: Receiver<Envelope>,
        now: Instant,
    ) -> Self {
        let outbound = Outbound::new(
            &params,
            shared.config.zlib_level,
            shared.config.zlib_max_message,
        );
        let acks = shared.config.ack_heartbeats;
        let _ = ws.get_ref().set_write_timeout(Some(
            shared.config.poll_interval.max(Duration::from_millis(1)),
        ));
        Self {
            shared,
            id,
            ws,
            params,
            outbound,
            on_resume_url,
            commands,
            applied: Vec::new(),
            session: None,
            shard: None,
            sent_up_to: 0,
            replay_wake: None,
            last_heartbeat: now,
            heartbeat_timed_out: false,
            heartbeat_requested: false,
            acks,
            inbound_window: VecDeque::new(),
            write_pending: false,
            closing_since: None,
            close_record: None,
            nonblocking: false,
            last_input_check: now,
            pending_received: Vec::new(),
            pending_sent: Vec::new(),
            outbox: Vec::new(),
            pending_close: None,
            scratch: Vec::new(),
        }
    }

    fn config(&self) -> &crate::MockConfig {
        &self.shared.config
    }

    fn violation(&self, kind: ViolationKind) {
        self.shared.recorder.violation(Violation {
            connection: self.id,
            shard: self.shard.map(|s| s[0]),
            at: Instant::now(),
            kind,
        });
    }

    // ---------------------------------------------------------------- main loop

    fn run(&mut self) {
        let hello = self
            .shared
            .templates
            .hello(self.config().heartbeat_interval.as_millis() as u64);
        self.last_heartbeat = Instant::now();
        let reconnect_instead = self
            .shared
            .reconnects_before_hello
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if reconnect_instead {
            self.queue(frames::reconnect(), 7, None, None);
        } else {
            self.queue(hello, 10, None, None);
        }
        if self.write_out().is_err() {
            self.lost();
            return;
        }
        loop {
            if self.shared.shutdown.load(Ordering::SeqCst) {
                self.flush_records();
                self.close_record = Some(CloseRecord {
                    at: Instant::now(),
                    kind: CloseKind::Shutdown,
                    reason: String::new(),
                });
                let _ = self.ws.close(Some(CloseFrame {
                    code: CloseCode::Away,
                    reason: "mock shutting down".into(),
                }));
                let _ = self.ws.flush();
                return;
            }
            if self.closing_since.is_some() {
                self.finish_close();
                return;
            }
            if self.apply_commands() == Flow::Stop {
                return;
            }
            let now = Instant::now();
            self.check_heartbeat(now);
            if self.write_out().is_err() {
                self.lost();
                return;
            }
            if self.closing_since.is_some() {
                continue;
            }
            // Output.
            if self.write_pending {
                self.set_nonblocking(false);
                match self.ws.flush() {
                    Ok(()) => self.write_pending = false,
                    Err(WsError::Io(e)) if is_timeout(&e) => {}
                    Err(_) => {
                        self.lost();
                        return;
                    }
                }
            }
            let mut sent_any = false;
            if !self.write_pending && self.session.is_some() {
                sent_any = self.queue_due(now);
                if self.write_out().is_err() {
                    self.lost();
                    return;
                }
            }
            // Input: never block while there is more to send.
            let busy = sent_any || self.write_pending;
            if busy && now.saturating_duration_since(self.last_input_check) < BUSY_INPUT_CHECK {
                continue;
            }
            self.last_input_check = now;
            if busy {
                self.set_nonblocking(true);
            } else {
                self.set_nonblocking(false);
                let wait = self.idle_wait(now);
                let _ = self.ws.get_ref().set_read_timeout(Some(wait));
            }
            for _ in 0..if busy { 64 } else { 1 } {
                match self.read() {
                    ReadOutcome::Message(message) => {
                        if self.on_message(message) == Flow::Stop {
                            return;
                        }
                        if self.write_out().is_err() {
                            self.lost();
                            return;
                        }
                        if self.closing_since.is_some() {
                            break;
                        }
                    }
                    ReadOutcome::Nothing => break,
                    ReadOutcome::Closed => {
                        self.lost();
                        return;
                    }
                }
            }
        }
    }

    fn idle_wait(&self, now: Instant) -> Duration {
        let mut wait = self.config().poll_interval;
        let deadline = self.last_heartbeat + self.config().heartbeat_deadline();
        if !self.heartbeat_timed_out {
            wait = wait.min(deadline.saturating_duration_since(now));
        }
        if let Some(wake) = self.replay_wake {
            wait = wait.min(wake.saturating_duration_since(now));
        }
        wait.max(Duration::from_millis(1))
    }

    fn set_nonblocking(&mut self, on: bool) {
        if self.nonblocking != on {
            let _ = self.ws.get_ref().set_nonblocking(on);
            self.nonblocking = on;
        }
    }

    fn read(&mut self) -> ReadOutcome {
        match self.ws.read() {
            Ok(message) => ReadOutcome::Message(message),
            Err(WsError::Io(e)) if is_timeout(&e) => ReadOutcome::Nothing,
            Err(WsError::Capacity(e)) => {
                self.violation(ViolationKind::PayloadTooLarge {
                    bytes: capacity_size(&e),
                });
                self.close(4002, "Decode error");
                ReadOutcome::Nothing
            }
            Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => ReadOutcome::Closed,
            Err(e) => {
                tracing::debug!(connection = self.id.0, error = %e, "mock gateway: read failed");
                ReadOutcome::Closed
            }
        }
    }

    /// Queues what the session has due. Returns whether anything was queued.
    fn queue_due(&mut self, now: Instant) -> bool {
        let pull = {
            let shared = self.shared.clone();
            let mut state = shared.state();
            state.pull(&shared.config, self.id, self.sent_up_to, now)
        };
        self.replay_wake = pull.wake_at;
        let queued = !pull.frames.is_empty();
        for entry in pull.frames {
            self.sent_up_to = entry.seq;
            self.queue(entry.json, 0, Some(entry.event), Some(entry.seq));
        }
        queued
    }

    /// Queues a frame; [`Self::write_out`] records and sends it.
    fn queue(&mut self, json: Bytes, op: u8, event: Option<Arc<str>>, seq: Option<u64>) {
        if self.closing_since.is_none() {
            self.outbox.push(Outgoing {
                json,
                op,
                event,
                seq,
            });
        }
    }

    fn send_op(&mut self, json: Bytes, op: u8) {
        self.queue(json, op, None, None);
    }

    /// Records everything queued (so the recorder knows a frame before the client can see it),
    /// then encodes, compresses and writes it, then a pending close frame, then flushes.
    fn write_out(&mut self) -> Result<(), ()> {
        let result = self.write_out_inner();
        self.report_applied();
        result
    }

    /// Tells control callers waiting on this connection that their commands took effect.
    fn report_applied(&mut self) {
        for applied in self.applied.drain(..) {
            let _ = applied.send(());
        }
    }

    fn write_out_inner(&mut self) -> Result<(), ()> {
        if self.outbox.is_empty() && self.pending_close.is_none() {
            self.flush_records();
            return Ok(());
        }
        if self.shared.recorder.frames_mode() != FrameRecording::None {
            let at = Instant::now();
            for o in &self.outbox {
                self.pending_sent.push(SentFrame {
                    at,
                    op: o.op,
                    event: o.event.as_deref().map(str::to_owned),
                    seq: o.seq,
                    json: o.json.clone(),
                });
            }
        }
        self.flush_records();
        if self.pending_close.is_some()
            && let Some(record) = self.close_record.clone()
        {
            self.shared.recorder.with_connection(self.id, |c| {
                if c.close.is_none() {
                    c.close = Some(record);
                }
            });
        }
        let mut outbox = std::mem::take(&mut self.outbox);
        let mut messages = std::mem::take(&mut self.scratch);
        let mut result = Ok(());
        // Encode and compress everything queued first, then write: a whole replay pass
        // (ReplayRate::AllAtOnce) is compressed before the first byte goes out, so streaming
        // it is not slowed down by compression.
        messages.clear();
        for o in outbox.drain(..) {
            let payload = self.outbound.encode(&o.json);
            if self.outbound.messages(payload, &mut messages).is_err() {
                result = Err(());
                break;
            }
        }
        for message in messages.drain(..) {
            match self.ws.write(message) {
                Ok(()) => {}
                Err(WsError::Io(e)) if is_timeout(&e) => self.write_pending = true,
                Err(e) => {
                    tracing::debug!(connection = self.id.0, error = %e, "mock gateway: write failed");
                    result = Err(());
                    break;
                }
            }
        }
        outbox.clear();
        self.outbox = outbox;
        self.scratch = messages;
        if let Some((code, reason)) = self.pending_close.take() {
            let frame = CloseFrame {
                code: CloseCode::from(code),
                reason: reason.into(),
            };
            let _ = self.ws.close(Some(frame));
            result = Ok(());
        }
        result?;
        match self.ws.flush() {
            Ok(()) => self.write_pending = false,
            Err(WsError::Io(e)) if is_timeout(&e) => self.write_pending = true,
            Err(_) if self.closing_since.is_some() => {}
            Err(e) => {
                tracing::debug!(connection = self.id.0, error = %e, "mock gateway: flush failed");
                return Err(());
            }
        }
        Ok(())
    }

    fn flush_records(&mut self) {
        if self.pending_received.is_empty() && self.pending_sent.is_empty() {
            return;
        }
        let received = std::mem::take(&mut self.pending_received);
        let sent = std::mem::take(&mut self.pending_sent);
        self.shared.recorder.push_frames(self.id, received, sent);
    }

    // ---------------------------------------------------------------- controls and timers

    fn apply_commands(&mut self) -> Flow {
        loop {
            let command = match self.commands.try_recv() {
                Ok((command, applied)) => {
                    self.applied.extend(applied);
                    command
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return Flow::Continue,
            };
            match command {
                ConnCommand::SendReconnect => self.send_op(frames::reconnect(), 7),
                ConnCommand::SendInvalidSession(resumable) => {
                    self.send_op(frames::invalid_session(resumable), 9);
                    if !resumable && self.session.take().is_some() {
                        self.shared.state().invalidate_live(self.id, Instant::now());
                        self.shard = None;
                    }
                }
                ConnCommand::Close(code, reason) => {
                    self.close(code, &reason);
                    return Flow::Continue;
                }
                ConnCommand::DropAcks(drop) => self.acks = !drop,
                ConnCommand::RequestHeartbeat => {
                    self.heartbeat_requested = true;
                    self.send_op(frames::heartbeat_request(), 1);
                }
                ConnCommand::DropTcp => {
                    let _ = self.ws.get_ref().shutdown(Shutdown::Both);
                    self.close_record = Some(CloseRecord {
                        at: Instant::now(),
                        kind: CloseKind::ServerDropped,
                        reason: String::new(),
                    });
                    return Flow::Stop;
                }
                ConnCommand::Superseded => {
                    // The session now belongs to another connection: leave it alone.
                    self.session = None;
                    self.close(4000, "session resumed on another connection");
                    return Flow::Continue;
                }
            }
        }
    }

    fn check_heartbeat(&mut self, now: Instant) {
        if self.heartbeat_timed_out {
            return;
        }
        let allowed = self.config().heartbeat_deadline();
        if now.saturating_duration_since(self.last_heartbeat) > allowed {
            self.heartbeat_timed_out = true;
            self.violation(ViolationKind::HeartbeatTimeout);
            if self.config().close_on_heartbeat_timeout {
                self.close(4009, "Session timed out");
            }
        }
    }

    // ---------------------------------------------------------------- input

    fn on_message(&mut self, message: Message) -> Flow {
        match message {
            Message::Close(frame) => {
                let code = frame.as_ref().map(|f| u16::from(f.code));
                let reason = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                if self.close_record.is_none() {
                    self.close_record = Some(CloseRecord {
                        at: Instant::now(),
                        kind: CloseKind::ClientClose(code),
                        reason,
                    });
                }
                // Answer the close handshake, then stop.
                self.set_nonblocking(false);
                let _ = self
                    .ws
                    .get_ref()
                    .set_read_timeout(Some(Duration::from_millis(50)));
                let _ = self.ws.flush();
                Flow::Stop
            }
            Message::Text(_) | Message::Binary(_) => {
                if self.closing_since.is_some() {
                    return Flow::Continue;
                }
                self.on_payload(&message);
                Flow::Continue
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Flow::Continue,
        }
    }

    fn on_payload(&mut self, message: &Message) {
        let now = Instant::now();
        // 120 frames per 60 s.
        self.inbound_window.push_back(now);
        let window = self.config().rate_limit_window;
        while self
            .inbound_window
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > window)
        {
            self.inbound_window.pop_front();
        }
        let frames_in_window = self.inbound_window.len() as u32;
        if frames_in_window > self.config().rate_limit_frames {
            self.record_received(now, message, None);
            self.violation(ViolationKind::RateLimited {
                frames: frames_in_window,
            });
            self.close(4008, "Rate limited.");
            return;
        }
        let value = match wire::decode_inbound(
            self.params.encoding,
            message,
            self.config().max_client_payload,
        ) {
            Ok(value) => value,
            Err(problem) => {
                self.record_received(now, message, None);
                self.violation(match &problem {
                    DecodeProblem::TooLarge(bytes) => {
                        ViolationKind::PayloadTooLarge { bytes: *bytes }
                    }
                    other => ViolationKind::Malformed {
                        detail: other.to_string(),
                    },
                });
                self.close(4002, "Error while decoding payload.");
                return;
            }
        };
        self.record_received(now, message, Some(&value));
        let op = value.get("op").and_then(Value::as_u64);
        let d = value.get("d").unwrap_or(&Value::Null);
        match op {
            Some(1) => self.on_heartbeat(now, d),
            Some(2) => self.on_identify(now, d),
            Some(6) => self.on_resume(now, d),
            Some(op) if CLIENT_COMMANDS.contains(&op) => {
                if self.session.is_none() {
                    self.violation(ViolationKind::CommandBeforeIdentify { op });
                    self.close(4003, "Not authenticated.");
                }
            }
            other => {
                self.violation(ViolationKind::UnknownOpcode { op: other });
                self.close(4001, "Unknown opcode.");
            }
        }
    }

    fn record_received(&mut self, at: Instant, message: &Message, value: Option<&Value>) {
        if self.shared.recorder.frames_mode() == FrameRecording::None {
            return;
        }
        let json = match (message, value) {
            (Message::Text(text), _) => Bytes::copy_from_slice(text.as_bytes()),
            (_, Some(value)) => Bytes::from(serde_json::to_vec(value).unwrap_or_default()),
            (Message::Binary(bytes), None) => bytes.clone(),
            _ => Bytes::new(),
        };
        let op = value.and_then(|v| v.get("op")).and_then(Value::as_u64);
        self.pending_received.push(ReceivedFrame { at, op, json });
    }

    fn on_heartbeat(&mut self, now: Instant, d: &Value) {
        let since_previous = now.saturating_duration_since(self.last_heartbeat);
        let allowed = self.config().heartbeat_late_after();
        let requested = std::mem::take(&mut self.heartbeat_requested);
        if since_previous > allowed && !self.heartbeat_timed_out {
            self.violation(ViolationKind::HeartbeatLate {
                gap: since_previous,
                allowed,
            });
        }
        self.last_heartbeat = now;
        self.heartbeat_timed_out = false;
        let record = HeartbeatRecord {
            at: now,
            seq: d.as_u64(),
            since_previous,
            requested,
        };
        let keep = match self.shared.recorder.frames_mode() {
            FrameRecording::Last(n) => n.max(1),
            _ => usize::MAX,
        };
        self.shared.recorder.with_connection(self.id, |c| {
            c.heartbeats.push(record);
            if c.heartbeats.len() > keep {
                let excess = c.heartbeats.len() - keep;
                c.heartbeats.drain(..excess);
            }
        });
        if self.acks {
            self.send_op(frames::heartbeat_ack(), 11);
        }
    }

    fn token_ok(&self, token: Option<&str>) -> bool {
        match (&self.config().token, token) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(expected), Some(given)) => expected == given,
        }
    }

    /// The `d` object of an IDENTIFY or RESUME (`op_name`), or `None` after closing the
    /// connection: 4005 if it is already authenticated, 4002 if `d` is not an object.
    fn authentication_object<'d>(
        &mut self,
        d: &'d Value,
        op_name: &str,
    ) -> Option<&'d serde_json::Map<String, Value>> {
        if self.session.is_some() {
            self.violation(ViolationKind::AlreadyAuthenticated);
            self.close(4005, "Already authenticated.");
            return None;
        }
        let Some(object) = d.as_object() else {
            self.violation(ViolationKind::Malformed {
                detail: format!("{op_name} d is not an object"),
            });
            self.close(4002, "Error while decoding payload.");
            return None;
        };
        Some(object)
    }

    fn on_identify(&mut self, now: Instant, d: &Value) {
        let Some(object) = self.authentication_object(d, "identify") else {
            return;
        };
        let token_ok = self.token_ok(object.get("token").and_then(Value::as_str));
        let intents = object.get("intents").and_then(Value::as_u64);
        let shard_value = object.get("shard");
        let shard = parse_shard(shard_value, self.config().required_shard_count);
        let mut redacted = object.clone();
        if redacted.contains_key("token") {
            redacted.insert("token".into(), Value::String("<redacted>".into()));
        }
        let outcome = self.decide_identify(now, token_ok, shard, shard_value, intents);
        let record = IdentifyRecord {
            connection: self.id,
            at: now,
            token_ok,
            shard: shard.ok(),
            intents,
            d: Bytes::from(serde_json::to_vec(&redacted).unwrap_or_default()),
            outcome,
        };
        self.shared.recorder.update(|r| r.identifies.push(record));
    }

    fn decide_identify(
        &mut self,
        now: Instant,
        token_ok: bool,
        shard: Result<[u32; 2], ()>,
        shard_value: Option<&Value>,
        intents: Option<u64>,
    ) -> IdentifyOutcome {
        let config = &self.shared.config;
        if !token_ok {
            self.violation(ViolationKind::WrongToken);
            self.close(4004, "Authentication failed.");
            return IdentifyOutcome::Closed(4004);
        }
        let Ok(shard) = shard else {
            let sent = shard_value
                .map(Value::to_string)
                .unwrap_or_else(|| "null".into());
            self.violation(ViolationKind::BadShard { sent });
            self.close(4010, "Invalid shard.");
            return IdentifyOutcome::Closed(4010);
        };
        match intents {
            None => {
                self.violation(ViolationKind::InvalidIntents { sent: None });
                self.close(4013, "Invalid intent(s).");
                return IdentifyOutcome::Closed(4013);
            }
            Some(bits) if bits & !DEFINED_INTENTS != 0 => {
                self.violation(ViolationKind::InvalidIntents { sent: Some(bits) });
                self.close(4013, "Invalid intent(s).");
                return IdentifyOutcome::Closed(4013);
            }
            Some(bits) if config.expected_intents.is_some_and(|e| e != bits) => {
                let expected = config.expected_intents.unwrap_or_default();
                self.violation(ViolationKind::WrongIntents {
                    sent: Some(bits),
                    expected,
                });
                self.close(4013, "Invalid intent(s).");
                return IdentifyOutcome::Closed(4013);
            }
            Some(bits) if bits & PRIVILEGED_INTENTS & !config.allowed_privileged_intents != 0 => {
                self.violation(ViolationKind::InvalidIntents { sent: Some(bits) });
                self.close(4014, "Disallowed intent(s).");
                return IdentifyOutcome::Closed(4014);
            }
            Some(_) => {}
        }
        let shared = self.shared.clone();
        let mut state = shared.state();
        match state.admit_identify(&shared.config, shard[0], now) {
            Err(refusal) => {
                drop(state);
                self.violation(match refusal {
                    IdentifyRefusal::Exhausted => ViolationKind::SessionStartLimitExhausted,
                    IdentifyRefusal::Bucket {
                        bucket,
                        since_previous,
                    } => ViolationKind::IdentifyBucket {
                        bucket,
                        since_previous,
                    },
                });
                self.send_op(frames::invalid_session(false), 9);
                IdentifyOutcome::InvalidSession
            }
            Ok(()) => {
                let session_id = state.create_session(
                    &shared.config,
                    &shared.templates,
                    &shared.resume_url,
                    self.id,
                    shard,
                    now,
                );
                drop(state);
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
        self.shared.recorder.with_connection(self.id, |c| {
            c.shard = Some(shard);
            c.session_id = Some(session_id);
        });
    }

    fn on_resume(&mut self, now: Instant, d: &Value) {
        let Some(object) = self.authentication_object(d, "resume") else {
            return;
        };
        let token_ok = self.token_ok(object.get("token").and_then(Value::as_str));
        let session_id = object
            .get("session_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let seq = object.get("seq").and_then(Value::as_u64);
        if !self.on_resume_url {
            let path = self
                .shared
                .recorder
                .read(|r| r.connection(self.id).map(|c| c.path.clone()));
            self.violation(ViolationKind::ResumeWrongUrl {
                path: path.unwrap_or_default(),
            });
        }
        let outcome = if !token_ok {
            self.violation(ViolationKind::WrongToken);
            self.close(4004, "Authentication failed.");
            ResumeOutcome::Closed(4004)
        } else {
            let shared = self.shared.clone();
            let decision = shared
                .state()
                .resume(&shared.config, self.id, &session_id, seq, now);
            match decision {
                ResumeDecision::Resumed {
                    shard,
                    replayed,
                    previous,
                } => {
                    if let Some(previous) = previous
                        && let Some(sender) = shared.state().connections.get(&previous)
                    {
                        let _ = sender.send((ConnCommand::Superseded, None));
                    }
                    self.start_session(session_id.clone(), shard, seq.unwrap_or_default());
                    ResumeOutcome::Resumed { replayed }
                }
                ResumeDecision::BadSeq { last } => {
                    self.violation(ViolationKind::ResumeBadSeq { seq, last });
                    self.close(4007, "Invalid seq.");
                    ResumeOutcome::Closed(4007)
                }
                ResumeDecision::Unknown => {
                    self.violation(ViolationKind::ResumeUnknownSession {
                        session_id: session_id.clone(),
                    });
                    self.send_op(frames::invalid_session(false), 9);
                    ResumeOutcome::InvalidSession
                }
                ResumeDecision::Invalidated => {
                    self.violation(ViolationKind::ResumeInvalidatedSession {
                        session_id: session_id.clone(),
                    });
                    self.send_op(frames::invalid_session(false), 9);
                    ResumeOutcome::InvalidSession
                }
                ResumeDecision::Expired | ResumeDecision::HistoryTooShort => {
                    self.send_op(frames::invalid_session(false), 9);
                    ResumeOutcome::InvalidSession
                }
            }
        };
        let record = ResumeRecord {
            connection: self.id,
            at: now,
            token_ok,
            session_id,
            seq,
            on_resume_url: self.on_resume_url,
            outcome,
        };
        self.shared.recorder.update(|r| r.resumes.push(record));
    }

    // ---------------------------------------------------------------- closing

    /// Sends a close frame; the loop then waits briefly for the client's answer.
    fn close(&mut self, code: u16, reason: &str) {
        if self.closing_since.is_some() {
            return;
        }
        self.closing_since = Some(Instant::now());
        if self.close_record.is_none() {
            self.close_record = Some(CloseRecord {
                at: Instant::now(),
                kind: CloseKind::ServerClose(code),
                reason: reason.to_owned(),
            });
        }
        let invalidate = close_invalidates(code);
        if self.session.is_some() {
            self.shared
                .state()
                .detach(self.id, invalidate, Instant::now());
        }
        self.pending_close = Some((code, reason.to_owned()));
    }

    fn finish_close(&mut self) {
        self.set_nonblocking(false);
        let _ = self.write_out();
        let deadline = Instant::now() + CLOSE_LINGER;
        loop {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let _ = self
                .ws
                .get_ref()
                .set_read_timeout(Some((deadline - now).max(Duration::from_millis(1))));
            match self.ws.read() {
                Ok(_) => continue,
                Err(WsError::Io(e)) if is_timeout(&e) => continue,
                Err(_) => break,
            }
        }
    }

    /// The client went away without a close frame (or the socket failed).
    fn lost(&mut self) {
        if self.close_record.is_none() {
            self.close_record = Some(CloseRecord {
                at: Instant::now(),
                kind: CloseKind::ClientDropped,
                reason: String::new(),
            });
        }
    }

    /// Final bookkeeping: record the close, release the session (invalidated by a client
    /// 1000/1001 close), unregister.
    fn end(&mut self) {
        self.flush_records();
        self.report_applied();
        let record = self.close_record.take().unwrap_or(CloseRecord {
            at: Instant::now(),
            kind: CloseKind::ClientDropped,
            reason: String::new(),
        });
        let invalidate = match record.kind {
            CloseKind::ClientClose(Some(code)) => close_invalidates(code),
            CloseKind::ServerClose(code) => close_invalidates(code),
            _ => false,
        };
        self.shared
            .state()
            .detach(self.id, invalidate, Instant::now());
        self.shared.recorder.with_connection(self.id, |c| {
            if c.close.is_none() {
                c.close = Some(record);
            }
        });
        let _ = self.ws.get_ref().shutdown(Shutdown::Both);
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

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

fn capacity_size(e: &tungstenite::error::CapacityError) -> usize {
    match e {
        tungstenite::error::CapacityError::MessageTooLong { size, .. } => *size,
        _ => 0,
    }
}
