//! Placement: which shards a process of the cluster runs, and the node that turns placement
//! and leases into "start this shard" and "stop that one".
//!
//! Owns: the fair share ([`fair_share`]: the live members, sorted, each take one contiguous
//! block of the shards, sizes differing by at most one) and [`ClusterNode`], which wants the
//! leases of its share (or of its explicit shard list), starts a shard once its lease is held,
//! stops it the moment the lease is lost, hands a shard over (stop gracefully, then release the
//! lease) when it no longer belongs to this member, and hands every shard over on shutdown.
//! A dead member's shards are taken over by whoever they now belong to as soon as its leases
//! expire. Every member computes the same placement from the same member list; while views
//! differ (a member just joined or died), the leases keep any shard from running twice.
//!
//! Does not own: discovering members (the runtime lists the member keys and passes them in),
//! the store, or running shards.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use super::lease::{LeaseChange, LeaseReply, LeaseRequest, LeaseTimings, ShardLease};

/// The shards `me` runs when `members` (including `me`) share `shard_count` shards: member `i`
/// of `n` (sorted by name) runs `i * count / n .. (i + 1) * count / n`. Empty when `me` is not
/// among them.
pub fn fair_share(members: &BTreeSet<String>, me: &str, shard_count: u32) -> BTreeSet<u32> {
    let Some(index) = members.iter().position(|m| m == me) else {
        return BTreeSet::new();
    };
    let n = members.len() as u64;
    let count = u64::from(shard_count);
    let start = index as u64 * count / n;
    let end = (index as u64 + 1) * count / n;
    (start..end).map(|s| s as u32).collect()
}

/// How to stop a shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopKind {
    /// Another member will run it: close with a resumable code, save the session, then report
    /// it stopped (the lease is released afterwards).
    HandOver,
    /// The lease is gone: stop at once, publishing nothing more (the socket is dropped, so
    /// the session stays resumable for the next owner).
    LeaseLost,
}

/// What the node asks the runtime to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeAction {
    /// Send a lease request for `shard` to the store; the answer goes to
    /// [`ClusterNode::handle_lease_reply`].
    Lease {
        /// The shard.
        shard: u32,
        /// The request.
        request: LeaseRequest,
    },
    /// Start running `shard` (its lease is held).
    Start(u32),
    /// Stop running `shard`; report with [`ClusterNode::handle_stopped`] once it stopped.
    Stop {
        /// The shard.
        shard: u32,
        /// How.
        kind: StopKind,
    },
}

/// One process's view of the cluster. Drive it like the other core types: after every input,
/// `poll_action(now)` until `None`, then sleep until `poll_timeout()`.
#[derive(Clone, Debug)]
pub struct ClusterNode {
    me: String,
    shard_count: u32,
    timings: LeaseTimings,
    explicit: Option<BTreeSet<u32>>,
    members: BTreeSet<String>,
    leases: BTreeMap<u32, ShardLease>,
    /// Started and not reported stopped, with the stop already asked for, if any.
    running: BTreeMap<u32, Option<StopKind>>,
    shutting_down: bool,
    actions: VecDeque<NodeAction>,
    now: Instant,
}

impl ClusterNode {
    /// Member `me` of a cluster of `shard_count` shards. With `explicit` shards it runs
    /// exactly those (when it holds their leases), otherwise its fair share. It asks for
    /// nothing until the first `handle_members` or `handle_timeout` (pass the member list
    /// first, so that a process starting beside others does not claim every shard).
    pub fn new(
        me: impl Into<String>,
        shard_count: u32,
        explicit: Option<BTreeSet<u32>>,
        timings: LeaseTimings,
        now: Instant,
    ) -> Self {
        let me = me.into();
        Self {
            members: BTreeSet::from([me.clone()]),
            me,
            shard_count,
            timings,
            explicit,
            leases: BTreeMap::new(),
            running: BTreeMap::new(),
            shutting_down: false,
            actions: VecDeque::new(),
            now,
        }
    }

    /// This member's name.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// The live members, as the store listed them (this member is always counted, until it
    /// shuts down).
    pub fn handle_members(&mut self, now: Instant, members: impl IntoIterator<Item = String>) {
        self.members = members.into_iter().collect();
        self.members.insert(self.me.clone());
        self.update(now);
    }

    /// The store answered a lease request for `shard`.
    pub fn handle_lease_reply(&mut self, now: Instant, shard: u32, reply: LeaseReply) {
        let now = self.clock(now);
        if let Some(lease) = self.leases.get_mut(&shard)
            && let Some(change) = lease.handle_reply(now, reply)
        {
            self.on_change(shard, change);
        }
        self.update(now);
    }

