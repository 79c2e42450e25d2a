//! The session store's policy under Redis faults: when to read and write again, what to write
//! when Redis returns, when to give up waiting and start new sessions, and what a restart
//! during an outage would lose.
//!
//! Owns two pure state machines, driven like a shard (inputs `handle_*`, outputs `poll_*`,
//! time an argument) by the runtime's Redis glue, which only moves bytes and time:
//!
//! - [`SnapshotLoad`], at start: reads every owned shard's snapshot and retries with back-off
//!   ([`RetryPolicy`]) while Redis does not answer. It never lets a shard start a new session
//!   while its snapshot may exist: a shard whose snapshot could not be read waits, unless the
//!   operator allowed identifying after an outage of a given length
//!   ([`StorePolicy::identify_anyway_after`], the setting `redis.identify_anyway_after_secs`).
//! - [`StoreSync`], while running: keeps the latest value of every key (session snapshots, shard
//!   status, the predecessors' keys), writes them in batches, keeps what failed and writes the
//!   latest values again after a back-off, and tells once per outage what a restart would lose
//!   ([`RestartRisk`]).
//!
//! Does not own the key layout or the encoding ([`crate::store`]), nor when a snapshot is due
//! (the shard emits `Action::PersistSession`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use crate::profile::ProfileKind;
use crate::session::SessionSnapshot;
use crate::store::{self, KeyLayout, KeyValue, PredecessorKeys, ShardStatus};

/// Back-off between two attempts while Redis fails: `first`, doubled after each failure, at
/// most `max`. No jitter: one client per process, and a retry is one small round trip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The pause after the first failure.
    pub first: Duration,
    /// The longest pause.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            first: Duration::from_millis(500),
            max: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// The pause after `failures` consecutive failures (1: the first).
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.first
            .checked_mul(1 << doublings)
            .map_or(self.max, |d| d.min(self.max))
    }
}

/// What the operator decides about Redis faults.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StorePolicy {
    /// Back-off of reads and writes.
    pub retry: RetryPolicy,
    /// At start, how long shards whose snapshot cannot be read wait before they start new
    /// sessions anyway (losing whatever Discord would have replayed). `None` (the default):
    /// they wait until Redis answers.
    pub identify_anyway_after: Option<Duration>,
}

/// What the store glue reports (for logs and metrics; nothing to act on).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreEvent {
    /// Reading the snapshots at start failed for the first time; shards wait.
    ReadFailing {
        /// The error.
        reason: String,
        /// The shards waiting for their snapshot.
        shards: Vec<u32>,
        /// When the next attempt is.
        retry_in: Duration,
        /// When the waiting shards start new sessions anyway (`None`: never).
        identify_anyway_in: Option<Duration>,
    },
    /// Reading works again after failing.
    ReadRecovered {
        /// How long it failed.
        after: Duration,
        /// Failed attempts.
        failures: u32,
    },
    /// [`StorePolicy::identify_anyway_after`] passed: these shards start new sessions.
    IdentifyingAnyway {
        /// The shards.
        shards: Vec<u32>,
        /// How long they waited.
        waited: Duration,
    },
    /// Writing failed for the first time since it last worked.
    WritesFailing {
        /// The error.
        reason: String,
        /// When the next attempt is.
        retry_in: Duration,
        /// What a restart now would do, per shard whose saved snapshot is not current.
        at_risk: Vec<RestartRisk>,
    },
    /// Writing works again after failing; the latest values were written.
    WritesRecovered {
        /// How long it failed.
        after: Duration,
        /// Failed attempts.
        failures: u32,
        /// Keys written by the attempt that worked.
        written: usize,
    },
}

/// What a restart would do for one shard, while Redis holds an older snapshot than the shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestartRisk {
    /// Redis holds this session at an older sequence: a restart resumes from there and Discord
    /// replays the rest (duplicates, nothing lost).
    Behind {
        /// The shard.
        shard: u32,
        /// The sequence Redis holds.
        saved: u64,
        /// The confirmed sequence now.
        latest: u64,
    },
    /// Redis holds an older session (or none): a restart cannot resume the current one, so
    /// the events of the current session still unconfirmed at the restart would be lost.
    SessionUnsaved {
        /// The shard.
        shard: u32,
        /// The session Redis holds, if any.
        saved: Option<String>,
    },
}

