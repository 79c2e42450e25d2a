//! The mock Discord gateway as scenarios use it: the suite's default mock settings, starting one
//! mock per scenario run, and questions about what it recorded that several scenarios ask
//! (which shards have a session, the last sequence a client acknowledged, readable violations).
//!
//! A thin layer over the `mock-gateway` crate, which owns the protocol behaviour, the recorder
//! and the controls.

use std::time::Duration;

pub use mock_gateway::{
    CloseKind, ConnectionRecord, Control, IdentifyOutcome, MockConfig, MockGateway, Recorder,
    Recording, ResumeOutcome, ResumeRecord, Violation, ViolationKind,
};

/// The heartbeat interval scenarios use unless they need another (short, to keep runs fast; long
/// enough for a loaded machine to keep up).
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_millis(2000);

/// How late a heartbeat may be after `interval` before it counts as a violation: a quarter of
/// the interval plus half a second (scheduling slack on a loaded machine).
pub fn late_slack(interval: Duration) -> Duration {
    interval / 4 + Duration::from_millis(500)
}

/// Discord's identify window: one IDENTIFY per bucket per 5 s.
pub const IDENTIFY_WINDOW: Duration = Duration::from_secs(5);

/// How much shorter than [`IDENTIFY_WINDOW`] a gap between two identifies of one bucket may look
/// to the mock: it measures arrival times, and a client that waits exactly 5 s from its own send
/// times can see its identifies arrive a little closer together on a loaded machine.
pub const IDENTIFY_TOLERANCE: Duration = Duration::from_millis(250);

/// The mock settings every scenario starts from.
pub fn suite_defaults() -> MockConfig {
    let mut config = MockConfig::default();
    config.heartbeat_interval = DEFAULT_HEARTBEAT;
    config.identify_window = IDENTIFY_WINDOW - IDENTIFY_TOLERANCE;
    config.poll_interval = Duration::from_millis(10);
    config
}

/// A running mock gateway, shut down on drop.
pub struct Gateway {
    mock: MockGateway,
}

impl Gateway {
    /// Starts a mock on a free loopback port.
    pub fn start(config: MockConfig) -> std::io::Result<Self> {
        Ok(Self {
            mock: MockGateway::start(config)?,
        })
    }

    /// `http://127.0.0.1:PORT/api/v10`.
    pub fn api_base(&self) -> String {
        self.mock.api_base()
    }

    /// The `resume_gateway_url` READY announces.
    pub fn resume_url(&self) -> String {
        self.mock.resume_url()
    }

    /// What the mock recorded.
    pub fn recorder(&self) -> Recorder {
        self.mock.recorder()
    }

    /// Runs `f` on the current records.
    pub fn read<T>(&self, f: impl FnOnce(&Recording) -> T) -> T {
        self.mock.recorder().read(f)
    }

