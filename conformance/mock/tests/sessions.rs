//! Resume, invalid sessions, identify limits, rate of replay, routing.

mod common;

use std::time::Duration;

use common::*;
use mock_gateway::client::{TestClient, http_get};
use mock_gateway::{
    IdentifyOutcome, MockConfig, ReplayRate, ResumeOutcome, ShardRouting, ViolationKind,
};

#[test]
fn resume_replays_everything_after_seq_then_resumed() {
    let mock = start(MockConfig::for_tests(TOKEN));
    let query = "v=10&encoding=json&compress=zlib-stream";
    let (mut client, ready) = connect_ready(&mock, query, [0, 1]);
    let session_id = ready["d"]["session_id"].as_str().unwrap().to_owned();
    let first = recv_n(&mut client, basic_lines().len());
    client.drop_tcp();

    // Resume on READY's resume_gateway_url, having processed up to s=5.
    let mut client =
        TestClient::connect(ready["d"]["resume_gateway_url"].as_str().unwrap(), query).unwrap();
    assert_eq!(client.recv_json(T).unwrap()["op"], 10);
    client.resume(TOKEN, &session_id, 5).unwrap();
    let replayed = recv_n(&mut client, 22);
    assert_eq!(replayed[..], first[4..], "s=6..=27 again, byte for byte");
    let resumed = client.recv_json(T).unwrap();
    assert_eq!(resumed["t"], "RESUMED");
    assert_eq!(resumed["s"], 28);

    let recorder = mock.recorder();
    let resume = recorder.wait_resume(1, T).unwrap();
    assert_eq!(resume.outcome, ResumeOutcome::Resumed { replayed: 22 });
    assert!(resume.on_resume_url && resume.token_ok);
    assert_eq!(resume.seq, Some(5));
    assert!(
        recorder.violations().is_empty(),
        "{:?}",
        recorder.violations()
    );
    // The resumed connection belongs to shard 0; controls reach it.
    assert_eq!(
        recorder.wait_live(0, T),
        Some(mock_gateway::ConnectionId(2))
    );
    let seq = mock
        .control()
        .shard(0)
        .inject_dispatch("CUSTOM_EVENT", &b"{\"x\":1}"[..])
        .unwrap();
    assert_eq!(seq, 29);
    let injected = recv_n(&mut client, 1).remove(0);
    assert_eq!(
        &injected[..],
        b"{\"t\":\"CUSTOM_EVENT\",\"s\":29,\"op\":0,\"d\":{\"x\":1}}"
    );
}

#[test]
fn dispatches_injected_while_disconnected_arrive_on_resume() {
    let mock = start(MockConfig::for_tests(TOKEN));
    let (mut client, ready) = connect_ready(&mock, "v=10&encoding=json", [0, 1]);
    let session_id = ready["d"]["session_id"].as_str().unwrap().to_owned();
    recv_n(&mut client, basic_lines().len());
    client.close(4000).unwrap(); // not 1000/1001: the session stays resumable
    let recorder = mock.recorder();
    recorder.wait_until(T, |r| r.connections[0].close.is_some());
    assert_eq!(
        mock.control()
            .shard(0)
            .inject_dispatch("MESSAGE_CREATE", "{\"id\":\"1\"}")
            .unwrap(),
        28
    );
    let mut client = TestClient::connect(&mock.resume_url(), "v=10&encoding=json").unwrap();
    client.recv_json(T).unwrap();
    client.resume(TOKEN, &session_id, 27).unwrap();
    let frames = recv_n(&mut client, 2);
    assert_eq!(json(&frames[0])["s"], 28);
    assert_eq!(json(&frames[1])["t"], "RESUMED");
}

