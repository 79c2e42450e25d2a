//! `gatehouse-async-std`: the Discord gateway bridge on async-std.
//!
//! Usage: `gatehouse-async-std [SUBCOMMAND] [--config gatehouse.toml]`, with the same command
//! line, configuration file and environment variables as the tokio binary `gatehouse` (see
//! `runtime_common::cli` and `runtime_common::app`). With no
//! Discord token, and the default `demo` feature, it runs the demo: a mock gateway in-process
//! replaying recorded traffic into the local RabbitMQ, with a live count per event type.
//!
//! This crate holds only async-std primitives (`async_std_runtime`) and starting the executor;
//! everything else is `runtime-common`.

mod async_std_runtime;

use async_std_runtime::AsyncStdRuntime;
use runtime_common::app::Launch;

#[async_std::main]
async fn main() -> anyhow::Result<()> {
    match Launch::from_args("gatehouse-async-std")? {
        Some(launch) => launch.run(AsyncStdRuntime).await,
        None => Ok(()),
    }
}
