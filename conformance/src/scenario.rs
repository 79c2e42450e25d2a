//! The [`Scenario`] trait every check implements, the [`Setup`] a scenario asks for, the
//! [`Failure`] it returns, and the [`Context`] it runs in (mock gateway, worker connection, Redis,
//! and the implementation's process).
//!
//! Owns the scenario-facing API. It does not choose which scenarios run or in what order (see
//! [`crate::registry`] and [`crate::runner`]); the profile worker's actions live in
//! [`crate::worker`].

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::{Duration, Instant};

use tokio::sync::OwnedSemaphorePermit;

use crate::broker::Broker;
use crate::contract::{self, Compression, Encoding, ImplEnv};
use crate::gateway::{Control, Gateway, MockConfig, suite_defaults};
use crate::process::{Ending, ImplProcess};
use crate::profiles::{BodyEncoding, Profile};
use crate::redis_store::RedisStore;
use rabbitmq_management::ManagementApi;

/// The future an async probe of [`Context::wait_for_async`] returns.
pub type Probe<'a, T> = Pin<Box<dyn Future<Output = Option<T>> + Send + 'a>>;

/// The future a scenario's `run` returns.
pub type ScenarioFuture<'a> = Pin<Box<dyn Future<Output = Result<(), Failure>> + Send + 'a>>;

/// One conformance check. Implement it in `src/scenarios/<name>.rs` and add it to
/// [`crate::registry::all`].
pub trait Scenario: Send + Sync {
    /// A short, unique, kebab-case name (used by `--scenario` globs and in reports).
    fn name(&self) -> String;

    /// One line saying what is checked.
    fn description(&self) -> String;

    /// What the scenario is under `profile`: a check the profile's published contract (and the
    /// Discord protocol) requires, a check of a Gatehouse extension beyond that contract, or
    /// `None` when it does not apply. Default: required by every profile.
    fn requirement(&self, profile: Profile) -> Option<Requirement> {
        let _ = profile;
        Some(Requirement::Required)
    }

    /// Whether the scenario applies to `profile` at all.
    fn applies_to(&self, profile: Profile) -> bool {
        self.requirement(profile).is_some()
    }

    /// The shards, intents and mock settings the scenario needs under `profile`.
    fn setup(&self, profile: Profile) -> Setup {
        let _ = profile;
        Setup::default()
    }

    /// The most `run` may take, generous enough for a loaded 2-core machine.
    fn budget(&self) -> Duration {
        Duration::from_secs(60)
    }

    /// Runs the checks. The context's implementation is not started yet: the scenario starts it
    /// (after preparing workers) with [`Context::start_implementation`]. The runner stops it and
    /// cleans up afterwards, whatever happens.
    fn run<'a>(&'a self, ctx: &'a mut Context) -> ScenarioFuture<'a>;
}

/// Whether a scenario checks what a profile's contract requires or what Gatehouse offers beyond it.
///
/// A faithful implementation of a predecessor (the Cordis gateway service, the Spectacles gateway,
/// ...) must pass every [`Requirement::Required`] scenario of its profile; the
/// [`Requirement::Extension`] ones are reported apart, so that it can pass "required" without
/// offering what only Gatehouse promises (commands for Cordis, a session store for Cordis and
/// Retsu, zero loss under faults, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Requirement {
    /// The profile's published contract or the Discord protocol requires it.
    Required,
    /// A Gatehouse extension beyond the profile's published contract.
    Extension,
}

impl Requirement {
    /// `required` or `extension`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Required => "required",
            Self::Extension => "extension",
        }
    }

    /// `Required` for the native profile, `Extension` for the others: for the promises only
    /// Gatehouse makes (zero loss under faults, its own rules for workers' commands).
    pub fn native_only(profile: Profile) -> Option<Self> {
        Some(if profile == Profile::Gatehouse {
            Self::Required
        } else {
            Self::Extension
        })
    }

    /// `Extension` for the listed profiles, `Required` for the others.
    pub fn extension_for(profile: Profile, extension: &[Profile]) -> Option<Self> {
        Some(if extension.contains(&profile) {
            Self::Extension
        } else {
            Self::Required
        })
    }
}

impl std::fmt::Display for Requirement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Requirement {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "required" => Ok(Self::Required),
            "extension" => Ok(Self::Extension),
            other => Err(format!(
                "unknown requirement {other:?} (required or extension)"
            )),
        }
    }
}

