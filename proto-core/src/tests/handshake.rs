//! Scenarios: connecting, HELLO, IDENTIFY, READY, heartbeats and publishing.

use std::time::Duration;

use crate::shard::{Action, ShardState};

use super::fake_gateway::{GATEWAY_URL, RESUME_URL};
use super::sim::{Sim, test_config};

#[test]
fn new_shard_connects_with_the_query() {
    let mut sim = Sim::new(1);
    sim.drain();
    assert_eq!(
        sim.gw.connects,
        vec![format!("{GATEWAY_URL}/?v=10&encoding=json")]
    );
    let mut config = test_config(1);
    config.compression = crate::codec::Compression::ZlibStream;
    assert_eq!(
        config.url_for("wss://gateway.discord.gg/"),
        "wss://gateway.discord.gg/?v=10&encoding=json&compress=zlib-stream"
    );
    assert_eq!(
        config.url_for("wss://gateway.discord.gg"),
        "wss://gateway.discord.gg/?v=10&encoding=json&compress=zlib-stream"
    );
    config.compression = crate::codec::Compression::ZstdStream;
    config.encoding = crate::codec::Encoding::Etf;
    assert_eq!(
        config.url_for("wss://x.test/?v=9"),
        "wss://x.test/?v=10&encoding=etf&compress=zstd-stream"
    );
}

#[test]
fn handshake_identifies_and_becomes_active() {
    let mut sim = Sim::new(2);
    assert_eq!(sim.shard.state(), ShardState::Connecting);
    sim.until_active();
    assert!(sim.saw(|a| matches!(a, Action::RequestIdentify)));
    let identify: Vec<_> = sim.gw.sent_ops(2).collect();
    assert_eq!(identify.len(), 1);
    let d = &identify[0].d;
    assert_eq!(d["token"], "test-token");
    assert_eq!(d["shard"], serde_json::json!([0, 1]));
    assert_eq!(d["compress"], false);
    assert_eq!(d["intents"], crate::intents::NON_PRIVILEGED);
    assert_eq!(d["properties"]["browser"], "gatehouse");
    let session = sim.shard.session().expect("session");
    assert_eq!(session.id, "session-1");
    assert_eq!(session.resume_url, RESUME_URL);
    assert_eq!(sim.shard.last_sequence(), Some(3));
    assert!(sim.gw.violations.is_empty(), "{:?}", sim.gw.violations);
}

