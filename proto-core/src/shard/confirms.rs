//! Publisher-confirm bookkeeping: which published dispatches the broker holds.
//!
//! Owns: the highest *contiguous* confirmed sequence of the current session (what a restarted
//! process may resume from without losing an event) and the count of unconfirmed publications
//! and the count and bytes of unconfirmed publications (for backpressure). Does not publish,
//! persist or decide anything.
//!
//! Publications are tracked in publish order. A confirm marks one; the confirmed sequence then
//! advances over the unbroken run of confirmed publications at the front. When a new session
//! starts (READY), the previous session's unconfirmed publications still count for
//! backpressure but no longer hold the new session's sequence back.

use std::collections::{BTreeMap, VecDeque};

#[derive(Clone, Copy, Debug)]
struct Entry {
    /// The publish id; a skipped dispatch repeats the id published before it, so ids never
    /// decrease along the queue.
    id: u64,
    seq: u64,
    /// The body's size (0 for a skipped dispatch).
    bytes: usize,
    confirmed: bool,
    skipped: bool,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Confirms {
    /// The current session's publications, oldest first, up to the first unconfirmed one
    /// and everything after it.
    current: VecDeque<Entry>,
    current_unconfirmed: usize,
    /// Unconfirmed publications of earlier sessions and replayed ones, with their sizes.
    stale: BTreeMap<u64, usize>,
    /// The bytes of every unconfirmed publication, of this session and earlier ones.
    unconfirmed_bytes: usize,
    confirmed_seq: u64,
}

impl Confirms {
    /// Starts counting for a new session whose confirmed sequence is `base`.
    pub(crate) fn new_session(&mut self, base: u64) {
        for e in self.current.drain(..) {
            if !e.confirmed {
                self.stale.insert(e.id, e.bytes);
            }
        }
        self.current_unconfirmed = 0;
        self.confirmed_seq = base;
    }

    /// A dispatch with sequence `seq` was published as `id`, with a body of `bytes`.
    pub(crate) fn published(&mut self, id: u64, seq: u64, bytes: usize) {
        self.unconfirmed_bytes += bytes;
        self.current.push_back(Entry {
            id,
            seq,
            bytes,
            confirmed: false,
            skipped: false,
        });
        self.current_unconfirmed += 1;
    }

    /// A publication `id` of `bytes` whose sequence is already confirmed (a warming shard's
    /// replay): it counts as unconfirmed (backpressure, shutdown) until its confirm, but never
    /// holds the confirmed sequence back nor moves it.
    pub(crate) fn replayed(&mut self, id: u64, bytes: usize) {
        self.unconfirmed_bytes += bytes;
        self.stale.insert(id, bytes);
    }

    /// A dispatch was not published (the profile dropped it): confirmed at once. Returns
    /// whether the confirmed sequence advanced.
    pub(crate) fn skipped(&mut self, seq: u64) -> bool {
        if self.current.is_empty() {
            let before = self.confirmed_seq;
            self.confirmed_seq = self.confirmed_seq.max(seq);
            return self.confirmed_seq != before;
        }
        let id = self.current.back().map_or(0, |e| e.id);
        self.current.push_back(Entry {
            id,
            seq,
            bytes: 0,
            confirmed: true,
            skipped: true,
        });
        false
    }

    /// The broker confirmed `id`. Returns whether the confirmed sequence advanced. Unknown
    /// and repeated confirms are ignored.
    pub(crate) fn confirm(&mut self, id: u64) -> bool {
        if let Some(bytes) = self.stale.remove(&id) {
            self.unconfirmed_bytes -= bytes;
            return false;
        }
        let Some(pos) = self.position(id) else {
            return false;
        };
        let entry = &mut self.current[pos];
        if entry.confirmed {
            return false;
        }
        entry.confirmed = true;
        self.current_unconfirmed -= 1;
        self.unconfirmed_bytes -= entry.bytes;
        let before = self.confirmed_seq;
        while let Some(front) = self.current.front() {
            if !front.confirmed {
                break;
            }
            self.confirmed_seq = self.confirmed_seq.max(front.seq);
            self.current.pop_front();
        }
        self.confirmed_seq != before
    }

