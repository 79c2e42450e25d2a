//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use mock_gateway::client::{Received, TestClient};
use mock_gateway::{MockConfig, MockGateway};
use serde_json::Value;

pub const TOKEN: &str = "test-token";
pub const T: Duration = Duration::from_secs(10);
/// How long a test waits to be sure something does NOT arrive.
pub const QUIET: Duration = Duration::from_millis(300);

pub fn start(config: MockConfig) -> MockGateway {
    MockGateway::start(config).expect("mock starts")
}

/// Connects, reads HELLO, identifies as `shard`, reads READY.
pub fn connect_ready(mock: &MockGateway, query: &str, shard: [u32; 2]) -> (TestClient, Value) {
    let mut client = TestClient::connect(&mock.ws_url(), query).unwrap();
    let hello = client.recv_json(T).unwrap();
    assert_eq!(hello["op"], 10, "{hello}");
    client.identify(TOKEN, shard, 513).unwrap();
    let ready = client.recv_json(T).unwrap();
    assert_eq!(ready["t"], "READY", "{ready}");
    (client, ready)
}

/// Receives `n` payloads as raw JSON bytes.
pub fn recv_n(client: &mut TestClient, n: usize) -> Vec<bytes::Bytes> {
    (0..n)
        .map(|_| match client.recv(T).unwrap() {
            Received::Payload(bytes) => bytes,
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

/// Parses JSON bytes.
pub fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

/// The basic fixture's lines (what the mock sends after READY, in order).
pub fn basic_lines() -> Vec<&'static str> {
    mock_gateway::fixtures::BASIC_SESSION.lines().collect()
}