    /// Steering (op 7, op 9, closes, dropped ACKs, injected dispatches).
    pub fn control(&self) -> Control {
        self.mock.control()
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &MockConfig {
        self.mock.config()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.mock.shutdown();
    }
}

/// The session of every shard in `shards` that has an open connection with a session, or
/// `None` while one is missing.
pub fn live_sessions(rec: &Recording, shards: &[u32]) -> Option<Vec<(u32, String)>> {
    shards
        .iter()
        .map(|&s| {
            let conn = rec.live_connection(s)?;
            Some((s, conn.session_id.clone()?))
        })
        .collect()
}

/// The highest sequence number sent to `shard` so far (0 when none).
pub fn last_sent_seq(rec: &Recording, shard: u32) -> u64 {
    rec.shard_connections(shard)
        .flat_map(|c| c.sent.iter())
        .filter_map(|f| f.seq)
        .max()
        .unwrap_or(0)
}

/// The sequence in the client's latest heartbeat on the open connection of `shard`.
pub fn last_heartbeat_seq(rec: &Recording, shard: u32) -> Option<u64> {
    rec.live_connection(shard)?.heartbeats.last()?.seq
}

/// A readable description of a violation.
pub fn describe(v: &Violation) -> String {
    let shard = v.shard.map_or(String::new(), |s| format!("shard {s}, "));
    let what = match &v.kind {
        ViolationKind::WrongToken => "IDENTIFY/RESUME with a token other than DISCORD_TOKEN".into(),
        ViolationKind::BadShard { sent } => format!("IDENTIFY with a bad `shard` field: {sent}"),
        ViolationKind::InvalidIntents { sent } => format!("IDENTIFY with invalid intents {sent:?}"),
        ViolationKind::WrongIntents { sent, expected } => {
            format!("IDENTIFY with intents {sent:?}, DISCORD_INTENTS is {expected}")
        }
        ViolationKind::IdentifyBucket {
            bucket,
            since_previous,
        } => format!(
            "IDENTIFY in bucket {bucket} only {since_previous:.2?} after the previous one (one per 5 s per bucket)"
        ),
        ViolationKind::SessionStartLimitExhausted => {
            "IDENTIFY with no session starts remaining".into()
        }
        ViolationKind::AlreadyAuthenticated => "a second IDENTIFY on one connection".into(),
        ViolationKind::CommandBeforeIdentify { op } => {
            format!("op {op} sent before IDENTIFY/RESUME")
        }
        ViolationKind::HeartbeatLate { gap, allowed } => {
            format!("heartbeat {gap:.2?} after the previous one (at most {allowed:.2?} allowed)")
        }
        ViolationKind::HeartbeatTimeout => "no heartbeat within the interval plus grace".into(),
        ViolationKind::RateLimited { frames } => {
            format!("{frames} frames within 60 s (at most 120 allowed)")
        }
        ViolationKind::ResumeUnknownSession { session_id } => {
            format!("RESUME of unknown session {session_id:?}")
        }
        ViolationKind::ResumeInvalidatedSession { session_id } => {
            format!("RESUME of invalidated session {session_id:?}")
        }
        ViolationKind::ResumeBadSeq { seq, last } => {
            format!("RESUME with seq {seq:?}, the session's last is {last}")
        }
        ViolationKind::ResumeWrongUrl { path } => {
            format!("RESUME on {path:?} instead of READY's resume_gateway_url")
        }
        ViolationKind::PayloadTooLarge { bytes } => {
            format!("a {bytes}-byte payload (at most 4096 allowed)")
        }
        ViolationKind::Malformed { detail } => format!("a malformed payload: {detail}"),
        ViolationKind::UnknownOpcode { op } => format!("an opcode a client may not send: {op:?}"),
        ViolationKind::BadQuery { detail } => format!("a bad connection URL: {detail}"),
        other => format!("{other:?}"),
    };
    format!("{shard}{what}")
}

/// Fails with every violation recorded so far, if any.
pub fn no_violations(rec: &Recording) -> Result<(), String> {
    if rec.violations.is_empty() {
        return Ok(());
    }
    Err(format!(
        "protocol violation(s): {}",
        counted(rec.violations.iter().map(describe)).join("; ")
    ))
}

/// The mock's name for an encoding the suite asked for.
pub fn mock_encoding(e: crate::contract::Encoding) -> mock_gateway::Encoding {
    match e {
        crate::contract::Encoding::Json => mock_gateway::Encoding::Json,
        crate::contract::Encoding::Etf => mock_gateway::Encoding::Etf,
    }
}

/// The mock's name for a compression the suite asked for.
pub fn mock_compression(c: crate::contract::Compression) -> mock_gateway::Compression {
    match c {
        crate::contract::Compression::None => mock_gateway::Compression::None,
        crate::contract::Compression::ZlibStream => mock_gateway::Compression::ZlibStream,
        crate::contract::Compression::ZstdStream => mock_gateway::Compression::ZstdStream,
    }
}

/// Identical messages merged, with a count: `["a", "b", "a"]` -> `["a (x2)", "b"]`.
pub fn counted(messages: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut merged: Vec<(String, usize)> = Vec::new();
    for m in messages {
        match merged.iter_mut().find(|(k, _)| *k == m) {
            Some((_, n)) => *n += 1,
            None => merged.push((m, 1)),
        }
    }
    merged
        .into_iter()
        .map(|(m, n)| if n > 1 { format!("{m} (x{n})") } else { m })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn counted_merges_repeats_in_first_seen_order() {
        let merged = super::counted(["a", "b", "a", "a"].map(String::from));
        assert_eq!(merged, ["a (x3)", "b"]);
    }
}
