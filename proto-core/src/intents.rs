//! Gateway intents: names, bits and groups (`all`, `privileged`, `nonPrivileged`).
//!
//! CONTRACT STUB: filled in with the full table.

/// All documented intents.
pub const ALL: u64 = 0x331_FFFF;
