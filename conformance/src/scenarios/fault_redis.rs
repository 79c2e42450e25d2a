//! The Redis faults, on a private `redis-server` (the shared one is never stopped):
//!
//! - `fault-redis-down`: under load Redis goes down for 10 s and comes back (with the data it
//!   had); the shards must stay connected and heartbeating meanwhile, and the implementation,
//!   restarted afterwards, must RESUME every shard: what it saved when Redis returned is current.
//! - `fault-redis-down-at-start`: the implementation is stopped after a run that saved its
//!   sessions, Redis goes down, the implementation starts while Redis is down (it must keep
//!   running and must not start new sessions, which would lose Discord's replay), then Redis
//!   comes back and every shard must RESUME.
//!
//! Both count every event as the other fault scenarios do.

use std::time::{Duration, Instant};

use crate::private_services::{PrivateRedis, ServiceError};
use crate::profiles::Profile;
use crate::scenario::{Context, Failure, Requirement, Scenario, ScenarioFuture, Setup};
use crate::scenarios::fault::{self, FaultRun, SHARDS, live_connections, scaled, stayed_connected};
use crate::scenarios::fault_process::{LEAD, resume_every_shard};

/// See the module docs.
pub struct RedisFault {
    /// Down at start (`true`) or mid-run.
    pub at_start: bool,
}

/// How long Redis is down, at full scale.
pub const OUTAGE: Duration = Duration::from_secs(10);

impl Scenario for RedisFault {
    fn requirement(&self, profile: Profile) -> Option<Requirement> {
        // Zero loss under faults is Gatehouse's promise (RELIABILITY.md), not the predecessors'.
        Requirement::native_only(profile)
    }

    fn name(&self) -> String {
        if self.at_start {
            "fault-redis-down-at-start"
        } else {
            "fault-redis-down"
        }
        .into()
    }

    fn description(&self) -> String {
        if self.at_start {
            "Redis down at start, then up: keep running, then RESUME; no event missing".into()
        } else {
            "Redis down 10 s under load: shards stay up, a later restart RESUMEs; no event missing"
                .into()
        }
    }

    fn setup(&self, _profile: Profile) -> Setup {
        Setup::default()
            .with_shards(SHARDS)
            .with_max_concurrency(SHARDS)
    }

    fn budget(&self) -> Duration {
        fault::budget(Duration::from_secs(240), LEAD * 3 + OUTAGE)
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> ScenarioFuture<'a> {
        Box::pin(run(ctx, self.at_start))
    }
}

fn service(e: ServiceError) -> Failure {
    Failure::error(e.to_string())
}

async fn run(ctx: &mut Context, at_start: bool) -> Result<(), Failure> {
    let mut redis = PrivateRedis::new(&ctx.env.scenario).map_err(service)?;
    redis.start().await.map_err(service)?;
    ctx.env.redis_url = redis.url();
    let worker_url = ctx.env.amqp_url.clone();
    let mut run = FaultRun::begin(ctx, &worker_url).await?;
    let lead = ctx.observe(scaled(LEAD)).await;
    run.note(lead);
    if at_start {
        let stopped = ctx.terminate_implementation().await;
        run.note(stopped);
        redis.stop().await;
        let at = Instant::now();
        ctx.start_implementation()?;
        let down = ctx.observe(scaled(OUTAGE)).await;
        if let Err(f) = down {
            run.problem(format!("with Redis down at start: {}", f.message));
        }
        redis.start().await.map_err(service)?;
        resume_every_shard(ctx, &mut run, at, "a start with Redis down").await;
    } else {
        let interval = ctx.gateway.config().heartbeat_interval;
        let shards = ctx.setup.shard_ids.clone();
        let before = ctx.gateway.read(|r| live_connections(r, &shards));
        let from = Instant::now();
        redis.stop().await;
        let down = ctx.observe(scaled(OUTAGE)).await;
        run.note(down);
        redis.start().await.map_err(service)?;
        let to = Instant::now();
        let rec = ctx.gateway.recorder().snapshot();
        for problem in stayed_connected(&rec, &before, from, to, interval) {
            run.problem(problem);
        }
        // Time to write the current state to the returned Redis, then a restart must resume.
        let after = ctx.observe(scaled(LEAD)).await;
        run.note(after);
        let at = Instant::now();
        let stopped = ctx.terminate_implementation().await;
        run.note(stopped);
        ctx.start_implementation()?;
        resume_every_shard(ctx, &mut run, at, "a Redis outage and a restart").await;
    }
    let tail = ctx.observe(scaled(LEAD)).await;
    run.note(tail);
    let result = run.finish(ctx).await.map(drop);
    ctx.terminate_implementation().await.ok();
    drop(redis);
    result
}
