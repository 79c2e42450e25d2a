//! One shard's publications between the core's [`Action::Publish`] and the broker's confirm, as
//! a sans-IO state machine (issue 9, item 10).
//!
//! Owns: which publications wait to be sent, which are in flight on which broker link, and what
//! every outcome does to them: an ack confirms; a nack waits a back-off and is sent again
//! (without disturbing the link or other publications), except that the
//! [`NACKS_TO_FAIL_LINK`]th nack in a row of one publication on the same link fails that link
//! (RabbitMQ 3.10 was seen nacking every publication, for over a minute, on a channel opened
//! while a quorum queue elected a new leader after its node was killed; a new connection
//! works); a message the broker returned as
//! unroutable is confirmed or held per [`Unroutable`]; a link that fails (a publish error, a
//! lost connection, or no confirm within [`OutboxConfig::confirm_timeout`] while the broker does
//! not block the link) sends everything unconfirmed on it again on the next link (at least
//! once). Does not own the connection, the
//! clock (time is an argument) or the saved sequence (the shard's confirm bookkeeping).
//!
//! The invariant, checked by simulation (`tests/outbox.rs`): [`OutboxEvent::Confirmed`] is only
//! ever reported for a publication the broker acknowledged on the link it was last sent on
//! (and, with [`Unroutable::Hold`], routed), so the shard never saves a sequence before it and
//! everything before it is confirmed.
//!
//! # Method groups
//! - getters: [`Outbox::len`], [`Outbox::is_empty`], [`Outbox::has_sendable`];
//! - inputs: [`Outbox::push`], [`Outbox::handle_confirm`], [`Outbox::handle_link_failed`],
//!   [`Outbox::handle_link_blocked`], [`Outbox::handle_timeout`];
//! - commands: [`Outbox::take_sendable`] (what to publish now on a link);
//! - outputs: [`Outbox::poll_event`] until `None`, then [`Outbox::poll_timeout`].
//!
//! [`Action::Publish`]: crate::shard::Action::Publish

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::profile::Publication;
pub use crate::profile::Unroutable;
use crate::shard::PublishId;

/// The default of [`OutboxConfig::confirm_timeout`].
pub const DEFAULT_CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// The first wait before a nacked (or held) publication is sent again; it doubles per refusal.
const RETRY_BASE: Duration = Duration::from_millis(250);

/// The longest wait before a nacked (or held) publication is sent again.
const RETRY_MAX: Duration = Duration::from_secs(30);
/// The nacks in a row of one publication on one link after which the link is failed (and
/// replaced: the runtime reconnects, to the next broker address if there are several).
pub const NACKS_TO_FAIL_LINK: u32 = 3;

/// Settings of an [`Outbox`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutboxConfig {
    /// A publication sent on a link and not confirmed within this time fails the link.
    pub confirm_timeout: Duration,
    /// What a returned publication becomes.
    pub unroutable: Unroutable,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            confirm_timeout: DEFAULT_CONFIRM_TIMEOUT,
            unroutable: Unroutable::Confirm,
        }
    }
}

/// How the broker answered one publication (lapin's confirm, told apart by the runtime: lapin
/// reports a returned message as an ack carrying it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Confirm {
    /// Acknowledged and routed.
    Ack,
    /// Negatively acknowledged (the broker could not take it).
    Nack,
    /// Acknowledged, but returned first: no queue was bound for it.
    Returned,
}

/// What happened, for the runtime to act on (`Confirmed`, `LinkFailed`) or to log and count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutboxEvent {
    /// The broker holds the publication: call `Shard::handle_published(id)`.
    Confirmed {
        /// The publication's id.
        id: PublishId,
        /// The publication (`Publication::event` names its event).
        publication: Arc<Publication>,
        /// When it was pushed.
        pushed_at: Instant,
    },
    /// The broker nacked the publication; it is sent again after `retry_in`.
    Nacked {
        /// The publication.
        id: PublishId,
        /// Its routing key.
        routing_key: String,
        /// The wait before it is sent again.
        retry_in: Duration,
    },
    /// The broker returned the publication: no queue was bound for its routing key. With
    /// [`Unroutable::Confirm`] a `Confirmed` follows; with [`Unroutable::Hold`] it is sent
    /// again after `retry_in`.
    Unroutable {
        /// The publication.
        id: PublishId,
        /// The exchange it went to.
        exchange: String,
        /// Its routing key.
        routing_key: String,
        /// The wait before it is sent again (`None`: confirmed).
        retry_in: Option<Duration>,
    },
    /// The link must be closed and replaced (everything in flight on it waits for the next
    /// one).
    LinkFailed {
        /// The link.
        link: u64,
        /// Why.
        reason: LinkFailure,
    },
}

