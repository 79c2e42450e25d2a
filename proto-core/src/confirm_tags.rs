//! Publisher confirms for a client that hands over the broker's raw answers (issue 13, item 1):
//! which publication each `basic.ack`, `basic.nack` and `basic.return` is for.
//!
//! Owns: the delivery tags of one confirm-mode channel (the broker numbers the publications of
//! a channel 1, 2, 3, ... from `confirm.select` on, so tag n is the n-th publication: every
//! publication on the channel must be registered here, in the order it is sent), settling a
//! single or a multiple ack or nack, matching a `basic.return` (which carries no delivery tag) to
//! its publication by a key the runtime puts on every message (its message id, or a header),
//! and failing every unsettled publication when the channel ends. Does not own the channel,
//! the wire, or what a settled publication means to its shard (`crate::outbox`).
//!
//! The broker's rules it relies on (RabbitMQ's publisher confirms): a returned message's
//! `basic.return` arrives before its `basic.ack`; acks and nacks come in any grouping, a
//! multiple one settling every unsettled tag up to its own; a tag is settled once.

use std::collections::VecDeque;

use crate::outbox::Confirm;

/// One unsettled publication.
#[derive(Debug)]
struct Pending<T> {
    /// The key a `basic.return` names it by.
    key: String,
    /// Whether the broker returned it (its ack then means `Confirm::Returned`).
    returned: bool,
    /// The caller's handle for it (where the outcome goes).
    item: T,
}

/// The delivery tags of one confirm-mode channel and the publications they stand for.
#[derive(Debug)]
pub struct ConfirmTags<T> {
    /// The tag of `pending[0]`.
    lowest: u64,
    /// From `lowest` on: `None` once settled.
    pending: VecDeque<Option<Pending<T>>>,
    /// Unsettled publications.
    unsettled: usize,
}

impl<T> Default for ConfirmTags<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> ConfirmTags<T> {
    /// A channel just put in confirm mode: its first publication gets tag 1.
    pub fn new() -> Self {
        Self {
            lowest: 1,
            pending: VecDeque::new(),
            unsettled: 0,
        }
    }

    /// Registers the next publication on the channel (call it in the order they are sent) with
    /// the key its `basic.return` would name; returns its delivery tag.
    pub fn publish(&mut self, key: String, item: T) -> u64 {
        let tag = self.lowest + self.pending.len() as u64;
        self.pending.push_back(Some(Pending {
            key,
            returned: false,
            item,
        }));
        self.unsettled += 1;
        tag
    }

    /// The broker returned the message named `key`: the oldest unsettled publication with that
    /// key not yet returned (the broker returns in publication order). False when none matches
    /// (a key no registered publication has: logged by the caller, nothing else changes).
    pub fn handle_return(&mut self, key: &str) -> bool {
        match self
            .pending
            .iter_mut()
            .flatten()
            .find(|p| !p.returned && p.key == key)
        {
            Some(pending) => {
                pending.returned = true;
                true
            }
            None => false,
        }
    }

    /// A `basic.ack` (`ack`) or `basic.nack` for `tag` (and, when `multiple`, every unsettled
    /// tag below it): the publications it settles, oldest first, each with what it means. A tag
    /// already settled, or one never published, settles nothing.
    pub fn handle_confirm(&mut self, tag: u64, multiple: bool, ack: bool) -> Vec<(T, Confirm)> {
        let mut settled = Vec::new();
        if tag < self.lowest {
            return settled;
        }
        let last = (tag - self.lowest) as usize;
        if last >= self.pending.len() {
            return settled;
        }
        let first = if multiple { 0 } else { last };
        for slot in self.pending.range_mut(first..=last) {
            if let Some(pending) = slot.take() {
                let confirm = match (ack, pending.returned) {
                    (true, true) => Confirm::Returned,
                    (true, false) => Confirm::Ack,
                    (false, _) => Confirm::Nack,
                };
                settled.push((pending.item, confirm));
            }
        }
        self.unsettled -= settled.len();
        while matches!(self.pending.front(), Some(None)) {
            self.pending.pop_front();
            self.lowest += 1;
        }
        settled
    }

    /// The channel ended: every unsettled publication, oldest first (the broker will never
    /// answer for them; their outboxes publish them again on the next channel). Tags start over
    /// at 1, as on a new channel.
    pub fn fail_all(&mut self) -> Vec<T> {
        let failed = self.pending.drain(..).flatten().map(|p| p.item).collect();
        self.lowest = 1;
        self.unsettled = 0;
        failed
    }

    /// Publications registered and not yet settled.
    pub fn unsettled(&self) -> usize {
        self.unsettled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(keys: &[&str]) -> ConfirmTags<usize> {
        let mut tags = ConfirmTags::new();
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(tags.publish((*key).to_owned(), i), i as u64 + 1);
        }
        tags
    }

