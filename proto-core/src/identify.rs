//! The identify scheduler: which shard of the process may IDENTIFY, and when.
//!
//! Owns: Discord's session start limit (PROTOCOL.md §9.2): identify buckets
//! (`shard % max_concurrency`), one IDENTIFY per bucket per 5 s, buckets started in shard
//! order, and no IDENTIFY at all while `remaining == 0` until the reset time passed. Pure and
//! plain: time is an argument, and the whole state is readable through getters so that several
//! nodes can later coordinate it (Redis). Does not talk to shards (the runtime forwards each
//! [`crate::shard::Action::RequestIdentify`] as [`IdentifyScheduler::request`] and each grant as
//! `Shard::handle_identify_granted`), and does not limit RESUMEs (they do not count).
//!
//! Drive it like a shard: after `request`/`cancel`/`update_limit`/`release`, call
//! `poll_grant(now)` until it returns `None`, then sleep until `poll_timeout()`.
//!
//! # Unused grants
//!
//! A grant can reach a shard that no longer waits (its connection closed meanwhile, it resumed
//! or stopped): `Shard::handle_identify_granted` then returns `false` and sends nothing. The
//! runtime hands the slot back with [`IdentifyScheduler::release`], which restores the session
//! start and frees the bucket, so the next waiting shard of that bucket may identify at once.
//! Only a grant of this scheduler, released once, within [`RELEASE_WINDOW`] of being handed
//! out and before the budget was refilled or replaced, is given back; anything else is ignored
//! (the grant counts as used). So releases can never let more IDENTIFYs through than Discord
//! allows, however late, repeated or mistaken they are.

use std::collections::BTreeSet;
use std::num::NonZeroU16;
use std::time::{Duration, Instant};

/// Discord's rule: one IDENTIFY per bucket per 5 s.
pub const DISCORD_BUCKET_WINDOW: Duration = Duration::from_secs(5);

/// How far apart this scheduler grants two identifies of one bucket: Discord's window plus a
/// quarter second, because a grant reaches the socket a little later than it is made, and two
/// frames written exactly 5 s apart can arrive at Discord a few milliseconds closer together
/// (which a strict server answers with op 9, wasting a session start).
pub const BUCKET_PERIOD: Duration = Duration::from_millis(5_250);

/// How long a refilled session start budget lasts when Discord did not say (one day).
pub const DEFAULT_RESET_PERIOD: Duration = Duration::from_secs(24 * 60 * 60);

/// How long after a grant [`IdentifyScheduler::release`] can still give it back. Later, the
/// grant counts as used (the bucket's period is over anyway).
pub const RELEASE_WINDOW: Duration = BUCKET_PERIOD;

/// `GET /gateway/bot`'s `session_start_limit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionStartLimit {
    /// Session starts allowed per reset window (usually 1000).
    pub total: u32,
    /// Session starts left.
    pub remaining: u32,
    /// Milliseconds until `remaining` resets to `total`.
    #[serde(rename = "reset_after")]
    pub reset_after_ms: u64,
    /// Identify buckets; each may identify once per 5 s.
    pub max_concurrency: u16,
}

/// The scheduler's whole state with times relative to a `now`, so it can cross process
/// boundaries (an `Instant` cannot): for example to share it between nodes through Redis.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdentifySnapshot {
    /// Session starts per reset window.
    pub total: u32,
    /// Session starts left.
    pub remaining: u32,
    /// Milliseconds until `remaining` resets.
    pub reset_in_ms: u64,
    /// The number of buckets.
    pub max_concurrency: u16,
    /// Per bucket: milliseconds until it may identify again (0: now).
    pub bucket_free_in_ms: Vec<u64>,
    /// Shards waiting for a grant.
    pub waiting: Vec<u32>,
}

/// The bucket of a shard: `shard % max_concurrency`.
pub const fn identify_bucket(shard: u32, max_concurrency: NonZeroU16) -> u32 {
    shard % max_concurrency.get() as u32
}

/// Grants IDENTIFYs to the shards of a process (or, with shared state, of a cluster).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentifyScheduler {
    max_concurrency: NonZeroU16,
    total: u32,
    remaining: u32,
    reset_at: Instant,
    /// Per bucket: the earliest instant of its next IDENTIFY.
    bucket_free_at: Vec<Option<Instant>>,
    /// Shard numbers waiting for a grant, served lowest first.
    waiting: BTreeSet<u32>,
    /// Grants of the last [`RELEASE_WINDOW`] that may still be released (at most one per
    /// bucket, since a bucket grants once per period).
    recent: Vec<RecentGrant>,
    /// Counts refills and limit updates: a release gives `remaining` back only within the
    /// budget its grant was taken from.
    budget_epoch: u64,
    /// The latest `now` seen.
    now: Instant,
}

