//! Re-sharding without downtime: moving the cluster from one shard count to another while
//! events keep flowing.
//!
//! Owns: which shard sets (one per shard count) this process runs, which of them publish, when
//! the switch to the new count is asked for, and when a set closes. The store keeps the
//! cluster's counts ([`ShardCounts`]: the current count, and the target while a re-shard is
//! under way) and, per shard of the target, a ready mark its owner keeps alive while the shard
//! is READY and every guild READY listed as unavailable has arrived (GUILD_CREATE).
//!
//! The phases, as every member sees them through the store:
//! 1. **Warming**: a target is set (`gatehouse reshard --to N`). Every member runs its share of
//!    the new set beside the old one; the new set's shards connect and receive events but
//!    publish nothing (workers already have what they carry, from the old set).
//! 2. **Switch**: once every shard of the target is marked ready, any member asks the store to
//!    make the target current (a compare-and-set: it happens once, whoever asks). Each member
//!    starts publishing the new set as soon as it sees the switch.
//! 3. **Closing**: each member keeps publishing the old set for [`ReshardTimings::overlap`]
//!    after it saw the switch, then closes it for good. As every member sees the store at
//!    least every [`ReshardTimings::poll`], an overlap of at least that long means some set
//!    publishes every guild at every moment: no gap, only duplicates during the overlap.
//!    The overlap is counted in time, but events are sent in order: each shard of the old
//!    set closes only once it has read what the gateway sent it so far ([`Retiring`]), so a
//!    shard reading its socket seconds behind (the old set carries more guilds per shard when
//!    the count grows, on a busy machine) still publishes what the new set saw while warming.
//!    And as an empty socket is no proof that the gateway has nothing more for it, each shard
//!    of the new set publishes first, when it starts publishing, what it would have published
//!    in the last [`ReshardTimings::replay`] while warming
//!    ([`crate::shard::Shard::set_publishing`]): an old shard closing up to the overlap plus
//!    the replay behind the new one loses nothing; the price is more duplicates.
//!
//! Failure: the store unreachable changes nothing (no switch without the store; the old set
//! keeps publishing). One member that cannot read the store while the others can (Redis
//! unreachable from it alone, its calls timing out on a busy machine) may miss the switch:
//! after [`ReshardTimings::blind_after`] without a read it publishes its warming set too, as
//! the others close the old set an overlap after they saw a switch it cannot see (duplicates
//! instead of a gap; without that, the guilds of its new shards had no publishing shard from
//! the old set's close until it read the store again). A member dying while warming: its
//! shards of the new set are taken over like any other (their ready marks expire, so the
//! switch waits). A shard of the new set stopping for good (Discord refused the count): the
//! target is dropped (cancel, also `gatehouse reshard --cancel`), and every member closes the
//! new set. A member dying after the switch: its old shards are simply not run again (nobody
//! runs a set that is neither current nor target).
//!
//! Does not own: placement and leases inside a set ([`super::ClusterNode`], one per set), the
//! store calls ([`super::scripts`]), or knowing when a shard's guilds arrived (the shard).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

/// The cluster's shard counts as the store keeps them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardCounts {
    /// The count whose set publishes.
    pub current: u32,
    /// The count being brought up beside it, while a re-shard is under way.
    pub target: Option<u32>,
}

impl ShardCounts {
    /// The target, if it differs from the current count.
    pub fn pending(&self) -> Option<u32> {
        self.target.filter(|&t| t != self.current && t > 0)
    }

    /// The re-shard a starting member asks for, given the shard count its configuration sets
    /// explicitly (`None`: it takes Discord's recommendation, which is never acted on alone,
    /// as it moves with the bot's growth): the configured count when it differs from the
    /// cluster's and no other re-shard is under way. So a changed shard count rolled out to
    /// the members brings the new set up as `gatehouse reshard --to N` does (the first
    /// restarted member asks; the others find it asked).
    pub fn requested_by_configuration(&self, configured: Option<u32>) -> Option<u32> {
        let configured = configured.filter(|&c| c > 0 && c != self.current)?;
        match self.pending() {
            None => Some(configured),
            Some(_) => None,
        }
    }
}

