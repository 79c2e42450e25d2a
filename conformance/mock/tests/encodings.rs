//! zstd-stream, ETF, plain JSON and the 2.8 MB payload split over zlib messages.

mod common;

use common::*;
use mock_gateway::client::{Received, TestClient};
use mock_gateway::{Fixture, MockConfig};

#[test]
fn zstd_stream_handshake_and_replay() {
    let mock = start(MockConfig::for_tests(TOKEN));
    let (mut client, ready) =
        connect_ready(&mock, "v=10&encoding=json&compress=zstd-stream", [0, 1]);
    assert_eq!(ready["s"], 1);
    let lines = basic_lines();
    let got = recv_n(&mut client, lines.len());
    for (got, want) in got.iter().zip(&lines) {
        assert_eq!(std::str::from_utf8(got).unwrap(), *want);
    }
    // One payload per WebSocket message.
    assert_eq!(client.messages_received, lines.len() + 2);
    client.heartbeat(Some(1)).unwrap();
    assert_eq!(client.recv_json(T).unwrap()["op"], 11);
}

#[test]
fn etf_handshake_and_replay() {
    let mock = start(MockConfig::for_tests(TOKEN));
    // The client sends ETF with binary keys (IDENTIFY included) and decodes ETF.
    let (mut client, ready) = connect_ready(&mock, "v=10&encoding=etf", [0, 1]);
    assert_eq!(ready["d"]["resume_gateway_url"], mock.resume_url());
    let lines = basic_lines();
    let got = recv_n(&mut client, lines.len());
    for (got, want) in got.iter().zip(&lines) {
        assert_eq!(json(got), json(want.as_bytes()));
    }
    client.heartbeat(Some(27)).unwrap();
    assert_eq!(client.recv_json(T).unwrap()["op"], 11);
    let recorder = mock.recorder();
    assert!(
        recorder.violations().is_empty(),
        "{:?}",
        recorder.violations()
    );
    // The recorder keeps the JSON the ETF was made from, byte-exact with the fixture.
    let sent = recorder.sent_dispatches(0);
    assert_eq!(
        sent[1..]
            .iter()
            .map(|b| std::str::from_utf8(b).unwrap())
            .collect::<Vec<_>>(),
        lines
    );
    // What the client sent is recorded as JSON.
    let heartbeat = recorder.read(|r| r.connections[0].received.last().cloned().unwrap());
    assert_eq!(json(&heartbeat.json), serde_json::json!({"op": 1, "d": 27}));
}

#[test]
fn etf_atom_keys_are_a_decode_error() {
    let mock = start(MockConfig::for_tests(TOKEN));
    let mut client = TestClient::connect(&mock.ws_url(), "v=10&encoding=etf").unwrap();
    client.recv_json(T).unwrap();
    // {op => 1} with the key as a SMALL_ATOM_UTF8_EXT: clients must use binary keys.
    let mut payload = vec![131u8, 116, 0, 0, 0, 1];
    payload.extend_from_slice(&[119, 2, b'o', b'p', 97, 1]);
    client
        .send_message(tungstenite::Message::binary(payload))
        .unwrap();
    assert_eq!(client.recv_close(T).unwrap(), Some(4002));
}

#[test]
fn uncompressed_json_uses_text_frames() {
    let mock = start(MockConfig::for_tests(TOKEN));
    let (mut client, _) = connect_ready(&mock, "v=9&encoding=json", [0, 1]);
    let lines = basic_lines();
    let got = recv_n(&mut client, lines.len());
    assert_eq!(std::str::from_utf8(&got[0]).unwrap(), lines[0]);
}

#[test]
fn large_guild_create_is_split_over_zlib_messages_and_arrives_intact() {
    let mut config = MockConfig::for_tests(TOKEN);
    config.fixture = Fixture::large();
    let mock = start(config);
    let (mut client, ready) =
        connect_ready(&mock, "v=10&encoding=json&compress=zlib-stream", [0, 1]);
    assert_eq!(
        ready["d"]["guilds"],
        serde_json::json!([{"id": "81384788765712384", "unavailable": true}])
    );
    let before = client.messages_received;
    let got = match client.recv(T).unwrap() {
        Received::Payload(bytes) => bytes,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        std::str::from_utf8(&got).unwrap(),
        mock_gateway::fixtures::LARGE_SESSION.trim_end()
    );
    assert!(
        client.messages_received - before > 1,
        "the payload spans several messages"
    );
}
