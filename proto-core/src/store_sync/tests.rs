//! Simulation tests of the store policy: a fake Redis that goes down and comes back on a
//! schedule, a fake clock, and the glue's drive loop, checked against the promises of the
//! module docs. Shrunk property failures are pinned as named tests at the bottom.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::sharding::ShardId;
use crate::tests::{cases, epoch};

/// Steps a simulation may take before it counts as a livelock.
const MAX_STEPS: usize = 100_000;

/// A Redis that is down during the given windows (offsets from the epoch).
#[derive(Clone, Debug, Default)]
struct FakeRedis {
    down: Vec<(Duration, Duration)>,
    data: BTreeMap<String, Vec<u8>>,
}

impl FakeRedis {
    fn up_at(&self, at: Duration) -> bool {
        !self.down.iter().any(|&(from, to)| from <= at && at < to)
    }

    /// When the last outage ends (up for good from then on).
    fn last_back(&self) -> Duration {
        self.down.iter().map(|w| w.1).max().unwrap_or_default()
    }
}

fn snapshot(shard: u32, session: &str, sequence: u64) -> SessionSnapshot {
    SessionSnapshot {
        shard: ShardId::new(shard, 4).unwrap(),
        session_id: session.into(),
        sequence,
        resume_url: "wss://resume.example".into(),
    }
}

fn policy(identify_anyway_after: Option<Duration>) -> StorePolicy {
    StorePolicy {
        retry: RetryPolicy::default(),
        identify_anyway_after,
    }
}

// ----- the start-up read -----

/// What a load ended with.
#[derive(Debug)]
struct LoadOutcome {
    at: Duration,
    sessions: BTreeMap<u32, Option<SessionSnapshot>>,
    unread: Vec<u32>,
    events: Vec<StoreEvent>,
    attempts: Vec<Duration>,
    failures: usize,
}

/// Drives a [`SnapshotLoad`] of shards 0..4 against `redis` holding `stored`; each read takes
/// `latency` and fails when Redis is down when it completes.
fn run_load(
    redis: &FakeRedis,
    stored: &BTreeMap<u32, SessionSnapshot>,
    policy: StorePolicy,
    latency: Duration,
) -> LoadOutcome {
    let epoch = epoch();
    let mut now = epoch;
    let mut load = SnapshotLoad::new(0..4, policy, now);
    let mut events = Vec::new();
    let mut attempts = Vec::new();
    let mut failures = 0;
    for _ in 0..MAX_STEPS {
        while let Some(action) = load.poll_action() {
            match action {
                LoadAction::Read(shards) => {
                    attempts.push(now - epoch);
                    for shard in shards {
                        now += latency;
                        if redis.up_at(now - epoch) {
                            load.handle_read(now, shard, stored.get(&shard).cloned());
                        } else {
                            load.handle_read_failed(now, "connection refused");
                            failures += 1;
                            break;
                        }
                    }
                }
                LoadAction::Start { sessions, unread } => {
                    events.extend(std::iter::from_fn(|| load.poll_event()));
                    assert!(load.is_done());
                    assert_eq!(load.poll_action(), None, "nothing after Start");
                    assert_eq!(load.poll_timeout(), None);
                    return LoadOutcome {
                        at: now - epoch,
                        sessions,
                        unread,
                        events,
                        attempts,
                        failures,
                    };
                }
            }
        }
        events.extend(std::iter::from_fn(|| load.poll_event()));
        let deadline = load
            .poll_timeout()
            .expect("a load that is not done and has no read out waits for a timeout");
        assert!(deadline > now, "a timeout in the past would spin");
        now = deadline;
        load.handle_timeout(now);
    }
    panic!("livelock: the load took {MAX_STEPS} steps");
}

fn stored_sessions() -> BTreeMap<u32, SessionSnapshot> {
    [(0, snapshot(0, "a", 10)), (2, snapshot(2, "c", 30))]
        .into_iter()
        .collect()
}

#[test]
fn retry_delays_double_up_to_the_cap() {
    let retry = RetryPolicy::default();
    let delays: Vec<u64> = (1..=7).map(|n| retry.delay(n).as_millis() as u64).collect();
    assert_eq!(delays, [500, 1000, 2000, 2000, 2000, 2000, 2000]);
    let slow = RetryPolicy {
        first: Duration::from_secs(1),
        max: Duration::from_secs(60),
    };
    let delays: Vec<u64> = (1..=8).map(|n| slow.delay(n).as_secs()).collect();
    assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60]);
    assert_eq!(retry.delay(u32::MAX), retry.max);
}