/// How the re-shard is timed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReshardTimings {
    /// The longest a member goes without reading the counts from the store.
    pub poll: Duration,
    /// How long the old set keeps publishing after this member saw the switch (at least
    /// `poll`, see the module docs).
    pub overlap: Duration,
    /// How much of what a warming shard received it publishes when its set starts publishing
    /// (the overlap: [`crate::shard::ShardConfig::replay`]), for the old set's shards that
    /// close behind the gateway ([`Retiring`]).
    pub replay: Duration,
}

impl ReshardTimings {
    /// How long a member with a warming set may go without reading the counts before it
    /// publishes that set anyway: the overlap less one read interval. A switch this member
    /// has not seen happened after its last read, so every member that saw it keeps the old
    /// set publishing until at least an overlap after that read: the warming set publishes
    /// first (with a read interval to spare for a slow loop). A member reading every `poll`
    /// never gets there.
    pub fn blind_after(&self) -> Duration {
        self.overlap.saturating_sub(self.poll)
    }

    /// Timings for members reading the store every `poll`: an overlap of twice that (a slow
    /// store call or a busy machine delays a read) plus 5 s, for a shard of the old set that
    /// reads its socket behind the new set's shard (the old set carries more guilds per shard
    /// when the count grows). A shard further behind than that is kept until it caught up
    /// ([`Retiring`]): what it has not read when it closes is lost unless the new set
    /// published it.
    pub fn new(poll: Duration) -> Self {
        let overlap = poll * 2 + Duration::from_secs(5);
        Self {
            poll,
            overlap,
            replay: overlap,
        }
    }
}

/// How long a shard of a closing set may keep reading to catch up before it closes anyway
/// (a shard that cannot keep up with its guilds for that long would lose events anyway).
pub const RETIRE_CATCH_UP: Duration = Duration::from_secs(30);

/// One shard of a set being closed for good ([`ReshardAction::Retire`]): when it may close.
///
/// Closing a shard drops what it has not read yet: events the gateway already sent it (in
/// the socket or still queued at the gateway for it). The new set's shards saw those events
/// too, but while warming when they were sent before the switch, so they did not publish
/// them. The shard therefore closes once it has caught up (its socket had nothing more to
/// read, after the close was asked for: everything sent until about then is handled, and
/// the new set publishes whatever comes later), or at the latest [`RETIRE_CATCH_UP`] after.
/// Limit: "nothing more to read" is this side's view. A gateway that itself sends behind
/// (the conformance mock on a starved machine hands out its backlog in batches) leaves the
/// socket empty between batches, and the shard closes with events still queued for it at the
/// gateway (one `cluster-reshard` run of 13 lost 1,474 events that way). The new set's replay
/// ([`ReshardTimings::replay`]) covers those, as long as the old shard is no further behind
/// than the overlap plus the replay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retiring {
    deadline: Instant,
}

impl Retiring {
    /// Closing was asked for at `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            deadline: now + RETIRE_CATCH_UP,
        }
    }

    /// Whether the shard closes now; `caught_up`: its socket had nothing more to read since
    /// closing was asked for.
    pub fn should_close(&self, now: Instant, caught_up: bool) -> bool {
        caught_up || now >= self.deadline
    }

    /// When it closes even if it never caught up.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

