//! `gatehouse-async-std`: the Discord gateway bridge on async-std.
//!
//! Usage: `gatehouse-async-std [SUBCOMMAND] [--config gatehouse.toml]`: the same command line,
//! configuration and environment as the tokio binary `gatehouse` (`runtime_common::cli`),
//! including the demo when no Discord token is configured.
//!
//! This crate holds only async-std primitives (`async_std_runtime`) and starting the executor;
//! everything else is `runtime-common`.

mod async_std_runtime;

use async_std_runtime::AsyncStdRuntime;
use runtime_common::app::Launch;

#[async_std::main]
async fn main() -> anyhow::Result<()> {
    let Some(launch) = Launch::from_args("gatehouse-async-std")? else {
        return Ok(());
    };
    launch.run(AsyncStdRuntime).await
}
