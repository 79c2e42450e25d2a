//! Scenarios: session snapshots, publisher confirms, restart-resume, backpressure, shutdown.

use std::time::Duration;

use crate::session::SessionSnapshot;
use crate::shard::{Action, CloseCode, FrameKind, PublishId, ShardState, StopReason};
use crate::sharding::ShardId;

use super::fake_gateway::RESUME_URL;
use super::sim::{Sim, test_config};

fn snapshots(sim: &Sim) -> Vec<(Duration, SessionSnapshot)> {
    sim.trace
        .iter()
        .filter_map(|(t, a)| match a {
            Action::PersistSession(s) => Some((*t, s.clone())),
            _ => None,
        })
        .collect()
}

fn publish_ids(actions: &[(Duration, Action)]) -> Vec<(PublishId, u64)> {
    actions
        .iter()
        .filter_map(|(_, a)| match a {
            Action::Publish { id, seq, .. } => Some((*id, *seq)),
            _ => None,
        })
        .collect()
}

#[test]
fn ready_persists_and_confirms_advance_the_snapshot_throttled() {
    let mut sim = Sim::new(40);
    sim.until_active();
    sim.advance(Duration::from_secs(2));
    let snaps = snapshots(&sim);
    assert!(snaps.len() >= 2, "{snaps:?}");
    assert_eq!(snaps[0].1.session_id, "session-1");
    assert_eq!(snaps[0].1.resume_url, RESUME_URL);
    assert_eq!(snaps[0].1.shard, ShardId::new(0, 1).expect("valid"));
    assert_eq!(snaps.last().map(|(_, s)| s.sequence), Some(3));
    for pair in snaps.windows(2) {
        assert!(
            pair[1].0 - pair[0].0 >= Duration::from_secs(1),
            "throttled: {snaps:?}"
        );
        assert!(pair[1].1.sequence > pair[0].1.sequence);
    }
}

#[test]
fn persisted_sequence_is_the_contiguous_confirmed_one() {
    let mut sim = Sim::new(41);
    sim.confirm_delay = None;
    sim.until_active();
    let now = sim.now;
    for _ in 0..3 {
        sim.gw
            .dispatch(now, "MESSAGE_CREATE", serde_json::json!({}));
    }
    sim.advance(Duration::from_secs(1));
    let ids = publish_ids(&sim.trace);
    assert_eq!(
        ids.iter().map(|(_, s)| *s).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5, 6]
    );
    assert_eq!(sim.shard.unconfirmed(), 6);
    let confirm = |sim: &mut Sim, i: usize| {
        let now = sim.now;
        sim.shard.handle_published(now, ids[i].0);
        sim.drain();
    };
    confirm(&mut sim, 1); // seq 2 before seq 1: no progress
    assert_eq!(sim.shard.confirmed_sequence(), 0);
    confirm(&mut sim, 0);
    assert_eq!(sim.shard.confirmed_sequence(), 2);
    confirm(&mut sim, 3);
    confirm(&mut sim, 4);
    assert_eq!(sim.shard.confirmed_sequence(), 2);
    confirm(&mut sim, 2);
    assert_eq!(sim.shard.confirmed_sequence(), 5);
    sim.advance(Duration::from_secs(2));
    assert_eq!(snapshots(&sim).last().map(|(_, s)| s.sequence), Some(5));
    assert_eq!(sim.shard.unconfirmed(), 1);
    assert_eq!(sim.shard.last_sequence(), Some(6));
}

