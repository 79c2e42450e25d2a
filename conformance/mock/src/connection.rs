//! One client connection on its own thread: the HTTP request, and for a WebSocket the I/O loop
//! that carries out the gateway conversation over a blocking `TcpStream` with short timeouts
//! (so the thread also reacts to controls and timers).
//!
//! Owns: reading and writing WebSocket messages, compression, the close handshake, delivering
//! controls and recording what the conversation decided. Does not own: what Discord answers to
//! what (see `conversation`), sessions (see `session`), encodings (see `wire`), records (see
//! `recorder`).

use std::io;
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::time::{Duration, Instant};

use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::{Error as WsError, Message, WebSocket};

use crate::config::FrameRecording;
use crate::conversation::{Action, Conversation, Outgoing, World};
use crate::http;
use crate::recorder::{
    CloseKind, CloseRecord, ConnectionId, ConnectionRecord, ReceivedFrame, SentFrame,
};
use crate::session::{ConnCommand, Envelope};
use crate::shared::{RESUME_PATH, Shared};
use crate::wire::{GatewayParams, Outbound};

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
    let record_frames = shared.recorder.frames_mode() != FrameRecording::None;
    let conversation = Conversation::new(
        id,
        request.path.clone(),
        params.as_ref().map(|p| p.encoding).unwrap_or_default(),
        on_resume_url,
        record_frames,
        &shared.config,
        now,
    );
    let mut conn = Connection::new(
        shared.clone(),
        id,
        ws,
        params.clone().unwrap_or_default(),
        conversation,
        receiver,
        now,
    );
    match params {
        Ok(_) => conn.run(),
        Err(problem) => {
            conn.converse(|c, world| c.bad_query(Instant::now(), &problem, world));
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
    outbound: Outbound,
    conversation: Conversation,
    record_frames: bool,
    commands: Receiver<Envelope>,
    applied: Vec<mpsc::Sender<()>>,

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
        conversation: Conversation,
        commands: Receiver<Envelope>,
        now: Instant,
    ) -> Self {
        let outbound = Outbound::new(
            &params,
            shared.config.zlib_level,
            shared.config.zlib_max_message,
        );
        let _ = ws.get_ref().set_write_timeout(Some(
            shared.config.poll_interval.max(Duration::from_millis(1)),
        ));
        let record_frames = shared.recorder.frames_mode() != FrameRecording::None;
        Self {
            shared,
            id,
            ws,
            outbound,
            conversation,
            record_frames,
            commands,
            applied: Vec::new(),
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

    /// Runs one step of the conversation, then carries out what it decided.
    fn converse<T>(&mut self, step: impl FnOnce(&mut Conversation, &World<'_>) -> T) -> T {
        let shared = self.shared.clone();
        let world = World {
            config: &shared.config,
            templates: &shared.templates,
            resume_url: &shared.resume_url,
            sessions: &shared.state,
        };
        let result = step(&mut self.conversation, &world);
        let actions: Vec<Action> = self.conversation.drain().collect();
        for action in actions {
            self.carry_out(action);
        }
        result
    }

    fn carry_out(&mut self, action: Action) {
        let recorder = &self.shared.recorder;
        match action {
            Action::Send(frame) => self.outbox.push(frame),
            Action::Close(code, reason) => {
                self.closing_since = Some(Instant::now());
                if self.close_record.is_none() {
                    self.close_record = Some(CloseRecord {
                        at: Instant::now(),
                        kind: CloseKind::ServerClose(code),
                        reason: reason.clone(),
                    });
                }
                self.pending_close = Some((code, reason));
            }
            Action::Violation(violation) => recorder.violation(violation),
            Action::Received(frame) => self.pending_received.push(frame),
            Action::Heartbeat(record) => {
                let keep = match recorder.frames_mode() {
                    FrameRecording::Last(n) => n.max(1),
                    _ => usize::MAX,
                };
                recorder.with_connection(self.id, |c| {
                    c.heartbeats.push(record);
                    if c.heartbeats.len() > keep {
                        let excess = c.heartbeats.len() - keep;
                        c.heartbeats.drain(..excess);
                    }
                });
            }
            Action::Identify(record) => recorder.update(|r| r.identifies.push(record)),
            Action::Resume(record) => recorder.update(|r| r.resumes.push(record)),
            Action::SessionStarted { session_id, shard } => {
                recorder.with_connection(self.id, |c| {
                    c.shard = Some(shard);
                    c.session_id = Some(session_id);
                });
            }
            Action::Supersede(previous) => {
                if let Some(sender) = self.shared.state().connections.get(&previous) {
                    let _ = sender.send((ConnCommand::Superseded, None));
                }
            }
        }
    }

    // ---------------------------------------------------------------- main loop

    fn run(&mut self) {
        let reconnect_instead = self
            .shared
            .reconnects_before_hello
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        self.converse(|c, world| c.open(Instant::now(), reconnect_instead, world));
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
            self.converse(|c, world| c.tick(now, world));
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
            if !self.write_pending && self.conversation.has_session() {
                sent_any = self.converse(|c, world| c.due(now, world));
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
                let wait = self.conversation.idle_wait(now, &self.shared.config);
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
                let bytes = capacity_size(&e);
                self.converse(|c, world| c.too_large(Instant::now(), bytes, world));
                ReadOutcome::Nothing
            }
            Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => ReadOutcome::Closed,
            Err(e) => {
                tracing::debug!(connection = self.id.0, error = %e, "mock gateway: read failed");
                ReadOutcome::Closed
            }
        }
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
        if self.record_frames {
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

    // ---------------------------------------------------------------- controls

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
                ConnCommand::DropTcp => {
                    let _ = self.ws.get_ref().shutdown(Shutdown::Both);
                    self.close_record = Some(CloseRecord {
                        at: Instant::now(),
                        kind: CloseKind::ServerDropped,
                        reason: String::new(),
                    });
                    return Flow::Stop;
                }
                command => {
                    let closes =
                        matches!(command, ConnCommand::Close(..) | ConnCommand::Superseded);
                    self.converse(|c, world| c.command(Instant::now(), command, world));
                    if closes {
                        return Flow::Continue;
                    }
                }
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
                self.converse(|c, world| c.receive(Instant::now(), &message, world));
                Flow::Continue
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Flow::Continue,
        }
    }

    // ---------------------------------------------------------------- closing

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

    /// Final bookkeeping: record the close, release the session, unregister.
    fn end(&mut self) {
        self.flush_records();
        self.report_applied();
        let record = self.close_record.take().unwrap_or(CloseRecord {
            at: Instant::now(),
            kind: CloseKind::ClientDropped,
            reason: String::new(),
        });
        self.converse(|c, world| c.end(Instant::now(), &record.kind, world));
        self.shared.recorder.with_connection(self.id, |c| {
            if c.close.is_none() {
                c.close = Some(record);
            }
        });
        let _ = self.ws.get_ref().shutdown(Shutdown::Both);
    }
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