/// Why the outbox gave a link up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkFailure {
    /// No confirm arrived within the confirm timeout.
    ConfirmTimeout(Duration),
    /// The broker nacked one publication [`NACKS_TO_FAIL_LINK`] times in a row on it.
    RepeatedNacks,
}

impl LinkFailure {
    /// A short name, for metric labels: `timeout` or `nacked`.
    pub fn label(self) -> &'static str {
        match self {
            Self::ConfirmTimeout(_) => "timeout",
            Self::RepeatedNacks => "nacked",
        }
    }
}

impl std::fmt::Display for LinkFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ConfirmTimeout(timeout) => {
                write!(f, "no publisher confirm within {} s", timeout.as_secs_f64())
            }
            Self::RepeatedNacks => write!(
                f,
                "the broker nacked one publication {NACKS_TO_FAIL_LINK} times in a row on this connection"
            ),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Waiting to be sent on the next usable link.
    Unsent,
    /// Sent on `link`; fails the link unless confirmed by `deadline`.
    Sent { link: u64, deadline: Instant },
    /// Refused (nack, or returned and held); unsent again at `until`.
    Retrying { until: Instant },
}

#[derive(Clone, Debug)]
struct Entry {
    /// Shared with the publisher that sends it (sent again without copying).
    publication: Arc<Publication>,
    pushed_at: Instant,
    state: State,
    /// Refusals so far (for the back-off).
    refusals: u32,
    /// The link of the latest nack and the nacks in a row on it.
    nacks: (u64, u32),
}

/// One shard's unconfirmed publications. See the module docs.
#[derive(Clone, Debug, Default)]
pub struct Outbox {
    config: OutboxConfig,
    entries: BTreeMap<PublishId, Entry>,
    /// Sent next, in id order.
    unsent: BTreeSet<PublishId>,
    /// In flight, in sending order (so deadlines never decrease); stale rows are skipped.
    in_flight: VecDeque<(Instant, PublishId, u64)>,
    /// Refused publications by the time they are unsent again; stale rows are skipped.
    retries: BTreeSet<(Instant, PublishId)>,
    /// The link that failed last: nothing is sent on it again.
    failed_link: Option<u64>,
    /// The link the broker blocked (a resource alarm): its confirms are not overdue.
    blocked_link: Option<u64>,
    now: Option<Instant>,
    events: VecDeque<OutboxEvent>,
}

