//! Simulations of cluster mode: several processes (each a pure core type) on one simulated
//! store with expiring keys, driven by arbitrary interleavings of time, requests, deaths,
//! partitions and shutdowns. The store model does what the Lua scripts in
//! `cluster::scripts` do, at the moment a request is sent (the tightest case for the lease
//! rule: the store's expiry starts as early as it can). Shrunk failures are pinned as named
//! tests at the bottom.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use crate::cluster::identify::FALLBACK_PERIOD;
use crate::cluster::{
    ClaimReply, ClusterNode, IdentifyStep, LeaseReply, LeaseRequest, LeaseTimings, NodeAction,
    SharedIdentify, StopKind, fair_share,
};
use crate::identify::{BUCKET_PERIOD, DISCORD_BUCKET_WINDOW, SessionStartLimit};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ----- identify limits across processes -----

#[derive(Clone, Debug)]
enum IdOp {
    Run(u32),
    Request { process: usize, shard: u32 },
    StoreDown(bool),
}

fn id_op(processes: usize) -> impl Strategy<Value = IdOp> {
    prop_oneof![
        4 => (0u32..8_000).prop_map(IdOp::Run),
        6 => (0..processes, 0u32..12).prop_map(|(process, shard)| IdOp::Request { process, shard }),
        1 => any::<bool>().prop_map(IdOp::StoreDown),
    ]
}

/// The store side of `IDENTIFY_CLAIM`: bucket claims with an expiry and the day's budget.
struct IdentifyStore {
    buckets: BTreeMap<u32, Instant>,
    remaining: u32,
    down: bool,
}

impl IdentifyStore {
    fn claim(&mut self, now: Instant, bucket: u32, period: Duration) -> ClaimReply {
        if self.down {
            return ClaimReply::Unavailable;
        }
        if self.remaining == 0 {
            return ClaimReply::Exhausted {
                reset_in: Duration::from_secs(3600),
            };
        }
        match self.buckets.get(&bucket) {
            Some(&until) if until > now => ClaimReply::BucketBusy {
                retry_in: until - now,
            },
            _ => {
                self.buckets.insert(bucket, now + period);
                self.remaining -= 1;
                ClaimReply::Granted
            }
        }
    }
}

struct Grant {
    at: Instant,
    process: usize,
    shard: u32,
    via_store: bool,
}

/// Processes sharing one identify store.
struct IdSim {
    nodes: Vec<SharedIdentify>,
    store: IdentifyStore,
    now: Instant,
    grants: Vec<Grant>,
}

impl IdSim {
    /// Does every step each process has now.
    fn settle(&mut self) {
        let now = self.now;
        for (process, node) in self.nodes.iter_mut().enumerate() {
            let mut guard = 0;
            while let Some(step) = node.poll_step(now) {
                guard += 1;
                assert!(guard < 1000, "livelock");
                let (shard, via_store) = match step {
                    IdentifyStep::Grant(shard) => (Some(shard), false),
                    IdentifyStep::Claim(claim) => {
                        let reply = self.store.claim(now, claim.bucket, claim.period);
                        (node.handle_reply(now, claim, reply), true)
                    }
                };
                if let Some(shard) = shard {
                    self.grants.push(Grant {
                        at: now,
                        process,
                        shard,
                        via_store,
                    });
                }
            }
        }
    }

    /// Lets time pass until `until`, waking the processes when they asked to be.
    fn advance(&mut self, until: Instant) {
        while let Some(t) = self
            .nodes
            .iter()
            .filter_map(SharedIdentify::poll_timeout)
            .min()
            .filter(|t| *t <= until)
        {
            self.now = t.max(self.now);
            self.settle();
        }
        self.now = until.max(self.now);
        self.settle();
    }
}

