//! One shard's lease: the right to run the shard, held in the store with an expiry.
//!
//! Owns: when to acquire, renew and release, and until when the lease may be relied on.
//! The store's expiry of a lease starts when the store handles the request, which is after
//! this process sent it; so the process counts its lease from the moment it *sent* the
//! request and gives it up [`LeaseTimings::safety`] earlier still (clocks of two machines run
//! at slightly different rates). A process that could not renew therefore stops running the
//! shard before the store can hand the lease to anyone else. Renewals go out after a third of
//! the lease time, so two more attempts fit before it runs out.
//!
//! Does not own the storage ([`super::scripts::LEASE_CLAIM`] and
//! [`super::scripts::LEASE_RELEASE`]) or starting and stopping shards
//! ([`super::placement::ClusterNode`]).

use std::time::{Duration, Instant};

/// The lease's clock settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTimings {
    /// The expiry the store gives a lease.
    pub ttl: Duration,
    /// How long after a successful claim the next renewal goes out.
    pub renew_after: Duration,
    /// How long to wait before asking again after a refusal or an unavailable store.
    pub retry_after: Duration,
    /// How much earlier than the store's expiry the process stops relying on its lease.
    pub safety: Duration,
}

impl LeaseTimings {
    /// Timings for a lease time of `ttl` (at least 300 ms): renewal after a third of it,
    /// retries after a tenth, and a tenth kept as a safety margin.
    pub fn new(ttl: Duration) -> Self {
        let ttl = ttl.max(Duration::from_millis(300));
        Self {
            ttl,
            renew_after: ttl / 3,
            retry_after: ttl / 10,
            safety: ttl / 10,
        }
    }
}

impl Default for LeaseTimings {
    /// A 10 s lease.
    fn default() -> Self {
        Self::new(Duration::from_secs(10))
    }
}

/// What to ask the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseRequest {
    /// Acquire the lease, or extend it if this member holds it.
    Claim,
    /// Delete the lease if this member holds it.
    Release,
}

/// The store's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseReply {
    /// Done (claimed or extended; released).
    Granted,
    /// Another member holds the lease.
    Taken,
    /// The store could not be asked.
    Unavailable,
}

/// A change the owner must act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseChange {
    /// The lease is held: the shard may run.
    Gained,
    /// Another member holds the lease now: stop the shard at once.
    Taken,
    /// The lease could not be renewed in time: stop the shard at once (the store may give it
    /// to another member soon).
    Expired,
}

/// One shard's lease as this process sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardLease {
    timings: LeaseTimings,
    /// Held until this instant (already shortened by the safety margin).
    valid_until: Option<Instant>,
    /// When to renew (while held) or try again (while not).
    next_claim: Instant,
    wanted: bool,
    /// A request sent and not answered yet, and when it was sent.
    in_flight: Option<(LeaseRequest, Instant)>,
    release_pending: bool,
    now: Instant,
}

impl ShardLease {
    /// A lease not held, not wanted yet.
    pub fn new(timings: LeaseTimings, now: Instant) -> Self {
        Self {
            timings,
            valid_until: None,
            next_claim: now,
            wanted: false,
            in_flight: None,
            release_pending: false,
            now,
        }
    }

    /// Whether the lease may be relied on at `now`.
    pub fn holds(&self, now: Instant) -> bool {
        self.valid_until.is_some_and(|t| now < t)
    }

    /// Whether anything is still to do with the store (a request in flight, a release due).
    pub fn is_idle(&self) -> bool {
        self.in_flight.is_none() && !self.release_pending && self.valid_until.is_none()
    }

    /// Wants the lease (acquire and keep renewing) or not (release it once held).
    pub fn want(&mut self, now: Instant, wanted: bool) {
        let now = self.clock(now);
        if wanted && !self.wanted && self.valid_until.is_none() {
            self.next_claim = now;
        }
        if !wanted && self.wanted && self.valid_until.is_some() {
            self.valid_until = None;
            self.release_pending = true;
        }
        self.wanted = wanted;
    }

