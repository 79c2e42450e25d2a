//! Simulations of re-sharding: several members (each a [`Reshard`]) on one simulated store
//! holding the shard counts and the ready marks, driven by arbitrary interleavings of time,
//! re-shard requests, cancels, failing new sets, deaths and new members. Each member reads the
//! store at its own moments, at least every `poll`.
//!
//! Checked: no guild is ever without a publishing shard (outside the `poll` after a member
//! died or joined: shards then move between members, handed over and RESUMED, which the lease
//! simulations cover); the switch
//! happens only once every shard of the target is ready; and once the requests stop, every
//! member runs exactly the current set, publishing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use crate::cluster::fair_share;
use crate::cluster::reshard::{
    RETIRE_CATCH_UP, Reshard, ReshardAction, ReshardTimings, Retiring, ShardCounts,
};

const POLL: Duration = Duration::from_millis(1_000);
/// How long a set runs on its owner before its shards are ready (READY and every guild).
const WARM: Duration = Duration::from_millis(2_500);
/// Counts used: every guild position repeats every 24 (their least common multiple).
const COUNTS: [u32; 5] = [2, 3, 4, 6, 8];

#[derive(Clone, Debug)]
enum Op {
    Run(u32),
    Poll(usize),
    Reshard(usize),
    Cancel,
    Fail(usize),
    Kill(usize),
    Start,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u32..1_500).prop_map(Op::Run),
        3 => (0usize..8).prop_map(Op::Poll),
        2 => (0usize..COUNTS.len()).prop_map(Op::Reshard),
        1 => Just(Op::Cancel),
        1 => (0usize..8).prop_map(Op::Fail),
        1 => (0usize..8).prop_map(Op::Kill),
        1 => Just(Op::Start),
    ]
}

struct Member {
    name: String,
    reshard: Reshard,
    alive: bool,
    /// When it last read the store, and when it reads next (at most `POLL` later).
    next_poll: Instant,
    /// Per running set: since when, and the members running it as last seen.
    sets: BTreeMap<u32, (Instant, BTreeSet<String>)>,
    /// Whether it has read the store once.
    joined: bool,
}

struct Sim {
    now: Instant,
    counts: ShardCounts,
    members: Vec<Member>,
    /// The latest death or start (shards move between members for a `POLL`).
    last_death: Option<Instant>,
    switches: usize,
}

impl Sim {
    /// Members running set `count` right now (the store's per-set membership).
    fn runners(&self, count: u32) -> BTreeSet<String> {
        self.members
            .iter()
            .filter(|m| m.alive && m.sets.contains_key(&count))
            .map(|m| m.name.clone())
            .collect()
    }

    /// The shards of the target marked ready: each owner marks its share once it ran it for
    /// [`WARM`].
    fn ready(&self, target: u32) -> u32 {
        let mut ready = BTreeSet::new();
        for m in self.members.iter().filter(|m| m.alive) {
            if let Some((since, runners)) = m.sets.get(&target)
                && self.now >= *since + WARM
            {
                ready.extend(fair_share(runners, &m.name, target));
            }
        }
        ready.len() as u32
    }

    fn poll(&mut self, i: usize) {
        if !self.members[i].alive {
            return;
        }
        let now = self.now;
        let counts = self.counts;
        self.members[i].joined = true;
        self.members[i].next_poll = now + POLL;
        self.members[i].reshard.handle_counts(now, counts);
        self.drain(i);
        if let Some(target) = counts.pending() {
            let ready = self.ready(target);
            self.members[i].reshard.handle_ready(now, target, ready);
            self.drain(i);
        }
        // The membership of each set running here, as read with the counts.
        let views: Vec<(u32, BTreeSet<String>)> = self.members[i]
            .sets
            .keys()
            .map(|&c| (c, self.runners(c)))
            .collect();
        for (c, view) in views {
            if let Some(set) = self.members[i].sets.get_mut(&c) {
                set.1 = view;
            }
        }
    }

