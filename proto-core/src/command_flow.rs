//! The flow of worker commands from the broker consumer to the shards: one lane per shard with
//! bounded room, the rate limit of worker-requested reconnects, and the verdict on a delivery
//! once its shards answered.
//!
//! Owns the decisions that keep one shard's trouble (a reconnect, a flood of commands waiting
//! for Discord's 120 per 60 s) from stalling the commands of the other shards of the process:
//!
//! - [`CommandLanes`]: the consumer never waits for a shard. It puts each command in the
//!   target shard's lane (at most `capacity` commands wait there, unacknowledged, in order) and
//!   takes the next delivery at once. A command for a full lane is not waited for or sent
//!   back to the queue (where it would sit in front of the other shards' commands again): it
//!   is refused, dead-lettered with the reason. The consumer's prefetch
//!   ([`CommandLanes::prefetch`]) is larger than all lanes together, so full lanes never use
//!   up the deliveries the broker hands out and other shards' commands keep arriving.
//! - [`lane_step`]: what a lane does with a shard's answer (retry a full rate-limit queue after
//!   [`QUEUE_FULL_RETRY`], or finish the command).
//! - [`CommandLanes::allow_reconnect`]: at most one worker-requested reconnect per shard per
//!   [`RECONNECT_INTERVAL`].
//! - [`verdict`]: acknowledge, dead-letter (refusals are never counted as sent) or requeue.
//!
//! Does not own what a command means or which shards it targets (the profiles,
//! [`crate::profile::Router::decode_command`]), validation ([`crate::command`]), or the
//! 120-per-60-s window (the shard).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::shard::UsageError;

/// How long a lane waits before offering a command again to a shard whose rate-limit queue is
/// full (the queue frees one place per sent command, about one every 0.5 s).
pub const QUEUE_FULL_RETRY: Duration = Duration::from_millis(250);

/// How long a delivery for a shutting-down shard is held before it goes back to the queue: the
/// broker would hand it straight back otherwise, in a loop, until the process is gone.
pub const REQUEUE_DELAY: Duration = Duration::from_millis(250);

/// The shortest time between two worker-requested reconnects of one shard. A reconnect closes
/// the connection and resumes; a worker (or several, each asking) that loops on it would keep
/// the shard from ever receiving events.
pub const RECONNECT_INTERVAL: Duration = Duration::from_secs(10);

/// Deliveries the consumer may hold beyond the lanes: the one being decoded, commands being
/// forwarded or dead-lettered, and commands for other processes.
pub const PREFETCH_RESERVE: u16 = 32;

/// What one shard's lane says about one command, once finished.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShardAnswer {
    /// The shard queued it for sending.
    Queued,
    /// The shard can never send it (larger than 4096 bytes as sent, or not encodable for the
    /// connection): the reason.
    Refused(String),
    /// The shard's lane was full: this many commands were waiting.
    LaneFull(usize),
    /// The shard is shutting down (another process can take the command).
    Stopping,
    /// The shard stopped for good, or this process does not run it.
    Gone,
    /// A reconnect within [`RECONNECT_INTERVAL`] of the previous one.
    ReconnectLimited,
}

impl ShardAnswer {
    /// Why the shard did not take the command (`None` for [`ShardAnswer::Queued`]).
    pub fn reason(&self, shard: u32) -> Option<String> {
        Some(match self {
            Self::Queued => return None,
            Self::Refused(reason) => format!("shard {shard} refused the command: {reason}"),
            Self::LaneFull(waiting) => format!(
                "shard {shard} has {waiting} commands waiting for Discord's rate limit already; \
                 send fewer, or spread them over time"
            ),
            Self::Stopping => format!("shard {shard} is shutting down"),
            Self::Gone => format!("shard {shard} is not running"),
            Self::ReconnectLimited => format!(
                "shard {shard} reconnected less than {} s ago; at most one reconnect per {} s",
                RECONNECT_INTERVAL.as_secs(),
                RECONNECT_INTERVAL.as_secs()
            ),
        })
    }
}

/// What a lane does after offering a command to its shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LaneStep {
    /// The command is finished with this answer.
    Done(ShardAnswer),
    /// Offer it again after this pause (the shard's rate-limit queue is full).
    Retry(Duration),
}

/// What a lane does with the shard's answer to `Shard::send_command` (`None`: the shard task
/// is gone and did not answer).
pub fn lane_step(answer: Option<Result<(), UsageError>>) -> LaneStep {
    LaneStep::Done(match answer {
        Some(Ok(())) => ShardAnswer::Queued,
        Some(Err(UsageError::QueueFull)) => return LaneStep::Retry(QUEUE_FULL_RETRY),
        Some(Err(UsageError::ShuttingDown)) => ShardAnswer::Stopping,
        Some(Err(e @ (UsageError::PayloadTooLarge | UsageError::Unencodable(_)))) => {
            ShardAnswer::Refused(e.to_string())
        }
        None => ShardAnswer::Gone,
    })
}

