//! The command line both binaries share (clap, derive + environment), and the subcommands
//! that do not run the gateway: `status`, `config check`, `config example`, `completions`.
//!
//! Owns: the arguments (every option also an environment variable), their help text (with
//! the configuration's environment variables listed), and what the one-shot subcommands print.
//! Does not own: loading the configuration (`app::load_config`, passed in) or running the
//! gateway (`app::Launch`).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use gatehouse_config::Config;
use gatehouse_config::env::{TABLES, gatehouse};
use proto_core::store::{KeyLayout, ShardStatus};

use crate::logging::LogFormat;

/// Gatehouse: Discord gateway shards -> RabbitMQ, worker commands from RabbitMQ, sessions in
/// Redis.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// The configuration file (default: ./gatehouse.toml when present). Environment variables
    /// win over it.
    #[arg(
        short,
        long,
        env = "GATEHOUSE_CONFIG",
        global = true,
        value_name = "PATH"
    )]
    pub config: Option<PathBuf>,
    /// How log lines look on standard error (`text`: coloured on a terminal unless NO_COLOR is
    /// set; `json`: one object per line).
    #[arg(
        long,
        env = "GATEHOUSE_LOG_FORMAT",
        value_enum,
        default_value_t,
        global = true
    )]
    pub log_format: LogFormat,
    /// Also trust this CA (PEM) for `amqps://`, besides the system's roots.
    #[arg(
        long,
        env = "GATEHOUSE_AMQP_CA_FILE",
        global = true,
        value_name = "PATH"
    )]
    pub amqp_ca_file: Option<PathBuf>,
    /// Trust this CA (PEM) for `rediss://` instead of the system's roots.
    #[arg(
        long,
        env = "GATEHOUSE_REDIS_CA_FILE",
        global = true,
        value_name = "PATH"
    )]
    pub redis_ca_file: Option<PathBuf>,
    /// Publish events as JSON lines on standard output and read commands from standard
    /// input, when no broker is configured (`broker.type`, `BROKER_TYPE`).
    #[arg(long, env = "GATEHOUSE_STDIO", global = true)]
    pub stdio: bool,
    /// What to do (default: run).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (the default). With no Discord token it runs the demo: a mock gateway
    /// in-process replaying recorded traffic.
    Run,
    /// Show every shard status found in Redis under the configured key prefix (all processes
    /// of the cluster): owner process, state, latency, sequence, last event age, reconnects.
    Status {
        /// Print JSON (one array of shard statuses) instead of a table.
        #[arg(long, env = "GATEHOUSE_STATUS_JSON")]
        json: bool,
    },
    /// Move the running cluster (cluster mode: `GATEHOUSE_CLUSTER`) to another shard count
    /// without downtime: its processes bring the new shard set up beside the old one, switch
    /// publishing to it once every new shard is READY with its guilds, then close the old set.
    /// Returns once the request is recorded in Redis (`gatehouse status` shows the progress).
    Reshard {
        /// The new shard count.
        #[arg(long, required_unless_present = "cancel")]
        to: Option<u32>,
        /// Give up a re-shard under way (the new set closes; the old one never stopped).
        #[arg(long, conflicts_with = "to")]
        cancel: bool,
    },
    /// Check or show the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Exit 0 when the running process's `/healthz` answers (for container health checks;
    /// needs no curl in the image).
    Healthcheck {
        /// The URL to check (default: `/healthz` at `metrics.address`, loopback when that
        /// address is unspecified).
        #[arg(long, env = "GATEHOUSE_HEALTHCHECK_URL")]
        url: Option<String>,
    },
    /// Print a completion script for a shell (for example: `gatehouse completions bash >
    /// /etc/bash_completion.d/gatehouse`).
    Completions {
        /// The shell.
        #[arg(env = "GATEHOUSE_COMPLETIONS_SHELL")]
        shell: clap_complete::Shell,
    },
}

/// `gatehouse config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the file and the environment and print the effective configuration (secrets
    /// redacted); exits non-zero on an error.
    Check,
    /// Print an example configuration file with every key and its default.
    Example,
}

/// The example configuration file.
pub const EXAMPLE_CONFIG: &str = include_str!("../../runtime-tokio/gatehouse.example.toml");

/// The command definition for the executable `binary`, with the configuration's environment
/// variables in the help.
pub fn command(binary: &'static str) -> clap::Command {
    Cli::command()
        .name(binary)
        .bin_name(binary)
        .after_help(environment_help())
}

