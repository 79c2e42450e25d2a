//! Cluster mode: the rules by which many Gatehouse processes share one bot through Redis.
//!
//! Owns the decisions, not the storage: Redis only keeps keys with an expiry (`SET NX PX` and
//! small Lua scripts, see [`scripts`]); every choice of what to ask Redis and what an answer
//! means is made here, with time and entropy passed in.
//!
//! - [`identify`]: the cross-process identify rule ([`SharedIdentify`]): one IDENTIFY per
//!   `max_concurrency` bucket per 5 s and the daily `session_start_limit.remaining`, both kept
//!   in Redis under the bot's id, with the local scheduler as the fallback while Redis is away.
//! - [`lease`]: one shard's lease ([`ShardLease`]): acquire, renew well within the expiry, and
//!   stop running the shard before the lease can expire for others.
//! - [`placement`]: which shards a process should run ([`fair_share`]) and the node that
//!   combines placement and leases ([`ClusterNode`]): take a fair share, take over a dead
//!   member's shards, hand shards over on shutdown.
//! - [`reshard`]: moving the cluster to another shard count without a gap ([`Reshard`]):
//!   warm the new set beside the old one, switch once it is ready, then close the old one.
//! - [`ClusterKeys`]: the key names.
//!
//! Keys (prefix `gatehouse` by default, `<bot>` the bot's user id, `<name>` the cluster name):
//! - `<prefix>:bot:<bot>:identify:remaining`: session starts left today (expires at Discord's
//!   reset).
//! - `<prefix>:bot:<bot>:identify:bucket:<max_concurrency>:<bucket>`: present for 5.25 s after
//!   an IDENTIFY of that bucket, by any process.
//! - `<prefix>:cluster:<name>:member:<member>`: a live process (expires unless refreshed).
//! - `<prefix>:cluster:<name>:lease:<shard_count>:<shard>`: the member running that shard
//!   (expires unless renewed).
//! - `<prefix>:cluster:<name>:shards`: a hash, `current` the shard count that publishes and,
//!   while a re-shard is under way, `target` the count being brought up beside it (no
//!   expiry; written only by the scripts in [`scripts`]).
//! - `<prefix>:cluster:<name>:ready:<shard_count>:<shard>`: a shard of the target set is READY
//!   and every guild READY listed has arrived (the member running it; expires unless renewed).

pub mod identify;
pub mod lease;
pub mod placement;
pub mod reshard;
pub mod scripts;

pub use identify::{Claim, ClaimReply, IdentifyStep, SharedIdentify};
pub use lease::{LeaseChange, LeaseReply, LeaseRequest, LeaseTimings, ShardLease};
pub use placement::{ClusterNode, NodeAction, StopKind, fair_share};
pub use reshard::{
    RETIRE_CATCH_UP, RETIRE_MAX, Reshard, ReshardAction, ReshardTimings, Retiring, ShardCounts,
};

use base64::Engine;

/// The bot's user id, read from the first part of its token (base64 of the id, as Discord
/// issues them). Tokens of another shape give `unknown`: such processes share one identify
/// budget, which is safe (never more IDENTIFYs than one bot may send), just slower. The token
/// itself never becomes part of a key.
pub fn bot_id_from_token(token: &str) -> String {
    let first = token.trim().split('.').next().unwrap_or_default();
    let engines = [
        base64::engine::general_purpose::STANDARD_NO_PAD,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    engines
        .iter()
        .find_map(|engine| engine.decode(first.trim_end_matches('=')).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .filter(|id| !id.is_empty() && id.len() <= 20 && id.bytes().all(|b| b.is_ascii_digit()))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The Redis key names of cluster mode (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterKeys {
    bot: String,
    cluster: String,
}

impl ClusterKeys {
    /// The keys under `prefix` for bot `bot_id` and cluster `name`.
    pub fn new(prefix: &str, bot_id: &str, name: &str) -> Self {
        Self {
            bot: format!("{prefix}:bot:{bot_id}"),
            cluster: format!("{prefix}:cluster:{name}"),
        }
    }

    /// The bot's session starts left.
    pub fn identify_remaining(&self) -> String {
        format!("{}:identify:remaining", self.bot)
    }

    /// The claim of identify bucket `bucket` (out of `max_concurrency`).
    pub fn identify_bucket(&self, max_concurrency: u16, bucket: u32) -> String {
        format!("{}:identify:bucket:{max_concurrency}:{bucket}", self.bot)
    }

    /// A live member.
    pub fn member(&self, member: &str) -> String {
        format!("{}:member:{member}", self.cluster)
    }

    /// The pattern of every member key (for `SCAN`).
    pub fn member_pattern(&self) -> String {
        format!("{}:member:*", self.cluster)
    }

    /// The member a member key names.
    pub fn member_of_key<'a>(&self, key: &'a str) -> Option<&'a str> {
        key.strip_prefix(&self.cluster)?
            .strip_prefix(":member:")
            .filter(|m| !m.is_empty())
    }

    /// Shard `shard`'s lease (of `shard_count` shards: sets of another count are other shards).
    pub fn lease(&self, shard_count: u32, shard: u32) -> String {
        format!("{}:lease:{shard_count}:{shard}", self.cluster)
    }

    /// The cluster's shard counts (a hash: `current`, `target`).
    pub fn shard_counts(&self) -> String {
        format!("{}:shards", self.cluster)
    }

    /// The ready mark of shard `shard` of the set of `shard_count` shards.
    pub fn ready(&self, shard_count: u32, shard: u32) -> String {
        format!("{}{shard}", self.ready_prefix(shard_count))
    }

    /// The ready marks' common start for the set of `shard_count` (the switch script appends
    /// the shard numbers).
    pub fn ready_prefix(&self, shard_count: u32) -> String {
        format!("{}:ready:{shard_count}:", self.cluster)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bot_id_comes_from_the_token_and_nothing_else_does() {
        // base64("123456789012345678")
        assert_eq!(
            bot_id_from_token("MTIzNDU2Nzg5MDEyMzQ1Njc4.GaBcDe.secret-part"),
            "123456789012345678"
        );
        assert_eq!(bot_id_from_token("mock-token"), "unknown");
        assert_eq!(bot_id_from_token(""), "unknown");
        // base64("hello"): not an id.
        assert_eq!(bot_id_from_token("aGVsbG8.x.y"), "unknown");
    }

    #[test]
    fn key_names() {
        let keys = ClusterKeys::new("gh", "42", "blue");
        assert_eq!(keys.identify_remaining(), "gh:bot:42:identify:remaining");
        assert_eq!(
            keys.identify_bucket(16, 3),
            "gh:bot:42:identify:bucket:16:3"
        );
        assert_eq!(keys.member("a-1"), "gh:cluster:blue:member:a-1");
        assert_eq!(
            keys.member_of_key("gh:cluster:blue:member:a-1"),
            Some("a-1")
        );
        assert_eq!(keys.member_of_key("gh:cluster:red:member:a-1"), None);
        assert_eq!(keys.member_pattern(), "gh:cluster:blue:member:*");
        assert_eq!(keys.lease(8, 5), "gh:cluster:blue:lease:8:5");
        assert_eq!(keys.shard_counts(), "gh:cluster:blue:shards");
        assert_eq!(keys.ready(8, 5), "gh:cluster:blue:ready:8:5");
    }
}
