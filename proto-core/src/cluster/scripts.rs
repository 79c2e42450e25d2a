//! The Lua scripts cluster mode runs in Redis, and what their answers mean.
//!
//! Owns: the script texts (each a few lines, atomic in Redis as `EVAL`/`EVALSHA` guarantees)
//! and the decoding of their replies into the answers the pure types take
//! ([`ClaimReply`], [`LeaseReply`]). The patterns are Redis's own: a key set with `NX PX` as a
//! claim that expires by itself, and "delete or extend only if the value is still mine" for
//! releasing and renewing (redis.io, "Distributed Locks with Redis", single instance). No
//! consensus protocol of our own: one Redis is the single source of truth.

use std::time::Duration;

use super::identify::ClaimReply;
use super::lease::LeaseReply;

/// Claims an IDENTIFY for the bot: `KEYS[1]` the bucket key, `KEYS[2]` the remaining-starts
/// key; `ARGV[1]` the member, `ARGV[2]` the bucket period (ms), `ARGV[3]` the remaining
/// starts to assume when the key is absent, `ARGV[4]` the milliseconds until Discord's reset.
/// Returns `{0, 0}` (granted), `{1, ms}` (the bucket is busy for `ms`) or `{2, ms}` (no
/// session start left for `ms`).
pub const IDENTIFY_CLAIM: &str = r"
local remaining = redis.call('GET', KEYS[2])
if not remaining then
  redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
  remaining = ARGV[3]
end
if tonumber(remaining) <= 0 then
  return {2, redis.call('PTTL', KEYS[2])}
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  redis.call('DECR', KEYS[2])
  return {0, 0}
end
return {1, redis.call('PTTL', KEYS[1])}
";

/// Acquires or renews a lease: `KEYS[1]` the lease key; `ARGV[1]` the member, `ARGV[2]` the
/// lease time (ms). Returns 1 when the member holds the lease for `ARGV[2]` from now, 0 when
/// another member holds it.
pub const LEASE_CLAIM: &str = r"
local owner = redis.call('GET', KEYS[1])
if owner == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
return 0
";

/// Releases a lease if the member still holds it: `KEYS[1]` the lease key, `ARGV[1]` the
/// member. Returns 1 when deleted.
pub const LEASE_RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// What [`IDENTIFY_CLAIM`] answered (`[code, ms]`). Anything unexpected counts as the store
/// being unusable, so the caller falls back to the safe local rule.
pub fn decode_identify_claim(reply: &[i64]) -> ClaimReply {
    // PTTL is -1 (no expiry) or -2 (gone) in corner cases: wait a little and ask again.
    let wait = |ms: i64| Duration::from_millis(u64::try_from(ms).unwrap_or(0).max(50));
    match reply {
        [0, _] => ClaimReply::Granted,
        [1, ms] => ClaimReply::BucketBusy {
            retry_in: wait(*ms),
        },
        [2, ms] => ClaimReply::Exhausted {
            reset_in: if *ms < 0 {
                crate::identify::DEFAULT_RESET_PERIOD
            } else {
                wait(*ms)
            },
        },
        _ => ClaimReply::Unavailable,
    }
}

/// Reads the shard counts, recording `ARGV[1]` as the current count when there is none yet
/// (the first member of a cluster): `KEYS[1]` the counts hash. Returns `{current, target}`
/// (`target` 0 when there is none).
pub const COUNTS_READ: &str = r"
redis.call('HSETNX', KEYS[1], 'current', ARGV[1])
local c = redis.call('HGET', KEYS[1], 'current')
local t = redis.call('HGET', KEYS[1], 'target')
return {tonumber(c) or 0, tonumber(t or '0') or 0}
";