/// Parses the process's arguments (exits with the usage on a mistake, as clap does).
pub fn parse(binary: &'static str) -> Cli {
    let matches = command(binary).get_matches_from(go_style_flags(std::env::args_os()));
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// `-config PATH`, the Spectacles gateway's spelling (Go flags), as `--config PATH` (clap would
/// read it as `-c onfig`), so that its command lines keep working.
fn go_style_flags(
    args: impl IntoIterator<Item = std::ffi::OsString>,
) -> impl Iterator<Item = std::ffi::OsString> {
    args.into_iter().map(|arg| {
        if arg == "-config" {
            "--config".into()
        } else {
            arg
        }
    })
}

fn environment_help() -> String {
    let mut help = String::from(
        "Configuration environment variables (they win over the file; an empty value counts \
         as unset; a ./.env file is read too):\n",
    );
    for var in gatehouse::TABLE.vars {
        help.push_str(&format!("  {:<28} {}\n", var.names[0], var.path.join(".")));
    }
    for composite in gatehouse::TABLE.composites {
        help.push_str(&format!(
            "  {:<28} {}\n",
            composite.names[0],
            composite.path.join(".")
        ));
    }
    help.push_str("The predecessors' names are read too (see the README's migration sections):\n");
    for table in TABLES
        .iter()
        .filter(|t| t.source != gatehouse::TABLE.source)
    {
        let names: Vec<&str> = table
            .composites
            .iter()
            .flat_map(|c| c.names.iter().copied())
            .chain(table.vars.iter().flat_map(|v| v.names.iter().copied()))
            .collect();
        if names.is_empty() {
            continue;
        }
        let only = table
            .only_with
            .map(|kind| format!(" (only with the {} profile)", kind.name()))
            .unwrap_or_default();
        help.push_str(&format!("  {}{only}: {}\n", table.source, names.join(", ")));
    }
    help.push_str("Logs: RUST_LOG (default info), NO_COLOR. Ctrl-C or SIGTERM shuts down cleanly.");
    help
}

/// Runs a subcommand other than `run` with the loaded configuration (`config` is the result
/// of loading it, so that `config check` can report the error itself).
pub fn run_command(
    binary: &'static str,
    subcommand: &Command,
    config: anyhow::Result<Config>,
) -> anyhow::Result<()> {
    let mut out = Vec::new();
    match subcommand {
        Command::Run => unreachable!("`run` is not a one-shot command"),
        Command::Config(ConfigCommand::Example) => out.extend_from_slice(EXAMPLE_CONFIG.as_bytes()),
        Command::Config(ConfigCommand::Check) => {
            let config = config?;
            // The shard list must fit the count, and the profile's settings the cluster. Without
            // a configured count (Discord recommends one at start-up), the smallest that holds
            // the configured shards stands in.
            let assumed = config
                .discord
                .shard_ids
                .as_ref()
                .and_then(|ids| ids.iter().max())
                .map_or(1, |max| max + 1);
            let cluster = config.cluster(assumed)?;
            proto_core::profile::Router::new(&config.profile, &cluster)?;
            writeln!(
                out,
                "# the configuration is valid; in effect (secrets redacted):"
            )?;
            writeln!(out, "{config:#?}")?;
        }
        Command::Status { json } => {
            let config = config?;
            let statuses = read_statuses(&config)?;
            if *json {
                serde_json::to_writer_pretty(&mut out, &statuses)?;
                writeln!(out)?;
            } else {
                let now = crate::status::epoch_ms(std::time::SystemTime::now());
                out.extend_from_slice(
                    status_table(&config.redis.key_prefix, &statuses, now).as_bytes(),
                );
            }
        }
        Command::Reshard { to, cancel } => {
            let config = config?;
            writeln!(out, "{}", reshard(&config, *to, *cancel)?)?;
        }
        Command::Healthcheck { url } => {
            let url = match url {
                Some(url) => url.clone(),
                None => healthz_url(config?.metrics.address)?,
            };
            let agent = ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(5)))
                .build()
                .new_agent();
            let mut response = agent
                .get(&url)
                .call()
                .with_context(|| format!("{url} does not answer"))?;
            let body = response.body_mut().read_to_string().unwrap_or_default();
            write!(out, "{body}")?;
        }
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut command(binary), binary, &mut out);
        }
    }
    // A closed pipe (`gatehouse config example | head`) is no error.
    match std::io::stdout().lock().write_all(&out) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// `gatehouse reshard`: records the target shard count (or drops it) in the cluster's counts
