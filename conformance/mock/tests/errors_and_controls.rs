//! Close codes for protocol errors, heartbeat rules, and the run-time controls.

mod common;

use std::time::Duration;

use common::*;
use mock_gateway::client::TestClient;
use mock_gateway::{CloseKind, IdentifyOutcome, MockConfig, ViolationKind};
use serde_json::json;

fn hello(mock: &mock_gateway::MockGateway) -> TestClient {
    let mut client = TestClient::connect(&mock.ws_url(), "v=10&encoding=json").unwrap();
    assert_eq!(client.recv_json(T).unwrap()["op"], 10);
    client
}

fn expect_close(mock: &mock_gateway::MockGateway, send: serde_json::Value, code: u16) {
    let mut client = hello(mock);
    client.send(&send).unwrap();
    assert_eq!(
        client.recv_close(T).unwrap(),
        Some(code),
        "after sending {send}"
    );
}

#[test]
fn protocol_errors_close_with_discords_codes() {
    let mut config = MockConfig::for_tests(TOKEN);
    config.expected_intents = Some(513);
    let mock = start(config);
    let identify = |token: &str, shard: serde_json::Value, intents: serde_json::Value| json!({"op": 2, "d": {"token": token, "properties": {}, "shard": shard, "intents": intents}});
    // Before identify: anything but a heartbeat.
    expect_close(
        &mock,
        json!({"op": 3, "d": {"status": "online", "afk": false, "since": null, "activities": []}}),
        4003,
    );
    expect_close(&mock, json!({"op": 99, "d": null}), 4001);
    expect_close(&mock, json!({"op": 11, "d": null}), 4001);
    expect_close(&mock, json!({"d": null}), 4001);
    expect_close(&mock, identify("wrong", json!([0, 1]), json!(513)), 4004);
    expect_close(&mock, identify(TOKEN, json!([1, 1]), json!(513)), 4010);
    expect_close(&mock, identify(TOKEN, json!([0]), json!(513)), 4010);
    expect_close(&mock, identify(TOKEN, json!([0, 1]), json!(1)), 4013);
    expect_close(
        &mock,
        identify(TOKEN, json!([0, 1]), json!(1u64 << 40)),
        4013,
    );
    expect_close(&mock, identify(TOKEN, json!([0, 1]), json!(null)), 4013);
    // Too large, and not JSON.
    let mut client = hello(&mock);
    client
        .send(&json!({"op": 1, "d": null, "padding": "x".repeat(5000)}))
        .unwrap();
    assert_eq!(client.recv_close(T).unwrap(), Some(4002));
    let mut client = hello(&mock);
    client
        .send_message(tungstenite::Message::text("{not json"))
        .unwrap();
    assert_eq!(client.recv_close(T).unwrap(), Some(4002));
    // A second identify.
    let (mut client, _) = connect_ready(&mock, "v=10&encoding=json", [0, 1]);
    client.identify(TOKEN, [0, 1], 513).unwrap();
    assert_eq!(client.recv_close(T).unwrap(), Some(4005));
    // A bad API version never gets HELLO.
    let mut client = TestClient::connect(&mock.ws_url(), "v=8&encoding=json").unwrap();
    assert_eq!(client.recv_close(T).unwrap(), Some(4012));

    let recorder = mock.recorder();
    let violations = recorder.violations();
    let has = |f: &dyn Fn(&ViolationKind) -> bool| violations.iter().any(|v| f(&v.kind));
    assert!(has(&|v| matches!(
        v,
        ViolationKind::CommandBeforeIdentify { op: 3 }
    )));
    assert!(has(&|v| matches!(
        v,
        ViolationKind::UnknownOpcode { op: Some(99) }
    )));
    assert!(has(&|v| matches!(v, ViolationKind::WrongToken)));
    assert!(has(&|v| matches!(v, ViolationKind::BadShard { .. })));
    assert!(has(&|v| matches!(
        v,
        ViolationKind::WrongIntents {
            sent: Some(1),
            expected: 513
        }
    )));
    assert!(has(&|v| matches!(
        v,
        ViolationKind::InvalidIntents { sent: None }
    )));
    assert!(has(&|v| matches!(v, ViolationKind::PayloadTooLarge { .. })));
    assert!(has(&|v| matches!(v, ViolationKind::Malformed { .. })));
    assert!(has(&|v| matches!(v, ViolationKind::AlreadyAuthenticated)));
    let identifies = recorder.identifies();
    assert!(
        identifies
            .iter()
            .any(|i| !i.token_ok && i.outcome == IdentifyOutcome::Closed(4004))
    );
    let closes = recorder.read(|r| r.closes());
    assert!(
        closes
            .iter()
            .any(|(_, c)| c.kind == CloseKind::ServerClose(4013))
    );
}

