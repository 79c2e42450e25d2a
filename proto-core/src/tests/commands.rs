//! Scenarios: worker commands under the 120/60 s send limit, waiting for READY, the bounded
//! queue and oversized packets.

use std::time::Duration;

use bytes::Bytes;

use crate::shard::{Action, ShardState, UsageError};

use super::sim::{Sim, test_config};

fn command(n: usize) -> Bytes {
    Bytes::from(format!(
        r#"{{"op":3,"d":{{"since":null,"activities":[],"status":"online","afk":false,"n":{n}}}}}"#
    ))
}

/// The `n` of every command frame the gateway received, in order.
fn commands_received(sim: &Sim) -> Vec<u64> {
    sim.gw
        .sent_ops(3)
        .map(|f| f.d["n"].as_u64().expect("n"))
        .collect()
}

/// The largest number of frames one connection sent within any 60 s window.
fn max_frames_per_window(sim: &Sim) -> usize {
    let frames = &sim.gw.sent;
    let mut max = 0;
    for (i, f) in frames.iter().enumerate() {
        let count = frames[i..]
            .iter()
            .take_while(|g| g.connection == f.connection && g.at < f.at + Duration::from_secs(60))
            .count();
        max = max.max(count);
    }
    max
}

#[test]
fn commands_before_ready_wait_and_go_in_order() {
    let mut sim = Sim::new(30);
    let now = sim.now;
    for n in 0..3 {
        sim.shard.send_command(now, command(n)).expect("queued");
    }
    assert_eq!(sim.shard.queued_commands(), 3);
    sim.until_active();
    assert_eq!(commands_received(&sim), vec![0, 1, 2]);
    let identify_at = sim.gw.sent_ops(2).next().expect("identify").at;
    assert!(sim.gw.sent_ops(3).all(|f| f.at > identify_at));
    assert!(sim.gw.violations.is_empty(), "{:?}", sim.gw.violations);
    assert_eq!(sim.shard.queued_commands(), 0);
}

#[test]
fn commands_wait_while_resuming() {
    let mut sim = Sim::new(31);
    sim.until_active();
    let now = sim.now;
    sim.gw.close(now, Some(4000));
    sim.advance(sim.gw.latency);
    assert_ne!(sim.shard.state(), ShardState::Active);
    let now = sim.now;
    sim.shard.send_command(now, command(7)).expect("queued");
    sim.advance(Duration::from_secs(5));
    assert_eq!(sim.shard.state(), ShardState::Active);
    assert_eq!(commands_received(&sim), vec![7]);
    let resumed_at = sim.gw.sent_ops(6).next().expect("resume").at;
    assert!(sim.gw.sent_ops(3).all(|f| f.at > resumed_at));
    assert!(sim.gw.violations.is_empty(), "{:?}", sim.gw.violations);
}

#[test]
fn rate_limit_queues_beyond_the_budget_and_heartbeats_still_fit() {
    let mut config = test_config(32);
    config.command_queue_capacity = 1000;
    let mut sim = Sim::with_config(config, 32);
    sim.until_active();
    let now = sim.now;
    for n in 0..300 {
        sim.shard.send_command(now, command(n)).expect("queued");
    }
    sim.drain();
    let sent_now = commands_received(&sim).len();
    let used_before = 1 + sim.gw.sent_ops(1).count(); // IDENTIFY + heartbeats
    assert_eq!(
        sent_now + used_before,
        116,
        "budget is 120 minus 4 reserved"
    );
    assert_eq!(sim.shard.queued_commands(), 300 - sent_now);
    sim.advance(Duration::from_secs(200));
    assert_eq!(commands_received(&sim), (0..300).collect::<Vec<_>>());
    assert!(
        max_frames_per_window(&sim) <= 120,
        "{}",
        max_frames_per_window(&sim)
    );
    assert!(sim.gw.violations.is_empty(), "{:?}", sim.gw.violations);
    assert_eq!(sim.shard.state(), ShardState::Active, "no 4008, no zombie");
    // Heartbeats kept their schedule through the burst.
    let beats: Vec<_> = sim.gw.sent_ops(1).map(|f| f.at).collect();
    for pair in beats.windows(2) {
        assert_eq!(pair[1] - pair[0], Duration::from_millis(41_250));
    }
}

#[test]
fn full_queue_is_reported_not_dropped() {
    let mut config = test_config(33);
    config.command_queue_capacity = 5;
    let mut sim = Sim::with_config(config, 33);
    let now = sim.now;
    for n in 0..5 {
        sim.shard.send_command(now, command(n)).expect("queued");
    }
    assert_eq!(
        sim.shard.send_command(now, command(5)),
        Err(UsageError::QueueFull)
    );
    assert_eq!(sim.shard.queued_commands(), 5);
    sim.until_active();
    assert_eq!(commands_received(&sim), vec![0, 1, 2, 3, 4]);
    // Active with room in the window: sent at once even with a small queue.
    for n in 10..20 {
        sim.shard.send_command(sim.now, command(n)).expect("sent");
    }
    sim.drain();
    assert_eq!(commands_received(&sim).len(), 15);
}

