//! Gateway sessions as the mock keeps them: sequence numbers, the dispatch history that RESUME
//! replays from, the replay cursor over the fixture, and the identify limits shared by all
//! connections (concurrency buckets, session start limit).
//!
//! Owns: [`SessionTable`] (everything behind the mock's one state lock). Does not own: sockets,
//! frames on the wire or recording; connections call into it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::config::{MockConfig, ReplayRate, ShardRouting};
use crate::fixtures::Fixture;
use crate::frames::{self, Templates};
use crate::recorder::ConnectionId;

/// A command for a connection thread.
#[derive(Debug, Clone)]
pub(crate) enum ConnCommand {
    SendReconnect,
    SendInvalidSession(bool),
    Close(u16, String),
    DropAcks(bool),
    RequestHeartbeat,
    DropTcp,
    /// Another connection resumed this connection's session.
    Superseded,
}

/// A command plus, optionally, where to report that it was applied and written out.
pub(crate) type Envelope = (ConnCommand, Option<Sender<()>>);

/// One dispatch in a session's history.
#[derive(Debug, Clone)]
pub(crate) struct HistoryEntry {
    pub(crate) seq: u64,
    pub(crate) event: Arc<str>,
    pub(crate) json: Bytes,
}

struct Replay {
    order: Arc<[usize]>,
    cursor: usize,
    finished: bool,
    paused: bool,
    next_due: Option<Instant>,
}

pub(crate) struct Session {
    pub(crate) shard: [u32; 2],
    history: VecDeque<HistoryEntry>,
    history_bytes: usize,
    pub(crate) last_seq: u64,
    pub(crate) attached: Option<ConnectionId>,
    detached_at: Option<Instant>,
    invalidated: bool,
    replay: Replay,
}

/// Frames a connection should send now, and when to ask again if nothing is due.
pub(crate) struct Pull {
    pub(crate) frames: Vec<HistoryEntry>,
    pub(crate) wake_at: Option<Instant>,
}

/// Why an identify was refused with op 9.
pub(crate) enum IdentifyRefusal {
    Exhausted,
    Bucket {
        bucket: u32,
        since_previous: Duration,
    },
}

/// The answer to a RESUME, decided under the lock.
pub(crate) enum ResumeDecision {
    Resumed {
        shard: [u32; 2],
        replayed: usize,
        previous: Option<ConnectionId>,
    },
    Unknown,
    Invalidated,
    Expired,
    BadSeq {
        last: u64,
    },
    HistoryTooShort,
}

/// Close codes after which Discord does not let the session be resumed.
pub(crate) fn close_invalidates(code: u16) -> bool {
    matches!(code, 1000 | 1001 | 4004 | 4007 | 4009 | 4010..=4014)
}

const PULL_BATCH: usize = 64;

pub(crate) struct SessionTable {
    sessions: HashMap<String, Session>,
    issued: HashSet<String>,
    invalidated: HashSet<String>,
    shard_session: HashMap<u32, String>,
    shard_live: HashMap<u32, ConnectionId>,
    conn_session: HashMap<ConnectionId, String>,
    pub(crate) connections: HashMap<ConnectionId, Sender<Envelope>>,
    buckets: HashMap<u32, Instant>,
    remaining: u32,
    reset_at: Instant,
    routing_cache: HashMap<[u32; 2], Arc<[usize]>>,
    next_session: u64,
    session_salt: u64,
}

impl SessionTable {
    pub(crate) fn new(config: &MockConfig, now: Instant) -> Self {
        use std::hash::{BuildHasher, RandomState};
        Self {
            sessions: HashMap::new(),
            issued: HashSet::new(),
            invalidated: HashSet::new(),
            shard_session: HashMap::new(),
            shard_live: HashMap::new(),
            conn_session: HashMap::new(),
            connections: HashMap::new(),
            buckets: HashMap::new(),
            remaining: config.session_start_total,
            reset_at: now + config.session_start_reset_after,
            routing_cache: HashMap::new(),
            next_session: 1,
            session_salt: RandomState::new().hash_one(now),
        }
    }

    fn roll_window(&mut self, config: &MockConfig, now: Instant) {
        if now >= self.reset_at {
            self.remaining = config.session_start_total;
            self.reset_at = now + config.session_start_reset_after;
        }
    }