fn run_identify(processes: usize, max_concurrency: u16, remaining: u32, ops: &[IdOp]) {
    let t0 = super::epoch();
    let limit = SessionStartLimit {
        total: 1000,
        remaining,
        reset_after_ms: 3_600_000,
        max_concurrency,
    };
    let mut sim = IdSim {
        nodes: (0..processes)
            .map(|_| SharedIdentify::new(limit, t0))
            .collect(),
        store: IdentifyStore {
            buckets: BTreeMap::new(),
            remaining,
            down: false,
        },
        now: t0,
        grants: Vec::new(),
    };
    let mut requested: BTreeSet<(usize, u32)> = BTreeSet::new();
    let mut ever_down = false;
    // Every request may cost a session start (a shard granted twice identifies twice).
    let mut requests = 0u32;

    for op in ops {
        match op {
            IdOp::Run(n) => sim.advance(sim.now + ms(u64::from(*n))),
            IdOp::Request { process, shard } => {
                // Each process runs its own shards: shard numbers are per process here, so
                // that two processes may share a bucket.
                let shard = *shard * processes as u32 + *process as u32;
                requested.insert((*process, shard));
                requests += 1;
                sim.nodes[*process].request(sim.now, shard);
                sim.settle();
            }
            IdOp::StoreDown(down) => {
                sim.store.down = *down;
                ever_down |= *down;
            }
        }
    }

    let bucket = |shard: u32| shard % u32::from(max_concurrency.max(1));
    // Safety: through the store, one IDENTIFY per bucket per Discord window across all
    // processes; within a process, always (also in the fallback).
    let grants = &sim.grants;
    for (i, a) in grants.iter().enumerate() {
        for b in &grants[i + 1..] {
            if bucket(a.shard) != bucket(b.shard) {
                continue;
            }
            let gap = b.at - a.at;
            if a.process == b.process {
                assert!(
                    gap >= BUCKET_PERIOD,
                    "process reused a bucket after {gap:?}"
                );
            }
            if !ever_down && a.via_store && b.via_store {
                assert!(
                    gap >= DISCORD_BUCKET_WINDOW,
                    "bucket {} identified twice within {gap:?} by processes {} and {}",
                    bucket(a.shard),
                    a.process,
                    b.process
                );
            }
        }
    }
    let through_store = grants.iter().filter(|g| g.via_store).count() as u32;
    assert!(through_store <= remaining, "the daily budget was overdrawn");

    // Liveness: with the store back, every request is granted eventually (budget allowing).
    sim.store.down = false;
    sim.advance(sim.now + FALLBACK_PERIOD + BUCKET_PERIOD * (requested.len() as u32 + 2));
    if !ever_down && requests <= remaining {
        let granted: BTreeSet<(usize, u32)> =
            sim.grants.iter().map(|g| (g.process, g.shard)).collect();
        assert!(
            requested.is_subset(&granted),
            "requests were never granted: {:?}",
            requested.difference(&granted).collect::<Vec<_>>()
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn processes_share_the_identify_limits(
        processes in 1usize..4,
        max_concurrency in 1u16..4,
        remaining in 0u32..30,
        ops in prop::collection::vec(id_op(3), 0..60),
    ) {
        let ops: Vec<IdOp> = ops
            .into_iter()
            .map(|op| match op {
                IdOp::Request { process, shard } => IdOp::Request { process: process % processes, shard },
                other => other,
            })
            .collect();
        run_identify(processes, max_concurrency, remaining, &ops);
    }
}

// ----- leases and placement -----

#[derive(Clone, Debug)]
enum NodeOp {
    Run(u32),
    Join,
    Kill(usize),
    Partition(usize, bool),
    Shutdown(usize),
}

fn node_op() -> impl Strategy<Value = NodeOp> {
    prop_oneof![
        6 => (0u32..3_000).prop_map(NodeOp::Run),
        2 => Just(NodeOp::Join),
        1 => (0usize..8).prop_map(NodeOp::Kill),
        1 => (0usize..8, any::<bool>()).prop_map(|(n, on)| NodeOp::Partition(n, on)),
        1 => (0usize..8).prop_map(NodeOp::Shutdown),
    ]
}

const TTL: Duration = Duration::from_millis(1_000);

struct SimNode {
    node: ClusterNode,
    alive: bool,
    partitioned: bool,
    /// Lease answers on their way: (arrives at, shard, reply).
    replies: Vec<(Instant, u32, LeaseReply)>,
    /// Graceful stops under way: (done at, shard).
    stops: Vec<(Instant, u32)>,
    next_refresh: Instant,
    /// The reply delay of this node's link and the time a graceful stop takes.
    delay: Duration,
    stop_time: Duration,
}

struct LeaseSim {
    now: Instant,
    nodes: Vec<SimNode>,
    /// shard -> (owner, expires at)
    leases: BTreeMap<u32, (String, Instant)>,
    members: BTreeMap<String, Instant>,
    /// shard -> the node running it.
    runner: BTreeMap<u32, usize>,
    shard_count: u32,
    explicit: Option<Vec<BTreeSet<u32>>>,
    joined: usize,
}

impl LeaseSim {
    fn timings() -> LeaseTimings {
        LeaseTimings::new(TTL)
    }

    fn join(&mut self) {
        let name = format!("m{:02}", self.joined);
        let explicit = self
            .explicit
            .as_ref()
            .map(|sets| sets[self.joined % sets.len()].clone());
        let index = self.joined;
        self.joined += 1;
        self.nodes.push(SimNode {
            node: ClusterNode::new(name, self.shard_count, explicit, Self::timings(), self.now),
            alive: true,
            partitioned: false,
            replies: Vec::new(),
            stops: Vec::new(),
            next_refresh: self.now,
            delay: ms((index as u64 * 37) % 120),
            stop_time: ms((index as u64 * 211) % 600),
        });
    }

    fn store(&mut self, node: usize, shard: u32, request: LeaseRequest) -> LeaseReply {
        let now = self.now;
        let me = self.nodes[node].node.me().to_owned();
        let held = self
            .leases
            .get(&shard)
            .filter(|(_, until)| *until > now)
            .map(|(owner, _)| owner.clone());
        match request {
            LeaseRequest::Claim => match held {
                Some(owner) if owner != me => LeaseReply::Taken,
                _ => {
                    self.leases.insert(shard, (me, now + TTL));
                    LeaseReply::Granted
                }
            },
            LeaseRequest::Release => {
                if held.as_deref() == Some(me.as_str()) {
                    self.leases.remove(&shard);
                    LeaseReply::Granted
                } else {
                    LeaseReply::Taken
                }
            }
        }
    }

    /// Does what node `i` asks until it asks nothing.
    fn drain(&mut self, i: usize) {
        let mut guard = 0;
        while let Some(action) = self.nodes[i].node.poll_action(self.now) {
            guard += 1;
            assert!(guard < 10_000, "livelock");
            match action {
                NodeAction::Lease { shard, request } => {
                    let (reply, delay) = if self.nodes[i].partitioned {
                        // The request never arrives; the client gives up after a while.
                        (LeaseReply::Unavailable, TTL / 2)
                    } else {
                        (self.store(i, shard, request), self.nodes[i].delay)
                    };
                    let at = self.now + delay;
                    self.nodes[i].replies.push((at, shard, reply));
                }
                NodeAction::Start(shard) => {
                    if let Some(other) = self.runner.get(&shard) {
                        panic!("shard {shard} started by node {i} while node {other} runs it");
                    }
                    self.runner.insert(shard, i);
                }
                NodeAction::Stop { shard, kind } => match kind {
                    StopKind::LeaseLost => {
                        self.nodes[i].stops.retain(|(_, s)| *s != shard);
                        self.stopped(i, shard);
                    }
                    StopKind::HandOver => {
                        let at = self.now + self.nodes[i].stop_time;
                        self.nodes[i].stops.push((at, shard));
                    }
                },
            }
        }
    }

    fn stopped(&mut self, i: usize, shard: u32) {
        if self.runner.get(&shard) == Some(&i) {
            self.runner.remove(&shard);
        }
        self.nodes[i].node.handle_stopped(self.now, shard);
    }

    fn next_event(&self) -> Option<Instant> {
        self.nodes
            .iter()
            .filter(|n| n.alive)
            .flat_map(|n| {
                n.replies
                    .iter()
                    .map(|r| r.0)
                    .chain(n.stops.iter().map(|s| s.0))
                    .chain(n.node.poll_timeout())
                    .chain(Some(n.next_refresh))
            })
            .min()
    }

    fn step(&mut self) {
        let now = self.now;
        for i in 0..self.nodes.len() {
            if !self.nodes[i].alive {
                continue;
            }
            if self.nodes[i].next_refresh <= now {
                self.nodes[i].next_refresh = now + TTL / 3;
                if !self.nodes[i].partitioned {
                    let me = self.nodes[i].node.me().to_owned();
                    self.members.insert(me, now + TTL);
                    let live: Vec<String> = self
                        .members
                        .iter()
                        .filter(|(_, until)| **until > now)
                        .map(|(m, _)| m.clone())
                        .collect();
                    self.nodes[i].node.handle_members(now, live);
                }
            }
            let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.nodes[i].replies)
                .into_iter()
                .partition(|r| r.0 <= now);
            self.nodes[i].replies = later;
            for (_, shard, reply) in due {
                self.nodes[i].node.handle_lease_reply(now, shard, reply);
            }
            let (done, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.nodes[i].stops)
                .into_iter()
                .partition(|s| s.0 <= now);
            self.nodes[i].stops = later;
            for (_, shard) in done {
                self.stopped(i, shard);
            }
            self.nodes[i].node.handle_timeout(now);
            self.drain(i);
            if self.nodes[i].node.is_done() {
                let me = self.nodes[i].node.me().to_owned();
                self.members.remove(&me);
                self.nodes[i].alive = false;
            }
        }
    }

    fn run(&mut self, duration: Duration) {
        let until = self.now + duration;
        let mut guard = 0;
        while let Some(t) = self.next_event().filter(|t| *t <= until) {
            guard += 1;
            assert!(guard < 100_000, "livelock");
            self.now = t.max(self.now);
            self.step();
        }
        self.now = until;
        self.step();
    }

    fn kill(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.alive = false;
        node.replies.clear();
        node.stops.clear();
        self.runner.retain(|_, n| *n != i);
    }
}

fn run_leases(shard_count: u32, explicit: Option<Vec<BTreeSet<u32>>>, ops: &[NodeOp]) {
    let mut sim = LeaseSim {
        now: super::epoch(),
        nodes: Vec::new(),
        leases: BTreeMap::new(),
        members: BTreeMap::new(),
        runner: BTreeMap::new(),
        shard_count,
        explicit,
        joined: 0,
    };
    sim.join();
    for op in ops {
        let live: Vec<usize> = (0..sim.nodes.len())
            .filter(|&i| sim.nodes[i].alive)
            .collect();
        match op {
            NodeOp::Run(n) => sim.run(ms(u64::from(*n))),
            NodeOp::Join if live.len() < 4 => sim.join(),
            NodeOp::Kill(n) if !live.is_empty() => sim.kill(live[n % live.len()]),
            NodeOp::Partition(n, on) if !live.is_empty() => {
                sim.nodes[live[n % live.len()]].partitioned = *on
            }
            NodeOp::Shutdown(n) if !live.is_empty() => {
                let i = live[n % live.len()];
                let now = sim.now;
                sim.nodes[i].node.shutdown(now);
                sim.drain(i);
            }
            _ => {}
        }
        if !sim.nodes.iter().any(|n| n.alive) {
            sim.join();
        }
    }
    // Heal, settle, and check that every shard runs exactly once, where it belongs.
    for node in &mut sim.nodes {
        node.partitioned = false;
    }
    sim.run(TTL * 6);
    let live: Vec<usize> = (0..sim.nodes.len())
        .filter(|&i| sim.nodes[i].alive)
        .collect();
    let members: BTreeSet<String> = live
        .iter()
        .map(|&i| sim.nodes[i].node.me().to_owned())
        .collect();
    let mut expected: BTreeMap<u32, BTreeSet<usize>> = BTreeMap::new();
    for &i in &live {
        let share = match &sim.explicit {
            Some(_) => sim.nodes[i].node.desired(),
            None => fair_share(&members, sim.nodes[i].node.me(), shard_count),
        };
        for shard in share {
            expected.entry(shard).or_default().insert(i);
        }
    }
    for (shard, candidates) in &expected {
        let runner = sim.runner.get(shard);
        assert!(
            runner.is_some_and(|r| candidates.contains(r)),
            "shard {shard} runs on {runner:?}, expected one of {candidates:?}"
        );
    }
    assert_eq!(
        sim.runner.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
}

fn explicit_sets(shard_count: u32) -> impl Strategy<Value = Option<Vec<BTreeSet<u32>>>> {
    prop_oneof![
        Just(None),
        prop::collection::vec(
            prop::collection::btree_set(0..shard_count, 1..=shard_count as usize),
            1..4
        )
        .prop_map(Some),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn a_shard_never_runs_twice_and_every_shard_finds_a_home(
        (shard_count, explicit) in (1u32..8).prop_flat_map(|n| (Just(n), explicit_sets(n))),
        ops in prop::collection::vec(node_op(), 0..40),
    ) {
        run_leases(shard_count, explicit, &ops);
    }
}

// ----- pinned cases -----

/// Three processes start together with `max_concurrency` 1 and all want to identify at once:
/// they take turns, 5.25 s apart.
#[test]
fn pinned_three_processes_take_turns_on_one_bucket() {
    let mut ops = Vec::new();
    for process in 0..3 {
        for shard in 0..2 {
            ops.push(IdOp::Request { process, shard });
        }
    }
    ops.push(IdOp::Run(40_000));
    run_identify(3, 1, 1000, &ops);
}

/// A member is killed while a graceful hand-over to it is under way, and a partitioned member
/// keeps running until its lease runs out: the survivor takes everything over afterwards.
#[test]
fn pinned_kill_during_hand_over_and_partition() {
    run_leases(
        4,
        None,
        &[
            NodeOp::Run(500),
            NodeOp::Join,
            NodeOp::Run(400),
            NodeOp::Partition(0, true),
            NodeOp::Run(2_000),
            NodeOp::Kill(1),
            NodeOp::Join,
            NodeOp::Run(300),
            NodeOp::Shutdown(0),
            NodeOp::Run(2_500),
        ],
    );
}
