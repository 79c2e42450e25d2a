//! Gateway intents: names, bits and groups (`all`, `privileged`, `nonPrivileged`).
//!
//! CONTRACT STUB: filled in with the full table.

/// All documented intents.
pub const ALL: u64 = 0x331_FFFF;

/// The non-privileged intents (all but GUILD_MEMBERS, GUILD_PRESENCES, MESSAGE_CONTENT).
pub const NON_PRIVILEGED: u64 = ALL & !(2 | 256 | 32768);
