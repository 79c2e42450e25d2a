//! Runs the selected scenarios, `--jobs` at a time: for each one, isolate (vhost, Redis prefix),
//! start the mock gateway and a worker connection, hand the scenario its context with a time
//! budget, then stop the implementation and clean up whatever happened. Collects the outcomes
//! into a [`RunReport`].
//!
//! Owns scheduling and the per-run lifecycle. It does not judge anything itself (the scenarios
//! do) and does not format results (see [`crate::report`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::broker::Broker;
use crate::contract::ImplEnv;
use crate::gateway::Gateway;
use crate::isolation::Isolation;
use crate::process::{Ending, log_tail};
use crate::profiles::Profile;
use crate::redis_store::RedisStore;
use crate::report::{Outcome, RunReport, Verdict};
use crate::scenario::{Context, Failure, FailureKind, Requirement, Scenario};
use crate::services::Services;
use rabbitmq_management::ManagementApi;

/// What `conformance run` was asked to do.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The `--impl` command, run with `sh -c`.
    pub implementation: String,
    /// The profile.
    pub profile: Profile,
    /// `--scenario` globs (empty: all).
    pub patterns: Vec<glob::Pattern>,
    /// Scenarios run at once.
    pub jobs: usize,
    /// Where the implementation's logs go (default: a temporary directory).
    pub log_dir: Option<PathBuf>,
    /// This run's id (see [`crate::isolation::new_run_id`]): part of every vhost and key prefix.
    pub run_id: String,
    /// The Discord API version the implementation must use (`DISCORD_API_VERSION`).
    pub api_version: u8,
}

static CANCELLED: AtomicBool = AtomicBool::new(false);

/// Starts no further scenario (an interrupted suite); running ones go on until they end.
pub fn cancel() {
    CANCELLED.store(true, Ordering::SeqCst);
}

/// The scenarios that apply to `profile` (as `requirement`, when given) and match one of
/// `patterns` (all when empty), in registry order.
pub fn select(
    scenarios: &[Arc<dyn Scenario>],
    profile: Profile,
    patterns: &[glob::Pattern],
    requirement: Option<Requirement>,
) -> Vec<Arc<dyn Scenario>> {
    scenarios
        .iter()
        .filter(|s| {
            s.requirement(profile)
                .is_some_and(|r| requirement.is_none_or(|wanted| r == wanted))
        })
        .filter(|s| patterns.is_empty() || patterns.iter().any(|p| p.matches(&s.name())))
        .cloned()
        .collect()
}

struct Shared {
    options: RunOptions,
    amqp_url: String,
    redis_url: String,
    management: ManagementApi,
    run_id: String,
    token: String,
    log_dir: PathBuf,
}

/// Runs `scenarios` against the implementation and returns the report. Progress goes to stderr.
pub async fn run(
    options: &RunOptions,
    services: &Services,
    scenarios: Vec<Arc<dyn Scenario>>,
) -> RunReport {
    let started = Instant::now();
    let started_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let run_id = options.run_id.clone();
    let log_dir = options
        .log_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("conformance-{run_id}")));
    let mut report = RunReport {
        implementation: options.implementation.clone(),
        profile: options.profile.name().to_owned(),
        run_id: run_id.clone(),
        started_at,
        duration: Duration::ZERO,
        outcomes: Vec::new(),
    };

    let management = match services.management() {
        Ok(m) => m,
        Err(e) => return all_errored(report, &scenarios, options.profile, &e, started),
    };
    if let Err(e) = services.preflight(&management).await {
        return all_errored(report, &scenarios, options.profile, &e, started);
    }

    let shared = Arc::new(Shared {
        options: options.clone(),
        amqp_url: services.amqp_url.clone(),
        redis_url: services.redis_url.clone(),
        management,
        token: format!("conformance.{run_id}.token"),
        run_id,
        log_dir,
    });
    eprintln!(
        "conformance: {} scenario(s), profile {}, {} at a time; implementation logs in {}",
        scenarios.len(),
        options.profile,
        options.jobs.max(1),
        shared.log_dir.display()
    );

    let semaphore = Arc::new(Semaphore::new(options.jobs.max(1)));
    let mut handles = Vec::new();
    for (index, scenario) in scenarios.iter().enumerate() {
        let permit_source = semaphore.clone();
        let shared = shared.clone();
        let scenario = scenario.clone();
        handles.push(tokio::spawn(async move {
            let permit = permit_source.acquire_owned().await.expect("never closed");
            if CANCELLED.load(Ordering::SeqCst) {
                return errored(scenario.as_ref(), shared.options.profile, "interrupted");
            }
            let outcome = run_one(index, scenario, shared, permit).await;
            eprintln!(
                "  {:<5} {} ({:.1}s)",
                outcome.verdict.label(),
                outcome.scenario,
                outcome.duration.as_secs_f64()
            );
            outcome
        }));
    }
    for (handle, scenario) in handles.into_iter().zip(&scenarios) {
        let outcome = match handle.await {
            Ok(outcome) => outcome,
            Err(e) => errored(
                scenario.as_ref(),
                options.profile,
                &format!("runner task: {e}"),
            ),
        };
        report.outcomes.push(outcome);
    }
    report.duration = started.elapsed();
    report
}

fn all_errored(
    mut report: RunReport,
    scenarios: &[Arc<dyn Scenario>],
    profile: Profile,
    reason: &str,
    started: Instant,
) -> RunReport {
    report.outcomes = scenarios
        .iter()
        .map(|s| errored(s.as_ref(), profile, reason))
        .collect();
    report.duration = started.elapsed();
    report
}