    /// `(remaining, reset_after)` for `/gateway/bot`.
    pub(crate) fn session_start(&mut self, config: &MockConfig, now: Instant) -> (u32, Duration) {
        self.roll_window(config, now);
        (self.remaining, self.reset_at.saturating_duration_since(now))
    }

    /// Applies the identify limits; on success the bucket is taken and `remaining` decremented.
    pub(crate) fn admit_identify(
        &mut self,
        config: &MockConfig,
        shard_id: u32,
        now: Instant,
    ) -> Result<(), IdentifyRefusal> {
        self.roll_window(config, now);
        if self.remaining == 0 {
            return Err(IdentifyRefusal::Exhausted);
        }
        let bucket = shard_id % config.max_concurrency.max(1);
        if let Some(previous) = self.buckets.get(&bucket) {
            let since_previous = now.saturating_duration_since(*previous);
            if since_previous < config.identify_window {
                return Err(IdentifyRefusal::Bucket {
                    bucket,
                    since_previous,
                });
            }
        }
        self.buckets.insert(bucket, now);
        self.remaining -= 1;
        Ok(())
    }

    fn routed_order(
        &mut self,
        config: &MockConfig,
        fixture: &Fixture,
        shard: [u32; 2],
    ) -> Arc<[usize]> {
        if let Some(order) = self.routing_cache.get(&shard) {
            return order.clone();
        }
        let order: Arc<[usize]> = (0..fixture.len())
            .filter(|&i| match config.routing {
                ShardRouting::Broadcast => true,
                ShardRouting::ByGuild => routes_to(fixture.events()[i].guild_id, shard),
            })
            .collect();
        self.routing_cache.insert(shard, order.clone());
        order
    }

    fn sweep(&mut self, config: &MockConfig, now: Instant) {
        let expired: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| {
                s.attached.is_none()
                    && (s.invalidated
                        || s.detached_at.is_some_and(|at| {
                            now.saturating_duration_since(at) > config.resume_window
                        }))
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            if let Some(session) = self.sessions.remove(&id)
                && session.invalidated
            {
                self.invalidated.insert(id);
            }
        }
    }

    /// Creates a session for an accepted IDENTIFY; READY is its first history entry (s = 1).
    pub(crate) fn create_session(
        &mut self,
        config: &MockConfig,
        templates: &Templates,
        resume_url: &str,
        conn: ConnectionId,
        shard: [u32; 2],
        now: Instant,
    ) -> String {
        self.sweep(config, now);
        let fixture = &config.fixture;
        let session_id = format!("{:016x}{:016x}", self.session_salt, self.next_session);
        self.next_session += 1;
        let order = self.routed_order(config, fixture, shard);
        let guilds: Vec<u64> = match config.routing {
            ShardRouting::Broadcast => fixture.created_guilds(),
            ShardRouting::ByGuild => fixture
                .created_guilds()
                .into_iter()
                .filter(|g| routes_to(Some(*g), shard))
                .collect(),
        };
        let ready = templates.ready(&session_id, resume_url, shard, &guilds);
        let mut session = Session {
            shard,
            history: VecDeque::new(),
            history_bytes: 0,
            last_seq: 0,
            attached: Some(conn),
            detached_at: None,
            invalidated: false,
            replay: Replay {
                finished: order.is_empty(),
                order,
                cursor: 0,
                paused: config.start_paused,
                next_due: None,
            },
        };
        session.push_entry(Arc::from("READY"), ready, config.history_limit_bytes, 0);
        self.issued.insert(session_id.clone());
        self.attach(&session_id, conn, shard[0]);
        self.sessions.insert(session_id.clone(), session);
        session_id
    }

    fn attach(&mut self, session_id: &str, conn: ConnectionId, shard_id: u32) {
        self.shard_session.insert(shard_id, session_id.to_owned());
        self.shard_live.insert(shard_id, conn);
        self.conn_session.insert(conn, session_id.to_owned());
    }

