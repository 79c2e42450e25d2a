//! The scenarios, one per file, and the steps several of them share (start and wait for READY,
//! wait until the client has caught up, find the command frames that reached the mock).

pub mod bad_commands;
pub mod close_codes;
pub mod commands;
pub mod fault;
pub mod fault_broker;
pub mod fault_commands;
pub mod fault_gateway;
pub mod fault_process;
pub mod fault_redis;
pub mod handshake;
pub mod heartbeat_request;
pub mod identify_concurrency;
pub mod invalid_session;
pub mod passthrough;
pub mod rate_limit;
pub mod reaction;
pub mod reconnect;
pub mod redis_session;
pub mod topology;
pub mod zombie;

use std::time::{Duration, Instant};

use crate::contract::STARTUP_BUDGET;
use crate::gateway::{self, ConnectionRecord, Recording};
use crate::scenario::{Context, Failure};

/// How long after READY a resume, re-identify or reconnect may take (backoff included).
pub const RECONNECT_BUDGET: Duration = Duration::from_secs(20);

/// How long a command may take from the worker's publish to the mock.
pub const COMMAND_BUDGET: Duration = Duration::from_secs(15);

/// Starts the implementation and waits until every shard it runs has a live session. Returns the
/// session id per shard, in `shard_ids` order.
pub async fn start_and_wait_ready(ctx: &mut Context) -> Result<Vec<(u32, String)>, Failure> {
    ctx.start_implementation()?;
    let shards = ctx.setup.shard_ids.clone();
    let rounds = identify_rounds(ctx);
    let timeout = STARTUP_BUDGET + ctx.gateway.config().identify_window * rounds;
    let recorder = ctx.gateway.recorder();
    let result = ctx
        .wait_for(
            &format!("READY for every shard ({shards:?})"),
            timeout,
            |_| recorder.read(|r| gateway::live_sessions(r, &shards)),
        )
        .await;
    match result {
        Ok(sessions) => Ok(sessions),
        Err(f) => {
            let f = f.with_detail(&startup_hint(&recorder.snapshot()));
            Err(f.explained(|| ctx.explanation(None)))
        }
    }
}

/// How many identify rounds the shards need (`ceil(shards / max_concurrency)`).
fn identify_rounds(ctx: &Context) -> u32 {
    let per_round = ctx.gateway.config().max_concurrency.max(1);
    (ctx.setup.shard_ids.len() as u32).div_ceil(per_round)
}

/// What the mock saw, to explain a missing READY.
fn startup_hint(rec: &Recording) -> String {
    let mut hints = Vec::new();
    if rec.http.is_empty() {
        hints.push("the implementation never requested /gateway/bot".to_owned());
    } else if !rec.http.iter().any(|h| h.status == 200) {
        let statuses: Vec<String> = rec
            .http
            .iter()
            .map(|h| format!("{} -> {}", h.path, h.status))
            .collect();
        hints.push(format!("no successful REST call ({})", statuses.join(", ")));
    }
    if rec.connections.is_empty() {
        hints.push("it never opened a gateway connection".into());
    } else if rec.identifies.is_empty() && rec.resumes.is_empty() {
        hints.push(format!(
            "{} connection(s), no IDENTIFY",
            rec.connections.len()
        ));
    }
    hints.extend(gateway::counted(
        rec.violations.iter().map(gateway::describe),
    ));
    hints.extend(gateway::counted(rec.connections.iter().filter_map(|c| {
        c.close
            .as_ref()
            .map(|close| format!("a connection ended by {:?}", close.kind))
    })));
    if hints.is_empty() {
        String::new()
    } else {
        format!(" ({})", hints.join("; "))
    }
}

/// Waits until the client's latest heartbeat on `shard` carries the last sequence the mock sent
/// it: the client has processed everything so far. Replay is sent at once after READY, so this
/// is the moment to steer the connection and expect an exact resume `seq`.
pub async fn wait_caught_up(ctx: &mut Context, shard: u32) -> Result<u64, Failure> {
    let recorder = ctx.gateway.recorder();
    let interval = ctx.gateway.config().heartbeat_interval;
    let expected = ctx.gateway.config().fixture.len() as u64 + 1;
    ctx.wait_for(
        &format!("heartbeat from shard {shard} carrying its last sequence"),
        interval * 4 + Duration::from_secs(10),
        |_| {
            recorder.read(|r| {
                let last = gateway::last_sent_seq(r, shard);
                (last >= expected && gateway::last_heartbeat_seq(r, shard) == Some(last))
                    .then_some(last)
            })
        },
    )
    .await
}

/// The frames the client sent on any connection of `shard` whose JSON text contains `marker`.
pub fn frames_with_marker<'a>(
    rec: &'a Recording,
    shard: u32,
    marker: &'a str,
) -> impl Iterator<Item = &'a mock_gateway::ReceivedFrame> + 'a {
    rec.shard_connections(shard)
        .flat_map(|c| c.received.iter())
        .filter(move |f| contains(&f.json, marker))
}

/// Whether `haystack` contains `needle` as bytes.
pub fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len().max(1))
        .any(|w| w == needle.as_bytes())
}

/// Connections opened after `after` (by id order) for anything: used to see reconnects.
pub fn connections_after(rec: &Recording, after: u64) -> Vec<&ConnectionRecord> {
    rec.connections.iter().filter(|c| c.id.0 > after).collect()
}

/// The id of the open connection of `shard`.
pub fn live_connection_id(rec: &Recording, shard: u32) -> Option<u64> {
    rec.live_connection(shard).map(|c| c.id.0)
}

/// Milliseconds of `d` for messages.
pub fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

/// The time since `t`, for messages.
pub fn since(t: Instant) -> Duration {
    t.elapsed()
}
