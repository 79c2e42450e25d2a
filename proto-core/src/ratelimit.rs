//! The per-connection send limit: at most 120 frames per 60 s, heartbeats always fit.
//!
//! Owns: the sliding-window log of what one connection sent, and the split of its budget into
//! permits reserved for heartbeats (and the one IDENTIFY/RESUME of a connection) and permits
//! for everything else. Pure: time is an argument, no timers here; the shard turns
//! [`SendWindow::next_command_slot`] into one of its own timers. Does not queue commands (the
//! shard does) and knows nothing about the identify limit (see [`crate::identify`]).
//!
//! Discord counts *every* frame a client sends, heartbeats included, and closes with 4008 when
//! a connection sends more than 120 in 60 s (PROTOCOL.md §9.1). Like twilight we reserve
//! `ceil(60 s / heartbeat_interval) + 1` permits for heartbeats, plus one for the IDENTIFY or
//! RESUME that opens each connection.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Frames Discord allows per window on one connection.
pub const FRAMES_PER_WINDOW: usize = 120;

/// The length of Discord's window.
pub const WINDOW: Duration = Duration::from_secs(60);

/// Permits reserved when no heartbeat interval is known yet (HELLO not received).
const DEFAULT_RESERVED: usize = 4;

/// The sending log of one connection. Reset it for every new connection.
#[derive(Clone, Debug)]
pub struct SendWindow {
    /// When each frame still inside the window was sent, oldest first.
    sent: VecDeque<Instant>,
    limit: usize,
    period: Duration,
    reserved: usize,
}

impl Default for SendWindow {
    fn default() -> Self {
        Self::new(FRAMES_PER_WINDOW, WINDOW)
    }
}

impl SendWindow {
    /// A window of `limit` frames per `period` (Discord: [`FRAMES_PER_WINDOW`] per [`WINDOW`]).
    pub fn new(limit: usize, period: Duration) -> Self {
        Self {
            // Grows with use: an idle shard sends a heartbeat or two per window, and a full
            // window's 120 instants (1.9 KiB) on every shard is memory per idle shard.
            sent: VecDeque::new(),
            limit,
            period,
            reserved: DEFAULT_RESERVED.min(limit),
        }
    }

    /// Permits kept for heartbeats and the connection's IDENTIFY/RESUME, for a heartbeat
    /// interval: `ceil(period / interval) + 1 + 1`, at most the whole limit.
    pub fn reserved_for(&self, heartbeat_interval: Duration) -> usize {
        let interval = heartbeat_interval.as_nanos().max(1);
        let beats = self.period.as_nanos().div_ceil(interval);
        usize::try_from(beats)
            .unwrap_or(usize::MAX)
            .saturating_add(2)
            .min(self.limit)
    }

    /// Sets the reservation from HELLO's heartbeat interval.
    pub fn set_heartbeat_interval(&mut self, interval: Duration) {
        self.reserved = self.reserved_for(interval);
    }

    /// Permits currently reserved for heartbeats.
    pub fn reserved(&self) -> usize {
        self.reserved
    }

    /// Forgets everything sent: a new connection starts with an empty window.
    pub fn reset(&mut self) {
        self.sent.clear();
    }

    /// Frames sent within the window ending at `now`.
    pub fn used(&mut self, now: Instant) -> usize {
        self.prune(now);
        self.sent.len()
    }

    /// Whether a heartbeat (or the connection's IDENTIFY/RESUME) may be sent at `now`.
    pub fn can_send_priority(&mut self, now: Instant) -> bool {
        self.used(now) < self.limit
    }

    /// Whether any other frame may be sent at `now` without touching the reserved permits.
    pub fn can_send_command(&mut self, now: Instant) -> bool {
        self.used(now) < self.command_budget()
    }

    /// Frames other than heartbeats allowed per window.
    pub fn command_budget(&self) -> usize {
        self.limit - self.reserved
    }

    /// Records a frame sent at `now`.
    pub fn record(&mut self, now: Instant) {
        self.prune(now);
        self.sent.push_back(now);
    }

    /// The earliest instant at which [`Self::can_send_priority`] holds.
    pub fn next_priority_slot(&mut self, now: Instant) -> Option<Instant> {
        self.next_slot(now, self.limit)
    }

    /// The earliest instant at which [`Self::can_send_command`] holds; `None` when the whole
    /// budget is reserved.
    pub fn next_command_slot(&mut self, now: Instant) -> Option<Instant> {
        self.next_slot(now, self.command_budget())
    }

