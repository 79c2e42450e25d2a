//! `conformance`: the command-line entry point (`run`, `list`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use conformance::profiles::Profile;
use conformance::report::{Verdict, to_table};
use conformance::runner::{self, RunOptions};
use conformance::scenario::Requirement;
use conformance::services::{self, Services};
use conformance::{contract, isolation, process, registry};
use rabbitmq_management as management;

/// A black-box conformance suite for Discord gateway bridges.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the scenarios against an implementation.
    Run(RunArgs),
    /// List the scenarios: name, description and, per profile, required or extension (with
    /// --profile: only those that apply to it).
    List {
        /// Only scenarios that apply to this profile.
        #[arg(long)]
        profile: Option<Profile>,
        /// Only scenarios that are `required` (or `extension`) under the profile(s).
        #[arg(long)]
        requirement: Option<Requirement>,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// The implementation: a shell command, run with `sh -c` once per scenario.
    #[arg(long = "impl", value_name = "COMMAND")]
    implementation: String,
    /// The broker profile: gatehouse, spectacles, cordis, twilight-dispatch or retsu.
    #[arg(long, default_value = "gatehouse")]
    profile: Profile,
    /// Only scenarios whose name matches this glob (repeatable).
    #[arg(long = "scenario", value_name = "GLOB")]
    scenarios: Vec<String>,
    /// Only the scenarios the profile's contract requires (`required`), or only the Gatehouse
    /// extensions (`extension`); default: both, reported apart.
    #[arg(long)]
    requirement: Option<Requirement>,
    /// The Discord API version the implementation must connect with (`v=`), passed to it as
    /// DISCORD_API_VERSION: 10, or 9 (which Discord still documents).
    #[arg(
        long,
        env = contract::DISCORD_API_VERSION,
        default_value_t = contract::DEFAULT_API_VERSION,
        value_parser = clap::value_parser!(u8).range(9..=10)
    )]
    api_version: u8,
    /// Write a report: JUnit XML for *.xml, JSON otherwise (repeatable).
    #[arg(long = "report", value_name = "FILE")]
    reports: Vec<PathBuf>,
    /// How many scenarios run at once.
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Where to keep the implementation's output (default: a temporary directory).
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// RabbitMQ; each scenario gets its own vhost on it.
    #[arg(long, env = "AMQP_URL", default_value = services::DEFAULT_AMQP_URL)]
    amqp_url: String,
    /// Redis; each scenario gets its own key prefix.
    #[arg(long, env = "REDIS_URL", default_value = services::DEFAULT_REDIS_URL)]
    redis_url: String,
    /// The RabbitMQ management API (default: http://<AMQP host>:15672 with AMQP's credentials).
    #[arg(long, env = management::MANAGEMENT_URL_VAR)]
    management_url: Option<String>,
    /// Start RabbitMQ and Redis in Docker (testcontainers) instead of using the URLs.
    #[cfg(feature = "testcontainers")]
    #[arg(long)]
    containers: bool,
}

fn main() -> ExitCode {
    // lapin (rustls) and testcontainers each bring a rustls crypto provider; with two in one
    // binary rustls cannot choose and panics, so install one explicitly before anything else.
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CONFORMANCE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,lapin=off")),
        )
        .with_writer(std::io::stderr)
        .init();

    match Cli::parse().command {
        Command::List {
            profile,
            requirement,
        } => {
            list(profile, requirement);
            ExitCode::SUCCESS
        }
        Command::Run(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a tokio runtime");
            runtime.block_on(run(args))
        }
    }
}

/// One line per scenario: `name  description  [applicability]`, where the applicability says per
/// profile whether the scenario is required or an extension (`required: all profiles`,
/// `required: gatehouse; extension: spectacles, ...`). With `--profile`, the applicability is
/// that profile's: `[required]` or `[extension]`.
fn list(profile: Option<Profile>, requirement: Option<Requirement>) {
    let scenarios = registry::all();
    let width = scenarios.iter().map(|s| s.name().len()).max().unwrap_or(0);
    let profiles: Vec<Profile> = match profile {
        Some(p) => vec![p],
        None => Profile::ALL.to_vec(),
    };
    for s in scenarios {
        let mut groups = Vec::new();
        for r in [Requirement::Required, Requirement::Extension] {
            if requirement.is_some_and(|wanted| wanted != r) {
                continue;
            }
            let names: Vec<&str> = profiles
                .iter()
                .filter(|p| s.requirement(**p) == Some(r))
                .map(|p| p.name())
                .collect();
            if names.is_empty() {
                continue;
            }
            groups.push(if profile.is_some() {
                r.name().to_owned()
            } else if names.len() == Profile::ALL.len() {
                format!("{r}: all profiles")
            } else {
                format!("{r}: {}", names.join(", "))
            });
        }
        if groups.is_empty() {
            continue;
        }
        println!(
            "{:<width$}  {}  [{}]",
            s.name(),
            s.description(),
            groups.join("; ")
        );
    }
}

async fn run(args: RunArgs) -> ExitCode {
    let mut patterns = Vec::new();
    for raw in &args.scenarios {
        match glob::Pattern::new(raw) {
            Ok(p) => patterns.push(p),
            Err(e) => {
                eprintln!("conformance: bad --scenario glob {raw:?}: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let selected = runner::select(&registry::all(), args.profile, &patterns, args.requirement);
    if selected.is_empty() {
        eprintln!(
            "conformance: no scenario matches {:?} for profile {}",
            args.scenarios, args.profile
        );
        return ExitCode::from(2);
    }

    #[cfg(feature = "testcontainers")]
    let services = if args.containers {
        match Services::start_containers().await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("conformance: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        Services::external(args.amqp_url, args.redis_url, args.management_url)
    };
    #[cfg(not(feature = "testcontainers"))]
    let services = Services::external(args.amqp_url, args.redis_url, args.management_url);

    let options = RunOptions {
        implementation: args.implementation,
        profile: args.profile,
        patterns,
        jobs: args.jobs,
        log_dir: args.log_dir,
        run_id: isolation::new_run_id(),
        api_version: args.api_version,
    };
    let run = runner::run(&options, &services, selected);
    tokio::pin!(run);
    let report = tokio::select! {
        report = &mut run => report,
        signal = interrupted() => {
            eprintln!("conformance: {signal}: stopping the implementations and cleaning up");
            runner::cancel();
            let _ = tokio::task::spawn_blocking(|| process::stop_all(contract::STOP_GRACE)).await;
            conformance::private_services::stop_all();
            // The scenarios that were running notice and clean up after themselves.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(30), &mut run).await;
            if let Ok(management) = services.management()
                && let Err(e) = isolation::clean_up_run(&management, &services.redis_url, &options.run_id).await
            {
                eprintln!("conformance: cleaning up: {e}");
            }
            return ExitCode::from(130);
        }
    };
    print!("{}", to_table(&report));
    for path in &args.reports {
        if let Err(e) = report.write(path) {
            eprintln!("conformance: cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if report.all_passed() {
        ExitCode::SUCCESS
    } else if report.count(Verdict::Fail) > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::from(2)
    }
}

/// Resolves on SIGINT or SIGTERM, naming it.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "interrupted",
        _ = term.recv() => "terminated",
    }
}