/// A grant that [`IdentifyScheduler::release`] may still give back.
#[derive(Clone, Debug, PartialEq, Eq)]
struct RecentGrant {
    shard: u32,
    at: Instant,
    /// The bucket it was granted in; `None` once the bucket count changed.
    bucket: Option<usize>,
    /// The bucket's `free_at` before the grant.
    bucket_was: Option<Instant>,
    budget_epoch: u64,
}

impl IdentifyScheduler {
    /// A scheduler for this session start limit, read at `now`. A `max_concurrency` of 0 is
    /// treated as 1.
    pub fn new(limit: SessionStartLimit, now: Instant) -> Self {
        let max_concurrency = NonZeroU16::new(limit.max_concurrency).unwrap_or(NonZeroU16::MIN);
        Self {
            max_concurrency,
            total: limit.total,
            remaining: limit.remaining,
            reset_at: now + Duration::from_millis(limit.reset_after_ms),
            bucket_free_at: vec![None; usize::from(max_concurrency.get())],
            waiting: BTreeSet::new(),
            recent: Vec::new(),
            budget_epoch: 0,
            now,
        }
    }

    /// The state relative to `now` (see [`IdentifySnapshot`]).
    pub fn snapshot(&self, now: Instant) -> IdentifySnapshot {
        let now = self.now.max(now);
        let ms = |at: Instant| {
            u64::try_from(at.saturating_duration_since(now).as_millis()).unwrap_or(u64::MAX)
        };
        IdentifySnapshot {
            total: self.total,
            remaining: self.remaining,
            reset_in_ms: ms(self.reset_at),
            max_concurrency: self.max_concurrency.get(),
            bucket_free_in_ms: self
                .bucket_free_at
                .iter()
                .map(|b| b.map_or(0, ms))
                .collect(),
            waiting: self.waiting.iter().copied().collect(),
        }
    }

    /// A scheduler continuing from a snapshot taken elsewhere, read at `now`. A bucket list of
    /// the wrong length is padded (buckets free) or truncated. Grants made before the
    /// snapshot can no longer be released.
    pub fn restore(snapshot: &IdentifySnapshot, now: Instant) -> Self {
        let max_concurrency = NonZeroU16::new(snapshot.max_concurrency).unwrap_or(NonZeroU16::MIN);
        let mut bucket_free_at: Vec<Option<Instant>> = snapshot
            .bucket_free_in_ms
            .iter()
            .map(|&ms| (ms > 0).then(|| now + Duration::from_millis(ms)))
            .collect();
        bucket_free_at.resize(usize::from(max_concurrency.get()), None);
        Self {
            max_concurrency,
            total: snapshot.total,
            remaining: snapshot.remaining,
            reset_at: now + Duration::from_millis(snapshot.reset_in_ms),
            bucket_free_at,
            waiting: snapshot.waiting.iter().copied().collect(),
            recent: Vec::new(),
            budget_epoch: 0,
            now,
        }
    }

    /// Replaces the session start numbers with a fresh `GET /gateway/bot` answer (bucket
    /// history and waiting shards are kept).
    pub fn update_limit(&mut self, now: Instant, limit: SessionStartLimit) {
        let now = self.clock(now);
        let max_concurrency = NonZeroU16::new(limit.max_concurrency).unwrap_or(NonZeroU16::MIN);
        if max_concurrency != self.max_concurrency {
            // Bucket numbers changed meaning: be conservative and treat every bucket as just
            // used by the latest grant.
            let latest = self.bucket_free_at.iter().flatten().max().copied();
            self.bucket_free_at = vec![latest; usize::from(max_concurrency.get())];
            self.max_concurrency = max_concurrency;
            for grant in &mut self.recent {
                grant.bucket = None;
            }
        }
        self.total = limit.total;
        self.remaining = limit.remaining;
        self.reset_at = now + Duration::from_millis(limit.reset_after_ms);
        // Discord's numbers already leave out IDENTIFYs that were never sent.
        self.budget_epoch += 1;
    }

    /// Shard `shard` asks to IDENTIFY. Asking again while waiting changes nothing.
    pub fn request(&mut self, now: Instant, shard: u32) {
        self.clock(now);
        self.waiting.insert(shard);
    }

