//! Demo mode (no token): the mock gateway in-process, the real pipeline pointed at it, and a
//! live count per event type of what reached RabbitMQ. (Waiting for the mock gateway library;
//! the full version is `demo.rs.pending`.)

use std::future::Future;

use proto_core::config::Config;

pub(crate) async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let _ = (config, shutdown);
    anyhow::bail!("the demo needs the mock gateway library (not merged yet); set DISCORD_TOKEN")
}