    #[test]
    fn tags_count_publications_from_one() {
        let mut tags = channel(&["a", "b", "c"]);
        assert_eq!(tags.unsettled(), 3);
        assert_eq!(tags.handle_confirm(2, false, true), vec![(1, Confirm::Ack)]);
        assert_eq!(
            tags.handle_confirm(1, false, false),
            vec![(0, Confirm::Nack)]
        );
        assert_eq!(
            tags.publish("d".into(), 3),
            4,
            "tags go on after settled ones"
        );
        assert_eq!(tags.unsettled(), 2);
    }

    #[test]
    fn a_multiple_ack_settles_every_unsettled_tag_up_to_its_own() {
        let mut tags = channel(&["a", "b", "c", "d", "e"]);
        assert_eq!(
            tags.handle_confirm(2, false, false),
            vec![(1, Confirm::Nack)]
        );
        assert_eq!(
            tags.handle_confirm(4, true, true),
            vec![(0, Confirm::Ack), (2, Confirm::Ack), (3, Confirm::Ack)]
        );
        assert_eq!(
            tags.handle_confirm(5, true, false),
            vec![(4, Confirm::Nack)]
        );
        assert_eq!(tags.unsettled(), 0);
    }

    #[test]
    fn settled_and_unknown_tags_settle_nothing() {
        let mut tags = channel(&["a", "b"]);
        assert_eq!(tags.handle_confirm(1, false, true).len(), 1);
        assert!(tags.handle_confirm(1, false, true).is_empty(), "twice");
        assert!(
            tags.handle_confirm(1, true, true).is_empty(),
            "below lowest"
        );
        assert!(
            tags.handle_confirm(3, true, true).is_empty(),
            "never published"
        );
        assert!(tags.handle_confirm(0, false, true).is_empty());
        assert_eq!(tags.unsettled(), 1);
    }

    #[test]
    fn a_return_marks_its_own_publication_even_under_a_multiple_ack() {
        let mut tags = channel(&["s:1", "s:2", "s:3"]);
        assert!(tags.handle_return("s:2"));
        assert_eq!(
            tags.handle_confirm(3, true, true),
            vec![(0, Confirm::Ack), (1, Confirm::Returned), (2, Confirm::Ack)]
        );
    }

    #[test]
    fn returns_of_one_key_go_to_its_publications_in_order() {
        let mut tags = channel(&["k", "x", "k"]);
        assert!(tags.handle_return("k"));
        assert_eq!(
            tags.handle_confirm(1, false, true),
            vec![(0, Confirm::Returned)]
        );
        assert!(tags.handle_return("k"));
        assert_eq!(
            tags.handle_confirm(3, true, true),
            vec![(1, Confirm::Ack), (2, Confirm::Returned)]
        );
        assert!(!tags.handle_return("k"), "nothing left with that key");
        assert!(!tags.handle_return("nobody"));
    }

    #[test]
    fn a_returned_then_nacked_message_is_a_nack() {
        let mut tags = channel(&["a"]);
        assert!(tags.handle_return("a"));
        assert_eq!(
            tags.handle_confirm(1, false, false),
            vec![(0, Confirm::Nack)]
        );
    }

    #[test]
    fn an_ended_channel_fails_every_unsettled_publication_and_starts_over() {
        let mut tags = channel(&["a", "b", "c", "d"]);
        tags.handle_confirm(2, false, true);
        assert_eq!(tags.fail_all(), vec![0, 2, 3]);
        assert_eq!(tags.unsettled(), 0);
        assert!(tags.handle_confirm(3, true, true).is_empty());
        assert_eq!(tags.publish("e".into(), 9), 1);
    }

    /// Random interleavings of publications, returns, acks and nacks: every publication is
    /// settled exactly once, with the answer its own tag got.
    #[test]
    fn every_publication_is_settled_once_with_its_own_answer() {
        let mut rng = crate::rng::SeededRng::new(7);
        for _ in 0..200 {
            let mut tags = ConfirmTags::new();
            let mut published = 0u64;
            let mut broker_next = 1u64; // the lowest tag the broker has not answered
            let mut expected = std::collections::HashMap::new();
            let mut got = std::collections::HashMap::new();
            for _ in 0..60 {
                match rng.below(3) {
                    0 => {
                        published += 1;
                        tags.publish(format!("m{published}"), published);
                    }
                    _ if broker_next <= published => {
                        let upto = broker_next + rng.below(published - broker_next + 1);
                        let ack = rng.below(4) != 0;
                        for tag in broker_next..=upto {
                            let returned = ack && rng.below(3) == 0;
                            if returned {
                                assert!(tags.handle_return(&format!("m{tag}")));
                            }
                            let answer = match (ack, returned) {
                                (true, true) => Confirm::Returned,
                                (true, false) => Confirm::Ack,
                                (false, _) => Confirm::Nack,
                            };
                            expected.insert(tag, answer);
                        }
                        for (item, confirm) in tags.handle_confirm(upto, true, ack) {
                            assert!(got.insert(item, confirm).is_none(), "settled twice");
                        }
                        broker_next = upto + 1;
                    }
                    _ => {}
                }
            }
            assert_eq!(got, expected);
            assert_eq!(tags.unsettled() as u64, published - (broker_next - 1));
        }
    }
}
