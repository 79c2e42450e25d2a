//! The session snapshot: what a runtime persists so that a restarted process resumes.
//!
//! A plain serde value; the core produces it (`Action::PersistSession`) and accepts it back in
//! `ShardConfig::session`.

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