#[test]
fn too_many_frames_close_4008() {
    let mut config = MockConfig::for_tests(TOKEN);
    config.rate_limit_frames = 5;
    let mock = start(config);
    let mut client = hello(&mock);
    for _ in 0..6 {
        client.heartbeat(None).unwrap();
    }
    assert_eq!(client.recv_close(T).unwrap(), Some(4008));
    let v = mock
        .recorder()
        .wait_violation(T, |v| matches!(v, ViolationKind::RateLimited { .. }))
        .unwrap();
    assert_eq!(v.kind, ViolationKind::RateLimited { frames: 6 });
}

#[test]
fn missing_heartbeats_close_4009_and_invalidate_the_session() {
    let mut config = MockConfig::for_tests(TOKEN);
    config.heartbeat_interval = Duration::from_millis(50);
    config.heartbeat_grace = Some(Duration::from_millis(50));
    let mock = start(config);
    let (mut client, ready) = connect_ready(&mock, "v=10&encoding=json", [0, 1]);
    assert_eq!(client.recv_close(T).unwrap(), Some(4009));
    let recorder = mock.recorder();
    assert!(
        recorder
            .wait_violation(T, |v| matches!(v, ViolationKind::HeartbeatTimeout))
            .is_some()
    );
    let mut client = TestClient::connect(&mock.resume_url(), "v=10&encoding=json").unwrap();
    client.recv_json(T).unwrap();
    client
        .resume(TOKEN, ready["d"]["session_id"].as_str().unwrap(), 1)
        .unwrap();
    assert_eq!(client.recv_op(9, T).unwrap()["d"], false);
}

#[test]
fn late_heartbeats_are_violations_and_intervals_are_recorded() {
    let mut config = MockConfig::for_tests(TOKEN);
    config.heartbeat_interval = Duration::from_millis(100);
    config.heartbeat_late_slack = Some(Duration::from_millis(20));
    config.heartbeat_grace = Some(Duration::from_secs(10));
    let mock = start(config);
    let mut client = hello(&mock);
    client.heartbeat(None).unwrap();
    client.recv_op(11, T).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    client.heartbeat(None).unwrap();
    client.recv_op(11, T).unwrap();
    let recorder = mock.recorder();
    let late = recorder
        .wait_violation(T, |v| matches!(v, ViolationKind::HeartbeatLate { .. }))
        .unwrap();
    assert!(
        matches!(late.kind, ViolationKind::HeartbeatLate { gap, .. } if gap >= Duration::from_millis(200))
    );
    let intervals = recorder.read(|r| r.connections[0].heartbeat_intervals());
    assert_eq!(intervals.len(), 1);
    assert!(intervals[0] >= Duration::from_millis(200));
}

#[test]
fn dropped_acks_make_a_zombie_until_restored() {
    let mock = start(MockConfig::for_tests(TOKEN));
    let (mut client, _) = connect_ready(&mock, "v=10&encoding=json", [0, 1]);
    recv_n(&mut client, basic_lines().len());
    let control = mock.control().shard(0);
    control.drop_acks(true).unwrap(); // returns once applied
    client.heartbeat(Some(27)).unwrap();
    assert!(
        matches!(
            client.recv(QUIET),
            Err(mock_gateway::client::ClientError::Timeout)
        ),
        "no ACK"
    );
    control.drop_acks(false).unwrap();
    client.heartbeat(Some(27)).unwrap();
    assert_eq!(client.recv_json(T).unwrap()["op"], 11);
    let heartbeats = mock
        .recorder()
        .read(|r| r.connections[0].heartbeats.clone());
    assert_eq!(heartbeats.len(), 2);
    assert_eq!(heartbeats[0].seq, Some(27));
}