#[test]
fn every_dispatch_is_published_with_its_exact_bytes() {
    let mut sim = Sim::new(3);
    sim.until_active();
    sim.advance(Duration::from_secs(1));
    let publishes = sim.actions(|a| matches!(a, Action::Publish { .. }));
    let names: Vec<_> = publishes
        .iter()
        .map(|(_, a)| match a {
            Action::Publish {
                seq, publication, ..
            } => (*seq, publication.routing_key().to_owned()),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(
        names,
        vec![
            (1, "READY".into()),
            (2, "GUILD_CREATE".into()),
            (3, "GUILD_CREATE".into())
        ]
    );
    // The body is the frame as received: compare with what the gateway logged.
    let now = sim.now;
    sim.gw.dispatch(
        now,
        "MESSAGE_CREATE",
        serde_json::json!({"content": "h\u{e9}llo  ", "n": 1.50}),
    );
    let mark = sim.mark();
    sim.advance(Duration::from_secs(1));
    let body = sim.since(mark).iter().find_map(|(_, a)| match a {
        Action::Publish { publication, .. } => Some(publication.body.clone()),
        _ => None,
    });
    let body = body.expect("published");
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["t"], "MESSAGE_CREATE");
    assert_eq!(v["s"], 4);
    assert_eq!(sim.shard.last_sequence(), Some(4));
}

#[test]
fn first_heartbeat_is_jittered_then_every_interval() {
    for seed in [1, 2, 3, 99] {
        let mut sim = Sim::new(seed);
        sim.until_active();
        sim.advance(Duration::from_secs(200));
        let beats: Vec<_> = sim.gw.sent_ops(1).map(|f| f.at - sim.epoch).collect();
        assert!(beats.len() >= 4, "{beats:?}");
        let interval = Duration::from_millis(41_250);
        // HELLO arrives 100 ms in (connect + hello latency).
        let hello_at = Duration::from_millis(100);
        let first = beats[0] - hello_at;
        assert!(first < interval, "first beat after {first:?}");
        for pair in beats.windows(2) {
            assert_eq!(pair[1] - pair[0], interval);
        }
        // Jitter differs between seeds but is fixed by the seed.
        let mut again = Sim::new(seed);
        again.until_active();
        again.advance(Duration::from_secs(200));
        let beats_again: Vec<_> = again.gw.sent_ops(1).map(|f| f.at - again.epoch).collect();
        assert_eq!(beats, beats_again);
    }
}

#[test]
fn heartbeat_carries_last_sequence_and_acks_measure_latency() {
    let mut sim = Sim::new(4);
    sim.until_active();
    sim.advance(Duration::from_secs(45));
    let beat = sim.gw.sent_ops(1).last().expect("a heartbeat");
    assert_eq!(beat.d, serde_json::json!(3));
    assert_eq!(sim.shard.latency(), Some(sim.gw.latency));
}

#[test]
fn heartbeat_before_any_dispatch_is_null() {
    let mut sim = Sim::new(5);
    sim.grant_delay = Duration::from_secs(100); // the scheduler is slow
    sim.advance(Duration::from_secs(50));
    assert_eq!(sim.shard.state(), ShardState::Identifying);
    let beat = sim.gw.sent_ops(1).next().expect("a heartbeat");
    assert_eq!(beat.d, serde_json::Value::Null);
}

#[test]
fn zlib_stream_gets_a_fresh_inflate_context_per_connection() {
    let mut config = test_config(6);
    config.compression = crate::codec::Compression::ZlibStream;
    let mut sim = Sim::with_config(config, 6);
    sim.gw.zlib_stream = true;
    sim.until_active();
    assert_eq!(
        sim.gw.connects[0],
        format!("{GATEWAY_URL}/?v=10&encoding=json&compress=zlib-stream")
    );
    // Three connections, each a new zlib stream (a new 78 9c header): the shard must reset
    // its decoder every time or the second stream would not inflate.
    for _ in 0..2 {
        let now = sim.now;
        sim.gw.send_op(now, 7, serde_json::Value::Null);
        let mark = sim.mark();
        sim.until_active_since(mark);
    }
    let now = sim.now;
    sim.gw.dispatch(
        now,
        "MESSAGE_CREATE",
        serde_json::json!({"content": "zlib"}),
    );
    sim.advance(Duration::from_secs(1));
    let last = sim.actions(|a| matches!(a, Action::Publish { .. })).pop();
    let Some((
        _,
        Action::Publish {
            publication, seq, ..
        },
    )) = last
    else {
        panic!("nothing published");
    };
    assert_eq!(seq, 6); // READY, 2 GUILD_CREATE, RESUMED, RESUMED, MESSAGE_CREATE
    let v: serde_json::Value = serde_json::from_slice(&publication.body).expect("json");
    assert_eq!(v["d"]["content"], "zlib");
    assert_eq!(sim.gw.sent_ops(6).count(), 2);
    assert!(
        sim.shard.last_disconnect() == Some(&crate::shard::DisconnectReason::ReconnectRequested)
    );
}

#[test]
fn the_token_never_shows_in_debug_output() {
    let mut sim = Sim::new(7);
    sim.until_active();
    let now = sim.now;
    sim.gw.close(now, None);
    sim.advance(Duration::from_secs(2));
    assert_eq!(sim.gw.sent_ops(6).count(), 1);
    let printed = format!("{:?} {:?} {:?}", sim.trace, sim.shard, sim.shard.config());
    assert!(!printed.contains("test-token"), "token leaked");
    assert!(printed.contains("Send(<redacted"));
}
