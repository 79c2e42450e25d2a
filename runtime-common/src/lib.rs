//! # runtime-common: the async glue both Gatehouse runtimes share
//!
//! Everything a runtime binary needs besides its primitives is here, written once and generic
//! over the small [`Runtime`] trait (spawn, sleep until an instant, open a WebSocket, lapin's
//! executor handle, a Redis connection). A runtime crate implements the trait, and its `main`
//! starts an executor and runs [`app::Launch`] on it; see `runtime-tokio` and
//! `runtime-async-std` for the whole of such a crate.
//!
//! What lives here, one module each:
//! - [`runtime`]: the [`Runtime`] trait, the seam between this glue and an async runtime.
//! - `allocator` (feature `jemalloc`): the process's allocator, jemalloc, chosen by measurement.
//! - [`app`]: the binaries' edges (configuration, process set-up, signals, demo or not).
//! - [`cli`]: the command line both binaries share, and the one-shot subcommands.
//! - [`logging`]: text or JSON log lines, colour only on a terminal.
//! - [`log_channel`]: shard state changes posted to a Discord channel (`LOG_CHANNEL`).
//! - [`advice`]: recognisable configuration mistakes explained in words.
//! - [`http`]: `/metrics`, `/healthz`, `/readyz`, `/status.json` and the status page.
//! - [`status`]: the live status registry the shards report to and the page shows.
//! - [`tls`]: the authorities trusted for `amqps://` and `rediss://`.
//! - [`gateway`]: start-up and shutdown order of the whole process.
//! - `shard_task`: the per-shard drive loop around `proto_core::shard::Shard`.
//! - `output`: the broker seam: the `Output` trait a shard publishes through and the command
//!   side (`Incoming`, `Settle`, `Republish`), whatever the output.
//! - `outputs`: which output runs (AMQP, Redis Streams, stdio), chosen by `broker.type`.
//! - `publisher`: one task per broker link that publishes the shards' publications and
//!   reports their confirms (what to publish again, and when, is `proto_core::outbox`'s).
//! - [`broker`]: the supervised AMQP connection, topology declaration, message properties.
//! - [`amqprs_link`] (feature `amqprs`, tokio only): the amqprs publish path
//!   (`amqp.client = "amqprs"`): the link's events connection, its confirms and returns.
//! - `amqp_commands`: consuming the AMQP command queues (the seam's AMQP command side).
//! - `commands`: taking worker commands from any output and carrying out the profile's
//!   decision.
//! - `redis_streams`: the Redis Streams output (`@spectacles/brokers`' `Redis` broker).
//! - `stdio`: the stdio output, one JSON line per event on stdout, commands on stdin.
//! - `null_output` (feature `bench`): an output that acknowledges everything and keeps
//!   nothing, to measure the gateway side alone.
//! - [`session_store`]: session snapshots and shard status in Redis.
//! - [`identify`]: the process-wide identify coordinator (limits shared through Redis).
//! - [`cluster`]: cluster mode (member key, shard leases, placement, hand-over).
//! - `lazy_channel`: the shards' input and report channels, which hold no memory while empty.
//! - `shard_inputs`: what other tasks tell a shard (`ShardInput`) and the input channels of
//!   the shards running here, by number.
//! - [`discord_http`]: `GET /gateway/bot`.
//! - [`error_reports`]: opt-in error reports to Sentry.
//! - [`metrics`]: metric names and the Prometheus endpoint; [`predecessor_metrics`]: the
//!   predecessors' metric names, served besides under their profile.
//! - [`demo`]: the demo mode (mock gateway in-process, live count of published events).
//! - `e2e` (feature `test-support`): the end-to-end scenarios every runtime binary must pass.
//!
//! What does not live here: any Discord or broker-contract decision (the core decides; this
//! crate executes), and any runtime-specific call (the runtime crates).

pub mod advice;
#[cfg(feature = "jemalloc")]
mod allocator;
mod amqp_commands;
#[cfg(feature = "amqprs")]
pub mod amqprs_link;
pub mod app;
pub mod broker;
pub mod cli;
pub mod cluster;
mod commands;
pub mod demo;
pub mod discord_http;
#[cfg(feature = "test-support")]
pub mod e2e;
pub mod error_reports;
pub mod gateway;
pub mod http;
pub mod identify;
mod lazy_channel;
pub mod log_channel;
pub mod logging;
pub mod metrics;
#[cfg(feature = "bench")]
mod null_output;
mod output;
mod outputs;
pub mod predecessor_metrics;
mod publisher;
pub mod redis_link;
mod redis_streams;
pub mod runtime;
pub mod session_store;
mod shard_inputs;
mod shard_task;
pub mod status;
mod stdio;
pub mod tls;

pub use gateway::{RunError, run, run_with_gateway};
pub use runtime::{Runtime, WS_READ_BUFFER, WsError, websocket_config};
pub use shard_inputs::ShardInput;

/// Installs ring as the process's rustls crypto provider (rustls refuses to choose when more
/// than one is compiled in). Call once at start-up, before any TLS connection.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The process environment as the configuration's lookup closure.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}