impl Outbox {
    /// An empty outbox.
    pub fn new(config: OutboxConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    // ----- getters -----

    /// Publications not yet confirmed (unsent, in flight or waiting to be retried).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether every publication is confirmed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// When publication `id` was pushed, while it is unconfirmed (for the runtime's
    /// hand-off latency metric).
    pub fn pushed_at(&self, id: PublishId) -> Option<Instant> {
        self.entries.get(&id).map(|entry| entry.pushed_at)
    }

    /// Whether [`Outbox::take_sendable`] would return something for `link`.
    pub fn has_sendable(&self, link: u64) -> bool {
        !self.unsent.is_empty() && self.failed_link != Some(link)
    }

    // ----- inputs -----

    /// A publication from the shard ([`crate::shard::Action::Publish`]). Outputs: none.
    pub fn push(&mut self, now: Instant, id: PublishId, publication: Publication) {
        let now = self.clock(now);
        self.entries.insert(
            id,
            Entry {
                publication: Arc::new(publication),
                pushed_at: now,
                state: State::Unsent,
                refusals: 0,
                nacks: (0, 0),
            },
        );
        self.unsent.insert(id);
    }

    /// The broker answered publication `id`, sent on `link`. An answer for a publication that
    /// has since been sent again (or confirmed) is ignored. Outputs: `Confirmed`, `Nacked`,
    /// `Unroutable`.
    pub fn handle_confirm(&mut self, now: Instant, link: u64, id: PublishId, confirm: Confirm) {
        let now = self.clock(now);
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        if !matches!(entry.state, State::Sent { link: l, .. } if l == link) {
            return;
        }
        let routing_key = entry.publication.routing_key().to_owned();
        let refuse = |entry: &mut Entry| {
            let retry_in = RETRY_BASE
                .saturating_mul(1 << entry.refusals.min(16))
                .min(RETRY_MAX);
            entry.refusals = entry.refusals.saturating_add(1);
            entry.state = State::Retrying {
                until: now + retry_in,
            };
            retry_in
        };
        match (confirm, self.config.unroutable) {
            (Confirm::Ack, _) => self.confirmed(id),
            (Confirm::Returned, Unroutable::Confirm) => {
                self.events.push_back(OutboxEvent::Unroutable {
                    id,
                    exchange: entry.publication.exchange.clone(),
                    routing_key,
                    retry_in: None,
                });
                self.confirmed(id);
            }
            (Confirm::Returned, Unroutable::Hold) => {
                let retry_in = refuse(entry);
                let exchange = entry.publication.exchange.clone();
                self.retries.insert((now + retry_in, id));
                self.events.push_back(OutboxEvent::Unroutable {
                    id,
                    exchange,
                    routing_key,
                    retry_in: Some(retry_in),
                });
            }
            (Confirm::Nack, _) => {
                let retry_in = refuse(entry);
                entry.nacks = match entry.nacks {
                    (l, n) if l == link => (link, n.saturating_add(1)),
                    _ => (link, 1),
                };
                let fail_link = entry.nacks.1 >= NACKS_TO_FAIL_LINK;
                self.retries.insert((now + retry_in, id));
                self.events.push_back(OutboxEvent::Nacked {
                    id,
                    routing_key,
                    retry_in,
                });
                if fail_link && self.failed_link != Some(link) {
                    self.handle_link_failed(link);
                    self.events.push_back(OutboxEvent::LinkFailed {
                        link,
                        reason: LinkFailure::RepeatedNacks,
                    });
                }
            }
        }
        self.prune();
    }

    /// `link` failed (a publish error, or the connection was lost or replaced): everything in
    /// flight on it is sent again on the next link, and nothing more is sent on it. Outputs:
    /// none.
    pub fn handle_link_failed(&mut self, link: u64) {
        self.failed_link = Some(link);
        for (id, entry) in &mut self.entries {
            if matches!(entry.state, State::Sent { link: l, .. } if l == link) {
                entry.state = State::Unsent;
                self.unsent.insert(*id);
            }
        }
        self.prune();
    }

    /// The broker blocked (`true`) or unblocked (`false`) `link` (AMQP `connection.blocked`: a
    /// memory or disk alarm). While it is blocked, its confirms are not overdue: the broker said
    /// why they wait, and another connection would be blocked too. When it is unblocked, every
    /// publication in flight on it gets a full confirm timeout from `now`. Outputs: none.
    pub fn handle_link_blocked(&mut self, now: Instant, link: u64, blocked: bool) {
        let now = self.clock(now);
        if blocked {
            self.blocked_link = Some(link);
            return;
        }
        if self.blocked_link != Some(link) {
            return;
        }
        self.blocked_link = None;
        let deadline = now + self.config.confirm_timeout;
        for (id, entry) in &mut self.entries {
            if let State::Sent { link: l, .. } = entry.state
                && l == link
            {
                entry.state = State::Sent { link, deadline };
                self.in_flight.push_back((deadline, *id, link));
            }
        }
        self.prune();
    }

    /// Time passed; call when [`Outbox::poll_timeout`] is reached (early calls do nothing).
    /// Outputs: `LinkFailed` when a confirm is overdue.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock(now);
        while let Some(&(until, id)) = self.retries.first() {
            if until > now {
                break;
            }
            self.retries.pop_first();
            if let Some(entry) = self.entries.get_mut(&id)
                && entry.state == (State::Retrying { until })
            {
                entry.state = State::Unsent;
                self.unsent.insert(id);
            }
        }
        self.prune();
        if let Some(&(deadline, _, link)) = self.in_flight.front()
            && deadline <= now
            && self.blocked_link != Some(link)
        {
            self.handle_link_failed(link);
            self.events.push_back(OutboxEvent::LinkFailed {
                link,
                reason: LinkFailure::ConfirmTimeout(self.config.confirm_timeout),
            });
        }
    }

