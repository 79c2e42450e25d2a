//! The Redis key layout and value encoding of Gatehouse's own state: session snapshots (so a
//! restarted process RESUMES) and shard status (for operators and dashboards).
//!
//! Owns: key names under a configurable prefix, and the bytes stored under them, including the
//! predecessors' layouts that existing tooling reads ([`PredecessorKeys`]). Does not own:
//! talking to Redis (the runtime does, with plain `GET`/`SET`) or deciding when to persist (the
//! shard emits `Action::PersistSession`).
//!
//! Layout (prefix `gatehouse` by default):
//! - `<prefix>:session:<shard>`: a [`SessionSnapshot`] as JSON.
//! - `<prefix>:status:<shard>`: a [`ShardStatus`] as JSON.
//!
//! Besides, for the profiles whose predecessors kept sessions in Redis (written, not read back:
//! Gatehouse resumes from its own keys):
//! - Spectacles (`spec-tacles/gateway` `shard_store.go`): `<prefix><shard>session` (the session
//!   id) and `<prefix><shard>seq` (the sequence, decimal).
//! - twilight-dispatch (`src/cache.rs`): `<prefix>gateway_sessions`
//!   (`{"<shard>":{"session_id":..,"sequence":..}}`), `<prefix>gateway_statuses`
//!   (`[{"shard":..,"status":..,"latency":..,"last_ack":..}]`), `<prefix>gateway_shards` (the
//!   shard count) and `<prefix>gateway_started` (start time as a JSON string, `%FT%T.%N` in
//!   UTC). The prefix is empty by default with that profile, so the keys are the original's bare
//!   names; the statuses carry the heartbeat latency, the last ACK and twilight's stage names.

use std::collections::BTreeMap;

use crate::profile::ProfileKind;

use crate::session::SessionSnapshot;
use crate::shard::ShardState;
use crate::sharding::ShardId;

/// The key names of one deployment (one prefix).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyLayout {
    prefix: String,
}

/// The namespace of Gatehouse's own keys when the configured prefix is empty (the
/// twilight-dispatch profile's default, whose predecessor keys are bare: `gateway_sessions`).
pub const EMPTY_PREFIX_NAMESPACE: &str = "gatehouse";

impl KeyLayout {
    /// The layout under `prefix` (for example `gatehouse`). An empty prefix keeps Gatehouse's
    /// own keys under [`EMPTY_PREFIX_NAMESPACE`] (`gatehouse:session:0`), never at the top
    /// level of the database; the predecessors' keys use the prefix as it is.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// The prefix as configured (possibly empty).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn namespace(&self) -> &str {
        if self.prefix.is_empty() {
            EMPTY_PREFIX_NAMESPACE
        } else {
            &self.prefix
        }
    }

    /// Where shard `shard`'s session snapshot lives.
    pub fn session(&self, shard: u32) -> String {
        format!("{}:session:{shard}", self.namespace())
    }

    /// Where shard `shard`'s status lives.
    pub fn status(&self, shard: u32) -> String {
        format!("{}:status:{shard}", self.namespace())
    }

    /// A pattern matching every shard's status key (for `SCAN`, for a cluster-wide view).
    pub fn status_pattern(&self) -> String {
        format!("{}:status:*", self.namespace())
    }

    /// A pattern matching every key of this layout (for `SCAN`, for example to clean up).
    pub fn all_keys_pattern(&self) -> String {
        format!("{}:*", self.namespace())
    }
}

/// The stored bytes of a session snapshot.
pub fn encode_session(snapshot: &SessionSnapshot) -> Vec<u8> {
    serde_json::to_vec(snapshot).expect("a session snapshot always serializes")
}

/// A stored session snapshot, if it is one and belongs to `shard` (same number and shard count:
/// a session of another shard count must not be resumed). Anything else is `None`, so a corrupt
/// or foreign value leads to a fresh IDENTIFY, never to a crash.
pub fn decode_session(bytes: &[u8], shard: ShardId) -> Option<SessionSnapshot> {
    let snapshot: SessionSnapshot = serde_json::from_slice(bytes).ok()?;
    (snapshot.shard == shard && !snapshot.session_id.is_empty()).then_some(snapshot)
}

/// What operators see about one shard.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShardStatus {
    /// The shard number.
    pub shard: u32,
    /// The total shard count.
    pub shard_count: u32,
    /// The coarse state: a [`state_name`] or [`STATE_STOPPED`].
    pub state: String,
    /// Reconnects since the process started.
    pub reconnects: u64,
    /// The last sequence received, if any.
    pub sequence: Option<u64>,
    /// Wall-clock time of this status, in milliseconds since the Unix epoch (stamped by the
    /// runtime).
    pub updated_at_ms: u64,
    /// The round trip of the latest acknowledged heartbeat, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// Wall-clock time of the latest heartbeat ACK, in milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_ack_ms: Option<u64>,
}

/// The `state` of a [`ShardStatus`] (and of logs) for a shard in `state`: lowercase names.
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

/// The `state` of a [`ShardStatus`] for a shard stopped by a shutdown.
pub const STATE_STOPPED: &str = "stopped";

