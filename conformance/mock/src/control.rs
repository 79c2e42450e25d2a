//! Run-time controls: make the mock do what Discord occasionally does (op 7, op 9, closes,
//! zombie connections, server heartbeat requests, TCP drops), feed it dispatches, and ask
//! how far its sessions are.
//!
//! Owns: the [`Control`] and [`Target`] handles. Connection-level controls are delivered to the
//! connection's thread (applied within `poll_interval`); session-level ones (inject, pause) act
//! on the session directly. Does not own: the effects themselves (see `conversation`).

use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use bytes::Bytes;
use serde_json::value::RawValue;

use crate::recorder::ConnectionId;
use crate::session::{ConnCommand, SessionTarget};
use crate::shared::Shared;

/// How long a connection control waits for the connection thread to apply it.
const APPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a control could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The shard has no open, identified connection (or the connection id is not open).
    #[error("no open connection for {0}")]
    NoConnection(String),
    /// The shard or connection has no session (never identified, or the session is gone).
    #[error("no session for {0}")]
    NoSession(String),
    /// The `d` given to inject is not one JSON value, or the event name is empty.
    #[error("invalid dispatch: {0}")]
    InvalidDispatch(String),
}

/// Run-time controls of a running mock. Clone freely; usable from any thread.
#[derive(Clone)]
pub struct Control {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control").finish_non_exhaustive()
    }
}

/// A session the mock can still resume, as [`Control::sessions`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionProgress {
    /// Its id.
    pub session_id: String,
    /// `[shard_id, num_shards]`.
    pub shard: [u32; 2],
    /// The sequence number of its latest dispatch.
    pub last_seq: u64,
    /// The open connection it is attached to, if any.
    pub connection: Option<ConnectionId>,
}

/// What a [`Target`] addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selector {
    /// The open connection (for connection controls) or the latest session (for session
    /// controls) of this shard id.
    Shard(u32),
    /// One connection, identified or not.
    Connection(ConnectionId),
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selector::Shard(s) => write!(f, "shard {s}"),
            Selector::Connection(c) => write!(f, "connection {}", c.0),
        }
    }
}

impl Control {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Sends a dispatch of guild `guild_id` as Discord does: to every session whose shard
    /// owns the guild (`(guild_id >> 22) % num_shards`), whatever its shard count, so that two
    /// shard sets running at once (a re-shard) both get it. `d` must be one JSON value. Returns
    /// how many sessions got it; [`ControlError::NoSession`] when none did.
    pub fn inject_guild_dispatch(
        &self,
        guild_id: u64,
        event: &str,
        d: impl Into<Bytes>,
    ) -> Result<usize, ControlError> {
        let d: Bytes = d.into();
        if event.is_empty() {
            return Err(ControlError::InvalidDispatch("empty event name".into()));
        }
        let raw: &RawValue =
            serde_json::from_slice(&d).map_err(|e| ControlError::InvalidDispatch(e.to_string()))?;
        let config = &self.shared.config;
        match self
            .shared
            .state()
            .inject_guild(config, guild_id, event, raw.get().as_bytes())
        {
            0 => Err(ControlError::NoSession(format!("guild {guild_id}"))),
            n => Ok(n),
        }
    }

    /// The next `count` WebSocket connections get op 7 Reconnect in place of HELLO (Discord may
    /// do this at any point, even before HELLO). They are then left open until the client
    /// closes them (or the heartbeat timeout does).
    pub fn reconnect_before_hello(&self, count: u64) {
        self.shared
            .reconnects_before_hello
            .fetch_add(count, std::sync::atomic::Ordering::SeqCst);
    }

    /// Every session that can still be resumed (not invalidated; in no particular order),
    /// with the sequence of its latest dispatch, sent or still waiting to be sent (a client
    /// whose heartbeat carries it has read everything the mock has for it), and its connection
    /// while one is attached.
    pub fn sessions(&self) -> Vec<SessionProgress> {
        self.shared
            .state()
            .resumable()
            .into_iter()
            .map(
                |(session_id, shard, last_seq, connection)| SessionProgress {
                    session_id,
                    shard,
                    last_seq,
                    connection,
                },
            )
            .collect()
    }

    /// Controls for a shard.
    pub fn shard(&self, shard: u32) -> Target {
        Target {
            shared: self.shared.clone(),
            selector: Selector::Shard(shard),
        }
    }

    /// Controls for one connection.
    pub fn connection(&self, id: ConnectionId) -> Target {
        Target {
            shared: self.shared.clone(),
            selector: Selector::Connection(id),
        }
    }
}

