//! The Redis key layout and value encoding of Gatehouse's own state: session snapshots (so a
//! restarted process RESUMES) and shard status (for operators and dashboards).
//!
//! Owns: key names under a configurable prefix, and the bytes stored under them. Does not own:
//! talking to Redis (the runtime does, with plain `GET`/`SET`), deciding when to persist (the
//! shard emits `Action::PersistSession`), or the predecessors' key layouts that some profiles
//! may ask for.
//!
//! Layout (prefix `gatehouse` by default):
//! - `<prefix>:session:<shard>`: a [`SessionSnapshot`] as JSON.
//! - `<prefix>:status:<shard>`: a [`ShardStatus`] as JSON.

use crate::session::SessionSnapshot;
use crate::sharding::ShardId;

/// The key names of one deployment (one prefix).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyLayout {
    prefix: String,
}

impl KeyLayout {
    /// The layout under `prefix` (for example `gatehouse`).
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Where shard `shard`'s session snapshot lives.
    pub fn session(&self, shard: u32) -> String {
        format!("{}:session:{shard}", self.prefix)
    }

    /// Where shard `shard`'s status lives.
    pub fn status(&self, shard: u32) -> String {
        format!("{}:status:{shard}", self.prefix)
    }

    /// A pattern matching every key of this layout (for `SCAN`, for example to clean up).
    pub fn all_keys_pattern(&self) -> String {
        format!("{}:*", self.prefix)
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
    /// The coarse state, for example `active` or `disconnected`.
    pub state: String,
    /// Reconnects since the process started.
    pub reconnects: u64,
    /// The last sequence received, if any.
    pub sequence: Option<u64>,
    /// Wall-clock time of this status, in milliseconds since the Unix epoch (stamped by the
    /// runtime).
    pub updated_at_ms: u64,
}

/// The stored bytes of a shard status.
pub fn encode_status(status: &ShardStatus) -> Vec<u8> {
    serde_json::to_vec(status).expect("a shard status always serializes")
}

/// A stored shard status, if the bytes are one.
pub fn decode_status(bytes: &[u8]) -> Option<ShardStatus> {
    serde_json::from_slice(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        };
        assert_eq!(decode_status(&encode_status(&status)), Some(status));
        assert_eq!(decode_status(b"{}"), None);
    }
}