    fn drain(&mut self, i: usize) {
        let now = self.now;
        while let Some(action) = self.members[i].reshard.poll_action(now) {
            match action {
                ReshardAction::Run { count, .. } => {
                    let mut view = self.runners(count);
                    view.insert(self.members[i].name.clone());
                    self.members[i].sets.insert(count, (now, view));
                }
                ReshardAction::Publish(_) => {}
                ReshardAction::Switch { from, to } => {
                    if self.counts.current == from && self.counts.pending() == Some(to) {
                        assert_eq!(
                            self.ready(to),
                            to,
                            "switched before every shard of {to} was ready"
                        );
                        self.counts = ShardCounts {
                            current: to,
                            target: None,
                        };
                        self.switches += 1;
                    }
                }
                ReshardAction::Cancel { to } => {
                    if self.counts.pending() == Some(to) {
                        self.counts.target = None;
                    }
                }
                ReshardAction::Retire(count) => {
                    self.members[i].sets.remove(&count);
                }
            }
        }
    }

    /// Every guild position has a publishing shard, unless a member died within `POLL`.
    fn check_coverage(&self) {
        if self.last_death.is_some_and(|t| self.now < t + POLL) {
            return;
        }
        if !self.members.iter().any(|m| m.alive && m.joined) {
            return;
        }
        for guild in 0..24u32 {
            let covered = self.members.iter().filter(|m| m.alive).any(|m| {
                m.sets.iter().any(|(&count, (_, view))| {
                    m.reshard.publishing(count)
                        && fair_share(view, &m.name, count).contains(&(guild % count))
                })
            });
            assert!(
                covered,
                "guild position {guild} has no publishing shard at {:?} (counts {:?}, sets {:?})",
                self.now - crate::tests::epoch(),
                self.counts,
                self.members
                    .iter()
                    .filter(|m| m.alive)
                    .map(|m| (
                        m.name.clone(),
                        m.reshard.sets().collect::<Vec<_>>(),
                        m.sets.clone()
                    ))
                    .collect::<Vec<_>>()
            );
        }
    }

    /// Lets time pass until `until`: members read the store when due and close sets when due.
    fn advance(&mut self, until: Instant) {
        loop {
            let next = self
                .members
                .iter()
                .filter(|m| m.alive)
                .flat_map(|m| [Some(m.next_poll), m.reshard.poll_timeout()])
                .flatten()
                .min()
                .filter(|t| *t <= until);
            let Some(t) = next else { break };
            self.now = t.max(self.now);
            for i in 0..self.members.len() {
                if !self.members[i].alive {
                    continue;
                }
                if self.members[i].next_poll <= self.now {
                    self.poll(i);
                }
                self.members[i].reshard.handle_timeout(self.now);
                self.drain(i);
            }
            self.check_coverage();
        }
        self.now = until.max(self.now);
    }

    fn start(&mut self) {
        let name = format!("m{:02}", self.members.len());
        self.members.push(Member {
            name,
            reshard: Reshard::new(ReshardTimings::new(POLL)),
            alive: true,
            next_poll: self.now,
            sets: BTreeMap::new(),
            joined: false,
        });
    }
}

fn run(initial: usize, ops: &[Op]) -> usize {
    let t0 = crate::tests::epoch();
    let mut sim = Sim {
        now: t0,
        counts: ShardCounts {
            current: 4,
            target: None,
        },
        members: Vec::new(),
        last_death: None,
        switches: 0,
    };
    for _ in 0..initial {
        sim.start();
    }
    sim.last_death = Some(t0);
    for op in ops {
        match *op {
            Op::Run(n) => sim.advance(sim.now + Duration::from_millis(u64::from(n))),
            Op::Poll(i) => {
                let i = i % sim.members.len();
                sim.poll(i);
                sim.check_coverage();
            }
            Op::Reshard(c) => {
                // `gatehouse reshard --to N`: refused while another target is pending.
                if sim.counts.pending().is_none() {
                    sim.counts.target = Some(COUNTS[c]);
                }
            }
            Op::Cancel => sim.counts.target = None,
            Op::Fail(i) => {
                let i = i % sim.members.len();
                if let Some(target) = sim.counts.pending()
                    && sim.members[i].alive
                    && sim.members[i].sets.contains_key(&target)
                {
                    sim.members[i].reshard.handle_failed(sim.now, target);
                    sim.drain(i);
                }
            }
            Op::Kill(i) => {
                let i = i % sim.members.len();
                let alive = sim.members.iter().filter(|m| m.alive).count();
                if sim.members[i].alive && alive > 1 {
                    sim.members[i].alive = false;
                    sim.last_death = Some(sim.now);
                }
            }
            Op::Start => {
                if sim.members.len() < 8 {
                    sim.start();
                    sim.last_death = Some(sim.now);
                }
            }
        }
    }
    // Liveness: requests stop; a pending re-shard completes, then the old set closes.
    let end = sim.now + WARM + POLL * 6 + ReshardTimings::new(POLL).overlap;
    sim.advance(end);
    if sim.counts.pending().is_some() {
        // Still pending only if a member failed it meanwhile; that cancel was applied.
        sim.advance(sim.now + WARM + POLL * 4);
    }
    assert_eq!(sim.counts.pending(), None, "the re-shard never completed");
    sim.advance(sim.now + POLL * 2 + ReshardTimings::new(POLL).overlap);
    for m in sim.members.iter().filter(|m| m.alive) {
        assert_eq!(
            m.reshard.sets().collect::<Vec<_>>(),
            vec![(sim.counts.current, true)],
            "{} runs other sets than the current one",
            m.name
        );
    }
    sim.switches
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn resharding_never_leaves_a_guild_unpublished(
        initial in 1usize..4,
        ops in prop::collection::vec(op(), 0..80),
    ) {
        run(initial, &ops);
    }
}

