//! `zombie-connection`: the server stops acknowledging heartbeats; the client notices (no ACK
//! between two heartbeats), closes with a code other than 1000/1001 and resumes.

use std::time::Duration;

use crate::scenario::{Context, Failure, Scenario, ScenarioFuture, Setup};
use crate::scenarios::reaction;

/// See the module docs.
pub struct Zombie;

const INTERVAL: Duration = Duration::from_millis(1000);

impl Scenario for Zombie {
    fn name(&self) -> String {
        "zombie-connection".into()
    }

    fn description(&self) -> String {
        "dropped heartbeat ACKs: close with a non-1000/1001 code, then RESUME".into()
    }

    fn setup(&self, _profile: crate::profiles::Profile) -> Setup {
        Setup::default().with_heartbeat_interval(INTERVAL)
    }

    fn budget(&self) -> Duration {
        Duration::from_secs(90)
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> ScenarioFuture<'a> {
        Box::pin(run(ctx))
    }
}

async fn run(ctx: &mut Context) -> Result<(), Failure> {
    let before = reaction::start_and_take_before(ctx).await?;
    ctx.steer_mock(|control| control.shard(0).drop_acks(true))?;
    reaction::expect_resume_keeping_session(ctx, &before, "missing heartbeat ACKs").await
}
