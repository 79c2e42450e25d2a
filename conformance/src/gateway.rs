//! The mock Discord gateway as scenarios use it: the suite's default mock settings, starting one
//! mock per scenario run, and questions about what it recorded that several scenarios ask
//! (which shards have a session, the last sequence a client acknowledged, which clients are
//! still behind their sessions, readable violations).
//!
//! A thin layer over the `mock-gateway` crate, which owns the protocol behaviour, the recorder
//! and the controls.

use std::time::{Duration, Instant};

pub use mock_gateway::{
    CloseKind, ConnectionRecord, Control, IdentifyOutcome, MockConfig, MockGateway, Recorder,
    Recording, ResumeOutcome, ResumeRecord, SessionProgress, Violation, ViolationKind,
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

    /// `http://127.0.0.1:PORT/api/v<version>` (the mock serves versions 9 and 10).
    pub fn api_base_for(&self, version: u8) -> String {
        format!("http://{}/api/v{version}", self.mock.local_addr())
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

/// The sessions of `sessions` ([`Control::sessions`]) whose client has not acknowledged the
/// latest dispatch in a heartbeat yet, as `[shard, count] at <heartbeat seq> of <last seq>`:
/// those attached to a connection, and those waiting for a RESUME (detached while no other
/// session of their shard is live, and sessions of their shard count are: a shard being
/// handed over or taken over). While any is listed, a client still has to read what the mock
/// has for it. Sessions of a shard count no longer run (a re-shard's old set) or replaced by
/// a new session are not waited for.
pub fn sessions_behind(sessions: &[SessionProgress], rec: &Recording) -> Vec<String> {
    let live: Vec<[u32; 2]> = sessions
        .iter()
        .filter(|s| s.connection.is_some())
        .map(|s| s.shard)
        .collect();
    sessions
        .iter()
        .filter(|s| {
            s.connection.is_some()
                || (!live.contains(&s.shard) && live.iter().any(|l| l[1] == s.shard[1]))
        })
        .filter_map(|session| {
            let acknowledged = rec
                .connections
                .iter()
                .rev()
                .find(|c| c.session_id.as_deref() == Some(session.session_id.as_str()))
                .and_then(|c| c.heartbeats.last())
                .and_then(|h| h.seq);
            (acknowledged.unwrap_or(0) < session.last_seq).then(|| {
                format!(
                    "shard {:?} at {} of {}{}",
                    session.shard,
                    acknowledged.map_or("-".to_owned(), |a| a.to_string()),
                    session.last_seq,
                    if session.connection.is_some() {
                        ""
                    } else {
                        " (waiting for a RESUME)"
                    }
                )
            })
        })
        .collect()
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

/// How a connection ended, in words.
pub fn describe_close(kind: &CloseKind) -> String {
    match kind {
        CloseKind::ClientClose(Some(code)) => format!("the client closed with {code}"),
        CloseKind::ClientClose(None) => "the client closed without a code".into(),
        CloseKind::ServerClose(code) => format!("the mock closed with {code}"),
        CloseKind::ClientDropped => "the client dropped TCP".into(),
        CloseKind::ServerDropped => "the mock dropped TCP".into(),
        CloseKind::Shutdown => "the mock shut down".into(),
    }
}

/// A connection count from which reconnects are called a storm.
pub const STORM: usize = 5;

/// What the mock saw (since `since`, or from the start), to explain a verdict: the connections
/// opened (named a reconnect storm from [`STORM`] on) and how they ended, the IDENTIFYs and
/// RESUMEs with the mock's answers, the violations, and the last frames each way. Empty when
/// the mock saw nothing.
pub fn summary(rec: &Recording, since: Option<Instant>) -> String {
    let after = |t: Instant| since.is_none_or(|s| t > s);
    let mut parts = Vec::new();
    let opened: Vec<&ConnectionRecord> = rec
        .connections
        .iter()
        .filter(|c| after(c.opened_at))
        .collect();
    let when = if since.is_some() { " since then" } else { "" };
    if opened.len() >= STORM {
        let span = opened
            .last()
            .zip(opened.first())
            .map_or(Duration::ZERO, |(l, f)| l.opened_at - f.opened_at);
        parts.push(format!(
            "a reconnect storm: {} connections{when} within {:.1?}",
            opened.len(),
            span
        ));
    } else if !opened.is_empty() {
        parts.push(format!("{} connection(s){when}", opened.len()));
    } else if since.is_some() {
        parts.push("no new connection since then".into());
    }
    let closes = counted(
        rec.connections
            .iter()
            .filter_map(|c| c.close.as_ref())
            .filter(|c| after(c.at))
            .map(|c| describe_close(&c.kind)),
    );
    if !closes.is_empty() {
        parts.push(format!("closes: {}", closes.join(", ")));
    }
    let identifies = counted(rec.identifies.iter().filter(|i| after(i.at)).map(|i| {
        let shard = i.shard.map_or("?".into(), |s| s[0].to_string());
        match &i.outcome {
            IdentifyOutcome::Ready { .. } => format!("shard {shard} IDENTIFY -> READY"),
            IdentifyOutcome::InvalidSession => format!("shard {shard} IDENTIFY -> op 9"),
            IdentifyOutcome::Closed(code) => format!("shard {shard} IDENTIFY -> closed {code}"),
        }
    }));
    if !identifies.is_empty() {
        parts.push(identifies.join(", "));
    }
    let resumes = counted(rec.resumes.iter().filter(|r| after(r.at)).map(|r| {
        let url = if r.on_resume_url {
            "on the resume URL"
        } else {
            "on the cached URL"
        };
        match &r.outcome {
            ResumeOutcome::Resumed { .. } => format!("RESUME {url} -> RESUMED"),
            ResumeOutcome::InvalidSession => format!("RESUME {url} -> op 9"),
            ResumeOutcome::Closed(code) => format!("RESUME {url} -> closed {code}"),
        }
    }));
    if !resumes.is_empty() {
        parts.push(resumes.join(", "));
    }
    let violations = counted(rec.violations.iter().filter(|v| after(v.at)).map(describe));
    if !violations.is_empty() {
        parts.push(format!("violations: {}", violations.join("; ")));
    }
    if let Some(frames) = last_frames(rec, 3) {
        parts.push(frames);
    }
    parts.join("; ")
}

/// The last `n` frames the client sent and the last `n` the mock sent (over all connections),
/// shortened; IDENTIFY and RESUME by opcode only (they carry the token).
fn last_frames(rec: &Recording, n: usize) -> Option<String> {
    let mut received: Vec<_> = rec.connections.iter().flat_map(|c| &c.received).collect();
    received.sort_by_key(|f| f.at);
    let mut sent: Vec<_> = rec.connections.iter().flat_map(|c| &c.sent).collect();
    sent.sort_by_key(|f| f.at);
    if received.is_empty() && sent.is_empty() {
        return None;
    }
    let client: Vec<String> = received[received.len().saturating_sub(n)..]
        .iter()
        .map(|f| match f.op {
            Some(2) => "op 2 IDENTIFY".into(),
            Some(6) => "op 6 RESUME".into(),
            _ => shorten(&String::from_utf8_lossy(&f.json), 80),
        })
        .collect();
    let server: Vec<String> = sent[sent.len().saturating_sub(n)..]
        .iter()
        .map(|f| match (&f.event, f.seq) {
            (Some(event), Some(seq)) => format!("op {} {event} s={seq}", f.op),
            _ => shorten(&String::from_utf8_lossy(&f.json), 80),
        })
        .collect();
    Some(format!(
        "last frames from the client: [{}]; from the mock: [{}]",
        client.join(" | "),
        server.join(" | ")
    ))
}

/// `text` cut to `max` characters, with `...` when cut.
pub fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_owned(),
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
