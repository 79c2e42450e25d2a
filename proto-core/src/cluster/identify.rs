//! The cross-process identify rule: which shard of this process may IDENTIFY, given that
//! every process of the bot draws on the same buckets and the same daily budget.
//!
//! Owns: asking the store for one bucket claim at a time (lowest waiting shard first, so
//! buckets start in shard order within a process), what each answer means (granted; bucket
//! busy for a while; budget exhausted until the reset; store unavailable), and the fallback:
//! while the store is unavailable, the process's own [`IdentifyScheduler`] decides (the rule a
//! single process always had), starting with every bucket treated as just used, since claims
//! other processes made before the outage may still stand. After [`FALLBACK_PERIOD`] the
//! store is asked again. Does not own the storage (the runtime runs
//! [`super::scripts::IDENTIFY_CLAIM`]), or the shards.
//!
//! A grant that a shard could not use is not handed back to the store (the claim expires by
//! itself within a bucket period); only the local fallback gives grants back.

use std::collections::BTreeSet;
use std::num::NonZeroU16;
use std::time::{Duration, Instant};

use crate::identify::{
    BUCKET_PERIOD, IdentifyScheduler, IdentifySnapshot, SessionStartLimit, identify_bucket,
};

/// How long the local rule decides after the store was unavailable, before asking it again.
pub const FALLBACK_PERIOD: Duration = Duration::from_secs(30);

/// A bucket claim to put to the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim {
    /// The shard that would IDENTIFY.
    pub shard: u32,
    /// Its bucket.
    pub bucket: u32,
    /// The bucket count (part of the bucket's key).
    pub max_concurrency: u16,
    /// How long the claim holds the bucket.
    pub period: Duration,
}

/// The store's answer to a [`Claim`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimReply {
    /// The bucket was free and a session start was left: IDENTIFY now.
    Granted,
    /// Another IDENTIFY of the bucket (by any process) happened recently.
    BucketBusy {
        /// When to ask again.
        retry_in: Duration,
    },
    /// No session start left today.
    Exhausted {
        /// Until Discord's reset.
        reset_in: Duration,
    },
    /// The store could not be asked (down, timed out, or answered nonsense).
    Unavailable,
}

/// What to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdentifyStep {
    /// Put this claim to the store and hand the answer to [`SharedIdentify::handle_reply`].
    Claim(Claim),
    /// Shard may IDENTIFY now (decided locally, in the fallback).
    Grant(u32),
}

/// The identify rule of a process in a cluster. Drive it like [`IdentifyScheduler`]: after
/// every input call `poll_step(now)` until it returns `None`, then sleep until
/// `poll_timeout()` (or until the store answers the claim in flight).
#[derive(Clone, Debug)]
pub struct SharedIdentify {
    limit: SessionStartLimit,
    max_concurrency: NonZeroU16,
    waiting: BTreeSet<u32>,
    in_flight: Option<Claim>,
    /// Per bucket: not before this instant (what this process learned).
    bucket_free_at: Vec<Option<Instant>>,
    exhausted_until: Option<Instant>,
    /// Grants made through the store, so that the fallback does not reuse them.
    granted: u32,
    /// The local rule while the store is unavailable, and until when (`None`: always, for a
    /// process without a store).
    fallback: Option<(IdentifyScheduler, Option<Instant>)>,
    now: Instant,
}

impl SharedIdentify {
    /// The rule for this session start limit (`GET /gateway/bot`), read at `now`.
    pub fn new(limit: SessionStartLimit, now: Instant) -> Self {
        let max_concurrency = NonZeroU16::new(limit.max_concurrency).unwrap_or(NonZeroU16::MIN);
        Self {
            limit,
            max_concurrency,
            waiting: BTreeSet::new(),
            in_flight: None,
            bucket_free_at: vec![None; usize::from(max_concurrency.get())],
            exhausted_until: None,
            granted: 0,
            fallback: None,
            now,
        }
    }

    /// The rule of a process without a store: the local scheduler alone, for good.
    pub fn local(limit: SessionStartLimit, now: Instant) -> Self {
        let mut rule = Self::new(limit, now);
        rule.fallback = Some((IdentifyScheduler::new(limit, now), None));
        rule
    }

    /// Shard `shard` asks to IDENTIFY.
    pub fn request(&mut self, now: Instant, shard: u32) {
        let now = self.clock(now);
        match &mut self.fallback {
            Some((local, _)) => local.request(now, shard),
            None => {
                self.waiting.insert(shard);
            }
        }
    }

    /// Shard `shard` no longer needs a grant.
    pub fn cancel(&mut self, shard: u32) {
        self.waiting.remove(&shard);
        if let Some((local, _)) = &mut self.fallback {
            local.cancel(shard);
        }
    }