/// What a scenario asks of the run.
#[derive(Clone, Debug)]
pub struct Setup {
    /// `SHARD_COUNT`.
    pub shard_count: u32,
    /// `SHARD_IDS`.
    pub shard_ids: Vec<u32>,
    /// `DISCORD_INTENTS` (the mock requires exactly these).
    pub intents: u64,
    /// `DISCORD_COMPRESS`.
    pub compress: Compression,
    /// `DISCORD_ENCODING`.
    pub encoding: Encoding,
    /// `BROKER_BODY_ENCODING`; `None` for the profile's default.
    pub body_encoding: Option<BodyEncoding>,
    /// The mock gateway's behaviour. The runner sets the token, the expected intents and the
    /// shard count from the fields above.
    pub mock: MockConfig,
    /// The mock accepts sessions of any shard count (a re-shard runs two at once); otherwise
    /// IDENTIFY must use `shard_count`.
    pub any_shard_count: bool,
}

/// Every intent that is not privileged (PROTOCOL.md section 12).
pub const NON_PRIVILEGED_INTENTS: u64 = 53_575_421;

impl Default for Setup {
    fn default() -> Self {
        Self {
            shard_count: 1,
            shard_ids: vec![0],
            intents: NON_PRIVILEGED_INTENTS,
            compress: Compression::None,
            encoding: Encoding::Json,
            body_encoding: None,
            mock: suite_defaults(),
            any_shard_count: false,
        }
    }
}

impl Setup {
    /// `count` shards, all run by the implementation.
    pub fn with_shards(mut self, count: u32) -> Self {
        self.shard_count = count;
        self.shard_ids = (0..count).collect();
        self
    }

    /// The mock grants `count` identifies per 5 s window (`max_concurrency`).
    pub fn with_max_concurrency(mut self, count: u32) -> Self {
        self.mock.max_concurrency = count;
        self
    }

    /// The mock asks for a heartbeat every `interval` (HELLO's `heartbeat_interval`).
    pub fn with_heartbeat_interval(mut self, interval: Duration) -> Self {
        self.mock.heartbeat_interval = interval;
        self
    }
}

/// Whether a failed scenario is the implementation's fault or the suite's trouble.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The implementation broke the contract.
    Fail,
    /// The suite could not do its part (services, mock): no verdict.
    Error,
}

/// Why a scenario did not pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Whose fault.
    pub kind: FailureKind,
    /// The reason, for the report.
    pub message: String,
}

impl Failure {
    /// The implementation broke the contract.
    pub fn fail(message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Fail,
            message: message.into(),
        }
    }

    /// The suite could not do its part.
    pub fn error(message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Error,
            message: message.into(),
        }
    }

    /// The same failure with `detail` added to the end of its first line (the later lines hold
    /// what the mock saw and the log).
    pub fn with_detail(self, detail: &str) -> Self {
        let message = match self.message.split_once('\n') {
            Some((first, rest)) => format!("{first}{detail}\n{rest}"),
            None => format!("{}{detail}", self.message),
        };
        Self { message, ..self }
    }

    /// The same failure with `lines` added at the end, unless the message already explains
    /// itself (it has more than one line).
    pub fn explained(self, lines: impl FnOnce() -> String) -> Self {
        if self.message.contains('\n') {
            return self;
        }
        let message = format!("{}{}", self.message, lines());
        Self { message, ..self }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Returns `Err(Failure::fail(format!(..)))` from the enclosing function.
#[macro_export]
macro_rules! fail {
    ($($arg:tt)*) => {
        return Err($crate::scenario::Failure::fail(format!($($arg)*)))
    };
}

/// Fails with the message unless the condition holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            $crate::fail!($($arg)*);
        }
    };
}

/// Everything a running scenario can use.
pub struct Context {
    /// The profile under test.
    pub profile: Profile,
    /// The body encoding in force.
    pub body_encoding: BodyEncoding,
    /// The setup the scenario asked for.
    pub setup: Setup,
    /// The environment the implementation gets.
    pub env: ImplEnv,
    /// The mock Discord gateway.
    pub gateway: Gateway,
    /// A worker's connection to the scenario's vhost.
    pub broker: Broker,
    /// The management API (for topology details).
    pub management: ManagementApi,
    /// The scenario's vhost.
    pub vhost: String,
    /// Redis, under the scenario's key prefix.
    pub redis: RedisStore,
    command: String,
    log_path: PathBuf,
    current_log: PathBuf,
    process: Option<ImplProcess>,
    started_at: Option<Instant>,
    starts: u32,
    job_slot: Option<OwnedSemaphorePermit>,
    /// Shell text run before the command (`cluster-*`: each process's own variables).
    command_prefix: String,
}

/// How many lines of the implementation's log a failure message quotes.
const LOG_LINES_IN_MESSAGE: usize = 12;