/// in Redis, with the scripts the members use; returns what to tell the operator.
fn reshard(config: &Config, to: Option<u32>, cancel: bool) -> anyhow::Result<String> {
    use proto_core::cluster::{ClusterKeys, bot_id_from_token, scripts};
    let name = config.cluster.name.as_deref().context(
        "re-sharding needs cluster mode: set GATEHOUSE_CLUSTER (or cluster.name) to the cluster's name",
    )?;
    let url = &config.redis.url;
    let target = crate::redis_link::RedisTarget::open(url.expose())
        .map_err(|e| anyhow::anyhow!("invalid Redis URL {url}: {}", url.scrub(&e.to_string())))?;
    let mut connection = target
        .blocking_connection(Duration::from_secs(5))
        .map_err(|e| redis_error(e, url))?;
    let keys = ClusterKeys::new(
        &config.redis.key_prefix,
        &bot_id_from_token(config.discord.token.expose()),
        name,
    );
    if cancel {
        let dropped: i64 = redis::cmd("EVAL")
            .arg(scripts::CANCEL)
            .arg(1)
            .arg(keys.shard_counts())
            .arg("")
            .query(&mut connection)
            .map_err(|e| redis_error(e, url))?;
        return Ok(if dropped == 1 {
            format!("cluster {name}: re-shard cancelled; the new shard set closes")
        } else {
            format!("cluster {name}: no re-shard was under way")
        });
    }
    let to = to.context("--to N is required")?;
    anyhow::ensure!(to > 0, "--to must be at least 1");
    let reply: Vec<i64> = redis::cmd("EVAL")
        .arg(scripts::RESHARD_REQUEST)
        .arg(1)
        .arg(keys.shard_counts())
        .arg(to)
        .query(&mut connection)
        .map_err(|e| redis_error(e, url))?;
    match reply.as_slice() {
        [0, current, _] => Ok(format!(
            "cluster {name}: re-sharding from {current} to {to} shards; the new set publishes once every shard is ready"
        )),
        [1, current, target] => anyhow::bail!(
            "cluster {name}: a re-shard from {current} to {target} shards is under way; wait for it or `gatehouse reshard --cancel`"
        ),
        [2, ..] => Ok(format!("cluster {name}: already runs {to} shards")),
        [3, ..] => anyhow::bail!(
            "cluster {name}: no shard count recorded in Redis (is the cluster running, with this key prefix and bot token?)"
        ),
        other => anyhow::bail!("unexpected answer from Redis: {other:?}"),
    }
}

/// `/healthz` at the HTTP endpoints' address; an unspecified IP (`0.0.0.0`, `::`) means the
/// loopback one.
fn healthz_url(address: Option<std::net::SocketAddr>) -> anyhow::Result<String> {
    let mut address = address.context(
        "no HTTP endpoints are configured: set GATEHOUSE_METRICS_ADDRESS (or pass --url)",
    )?;
    if address.ip().is_unspecified() {
        address.set_ip(match address {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    Ok(format!("http://{address}/healthz"))
}

/// One shard as `gatehouse status` shows it: its status, and in cluster mode its owner's live
/// figures.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ShardView {
    /// The status the shard wrote.
    #[serde(flatten)]
    pub status: ShardStatus,
    /// The member running it (cluster mode), with its live figures.
    #[serde(flatten)]
    pub live: Option<LiveView>,
}

/// The live part of [`ShardView`].
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LiveView {
    /// The member running the shard.
    pub owner: String,
    /// The latest heartbeat round trip in milliseconds.
    pub latency_ms: Option<f64>,
    /// The last sequence received, as the owner last reported it (fresher than the status,
    /// which is written on state changes).
    pub live_sequence: Option<u64>,
    /// When its last event arrived (ms since the Unix epoch).
    pub last_event_at_ms: Option<u64>,
}

/// Every shard status stored under the configured prefix, by shard, with the cluster's live
/// figures where a member reports them.
fn read_statuses(config: &Config) -> anyhow::Result<Vec<ShardView>> {
    use redis::Commands;
    let url = &config.redis.url;
    let target = crate::redis_link::RedisTarget::open(url.expose())
        .map_err(|e| anyhow::anyhow!("invalid Redis URL {url}: {}", url.scrub(&e.to_string())))?;
    let mut connection = target
        .blocking_connection(Duration::from_secs(5))
        .map_err(|e| redis_error(e, url))?;
    // In cluster mode each shard set keeps its statuses under its own prefix: show the
    // cluster's current set.
    let layout = match config.cluster.name.as_deref() {
        Some(name) => {
            let keys = proto_core::cluster::ClusterKeys::new(&config.redis.key_prefix, "", name);
            let current: Option<u32> = connection
                .hget(keys.shard_counts(), "current")
                .map_err(|e| redis_error(e, url))?;
            let prefix = &config.redis.key_prefix;
            match current {
                Some(count) => KeyLayout::new(crate::cluster::set_key_prefix(prefix, name, count)),
                None => KeyLayout::new(prefix.clone()),
            }
        }
        None => KeyLayout::new(config.redis.key_prefix.clone()),
    };
    let pattern = layout.status_pattern();
    let keys = connection
        .scan_match::<_, String>(&pattern)
        .map_err(|e| redis_error(e, url))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| redis_error(e, url))?;
    let mut statuses = Vec::new();
    for key in keys {
        let value: Option<Vec<u8>> = connection.get(&key).map_err(|e| redis_error(e, url))?;
        if let Some(status) = value.as_deref().and_then(proto_core::store::decode_status) {
            statuses.push(status);
        }
    }
    let live_keys = connection
        .scan_match::<_, String>(crate::cluster::live_pattern(&config.redis.key_prefix))
        .map_err(|e| redis_error(e, url))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| redis_error(e, url))?;
    let mut live = Vec::new();
    for key in live_keys {
        let value: Option<Vec<u8>> = connection.get(&key).map_err(|e| redis_error(e, url))?;
        if let Some(shard) = value
            .as_deref()
            .and_then(|v| serde_json::from_slice::<crate::cluster::LiveShard>(v).ok())
        {
            live.push(shard);
        }
    }
    Ok(merge_views(statuses, live))
}