    /// Shard `shard` no longer needs a grant (it stopped, or resumed instead).
    pub fn cancel(&mut self, shard: u32) {
        self.waiting.remove(&shard);
    }

    /// The next shard allowed to IDENTIFY now, if any. Call until `None`.
    pub fn poll_grant(&mut self, now: Instant) -> Option<u32> {
        let now = self.clock(now);
        self.refill(now);
        if self.remaining == 0 {
            return None;
        }
        let shard = self
            .waiting
            .iter()
            .copied()
            .find(|&s| self.bucket_ready(s, now))?;
        self.waiting.remove(&shard);
        let bucket = self.bucket_index(shard);
        self.forget_old_grants(now);
        self.recent.push(RecentGrant {
            shard,
            at: now,
            bucket: Some(bucket),
            bucket_was: self.bucket_free_at[bucket],
            budget_epoch: self.budget_epoch,
        });
        self.bucket_free_at[bucket] = Some(now + BUCKET_PERIOD);
        self.remaining -= 1;
        Some(shard)
    }

    /// Gives back a grant that shard `shard` did not use (`Shard::handle_identify_granted`
    /// returned `false`): the session start returns to `remaining` and the bucket is free
    /// again, as if the grant had not happened. Returns whether the shard had a grant that can
    /// still be given back (handed out within the last [`RELEASE_WINDOW`], not released yet);
    /// `false` changes nothing. The session start is restored only if the budget was not
    /// refilled or replaced since, and the bucket only if its count did not change and no
    /// later grant used it (see the module docs). The shard is not queued again; it requests
    /// anew when it needs to. Call `poll_grant` afterwards: a waiting shard of the bucket may
    /// go now.
    pub fn release(&mut self, now: Instant, shard: u32) -> bool {
        let now = self.clock(now);
        self.refill(now);
        self.forget_old_grants(now);
        let Some(index) = self.recent.iter().rposition(|g| g.shard == shard) else {
            return false;
        };
        let grant = self.recent.swap_remove(index);
        // Within one budget `remaining` only falls, so this restores at most what it had.
        if grant.budget_epoch == self.budget_epoch {
            self.remaining = self.remaining.saturating_add(1);
        }
        // Free the bucket only if nothing else took it since (same bucket count, and it
        // still holds this grant's period).
        if let Some(bucket) = grant.bucket
            && self.bucket_free_at.get(bucket) == Some(&Some(grant.at + BUCKET_PERIOD))
        {
            self.bucket_free_at[bucket] = grant.bucket_was;
        }
        true
    }

