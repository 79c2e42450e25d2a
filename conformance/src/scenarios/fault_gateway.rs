//! `fault-gateway-cut` and `fault-zombie`: under load, shard 0's gateway socket is cut (TCP
//! dropped without a close frame) or turns into a zombie (the mock stops acknowledging
//! heartbeats). The shard must close (keeping the session) and RESUME, and every event must
//! reach a worker queue. The reactions themselves are checked without load by
//! `close-without-frame` and `zombie-connection`; these add the load and the count.

use std::time::{Duration, Instant};

use crate::profiles::Profile;
use crate::scenario::{Context, Failure, Requirement, Scenario, ScenarioFuture, Setup};
use crate::scenarios::fault::{self, FaultRun, SHARDS, scaled};
use crate::scenarios::fault_process::LEAD;
use crate::scenarios::reaction::{self, Before};
use crate::scenarios::{RECONNECT_BUDGET, live_connection_id};

/// See the module docs.
pub struct GatewayFault {
    /// A zombie (`true`) or a cut socket.
    pub zombie: bool,
}

impl Scenario for GatewayFault {
    fn requirement(&self, profile: Profile) -> Option<Requirement> {
        // Zero loss under faults is Gatehouse's promise (RELIABILITY.md), not the predecessors'.
        Requirement::native_only(profile)
    }

    fn name(&self) -> String {
        if self.zombie {
            "fault-zombie"
        } else {
            "fault-gateway-cut"
        }
        .into()
    }

    fn description(&self) -> String {
        let what = if self.zombie {
            "heartbeat ACKs stop"
        } else {
            "the gateway socket is cut"
        };
        format!("under load {what}: RESUME, no event missing")
    }

    fn setup(&self, _profile: Profile) -> Setup {
        Setup::default()
            .with_shards(SHARDS)
            .with_max_concurrency(SHARDS)
    }

    fn budget(&self) -> Duration {
        fault::budget(Duration::from_secs(180), LEAD * 2)
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> ScenarioFuture<'a> {
        Box::pin(run(ctx, self.zombie))
    }
}

async fn run(ctx: &mut Context, zombie: bool) -> Result<(), Failure> {
    let worker_url = ctx.env.amqp_url.clone();
    let mut run = FaultRun::begin(ctx, &worker_url).await?;
    let lead = ctx.observe(scaled(LEAD)).await;
    run.note(lead);
    let (connection, session_id) = ctx
        .gateway
        .read(|r| {
            let c = r.live_connection(0)?;
            Some((c.id.0, c.session_id.clone()?))
        })
        .ok_or_else(|| Failure::fail("shard 0 has no live session"))?;
    let at = Instant::now();
    let why = if zombie {
        ctx.steer_mock(|control| control.shard(0).drop_acks(true))?;
        "missing heartbeat ACKs"
    } else {
        ctx.steer_mock(|control| control.shard(0).drop_tcp())?;
        "a cut gateway socket"
    };
    let resumed = fault::expect_resume(ctx, 0, at, why, RECONNECT_BUDGET).await;
    let ok = resumed.is_ok();
    run.note(resumed);
    if ok && zombie {
        let before = Before {
            shard: 0,
            connection,
            session_id,
            last_seq: 0,
            at,
        };
        let rec = ctx.gateway.recorder().snapshot();
        run.note(reaction::closed_keeping_session(&rec, &before, why));
    }
    if ok && ctx.gateway.read(|r| live_connection_id(r, 0)) == Some(connection) {
        run.problem("shard 0 still uses the faulty connection");
    }
    let tail = ctx.observe(scaled(LEAD)).await;
    run.note(tail);
    run.finish(ctx).await.map(drop)
}