/// What to tell the broker about a delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// At least one shard queued it: acknowledge. `missed` lists the shards that did not, with
    /// why (for the log).
    Ack {
        /// Shards that did not queue it, and why.
        missed: Vec<(u32, String)>,
    },
    /// No shard will send it: dead-letter it with this reason (where the profile has a
    /// dead-letter exchange), log it, then acknowledge.
    Reject(String),
    /// No shard took it, but another process (or this one, restarted) can: requeue it after
    /// [`REQUEUE_DELAY`].
    Requeue,
}

/// The verdict on a delivery from each target shard's answer. A refusal is never an
/// acknowledgement as sent: with no shard queueing it, a refusal or a full lane dead-letters
/// it; only shutting-down shards send it back to the queue.
pub fn verdict(answers: &[(u32, ShardAnswer)]) -> Verdict {
    let missed: Vec<(u32, String)> = answers
        .iter()
        .filter_map(|(shard, answer)| answer.reason(*shard).map(|r| (*shard, r)))
        .collect();
    if answers.is_empty() || answers.iter().any(|(_, a)| *a == ShardAnswer::Queued) {
        return Verdict::Ack { missed };
    }
    let first = |wanted: fn(&ShardAnswer) -> bool| {
        answers
            .iter()
            .find(|(_, a)| wanted(a))
            .and_then(|(shard, a)| a.reason(*shard))
    };
    if let Some(reason) = first(|a| matches!(a, ShardAnswer::Refused(_))) {
        return Verdict::Reject(reason);
    }
    if answers.iter().any(|(_, a)| *a == ShardAnswer::Stopping) {
        return Verdict::Requeue;
    }
    let reasons: Vec<String> = missed.into_iter().map(|(_, r)| r).collect();
    Verdict::Reject(reasons.join("; "))
}

/// The lanes of the shards of one process: how many commands wait in each, and when each
/// last reconnected on a worker's request. Shared by the consumer (which admits) and the lanes
/// (which finish).
#[derive(Clone, Debug)]
pub struct CommandLanes {
    capacity: usize,
    waiting: BTreeMap<u32, usize>,
    last_reconnect: BTreeMap<u32, Instant>,
}

impl CommandLanes {
    /// Lanes for `shards`, each holding at most `capacity` commands (at least 1).
    pub fn new(shards: impl IntoIterator<Item = u32>, capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            waiting: shards.into_iter().map(|s| (s, 0)).collect(),
            last_reconnect: BTreeMap::new(),
        }
    }

    /// The consumer's prefetch: room for every lane full plus [`PREFETCH_RESERVE`] (at most
    /// `u16::MAX`), so that full lanes never stop the broker from delivering.
    pub fn prefetch(&self) -> u16 {
        let lanes = self.capacity.saturating_mul(self.waiting.len());
        u16::try_from(lanes)
            .unwrap_or(u16::MAX)
            .saturating_add(PREFETCH_RESERVE)
    }

    /// Takes a place in `shard`'s lane, or says why not ([`ShardAnswer::LaneFull`],
    /// [`ShardAnswer::Gone`] for a shard these lanes do not have).
    pub fn admit(&mut self, shard: u32) -> Result<(), ShardAnswer> {
        let waiting = self.waiting.get_mut(&shard).ok_or(ShardAnswer::Gone)?;
        if *waiting >= self.capacity {
            return Err(ShardAnswer::LaneFull(*waiting));
        }
        *waiting += 1;
        Ok(())
    }

    /// A command of `shard`'s lane is finished: its place is free.
    pub fn finish(&mut self, shard: u32) {
        if let Some(waiting) = self.waiting.get_mut(&shard) {
            *waiting = waiting.saturating_sub(1);
        }
    }

    /// Commands in `shard`'s lane.
    pub fn waiting(&self, shard: u32) -> usize {
        self.waiting.get(&shard).copied().unwrap_or(0)
    }

    /// Commands in every lane.
    pub fn total_waiting(&self) -> usize {
        self.waiting.values().sum()
    }

    /// Whether a worker-requested reconnect of `shard` may happen at `now` (and if so, counts
    /// it): at most one per [`RECONNECT_INTERVAL`].
    pub fn allow_reconnect(&mut self, now: Instant, shard: u32) -> Result<(), ShardAnswer> {
        if !self.waiting.contains_key(&shard) {
            return Err(ShardAnswer::Gone);
        }
        if let Some(last) = self.last_reconnect.get(&shard)
            && now.saturating_duration_since(*last) < RECONNECT_INTERVAL
        {
            return Err(ShardAnswer::ReconnectLimited);
        }
        self.last_reconnect.insert(shard, now);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
