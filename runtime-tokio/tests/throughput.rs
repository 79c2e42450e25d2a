//! A rough end-to-end rate (not a benchmark suite; timing is printed, never asserted):
//! mock gateway as fast as the client reads -> `gatehouse` -> RabbitMQ (persistent, confirms).
//! Run with `cargo test --release -p runtime-tokio --test throughput -- --ignored --nocapture`.

mod support;

use std::time::{Duration, Instant};

use mock_gateway::{Fixture, FrameRecording, MockConfig, MockGateway, ReplayRate};
use support::{Gatehouse, RedisPrefix, Vhost};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run explicitly in release"]
async fn end_to_end_rate() {
    let events: usize = std::env::var("GATEHOUSE_THROUGHPUT_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let vhost = Vhost::create("rate");
    let redis = RedisPrefix::new("rate");
    let basic = Fixture::basic();
    let mut config = MockConfig::for_tests("rate-token");
    config.fixture = basic.repeated(events / basic.len() + 1);
    config.rate = ReplayRate::AsFastAsClientReads;
    config.record_frames = FrameRecording::None;
    let mock = MockGateway::start(config).unwrap();
    // A plain counting consumer on a queue bound before the gateway starts.
    let mut capture = support::Capture::topic(&vhost.amqp_url(), "gateway").await;
    let _gatehouse = Gatehouse::start(&[
        ("DISCORD_TOKEN", "rate-token".to_owned()),
        ("GATEHOUSE_API_BASE", mock.api_base()),
        ("AMQP_URL", vhost.amqp_url()),
        ("REDIS_URL", RedisPrefix::url()),
        ("GATEHOUSE_REDIS_PREFIX", redis.prefix.clone()),
        ("GATEHOUSE_SHARD_COUNT", "1".to_owned()),
    ]);
    let first = capture.next(Duration::from_secs(30)).await.expect("READY");
    drop(first);
    let started = Instant::now();
    let mut received = 1;
    while received < events {
        if capture.next(Duration::from_secs(10)).await.is_none() {
            break;
        }
        received += 1;
    }
    let elapsed = started.elapsed();
    println!(
        "end to end: {received} events in {elapsed:?} = {:.0} events/s",
        received as f64 / elapsed.as_secs_f64()
    );
}
