//! `fault-sigkill` and `fault-sigterm`: the implementation is killed (SIGKILL, a crash) or
//! stopped (SIGTERM) under load and started again with the same Redis prefix and vhost. Every
//! shard must RESUME its session, and every event the mock sent, before, during and after the
//! restart, must reach a worker queue.

use std::time::{Duration, Instant};

use crate::profiles::Profile;
use crate::scenario::{Context, Failure, Requirement, Scenario, ScenarioFuture, Setup};
use crate::scenarios::RECONNECT_BUDGET;
use crate::scenarios::fault::{self, FaultRun, SHARDS, scaled};

/// See the module docs.
pub struct ProcessFault {
    /// SIGKILL (`true`) or SIGTERM.
    pub kill: bool,
}

/// Load before and after the fault.
pub const LEAD: Duration = Duration::from_secs(10);

impl Scenario for ProcessFault {
    fn requirement(&self, profile: Profile) -> Option<Requirement> {
        // Zero loss under faults is Gatehouse's promise (RELIABILITY.md), not the predecessors'.
        Requirement::native_only(profile)
    }

    fn name(&self) -> String {
        if self.kill {
            "fault-sigkill"
        } else {
            "fault-sigterm"
        }
        .into()
    }

    fn description(&self) -> String {
        let signal = if self.kill { "SIGKILL" } else { "SIGTERM" };
        format!("{signal} under load, then a restart: every shard resumes, no event missing")
    }

    fn setup(&self, _profile: Profile) -> Setup {
        Setup::default()
            .with_shards(SHARDS)
            .with_max_concurrency(SHARDS)
    }

    fn budget(&self) -> Duration {
        fault::budget(Duration::from_secs(200), LEAD * 2)
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> ScenarioFuture<'a> {
        Box::pin(run(ctx, self.kill))
    }
}

async fn run(ctx: &mut Context, kill: bool) -> Result<(), Failure> {
    let worker_url = ctx.env.amqp_url.clone();
    let mut run = FaultRun::begin(ctx, &worker_url).await?;
    let lead = ctx.observe(scaled(LEAD)).await;
    run.note(lead);
    let at = Instant::now();
    let why = if kill {
        ctx.kill_implementation().await;
        "a SIGKILL and a restart"
    } else {
        let stopped = ctx.terminate_implementation().await;
        run.note(stopped);
        "a SIGTERM and a restart"
    };
    ctx.start_implementation()?;
    resume_every_shard(ctx, &mut run, at, why).await;
    let tail = ctx.observe(scaled(LEAD)).await;
    run.note(tail);
    run.finish(ctx).await.map(drop)
}

/// Expects a RESUME of every shard after `at` (start-up included), noting problems in `run`.
pub async fn resume_every_shard(ctx: &mut Context, run: &mut FaultRun, at: Instant, why: &str) {
    let timeout = crate::contract::STARTUP_BUDGET + RECONNECT_BUDGET;
    for shard in ctx.setup.shard_ids.clone() {
        if !ctx.is_running() {
            // The exit is reported once, with the figures.
            return;
        }
        let resumed = fault::expect_resume(ctx, shard, at, why, timeout).await;
        run.note(resumed);
    }
}
