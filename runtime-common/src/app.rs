//! The binaries' edges, written once for both runtimes: the command line (`cli`), logging
//! (`logging`), the configuration (file and environment), process-wide set-up (rustls crypto
//! provider, metrics recorder, HTTP endpoints, Ctrl-C / SIGTERM), and the choice between the
//! real gateway and the demo.
//!
//! Owns: everything `gatehouse` and `gatehouse-async-std` do before and around
//! [`crate::run`]. Does not own: starting an executor (each runtime crate's `main` does that
//! and nothing else), or anything the gateway does once it runs (the other modules).

use std::path::Path;

use anyhow::Context;
use gatehouse_config::Config;
use tokio::sync::watch;

use crate::cli::{self, Command};
use crate::runtime::Runtime;

/// A process that has read its arguments and configuration and is ready to run on a runtime.
#[derive(Debug)]
pub struct Launch {
    config: Config,
    shutdown: watch::Receiver<bool>,
}

impl Launch {
    /// Everything before the executor starts: reads the arguments (see `cli`), starts
    /// logging, installs ring as the rustls crypto provider and the trusted TLS roots (`tls`),
    /// loads the configuration (the file, by default `./gatehouse.toml` when present, plus
    /// the environment). A one-shot subcommand (`status`, `config ...`, `completions`) runs
    /// here and gives `None`. For `run` it installs the metrics recorder and (with
    /// `metrics.address`) the HTTP endpoints, and handles Ctrl-C and SIGTERM (either starts a
    /// clean shutdown).
    ///
    /// `binary` is the executable's name, for the usage text and the build info.
    pub fn from_args(binary: &'static str) -> anyhow::Result<Option<Self>> {
        let args = cli::parse(binary);
        crate::logging::init(args.log_format);
        crate::install_crypto_provider();
        crate::tls::configure(crate::tls::TlsRoots::read(
            args.amqp_ca_file.as_deref(),
            args.redis_ca_file.as_deref(),
        )?);
        let config = load_config(args.config.as_deref()).and_then(|c| with_stdio(c, args.stdio));
        match &args.command {
            None | Some(Command::Run) => {}
            Some(command) => {
                cli::run_command(binary, command, config)?;
                return Ok(None);
            }
        }
        let config = config?;
        let metrics =
            crate::metrics::install(binary).context("cannot install the metrics recorder")?;
        if let Some(address) = config.metrics.address {
            crate::http::start(address, metrics, &config.metrics.path)
                .with_context(|| format!("cannot serve the HTTP endpoints at {address}"))?;
        }
        crate::status::global().set_links(&config.amqp.urls, &config.redis.url);
        let shutdown = install_signal_handler()?;
        Ok(Some(Self { config, shutdown }))
    }

    /// Runs on `rt` until Ctrl-C / SIGTERM (then shuts down cleanly) or every shard stops:
    /// the gateway when a Discord token is configured, otherwise the demo (a mock gateway
    /// in-process), or an error in a build without the `demo` feature.
    pub async fn run<R: Runtime>(self, rt: R) -> anyhow::Result<()> {
        let redis_url = self.config.redis.url.redacted();
        let reports = crate::error_reports::init(self.config.sentry.url.as_ref());
        let result = self
            .run_gateway_or_demo(rt)
            .await
            .map_err(|e| explain(e, &redis_url));
        if let Err(e) = &result {
            crate::error_reports::report(&format!("{e:#}"));
        }
        // Sends what is still queued before the process ends.
        drop(reports);
        result
    }

    async fn run_gateway_or_demo<R: Runtime>(self, rt: R) -> anyhow::Result<()> {
        // Before anything connects: amqprs is refused where it cannot run.
        if self.config.broker.kind() == gatehouse_config::BrokerKind::Amqp {
            crate::outputs::check_amqp_client::<R>(self.config.amqp.client)?;
        }
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
            anyhow::bail!("no Discord token: set DISCORD_TOKEN (this build has no demo mode)")
        }
    }
}

/// A Redis failure at start-up with advice, when it is a recognisable mistake (the broker's
/// are explained where they are retried: `broker`).
fn explain(error: anyhow::Error, redis_url: &str) -> anyhow::Error {
    let is_store = matches!(
        error.downcast_ref::<crate::RunError>(),
        Some(crate::RunError::Store(_))
    );
    match is_store
        .then(|| crate::advice::redis(&error.to_string(), redis_url))
        .flatten()
    {
        Some(advice) => error.context(advice),
        None => error,
    }
}

/// The files looked for in the working directory when no `--config` is given, first found
/// wins: Gatehouse's own, the Spectacles gateway's default (`-config gateway.toml`), and
/// Retsu's fixed `./config.json`.
pub const DEFAULT_CONFIG_FILES: [&str; 3] = ["gatehouse.toml", "gateway.toml", "config.json"];

/// The `.env` file read from the working directory (twilight-dispatch's setup); the process
/// environment wins over it.
pub const DOTENV_FILE: &str = ".env";

/// The configuration from `path` (default: the first of [`DEFAULT_CONFIG_FILES`] present), the
/// process environment and `./.env`. The one place the binaries load it. The warnings (names
/// recognised but without effect) are logged here, one line each.
pub fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    let text = match path {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the configuration file {}", path.display()))?,
        None => {
            let mut text = String::new();
            for name in DEFAULT_CONFIG_FILES {
                match std::fs::read_to_string(name) {
                    Ok(found) => {
                        tracing::info!(file = name, "reading the configuration file");
                        text = found;
                        break;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e).with_context(|| format!("cannot read {name}")),
                }
            }
            text
        }
    };
    let dotenv = match std::fs::read_to_string(DOTENV_FILE) {
        Ok(text) => gatehouse_config::formats::dotenv::parse(&text)
            .map_err(|e| anyhow::anyhow!("{DOTENV_FILE}: {e}"))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {DOTENV_FILE}")),
    };
    let env = |name: &str| {
        crate::process_env(name).or_else(|| {
            dotenv
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        })
    };
    let loaded = Config::load_reporting(&text, env)?;
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    Ok(loaded.config)
}

/// `--stdio`: stdio when no broker is configured; a configured other one is an error.
fn with_stdio(mut config: Config, stdio: bool) -> anyhow::Result<Config> {
    use gatehouse_config::BrokerKind;
    match config.broker.kind {
        _ if !stdio => {}
        None => config.broker.kind = Some(BrokerKind::Stdio),
        Some(BrokerKind::Stdio) => {}
        Some(other) => anyhow::bail!(
            "--stdio: the configuration already selects the {other:?} broker (broker.type or BROKER_TYPE)"
        ),
    }
    Ok(config)
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
