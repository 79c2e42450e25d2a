//! The shard's named deadlines: one optional `Instant` per [`Timer`].
//!
//! Owns: storing, clearing and ordering deadlines. Does not decide what happens when one
//! expires (the shard does, in `handle_timeout`).

use std::time::Instant;

/// A deadline of the shard; [`super::Shard::timeout_reason`] names the next one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Timer {
    /// Send the next periodic heartbeat (or, if the last one is unacknowledged, declare the
    /// connection a zombie).
    Heartbeat,
    /// HELLO did not arrive in time after the socket opened.
    HelloDeadline,
    /// Open the next connection (back-off or invalid-session wait is over).
    Reconnect,
    /// The send window has room for queued commands again.
    CommandWindow,
    /// Write the throttled session snapshot.
    Persist,
    /// Stop waiting for publisher confirms during shutdown.
    ShutdownGrace,
}

impl Timer {
    /// Every timer, in the order `handle_timeout` serves expired ones.
    pub const ALL: [Timer; 6] = [
        Timer::ShutdownGrace,
        Timer::HelloDeadline,
        Timer::Heartbeat,
        Timer::Reconnect,
        Timer::CommandWindow,
        Timer::Persist,
    ];

    const fn index(self) -> usize {
        match self {
            Timer::Heartbeat => 0,
            Timer::HelloDeadline => 1,
            Timer::Reconnect => 2,
            Timer::CommandWindow => 3,
            Timer::Persist => 4,
            Timer::ShutdownGrace => 5,
        }
    }
}

/// One optional deadline per timer.
#[derive(Clone, Debug, Default)]
pub(crate) struct TimerTable([Option<Instant>; 6]);

impl TimerTable {
    pub(crate) fn set(&mut self, timer: Timer, at: Instant) {
        self.0[timer.index()] = Some(at);
    }

    pub(crate) fn clear(&mut self, timer: Timer) {
        self.0[timer.index()] = None;
    }

    pub(crate) fn get(&self, timer: Timer) -> Option<Instant> {
        self.0[timer.index()]
    }

    pub(crate) fn is_set(&self, timer: Timer) -> bool {
        self.get(timer).is_some()
    }

    pub(crate) fn is_expired(&self, timer: Timer, now: Instant) -> bool {
        self.get(timer).is_some_and(|at| at <= now)
    }

    /// The earliest deadline and its timer.
    pub(crate) fn next(&self) -> Option<(Timer, Instant)> {
        Timer::ALL
            .iter()
            .filter_map(|&t| self.get(t).map(|at| (t, at)))
            .min_by_key(|&(_, at)| at)
    }

    pub(crate) fn clear_all(&mut self) {
        self.0 = [None; 6];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn next_is_the_earliest() {
        let t0 = crate::tests::epoch();
        let mut t = TimerTable::default();
        assert_eq!(t.next(), None);
        t.set(Timer::Persist, t0 + Duration::from_secs(3));
        t.set(Timer::Heartbeat, t0 + Duration::from_secs(1));
        assert_eq!(
            t.next(),
            Some((Timer::Heartbeat, t0 + Duration::from_secs(1)))
        );
        assert!(t.is_expired(Timer::Heartbeat, t0 + Duration::from_secs(1)));
        assert!(!t.is_expired(Timer::Persist, t0 + Duration::from_secs(1)));
        t.clear(Timer::Heartbeat);
        assert_eq!(
            t.next(),
            Some((Timer::Persist, t0 + Duration::from_secs(3)))
        );
        t.clear_all();
        assert!(!t.is_set(Timer::Persist));
    }
}
