//! `reconnect-op7`: the server sends op 7 Reconnect; the client closes the connection with a
//! code that keeps the session (not 1000/1001) and resumes on READY's `resume_gateway_url` with
//! its session id and last sequence.

use std::time::Duration;

use crate::scenario::{Context, Failure, Scenario, ScenarioFuture};
use crate::scenarios::reaction;

/// See the module docs.
pub struct ReconnectOp7;

impl Scenario for ReconnectOp7 {
    fn name(&self) -> String {
        "reconnect-op7".into()
    }

    fn description(&self) -> String {
        "op 7: close without invalidating, RESUME on the resume URL with session and seq".into()
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
    ctx.steer_mock(|control| control.shard(0).send_reconnect())?;
    reaction::expect_resume_keeping_session(ctx, &before, "op 7 Reconnect").await
}
