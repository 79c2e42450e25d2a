//! Scenarios: backpressure, the one rule the runtime reads by (issue 9, item 1). The simulation
//! reads the socket exactly as the runtimes do: not while `should_pause_reading()` holds.

use std::time::Duration;

use crate::shard::{Action, DisconnectReason, PublishId, ShardState};

use super::sim::{Sim, test_config};

const INTERVAL: Duration = Duration::from_millis(41_250);

fn publish_ids(sim: &Sim) -> Vec<PublishId> {
    sim.trace
        .iter()
        .filter_map(|(_, a)| match a {
            Action::Publish { id, .. } => Some(*id),
            _ => None,
        })
        .collect()
}

fn confirm_all(sim: &mut Sim) {
    for id in publish_ids(sim) {
        let now = sim.now;
        sim.shard.handle_published(now, id);
    }
    sim.drain();
}

fn closes(sim: &Sim) -> usize {
    sim.actions(|a| matches!(a, Action::Close(_))).len()
}

/// A shard that stops confirming, reading a gateway that keeps sending, with `max` as the limit.
fn stalled_broker(seed: u64, max: usize) -> Sim {
    let mut config = test_config(seed);
    config.max_unconfirmed = max;
    let mut sim = Sim::with_config(config, seed);
    sim.gw.guilds_after_ready = 0;
    sim.confirm_delay = None;
    sim.until_active();
    let now = sim.now;
    for i in 0..3 * max {
        sim.gw
            .dispatch(now, "MESSAGE_CREATE", serde_json::json!({ "n": i }));
    }
    sim
}

#[test]
fn reading_stops_at_exactly_max_and_heartbeats_go_on_without_a_zombie_verdict() {
    let max = 5;
    let mut sim = stalled_broker(80, max);
    // A broker stall of ten heartbeat intervals: nothing is confirmed.
    sim.advance(INTERVAL * 10);
    assert!(sim.shard.should_pause_reading());
    assert_eq!(sim.shard.unconfirmed(), max, "reads stop at exactly max");
    assert_eq!(closes(&sim), 0, "no zombie verdict, no reconnect");
    assert_eq!(sim.shard.state(), ShardState::Active);
    assert!(sim.gw.sent_ops(1).count() >= 10, "heartbeats go on");
    // The broker is back: everything the gateway held is read and published, on the same
    // connection, and the ACKs that waited unread count again.
    let mut published = 0;
    while published < 3 * max + 1 {
        confirm_all(&mut sim);
        sim.advance(Duration::from_secs(1));
        published = publish_ids(&sim).len();
    }
    assert_eq!(published, 3 * max + 1, "READY and every dispatch");
    sim.advance(INTERVAL * 3);
    assert_eq!(closes(&sim), 0);
    assert_eq!(sim.gw.connects.len(), 1);
    assert!(sim.gw.violations.is_empty(), "{:?}", sim.gw.violations);
}

#[test]
fn a_heartbeat_due_just_after_reading_resumes_is_not_a_zombie() {
    // The runtime may handle a due timer before it reads the ACK that waited unread during
    // the pause: that ACK was sent, so the connection is not a zombie.
    let mut sim = stalled_broker(81, 3);
    sim.advance(INTERVAL * 2);
    assert!(sim.shard.should_pause_reading());
    let due = sim.shard.poll_timeout().expect("the heartbeat timer");
    sim.advance(due - sim.now - Duration::from_millis(1));
    confirm_all(&mut sim);
    assert!(!sim.shard.should_pause_reading());
    let due = sim.shard.poll_timeout().expect("the heartbeat timer");
    sim.now = due;
    sim.shard.handle_timeout(due);
    sim.drain();
    assert_eq!(closes(&sim), 0, "{:?}", sim.shard.last_disconnect());
}

#[test]
fn hello_of_a_new_connection_is_read_while_paused() {
    let mut sim = stalled_broker(82, 3);
    sim.advance(INTERVAL);
    assert!(sim.shard.should_pause_reading());
    let mark = sim.mark();
    let now = sim.now;
    sim.shard.reconnect(now);
    sim.advance(Duration::from_secs(60));
    assert!(
        sim.gw.sent_ops(6).count() >= 1,
        "HELLO was read and RESUME sent"
    );
    assert_ne!(
        sim.shard.last_disconnect(),
        Some(&DisconnectReason::HelloTimeout)
    );
    let connects = sim
        .since(mark)
        .iter()
        .filter(|(_, a)| matches!(a, Action::Connect { .. }))
        .count();
    assert_eq!(connects, 1, "one reconnect, no HELLO-timeout loop");
    // Reading is paused again after HELLO; confirms release it, the replay arrives in steps
    // of `max`, then RESUMED.
    for _ in 0..20 {
        confirm_all(&mut sim);
        sim.advance(Duration::from_secs(1));
    }
    assert_eq!(sim.shard.state(), ShardState::Active);
    assert_eq!(
        sim.shard.last_sequence(),
        Some(11),
        "READY, 9 dispatches, RESUMED"
    );
}

#[test]
fn the_byte_bound_pauses_reading_too() {
    let mut config = test_config(83);
    config.max_unconfirmed_bytes = 1_000;
    let mut sim = Sim::with_config(config, 83);
    sim.gw.guilds_after_ready = 0;
    sim.confirm_delay = None;
    sim.until_active();
    let now = sim.now;
    let big = "x".repeat(300);
    for _ in 0..10 {
        sim.gw
            .dispatch(now, "MESSAGE_CREATE", serde_json::json!({ "content": big }));
    }
    sim.advance(INTERVAL * 3);
    assert!(sim.shard.should_pause_reading());
    let bytes = sim.shard.unconfirmed_bytes();
    assert!(
        (1_000..1_400).contains(&bytes),
        "stops at the first message reaching the bound: {bytes}"
    );
    assert!(sim.shard.unconfirmed() < 5);
    assert_eq!(closes(&sim), 0);
    confirm_all(&mut sim);
    assert_eq!(sim.shard.unconfirmed_bytes(), 0);
    assert!(!sim.shard.should_pause_reading());
}