/// Statuses joined with live figures by shard (the freshest live entry wins), by shard.
pub fn merge_views(
    statuses: Vec<ShardStatus>,
    mut live: Vec<crate::cluster::LiveShard>,
) -> Vec<ShardView> {
    live.sort_by_key(|l| std::cmp::Reverse(l.updated_at_ms));
    let mut views: Vec<ShardView> = statuses
        .into_iter()
        .map(|status| {
            let live = live
                .iter()
                .find(|l| l.shard == status.shard)
                .map(|l| LiveView {
                    owner: l.owner.clone(),
                    latency_ms: l.latency_ms,
                    live_sequence: l.sequence,
                    last_event_at_ms: l.last_event_at_ms,
                });
            ShardView { status, live }
        })
        .collect();
    views.sort_by_key(|v| v.status.shard);
    views
}

fn redis_error(error: redis::RedisError, url: &gatehouse_config::SecretUrl) -> anyhow::Error {
    let text = url.scrub(&error.to_string());
    match crate::advice::redis(&text, &url.redacted()) {
        Some(advice) => anyhow::anyhow!("Redis at {url}: {text}\n{advice}"),
        None => anyhow::anyhow!("Redis at {url}: {text}"),
    }
}

/// The table `gatehouse status` prints.
pub fn status_table(prefix: &str, views: &[ShardView], now_ms: u64) -> String {
    if views.is_empty() {
        return format!("no shard status in Redis under the prefix {prefix:?}\n");
    }
    let age = |at_ms: u64| {
        if at_ms == 0 {
            "?".to_owned()
        } else {
            format!("{}s ago", now_ms.saturating_sub(at_ms) / 1000)
        }
    };
    let row = |cells: [&str; 9]| {
        format!(
            "{:>5}  {:>5}  {:<28} {:<15} {:>9} {:>12}  {:>10}  {:>10}  {:>9}\n",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            cells[5],
            cells[6],
            cells[7],
            cells[8]
        )
    };
    let mut table = row([
        "shard",
        "of",
        "owner",
        "state",
        "latency",
        "sequence",
        "last event",
        "reconnects",
        "updated",
    ]);
    for view in views {
        let s = &view.status;
        let live = view.live.as_ref();
        let sequence = live
            .and_then(|l| l.live_sequence)
            .or(s.sequence)
            .map_or("-".to_owned(), |n| n.to_string());
        let owner = live.map_or("-", |l| l.owner.as_str());
        let latency = live
            .and_then(|l| l.latency_ms)
            .map_or("-".to_owned(), |ms| format!("{ms:.0} ms"));
        let last_event = live
            .and_then(|l| l.last_event_at_ms)
            .map_or("-".to_owned(), age);
        table.push_str(&row([
            &s.shard.to_string(),
            &s.shard_count.to_string(),
            owner,
            &s.state,
            &latency,
            &sequence,
            &last_event,
            &s.reconnects.to_string(),
            &age(s.updated_at_ms),
        ]));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_from(args: &[&str]) -> Result<Cli, clap::Error> {
        let matches = command("gatehouse").try_get_matches_from(args)?;
        Cli::from_arg_matches(&matches)
    }

    #[test]
    fn the_definition_is_consistent() {
        command("gatehouse").debug_assert();
    }

    #[test]
    fn subcommands_and_global_options() {
        let cli = parse_from(&["gatehouse"]).unwrap();
        assert!(cli.command.is_none());
        let cli = parse_from(&["gatehouse", "status", "--json", "-c", "x.toml"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Status { json: true })));
        assert_eq!(cli.config, Some(PathBuf::from("x.toml")));
        let cli = parse_from(&["gatehouse", "--log-format", "json", "config", "check"]).unwrap();
        assert_eq!(cli.log_format, LogFormat::Json);
        assert!(matches!(
            cli.command,
            Some(Command::Config(ConfigCommand::Check))
        ));
        let error = parse_from(&["gatehouse", "--frobnicate"]).unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::UnknownArgument);
        let version = parse_from(&["gatehouse", "--version"]).unwrap_err();
        assert_eq!(version.kind(), clap::error::ErrorKind::DisplayVersion);
    }

    #[test]
    fn the_spectacles_config_flag_is_understood() {
        let args = go_style_flags(["gatehouse", "-config", "gateway.toml"].map(Into::into));
        let matches = command("gatehouse").try_get_matches_from(args).unwrap();
        let cli = Cli::from_arg_matches(&matches).unwrap();
        assert_eq!(cli.config, Some(PathBuf::from("gateway.toml")));
    }

    #[test]
    fn the_help_lists_the_configuration_variables() {
        let help = command("gatehouse").render_help().to_string();
        assert!(help.contains("DISCORD_TOKEN"), "{help}");
        assert!(help.contains("AMQP_URL"), "{help}");
        assert!(help.contains("GATEHOUSE_LOG_FORMAT"), "{help}");
    }

    #[test]
    fn the_example_configuration_loads() {
        let config = Config::load(EXAMPLE_CONFIG, |_| None).unwrap();
        assert!(!config.discord.has_token());
    }

    #[test]
    fn the_healthcheck_asks_the_local_endpoint() {
        assert_eq!(
            healthz_url(Some("0.0.0.0:9090".parse().unwrap())).unwrap(),
            "http://127.0.0.1:9090/healthz"
        );
        assert_eq!(
            healthz_url(Some("[::]:9090".parse().unwrap())).unwrap(),
            "http://[::1]:9090/healthz"
        );
        assert_eq!(
            healthz_url(Some("10.1.2.3:80".parse().unwrap())).unwrap(),
            "http://10.1.2.3:80/healthz"
        );
        assert!(healthz_url(None).is_err());
    }

    #[test]
    fn completions_are_generated() {
        let mut script = Vec::new();
        clap_complete::generate(
            clap_complete::Shell::Bash,
            &mut command("gatehouse"),
            "gatehouse",
            &mut script,
        );
        let script = String::from_utf8(script).unwrap();
        assert!(script.contains("status"), "{script}");
    }

    #[test]
    fn the_status_table_has_a_row_per_shard() {
        let status = |shard, state: &str| ShardStatus {
            shard,
            shard_count: 2,
            state: state.into(),
            reconnects: 1,
            sequence: Some(42),
            updated_at_ms: 10_000,
            latency_ms: None,
            last_ack_ms: None,
        };
        let live = crate::cluster::LiveShard {
            shard: 1,
            owner: "host-42-abcdef".into(),
            latency_ms: Some(41.6),
            sequence: Some(57),
            last_event_at_ms: Some(13_000),
            updated_at_ms: 14_000,
        };
        let older = crate::cluster::LiveShard {
            owner: "gone-1-000000".into(),
            updated_at_ms: 1_000,
            ..live.clone()
        };
        let views = merge_views(
            vec![status(1, "resuming"), status(0, "active")],
            vec![older, live],
        );
        let table = status_table("gatehouse", &views, 15_000);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(
            lines[1].contains("active") && lines[1].contains("5s ago"),
            "{table}"
        );
        assert!(lines[2].contains("resuming"), "{table}");
        assert!(
            lines[2].contains("host-42-abcdef") && lines[2].contains("42 ms"),
            "{table}"
        );
        assert!(lines[2].contains("2s ago"), "the last event's age: {table}");
        assert!(
            lines[2].contains("57"),
            "the owner's fresher sequence: {table}"
        );
        let json = serde_json::to_value(&views).unwrap();
        assert_eq!(json[1]["owner"], "host-42-abcdef");
        assert_eq!(json[1]["state"], "resuming");
        assert_eq!(json[0].get("owner"), None);
        assert!(status_table("p", &[], 0).contains("no shard status"));
    }
}