#[test]
fn unknown_and_invalidated_sessions_get_op9_false() {
    let mock = start(MockConfig::for_tests(TOKEN));
    let recorder = mock.recorder();
    let mut client = TestClient::connect(&mock.resume_url(), "v=10&encoding=json").unwrap();
    client.recv_json(T).unwrap();
    client.resume(TOKEN, "no-such-session", 3).unwrap();
    let op9 = client.recv_op(9, T).unwrap();
    assert_eq!(op9["d"], false);
    assert!(
        recorder
            .wait_violation(T, |v| matches!(
                v,
                ViolationKind::ResumeUnknownSession { .. }
            ))
            .is_some()
    );

    // Closing with 1000 invalidates the session.
    let (mut client, ready) = connect_ready(&mock, "v=10&encoding=json", [0, 1]);
    let session_id = ready["d"]["session_id"].as_str().unwrap().to_owned();
    client.close(1000).unwrap();
    let mut client = TestClient::connect(&mock.resume_url(), "v=10&encoding=json").unwrap();
    client.recv_json(T).unwrap();
    client.resume(TOKEN, &session_id, 1).unwrap();
    assert_eq!(client.recv_op(9, T).unwrap()["d"], false);
    let resume = recorder.wait_resume(2, T).unwrap();
    assert_eq!(resume.outcome, ResumeOutcome::InvalidSession);
    assert!(
        recorder
            .wait_violation(T, |v| matches!(
                v,
                ViolationKind::ResumeInvalidatedSession { .. }
            ))
            .is_some()
    );
}

#[test]
fn resume_with_a_future_seq_closes_4007_and_wrong_url_is_flagged() {
    let mock = start(MockConfig::for_tests(TOKEN));
    let (mut client, ready) = connect_ready(&mock, "v=10&encoding=json", [0, 1]);
    let session_id = ready["d"]["session_id"].as_str().unwrap().to_owned();
    recv_n(&mut client, basic_lines().len());
    client.drop_tcp();
    // Wrong URL (the /gateway/bot one): still served, but recorded as a violation.
    let mut client = TestClient::connect(&mock.ws_url(), "v=10&encoding=json").unwrap();
    client.recv_json(T).unwrap();
    client.resume(TOKEN, &session_id, 999).unwrap();
    assert_eq!(client.recv_close(T).unwrap(), Some(4007));
    let recorder = mock.recorder();
    assert!(
        recorder
            .wait_violation(T, |v| matches!(v, ViolationKind::ResumeWrongUrl { .. }))
            .is_some()
    );
    let bad = recorder
        .wait_violation(T, |v| matches!(v, ViolationKind::ResumeBadSeq { .. }))
        .unwrap();
    assert_eq!(
        bad.kind,
        ViolationKind::ResumeBadSeq {
            seq: Some(999),
            last: 27
        }
    );
}

#[test]
fn identify_bucket_rule_and_session_start_limit() {
    let mut config = MockConfig::for_tests(TOKEN);
    config.identify_window = Duration::from_secs(5);
    config.max_concurrency = 2;
    config.shards = 4;
    let mock = start(config);
    let recorder = mock.recorder();
    connect_ready(&mock, "v=10&encoding=json", [0, 4]);
    connect_ready(&mock, "v=10&encoding=json", [1, 4]); // bucket 1: fine
    // Shard 2 is in bucket 0 with shard 0, within 5 s: op 9 false.
    let mut client = TestClient::connect(&mock.ws_url(), "v=10&encoding=json").unwrap();
    client.recv_json(T).unwrap();
    client.identify(TOKEN, [2, 4], 513).unwrap();
    assert_eq!(client.recv_op(9, T).unwrap()["d"], false);
    let third = recorder.wait_identify(3, T).unwrap();
    assert_eq!(third.outcome, IdentifyOutcome::InvalidSession);
    let violation = recorder
        .wait_violation(T, |v| matches!(v, ViolationKind::IdentifyBucket { .. }))
        .unwrap();
    assert!(matches!(
        violation.kind,
        ViolationKind::IdentifyBucket { bucket: 0, .. }
    ));
    // Two accepted identifies used two session starts.
    let (_, body) = http_get(
        mock.local_addr(),
        "/api/v10/gateway/bot",
        Some(&format!("Bot {TOKEN}")),
    )
    .unwrap();
    assert_eq!(
        json(body.as_bytes())["session_start_limit"]["remaining"],
        998
    );

    let mut config = MockConfig::for_tests(TOKEN);
    config.session_start_total = 1;
    let mock = start(config);
    connect_ready(&mock, "v=10&encoding=json", [0, 1]);
    let mut client = TestClient::connect(&mock.ws_url(), "v=10&encoding=json").unwrap();
    client.recv_json(T).unwrap();
    client.identify(TOKEN, [0, 1], 513).unwrap();
    assert_eq!(client.recv_op(9, T).unwrap()["d"], false);
    assert!(
        mock.recorder()
            .wait_violation(T, |v| matches!(
                v,
                ViolationKind::SessionStartLimitExhausted
            ))
            .is_some()
    );
}

