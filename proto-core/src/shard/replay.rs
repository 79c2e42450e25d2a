//! The publications a warming shard (not publishing, cluster mode's re-shard) would have
//! published lately, kept to publish them first when it is told to publish.
//!
//! Owns: which of them are kept (those of the last [`ReplayLimits::window`], at most
//! [`ReplayLimits::max_events`] and [`ReplayLimits::max_bytes`] of bodies, dropping the
//! oldest). Does not own publishing or the confirm bookkeeping: their sequences were confirmed
//! when they were received, so publishing them again never moves the saved sequence.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::profile::Publication;

/// How much a warming shard keeps of what it would have published (see
/// [`super::Shard::set_publishing`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplayLimits {
    /// Publications received at most this long before publishing starts are published then
    /// (zero: none).
    pub window: Duration,
    /// At most this many are kept (the oldest are dropped).
    pub max_events: usize,
    /// At most this many bytes of bodies are kept (the oldest are dropped).
    pub max_bytes: usize,
}

impl Default for ReplayLimits {
    /// Nothing kept (window zero), 10,000 events and 16 MiB once a window is set.
    fn default() -> Self {
        Self {
            window: Duration::ZERO,
            max_events: 10_000,
            max_bytes: 16 << 20,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Replay {
    /// (received at, sequence, publication), oldest first.
    kept: VecDeque<(Instant, u64, Publication)>,
    bytes: usize,
}

impl Replay {
    /// Keeps a publication received at `now`, then drops what the limits no longer allow.
    pub(crate) fn keep(&mut self, limits: &ReplayLimits, now: Instant, seq: u64, p: Publication) {
        if limits.window.is_zero() || limits.max_events == 0 || p.body.len() > limits.max_bytes {
            self.prune(limits, now);
            return;
        }
        self.bytes += p.body.len();
        self.kept.push_back((now, seq, p));
        self.prune(limits, now);
    }

    fn prune(&mut self, limits: &ReplayLimits, now: Instant) {
        while let Some((at, _, p)) = self.kept.front() {
            let expired = now.saturating_duration_since(*at) > limits.window;
            if !expired && self.kept.len() <= limits.max_events && self.bytes <= limits.max_bytes {
                break;
            }
            self.bytes -= p.body.len();
            self.kept.pop_front();
        }
    }

    /// Takes what is still within the limits at `now`, oldest first, leaving nothing kept.
    pub(crate) fn take(
        &mut self,
        limits: &ReplayLimits,
        now: Instant,
    ) -> impl Iterator<Item = (u64, Publication)> + use<> {
        self.prune(limits, now);
        self.bytes = 0;
        std::mem::take(&mut self.kept)
            .into_iter()
            .map(|(_, seq, p)| (seq, p))
    }

    /// Forgets everything kept.
    pub(crate) fn clear(&mut self) {
        self.kept.clear();
        self.bytes = 0;
    }
}
