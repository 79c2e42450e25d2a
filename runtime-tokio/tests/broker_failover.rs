//! Failover between RabbitMQ nodes (issue 10, item 8), end to end: the `gatehouse` binary
//! configured with two AMQP addresses of a private three-node RabbitMQ cluster
//! (`AMQP_URL=amqp://..A,amqp://..B`, `GATEHOUSE_QUEUE_TYPE=quorum`) publishes the mock
//! gateway's stream while node A, the one it is connected to, is killed (SIGKILL). It must
//! fail over to B and keep publishing, and a worker consuming a quorum queue (its leader on A,
//! its consumer on C) must see every dispatch the mock sent: 0 missing.
//!
//! Three nodes, because a quorum queue needs a majority of its members: with two, killing one
//! leaves the queue unavailable. The nodes are private (free loopback ports, own directories,
//! a per-test Erlang cookie; the shared node on 5672 is never touched), started in parallel,
//! and killed and removed when the test ends, failing or not (their handles' `Drop`). Without
//! RabbitMQ's server scripts installed the test says so and passes without running.
//!
//! Nothing is timed in an assertion; the node start-up and failover durations are printed.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use conformance::private_services::PrivateRabbit;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties, ExchangeKind};
use mock_gateway::{Fixture, MockConfig, MockGateway, ReplayRate};
use runtime_common::e2e::support::{Gatehouse, RedisPrefix, header_int};

const BINARY: &str = env!("CARGO_BIN_EXE_gatehouse");
const TOKEN: &str = "failover-test-token";
const WORKER_QUEUE: &str = "failover-worker";

async fn connect(url: &str) -> Connection {
    Connection::connect_with_runtime(
        url,
        ConnectionProperties::default(),
        async_rs::Runtime::tokio_current(),
    )
    .await
    .expect("connect to a private node")
}

/// The worker's side, declared through node `url`: the events exchange (as the native profile
/// declares it) and a durable quorum queue bound to it with `#`.
async fn declare_worker_queue(url: &str) {
    let connection = connect(url).await;
    let channel = connection.create_channel().await.unwrap();
    channel
        .exchange_declare(
            "gateway".into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    channel
        .queue_declare(
            WORKER_QUEUE.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            arguments,
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            WORKER_QUEUE.into(),
            "gateway".into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let _ = connection.close(200, "declared".into()).await;
}

/// The `x-sequence` of every dispatch the mock sent on shard 0.
fn sent_sequences(mock: &MockGateway) -> BTreeSet<i64> {
    mock.recorder()
        .sent_dispatches(0)
        .iter()
        .map(|b| {
            serde_json::from_slice::<serde_json::Value>(b).unwrap()["s"]
                .as_i64()
                .unwrap()
        })
        .collect()
}

/// One private cluster at a time: three nodes each are all two cores can start in time.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_loses_no_event_and_gatehouse_fails_over_to_the_next_address() {
    fails_over("lapin").await;
}

/// The same with `GATEHOUSE_AMQP_CLIENT=amqprs`: the events connection fails over with the link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_loses_no_event_and_gatehouse_fails_over_with_amqprs() {
    fails_over("amqprs").await;
}