/// What the process must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReshardAction {
    /// Run the set of `count` shards (this member's share of it), publishing or not.
    Run {
        /// The shard count.
        count: u32,
        /// Whether its events are published (false: warming).
        publishing: bool,
    },
    /// Start publishing the set of `count` (it was warming): this member saw the switch, or
    /// could not read the counts for [`ReshardTimings::blind_after`].
    Publish(u32),
    /// Ask the store to make `to` current, if the counts are still `from` with target `to`.
    Switch {
        /// The current count expected.
        from: u32,
        /// The target to make current.
        to: u32,
    },
    /// Ask the store to drop the target `to`, if it is still the target.
    Cancel {
        /// The target to drop.
        to: u32,
    },
    /// Close the set of `count` for good: each of its shards closes once it caught up
    /// ([`Retiring`]), and nobody runs that set again.
    Retire(u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Set {
    publishing: bool,
    retire_at: Option<Instant>,
}

/// One member's re-shard decisions. Drive it like the other core types: after every input,
/// `poll_action(now)` until `None`, then sleep until `poll_timeout()`.
#[derive(Clone, Debug)]
pub struct Reshard {
    timings: ReshardTimings,
    counts: Option<ShardCounts>,
    /// When the counts were last read.
    last_read: Option<Instant>,
    sets: BTreeMap<u32, Set>,
    actions: VecDeque<ReshardAction>,
}

impl Reshard {
    /// A member that has not read the counts yet (it runs nothing until it has).
    pub fn new(timings: ReshardTimings) -> Self {
        Self {
            timings,
            counts: None,
            last_read: None,
            sets: BTreeMap::new(),
            actions: VecDeque::new(),
        }
    }

    /// The timings.
    pub fn timings(&self) -> ReshardTimings {
        self.timings
    }

    /// The counts as last read from the store.
    pub fn counts(&self) -> Option<ShardCounts> {
        self.counts
    }

    /// The sets running here, with whether each publishes.
    pub fn sets(&self) -> impl Iterator<Item = (u32, bool)> + '_ {
        self.sets.iter().map(|(&c, s)| (c, s.publishing))
    }

    /// Whether the set of `count` publishes here.
    pub fn publishing(&self, count: u32) -> bool {
        self.sets.get(&count).is_some_and(|s| s.publishing)
    }

    /// The store's counts were read.
    pub fn handle_counts(&mut self, now: Instant, counts: ShardCounts) {
        if counts.current == 0 {
            return; // Not a count: ignore, keep doing what is done.
        }
        self.counts = Some(counts);
        self.last_read = Some(now);
        let target = counts.pending();
        match self.sets.get_mut(&counts.current) {
            None => {
                self.sets.insert(
                    counts.current,
                    Set {
                        publishing: true,
                        retire_at: None,
                    },
                );
                self.actions.push_back(ReshardAction::Run {
                    count: counts.current,
                    publishing: true,
                });
            }
            Some(set) => {
                // The switch (or a re-shard back to a set still closing here).
                set.retire_at = None;
                if !set.publishing {
                    set.publishing = true;
                    self.actions
                        .push_back(ReshardAction::Publish(counts.current));
                }
            }
        }
        if let Some(target) = target {
            match self.sets.get_mut(&target) {
                None => {
                    self.sets.insert(
                        target,
                        Set {
                            publishing: false,
                            retire_at: None,
                        },
                    );
                    self.actions.push_back(ReshardAction::Run {
                        count: target,
                        publishing: false,
                    });
                }
                // Still publishing: it was current and is closing; keep it (it publishes
                // until it is current again or closes).
                Some(set) => set.retire_at = None,
            }
        }
        let overlap = self.timings.overlap;
        for (&count, set) in &mut self.sets {
            if count == counts.current || Some(count) == target || set.retire_at.is_some() {
                continue;
            }
            // A publishing set keeps publishing for the overlap; a warming one (its target
            // was dropped) published nothing, so it closes at once.
            set.retire_at = Some(if set.publishing { now + overlap } else { now });
        }
        self.retire_due(now);
    }

    /// `ready` shards of the target `target` are marked ready in the store (all of them when
    /// `ready == target`).
    pub fn handle_ready(&mut self, _now: Instant, target: u32, ready: u32) {
        let Some(counts) = self.counts else { return };
        if counts.pending() == Some(target) && ready >= target {
            self.actions.push_back(ReshardAction::Switch {
                from: counts.current,
                to: target,
            });
        }
    }

    /// A shard of the set of `count` stopped for good. When that set is the target, the
    /// re-shard is given up (the old set never stopped publishing).
    pub fn handle_failed(&mut self, _now: Instant, count: u32) {
        if self.counts.and_then(|c| c.pending()) == Some(count) {
            self.actions.push_back(ReshardAction::Cancel { to: count });
        }
    }

    /// Time passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.publish_if_blind(now);
        self.retire_due(now);
    }

    /// The next thing to do.
    pub fn poll_action(&mut self, now: Instant) -> Option<ReshardAction> {
        self.publish_if_blind(now);
        self.retire_due(now);
        self.actions.pop_front()
    }

    /// When to call `handle_timeout` next (a set's closing time, or when a warming set
    /// publishes because the counts were not read for [`ReshardTimings::blind_after`]).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let warming = self.sets.values().any(|s| !s.publishing);
        let blind = self
            .last_read
            .filter(|_| warming)
            .map(|t| t + self.timings.blind_after());
        self.sets
            .values()
            .filter_map(|s| s.retire_at)
            .chain(blind)
            .min()
    }

    /// A warming set publishes once the counts were not read for
    /// [`ReshardTimings::blind_after`] (see the module docs). It stays publishing: it is
    /// current once this member sees the switch, or closes an overlap after a cancel.
    fn publish_if_blind(&mut self, now: Instant) {
        let Some(read) = self.last_read else { return };
        if now < read + self.timings.blind_after() {
            return;
        }
        for (&count, set) in &mut self.sets {
            if !set.publishing && set.retire_at.is_none() {
                set.publishing = true;
                self.actions.push_back(ReshardAction::Publish(count));
            }
        }
    }

    fn retire_due(&mut self, now: Instant) {
        let due: BTreeSet<u32> = self
            .sets
            .iter()
            .filter(|(_, s)| s.retire_at.is_some_and(|t| t <= now))
            .map(|(&c, _)| c)
            .collect();
        for count in due {
            self.sets.remove(&count);
            self.actions.push_back(ReshardAction::Retire(count));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(r: &mut Reshard, now: Instant) -> Vec<ReshardAction> {
        std::iter::from_fn(|| r.poll_action(now)).collect()
    }

    fn counts(current: u32, target: Option<u32>) -> ShardCounts {
        ShardCounts { current, target }
    }

    #[test]
    fn a_changed_configured_count_asks_for_a_reshard_once() {
        // Configured explicitly and different: asked for.
        assert_eq!(counts(4, None).requested_by_configuration(Some(8)), Some(8));
        // The same count, Discord's recommendation, or another re-shard under way: not.
        assert_eq!(counts(4, None).requested_by_configuration(Some(4)), None);
        assert_eq!(counts(4, None).requested_by_configuration(None), None);
        assert_eq!(counts(4, Some(6)).requested_by_configuration(Some(8)), None);
        // Already asked (by another member): nothing more to ask.
        assert_eq!(counts(4, Some(8)).requested_by_configuration(Some(8)), None);
        // A finished re-shard's leftover target is no re-shard under way.
        assert_eq!(
            counts(8, Some(8)).requested_by_configuration(Some(16)),
            Some(16)
        );
    }

    #[test]
    fn warms_the_new_set_switches_when_all_are_ready_then_closes_the_old_one() {
        let t0 = crate::tests::epoch();
        let timings = ReshardTimings::new(Duration::from_secs(1));
        let mut r = Reshard::new(timings);
        assert_eq!(drain(&mut r, t0), vec![]);
        r.handle_counts(t0, counts(4, None));
        assert_eq!(
            drain(&mut r, t0),
            vec![ReshardAction::Run {
                count: 4,
                publishing: true
            }]
        );
        r.handle_counts(t0, counts(4, Some(8)));
        assert_eq!(
            drain(&mut r, t0),
            vec![ReshardAction::Run {
                count: 8,
                publishing: false
            }]
        );
        r.handle_ready(t0, 8, 7);
        assert_eq!(drain(&mut r, t0), vec![]);
        r.handle_ready(t0, 8, 8);
        assert_eq!(
            drain(&mut r, t0),
            vec![ReshardAction::Switch { from: 4, to: 8 }]
        );
        // Another member's switch won: the store says 8 now.
        r.handle_counts(t0, counts(8, None));
        assert_eq!(drain(&mut r, t0), vec![ReshardAction::Publish(8)]);
        assert!(r.publishing(4) && r.publishing(8));
        assert_eq!(r.poll_timeout(), Some(t0 + timings.overlap));
        let later = t0 + timings.overlap;
        r.handle_timeout(later);
        assert_eq!(drain(&mut r, later), vec![ReshardAction::Retire(4)]);
        assert_eq!(r.sets().collect::<Vec<_>>(), vec![(8, true)]);
    }

    #[test]
    fn a_failing_new_set_cancels_and_a_dropped_target_closes_at_once() {
        let t0 = crate::tests::epoch();
        let mut r = Reshard::new(ReshardTimings::new(Duration::from_secs(1)));
        r.handle_counts(t0, counts(4, Some(8)));
        drain(&mut r, t0);
        r.handle_failed(t0, 4);
        assert_eq!(
            drain(&mut r, t0),
            vec![],
            "the current set is not cancelled"
        );
        r.handle_failed(t0, 8);
        assert_eq!(drain(&mut r, t0), vec![ReshardAction::Cancel { to: 8 }]);
        r.handle_counts(t0, counts(4, None));
        assert_eq!(drain(&mut r, t0), vec![ReshardAction::Retire(8)]);
        assert!(r.publishing(4));
    }
}
