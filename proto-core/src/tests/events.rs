//! Scenarios: the diagnostic events (`poll_event`) and identify grants the shard cannot use.

use std::time::Duration;

use serde_json::Value;

use crate::profile::{ClusterInfo, ProfileConfig, ProfileKind, RouteError, Router};
use crate::shard::{Action, DisconnectReason, Session, ShardEvent, ShardState};

use super::fake_gateway::RESUME_URL;
use super::sim::{Logged, Sim, test_config};

/// The events besides `GuildsArrived` (checked on its own).
fn events(sim: &Sim) -> Vec<ShardEvent> {
    sim.events
        .iter()
        .map(|(_, e)| e.clone())
        .filter(|e| *e != ShardEvent::GuildsArrived)
        .collect()
}

#[test]
fn ready_reconnecting_and_resumed_are_reported() {
    let mut sim = Sim::new(70);
    sim.until_active();
    assert_eq!(
        events(&sim),
        vec![ShardEvent::Ready {
            session: Session {
                id: "session-1".into(),
                resume_url: RESUME_URL.into(),
            }
        }]
    );
    // READY's guilds arrived (the fake gateway sends a GUILD_CREATE for each), once.
    let arrived = sim
        .events_matching(|e| *e == ShardEvent::GuildsArrived)
        .len();
    assert_eq!(arrived, 1);
    let now = sim.now;
    sim.gw.send_op(now, 7, Value::Null);
    let mark = sim.mark();
    sim.until_active_since(mark);
    assert_eq!(
        events(&sim)[1..],
        [
            ShardEvent::Reconnecting {
                reason: DisconnectReason::ReconnectRequested,
                attempt: 1,
                delay: Duration::ZERO,
                resume: true,
            },
            // RESUMED is itself a dispatch: READY, 2 GUILD_CREATEs, RESUMED.
            ShardEvent::Resumed { sequence: Some(4) },
        ]
    );
    // A session Discord will not resume: wait, then identify afresh.
    let now = sim.now;
    sim.gw.send_op(now, 9, Value::Bool(false));
    sim.advance(Duration::from_secs(1));
    let reconnecting = sim.events_matching(|e| matches!(e, ShardEvent::Reconnecting { .. }));
    let Some((
        _,
        ShardEvent::Reconnecting {
            reason,
            attempt,
            delay,
            resume,
        },
    )) = reconnecting.last()
    else {
        panic!("no Reconnecting: {:?}", sim.events);
    };
    assert_eq!(
        *reason,
        DisconnectReason::InvalidSession { resumable: false }
    );
    assert_eq!(*attempt, 1);
    assert!(*delay >= Duration::from_secs(1) && *delay < Duration::from_secs(5));
    assert!(!resume);
}

#[test]
fn unknown_opcodes_are_reported() {
    let mut sim = Sim::new(71);
    sim.until_active();
    let now = sim.now;
    sim.gw.send_op(now, 42, Value::Null);
    sim.advance(Duration::from_secs(1));
    assert_eq!(
        events(&sim).last(),
        Some(&ShardEvent::UnknownOpcode { op: 42 })
    );
    assert_eq!(sim.shard.state(), ShardState::Active);
}