/// The stored bytes of a shard status.
pub fn encode_status(status: &ShardStatus) -> Vec<u8> {
    serde_json::to_vec(status).expect("a shard status always serializes")
}

/// A stored shard status, if the bytes are one.
pub fn decode_status(bytes: &[u8]) -> Option<ShardStatus> {
    serde_json::from_slice(bytes).ok()
}

/// One `SET`: a key and its value.
pub type KeyValue = (String, Vec<u8>);

/// The predecessors' Redis keys a profile keeps up to date. Holds the aggregate values
/// (twilight-dispatch keeps all shards in one key), so one owner per process should drive it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PredecessorKeys {
    style: Style,
    prefix: String,
    sessions: BTreeMap<u32, (String, u64)>,
    statuses: BTreeMap<u32, ShardStatus>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Style {
    None,
    Spectacles,
    TwilightDispatch,
}

impl PredecessorKeys {
    /// The keys of `profile`'s predecessor, under `prefix` (used as is, like the predecessors do).
    pub fn new(profile: ProfileKind, prefix: impl Into<String>) -> Self {
        let style = match profile {
            ProfileKind::Spectacles => Style::Spectacles,
            ProfileKind::TwilightDispatch => Style::TwilightDispatch,
            ProfileKind::Gatehouse | ProfileKind::Cordis | ProfileKind::Retsu => Style::None,
        };
        Self {
            style,
            prefix: prefix.into(),
            sessions: BTreeMap::new(),
            statuses: BTreeMap::new(),
        }
    }

    /// What to write when the process starts (`started_at_ms`: the wall clock).
    pub fn on_start(&self, shard_count: u32, started_at_ms: u64) -> Vec<KeyValue> {
        match self.style {
            Style::TwilightDispatch => vec![
                (
                    format!("{}gateway_shards", self.prefix),
                    shard_count.to_string().into_bytes(),
                ),
                (
                    format!("{}gateway_started", self.prefix),
                    // A JSON string, as the original's `cache::set` stores it.
                    format!("\"{}\"", twilight_timestamp(started_at_ms)).into_bytes(),
                ),
            ],
            Style::None | Style::Spectacles => Vec::new(),
        }
    }

    /// What to write for a new session snapshot.
    pub fn on_session(&mut self, snapshot: &SessionSnapshot) -> Vec<KeyValue> {
        let shard = snapshot.shard.number();
        match self.style {
            Style::None => Vec::new(),
            Style::Spectacles => vec![
                (
                    format!("{}{shard}session", self.prefix),
                    snapshot.session_id.clone().into_bytes(),
                ),
                (
                    format!("{}{shard}seq", self.prefix),
                    snapshot.sequence.to_string().into_bytes(),
                ),
            ],
            Style::TwilightDispatch => {
                self.sessions
                    .insert(shard, (snapshot.session_id.clone(), snapshot.sequence));
                let map: serde_json::Map<String, serde_json::Value> = self
                    .sessions
                    .iter()
                    .map(|(shard, (id, seq))| {
                        (
                            shard.to_string(),
                            serde_json::json!({ "session_id": id, "sequence": seq }),
                        )
                    })
                    .collect();
                vec![(
                    format!("{}gateway_sessions", self.prefix),
                    serde_json::to_vec(&map).expect("a JSON map always serializes"),
                )]
            }
        }
    }

    /// What to write for a new shard status.
    pub fn on_status(&mut self, status: &ShardStatus) -> Vec<KeyValue> {
        match self.style {
            Style::None | Style::Spectacles => Vec::new(),
            Style::TwilightDispatch => {
                self.statuses.insert(status.shard, status.clone());
                let list: Vec<serde_json::Value> = self
                    .statuses
                    .values()
                    .map(|s| {
                        serde_json::json!({
                            "shard": s.shard,
                            "status": twilight_stage(&s.state),
                            "latency": s.latency_ms.unwrap_or(0),
                            // The original stamps "now" when no ACK arrived yet.
                            "last_ack": twilight_timestamp(s.last_ack_ms.unwrap_or(s.updated_at_ms)),
                        })
                    })
                    .collect();
                vec![(
                    format!("{}gateway_statuses", self.prefix),
                    serde_json::to_vec(&list).expect("a JSON list always serializes"),
                )]
            }
        }
    }
}

/// twilight-dispatch's name of a state (twilight-gateway's `Stage`, as its `Display` shows it).
pub fn twilight_stage(state: &str) -> &'static str {
    match state {
        "active" => "Connected",
        "connecting" => "Handshaking",
        "identifying" => "Identifying",
        "resuming" => "Resuming",
        _ => "Disconnected",
    }
}

/// A wall-clock time as twilight-dispatch writes it: UTC with `%FT%T.%N` (nanoseconds, no
/// offset), for example `2024-01-02T03:04:05.678000000`.
pub fn twilight_timestamp(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let nanos = (unix_ms % 1000) * 1_000_000;
    let (days, secs_of_day) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{nanos:09}",
        secs_of_day / 3600,
        secs_of_day / 60 % 60,
        secs_of_day % 60
    )
}

