//! Sharding math: which shard a guild lives on, and which shards a process owns.
//!
//! Pure functions and small value types; no state.

use std::num::NonZeroU32;

/// A shard: its number and the total shard count of the bot. Invalid totals are unrepresentable.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct ShardId {
    number: u32,
    total: NonZeroU32,
}

impl ShardId {
    /// A shard id, or `None` when `number >= total` or `total == 0`.
    pub const fn new(number: u32, total: u32) -> Option<Self> {
        match NonZeroU32::new(total) {
            Some(t) if number < total => Some(Self { number, total: t }),
            _ => None,
        }
    }

    /// The zero-based shard number.
    pub const fn number(self) -> u32 {
        self.number
    }

    /// The total shard count.
    pub const fn total(self) -> u32 {
        self.total.get()
    }
}

/// The shard of a guild: `(guild_id >> 22) % total`.
pub const fn shard_for_guild(guild_id: u64, total: NonZeroU32) -> u32 {
    ((guild_id >> 22) % total.get() as u64) as u32
}