impl fmt::Display for RestartRisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Behind {
                shard,
                saved,
                latest,
            } => write!(
                f,
                "shard {shard} would resume from sequence {saved} instead of {latest} \
                 (Discord replays the difference: duplicates, nothing lost)"
            ),
            Self::SessionUnsaved { shard, saved } => write!(
                f,
                "shard {shard}'s current session is not saved ({}): a restart could not resume \
                 it and would lose its events not yet confirmed by the broker",
                match saved {
                    Some(_) => "Redis holds an older session",
                    None => "Redis holds none",
                }
            ),
        }
    }
}

/// One step of [`SnapshotLoad`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoadAction {
    /// Read these shards' snapshots now, in order; report each with
    /// [`SnapshotLoad::handle_read`], and stop at the first failure with
    /// [`SnapshotLoad::handle_read_failed`].
    Read(Vec<u32>),
    /// Every shard's start is decided: start them. Emitted once; nothing follows.
    Start {
        /// Per shard: the snapshot to resume, or `None` to identify.
        sessions: BTreeMap<u32, Option<SessionSnapshot>>,
        /// The shards that identify because their snapshot could not be read
        /// ([`StorePolicy::identify_anyway_after`]), not because there was none.
        unread: Vec<u32>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LoadPhase {
    /// A `Read` is out; waiting for its results.
    Reading,
    /// Waiting to read again.
    RetryAt(Instant),
    /// `Start` was emitted.
    Done,
}

/// The start-up read of the snapshots (see the module docs).
///
/// Drive it like a shard: after `new` and after every `handle_*`, call
/// [`SnapshotLoad::poll_action`] until `None` and do each action, drain
/// [`SnapshotLoad::poll_event`], then wait for the read's results or until
/// [`SnapshotLoad::poll_timeout`] and call [`SnapshotLoad::handle_timeout`].
#[derive(Clone, Debug)]
pub struct SnapshotLoad {
    policy: StorePolicy,
    started: Instant,
    unread: BTreeSet<u32>,
    read: BTreeMap<u32, Option<SessionSnapshot>>,
    phase: LoadPhase,
    failures: u32,
    first_failure: Option<Instant>,
    actions: VecDeque<LoadAction>,
    events: VecDeque<StoreEvent>,
}

impl SnapshotLoad {
    /// A load of `shards`' snapshots, starting at `now` (the first action reads them all).
    pub fn new(shards: impl IntoIterator<Item = u32>, policy: StorePolicy, now: Instant) -> Self {
        let unread: BTreeSet<u32> = shards.into_iter().collect();
        let mut load = Self {
            policy,
            started: now,
            unread,
            read: BTreeMap::new(),
            phase: LoadPhase::Reading,
            failures: 0,
            first_failure: None,
            actions: VecDeque::new(),
            events: VecDeque::new(),
        };
        load.read_or_start(now);
        load
    }

    /// Shard `shard`'s snapshot was read (`None`: Redis holds no valid one).
    pub fn handle_read(&mut self, now: Instant, shard: u32, snapshot: Option<SessionSnapshot>) {
        if self.phase != LoadPhase::Reading || !self.unread.remove(&shard) {
            return;
        }
        self.read.insert(shard, snapshot);
        if self.unread.is_empty() {
            self.finish(now);
        }
    }

    /// The current read failed (the shards not reported yet stay unread).
    pub fn handle_read_failed(&mut self, now: Instant, reason: impl Into<String>) {
        if self.phase != LoadPhase::Reading {
            return;
        }
        self.failures += 1;
        let retry_in = self.policy.retry.delay(self.failures);
        if self.first_failure.is_none() {
            self.first_failure = Some(now);
            self.events.push_back(StoreEvent::ReadFailing {
                reason: reason.into(),
                shards: self.unread.iter().copied().collect(),
                retry_in,
                identify_anyway_in: self
                    .give_up_at()
                    .map(|at| at.saturating_duration_since(now)),
            });
        }
        self.phase = LoadPhase::RetryAt(now + retry_in);
        self.handle_timeout(now);
    }

    /// Time passed: reads again, or gives up waiting, when due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let LoadPhase::RetryAt(at) = self.phase
            && (now >= at || self.give_up_at().is_some_and(|g| now >= g))
        {
            self.read_or_start(now);
        }
    }

    /// The next thing to do.
    pub fn poll_action(&mut self) -> Option<LoadAction> {
        self.actions.pop_front()
    }

    /// The next event to log.
    pub fn poll_event(&mut self) -> Option<StoreEvent> {
        self.events.pop_front()
    }

    /// When to call [`SnapshotLoad::handle_timeout`] (`None` while a read is out or after the
    /// start).
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            LoadPhase::RetryAt(at) => Some(self.give_up_at().map_or(at, |g| g.min(at))),
            LoadPhase::Reading | LoadPhase::Done => None,
        }
    }

    /// Whether `Start` was emitted.
    pub fn is_done(&self) -> bool {
        self.phase == LoadPhase::Done
    }

    fn give_up_at(&self) -> Option<Instant> {
        self.policy
            .identify_anyway_after
            .map(|after| self.started + after)
    }

    fn read_or_start(&mut self, now: Instant) {
        if self.unread.is_empty() {
            self.finish(now);
        } else if self.give_up_at().is_some_and(|g| now >= g) && self.first_failure.is_some() {
            let shards: Vec<u32> = std::mem::take(&mut self.unread).into_iter().collect();
            self.events.push_back(StoreEvent::IdentifyingAnyway {
                shards: shards.clone(),
                waited: now.saturating_duration_since(self.started),
            });
            for &shard in &shards {
                self.read.insert(shard, None);
            }
            self.start(shards);
        } else {
            self.phase = LoadPhase::Reading;
            self.actions
                .push_back(LoadAction::Read(self.unread.iter().copied().collect()));
        }
    }

    fn finish(&mut self, now: Instant) {
        if let Some(since) = self.first_failure {
            self.events.push_back(StoreEvent::ReadRecovered {
                after: now.saturating_duration_since(since),
                failures: self.failures,
            });
        }
        self.start(Vec::new());
    }

    fn start(&mut self, unread: Vec<u32>) {
        self.phase = LoadPhase::Done;
        self.actions.push_back(LoadAction::Start {
            sessions: std::mem::take(&mut self.read),
            unread,
        });
    }
}

