//! Property tests: arbitrary interleavings of server frames, commands, closes, restarts and
//! time, checked against the protocol's invariants (the operations and the invariants are in
//! `shard_ops`, shared with the `shard` fuzz target). Shrunk failures are pinned as named tests
//! at the bottom.

use std::time::Duration;

use proptest::prelude::*;

use crate::identify::{BUCKET_PERIOD, IdentifyScheduler, RELEASE_WINDOW, SessionStartLimit};

use super::cases;
use super::shard_ops::{CLOSE_CODES, FATAL_CLOSE_CODES, INTERVALS_MS, Op, run};

fn close_code() -> impl Strategy<Value = Option<u16>> {
    prop_oneof![
        6 => Just(None),
        10 => prop::sample::select(CLOSE_CODES.to_vec()).prop_map(Some),
        1 => prop::sample::select(FATAL_CLOSE_CODES.to_vec()).prop_map(Some),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        20 => (0u32..130_000).prop_map(Op::Run),
        4 => (0u32..2_000).prop_map(Op::Run),
        3 => close_code().prop_map(Op::ServerClose),
        2 => Just(Op::Reconnect),
        2 => any::<bool>().prop_map(Op::InvalidSession),
        3 => Just(Op::RequestHeartbeat),
        4 => (1u8..20).prop_map(Op::Dispatch),
        5 => (1u8..200, prop_oneof![9 => 20u16..200, 1 => 4000u16..4200]).prop_map(|(count, size)| Op::Commands { count, size }),
        2 => any::<bool>().prop_map(Op::DropAcks),
        1 => (0u8..6).prop_map(Op::FailConnects),
        1 => Just(Op::WorkerReconnect),
        1 => Just(Op::Shutdown),
        1 => prop::collection::vec(any::<u8>(), 0..40).prop_map(Op::Garbage),
        1 => Just(Op::ExpireSessions),
        1 => any::<bool>().prop_map(Op::RejectResumes),
        2 => any::<bool>().prop_map(Op::AutoConfirm),
        1 => Just(Op::ProcessRestart),
        1 => any::<bool>().prop_map(Op::Publishing),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(200)))]

    #[test]
    fn shard_keeps_its_invariants(
        seed: u64,
        interval_ms in prop::sample::select(INTERVALS_MS.to_vec()),
        zlib: bool,
        etf: bool,
        ops in prop::collection::vec(op(), 1..40),
    ) {
        run(seed, interval_ms, zlib, etf, &ops);
    }
}

#[derive(Clone, Debug)]
enum SchedOp {
    Request(u32),
    Cancel(u32),
    Advance(u32),
    Refresh { remaining: u32, concurrency: u16 },
}

fn sched_op() -> impl Strategy<Value = SchedOp> {
    prop_oneof![
        6 => (0u32..64).prop_map(SchedOp::Request),
        1 => (0u32..64).prop_map(SchedOp::Cancel),
        6 => (0u32..12_000).prop_map(SchedOp::Advance),
        1 => (0u32..5, 1u16..5).prop_map(|(remaining, concurrency)| SchedOp::Refresh { remaining, concurrency }),
    ]
}