    fn position(&self, id: u64) -> Option<usize> {
        let first = self.current.partition_point(|e| e.id < id);
        (first..self.current.len())
            .take_while(|&i| self.current[i].id == id)
            .find(|&i| !self.current[i].skipped)
    }

    pub(crate) fn confirmed_seq(&self) -> u64 {
        self.confirmed_seq
    }

    pub(crate) fn unconfirmed(&self) -> usize {
        self.current_unconfirmed + self.stale.len()
    }

    pub(crate) fn unconfirmed_bytes(&self) -> usize {
        self.unconfirmed_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advances_over_contiguous_confirms_only() {
        let mut c = Confirms::default();
        c.new_session(0);
        c.published(1, 1, 10);
        c.published(2, 2, 10);
        c.published(3, 3, 10);
        assert_eq!(c.unconfirmed(), 3);
        assert!(!c.confirm(2));
        assert_eq!(c.confirmed_seq(), 0);
        assert!(c.confirm(1));
        assert_eq!(c.confirmed_seq(), 2);
        assert!(!c.confirm(1), "repeated");
        assert!(!c.confirm(99), "unknown");
        assert!(c.confirm(3));
        assert_eq!(c.confirmed_seq(), 3);
        assert_eq!(c.unconfirmed(), 0);
    }

    #[test]
    fn skipped_dispatches_count_as_confirmed() {
        let mut c = Confirms::default();
        c.new_session(10);
        assert!(c.skipped(11));
        c.published(1, 12, 10);
        assert!(!c.skipped(13));
        assert_eq!(c.confirmed_seq(), 11);
        assert!(c.confirm(1));
        assert_eq!(c.confirmed_seq(), 13);
    }

    #[test]
    fn old_session_does_not_hold_the_new_one_back() {
        let mut c = Confirms::default();
        c.new_session(0);
        c.published(1, 5, 10);
        c.new_session(0);
        c.published(2, 1, 10);
        assert!(c.confirm(2));
        assert_eq!(c.confirmed_seq(), 1);
        assert_eq!(c.unconfirmed(), 1);
        assert_eq!(
            c.unconfirmed_bytes(),
            10,
            "the old session's bytes still count"
        );
        assert!(!c.confirm(1));
        assert_eq!(c.unconfirmed(), 0);
        assert_eq!(c.unconfirmed_bytes(), 0);
        assert_eq!(c.confirmed_seq(), 1);
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// In any confirm order, the confirmed sequence is the longest fully confirmed prefix.
        #[test]
        fn confirmed_sequence_is_the_confirmed_prefix(
            kinds in prop::collection::vec(any::<bool>(), 1..60),
            order in prop::collection::vec(any::<prop::sample::Index>(), 0..80),
        ) {
            let mut c = Confirms::default();
            c.new_session(0);
            // Dispatch i has seq i + 1; `true` = published, `false` = dropped by the profile.
            let mut published = Vec::new();
            for (i, publish) in kinds.iter().enumerate() {
                let seq = i as u64 + 1;
                if *publish {
                    c.published(seq * 10, seq, 10);
                    published.push(seq);
                } else {
                    c.skipped(seq);
                }
            }
            let mut confirmed = std::collections::BTreeSet::new();
            for idx in order {
                if published.is_empty() { break; }
                let seq = published[idx.index(published.len())];
                c.confirm(seq * 10);
                confirmed.insert(seq);
                let mut prefix = 0;
                for (i, publish) in kinds.iter().enumerate() {
                    let seq = i as u64 + 1;
                    if *publish && !confirmed.contains(&seq) { break; }
                    prefix = seq;
                }
                prop_assert_eq!(c.confirmed_seq(), prefix);
                prop_assert_eq!(c.unconfirmed(), published.len() - confirmed.len());
                prop_assert_eq!(c.unconfirmed_bytes(), 10 * (published.len() - confirmed.len()));
            }
        }
    }
}