fn errored(scenario: &dyn Scenario, profile: Profile, reason: &str) -> Outcome {
    Outcome {
        scenario: scenario.name(),
        requirement: requirement_of(scenario, profile),
        description: scenario.description(),
        profile: profile.name().to_owned(),
        verdict: Verdict::Error,
        reason: Some(reason.to_owned()),
        duration: Duration::ZERO,
        log_path: None,
        log_tail: String::new(),
    }
}

/// The scenario's requirement under `profile` (only selected scenarios run, so it applies).
fn requirement_of(scenario: &dyn Scenario, profile: Profile) -> Requirement {
    scenario
        .requirement(profile)
        .unwrap_or(Requirement::Required)
}

async fn run_one(
    index: usize,
    scenario: Arc<dyn Scenario>,
    shared: Arc<Shared>,
    job_slot: OwnedSemaphorePermit,
) -> Outcome {
    let started = Instant::now();
    let name = scenario.name();
    let profile = shared.options.profile;
    let log_path = shared.log_dir.join(format!("{index:02}-{name}.log"));
    let isolation = match Isolation::create(
        &shared.management,
        &shared.amqp_url,
        &shared.run_id,
        index,
        &name,
    )
    .await
    {
        Ok(i) => i,
        Err(e) => {
            return finish(
                &scenario,
                profile,
                started,
                Err(Failure::error(e.to_string())),
                None,
            );
        }
    };

    let result = run_isolated(&scenario, &shared, &isolation, &log_path, job_slot).await;

    if let Err(e) = isolation.clean_up(&shared.redis_url).await {
        eprintln!("conformance: warning: cleaning up after {name}: {e}");
    }
    finish(&scenario, profile, started, result, Some(log_path))
}

async fn run_isolated(
    scenario: &Arc<dyn Scenario>,
    shared: &Shared,
    isolation: &Isolation,
    log_path: &std::path::Path,
    job_slot: OwnedSemaphorePermit,
) -> Result<(), Failure> {
    let profile = shared.options.profile;
    let setup = scenario.setup(profile);
    let mut mock = setup.mock.clone();
    mock.token = Some(shared.token.clone());
    mock.expected_intents = Some(setup.intents);
    mock.required_shard_count = (!setup.any_shard_count).then_some(setup.shard_count);
    mock.shards = setup.shard_count;
    if mock.heartbeat_late_slack.is_none() {
        mock.heartbeat_late_slack = Some(crate::gateway::late_slack(mock.heartbeat_interval));
    }
    let gateway = Gateway::start(mock)
        .map_err(|e| Failure::error(format!("starting the mock gateway: {e}")))?;
    let broker = Broker::connect(&isolation.amqp_url)
        .await
        .map_err(|e| Failure::error(e.to_string()))?;
    let redis = RedisStore::connect(&shared.redis_url, &isolation.redis_prefix)
        .await
        .map_err(|e| Failure::error(e.to_string()))?;
    let env = ImplEnv {
        api_base: gateway.api_base_for(shared.options.api_version),
        api_version: shared.options.api_version,
        token: shared.token.clone(),
        shard_count: setup.shard_count,
        shard_ids: setup.shard_ids.clone(),
        intents: setup.intents,
        compress: setup.compress,
        encoding: setup.encoding,
        amqp_url: isolation.amqp_url.clone(),
        redis_url: shared.redis_url.clone(),
        redis_key_prefix: isolation.redis_prefix.clone(),
        profile,
        body_encoding: setup
            .body_encoding
            .unwrap_or_else(|| profile.default_body_encoding()),
        scenario: scenario.name(),
    };
    let mut ctx = Context::new(
        profile,
        setup,
        env,
        gateway,
        broker,
        shared.management.clone(),
        isolation.vhost.clone(),
        redis,
        shared.options.implementation.clone(),
        log_path.to_owned(),
        job_slot,
    );

    // The scenario runs in its own task so that a panic becomes an outcome, not a crash.
    let budget = scenario.budget();
    let task_scenario = scenario.clone();
    let task = tokio::spawn(async move {
        let result = match tokio::time::timeout(budget, task_scenario.run(&mut ctx)).await {
            // Every scenario checks that the transport it claims to test was used.
            Ok(Ok(())) => ctx.check_transport(),
            Ok(result) => result,
            Err(_) => Err(Failure::fail(format!(
                "the scenario did not finish within its budget of {budget:.0?}"
            ))),
        };
        let ending = ctx.stop_implementation().await;
        ctx.broker.close().await;
        (result, ending)
    });
    match task.await {
        Ok((result, ending)) => {
            if result.is_ok() && ending == Some(Ending::Killed) {
                return Err(Failure::fail(format!(
                    "the implementation ignored SIGTERM for {:.0?} and was killed",
                    crate::contract::STOP_GRACE
                )));
            }
            result
        }
        Err(e) => Err(Failure::error(format!("the scenario panicked: {e}"))),
    }
}

fn finish(
    scenario: &Arc<dyn Scenario>,
    profile: Profile,
    started: Instant,
    result: Result<(), Failure>,
    log_path: Option<PathBuf>,
) -> Outcome {
    let (verdict, reason) = match result {
        Ok(()) => (Verdict::Pass, None),
        Err(f) if f.kind == FailureKind::Fail => (Verdict::Fail, Some(f.message)),
        Err(f) => (Verdict::Error, Some(f.message)),
    };
    let log_tail = match (&log_path, verdict) {
        (Some(path), Verdict::Fail | Verdict::Error) => log_tail(path, 40),
        _ => String::new(),
    };
    Outcome {
        scenario: scenario.name(),
        requirement: requirement_of(scenario.as_ref(), profile),
        description: scenario.description(),
        profile: profile.name().to_owned(),
        verdict,
        reason,
        duration: started.elapsed(),
        log_path: log_path.filter(|p| p.exists()),
        log_tail,
    }
}