proptest! {
    #[test]
    fn scheduler_never_identifies_a_bucket_twice_in_five_seconds(
        remaining in 0u32..20,
        concurrency in 1u16..17,
        reset_after_ms in 0u64..60_000,
        ops in prop::collection::vec(sched_op(), 1..80),
    ) {
        let t0 = super::epoch();
        let limit = SessionStartLimit { total: 20, remaining, reset_after_ms, max_concurrency: concurrency };
        let mut s = IdentifyScheduler::new(limit, t0);
        let mut now = t0;
        let mut grants: Vec<(std::time::Instant, u32, u16)> = Vec::new();
        for op in &ops {
            match op {
                SchedOp::Request(shard) => s.request(now, *shard),
                SchedOp::Cancel(shard) => s.cancel(*shard),
                SchedOp::Advance(ms) => now += Duration::from_millis(u64::from(*ms)),
                SchedOp::Refresh { remaining, concurrency } => s.update_limit(now, SessionStartLimit {
                    total: 20, remaining: *remaining, reset_after_ms: 30_000, max_concurrency: *concurrency,
                }),
            }
            let remaining_before = s.remaining();
            let reset_before = s.reset_at();
            let mut granted = 0;
            while let Some(shard) = s.poll_grant(now) {
                grants.push((now, shard, s.max_concurrency().get()));
                granted += 1;
            }
            if now < reset_before {
                prop_assert!(granted <= remaining_before, "granted {} with {} remaining", granted, remaining_before);
            }
            if let Some(t) = s.poll_timeout() {
                prop_assert!(t >= now);
                // Liveness: at the timeout, someone is granted.
                if t == now {
                    prop_assert!(false, "timeout at now but nothing granted");
                }
            }
        }
        // Never two grants in one bucket (under the same bucket count) within 5 s; across a
        // change of max_concurrency every bucket waited for the latest grant.
        for (i, (t1, s1, c1)) in grants.iter().enumerate() {
            for (t2, s2, c2) in &grants[i + 1..] {
                if c1 == c2 && s1 % u32::from(*c1) == s2 % u32::from(*c2) {
                    prop_assert!(*t2 - *t1 >= BUCKET_PERIOD, "bucket reused after {:?}", *t2 - *t1);
                }
            }
        }
    }
}

#[derive(Clone, Debug)]
enum ReleaseOp {
    Request(u32),
    Cancel(u32),
    Advance(u32),
    Refresh {
        remaining: u32,
        concurrency: u16,
    },
    /// Give back the latest grant (what a runtime does when a shard did not use it).
    ReleaseLatest,
    /// Give back an arbitrary shard's grant: late, repeated or never granted.
    ReleaseAny(u32),
}

fn release_op() -> impl Strategy<Value = ReleaseOp> {
    prop_oneof![
        6 => (0u32..16).prop_map(ReleaseOp::Request),
        1 => (0u32..16).prop_map(ReleaseOp::Cancel),
        5 => (0u32..7_000).prop_map(ReleaseOp::Advance),
        1 => (0u32..6, 1u16..4).prop_map(|(remaining, concurrency)| ReleaseOp::Refresh { remaining, concurrency }),
        4 => Just(ReleaseOp::ReleaseLatest),
        2 => (0u32..16).prop_map(ReleaseOp::ReleaseAny),
    ]
}

/// One grant, as the test's model sees it.
struct ModelGrant {
    at: std::time::Instant,
    shard: u32,
    concurrency: u16,
    budget: usize,
    released_at: Option<std::time::Instant>,
    /// The budget current when it was released.
    released_in: Option<usize>,
}

