//! Sharding math: which shard a guild lives on, and which shards a process owns.
//!
//! Owns: [`ShardId`], [`shard_for_guild`] / [`shard_for_event`] (PROTOCOL.md §13), snowflake
//! parsing from JSON (strings, and numbers where Discord echoes what a client sent), and
//! [`ShardRange`], the validated slice of shards one node runs. Pure functions and small value
//! types; no state. Does not schedule identifies (see [`crate::identify`]).

use std::fmt;
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

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {}]", self.number, self.total)
    }
}

/// The shard of a guild: `(guild_id >> 22) % total`.
pub const fn shard_for_guild(guild_id: u64, total: NonZeroU32) -> u32 {
    ((guild_id >> 22) % total.get() as u64) as u32
}

/// The shard that receives an event: its guild's shard, or shard 0 for events without a guild
/// (DMs, entitlements, ...).
pub const fn shard_for_event(guild_id: Option<u64>, total: NonZeroU32) -> u32 {
    match guild_id {
        Some(g) => shard_for_guild(g, total),
        None => 0,
    }
}

/// A Discord id. Deserialises from a JSON string (`"81384788765712384"`, the usual form) or a
/// non-negative JSON integer (ids Discord echoes back as numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Snowflake(pub u64);

impl Snowflake {
    /// Parses the decimal text of an id (no sign, no spaces, fits in 64 bits).
    pub fn parse(text: &str) -> Option<Self> {
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        text.parse().ok().map(Snowflake)
    }

    /// Parses the raw JSON of an id: a string or an integer.
    pub fn from_json(raw: &[u8]) -> Option<Self> {
        serde_json::from_slice(raw).ok()
    }
}

impl fmt::Display for Snowflake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl serde::Serialize for Snowflake {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Snowflake {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Snowflake;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a snowflake as a decimal string or a non-negative integer")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Snowflake, E> {
                Ok(Snowflake(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Snowflake, E> {
                u64::try_from(v)
                    .map(Snowflake)
                    .map_err(|_| E::custom("negative snowflake"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Snowflake, E> {
                Snowflake::parse(v).ok_or_else(|| E::custom("invalid snowflake string"))
            }
        }
        d.deserialize_any(V)
    }
}

/// The `guild_id` of a JSON object (for example a dispatch's or command's `d`), if it has one.
pub fn guild_id_of(d: &[u8]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct WithGuild {
        #[serde(default)]
        guild_id: Option<Snowflake>,
    }
    let v: WithGuild = serde_json::from_slice(d).ok()?;
    v.guild_id.map(|g| g.0)
}

/// Why a [`ShardRange`] is invalid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShardRangeError {
    /// The total shard count is 0.
    #[error("the total shard count must be at least 1")]
    ZeroTotal,
    /// The node runs no shard.
    #[error("a node must run at least one shard")]
    ZeroCount,
    /// The range reaches past the last shard.
    #[error("shards {first}..{end} do not fit in a total of {total}")]
    OutOfRange {
        /// First shard.
        first: u32,
        /// One past the last shard.
        end: u64,
        /// The total.
        total: u32,
    },
}

/// The consecutive shards one node runs: `first .. first + count`, out of `total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct ShardRange {
    first: u32,
    count: NonZeroU32,
    total: NonZeroU32,
}

impl ShardRange {
    /// A validated range.
    pub fn new(first: u32, count: u32, total: u32) -> Result<Self, ShardRangeError> {
        let total = NonZeroU32::new(total).ok_or(ShardRangeError::ZeroTotal)?;
        let count = NonZeroU32::new(count).ok_or(ShardRangeError::ZeroCount)?;
        let end = u64::from(first) + u64::from(count.get());
        if end > u64::from(total.get()) {
            return Err(ShardRangeError::OutOfRange {
                first,
                end,
                total: total.get(),
            });
        }
        Ok(Self {
            first,
            count,
            total,
        })
    }