#[test]
fn a_reachable_redis_starts_every_shard_with_what_it_holds() {
    let out = run_load(
        &FakeRedis::default(),
        &stored_sessions(),
        policy(None),
        Duration::from_millis(1),
    );
    assert_eq!(out.attempts, [Duration::ZERO]);
    assert!(out.unread.is_empty());
    assert!(out.events.is_empty(), "{:?}", out.events);
    assert_eq!(out.sessions.len(), 4);
    assert_eq!(out.sessions[&0], Some(snapshot(0, "a", 10)));
    assert_eq!(out.sessions[&1], None);
    assert_eq!(out.sessions[&2], Some(snapshot(2, "c", 30)));
}

#[test]
fn redis_down_at_start_holds_every_shard_until_it_answers() {
    let redis = FakeRedis {
        down: vec![(Duration::ZERO, Duration::from_secs(30))],
        ..FakeRedis::default()
    };
    let out = run_load(&redis, &stored_sessions(), policy(None), Duration::ZERO);
    assert!(out.at >= Duration::from_secs(30));
    assert!(out.at <= Duration::from_secs(32), "retried within the cap");
    assert!(out.unread.is_empty(), "nobody identified for want of Redis");
    assert_eq!(out.sessions[&0], Some(snapshot(0, "a", 10)));
    assert_eq!(out.sessions[&2], Some(snapshot(2, "c", 30)));
    let failing: Vec<_> = out
        .events
        .iter()
        .filter(|e| matches!(e, StoreEvent::ReadFailing { .. }))
        .collect();
    assert_eq!(failing.len(), 1, "logged once: {:?}", out.events);
    assert_eq!(
        failing[0],
        &StoreEvent::ReadFailing {
            reason: "connection refused".into(),
            shards: vec![0, 1, 2, 3],
            retry_in: Duration::from_millis(500),
            identify_anyway_in: None,
        }
    );
    assert!(matches!(
        out.events.last(),
        Some(StoreEvent::ReadRecovered { .. })
    ));
}

#[test]
fn a_failure_midway_rereads_only_the_unread_shards() {
    // Up for the first two reads, then down for a second.
    let latency = Duration::from_millis(10);
    let redis = FakeRedis {
        down: vec![(Duration::from_millis(25), Duration::from_secs(1))],
        ..FakeRedis::default()
    };
    let epoch = epoch();
    let mut load = SnapshotLoad::new(0..4, policy(None), epoch);
    assert_eq!(load.poll_action(), Some(LoadAction::Read(vec![0, 1, 2, 3])));
    let stored = stored_sessions();
    load.handle_read(epoch + latency, 0, stored.get(&0).cloned());
    load.handle_read(epoch + latency * 2, 1, None);
    assert!(!redis.up_at(latency * 3));
    load.handle_read_failed(epoch + latency * 3, "timed out");
    assert_eq!(load.poll_action(), None);
    let retry = load.poll_timeout().unwrap();
    load.handle_timeout(retry);
    assert_eq!(load.poll_action(), Some(LoadAction::Read(vec![2, 3])));
    // A late answer for a shard already read changes nothing.
    load.handle_read(retry, 0, None);
    load.handle_read(retry, 2, stored.get(&2).cloned());
    load.handle_read(retry, 3, None);
    match load.poll_action() {
        Some(LoadAction::Start { sessions, unread }) => {
            assert!(unread.is_empty());
            assert_eq!(sessions[&0], Some(snapshot(0, "a", 10)));
            assert_eq!(sessions[&2], Some(snapshot(2, "c", 30)));
        }
        other => panic!("expected Start, got {other:?}"),
    }
}

#[test]
fn identify_anyway_after_the_configured_outage_only() {
    let redis = FakeRedis {
        down: vec![(Duration::ZERO, Duration::from_secs(600))],
        ..FakeRedis::default()
    };
    let after = Duration::from_secs(20);
    let out = run_load(
        &redis,
        &stored_sessions(),
        policy(Some(after)),
        Duration::ZERO,
    );
    assert_eq!(out.at, after, "exactly when allowed, not before");
    assert_eq!(out.unread, [0, 1, 2, 3]);
    assert!(out.sessions.values().all(Option::is_none));
    assert!(matches!(
        out.events.first(),
        Some(StoreEvent::ReadFailing {
            identify_anyway_in: Some(d),
            ..
        }) if *d == after
    ));
    assert_eq!(
        out.events.last(),
        Some(&StoreEvent::IdentifyingAnyway {
            shards: vec![0, 1, 2, 3],
            waited: after,
        })
    );
}