#[test]
fn a_dispatch_that_cannot_be_published_is_reported_and_still_confirmed() {
    // Spectacles publishes msgpack: a `d` the envelope scanner accepts (it follows only the
    // structure of objects) but that is not valid JSON cannot be transcoded.
    let config = ProfileConfig {
        kind: ProfileKind::Spectacles,
        ..ProfileConfig::default()
    };
    let cluster = ClusterInfo::new(1, [0]).unwrap();
    let mut shard_config = test_config(72);
    shard_config.router = Router::new(&config, &cluster).expect("valid profile");
    let mut sim = Sim::with_config(shard_config, 72);
    sim.until_active();
    assert_eq!(sim.shard.confirmed_sequence(), 3);
    let mark = sim.mark();
    sim.deliver(br#"{"t":"MESSAGE_CREATE","s":4,"op":0,"d":{"content":tru}}"#);
    sim.deliver(br#"{"t":"MESSAGE_CREATE","s":5,"op":0,"d":{"content":"ok"}}"#);
    sim.advance(Duration::from_secs(2));
    let dropped = sim.events_matching(|e| matches!(e, ShardEvent::DispatchDropped { .. }));
    assert_eq!(dropped.len(), 1, "{:?}", sim.events);
    let ShardEvent::DispatchDropped { seq, event, reason } = &dropped[0].1 else {
        unreachable!();
    };
    assert_eq!((*seq, event.as_str()), (4, "MESSAGE_CREATE"));
    assert!(matches!(reason, RouteError::Transcode { event, .. } if event == "MESSAGE_CREATE"));
    let published: Vec<u64> = sim.published_since(mark);
    assert_eq!(published, vec![5]);
    // Handled: the sequence moves past it, so a restart does not replay it forever.
    assert_eq!(sim.shard.confirmed_sequence(), 5);
}

#[test]
fn identify_grants_say_whether_they_were_used() {
    let mut sim = Sim::new(73);
    let now = sim.now;
    // Before the socket is even open: nothing to identify.
    assert!(!sim.shard.handle_identify_granted(now));
    sim.until_active();
    let grants: Vec<_> = sim
        .log
        .iter()
        .filter_map(|(_, l)| match l {
            Logged::Granted { used } => Some(*used),
            _ => None,
        })
        .collect();
    assert_eq!(grants, vec![true]);
    // A late or repeated grant: not used, nothing sent.
    let mark = sim.mark();
    let now = sim.now;
    assert!(!sim.shard.handle_identify_granted(now));
    sim.drain();
    assert!(sim.since(mark).is_empty());
    assert_eq!(sim.gw.sent_ops(2).count(), 1);
}

#[test]
fn a_grant_for_a_connection_that_closed_is_not_used() {
    let mut sim = Sim::new(74);
    sim.grant_delay = Duration::from_secs(3);
    // Up to the IDENTIFY request, then the connection drops before the grant comes.
    assert!(sim.run_until(Duration::from_secs(5), |s| {
        s.saw(|a| *a == Action::RequestIdentify)
    }));
    let now = sim.now;
    sim.gw.fail_connects = 1;
    sim.gw.close(now, None);
    sim.advance(Duration::from_millis(500));
    assert_eq!(sim.shard.state(), ShardState::Disconnected { attempts: 2 });
    let now = sim.now;
    assert!(!sim.shard.handle_identify_granted(now));
    assert_eq!(sim.gw.sent_ops(2).count(), 0);
    // It asks again on its next connection.
    sim.until_active();
    assert_eq!(
        sim.actions(|a| *a == Action::RequestIdentify).len(),
        2,
        "{:?}",
        sim.trace
    );
}

#[test]
fn a_warming_shard_publishes_nothing_until_told_then_everything_after() {
    let mut config = test_config(71);
    config.publishing = false;
    let mut sim = Sim::with_config(config, 71);
    sim.until_active();
    let publishes = |sim: &Sim| {
        sim.trace
            .iter()
            .filter(|(_, a)| matches!(a, Action::Publish { .. }))
            .count()
    };
    assert_eq!(
        publishes(&sim),
        0,
        "READY and the GUILD_CREATEs are not published"
    );
    assert!(sim.shard.guilds_arrived());
    // What it received counts as handled: a RESUME would not replay it.
    assert!(sim.shard.confirmed_sequence() >= 3);
    sim.shard.set_publishing(sim.now, true);
    let now = sim.now;
    sim.gw.send_op(now, 7, Value::Null);
    let mark = sim.mark();
    sim.until_active_since(mark);
    assert!(publishes(&sim) >= 1, "RESUMED is published once publishing");
}

#[test]
fn a_warming_shard_replays_only_its_newest_publications_within_the_limits() {
    let mut config = test_config(72);
    config.publishing = false;
    config.replay.window = Duration::from_secs(7);
    config.replay.max_events = 3;
    let mut sim = Sim::with_config(config, 72);
    sim.until_active();
    let mark = sim.mark();
    // Two events more than 7 s before publishing starts, then five within it.
    for i in 0..7u64 {
        let now = sim.now;
        sim.gw.dispatch(
            now,
            "MESSAGE_CREATE",
            serde_json::json!({"id": i.to_string()}),
        );
        sim.advance(if i == 1 {
            Duration::from_secs(8)
        } else {
            Duration::from_millis(100)
        });
    }
    let last = sim.shard.last_sequence().unwrap_or(0);
    let confirmed = sim.shard.confirmed_sequence();
    assert_eq!(
        confirmed, last,
        "warming: everything received counts as handled"
    );
    let now = sim.now;
    sim.shard.set_publishing(now, true);
    sim.advance(Duration::from_secs(1));
    let replayed: Vec<u64> = sim.published_since(mark);
    assert_eq!(
        replayed,
        vec![last - 2, last - 1, last],
        "the newest 3, in order"
    );
    assert_eq!(
        sim.shard.confirmed_sequence(),
        confirmed,
        "replays never move it"
    );
    assert_eq!(sim.shard.unconfirmed(), 0, "their confirms were taken");
    assert!(sim.events.iter().any(|(_, e)| *e
        == ShardEvent::PublishingStarted {
            replayed: 3,
            from_seq: Some(last - 2)
        }));
}

#[test]
fn a_warming_shard_never_replays_its_session_start() {
    let mut config = test_config(73);
    config.publishing = false;
    config.replay.window = Duration::from_secs(60);
    let mut sim = Sim::with_config(config, 73);
    sim.until_active();
    assert!(sim.shard.guilds_arrived());
    let now = sim.now;
    sim.gw
        .dispatch(now, "MESSAGE_CREATE", serde_json::json!({"id": "1"}));
    sim.advance(Duration::from_millis(100));
    let last = sim.shard.last_sequence();
    let mark = sim.mark();
    let now = sim.now;
    sim.shard.set_publishing(now, true);
    sim.advance(Duration::from_secs(1));
    let replayed: Vec<u64> = sim.published_since(mark);
    // The fake READY lists no guild, so its GUILD_CREATEs (2 and 3) are guilds joined later:
    // events like any other. READY (1) is not replayed.
    assert_eq!(replayed, vec![2, 3, last.unwrap_or(0)]);
    assert_eq!(last, Some(4));
}
