//! Gatehouse's Prometheus metrics and the live status behind the status page: every metric
//! name and label defined once, and the per-shard handle the shard tasks report through.
//!
//! Owns: metric names, help texts, the recorder, and [`ShardMetrics`] (one shard's metric
//! handles plus its [`crate::status`] cell, so one call updates both). Does not own: when
//! things happen (the other modules call the `record_*` functions and the handle), or serving
//! the text (`http`).

use std::time::{Duration, SystemTime};

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use proto_core::shard::{DisconnectReason, Shard, ShardEvent, ShardState};

use crate::status;

/// Dispatches confirmed by the broker, per shard and event name.
pub const EVENTS_PUBLISHED: &str = "gatehouse_events_published_total";
/// Publisher confirms by outcome: `ack`, `nack` (published again after a back-off),
/// `unroutable` (returned by the broker: no queue bound), `timeout` (no confirm in time: the
/// link failed) and `lost` (the link failed first).
pub const PUBLISH_CONFIRMS: &str = "gatehouse_publish_confirms_total";
/// Events the broker returned as unroutable (no queue bound for them), per event name.
pub const EVENTS_UNROUTABLE: &str = "gatehouse_events_unroutable_total";
/// Seconds from a dispatch's arrival to the broker's confirm.
pub const PUBLISH_LATENCY: &str = "gatehouse_publish_latency_seconds";
/// Seconds from a dispatch's arrival to lapin's hand-off of its publication: `basic_publish`
/// has returned, i.e. lapin's I/O loop has written the message's frames to the connection
/// (Gatehouse's own share of the latency; the rest, to the confirm, is the broker's).
pub const PUBLISH_HANDOFF: &str = "gatehouse_publish_handoff_seconds";
/// Publications waiting for a confirm (or for the broker), per shard.
pub const UNCONFIRMED: &str = "gatehouse_unconfirmed_publications";
/// Bytes of the bodies of those publications, per shard.
pub const UNCONFIRMED_BYTES: &str = "gatehouse_unconfirmed_bytes";
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
/// The latest heartbeat round trip per shard, in seconds.
pub const GATEWAY_LATENCY: &str = "gatehouse_gateway_latency_seconds";
/// Reconnections per shard by `kind` (`resume` or `identify`) and `reason` (see
/// [`status::disconnect_label`]).
pub const SHARD_RECONNECTIONS: &str = "gatehouse_shard_reconnections_total";
/// Worker commands waiting for the gateway rate limiter, per shard.
pub const COMMAND_QUEUE: &str = "gatehouse_command_queue_depth";
/// Redis write attempts that failed (sessions and status; retried with back-off, latest values).
pub const REDIS_WRITE_FAILURES: &str = "gatehouse_redis_write_failures_total";
/// Always 1, labelled with the version and the binary.
pub const BUILD_INFO: &str = "gatehouse_build_info";

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

pub(crate) fn record_confirms(result: &'static str, count: usize) {
    counter!(PUBLISH_CONFIRMS, "result" => result).increment(count as u64);
}

/// The broker returned an event: no queue is bound for it.
pub(crate) fn record_unroutable(event: &str) {
    counter!(PUBLISH_CONFIRMS, "result" => "unroutable").increment(1);
    counter!(EVENTS_UNROUTABLE, "event" => event.to_owned()).increment(1);
}

/// One shard's metric handles, looked up once (the hot path then only updates atomics), and
/// its cell in the status registry. Dropping it (the shard task ended) marks the shard
/// stopped on the status page.
pub(crate) struct ShardMetrics {
    shard: String,
    cell: std::sync::Arc<status::ShardCell>,
    previous_state: std::cell::Cell<Option<ShardState>>,
    latency_gauge: metrics::Gauge,
    command_queue: metrics::Gauge,
    published: std::collections::HashMap<String, metrics::Counter>,
    acks: metrics::Counter,
    latency: metrics::Histogram,
    unconfirmed: metrics::Gauge,
    unconfirmed_bytes: metrics::Gauge,
    state: metrics::Gauge,
    reconnects: metrics::Counter,
}

