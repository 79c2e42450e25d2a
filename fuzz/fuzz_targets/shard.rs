//! `Shard` driven by arbitrary operation sequences: the property test `shard_keeps_its_invariants`
//! (proto-core `tests/shard_ops.rs`) with its operations read from the fuzz input through
//! `arbitrary`, over the same ranges. Checks every invariant of that test: heartbeat gaps, no
//! two unacked heartbeats, the sequence carried by heartbeats and RESUME, 120 frames per 60 s,
//! only resumable closes, nothing after `Stopped`, no protocol violation seen by the simulated
//! gateway.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| proto_core::fuzzing::shard(data));