    /// Decides a RESUME and, when it succeeds, attaches the session and queues RESUMED after
    /// the missed dispatches.
    pub(crate) fn resume(
        &mut self,
        config: &MockConfig,
        conn: ConnectionId,
        session_id: &str,
        seq: Option<u64>,
        now: Instant,
    ) -> ResumeDecision {
        let Some(session) = self.sessions.get_mut(session_id) else {
            return if self.invalidated.contains(session_id) {
                ResumeDecision::Invalidated
            } else if self.issued.contains(session_id) {
                ResumeDecision::Expired
            } else {
                ResumeDecision::Unknown
            };
        };
        if session.invalidated {
            return ResumeDecision::Invalidated;
        }
        if session.attached.is_none()
            && session
                .detached_at
                .is_some_and(|at| now.saturating_duration_since(at) > config.resume_window)
        {
            return ResumeDecision::Expired;
        }
        let last = session.last_seq;
        let Some(seq) = seq.filter(|s| *s <= last) else {
            return ResumeDecision::BadSeq { last };
        };
        let oldest = session.history.front().map_or(last + 1, |e| e.seq);
        if seq + 1 < oldest {
            return ResumeDecision::HistoryTooShort;
        }
        let previous = session.attached.filter(|c| *c != conn);
        session.attached = Some(conn);
        session.detached_at = None;
        session.replay.next_due = None;
        let resumed_seq = last + 1;
        let resumed = frames::dispatch_frame("RESUMED", resumed_seq, frames::RESUMED_D);
        session.push_entry(
            Arc::from("RESUMED"),
            resumed,
            config.history_limit_bytes,
            seq,
        );
        let shard = session.shard;
        if let Some(previous) = previous {
            self.conn_session.remove(&previous);
        }
        self.attach(session_id, conn, shard[0]);
        ResumeDecision::Resumed {
            shard,
            replayed: (last - seq) as usize,
            previous,
        }
    }

    /// The connection went away. `invalidate` ends the session for good (client close 1000/1001,
    /// fatal server close codes, op 9 false).
    pub(crate) fn detach(&mut self, conn: ConnectionId, invalidate: bool, now: Instant) {
        if let Some(session_id) = self.conn_session.remove(&conn)
            && let Some(session) = self.sessions.get_mut(&session_id)
            && session.attached == Some(conn)
        {
            {
                session.attached = None;
                session.detached_at = Some(now);
                if invalidate {
                    session.invalidated = true;
                }
                if self.shard_live.get(&session.shard[0]) == Some(&conn) {
                    self.shard_live.remove(&session.shard[0]);
                }
            }
        }
        self.connections.remove(&conn);
    }

    /// Invalidates the session of a live connection (op 9 false) and detaches it.
    pub(crate) fn invalidate_live(&mut self, conn: ConnectionId, now: Instant) {
        let sender = self.connections.get(&conn).cloned();
        self.detach(conn, true, now);
        if let Some(sender) = sender {
            self.connections.insert(conn, sender);
        }
    }

    /// Frames the connection should send now (history after `after_seq`, or newly generated
    /// replay frames when the history has been sent).
    pub(crate) fn pull(
        &mut self,
        config: &MockConfig,
        conn: ConnectionId,
        after_seq: u64,
        now: Instant,
    ) -> Pull {
        let fixture = &config.fixture;
        let mut pull = Pull {
            frames: Vec::new(),
            wake_at: None,
        };
        let Some(session_id) = self.conn_session.get(&conn) else {
            return pull;
        };
        let Some(session) = self.sessions.get_mut(session_id) else {
            return pull;
        };
        if session.attached != Some(conn) {
            return pull;
        }
        if session.last_seq > after_seq {
            let start = session.history.partition_point(|e| e.seq <= after_seq);
            pull.frames
                .extend(session.history.iter().skip(start).take(PULL_BATCH).cloned());
            return pull;
        }
        if session.replay.finished || session.replay.paused {
            return pull;
        }
        let budget = match config.rate {
            ReplayRate::AllAtOnce => session.replay.order.len() - session.replay.cursor,
            ReplayRate::AsFastAsClientReads => 1,
            ReplayRate::PerSecond(rate) => {
                let period = Duration::from_secs_f64(1.0 / rate.max(1e-6));
                let due = session.replay.next_due.get_or_insert(now);
                if now.saturating_duration_since(*due) > Duration::from_secs(1) {
                    *due = now; // do not burst to catch up after a pause or a stall
                }
                let mut count = 0;
                while *due <= now && count < PULL_BATCH {
                    *due += period;
                    count += 1;
                }
                pull.wake_at = Some(*due);
                count
            }
        };
        for _ in 0..budget {
            if session.replay.finished {
                break;
            }
            let event = &fixture.events()[session.replay.order[session.replay.cursor]];
            session.replay.cursor += 1;
            if session.replay.cursor == session.replay.order.len() {
                if config.loop_replay {
                    session.replay.cursor = 0;
                } else {
                    session.replay.finished = true;
                }
            }
            let seq = session.last_seq + 1;
            let json = frames::dispatch_frame(&event.name, seq, &event.d);
            let entry = session.push_entry(
                event.name.clone(),
                json,
                config.history_limit_bytes,
                after_seq,
            );
            pull.frames.push(entry);
        }
        pull
    }

