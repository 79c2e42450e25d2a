//! What happened in a shard that the runtime may want to log or count, but need not act on.
//!
//! Owns: the [`ShardEvent`] vocabulary and the bounded queue behind [`super::Shard::poll_event`].
//! Does not own anything the runtime must *do* (that is [`super::Action`]); ignoring every
//! event is always correct, only less observable.

use std::collections::VecDeque;
use std::time::Duration;

use crate::profile::RouteError;

use super::{DisconnectReason, Session};

/// How many undrained events a shard keeps. A runtime that drains after every input never
/// comes close (one input causes a handful at most); past this, the oldest are discarded so a
/// runtime that never drains cannot grow the shard's memory.
pub const EVENT_QUEUE_CAPACITY: usize = 64;

/// Something noteworthy that happened, for logs and metrics. New variants may be added: match
/// with a wildcard arm.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShardEvent {
    /// READY arrived: a new session (its sequence starts from scratch).
    Ready {
        /// The session's id and resume URL.
        session: Session,
    },
    /// RESUMED arrived: the session continues; Discord replayed what was missed.
    Resumed {
        /// The latest sequence received when RESUMED arrived.
        sequence: Option<u64>,
    },
    /// The connection ended and the shard will connect again.
    Reconnecting {
        /// Why the connection ended.
        reason: DisconnectReason,
        /// Connection attempts since the last READY/RESUMED, this one included.
        attempt: u32,
        /// How long the shard waits before connecting (zero: at once).
        delay: Duration,
        /// Whether it will RESUME (true) or IDENTIFY afresh (false).
        resume: bool,
    },
    /// Every guild READY listed as unavailable has arrived (GUILD_CREATE), or the session
    /// was taken over by RESUME (Discord replays what was missed).
    GuildsArrived,
    /// A dispatch could not be turned into a message and was not published. It still counts
    /// as handled: the confirmed sequence moves past it, so it is never replayed.
    DispatchDropped {
        /// Its sequence number.
        seq: u64,
        /// Its event name.
        event: String,
        /// Why it could not be published.
        reason: RouteError,
    },
    /// Discord sent an opcode the shard does not know; it was ignored.
    UnknownOpcode {
        /// The opcode.
        op: u8,
    },
    /// Publishing started ([`super::Shard::set_publishing`]); first the publications kept
    /// while not publishing (within [`super::ShardConfig::replay`]).
    PublishingStarted {
        /// How many were kept and are published again.
        replayed: usize,
        /// The sequence of the oldest of them.
        from_seq: Option<u64>,
    },
}

/// A FIFO of at most [`EVENT_QUEUE_CAPACITY`] events that drops the oldest when full.
#[derive(Debug, Default)]
pub(super) struct EventQueue {
    events: VecDeque<ShardEvent>,
}

impl EventQueue {
    pub(super) fn push(&mut self, event: ShardEvent) {
        if self.events.len() >= EVENT_QUEUE_CAPACITY {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    pub(super) fn pop(&mut self) -> Option<ShardEvent> {
        self.events.pop_front()
    }

    /// Gives the queue's memory back if nothing waits in it.
    pub(super) fn release_if_empty(&mut self) {
        if self.events.is_empty() {
            self.events = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_when_nobody_drains() {
        let mut q = EventQueue::default();
        for op in 0..=255u8 {
            q.push(ShardEvent::UnknownOpcode { op });
        }
        let left: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(left.len(), EVENT_QUEUE_CAPACITY);
        assert_eq!(
            left.first(),
            Some(&ShardEvent::UnknownOpcode {
                op: (256 - EVENT_QUEUE_CAPACITY) as u8
            })
        );
        assert_eq!(left.last(), Some(&ShardEvent::UnknownOpcode { op: 255 }));
    }
}