#[test]
fn controls_send_reconnect_invalid_session_heartbeat_request_and_inject() {
    let mock = start(MockConfig::for_tests(TOKEN));
    let (mut client, ready) =
        connect_ready(&mock, "v=10&encoding=json&compress=zlib-stream", [0, 1]);
    recv_n(&mut client, basic_lines().len());
    let control = mock.control().shard(0);

    let injected_seq = control
        .inject_dispatch("VOICE_CHANNEL_START_TIME_UPDATE", "{\"id\":\"1\"}")
        .unwrap();
    let frame = recv_n(&mut client, 1).remove(0);
    assert_eq!(
        std::str::from_utf8(&frame).unwrap(),
        format!(
            "{{\"t\":\"VOICE_CHANNEL_START_TIME_UPDATE\",\"s\":{injected_seq},\"op\":0,\"d\":{{\"id\":\"1\"}}}}"
        )
    );
    assert!(control.inject_dispatch("X", "{not json").is_err());
    assert!(mock.control().shard(5).inject_dispatch("X", "{}").is_err());

    control.request_heartbeat().unwrap();
    let op1 = client.recv_json(T).unwrap();
    assert_eq!(op1, json!({"t": null, "s": null, "op": 1, "d": null}));
    client.heartbeat(Some(injected_seq)).unwrap();
    assert_eq!(client.recv_json(T).unwrap()["op"], 11);
    let heartbeat = mock
        .recorder()
        .read(|r| r.connections[0].heartbeats.last().cloned())
        .unwrap();
    assert!(heartbeat.requested);

    control.send_reconnect().unwrap();
    assert_eq!(
        client.recv_json(T).unwrap(),
        json!({"t": null, "s": null, "op": 7, "d": null})
    );
    control.send_invalid_session(true).unwrap();
    assert_eq!(client.recv_json(T).unwrap()["d"], true);

    // Closing with a chosen code; the session stays resumable (4000).
    control.close(4000, "test").unwrap();
    assert_eq!(client.recv_close(T).unwrap(), Some(4000));
    let mut client = TestClient::connect(&mock.resume_url(), "v=10&encoding=json").unwrap();
    client.recv_json(T).unwrap();
    client
        .resume(
            TOKEN,
            ready["d"]["session_id"].as_str().unwrap(),
            injected_seq,
        )
        .unwrap();
    assert_eq!(client.recv_json(T).unwrap()["t"], "RESUMED");

    // op 9 false invalidates the session.
    mock.control().shard(0).send_invalid_session(false).unwrap();
    assert_eq!(client.recv_op(9, T).unwrap()["d"], false);
    client.drop_tcp();
    let mut client = TestClient::connect(&mock.resume_url(), "v=10&encoding=json").unwrap();
    client.recv_json(T).unwrap();
    client
        .resume(
            TOKEN,
            ready["d"]["session_id"].as_str().unwrap(),
            injected_seq,
        )
        .unwrap();
    assert_eq!(client.recv_op(9, T).unwrap()["d"], false);
}

#[test]
fn drop_tcp_ends_without_a_close_frame_and_keeps_the_session() {
    let mock = start(MockConfig::for_tests(TOKEN));
    let (mut client, ready) = connect_ready(&mock, "v=10&encoding=json", [0, 1]);
    recv_n(&mut client, basic_lines().len());
    let conn = mock.control().shard(0).drop_tcp().unwrap();
    assert_eq!(client.recv_close(T).unwrap(), None);
    let close = mock.recorder().wait_closed(conn, T).unwrap();
    assert_eq!(close.kind, CloseKind::ServerDropped);
    let mut client = TestClient::connect(&mock.resume_url(), "v=10&encoding=json").unwrap();
    client.recv_json(T).unwrap();
    client
        .resume(TOKEN, ready["d"]["session_id"].as_str().unwrap(), 27)
        .unwrap();
    assert_eq!(client.recv_json(T).unwrap()["t"], "RESUMED");
}