    /// Appends a dispatch to the session of `conn` or of `shard` (the latest one, live or not).
    pub(crate) fn inject(
        &mut self,
        config: &MockConfig,
        target: SessionTarget,
        event: &str,
        raw_d: &[u8],
    ) -> Option<u64> {
        let session_id = self.session_of(target)?.to_owned();
        let session = self
            .sessions
            .get_mut(&session_id)
            .filter(|s| !s.invalidated)?;
        let seq = session.last_seq + 1;
        let json = frames::dispatch_frame(event, seq, raw_d);
        session.push_entry(Arc::from(event), json, config.history_limit_bytes, 0);
        Some(seq)
    }

    /// Appends a dispatch of guild `guild` to every session that Discord's rule routes it to
    /// (`(guild_id >> 22) % num_shards == shard_id`), whatever their shard counts: sessions
    /// with different shard counts run at once during a re-shard, and each gets the guild's
    /// events. Sessions not attached get it on RESUME. Returns how many sessions got it.
    pub(crate) fn inject_guild(
        &mut self,
        config: &MockConfig,
        guild: u64,
        event: &str,
        raw_d: &[u8],
    ) -> usize {
        let mut delivered = 0;
        for session in self.sessions.values_mut() {
            if session.invalidated || !routes_to(Some(guild), session.shard) {
                continue;
            }
            let seq = session.last_seq + 1;
            let json = frames::dispatch_frame(event, seq, raw_d);
            session.push_entry(Arc::from(event), json, config.history_limit_bytes, 0);
            delivered += 1;
        }
        delivered
    }

    /// Pauses or resumes the fixture replay of a session.
    pub(crate) fn set_paused(&mut self, target: SessionTarget, paused: bool) -> bool {
        let Some(session_id) = self.session_of(target).map(str::to_owned) else {
            return false;
        };
        match self.sessions.get_mut(&session_id) {
            Some(session) => {
                session.replay.paused = paused;
                session.replay.next_due = None;
                true
            }
            None => false,
        }
    }

    fn session_of(&self, target: SessionTarget) -> Option<&str> {
        match target {
            SessionTarget::Connection(conn) => self.conn_session.get(&conn).map(String::as_str),
            SessionTarget::Shard(shard) => self.shard_session.get(&shard).map(String::as_str),
        }
    }

    /// The live connection of a shard.
    pub(crate) fn live_connection(&self, shard: u32) -> Option<ConnectionId> {
        self.shard_live.get(&shard).copied()
    }

    /// Every session that can still be resumed: its id, shard, latest sequence and the
    /// connection it is attached to.
    pub(crate) fn resumable(&self) -> Vec<(String, [u32; 2], u64, Option<ConnectionId>)> {
        self.sessions
            .iter()
            .filter(|(_, s)| !s.invalidated)
            .map(|(id, s)| (id.clone(), s.shard, s.last_seq, s.attached))
            .collect()
    }
}

/// Whose session a control addresses.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SessionTarget {
    Connection(ConnectionId),
    Shard(u32),
}

fn routes_to(guild_id: Option<u64>, shard: [u32; 2]) -> bool {
    let count = u64::from(shard[1].max(1));
    match guild_id {
        Some(guild) => (guild >> 22) % count == u64::from(shard[0]),
        None => shard[0] == 0,
    }
}

impl Session {
    /// Appends an entry and trims the history to `limit` bytes, never dropping entries after
    /// `keep_after` (not yet sent).
    fn push_entry(
        &mut self,
        event: Arc<str>,
        json: Bytes,
        limit: usize,
        keep_after: u64,
    ) -> HistoryEntry {
        self.last_seq += 1;
        let entry = HistoryEntry {
            seq: self.last_seq,
            event,
            json,
        };
        self.history_bytes += entry.json.len();
        self.history.push_back(entry.clone());
        while self.history_bytes > limit
            && self.history.len() > 1
            && self.history.front().is_some_and(|e| e.seq <= keep_after)
        {
            if let Some(old) = self.history.pop_front() {
                self.history_bytes -= old.json.len();
            }
        }
        entry
    }
}