/// Asks for a re-shard (`gatehouse reshard --to N`): `KEYS[1]` the counts hash; `ARGV[1]`
/// the new count. Returns `{code, current, target}`: code 0 the target is set, 1 another
/// re-shard is under way (nothing changed), 2 the cluster already runs that count, 3 no
/// cluster has recorded its counts yet.
pub const RESHARD_REQUEST: &str = r"
local c = redis.call('HGET', KEYS[1], 'current')
if not c then
  return {3, 0, 0}
end
local t = redis.call('HGET', KEYS[1], 'target')
if c == ARGV[1] then
  return {2, tonumber(c), tonumber(t or '0')}
end
if t and t ~= c and t ~= ARGV[1] then
  return {1, tonumber(c), tonumber(t)}
end
redis.call('HSET', KEYS[1], 'target', ARGV[1])
return {0, tonumber(c), tonumber(ARGV[1])}
";

/// Switches to the target, only if the counts are still `ARGV[1]` with target `ARGV[2]` and
/// every shard of the target has its ready mark (`ARGV[3]` followed by the shard number):
/// `KEYS[1]` the counts hash. Returns 1 when switched (or already switched), 0 otherwise.
pub const SWITCH: &str = r"
local c = redis.call('HGET', KEYS[1], 'current')
if c == ARGV[2] then
  return 1
end
if c ~= ARGV[1] or redis.call('HGET', KEYS[1], 'target') ~= ARGV[2] then
  return 0
end
for shard = 0, tonumber(ARGV[2]) - 1 do
  if redis.call('EXISTS', ARGV[3] .. shard) == 0 then
    return 0
  end
end
redis.call('HSET', KEYS[1], 'current', ARGV[2])
redis.call('HDEL', KEYS[1], 'target')
return 1
";

/// Drops the target `ARGV[1]` if it is still the target (a failed re-shard, or
/// `gatehouse reshard --cancel` with `ARGV[1]` empty for any target): `KEYS[1]` the counts
/// hash. Returns 1 when dropped.
pub const CANCEL: &str = r"
local t = redis.call('HGET', KEYS[1], 'target')
if t and (ARGV[1] == '' or t == ARGV[1]) then
  redis.call('HDEL', KEYS[1], 'target')
  return 1
end
return 0
";

/// What [`COUNTS_READ`] answered, if it is a count.
pub fn decode_counts(reply: &[i64]) -> Option<super::ShardCounts> {
    match reply {
        [current, target] if *current > 0 => Some(super::ShardCounts {
            current: u32::try_from(*current).ok()?,
            target: u32::try_from(*target).ok().filter(|&t| t > 0),
        }),
        _ => None,
    }
}

/// What [`LEASE_CLAIM`] or [`LEASE_RELEASE`] answered.
pub fn decode_lease(reply: i64) -> LeaseReply {
    if reply == 1 {
        LeaseReply::Granted
    } else {
        LeaseReply::Taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_decode() {
        assert_eq!(decode_identify_claim(&[0, 0]), ClaimReply::Granted);
        assert_eq!(
            decode_identify_claim(&[1, 1200]),
            ClaimReply::BucketBusy {
                retry_in: Duration::from_millis(1200)
            }
        );
        assert_eq!(
            decode_identify_claim(&[1, -2]),
            ClaimReply::BucketBusy {
                retry_in: Duration::from_millis(50)
            }
        );
        assert_eq!(
            decode_identify_claim(&[2, -1]),
            ClaimReply::Exhausted {
                reset_in: crate::identify::DEFAULT_RESET_PERIOD
            }
        );
        assert_eq!(decode_identify_claim(&[7]), ClaimReply::Unavailable);
        assert_eq!(decode_lease(1), LeaseReply::Granted);
        assert_eq!(decode_lease(0), LeaseReply::Taken);
        assert_eq!(
            decode_counts(&[4, 8]),
            Some(super::super::ShardCounts {
                current: 4,
                target: Some(8)
            })
        );
        assert_eq!(decode_counts(&[4, 0]).and_then(|c| c.target), None);
        assert_eq!(decode_counts(&[0, 0]), None);
    }
}