/// The proleptic Gregorian date of a count of days since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twilight_timestamps() {
        assert_eq!(twilight_timestamp(0), "1970-01-01T00:00:00.000000000");
        assert_eq!(
            twilight_timestamp(1_700_000_000_123),
            "2023-11-14T22:13:20.123000000"
        );
        assert_eq!(
            twilight_timestamp(951_825_600_000),
            "2000-02-29T12:00:00.000000000"
        );
    }

    fn snapshot(number: u32, total: u32) -> SessionSnapshot {
        SessionSnapshot {
            shard: ShardId::new(number, total).unwrap(),
            session_id: "abc".into(),
            sequence: 42,
            resume_url: "wss://gateway-us-east1-d.discord.gg".into(),
        }
    }

    #[test]
    fn keys_live_under_the_prefix() {
        let keys = KeyLayout::new("gh-test-1");
        assert_eq!(keys.session(3), "gh-test-1:session:3");
        assert_eq!(keys.status(0), "gh-test-1:status:0");
        assert_eq!(keys.all_keys_pattern(), "gh-test-1:*");
        let bare = KeyLayout::new("");
        assert_eq!(bare.session(0), "gatehouse:session:0");
        assert_eq!(bare.all_keys_pattern(), "gatehouse:*");
    }

    #[test]
    fn session_round_trips_for_the_same_shard_only() {
        let s = snapshot(1, 4);
        let bytes = encode_session(&s);
        assert_eq!(decode_session(&bytes, s.shard), Some(s.clone()));
        assert_eq!(decode_session(&bytes, ShardId::new(1, 8).unwrap()), None);
        assert_eq!(decode_session(&bytes, ShardId::new(2, 4).unwrap()), None);
        assert_eq!(decode_session(b"not json", s.shard), None);
        assert_eq!(decode_session(b"", s.shard), None);
    }

    #[test]
    fn status_round_trips() {
        let status = ShardStatus {
            shard: 2,
            shard_count: 4,
            state: "active".into(),
            reconnects: 1,
            sequence: Some(7),
            updated_at_ms: 1_700_000_000_000,
            latency_ms: None,
            last_ack_ms: None,
        };
        assert_eq!(decode_status(&encode_status(&status)), Some(status));
        assert_eq!(decode_status(b"{}"), None);
    }

    fn text(writes: &[KeyValue]) -> Vec<(String, String)> {
        writes
            .iter()
            .map(|(k, v)| (k.clone(), String::from_utf8(v.clone()).unwrap()))
            .collect()
    }

    #[test]
    fn spectacles_keeps_session_and_seq_per_shard() {
        let mut keys = PredecessorKeys::new(ProfileKind::Spectacles, "gateway");
        assert!(keys.on_start(4, 1).is_empty());
        let writes = keys.on_session(&snapshot(1, 4));
        assert_eq!(
            text(&writes),
            vec![
                ("gateway1session".to_owned(), "abc".to_owned()),
                ("gateway1seq".to_owned(), "42".to_owned()),
            ]
        );
    }

    #[test]
    fn twilight_dispatch_keeps_one_map_of_every_shard() {
        let mut keys = PredecessorKeys::new(ProfileKind::TwilightDispatch, "p:");
        assert_eq!(
            text(&keys.on_start(4, 1_700_000_000_000)),
            vec![
                ("p:gateway_shards".to_owned(), "4".to_owned()),
                (
                    "p:gateway_started".to_owned(),
                    "\"2023-11-14T22:13:20.000000000\"".to_owned()
                ),
            ]
        );
        keys.on_session(&snapshot(0, 4));
        let mut second = snapshot(2, 4);
        second.sequence = 7;
        let writes = keys.on_session(&second);
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].0, "p:gateway_sessions");
        let map: serde_json::Value = serde_json::from_slice(&writes[0].1).unwrap();
        assert_eq!(map["0"]["session_id"], "abc");
        assert_eq!(map["0"]["sequence"], 42);
        assert_eq!(map["2"]["sequence"], 7);

        let status = ShardStatus {
            shard: 2,
            shard_count: 4,
            state: "active".into(),
            reconnects: 0,
            sequence: Some(7),
            updated_at_ms: 5,
            latency_ms: Some(42),
            last_ack_ms: Some(1_700_000_000_000),
        };
        let writes = keys.on_status(&status);
        let list: serde_json::Value = serde_json::from_slice(&writes[0].1).unwrap();
        assert_eq!(writes[0].0, "p:gateway_statuses");
        assert_eq!(list[0]["shard"], 2);
        assert_eq!(list[0]["status"], "Connected");
        assert_eq!(list[0]["latency"], 42);
        assert_eq!(list[0]["last_ack"], "2023-11-14T22:13:20.000000000");
    }

    #[test]
    fn other_profiles_write_nothing_extra() {
        for kind in [
            ProfileKind::Gatehouse,
            ProfileKind::Cordis,
            ProfileKind::Retsu,
        ] {
            let mut keys = PredecessorKeys::new(kind, "x");
            assert!(keys.on_start(1, 1).is_empty());
            assert!(keys.on_session(&snapshot(0, 1)).is_empty());
        }
    }
}