#[test]
fn four_to_eight_with_three_members() {
    let ops = [
        Op::Run(3_000),
        Op::Reshard(4),
        Op::Run(1_200),
        Op::Run(1_200),
        Op::Run(1_200),
        Op::Run(1_200),
    ];
    assert_eq!(run(3, &ops), 1);
}

// ------------------------------------------------------------ a member blind to the store

/// How long the new set warms in [`blind_member`] before the store switches (plus half a
/// `POLL`).
const WARMING: Duration = Duration::from_secs(10);

/// Two members during 4 -> 8, reading the store every `POLL`: `a` runs the new set's shard of
/// a guild, `b` the old set's. The store switches after [`WARMING`] and half a `POLL`; `a`
/// cannot read it from then on for `blind` (Redis unreachable from it alone, or its calls time out on a busy
/// machine), while `b` sees the switch and closes the old set an overlap later. Returns when
/// the guild first had no publishing shard (since the start), and when `a` published its new
/// set and how many times it was told to.
fn blind_member(blind: Duration) -> (Option<Duration>, Option<Duration>, usize) {
    let t0 = crate::tests::epoch();
    let timings = ReshardTimings::new(POLL);
    let (mut a, mut b) = (Reshard::new(timings), Reshard::new(timings));
    let warming = ShardCounts {
        current: 4,
        target: Some(8),
    };
    let switched = ShardCounts {
        current: 8,
        target: None,
    };
    let switch_at = t0 + WARMING + POLL / 2;
    let (mut uncovered, mut published, mut publishes) = (None, None, 0);
    let mut next_read = t0;
    let mut now = t0;
    while now < switch_at + blind + timings.overlap * 2 {
        let counts = if now >= switch_at { switched } else { warming };
        if now >= next_read {
            next_read = now + POLL;
            b.handle_counts(now, counts);
            if now < switch_at || now >= switch_at + blind {
                a.handle_counts(now, counts);
            }
        }
        a.handle_timeout(now);
        b.handle_timeout(now);
        while let Some(action) = a.poll_action(now) {
            if action == ReshardAction::Publish(8) {
                publishes += 1;
                if published.is_none() {
                    published = Some(now - t0);
                }
            }
        }
        while b.poll_action(now).is_some() {}
        if uncovered.is_none() && !a.publishing(8) && !b.publishing(4) {
            uncovered = Some(now - t0);
        }
        now += Duration::from_millis(100);
    }
    assert_eq!(a.sets().collect::<Vec<_>>(), vec![(8, true)]);
    (uncovered, published, publishes)
}

/// Blind for longer than the overlap: without publishing its warming set while it cannot
/// read the store, `a`'s new shard stayed muted after `b` closed the old set (at the
/// switch plus the overlap) until `a` read the store again: its guilds' events were lost.
/// With it, `a` publishes [`ReshardTimings::blind_after`] after its last read, before the
/// old set closes; reading again later publishes nothing twice.
#[test]
fn a_member_blind_to_the_store_publishes_its_warming_set_before_the_old_one_closes() {
    let timings = ReshardTimings::new(POLL);
    let (uncovered, published, publishes) = blind_member(Duration::from_secs(20));
    assert_eq!(uncovered, None, "the guild had no publishing shard");
    assert_eq!(published, Some(WARMING + timings.blind_after()));
    assert_eq!(publishes, 1);
}