    /// The request to send now, if any; its answer goes to [`ShardLease::handle_reply`].
    pub fn poll_request(&mut self, now: Instant) -> Option<LeaseRequest> {
        let now = self.clock(now);
        if self.in_flight.is_some() {
            return None;
        }
        let request = if self.release_pending {
            LeaseRequest::Release
        } else if self.wanted && now >= self.next_claim {
            LeaseRequest::Claim
        } else {
            return None;
        };
        self.in_flight = Some((request, now));
        Some(request)
    }

    /// The store answered the request in flight.
    pub fn handle_reply(&mut self, now: Instant, reply: LeaseReply) -> Option<LeaseChange> {
        let now = self.clock(now);
        let (request, sent_at) = self.in_flight.take()?;
        let retry = now + self.timings.retry_after;
        match (request, reply) {
            (LeaseRequest::Release, LeaseReply::Unavailable) => {
                // The lease expires by itself; asking again only matters if it is wanted back.
                self.release_pending = false;
                None
            }
            (LeaseRequest::Release, _) => {
                self.release_pending = false;
                None
            }
            (LeaseRequest::Claim, LeaseReply::Granted) => {
                let valid_until = sent_at + self.timings.ttl - self.timings.safety;
                if !self.wanted {
                    self.release_pending = true;
                    return None;
                }
                if valid_until <= now {
                    // Too slow an answer to rely on: ask again at once.
                    self.next_claim = now;
                    return self.expire(now);
                }
                let gained = self.valid_until.is_none();
                self.valid_until = Some(valid_until);
                self.next_claim = sent_at + self.timings.renew_after;
                gained.then_some(LeaseChange::Gained)
            }
            (LeaseRequest::Claim, LeaseReply::Taken) => {
                self.next_claim = retry;
                self.valid_until.take().map(|_| LeaseChange::Taken)
            }
            (LeaseRequest::Claim, LeaseReply::Unavailable) => {
                self.next_claim = retry;
                self.expire(now)
            }
        }
    }