    /// Time passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.update(now);
    }

    /// Shard `shard` stopped (after a [`NodeAction::Stop`], or on its own).
    pub fn handle_stopped(&mut self, now: Instant, shard: u32) {
        self.running.remove(&shard);
        self.update(now);
    }

    /// Hands every shard over and leaves: [`ClusterNode::is_done`] once all stopped and their
    /// leases are released.
    pub fn shutdown(&mut self, now: Instant) {
        self.shutting_down = true;
        self.update(now);
    }

    /// Whether shutdown finished (nothing runs, no lease is held or being released).
    pub fn is_done(&self) -> bool {
        self.shutting_down
            && self.running.is_empty()
            && self.leases.values().all(ShardLease::is_idle)
    }

    /// The next thing to do. Leases that ran out by `now` are noticed first, so a caller
    /// working through slow store calls still stops such a shard before anything else.
    pub fn poll_action(&mut self, now: Instant) -> Option<NodeAction> {
        let now = self.clock(now);
        let expired: Vec<(u32, LeaseChange)> = self
            .leases
            .iter_mut()
            .filter_map(|(&shard, lease)| lease.handle_timeout(now).map(|c| (shard, c)))
            .collect();
        // Queued at the front one by one: in reverse, so they come out in shard order.
        for (shard, change) in expired.into_iter().rev() {
            self.on_change(shard, change);
        }
        self.actions.pop_front()
    }

    /// When to call `handle_timeout` next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.actions.is_empty() {
            return Some(self.now);
        }
        self.leases
            .values()
            .filter_map(ShardLease::poll_timeout)
            .min()
    }

    /// The shards this member should run now.
    pub fn desired(&self) -> BTreeSet<u32> {
        if self.shutting_down {
            return BTreeSet::new();
        }
        match &self.explicit {
            Some(shards) => shards.clone(),
            None => fair_share(&self.members, &self.me, self.shard_count),
        }
    }

    /// The shards running here (started, not reported stopped).
    pub fn running(&self) -> impl Iterator<Item = u32> + '_ {
        self.running.keys().copied()
    }

    fn on_change(&mut self, shard: u32, change: LeaseChange) {
        if matches!(change, LeaseChange::Taken | LeaseChange::Expired)
            && let Some(stop) = self.running.get_mut(&shard)
            && *stop != Some(StopKind::LeaseLost)
        {
            *stop = Some(StopKind::LeaseLost);
            // Ahead of everything else queued: nothing may delay stopping a shard whose lease
            // is gone.
            self.actions.push_front(NodeAction::Stop {
                shard,
                kind: StopKind::LeaseLost,
            });
        }
    }

    fn update(&mut self, now: Instant) {
        let now = self.clock(now);
        let desired = self.desired();
        let timings = self.timings;
        for &shard in &desired {
            self.leases
                .entry(shard)
                .or_insert_with(|| ShardLease::new(timings, now));
        }
        let shards: Vec<u32> = self.leases.keys().copied().collect();
        for shard in shards {
            let lease = self.leases.get_mut(&shard).expect("listed above");
            if let Some(change) = lease.handle_timeout(now) {
                self.on_change(shard, change);
            }
            let wanted = desired.contains(&shard);
            let running = self.running.get(&shard).copied();
            let lease = self.leases.get_mut(&shard).expect("listed above");
            // A running shard keeps its lease until it stopped.
            lease.want(now, wanted || running.is_some());
            match running {
                None if wanted && lease.holds(now) => {
                    self.running.insert(shard, None);
                    self.actions.push_back(NodeAction::Start(shard));
                }
                Some(None) if !wanted => {
                    self.running.insert(shard, Some(StopKind::HandOver));
                    self.actions.push_back(NodeAction::Stop {
                        shard,
                        kind: StopKind::HandOver,
                    });
                }
                _ => {}
            }
            let lease = self.leases.get_mut(&shard).expect("listed above");
            while let Some(request) = lease.poll_request(now) {
                self.actions.push_back(NodeAction::Lease { shard, request });
            }
            if !wanted && running.is_none() && lease.is_idle() {
                self.leases.remove(&shard);
            }
        }
    }

    fn clock(&mut self, now: Instant) -> Instant {
        self.now = self.now.max(now);
        self.now
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn members(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn fair_shares_cover_every_shard_once() {
        let m = members(&["a", "b", "c"]);
        let shares: Vec<BTreeSet<u32>> = ["a", "b", "c"]
            .iter()
            .map(|me| fair_share(&m, me, 8))
            .collect();
        assert_eq!(shares[0], BTreeSet::from([0, 1]));
        assert_eq!(shares[1], BTreeSet::from([2, 3, 4]));
        assert_eq!(shares[2], BTreeSet::from([5, 6, 7]));
        assert!(fair_share(&m, "z", 8).is_empty());
        assert_eq!(fair_share(&members(&["a"]), "a", 3).len(), 3);
    }

    fn drain(node: &mut ClusterNode, now: Instant) -> Vec<NodeAction> {
        std::iter::from_fn(|| node.poll_action(now)).collect()
    }

    #[test]
    fn starts_after_the_lease_and_hands_over_when_another_member_joins() {
        let t0 = crate::tests::epoch();
        let timings = LeaseTimings::new(Duration::from_secs(10));
        let mut node = ClusterNode::new("a", 2, None, timings, t0);
        node.handle_timeout(t0);
        let claims = drain(&mut node, t0);
        assert_eq!(
            claims,
            vec![
                NodeAction::Lease {
                    shard: 0,
                    request: LeaseRequest::Claim
                },
                NodeAction::Lease {
                    shard: 1,
                    request: LeaseRequest::Claim
                }
            ]
        );
        node.handle_lease_reply(t0, 0, LeaseReply::Granted);
        node.handle_lease_reply(t0, 1, LeaseReply::Taken);
        assert_eq!(drain(&mut node, t0), vec![NodeAction::Start(0)]);
        // "b" joins: shard 1 is b's now; a keeps 0.
        node.handle_members(t0, ["a".to_owned(), "b".to_owned()]);
        assert_eq!(drain(&mut node, t0), vec![]);
        // "0" joins: a now owns shard 1 only. Shard 0 is handed over first, released after.
        node.handle_members(t0, ["0".to_owned(), "a".to_owned()]);
        assert_eq!(
            drain(&mut node, t0),
            vec![
                NodeAction::Stop {
                    shard: 0,
                    kind: StopKind::HandOver
                },
                NodeAction::Lease {
                    shard: 1,
                    request: LeaseRequest::Claim
                }
            ]
        );
        node.handle_stopped(t0, 0);
        assert_eq!(
            drain(&mut node, t0),
            vec![NodeAction::Lease {
                shard: 0,
                request: LeaseRequest::Release
            }]
        );
        node.handle_lease_reply(t0, 0, LeaseReply::Granted);
        assert_eq!(node.running().count(), 0);
    }

    #[test]
    fn an_expired_lease_is_stopped_before_queued_store_calls() {
        let t0 = crate::tests::epoch();
        let timings = LeaseTimings::new(Duration::from_secs(10));
        let mut node = ClusterNode::new("a", 2, None, timings, t0);
        node.handle_timeout(t0);
        drain(&mut node, t0);
        node.handle_lease_reply(t0, 0, LeaseReply::Granted);
        node.handle_lease_reply(t0, 1, LeaseReply::Granted);
        drain(&mut node, t0);
        // The renewals are queued, and the caller works through them slowly (each store call
        // hangs): the expired lease still comes first.
        let renew = t0 + timings.renew_after;
        node.handle_timeout(renew);
        assert!(matches!(
            node.poll_action(renew),
            Some(NodeAction::Lease { shard: 0, .. })
        ));
        let deadline = t0 + timings.ttl - timings.safety;
        assert_eq!(
            node.poll_action(deadline),
            Some(NodeAction::Stop {
                shard: 0,
                kind: StopKind::LeaseLost
            })
        );
        assert_eq!(
            node.poll_action(deadline),
            Some(NodeAction::Stop {
                shard: 1,
                kind: StopKind::LeaseLost
            })
        );
    }

    #[test]
    fn a_lost_lease_stops_the_shard_at_once_and_shutdown_hands_everything_over() {
        let t0 = crate::tests::epoch();
        let timings = LeaseTimings::new(Duration::from_secs(10));
        let mut node = ClusterNode::new("a", 4, Some(BTreeSet::from([1, 2])), timings, t0);
        node.handle_timeout(t0);
        drain(&mut node, t0);
        node.handle_lease_reply(t0, 1, LeaseReply::Granted);
        node.handle_lease_reply(t0, 2, LeaseReply::Granted);
        assert_eq!(
            drain(&mut node, t0),
            vec![NodeAction::Start(1), NodeAction::Start(2)]
        );
        // Renewals of shard 1 time out; shard 2 renews.
        let renew = t0 + timings.renew_after;
        node.handle_timeout(renew);
        drain(&mut node, renew);
        node.handle_lease_reply(renew, 2, LeaseReply::Granted);
        let deadline = t0 + timings.ttl - timings.safety;
        assert!(node.poll_timeout().is_some_and(|t| t <= deadline));
        node.handle_timeout(deadline);
        assert_eq!(
            drain(&mut node, deadline),
            vec![
                NodeAction::Stop {
                    shard: 1,
                    kind: StopKind::LeaseLost
                },
                NodeAction::Lease {
                    shard: 2,
                    request: LeaseRequest::Claim
                }
            ]
        );
        node.handle_lease_reply(deadline, 2, LeaseReply::Granted);
        node.handle_stopped(deadline, 1);
        node.shutdown(deadline);
        assert_eq!(
            drain(&mut node, deadline),
            vec![NodeAction::Stop {
                shard: 2,
                kind: StopKind::HandOver
            }]
        );
        assert!(!node.is_done());
        node.handle_stopped(deadline, 2);
        assert_eq!(
            drain(&mut node, deadline),
            vec![NodeAction::Lease {
                shard: 2,
                request: LeaseRequest::Release
            }]
        );
        node.handle_lease_reply(deadline, 2, LeaseReply::Granted);
        // Shard 1's claim in flight is still to be answered.
        node.handle_lease_reply(deadline, 1, LeaseReply::Unavailable);
        assert!(node.is_done());
    }
}