    /// Every shard of the bot on one node.
    pub const fn all(total: NonZeroU32) -> Self {
        Self {
            first: 0,
            count: total,
            total,
        }
    }

    /// The first shard number.
    pub const fn first(self) -> u32 {
        self.first
    }

    /// How many shards this node runs.
    pub const fn count(self) -> u32 {
        self.count.get()
    }

    /// The bot's total shard count.
    pub const fn total(self) -> NonZeroU32 {
        self.total
    }

    /// Whether this node runs shard `number`.
    pub const fn contains(self, number: u32) -> bool {
        number >= self.first && number - self.first < self.count.get()
    }

    /// The shards of this node, in order.
    pub fn shards(self) -> impl Iterator<Item = ShardId> {
        let total = self.total;
        (self.first..self.first + self.count.get()).map(move |number| ShardId { number, total })
    }

    /// The shard of a guild, if this node runs it.
    pub fn shard_of_guild(self, guild_id: u64) -> Option<ShardId> {
        let number = shard_for_guild(guild_id, self.total);
        self.contains(number).then_some(ShardId {
            number,
            total: self.total,
        })
    }
}

impl<'de> serde::Deserialize<'de> for ShardRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        struct Raw {
            first: u32,
            count: u32,
            total: u32,
        }
        let raw = Raw::deserialize(d)?;
        ShardRange::new(raw.first, raw.count, raw.total).map_err(serde::de::Error::custom)
    }
}