impl ShardMetrics {
    /// The handles of `shard`, whose task starts at `now`.
    pub(crate) fn new(shard: u32, now: std::time::Instant) -> Self {
        let label = shard.to_string();
        Self {
            acks: counter!(PUBLISH_CONFIRMS, "result" => "ack"),
            latency: histogram!(PUBLISH_LATENCY),
            unconfirmed: gauge!(UNCONFIRMED, "shard" => label.clone()),
            unconfirmed_bytes: gauge!(UNCONFIRMED_BYTES, "shard" => label.clone()),
            state: gauge!(SHARD_STATE, "shard" => label.clone()),
            reconnects: counter!(SHARD_RECONNECTS, "shard" => label.clone()),
            latency_gauge: gauge!(GATEWAY_LATENCY, "shard" => label.clone()),
            command_queue: gauge!(COMMAND_QUEUE, "shard" => label.clone()),
            cell: status::global().shard(shard, now),
            previous_state: std::cell::Cell::new(None),
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
        crate::predecessor_metrics::dispatch(&self.shard, event);
        self.acks.increment(1);
        self.latency.record(latency.as_secs_f64());
        self.cell.published();
    }

    /// Takes the shard's current figures (latency, sequence, command queue): cheap, called
    /// after every burst of input.
    pub(crate) fn observe(&self, shard: &Shard) {
        let latency = shard.latency();
        self.cell.set_latency(latency);
        self.cell.set_sequence(shard.last_sequence());
        if let Some(latency) = latency {
            self.latency_gauge.set(latency.as_secs_f64());
            crate::predecessor_metrics::latency(&self.shard, latency);
        }
        self.command_queue.set(shard.queued_commands() as f64);
    }

    /// Counts what the core reports: reconnections by kind and reason.
    pub(crate) fn event(&self, event: &ShardEvent) {
        if let ShardEvent::Reconnecting { reason, resume, .. } = event {
            counter!(
                SHARD_RECONNECTIONS,
                "shard" => self.shard.clone(),
                "kind" => if *resume { "resume" } else { "identify" },
                "reason" => status::disconnect_label(reason)
            )
            .increment(1);
        }
    }

    pub(crate) fn unconfirmed(&self, count: usize, bytes: usize) {
        self.unconfirmed.set(count as f64);
        self.unconfirmed_bytes.set(bytes as f64);
    }

    /// The coarse state changed: the gauge, the status page, and one log line with the
    /// reason.
    pub(crate) fn state(
        &self,
        state: ShardState,
        last_disconnect: Option<&DisconnectReason>,
        wall_clock: SystemTime,
    ) {
        self.state.set(state_code(state));
        let previous = self.previous_state.replace(Some(state));
        let reason = status::change_reason(state, previous, last_disconnect);
        let name = proto_core::store::state_name(state);
        if let Ok(number) = self.shard.parse() {
            crate::predecessor_metrics::state(number, name);
        }
        crate::log_channel::shard_state(&self.shard, name, &reason.to_string());
        match state {
            ShardState::Disconnected { .. } if last_disconnect.is_some() => {
                tracing::warn!(state = name, %reason, "shard state")
            }
            ShardState::FatallyClosed => {
                tracing::error!(state = name, %reason, "shard state");
                crate::error_reports::report(&format!(
                    "shard {} closed for good: {reason}",
                    self.shard
                ));
            }
            _ => tracing::info!(state = name, %reason, "shard state"),
        }
        status::global().state_changed(&self.cell, name, reason, wall_clock);
    }

    pub(crate) fn reconnect(&self) {
        self.reconnects.increment(1);
    }
}

impl Drop for ShardMetrics {
    fn drop(&mut self) {
        status::global().state_changed(
            &self.cell,
            "stopped",
            "the shard's task ended".into(),
            SystemTime::now(),
        );
    }
}

pub(crate) fn record_command(result: &'static str) {
    counter!(COMMANDS, "result" => result).increment(1);
}

/// Records which AMQP address (index in the configured list) is connected, if any.
pub(crate) fn record_amqp_connected(address: Option<usize>, reconnect: bool) {
    gauge!(AMQP_CONNECTED).set(if address.is_some() { 1.0 } else { 0.0 });
    status::global().set_broker_connected(address);
    if reconnect {
        counter!(AMQP_RECONNECTS).increment(1);
    }
}

/// Records the outcome of one Redis write (for the failure count and the status page).
pub(crate) fn record_redis_write<E: std::fmt::Display>(result: Result<(), E>) {
    if result.is_err() {
        counter!(REDIS_WRITE_FAILURES).increment(1);
    }
    status::global().redis_write(result);
}

/// Installs the Prometheus recorder (once per process; later calls reuse it) and sets the
/// build info (`binary` names the executable). Returns the handle that renders the text.
pub fn install(binary: &str) -> std::io::Result<PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    let handle = match HANDLE.get() {
        Some(handle) => handle.clone(),
        None => {
            let handle = build_recorder()?;
            HANDLE.get_or_init(|| handle).clone()
        }
    };
    // Counters that may stay at zero for a long time are shown from the start.
    counter!(REDIS_WRITE_FAILURES).increment(0);
    counter!(AMQP_RECONNECTS).increment(0);
    gauge!(
        BUILD_INFO,
        "version" => env!("CARGO_PKG_VERSION"),
        "binary" => binary.to_owned()
    )
    .set(1.0);
    Ok(handle)
}

/// The bounds (seconds) of both publishing latency histograms.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// The hand-off latency histogram (one handle per publisher task).
pub(crate) fn handoff_histogram() -> metrics::Histogram {
    histogram!(PUBLISH_HANDOFF)
}

fn build_recorder() -> std::io::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(PUBLISH_LATENCY.to_owned()),
            LATENCY_BUCKETS,
        )
        .expect("the bucket list is not empty")
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(PUBLISH_HANDOFF.to_owned()),
            LATENCY_BUCKETS,
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
    describe_histogram!(
        PUBLISH_HANDOFF,
        "Seconds from dispatch arrival to its frames written to the broker connection"
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
    describe_gauge!(
        GATEWAY_LATENCY,
        "Latest heartbeat round trip per shard, in seconds"
    );
    describe_counter!(
        SHARD_RECONNECTIONS,
        "Reconnections per shard by kind (resume or identify) and reason"
    );
    describe_gauge!(
        COMMAND_QUEUE,
        "Worker commands waiting for the gateway rate limiter"
    );
    describe_counter!(REDIS_WRITE_FAILURES, "Redis writes that failed");
    describe_gauge!(
        BUILD_INFO,
        "Always 1, labelled with the version and the binary"
    );
}