#[test]
fn full_queue_while_rate_limited() {
    let mut config = test_config(34);
    config.command_queue_capacity = 10;
    let mut sim = Sim::with_config(config, 34);
    sim.until_active();
    let now = sim.now;
    let mut accepted = 0;
    let mut refused = 0;
    for n in 0..200 {
        match sim.shard.send_command(now, command(n)) {
            Ok(()) => accepted += 1,
            Err(UsageError::QueueFull) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    sim.drain();
    assert_eq!(sim.shard.queued_commands(), 10);
    assert_eq!(accepted + refused, 200);
    assert_eq!(accepted, commands_received(&sim).len() + 10);
}

#[test]
fn oversized_packets_are_refused() {
    let mut sim = Sim::new(35);
    sim.until_active();
    let now = sim.now;
    let big = Bytes::from(vec![b' '; 4097]);
    assert_eq!(
        sim.shard.send_command(now, big),
        Err(UsageError::PayloadTooLarge)
    );
    let mut exact = br#"{"op":3,"d":{"n":0}}"#.to_vec();
    exact.resize(4096, b' ');
    assert_eq!(sim.shard.send_command(now, Bytes::from(exact)), Ok(()));
    assert_eq!(sim.shard.queued_commands(), 0);
}

#[test]
fn window_resets_per_connection() {
    let mut config = test_config(36);
    config.command_queue_capacity = 1000;
    let mut sim = Sim::with_config(config, 36);
    sim.until_active();
    let now = sim.now;
    for n in 0..200 {
        sim.shard.send_command(now, command(n)).expect("queued");
    }
    sim.drain();
    let first_batch = commands_received(&sim).len();
    // op 7: a new connection has a fresh window, so the queue flows right after RESUMED.
    let now = sim.now;
    sim.gw.send_op(now, 7, serde_json::Value::Null);
    sim.advance(Duration::from_secs(2));
    assert_eq!(sim.shard.state(), ShardState::Active);
    let second_batch = commands_received(&sim).len() - first_batch;
    assert_eq!(first_batch + second_batch, 200);
    assert!(max_frames_per_window(&sim) <= 120);
    assert!(sim.gw.violations.is_empty(), "{:?}", sim.gw.violations);
}

#[test]
fn commands_after_shutdown_are_refused() {
    let mut sim = Sim::new(37);
    sim.until_active();
    let now = sim.now;
    sim.shard.shutdown(now);
    assert_eq!(
        sim.shard.send_command(now, command(0)),
        Err(UsageError::ShuttingDown)
    );
    sim.drain();
    assert!(sim.saw(|a| matches!(a, Action::Stopped(_))));
}

#[test]
fn shutdown_hands_back_the_commands_it_never_sent() {
    let mut sim = Sim::new(38);
    let now = sim.now;
    let packets: Vec<Bytes> = (0..3).map(command).collect();
    for p in &packets {
        sim.shard.send_command(now, p.clone()).expect("queued");
    }
    sim.drain();
    sim.shard.shutdown(now);
    sim.drain();
    assert!(sim.saw(|a| matches!(a, Action::Stopped(_))));
    // Frozen, not dropped: nothing sends them, the runtime takes them.
    assert_eq!(sim.shard.queued_commands(), 3);
    sim.advance(Duration::from_secs(60));
    assert_eq!(sim.shard.take_queued_commands(), packets);
    assert_eq!(sim.shard.queued_commands(), 0);
    assert!(sim.shard.take_queued_commands().is_empty());
    assert_eq!(sim.gw.sent_ops(3).count(), 0);
}

#[test]
fn a_fatal_close_hands_back_the_commands_too() {
    let mut sim = Sim::new(39);
    sim.gw.token = "another".into();
    let now = sim.now;
    sim.shard.send_command(now, command(1)).expect("queued");
    sim.advance(Duration::from_secs(60));
    assert_eq!(sim.shard.state(), ShardState::FatallyClosed);
    assert_eq!(sim.shard.take_queued_commands(), vec![command(1)]);
}

#[test]
fn taken_commands_are_the_json_given_even_on_etf() {
    let mut config = test_config(40);
    config.encoding = crate::codec::Encoding::Etf;
    let mut sim = Sim::with_config(config, 40);
    sim.gw.etf = true;
    let now = sim.now;
    sim.shard.send_command(now, command(1)).expect("queued");
    sim.shard.send_command(now, command(2)).expect("queued");
    // On a live shard, taking them cancels them.
    assert_eq!(
        sim.shard.take_queued_commands(),
        vec![command(1), command(2)]
    );
    sim.until_active();
    assert_eq!(sim.gw.sent_ops(3).count(), 0);
    assert!(sim.gw.violations.is_empty(), "{:?}", sim.gw.violations);
}
