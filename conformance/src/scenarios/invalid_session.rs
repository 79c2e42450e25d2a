//! `invalid-session-resumable` and `invalid-session-not-resumable`: op 9 with `d: true` is
//! answered with a RESUME of the session; op 9 with `d: false` with a new IDENTIFY (never a
//! RESUME of the dead session), on the cached gateway URL rather than the resume URL.

use std::time::Duration;

use crate::gateway::{IdentifyOutcome, ViolationKind};
use crate::scenario::{Context, Failure, Scenario, ScenarioFuture};
use crate::scenarios::reaction::{self, Reaction};
use crate::{ensure, fail};

/// See the module docs.
pub struct InvalidSession {
    /// The `d` of op 9.
    pub resumable: bool,
}

impl Scenario for InvalidSession {
    fn name(&self) -> String {
        if self.resumable {
            "invalid-session-resumable".into()
        } else {
            "invalid-session-not-resumable".into()
        }
    }

    fn description(&self) -> String {
        if self.resumable {
            "op 9 true: RESUME the session".into()
        } else {
            "op 9 false: IDENTIFY a new session on the gateway URL, no RESUME".into()
        }
    }

    fn budget(&self) -> Duration {
        Duration::from_secs(90)
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> ScenarioFuture<'a> {
        Box::pin(run(self.resumable, ctx))
    }
}

async fn run(resumable: bool, ctx: &mut Context) -> Result<(), Failure> {
    let before = reaction::start_and_take_before(ctx).await?;
    ctx.steer_mock(|control| control.shard(0).send_invalid_session(resumable))?;
    if resumable {
        return reaction::expect(ctx, &before, Reaction::Resume, "op 9 (d: true)").await;
    }
    reaction::expect(ctx, &before, Reaction::Reidentify, "op 9 (d: false)").await?;
    let rec = ctx.gateway.recorder().snapshot();
    if let Some(v) = rec
        .violations
        .iter()
        .find(|v| matches!(v.kind, ViolationKind::ResumeInvalidatedSession { .. }))
    {
        fail!(
            "after op 9 (d: false) the client tried to RESUME the dead session ({}); it must IDENTIFY",
            crate::gateway::describe(v)
        );
    }
    let identify = rec
        .identifies
        .iter()
        .find(|i| i.at > before.at && matches!(i.outcome, IdentifyOutcome::Ready { .. }))
        .ok_or_else(|| Failure::error("the new IDENTIFY vanished from the recording"))?;
    let on_resume_url = rec
        .connection(identify.connection)
        .is_some_and(|c| c.on_resume_url && c.id.0 != before.connection);
    ensure!(
        !on_resume_url,
        "after op 9 (d: false) the client identified on the resume URL; a new session starts on the cached /gateway URL"
    );
    Ok(())
}
