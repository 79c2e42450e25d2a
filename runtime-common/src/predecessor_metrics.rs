//! The predecessors' metric names, served besides Gatehouse's own when their profile is chosen,
//! so that existing dashboards keep working. Today: twilight-dispatch's (`src/metrics.rs`):
//!
//! - `gateway_events{type,shard}`: dispatches, by event name and shard (counted when published);
//! - `gateway_shard_events{type}`: shard state changes, by twilight's stage name;
//! - `gateway_shards`: the shards this process runs;
//! - `gateway_statuses{type}`: how many shards are in each stage (`Connected`, `Disconnected`,
//!   `Handshaking`, `Identifying`, `Resuming`);
//! - `gateway_latencies{shard}`: the latest heartbeat round trip, in milliseconds.
//!
//! Not produced: `gateway_guild_events` and the `state_*` gauges, which need the original's
//! guild cache (Gatehouse keeps none).
//!
//! Owns: those names and their bookkeeping. Does not own: when things happen (`metrics`
//! forwards to it).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use metrics::{counter, gauge};
use proto_core::profile::ProfileKind;
use proto_core::store::twilight_stage;

/// twilight-dispatch: dispatches by event name and shard.
pub const TWILIGHT_EVENTS: &str = "gateway_events";
/// twilight-dispatch: shard state changes by stage.
pub const TWILIGHT_SHARD_EVENTS: &str = "gateway_shard_events";
/// twilight-dispatch: the shards of this process.
pub const TWILIGHT_SHARDS: &str = "gateway_shards";
/// twilight-dispatch: shards per stage.
pub const TWILIGHT_STATUSES: &str = "gateway_statuses";
/// twilight-dispatch: heartbeat round trip per shard, in milliseconds.
pub const TWILIGHT_LATENCIES: &str = "gateway_latencies";

const STAGES: [&str; 5] = [
    "Connected",
    "Disconnected",
    "Handshaking",
    "Identifying",
    "Resuming",
];

static TWILIGHT: AtomicBool = AtomicBool::new(false);
static STAGE_OF_SHARD: Mutex<Option<HashMap<u32, &'static str>>> = Mutex::new(None);

/// Turns the names of `profile`'s predecessor on (once, at start-up), for `shards` shards.
pub fn enable(profile: ProfileKind, shards: usize) {
    if profile != ProfileKind::TwilightDispatch {
        return;
    }
    TWILIGHT.store(true, Ordering::Relaxed);
    gauge!(TWILIGHT_SHARDS).set(shards as f64);
    for stage in STAGES {
        gauge!(TWILIGHT_STATUSES, "type" => stage).set(0.0);
    }
}

fn on() -> bool {
    TWILIGHT.load(Ordering::Relaxed)
}

/// A dispatch of `event` on `shard` was published.
pub(crate) fn dispatch(shard: &str, event: &str) {
    if on() {
        counter!(TWILIGHT_EVENTS, "type" => event.to_owned(), "shard" => shard.to_owned())
            .increment(1);
    }
}

/// The latest heartbeat round trip of `shard`.
pub(crate) fn latency(shard: &str, latency: std::time::Duration) {
    if on() {
        gauge!(TWILIGHT_LATENCIES, "shard" => shard.to_owned()).set(latency.as_millis() as f64);
    }
}

/// `shard` entered the state named `state` (Gatehouse's name).
pub(crate) fn state(shard: u32, state: &str) {
    if !on() {
        return;
    }
    let stage = twilight_stage(state);
    counter!(TWILIGHT_SHARD_EVENTS, "type" => stage).increment(1);
    let mut stages = STAGE_OF_SHARD.lock().unwrap_or_else(|e| e.into_inner());
    let stages = stages.get_or_insert_with(HashMap::new);
    stages.insert(shard, stage);
    for name in STAGES {
        let count = stages.values().filter(|s| **s == name).count();
        gauge!(TWILIGHT_STATUSES, "type" => name).set(count as f64);
    }
}