proptest! {
    /// Releases give unused grants back, but grants handed out never exceed the budget's
    /// `remaining` plus the grants given back from that budget, and a bucket is only reused
    /// within 5 s when the earlier grant was given back.
    #[test]
    fn released_grants_never_let_more_identifies_through(
        remaining in 0u32..8,
        concurrency in 1u16..4,
        reset_after_ms in 0u64..40_000,
        ops in prop::collection::vec(release_op(), 1..100),
    ) {
        let t0 = super::epoch();
        let limit = SessionStartLimit { total: 8, remaining, reset_after_ms, max_concurrency: concurrency };
        let mut s = IdentifyScheduler::new(limit, t0);
        let mut now = t0;
        // Per budget (initial, each refill, each refresh): the `remaining` it started with.
        let mut budgets: Vec<u32> = vec![remaining];
        let mut grants: Vec<ModelGrant> = Vec::new();
        for op in &ops {
            let reset_before = s.reset_at();
            let mut refreshed = false;
            match op {
                ReleaseOp::Request(shard) => s.request(now, *shard),
                ReleaseOp::Cancel(shard) => s.cancel(*shard),
                ReleaseOp::Advance(ms) => now += Duration::from_millis(u64::from(*ms)),
                ReleaseOp::Refresh { remaining, concurrency } => {
                    s.update_limit(now, SessionStartLimit {
                        total: 8, remaining: *remaining, reset_after_ms: 30_000, max_concurrency: *concurrency,
                    });
                    budgets.push(*remaining);
                    refreshed = true;
                }
                ReleaseOp::ReleaseLatest | ReleaseOp::ReleaseAny(_) => {
                    let shard = match op {
                        ReleaseOp::ReleaseAny(shard) => *shard,
                        _ => match grants.last() {
                            Some(g) => g.shard,
                            None => continue,
                        },
                    };
                    let given_back = s.release(now, shard);
                    if s.reset_at() != reset_before {
                        budgets.push(s.total()); // refilled inside `release`
                    }
                    let releasable = grants.iter_mut().rev().find(|g| {
                        g.shard == shard && g.released_at.is_none() && now < g.at + RELEASE_WINDOW
                    });
                    match releasable {
                        Some(g) => {
                            prop_assert!(given_back, "a fresh unused grant was refused");
                            g.released_at = Some(now);
                            g.released_in = Some(budgets.len() - 1);
                        }
                        None => prop_assert!(!given_back, "released shard {} without a grant", shard),
                    }
                }
            }
            if !refreshed && s.reset_at() != reset_before {
                budgets.push(s.total());
            }
            let reset_before = s.reset_at();
            let mut handed = Vec::new();
            while let Some(shard) = s.poll_grant(now) {
                handed.push(shard);
            }
            if s.reset_at() != reset_before {
                budgets.push(s.total()); // refilled inside `poll_grant`, before granting
            }
            for shard in handed {
                grants.push(ModelGrant {
                    at: now,
                    shard,
                    concurrency: s.max_concurrency().get(),
                    budget: budgets.len() - 1,
                    released_at: None,
                    released_in: None,
                });
            }
            // The budget: grants handed out never exceed remaining + released (released while
            // that budget was still current: a refill or refresh already counts them).
            for (budget, start) in budgets.iter().enumerate() {
                let handed = grants.iter().filter(|g| g.budget == budget).count();
                let released = grants
                    .iter()
                    .filter(|g| g.budget == budget && g.released_in == Some(budget))
                    .count();
                prop_assert!(
                    handed <= *start as usize + released,
                    "budget {}: {} grants, {} remaining, {} released", budget, handed, start, released
                );
            }
            if let Some(t) = s.poll_timeout() {
                prop_assert!(t > now, "timeout at now but nothing granted");
            }
        }
        // A bucket grants twice within 5 s only if the first grant was given back first.
        for (i, g1) in grants.iter().enumerate() {
            for g2 in &grants[i + 1..] {
                let same_bucket = g1.concurrency == g2.concurrency
                    && g1.shard % u32::from(g1.concurrency) == g2.shard % u32::from(g2.concurrency);
                if same_bucket && g2.at - g1.at < BUCKET_PERIOD {
                    prop_assert!(
                        g1.released_at.is_some_and(|r| r <= g2.at),
                        "bucket reused after {:?} without a release", g2.at - g1.at
                    );
                }
            }
        }
    }
}

// ----- pinned shrunk failures -----

/// Found by `shard_keeps_its_invariants`: the server drops the connection while a heartbeat is
/// on its way. The heartbeat is lost on the dead socket; the shard must still resume cleanly.
#[test]
fn pinned_server_drop_races_a_heartbeat() {
    run(
        0,
        1_000,
        false,
        false,
        &[Op::Run(934), Op::ServerClose(None)],
    );
}

/// Found by `shard_keeps_its_invariants`: a zombie connection resumes, the server rejects the
/// resume (op 9 false), and the shard identifies afresh. Heartbeats of the new connection
/// carry `null` until its READY, not the dead session's sequence.
#[test]
fn pinned_rejected_resume_forgets_the_sequence() {
    run(
        33_557_095_785,
        1_000,
        false,
        false,
        &[Op::RejectResumes(true), Op::DropAcks(true), Op::Run(33_290)],
    );
}

/// Found by `shard_keeps_its_invariants`: a process restart right after a worker reconnect,
/// a failed connect, then INVALID_SESSION before HELLO. (It exposed a harness bug: events of
/// the dead process's socket reached the new shard.) The shard must forget the restored
/// session and identify afresh.
#[test]
fn pinned_restart_then_invalid_session_before_hello() {
    run(
        0,
        1_000,
        false,
        false,
        &[
            Op::Run(160),
            Op::WorkerReconnect,
            Op::ProcessRestart,
            Op::ServerClose(None),
            Op::Run(91),
            Op::InvalidSession(false),
        ],
    );
}
