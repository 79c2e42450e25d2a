//! Gatehouse's Prometheus metrics: every name and label defined once, and the `/metrics`
//! endpoint.
//!
//! Owns: metric names, help texts, the recorder and a tiny HTTP endpoint on its own thread
//! (runtime-independent; a scrape every few seconds needs nothing more). Does not own: when
//! things happen (the other modules call the `record_*` functions).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use proto_core::shard::ShardState;

/// Dispatches confirmed by the broker, per shard and event name.
pub const EVENTS_PUBLISHED: &str = "gatehouse_events_published_total";
/// Publisher confirms by outcome (`ack`, `nack`, `lost`).
pub const PUBLISH_CONFIRMS: &str = "gatehouse_publish_confirms_total";
/// Seconds from a dispatch's arrival to the broker's confirm.
pub const PUBLISH_LATENCY: &str = "gatehouse_publish_latency_seconds";
/// Publications waiting for a confirm (or for the broker), per shard.
pub const UNCONFIRMED: &str = "gatehouse_unconfirmed_publications";
/// The coarse shard state as a number (see [`state_code`]).
pub const SHARD_STATE: &str = "gatehouse_shard_state";
/// WebSocket connections opened per shard after the first.
pub const SHARD_RECONNECTS: &str = "gatehouse_shard_reconnects_total";
/// Worker commands by outcome (`sent`, `reconnect`, `forwarded`, `rejected`, `ignored`,
/// `requeued`).
pub const COMMANDS: &str = "gatehouse_commands_total";
/// 1 while the AMQP connection is up.
pub const AMQP_CONNECTED: &str = "gatehouse_amqp_connected";
/// AMQP connections opened after the first.
pub const AMQP_RECONNECTS: &str = "gatehouse_amqp_reconnects_total";

/// The number [`SHARD_STATE`] reports for a state.
pub fn state_code(state: ShardState) -> f64 {
    match state {
        ShardState::Connecting => 0.0,
        ShardState::Identifying => 1.0,
        ShardState::Resuming => 2.0,
        ShardState::Active => 3.0,
        ShardState::Disconnected { .. } => 4.0,
        ShardState::FatallyClosed => 5.0,
    }
}

/// The lowercase name of a state, for logs and the Redis status.
pub fn state_name(state: ShardState) -> &'static str {
    match state {
        ShardState::Connecting => "connecting",
        ShardState::Identifying => "identifying",
        ShardState::Resuming => "resuming",
        ShardState::Active => "active",
        ShardState::Disconnected { .. } => "disconnected",
        ShardState::FatallyClosed => "fatally_closed",
    }
}

pub(crate) fn record_confirm_failure(result: &'static str, count: usize) {
    counter!(PUBLISH_CONFIRMS, "result" => result).increment(count as u64);
}

/// One shard's metric handles, looked up once (the hot path then only updates atomics).
pub(crate) struct ShardMetrics {
    shard: String,
    published: std::collections::HashMap<String, metrics::Counter>,
    acks: metrics::Counter,
    latency: metrics::Histogram,
    unconfirmed: metrics::Gauge,
    state: metrics::Gauge,
    reconnects: metrics::Counter,
}

impl ShardMetrics {
    pub(crate) fn new(shard: u32) -> Self {
        let label = shard.to_string();
        Self {
            acks: counter!(PUBLISH_CONFIRMS, "result" => "ack"),
            latency: histogram!(PUBLISH_LATENCY),
            unconfirmed: gauge!(UNCONFIRMED, "shard" => label.clone()),
            state: gauge!(SHARD_STATE, "shard" => label.clone()),
            reconnects: counter!(SHARD_RECONNECTS, "shard" => label.clone()),
            published: std::collections::HashMap::new(),
            shard: label,
        }
    }

    pub(crate) fn published(&mut self, event: &str, latency: Duration) {
        match self.published.get(event) {
            Some(counter) => counter.increment(1),
            None => {
                let counter = counter!(
                    EVENTS_PUBLISHED,
                    "shard" => self.shard.clone(),
                    "event" => event.to_owned()
                );
                counter.increment(1);
                self.published.insert(event.to_owned(), counter);
            }
        }
        self.acks.increment(1);
        self.latency.record(latency.as_secs_f64());
    }

    pub(crate) fn unconfirmed(&self, count: usize) {
        self.unconfirmed.set(count as f64);
    }

    pub(crate) fn state(&self, state: ShardState) {
        self.state.set(state_code(state));
    }

    pub(crate) fn reconnect(&self) {
        self.reconnects.increment(1);
    }
}

pub(crate) fn record_command(result: &'static str) {
    counter!(COMMANDS, "result" => result).increment(1);
}

pub(crate) fn record_amqp_connected(connected: bool, reconnect: bool) {
    gauge!(AMQP_CONNECTED).set(if connected { 1.0 } else { 0.0 });
    if reconnect {
        counter!(AMQP_RECONNECTS).increment(1);
    }
}

/// Installs the Prometheus recorder (once per process; later calls reuse it) and, with an
/// address, serves `GET /metrics` there from a background thread. Returns the handle that
/// renders the text.
pub fn install(address: Option<SocketAddr>) -> std::io::Result<PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    let handle = match HANDLE.get() {
        Some(handle) => handle.clone(),
        None => {
            let handle = build_recorder()?;
            HANDLE.get_or_init(|| handle).clone()
        }
    };
    if let Some(address) = address {
        let listener = TcpListener::bind(address)?;
        let handle = handle.clone();
        std::thread::Builder::new()
            .name("gatehouse-metrics".into())
            .spawn(move || serve(listener, handle))?;
        tracing::info!(%address, "serving Prometheus metrics at /metrics");
    }
    Ok(handle)
}

fn build_recorder() -> std::io::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(PUBLISH_LATENCY.to_owned()),
            &[
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
            ],
        )
        .expect("the bucket list is not empty")
        .install_recorder()
        .map_err(std::io::Error::other)?;
    describe();
    Ok(handle)
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(EVENTS_PUBLISHED, "Dispatches confirmed by the broker");
    describe_counter!(PUBLISH_CONFIRMS, "Publisher confirms by outcome");
    describe_histogram!(
        PUBLISH_LATENCY,
        "Seconds from dispatch arrival to broker confirm"
    );
    describe_gauge!(UNCONFIRMED, "Publications not yet confirmed");
    describe_gauge!(
        SHARD_STATE,
        "Shard state: 0 connecting, 1 identifying, 2 resuming, 3 active, 4 disconnected, 5 fatally closed"
    );
    describe_counter!(
        SHARD_RECONNECTS,
        "Gateway connections opened after the first"
    );
    describe_counter!(COMMANDS, "Worker commands by outcome");
    describe_gauge!(AMQP_CONNECTED, "1 while the AMQP connection is up");
    describe_counter!(AMQP_RECONNECTS, "AMQP connections opened after the first");
}

fn serve(listener: TcpListener, handle: PrometheusHandle) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
        let mut request = [0u8; 1024];
        let n = stream.read(&mut request).unwrap_or(0);
        let head = String::from_utf8_lossy(&request[..n]);
        let response = if head.starts_with("GET /metrics") || head.starts_with("GET / ") {
            let body = handle.render();
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        } else {
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned()
        };
        let _ = stream.write_all(response.as_bytes());
    }
}