impl Context {
    /// Assembles a context (the runner does this).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        profile: Profile,
        setup: Setup,
        env: ImplEnv,
        gateway: Gateway,
        broker: Broker,
        management: ManagementApi,
        vhost: String,
        redis: RedisStore,
        command: String,
        log_path: PathBuf,
        job_slot: OwnedSemaphorePermit,
    ) -> Self {
        Self {
            profile,
            body_encoding: env.body_encoding,
            setup,
            env,
            gateway,
            broker,
            management,
            vhost,
            redis,
            command,
            current_log: log_path.clone(),
            log_path,
            process: None,
            started_at: None,
            starts: 0,
            job_slot: Some(job_slot),
            command_prefix: String::new(),
        }
    }

    /// Shell text run before the command of the context's implementation from its next start
    /// on, for example `export GATEHOUSE_CLUSTER=c; unset SHARD_IDS;` (`cluster-*`).
    pub fn set_command_prefix(&mut self, prefix: impl Into<String>) {
        self.command_prefix = prefix.into();
    }

    /// Starts one more process of the implementation beside the context's own (several
    /// processes of one cluster), with `prefix` run before its command and its output in
    /// `<log>.<label>.log`. The caller stops it; dropping it kills it.
    pub fn start_member(&self, label: &str, prefix: &str) -> Result<ImplProcess, Failure> {
        let log_path = self.log_path.with_extension(format!("{label}.log"));
        ImplProcess::start(&format!("{prefix} {}", self.command), &self.env, &log_path)
            .map_err(|e| Failure::error(format!("cannot start `sh -c {:?}`: {e}", self.command)))
    }

    /// Starts the implementation, unless it is already running.
    pub fn start_implementation(&mut self) -> Result<(), Failure> {
        if self.process.is_some() {
            return Ok(());
        }
        self.starts += 1;
        let log_path = if self.starts == 1 {
            self.log_path.clone()
        } else {
            self.log_path.with_extension(format!("{}.log", self.starts))
        };
        let command = format!("{}{}", self.command_prefix, self.command);
        let process = ImplProcess::start(&command, &self.env, &log_path)
            .map_err(|e| Failure::error(format!("cannot start `sh -c {:?}`: {e}", self.command)))?;
        self.current_log = log_path;
        self.process = Some(process);
        self.started_at = Some(Instant::now());
        Ok(())
    }

    /// Stops the implementation (SIGTERM, then SIGKILL) and starts it again with the same
    /// environment (for restart scenarios, such as resuming sessions from Redis). The new run's
    /// output goes to `<log>.<n>.log`. Fails if it had to be killed.
    pub async fn restart_implementation(&mut self) -> Result<(), Failure> {
        if let Some(Ending::Killed) = self.stop_implementation().await {
            return Err(Failure::fail(format!(
                "the implementation ignored SIGTERM for {:.0?} and was killed",
                contract::STOP_GRACE
            )));
        }
        self.process = None;
        self.start_implementation()
    }

    /// Kills the implementation with SIGKILL (its whole process group: a crash) and waits for
    /// it; [`Context::start_implementation`] starts it again (for crash scenarios).
    pub async fn kill_implementation(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill().await;
        }
    }

    /// Stops the implementation with SIGTERM (SIGKILL after the grace period, which fails);
    /// [`Context::start_implementation`] starts it again later (for scenarios that change the
    /// world between a stop and a start).
    pub async fn terminate_implementation(&mut self) -> Result<(), Failure> {
        let ending = self.stop_implementation().await;
        self.process = None;
        if let Some(Ending::Killed) = ending {
            return Err(Failure::fail(format!(
                "the implementation ignored SIGTERM for {:.0?} and was killed",
                contract::STOP_GRACE
            )));
        }
        Ok(())
    }

    /// When the implementation was started.
    pub fn started_at(&self) -> Option<Instant> {
        self.started_at
    }

    /// Fails if the implementation has exited (it must keep running until SIGTERM).
    pub fn check_running(&mut self) -> Result<(), Failure> {
        let Some(process) = self.process.as_mut() else {
            return Err(Failure::error("the implementation was not started"));
        };
        match process.exit_status() {
            None => Ok(()),
            Some(status) => Err(Failure::fail(format!(
                "the implementation exited ({status}) before it was stopped{}",
                self.explanation(None)
            ))),
        }
    }

    /// Lines that explain a verdict: what the mock saw (since `since`, or from the start; see
    /// [`crate::gateway::summary`]) and the tail of the implementation's log.
    pub fn explanation(&self, since: Option<Instant>) -> String {
        let mut out = String::new();
        let seen = self.gateway.read(|r| crate::gateway::summary(r, since));
        if !seen.is_empty() {
            out.push_str(&format!("\nthe mock saw: {seen}"));
        }
        let tail = crate::process::log_tail(&self.current_log, LOG_LINES_IN_MESSAGE);
        if !tail.trim().is_empty() {
            out.push_str(&format!(
                "\nthe last lines of its log ({}):",
                self.current_log.display()
            ));
            for line in tail.lines() {
                out.push_str(&format!("\n  | {}", crate::gateway::shorten(line, 200)));
            }
        }
        out
    }

    /// Whether the implementation or anything it started (its process group) still runs: a
    /// scenario that allows an exit watches until this is false.
    pub fn group_alive(&mut self) -> bool {
        self.process.as_mut().is_some_and(ImplProcess::group_alive)
    }

    /// Gives the scenario's `--jobs` slot to the next scenario: for a long watch that only waits
    /// (such as watching 30 s for a forbidden reconnect), so that it runs beside the others
    /// instead of holding up the run.
    pub fn release_job_slot(&mut self) {
        self.job_slot = None;
    }

    /// Fails unless every gateway connection used the encoding and compression the scenario
    /// asked for (`DISCORD_ENCODING`, `DISCORD_COMPRESS`): a scenario about a transport proves
    /// nothing if the implementation connected with another one.
    pub fn check_transport(&self) -> Result<(), Failure> {
        let encoding = crate::gateway::mock_encoding(self.setup.encoding);
        let compression = crate::gateway::mock_compression(self.setup.compress);
        let wrong = self.gateway.read(|r| {
            r.connections.iter().find_map(|c| match &c.params {
                None => Some(format!(
                    "connection {} has a bad query string {:?}",
                    c.id.0, c.query
                )),
                Some(p) if p.encoding != encoding => Some(format!(
                    "connection {} used encoding {:?}, DISCORD_ENCODING is {}",
                    c.id.0,
                    p.encoding,
                    self.setup.encoding.as_str()
                )),
                Some(p) if p.compression != compression => Some(format!(
                    "connection {} used compression {:?}, DISCORD_COMPRESS is {}",
                    c.id.0,
                    p.compression,
                    self.setup.compress.as_str()
                )),
                Some(_) => None,
            })
        });
        match wrong {
            Some(w) => Err(Failure::fail(format!(
                "{w}: the transport this scenario tests was not used"
            ))),
            None => Ok(()),
        }
    }

    /// Whether the implementation is still running.
    pub fn is_running(&mut self) -> bool {
        self.process
            .as_mut()
            .is_some_and(|p| p.exit_status().is_none())
    }

    /// Polls `probe` every 50 ms until it returns `Some`, for at most `timeout`. Fails with
    /// "timed out after <timeout> waiting for `what`" on timeout, or as soon as the implementation exits (unless
    /// `allow_exit`).
    pub async fn wait_for<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut probe: impl FnMut(&mut Self) -> Option<T>,
    ) -> Result<T, Failure> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = probe(self) {
                return Ok(value);
            }
            self.keep_waiting(what, timeout, deadline)?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Like [`Context::wait_for`] for an async probe.
    pub async fn wait_for_async<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut probe: impl for<'c> FnMut(&'c Self) -> Probe<'c, T>,
    ) -> Result<T, Failure> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = probe(self).await {
                return Ok(value);
            }
            self.keep_waiting(what, timeout, deadline)?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Between two probes of a wait for `what`: fails if the implementation (when started) has
    /// exited, or if `deadline` (`timeout` after the wait began) has passed.
    fn keep_waiting(
        &mut self,
        what: &str,
        timeout: Duration,
        deadline: Instant,
    ) -> Result<(), Failure> {
        if let Some(status) = self.process.as_mut().and_then(ImplProcess::exit_status) {
            fail!(
                "the implementation exited ({status}) while the suite was waiting for {what}{}",
                self.explanation(None)
            );
        }
        if Instant::now() >= deadline {
            fail!("timed out after {:.0?} waiting for {what}", timeout);
        }
        Ok(())
    }

    /// Sleeps, failing early if the implementation exits meanwhile.
    pub async fn observe(&mut self, period: Duration) -> Result<(), Failure> {
        let deadline = Instant::now() + period;
        while Instant::now() < deadline {
            self.check_running()?;
            tokio::time::sleep(Duration::from_millis(100).min(deadline - Instant::now())).await;
        }
        self.check_running()
    }

    /// Stops the implementation (SIGTERM, then SIGKILL) if it was started.
    pub async fn stop_implementation(&mut self) -> Option<Ending> {
        match self.process.as_mut() {
            Some(p) => Some(p.stop(contract::STOP_GRACE).await),
            None => None,
        }
    }

    /// Steers the mock gateway (`|control| control.shard(0).send_reconnect()`); a refusal is the
    /// suite's trouble (`Failure::error`), not the implementation's.
    pub fn steer_mock<T, E: std::fmt::Display>(
        &self,
        steer: impl FnOnce(&Control) -> Result<T, E>,
    ) -> Result<T, Failure> {
        steer(&self.gateway.control()).map_err(|e| Failure::error(format!("mock control: {e}")))
    }

    /// The implementation's log file.
    pub fn log_path(&self) -> &PathBuf {
        &self.log_path
    }
}