#[test]
fn dropped_dispatches_count_as_confirmed() {
    let mut sim = Sim::new(42);
    sim.until_active();
    let now = sim.now;
    // A dispatch without an event name: the native profile drops it.
    sim.shard
        .handle_message(now, br#"{"op":0,"s":4,"t":null,"d":{}}"#, FrameKind::Text);
    sim.drain();
    assert_eq!(sim.shard.last_sequence(), Some(4));
    assert_eq!(sim.shard.confirmed_sequence(), 4);
    assert_eq!(sim.shard.unconfirmed(), 0);
}

#[test]
fn restarted_process_resumes_from_the_confirmed_sequence() {
    let mut sim = Sim::new(43);
    sim.until_active();
    // Events 4..=8 arrive; only 4 and 5 get confirmed before the process dies.
    sim.confirm_delay = None;
    let now = sim.now;
    for _ in 0..5 {
        sim.gw
            .dispatch(now, "MESSAGE_CREATE", serde_json::json!({}));
    }
    sim.advance(Duration::from_secs(1));
    let ids = publish_ids(&sim.trace);
    for (id, seq) in &ids {
        if (4..=5).contains(seq) {
            let now = sim.now;
            sim.shard.handle_published(now, *id);
        }
    }
    sim.drain();
    sim.advance(Duration::from_secs(2));
    let snapshot = snapshots(&sim).last().expect("persisted").1.clone();
    assert_eq!(snapshot.sequence, 5);

    sim.restart_process(Some(snapshot.clone()));
    sim.confirm_delay = Some(Duration::from_millis(5));
    let mark = sim.mark();
    sim.until_active();
    let after = sim.since(mark);
    assert_eq!(
        after[0].1,
        Action::Connect {
            url: format!("{RESUME_URL}/?v=10&encoding=json")
        }
    );
    assert!(!after.iter().any(|(_, a)| *a == Action::RequestIdentify));
    let resume = sim.gw.sent_ops(6).next().expect("resumed");
    assert_eq!(resume.d["seq"], 5);
    assert_eq!(resume.d["session_id"], "session-1");
    // Discord replays 6, 7, 8 and then RESUMED (9): nothing is lost.
    let seqs: Vec<_> = publish_ids(after).into_iter().map(|(_, s)| s).collect();
    assert_eq!(seqs, vec![6, 7, 8, 9]);
    assert_eq!(sim.shard.confirmed_sequence(), 9);
    assert_eq!(sim.gw.sent_ops(2).count(), 1, "never identified again");
}

#[test]
fn snapshot_of_another_shard_is_ignored() {
    let snapshot = SessionSnapshot {
        shard: ShardId::new(1, 2).expect("valid"),
        session_id: "other".into(),
        sequence: 10,
        resume_url: "wss://elsewhere.test".into(),
    };
    let mut sim = Sim::restored(44, snapshot);
    sim.until_active();
    assert_eq!(sim.gw.sent_ops(6).count(), 0);
    assert_eq!(sim.gw.sent_ops(2).count(), 1);
}

#[test]
fn expired_snapshot_falls_back_to_identify() {
    let snapshot = SessionSnapshot {
        shard: ShardId::new(0, 1).expect("valid"),
        session_id: "long-gone".into(),
        sequence: 10,
        resume_url: RESUME_URL.into(),
    };
    let mut sim = Sim::restored(45, snapshot);
    sim.until_active();
    assert_eq!(sim.gw.sent_ops(6).count(), 1);
    assert_eq!(sim.gw.sent_ops(2).count(), 1);
    assert_eq!(
        sim.shard.session().map(|s| s.id.as_str()),
        Some("session-1")
    );
    assert_eq!(sim.shard.last_sequence(), Some(3));
}

#[test]
fn backpressure_follows_unconfirmed_publications() {
    let mut config = test_config(46);
    config.max_unconfirmed = 4;
    let mut sim = Sim::with_config(config, 46);
    sim.confirm_delay = None;
    sim.until_active();
    assert_eq!(sim.shard.unconfirmed(), 3);
    assert!(!sim.shard.should_pause_reading());
    let now = sim.now;
    for _ in 0..2 {
        sim.gw
            .dispatch(now, "MESSAGE_CREATE", serde_json::json!({}));
    }
    sim.advance(Duration::from_secs(1));
    assert!(sim.shard.should_pause_reading());
    for (id, _) in publish_ids(&sim.trace) {
        let now = sim.now;
        sim.shard.handle_published(now, id);
    }
    assert!(!sim.shard.should_pause_reading());
    assert_eq!(sim.shard.unconfirmed(), 0);
}

#[test]
fn shutdown_closes_resumably_persists_and_stops() {
    let mut sim = Sim::new(47);
    sim.until_active();
    let mark = sim.mark();
    let now = sim.now;
    sim.shard.shutdown(now);
    sim.drain();
    let after: Vec<_> = sim.since(mark).iter().map(|(_, a)| a.clone()).collect();
    assert_eq!(after.len(), 3, "{after:?}");
    assert_eq!(after[0], Action::Close(CloseCode::RESUME));
    assert!(matches!(&after[1], Action::PersistSession(s) if s.sequence == 3));
    assert_eq!(after[2], Action::Stopped(StopReason::Shutdown));
    assert_eq!(sim.shard.state(), ShardState::FatallyClosed);
    sim.advance(Duration::from_secs(600));
    assert_eq!(sim.since(mark).len(), 3, "nothing after Stopped");
    assert_eq!(sim.gw.connects.len(), 1);
}

#[test]
fn shutdown_waits_for_outstanding_confirms() {
    let mut sim = Sim::new(48);
    sim.confirm_delay = None;
    sim.until_active();
    let ids = publish_ids(&sim.trace);
    let now = sim.now;
    sim.shard.shutdown(now);
    sim.drain();
    assert!(!sim.saw(|a| matches!(a, Action::Stopped(_))));
    for (id, _) in &ids {
        let now = sim.now;
        sim.shard.handle_published(now, *id);
    }
    sim.drain();
    let snaps = snapshots(&sim);
    assert_eq!(snaps.last().map(|(_, s)| s.sequence), Some(3));
    assert!(matches!(
        sim.trace.last(),
        Some((_, Action::Stopped(StopReason::Shutdown)))
    ));
}

#[test]
fn shutdown_gives_up_after_the_grace_period() {
    let mut sim = Sim::new(49);
    sim.confirm_delay = None;
    sim.until_active();
    let now = sim.now;
    sim.shard.shutdown(now);
    sim.advance(Duration::from_secs(4));
    assert!(!sim.saw(|a| matches!(a, Action::Stopped(_))));
    sim.advance(Duration::from_secs(2));
    assert!(matches!(
        sim.trace.last(),
        Some((_, Action::Stopped(StopReason::Shutdown)))
    ));
    assert_eq!(snapshots(&sim).last().map(|(_, s)| s.sequence), Some(0));
}

#[test]
fn shutdown_before_any_session_just_stops() {
    let mut sim = Sim::new(50);
    sim.drain();
    let now = sim.now;
    sim.shard.shutdown(now);
    sim.drain();
    assert!(snapshots(&sim).is_empty());
    assert!(sim.saw(|a| *a == Action::Stopped(StopReason::Shutdown)));
}

#[test]
fn snapshot_is_serde() {
    let snapshot = SessionSnapshot {
        shard: ShardId::new(2, 4).expect("valid"),
        session_id: "abc".into(),
        sequence: 99,
        resume_url: RESUME_URL.into(),
    };
    let json = serde_json::to_string(&snapshot).expect("json");
    let back: SessionSnapshot = serde_json::from_str(&json).expect("json");
    assert_eq!(back, snapshot);
}