/// Parses a shard selection: ranges and single numbers separated by commas, for example `0-3`,
/// `0,2,5` or `0-3,8`. The result is sorted and free of duplicates.
pub fn parse_shard_ids(text: &str) -> Result<Vec<u32>, String> {
    let mut ids = Vec::new();
    for part in text.split(',').map(str::trim) {
        if part.is_empty() {
            return Err(format!("empty item in shard selection {text:?}"));
        }
        let number = |s: &str| {
            s.trim()
                .parse::<u32>()
                .map_err(|_| format!("{s:?} is not a shard number (in {text:?})"))
        };
        match part.split_once('-') {
            Some((start, end)) => {
                let (start, end) = (number(start)?, number(end)?);
                if start > end {
                    return Err(format!("range {part:?} runs backwards"));
                }
                if end - start >= 1 << 20 {
                    return Err(format!("range {part:?} is too large"));
                }
                ids.extend(start..=end);
            }
            None => ids.push(number(part)?),
        }
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_selection_syntax() {
        assert_eq!(parse_shard_ids("0-3").unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(parse_shard_ids("5, 0,2").unwrap(), vec![0, 2, 5]);
        assert_eq!(parse_shard_ids("0-1,1-2").unwrap(), vec![0, 1, 2]);
        assert!(parse_shard_ids("3-1").is_err());
        assert!(parse_shard_ids("a").is_err());
        assert!(parse_shard_ids("1,,2").is_err());
        assert!(parse_shard_ids("0-4294967295").is_err());
    }
    use proptest::prelude::*;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).expect("non-zero")
    }

    #[test]
    fn documented_examples() {
        let guild = 81_384_788_765_712_384u64;
        assert_eq!(guild >> 22, 19_403_645_698);
        assert_eq!(shard_for_guild(guild, nz(2)), 0);
        assert_eq!(shard_for_guild(guild, nz(3)), 1);
        assert_eq!(shard_for_guild(guild, nz(1)), 0);
        assert_eq!(shard_for_event(None, nz(16)), 0);
        assert_eq!(shard_for_event(Some(5 << 22), nz(4)), 1);
    }

    #[test]
    fn snowflakes_from_strings_and_numbers() {
        assert_eq!(
            Snowflake::from_json(br#""81384788765712384""#),
            Some(Snowflake(81_384_788_765_712_384))
        );
        assert_eq!(Snowflake::from_json(b"42"), Some(Snowflake(42)));
        assert_eq!(
            Snowflake::from_json(b"18446744073709551615"),
            Some(Snowflake(u64::MAX))
        );
        assert_eq!(Snowflake::from_json(br#""18446744073709551616""#), None);
        assert_eq!(Snowflake::from_json(b"-1"), None);
        assert_eq!(Snowflake::from_json(br#""-1""#), None);
        assert_eq!(Snowflake::from_json(br#""+1""#), None);
        assert_eq!(Snowflake::from_json(br#""""#), None);
        assert_eq!(Snowflake::from_json(b"1.5"), None);
        assert_eq!(Snowflake::from_json(b"null"), None);
        assert_eq!(
            serde_json::to_string(&Snowflake(7)).expect("json"),
            r#""7""#
        );
        assert_eq!(
            guild_id_of(br#"{"content":"x","guild_id":"4194304"}"#),
            Some(1 << 22)
        );
        assert_eq!(guild_id_of(br#"{"guild_id":4194304}"#), Some(1 << 22));
        assert_eq!(guild_id_of(br#"{"channel_id":"1"}"#), None);
        assert_eq!(guild_id_of(br#"{"guild_id":null}"#), None);
        assert_eq!(guild_id_of(b"[]"), None);
    }

    #[test]
    fn ranges_validate() {
        assert_eq!(ShardRange::new(0, 1, 0), Err(ShardRangeError::ZeroTotal));
        assert_eq!(ShardRange::new(0, 0, 1), Err(ShardRangeError::ZeroCount));
        assert!(matches!(
            ShardRange::new(3, 2, 4),
            Err(ShardRangeError::OutOfRange { end: 5, .. })
        ));
        assert!(ShardRange::new(u32::MAX, 2, u32::MAX).is_err());
        let r = ShardRange::new(4, 4, 16).expect("valid");
        assert_eq!(
            r.shards().map(ShardId::number).collect::<Vec<_>>(),
            vec![4, 5, 6, 7]
        );
        assert!(r.contains(4) && r.contains(7) && !r.contains(3) && !r.contains(8));
        assert_eq!(r.shard_of_guild(5 << 22).map(ShardId::number), Some(5));
        assert_eq!(r.shard_of_guild(1 << 22), None);
        assert_eq!(ShardRange::all(nz(3)).count(), 3);
        let parsed: ShardRange =
            serde_json::from_str(r#"{"first":0,"count":2,"total":2}"#).expect("ok");
        assert_eq!(parsed, ShardRange::new(0, 2, 2).expect("valid"));
        assert!(serde_json::from_str::<ShardRange>(r#"{"first":1,"count":2,"total":2}"#).is_err());
        assert_eq!(ShardId::new(1, 2).expect("valid").to_string(), "[1, 2]");
    }

    proptest! {
        #[test]
        fn guild_shard_is_in_range(guild: u64, total in 1u32..100_000) {
            let s = shard_for_guild(guild, nz(total));
            prop_assert!(s < total);
            prop_assert_eq!(u64::from(s), (guild >> 22) % u64::from(total));
        }

        #[test]
        fn ranges_partition_the_shards(total in 1u32..200, nodes in 1u32..20) {
            let nodes = nodes.min(total);
            let per = total.div_ceil(nodes);
            let mut owners = vec![0u32; total as usize];
            let mut first = 0;
            while first < total {
                let count = per.min(total - first);
                let r = ShardRange::new(first, count, total).expect("valid");
                for s in r.shards() { owners[s.number() as usize] += 1; }
                first += count;
            }
            prop_assert!(owners.iter().all(|&o| o == 1));
        }

        #[test]
        fn snowflake_roundtrips(id: u64) {
            prop_assert_eq!(Snowflake::from_json(format!("\"{id}\"").as_bytes()), Some(Snowflake(id)));
            prop_assert_eq!(Snowflake::from_json(id.to_string().as_bytes()), Some(Snowflake(id)));
        }
    }
}
