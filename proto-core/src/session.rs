//! The session snapshot: what a runtime persists so that a restarted process resumes.
//!
//! A plain serde value; the core produces it (`Action::PersistSession`) and accepts it back in
//! `ShardConfig::session`. Owns only the value; the shard decides when to emit it (on READY,
//! throttled when the confirmed sequence advances, and at shutdown) and the runtime decides
//! where it lives (Redis).
//!
//! `sequence` is the *confirmed* sequence, not the last one received: a process restarted from
//! the snapshot RESUMEs from what the broker holds and Discord replays the rest, so no event is
//! lost (at-least-once; message ids `<session_id>:<seq>` let workers drop duplicates).

use crate::sharding::ShardId;

/// Everything needed to RESUME a gateway session.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionSnapshot {
    /// The shard this session belongs to.
    pub shard: ShardId,
    /// READY's `session_id`.
    pub session_id: String,
    /// The highest sequence whose dispatch (and every one before it) the broker confirmed.
    pub sequence: u64,
    /// READY's `resume_gateway_url`.
    pub resume_url: String,
}

impl SessionSnapshot {
    /// Whether this snapshot can resume `shard` (same number and same total shard count; a
    /// session of another shard count cannot be resumed).
    pub fn is_for(&self, shard: ShardId) -> bool {
        self.shard == shard
    }
}