/// A member reading the store as usual keeps its new set warming, however long, and
/// publishes it when it sees the switch (no duplicates from the rule above).
#[test]
fn a_member_reading_the_store_publishes_its_new_set_at_the_switch() {
    let (uncovered, published, publishes) = blind_member(Duration::ZERO);
    assert_eq!(uncovered, None);
    assert_eq!(
        published,
        Some(WARMING + POLL),
        "its first read after the switch"
    );
    assert_eq!(publishes, 1);
}

// ------------------------------------------------------------------------- a lagging old set

/// One guild's events through a re-shard, in 10 ms steps: one event per step until the load
/// stops, into the queue (socket) of its old shard and of its new one. Each shard reads up
/// to its throughput per step (the old one reads `old_slow` per step until `slow_until`: it
/// carries more guilds, on a busy machine). The new shard publishes what it reads from the
/// switch on; the old one what it reads until it closes. It is asked to close an overlap
/// after the switch and closes then (`retiring` false: the rule before [`Retiring`]) or when
/// [`Retiring`] says. Returns how many events nobody published.
#[derive(Clone, Copy, Debug)]
struct Lag {
    /// The step the switch is seen at.
    switch: u64,
    /// The step the load stops at.
    load_until: u64,
    /// Events the old shard reads per step while slow (0: stalled).
    old_slow: u64,
    /// The step until which it is slow (then it reads 4 per step).
    slow_until: u64,
}

const STEP: Duration = Duration::from_millis(10);

fn lost_with_lag(lag: Lag, retiring: bool) -> usize {
    let t0 = crate::tests::epoch();
    let overlap = ReshardTimings::new(POLL).overlap;
    let retire_at = lag.switch + (overlap.as_millis() / STEP.as_millis()) as u64;
    let end = lag.load_until + (RETIRE_CATCH_UP.as_millis() / STEP.as_millis()) as u64 + 10;
    let (mut old_queue, mut new_queue) = (Vec::new(), Vec::new());
    let mut published = BTreeSet::new();
    let mut sent = 0u64;
    let mut old_open = true;
    let mut closing: Option<Retiring> = None;
    for step in 0..end {
        let now = t0 + STEP * step as u32;
        if step < lag.load_until {
            old_queue.push(sent);
            new_queue.push(sent);
            sent += 1;
        }
        // The new shard keeps up; it publishes from the switch on.
        for event in new_queue.drain(..) {
            if step >= lag.switch {
                published.insert(event);
            }
        }
        if old_open {
            let rate = if step < lag.slow_until {
                lag.old_slow
            } else {
                4
            };
            let read = (rate as usize).min(old_queue.len());
            published.extend(old_queue.drain(..read));
            if step >= retire_at {
                let caught_up = old_queue.is_empty();
                let close = if retiring {
                    closing
                        .get_or_insert_with(|| Retiring::new(now))
                        .should_close(now, caught_up)
                } else {
                    true
                };
                if close {
                    old_open = false;
                }
            }
        }
    }
    (0..sent).filter(|e| !published.contains(e)).count()
}