#[test]
fn identify_anyway_never_skips_a_reachable_redis() {
    // Even "at once" reads first: only a failed read lets a shard identify.
    let out = run_load(
        &FakeRedis::default(),
        &stored_sessions(),
        policy(Some(Duration::ZERO)),
        Duration::from_millis(5),
    );
    assert!(out.unread.is_empty());
    assert_eq!(out.sessions[&2], Some(snapshot(2, "c", 30)));
}

fn down_windows() -> impl Strategy<Value = Vec<(Duration, Duration)>> {
    prop::collection::vec((0u64..120_000, 1u64..60_000), 0..4).prop_map(|windows| {
        windows
            .into_iter()
            .map(|(from, len)| {
                (
                    Duration::from_millis(from),
                    Duration::from_millis(from + len),
                )
            })
            .collect()
    })
}

fn check_load(down: Vec<(Duration, Duration)>, after_ms: Option<u64>, latency_ms: u64) {
    let redis = FakeRedis {
        down,
        ..FakeRedis::default()
    };
    let stored = stored_sessions();
    let after = after_ms.map(Duration::from_millis);
    let latency = Duration::from_millis(latency_ms);
    let out = run_load(&redis, &stored, policy(after), latency);
    let retry = RetryPolicy::default();
    // Every shard is decided.
    assert_eq!(
        out.sessions.keys().copied().collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
    if out.unread.is_empty() {
        // Nothing identified for want of Redis: each shard got exactly what Redis holds.
        for shard in 0..4 {
            assert_eq!(out.sessions[&shard], stored.get(&shard).cloned());
        }
        // ... soon after Redis is back for good (the longest back-off, the reads of two
        // attempts).
        let back = redis.last_back();
        assert!(
            out.at <= back + retry.max + latency * 8,
            "started at {:?}, Redis back at {back:?}",
            out.at
        );
    } else {
        // Only once the configured outage passed, and only after a failed read.
        let after = after.expect("identify anyway needs the setting");
        assert!(
            out.at >= after,
            "identified at {:?}, before {after:?}",
            out.at
        );
        assert!(out.failures > 0, "identified without a failed read");
        for shard in &out.unread {
            assert_eq!(out.sessions[shard], None);
        }
    }
    // Consecutive attempts never come faster than the first back-off step, nor slower than
    // the cap (plus the reads of the attempt).
    for pair in out.attempts.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= retry.first, "retried after {gap:?}");
        assert!(gap <= retry.max + latency * 4, "waited {gap:?}");
    }
    let failing = out
        .events
        .iter()
        .filter(|e| matches!(e, StoreEvent::ReadFailing { .. }))
        .count();
    assert!(failing <= 1, "the outage is logged once: {:?}", out.events);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(300)))]

    #[test]
    fn the_load_keeps_its_promises(
        down in down_windows(),
        after_ms in prop::option::of(0u64..90_000),
        latency_ms in 0u64..2_000,
    ) {
        check_load(down, after_ms, latency_ms);
    }
}

// ----- writing -----

/// What the write simulation does.
#[derive(Clone, Debug)]
enum Op {
    /// Let this many milliseconds pass.
    Run(u32),
    /// Shard `n` saves a snapshot with the next sequence (of a new session when `new`).
    Save { shard: u32, new_session: bool },
    /// Shard `n` reports a status.
    Status(u32),
}

/// The glue's write loop around a [`StoreSync`], with a [`FakeRedis`] whose writes take
/// `latency` and fail when it is down when they complete.
struct WriteSim {
    epoch: Instant,
    now: Instant,
    sync: StoreSync,
    redis: FakeRedis,
    latency: Duration,
    /// The batch out and when it completes.
    out: Option<(Instant, Vec<KeyValue>)>,
    /// Every shard's latest snapshot.
    latest: BTreeMap<u32, SessionSnapshot>,
    /// Every shard's latest status.
    statuses: BTreeMap<u32, ShardStatus>,
    events: Vec<StoreEvent>,
    steps: usize,
    /// The shards that saved a snapshot in this run (the predecessor's aggregate key holds
    /// those).
    saved: BTreeSet<u32>,
}