    fn next_slot(&mut self, now: Instant, budget: usize) -> Option<Instant> {
        if budget == 0 {
            return None;
        }
        let used = self.used(now);
        if used < budget {
            return Some(now);
        }
        // The count drops below `budget` once the oldest `used - budget + 1` frames expired.
        self.sent.get(used - budget).map(|&t| t + self.period)
    }

    fn prune(&mut self, now: Instant) {
        while let Some(&t) = self.sent.front() {
            if t + self.period <= now {
                self.sent.pop_front();
            } else {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservation_follows_the_interval() {
        let w = SendWindow::default();
        // twilight's example: 41.25 s -> ceil(1.45) + 1 = 3 heartbeats, + 1 for IDENTIFY.
        assert_eq!(w.reserved_for(Duration::from_millis(41_250)), 4);
        assert_eq!(w.reserved_for(Duration::from_secs(60)), 3);
        assert_eq!(w.reserved_for(Duration::from_secs(1)), 62);
        assert_eq!(w.reserved_for(Duration::from_millis(1)), 120);
        assert_eq!(w.reserved_for(Duration::ZERO), 120);
    }

    #[test]
    fn commands_stop_at_the_budget_and_heartbeats_still_fit() {
        let t0 = crate::tests::epoch();
        let mut w = SendWindow::default();
        w.set_heartbeat_interval(Duration::from_millis(41_250));
        for i in 0..116 {
            assert!(w.can_send_command(t0), "command {i}");
            w.record(t0);
        }
        assert!(!w.can_send_command(t0));
        assert!(w.can_send_priority(t0));
        assert_eq!(w.next_command_slot(t0), Some(t0 + WINDOW));
        for _ in 0..4 {
            assert!(w.can_send_priority(t0));
            w.record(t0);
        }
        assert!(!w.can_send_priority(t0));
        assert_eq!(w.next_priority_slot(t0), Some(t0 + WINDOW));
        // The window slides: a minute later everything is free again.
        assert_eq!(w.used(t0 + WINDOW), 0);
    }

    #[test]
    fn next_slot_is_when_the_right_frame_expires() {
        let t0 = crate::tests::epoch();
        let mut w = SendWindow::new(3, Duration::from_secs(10));
        w.reserved = 1; // budget 2
        w.record(t0);
        w.record(t0 + Duration::from_secs(2));
        w.record(t0 + Duration::from_secs(4));
        let now = t0 + Duration::from_secs(5);
        assert_eq!(w.next_command_slot(now), Some(t0 + Duration::from_secs(12)));
        assert_eq!(
            w.next_priority_slot(now),
            Some(t0 + Duration::from_secs(10))
        );
        w.reset();
        assert_eq!(w.next_command_slot(now), Some(now));
        w.reserved = 3;
        assert_eq!(w.next_command_slot(now), None);
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whoever follows `can_send_*` never exceeds the limit in any window, and commands
        /// never eat the reserved permits.
        #[test]
        fn never_more_than_the_limit_in_any_window(
            interval_ms in 1_000u64..60_000,
            steps in prop::collection::vec((0u64..3_000, any::<bool>()), 1..600),
        ) {
            let t0 = crate::tests::epoch();
            let mut w = SendWindow::default();
            w.set_heartbeat_interval(Duration::from_millis(interval_ms));
            let mut now = t0;
            let mut sent: Vec<(Instant, bool)> = Vec::new();
            for (gap, priority) in steps {
                now += Duration::from_millis(gap);
                let ok = if priority { w.can_send_priority(now) } else { w.can_send_command(now) };
                if ok {
                    w.record(now);
                    sent.push((now, priority));
                } else {
                    let next = if priority { w.next_priority_slot(now) } else { w.next_command_slot(now) };
                    prop_assert!(next.is_none_or(|t| t > now));
                }
            }
            for (i, (t, _)) in sent.iter().enumerate() {
                let in_window = sent[i..].iter().take_while(|(u, _)| *u < *t + WINDOW);
                let (mut all, mut commands) = (0, 0);
                for (_, priority) in in_window {
                    all += 1;
                    if !priority { commands += 1; }
                }
                prop_assert!(all <= FRAMES_PER_WINDOW);
                prop_assert!(commands <= w.command_budget());
            }
        }
    }
}
