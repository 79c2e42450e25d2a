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
    }
}
