//! Measures how fast the mock streams a recorded corpus to one client over loopback
//! (`cargo run --release -p mock-gateway --example replay_throughput [events] [zlib|zstd|none] [zlib level]`).
//! The client is the crate's plain test client, so this is a floor for the mock, not a benchmark
//! of any gateway library.

use std::time::{Duration, Instant};

use mock_gateway::client::{Received, TestClient};
use mock_gateway::{Fixture, FrameRecording, MockConfig, MockGateway, ReplayRate};

fn main() {
    let mut args = std::env::args().skip(1);
    let events: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_800);
    let compress = args.next().unwrap_or_else(|| "zlib".into());
    let level: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(6);
    let basic = Fixture::basic();
    let mut config = MockConfig::for_tests("bench");
    config.fixture = basic.repeated(events.div_ceil(basic.len()));
    // `paced`: each event compressed as the client reads; else the whole corpus is compressed
    // before the first event goes out (ReplayRate::AllAtOnce).
    config.rate = if std::env::var_os("PACED").is_some() {
        ReplayRate::AsFastAsClientReads
    } else {
        ReplayRate::AllAtOnce
    };
    config.record_frames = FrameRecording::None;
    config.zlib_level = level;
    config.heartbeat_interval = Duration::from_secs(60);
    let mock = MockGateway::start(config).expect("mock");
    let query = match compress.as_str() {
        "zstd" => "v=10&encoding=json&compress=zstd-stream",
        "none" => "v=10&encoding=json",
        _ => "v=10&encoding=json&compress=zlib-stream",
    };
    let mut client = TestClient::connect(&mock.ws_url(), query).expect("connect");
    client.recv_json(Duration::from_secs(5)).expect("hello");
    client.identify("bench", [0, 1], 513).expect("identify");
    client.recv_json(Duration::from_secs(5)).expect("ready");
    let start = Instant::now();
    let mut first = None;
    let mut bytes = 0usize;
    for _ in 0..events {
        match client.recv(Duration::from_secs(10)).expect("event") {
            Received::Payload(p) => {
                bytes += p.len();
                first.get_or_insert_with(Instant::now);
            }
            Received::Closed(code) => panic!("closed {code:?}"),
        }
    }
    let elapsed = start.elapsed();
    let streaming = first.map_or(elapsed, |f| f.elapsed());
    println!(
        "{events} events, {:.1} MB JSON, {compress}: {:.2} s after READY ({:.0} events/s), \
         {:.2} s after the first event ({:.0} events/s)",
        bytes as f64 / 1e6,
        elapsed.as_secs_f64(),
        events as f64 / elapsed.as_secs_f64(),
        streaming.as_secs_f64(),
        events as f64 / streaming.as_secs_f64()
    );
}
