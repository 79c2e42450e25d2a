//! `gatehouse`: the Discord gateway bridge on tokio.
//!
//! Usage: `gatehouse [--config gatehouse.toml]`. Configuration comes from the file (optional;
//! `gatehouse.toml` in the working directory when present) and the environment (see
//! `proto_core::config::ENV_VARS`). With no Discord token, and the default `demo` feature, it
//! runs the demo: a mock gateway in-process replaying recorded traffic into the local RabbitMQ,
//! with a live count per event type.
//!
//! This crate holds only tokio primitives (`tokio_runtime`) and the binary's edges (arguments,
//! logging, Ctrl-C); everything else is `runtime-common`.

#[cfg(feature = "demo")]
mod demo;
mod tokio_runtime;

use std::path::PathBuf;

use anyhow::{Context, bail};
use proto_core::config::Config;
use tokio_runtime::TokioRuntime;

const USAGE: &str = "usage: gatehouse [--config PATH]

Runs Gatehouse: Discord gateway shards -> RabbitMQ, commands from RabbitMQ, sessions in Redis.
Configuration: PATH (default ./gatehouse.toml when present) plus environment variables
(DISCORD_TOKEN, AMQP_URL, REDIS_URL, GATEHOUSE_SHARD_COUNT, GATEHOUSE_SHARD_IDS,
GATEHOUSE_API_BASE, GATEHOUSE_INTENTS, GATEHOUSE_PROFILE, ...). Without a token it runs the demo.
Logs: RUST_LOG (default info).";

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,lapin=warn")),
        )
        .init();
    let config_path = parse_args()?;
    let text = match &config_path {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the configuration file {}", path.display()))?,
        None => match std::fs::read_to_string("gatehouse.toml") {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).context("cannot read gatehouse.toml"),
        },
    };
    let config = Config::load(&text, runtime_common::process_env)?;
    runtime_common::install_crypto_provider();
    runtime_common::metrics::install(config.metrics.address)
        .context("cannot start the metrics endpoint")?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("gatehouse")
        .build()
        .context("cannot start tokio")?;
    runtime.block_on(run(config))
}

fn parse_args() -> anyhow::Result<Option<PathBuf>> {
    let mut args = std::env::args().skip(1);
    let mut config = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" | "-c" => {
                config = Some(PathBuf::from(args.next().context("--config needs a path")?));
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n\n{USAGE}"),
        }
    }
    Ok(config)
}

async fn run(config: Config) -> anyhow::Result<()> {
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("Ctrl-C: shutting down");
    };
    if config.discord.has_token() {
        runtime_common::run(TokioRuntime, config, shutdown).await?;
        return Ok(());
    }
    #[cfg(feature = "demo")]
    {
        demo::run(config, shutdown).await
    }
    #[cfg(not(feature = "demo"))]
    {
        drop(shutdown);
        bail!("no Discord token: set DISCORD_TOKEN (this build has no demo mode)")
    }
}