async fn fails_over(client: &str) {
    if !PrivateRabbit::available() {
        eprintln!(
            "SKIPPED the failover test ({client}): \
             rabbitmq-server is not installed (no private nodes can be started)"
        );
        return;
    }
    let _alone = ONE_CLUSTER_AT_A_TIME.lock().await;
    let begun = Instant::now();
    let cookie = format!("GATEHOUSEFAILOVERTEST{}{client}", std::process::id());
    let label = |node: &str| format!("failover-{client}-{node}");
    let (label_a, label_b, label_c) = (label("a"), label("b"), label("c"));
    let (a, b, c) = tokio::join!(
        PrivateRabbit::start_with_cookie(&label_a, Some(&cookie)),
        PrivateRabbit::start_with_cookie(&label_b, Some(&cookie)),
        PrivateRabbit::start_with_cookie(&label_c, Some(&cookie)),
    );
    let (mut a, mut b, mut c) = (
        a.expect("private node A"),
        b.expect("private node B"),
        c.expect("private node C"),
    );
    let started = begun.elapsed();
    b.join(&a).await.expect("B joins A's cluster");
    c.join(&a).await.expect("C joins A's cluster");
    let clustered = begun.elapsed();
    println!(
        "three private nodes started (in parallel) in {started:?}, clustered at {clustered:?}"
    );

    // The worker's quorum queue is declared through A (its leader there), consumed through C.
    declare_worker_queue(&a.amqp_url()).await;
    let worker = connect(&c.amqp_url()).await;
    let channel = worker.create_channel().await.unwrap();
    channel
        .basic_qos(200, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = channel
        .basic_consume(
            WORKER_QUEUE.into(),
            "failover-worker".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    let fixture = Fixture::basic().repeated(60);
    let mut config = MockConfig::for_tests(TOKEN);
    config.fixture = fixture.clone();
    config.rate = ReplayRate::PerSecond(100.0);
    let mock = MockGateway::start(config).expect("start the mock gateway");
    let redis = RedisPrefix::new("failover");
    let env = [
        ("DISCORD_TOKEN", TOKEN.to_owned()),
        ("GATEHOUSE_API_BASE", mock.api_base()),
        ("AMQP_URL", format!("{},{}", a.amqp_url(), b.amqp_url())),
        ("GATEHOUSE_QUEUE_TYPE", "quorum".to_owned()),
        ("REDIS_URL", RedisPrefix::url()),
        ("GATEHOUSE_REDIS_PREFIX", redis.prefix.clone()),
        ("GATEHOUSE_SHARD_COUNT", "1".to_owned()),
        ("GATEHOUSE_AMQP_CLIENT", client.to_owned()),
    ];
    let mut gatehouse = Gatehouse::start(Path::new(BINARY), &env);

    let mut received = BTreeSet::new();
    let mut deliveries = 0usize;
    let mut killed_at = None;
    let mut first_after_kill = None;
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        let expected = fixture.len() + 1;
        let sent = mock.recorder().sent_dispatches(0).len();
        if killed_at.is_some() && sent >= expected && received.len() >= sent {
            break;
        }
        let next = tokio::time::timeout(Duration::from_secs(2), consumer.next()).await;
        let Ok(Some(Ok(delivery))) = next else {
            continue;
        };
        delivery
            .ack(BasicAckOptions::default())
            .await
            .expect("ack through C");
        deliveries += 1;
        if let Some(sequence) = header_int(&delivery, "x-sequence") {
            received.insert(sequence);
        }
        if killed_at.is_some() && first_after_kill.is_none() {
            first_after_kill = killed_at.map(|at: Instant| at.elapsed());
        }
        if killed_at.is_none() && received.len() >= 150 {
            // Gatehouse is connected to A (the first address): kill A under load.
            a.kill();
            killed_at = Some(Instant::now());
        }
    }
    assert!(killed_at.is_some(), "events flowed before the kill");
    let sent = sent_sequences(&mock);
    assert_eq!(
        sent.len(),
        fixture.len() + 1,
        "the mock sent READY and the whole fixture"
    );
    let missing: Vec<&i64> = sent.difference(&received).collect();
    assert!(
        missing.is_empty(),
        "{} of {} dispatches missing after the failover: {missing:?}",
        missing.len(),
        sent.len()
    );
    println!(
        "failover: {} dispatches, {deliveries} deliveries ({} duplicates re-sent after the \
         switch), first delivery {:?} after the kill",
        sent.len(),
        deliveries - received.len(),
        first_after_kill
    );

    // Gatehouse is on B now, and its own queues there are quorum queues.
    let connections = b
        .ctl(&["list_connections", "client_properties"])
        .await
        .expect("list B's connections");
    assert!(
        connections.contains("gatehouse shards"),
        "gatehouse is connected to B: {connections}"
    );
    let queues = b
        .ctl(&["list_queues", "name", "type"])
        .await
        .expect("list the queues");
    let own: Vec<&str> = queues
        .lines()
        .filter(|l| l.starts_with("gateway.commands"))
        .collect();
    assert_eq!(own.len(), 2, "the command and dead-letter queues: {queues}");
    assert!(own.iter().all(|l| l.ends_with("quorum")), "{own:?}");
    assert!(gatehouse.is_running(), "gatehouse survived the failover");
    assert!(gatehouse.interrupt_and_wait(Duration::from_secs(30)));
    let _ = worker.close(200, "done".into()).await;
    drop((b, c));
    println!("whole test: {:?}", begun.elapsed());
}