fn lag() -> impl Strategy<Value = Lag> {
    (100u64..600, 0u64..3_000, 0u64..2, 0u64..2_000).prop_map(
        |(switch, after, old_slow, slow_until)| Lag {
            switch,
            load_until: switch + after,
            old_slow,
            slow_until,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn a_lagging_old_shard_loses_nothing(lag in lag()) {
        prop_assert_eq!(lost_with_lag(lag, true), 0, "{:?}", lag);
    }
}

/// The shape of the `cluster-reshard` losses: the old shard reads half as fast as events
/// come for 15 s (it is ~7 s behind at the switch), then keeps up. Closing at the end of
/// the overlap drops the events it had not read yet (sent before the switch, seen by the
/// warming new shard); catching up first loses none.
#[test]
fn a_shard_seconds_behind_is_not_closed_before_it_caught_up() {
    let lag = Lag {
        switch: 100,
        load_until: 3_000,
        old_slow: 0,
        slow_until: 1_500,
    };
    assert!(
        lost_with_lag(lag, false) > 0,
        "the old rule loses events here"
    );
    assert_eq!(lost_with_lag(lag, true), 0);
}

// ------------------------------------------- the warming shard's replay (the Shard core)

/// A guild's events through a re-shard, with the new set's shard a real [`crate::shard::Shard`]
/// (warming, then told to publish at `switch`) and the old set's shard modelled: it reads
/// `lag` behind the gateway and, asked to close an overlap after the switch, closes at once
/// (its socket looked empty: the gateway sends its backlog in batches, so an empty socket is
/// no proof of having caught up). It published what was sent until `lag` before it closed.
/// Returns (events nobody published, whether the new shard's confirmed sequence ever went
/// backwards or stayed behind what it received).
fn lost_with_replay(replay: Duration, lag: Duration, switch: Duration) -> (usize, bool) {
    use super::sim::{Sim, test_config};

    const TICK: Duration = Duration::from_millis(100);
    let overlap = ReshardTimings::new(POLL).overlap;
    let mut config = test_config(91);
    config.publishing = false;
    config.replay.window = replay;
    let mut sim = Sim::with_config(config, 91);
    sim.until_active();
    let start = sim.now;
    let mark = sim.mark();
    // (sent at, sequence) of each event of the guild.
    let mut sent: Vec<(Instant, u64)> = Vec::new();
    let mut confirmed = 0;
    let mut bookkeeping_wrong = false;
    let end = switch + overlap + Duration::from_secs(3);
    while sim.now - start < end {
        if sim.now - start >= switch && !sim.shard.publishing() {
            let now = sim.now;
            sim.shard.set_publishing(now, true);
        }
        let now = sim.now;
        sim.gw.dispatch(
            now,
            "MESSAGE_CREATE",
            serde_json::json!({"id": sent.len().to_string()}),
        );
        sim.advance(TICK);
        let seq = sim.shard.last_sequence().unwrap_or(0);
        sent.push((now, seq));
        let c = sim.shard.confirmed_sequence();
        // Everything received is confirmed by the next tick (warming: at once; publishing:
        // the simulated broker confirms within 5 ms); replays never hold it back.
        bookkeeping_wrong |= c < confirmed || c < seq;
        confirmed = c;
    }
    sim.advance(Duration::from_secs(1));
    bookkeeping_wrong |= sim.shard.unconfirmed() != 0;
    let closed_at = start + switch + overlap;
    let old_read_until = closed_at.checked_sub(lag).unwrap_or(start);
    let by_new: BTreeSet<u64> = sim.published_since(mark);
    let lost = sent
        .iter()
        .filter(|(at, seq)| *at >= old_read_until && !by_new.contains(seq))
        .count();
    (lost, bookkeeping_wrong)
}

/// The `cluster-reshard` loss: the old shard closes 2 s behind the new one after the overlap
/// (it lags by the overlap plus 2 s); the events of those 2 s were received by the new shard
/// while warming. Without the replay nobody publishes them; with it (the overlap's window)
/// the new shard publishes them at the switch.
#[test]
fn a_warming_shard_replays_what_an_old_shard_closing_behind_missed() {
    let overlap = ReshardTimings::new(POLL).overlap;
    let lag = overlap + Duration::from_secs(2);
    let switch = Duration::from_secs(10);
    let (lost, _) = lost_with_replay(Duration::ZERO, lag, switch);
    assert!(lost > 0, "without the replay, events are lost");
    assert_eq!(
        lost_with_replay(overlap, lag, switch),
        (0, false),
        "with it, none (and the confirmed sequence stays right)"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: crate::tests::cases(24), ..ProptestConfig::default() })]

    /// An old shard closing up to twice the overlap behind the new one (closing at the end
    /// of the overlap, however far behind) loses nothing with the overlap's replay window,
    /// and the new shard's confirmed sequence is never held back or moved back.
    #[test]
    fn an_old_shard_closing_behind_loses_nothing_with_the_replay(
        lag_ms in 0u64..14_000,
        switch_ms in 3_000u64..12_000,
    ) {
        let overlap = ReshardTimings::new(POLL).overlap;
        let lag = Duration::from_millis(lag_ms).min(overlap * 2);
        let (lost, wrong) =
            lost_with_replay(overlap, lag, Duration::from_millis(switch_ms));
        prop_assert_eq!(lost, 0);
        prop_assert!(!wrong);
    }
}