/// Controls addressed to a shard or a connection. Connection controls return once the
/// connection's thread has applied them and written any resulting frame to the socket (at most
/// `poll_interval` later; they give up waiting after 5 s). Session controls (inject, pause) take
/// effect at once; the connection sends injected dispatches within `poll_interval`.
#[derive(Clone)]
pub struct Target {
    shared: Arc<Shared>,
    selector: Selector,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("selector", &self.selector)
            .finish()
    }
}

impl Target {
    fn command(&self, command: ConnCommand) -> Result<ConnectionId, ControlError> {
        let state = self.shared.state();
        let conn = match self.selector {
            Selector::Shard(shard) => state.live_connection(shard),
            Selector::Connection(id) => Some(id),
        };
        let sender = conn.and_then(|c| state.connections.get(&c).map(|s| (c, s.clone())));
        drop(state);
        let no_connection = || ControlError::NoConnection(self.selector.to_string());
        let (conn, sender) = sender.ok_or_else(no_connection)?;
        let (applied, done) = mpsc::channel();
        sender
            .send((command, Some(applied)))
            .map_err(|_| no_connection())?;
        match done.recv_timeout(APPLY_TIMEOUT) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => Ok(conn),
            Err(RecvTimeoutError::Disconnected) => Err(no_connection()),
        }
    }

    fn session_target(&self) -> SessionTarget {
        match self.selector {
            Selector::Shard(shard) => SessionTarget::Shard(shard),
            Selector::Connection(id) => SessionTarget::Connection(id),
        }
    }

    /// Sends op 7 Reconnect. Returns the connection it went to.
    pub fn send_reconnect(&self) -> Result<ConnectionId, ControlError> {
        self.command(ConnCommand::SendReconnect)
    }

    /// Sends op 9 Invalid Session. With `resumable == false` the session is also invalidated
    /// (a later RESUME gets op 9 false).
    pub fn send_invalid_session(&self, resumable: bool) -> Result<ConnectionId, ControlError> {
        self.command(ConnCommand::SendInvalidSession(resumable))
    }

    /// Closes the connection with a close frame carrying `code`. Codes after which Discord does
    /// not allow a resume (4004, 4007, 4009, 4010-4014, 1000, 1001) invalidate the session.
    pub fn close(&self, code: u16, reason: &str) -> Result<ConnectionId, ControlError> {
        self.command(ConnCommand::Close(code, reason.to_owned()))
    }

    /// Stops (`true`) or restarts (`false`) answering heartbeats on the connection: a zombie.
    pub fn drop_acks(&self, drop: bool) -> Result<ConnectionId, ControlError> {
        self.command(ConnCommand::DropAcks(drop))
    }

    /// Sends op 1 (the server asks for a heartbeat now).
    pub fn request_heartbeat(&self) -> Result<ConnectionId, ControlError> {
        self.command(ConnCommand::RequestHeartbeat)
    }

    /// Ends the TCP connection without a close frame. The session stays resumable.
    pub fn drop_tcp(&self) -> Result<ConnectionId, ControlError> {
        self.command(ConnCommand::DropTcp)
    }

    /// Appends a dispatch with the next sequence number to the session. `d` must be one JSON
    /// value; its bytes are sent untouched. If the shard is not connected the dispatch waits in
    /// the session's history and is delivered by a RESUME. Returns the sequence number.
    pub fn inject_dispatch(&self, event: &str, d: impl Into<Bytes>) -> Result<u64, ControlError> {
        let d: Bytes = d.into();
        if event.is_empty() {
            return Err(ControlError::InvalidDispatch("empty event name".into()));
        }
        let raw: &RawValue =
            serde_json::from_slice(&d).map_err(|e| ControlError::InvalidDispatch(e.to_string()))?;
        let config = &self.shared.config;
        self.shared
            .state()
            .inject(config, self.session_target(), event, raw.get().as_bytes())
            .ok_or_else(|| ControlError::NoSession(self.selector.to_string()))
    }

    /// Pauses the fixture replay of the session (injected dispatches still flow).
    pub fn pause_replay(&self) -> Result<(), ControlError> {
        self.set_paused(true)
    }

    /// Resumes the fixture replay of the session.
    pub fn resume_replay(&self) -> Result<(), ControlError> {
        self.set_paused(false)
    }

    fn set_paused(&self, paused: bool) -> Result<(), ControlError> {
        if self
            .shared
            .state()
            .set_paused(self.session_target(), paused)
        {
            Ok(())
        } else {
            Err(ControlError::NoSession(self.selector.to_string()))
        }
    }
}