#[test]
fn paced_looping_replay_keeps_sequence_increasing_and_can_pause() {
    let mut config = MockConfig::for_tests(TOKEN);
    config.rate = ReplayRate::PerSecond(500.0);
    config.loop_replay = true;
    let mock = start(config);
    let (mut client, _) = connect_ready(&mock, "v=10&encoding=json&compress=zlib-stream", [0, 1]);
    let n = basic_lines().len();
    let frames = recv_n(&mut client, n + 5);
    for (i, frame) in frames.iter().enumerate() {
        assert_eq!(json(frame)["s"], i as u64 + 2);
    }
    // The second pass repeats the fixture's d bytes under new sequence numbers.
    assert_eq!(json(&frames[n])["t"], "GUILD_CREATE");
    assert_eq!(json(&frames[n])["d"], json(&frames[0])["d"]);

    let control = mock.control().shard(0);
    control.pause_replay().unwrap();
    // Drain what was in flight, then nothing more arrives while paused except injections.
    while client.recv(QUIET).is_ok() {}
    let seq = control.inject_dispatch("PAUSED_EVENT", "null").unwrap();
    let injected = client.recv_json(T).unwrap();
    assert_eq!(
        (injected["t"].as_str(), injected["s"].as_u64()),
        (Some("PAUSED_EVENT"), Some(seq))
    );
    assert!(client.recv(QUIET).is_err(), "nothing else while paused");
    control.resume_replay().unwrap();
    assert_eq!(client.recv_json(T).unwrap()["s"], seq + 1);
}

#[test]
fn as_fast_as_client_reads_sends_everything_in_order() {
    let mut config = MockConfig::for_tests(TOKEN);
    config.rate = ReplayRate::AsFastAsClientReads;
    config.fixture = mock_gateway::Fixture::basic().repeated(20);
    let mock = start(config);
    let (mut client, _) = connect_ready(&mock, "v=10&encoding=json&compress=zlib-stream", [0, 1]);
    let frames = recv_n(&mut client, 26 * 20);
    let lines = basic_lines();
    for (i, frame) in frames.iter().enumerate() {
        let v = json(frame);
        assert_eq!(v["s"], i as u64 + 2);
        assert_eq!(v["d"], json(lines[i % lines.len()].as_bytes())["d"]);
    }
}

#[test]
fn by_guild_routing_sends_each_guild_to_its_shard() {
    let mut config = MockConfig::for_tests(TOKEN);
    config.routing = ShardRouting::ByGuild;
    let mock = start(config);
    // 900000000000000008 >> 22 = 214576167 (odd), 900000000000000034 >> 22 = 214576167 too.
    let (mut shard1, ready1) = connect_ready(&mock, "v=10&encoding=json", [1, 2]);
    let (mut shard0, ready0) = connect_ready(&mock, "v=10&encoding=json", [0, 2]);
    assert_eq!(ready1["d"]["guilds"].as_array().unwrap().len(), 2);
    assert_eq!(ready0["d"]["guilds"].as_array().unwrap().len(), 0);
    let lines = basic_lines();
    let expected_on_1: Vec<_> = lines
        .iter()
        .map(|l| json(l.as_bytes()))
        .filter(|v| {
            let guild = if v["t"].as_str().unwrap().starts_with("GUILD_")
                && v["t"] != "GUILD_MEMBER_UPDATE"
            {
                v["d"]["id"].clone()
            } else {
                v["d"]["guild_id"].clone()
            };
            guild
                .as_str()
                .map(|g| (g.parse::<u64>().unwrap() >> 22) % 2 == 1)
                .unwrap_or(false)
        })
        .collect();
    let got_1 = recv_n(&mut shard1, expected_on_1.len());
    for (got, want) in got_1.iter().zip(&expected_on_1) {
        assert_eq!(json(got)["d"], want["d"]);
    }
    let recorder = mock.recorder();
    let total = recorder.wait_until(T, |r| {
        r.sent_dispatches(0).len() - 1 + r.sent_dispatches(1).len() - 1 == lines.len()
    });
    assert!(total, "every event went to exactly one shard");
    let _ = recv_n(&mut shard0, recorder.sent_dispatches(0).len() - 1);
}