#[test]
fn client_close_codes_are_recorded() {
    let mock = start(MockConfig::for_tests(TOKEN));
    let (mut client, _) = connect_ready(&mock, "v=10&encoding=json", [0, 1]);
    client.close(4200).unwrap();
    let close = mock
        .recorder()
        .wait_closed(mock_gateway::ConnectionId(1), T)
        .unwrap();
    assert_eq!(close.kind, CloseKind::ClientClose(Some(4200)));
    // A TCP drop by the client is recorded as such; the session stays resumable.
    let (client, ready) = connect_ready(&mock, "v=10&encoding=json", [0, 1]);
    client.drop_tcp();
    let close = mock
        .recorder()
        .wait_closed(mock_gateway::ConnectionId(2), T)
        .unwrap();
    assert_eq!(close.kind, CloseKind::ClientDropped);
    let mut client = TestClient::connect(&mock.resume_url(), "v=10&encoding=json").unwrap();
    client.recv_json(T).unwrap();
    client
        .resume(TOKEN, ready["d"]["session_id"].as_str().unwrap(), 1)
        .unwrap();
    // Whatever was generated before the drop is replayed, then RESUMED, then the rest of the
    // fixture: sequence numbers stay consecutive from 2, and RESUMED comes exactly once.
    let frames = recv_n(&mut client, basic_lines().len() + 1);
    let mut resumed = 0;
    for (i, frame) in frames.iter().enumerate() {
        let v = json(frame);
        assert_eq!(v["s"], i as u64 + 2);
        resumed += usize::from(v["t"] == "RESUMED");
    }
    assert_eq!(resumed, 1);
}

#[test]
fn shutdown_closes_connections_with_1001() {
    let mut mock = start(MockConfig::for_tests(TOKEN));
    let mut client = hello(&mock);
    mock.shutdown();
    assert_eq!(client.recv_close(T).unwrap(), Some(1001));
    assert!(TestClient::connect(&mock.ws_url(), "v=10").is_err());
}

#[test]
fn reconnect_in_place_of_hello_for_the_next_connection_only() {
    let mock = start(MockConfig::for_tests(TOKEN));
    mock.control().reconnect_before_hello(1);
    let mut client = TestClient::connect(&mock.ws_url(), "v=10&encoding=json").unwrap();
    assert_eq!(
        client.recv_json(T).unwrap(),
        json!({"t": null, "s": null, "op": 7, "d": null})
    );
    client.close(4000).unwrap();
    let mut client = TestClient::connect(&mock.ws_url(), "v=10&encoding=json").unwrap();
    assert_eq!(client.recv_json(T).unwrap()["op"], 10);
}

#[test]
fn a_resume_takes_the_session_from_a_still_open_connection() {
    let mock = start(MockConfig::for_tests(TOKEN));
    let (mut old, ready) = connect_ready(&mock, "v=10&encoding=json", [0, 1]);
    recv_n(&mut old, basic_lines().len());
    let mut new = TestClient::connect(&mock.resume_url(), "v=10&encoding=json").unwrap();
    new.recv_json(T).unwrap();
    new.resume(TOKEN, ready["d"]["session_id"].as_str().unwrap(), 27)
        .unwrap();
    assert_eq!(new.recv_json(T).unwrap()["t"], "RESUMED");
    assert_eq!(old.recv_close(T).unwrap(), Some(4000));
    // Controls for shard 0 now reach the new connection.
    let conn = mock.control().shard(0).send_reconnect().unwrap();
    assert_eq!(conn, mock_gateway::ConnectionId(2));
    assert_eq!(new.recv_json(T).unwrap()["op"], 7);
}
