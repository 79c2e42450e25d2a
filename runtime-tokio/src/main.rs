//! `gatehouse`: the Discord gateway bridge on tokio.
//!
//! Usage: `gatehouse [run|status|config check|config example|healthcheck|completions SHELL]
//! [--config gatehouse.toml]` (`gatehouse --help`; `runtime_common::cli`). Configuration comes
//! from the file (optional; `gatehouse.toml` in the working directory when present) and the
//! environment (see `gatehouse_config::env`). With no Discord token, and the default
//! `demo` feature, it runs the demo: a mock gateway in-process replaying recorded traffic into
//! the local RabbitMQ, with a live count per event type.
//!
//! This crate holds only tokio primitives (`tokio_runtime`) and starting the executor;
//! everything else is `runtime-common` (`runtime_common::app` for the binary's edges).

mod tokio_runtime;

use anyhow::Context;
use runtime_common::app::Launch;
use tokio_runtime::TokioRuntime;

fn main() -> anyhow::Result<()> {
    let Some(launch) = Launch::from_args("gatehouse")? else {
        return Ok(());
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("gatehouse")
        .build()
        .context("cannot start tokio")?
        .block_on(launch.run(TokioRuntime))
}
