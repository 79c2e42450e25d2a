//! Deterministic tests of the core: a simulated gateway, scenarios and property tests.

mod backpressure;
mod cluster;
mod commands;
mod etf;
mod events;
#[cfg(not(feature = "fuzzing"))]
mod fake_gateway;
mod handshake;
mod lifecycle;
mod outbox;
mod persistence;
mod proptests;
mod reshard;
#[cfg(not(feature = "fuzzing"))]
mod shard_ops;
#[cfg(not(feature = "fuzzing"))]
mod sim;
// With the fuzz harness compiled in, the tests use its copy of the same files.
#[cfg(feature = "fuzzing")]
use crate::fuzzing::{fake_gateway, shard_ops, sim};

use std::time::Instant;

/// The one real `Instant` the tests read: the epoch of the fake clock. Everything after it is
/// the epoch plus `Duration`s.
#[allow(clippy::disallowed_methods)]
pub(crate) fn epoch() -> Instant {
    Instant::now()
}

/// The number of property test cases: `PROPTEST_CASES` when set, else `default`.
pub(crate) fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