    // ----- commands -----

    /// Up to `max` publications to publish on `link` now, in order; they count as in flight on
    /// it from `now`. Nothing when `link` is the one that failed last.
    pub fn take_sendable(
        &mut self,
        now: Instant,
        link: u64,
        max: usize,
    ) -> Vec<(PublishId, Arc<Publication>)> {
        let now = self.clock(now);
        if self.failed_link == Some(link) {
            return Vec::new();
        }
        let deadline = now + self.config.confirm_timeout;
        let mut out = Vec::new();
        while out.len() < max {
            let Some(id) = self.unsent.pop_first() else {
                break;
            };
            let Some(entry) = self.entries.get_mut(&id) else {
                continue;
            };
            entry.state = State::Sent { link, deadline };
            self.in_flight.push_back((deadline, id, link));
            out.push((id, entry.publication.clone()));
        }
        out
    }

    // ----- outputs -----

    /// The next event. Drain after every input and command.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<OutboxEvent> {
        self.events.pop_front()
    }

    /// When to call [`Outbox::handle_timeout`] next: the earliest confirm deadline or retry.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let deadline = self
            .in_flight
            .front()
            .filter(|(_, _, link)| self.blocked_link != Some(*link))
            .map(|(at, _, _)| *at);
        let retry = self.retries.first().map(|(at, _)| *at);
        [deadline, retry].into_iter().flatten().min()
    }

    // ----- internals -----

    fn clock(&mut self, now: Instant) -> Instant {
        let now = self.now.map_or(now, |seen| seen.max(now));
        self.now = Some(now);
        now
    }

    fn confirmed(&mut self, id: PublishId) {
        if let Some(entry) = self.entries.remove(&id) {
            if self.entries.is_empty() {
                self.release_memory();
            }
            self.events.push_back(OutboxEvent::Confirmed {
                id,
                publication: entry.publication,
                pushed_at: entry.pushed_at,
            });
        }
    }

    /// With nothing left to confirm, gives back what the collections grew to (an emptied
    /// B-tree keeps its root node, about 900 bytes here): an idle shard's outbox holds nothing
    /// (BENCHMARKS.md section 4, memory per idle shard). Every row left in `in_flight` and
    /// `retries` is stale then, and `prune` drops them.
    fn release_memory(&mut self) {
        self.entries = BTreeMap::new();
        self.prune();
        if self.in_flight.is_empty() {
            self.in_flight = VecDeque::new();
        }
        if self.retries.is_empty() {
            self.retries = BTreeSet::new();
        }
        if self.unsent.is_empty() {
            self.unsent = BTreeSet::new();
        }
    }

    /// Drops the rows of `in_flight` and `retries` at the front that no longer describe their
    /// publication, so the fronts are the live deadlines.
    fn prune(&mut self) {
        while let Some(&(deadline, id, link)) = self.in_flight.front() {
            let live = self
                .entries
                .get(&id)
                .is_some_and(|e| e.state == State::Sent { link, deadline });
            if live {
                break;
            }
            self.in_flight.pop_front();
        }
        while let Some(&(until, id)) = self.retries.first() {
            let live = self
                .entries
                .get(&id)
                .is_some_and(|e| e.state == State::Retrying { until });
            if live {
                break;
            }
            self.retries.pop_first();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{MessageKey, MessageProperties};

    fn publication(key: &str) -> Publication {
        Publication {
            exchange: "gateway".into(),
            key: MessageKey::Event(key.into()),
            body: bytes::Bytes::from_static(b"{}"),
            properties: MessageProperties::persistent(),
        }
    }

    fn events(outbox: &mut Outbox) -> Vec<OutboxEvent> {
        std::iter::from_fn(|| outbox.poll_event()).collect()
    }

    fn ids(sent: &[(PublishId, Arc<Publication>)]) -> Vec<u64> {
        sent.iter().map(|(id, _)| id.0).collect()
    }

    fn filled(now: Instant, n: u64, config: OutboxConfig) -> Outbox {
        let mut outbox = Outbox::new(config);
        for i in 0..n {
            outbox.push(now, PublishId(i), publication("E"));
        }
        outbox
    }

    #[test]
    fn sends_in_order_and_confirms_on_ack() {
        let t0 = crate::tests::epoch();
        let mut outbox = filled(t0, 3, OutboxConfig::default());
        assert!(outbox.has_sendable(1));
        assert_eq!(ids(&outbox.take_sendable(t0, 1, 2)), [0, 1]);
        assert_eq!(ids(&outbox.take_sendable(t0, 1, 10)), [2]);
        assert!(!outbox.has_sendable(1));
        outbox.handle_confirm(t0, 1, PublishId(1), Confirm::Ack);
        outbox.handle_confirm(t0, 1, PublishId(1), Confirm::Ack);
        let got = events(&mut outbox);
        assert!(matches!(
            got[..],
            [OutboxEvent::Confirmed {
                id: PublishId(1),
                ..
            }]
        ));
        assert_eq!(outbox.len(), 2);
    }

    #[test]
    fn a_nack_retries_that_publication_alone_with_back_off() {
        let t0 = crate::tests::epoch();
        let mut outbox = filled(t0, 2, OutboxConfig::default());
        outbox.take_sendable(t0, 1, 10);
        outbox.handle_confirm(t0, 1, PublishId(0), Confirm::Nack);
        assert!(matches!(
            events(&mut outbox)[..],
            [OutboxEvent::Nacked { retry_in, .. }] if retry_in == RETRY_BASE
        ));
        assert!(!outbox.has_sendable(1), "waits for the back-off");
        outbox.handle_confirm(t0, 1, PublishId(1), Confirm::Ack);
        events(&mut outbox);
        assert_eq!(outbox.poll_timeout(), Some(t0 + RETRY_BASE));
        outbox.handle_timeout(t0 + RETRY_BASE);
        assert_eq!(
            ids(&outbox.take_sendable(t0 + RETRY_BASE, 1, 10)),
            [0],
            "same link"
        );
        let t1 = t0 + RETRY_BASE;
        outbox.handle_confirm(t1, 1, PublishId(0), Confirm::Nack);
        assert!(matches!(
            events(&mut outbox)[..],
            [OutboxEvent::Nacked { retry_in, .. }] if retry_in == RETRY_BASE * 2
        ));
    }

    #[test]
    fn the_third_nack_in_a_row_on_one_link_fails_the_link() {
        let t0 = crate::tests::epoch();
        let mut outbox = filled(t0, 2, OutboxConfig::default());
        let mut now = t0;
        outbox.take_sendable(now, 1, 10);
        for round in 1..=NACKS_TO_FAIL_LINK {
            outbox.handle_confirm(now, 1, PublishId(0), Confirm::Nack);
            let got = events(&mut outbox);
            if round < NACKS_TO_FAIL_LINK {
                assert!(matches!(got[..], [OutboxEvent::Nacked { .. }]), "{got:?}");
                now = outbox.poll_timeout().unwrap();
                outbox.handle_timeout(now);
                assert_eq!(ids(&outbox.take_sendable(now, 1, 10)), [0]);
            } else {
                assert!(
                    matches!(
                        got[..],
                        [
                            OutboxEvent::Nacked { .. },
                            OutboxEvent::LinkFailed {
                                link: 1,
                                reason: LinkFailure::RepeatedNacks
                            }
                        ]
                    ),
                    "{got:?}"
                );
            }
        }
        // Publication 1, in flight on the failed link, is sent again on the next one; 0 too,
        // after its back-off; nothing more goes to link 1.
        assert!(!outbox.has_sendable(1));
        assert_eq!(ids(&outbox.take_sendable(now, 2, 10)), [1]);
        let later = outbox.poll_timeout().unwrap();
        outbox.handle_timeout(later);
        assert_eq!(ids(&outbox.take_sendable(later, 2, 10)), [0]);
        // On the new link the count starts again: one nack is just a nack.
        outbox.handle_confirm(later, 2, PublishId(0), Confirm::Nack);
        assert!(matches!(
            events(&mut outbox)[..],
            [OutboxEvent::Nacked { .. }]
        ));
    }

    #[test]
    fn a_returned_publication_is_reported_then_confirmed_or_held() {
        let t0 = crate::tests::epoch();
        let mut outbox = filled(t0, 1, OutboxConfig::default());
        outbox.take_sendable(t0, 1, 10);
        outbox.handle_confirm(t0, 1, PublishId(0), Confirm::Returned);
        let got = events(&mut outbox);
        assert!(matches!(
            got[..],
            [
                OutboxEvent::Unroutable { retry_in: None, .. },
                OutboxEvent::Confirmed { .. }
            ]
        ));

        let config = OutboxConfig {
            unroutable: Unroutable::Hold,
            ..OutboxConfig::default()
        };
        let mut outbox = filled(t0, 1, config);
        outbox.take_sendable(t0, 1, 10);
        outbox.handle_confirm(t0, 1, PublishId(0), Confirm::Returned);
        let got = events(&mut outbox);
        assert!(matches!(
            got[..],
            [OutboxEvent::Unroutable {
                retry_in: Some(_),
                ..
            }]
        ));
        assert_eq!(outbox.len(), 1, "held, not confirmed");
    }

    #[test]
    fn an_overdue_confirm_fails_the_link_and_everything_goes_to_the_next() {
        let t0 = crate::tests::epoch();
        let mut outbox = filled(t0, 3, OutboxConfig::default());
        outbox.take_sendable(t0, 7, 10);
        outbox.handle_confirm(t0, 7, PublishId(0), Confirm::Ack);
        events(&mut outbox);
        let due = t0 + DEFAULT_CONFIRM_TIMEOUT;
        assert_eq!(outbox.poll_timeout(), Some(due));
        outbox.handle_timeout(due - Duration::from_millis(1));
        assert!(events(&mut outbox).is_empty());
        outbox.handle_timeout(due);
        assert!(matches!(
            events(&mut outbox)[..],
            [OutboxEvent::LinkFailed {
                link: 7,
                reason: LinkFailure::ConfirmTimeout(_)
            }]
        ));
        assert!(!outbox.has_sendable(7), "never again on the failed link");
        assert!(outbox.take_sendable(due, 7, 10).is_empty());
        // A late confirm from the failed link changes nothing.
        outbox.handle_confirm(due, 7, PublishId(1), Confirm::Ack);
        assert!(events(&mut outbox).is_empty());
        assert_eq!(ids(&outbox.take_sendable(due, 8, 10)), [1, 2]);
        assert_eq!(outbox.poll_timeout(), Some(due + DEFAULT_CONFIRM_TIMEOUT));
    }

    #[test]
    fn confirms_are_not_overdue_while_the_broker_blocks_the_link() {
        let t0 = crate::tests::epoch();
        let mut outbox = filled(t0, 2, OutboxConfig::default());
        outbox.take_sendable(t0, 3, 10);
        outbox.handle_link_blocked(t0 + Duration::from_secs(1), 3, true);
        assert_eq!(outbox.poll_timeout(), None, "nothing is due while blocked");
        let later = t0 + DEFAULT_CONFIRM_TIMEOUT * 10;
        outbox.handle_timeout(later);
        assert!(
            events(&mut outbox).is_empty(),
            "a blocked link does not fail"
        );
        outbox.handle_link_blocked(later, 3, false);
        assert_eq!(outbox.poll_timeout(), Some(later + DEFAULT_CONFIRM_TIMEOUT));
        outbox.handle_confirm(later, 3, PublishId(0), Confirm::Ack);
        events(&mut outbox);
        outbox.handle_timeout(later + DEFAULT_CONFIRM_TIMEOUT);
        assert!(matches!(
            events(&mut outbox)[..],
            [OutboxEvent::LinkFailed { link: 3, .. }]
        ));
    }

    #[test]
    fn a_lost_link_requeues_in_order() {
        let t0 = crate::tests::epoch();
        let mut outbox = filled(t0, 4, OutboxConfig::default());
        outbox.take_sendable(t0, 1, 2);
        outbox.handle_link_failed(1);
        assert_eq!(outbox.poll_timeout(), None);
        assert_eq!(ids(&outbox.take_sendable(t0, 2, 10)), [0, 1, 2, 3]);
    }
}
