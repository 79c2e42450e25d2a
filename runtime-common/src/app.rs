//! The binaries' edges, written once for both runtimes: command-line arguments, logging, the
//! configuration (file and environment), process-wide set-up (rustls crypto provider, metrics
//! endpoint, Ctrl-C / SIGTERM), and the choice between the real gateway and the demo.
//!
//! Owns: everything `gatehouse` and `gatehouse-async-std` do before and around
//! [`crate::run`]. Does not own: starting an executor (each runtime crate's `main` does that
//! and nothing else), or anything the gateway does once it runs (the other modules).

use std::path::PathBuf;

use anyhow::{Context, bail};
use proto_core::config::Config;
use tokio::sync::watch;

use crate::runtime::Runtime;

/// A process that has read its arguments and configuration and is ready to run on a runtime.
#[derive(Debug)]
pub struct Launch {
    config: Config,
    shutdown: watch::Receiver<bool>,
}

impl Launch {
    /// Everything before the executor starts: reads the arguments (`--config PATH`,
    /// `--help`), starts logging (`RUST_LOG`), loads the configuration (the file, by default
    /// `./gatehouse.toml` when present, plus the environment), installs ring as the rustls
    /// crypto provider, serves the metrics endpoint if configured, and handles Ctrl-C and
    /// SIGTERM (either starts a clean shutdown).
    ///
    /// `binary` is the executable's name, for the usage text.
    pub fn from_args(binary: &str) -> anyhow::Result<Self> {
        init_logging();
        let config_path = parse_args(binary, std::env::args().skip(1))?;
        let config = load_config(config_path)?;
        crate::install_crypto_provider();
        crate::metrics::install(config.metrics.address)
            .context("cannot start the metrics endpoint")?;
        let shutdown = install_signal_handler()?;
        Ok(Self { config, shutdown })
    }

    /// Runs on `rt` until Ctrl-C / SIGTERM (then shuts down cleanly) or every shard stops:
    /// the gateway when a Discord token is configured, otherwise the demo (a mock gateway
    /// in-process), or an error in a build without the `demo` feature.
    pub async fn run<R: Runtime>(self, rt: R) -> anyhow::Result<()> {
        let shutdown = wait_for_signal(self.shutdown);
        if self.config.discord.has_token() {
            crate::run(rt, self.config, shutdown).await?;
            return Ok(());
        }
        #[cfg(feature = "demo")]
        {
            crate::demo::run(rt, self.config, shutdown).await
        }
        #[cfg(not(feature = "demo"))]
        {
            let _ = (rt, shutdown);
            bail!("no Discord token: set DISCORD_TOKEN (this build has no demo mode)")
        }
    }
}

fn usage(binary: &str) -> String {
    format!(
        "usage: {binary} [--config PATH]

Runs Gatehouse: Discord gateway shards -> RabbitMQ, commands from RabbitMQ, sessions in Redis.
Configuration: PATH (default ./gatehouse.toml when present) plus environment variables
(DISCORD_TOKEN, AMQP_URL, REDIS_URL, GATEHOUSE_SHARD_COUNT, GATEHOUSE_SHARD_IDS,
GATEHOUSE_API_BASE, GATEHOUSE_INTENTS, GATEHOUSE_PROFILE, ...). Without a token it runs the demo.
Logs: RUST_LOG (default info). Ctrl-C or SIGTERM shuts down cleanly."
    )
}

fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,lapin=warn")),
        )
        .init();
}

fn parse_args(
    binary: &str,
    mut args: impl Iterator<Item = String>,
) -> anyhow::Result<Option<PathBuf>> {
    let mut config = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" | "-c" => {
                config = Some(PathBuf::from(args.next().context("--config needs a path")?));
            }
            "--help" | "-h" => {
                println!("{}", usage(binary));
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n\n{}", usage(binary)),
        }
    }
    Ok(config)
}

fn load_config(path: Option<PathBuf>) -> anyhow::Result<Config> {
    let text = match &path {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the configuration file {}", path.display()))?,
        None => match std::fs::read_to_string("gatehouse.toml") {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).context("cannot read gatehouse.toml"),
        },
    };
    Ok(Config::load(&text, crate::process_env)?)
}

/// Ctrl-C, SIGTERM and SIGHUP, runtime-independent (the handler runs on its own thread): the
/// first one starts a clean shutdown.
fn install_signal_handler() -> anyhow::Result<watch::Receiver<bool>> {
    let (tx, rx) = watch::channel(false);
    // Later signals change nothing: shutdown is bounded anyway, and some supervisors deliver
    // one signal twice (to the process and to its group).
    ctrlc::set_handler(move || {
        tx.send_replace(true);
    })
    .context("cannot install the Ctrl-C handler")?;
    Ok(rx)
}

async fn wait_for_signal(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|requested| *requested).await;
    tracing::info!("interrupted: shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> impl Iterator<Item = String> {
        list.iter()
            .map(|s| (*s).to_owned())
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn parses_the_config_path() {
        assert_eq!(parse_args("gatehouse", args(&[])).unwrap(), None);
        assert_eq!(
            parse_args("gatehouse", args(&["--config", "a.toml"])).unwrap(),
            Some(PathBuf::from("a.toml"))
        );
        assert_eq!(
            parse_args("gatehouse", args(&["-c", "b.toml"])).unwrap(),
            Some(PathBuf::from("b.toml"))
        );
    }

    #[test]
    fn refuses_unknown_arguments_with_the_usage() {
        let error = parse_args("gatehouse-async-std", args(&["--frobnicate"])).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("--frobnicate"), "{text}");
        assert!(text.contains("usage: gatehouse-async-std"), "{text}");
        assert!(parse_args("gatehouse", args(&["--config"])).is_err());
    }
}
