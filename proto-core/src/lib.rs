//! # proto-core: Gatehouse's sans-IO core
//!
//! Every protocol decision of Gatehouse is made here, and nothing else happens here:
//!
//! 1. No I/O, no async, no clock reads, no OS randomness, no threads. Every method is a plain
//!    synchronous call that returns quickly.
//! 2. Time is an argument: every time-moving input takes `now: Instant` first; the core only
//!    compares and adds. `now` may not go backwards; the core clamps instead of panicking.
//! 3. Randomness is seeded from configuration (heartbeat jitter, invalid-session back-off).
//! 4. Inputs are `handle_*`, outputs are `poll_*`, application requests are verbs, getters take
//!    `&self`.
//! 5. Drain after every mutation: after any `handle_*` or command, call `poll_action()` until it
//!    returns `None` (and do each action), then `poll_event()` until it returns `None` (logs and
//!    metrics only), then read `poll_timeout()` and call `handle_timeout` when it is reached.
//!
//! The runtimes (`runtime-tokio`, `runtime-async-std`) own the sockets, the timers and the broker
//! and Redis clients; they do what the core's actions say and feed back what happened.
//!
//! Modules, one line each on what it owns:
//! - [`broker_failover`]: which AMQP address to connect to next (round-robin over the
//!   configured list) and the back-off before it.
//! - [`cluster`]: cluster mode's rules (identify limits across processes, shard leases,
//!   placement), with Redis as the storage only.
//! - [`codec`]: transport decompression (zlib-stream, zstd-stream, payload zlib), JSON envelope
//!   scanning and ETF-to-JSON conversion, with limits against hostile input; JSON-to-ETF for
//!   what `encoding=etf` connections send.
//! - [`confirm_tags`]: publisher confirms from raw broker answers (delivery tags, multiple
//!   acks and nacks, returns matched by key), for the amqprs publish path.
//! - [`command`]: validation of the gateway packets workers ask to send, for every profile.
//! - [`command_flow`]: worker commands from the consumer to the shards (per-shard lanes,
//!   the reconnect rate limit, the verdict on each delivery).
//! - [`identify`]: the identify scheduler (session start limit, `max_concurrency` buckets).
//! - [`intents`]: every gateway intent by name and bit, and parsing of intent lists.
//! - [`outbox`]: one shard's publications between `Action::Publish` and the broker's confirm
//!   (retries, nacks, unroutable returns, confirm timeouts, lost links).
//! - [`percent`]: percent-decoding of URL parts (query values, secrets to scrub).
//! - [`profile`]: the broker wire contracts (topology, dispatch routing, command decoding) and
//!   the validated shard set a process owns (`ClusterInfo`).
//! - [`ratelimit`]: the per-connection send window (120 frames per 60 s, heartbeats reserved).
//! - [`rng`]: the seeded generator behind every jitter and back-off draw.
//! - [`secret`]: strings that must never be printed (the token, passwords).
//! - [`session`]: the session snapshot a runtime persists so that a restarted process resumes.
//! - [`shard`]: one gateway connection's state machine.
//! - [`sharding`]: shard ids, which shard a guild lives on, snowflakes, shard selections.
//! - [`store`]: the Redis key layout and value encoding of Gatehouse's own state (session
//!   snapshots, shard status).
//! - [`store_sync`]: the session store's policy under Redis faults (retries, what to write
//!   when Redis returns, when shards may start new sessions without their snapshot).
//! - [`stream_broker`]: Redis Streams as a broker (`@spectacles/brokers`' `Redis`): stream
//!   names, the `data` field, which streams carry commands, when to claim stuck entries.
//! - `fuzzing` (feature `fuzzing`, for the fuzz targets only): the property tests' simulation
//!   harness, shard operations and invariants.

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod broker_failover;
pub mod cluster;
pub mod codec;
pub mod command;
pub mod command_flow;
pub mod confirm_tags;
pub mod identify;
pub mod intents;
pub mod outbox;
pub mod percent;
pub mod profile;
pub mod ratelimit;
pub mod redis_topology;
pub mod rng;
pub mod secret;
pub mod session;
pub mod shard;
pub mod sharding;
pub mod store;
pub mod store_sync;
pub mod stream_broker;

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(test)]
mod tests;