    /// When `poll_grant` may next return a shard (never before the latest `now` seen);
    /// `None` while nobody waits.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.waiting.is_empty() {
            return None;
        }
        if self.remaining == 0 && self.reset_at > self.now {
            return Some(self.reset_at);
        }
        let at = self
            .waiting
            .iter()
            .map(|&s| self.bucket_free_at[self.bucket_index(s)].unwrap_or(self.now))
            .min()?;
        Some(at.max(self.now))
    }

    /// Session starts left before the reset.
    pub fn remaining(&self) -> u32 {
        self.remaining
    }

    /// Session starts per reset window.
    pub fn total(&self) -> u32 {
        self.total
    }

    /// When `remaining` is next reset to `total`.
    pub fn reset_at(&self) -> Instant {
        self.reset_at
    }

    /// The number of buckets.
    pub fn max_concurrency(&self) -> NonZeroU16 {
        self.max_concurrency
    }

    /// When bucket `bucket` may next identify (`None`: now).
    pub fn bucket_free_at(&self, bucket: u32) -> Option<Instant> {
        self.bucket_free_at
            .get(usize::try_from(bucket).ok()?)
            .copied()
            .flatten()
    }

    /// The shards waiting for a grant, lowest first.
    pub fn waiting(&self) -> impl Iterator<Item = u32> + '_ {
        self.waiting.iter().copied()
    }

    fn clock(&mut self, now: Instant) -> Instant {
        self.now = self.now.max(now);
        self.now
    }

    fn bucket_index(&self, shard: u32) -> usize {
        identify_bucket(shard, self.max_concurrency) as usize
    }

    fn bucket_ready(&self, shard: u32, now: Instant) -> bool {
        self.bucket_free_at[self.bucket_index(shard)].is_none_or(|at| at <= now)
    }

    fn refill(&mut self, now: Instant) {
        if now >= self.reset_at {
            self.remaining = self.total;
            self.reset_at = now + DEFAULT_RESET_PERIOD;
            self.budget_epoch += 1;
        }
    }

    fn forget_old_grants(&mut self, now: Instant) {
        self.recent.retain(|g| now < g.at + RELEASE_WINDOW);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A limit with 1000 starts a day, `remaining` of them left, reset in an hour.
    pub(crate) fn limit(remaining: u32, max_concurrency: u16) -> SessionStartLimit {
        SessionStartLimit {
            total: 1000,
            remaining,
            reset_after_ms: 3_600_000,
            max_concurrency,
        }
    }

    fn drain(s: &mut IdentifyScheduler, now: Instant) -> Vec<u32> {
        std::iter::from_fn(|| s.poll_grant(now)).collect()
    }

    #[test]
    fn buckets_start_in_order() {
        let t0 = crate::tests::epoch();
        let mut s = IdentifyScheduler::new(limit(1000, 16), t0);
        for shard in (0..32).rev() {
            s.request(t0, shard);
        }
        assert_eq!(drain(&mut s, t0), (0..16).collect::<Vec<_>>());
        assert_eq!(s.poll_timeout(), Some(t0 + BUCKET_PERIOD));
        assert_eq!(
            drain(&mut s, t0 + Duration::from_millis(4_999)),
            Vec::<u32>::new()
        );
        assert_eq!(
            drain(&mut s, t0 + BUCKET_PERIOD),
            (16..32).collect::<Vec<_>>()
        );
        assert_eq!(s.poll_timeout(), None);
        assert_eq!(s.remaining(), 968);
    }

    #[test]
    fn one_bucket_identifies_every_five_seconds() {
        let t0 = crate::tests::epoch();
        let mut s = IdentifyScheduler::new(limit(1000, 1), t0);
        for shard in 0..3 {
            s.request(t0, shard);
        }
        s.request(t0, 1); // a repeated request changes nothing
        let mut grants = Vec::new();
        while let Some(now) = s.poll_timeout() {
            grants.extend(drain(&mut s, now).into_iter().map(|g| (g, now - t0)));
        }
        assert_eq!(
            grants,
            vec![
                (0, Duration::ZERO),
                (1, BUCKET_PERIOD),
                (2, BUCKET_PERIOD * 2)
            ]
        );
    }

    #[test]
    fn nothing_while_remaining_is_zero_until_the_reset() {
        let t0 = crate::tests::epoch();
        let mut s = IdentifyScheduler::new(limit(0, 1), t0);
        s.request(t0, 0);
        assert_eq!(s.poll_grant(t0), None);
        let reset = t0 + Duration::from_secs(3600);
        assert_eq!(s.poll_timeout(), Some(reset));
        assert_eq!(s.poll_grant(reset - Duration::from_millis(1)), None);
        assert_eq!(s.poll_grant(reset), Some(0));
        assert_eq!(s.remaining(), 999);
        assert_eq!(s.reset_at(), reset + DEFAULT_RESET_PERIOD);
    }

    #[test]
    fn budget_runs_out() {
        let t0 = crate::tests::epoch();
        let mut s = IdentifyScheduler::new(limit(2, 4), t0);
        for shard in 0..4 {
            s.request(t0, shard);
        }
        assert_eq!(drain(&mut s, t0), vec![0, 1]);
        assert_eq!(s.remaining(), 0);
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(3600)));
    }

    #[test]
    fn cancel_and_update_limit() {
        let t0 = crate::tests::epoch();
        let mut s = IdentifyScheduler::new(limit(0, 1), t0);
        s.request(t0, 5);
        s.cancel(5);
        assert_eq!(s.poll_timeout(), None);
        s.request(t0, 6);
        s.update_limit(t0, limit(10, 2));
        assert_eq!(s.poll_grant(t0), Some(6));
        assert_eq!(s.bucket_free_at(0), Some(t0 + BUCKET_PERIOD));
        assert_eq!(s.bucket_free_at(1), None);
        assert_eq!(identify_bucket(7, s.max_concurrency()), 1);
    }

    #[test]
    fn same_bucket_grants_are_more_than_discords_window_apart() {
        let t0 = crate::tests::epoch();
        let mut s = IdentifyScheduler::new(limit(10, 1), t0);
        s.request(t0, 0);
        s.request(t0, 1);
        assert_eq!(drain(&mut s, t0), vec![0]);
        assert_eq!(drain(&mut s, t0 + DISCORD_BUCKET_WINDOW), Vec::<u32>::new());
        let next = s.poll_timeout().expect("shard 1 waits");
        assert!(next - t0 > DISCORD_BUCKET_WINDOW);
        assert_eq!(drain(&mut s, next), vec![1]);
    }

    #[test]
    fn snapshot_roundtrips_across_processes() {
        let t0 = crate::tests::epoch();
        let mut s = IdentifyScheduler::new(limit(10, 2), t0);
        for shard in 0..4 {
            s.request(t0, shard);
        }
        assert_eq!(drain(&mut s, t0), vec![0, 1]);
        let later = t0 + Duration::from_secs(2);
        let snap = s.snapshot(later);
        assert_eq!(snap.bucket_free_in_ms, vec![3_250, 3_250]);
        assert_eq!(snap.waiting, vec![2, 3]);
        let json = serde_json::to_string(&snap).expect("json");
        let back: IdentifySnapshot = serde_json::from_str(&json).expect("json");
        // Another process, with its own clock.
        let elsewhere = t0 + Duration::from_secs(1000);
        let mut r = IdentifyScheduler::restore(&back, elsewhere);
        assert_eq!(r.remaining(), 8);
        assert_eq!(r.poll_grant(elsewhere), None);
        assert_eq!(
            r.poll_timeout(),
            Some(elsewhere + Duration::from_millis(3_250))
        );
        assert_eq!(
            drain(&mut r, elsewhere + Duration::from_millis(3_250)),
            vec![2, 3]
        );
        assert_eq!(r.snapshot(elsewhere).max_concurrency, 2);
    }

    #[test]
    fn an_unused_grant_goes_back_to_the_next_shard_at_once() {
        let t0 = crate::tests::epoch();
        let mut s = IdentifyScheduler::new(limit(1, 1), t0);
        s.request(t0, 0);
        s.request(t0, 1);
        assert_eq!(drain(&mut s, t0), vec![0]);
        assert_eq!(s.remaining(), 0);
        let t1 = t0 + Duration::from_millis(30);
        assert!(s.release(t1, 0));
        assert_eq!(s.remaining(), 1);
        assert_eq!(s.bucket_free_at(0), None);
        assert_eq!(s.poll_timeout(), Some(t1));
        assert_eq!(drain(&mut s, t1), vec![1]);
        assert_eq!(s.remaining(), 0);
        assert_eq!(s.bucket_free_at(0), Some(t1 + BUCKET_PERIOD));
        // Twice, or a shard never granted: nothing.
        assert!(!s.release(t1, 0));
        assert!(!s.release(t1, 9));
        assert_eq!(s.remaining(), 0);
        assert_eq!(s.bucket_free_at(0), Some(t1 + BUCKET_PERIOD));
    }

    #[test]
    fn late_releases_and_releases_across_budgets_give_nothing_back() {
        let t0 = crate::tests::epoch();
        let mut s = IdentifyScheduler::new(limit(5, 2), t0);
        s.request(t0, 0);
        s.request(t0, 1);
        assert_eq!(drain(&mut s, t0), vec![0, 1]);
        assert_eq!(s.remaining(), 3);
        // A fresh GET /gateway/bot already leaves the unsent IDENTIFY out: no double credit,
        // but the bucket is still freed.
        s.update_limit(t0, limit(4, 2));
        assert!(s.release(t0 + Duration::from_secs(1), 1));
        assert_eq!(s.remaining(), 4);
        assert_eq!(s.bucket_free_at(1), None);
        // Too late: the grant counts as used.
        assert!(!s.release(t0 + RELEASE_WINDOW, 0));
        assert_eq!(s.remaining(), 4);
        assert_eq!(s.bucket_free_at(0), Some(t0 + BUCKET_PERIOD));
        // After a change of bucket count the bucket stays blocked.
        let t1 = t0 + Duration::from_secs(10);
        s.request(t1, 2);
        assert_eq!(drain(&mut s, t1), vec![2]);
        s.update_limit(t1, limit(3, 4));
        assert!(s.release(t1, 2));
        assert_eq!(s.remaining(), 3);
        assert_eq!(s.bucket_free_at(2), Some(t1 + BUCKET_PERIOD));
    }

    #[test]
    fn timeout_never_before_now() {
        let t0 = crate::tests::epoch();
        let mut s = IdentifyScheduler::new(limit(1000, 1), t0);
        s.request(t0, 0);
        s.request(t0, 1);
        assert_eq!(s.poll_grant(t0), Some(0));
        let later = t0 + Duration::from_secs(60);
        s.request(later, 2);
        assert_eq!(s.poll_timeout(), Some(later));
    }
}
