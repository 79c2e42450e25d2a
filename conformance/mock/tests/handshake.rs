//! Black-box tests of the mock over real sockets: REST, handshake in every encoding and
//! compression, replay order and byte-exactness.

use std::time::Duration;

use mock_gateway::client::{TestClient, http_get};
use mock_gateway::{Fixture, MockConfig, MockGateway};
use serde_json::Value;

const TOKEN: &str = "test-token";
const T: Duration = Duration::from_secs(10);

fn start(config: MockConfig) -> MockGateway {
    MockGateway::start(config).expect("mock starts")
}

fn identify_and_read_ready(client: &mut TestClient, shard: [u32; 2]) -> Value {
    let hello = client.recv_json(T).unwrap();
    assert_eq!(hello["op"], 10);
    client.identify(TOKEN, shard, 513).unwrap();
    let ready = client.recv_json(T).unwrap();
    assert_eq!(ready["t"], "READY", "{ready}");
    ready
}

#[test]
fn gateway_bot_requires_the_bot_token() {
    let mut config = MockConfig::for_tests(TOKEN);
    config.shards = 3;
    config.max_concurrency = 16;
    let mock = start(config);
    let addr = mock.local_addr();
    for path in [
        "/api/v10/gateway/bot",
        "/api/v9/gateway/bot",
        "/api/gateway/bot",
    ] {
        let (status, body) = http_get(addr, path, Some(&format!("Bot {TOKEN}"))).unwrap();
        assert_eq!(status, 200, "{path}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["url"], mock.ws_url());
        assert_eq!(v["shards"], 3);
        assert_eq!(v["session_start_limit"]["max_concurrency"], 16);
        assert_eq!(v["session_start_limit"]["total"], 1000);
        assert_eq!(v["session_start_limit"]["remaining"], 1000);
        assert!(v["session_start_limit"]["reset_after"].as_u64().unwrap() > 0);
    }
    assert_eq!(http_get(addr, "/api/v10/gateway/bot", None).unwrap().0, 401);
    assert_eq!(
        http_get(addr, "/api/v10/gateway/bot", Some("Bot wrong"))
            .unwrap()
            .0,
        401
    );
    assert_eq!(
        http_get(addr, "/api/v10/gateway/bot", Some(TOKEN))
            .unwrap()
            .0,
        401
    );
    assert_eq!(http_get(addr, "/api/v10/nothing", None).unwrap().0, 404);
    let (status, body) = http_get(addr, "/api/v10/gateway", None).unwrap();
    assert_eq!(status, 200);
    assert!(body.contains(&mock.ws_url()));
    assert!(mock.api_base().ends_with("/api/v10"));
    let http = mock.recorder().read(|r| r.http.clone());
    assert_eq!(http.len(), 8);
}

#[test]
fn json_zlib_stream_handshake_and_byte_exact_replay() {
    let mock = start(MockConfig::for_tests(TOKEN));
    let mut client =
        TestClient::connect(&mock.ws_url(), "v=10&encoding=json&compress=zlib-stream").unwrap();
    let ready = identify_and_read_ready(&mut client, [0, 1]);
    assert_eq!(ready["s"], 1);
    assert_eq!(ready["d"]["resume_gateway_url"], mock.resume_url());
    assert_eq!(ready["d"]["shard"], serde_json::json!([0, 1]));
    assert!(
        ready["d"]["session_id"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
    assert_eq!(ready["d"]["guilds"].as_array().unwrap().len(), 2);

    // Every fixture line arrives unchanged, in order (READY was s=1, the file starts at s=2).
    let mut received = Vec::new();
    for _ in 0..Fixture::basic().len() {
        match client.recv(T).unwrap() {
            mock_gateway::client::Received::Payload(bytes) => received.push(bytes),
            other => panic!("unexpected {other:?}"),
        }
    }
    let expected: Vec<&str> = mock_gateway::fixtures::BASIC_SESSION.lines().collect();
    assert_eq!(received.len(), expected.len());
    for (got, want) in received.iter().zip(&expected) {
        assert_eq!(std::str::from_utf8(got).unwrap(), *want);
    }
    // What the recorder says was sent is what the client got.
    let sent = mock.recorder().sent_dispatches(0);
    assert_eq!(sent.len(), expected.len() + 1);
    assert_eq!(&sent[1..], &received[..]);

    // Heartbeat -> ACK with explicit nulls.
    client.heartbeat(Some(27)).unwrap();
    let ack = client.recv(T).unwrap();
    assert_eq!(
        ack,
        mock_gateway::client::Received::Payload(
            "{\"t\":null,\"s\":null,\"op\":11,\"d\":null}".into()
        )
    );
    let identify = mock.recorder().identifies().remove(0);
    assert!(identify.token_ok);
    assert_eq!(identify.shard, Some([0, 1]));
    assert_eq!(identify.intents, Some(513));
    assert!(!String::from_utf8_lossy(&identify.d).contains(TOKEN));
    assert!(
        mock.recorder().violations().is_empty(),
        "{:?}",
        mock.recorder().violations()
    );
}
