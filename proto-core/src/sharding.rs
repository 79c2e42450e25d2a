//! Sharding math: which shard a guild lives on, and which shards a process owns.
//!
//! Owns: [`ShardId`], [`shard_for_guild`] / [`shard_for_event`] (PROTOCOL.md §13), snowflake
//! parsing from JSON (strings, and numbers where Discord echoes what a client sent), and
//! shard selections ([`parse_shard_ids`]); which shards a process owns is
//! `profile::ClusterInfo`. Pure functions and small value types; no state. Does not schedule identifies (see [`crate::identify`]).

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
    fn shard_ids_validate() {
        assert_eq!(ShardId::new(1, 2).expect("valid").to_string(), "[1, 2]");
        assert_eq!(ShardId::new(2, 2), None);
        assert_eq!(ShardId::new(0, 0), None);
    }

    proptest! {
        #[test]
        fn guild_shard_is_in_range(guild: u64, total in 1u32..100_000) {
            let s = shard_for_guild(guild, nz(total));
            prop_assert!(s < total);
            prop_assert_eq!(u64::from(s), (guild >> 22) % u64::from(total));
        }

        #[test]
        fn snowflake_roundtrips(id: u64) {
            prop_assert_eq!(Snowflake::from_json(format!("\"{id}\"").as_bytes()), Some(Snowflake(id)));
            prop_assert_eq!(Snowflake::from_json(id.to_string().as_bytes()), Some(Snowflake(id)));
        }
    }
}