impl WriteSim {
    fn new(redis: FakeRedis, latency: Duration, saved: Vec<SessionSnapshot>) -> Self {
        let epoch = epoch();
        let mut redis = redis;
        let keys = KeyLayout::new("t");
        for s in &saved {
            redis
                .data
                .insert(keys.session(s.shard.number()), store::encode_session(s));
        }
        Self {
            epoch,
            now: epoch,
            sync: StoreSync::new(
                keys,
                ProfileKind::TwilightDispatch,
                RetryPolicy::default(),
                saved.clone(),
            ),
            redis,
            latency,
            out: None,
            latest: saved.into_iter().map(|s| (s.shard.number(), s)).collect(),
            statuses: BTreeMap::new(),
            events: Vec::new(),
            steps: 0,
            saved: BTreeSet::new(),
        }
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Run(ms) => self.advance(Duration::from_millis(ms.into())),
            Op::Save { shard, new_session } => {
                let next = match self.latest.get(&shard) {
                    Some(s) if !new_session => snapshot(shard, &s.session_id, s.sequence + 1),
                    Some(s) => snapshot(shard, &format!("{}'", s.session_id), 1),
                    None => snapshot(shard, &format!("s{shard}"), 1),
                };
                self.sync.save_session(&next);
                self.latest.insert(shard, next);
                self.saved.insert(shard);
                self.drive();
            }
            Op::Status(shard) => {
                let status = ShardStatus {
                    shard,
                    shard_count: 4,
                    state: "active".into(),
                    reconnects: self.statuses.get(&shard).map_or(0, |s| s.reconnects + 1),
                    sequence: None,
                    updated_at_ms: 0,
                    latency_ms: None,
                    last_ack_ms: None,
                };
                self.sync.save_status(&status);
                self.statuses.insert(shard, status);
                self.drive();
            }
        }
    }

    /// Starts a batch if the policy wants one.
    fn drive(&mut self) {
        self.steps += 1;
        assert!(self.steps < MAX_STEPS, "livelock");
        if self.out.is_none()
            && let Some(batch) = self.sync.poll_write(self.now)
        {
            assert!(!batch.is_empty(), "an empty batch is a wasted round trip");
            self.out = Some((self.now + self.latency, batch));
        }
        self.events
            .extend(std::iter::from_fn(|| self.sync.poll_event()));
    }

    fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        loop {
            self.drive();
            let next = match (&self.out, self.sync.poll_timeout()) {
                (Some((done, _)), _) => Some(*done),
                (None, timeout) => timeout,
            };
            match next {
                Some(at) if at <= until => {
                    assert!(at >= self.now, "a deadline in the past");
                    self.now = at;
                    if let Some((_, batch)) = self.out.take_if(|(done, _)| *done <= at) {
                        if self.redis.up_at(self.now - self.epoch) {
                            self.redis.data.extend(batch);
                            self.sync.handle_written(self.now);
                        } else {
                            self.sync
                                .handle_write_failed(self.now, "connection refused");
                        }
                    }
                    self.check_risks();
                }
                _ => break,
            }
        }
        self.now = until;
    }

    /// The policy's view of what a restart would do matches what Redis really holds.
    fn check_risks(&self) {
        if self.out.is_some() {
            return;
        }
        let keys = KeyLayout::new("t");
        let mut expected = Vec::new();
        for (&shard, latest) in &self.latest {
            let held = self
                .redis
                .data
                .get(&keys.session(shard))
                .and_then(|b| store::decode_session(b, latest.shard));
            match held {
                Some(h) if h.session_id == latest.session_id => {
                    if h.sequence < latest.sequence {
                        expected.push(RestartRisk::Behind {
                            shard,
                            saved: h.sequence,
                            latest: latest.sequence,
                        });
                    }
                }
                other => expected.push(RestartRisk::SessionUnsaved {
                    shard,
                    saved: other.map(|h| h.session_id),
                }),
            }
        }
        assert_eq!(self.sync.restart_risks(), expected);
    }

    /// Redis holds the latest value of everything handed over.
    fn check_converged(&self) {
        let keys = KeyLayout::new("t");
        assert!(self.sync.is_settled(), "still pending after Redis returned");
        assert!(!self.sync.is_failing());
        for (&shard, latest) in &self.latest {
            assert_eq!(
                self.redis.data.get(&keys.session(shard)),
                Some(&store::encode_session(latest)),
                "shard {shard}'s latest snapshot"
            );
        }
        for (&shard, status) in &self.statuses {
            assert_eq!(
                self.redis.data.get(&keys.status(shard)),
                Some(&store::encode_status(status))
            );
        }
        if !self.saved.is_empty() {
            // The predecessor's aggregate key holds every shard's latest session.
            let map: serde_json::Value =
                serde_json::from_slice(&self.redis.data["tgateway_sessions"]).unwrap();
            for shard in &self.saved {
                assert_eq!(
                    map[shard.to_string()]["sequence"],
                    self.latest[shard].sequence
                );
            }
        }
        assert!(self.sync.restart_risks().is_empty());
    }

    /// Outages logged once each, recoveries after them.
    fn check_events(&self) {
        let mut failing = false;
        for event in &self.events {
            match event {
                StoreEvent::WritesFailing { .. } => {
                    assert!(!failing, "an outage logged twice: {:?}", self.events);
                    failing = true;
                }
                StoreEvent::WritesRecovered { .. } => {
                    assert!(failing, "a recovery without an outage");
                    failing = false;
                }
                other => panic!("a read event from the writer: {other:?}"),
            }
        }
    }
}