    /// Time passed: reports [`LeaseChange::Expired`] once the lease ran out unrenewed.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<LeaseChange> {
        let now = self.clock(now);
        self.expire(now)
    }

    /// When to call `handle_timeout` / `poll_request` next (never before the latest `now`).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let claim = (self.in_flight.is_none() && (self.wanted || self.release_pending)).then_some(
            if self.release_pending {
                self.now
            } else {
                self.next_claim
            },
        );
        [claim, self.valid_until]
            .into_iter()
            .flatten()
            .min()
            .map(|t| t.max(self.now))
    }

    fn expire(&mut self, now: Instant) -> Option<LeaseChange> {
        if self.valid_until.is_some_and(|t| now >= t) {
            self.valid_until = None;
            return Some(LeaseChange::Expired);
        }
        None
    }

    fn clock(&mut self, now: Instant) -> Instant {
        self.now = self.now.max(now);
        self.now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn acquire_renew_and_release() {
        let t0 = crate::tests::epoch();
        let timings = LeaseTimings::new(Duration::from_secs(9));
        let mut lease = ShardLease::new(timings, t0);
        assert_eq!(lease.poll_request(t0), None, "not wanted yet");
        lease.want(t0, true);
        assert_eq!(lease.poll_request(t0), Some(LeaseRequest::Claim));
        assert_eq!(lease.poll_request(t0), None, "one request at a time");
        // Answered 200 ms later: counted from the send, less the safety margin.
        let t1 = t0 + ms(200);
        assert_eq!(
            lease.handle_reply(t1, LeaseReply::Granted),
            Some(LeaseChange::Gained)
        );
        assert!(lease.holds(t1));
        assert_eq!(lease.poll_timeout(), Some(t0 + ms(3_000)));
        assert!(!lease.holds(t0 + ms(8_100)));
        assert_eq!(
            lease.poll_request(t0 + ms(3_000)),
            Some(LeaseRequest::Claim)
        );
        assert_eq!(
            lease.handle_reply(t0 + ms(3_010), LeaseReply::Granted),
            None,
            "a renewal changes nothing visible"
        );
        assert!(lease.holds(t0 + ms(11_000)));
        lease.want(t0 + ms(4_000), false);
        assert!(!lease.holds(t0 + ms(4_000)));
        assert_eq!(
            lease.poll_request(t0 + ms(4_000)),
            Some(LeaseRequest::Release)
        );
        assert_eq!(
            lease.handle_reply(t0 + ms(4_001), LeaseReply::Granted),
            None
        );
        assert!(lease.is_idle());
        assert_eq!(lease.poll_timeout(), None);
    }

    #[test]
    fn an_unrenewed_lease_is_given_up_before_the_store_lets_it_go() {
        let t0 = crate::tests::epoch();
        let timings = LeaseTimings::new(Duration::from_secs(10));
        let mut lease = ShardLease::new(timings, t0);
        lease.want(t0, true);
        lease.poll_request(t0);
        lease.handle_reply(t0, LeaseReply::Granted);
        // Renewals fail: the store is away.
        let renew = t0 + timings.renew_after;
        assert_eq!(lease.poll_request(renew), Some(LeaseRequest::Claim));
        assert_eq!(lease.handle_reply(renew, LeaseReply::Unavailable), None);
        assert!(lease.holds(renew));
        // A renewal hangs past the deadline: the timeout still fires.
        let again = renew + timings.retry_after;
        assert_eq!(lease.poll_request(again), Some(LeaseRequest::Claim));
        assert_eq!(lease.poll_timeout(), Some(t0 + ms(9_000)));
        assert_eq!(lease.handle_timeout(t0 + ms(8_999)), None);
        assert_eq!(
            lease.handle_timeout(t0 + ms(9_000)),
            Some(LeaseChange::Expired)
        );
        // The store answers at last: the lease counts from that request's send time.
        assert_eq!(
            lease.handle_reply(t0 + ms(9_500), LeaseReply::Granted),
            Some(LeaseChange::Gained)
        );
        assert!(lease.holds(again + timings.ttl - timings.safety - ms(1)));
        assert!(!lease.holds(again + timings.ttl - timings.safety));
        // An answer older than the lease time is no use.
        let late = again + timings.ttl;
        assert_eq!(lease.poll_request(late), Some(LeaseRequest::Claim));
        assert_eq!(
            lease.handle_timeout(late),
            Some(LeaseChange::Expired),
            "the previous grant ran out"
        );
        assert_eq!(
            lease.handle_reply(late + timings.ttl, LeaseReply::Granted),
            None
        );
        assert!(!lease.holds(late + timings.ttl));
    }

    #[test]
    fn a_taken_lease_is_retried_and_lost_at_once() {
        let t0 = crate::tests::epoch();
        let timings = LeaseTimings::new(Duration::from_secs(10));
        let mut lease = ShardLease::new(timings, t0);
        lease.want(t0, true);
        lease.poll_request(t0);
        assert_eq!(lease.handle_reply(t0, LeaseReply::Taken), None);
        assert_eq!(lease.poll_timeout(), Some(t0 + timings.retry_after));
        let t1 = t0 + timings.retry_after;
        lease.poll_request(t1);
        assert_eq!(
            lease.handle_reply(t1, LeaseReply::Granted),
            Some(LeaseChange::Gained)
        );
        let t2 = t1 + timings.renew_after;
        lease.poll_request(t2);
        assert_eq!(
            lease.handle_reply(t2, LeaseReply::Taken),
            Some(LeaseChange::Taken)
        );
        assert!(!lease.holds(t2));
    }

    #[test]
    fn a_grant_that_arrives_after_giving_up_is_released() {
        let t0 = crate::tests::epoch();
        let mut lease = ShardLease::new(LeaseTimings::default(), t0);
        lease.want(t0, true);
        lease.poll_request(t0);
        lease.want(t0, false);
        assert_eq!(lease.handle_reply(t0, LeaseReply::Granted), None);
        assert!(!lease.holds(t0));
        assert_eq!(lease.poll_request(t0), Some(LeaseRequest::Release));
    }
}