/// The latest values to write to Redis, and what to do when writing fails (see the module
/// docs).
///
/// Drive it: hand it values (`save_*`), then call [`StoreSync::poll_write`]; write the batch it
/// returns (at most one is out at a time) and report with [`StoreSync::handle_written`] or
/// [`StoreSync::handle_write_failed`]; drain [`StoreSync::poll_event`]; when it returns no
/// batch, wait for new values or until [`StoreSync::poll_timeout`] and poll again.
#[derive(Clone, Debug)]
pub struct StoreSync {
    policy: RetryPolicy,
    keys: KeyLayout,
    predecessor: PredecessorKeys,
    /// The latest value of each key not written yet.
    pending: BTreeMap<String, Vec<u8>>,
    /// The batch being written.
    in_flight: Option<Batch>,
    /// Session and sequence of each shard as Redis holds it (as far as this process knows).
    saved: BTreeMap<u32, (String, u64)>,
    /// Session and sequence of each shard's latest snapshot.
    latest: BTreeMap<u32, (String, u64)>,
    retry_at: Option<Instant>,
    failures: u32,
    failing_since: Option<Instant>,
    events: VecDeque<StoreEvent>,
}

#[derive(Clone, Debug)]
struct Batch {
    values: Vec<KeyValue>,
    sessions: BTreeMap<u32, (String, u64)>,
}

impl StoreSync {
    /// Writes under `keys`, keeping `profile`'s predecessor keys up to date too; `saved` is what
    /// the start-up read found in Redis (so the first [`RestartRisk`]s are right).
    pub fn new(
        keys: KeyLayout,
        profile: ProfileKind,
        policy: RetryPolicy,
        saved: impl IntoIterator<Item = SessionSnapshot>,
    ) -> Self {
        let predecessor = PredecessorKeys::new(profile, keys.prefix());
        let saved: BTreeMap<u32, (String, u64)> = saved
            .into_iter()
            .map(|s| (s.shard.number(), (s.session_id, s.sequence)))
            .collect();
        Self {
            policy,
            keys,
            predecessor,
            pending: BTreeMap::new(),
            in_flight: None,
            latest: saved.clone(),
            saved,
            retry_at: None,
            failures: 0,
            failing_since: None,
            events: VecDeque::new(),
        }
    }

    /// What the process writes when it starts (the predecessors' keys; `unix_ms`: the wall
    /// clock).
    pub fn save_start(&mut self, shard_count: u32, unix_ms: u64) {
        let values = self.predecessor.on_start(shard_count, unix_ms);
        self.pending.extend(values);
    }