#[test]
fn many_shards_connect_at_once() {
    let mut config = MockConfig::for_tests(TOKEN);
    config.max_concurrency = 8;
    config.shards = 8;
    config.routing = ShardRouting::Broadcast;
    let mock = std::sync::Arc::new(start(config));
    let threads: Vec<_> = (0..8u32)
        .map(|shard| {
            let mock = mock.clone();
            std::thread::spawn(move || {
                let (mut client, ready) =
                    connect_ready(&mock, "v=10&encoding=json&compress=zlib-stream", [shard, 8]);
                assert_eq!(ready["d"]["shard"], serde_json::json!([shard, 8]));
                recv_n(&mut client, basic_lines().len())
            })
        })
        .collect();
    for thread in threads {
        let frames = thread.join().unwrap();
        assert_eq!(frames.len(), basic_lines().len());
    }
    let recorder = mock.recorder();
    recorder.read(|r| {
        assert_eq!(r.connections.len(), 8);
        for (i, c) in r.connections.iter().enumerate() {
            assert_eq!(c.id.0, i as u64 + 1);
        }
        for shard in 0..8 {
            assert_eq!(r.sent_dispatches(shard).len(), basic_lines().len() + 1);
        }
    });
    assert!(recorder.violations().is_empty());
}

#[test]
fn sessions_of_two_shard_counts_at_once_each_get_their_guilds() {
    let mut config = MockConfig::for_tests(TOKEN);
    config.routing = ShardRouting::ByGuild;
    config.start_paused = true;
    let mock = start(config);
    let query = "v=10&encoding=json";
    // The old set (2 shards) and the new one (4 shards), live at the same time.
    let mut old: Vec<TestClient> = (0..2)
        .map(|s| connect_ready(&mock, query, [s, 2]).0)
        .collect();
    let mut new: Vec<TestClient> = (0..4)
        .map(|s| connect_ready(&mock, query, [s, 4]).0)
        .collect();
    let control = mock.control();
    // Guild ids whose `>> 22` is 0..8: each goes to shard (g % 2) of 2 and (g % 4) of 4.
    for g in 0..8u64 {
        let guild = g << 22;
        let d = format!(r#"{{"guild_id":"{guild}","n":{g}}}"#);
        assert_eq!(
            control
                .inject_guild_dispatch(guild, "MESSAGE_CREATE", d)
                .unwrap(),
            2,
            "one session of each shard count"
        );
    }
    for (count, clients) in [(2u64, &mut old), (4, &mut new)] {
        for (shard, client) in clients.iter_mut().enumerate() {
            let got: Vec<u64> = recv_n(client, (8 / count) as usize)
                .iter()
                .map(|f| json(f)["d"]["n"].as_u64().unwrap())
                .collect();
            let want: Vec<u64> = (0..8).filter(|g| g % count == shard as u64).collect();
            assert_eq!(got, want, "shard {shard} of {count}");
        }
    }
    let none = control.inject_guild_dispatch(0, "", "{}");
    assert!(none.is_err());
}

#[test]
fn closing_an_old_set_session_leaves_the_new_set_session_of_the_same_shard_id_alone() {
    let mut config = MockConfig::for_tests(TOKEN);
    config.routing = ShardRouting::ByGuild;
    config.start_paused = true;
    let mock = start(config);
    let query = "v=10&encoding=json";
    let (mut old, _) = connect_ready(&mock, query, [2, 4]);
    let (mut new, _) = connect_ready(&mock, query, [2, 8]);
    old.close(4000).unwrap();
    let recorder = mock.recorder();
    recorder.wait_until(T, |r| r.connections[0].close.is_some());
    let control = mock.control();
    for n in 0..3u64 {
        let guild = 2 << 22;
        let d = format!(r#"{{"guild_id":"{guild}","n":{n}}}"#);
        // The old session is detached but resumable: it keeps receiving, and so does the new.
        assert_eq!(
            control
                .inject_guild_dispatch(guild, "MESSAGE_CREATE", d)
                .unwrap(),
            2
        );
    }
    let got: Vec<u64> = recv_n(&mut new, 3)
        .iter()
        .map(|f| json(f)["d"]["n"].as_u64().unwrap())
        .collect();
    assert_eq!(got, [0, 1, 2]);
}
