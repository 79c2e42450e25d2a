//! Scenarios: `encoding=etf` connections. The fake gateway sends ETF (atom envelope keys, as
//! Discord) and reads what the shard sends as strictly as Discord: uncompressed ETF with binary
//! keys in every frame, or it closes with 4002 and records a violation.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};

use crate::codec::{Compression, Encoding, EtfEncodeError};
use crate::shard::{Action, ShardState, UsageError};

use super::sim::{Sim, test_config};

fn etf_sim(seed: u64, zlib: bool) -> Sim {
    let mut config = test_config(seed);
    config.encoding = Encoding::Etf;
    if zlib {
        config.compression = Compression::ZlibStream;
    }
    let mut sim = Sim::with_config(config, seed);
    sim.gw.etf = true;
    sim.gw.zlib_stream = zlib;
    sim
}

/// Every frame the shard asked the runtime to send.
fn sent_frames(sim: &Sim) -> Vec<Bytes> {
    sim.trace
        .iter()
        .filter_map(|(_, a)| match a {
            Action::Send(b) => Some(b.clone()),
            _ => None,
        })
        .collect()
}

fn assert_all_etf(sim: &Sim) {
    let frames = sent_frames(sim);
    assert!(!frames.is_empty());
    for frame in &frames {
        assert_eq!(frame.first(), Some(&131), "not ETF: {frame:?}");
        assert_ne!(frame.get(1), Some(&80), "compressed ETF");
    }
    assert!(sim.gw.violations.is_empty(), "{:?}", sim.gw.violations);
}

#[test]
fn config_says_when_frames_are_binary() {
    let mut config = test_config(1);
    assert!(!config.sends_binary());
    config.encoding = Encoding::Etf;
    assert!(config.sends_binary());
}