    /// A grant shard `shard` could not use. Only the local fallback takes it back (see the
    /// module docs); returns whether it did.
    pub fn release(&mut self, now: Instant, shard: u32) -> bool {
        let now = self.clock(now);
        match &mut self.fallback {
            Some((local, _)) => local.release(now, shard),
            None => false,
        }
    }

    /// Whether the local rule decides (the store was unavailable lately).
    pub fn is_fallback(&self) -> bool {
        self.fallback.is_some()
    }

    /// The next thing to do now, if any.
    pub fn poll_step(&mut self, now: Instant) -> Option<IdentifyStep> {
        let now = self.clock(now);
        self.leave_fallback_if_due(now);
        if let Some((local, _)) = &mut self.fallback {
            return local.poll_grant(now).map(IdentifyStep::Grant);
        }
        if self.in_flight.is_some() || self.exhausted_until.is_some_and(|t| now < t) {
            return None;
        }
        let shard = self
            .waiting
            .iter()
            .copied()
            .find(|&s| self.bucket_free_at[self.bucket_index(s)].is_none_or(|t| t <= now))?;
        self.waiting.remove(&shard);
        let claim = Claim {
            shard,
            bucket: identify_bucket(shard, self.max_concurrency),
            max_concurrency: self.max_concurrency.get(),
            period: BUCKET_PERIOD,
        };
        self.in_flight = Some(claim);
        Some(IdentifyStep::Claim(claim))
    }

    /// The store's answer to the claim in flight; returns the shard that may IDENTIFY now.
    /// An answer to anything but the claim in flight changes nothing.
    pub fn handle_reply(&mut self, now: Instant, claim: Claim, reply: ClaimReply) -> Option<u32> {
        let now = self.clock(now);
        if self.in_flight != Some(claim) {
            return None;
        }
        self.in_flight = None;
        let bucket = self.bucket_index(claim.shard);
        match reply {
            ClaimReply::Granted => {
                self.bucket_free_at[bucket] = Some(now + BUCKET_PERIOD);
                self.exhausted_until = None;
                self.granted = self.granted.saturating_add(1);
                return Some(claim.shard);
            }
            ClaimReply::BucketBusy { retry_in } => {
                self.waiting.insert(claim.shard);
                self.bucket_free_at[bucket] = Some(now + retry_in.min(BUCKET_PERIOD));
            }
            ClaimReply::Exhausted { reset_in } => {
                self.waiting.insert(claim.shard);
                self.exhausted_until = Some(now + reset_in);
            }
            ClaimReply::Unavailable => {
                self.waiting.insert(claim.shard);
                self.enter_fallback(now);
            }
        }
        None
    }

