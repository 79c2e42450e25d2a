//! `rate-limit`: a burst of commands from workers larger than Discord allows per connection
//! (120 per 60 s, heartbeats included) is paced by the gateway: the mock never sees more than
//! 120 frames in a 60 s window (it would close with 4008), heartbeats keep their rhythm, and the
//! commands keep flowing (queued and paced, not all dropped). A client that does not limit sends
//! the whole burst at once and is caught at the 121st frame.

use std::time::Duration;

use crate::gateway::{self, ViolationKind};
use crate::profiles::Profile;
use crate::profiles::{CommandMode, Target};
use crate::scenario::{Context, Failure, Requirement, Scenario, ScenarioFuture};
use crate::scenarios::commands::request_members;
use crate::scenarios::{COMMAND_BUDGET, contains, start_and_wait_ready};
use crate::{ensure, fail};

/// See the module docs.
pub struct RateLimit;

const BURST: usize = 130;
/// Proof that commands keep flowing (an even pacing of 2 per second passes too).
const AT_LEAST_SENT: usize = 20;

impl Scenario for RateLimit {
    fn name(&self) -> String {
        "rate-limit".into()
    }

    fn description(&self) -> String {
        format!(
            "a burst of {BURST} commands: at most 120 frames per 60 s, heartbeats kept, no 4008"
        )
    }

    fn requirement(&self, profile: Profile) -> Option<Requirement> {
        // The burst is made of workers' commands, which the Cordis 1.x contract has none of.
        Requirement::extension_for(profile, &[Profile::Cordis])
    }

    fn budget(&self) -> Duration {
        Duration::from_secs(120)
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> ScenarioFuture<'a> {
        Box::pin(run(ctx))
    }
}

/// Runs the burst; whatever ends it (an exit after the mock's 4008 close, a stall), a broken rate
/// limit is the verdict when the mock saw one.
async fn run(ctx: &mut Context) -> Result<(), Failure> {
    let result = burst(ctx).await;
    let limited = ctx.gateway.read(|r| {
        r.violations
            .iter()
            .find(|v| matches!(v.kind, ViolationKind::RateLimited { .. }))
            .map(gateway::describe)
    });
    match limited {
        Some(v) => fail!(
            "the rate limit was broken: {v} (Discord closes the connection with 4008){}",
            ctx.explanation(None)
        ),
        None => result,
    }
}

async fn burst(ctx: &mut Context) -> Result<(), Failure> {
    start_and_wait_ready(ctx).await?;
    let target = if ctx.profile.command_modes().contains(&CommandMode::Shard) {
        Target::Shard(0)
    } else {
        Target::AllShards
    };
    ctx.wait_command_entry(target, COMMAND_BUDGET).await?;
    for i in 0..BURST {
        ctx.send_command(
            target,
            &request_members(81_384_788_765_712_384, &format!("rl-{i}")),
        )
        .await?;
    }
    let recorder = ctx.gateway.recorder();
    let count = |r: &gateway::Recording| {
        r.shard_connections(0)
            .flat_map(|c| c.received.iter())
            .filter(|f| f.op == Some(8) && contains(&f.json, "\"rl-"))
            .count()
    };
    let flowing = ctx
        .wait_for(
            &format!("{AT_LEAST_SENT} of the {BURST} commands"),
            COMMAND_BUDGET + Duration::from_secs(15),
            |_| recorder.read(|r| (count(r) >= AT_LEAST_SENT).then_some(())),
        )
        .await;
    if let Err(f) = flowing {
        let arrived = recorder.read(count);
        return Err(f.with_detail(&format!(" ({arrived} arrived)")));
    }
    // Watch the paced remainder for a while: no more than the limit, heartbeats on time.
    let interval = ctx.gateway.config().heartbeat_interval;
    ctx.observe(interval * 3).await?;
    let rec = recorder.snapshot();
    gateway::no_violations(&rec).map_err(Failure::fail)?;
    ensure!(
        rec.connections.len() == 1 && rec.live_connection(0).is_some(),
        "the connection was closed during the burst ({:?})",
        rec.connections
            .first()
            .and_then(|c| c.close.as_ref())
            .map(|c| &c.kind)
    );
    let sent = count(&rec);
    ensure!(
        sent <= 120,
        "{sent} commands were sent within one minute on one connection (at most 120 frames, heartbeats included)"
    );
    Ok(())
}