fn run_writes(down: Vec<(Duration, Duration)>, latency_ms: u64, ops: &[Op]) {
    let redis = FakeRedis {
        down,
        ..FakeRedis::default()
    };
    let mut sim = WriteSim::new(
        redis,
        Duration::from_millis(latency_ms),
        vec![snapshot(1, "old", 5)],
    );
    sim.sync.save_start(4, 1_700_000_000_000);
    for op in ops {
        sim.apply(op);
    }
    // Redis comes back for good.
    let end = sim.now - sim.epoch;
    let back = sim.redis.last_back().max(end);
    sim.advance(back - end + RetryPolicy::default().max + sim.latency * 2);
    sim.check_converged();
    sim.check_events();
}

#[test]
fn writes_during_an_outage_are_written_when_redis_returns() {
    let redis = FakeRedis {
        down: vec![(Duration::from_secs(1), Duration::from_secs(11))],
        ..FakeRedis::default()
    };
    let mut sim = WriteSim::new(redis, Duration::from_millis(2), vec![snapshot(0, "a", 1)]);
    sim.apply(&Op::Run(2_000));
    for _ in 0..3 {
        sim.apply(&Op::Save {
            shard: 0,
            new_session: false,
        });
    }
    sim.apply(&Op::Save {
        shard: 1,
        new_session: true,
    });
    sim.apply(&Op::Run(3_000));
    assert!(sim.sync.is_failing());
    assert_eq!(
        sim.events,
        [StoreEvent::WritesFailing {
            reason: "connection refused".into(),
            retry_in: Duration::from_millis(500),
            at_risk: vec![
                RestartRisk::Behind {
                    shard: 0,
                    saved: 1,
                    latest: 4
                },
                RestartRisk::SessionUnsaved {
                    shard: 1,
                    saved: None
                },
            ],
        }]
    );
    sim.apply(&Op::Run(20_000));
    sim.check_converged();
    assert!(matches!(
        sim.events.last(),
        Some(StoreEvent::WritesRecovered { written, .. }) if *written > 0
    ));
}

#[test]
fn expedite_skips_the_back_off_once() {
    let epoch = epoch();
    let mut sync = StoreSync::new(
        KeyLayout::new("t"),
        ProfileKind::Gatehouse,
        RetryPolicy::default(),
        [],
    );
    sync.save_session(&snapshot(0, "a", 1));
    assert!(sync.poll_write(epoch).is_some());
    sync.handle_write_failed(epoch, "down");
    assert_eq!(sync.poll_write(epoch), None, "backing off");
    assert_eq!(
        sync.poll_timeout(),
        Some(epoch + Duration::from_millis(500))
    );
    sync.expedite();
    let batch = sync.poll_write(epoch).expect("written at once");
    assert_eq!(batch[0].0, "t:session:0");
    sync.handle_written(epoch);
    assert!(sync.is_settled());
}

#[test]
fn restart_risks_read_clearly() {
    let behind = RestartRisk::Behind {
        shard: 3,
        saved: 10,
        latest: 42,
    };
    assert_eq!(
        behind.to_string(),
        "shard 3 would resume from sequence 10 instead of 42 (Discord replays the difference: \
         duplicates, nothing lost)"
    );
    let unsaved = RestartRisk::SessionUnsaved {
        shard: 0,
        saved: Some("old".into()),
    };
    assert!(unsaved.to_string().contains("would lose"));
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1u32..8_000).prop_map(Op::Run),
        (0u32..4, prop::bool::weighted(0.1))
            .prop_map(|(shard, new_session)| Op::Save { shard, new_session }),
        (0u32..4).prop_map(Op::Status),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(300)))]

    #[test]
    fn writes_converge_on_the_latest_values(
        down in down_windows(),
        latency_ms in 0u64..3_000,
        ops in prop::collection::vec(op(), 1..60),
    ) {
        run_writes(down, latency_ms, &ops);
    }
}

// ----- pinned shrunk failures -----
