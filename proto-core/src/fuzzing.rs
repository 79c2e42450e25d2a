//! The fuzz targets' way into the simulation harness (feature `fuzzing`, off by default; not an
//! API): the property tests' simulated gateway and runtime (`tests/sim.rs`,
//! `tests/fake_gateway.rs`) and their shard operations and invariants (`tests/shard_ops.rs`),
//! compiled from the same files.
//!
//! Like the tests, the harness reads the clock once, for the epoch of its fake time.

// Helpers that only some tests use.
#![allow(dead_code)]

#[path = "tests/fake_gateway.rs"]
pub(crate) mod fake_gateway;
#[path = "tests/shard_ops.rs"]
pub(crate) mod shard_ops;
#[path = "tests/sim.rs"]
pub(crate) mod sim;

/// The epoch of the fake clock (as `tests::epoch`).
#[allow(clippy::disallowed_methods)]
pub(crate) fn epoch() -> std::time::Instant {
    std::time::Instant::now()
}

/// Runs one shard case read from `data` (seed, heartbeat interval, zlib, ETF, up to 40
/// operations, as the property test draws them) and asserts every invariant: panics on a
/// violation.
pub fn shard(data: &[u8]) {
    let mut input = arbitrary::Unstructured::new(data);
    if let Ok(case) = <shard_ops::Case as arbitrary::Arbitrary>::arbitrary(&mut input) {
        shard_ops::run(case.seed, case.interval_ms, case.zlib, case.etf, &case.ops);
    }
}