#[test]
fn a_whole_etf_session_sends_only_etf() {
    for zlib in [false, true] {
        let mut sim = etf_sim(60, zlib);
        sim.until_active();
        assert!(sim.gw.connects[0].contains("encoding=etf"));
        // IDENTIFY arrived intact through the strict decoder.
        let identify: Vec<_> = sim.gw.sent_ops(2).collect();
        assert_eq!(identify.len(), 1);
        assert_eq!(identify[0].d["token"], "test-token");
        assert_eq!(identify[0].d["shard"], json!([0, 1]));
        assert_eq!(identify[0].d["compress"], false);
        assert_eq!(identify[0].d["intents"], crate::intents::NON_PRIVILEGED);
        // Dispatches are published as the JSON a JSON connection would carry.
        let published: Vec<Value> = sim
            .actions(|a| matches!(a, Action::Publish { .. }))
            .into_iter()
            .map(|(_, a)| match a {
                Action::Publish { publication, .. } => {
                    serde_json::from_slice(&publication.body).expect("JSON body")
                }
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(published.len(), 3);
        assert_eq!(published[0]["t"], "READY");
        assert_eq!(published[0]["d"]["session_id"], "session-1");
        assert_eq!(published[2]["d"]["id"], ((2u64) << 22).to_string());

        // Heartbeats for a few intervals, each acknowledged (no zombie).
        sim.advance(Duration::from_secs(200));
        assert_eq!(sim.shard.state(), ShardState::Active);
        let beats: Vec<_> = sim.gw.sent_ops(1).collect();
        assert!(beats.len() >= 4, "{}", beats.len());
        assert!(beats.iter().all(|b| b.d == json!(3)));
        assert!(sim.shard.latency().is_some());

        // A worker command (JSON from the profile) goes out as ETF.
        let now = sim.now;
        let command =
            br#"{"op":8,"d":{"guild_id":"41771983423143936","query":"","limit":0,"nonce":"n1"}}"#;
        sim.shard
            .send_command(now, Bytes::from_static(command))
            .expect("queued");
        sim.advance(Duration::from_secs(1));
        let sent: Vec<_> = sim.gw.sent_ops(8).collect();
        assert_eq!(sent.len(), 1);
        assert_eq!(
            sent[0].d,
            json!({"guild_id":"41771983423143936","query":"","limit":0,"nonce":"n1"})
        );

        // A zombie connection resumes, with RESUME in ETF carrying the sequence.
        sim.gw.drop_acks = true;
        let mark = sim.mark();
        sim.advance(Duration::from_secs(90));
        sim.gw.drop_acks = false;
        sim.until_active_since(mark);
        let resumes: Vec<_> = sim.gw.sent_ops(6).collect();
        assert_eq!(resumes.len(), 1);
        assert_eq!(resumes[0].d["session_id"], "session-1");
        assert_eq!(resumes[0].d["seq"], 3);
        assert_all_etf(&sim);
        // The token never shows, in ETF either.
        let printed = format!("{:?}", sim.trace);
        assert!(!printed.contains("test-token"), "token leaked");
        assert!(printed.contains("Send(<redacted"));
    }
}

#[test]
fn server_heartbeat_request_is_answered_in_etf() {
    let mut sim = etf_sim(61, false);
    sim.until_active();
    let before = sim.gw.sent_ops(1).count();
    let now = sim.now;
    sim.gw.send_op(now, 1, Value::Null);
    sim.advance(Duration::from_millis(200));
    assert_eq!(sim.gw.sent_ops(1).count(), before + 1);
    assert_all_etf(&sim);
}

#[test]
fn presence_with_repeated_keys_is_left_out_on_etf() {
    let mut config = test_config(62);
    config.encoding = Encoding::Etf;
    config.presence = Some(r#"{"status":"idle","status":"dnd","afk":false}"#.into());
    let mut sim = Sim::with_config(config, 62);
    sim.gw.etf = true;
    sim.until_active();
    let identify = sim.gw.sent_ops(2).next().expect("identify");
    assert!(identify.d.get("presence").is_none());
    assert_all_etf(&sim);
}

#[test]
fn the_command_limit_applies_to_the_etf_bytes() {
    let mut sim = etf_sim(63, false);
    sim.until_active();
    let now = sim.now;
    // Compact JSON under 4096 bytes whose ETF form is over it (many short strings).
    let items: Vec<String> = (0..700).map(|i| format!("\"{}\"", i % 10)).collect();
    let packet = format!(r#"{{"op":3,"d":{{"activities":[{}]}}}}"#, items.join(","));
    assert!(packet.len() <= 4096);
    assert!(
        crate::codec::json_to_etf(packet.as_bytes())
            .expect("etf")
            .len()
            > 4096
    );
    assert_eq!(
        sim.shard.send_command(now, Bytes::from(packet)),
        Err(UsageError::PayloadTooLarge)
    );
    // Pretty JSON over 4096 bytes whose ETF form fits is sent.
    let padded = format!(
        "{{\"op\":3,{}\"d\":{{\"status\":\"online\",\"afk\":false}}}}",
        " ".repeat(4200)
    );
    assert!(padded.len() > 4096);
    sim.shard
        .send_command(now, Bytes::from(padded))
        .expect("fits as ETF");
    sim.advance(Duration::from_secs(1));
    let sent: Vec<_> = sim.gw.sent_ops(3).collect();
    assert_eq!(sent.len(), 1);
    assert!(sent[0].len <= 4096);
    assert_eq!(sent[0].d, json!({"status":"online","afk":false}));
    assert_all_etf(&sim);
}

#[test]
fn commands_that_cannot_be_etf_are_refused_and_json_ones_pass_as_given() {
    let mut sim = etf_sim(64, false);
    let now = sim.now;
    assert_eq!(
        sim.shard.send_command(
            now,
            Bytes::from_static(br#"{"op":3,"d":{"status":"idle","status":"dnd"}}"#)
        ),
        Err(UsageError::Unencodable(EtfEncodeError::DuplicateKey(
            "status".into()
        )))
    );
    assert!(matches!(
        sim.shard
            .send_command(now, Bytes::from_static(br#"{"op":3,"d":"#)),
        Err(UsageError::Unencodable(EtfEncodeError::Json(_)))
    ));
    assert_eq!(sim.shard.queued_commands(), 0);

    // On a JSON connection the packet goes out exactly as given.
    let mut sim = Sim::new(65);
    sim.until_active();
    let now = sim.now;
    let packet = Bytes::from_static(br#"{"op":3, "d":{"status":"online","afk":false}}"#);
    sim.shard.send_command(now, packet.clone()).expect("queued");
    sim.drain();
    assert!(sim.saw(|a| *a == Action::Send(packet.clone())));
}
