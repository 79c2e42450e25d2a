//! Which broker address the runtime connects to next, and how long it waits first (issue 10,
//! item 8): round-robin over the configured AMQP addresses, with the capped exponential
//! back-off Gatehouse has always used between attempts.
//!
//! Owns: the choice of the next address and the delay before trying it. Does not own the
//! connection, the topology or the publications (the runtime's broker supervisor connects; the
//! shards' [`crate::outbox`]es publish again whatever a lost link left unconfirmed, whichever
//! address the next link goes to).
//!
//! The rules:
//! - The first attempt goes to the first address, at once.
//! - A connection that succeeds is kept; nothing moves back to the first address while the
//!   current one works (a failback would drop a working connection for nothing).
//! - When an attempt fails, or an established connection is lost, the next address (in list
//!   order, wrapping around) is tried: at once while some address has not been tried since the
//!   last success, otherwise after the back-off of the round (0.5 s doubling up to 30 s, as
//!   before address lists existed). A lost connection counts as a try of its address, so with
//!   one address the delays are exactly the old ones: 0.5 s after a loss, then 1 s, 2 s, ...
//! - A success resets the back-off.

use std::time::Duration;

/// The first back-off step.
pub const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// The longest back-off.
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// The back-off after `round` complete rounds of failed attempts (0-based): 0.5 s doubling up to
/// 30 s.
pub fn backoff(round: u32) -> Duration {
    BACKOFF_BASE
        .saturating_mul(1 << round.min(6))
        .min(BACKOFF_CAP)
}

/// The next attempt: which address, after how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// The index of the address in the configured list.
    pub address: usize,
    /// How long to wait before connecting.
    pub after: Duration,
}

/// Round-robin over `addresses` broker addresses with back-off per round. Pure: the runtime
/// reports what happened and connects where (and when) it is told.
#[derive(Clone, Debug)]
pub struct Failover {
    addresses: usize,
    current: usize,
    /// Addresses tried (and failed or lost) since the last success or complete round.
    tried: usize,
    /// Complete rounds of failures since the last success.
    rounds: u32,
}

impl Failover {
    /// A policy over `addresses` addresses (at least one: 0 is taken as 1).
    pub fn new(addresses: usize) -> Self {
        Self {
            addresses: addresses.max(1),
            current: 0,
            tried: 0,
            rounds: 0,
        }
    }

    /// How many addresses there are.
    pub fn addresses(&self) -> usize {
        self.addresses
    }

    /// The address to connect to now (or connected to).
    pub fn current(&self) -> usize {
        self.current
    }

    /// Complete rounds of failed attempts since the last success (for logs).
    pub fn rounds(&self) -> u32 {
        self.rounds
    }

    /// The connection to [`Failover::current`] is up: stay on it, reset the back-off.
    pub fn handle_connected(&mut self) {
        self.tried = 0;
        self.rounds = 0;
    }

    /// Connecting to [`Failover::current`] failed (refused, timed out, the handshake or the
    /// topology failed): the next attempt.
    pub fn handle_failed(&mut self) -> Attempt {
        self.move_on()
    }

    /// The established connection to [`Failover::current`] was lost: the next attempt.
    pub fn handle_lost(&mut self) -> Attempt {
        self.move_on()
    }

    fn move_on(&mut self) -> Attempt {
        self.tried += 1;
        self.current = (self.current + 1) % self.addresses;
        let after = if self.tried >= self.addresses {
            let delay = backoff(self.rounds);
            self.rounds = self.rounds.saturating_add(1);
            self.tried = 0;
            delay
        } else {
            Duration::ZERO
        };
        Attempt {
            address: self.current,
            after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(0), ms(500));
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(6), Duration::from_secs(30));
        assert_eq!(backoff(60), Duration::from_secs(30));
    }

    #[test]
    fn one_address_keeps_the_old_delays() {
        let mut f = Failover::new(1);
        assert_eq!(f.current(), 0);
        // Never connected: 0.5 s, 1 s, 2 s, ...
        let delays: Vec<Duration> = (0..8).map(|_| f.handle_failed().after).collect();
        assert_eq!(
            delays,
            [500, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000].map(ms)
        );
        assert_eq!(f.current(), 0);
        // Connected, then lost: 0.5 s, then the next failure 1 s.
        f.handle_connected();
        assert_eq!(
            f.handle_lost(),
            Attempt {
                address: 0,
                after: ms(500)
            }
        );
        assert_eq!(f.handle_failed().after, ms(1_000));
        assert_eq!(Failover::new(0).addresses(), 1);
    }

    #[test]
    fn a_lost_connection_moves_to_the_next_address_at_once() {
        let mut f = Failover::new(2);
        f.handle_connected();
        assert_eq!(
            f.handle_lost(),
            Attempt {
                address: 1,
                after: Duration::ZERO
            }
        );
        // The second address works: it is kept (no failback).
        f.handle_connected();
        assert_eq!(f.current(), 1);
        // It is lost too: back to the first, at once.
        assert_eq!(
            f.handle_lost(),
            Attempt {
                address: 0,
                after: Duration::ZERO
            }
        );
        // The first is down: the round is complete, back off before the second again.
        assert_eq!(
            f.handle_failed(),
            Attempt {
                address: 1,
                after: ms(500)
            }
        );
    }

    #[test]
    fn every_address_is_tried_once_per_round_and_the_back_off_grows_per_round() {
        let mut f = Failover::new(3);
        let attempts: Vec<(usize, Duration)> = (0..9)
            .map(|_| {
                let a = f.handle_failed();
                (a.address, a.after)
            })
            .collect();
        assert_eq!(
            attempts,
            [
                (1, ms(0)),
                (2, ms(0)),
                (0, ms(500)),
                (1, ms(0)),
                (2, ms(0)),
                (0, ms(1_000)),
                (1, ms(0)),
                (2, ms(0)),
                (0, ms(2_000)),
            ]
        );
        assert_eq!(f.rounds(), 3);
        // A success anywhere resets the back-off.
        f.handle_connected();
        assert_eq!(f.rounds(), 0);
        assert_eq!(f.current(), 0);
        assert_eq!(f.handle_lost().after, Duration::ZERO);
    }

    /// Simulation: whatever the pattern of failures, every address is tried within one round,
    /// no round is shorter than the number of addresses, and the delay between two attempts to
    /// the same address is never zero (no busy loop against a dead broker).
    #[test]
    fn simulated_failures_never_spin_and_never_skip_an_address() {
        let mut rng = crate::rng::SeededRng::new(7);
        for addresses in 1..5 {
            let mut f = Failover::new(addresses);
            let mut since_delay: Vec<usize> = vec![f.current()];
            for _ in 0..2_000 {
                let attempt = match rng.below(4) {
                    0 => {
                        f.handle_connected();
                        since_delay = vec![f.current()];
                        f.handle_lost()
                    }
                    _ => f.handle_failed(),
                };
                assert!(attempt.address < addresses);
                if attempt.after.is_zero() {
                    assert!(
                        !since_delay.contains(&attempt.address),
                        "{addresses} addresses: {} tried twice without a pause",
                        attempt.address
                    );
                    since_delay.push(attempt.address);
                } else {
                    assert!(attempt.after >= BACKOFF_BASE && attempt.after <= BACKOFF_CAP);
                    since_delay = vec![attempt.address];
                }
            }
        }
    }
}
