//! Heartbeat bookkeeping of one connection: interval, the unacknowledged beat, latency.
//!
//! Owns: the numbers behind zombie detection and the latency getter. Does not send anything or
//! arm timers (the shard does), and knows nothing about the rate limit.

use std::time::{Duration, Instant};

/// The shortest heartbeat interval the shard accepts from HELLO; a smaller (hostile or broken)
/// value is raised to this, so the shard can neither spin nor exceed the send limit.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// The longest heartbeat interval the shard accepts from HELLO.
pub(crate) const MAX_INTERVAL: Duration = Duration::from_secs(3600);

/// The interval used when HELLO carries none (Discord's production value).
pub(crate) const FALLBACK_INTERVAL: Duration = Duration::from_millis(41_250);

#[derive(Clone, Debug, Default)]
pub(crate) struct Heartbeat {
    /// HELLO's interval, on this connection.
    interval: Option<Duration>,
    /// A periodic heartbeat was sent and no ACK arrived since.
    awaiting_ack: bool,
    /// When the latest heartbeat (periodic or requested) was sent, until its ACK.
    sent_at: Option<Instant>,
    /// The round trip of the latest acknowledged heartbeat (kept across connections).
    latency: Option<Duration>,
    /// When the latest ACK arrived (kept across connections).
    last_ack: Option<Instant>,
}

impl Heartbeat {
    /// A new connection: forget everything but the last latency.
    pub(crate) fn reset(&mut self) {
        *self = Heartbeat {
            latency: self.latency,
            last_ack: self.last_ack,
            ..Heartbeat::default()
        };
    }

    /// Sets HELLO's interval (clamped to a sane range) and returns it.
    pub(crate) fn start(&mut self, interval_ms: Option<u64>) -> Duration {
        let interval = interval_ms
            .map(Duration::from_millis)
            .unwrap_or(FALLBACK_INTERVAL)
            .clamp(MIN_INTERVAL, MAX_INTERVAL);
        self.interval = Some(interval);
        interval
    }

    pub(crate) fn interval(&self) -> Option<Duration> {
        self.interval
    }

    /// Whether the previous periodic heartbeat is still unacknowledged (zombie if it is time
    /// for the next one).
    pub(crate) fn awaiting_ack(&self) -> bool {
        self.awaiting_ack
    }

    /// A periodic heartbeat went out.
    pub(crate) fn sent_periodic(&mut self, now: Instant) {
        self.awaiting_ack = true;
        self.sent_at = Some(now);
    }

    /// A heartbeat requested by the server (op 1) went out: not counted for zombie detection.
    pub(crate) fn sent_requested(&mut self, now: Instant) {
        self.sent_at = Some(now);
    }

    /// An ACK arrived. Returns false if nothing was waiting for one (unrequested ACK).
    pub(crate) fn acked(&mut self, now: Instant) -> bool {
        let Some(sent) = self.sent_at.take() else {
            return false;
        };
        self.awaiting_ack = false;
        self.latency = Some(now.saturating_duration_since(sent));
        self.last_ack = Some(now);
        true
    }

    pub(crate) fn last_ack(&self) -> Option<Instant> {
        self.last_ack
    }

    pub(crate) fn latency(&self) -> Option<Duration> {
        self.latency
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_measures_latency_and_clears_the_wait() {
        let t0 = crate::tests::epoch();
        let mut h = Heartbeat::default();
        assert_eq!(h.start(Some(41_250)), Duration::from_millis(41_250));
        assert!(!h.acked(t0), "unrequested ACK");
        h.sent_periodic(t0);
        assert!(h.awaiting_ack());
        assert!(h.acked(t0 + Duration::from_millis(80)));
        assert!(!h.awaiting_ack());
        assert_eq!(h.latency(), Some(Duration::from_millis(80)));
        assert_eq!(h.last_ack(), Some(t0 + Duration::from_millis(80)));
        h.reset();
        assert_eq!(h.latency(), Some(Duration::from_millis(80)));
        assert_eq!(h.interval(), None);
    }

    #[test]
    fn interval_is_clamped() {
        let mut h = Heartbeat::default();
        assert_eq!(h.start(Some(0)), MIN_INTERVAL);
        assert_eq!(h.start(Some(u64::MAX)), MAX_INTERVAL);
        assert_eq!(h.start(None), FALLBACK_INTERVAL);
    }

    #[test]
    fn requested_heartbeat_is_not_awaited() {
        let t0 = crate::tests::epoch();
        let mut h = Heartbeat::default();
        h.sent_requested(t0);
        assert!(!h.awaiting_ack());
        assert!(h.acked(t0 + Duration::from_millis(5)));
    }
}