    /// A new session snapshot.
    pub fn save_session(&mut self, snapshot: &SessionSnapshot) {
        let shard = snapshot.shard.number();
        self.pending
            .insert(self.keys.session(shard), store::encode_session(snapshot));
        let values = self.predecessor.on_session(snapshot);
        self.pending.extend(values);
        self.latest
            .insert(shard, (snapshot.session_id.clone(), snapshot.sequence));
    }

    /// A new shard status (`updated_at_ms` already stamped).
    pub fn save_status(&mut self, status: &ShardStatus) {
        self.pending
            .insert(self.keys.status(status.shard), store::encode_status(status));
        let values = self.predecessor.on_status(status);
        self.pending.extend(values);
    }

    /// The next batch to write: every pending key with its latest value, unless a batch is
    /// out, nothing is pending, or the back-off after a failure has not passed.
    pub fn poll_write(&mut self, now: Instant) -> Option<Vec<KeyValue>> {
        if self.in_flight.is_some()
            || self.pending.is_empty()
            || self.retry_at.is_some_and(|at| now < at)
        {
            return None;
        }
        self.retry_at = None;
        let values: Vec<KeyValue> = std::mem::take(&mut self.pending).into_iter().collect();
        let sessions = self
            .latest
            .iter()
            .filter(|(shard, _)| values.iter().any(|(k, _)| *k == self.keys.session(**shard)))
            .map(|(shard, s)| (*shard, s.clone()))
            .collect();
        self.in_flight = Some(Batch {
            values: values.clone(),
            sessions,
        });
        Some(values)
    }

    /// The batch from [`StoreSync::poll_write`] was written.
    pub fn handle_written(&mut self, now: Instant) {
        let Some(batch) = self.in_flight.take() else {
            return;
        };
        self.saved.extend(batch.sessions);
        if let Some(since) = self.failing_since.take() {
            self.events.push_back(StoreEvent::WritesRecovered {
                after: now.saturating_duration_since(since),
                failures: self.failures,
                written: batch.values.len(),
            });
        }
        self.failures = 0;
    }

    /// The batch from [`StoreSync::poll_write`] failed: its values are kept (unless newer
    /// ones arrived meanwhile) and written again after the back-off.
    pub fn handle_write_failed(&mut self, now: Instant, reason: impl Into<String>) {
        let Some(batch) = self.in_flight.take() else {
            return;
        };
        for (key, value) in batch.values {
            self.pending.entry(key).or_insert(value);
        }
        self.failures += 1;
        let retry_in = self.policy.delay(self.failures);
        self.retry_at = Some(now + retry_in);
        if self.failing_since.is_none() {
            self.failing_since = Some(now);
            self.events.push_back(StoreEvent::WritesFailing {
                reason: reason.into(),
                retry_in,
                at_risk: self.restart_risks(),
            });
        }
    }

    /// The process is about to stop: the next [`StoreSync::poll_write`] writes at once,
    /// whatever the back-off (the final snapshots should reach Redis if it is back).
    pub fn expedite(&mut self) {
        self.retry_at = None;
    }

    /// When the next retry is due (`None`: no retry waiting).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.pending.is_empty() || self.in_flight.is_some() {
            None
        } else {
            self.retry_at
        }
    }

    /// The next event to log.
    pub fn poll_event(&mut self) -> Option<StoreEvent> {
        self.events.pop_front()
    }

    /// Whether everything handed over was written (nothing pending, nothing out).
    pub fn is_settled(&self) -> bool {
        self.pending.is_empty() && self.in_flight.is_none()
    }

    /// Whether writes are failing now (since the last failure, none worked).
    pub fn is_failing(&self) -> bool {
        self.failing_since.is_some()
    }

    /// What a restart now would do, per shard whose saved snapshot is older than its latest.
    pub fn restart_risks(&self) -> Vec<RestartRisk> {
        self.latest
            .iter()
            .filter_map(|(&shard, (id, latest))| match self.saved.get(&shard) {
                Some((saved_id, saved)) if saved_id == id => {
                    (saved < latest).then_some(RestartRisk::Behind {
                        shard,
                        saved: *saved,
                        latest: *latest,
                    })
                }
                other => Some(RestartRisk::SessionUnsaved {
                    shard,
                    saved: other.map(|(id, _)| id.clone()),
                }),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