    /// When `poll_step` may next have something (never before the latest `now` seen); `None`
    /// while nobody waits or while a claim is in flight (its answer wakes the caller).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if let Some((local, until)) = &self.fallback {
            let local_next = local.poll_timeout()?;
            let next = until.map_or(local_next, |until| local_next.min(until));
            return Some(next.max(self.now));
        }
        if self.in_flight.is_some() || self.waiting.is_empty() {
            return None;
        }
        if let Some(until) = self.exhausted_until.filter(|t| *t > self.now) {
            return Some(until);
        }
        self.waiting
            .iter()
            .map(|&s| self.bucket_free_at[self.bucket_index(s)].unwrap_or(self.now))
            .min()
            .map(|t| t.max(self.now))
    }

    fn enter_fallback(&mut self, now: Instant) {
        // Claims of other processes may still hold every bucket for up to one period.
        let period_ms = u64::try_from(BUCKET_PERIOD.as_millis()).unwrap_or(u64::MAX);
        let snapshot = IdentifySnapshot {
            total: self.limit.total,
            remaining: self.limit.remaining.saturating_sub(self.granted),
            reset_in_ms: self.limit.reset_after_ms,
            max_concurrency: self.max_concurrency.get(),
            bucket_free_in_ms: vec![period_ms; usize::from(self.max_concurrency.get())],
            waiting: std::mem::take(&mut self.waiting).into_iter().collect(),
        };
        self.fallback = Some((
            IdentifyScheduler::restore(&snapshot, now),
            Some(now + FALLBACK_PERIOD),
        ));
    }

    fn leave_fallback_if_due(&mut self, now: Instant) {
        let Some((local, until)) = &self.fallback else {
            return;
        };
        if until.is_none_or(|until| now < until) {
            return;
        }
        let snapshot = local.snapshot(now);
        self.waiting.extend(snapshot.waiting.iter().copied());
        for (bucket, ms) in snapshot.bucket_free_in_ms.iter().enumerate() {
            if let Some(slot) = self.bucket_free_at.get_mut(bucket) {
                *slot = (*ms > 0).then(|| now + Duration::from_millis(*ms));
            }
        }
        self.granted = self
            .limit
            .remaining
            .saturating_sub(snapshot.remaining)
            .max(self.granted);
        self.fallback = None;
    }

    fn clock(&mut self, now: Instant) -> Instant {
        self.now = self.now.max(now);
        self.now
    }

    fn bucket_index(&self, shard: u32) -> usize {
        identify_bucket(shard, self.max_concurrency) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identify::tests::limit;

    fn claim(s: &mut SharedIdentify, now: Instant) -> Claim {
        match s.poll_step(now) {
            Some(IdentifyStep::Claim(c)) => c,
            other => panic!("expected a claim, got {other:?}"),
        }
    }

    #[test]
    fn one_claim_at_a_time_lowest_shard_first() {
        let t0 = crate::tests::epoch();
        let mut s = SharedIdentify::new(limit(10, 2), t0);
        for shard in [3, 0, 1] {
            s.request(t0, shard);
        }
        let c = claim(&mut s, t0);
        assert_eq!((c.shard, c.bucket, c.max_concurrency), (0, 0, 2));
        assert_eq!(s.poll_step(t0), None, "one claim in flight");
        assert_eq!(s.poll_timeout(), None);
        assert_eq!(s.handle_reply(t0, c, ClaimReply::Granted), Some(0));
        let c = claim(&mut s, t0);
        assert_eq!(c.shard, 1);
        // Another process identified in bucket 1 a moment ago.
        let busy = ClaimReply::BucketBusy {
            retry_in: Duration::from_secs(2),
        };
        assert_eq!(s.handle_reply(t0, c, busy), None);
        // Shard 3 is in bucket 1 too: nothing until the bucket is free, shard 1 first.
        assert_eq!(s.poll_step(t0), None);
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(2)));
        assert_eq!(claim(&mut s, t0 + Duration::from_secs(2)).shard, 1);
    }

    #[test]
    fn an_exhausted_budget_waits_for_the_reset() {
        let t0 = crate::tests::epoch();
        let mut s = SharedIdentify::new(limit(10, 1), t0);
        s.request(t0, 0);
        let c = claim(&mut s, t0);
        let reset_in = Duration::from_secs(60);
        assert_eq!(
            s.handle_reply(t0, c, ClaimReply::Exhausted { reset_in }),
            None
        );
        assert_eq!(s.poll_timeout(), Some(t0 + reset_in));
        assert_eq!(s.poll_step(t0 + Duration::from_secs(59)), None);
        assert_eq!(claim(&mut s, t0 + reset_in).shard, 0);
    }

    #[test]
    fn without_the_store_the_local_rule_decides_then_the_store_again() {
        let t0 = crate::tests::epoch();
        let mut s = SharedIdentify::new(limit(10, 1), t0);
        s.request(t0, 0);
        s.request(t0, 1);
        let c = claim(&mut s, t0);
        assert_eq!(s.handle_reply(t0, c, ClaimReply::Unavailable), None);
        assert!(s.is_fallback());
        // Every bucket counts as just used by someone else.
        assert_eq!(s.poll_step(t0), None);
        assert_eq!(s.poll_timeout(), Some(t0 + BUCKET_PERIOD));
        assert_eq!(
            s.poll_step(t0 + BUCKET_PERIOD),
            Some(IdentifyStep::Grant(0))
        );
        assert!(
            s.release(t0 + BUCKET_PERIOD, 0),
            "the local rule takes it back"
        );
        assert_eq!(
            s.poll_step(t0 + BUCKET_PERIOD),
            Some(IdentifyStep::Grant(1))
        );
        // After the fallback period, shards go through the store again.
        let later = t0 + FALLBACK_PERIOD;
        s.request(later, 0);
        let c = claim(&mut s, later);
        assert_eq!(c.shard, 0);
        assert!(!s.is_fallback());
        assert!(!s.release(later, 0));
    }

    #[test]
    fn without_a_store_the_local_rule_decides_for_good() {
        let t0 = crate::tests::epoch();
        let mut s = SharedIdentify::local(limit(10, 1), t0);
        s.request(t0, 0);
        s.request(t0, 1);
        assert_eq!(s.poll_step(t0), Some(IdentifyStep::Grant(0)));
        assert_eq!(s.poll_timeout(), Some(t0 + BUCKET_PERIOD));
        let later = t0 + FALLBACK_PERIOD * 10;
        assert_eq!(s.poll_step(later), Some(IdentifyStep::Grant(1)));
        assert!(s.is_fallback());
    }

    #[test]
    fn stale_answers_change_nothing() {
        let t0 = crate::tests::epoch();
        let mut s = SharedIdentify::new(limit(10, 1), t0);
        s.request(t0, 0);
        let c = claim(&mut s, t0);
        let other = Claim { shard: 5, ..c };
        assert_eq!(s.handle_reply(t0, other, ClaimReply::Granted), None);
        s.cancel(0);
        assert_eq!(s.handle_reply(t0, c, ClaimReply::Granted), Some(0));
        assert_eq!(s.handle_reply(t0, c, ClaimReply::Granted), None);
    }
}
